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
    # Profiling took the first epoch; the other two ran wholly at the kept limit.
    assert report.epoch_cost is not None and report.kept_epochs == 2
    assert decode(encode(report)) == decode(encode(report))


def test_the_epoch_cost_is_the_mean_of_the_epochs_at_the_kept_limit() -> None:
    """A fixed limit runs every epoch at the kept limit. Cost = 0.5 x energy + 0.5 x 250 W
    x time: epochs of (2000 J, 10 s), (2400 J, 12 s), (1600 J, 8 s) cost 2250, 2700 and
    1800, a mean of 2250 over 3 epochs (the last one alone would say 1800)."""
    settings = run.RunSettings(batch_size=8, mode="fixed", fixed_limit_w=200)
    state = run.begin(settings, V100, 0.0, 0.0).state
    now = energy = 0.0
    for joules, seconds in ((2000.0, 10.0), (2400.0, 12.0), (1600.0, 8.0)):
        now, energy = now + seconds, energy + joules
        state = run.epoch_end(settings, state, now, energy, None).state
    report = run.report(settings, run.end(state), now, energy)
    assert report.epoch_cost == pytest.approx(2250.0) and report.kept_epochs == 3
    assert report.outcome().kept_epochs == 3
    assert decode(encode(report)).kept_epochs == 3


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


def test_readings_that_go_bad_below_the_top_limit_put_the_top_limit_back() -> None:
    """Abandoning a profile half-way leaves the GPU at the limit it was trying: the run goes
    on at the highest limit (the GPU's default), so the caller is told to set it."""
    settings = run.RunSettings(batch_size=1, warmup_steps=0, measure_steps=1)
    t = run.begin(settings, V100, 0.0, 0.0)
    assert t.set_limit_w == 250
    t = run.step(t.state, 0.0, 0.0)  # opens the window at 250 W
    t = run.step(t.state, 1.0, 200.0)  # closes it; the next limit follows
    assert t.set_limit_w == 225
    t = run.step(t.state, 2.0, 400.0)  # opens the window at 225 W
    t = run.step(t.state, 2.0, 400.0)  # closes it with no time passed
    assert not t.state.profiling and "abandoned" in t.state.note
    assert t.set_limit_w == 250 and t.state.limit_w == 250


def test_a_run_shorter_than_a_second_reports_its_own_time() -> None:
    settings = run.RunSettings(batch_size=1, mode="observe")
    state = run.begin(settings, V100, 10.0, 0.0).state
    report = run.report(settings, run.end(state), 10.25, 30.0)
    assert report.time_s == pytest.approx(0.25) and report.energy_j == pytest.approx(30.0)


def test_told_to_stop_then_interrupted_is_an_ordinary_end() -> None:
    """A trainer stopped as advised and the Pod then ended: the run ended, not interrupted."""
    settings = run.RunSettings(batch_size=1, mode="observe", max_epochs=1)
    state, *_ = drive(settings, V100, 1, 1)
    assert state.stop == "max epochs"
    ended = run.interrupt(state)
    assert ended.stage == "ended" and run.result_of(ended) == "exhausted"


def test_an_ended_run_is_ended() -> None:
    state = run.begin(run.RunSettings(batch_size=1, mode="observe"), V100, 0, 0).state
    assert run.end(state).stage == "ended" and run.end(state, failed=True).stage == "failed"


@pytest.mark.parametrize(
    ("make", "named"),
    [
        (lambda: run.RunSettings(batch_size=0), "batch size"),
        (lambda: run.RunSettings(batch_size=1, cost_threshold=0.0), "cost threshold"),
        (lambda: run.Hardware("v100", -1, 100.0, 250.0), "GPU count"),
        (lambda: run.Hardware("v100", 1, 0.0, 250.0), "0 < min <= max"),
    ],
)
def test_settings_and_hardware_out_of_range_are_named(make: object, named: str) -> None:
    """docs/sidecar.md: a cost threshold must be above 0; a GPU range starts above 0 W."""
    with pytest.raises(run.RunError, match=named):
        make()  # type: ignore[operator]


def test_no_gpu_means_no_range_in_the_report() -> None:
    """Report.min_limit_w/max_limit_w: None when no GPU was found, whatever was passed."""
    settings = run.RunSettings(batch_size=1)
    state = run.begin(settings, run.Hardware("", 0, 100.0, 250.0), 0.0, 0.0).state
    report = run.report(settings, run.end(state), 1.0, 1.0)
    assert (report.min_limit_w, report.max_limit_w) == (None, None)


def test_observing_a_range_without_a_whole_watt_needs_no_excuse() -> None:
    """The note says why a run that was to change limits cannot; an observed run never was."""
    t = run.begin(run.RunSettings(batch_size=8, mode="observe"), NO_WHOLE_WATT, 0.0, 0.0)
    assert t.state.mode == "observe" and t.state.note == ""


def test_profiling_ended_by_short_epochs_keeps_the_best_limit_measured() -> None:
    """A long first epoch measures 250 W and 225 W (1 + 2 steps each); then epochs of 2 steps
    can hold no window, so profiling ends at that epoch's end with the cheaper of the two,
    250 W, while the run was warming up 200 W: the caller is told to set 250 W."""
    settings = run.RunSettings(batch_size=1, warmup_steps=1, measure_steps=2)
    now = energy = 0.0
    t = run.begin(settings, V100, now, energy)
    state = t.state

    def steps(count: int) -> None:
        nonlocal state, now, energy
        for _ in range(count):
            state = run.step(state, now, energy).state
            limit = state.limit_w or 250
            dt = 1.0 + (250 - limit) / 250
            now, energy = now + dt, energy + dt * limit * 0.9

    steps(7)
    assert [m.limit_w for m in state.prof.measurements] == [250, 225]  # type: ignore[union-attr]
    assert state.limit_w == 200
    state = run.epoch_end(settings, state, now, energy, None).state
    steps(2)
    t = run.epoch_end(settings, state, now, energy, None)
    assert not t.state.profiling and t.state.prof.reason == "epochs too short to profile"  # type: ignore[union-attr]
    assert t.set_limit_w == 250 and t.state.limit_w == 250


def test_an_epoch_without_a_metric_keeps_the_last_one() -> None:
    settings = run.RunSettings(batch_size=1, mode="observe")
    state, now, energy, _ = drive(settings, V100, 3, 1, [0.3, 0.4, None])  # type: ignore[list-item]
    assert state.metric == 0.4
    report = run.report(settings, run.end(state), now, energy)
    assert report.metric == 0.4 and report.gpu_model == "v100" and report.gpu_count == 1


def test_a_sidecar_whose_trainer_never_said_hello_reports_an_interruption() -> None:
    settings = run.RunSettings(batch_size=64, mode="fixed", fixed_limit_w=150)
    report = run.no_run_report(settings, "The trainer never said hello.", gpu_model="v100")
    assert (report.result, report.epochs, report.energy_j, report.cost) == ("interrupted", 0, 0, 0)
    assert (report.batch_size, report.mode, report.gpu_model) == (64, "fixed", "v100")
    assert report.note == "The trainer never said hello." and not report.teaches_policy()
