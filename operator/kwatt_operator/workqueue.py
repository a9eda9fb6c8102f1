"""A keyed work queue, as controller-runtime's: each TrainingJob is reconciled by one worker
at a time, however many events arrive for it meanwhile.

Events only say "look at this object again"; a key queued twice is queued once, a
key being worked on is queued again after (never twice at once), and a key can ask
to come back later (a schedule, a retry with backoff). That is what makes a
level-triggered reconcile both safe and quiet.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

Key = tuple[str, str]  # (namespace, name)


class WorkQueue:
    """Keys to reconcile; `run(worker, n)` drives `n` workers until `stop()`."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[Key] = asyncio.Queue()
        self._queued: set[Key] = set()
        self._busy: set[Key] = set()
        self._again: set[Key] = set()
        self._timers: dict[Key, asyncio.TimerHandle] = {}
        self._tasks: list[asyncio.Task[None]] = []

    def add(self, key: Key) -> None:
        """Reconcile `key` soon (once, however often this is called before it runs)."""
        if key in self._busy:
            self._again.add(key)
        elif key not in self._queued:
            self._queued.add(key)
            self._queue.put_nowait(key)

    def add_after(self, key: Key, delay_s: float) -> None:
        """Reconcile `key` in `delay_s` seconds (an earlier request replaces a later one)."""
        loop = asyncio.get_running_loop()
        timer = self._timers.get(key)
        when = loop.time() + max(0.0, delay_s)
        if timer is not None and not timer.cancelled() and timer.when() <= when:
            return
        if timer is not None:
            timer.cancel()
        self._timers[key] = loop.call_at(when, self._fire, key)

    def due_in(self, key: Key) -> float | None:
        """Seconds until `key` comes back on its own (a retry, a resync, a schedule); None
        when nothing brings it back."""
        timer = self._timers.get(key)
        if timer is None:
            return None
        return max(0.0, timer.when() - asyncio.get_running_loop().time())

    def _fire(self, key: Key) -> None:
        self._timers.pop(key, None)
        self.add(key)

    def forget(self, key: Key) -> None:
        """The object is gone: drop its timer (a queued pass will find nothing to do)."""
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()

    def start(self, worker: Callable[[Key], Awaitable[None]], workers: int = 4) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._loop(worker)) for _ in range(workers)]

    async def _loop(self, worker: Callable[[Key], Awaitable[None]]) -> None:
        while True:
            key = await self._queue.get()
            self._queued.discard(key)
            self._busy.add(key)
            try:
                await worker(key)
            finally:
                self._busy.discard(key)
                if key in self._again:
                    self._again.discard(key)
                    self.add(key)

    async def stop(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []


__all__ = ["Key", "WorkQueue"]
