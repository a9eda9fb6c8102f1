"""One container as a real local process in its own namespaces: spawn, stream output, signal, reap.

Part of the sandbox cluster (a test and demo harness; production is a real cluster).
Each container runs under `shim.py` as PID 1 of its own mount and PID namespaces:
its volumes are bind-mounted there, a signal reaches its main process once, and when
the main process exits (or the sandbox dies, even by SIGKILL) the kernel kills
everything else the container started, as a container runtime does.
"""

from __future__ import annotations

import asyncio
import codecs
import logging
import os
from collections.abc import Callable
from pathlib import Path

from kwatt_sandbox.nodes.podspec import exit_code
from kwatt_sandbox.nodes.shim import shim_preexec, signal_container, wrap

log = logging.getLogger(__name__)
Output = Callable[[str, str], None]  # (text, "stdout" | "stderr")


class ContainerProcess:
    """A running container; `output` receives its stdout and stderr text as it comes."""

    def __init__(
        self, argv: list[str], env: dict[str, str], spec_path: Path, output: Output
    ) -> None:
        self.argv = argv
        self.env = env
        self.spec_path = spec_path
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
        """Spawn the container (OSError/RuntimeError if it cannot run at all)."""
        self.proc = await asyncio.create_subprocess_exec(
            *wrap(self.argv, self.spec_path),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=self.env,
            start_new_session=True,
            preexec_fn=shim_preexec(os.getpid()),
        )
        loop = asyncio.get_running_loop()
        for stream, name in ((self.proc.stdout, "stdout"), (self.proc.stderr, "stderr")):
            if stream is not None:
                self._readers.append(loop.create_task(self._pump(stream, name)))

    async def _pump(self, stream: asyncio.StreamReader, name: str) -> None:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        while True:
            chunk = await stream.read(65536)
            if not chunk:
                tail = decoder.decode(b"", final=True)
                if tail:
                    self.output(tail, name)
                return
            text = decoder.decode(chunk)
            if text:
                self.output(text, name)

    def signal(self, sig: int) -> None:
        """Send `sig` to the container's main process (SIGKILL ends the whole container)."""
        if self.running and self.proc is not None:
            signal_container(self.proc.pid, sig)

    async def wait(self) -> int:
        """Wait for exit, drain the output; the container's exit code."""
        assert self.proc is not None
        returncode = await self.proc.wait()
        if self._readers:
            _done, pending = await asyncio.wait(self._readers, timeout=2.0)
            for task in pending:
                task.cancel()
        return exit_code(returncode)


__all__ = ["ContainerProcess", "Output"]
