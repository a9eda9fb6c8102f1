"""The operator's work queue (workqueue.py), driven by a real event loop: each TrainingJob is
reconciled by one worker at a time, once however many events arrive for it, again after a
pass that an event arrived during, and later when a pass asks for it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import pytest

from kwatt_operator.workqueue import Key, WorkQueue

pytestmark = pytest.mark.timeout(30)

A: Key = ("ml", "cifar")
B: Key = ("ml", "imagenet")


def run(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(asyncio.wait_for(main(), timeout=20))


class Recorder:
    """A worker that notes each pass and how many passes of one key overlapped."""

    def __init__(self, hold_s: float = 0.0) -> None:
        self.passes: list[Key] = []
        self.running: dict[Key, int] = {}
        self.most_at_once: dict[Key, int] = {}
        self.peak_keys = 0
        self.hold_s = hold_s
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.release.set()

    async def __call__(self, key: Key) -> None:
        self.running[key] = self.running.get(key, 0) + 1
        self.most_at_once[key] = max(self.most_at_once.get(key, 0), self.running[key])
        self.peak_keys = max(self.peak_keys, sum(1 for n in self.running.values() if n))
        self.passes.append(key)
        self.started.set()
        try:
            await self.release.wait()
            await asyncio.sleep(self.hold_s)
        finally:
            self.running[key] -= 1


async def settle(seconds: float = 0.05) -> None:
    await asyncio.sleep(seconds)


async def until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


def test_a_key_added_many_times_before_its_pass_is_reconciled_once() -> None:
    async def main() -> None:
        queue, worker = WorkQueue(), Recorder()
        for _ in range(5):
            queue.add(A)
        queue.add(B)
        queue.start(worker, 2)
        await settle()
        assert sorted(worker.passes) == [A, B]
        await queue.stop()

    run(main)


def test_events_during_a_pass_bring_the_key_back_once_after_it_never_twice_at_once() -> None:
    async def main() -> None:
        queue, worker = WorkQueue(), Recorder()
        worker.release.clear()
        queue.start(worker, 4)
        queue.add(A)
        await until(worker.started.is_set)
        for _ in range(3):  # events while the pass runs, with workers to spare
            queue.add(A)
        await settle()
        assert worker.passes == [A]  # not a second pass alongside the first
        worker.release.set()
        await until(lambda: len(worker.passes) == 2)
        await settle()
        assert worker.passes == [A, A]  # once more, after the pass, for all three events
        assert worker.most_at_once[A] == 1
        await queue.stop()

    run(main)


def test_different_keys_are_worked_on_at_the_same_time() -> None:
    async def main() -> None:
        queue, worker = WorkQueue(), Recorder(hold_s=0.1)
        queue.start(worker, 2)
        queue.add(A)
        queue.add(B)
        await until(lambda: len(worker.passes) == 2)
        assert worker.peak_keys == 2
        await queue.stop()

    run(main)


def test_a_key_comes_back_after_its_delay_and_says_when() -> None:
    async def main() -> None:
        queue, worker = WorkQueue(), Recorder()
        queue.start(worker, 1)
        assert queue.due_in(A) is None
        queue.add_after(A, 0.3)
        due = queue.due_in(A)
        assert due is not None and 0.2 < due <= 0.3
        await settle(0.1)
        assert worker.passes == []
        await until(lambda: worker.passes == [A])
        assert queue.due_in(A) is None  # fired: nothing more scheduled
        queue.add_after(B, -5)  # a time already past: now
        await until(lambda: worker.passes == [A, B])
        await queue.stop()

    run(main)


def test_the_earlier_of_two_requests_wins() -> None:
    async def main() -> None:
        queue, worker = WorkQueue(), Recorder()
        queue.start(worker, 1)
        queue.add_after(A, 60)  # a resync
        queue.add_after(A, 0.05)  # a schedule that is due sooner replaces it
        due = queue.due_in(A)
        assert due is not None and due <= 0.05
        queue.add_after(A, 30)  # a later one does not push it back
        due = queue.due_in(A)
        assert due is not None and due <= 0.05
        await until(lambda: worker.passes == [A])
        await settle(0.1)
        assert worker.passes == [A]  # the replaced resync does not fire as well
        await queue.stop()

    run(main)


def test_a_forgotten_key_does_not_come_back() -> None:
    async def main() -> None:
        queue, worker = WorkQueue(), Recorder()
        queue.start(worker, 1)
        queue.add_after(A, 0.05)
        queue.add_after(B, 0.05)
        queue.forget(A)
        queue.forget(("ml", "never-seen"))  # harmless
        assert queue.due_in(A) is None
        await until(lambda: worker.passes == [B])
        await settle(0.1)
        assert worker.passes == [B]
        await queue.stop()

    run(main)


def test_stop_ends_the_workers_and_drops_every_timer() -> None:
    async def main() -> None:
        queue, worker = WorkQueue(), Recorder()
        worker.release.clear()
        queue.start(worker, 2)
        queue.add(A)
        await until(worker.started.is_set)
        queue.add_after(B, 0.05)
        await queue.stop()  # returns with a pass in the middle of its work
        assert queue.due_in(B) is None
        queue.add(B)
        await settle(0.1)
        assert worker.passes == [A]  # no worker is left to take anything
        await queue.stop()  # harmless twice

    run(main)


def test_four_workers_by_default() -> None:
    async def main() -> None:
        queue, worker = WorkQueue(), Recorder()
        work: Callable[[Key], Awaitable[None]] = worker
        queue.start(work)  # four workers by default
        keys = [("ml", f"tj-{i}") for i in range(4)]
        worker.release.clear()
        for key in keys:
            queue.add(key)
        await until(lambda: len(worker.passes) == 4)
        assert worker.peak_keys == 4
        worker.release.set()
        await queue.stop()

    run(main)
