"""How noisy real runs and profiling windows are, from the bundled traces' own spread.

    .venv/bin/python benchmarks/noise_spread.py

The benchmark's simulator (`kwatt_core.sim.simulator.Noise`) takes its noise magnitudes
from what this prints (docs/benchmark.md, "Noise"):

- profiling windows: `traces/zeus/profile_data` holds twelve real logs of upstream's
  JIT profiler (V100 and A40; one 40-step window per power limit, highest first).
  A window's time and average power should follow a smooth curve over the limits;
  what they stray from it is the window's measurement noise. Each log's top limits
  (all but the two lowest, where the curve bends hardest) are fitted with a quadratic
  in the limit, of the log of time and of power, and the residuals are pooled over
  the logs (their sum of squares over their degrees of freedom);
- epochs: `summary_power_<gpu>.csv` gives one time per epoch per (batch size, limit),
  each a measurement with the same kind of spread around a smooth curve; the same fit
  over every batch size of every workload gives the spread of an epoch's time.

Pooled (root mean square) spreads are what a workload drawn at random sees; the median
over logs is printed beside them, for the typical one.
"""

from __future__ import annotations

import csv
import math
import statistics
from collections import defaultdict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
PROFILES = REPO / "traces" / "zeus" / "profile_data"
TRACE = REPO / "traces" / "zeus" / "trace"


def residual_squares(limits: list[int], values: list[float]) -> tuple[float, int]:
    """Sum of squared residuals of log(values) around a quadratic in the limit, and dof."""
    x = np.asarray(limits, dtype=float)
    y = np.log(np.asarray(values, dtype=float))
    design = np.vstack([np.ones_like(x), x, x * x]).T
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    return float(((y - design @ coef) ** 2).sum()), len(y) - 3


def pooled(parts: list[tuple[float, int]]) -> float:
    return math.sqrt(sum(s for s, _ in parts) / sum(d for _, d in parts))


def windows() -> None:
    times, powers = [], []
    for path in sorted(PROFILES.glob("*.csv")):
        with path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        limits = [int(r["window_name"].rsplit("_", 1)[1]) for r in rows]
        energy = next(c for c in rows[0] if c.endswith("_energy"))  # the first GPU's counter
        time = [float(r["elapsed_time"]) for r in rows]
        power = [float(r[energy]) / t for r, t in zip(rows, time, strict=True)]
        keep = len(rows) - 2
        times.append(residual_squares(limits[:keep], time[:keep]))
        powers.append(residual_squares(limits[:keep], power[:keep]))
        print(
            f"  {path.stem:<28} time {math.sqrt(times[-1][0] / times[-1][1]):.3f}  "
            f"power {math.sqrt(powers[-1][0] / powers[-1][1]):.3f}"
        )
    median = [statistics.median(math.sqrt(s / d) for s, d in parts) for parts in (times, powers)]
    print(
        f"profiling windows (40 steps), spread of the log: time {pooled(times):.3f} pooled, "
        f"{median[0]:.3f} median; average power {pooled(powers):.3f} pooled, "
        f"{median[1]:.3f} median\n"
    )


def epochs() -> None:
    every = []
    for gpu in ("v100", "p100"):
        curves: dict[tuple[str, str, int], list[tuple[int, float]]] = defaultdict(list)
        with (TRACE / f"summary_power_{gpu}.csv").open(newline="") as handle:
            for r in csv.DictReader(handle):
                key = (r["dataset"], r["optimizer"], int(r["batch_size"]))
                curves[key].append((int(r["power_limit"]), float(r["time_per_epoch"])))
        parts = []
        for points in curves.values():
            points.sort(reverse=True)
            keep = points[:-2]
            if len(keep) >= 4:
                parts.append(residual_squares([p for p, _ in keep], [t for _, t in keep]))
        every += parts
        print(f"  {gpu}: time per epoch {pooled(parts):.3f} pooled over {len(parts)} curves")
    print(f"epochs, spread of the log of the time: {pooled(every):.3f} pooled")


if __name__ == "__main__":
    windows()
    epochs()
