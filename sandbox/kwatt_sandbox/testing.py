"""Start a sandbox cluster for tests and demos, or use any other cluster through a kubeconfig.

The sandbox is a test and demo harness (a real control plane, simulated nodes and
GPUs); production is a real cluster. `running_sandbox` starts `kwatt sandbox` as a
child process — the very command a person runs — waits for its ready file, and
stops it with SIGTERM at the end:

    with running_sandbox(tmp_path) as sb:
        sb.kubectl("get", "nodes")
        sb.faults.error(500, resource="widgets", count=2)   # through the fault proxy

`external_cluster(kubeconfig)` gives the same handle for another cluster (no fault
proxy, no node agents: tests that need them skip).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kwatt_sandbox.controlplane.build import Binaries, ensure_binaries

START_TIMEOUT_S = 120.0


class SandboxError(RuntimeError):
    """The sandbox did not start; the message carries its output."""


class FaultsClient:
    """Inject faults through the sandbox's proxy (and its node agents) over HTTPS.

    Method names and arguments are those of kwatt_sandbox.faults.Faults.
    """

    def __init__(self, proxy_url: str, context: ssl.SSLContext) -> None:
        self.url = proxy_url.rstrip("/") + "/sandbox/faults"
        self._context = context

    def _call(self, method: str, path: str = "", body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, context=self._context, timeout=10) as response:
            text = response.read().decode()
        return json.loads(text) if text else None

    def add(self, kind: str, **spec: Any) -> dict[str, Any]:
        rule: dict[str, Any] = self._call("POST", "", {"kind": kind, **spec})
        return rule

    def error(self, code: int, **spec: Any) -> dict[str, Any]:
        return self.add("error", code=code, **spec)

    def conflicts(self, resource: str, **spec: Any) -> dict[str, Any]:
        return self.add("conflicts", resource=resource, **spec)

    def slow(self, delay: float, **spec: Any) -> dict[str, Any]:
        return self.add("slow", delay=delay, **spec)

    def drop_watches(self, **spec: Any) -> dict[str, Any]:
        return self.add("drop_watch", **spec)

    def expire_watches(self, **spec: Any) -> dict[str, Any]:
        return self.add("gone_watch", **spec)

    def kill_container(self, **spec: Any) -> dict[str, Any]:
        return self.add("kill_container", **spec)

    def stop_heartbeat(self, node: str, **spec: Any) -> dict[str, Any]:
        return self.add("stop_heartbeat", node=node, **spec)

    def drop_open_watches(self, resource: str | None = None, how: str = "drop") -> None:
        self._call("POST", "/drop-open-watches", {"resource": resource, "how": how})

    def rules(self) -> list[dict[str, Any]]:
        rules: list[dict[str, Any]] = self._call("GET")["items"]
        return rules

    def clear(self) -> None:
        self._call("DELETE")


@dataclass
class Cluster:
    """A cluster for tests: its kubeconfig, and the sandbox's extras when it is one."""

    kubeconfig: Path
    binaries: Binaries | None = None
    proxy_kubeconfig: Path | None = None
    state: dict[str, Any] = field(default_factory=dict)
    faults: FaultsClient | None = None
    proc: subprocess.Popen[bytes] | None = None
    output: Path | None = None  # what `kwatt sandbox` printed (its log)

    @property
    def is_sandbox(self) -> bool:
        return self.proc is not None

    @property
    def kubectl_path(self) -> str:
        """The cached kubectl v1.37.2 built with the control plane, else the PATH's."""
        if self.binaries is not None:
            return str(self.binaries.path("kubectl"))
        return "kubectl"

    def env(self, base: dict[str, str] | None = None, *, proxy: bool = False) -> dict[str, str]:
        """An environment for subprocesses (kubectl, kopf) that points them here."""
        env = dict(os.environ if base is None else base)
        config = self.proxy_kubeconfig if proxy and self.proxy_kubeconfig else self.kubeconfig
        env["KUBECONFIG"] = str(config)
        if self.binaries is not None:
            env["PATH"] = f"{self.binaries.directory}{os.pathsep}{env.get('PATH', '')}"
        return env

    def kubectl(
        self, *args: str, check: bool = True, input: str | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl against this cluster; output as text."""
        result = subprocess.run(
            [self.kubectl_path, *args],
            env=self.env(),
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}"
            )
        return result

    def kubectl_json(self, *args: str) -> Any:
        return json.loads(self.kubectl(*args, "-o", "json").stdout)

    def apply_crd(self, path: Path, name: str, timeout: float = 30) -> None:
        """Apply a CRD server-side (idempotent: tests of one session share the cluster) and
        wait until it is Established and its resource is served. `kubectl wait` alone fails
        ("conditions accessor error") when it asks before the API server has written the new
        CRD's first conditions, so the wait is retried until the deadline."""
        self.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(path))
        established = ("wait", "--for=condition=Established", f"crd/{name}", "--timeout=5s")
        eventually(
            lambda: self.kubectl(*established, check=False, timeout=10).returncode == 0,
            timeout=timeout,
            interval=0.2,
        )
        eventually(
            lambda: self.kubectl("get", name, "-A", check=False).returncode == 0,
            timeout=timeout,
            interval=0.2,
        )

    def api_client(self, *, proxy: bool = False) -> Any:
        """A `kubernetes.client.ApiClient` configured from the (proxy) kubeconfig."""
        from kubernetes import client, config

        configuration = client.Configuration()
        path = self.proxy_kubeconfig if proxy and self.proxy_kubeconfig else self.kubeconfig
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=str(path), client_configuration=configuration
        )
        return client.ApiClient(configuration)

    def sandbox_log(self) -> str:
        """What `kwatt sandbox` has printed so far (sandbox only; empty elsewhere)."""
        return self.output.read_text(errors="replace") if self.output else ""

    def audit_events(self, user: str | None = None) -> list[dict[str, Any]]:
        """The API server's audit log so far (sandbox only: empty elsewhere), one dict per
        request (user, verb, objectRef, responseStatus), optionally for one user."""
        directory = self.state.get("logs")
        if not directory:
            return []
        events = []
        path = Path(directory) / "audit.log"
        with contextlib.suppress(OSError), path.open() as f:
            for line in f:
                with contextlib.suppress(ValueError):
                    event = json.loads(line)
                    if user is None or event.get("user", {}).get("username") == user:
                        events.append(event)
        return events

    def log_tail(self, component: str, lines: int = 30) -> str:
        """The end of a control-plane component's log (sandbox only)."""
        directory = self.state.get("logs")
        if not directory:
            return ""
        try:
            text = (Path(directory) / f"{component}.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def sandbox_command(
    kubeconfig: Path, proxy_kubeconfig: Path, ready_file: Path, nodes: list[str] | None
) -> list[str]:
    argv = [
        sys.executable,
        "-m",
        "kwatt_cli.main",
        "sandbox",
        "--kubeconfig",
        str(kubeconfig),
        "--proxy-kubeconfig",
        str(proxy_kubeconfig),
        "--ready-file",
        str(ready_file),
    ]
    for node in nodes or []:
        argv += ["--node", node]
    return argv


@contextmanager
def running_sandbox(
    directory: Path | None = None,
    *,
    nodes: list[str] | None = None,
    timeout: float = START_TIMEOUT_S,
    stop_with_parent: bool = False,
) -> Iterator[Cluster]:
    """Start `kwatt sandbox` (building the control plane first if needed) and stop it after.

    `nodes` are `--node` options (default: the command's own default nodes). With
    `stop_with_parent`, the sandbox gets SIGTERM (and stops everything) if this process dies
    without stopping it, even by SIGKILL; call from the main thread (the kernel ties that
    signal to the thread that started it).
    """
    preexec = None
    if stop_with_parent:
        from kwatt_sandbox.nodes.shim import pdeathsig_preexec

        preexec = pdeathsig_preexec(os.getpid(), signal.SIGTERM)
    binaries = ensure_binaries(sys.stderr)
    with tempfile.TemporaryDirectory(prefix="kwatt-sandbox-test-") as tmp:
        base = directory or Path(tmp)
        base.mkdir(parents=True, exist_ok=True)
        kubeconfig, proxy_kubeconfig = base / "kubeconfig", base / "proxy.kubeconfig"
        ready = base / "ready.json"
        output = base / "sandbox.out"
        with output.open("wb") as out:
            proc = subprocess.Popen(
                sandbox_command(kubeconfig, proxy_kubeconfig, ready, nodes),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=preexec,
            )
        try:
            state = _wait_ready(proc, ready, output, timeout)
            pki = Path(state["directory"]) / "pki"
            context = ssl.create_default_context(cafile=str(pki / "kwatt-sandbox-ca.crt"))
            context.load_cert_chain(pki / "admin.crt", pki / "admin.key")
            yield Cluster(
                kubeconfig=kubeconfig,
                binaries=binaries,
                proxy_kubeconfig=proxy_kubeconfig,
                state=state,
                faults=FaultsClient(state["proxy_url"], context),
                proc=proc,
                output=output,
            )
        finally:
            stop_sandbox(proc)


def stop_sandbox(proc: subprocess.Popen[bytes], timeout: float = 30) -> int:
    """SIGTERM, as Ctrl-C would; SIGKILL if it does not stop in time."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def _wait_ready(
    proc: subprocess.Popen[bytes], ready: Path, output: Path, timeout: float
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready.exists():
            state: dict[str, Any] = json.loads(ready.read_text())
            return state
        if proc.poll() is not None:
            raise SandboxError(
                f"kwatt sandbox exited with {proc.returncode}:\n{output.read_text()[-4000:]}"
            )
        time.sleep(0.1)
    stop_sandbox(proc)
    raise SandboxError(
        f"kwatt sandbox was not ready in {timeout:.0f}s:\n{output.read_text()[-4000:]}"
    )


def external_cluster(kubeconfig: Path) -> Cluster:
    """Any other cluster: tests that need the sandbox's faults or node agents skip there."""
    if not kubeconfig.is_file():
        raise SandboxError(f"The kubeconfig {kubeconfig} does not exist.")
    from kwatt_sandbox.controlplane.build import find_binaries

    return Cluster(kubeconfig=kubeconfig, binaries=find_binaries())


def eventually(check: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05) -> Any:
    """Poll `check` until it returns something truthy (or stops raising) before the deadline.

    Tests against a cluster wait on controllers and processes; polling with a
    deadline keeps them fast when things are quick and patient when the machine is busy.
    """
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except Exception as exc:
            last = exc
        time.sleep(interval)
    if last is not None:
        raise AssertionError(f"condition not met within {timeout}s: {last!r}") from last
    raise AssertionError(f"condition not met within {timeout}s")


__all__ = [
    "Cluster",
    "FaultsClient",
    "SandboxError",
    "eventually",
    "external_cluster",
    "running_sandbox",
    "stop_sandbox",
]
