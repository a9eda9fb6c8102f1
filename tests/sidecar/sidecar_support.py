"""Running the real sidecar and simulated trainer as processes on a simulated GPU node."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kwatt_core import simgpu as device
from kwatt_sandbox.gpu.provider import SimulatedGpuProvider

NODE = "node-a"
STARTED: list[subprocess.Popen[str]] = []  # reaped after each test, failed or not


def reap() -> None:
    while STARTED:
        proc = STARTED.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(check: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"Timed out waiting for {what}.")


@dataclass
class Node:
    """A simulated GPU node: provider, device dir and its GPUs."""

    root: Path
    provider: SimulatedGpuProvider
    uuids: list[str]

    @property
    def gpu_dir(self) -> Path:
        return self.provider.node_dir(NODE)

    @property
    def state_dir(self) -> Path:
        return self.provider.state_dir(NODE)

    def device(self, uuid: str | None = None) -> device.Device:
        return device.read(self.gpu_dir, uuid or self.uuids[0])

    def patch(self, uuid: str, **changes: Any) -> None:
        from dataclasses import replace

        device.update(self.gpu_dir, uuid, lambda d: replace(d, **changes))


def make_node(tmp: Path, count: int = 1, model: str = "v100") -> Node:
    provider = SimulatedGpuProvider(tmp / "sim")
    return Node(tmp, provider, provider.devices(NODE, model, count))


@dataclass
class SidecarProc:
    proc: subprocess.Popen[str]
    port: int
    metrics_port: int
    termination: Path
    stderr_path: Path
    env: dict[str, str] = field(default_factory=dict)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def metrics(self) -> str:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2
        ) as r:
            return str(r.read().decode())

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)

    def report(self) -> dict[str, Any]:
        return dict(json.loads(self.termination.read_text()))

    def log(self) -> str:
        return self.stderr_path.read_text()


def start_sidecar(node: Node, tag: str = "sc", **env: str) -> SidecarProc:
    port, metrics_port = free_port(), free_port()
    termination = node.root / f"{tag}.termination"
    stderr_path = node.root / f"{tag}.stderr"
    full = {
        **os.environ,
        **node.provider.container_env(NODE, node.uuids, []),
        "NVIDIA_VISIBLE_DEVICES": "all",
        "KWATT_PORT": str(port),
        "KWATT_METRICS_PORT": str(metrics_port),
        "KWATT_TERMINATION_PATH": str(termination),
        "KWATT_BATCH_SIZE": "1024",
        "POD_NAMESPACE": "ns1",
        "POD_NAME": "job-1-abc",
    }
    for key, value in env.items():
        if value == "":
            full.pop(key, None)
        else:
            full[key] = value
    proc = subprocess.Popen(
        [sys.executable, "-m", "kwatt_sidecar"],
        env=full,
        stdout=subprocess.DEVNULL,
        stderr=stderr_path.open("w"),
        text=True,
    )
    STARTED.append(proc)
    sc = SidecarProc(proc, port, metrics_port, termination, stderr_path, full)

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"The sidecar exited early: {stderr_path.read_text()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/healthz", timeout=0.5):
                return True
        except (urllib.error.URLError, OSError):
            return False

    wait_for(ready, what="the sidecar to listen")
    return sc


def trainer_env(node: Node, sc: SidecarProc, batch_size: int = 1024) -> dict[str, str]:
    return {
        **os.environ,
        **node.provider.container_env(NODE, node.uuids, node.uuids),
        "KWATT_PORT": str(sc.port),
        "KWATT_BATCH_SIZE": str(batch_size),
    }


def run_trainer(
    node: Node, sc: SidecarProc, *args: str, batch_size: int = 1024, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kwatt_sandbox.gpu.trainer", "--gpu", "v100", *args],
        env=trainer_env(node, sc, batch_size),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def request(
    sc: SidecarProc,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any]]:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", sc.port, timeout=5)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, (json.loads(data) if data else {})
    finally:
        conn.close()


def sample(text: str | bytes, name: str, **labels: str) -> float | None:
    """The value of one series in a Prometheus exposition (None when absent), read with
    prometheus-client's own parser so that formatting details do not matter."""
    from prometheus_client.parser import text_string_to_metric_families

    if isinstance(text, bytes):
        text = text.decode()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return float(s.value)
    return None


class Served:
    """A Sidecar on the simulated GPU and its real servers, in this process (port 0)."""

    def __init__(self, node: Node, tmp: Path, servers_kw: dict[str, Any], **env: str) -> None:
        from kwatt_sidecar import config as configlib
        from kwatt_sidecar.app import Sidecar
        from kwatt_sidecar.gpu.simulated import SimulatedBackend
        from kwatt_sidecar.server import Servers

        cfg = configlib.load(
            {
                "KWATT_TERMINATION_PATH": str(tmp / "termination"),
                "KWATT_STATE_DIR": str(node.state_dir),
                "KWATT_BATCH_SIZE": "1024",
                **env,
            }
        )
        self.sidecar = Sidecar(cfg, SimulatedBackend(node.gpu_dir, "all"))
        self.servers = Servers(self.sidecar, 0, 0, **servers_kw)
        self.port = self.servers.port
        self.metrics_port = self.servers.metrics_port

    def __enter__(self) -> Served:
        self.servers.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.sidecar.finish()
        self.servers.stop()


def served(node: Node, tmp: Path, servers_kw: dict[str, Any] | None = None, **env: str) -> Served:
    return Served(node, tmp, servers_kw or {}, **env)


def raw_exchange(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send bytes as they are and read whatever comes back until the server closes (after an
    error at once, else after its idle timeout). No half-close: asyncio drops a connection
    at EOF, answer or not, and trainers never half-close."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def call(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 5.0,
) -> tuple[int, dict[str, str], Any]:
    """One request on a fresh connection: (status, headers, body): JSON decoded, other
    bodies as bytes, None when empty."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        heads = {k.lower(): v for k, v in resp.getheaders()}
        if data and heads.get("content-type", "").startswith("application/json"):
            return resp.status, heads, json.loads(data)
        return resp.status, heads, data or None
    finally:
        conn.close()


class Lines(logging.Handler):
    """The sidecar's log records, whatever an earlier in-process main() did to propagation."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def at(self, level: int) -> list[str]:
        return [r.getMessage() for r in self.records if r.levelno == level]

    def text(self) -> str:
        return "\n".join(r.getMessage() for r in self.records)
