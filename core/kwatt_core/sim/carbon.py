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
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kwatt_core import carbon, profiler
from kwatt_core.cost import CostModel
from kwatt_core.early_stop import should_stop
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
    the grams of every try (`grams[(recurrence, try)]`)."""

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
        result, grams, end = self._run(choice, path, luck, clock)
        self._clock[recurrence] = end
        self.grams[(recurrence, attempt)] = grams
        return result

    def _run(
        self, choice: Choice, path: float | None, luck: sim.RunLuck | None, clock: float
    ) -> tuple[sim.RunResult, float, float]:
        trace, model, noise = self.trace, self.model, self.config.noise
        bs = choice.batch_size
        target = trace.epochs_to_target(bs, path)
        iters = trace.spec.iterations_per_epoch(bs)
        prof_config = self.profiling.config(trace.limits_w, model)
        limit = choice.power_limit_w
        prof: profiler.ProfilerState | None = None
        if limit is None:
            started = profiler.start(prof_config)
            prof, limit = started.state, started.set_limit_w
            assert limit is not None
        base = limit  # kwatt's ordinary limit: the cached one, or the profile's choice
        curve = self.curves.get(bs, ()) if prof is None else ()
        state = carbon.CarbonState(limit_w=limit)
        meter = sim._Meter()
        grams = 0.0
        last_epoch_cost: float | None = None
        kept_epoch_cost: float | None = None
        epochs = 0
        reached = stopped = False
        while epochs < trace.spec.max_epochs:
            if should_stop(
                model.cost(meter.energy, meter.time), last_epoch_cost, choice.cost_threshold
            ):
                stopped = True
                break
            before = model.cost(meter.energy, meter.time)
            pace = luck.epoch_factor(noise, epochs) if luck is not None else 1.0
            whole = prof is None or prof.phase == "done"
            if prof is not None and prof.phase != "done":
                e0, t0 = meter.energy, meter.time
                prof, limit = sim._profiled_epoch(
                    trace, prof_config, prof, limit, bs, iters, meter, pace, noise, luck
                )
                spent = meter.time - t0
                if spent > 0:
                    grams += integrate(
                        self.series, clock, clock + spent, (meter.energy - e0) / spent
                    )
                clock += spent
                if prof.phase == "done" and prof.chosen_w is not None:
                    base = limit = prof.chosen_w
                    curve = carbon.curve_of(prof.measurements)
                    if prof.reason not in ("cached", "bad readings"):
                        self.curves[bs] = curve
                    state = carbon.CarbonState(limit_w=limit)
            else:
                limit, state, clock, grams = self._epoch(
                    bs, limit, state, curve, clock, grams, pace, meter
                )
            epochs += 1
            last_epoch_cost = model.cost(meter.energy, meter.time) - before
            if whole:
                kept_epoch_cost = last_epoch_cost
            if target is not None and epochs >= target:
                reached = True
                break
        result = sim.RunResult(
            batch_size=bs,
            power_limit_w=base,
            energy_j=meter.energy,
            time_s=meter.time,
            cost=model.cost(meter.energy, meter.time),
            reached=reached,
            epochs=epochs,
            started=True,
            profiled_limit_w=prof.chosen_w if prof is not None and prof.phase == "done" else None,
            profiling_steps=prof.profiling_steps if prof is not None else 0,
            epoch_cost=kept_epoch_cost,
            stopped_early=stopped,
        )
        return result, grams, clock

    def _epoch(
        self,
        bs: int,
        limit: int,
        state: carbon.CarbonState,
        curve: Sequence[carbon.CurvePoint],
        clock: float,
        grams: float,
        pace: float,
        meter: sim._Meter,
    ) -> tuple[int, carbon.CarbonState, float, float]:
        """One epoch at limits re-picked at every interval boundary, priced slice by slice."""
        left = 1.0  # share of the epoch still to run
        while left > 1e-12:
            if curve and carbon.due(state, clock):
                reading = carbon.Reading(clock, self.series.at(clock))
                decision = carbon.decide(
                    self.settings,
                    state,
                    reading,
                    clock,
                    clock,
                    curve,
                    self.model.eta,
                    self.model.max_power_w,
                )
                state = decision.state
                self.decisions += 1
                if decision.set_limit_w is not None:
                    limit = decision.set_limit_w
            point = self.trace.power[(bs, limit)]
            epoch_s = point.time_per_epoch_s * pace
            until = self.series.next_change_s(clock)
            if curve and state.next_s is not None:
                until = min(until, state.next_s)
            span = min(left * epoch_s, max(until - clock, 0.0))
            if span <= 0:  # at a boundary: the decision above has moved it
                span = min(left * epoch_s, 1e-6)
            energy = point.average_power_w * span
            meter.add(energy, span)
            grams += carbon.grams(energy, self.series.at(clock))
            left -= span / epoch_s
            clock += span
        return limit, state, clock, grams


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
    by `kwatt-carbon`, seed by seed."""
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
    for seed in range(config.seeds):
        history = sim.simulate_job(trace, make_policy("kwatt"), seed, n, config.sim)
        base_runs.append(history)
        base_grams.append(job_grams(series, seed, history))
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
    }
