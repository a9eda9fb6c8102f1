"""Carbon in the trace simulator: what each policy emits, and the `kwatt-carbon` policy.

A replayed intensity series (`kwatt_core.carbon.Series`, hourly in the bundled one) gives
the grid's g CO2/kWh at every moment. Recurrence r of seed s starts at a time drawn
uniformly over the series (the same for every policy: `start_times`), so that a result
does not hinge on one start hour; its tries run back to back from there.

- Any policy's runs are priced afterwards (`recurrence_grams`): a run's energy spread
  evenly over its duration, times the intensity in force. Exact for a run at one limit;
  the few profiling steps at other limits are spread with the rest.
- `kwatt-carbon` is kwatt's batch-size policy whose runs follow the grid
  (`CarbonRunner`): the run profiles as kwatt does, then, at every interval boundary
  (30 minutes of the series' clock by default), takes the intensity in force as its
  reading and re-picks the limit from the profiled curve with `kwatt_core.carbon.decide`,
  the very code the sidecar runs; its energy is priced slice by slice. A later run of a
  batch size that was profiled uses that profile's curve (the operator caches it the
  same way). The policy learns from the run's ordinary energy-time cost, as kwatt's does.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from kwatt_core import carbon, profiler
from kwatt_core.cost import CostModel
from kwatt_core.policies import make_policy
from kwatt_core.policies.base import Choice, Policy
from kwatt_core.sim import bench
from kwatt_core.sim import simulator as sim
from kwatt_core.sim.bench import BenchConfig
from kwatt_core.sim.trace import WorkloadTrace

START_STREAM = 15485863  # seed-sequence tag of the start times (common to all policies)


def start_times(series: carbon.Series, seed: int, recurrences: int) -> list[float]:
    """When each recurrence starts: uniform over the series, on its steps (the hour)."""
    gen = np.random.default_rng([seed, START_STREAM])
    steps = max(1, round(series.span_s / series.step_s))
    picks = gen.integers(0, steps, size=recurrences)
    return [series.start_s + float(i) * series.step_s for i in picks]


def integrate(series: carbon.Series, start_s: float, end_s: float, power_w: float) -> float:
    """Grams of CO2 of drawing `power_w` from `start_s` to `end_s`."""
    total, t = 0.0, start_s
    while t < end_s:
        nxt = min(series.next_change_s(t), end_s)
        total += carbon.grams(power_w * (nxt - t), series.at(t))
        t = nxt
    return total


def recurrence_grams(series: carbon.Series, start_s: float, runs: Sequence[sim.RunResult]) -> float:
    """Grams of a recurrence's tries, run back to back from `start_s`, each at its mean power."""
    total, t = 0.0, start_s
    for run in runs:
        if run.time_s > 0:
            total += integrate(series, t, t + run.time_s, run.energy_j / run.time_s)
        t += run.time_s
    return total


def job_grams(series: carbon.Series, seed: int, history: Sequence[sim.Recurrence]) -> list[float]:
    """Grams of each recurrence of one simulated job, priced afterwards."""
    starts = start_times(series, seed, len(history))
    return [recurrence_grams(series, s, rec.runs) for s, rec in zip(starts, history, strict=True)]


@dataclass
class CarbonRunner:
    """Runs one job's tries carbon-aware, as `simulate_job`'s run function.

    Keeps the clock of the tries of a recurrence, the curves profiled per batch size, and
    the grams of every try (`grams[(recurrence, try)]`). A try is the simulator's own run
    (`simulator.run_once`, noise and all) whose epochs at the kept limit `_CarbonRun` runs."""

    trace: WorkloadTrace
    model: CostModel
    config: sim.SimConfig
    series: carbon.Series
    settings: carbon.CarbonSettings
    starts: Sequence[float]
    profiling: profiler.ProfilerStyle = profiler.KWATT_PROFILING
    curves: dict[int, tuple[carbon.CurvePoint, ...]] = field(default_factory=dict)
    grams: dict[tuple[int, int], float] = field(default_factory=dict)
    decisions: int = 0
    _clock: dict[int, float] = field(default_factory=dict)

    def __call__(
        self,
        choice: Choice,
        path: float | None,
        luck: sim.RunLuck | None,
        recurrence: int,
        attempt: int,
    ) -> sim.RunResult:
        clock = self._clock.get(recurrence, self.starts[recurrence])
        cached = choice.power_limit_w is not None
        bs = choice.batch_size
        hooks = _CarbonRun(self, bs, clock, self.curves.get(bs, ()) if cached else ())
        result = sim.run_once(
            self.trace, self.model, choice, path, self.config, self.profiling, luck, hooks
        )
        self._clock[recurrence] = hooks.clock
        self.grams[(recurrence, attempt)] = hooks.grams
        return result


@dataclass
class _CarbonRun:
    """One try's carbon: its clock on the series, its grams, and the limit in force."""

    runner: CarbonRunner
    batch_size: int
    clock: float
    curve: tuple[carbon.CurvePoint, ...]
    grams: float = 0.0
    state: carbon.CarbonState | None = None  # from the first epoch at the kept limit

    def profiling_epoch(self, prof: profiler.ProfilerState, energy_j: float, time_s: float) -> None:
        """Price the epoch at its mean power; once the profile is done, keep its curve."""
        if time_s > 0:
            power = energy_j / time_s
            self.grams += integrate(self.runner.series, self.clock, self.clock + time_s, power)
        self.clock += time_s
        if prof.phase == "done" and prof.chosen_w is not None:
            self.curve = carbon.curve_of(prof.measurements)
            if prof.reason not in ("cached", "bad readings"):
                self.runner.curves[self.batch_size] = self.curve

    def kept_epoch(self, bs: int, limit: int, pace: float, meter: sim.Meter) -> None:
        """One epoch at limits re-picked at every interval boundary, priced slice by slice;
        `limit` is kwatt's own, which the decisions are anchored to."""
        run, series = self.runner, self.runner.series
        if self.state is None:
            self.state = carbon.CarbonState(limit_w=limit)
        state, in_force = self.state, self.state.limit_w or limit
        left = 1.0  # share of the epoch still to run
        while left > 1e-12:
            if self.curve and carbon.due(state, self.clock):
                decision = carbon.decide(
                    run.settings,
                    state,
                    carbon.Reading(self.clock, series.at(self.clock)),
                    self.clock,
                    self.clock,
                    self.curve,
                    run.model.eta,
                    run.model.max_power_w,
                    limit,
                )
                state = decision.state
                run.decisions += 1
                if decision.set_limit_w is not None:
                    in_force = decision.set_limit_w
            point = run.trace.power[(bs, in_force)]
            epoch_s = point.time_per_epoch_s * pace
            until = series.next_change_s(self.clock)
            if self.curve and state.next_s is not None:
                until = min(until, state.next_s)
            span = min(left * epoch_s, max(until - self.clock, 0.0))
            if span <= 0:  # at a boundary: the decision above has moved it
                span = min(left * epoch_s, 1e-6)
            energy = point.average_power_w * span
            meter.add(energy, span)
            self.grams += carbon.grams(energy, series.at(self.clock))
            left -= span / epoch_s
            self.clock += span
        self.state = replace(state, limit_w=in_force)


def simulate_job_carbon(
    trace: WorkloadTrace,
    policy: Policy,
    seed: int,
    recurrences: int,
    config: sim.SimConfig,
    series: carbon.Series,
    settings: carbon.CarbonSettings,
) -> tuple[list[sim.Recurrence], list[float]]:
    """One job under `policy` with carbon-aware runs; its recurrences and their grams."""
    runner = CarbonRunner(
        trace,
        sim.cost_model_for(trace, config.eta),
        config,
        series,
        settings,
        start_times(series, seed, recurrences),
        policy.profiling,
    )
    history = sim.simulate_job(trace, policy, seed, recurrences, config, run=runner)
    grams = [
        sum(runner.grams[(r, t)] for t in range(len(rec.runs))) for r, rec in enumerate(history)
    ]
    return history, grams


def figures(
    runs: Sequence[Sequence[sim.Recurrence]], grams: Sequence[Sequence[float]]
) -> dict[str, float | None]:
    """Cumulative carbon, energy and time (means over seeds), with the carbon's standard error."""
    per_seed = np.array([sum(g) for g in grams])
    time = np.array([sum(r.time_s for r in run) for run in runs])
    energy = np.array([sum(r.energy_j for r in run) for run in runs])
    se = None
    if len(per_seed) >= 2:
        se = float(np.std(per_seed, ddof=1) / math.sqrt(len(per_seed)))
    return {
        "carbon_g": float(per_seed.mean()),
        "carbon_g_se": se,
        "cumulative_time_s": float(time.mean()),
        "cumulative_energy_j": float(energy.mean()),
    }


def saving(
    base: Sequence[Sequence[float]],
    base_runs: Sequence[Sequence[sim.Recurrence]],
    aware: Sequence[Sequence[float]],
    aware_runs: Sequence[Sequence[sim.Recurrence]],
) -> dict[str, float | None]:
    """Carbon saved and time added by `aware` against `base`, seed by seed (same seeds, same
    start hours): the means of the per-seed percentages and their standard errors."""
    saved = np.array([100.0 * (1.0 - sum(a) / sum(b)) for a, b in zip(aware, base, strict=True)])
    added = np.array(
        [
            100.0 * (sum(r.time_s for r in a) / sum(r.time_s for r in b) - 1.0)
            for a, b in zip(aware_runs, base_runs, strict=True)
        ]
    )

    def se(values: np.ndarray) -> float | None:
        return float(np.std(values, ddof=1) / math.sqrt(len(values))) if len(values) > 1 else None

    return {
        "carbon_saved_pct": float(saved.mean()),
        "carbon_saved_pct_se": se(saved),
        "time_added_pct": float(added.mean()),
        "time_added_pct_se": se(added),
    }


ROW = "kwatt-carbon"


def bench_carbon(
    trace: WorkloadTrace,
    config: BenchConfig,
    series: carbon.Series,
    settings: carbon.CarbonSettings,
    progress: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """`kwatt` and `kwatt-carbon` on one workload over the same seeds and start hours.

    Returns `kwatt`'s carbon figures, `kwatt-carbon`'s full benchmark figures (those of
    `kwatt_core.sim.bench`, plus carbon), and the comparison: carbon saved and time added
    by `kwatt-carbon`, seed by seed. `against_default` compares it, the same way, with the
    job as it ran before kwatt (the default batch size at the highest limit, every run), a
    baseline that credits kwatt-carbon with kwatt's own saving too: the one a published
    figure without power limits in its baseline would be read against."""
    n = bench.recurrences_for(trace, config)
    model = sim.cost_model_for(trace, config.sim.eta)
    _, _, oracle_cost = trace.best_config(model)
    _, default_energy, default_time = trace.expected(
        model, trace.default_batch_size, max(trace.limits_w)
    )
    expected = {
        (b, p): trace.expected(model, b, p) for b in trace.batch_sizes for p in trace.limits_w
    }
    base_runs, base_grams, aware_runs, aware_grams = [], [], [], []
    default_runs, default_grams = [], []
    for seed in range(config.seeds):
        history = sim.simulate_job(trace, make_policy("kwatt"), seed, n, config.sim)
        base_runs.append(history)
        base_grams.append(job_grams(series, seed, history))
        history = sim.simulate_job(trace, make_policy("default"), seed, n, config.sim)
        default_runs.append(history)
        default_grams.append(job_grams(series, seed, history))
        aware, grams = simulate_job_carbon(
            trace, make_policy("kwatt"), seed, n, config.sim, series, settings
        )
        aware_runs.append(aware)
        aware_grams.append(grams)
        if progress is not None:
            progress()
    row = bench._figures(aware_runs, oracle_cost, default_energy, default_time, expected)
    row.update(figures(aware_runs, aware_grams))
    return {
        "kwatt": figures(base_runs, base_grams),
        ROW: row,
        "comparison": saving(base_grams, base_runs, aware_grams, aware_runs),
        "against_default": saving(default_grams, default_runs, aware_grams, aware_runs),
    }
