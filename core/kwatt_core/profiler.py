"""Just-in-time power-limit profiling as a pure state machine.

The sidecar feeds it NVML readings and the simulator feeds it trace values; both
get back the same decisions. Every event returns a new state and, when the GPU's
limit must change, the limit to set. Nothing here reads a clock or a GPU.

Schedule (Zeus, NSDI '23, section 4.2): for each candidate limit, highest first,
set it, let `warmup_steps` steps pass, then measure the energy and time of the
next `measure_steps` steps (from one step's begin to the begin of the step after
the window). An epoch end inside a warm-up or a window cancels it: the same
limit is warmed up again in the next epoch. When the candidates are exhausted,
the limit with the least cost over its window is kept for the rest of the run.

kwatt goes beyond upstream in three ways:
- `adaptive` search stops descending once the windowed cost has risen
  `patience` times in a row past the best seen, by more than `rise_margin`
  at the end (a rise within a window's measurement noise is no rise), since
  cost against limit is close to unimodal and the lower limits past a rise
  are rarely better;
- epochs shorter than the schedule shrink the schedule to fit them instead of
  cancelling forever (upstream never finishes profiling then);
- a cached optimum for this batch size skips profiling entirely.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from itertools import pairwise
from typing import Any, Literal

from kwatt_core.cost import CostModel

Phase = Literal["warmup", "measure", "done"]
Strategy = Literal["exhaustive", "adaptive"]

# Below this many steps per epoch a warm-up plus a window cannot fit at all.
MIN_STEPS_PER_EPOCH = 3


class ProfilerError(ValueError):
    """Bad profiler input: a limit range, a window size or an event out of order."""


def candidate_limits(min_w: float, max_w: float, step_w: float = 25.0) -> list[int]:
    """Limits from the maximum down to the minimum in `step_w` steps (whole watts, descending).

    NVML reports the constraints in milliwatts; callers convert. V100 (100-250 W)
    gives 7 limits, H100 SXM (200-700 W) 21. The bounds are rounded inward (the
    maximum down, the minimum up) and a fractional step's limits half-up, so every
    limit is one NVML accepts: a limit outside the range would be refused while the
    run believed it set. A range holding no whole watt is refused.
    """
    if not (math.isfinite(min_w) and math.isfinite(max_w) and math.isfinite(step_w)):
        raise ProfilerError(f"Power limits must be finite, got {min_w}-{max_w} W by {step_w} W.")
    if min_w <= 0 or max_w <= 0:
        raise ProfilerError(f"Power limits must be positive, got {min_w}-{max_w} W.")
    if min_w > max_w:
        raise ProfilerError(f"The minimum limit {min_w} W is above the maximum {max_w} W.")
    if step_w <= 0:
        raise ProfilerError(f"The limit step must be positive, got {step_w} W.")
    low, high = math.ceil(min_w), math.floor(max_w)
    if low > high:
        raise ProfilerError(f"No whole-watt limit lies within {min_w:g}-{max_w:g} W.")
    limits: list[int] = []
    limit = float(high)
    while limit >= low:
        # limit is in [low, high], both whole, so rounding half-up stays inside them.
        watts = math.floor(limit + 0.5)
        if not limits or watts != limits[-1]:  # a sub-watt step can round to the same watt
            limits.append(watts)
        limit -= step_w
    return limits


@dataclass(frozen=True)
class Measurement:
    """One limit's profiling window."""

    limit_w: int
    energy_j: float
    time_s: float
    steps: int
    cost: float


@dataclass(frozen=True)
class ProfilerConfig:
    """What to profile and how."""

    limits_w: tuple[int, ...]
    cost_model: CostModel
    warmup_steps: int = 10
    measure_steps: int = 40
    strategy: Strategy = "adaptive"
    patience: int = 2
    tie_tolerance: float = 0.005
    adapt_short_epochs: bool = True
    rise_margin: float = 0.0

    def __post_init__(self) -> None:
        if not self.limits_w:
            raise ProfilerError("At least one candidate power limit is needed.")
        if self.warmup_steps < 0:
            raise ProfilerError(f"warmup_steps must not be negative, got {self.warmup_steps}.")
        if self.measure_steps < 1:
            raise ProfilerError(f"measure_steps must be at least 1, got {self.measure_steps}.")
        if not 0.0 <= self.tie_tolerance < 1.0:
            raise ProfilerError(f"tie_tolerance must be in [0, 1), got {self.tie_tolerance}.")
        if self.patience < 1:
            raise ProfilerError(f"patience must be at least 1, got {self.patience}.")
        if not 0.0 <= self.rise_margin < 1.0:
            raise ProfilerError(f"rise_margin must be in [0, 1), got {self.rise_margin}.")


@dataclass(frozen=True)
class ProfilerStyle:
    """How a policy profiles: kwatt's improvements, or upstream's schedule as it is."""

    strategy: Strategy
    tie_tolerance: float
    adapt_short_epochs: bool
    rise_margin: float = 0.0

    def config(self, limits_w: Sequence[int], cost_model: CostModel) -> ProfilerConfig:
        return ProfilerConfig(
            limits_w=tuple(sorted(limits_w, reverse=True)),
            cost_model=cost_model,
            strategy=self.strategy,
            tie_tolerance=self.tie_tolerance,
            adapt_short_epochs=self.adapt_short_epochs,
            rise_margin=self.rise_margin,
        )


# kwatt's rise margin: three spreads of the difference of two real 40-step windows' costs,
# 3 x sqrt(2) x 4.5% (docs/benchmark.md).
KWATT_PROFILING = ProfilerStyle("adaptive", 0.005, True, 0.19)
UPSTREAM_PROFILING = ProfilerStyle("exhaustive", 0.0, False)


@dataclass(frozen=True)
class ProfilerState:
    """Where profiling stands; JSON-able through `to_dict`/`from_dict`."""

    phase: Phase
    limits_w: tuple[int, ...]  # still to profile, next first
    current_w: int
    warmup_steps: int
    measure_steps: int
    counted: int = 0  # step begins seen at this limit (warm-up) or in this window
    window_time: float = 0.0
    window_energy: float = 0.0
    epoch_steps: int = 0
    measurements: tuple[Measurement, ...] = ()
    chosen_w: int | None = None
    cancelled: int = 0
    profiling_steps: int = 0
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProfilerState:
        fields = dict(data)
        fields["limits_w"] = tuple(fields["limits_w"])
        fields["measurements"] = tuple(Measurement(**m) for m in fields["measurements"])
        return cls(**fields)


@dataclass(frozen=True)
class Step:
    """What an event asks of the caller: the limit to set now, if any."""

    state: ProfilerState
    set_limit_w: int | None = None


def start(config: ProfilerConfig, cached_limit_w: int | None = None) -> Step:
    """Begin a run: use the cached optimum if there is one, else profile from the top."""
    if cached_limit_w is not None:
        state = ProfilerState(
            phase="done",
            limits_w=(),
            current_w=cached_limit_w,
            warmup_steps=config.warmup_steps,
            measure_steps=config.measure_steps,
            chosen_w=cached_limit_w,
            reason="cached",
        )
        return Step(state, cached_limit_w)
    limits = tuple(sorted(set(config.limits_w), reverse=True))
    state = ProfilerState(
        phase="warmup",
        limits_w=limits[1:],
        current_w=limits[0],
        warmup_steps=config.warmup_steps,
        measure_steps=config.measure_steps,
    )
    return Step(state, limits[0])


def step_begin(config: ProfilerConfig, state: ProfilerState, now_s: float, energy_j: float) -> Step:
    """A training step begins at `now_s` with the energy counter at `energy_j`."""
    if state.phase == "done":
        return Step(state)
    state = replace(
        state,
        counted=state.counted + 1,
        epoch_steps=state.epoch_steps + 1,
        profiling_steps=state.profiling_steps + 1,
    )
    if state.phase == "warmup":
        if state.counted <= state.warmup_steps:
            return Step(state)
        return Step(
            replace(state, phase="measure", counted=0, window_time=now_s, window_energy=energy_j)
        )
    # Measuring: this step begin closes the window once `measure_steps` steps have run.
    if state.counted < state.measure_steps:
        return Step(state)
    energy = energy_j - state.window_energy
    elapsed = now_s - state.window_time
    if energy < 0 or elapsed <= 0:
        raise ProfilerError(
            f"The energy counter or the clock went backwards during the window at "
            f"{state.current_w} W (energy {energy:.3f} J, time {elapsed:.6f} s)."
        )
    measurement = Measurement(
        limit_w=state.current_w,
        energy_j=energy,
        time_s=elapsed,
        steps=state.measure_steps,
        cost=config.cost_model.cost(energy, elapsed),
    )
    measurements = (*state.measurements, measurement)
    state = replace(state, measurements=measurements)
    if state.limits_w and not _should_stop_descending(config, measurements):
        # This step already runs at the next limit: it is its first warm-up step.
        nxt = state.limits_w[0]
        return Step(
            replace(state, phase="warmup", limits_w=state.limits_w[1:], current_w=nxt, counted=1),
            nxt,
        )
    reason = "exhausted" if not state.limits_w else "cost rose"
    return _finish(config, state, reason)


def epoch_end(config: ProfilerConfig, state: ProfilerState, now_s: float, energy_j: float) -> Step:
    """An epoch ended: cancel a window in progress and fit the schedule to short epochs."""
    del now_s, energy_j  # The window is discarded, so the readings are not needed.
    if state.phase == "done":
        return Step(state)
    steps_this_epoch = state.epoch_steps
    in_progress = state.counted > 0 or state.phase == "measure"
    state = replace(state, epoch_steps=0, counted=0, phase="warmup")
    if not in_progress:
        return Step(state)
    state = replace(state, cancelled=state.cancelled + 1)
    needed = state.warmup_steps + state.measure_steps + 1
    if steps_this_epoch >= needed or not config.adapt_short_epochs:
        return Step(state)
    # The whole schedule can never fit in an epoch: shrink it to fit (keep a fifth for warm-up).
    if steps_this_epoch < MIN_STEPS_PER_EPOCH:
        return _finish(config, state, "epochs too short to profile")
    usable = steps_this_epoch - 1
    warmup = min(state.warmup_steps, max(1, usable // 5))
    measure = max(1, usable - warmup)
    return Step(replace(state, warmup_steps=warmup, measure_steps=measure))


def _should_stop_descending(config: ProfilerConfig, measured: Sequence[Measurement]) -> bool:
    """Adaptive search: stop once the cost has risen `patience` times in a row past the best."""
    if config.strategy == "exhaustive" or len(measured) <= config.patience:
        return False
    best = min(m.cost / m.steps for m in measured)
    tail = measured[-(config.patience + 1) :]
    rising = all(b.cost / b.steps > a.cost / a.steps for a, b in pairwise(tail))
    clear = tail[-1].cost / tail[-1].steps > (1.0 + config.rise_margin) * best
    return rising and clear


def _finish(config: ProfilerConfig, state: ProfilerState, reason: str) -> Step:
    if state.measurements:
        chosen = choose_limit(state.measurements, config.tie_tolerance)
    else:
        # Nothing could be measured: stay at the highest limit, the one the GPU had before.
        chosen = max((state.current_w, *state.limits_w))
    final = replace(state, phase="done", chosen_w=chosen, reason=reason, limits_w=())
    return Step(final, chosen if chosen != state.current_w else None)


def choose_limit(measurements: Sequence[Measurement], tie_tolerance: float) -> int:
    """The cheapest limit; among those within `tie_tolerance` of it, the most frugal.

    Costs that close are equal within measurement noise, and kwatt exists to save
    energy: the tie goes to the least energy per step.
    """
    best = min(m.cost / m.steps for m in measurements)
    near = [m for m in measurements if m.cost / m.steps <= (1.0 + tie_tolerance) * best]
    return min(near, key=lambda m: (m.energy_j / m.steps, -m.limit_w)).limit_w
