"""A tiny work queue for the simulated controllers.

Part of the sandbox cluster, an emulator for tests and demos; production is a real
cluster. Store listeners run synchronously inside writes, so they only `add` keys
here; the controller's task takes them in batches a moment later, as informers and
work queues decouple real controllers from the API server.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class WorkQueue(Generic[K]):
    """Keys to process; `add_after` is for deadlines and TTLs."""

    def __init__(self) -> None:
        self._keys: set[K] = set()
        self._event: asyncio.Event | None = None

    def add(self, key: K) -> None:
        self._keys.add(key)
        if self._event is not None:
            self._event.set()

    def add_after(self, delay: float, key: K) -> None:
        asyncio.get_running_loop().call_later(max(delay, 0.0), self.add, key)

    async def take(self, timeout: float | None = None) -> set[K]:
        """Wait for keys (or the timeout) and return them all, emptying the queue."""
        if self._event is None:
            self._event = asyncio.Event()
        if not self._keys:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._event.wait(), timeout)
        self._event.clear()
        await asyncio.sleep(0)  # let the write that queued us finish answering first
        keys, self._keys = self._keys, set()
        return keys
