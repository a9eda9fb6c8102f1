"""The most carbon any schedule of power limits could save against kwatt, on a series.

    .venv/bin/python benchmarks/carbon_ceiling.py [--series traces/carbon/gb-2023q3-synthetic.csv]
        [--gpu v100] [--workload imagenet ...] [--slack 5] [--every 7]
        [--scale 0 --scale 1 --scale 1.5 --scale 2] [--grid-minutes 3] [--json FILE]

A bound, not a policy: an independent check of docs/carbon.md's claim that no carbon-aware
choice of limits reaches issue 12's target (10% less carbon than kwatt at most 5% more
time) with the bundled series. For each workload it takes the power curve of the
configuration kwatt settles on (the batch size of least expected cost, the oracle's, and
the limit kwatt's profiler picks from that batch size's curve: `kwatt_core.carbon.
choose_limit` at weight 1), noise-free, from the trace. A run needs the trace's expected
epochs to the target; kwatt runs them at its limit in T_k seconds. Runs start on the hour
at every `--every`-th hour of the series (7 and 24 share no factor, so every hour of the
day gets its share).

The adversary knows every hour of the series and may use the GPU's profiled limits in any
mix in any hour (a relaxation of any schedule that changes limits at most once a second:
a bound on all of them). Training never pauses: a run is busy from its start to its end,
at the lowest limit at least. For a run of duration T, the least carbon for the run's work
is a linear program: in each hour, fractions of its time at each limit; the work done
equals the epochs; carbon is the sum of time x power x intensity. It is solved exactly,
greedily: every hour starts at the limit of least power, and the upgrades along the
curve's lower convex hull (work per second against power) are bought in order of
intensity x the hull edge's watts per unit of speed, cheapest first, the last one in
part. A sample of solutions is checked against the Lagrangian dual (equal to 1e-9:
optimal).

Two budgets of time:
- per run: each run within (1 + slack) x T_k. The LP's value is convex in T between two
  hour boundaries (the right-hand side of an LP moves linearly with T), so a golden-
  section search in each such piece finds the best duration; every run's minimum is
  checked against the same pieces solved through their duals (`piece_minima`, to 1e-5);
- pooled: the runs' total time within (1 + slack) x their total at kwatt's limit, the
  benchmark's measure (`kwatt bench --carbon` adds up time and carbon over recurrences),
  which lets runs that start in dirty hours go slow and runs in clean ones fast. A price
  on time gives an achievable set of schedules (each run's duration on a grid,
  `--grid-minutes`, the time left over given to the runs it saves most: a lower end for
  the ceiling) and, at the same price, a bound (every duration's exact least grams plus
  the price on its time, less the price on the budget: an upper end, by weak duality).
  The ceiling lies between the two.

`--scale K` replays the series with its deviations from its mean times K (clipped at 0 g:
the share of hours clipped is printed), to show what spread of intensity a 10% saving
would take.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kwatt_core import carbon
from kwatt_core.sim.simulator import cost_model_for
from kwatt_core.sim.trace import WorkloadTrace, load_workloads

REPO = Path(__file__).resolve().parents[1]
TRACE_DIR = REPO / "traces" / "zeus" / "trace"
DEFAULT_SERIES = REPO / "traces" / "carbon" / "gb-2023q3-synthetic.csv"
J_PER_KWH = 3.6e6
GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


# --- one run, one duration: the linear program ------------------------------------------


@dataclass(frozen=True)
class Curve:
    """A configuration's limits: work per second (epochs/s) and power (W), highest first."""

    limits: tuple[int, ...]
    work: np.ndarray  # epochs per second at each limit
    power: np.ndarray  # watts at each limit

    def hull(self) -> tuple[np.ndarray, np.ndarray]:
        """The vertices of the lower convex hull of (work, power) from the point of least
        power towards more work: the only mixes a least-carbon schedule uses."""
        start = int(np.argmin(self.power))
        points = sorted(
            (float(w), float(p))
            for w, p in zip(self.work, self.power, strict=True)
            if w >= self.work[start]
        )
        hull: list[tuple[float, float]] = []
        for point in points:
            while len(hull) >= 2:
                (w1, p1), (w2, p2) = hull[-2], hull[-1]
                # Drop the middle point when it lies on or above the chord.
                if (p2 - p1) * (point[0] - w1) >= (point[1] - p1) * (w2 - w1):
                    hull.pop()
                else:
                    break
            if hull and point[0] == hull[-1][0]:
                continue  # same speed, more power: never better
            hull.append(point)
        w, p = np.array([h[0] for h in hull]), np.array([h[1] for h in hull])
        keep = np.concatenate(([True], np.diff(p) > 0))  # faster must cost more power
        return w[keep], p[keep]


@dataclass(frozen=True)
class Solution:
    grams: float
    price: float  # the work's shadow price (g per epoch): the Lagrange multiplier


def least_carbon(
    lengths: np.ndarray,
    intensity: np.ndarray,
    hull_w: np.ndarray,
    hull_p: np.ndarray,
    epochs: float,
) -> Solution | None:
    """The least grams for `epochs` of work done while busy for `lengths` seconds in hours
    of `intensity` g/kWh (None when that time cannot hold that work)."""
    rate = intensity / J_PER_KWH  # g per joule in each hour
    base_work = hull_w[0] * lengths.sum()
    base_grams = float(hull_p[0] * (lengths * rate).sum())
    need = epochs - base_work
    if need < -1e-9 * epochs:
        return None  # even the slowest limit does more work than the run needs
    if need <= 0:
        return Solution(base_grams, 0.0)
    dw, dp = np.diff(hull_w), np.diff(hull_p)
    if dw.size == 0:
        return None
    prices = (rate[:, None] * (dp / dw)[None, :]).ravel()  # g per epoch of each upgrade
    caps = (lengths[:, None] * dw[None, :]).ravel()  # epochs each upgrade can add
    order = np.argsort(prices, kind="stable")
    prices, caps = prices[order], caps[order]
    done = np.cumsum(caps)
    if done[-1] < need * (1 - 1e-12):
        return None  # even the fastest limit cannot do the work in this time
    last = min(int(np.searchsorted(done, need)), len(done) - 1)
    before = done[last - 1] if last > 0 else 0.0
    grams = base_grams + float((prices[:last] * caps[:last]).sum())
    grams += (need - before) * prices[last]
    return Solution(grams, float(prices[last]))


def dual_value(
    lengths: np.ndarray, intensity: np.ndarray, curve: Curve, epochs: float, price: float
) -> float:
    """The Lagrangian dual at `price`, over every limit of the curve (not only the hull):
    a lower bound on the least carbon, equal to it at the optimal price."""
    rate = intensity / J_PER_KWH
    per_second = (rate[:, None] * curve.power[None, :] - price * curve.work[None, :]).min(axis=1)
    return float((lengths * per_second).sum() + price * epochs)


# --- a run: its hours and its durations ---------------------------------------------------


@dataclass(frozen=True)
class Run:
    """One run of one workload from one start hour."""

    intensity: np.ndarray  # g/kWh of the hours from its start on (enough for the slowest run)
    step_s: float
    epochs: float
    kwatt_s: float  # T_k: its duration at kwatt's limit
    kwatt_power: float
    shortest_s: float  # at the fastest limit
    longest_s: float  # at the limit of least power (longer would overshoot the work)

    def lengths(self, duration_s: float) -> tuple[np.ndarray, np.ndarray]:
        full = int(duration_s // self.step_s)
        rest = duration_s - full * self.step_s
        lengths = np.full(full + 1, float(self.step_s))
        lengths[-1] = rest
        return lengths, self.intensity[: full + 1]

    def kwatt_grams(self) -> float:
        lengths, intensity = self.lengths(self.kwatt_s)
        return float(self.kwatt_power * (lengths * intensity).sum() / J_PER_KWH)

    def solve(self, duration_s: float, hull: tuple[np.ndarray, np.ndarray]) -> Solution | None:
        lengths, intensity = self.lengths(duration_s)
        return least_carbon(lengths, intensity, hull[0], hull[1], self.epochs)

    def pieces(self, low_s: float, high_s: float) -> list[tuple[float, float]]:
        """[low, high] cut at hour boundaries: within each piece the LP's value is convex."""
        cuts = [low_s]
        boundary = (math.floor(low_s / self.step_s) + 1) * self.step_s
        while boundary < high_s:
            cuts.append(boundary)
            boundary += self.step_s
        cuts.append(high_s)
        return [(a, b) for a, b in itertools.pairwise(cuts) if b > a]


def golden_min(f: Any, low: float, high: float, tolerance: float = 0.05) -> tuple[float, float]:
    """The minimum of a convex function on [low, high] (to `tolerance` in x), and where."""
    a, b = low, high
    c, d = b - GOLDEN * (b - a), a + GOLDEN * (b - a)
    fc, fd = f(c), f(d)
    while b - a > tolerance:
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - GOLDEN * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + GOLDEN * (b - a)
            fd = f(d)
    best = min((f(a), a), (fc, c), (fd, d), (f(b), b))
    return best


def per_run_best(
    run: Run, hull: tuple[np.ndarray, np.ndarray], slack: float
) -> tuple[float, float]:
    """The least grams of one run within (1 + slack) x T_k, and its duration: exact (a
    golden-section search in each piece where the value is convex)."""
    high = min(run.longest_s, (1.0 + slack) * run.kwatt_s)
    low = run.shortest_s

    def grams(duration: float) -> float:
        solution = run.solve(duration, hull)
        return math.inf if solution is None else solution.grams

    if high <= low:  # no slack beyond the fastest limit's time: that is the only duration
        return grams(low), low
    kwatt = (grams(run.kwatt_s), run.kwatt_s)  # kwatt's own schedule is one of them
    return min(kwatt, *(golden_min(grams, a, b) for a, b in run.pieces(low, high)))


# --- a workload -------------------------------------------------------------------------


@dataclass(frozen=True)
class Setup:
    name: str
    batch_size: int
    kwatt_limit: int
    curve: Curve
    epochs: float
    kwatt_s: float


def setup_of(trace: WorkloadTrace, eta: float) -> Setup:
    """kwatt's configuration: the batch size of least expected cost, and the limit kwatt's
    profiler picks from its (noise-free) curve."""
    model = cost_model_for(trace, eta)
    batch, _, _ = trace.best_config(model)
    points = [trace.power[(batch, limit)] for limit in trace.limits_w]
    curve_points = [
        carbon.CurvePoint(limit, p.energy_per_epoch_j, p.time_per_epoch_s)
        for limit, p in zip(trace.limits_w, points, strict=True)
    ]
    limit = carbon.choose_limit(curve_points, eta, model.max_power_w, 1.0)
    _, _, time_s = trace.expected(model, batch, limit)  # expected epochs, retries included
    at_limit = trace.power[(batch, limit)]
    curve = Curve(
        tuple(trace.limits_w),
        np.array([1.0 / p.time_per_epoch_s for p in points]),
        np.array([p.average_power_w for p in points]),
    )
    return Setup(trace.spec.name, batch, limit, curve, time_s / at_limit.time_per_epoch_s, time_s)


def runs_of(setup: Setup, values: np.ndarray, step_s: float, every: int) -> list[Run]:
    """The runs from every `every`-th hour of the series (which repeats past its end)."""
    curve = setup.curve
    hull_w, _ = curve.hull()
    shortest = setup.epochs / float(curve.work.max())
    longest = setup.epochs / float(hull_w[0])
    hours = math.ceil(longest / step_s) + 2
    at = {lim: i for i, lim in enumerate(curve.limits)}[setup.kwatt_limit]
    runs = []
    for start in range(0, len(values), every):
        idx = (start + np.arange(hours)) % len(values)
        runs.append(
            Run(
                values[idx],
                step_s,
                setup.epochs,
                setup.kwatt_s,
                float(curve.power[at]),
                shortest,
                longest,
            )
        )
    return runs


@dataclass
class Pooled:
    achieved_pct: float  # saving of an achievable set of schedules within the pooled budget
    bound_pct: float  # no set of schedules within the budget saves more (weak duality)
    time_added_pct: float  # the achievable set's time against kwatt's


def pooled_ceiling(
    runs: Sequence[Run],
    hull: tuple[np.ndarray, np.ndarray],
    curve: Curve,
    slack: float,
    grid_s: float,
    kwatt_total: float,
) -> Pooled:
    """The most carbon saved when only the runs' total time is held within the slack."""
    budget = (1.0 + slack) * sum(r.kwatt_s for r in runs)
    # Achievable: each run's least grams on a grid of durations, then a price on time.
    tables = []
    # Durations up to (1 + max(25%, 4 x slack)) x T_k: enough for the runs that go slow
    # in dirty hours (the dual bound below considers every duration).
    stretch = 1.0 + max(0.25, 4.0 * slack)
    for run in runs:
        top = min(run.longest_s, stretch * run.kwatt_s)
        durations = np.append(np.arange(run.shortest_s, top, grid_s), top)
        grams = np.array(
            [
                s.grams if (s := run.solve(float(d), hull)) is not None else math.inf
                for d in durations
            ]
        )
        tables.append((durations, grams))

    def pick(mu: float) -> list[int]:
        return [int(np.argmin(grams + mu * durations)) for durations, grams in tables]

    def seconds_of(choice: list[int]) -> float:
        return float(sum(tables[r][0][i] for r, i in enumerate(choice)))

    mu = 0.0  # the price on time (g per second): 0 while the budget does not bind
    choice = pick(mu)
    if seconds_of(choice) > budget:
        lo, hi = 0.0, 1e-6
        while seconds_of(pick(hi)) > budget:
            hi *= 2.0
        for _ in range(60):
            mid = (lo + hi) / 2.0
            if seconds_of(pick(mid)) > budget:
                lo = mid
            else:
                hi = mid
        mu, choice = hi, pick(hi)
        # Runs indifferent at the price (the value is linear in the duration between two
        # hour boundaries) take the time left, most carbon saved per second first.
        slower = pick(lo)
        spare = budget - seconds_of(choice)
        moves = []
        for r, (a, b) in enumerate(zip(choice, slower, strict=True)):
            durations, grams = tables[r]
            if durations[b] > durations[a]:
                gain = (grams[a] - grams[b]) / (durations[b] - durations[a])
                moves.append((-gain, r))
        for _, r in sorted(moves):
            durations, grams = tables[r]
            a = choice[r]
            fits = np.nonzero(durations <= durations[a] + spare)[0]
            best = int(fits[np.argmin(grams[fits])])
            spare -= durations[best] - durations[a]
            choice[r] = best
    seconds = seconds_of(choice)
    total_g = float(sum(tables[r][1][i] for r, i in enumerate(choice)))
    achieved = 100.0 * (1.0 - total_g / kwatt_total)
    bound = 100.0 * (1.0 - dual_bound(runs, curve, budget, mu) / kwatt_total)
    return Pooled(achieved, bound, 100.0 * (seconds / sum(r.kwatt_s for r in runs) - 1.0))


def piece_minima(
    runs: Sequence[Run], curve: Curve, mu: float, cap_s: Sequence[float]
) -> np.ndarray:
    """Per run, the exact least value of grams + mu x duration over durations from the
    shortest to min(cap, longest): the least over the pieces between hour boundaries.

    In the piece whose last, partial hour is hour m, the duration is T = m x step + tau,
    tau in [tau_lo, tau_hi]; the time at each limit in hour m is a variable, and the
    problem is a linear program. Its dual in the price of work, lambda, is concave and
    equal to its value (strong duality):
        sum over hours j < m of step x min_l (r_j P_l - lambda w_l)
        + tau_lo x c + (tau_hi - tau_lo) x min(0, c) + lambda N + mu m step,
    with c = min_l (r_m P_l + mu - lambda w_l); a ternary search per piece maximises it."""
    step = runs[0].step_s
    rate = np.stack([r.intensity for r in runs]) / J_PER_KWH  # [run, hour]
    n_runs, hours = rate.shape
    epochs = np.array([r.epochs for r in runs])[:, None]
    low = np.array([r.shortest_s for r in runs])
    high = np.minimum(np.array([r.longest_s for r in runs]), np.asarray(cap_s))
    m = np.arange(hours)[None, :]  # [1, piece]: the piece's partial hour
    tau_lo = np.clip(low[:, None] - m * step, 0.0, step)
    tau_hi = np.clip(high[:, None] - m * step, 0.0, step)
    valid = tau_hi > tau_lo  # [run, piece]
    full = m[:, :, None] > np.arange(hours)[None, None, :]  # [1, piece, hour]: j < m
    energy = rate[:, None, :, None] * curve.power  # [run, 1, hour, limit] g per second

    def value(price: np.ndarray) -> np.ndarray:  # price: [run, piece]
        per = (energy - price[:, :, None, None] * curve.work).min(axis=3)  # [run, piece, hour]
        before = (np.where(full, per, 0.0) * step).sum(axis=2)
        last = per[np.arange(n_runs)[:, None], np.arange(hours)[None, :], m.repeat(n_runs, 0)]
        c = last + mu
        result: np.ndarray = (
            before
            + tau_lo * c
            + (tau_hi - tau_lo) * np.minimum(0.0, c)
            + (price * epochs + mu * m * step)
        )
        return result

    top = float(rate.max() * curve.power.max() / curve.work.min()) * 10.0 + 1.0
    a, b = np.full((n_runs, hours), -top), np.full((n_runs, hours), top)
    for _ in range(90):  # ternary search, every piece at once
        c1, c2 = a + (b - a) / 3.0, b - (b - a) / 3.0
        f1, f2 = value(c1), value(c2)
        a, b = np.where(f1 < f2, c1, a), np.where(f1 < f2, b, c2)
    # Any price gives a lower bound (weak duality); the search's end is the best of them.
    best = np.maximum(value(a), value((a + b) / 2.0))
    minima: np.ndarray = np.where(valid, best, np.inf).min(axis=1)
    return minima


def dual_bound(runs: Sequence[Run], curve: Curve, budget: float, mu: float) -> float:
    """A lower bound on the least total grams of the runs within `budget` seconds, at the
    price `mu` on time (weak duality: any mu >= 0 gives one; the primal's is near the best)."""
    caps = [math.inf] * len(runs)
    return float(piece_minima(runs, curve, mu, caps).sum() - mu * budget)


# --- the figures ------------------------------------------------------------------------


def scaled(values: np.ndarray, k: float) -> tuple[np.ndarray, float]:
    """The series with its deviations from its mean times k, clipped at 0; and the share of
    hours clipped."""
    mean = float(values.mean())
    out = mean + k * (values - mean)
    clipped = float((out < 0).mean())
    return np.maximum(out, 0.0), clipped


def ceiling(
    setup: Setup, values: np.ndarray, step_s: float, every: int, slack: float, grid_s: float
) -> dict[str, Any]:
    runs = runs_of(setup, values, step_s, every)
    hull = setup.curve.hull()
    kwatt = np.array([r.kwatt_grams() for r in runs])
    best = np.array([per_run_best(r, hull, slack)[0] for r in runs])
    # Runs wholly in hours of 0 g (a scaled series, clipped) have nothing to save.
    priced = kwatt > 0
    saved = 100.0 * (1.0 - best[priced] / kwatt[priced])
    # The same minima another way: each piece's LP through its dual (strong duality).
    check = piece_minima(runs, setup.curve, 0.0, [(1.0 + slack) * r.kwatt_s for r in runs])
    # The search's minima are achieved, the duals are bounds: equal up to the search's step.
    scale = np.maximum(best, 1e-9 * kwatt.mean())
    assert np.all(check <= best + 1e-9 * scale), "a dual above an achieved value"
    agree = float(np.max((best - check) / scale))
    assert agree < 1e-5, f"the per-run minima disagree by {agree:.2e} (relative)"
    # The optimality certificate of a run's LP: primal equals dual at the work's price.
    for run in runs[:: max(1, len(runs) // 20)]:
        lengths, intensity = run.lengths(run.kwatt_s)
        solution = least_carbon(lengths, intensity, *hull, run.epochs)
        assert solution is not None
        dual = dual_value(lengths, intensity, setup.curve, run.epochs, solution.price)
        assert abs(dual - solution.grams) <= 1e-9 * max(1.0, solution.grams), (dual, solution)
    pooled = pooled_ceiling(runs, hull, setup.curve, slack, grid_s, float(kwatt.sum()))
    return {
        "runs": len(runs),
        "per_run_total_pct": float(100.0 * (1.0 - best.sum() / kwatt.sum())),
        "per_run_mean_pct": float(saved.mean()),
        "per_run_check_rel": agree,
        "per_run_p90_pct": float(np.percentile(saved, 90)),
        "per_run_max_pct": float(saved.max()),
        "pooled_achieved_pct": pooled.achieved_pct,
        "pooled_bound_pct": pooled.bound_pct,
        "pooled_time_added_pct": pooled.time_added_pct,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--series", type=Path, default=DEFAULT_SERIES)
    parser.add_argument("--gpu", default="v100")
    parser.add_argument("--workload", action="append", help="default: every workload")
    parser.add_argument("--eta", type=float, default=0.5)
    parser.add_argument("--slack", type=float, default=5.0, help="time allowed, %% (default 5)")
    parser.add_argument("--every", type=int, default=7, help="a run from every N-th hour")
    parser.add_argument(
        "--scale",
        type=float,
        action="append",
        help="deviations from the mean times this (default: 0, the flat series, 1, 1.5, 2)",
    )
    parser.add_argument("--grid-minutes", type=float, default=3.0)
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the figures here")
    args = parser.parse_args(argv)
    series = carbon.parse_series(args.series.read_text(encoding="utf-8"), str(args.series))
    values = np.array([r.g_per_kwh for r in series.readings])
    scales = args.scale or [0.0, 1.0, 1.5, 2.0]
    traces = load_workloads(TRACE_DIR, args.gpu, args.workload)
    out: dict[str, Any] = {
        "command": " ".join(["benchmarks/carbon_ceiling.py", *(argv or sys.argv[1:])]),
        "series": str(args.series),
        "slack_pct": args.slack,
        "every_hours": args.every,
        "scales": {},
        "workloads": {},
    }
    for k in scales:
        v, clipped = scaled(values, k)
        out["scales"][str(k)] = {
            "mean": float(v.mean()),
            "cv": float(v.std() / v.mean()),
            "clipped_pct": 100.0 * clipped,
        }
    for trace in traces:
        setup = setup_of(trace, args.eta)
        row: dict[str, Any] = {
            "batch_size": setup.batch_size,
            "kwatt_limit_w": setup.kwatt_limit,
            "run_hours": setup.kwatt_s / 3600.0,
            "limits": {},
        }
        for limit, w, p in zip(
            setup.curve.limits, setup.curve.work, setup.curve.power, strict=True
        ):
            row["limits"][str(limit)] = {"j_per_epoch": float(p / w), "s_per_epoch": float(1 / w)}
        for k in scales:
            v, _ = scaled(values, k)
            row[str(k)] = ceiling(
                setup, v, series.step_s, args.every, args.slack / 100.0, args.grid_minutes * 60
            )
        out["workloads"][setup.name] = row
        print_row(setup, row, scales, out["scales"], args.slack)
    if args.json is not None:
        args.json.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    return 0


def print_row(
    setup: Setup, row: dict[str, Any], scales: Sequence[float], info: dict[str, Any], slack: float
) -> None:
    energies = {int(k): v["j_per_epoch"] for k, v in row["limits"].items()}
    least, top = min(energies, key=lambda k: energies[k]), max(energies)
    base = energies[setup.kwatt_limit]
    print(
        f"{setup.name}: batch size {setup.batch_size} at {setup.kwatt_limit} W, "
        f"{row['run_hours']:.2f} h a run; energy per epoch least at {least} W "
        f"({100 * (energies[least] / base - 1):+.1f}% against {setup.kwatt_limit} W), "
        f"{100 * (energies[top] / base - 1):+.1f}% at {top} W"
    )
    for k in scales:
        r, s = row[str(k)], info[str(k)]
        what = "flat at the mean" if k == 0 else f"deviations x{k:g}"
        print(
            f"  {what} (cv {s['cv']:.2f}, {s['clipped_pct']:.1f}% of hours clipped): "
            f"each run within +{slack:g}% time: {_pct(r['per_run_total_pct'])}% less carbon in "
            f"all (a run's: mean {_pct(r['per_run_mean_pct'])}%, 90th percentile "
            f"{_pct(r['per_run_p90_pct'])}%); total time within "
            f"+{slack:g}%: {_pct(r['pooled_achieved_pct'])}% achieved, at most "
            f"{_pct(r['pooled_bound_pct'])}%"
        )
    sys.stdout.flush()


def _pct(value: float) -> str:
    """Two decimals, without a minus sign on a zero that rounding errors made negative."""
    return f"{round(value, 2) + 0.0:.2f}"


if __name__ == "__main__":
    sys.exit(main())
