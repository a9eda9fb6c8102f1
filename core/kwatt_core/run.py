"""One run as the sidecar sees it: a pure state machine from the trainer's hello to the report.

The sidecar is a thin shell that reads the GPU and answers HTTP; every decision
lives here so that it is tested without a GPU and matches the simulator: which
limit to set (profiling, a cached optimum, a fixed limit or none), the run's
cost, when to tell the trainer to stop (target reached, cost past the early-stop
threshold, epoch budget used up) and the report's result.

Events take the time and the energy counter (joules, summed over the run's GPUs)
read by the caller and return a new state plus the limit to set, if any.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

from kwatt_core import profiler
from kwatt_core.cost import CostModel
from kwatt_core.early_stop import should_stop
from kwatt_core.report import Mode, ProfilePoint, Report, Result

StopReason = Literal["", "reached", "cost", "max epochs"]
Stage = Literal["running", "ended", "failed", "interrupted"]


# Ways profiling ends without a profile the policy may cache.
NOT_PROFILED = ("cached", "bad readings")


class RunError(ValueError):
    """A run setting is out of range or an event came out of order."""


@dataclass(frozen=True)
class RunSettings:
    """What the operator asked of this run (the sidecar's environment, parsed)."""

    batch_size: int
    mode: Mode = "optimize"
    eta: float = 0.5
    cost_threshold: float | None = None
    target_metric: float | None = None
    higher_is_better: bool = True
    max_epochs: int | None = None
    cached_limit_w: int | None = None
    fixed_limit_w: int | None = None
    warmup_steps: int = 10
    measure_steps: int = 40
    limit_step_w: float = 25.0
    profiling: profiler.ProfilerStyle = profiler.KWATT_PROFILING

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise RunError(f"The batch size must be at least 1, got {self.batch_size}.")
        if not 0.0 <= self.eta <= 1.0:
            raise RunError(f"eta must be between 0 and 1, got {self.eta}.")
        if self.mode == "fixed" and self.fixed_limit_w is None:
            raise RunError("Power mode 'fixed' needs a fixed limit in watts.")
        if self.max_epochs is not None and self.max_epochs < 1:
            raise RunError(f"max epochs must be at least 1, got {self.max_epochs}.")
        if self.cost_threshold is not None and self.cost_threshold <= 0:
            raise RunError(f"The cost threshold must be positive, got {self.cost_threshold}.")
        # The profiler's own checks, made here so that a bad setting is refused once, up
        # front, rather than raised by every hello.
        if self.warmup_steps < 0:
            raise RunError(f"warmup steps must not be negative, got {self.warmup_steps}.")
        if self.measure_steps < 1:
            raise RunError(f"measure steps must be at least 1, got {self.measure_steps}.")
        if not (math.isfinite(self.limit_step_w) and self.limit_step_w > 0):
            raise RunError(f"The limit step must be a positive number, got {self.limit_step_w}.")


@dataclass(frozen=True)
class Hardware:
    """The run's GPUs as the sidecar found them at the trainer's hello.

    `can_limit` is False when the limit may not be changed (no permission, a MIG
    slice, no GPU found): the run is then observed only and `note` says why. A range
    that holds no whole watt (kwatt sets whole watts only) is observed only as well,
    with a note from `begin`.

    `start_limit_w` is the lowest limit the GPUs had when the run began (an admin's cap
    such as `nvidia-smi -pl`, or the default), which the sidecar puts back at the end: the
    run never sets a limit above it. None when unknown, and the top is then the maximum.
    The maximum itself stays the cost's MaxPower, so costs compare across runs and caps.
    """

    gpu_model: str
    gpu_count: int
    min_limit_w: float
    max_limit_w: float
    can_limit: bool = True
    note: str = ""
    start_limit_w: float | None = None

    def __post_init__(self) -> None:
        if self.gpu_count < 0:
            raise RunError(f"The GPU count must not be negative, got {self.gpu_count}.")
        # GPUs that cannot be limited need no usable range (GPUs whose ranges do not overlap,
        # a driver reporting nonsense): the run is measured only and its report has no range.
        if self.gpu_count and self.can_limit and not self.usable_range():
            raise RunError(
                f"The GPU limits must be finite with 0 < min <= max, got "
                f"{self.min_limit_w}-{self.max_limit_w} W."
            )

    def usable_range(self) -> bool:
        low, high = self.min_limit_w, self.max_limit_w
        return math.isfinite(low) and math.isfinite(high) and 0 < low <= high

    def limit_range(self) -> tuple[int, int] | None:
        """The whole watts settable on every GPU of the run, for the report; None without one."""
        if not self.gpu_count or not self.usable_range():
            return None
        # Rounded to the milliwatt first: NVML's limits are whole mW.
        low, high = math.ceil(round(self.min_limit_w, 3)), math.floor(round(self.max_limit_w, 3))
        return (low, high) if 0 < low <= high else None

    def settable_range(self) -> tuple[int, int] | None:
        """The whole watts this run may set: the range, topped at the limit the GPUs had
        when it began (never above what an admin left them at); None when none is left."""
        whole = self.limit_range()
        start = self.start_limit_w
        if whole is None or start is None or not math.isfinite(start):
            return whole
        low, high = whole[0], min(whole[1], math.floor(round(start, 3)))
        return (low, high) if low <= high else None


@dataclass(frozen=True)
class RunState:
    """Where the run stands. Times and energies are the caller's clock and counter."""

    hardware: Hardware
    mode: Mode
    cost_model: CostModel
    start_s: float
    start_j: float
    epoch_start_s: float
    epoch_start_j: float
    limit_w: int | None = None
    prof_config: profiler.ProfilerConfig | None = None
    prof: profiler.ProfilerState | None = None
    epochs: int = 0
    last_epoch_cost: float | None = None
    kept_cost: float = 0.0  # summed over the epochs run wholly at the kept limit
    kept_epochs: int = 0
    metric: float | None = None
    reached: bool = False
    stop: StopReason = ""
    stage: Stage = "running"
    note: str = ""

    @property
    def profiling(self) -> bool:
        """True while the trainer should keep reporting step begins."""
        return self.stage == "running" and self.prof is not None and self.prof.phase != "done"

    @property
    def phase(self) -> str:
        """A short, low-cardinality name of what the run is doing (for metrics)."""
        if self.stage != "running":
            return "ended"
        if self.prof is not None:
            return self.prof.phase
        return "observe" if self.mode == "observe" else "done"


@dataclass(frozen=True)
class Transition:
    """A new state and the limit the caller must set on every GPU of the run, if any."""

    state: RunState
    set_limit_w: int | None = None


def _clamp(usable: tuple[int, int], watts: float) -> int:
    """A whole-watt limit the run may set: rounded, then kept inside the settable range
    (rounded inward: a 250.6 W maximum allows 250 W, never 251 W)."""
    low, high = usable
    return int(min(max(round(watts), low), high))


def _clamped_note(hw: Hardware, what: str, asked: int, used: int) -> str:
    """Why a fixed or cached limit was not used as given (a sentence)."""
    whole = hw.limit_range()
    if whole is not None and whole[0] <= asked <= whole[1]:
        # Within the GPU's range, so above the limit the GPUs had before the run.
        return (
            f"The {what} limit {asked} W is above the limit the GPUs had when the run began "
            f"({hw.start_limit_w:g} W, which kwatt never exceeds); {used} W was used."
        )
    return (
        f"The {what} limit {asked} W is outside the GPU's range "
        f"{hw.min_limit_w:g}-{hw.max_limit_w:g} W; {used} W was used."
    )


def begin(settings: RunSettings, hw: Hardware, now_s: float, energy_j: float) -> Transition:
    """The trainer said hello: pick the mode this run can really have and the first limit."""
    mode: Mode = settings.mode
    notes = [hw.note] if hw.note else []
    usable = hw.settable_range()
    if hw.gpu_count == 0 or not hw.can_limit:
        mode = "observe"
    elif usable is None and mode != "observe":
        # Nothing NVML would accept can be set: measure the run rather than fail every call.
        mode = "observe"
        if hw.limit_range() is not None:  # then the limit the GPUs had is below the range
            notes.append(
                f"The lowest limit the run's GPUs had when it began, {hw.start_limit_w:g} W, is "
                f"below the power-limit range every one of them accepts, {hw.min_limit_w:g}-"
                f"{hw.max_limit_w:g} W; kwatt never sets a limit above the one it found, so no "
                "limit is changed and the run is measured only."
            )
        else:
            notes.append(
                f"The power-limit range every GPU of the run accepts, {hw.min_limit_w:g}-"
                f"{hw.max_limit_w:g} W, holds no whole watt (kwatt sets whole watts only), so "
                "no limit is changed and the run is measured only."
            )
    count = max(hw.gpu_count, 1)
    # MaxPower of the cost: the GPUs' maximum when it is a number at all (a GPU that cannot be
    # limited may report nonsense; its run is then observed and its cost only compared to itself).
    sane = hw.gpu_count and math.isfinite(hw.max_limit_w) and hw.max_limit_w > 0
    max_w = hw.max_limit_w if sane else 1.0
    model = CostModel.for_gpus(settings.eta, max_w, count)
    state = RunState(
        hardware=hw,
        mode=mode,
        cost_model=model,
        start_s=now_s,
        start_j=energy_j,
        epoch_start_s=now_s,
        epoch_start_j=energy_j,
    )
    if mode == "observe":
        return Transition(replace(state, note=" ".join(notes)))
    assert usable is not None
    if mode == "fixed":
        assert settings.fixed_limit_w is not None
        limit = _clamp(usable, settings.fixed_limit_w)
        if limit != settings.fixed_limit_w:
            notes.append(_clamped_note(hw, "fixed", settings.fixed_limit_w, limit))
        return Transition(replace(state, limit_w=limit, note=" ".join(notes)), limit)
    # The whole-watt range itself: every candidate is then a limit the GPUs accept.
    limits = profiler.candidate_limits(usable[0], usable[1], settings.limit_step_w)
    config = replace(
        settings.profiling.config(limits, model),
        warmup_steps=settings.warmup_steps,
        measure_steps=settings.measure_steps,
    )
    cached = None if settings.cached_limit_w is None else _clamp(usable, settings.cached_limit_w)
    if cached is not None and cached != settings.cached_limit_w:
        assert settings.cached_limit_w is not None
        notes.append(_clamped_note(hw, "cached", settings.cached_limit_w, cached))
    started = profiler.start(config, cached)
    state = replace(
        state,
        prof_config=config,
        prof=started.state,
        limit_w=started.set_limit_w,
        note=" ".join(notes),
    )
    return Transition(state, started.set_limit_w)


def step(state: RunState, now_s: float, energy_j: float) -> Transition:
    """A training step begins; only profiling cares."""
    if not state.profiling:
        return Transition(state)
    assert state.prof is not None and state.prof_config is not None
    try:
        out = profiler.step_begin(state.prof_config, state.prof, now_s, energy_j - state.start_j)
    except profiler.ProfilerError as exc:
        # Readings that make no sense (a clock that stood still): give up profiling, not the
        # run, which goes on at the highest candidate (the limit the GPUs had when it began),
        # not at whichever limit the walk had reached.
        top = max(state.prof_config.limits_w)
        done = replace(state.prof, phase="done", chosen_w=top, limits_w=(), reason="bad readings")
        note = f"{state.note} Profiling was abandoned: {exc}".strip()
        changed = top if top != state.limit_w else None
        return Transition(replace(state, prof=done, limit_w=top, note=note), changed)
    limit = state.limit_w if out.set_limit_w is None else out.set_limit_w
    return Transition(replace(state, prof=out.state, limit_w=limit), out.set_limit_w)


def epoch_end(
    settings: RunSettings, state: RunState, now_s: float, energy_j: float, metric: float | None
) -> Transition:
    """An epoch ended: account its cost, let profiling adapt, and decide whether to stop."""
    if state.stage != "running":
        return Transition(state)
    epoch_cost = state.cost_model.cost(
        max(energy_j - state.epoch_start_j, 0.0), max(now_s - state.epoch_start_s, 0.0)
    )
    # Epochs run entirely at the kept limit tell the policy what one epoch costs: their
    # mean, which is the more exact the more of them there are.
    kept_whole_epoch = state.prof is None or (
        state.prof.phase == "done" and state.prof.epoch_steps == 0
    )
    set_limit: int | None = None
    prof = state.prof
    if prof is not None and state.prof_config is not None:
        was_done = prof.phase == "done"
        out = profiler.epoch_end(state.prof_config, prof, now_s, energy_j - state.start_j)
        prof = out.state
        set_limit = out.set_limit_w
        if was_done:
            # Mark the next epoch as one run wholly at the kept limit.
            prof = replace(prof, epoch_steps=0)
    state = replace(
        state,
        prof=prof,
        limit_w=state.limit_w if set_limit is None else set_limit,
        epochs=state.epochs + 1,
        epoch_start_s=now_s,
        epoch_start_j=energy_j,
        last_epoch_cost=epoch_cost,
        kept_cost=state.kept_cost + (epoch_cost if kept_whole_epoch else 0.0),
        kept_epochs=state.kept_epochs + int(kept_whole_epoch),
        metric=metric if metric is not None else state.metric,
    )
    if metric is not None and settings.target_metric is not None:
        target = settings.target_metric
        hit = metric >= target if settings.higher_is_better else metric <= target
        state = replace(state, reached=state.reached or hit)
    return Transition(
        replace(state, stop=_stop_reason(settings, state, now_s, energy_j)), set_limit
    )


def _stop_reason(
    settings: RunSettings, state: RunState, now_s: float, energy_j: float
) -> StopReason:
    if state.reached:
        return "reached"
    if should_stop(cost(state, now_s, energy_j), state.last_epoch_cost, settings.cost_threshold):
        return "cost"
    if settings.max_epochs is not None and state.epochs >= settings.max_epochs:
        return "max epochs"
    return ""


def cost(state: RunState, now_s: float, energy_j: float) -> float:
    """The run's cost so far."""
    return state.cost_model.cost(max(energy_j - state.start_j, 0.0), max(now_s - state.start_s, 0))


def end(state: RunState, failed: bool = False, reached: bool | None = None) -> RunState:
    """The trainer finished (or says it failed). `reached` is its own verdict, used without a
    target in the settings."""
    if state.stage != "running":
        return state
    if reached and not state.reached:
        state = replace(state, reached=True)
    return replace(state, stage="failed" if failed else "ended")


def interrupt(state: RunState) -> RunState:
    """The sidecar is told to exit. After a stop advice the trainer ended as told: a normal end."""
    if state.stage != "running":
        return state
    return replace(state, stage="ended" if state.stop else "interrupted")


def result_of(state: RunState) -> Result:
    if state.stage == "failed":
        return "failed"
    if state.stage in ("interrupted", "running"):
        return "interrupted"
    if state.reached:
        return "reached"
    if state.stop == "cost":
        return "stopped"
    return "exhausted"


def report(
    settings: RunSettings, state: RunState, now_s: float, energy_j: float, note: str = ""
) -> Report:
    """The run report, from the state and the final readings."""
    energy = max(energy_j - state.start_j, 0.0)
    elapsed = max(now_s - state.start_s, 0.0)
    prof = state.prof
    complete = prof is not None and prof.phase == "done" and prof.reason not in NOT_PROFILED
    points = tuple(
        ProfilePoint(m.limit_w, m.energy_j, m.time_s, m.steps)
        for m in (prof.measurements if prof is not None else ())
    )
    limit = state.limit_w
    if prof is not None and prof.phase == "done":
        limit = prof.chosen_w
    notes = " ".join(n for n in (state.note, note) if n)
    limits = state.hardware.limit_range()
    # The top of what the run could set (the GPUs' limit at its start, an admin's cap): what
    # the saving's default configuration runs at. Only when the run could set limits.
    settable = state.hardware.settable_range() if state.mode != "observe" else None
    return Report(
        result=result_of(state),
        batch_size=settings.batch_size,
        epochs=state.epochs,
        energy_j=energy,
        time_s=elapsed,
        cost=state.cost_model.cost(energy, elapsed),
        mode=state.mode,
        limit_w=limit if state.mode != "observe" else None,
        profile_complete=complete,
        epoch_cost=state.kept_cost / state.kept_epochs if state.kept_epochs else None,
        kept_epochs=state.kept_epochs if state.kept_epochs else None,
        metric=state.metric,
        gpu_model=state.hardware.gpu_model,
        gpu_count=max(state.hardware.gpu_count, 1),
        min_limit_w=None if limits is None else limits[0],
        max_limit_w=None if limits is None else limits[1],
        start_limit_w=None if settable is None else settable[1],
        profile=points,
        note=notes,
    )


def no_run_report(settings: RunSettings, note: str, gpu_model: str = "") -> Report:
    """The report of a sidecar whose trainer never said hello."""
    return Report(
        result="interrupted",
        batch_size=settings.batch_size,
        epochs=0,
        energy_j=0.0,
        time_s=0.0,
        cost=0.0,
        mode=settings.mode,
        gpu_model=gpu_model,
        note=note,
    )
