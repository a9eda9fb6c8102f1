"""A kubelet for the simulated nodes: runs each pod's containers as local processes.

Part of the sandbox cluster, an emulator for tests and demos; production is a real
cluster. Images are ignored: a container's `command` + `args` run as a process on
this machine, in a new process group, inheriting this process's environment (PATH,
the virtualenv, PYTHONPATH; host NVIDIA_VISIBLE_DEVICES/CUDA_VISIBLE_DEVICES are
dropped) plus the GPU provider's env and the container's own env. A first word of
`python`, `python3` or `python3.N` is replaced by `sys.executable`, so that
`python -m kwatt_...` runs this interpreter and sees this environment.

Termination messages: a process here cannot write the container path
`/dev/termination-log`, so each container's `terminationMessagePath` is mapped to a
host file `<pod dir>/<container>/termination-log`, and any env value of that
container equal to its terminationMessagePath is rewritten to the host file. (kwatt's
operator sets KWATT_TERMINATION_PATH to the container's terminationMessagePath, so
its sidecar finds the file on real clusters and here.) After exit, up to 4096 bytes
of it become `state.terminated.message`; FallbackToLogsOnError falls back to the log.

Order, as for native sidecars: regular init containers run to completion in order;
sidecars (init containers with restartPolicy Always) start in order and count as
started once their process runs; then main containers start. When every main
container has exited, sidecars get SIGTERM in reverse order and SIGKILL once the
pod's terminationGracePeriodSeconds are over; their exit codes do not fail the pod.
Restarts (OnFailure/Always, and sidecars) wait a short back-off (0.2 s doubling to
2 s) instead of the real 10 s to 5 min.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kwatt_sandbox.errors import ApiError
from kwatt_sandbox.nodes.events import record_event
from kwatt_sandbox.nodes.gpus import GpuProvider
from kwatt_sandbox.nodes.ledger import GpuLedger
from kwatt_sandbox.nodes.nodes import HOST_IP
from kwatt_sandbox.nodes.podspec import (
    DEFAULT_TERMINATION_PATH,
    CommandError,
    ContainerRun,
    EnvError,
    build_argv,
    container_runs,
    fallback_message,
    final_phase,
    map_termination_path,
    merge_gpu_env,
    pod_status,
    resolve_env,
    termination_message,
)
from kwatt_sandbox.nodes.process import ContainerProcess
from kwatt_sandbox.store import Store, WatchEvent, now_rfc3339

if TYPE_CHECKING:
    from kwatt_sandbox.faults import Faults

log = logging.getLogger(__name__)
COMPONENT = "kubelet"
_HOST_ENV_DROPPED = ("NVIDIA_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES", "KUBECONFIG")
_BACKOFF_START, _BACKOFF_MAX = 0.2, 2.0


class Kubelet:
    """The kubelet of every simulated node (they all share this machine)."""

    def __init__(
        self,
        store: Store,
        ledger: GpuLedger,
        provider: GpuProvider,
        nodes: dict[str, dict[str, Any]],
        faults: Faults,
        pod_dir: Path | None = None,
    ) -> None:
        self.store = store
        self.ledger = ledger
        self.provider = provider
        self.nodes = nodes  # node name -> allocatable
        self.faults = faults
        self._own_dir = pod_dir is None
        self.pod_dir = pod_dir or Path(tempfile.mkdtemp(prefix="kwatt-sandbox-pods-"))
        self.workers: dict[str, PodWorker] = {}
        self._pods = store.resolve("", "v1", "pods")
        self._wake = asyncio.Event()
        store.subscribe(self._note)
        store.pod_terminators.append(self._terminator)

    # --- watching the store ----------------------------------------------------------------

    def _note(self, event: WatchEvent) -> None:
        if event.storage != ("", "pods"):
            return
        uid = str(event.obj["metadata"].get("uid", ""))
        worker = self.workers.get(uid)
        if event.type == "DELETED":
            if worker is not None:
                worker.orphaned()
                if worker.finished:
                    self.workers.pop(uid, None)
            return
        if worker is None and (event.obj.get("spec") or {}).get("nodeName") in self.nodes:
            self._wake.set()

    def _terminator(self, pod: dict[str, Any]) -> bool:
        """Graceful deletion: the pod stays (deletionTimestamp set) until its processes end."""
        worker = self.workers.get(str(pod["metadata"].get("uid", "")))
        if worker is None or worker.finished:
            return False
        asyncio.get_running_loop().call_soon(worker.delete_requested)
        return True

    async def run(self) -> None:
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), 0.05)
                self._wake.clear()
                self._start_new_pods()
                self._inject_kills()
        finally:
            await self.shutdown()

    def _start_new_pods(self) -> None:
        for pod in self.store.list_objects(self._pods, None):
            meta, spec = pod["metadata"], pod.get("spec") or {}
            if (
                spec.get("nodeName") not in self.nodes
                or meta["uid"] in self.workers
                or meta.get("deletionTimestamp")
                or (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")
            ):
                continue
            worker = PodWorker(self, pod)
            self.workers[meta["uid"]] = worker
            worker.task = asyncio.get_running_loop().create_task(
                worker.run(), name=f"pod {meta['namespace']}/{meta['name']}"
            )

    def _inject_kills(self) -> None:
        """The kill-container fault: SIGKILL matching running containers."""
        for worker in list(self.workers.values()):
            for name, proc in list(worker.procs.items()):
                run = worker.runs[name]
                if not proc.running or not run.started_at:
                    continue
                uptime = time.monotonic() - worker.started_mono.get(name, 0.0)
                if self.faults.take_container_kill(worker.namespace, worker.name, name, uptime):
                    log.info("Fault: killing container %s of %s.", name, worker.name)
                    proc.signal(signal.SIGKILL)

    async def shutdown(self) -> None:
        """Kill every process group (nothing outlives the sandbox) and clean up."""
        for worker in self.workers.values():
            worker.kill_all()
        tasks = [w.task for w in self.workers.values() if w.task is not None and not w.task.done()]
        if tasks:  # killed processes end their workers; reaping them keeps shutdown quiet
            _done, pending = await asyncio.wait(tasks, timeout=3.0)
            for task in pending:
                task.cancel()
        if self._own_dir:
            shutil.rmtree(self.pod_dir, ignore_errors=True)

    # --- helpers for workers -------------------------------------------------------------------

    def lookup(self, namespace: str) -> Any:
        def find(kind: str, name: str) -> dict[str, Any] | None:
            plural = "configmaps" if kind == "ConfigMap" else "secrets"
            try:
                return self.store.get(self.store.resolve("", "v1", plural), namespace, name)
            except ApiError:
                return None

        return find


class PodWorker:
    """One pod's life on a node: init containers, sidecars, main containers, the end."""

    def __init__(self, kubelet: Kubelet, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        self.kubelet = kubelet
        self.store = kubelet.store
        self.pod = pod
        self.uid: str = meta["uid"]
        self.namespace: str = meta["namespace"]
        self.name: str = meta["name"]
        self.spec: dict[str, Any] = pod.get("spec") or {}
        self.node: str = self.spec["nodeName"]
        self.containers = {
            str(c.get("name", "")): c
            for key in ("initContainers", "containers")
            for c in self.spec.get(key) or []
        }
        self.runs = {r.name: r for r in container_runs(self.spec)}
        self.procs: dict[str, ContainerProcess] = {}
        self.started_mono: dict[str, float] = {}
        self.task: asyncio.Task[None] | None = None
        self.finished = False
        self.phase = "Pending"
        self.start_time = ""
        self.deleting = False
        self.gone = False
        self.stopping = asyncio.Event()
        self.deadline: float | None = None
        self.plan: dict[str, list[str]] = {}
        self._sidecar_tasks: list[asyncio.Task[int]] = []
        self.dir = kubelet.pod_dir / f"{self.namespace}_{self.name}_{self.uid[:8]}"

    # --- the pod's life ------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            await self._life()
        except asyncio.CancelledError:
            self.kill_all()
            raise
        except Exception:
            log.exception("Pod %s/%s failed in the sandbox kubelet.", self.namespace, self.name)
            self.kill_all()
        finally:
            self.finished = True
            await self._reap_sidecars()
            self.kubelet.ledger.release(self.uid)
            for name in self.runs:
                self.store.logs.close(self.namespace, self.name, name)
            if self.deleting and not self.gone:
                self._remove()

    async def _reap_sidecars(self) -> None:
        running = [t for t in self._sidecar_tasks if not t.done()]
        if running:
            _done, pending = await asyncio.wait(running, timeout=1.0)
            for task in pending:
                task.cancel()

    async def _life(self) -> None:
        plan = self.kubelet.ledger.allocate(self.node, self.pod)
        if plan is None:
            self._reject()
            return
        self.plan = plan
        self.start_time = now_rfc3339(self.store.clock)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.publish()
        if await self._init_containers():
            self.phase = "Running" if not self.stopping.is_set() else self.phase
            mains = [n for n, r in self.runs.items() if r.kind == "main"]
            if not self.stopping.is_set():
                await asyncio.gather(*(self._keep_running(n) for n in mains))
        await self._stop_sidecars()
        self.phase = final_phase(list(self.runs.values()))
        for run in self.runs.values():
            if run.state == "waiting" and run.kind != "main":
                run.reason = "PodInitializing"
        self.publish()
        log.debug("Pod %s/%s ended %s.", self.namespace, self.name, self.phase)

    def _reject(self) -> None:
        log.info("Pod %s/%s rejected: not enough GPUs on %s.", self.namespace, self.name, self.node)
        self.phase = "Failed"
        status = dict(self.pod.get("status") or {})
        status.update(
            phase="Failed",
            reason="UnexpectedAdmissionError",
            message=f"Pod was rejected: Allocate failed due to requested number of devices "
            f"unavailable for nvidia.com/gpu on node {self.node}",
        )
        self._write_status(status)

    async def _init_containers(self) -> bool:
        """Run regular init containers in order and start sidecars; False if the pod fails."""
        for name, run in self.runs.items():
            if self.stopping.is_set():
                return False
            if run.kind == "sidecar":
                task = asyncio.get_running_loop().create_task(self._keep_running(name))
                self._sidecar_tasks.append(task)
                while run.state != "running" and not self.stopping.is_set():
                    await asyncio.sleep(0.01)
                await self._startup_probe(name)
            elif run.kind == "init":
                code = await self._keep_running(name)
                if code != 0:
                    return False
        return True

    async def _startup_probe(self, name: str) -> None:
        """Hold the next containers until a sidecar's startupProbe passes, as Kubernetes does.

        httpGet and tcpSocket probes on 127.0.0.1 are supported (every pod here shares
        the host's network); the probe is tried every 50 ms, and after
        failureThreshold x periodSeconds the pod goes on without it.
        """
        probe = self.containers[name].get("startupProbe") or {}
        target = probe.get("httpGet") or probe.get("tcpSocket")
        if not target:
            return
        port = _probe_port(target.get("port"), self.containers[name])
        if port is None:
            return
        deadline = time.monotonic() + float(probe.get("failureThreshold", 3)) * float(
            probe.get("periodSeconds", 10)
        )
        path = str(target.get("path", "/")) if "httpGet" in probe else None
        while time.monotonic() < deadline and not self.stopping.is_set():
            if self.runs[name].state == "running" and await _probe_once(port, path):
                return
            await asyncio.sleep(0.05)

    async def _keep_running(self, name: str) -> int:
        """Run a container, restarting it as the pod's (or a sidecar's) policy says."""
        run = self.runs[name]
        policy = "Always" if run.kind == "sidecar" else self.spec.get("restartPolicy", "Always")
        backoff = _BACKOFF_START
        while True:
            code = await self._run_once(name)
            restart = policy == "Always" or (policy == "OnFailure" and code != 0)
            if run.kind == "sidecar" and self._mains_done():
                restart = False
            if not restart or self.stopping.is_set():
                return code
            run.last = run.terminated()
            run.restart_count += 1
            run.state, run.reason, run.message = "waiting", "CrashLoopBackOff", ""
            self.publish()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), backoff)
            if self.stopping.is_set():
                return code
            backoff = min(backoff * 2, _BACKOFF_MAX)

    def _mains_done(self) -> bool:
        return all(r.state == "terminated" for r in self.runs.values() if r.kind == "main")

    async def _run_once(self, name: str) -> int:
        run = self.runs[name]
        container = self.containers[name]
        while True:
            try:
                env, argv, host_path = self._prepare(name, container)
                break
            except EnvError as exc:
                run.state, run.reason, run.message = (
                    "waiting",
                    "CreateContainerConfigError",
                    str(exc),
                )
                self.publish()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), 0.5)
                if self.stopping.is_set():
                    return self._start_failed(run, "ContainerCannotRun", str(exc))
            except CommandError as exc:
                return self._start_failed(run, "StartError", str(exc))
        cwd = container.get("workingDir")
        cwd = cwd if cwd and os.path.isdir(cwd) else None
        ns, pod = self.namespace, self.name

        def output(text: str) -> None:
            self.store.logs.append(ns, pod, name, text)

        proc = ContainerProcess(argv, env, cwd, output)
        try:
            await proc.start()
        except OSError as exc:
            return self._start_failed(run, "StartError", f"exec: {argv[0]!r}: {exc.strerror}")
        self.procs[name] = proc
        self.started_mono[name] = time.monotonic()
        run.state, run.reason, run.message = "running", "", ""
        run.pid, run.started_at = proc.pid, now_rfc3339(self.store.clock)
        self.publish()
        record_event(
            self.store, self.pod, "Normal", "Started", f"Started container {name}", COMPONENT
        )
        if self.stopping.is_set() and run.kind != "sidecar":
            proc.signal(signal.SIGTERM)
        code = await proc.wait()
        run.state, run.exit_code = "terminated", code
        run.reason = "Completed" if code == 0 else "Error"
        run.finished_at = now_rfc3339(self.store.clock)
        run.message = self._message(container, host_path, code, name)
        self.publish()
        return code

    def _start_failed(self, run: ContainerRun, reason: str, message: str) -> int:
        run.state, run.reason, run.message, run.exit_code = "terminated", reason, message, 128
        run.finished_at = now_rfc3339(self.store.clock)
        self.publish()
        return 128

    def _prepare(
        self, name: str, container: dict[str, Any]
    ) -> tuple[dict[str, str], list[str], Path]:
        """The process env and argv; also resets the host termination-message file."""
        pod = self._current() or self.pod
        own = resolve_env(
            container, pod, self.kubelet.lookup(self.namespace), self.kubelet.nodes[self.node]
        )
        devices = self.kubelet.ledger.devices.get(self.node, [])
        assigned = self.plan.get(name, [])
        provider_env = self.kubelet.provider.container_env(self.node, devices, assigned)
        merged = merge_gpu_env(own, provider_env, devices)
        host_path = self.dir / name / "termination-log"
        host_path.parent.mkdir(parents=True, exist_ok=True)
        host_path.write_bytes(b"")
        path = str(container.get("terminationMessagePath") or DEFAULT_TERMINATION_PATH)
        map_termination_path(merged, path, str(host_path))
        env = {k: v for k, v in os.environ.items() if k not in _HOST_ENV_DROPPED}
        env["HOSTNAME"] = self.name
        env.update(merged)
        return env, build_argv(container, own), host_path

    def _message(self, container: dict[str, Any], host_path: Path, code: int, name: str) -> str:
        try:
            with host_path.open("rb") as f:
                message = termination_message(f.read(4096))
        except OSError:
            message = ""
        if (
            not message
            and code != 0
            and container.get("terminationMessagePolicy") == ("FallbackToLogsOnError")
        ):
            message = fallback_message(self.store.logs.read(self.namespace, self.name, name))
        return message

    async def _stop_sidecars(self) -> None:
        """SIGTERM running sidecars in reverse order; SIGKILL at the grace deadline."""
        if self.deadline is None:
            self.deadline = time.monotonic() + self._grace()
        for name in reversed([n for n, r in self.runs.items() if r.kind == "sidecar"]):
            proc = self.procs.get(name)
            if proc is None or not proc.running:
                continue
            proc.signal(signal.SIGTERM)
            while proc.running and time.monotonic() < self.deadline:
                await asyncio.sleep(0.02)
            proc.signal(signal.SIGKILL)
            while proc.running:
                await asyncio.sleep(0.01)
        while any(r.state == "running" for r in self.runs.values()):
            await asyncio.sleep(0.01)

    def _grace(self) -> float:
        return float(self.spec.get("terminationGracePeriodSeconds", 30))

    # --- termination ---------------------------------------------------------------------------

    def delete_requested(self) -> None:
        """The pod was deleted gracefully: SIGTERM now, SIGKILL after the grace period."""
        if self.deleting:
            return
        self.deleting = True
        current = self._current()
        grace = self._grace()
        if current is not None:
            grace = float(current["metadata"].get("deletionGracePeriodSeconds", grace))
        self.stop(grace)

    def stop(self, grace: float) -> None:
        self.deadline = time.monotonic() + grace
        self.stopping.set()
        for name, proc in self.procs.items():
            if self.runs[name].kind != "sidecar":
                proc.signal(signal.SIGTERM)
        asyncio.get_running_loop().call_later(grace, self._kill_remaining)
        if self.task is None or self.task.done():
            self._remove()

    def _kill_remaining(self) -> None:
        if not self.finished:
            self.kill_all()

    def orphaned(self) -> None:
        """The pod object is gone (force deletion): kill everything now."""
        self.gone = True
        self.stopping.set()
        self.kill_all()

    def kill_all(self) -> None:
        self.stopping.set()
        for proc in self.procs.values():
            proc.signal(signal.SIGKILL)

    def _remove(self) -> None:
        self.gone = True
        with contextlib.suppress(ApiError):
            self.store.delete(self.kubelet._pods, self.namespace, self.name, grace_period=0)
        shutil.rmtree(self.dir, ignore_errors=True)
        self.kubelet.workers.pop(self.uid, None)

    # --- status ------------------------------------------------------------------------------

    def _current(self) -> dict[str, Any] | None:
        try:
            pod = self.store.get(self.kubelet._pods, self.namespace, self.name)
        except ApiError:
            return None
        return pod if pod["metadata"].get("uid") == self.uid else None

    def publish(self) -> None:
        """Write the pod's status from what the containers are doing now."""
        current = self._current()
        if current is None:
            return
        status = pod_status(
            current.get("status") or {},
            list(self.runs.values()),
            self.phase,
            start_time=self.start_time,
            host_ip=HOST_IP,
            pod_ip=HOST_IP,
            now=now_rfc3339(self.store.clock),
        )
        self._write_status(status)

    def _write_status(self, status: dict[str, Any]) -> None:
        current = self._current()
        if current is None or current.get("status") == status:
            return
        body = {"metadata": {"name": self.name}, "status": status}
        try:
            self.store.update(
                self.kubelet._pods, self.namespace, self.name, body, subresource="status"
            )
        except ApiError as exc:
            log.debug("Status of %s/%s not written: %s", self.namespace, self.name, exc)


__all__ = ["COMPONENT", "Kubelet", "PodWorker"]


def _probe_port(port: Any, container: dict[str, Any]) -> int | None:
    """A probe's port: a number, or the name of one of the container's ports."""
    if isinstance(port, int):
        return port
    for item in container.get("ports") or []:
        if item.get("name") == port:
            return int(item["containerPort"])
    if isinstance(port, str) and port.isdigit():
        return int(port)
    return None


async def _probe_once(port: int, path: str | None) -> bool:
    """One TCP connect, or one HTTP GET that must answer 2xx or 3xx."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 1.0)
    except (OSError, TimeoutError):
        return False
    try:
        if path is None:
            return True
        writer.write(f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode())
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), 1.0)
        parts = line.split()
        return len(parts) >= 2 and parts[1][:1] in (b"2", b"3")
    except (OSError, TimeoutError):
        return False
    finally:
        writer.close()
