"""Trace-driven simulation of a recurring job under a batch-size policy.

Each recurrence asks the policy for a configuration, draws one of the trace's
seed runs for its epochs to target, and runs it epoch by epoch with the same
early-stop rule the sidecar applies. A run that must profile drives the real
profiler state machine step by step (`charge="step"`); `charge="upstream"`
reproduces Zeus's simulator instead (first epoch at the mean over all limits,
epochs capped ahead at threshold // cost per epoch) for a cross-check.

The traces give one time and power per configuration; a real run is noisier, and a
simulator that hands the policy exact figures flatters a policy that leans on them.
So (`Noise`, magnitudes from the bundled traces' own spread, docs/benchmark.md):
- every epoch's time, and its energy with it, varies around the trace's value;
- a profiling window measures its time and average power with the spread of real
  40-step windows (wider for shorter windows), while the run itself goes on at its
  true pace: what the profiler sees is not what the run costs;
- the policy learns a run's cost of one epoch as the sidecar reports it: the last
  epoch run wholly at the kept limit, noise included (None if there was none).

Random numbers are common across policies: recurrence r, try t always draws the
same uniform number for its seed run and the same noise, so policies are compared
on the same luck; the same seed gives the same numbers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np

from kwatt_core import profiler
from kwatt_core.cost import CostModel
from kwatt_core.early_stop import should_stop
from kwatt_core.policies.base import Choice, Outcome, Policy, SearchSpace, Window
from kwatt_core.sim.trace import PowerPoint, WorkloadTrace

Charge = Literal["step", "upstream"]
# A replacement for `run_once` (see `simulate_job`): choice, path, noise, recurrence, try.
RunFn = Callable[[Choice, "float | None", "RunLuck | None", int, int], "RunResult"]
MAX_TRIES = 20
# Seed-sequence tags of the random streams: which seed run a try draws, and its noise.
PATH_STREAM = 7919
NOISE_STREAM = 104729


@dataclass(frozen=True)
class Noise:
    """Log-normal spreads (standard deviations of the log) of what a run does and measures.

    Each factor has mean one, so the expected costs (and the oracle) stay the trace's.
    `window_*` are for a window of `window_steps` steps; a window of s steps has them
    times sqrt(window_steps / s), since step-to-step jitter averages over steps. The
    defaults are the bundled traces' pooled spreads (`benchmarks/noise_spread.py`): real
    40-step windows of upstream's profiler stray 4.1% in time and 2.0% in average power
    from a smooth curve over the limits, the traces' epoch times 2.3%.
    """

    epoch_time_sd: float = 0.025
    window_time_sd: float = 0.04
    window_power_sd: float = 0.02
    window_steps: int = 40

    def __post_init__(self) -> None:
        spreads = (self.epoch_time_sd, self.window_time_sd, self.window_power_sd)
        if any(not 0.0 <= s < 1.0 for s in spreads) or self.window_steps < 1:
            raise ValueError(f"Noise spreads must be in [0, 1) and window_steps >= 1: {self}.")

    @property
    def enabled(self) -> bool:
        return any((self.epoch_time_sd, self.window_time_sd, self.window_power_sd))

    def window_sds(self, steps: int) -> tuple[float, float]:
        """Log-spreads of a window's measured time and average power over `steps` steps."""
        scale = math.sqrt(self.window_steps / max(steps, 1))
        return self.window_time_sd * scale, self.window_power_sd * scale


NO_NOISE = Noise(0.0, 0.0, 0.0)


def _factor(sd: float, z: float) -> float:
    """A mean-one log-normal factor: exp(sd z - sd^2 / 2)."""
    return math.exp(sd * z - 0.5 * sd * sd) if sd else 1.0


@dataclass(frozen=True)
class RunLuck:
    """The standard normal draws of one run: one per epoch, two per profiling window."""

    epoch: tuple[float, ...]
    window: tuple[tuple[float, float], ...]

    @classmethod
    def draw(cls, gen: np.random.Generator, epochs: int, windows: int) -> RunLuck:
        z = gen.standard_normal(epochs + 2 * windows).tolist()
        pairs = tuple(zip(z[epochs::2], z[epochs + 1 :: 2], strict=True))
        return cls(tuple(z[:epochs]), pairs)

    def epoch_factor(self, noise: Noise, epoch: int) -> float:
        return _factor(noise.epoch_time_sd, self.epoch[epoch]) if epoch < len(self.epoch) else 1.0

    def window_factors(self, noise: Noise, index: int, steps: int) -> tuple[float, float]:
        """(time, energy) factors of the `index`-th completed window, of `steps` steps."""
        if index >= len(self.window):
            return 1.0, 1.0
        time_sd, power_sd = noise.window_sds(steps)
        zt, zp = self.window[index]
        time = _factor(time_sd, zt)
        return time, time * _factor(power_sd, zp)


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
    epoch_cost: float | None = None  # the mean of the epochs run wholly at the kept limit
    kept_epochs: int = 0  # how many those were
    stopped_early: bool = False
    windows: tuple[Window, ...] = ()  # as measured, noise included


def profile_windows(prof: profiler.ProfilerState | None) -> tuple[Window, ...]:
    """The windows a run measured, as the policy gets them (`Outcome.profile`)."""
    if prof is None:
        return ()
    return tuple(
        (m.limit_w, m.cost / m.steps, m.steps, m.energy_j / m.time_s) for m in prof.measurements
    )


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
    noise: Noise = field(default_factory=Noise)


def cost_model_for(trace: WorkloadTrace, eta: float) -> CostModel:
    return CostModel.for_gpus(eta, trace.max_limit_w, 1)


def run_luck(
    trace: WorkloadTrace, config: SimConfig, seed: int, recurrence: int, attempt: int
) -> RunLuck | None:
    """The noise draws of recurrence `recurrence`, try `attempt` (None without noise)."""
    if not config.noise.enabled:
        return None
    gen = np.random.default_rng([seed, NOISE_STREAM, recurrence, attempt])
    return RunLuck.draw(gen, trace.spec.max_epochs, len(trace.limits_w))


def simulate_job(
    trace: WorkloadTrace,
    policy: Policy,
    seed: int,
    recurrences: int,
    config: SimConfig,
    run: RunFn | None = None,
) -> list[Recurrence]:
    """Run `recurrences` recurrences of one workload under `policy`.

    `run` replaces `run_once` for every try (kwatt_core.sim.carbon's carbon-aware runs);
    it gets the choice, the seed run's epochs to target, the noise, the recurrence and
    the try."""
    model = cost_model_for(trace, config.eta)
    space = SearchSpace(
        batch_sizes=trace.batch_sizes,
        default_batch_size=trace.default_batch_size,
        max_limit_w=max(trace.limits_w),
        beta=config.beta,
    )
    state = policy.init(space, seed)
    luck = np.random.default_rng([seed, PATH_STREAM]).random((recurrences, MAX_TRIES))
    history: list[Recurrence] = []
    for r in range(recurrences):
        runs: list[RunResult] = []
        for t in range(MAX_TRIES):
            choice, state = policy.choose(state)
            seeds = trace.paths[choice.batch_size]
            path = seeds[min(int(luck[r, t] * len(seeds)), len(seeds) - 1)]
            noise = run_luck(trace, config, seed, r, t)
            if run is not None:
                result = run(choice, path, noise, r, t)
            else:
                result = run_once(trace, model, choice, path, config, policy.profiling, noise)
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
                    kept_epochs=result.kept_epochs,
                    stopped_early=result.stopped_early,
                    kept_limit_w=result.power_limit_w if result.started else None,
                    profile=result.windows,
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


class EpochHooks(Protocol):
    """What a run's epochs do beyond the trace (kwatt_core.sim.carbon's carbon-aware runs)."""

    def profiling_epoch(self, prof: profiler.ProfilerState, energy_j: float, time_s: float) -> None:
        """An epoch that profiled used `energy_j` over `time_s`; `prof` is where it ended."""

    def kept_epoch(self, bs: int, limit: int, pace: float, meter: Meter) -> None:
        """Run one epoch of `bs` that kwatt would run at `limit`, charging `meter`."""


def run_once(
    trace: WorkloadTrace,
    model: CostModel,
    choice: Choice,
    path: float | None,
    config: SimConfig,
    profiling: profiler.ProfilerStyle = profiler.KWATT_PROFILING,
    luck: RunLuck | None = None,
    hooks: EpochHooks | None = None,
) -> RunResult:
    """One run of `choice`; `luck` None runs it exactly as the trace says. `hooks` (kwatt's
    stepwise charge only) replaces the epochs at the kept limit."""
    if config.charge == "upstream":
        return _run_upstream(trace, model, choice, path, config.noise, luck)
    return _run_stepwise(trace, model, choice, path, profiling, config.noise, luck, hooks)


@dataclass
class Meter:
    """A run's true energy and time, and what the profiler's readings show of them.

    The two differ only inside a profiling window, where the readings carry that
    window's measurement noise."""

    energy: float = 0.0
    time: float = 0.0
    seen_energy: float = 0.0
    seen_time: float = 0.0

    def add(self, energy: float, time: float, seen: tuple[float, float] = (1.0, 1.0)) -> None:
        self.energy += energy
        self.time += time
        self.seen_time += time * seen[0]
        self.seen_energy += energy * seen[1]


def _run_stepwise(
    trace: WorkloadTrace,
    model: CostModel,
    choice: Choice,
    path: float | None,
    profiling: profiler.ProfilerStyle,
    noise: Noise,
    luck: RunLuck | None,
    hooks: EpochHooks | None = None,
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
    meter = Meter()
    last_epoch_cost: float | None = None
    kept_total, kept_epochs = 0.0, 0
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
        whole = prof is None or prof.phase == "done"  # this epoch runs wholly at the kept limit
        if prof is not None and prof.phase != "done":
            e0, t0 = meter.energy, meter.time
            prof, limit = _profiled_epoch(
                trace, prof_config, prof, limit, bs, iters, meter, pace, noise, luck
            )
            if hooks is not None:
                hooks.profiling_epoch(prof, meter.energy - e0, meter.time - t0)
        elif hooks is not None:
            hooks.kept_epoch(bs, limit, pace, meter)
        else:
            point = trace.power[(bs, limit)]
            meter.add(point.energy_per_epoch_j * pace, point.time_per_epoch_s * pace)
        epochs += 1
        last_epoch_cost = model.cost(meter.energy, meter.time) - before
        if whole:
            kept_total, kept_epochs = kept_total + last_epoch_cost, kept_epochs + 1
        if target is not None and epochs >= target:
            reached = True
            break
    return RunResult(
        batch_size=bs,
        power_limit_w=limit,
        energy_j=meter.energy,
        time_s=meter.time,
        cost=model.cost(meter.energy, meter.time),
        reached=reached,
        epochs=epochs,
        started=True,
        profiled_limit_w=prof.chosen_w if prof is not None and prof.phase == "done" else None,
        profiling_steps=prof.profiling_steps if prof is not None else 0,
        epoch_cost=kept_total / kept_epochs if kept_epochs else None,
        kept_epochs=kept_epochs,
        stopped_early=stopped,
        windows=profile_windows(prof),
    )


def _profiled_epoch(
    trace: WorkloadTrace,
    config: profiler.ProfilerConfig,
    prof: profiler.ProfilerState,
    limit: int,
    bs: int,
    iters: int,
    meter: Meter,
    pace: float,
    noise: Noise,
    luck: RunLuck | None,
) -> tuple[profiler.ProfilerState, int]:
    """One epoch while profiling: step events until the profiler is done, then the rest at once.

    The profiler reads the meter's readings, which carry the open window's measurement
    noise; the run is charged the true energy and time."""
    for done_steps in range(iters):
        step = profiler.step_begin(config, prof, meter.seen_time, meter.seen_energy)
        prof = step.state
        if step.set_limit_w is not None:
            limit = step.set_limit_w
        point = trace.power[(bs, limit)]
        if prof.phase == "done":
            remaining = (iters - done_steps) / iters
            meter.add(
                point.energy_per_epoch_j * pace * remaining,
                point.time_per_epoch_s * pace * remaining,
            )
            return prof, limit
        seen = (1.0, 1.0)
        if prof.phase == "measure" and luck is not None:
            seen = luck.window_factors(noise, len(prof.measurements), prof.measure_steps)
        meter.add(
            point.energy_per_epoch_j * pace / iters, point.time_per_epoch_s * pace / iters, seen
        )
    step = profiler.epoch_end(config, prof, meter.seen_time, meter.seen_energy)
    if step.set_limit_w is not None:
        limit = step.set_limit_w
    return step.state, limit


def _run_upstream(
    trace: WorkloadTrace,
    model: CostModel,
    choice: Choice,
    path: float | None,
    noise: Noise,
    luck: RunLuck | None,
) -> RunResult:
    """Zeus's own simulator: exhaustive profile charged as one epoch at the mean of all limits.

    With noise, each limit's profile is measured with a 40-step window's noise (the
    choice may miss the cheapest limit) and each epoch has its pace, as the peer's runner
    does to upstream's simulator; the cap on epochs stays upstream's, from the trace."""
    bs = choice.batch_size
    profiled = choice.power_limit_w is None
    limits = trace.limits_w
    windows: tuple[Window, ...] = ()
    if profiled:
        # Upstream's per-epoch cost of each limit, eq. 7, with its own MaxPower, as measured.
        def measured(index: int, p: int) -> tuple[float, float]:
            point = trace.power[(bs, p)]
            seen = (1.0, 1.0)
            if luck is not None:
                seen = luck.window_factors(noise, index, noise.window_steps)
            return point.energy_per_epoch_j * seen[1], point.time_per_epoch_s * seen[0]

        # Upstream profiles from the highest limit down.
        seen = {p: measured(i, p) for i, p in enumerate(sorted(limits, reverse=True))}
        costs = {p: model.cost(e, t) for p, (e, t) in seen.items()}
        limit = min(limits, key=lambda p: costs[p])
        iters = trace.spec.iterations_per_epoch(bs)
        windows = tuple(
            (p, costs[p] / iters, noise.window_steps, e / t) for p, (e, t) in seen.items()
        )
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
        return RunResult(bs, limit, 0.0, 0.0, 0.0, False, 0, False, chosen, 0, stopped_early=True)
    target = trace.epochs_to_target(bs, path)
    reached = target is not None and target <= max_epochs
    epochs = target if reached and target is not None else max_epochs
    first = point
    if profiled:
        points = [trace.power[(bs, p)] for p in limits]
        first = PowerPoint(
            sum(p.time_per_epoch_s for p in points) / len(points),
            sum(p.energy_per_epoch_j for p in points) / sum(p.time_per_epoch_s for p in points),
        )
    paces = [luck.epoch_factor(noise, e) if luck is not None else 1.0 for e in range(epochs)]
    energy = first.energy_per_epoch_j * paces[0] + point.energy_per_epoch_j * sum(paces[1:])
    time = first.time_per_epoch_s * paces[0] + point.time_per_epoch_s * sum(paces[1:])
    whole = paces[1:] if profiled else paces  # the epochs run wholly at the kept limit
    kept = None
    if whole:
        pace = sum(whole) / len(whole)
        kept = model.cost(point.energy_per_epoch_j * pace, point.time_per_epoch_s * pace)
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
        epoch_cost=kept,
        kept_epochs=len(whole),
        stopped_early=capped and not reached,
        windows=windows,
    )
