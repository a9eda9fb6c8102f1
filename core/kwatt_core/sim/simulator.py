"""Trace-driven simulation of a recurring job under a batch-size policy.

Each recurrence asks the policy for a configuration, draws one of the trace's
seed runs for its epochs to target, and runs it epoch by epoch with the same
early-stop rule the sidecar applies. A run that must profile drives the real
profiler state machine step by step (`charge="step"`); `charge="upstream"`
reproduces Zeus's simulator instead (first epoch at the mean over all limits,
epochs capped ahead at threshold // cost per epoch) for a cross-check.

Random numbers are common across policies: recurrence r, try t always draws the
same uniform number, so policies are compared on the same luck.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from kwatt_core import profiler
from kwatt_core.cost import CostModel
from kwatt_core.early_stop import should_stop
from kwatt_core.policies.base import Choice, Outcome, Policy, SearchSpace
from kwatt_core.sim.trace import WorkloadTrace

Charge = Literal["step", "upstream"]
MAX_TRIES = 20


@dataclass(frozen=True)
class RunResult:
    """One simulated run (one try of a recurrence)."""

    batch_size: int
    power_limit_w: int
    energy_j: float
    time_s: float
    cost: float
    reached: bool
    epochs: int
    started: bool
    profiled_limit_w: int | None
    profiling_steps: int
    epoch_cost: float | None = None
    stopped_early: bool = False


@dataclass(frozen=True)
class Recurrence:
    """All tries of one recurrence, summed."""

    energy_j: float
    time_s: float
    cost: float
    reached: bool
    runs: tuple[RunResult, ...]


@dataclass(frozen=True)
class SimConfig:
    eta: float = 0.5
    beta: float = 2.0
    charge: Charge = "step"


def cost_model_for(trace: WorkloadTrace, eta: float) -> CostModel:
    return CostModel.for_gpus(eta, trace.max_limit_w, 1)


def simulate_job(
    trace: WorkloadTrace, policy: Policy, seed: int, recurrences: int, config: SimConfig
) -> list[Recurrence]:
    """Run `recurrences` recurrences of one workload under `policy`."""
    model = cost_model_for(trace, config.eta)
    space = SearchSpace(
        batch_sizes=trace.batch_sizes,
        default_batch_size=trace.default_batch_size,
        max_limit_w=max(trace.limits_w),
        beta=config.beta,
    )
    state = policy.init(space, seed)
    luck = np.random.default_rng([seed, 7919]).random((recurrences, MAX_TRIES))
    history: list[Recurrence] = []
    for r in range(recurrences):
        runs: list[RunResult] = []
        for t in range(MAX_TRIES):
            choice, state = policy.choose(state)
            seeds = trace.paths[choice.batch_size]
            path = seeds[min(int(luck[r, t] * len(seeds)), len(seeds) - 1)]
            result = run_once(trace, model, choice, path, config, policy.profiling)
            state = policy.observe(
                state,
                Outcome(
                    batch_size=result.batch_size,
                    cost=result.cost,
                    reached=result.reached,
                    energy_j=result.energy_j,
                    time_s=result.time_s,
                    power_limit_w=result.profiled_limit_w,
                    started=result.started,
                    epochs=result.epochs,
                    epoch_cost=result.epoch_cost,
                    stopped_early=result.stopped_early,
                ),
            )
            runs.append(result)
            if result.reached:
                break
        history.append(
            Recurrence(
                energy_j=sum(x.energy_j for x in runs),
                time_s=sum(x.time_s for x in runs),
                cost=sum(x.cost for x in runs),
                reached=runs[-1].reached,
                runs=tuple(runs),
            )
        )
    return history


def run_once(
    trace: WorkloadTrace,
    model: CostModel,
    choice: Choice,
    path: float | None,
    config: SimConfig,
    profiling: profiler.ProfilerStyle = profiler.KWATT_PROFILING,
) -> RunResult:
    if config.charge == "upstream":
        return _run_upstream(trace, model, choice, path)
    return _run_stepwise(trace, model, choice, path, profiling)


def _run_stepwise(
    trace: WorkloadTrace,
    model: CostModel,
    choice: Choice,
    path: float | None,
    profiling: profiler.ProfilerStyle,
) -> RunResult:
    bs = choice.batch_size
    target = trace.epochs_to_target(bs, path)
    iters = trace.spec.iterations_per_epoch(bs)
    prof_config = profiling.config(trace.limits_w, model)
    limit = choice.power_limit_w
    prof: profiler.ProfilerState | None = None
    if limit is None:
        started = profiler.start(prof_config)
        prof, limit = started.state, started.set_limit_w
        assert limit is not None
    energy = time = 0.0
    last_epoch_cost: float | None = None
    epochs = 0
    reached = stopped = False
    while epochs < trace.spec.max_epochs:
        if should_stop(model.cost(energy, time), last_epoch_cost, choice.cost_threshold):
            stopped = True
            break
        before = model.cost(energy, time)
        if prof is not None and prof.phase != "done":
            prof, limit, energy, time = _profiled_epoch(
                trace, prof_config, prof, limit, bs, iters, energy, time
            )
        else:
            point = trace.power[(bs, limit)]
            time += point.time_per_epoch_s
            energy += point.energy_per_epoch_j
        epochs += 1
        last_epoch_cost = model.cost(energy, time) - before
        if target is not None and epochs >= target:
            reached = True
            break
    return RunResult(
        batch_size=bs,
        power_limit_w=limit,
        energy_j=energy,
        time_s=time,
        cost=model.cost(energy, time),
        reached=reached,
        epochs=epochs,
        started=True,
        profiled_limit_w=prof.chosen_w if prof is not None and prof.phase == "done" else None,
        profiling_steps=prof.profiling_steps if prof is not None else 0,
        epoch_cost=model.cost(
            trace.power[(bs, limit)].energy_per_epoch_j, trace.power[(bs, limit)].time_per_epoch_s
        ),
        stopped_early=stopped,
    )


def _profiled_epoch(
    trace: WorkloadTrace,
    config: profiler.ProfilerConfig,
    prof: profiler.ProfilerState,
    limit: int,
    bs: int,
    iters: int,
    energy: float,
    time: float,
) -> tuple[profiler.ProfilerState, int, float, float]:
    """One epoch while profiling: step events until the profiler is done, then the rest at once."""
    for done_steps in range(iters):
        step = profiler.step_begin(config, prof, time, energy)
        prof = step.state
        if step.set_limit_w is not None:
            limit = step.set_limit_w
        point = trace.power[(bs, limit)]
        if prof.phase == "done":
            remaining = iters - done_steps
            time += point.time_per_epoch_s * remaining / iters
            energy += point.energy_per_epoch_j * remaining / iters
            return prof, limit, energy, time
        time += point.time_per_epoch_s / iters
        energy += point.energy_per_epoch_j / iters
    step = profiler.epoch_end(config, prof, time, energy)
    if step.set_limit_w is not None:
        limit = step.set_limit_w
    return step.state, limit, energy, time


def _run_upstream(
    trace: WorkloadTrace, model: CostModel, choice: Choice, path: float | None
) -> RunResult:
    """Zeus's own simulator: exhaustive profile charged as one epoch at the mean of all limits."""
    bs = choice.batch_size
    profiled = choice.power_limit_w is None
    limits = trace.limits_w
    if profiled:
        # Upstream's per-epoch cost of each limit, eq. 7, with its own MaxPower.
        def epoch_cost(p: int) -> float:
            point = trace.power[(bs, p)]
            return model.cost(point.energy_per_epoch_j, point.time_per_epoch_s)

        limit = min(limits, key=epoch_cost)
    else:
        limit = int(choice.power_limit_w)  # type: ignore[arg-type]
    point = trace.power[(bs, limit)]
    max_epochs = trace.spec.max_epochs
    if choice.cost_threshold is not None:
        per_epoch = model.cost(point.energy_per_epoch_j, point.time_per_epoch_s)
        max_epochs = min(math.floor(choice.cost_threshold / per_epoch), max_epochs)
    capped = max_epochs < trace.spec.max_epochs
    if max_epochs <= 0:
        # Upstream profiles before it decides that the run cannot start, and keeps the limit.
        chosen = limit if profiled else None
        return RunResult(bs, limit, 0.0, 0.0, 0.0, False, 0, False, chosen, 0, None, True)
    target = trace.epochs_to_target(bs, path)
    reached = target is not None and target <= max_epochs
    epochs = target if reached and target is not None else max_epochs
    energy = point.energy_per_epoch_j * epochs
    time = point.time_per_epoch_s * epochs
    if profiled:
        points = [trace.power[(bs, p)] for p in limits]
        energy += sum(p.energy_per_epoch_j for p in points) / len(points) - point.energy_per_epoch_j
        time += sum(p.time_per_epoch_s for p in points) / len(points) - point.time_per_epoch_s
    return RunResult(
        batch_size=bs,
        power_limit_w=limit,
        energy_j=energy,
        time_s=time,
        cost=model.cost(energy, time),
        reached=reached,
        epochs=epochs,
        started=True,
        profiled_limit_w=limit if profiled else None,
        profiling_steps=trace.spec.iterations_per_epoch(bs) if profiled else 0,
        epoch_cost=model.cost(point.energy_per_epoch_j, point.time_per_epoch_s),
        stopped_early=capped and not reached,
    )
