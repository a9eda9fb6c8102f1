"""The kubelet of one simulated node: runs the pods bound to it as local processes.

Part of the sandbox cluster (a test and demo harness; production is a real cluster).
It speaks to the API server only as a kubelet does, with the node's own identity:
it watches the pods bound to its node, sets up their volumes (a real ServiceAccount
token among them), writes `pods/status`, records events, and deletes a pod for good
once its processes have ended after a graceful deletion.

Images are ignored: a container's `command` + `args` run as a process on this
machine, inside its own mount and PID namespaces (`shim.py`: the pod's volumes are
bind-mounted at their mountPaths, and nothing of the container outlives its main
process or the sandbox). A first word `python`, `python3` or `python3.N` becomes this
interpreter. The environment is minimal, as in a container: PATH, HOSTNAME, HOME,
the `KUBERNETES_SERVICE_*` variables that in-cluster clients read, the GPU
provider's variables and the container's own env — never the sandbox's own.

Termination messages: as a runtime does, the kubelet bind-mounts a file of its own,
`<pod dir>/<container>/termination-log`, at the container's `terminationMessagePath`
(default /dev/termination-log; the mount point is made once, empty, on the host).
After exit, up to 4096 bytes of it become `state.terminated.message`;
FallbackToLogsOnError falls back to the end of the log.

Order, as for native sidecars: regular init containers run to completion in order;
sidecars (init containers with restartPolicy Always) start in order and count as
started once their startupProbe passes; then main containers start. When every main
container has exited, sidecars get SIGTERM in reverse order and SIGKILL once the
pod's terminationGracePeriodSeconds are over; their exit codes do not fail the pod.
Restarts (OnFailure/Always, and sidecars) wait a short back-off (0.2 s doubling to
2 s) instead of the real 10 s to 5 min.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import signal
import sys
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp

from kwatt_sandbox.nodes.api import ApiClient, ApiError, now_rfc3339
from kwatt_sandbox.nodes.events import record_event
from kwatt_sandbox.nodes.gpus import GpuProvider
from kwatt_sandbox.nodes.ledger import GpuLedger
from kwatt_sandbox.nodes.logserver import ContainerLog, append_log, log_text
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
    live_phase,
    merge_gpu_env,
    pod_status,
    resolve_env,
    termination_message,
)
from kwatt_sandbox.nodes.process import ContainerProcess
from kwatt_sandbox.nodes.shim import Mount, write_spec
from kwatt_sandbox.nodes.volumes import VolumeBuilder, VolumeError, container_mounts

if TYPE_CHECKING:
    from kwatt_sandbox.faults import Faults

log = logging.getLogger(__name__)
COMPONENT = "kubelet"
Obj = dict[str, Any]
CONTAINER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_BACKOFF_START, _BACKOFF_MAX = 0.2, 2.0
ADMISSION_WAIT_S = 5.0
_API_ERRORS = (ApiError, aiohttp.ClientError, TimeoutError)


class Kubelet:
    """Runs the pods that the scheduler binds to `node`."""

    def __init__(
        self,
        node: str,
        api: ApiClient,
        ledger: GpuLedger,
        provider: GpuProvider,
        allocatable: Obj,
        faults: Faults,
        pod_dir: Path,
        service_port: int,
    ) -> None:
        self.node = node
        self.api = api
        self.ledger = ledger
        self.provider = provider
        self.allocatable = allocatable
        self.faults = faults
        self.pod_dir = pod_dir
        self.service_port = service_port
        self.workers: dict[str, PodWorker] = {}

    async def run(self) -> None:
        """Watch the pods bound to this node for as long as the agent runs."""
        kills = asyncio.get_running_loop().create_task(self._kill_loop())
        try:
            async for kind, pod in self.api.watch(
                "/api/v1/pods", {"fieldSelector": f"spec.nodeName={self.node}"}
            ):
                self._note(kind, pod)
        finally:
            kills.cancel()
            await self.shutdown()

    def _note(self, kind: str, pod: Obj) -> None:
        if kind == "SYNCED":  # after a (re)list: pods missing from it are gone
            present = set(pod.get("uids") or [])
            for uid, gone in list(self.workers.items()):
                if uid not in present:
                    gone.orphaned()
            return
        meta = pod.get("metadata") or {}
        uid = str(meta.get("uid", ""))
        worker = self.workers.get(uid)
        if kind == "DELETED":
            if worker is not None:
                worker.orphaned()
            return
        if worker is not None:
            worker.pod = pod
            if meta.get("deletionTimestamp"):
                worker.delete_requested()
            return
        if meta.get("deletionTimestamp"):
            self._spawn(self._delete_unstarted(pod), f"delete {meta.get('name')}")
            return
        if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            return
        worker = PodWorker(self, pod)
        self.workers[uid] = worker
        worker.task = self._spawn(worker.run(), f"pod {meta.get('namespace')}/{meta.get('name')}")

    def _spawn(self, coro: Awaitable[None], name: str) -> asyncio.Task[None]:
        async def wrapped() -> None:
            await coro

        return asyncio.get_running_loop().create_task(wrapped(), name=name)

    async def _delete_unstarted(self, pod: Obj) -> None:
        """A pod deleted before it ran here (or after this agent forgot it): nothing to
        stop, so it goes at once."""
        await delete_for_good(self.api, pod)

    async def _kill_loop(self) -> None:
        """The kill-container fault: SIGKILL matching running containers."""
        while True:
            await asyncio.sleep(0.05)
            for worker in list(self.workers.values()):
                for name, proc in list(worker.procs.items()):
                    if not proc.running or not worker.runs[name].started_at:
                        continue
                    uptime = time.monotonic() - worker.started_mono.get(name, 0.0)
                    if self.faults.take_container_kill(worker.namespace, worker.name, name, uptime):
                        log.info("Fault: killing container %s of %s.", name, worker.name)
                        proc.signal(signal.SIGKILL)

    async def shutdown(self) -> None:
        """Kill every container (nothing outlives the sandbox) and reap the workers."""
        for worker in self.workers.values():
            worker.kill_all()
        tasks = [w.task for w in self.workers.values() if w.task is not None and not w.task.done()]
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=3.0)
            for task in pending:
                task.cancel()

    def container_log(self, namespace: str, pod: str, container: str) -> ContainerLog | None:
        """For the log server: the log files of a container of a pod on this node."""
        for worker in self.workers.values():
            if worker.namespace == namespace and worker.name == pod and container in worker.runs:
                return worker.container_log(container)
        return None

    def base_env(self, pod_name: str) -> dict[str, str]:
        """What every container starts with, as a container runtime and kubelet give it."""
        port = str(self.service_port)
        return {
            "PATH": f"{Path(sys.executable).parent}:{CONTAINER_PATH}",
            "HOSTNAME": pod_name,
            "HOME": "/root",
            "KUBERNETES_SERVICE_HOST": HOST_IP,
            "KUBERNETES_SERVICE_PORT": port,
            "KUBERNETES_SERVICE_PORT_HTTPS": port,
            "KUBERNETES_PORT": f"tcp://{HOST_IP}:{port}",
            "KUBERNETES_PORT_443_TCP": f"tcp://{HOST_IP}:{port}",
            "KUBERNETES_PORT_443_TCP_PROTO": "tcp",
            "KUBERNETES_PORT_443_TCP_PORT": port,
            "KUBERNETES_PORT_443_TCP_ADDR": HOST_IP,
        }


async def delete_for_good(api: ApiClient, pod: Obj) -> None:
    """The kubelet's last word on a pod: delete with no grace, only this very pod (uid)."""
    meta = pod["metadata"]
    body = {
        "apiVersion": "v1",
        "kind": "DeleteOptions",
        "gracePeriodSeconds": 0,
        "preconditions": {"uid": meta["uid"]},
    }
    with contextlib.suppress(*_API_ERRORS):
        await api.delete(f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}", body)


class PodWorker:
    """One pod's life on a node: volumes, init containers, sidecars, main containers, the end."""

    def __init__(self, kubelet: Kubelet, pod: Obj) -> None:
        meta = pod["metadata"]
        self.kubelet = kubelet
        self.api = kubelet.api
        self.pod = pod
        self.uid: str = meta["uid"]
        self.namespace: str = meta["namespace"]
        self.name: str = meta["name"]
        self.spec: Obj = pod.get("spec") or {}
        self.containers = {
            str(c.get("name", "")): c
            for key in ("initContainers", "containers")
            for c in self.spec.get(key) or []
        }
        self.runs = {r.name: r for r in container_runs(self.spec)}
        self.procs: dict[str, ContainerProcess] = {}
        self.logs: dict[str, list[Path]] = {name: [] for name in self.runs}
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
        self.volumes: dict[str, str] = {}
        self._sidecar_tasks: list[asyncio.Task[int]] = []
        self._last_status: Obj | None = None
        self._publishing = asyncio.Lock()
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
            if self.deleting and not self.gone:
                await self._remove()

    async def _reap_sidecars(self) -> None:
        running = [t for t in self._sidecar_tasks if not t.done()]
        if running:
            _done, pending = await asyncio.wait(running, timeout=1.0)
            for task in pending:
                task.cancel()

    async def _life(self) -> None:
        plan = await self._allocate()
        if plan is None:
            await self._reject()
            return
        self.plan = plan
        self.start_time = now_rfc3339()
        self.dir.mkdir(parents=True, exist_ok=True)
        await self.publish()
        if not await self._mount_volumes():
            return
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
        # Free the devices before the terminal phase is visible: the scheduler counts them
        # free from then on and may bind the next GPU pod here at once.
        self.kubelet.ledger.release(self.uid)
        await self.publish()
        log.debug("Pod %s/%s ended %s.", self.namespace, self.name, self.phase)

    async def _allocate(self) -> dict[str, list[str]] | None:
        """The pod's devices. A pod whose processes are still being killed (force-deleted,
        so the scheduler already counts its devices free) holds them for a moment: wait
        a few seconds for them before rejecting the new pod, as admission would."""
        deadline = time.monotonic() + ADMISSION_WAIT_S
        while True:
            plan = self.kubelet.ledger.allocate(self.kubelet.node, self.pod)
            if plan is not None or time.monotonic() >= deadline or self.stopping.is_set():
                return plan
            await asyncio.sleep(0.1)

    async def _mount_volumes(self) -> bool:
        """Set up the volumes, retrying while a source is missing; False if the pod stops."""
        warned = ""
        while not self.stopping.is_set():
            try:
                self.volumes = await VolumeBuilder(self.api, self.pod, self.dir).build()
                return True
            except VolumeError as exc:
                if str(exc) != warned:
                    warned = str(exc)
                    await self.event("Warning", "FailedMount", f"MountVolume.SetUp failed: {exc}")
            except _API_ERRORS as exc:
                log.debug("Volumes of %s not ready: %s", self.name, exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), 1.0)
        return False

    async def _reject(self) -> None:
        node = self.kubelet.node
        log.info("Pod %s/%s rejected: not enough GPUs on %s.", self.namespace, self.name, node)
        self.phase = "Failed"
        status = dict(self.pod.get("status") or {})
        status.update(
            phase="Failed",
            reason="UnexpectedAdmissionError",
            message=f"Pod was rejected: Allocate failed due to requested number of devices "
            f"unavailable for nvidia.com/gpu on node {node}",
        )
        await self._write_status(status)

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
            await self.publish()
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
                env, argv, host_path, spec_path = await self._prepare(name, container)
                break
            except (EnvError, VolumeError) as exc:
                run.state, run.reason, run.message = (
                    "waiting",
                    "CreateContainerConfigError",
                    str(exc),
                )
                await self.publish()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), 0.5)
                if self.stopping.is_set():
                    return await self._start_failed(run, "ContainerCannotRun", str(exc))
            except CommandError as exc:
                return await self._start_failed(run, "StartError", str(exc))
        log_path = self.dir / name / f"{run.restart_count}.log"
        self.logs[name].append(log_path)

        def output(text: str, stream: str) -> None:
            append_log(log_path, text, stream=stream)

        proc = ContainerProcess(argv, env, spec_path, output)
        try:
            await proc.start()
        except (OSError, RuntimeError) as exc:
            return await self._start_failed(run, "StartError", f"exec: {argv[0]!r}: {exc}")
        self.procs[name] = proc
        self.started_mono[name] = time.monotonic()
        run.state, run.reason, run.message = "running", "", ""
        run.pid, run.started_at = proc.pid, now_rfc3339()
        await self.publish()
        await self.event("Normal", "Started", f"Started container {name}")
        if self.stopping.is_set() and run.kind != "sidecar":
            proc.signal(signal.SIGTERM)
        code = await proc.wait()
        run.state, run.exit_code = "terminated", code
        run.reason = "Completed" if code == 0 else "Error"
        run.finished_at = now_rfc3339()
        run.message = self._message(container, host_path, code, log_path)
        await self.publish()
        return code

    async def _start_failed(self, run: ContainerRun, reason: str, message: str) -> int:
        run.state, run.reason, run.message, run.exit_code = "terminated", reason, message, 128
        run.finished_at = now_rfc3339()
        await self.publish()
        await self.event("Warning", "Failed", f"Error: {message}")
        return 128

    async def _prepare(
        self, name: str, container: Obj
    ) -> tuple[dict[str, str], list[str], Path, Path]:
        """The process env, argv, host termination-message file and namespace spec."""
        lookup = await self._env_sources(container)
        own = resolve_env(
            container, self.pod, lambda kind, n: lookup.get((kind, n)), self.kubelet.allocatable
        )
        devices = self.kubelet.ledger.devices.get(self.kubelet.node, [])
        assigned = self.plan.get(name, [])
        provider_env = self.kubelet.provider.container_env(self.kubelet.node, devices, assigned)
        merged = merge_gpu_env(own, provider_env, devices)
        host_path = self.dir / name / "termination-log"
        host_path.parent.mkdir(parents=True, exist_ok=True)
        host_path.write_bytes(b"")
        message_path = str(container.get("terminationMessagePath") or DEFAULT_TERMINATION_PATH)
        env = self.kubelet.base_env(self.name)
        env.update(merged)
        argv = build_argv(container, own)
        workdir = self.dir / name / "root"
        workdir.mkdir(parents=True, exist_ok=True)
        spec_path = self.dir / name / "namespace.json"
        mounts = container_mounts(container, self.volumes)
        mounts.append(Mount(str(host_path), message_path, read_only=False))
        write_spec(spec_path, mounts, str(container.get("workingDir") or workdir))
        return env, argv, host_path, spec_path

    async def _env_sources(self, container: Obj) -> dict[tuple[str, str], Obj]:
        """The ConfigMaps and Secrets the container's env names (missing ones left out)."""
        wanted: set[tuple[str, str]] = set()
        for source in container.get("envFrom") or []:
            for key, kind in (("configMapRef", "ConfigMap"), ("secretRef", "Secret")):
                if source.get(key):
                    wanted.add((kind, str(source[key].get("name", ""))))
        for var in container.get("env") or []:
            value_from = var.get("valueFrom") or {}
            for key, kind in (("configMapKeyRef", "ConfigMap"), ("secretKeyRef", "Secret")):
                if value_from.get(key):
                    wanted.add((kind, str(value_from[key].get("name", ""))))
        found: dict[tuple[str, str], Obj] = {}
        for kind, name in sorted(wanted):
            plural = "configmaps" if kind == "ConfigMap" else "secrets"
            try:
                found[(kind, name)] = await self.api.get(
                    f"/api/v1/namespaces/{self.namespace}/{plural}/{name}"
                )
            except ApiError as exc:
                if exc.code not in (403, 404):
                    raise EnvError(f"{kind} {name} could not be read: {exc}") from exc
        return found

    def _message(self, container: Obj, host_path: Path, code: int, log_path: Path) -> str:
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
            message = fallback_message(log_text(log_path))
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
        grace = float(self.pod["metadata"].get("deletionGracePeriodSeconds", self._grace()))
        self.deadline = time.monotonic() + grace
        self.stopping.set()
        for name, proc in self.procs.items():
            if self.runs[name].kind != "sidecar":
                proc.signal(signal.SIGTERM)
        asyncio.get_running_loop().call_later(grace, self._kill_remaining)
        if self.task is None or self.task.done():
            asyncio.get_running_loop().create_task(self._remove())

    def _kill_remaining(self) -> None:
        if not self.finished:
            self.kill_all()

    def orphaned(self) -> None:
        """The pod object is gone (force deletion): kill everything now."""
        self.gone = True
        self.stopping.set()
        self.kill_all()
        if self.finished:
            self._forget()

    def kill_all(self) -> None:
        self.stopping.set()
        for proc in self.procs.values():
            proc.signal(signal.SIGKILL)

    async def _remove(self) -> None:
        self.gone = True
        await delete_for_good(self.api, self.pod)
        self._forget()

    def _forget(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
        self.kubelet.workers.pop(self.uid, None)

    # --- status and logs ---------------------------------------------------------------------

    def container_log(self, name: str) -> ContainerLog:
        paths = self.logs.get(name, [])
        proc = self.procs.get(name)
        index = len(paths) - 1

        def running() -> bool:
            current = self.procs.get(name)
            return (
                current is proc
                and proc is not None
                and proc.running
                and (len(self.logs.get(name, [])) - 1 == index)
            )

        return ContainerLog(
            current=paths[-1] if paths else None,
            previous=paths[-2] if len(paths) > 1 else None,
            running=running,
        )

    async def event(self, kind: str, reason: str, message: str) -> None:
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": self.pod["metadata"]}
        await record_event(self.api, pod, kind, reason, message, COMPONENT, self.kubelet.node)

    async def publish(self) -> None:
        """Write the pod's status from what the containers are doing now.

        One write at a time, each made from the state when its turn comes: concurrent
        PATCHes (a sidecar's exit and the pod's end) could land out of order and leave
        an older status, such as phase Running after Succeeded, as the last word.
        """
        async with self._publishing:
            status = pod_status(
                self.pod.get("status") or {},
                list(self.runs.values()),
                live_phase(self.phase, list(self.runs.values())),
                start_time=self.start_time,
                host_ip=HOST_IP,
                pod_ip=HOST_IP,
                now=now_rfc3339(),
            )
            await self._write_status(status)

    async def _write_status(self, status: Obj) -> None:
        if self.gone or status == self._last_status:
            return
        body = {"metadata": {"uid": self.uid}, "status": status}
        path = f"/api/v1/namespaces/{self.namespace}/pods/{self.name}/status"
        for attempt in range(5):
            try:
                self.pod = await self.api.patch(path, body)
                self._last_status = status
                return
            except ApiError as exc:
                if exc.code in (404, 409, 422):  # gone, or another pod of that name now
                    log.debug("Status of %s/%s not written: %s", self.namespace, self.name, exc)
                    return
                log.debug("Status of %s/%s: %s (retrying)", self.namespace, self.name, exc)
            except (aiohttp.ClientError, TimeoutError) as exc:
                log.debug("Status of %s/%s: %s (retrying)", self.namespace, self.name, exc)
            await asyncio.sleep(0.1 * 2**attempt)


__all__ = ["COMPONENT", "Kubelet", "PodWorker", "delete_for_good"]


def _probe_port(port: Any, container: Obj) -> int | None:
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
