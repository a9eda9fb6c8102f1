"""What kwatt costs a training loop, against a live sidecar on a simulated GPU.

    .venv/bin/python benchmarks/client_overhead.py [--steps 2000] [--idle-seconds 5]
        [--workers 8] [--concurrent-calls 500] [--processes] [--step-p99-ms 1.0]

Prints one table of per-call times (p50 and p99) and calls answered vs failed:

- one caller: `step()` while profiling (one HTTP round trip), `should_stop()`,
  `epoch_end()`, and `step()` after profiling, which must make no call at all;
- `--workers` concurrent callers (threads by default, processes with `--processes`),
  each with its own `Kwatt` client, as dataloader workers or several trainer processes
  would call the same sidecar: each says hello (`/v1/begin` with the run's GPU UUIDs,
  which the protocol answers with the run's status) and then calls `step()` and
  `should_stop()` `--concurrent-calls` times each, all at once. A call counts as
  answered when the client is still up afterwards (not `client.quiet`) and the
  sidecar still says it is profiling (the warm-up window is sized so that it does);

then the sidecar's CPU while it idles and while /metrics is scraped once a second,
and its resident memory (from /proc/<pid>/stat and /proc/<pid>/status).

Exits 1, naming each, when a target is missed: a profiling step's p99 under
`--step-p99-ms` (1 ms) for one caller; a step after profiling makes no call (checked
with the sidecar stopped by SIGSTOP: a call would time out and quiet the client); every
call, single and concurrent, answered. Threads share this process's GIL, so their
times include waiting for it; `--processes` measures separate trainer processes.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from queue import Empty
from typing import Any

from kwatt_client import Kwatt
from kwatt_sandbox.gpu.provider import SimulatedGpuProvider

MAX_WARMUP_STEPS = 1_000_000  # the sidecar's upper bound for KWATT_WARMUP_STEPS
BARRIER_TIMEOUT_S = 60.0


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@dataclass
class Calls:
    """One kind of call: the time of each call that was made, and how many were answered."""

    us: list[float] = field(default_factory=list)
    answered: int = 0
    failed: int = 0
    why: dict[str, int] = field(default_factory=dict)

    def fail(self, reason: str) -> None:
        self.failed += 1
        self.why[reason] = self.why.get(reason, 0) + 1

    def merge(self, other: Calls) -> None:
        self.us.extend(other.us)
        self.answered += other.answered
        self.failed += other.failed
        for reason, n in other.why.items():
            self.why[reason] = self.why.get(reason, 0) + n

    @property
    def total(self) -> int:
        return self.answered + self.failed

    def p50(self) -> float:
        return statistics.median(self.us) if self.us else float("nan")

    def p99(self) -> float:
        if not self.us:
            return float("nan")
        ordered = sorted(self.us)
        return ordered[int(0.99 * (len(ordered) - 1))]


def timed_call(
    kw: Kwatt, fn: Callable[[], object], calls: Calls, *, profiling: bool, hello: bool = False
) -> None:
    """Time one call and count it answered or failed.

    A client that went quiet answers nothing (its calls are no-ops: failed, and not
    timed); with `profiling`, a client the sidecar told that profiling is over makes
    no call either (failed too: the warm-up window is sized so that it never ends here),
    and the call must leave the client profiling (for the `hello` too).
    """
    if kw.quiet:
        calls.fail("client quiet")
        return
    if profiling and not hello and not kw.profiling:
        calls.fail("profiling ended")
        return
    t = time.perf_counter()
    fn()
    calls.us.append((time.perf_counter() - t) * 1e6)
    if kw.quiet:
        calls.fail("client quiet")
    elif profiling and not kw.profiling:
        calls.fail("profiling ended")
    else:
        calls.answered += 1


@dataclass
class Worker:
    """One concurrent caller's calls by kind, and when its calls began and ended."""

    calls: dict[str, Calls]
    start: float = 0.0  # time.monotonic(): one clock for every process on Linux
    end: float = 0.0


def hammer(port: int, uuids: list[str], n: int, barrier: Any) -> Worker:
    """One concurrent caller: its own client, hello, then n steps and n should_stop()s."""
    out = {"begin": Calls(), "step": Calls(), "should_stop": Calls()}
    worker = Worker(out)
    kw = Kwatt(port=port, gpu_uuids=uuids, connect=False)
    try:
        barrier.wait(BARRIER_TIMEOUT_S)  # every caller says hello at once
        worker.start = time.monotonic()
        timed_call(kw, kw.begin, out["begin"], profiling=True, hello=True)
        barrier.wait(BARRIER_TIMEOUT_S)  # then every caller hammers at once
        for _ in range(n):
            timed_call(kw, kw.step, out["step"], profiling=True)
            timed_call(kw, kw.should_stop, out["should_stop"], profiling=False)
        worker.end = time.monotonic()
    finally:
        kw.close()  # not end(): that would end the run for everyone
    return worker


def _hammer_process(port: int, uuids: list[str], n: int, barrier: Any, results: Any) -> None:
    try:
        results.put(hammer(port, uuids, n, barrier))
    except BaseException as exc:
        results.put(f"{type(exc).__name__}: {exc}")
        raise


def concurrent(
    port: int, uuids: list[str], workers: int, n: int, processes: bool
) -> tuple[dict[str, Calls], list[str], float]:
    """All workers' calls merged by kind, the workers' errors, and the wall time from the
    first hello to the last call."""
    merged = {"begin": Calls(), "step": Calls(), "should_stop": Calls()}
    errors: list[str] = []
    outcomes: list[Worker | str] = []
    if processes:
        ctx = multiprocessing.get_context("spawn")
        barrier: Any = ctx.Barrier(workers)
        queue = ctx.Queue()
        procs = [
            ctx.Process(target=_hammer_process, args=(port, uuids, n, barrier, queue))
            for _ in range(workers)
        ]
        for p in procs:
            p.start()
        for _ in procs:
            try:
                outcomes.append(queue.get(timeout=BARRIER_TIMEOUT_S + 300))
            except Empty:
                break  # a worker died without a word: counted below
        for p in procs:
            p.join(timeout=10)
    else:
        barrier = threading.Barrier(workers)
        lock = threading.Lock()

        def run() -> None:
            try:
                result: Worker | str = hammer(port, uuids, n, barrier)
            except BaseException as exc:
                result = f"{type(exc).__name__}: {exc}"
            with lock:
                outcomes.append(result)

        threads = [threading.Thread(target=run) for _ in range(workers)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    done = [o for o in outcomes if isinstance(o, Worker)]
    errors = [o for o in outcomes if isinstance(o, str)]
    for worker in done:
        for kind, calls in worker.calls.items():
            merged[kind].merge(calls)
    finished = [w for w in done if w.end]
    wall = max(w.end for w in finished) - min(w.start for w in finished) if finished else 0.0
    # A worker that died answered none of its calls.
    missing = workers - len(done)
    for _ in range(missing):
        merged["begin"].fail("worker failed")
        for kind in ("step", "should_stop"):
            for _ in range(n):
                merged[kind].fail("worker failed")
    return merged, errors, wall


def single(kw: Kwatt, fn: Callable[[], object], n: int, *, profiling: bool) -> Calls:
    calls = Calls()
    for _ in range(n):
        timed_call(kw, fn, calls, profiling=profiling)
    return calls


def wait_healthy(metrics_port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 15
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/healthz", timeout=0.5)
            return
        except OSError:
            if proc.poll() is not None:
                raise SystemExit(f"the sidecar exited with code {proc.returncode}") from None
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def row(name: str, callers: int, calls: Calls, digits: int = 1, counted: bool = True) -> str:
    answered, failed = (calls.answered, calls.failed) if counted else ("-", "-")
    return (
        f"{name:<32} {callers:>7} {calls.total:>7} {answered:>8} {failed:>6}"
        f" {calls.p50():>10.{digits}f} {calls.p99():>10.{digits}f}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=2000, help="single-caller steps")
    parser.add_argument("--idle-seconds", type=float, default=5.0)
    parser.add_argument("--workers", type=int, default=8, help="concurrent callers")
    parser.add_argument(
        "--concurrent-calls",
        type=int,
        default=500,
        help="steps and should_stop()s per concurrent caller (each)",
    )
    parser.add_argument(
        "--processes", action="store_true", help="concurrent callers are processes, not threads"
    )
    parser.add_argument(
        "--step-p99-ms", type=float, default=1.0, help="target: single-caller step p99"
    )
    args = parser.parse_args()
    if args.steps < 1 or args.workers < 1 or args.concurrent_calls < 1:
        parser.error("--steps, --workers and --concurrent-calls must be at least 1")
    # The sidecar counts every client's steps: keep it in warm-up (profiling) all along.
    all_steps = args.steps + args.workers * args.concurrent_calls
    if all_steps + 1000 > MAX_WARMUP_STEPS:
        parser.error(f"{all_steps} steps in all would leave the sidecar's warm-up window")
    warmup = min(MAX_WARMUP_STEPS, 2 * all_steps + 1000)

    tmp = Path(tempfile.mkdtemp(prefix="kwatt-bench-"))
    provider = SimulatedGpuProvider(tmp)
    uuids = provider.devices("bench", "v100", 1)
    port, metrics_port = free_port(), free_port()
    env = {
        **os.environ,
        **provider.container_env("bench", uuids, []),
        "NVIDIA_VISIBLE_DEVICES": "all",
        "KWATT_PORT": str(port),
        "KWATT_METRICS_PORT": str(metrics_port),
        "KWATT_TERMINATION_PATH": str(tmp / "termination"),
        "KWATT_WARMUP_STEPS": str(warmup),
        "KWATT_BATCH_SIZE": "1024",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "kwatt_sidecar"], env=env, stderr=subprocess.DEVNULL
    )
    stopped = False
    try:
        wait_healthy(metrics_port, proc)
        kw = Kwatt(port=port, gpu_uuids=uuids)
        if not kw.profiling:
            raise SystemExit("the sidecar should be profiling after the hello; it is not")
        step = single(kw, kw.step, args.steps, profiling=True)
        stop = single(kw, kw.should_stop, 500, profiling=False)
        many, errors, wall = concurrent(
            port, uuids, args.workers, args.concurrent_calls, args.processes
        )
        epoch = single(kw, lambda: kw.epoch_end(0.1), 200, profiling=False)

        # After profiling a step must make no call: with the sidecar stopped, any call
        # would wait out the client's timeout and quiet it.
        kw.profiling = False  # what the client does once the sidecar says profiling is over
        os.kill(proc.pid, signal.SIGSTOP)
        stopped = True
        off = single(kw, kw.step, args.steps, profiling=False)
        os.kill(proc.pid, signal.SIGCONT)
        stopped = False
        off_quiet = kw.quiet

        cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
        time.sleep(args.idle_seconds)
        idle_cpu = (cpu_seconds(proc.pid) - cpu0) / (time.monotonic() - t0) * 100
        cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
        end = t0 + args.idle_seconds
        while time.monotonic() < end:  # a Prometheus scrape every second
            urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=1).read()
            time.sleep(1.0)
        scrape_cpu = (cpu_seconds(proc.pid) - cpu0) / (time.monotonic() - t0) * 100
        rss = rss_mib(proc.pid)
        kw.end()
    finally:
        if stopped:
            os.kill(proc.pid, signal.SIGCONT)
        proc.terminate()
        proc.wait(timeout=10)

    every = Calls()
    for calls in many.values():
        every.merge(calls)
    kind = "processes" if args.processes else "threads"
    w = args.workers
    print(f"kwatt client overhead: simulated v100, {os.cpu_count()} CPUs, times in microseconds")
    print()
    print(f"{'call':<32} {'callers':>7} {'calls':>7} {'answered':>8} {'failed':>6}", end="")
    print(f" {'p50 us':>10} {'p99 us':>10}")
    print(row("step while profiling", 1, step))
    # Answered by the client itself when it makes no call; counted only if it went quiet.
    print(row("step after profiling (no call)", 1, off, digits=3, counted=off.failed > 0))
    print(row("should_stop", 1, stop))
    print(row("epoch_end", 1, epoch))
    print(row(f"begin, {w} {kind} at once", w, many["begin"]))
    print(row(f"step, {w} {kind} at once", w, many["step"]))
    print(row(f"should_stop, {w} {kind} at once", w, many["should_stop"]))
    print(row(f"all concurrent calls ({kind})", w, every))
    rate = every.answered / wall if wall else 0.0
    print(f"{'':<32} {rate:>7.0f} calls/s answered, {wall:.2f} s in all")
    print()
    print(f"sidecar idle CPU              {idle_cpu:6.2f} % of one core")
    print(f"sidecar CPU, scraped each 1 s {scrape_cpu:6.2f} % of one core")
    print(f"sidecar resident memory       {rss:6.1f} MiB")
    print()

    failures = []
    target_us = args.step_p99_ms * 1000
    checks = [
        (
            f"profiling step p99 < {target_us:.0f} us, 1 caller",
            f"{step.p99():.1f} us",
            step.p99() < target_us,
        ),
        (
            "post-profiling step makes no call",
            "client quiet (a call was made)" if off_quiet else "no call",
            not off_quiet and off.failed == 0,
        ),
        (
            "every single-caller call answered",
            f"{step.answered + stop.answered + epoch.answered}"
            f"/{step.total + stop.total + epoch.total}",
            step.failed + stop.failed + epoch.failed == 0,
        ),
        (
            f"every concurrent call answered ({w} {kind})",
            f"{every.answered}/{every.total}",
            every.failed == 0 and not errors,
        ),
    ]
    print(f"{'target':<48} {'measured':<32} result")
    for name, measured, ok in checks:
        print(f"{name:<48} {measured:<32} {'ok' if ok else 'MISSED'}")
        if not ok:
            failures.append(name)
    for calls_name, calls in (
        ("single step", step),
        ("single should_stop", stop),
        ("single epoch_end", epoch),
        ("concurrent", every),
    ):
        if calls.why:
            reasons = ", ".join(f"{n} {why}" for why, n in sorted(calls.why.items()))
            print(f"  {calls_name} failures: {reasons}")
    for error in errors:
        print(f"  a concurrent caller failed: {error}")
    if failures:
        print(f"\nFAILED: {'; '.join(failures)}")
        return 1
    print("\nall targets met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
