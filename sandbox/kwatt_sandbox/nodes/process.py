"""One container as a real local process: spawn, stream output, signal, reap.

Part of the sandbox cluster, an emulator for tests and demos; production is a real
cluster. Each process gets its own process group (its "container"): signals go to
the whole group, and when the main process exits the rest of the group is killed,
as a container runtime does when a container's PID 1 exits. Every live group is
remembered so that nothing outlives the sandbox, even at interpreter exit.
"""

from __future__ import annotations

import asyncio
import atexit
import codecs
import contextlib
import logging
import os
import signal
from collections.abc import Callable

from kwatt_sandbox.nodes.podspec import exit_code

log = logging.getLogger(__name__)
_LIVE_GROUPS: set[int] = set()


def _kill_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


@atexit.register
def _kill_leftovers() -> None:
    for pgid in list(_LIVE_GROUPS):
        _kill_group(pgid, signal.SIGKILL)


class ContainerProcess:
    """A running container process; `output` receives its stdout and stderr text."""

    def __init__(
        self, argv: list[str], env: dict[str, str], cwd: str | None, output: Callable[[str], None]
    ) -> None:
        self.argv = argv
        self.env = env
        self.cwd = cwd
        self.output = output
        self.proc: asyncio.subprocess.Process | None = None
        self._readers: list[asyncio.Task[None]] = []

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc else 0

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def start(self) -> None:
        """Spawn the process (OSError if it cannot run, e.g. executable not found)."""
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=self.env,
            cwd=self.cwd,
            start_new_session=True,
        )
        _LIVE_GROUPS.add(self.proc.pid)
        loop = asyncio.get_running_loop()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                self._readers.append(loop.create_task(self._pump(stream)))

    async def _pump(self, stream: asyncio.StreamReader) -> None:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        while True:
            chunk = await stream.read(65536)
            if not chunk:
                tail = decoder.decode(b"", final=True)
                if tail:
                    self.output(tail)
                return
            text = decoder.decode(chunk)
            if text:
                self.output(text)

    def signal(self, sig: int) -> None:
        """Send `sig` to the container's whole process group."""
        if self.running and self.proc is not None:
            _kill_group(self.proc.pid, sig)

    async def wait(self) -> int:
        """Wait for exit, kill what is left of the group, drain output; the exit code."""
        assert self.proc is not None
        returncode = await self.proc.wait()
        _kill_group(self.proc.pid, signal.SIGKILL)
        _LIVE_GROUPS.discard(self.proc.pid)
        if self._readers:
            _done, pending = await asyncio.wait(self._readers, timeout=2.0)
            for task in pending:
                task.cancel()
        return exit_code(returncode)
