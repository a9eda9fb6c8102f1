"""Start a sandbox cluster from Python: for pytest fixtures and demos.

This is an emulator for tests and demos; production is a real cluster.

    with running_sandbox(tmp_path) as sb:
        subprocess.run(["kubectl", "get", "ns"], env=sb.env(), check=True)
        sb.call(sb.store.logs.append, "default", "pod-1", "main", "hello\\n")

The server runs on its own event loop in a background thread; `call` and `run`
execute callables and coroutines on that loop, which is the only thread allowed
to touch the store.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from kwatt_sandbox.audit import AuditLog
from kwatt_sandbox.faults import Faults
from kwatt_sandbox.kubeconfig import write_kubeconfig
from kwatt_sandbox.server import Controller, SandboxConfig, SandboxServer
from kwatt_sandbox.store import Store

T = TypeVar("T")


@dataclass
class Sandbox:
    """A running sandbox: its URL, kubeconfig, and handles on its store, audit and faults."""

    server: SandboxServer
    loop: asyncio.AbstractEventLoop
    kubeconfig: Path
    _thread: threading.Thread = field(repr=False)

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def store(self) -> Store:
        """The object store; touch it only through `call` (it lives on the loop thread)."""
        return self.server.store

    @property
    def audit(self) -> AuditLog:
        return self.server.audit

    @property
    def faults(self) -> Faults:
        return self.server.faults

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run `fn(*args, **kwargs)` on the server's loop thread and return its result."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def invoke() -> None:
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as exc:
                future.set_exception(exc)

        self.loop.call_soon_threadsafe(invoke)
        return future.result(timeout=30)

    def run(self, coro: Awaitable[T], timeout: float = 30) -> T:
        """Run a coroutine on the server's loop and wait for it."""

        async def wrapper() -> T:
            return await coro

        return asyncio.run_coroutine_threadsafe(wrapper(), self.loop).result(timeout)

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """An environment for subprocesses (kubectl, kopf) that points them here."""
        env = dict(os.environ if base is None else base)
        env["KUBECONFIG"] = str(self.kubeconfig)
        return env

    def add_controller(self, name: str, controller: Controller) -> None:
        """Plug in a background controller (e.g. a Job controller or a kubelet)."""
        self.call(self.server.add_controller, name, controller)

    def compact(self) -> int:
        """Forget the watch history: older resourceVersions then get 410 Gone."""
        return self.call(self.store.compact)

    def create(self, obj: dict[str, Any], namespace: str = "default") -> dict[str, Any]:
        """Create an object from a manifest dict, bypassing HTTP (for test setup)."""

        def do() -> dict[str, Any]:
            info = self.store.info_for(obj["apiVersion"], obj["kind"])
            ns = obj.get("metadata", {}).get("namespace", namespace) if info.namespaced else ""
            return self.store.create(info, ns, obj)

        return self.call(do)

    def get(self, api_version: str, kind: str, name: str, namespace: str = "") -> dict[str, Any]:
        def do() -> dict[str, Any]:
            info = self.store.info_for(api_version, kind)
            return self.store.get(info, namespace, name)

        return self.call(do)

    def write_log(self, namespace: str, pod: str, container: str, text: str) -> None:
        """Append container output, as a kubelet would; `kubectl logs` serves it."""
        self.call(self.store.logs.append, namespace, pod, container, text)


@contextmanager
def running_sandbox(
    directory: Path | None = None,
    *,
    config: SandboxConfig | None = None,
    kubeconfig: Path | None = None,
    controllers: tuple[tuple[str, Controller], ...] = (),
) -> Iterator[Sandbox]:
    """Start a sandbox API server in a background thread; stop it on exit.

    The kubeconfig goes to `kubeconfig`, or `directory/kubeconfig`, or a temporary
    directory's.
    """
    import tempfile

    server = SandboxServer(config)
    for name, controller in controllers:
        server.add_controller(name, controller)
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    failure: list[BaseException] = []

    def main() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(server.start())
        except BaseException as exc:
            failure.append(exc)
            ready.set()
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(server.stop())
            loop.close()

    thread = threading.Thread(target=main, name="kwatt-sandbox", daemon=True)
    thread.start()
    if not ready.wait(30):
        raise RuntimeError("The sandbox API server did not start within 30 seconds.")
    if failure:
        raise RuntimeError(f"The sandbox API server failed to start: {failure[0]}") from failure[0]
    with tempfile.TemporaryDirectory(prefix="kwatt-sandbox-") as tmp:
        path = kubeconfig or (directory or Path(tmp)) / "kubeconfig"
        write_kubeconfig(path, server.url)
        try:
            yield Sandbox(server, loop, path, thread)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(15)


def eventually(check: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05) -> Any:
    """Poll `check` until it returns something truthy (or stops raising) before the deadline.

    Tests against the sandbox wait on controllers and processes; polling with a
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
