"""A simulated trainer: trains a trace workload on simulated GPUs through the real kwatt client.

    python -m kwatt_sandbox.gpu.trainer --workload cifar100 --gpu v100 [--seed-run N]
        [--time-scale 0.001] [--trace-dir DIR]

Each step costs what the trace says at the device's current limit (the one the
sidecar set), in simulated seconds and joules added to the device's clock and
counter; wall time is that times `--time-scale`. The validation metric follows a
synthetic curve that crosses the target at the epoch the chosen seed run of the
trace reached it (never, for a seed run that did not).
"""

from __future__ import annotations

import argparse
import bisect
import logging
import math
import os
import sys
import time
from pathlib import Path

import kwatt_client
from kwatt_core import simgpu as device
from kwatt_core.sim.trace import TraceError, WorkloadTrace, load_workloads
from kwatt_sandbox.gpu.provider import default_trace_dir

LOWER_IS_BETTER = frozenset({"librispeech"})  # word error rate
CHUNK_WALL_S = 0.01  # after profiling, steps advance in chunks of about this much wall time
MIN_SLEEP_S = 0.002


def step_cost(trace: WorkloadTrace, batch_size: int, limit_w: float) -> tuple[float, float]:
    """(seconds, watts) of one step at `limit_w`, interpolated between the traced limits."""
    limits = trace.limits_w
    iters = trace.spec.iterations_per_epoch(batch_size)
    clamped = min(max(limit_w, limits[0]), limits[-1])
    i = min(bisect.bisect_left(limits, clamped), len(limits) - 1)
    lo = limits[max(i - 1, 0)] if limits[i] != clamped else limits[i]
    hi = limits[i]
    a, b = trace.power[(batch_size, lo)], trace.power[(batch_size, hi)]
    f = 0.0 if hi == lo else (clamped - lo) / (hi - lo)
    tpe = a.time_per_epoch_s + f * (b.time_per_epoch_s - a.time_per_epoch_s)
    watts = a.average_power_w + f * (b.average_power_w - a.average_power_w)
    return tpe / iters, watts


def metric_at(epoch: int, target: float, target_epoch: int | None, higher: bool) -> float:
    """A curve that reaches `target` exactly at `target_epoch` (never, if None)."""
    if target_epoch is None:
        progress = 0.97 * (1.0 - math.exp(-epoch / 3.0))  # flattens out below the target
    else:
        progress = min(1.0, math.sqrt(epoch / target_epoch))
    if higher:
        return target * progress + (1e-9 if progress >= 1.0 else 0.0)
    return target / max(progress, 1e-3) - (1e-9 if progress >= 1.0 else 0.0)


class Clock:
    """Owes wall time and sleeps it off in pieces of at least MIN_SLEEP_S."""

    def __init__(self, scale: float) -> None:
        self.scale = scale
        self.owed = 0.0

    def spend(self, sim_seconds: float) -> None:
        self.owed += sim_seconds * self.scale
        if self.owed >= MIN_SLEEP_S:
            time.sleep(self.owed)
            self.owed = 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kwatt_sandbox.gpu.trainer")
    parser.add_argument("--workload", required=True)
    parser.add_argument("--gpu", required=True, help="GPU model of the trace, e.g. v100")
    parser.add_argument("--seed-run", type=int, default=0)
    parser.add_argument("--time-scale", type=float, default=0.001)
    parser.add_argument("--trace-dir", type=Path, default=None)
    parser.add_argument("--max-epochs", type=int, default=None)
    parser.add_argument("--fail-at-epoch", type=int, default=None, help="fail on purpose (tests)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = logging.getLogger("kwatt.trainer")

    try:
        (trace,) = load_workloads(args.trace_dir or default_trace_dir(), args.gpu, [args.workload])
    except TraceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    uuids = kwatt_client.visible_gpu_uuids()
    directory = Path(os.environ.get(device.ENV_DIR, ""))
    if not uuids or not os.environ.get(device.ENV_DIR):
        print(
            f"error: no simulated GPU: set {device.ENV_DIR} and NVIDIA_VISIBLE_DEVICES "
            "(the simulated GPU provider does this on sandbox nodes).",
            file=sys.stderr,
        )
        return 2

    kw = kwatt_client.Kwatt(gpu_uuids=uuids)
    batch_size = kw.batch_size or trace.default_batch_size
    if batch_size not in trace.batch_sizes:
        print(
            f"error: batch size {batch_size} is not in the {args.workload} trace on {args.gpu} "
            f"({', '.join(map(str, trace.batch_sizes))}).",
            file=sys.stderr,
        )
        kw.end(failed=True)
        return 2
    seeds = trace.paths[batch_size]
    target_epoch = trace.epochs_to_target(batch_size, seeds[args.seed_run % len(seeds)])
    higher = args.workload not in LOWER_IS_BETTER
    max_epochs = args.max_epochs or int(os.environ.get("KWATT_MAX_EPOCHS") or 0)
    max_epochs = max_epochs or trace.spec.max_epochs
    iters = trace.spec.iterations_per_epoch(batch_size)
    clock = Clock(args.time_scale)
    cache: dict[float, tuple[float, float]] = {}

    def cost(limit_w: float) -> tuple[float, float]:
        if limit_w not in cache:
            cache[limit_w] = step_cost(trace, batch_size, limit_w)
        return cache[limit_w]

    def advance(steps: int) -> None:
        dev = None
        for uuid in uuids:
            dev = device.run(directory, uuid, steps, cost)
        assert dev is not None
        clock.spend(cost(dev.limit_w)[0] * steps)

    for uuid in uuids:
        device.set_running(directory, uuid, args.workload, batch_size)
    out.info(
        "Simulated trainer: %s on %s, batch size %d, %d steps per epoch, target at epoch %s.",
        args.workload,
        args.gpu,
        batch_size,
        iters,
        target_epoch,
    )
    epoch = 0
    reached = False
    try:
        for epoch in range(1, max_epochs + 1):
            if args.fail_at_epoch == epoch:
                raise RuntimeError(f"Failing at epoch {epoch} as asked.")
            remaining = iters
            while remaining > 0:
                if kw.profiling:
                    kw.step()
                    advance(1)
                    remaining -= 1
                    continue
                seconds = cost(device.read(directory, uuids[0]).limit_w)[0]
                chunk = max(1, int(CHUNK_WALL_S / max(seconds * args.time_scale, 1e-9)))
                chunk = min(chunk, remaining)
                advance(chunk)
                remaining -= chunk
            metric = metric_at(epoch, trace.spec.target_metric, target_epoch, higher)
            reached = (
                metric >= trace.spec.target_metric if higher else metric <= trace.spec.target_metric
            )
            kw.epoch_end(metric)
            if kw.should_stop() or reached:
                break
    except RuntimeError as exc:
        out.error("The simulated training failed: %s", exc)
        kw.end(failed=True)
        return 1
    finally:
        for uuid in uuids:
            device.set_running(directory, uuid, "", 0)
    kw.end(reached=reached)
    out.info(
        "Simulated training ended after %d epochs (%s).",
        epoch,
        "target reached" if reached else (kw.stop_reason or "epochs used up"),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
