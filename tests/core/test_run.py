"""The run state machine: what the sidecar decides, checked without a GPU."""

from __future__ import annotations

import pytest

from kwatt_core import run
from kwatt_core.report import decode, encode

V100 = run.Hardware("v100", 1, 100.0, 250.0)


def drive(
    settings: run.RunSettings,
    hw: run.Hardware,
    epochs: int,
    steps: int,
    metrics: list[float] | None = None,
) -> tuple[run.RunState, float, float, list[int]]:
    """Run `epochs` epochs of `steps` steps; power and speed depend on the limit."""
    now = energy = 0.0
    t = run.begin(settings, hw, now, energy)
    limits = [] if t.set_limit_w is None else [t.set_limit_w]
    state = t.state
    for e in range(epochs):
        for _ in range(steps):
            t = run.step(state, now, energy)
            state = t.state
            if t.set_limit_w is not None:
                limits.append(t.set_limit_w)
            limit = state.limit_w or 250
            dt = 1.0 + (250 - limit) / 250  # lower limits run slower
            now += dt
            energy += dt * limit * 0.9
        metric = metrics[e] if metrics else None
        t = run.epoch_end(settings, state, now, energy, metric)
        state = t.state
        if t.set_limit_w is not None:
            limits.append(t.set_limit_w)
        if state.stop:
            break
    return state, now, energy, limits


def test_profiles_then_keeps_a_limit_and_reports() -> None:
    settings = run.RunSettings(batch_size=64, warmup_steps=2, measure_steps=5)
    state, now, energy, limits = drive(settings, V100, epochs=3, steps=60)
    assert limits[0] == 250 and not state.profiling
    assert state.prof is not None and state.prof.phase == "done"
    state = run.end(state)
    report = run.report(settings, state, now, energy)
    assert report.result == "exhausted" and report.profile_complete
    assert report.limit_w == state.prof.chosen_w
    assert report.epoch_cost is not None  # the last epochs ran wholly at the kept limit
    assert decode(encode(report)) == decode(encode(report))


def test_cached_limit_skips_profiling() -> None:
    settings = run.RunSettings(batch_size=64, cached_limit_w=175)
    t = run.begin(settings, V100, 0.0, 0.0)
    assert t.set_limit_w == 175 and not t.state.profiling
    report = run.report(settings, run.end(t.state), 1.0, 1.0)
    assert report.limit_w == 175 and not report.profile_complete


def test_cached_limit_outside_range_is_clamped() -> None:
    t = run.begin(run.RunSettings(batch_size=1, cached_limit_w=900), V100, 0, 0)
    assert t.set_limit_w == 250


def test_a_limit_stays_inside_a_fractional_range() -> None:
    """A GPU whose NVML range is 100.4-250.6 W accepts whole watts 101-250: a fixed or
    cached limit beyond either end is set at 101 or 250 W, never 100 or 251 W."""
    odd = run.Hardware("v100", 1, 100.4, 250.6)
    for asked, expected in ((251, 250), (900, 250), (100, 101), (80, 101), (175, 175)):
        fixed = run.RunSettings(batch_size=1, mode="fixed", fixed_limit_w=asked)
        assert run.begin(fixed, odd, 0, 0).set_limit_w == expected, asked
        cached = run.RunSettings(batch_size=1, cached_limit_w=asked)
        assert run.begin(cached, odd, 0, 0).set_limit_w == expected, asked


def test_cannot_limit_means_observe() -> None:
    hw = run.Hardware("v100", 1, 100.0, 250.0, can_limit=False, note="No permission.")
    t = run.begin(run.RunSettings(batch_size=1), hw, 0, 0)
    assert t.set_limit_w is None and t.state.mode == "observe" and t.state.phase == "observe"
    report = run.report(run.RunSettings(batch_size=1), run.end(t.state), 1, 1)
    assert report.mode == "observe" and report.limit_w is None and report.note == "No permission."


def test_fixed_limit_and_clamp_note() -> None:
    settings = run.RunSettings(batch_size=1, mode="fixed", fixed_limit_w=80)
    t = run.begin(settings, V100, 0, 0)
    assert t.set_limit_w == 100 and "outside" in t.state.note


def test_early_stop_for_cost_and_sigterm_after_it_is_stopped() -> None:
    settings = run.RunSettings(batch_size=1, mode="observe", cost_threshold=500.0)
    state, now, energy, _ = drive(settings, V100, epochs=50, steps=2)
    assert state.stop == "cost"
    report = run.report(settings, run.interrupt(state), now, energy)
    assert report.result == "stopped" and report.cost <= 500.0 + 1e-9


def test_target_reached_higher_and_lower_is_better() -> None:
    higher = run.RunSettings(batch_size=1, mode="observe", target_metric=0.6)
    state, *_ = drive(higher, V100, 5, 1, [0.1, 0.5, 0.6, 0.7, 0.8])
    assert (state.stop, state.epochs) == ("reached", 3)
    lower = run.RunSettings(
        batch_size=1, mode="observe", target_metric=40.0, higher_is_better=False
    )
    state, *_ = drive(lower, V100, 5, 1, [80.0, 50.0, 39.0, 30.0, 20.0])
    assert (state.stop, state.epochs) == ("reached", 3)
    assert run.result_of(run.end(state)) == "reached"


def test_max_epochs_and_interrupt_and_failure() -> None:
    settings = run.RunSettings(batch_size=1, mode="observe", max_epochs=2)
    state, *_ = drive(settings, V100, 5, 1)
    assert state.stop == "max epochs" and run.result_of(run.end(state)) == "exhausted"
    fresh = run.begin(settings, V100, 0, 0).state
    assert run.result_of(run.interrupt(fresh)) == "interrupted"
    assert run.result_of(run.end(fresh, failed=True)) == "failed"
    assert run.result_of(run.end(fresh, reached=True)) == "reached"


def test_two_gpus_count_in_max_power() -> None:
    hw = run.Hardware("a100", 2, 100.0, 400.0)
    t = run.begin(run.RunSettings(batch_size=1), hw, 0, 0)
    assert t.state.cost_model.max_power_w == 800.0


def test_no_gpu_is_observed() -> None:
    t = run.begin(run.RunSettings(batch_size=1), run.Hardware("", 0, 0.0, 0.0), 0, 0)
    assert t.state.mode == "observe" and t.set_limit_w is None


def test_bad_settings_are_refused() -> None:
    with pytest.raises(run.RunError):
        run.RunSettings(batch_size=0)
    with pytest.raises(run.RunError):
        run.RunSettings(batch_size=1, mode="fixed")
    with pytest.raises(run.RunError):
        run.Hardware("x", 1, 300.0, 200.0)


def test_readings_that_stand_still_abandon_profiling_not_the_run() -> None:
    settings = run.RunSettings(batch_size=1, warmup_steps=0, measure_steps=1)
    state = run.begin(settings, V100, 0.0, 0.0).state
    state = run.step(state, 0.0, 0.0).state  # opens the window
    state = run.step(state, 0.0, 0.0).state  # one step
    t = run.step(state, 0.0, 0.0)  # closes it with no time passed
    assert not t.state.profiling and "abandoned" in t.state.note
    report = run.report(settings, run.end(t.state), 1.0, 1.0)
    assert report.limit_w == 250 and not report.profile_complete


# A GPU whose NVML range holds no whole watt: kwatt sets whole watts only, so it has
# nothing it could set, yet the run must go on (measured only) and say why.
NO_WHOLE_WATT = run.Hardware("v100", 1, 100.4, 100.6)


@pytest.mark.parametrize(
    "settings",
    [
        run.RunSettings(batch_size=8),
        run.RunSettings(batch_size=8, cached_limit_w=100),
        run.RunSettings(batch_size=8, mode="fixed", fixed_limit_w=100),
    ],
    ids=["optimize", "cached", "fixed"],
)
def test_a_range_without_a_whole_watt_is_observed_not_refused(settings: run.RunSettings) -> None:
    t = run.begin(settings, NO_WHOLE_WATT, 0.0, 0.0)
    assert t.set_limit_w is None
    assert t.state.mode == "observe" and t.state.phase == "observe" and not t.state.profiling
    assert "100.4-100.6 W" in t.state.note
    state, now, energy, limits = drive(settings, NO_WHOLE_WATT, epochs=2, steps=60)
    assert limits == []  # no limit is ever set, profiling or not
    report = run.report(settings, run.end(state), now, energy)
    assert report.mode == "observe" and report.limit_w is None
    assert report.result == "exhausted" and report.epochs == 2 and report.cost > 0
    assert not report.profile_complete and report.profile == ()
    assert "100.4-100.6 W" in report.note and report.note.endswith(".")
    assert decode(encode(report)) == decode(encode(report))


def test_the_note_joins_what_the_sidecar_already_said() -> None:
    hw = run.Hardware("v100", 1, 100.4, 100.6, note="Restored 250 W on GPU-1.")
    t = run.begin(run.RunSettings(batch_size=8), hw, 0.0, 0.0)
    assert t.state.note.startswith("Restored 250 W on GPU-1. ")
    assert "100.4-100.6 W" in t.state.note


def test_a_range_holding_one_whole_watt_is_still_used() -> None:
    """100.4-101.2 W holds 101 W: the run profiles (and keeps) that one limit."""
    hw = run.Hardware("v100", 1, 100.4, 101.2)
    settings = run.RunSettings(batch_size=8, warmup_steps=1, measure_steps=2)
    t = run.begin(settings, hw, 0.0, 0.0)
    assert t.set_limit_w == 101 and t.state.mode == "optimize"
    fixed = run.RunSettings(batch_size=8, mode="fixed", fixed_limit_w=250)
    assert run.begin(fixed, hw, 0.0, 0.0).set_limit_w == 101


@pytest.mark.parametrize(
    "kwargs",
    [
        {"limit_step_w": 0.0},
        {"limit_step_w": float("nan")},
        {"warmup_steps": -1},
        {"measure_steps": 0},
    ],
)
def test_profiling_settings_out_of_range_are_refused_up_front(kwargs: dict[str, float]) -> None:
    """A setting the profiler cannot use is a bad setting (one sentence when the sidecar
    starts), not an error on every hello."""
    with pytest.raises(run.RunError):
        run.RunSettings(batch_size=8, **kwargs)  # type: ignore[arg-type]


def test_limits_no_gpu_could_report_are_refused_with_the_hardware() -> None:
    """NVML reports whole milliwatts; an infinite or NaN limit is a broken reading, refused
    where the hardware is described (as min > max is), never met later by the profiler."""
    for low, high in ((100.0, float("inf")), (float("nan"), 250.0), (float("-inf"), 250.0)):
        with pytest.raises(run.RunError, match="finite"):
            run.Hardware("x", 1, low, high)
