"""The JIT power-limit profiler against schedules worked out by hand.

A fake GPU: per limit, a step takes `SECONDS[limit]` and draws `WATTS[limit]`.
With eta 0.5 and MaxPower 250 W the cost of one step is
  250 W: 0.5*250*1.0 + 125*1.0 = 250.0
  200 W: 0.5*180*1.1 + 125*1.1 = 236.5   <- cheapest
  150 W: 0.5*140*1.5 + 125*1.5 = 292.5
"""

from __future__ import annotations

import json

import pytest

from kwatt_core import profiler
from kwatt_core.cost import CostModel
from kwatt_core.profiler import ProfilerConfig, ProfilerError, ProfilerState

SECONDS = {250: 1.0, 200: 1.1, 150: 1.5}
WATTS = {250: 250.0, 200: 180.0, 150: 140.0}
MODEL = CostModel(eta=0.5, max_power_w=250.0)


def config(**kw: object) -> ProfilerConfig:
    args: dict[str, object] = {
        "limits_w": (250, 200, 150),
        "cost_model": MODEL,
        "warmup_steps": 2,
        "measure_steps": 3,
        "strategy": "exhaustive",
    }
    args.update(kw)
    return ProfilerConfig(**args)  # type: ignore[arg-type]


class FakeGpu:
    """Drives the profiler like the sidecar does: a step begins, then it runs at the limit."""

    def __init__(
        self, cfg: ProfilerConfig, seconds: dict[int, float], watts: dict[int, float]
    ) -> None:
        self.cfg, self.seconds, self.watts = cfg, seconds, watts
        self.time = self.energy = 0.0
        self.limits_set: list[int] = []
        step = profiler.start(cfg)
        self.state = step.state
        self._apply(step.set_limit_w)
        self.steps = 0

    def _apply(self, limit: int | None) -> None:
        if limit is not None:
            self.limits_set.append(limit)
            self.limit = limit

    def step(self) -> None:
        s = profiler.step_begin(self.cfg, self.state, self.time, self.energy)
        self.state = s.state
        self._apply(s.set_limit_w)
        self.time += self.seconds[self.limit]
        self.energy += self.seconds[self.limit] * self.watts[self.limit]
        self.steps += 1

    def epoch_end(self) -> None:
        s = profiler.epoch_end(self.cfg, self.state, self.time, self.energy)
        self.state = s.state
        self._apply(s.set_limit_w)


def test_candidate_limits_follow_the_gpu_range() -> None:
    assert profiler.candidate_limits(100, 250) == [250, 225, 200, 175, 150, 125, 100]
    assert len(profiler.candidate_limits(200, 700)) == 21
    # A range that is not a multiple of the step keeps the maximum and stops above the minimum.
    assert profiler.candidate_limits(90, 150, 25) == [150, 125, 100]


@pytest.mark.parametrize(
    ("low", "high", "step", "named"),
    [(300, 200, 25, "300 W .* 200 W"), (0, 200, 25, "0-200 W"), (100, 200, 0, "step .* 0 W")],
)
def test_bad_limit_ranges_are_refused(low: float, high: float, step: float, named: str) -> None:
    """Refused with a sentence that names the offending numbers, for whoever reads the log."""
    with pytest.raises(ProfilerError, match=named):
        profiler.candidate_limits(low, high, step)


@pytest.mark.parametrize(
    ("low", "high", "step", "expected"),
    [
        # The case: 251 W was offered; the bounds round inward to 101-250 W.
        (100.4, 250.6, 25, [250, 225, 200, 175, 150, 125]),
        (100.4, 250.6, 50, [250, 200, 150]),
        # Bounds that are whole watts are themselves limits.
        (100.0, 250.0, 75, [250, 175, 100]),
        # Equal bounds: one limit, whatever the step.
        (150, 150, 25, [150]),
        (150.0, 150.0, 0.5, [150]),
        # A sub-watt range that holds one whole watt.
        (99.7, 100.2, 25, [100]),
        (0.5, 1.4, 1, [1]),
        # A step larger than the range keeps only the maximum.
        (100, 120, 25, [120]),
        # A fractional step: 150, 137.5 -> 138, 125, 112.5 -> 113, 100 (half-up).
        (100, 150, 12.5, [150, 138, 125, 113, 100]),
        # A sub-watt step: 102, 101.6 -> 102 (a repeat, dropped), 101.2 -> 101,
        # 100.8 -> 101 (dropped), 100.4 -> 100; 100.0 -> 100 (dropped).
        (100, 102, 0.4, [102, 101, 100]),
        # Just under a whole watt at the top and just over at the bottom.
        (100.001, 249.999, 50, [249, 199, 149]),
    ],
)
def test_candidate_limits_stay_inside_the_range(
    low: float, high: float, step: float, expected: list[int]
) -> None:
    """NVML refuses a limit outside its constraints while the run would believe it set, so
    every candidate lies within [low, high]: whole watts, bounds rounded inward."""
    limits = profiler.candidate_limits(low, high, step)
    assert limits == expected
    assert all(low <= w <= high for w in limits)


@pytest.mark.parametrize(
    ("low", "high"), [(100.2, 100.8), (150.5, 150.5), (float("nan"), 250), (100, float("inf"))]
)
def test_ranges_without_a_whole_watt_are_refused(low: float, high: float) -> None:
    with pytest.raises(ProfilerError):
        profiler.candidate_limits(low, high, 25)


def test_exhaustive_schedule_windows_and_choice() -> None:
    gpu = FakeGpu(config(), SECONDS, WATTS)
    while gpu.state.phase != "done":
        gpu.step()
    # Each limit: 2 warm-up steps + 3 measured; the 16th step begin closes the last window.
    assert gpu.steps == 16
    assert gpu.state.profiling_steps == 16
    first = gpu.state.measurements[0]
    assert (first.limit_w, first.steps) == (250, 3)
    assert first.time_s == pytest.approx(3.0)
    assert first.energy_j == pytest.approx(750.0)
    assert [m.cost for m in gpu.state.measurements] == pytest.approx([750.0, 709.5, 877.5])
    assert gpu.state.chosen_w == 200
    # Highest first, then each lower one, then back to the cheapest.
    assert gpu.limits_set == [250, 200, 150, 200]


def test_cached_optimum_skips_profiling() -> None:
    step = profiler.start(config(), cached_limit_w=200)
    assert step.set_limit_w == 200
    assert step.state.phase == "done" and step.state.reason == "cached"
    after = profiler.step_begin(config(), step.state, 1.0, 1.0)
    assert after.set_limit_w is None and after.state.profiling_steps == 0


def test_epoch_end_inside_a_window_cancels_it_and_warms_up_again() -> None:
    # Upstream's rule; kwatt's would also shrink the schedule here (a 4-step epoch).
    gpu = FakeGpu(config(adapt_short_epochs=False), SECONDS, WATTS)
    for _ in range(4):  # two warm-up steps, then two steps into the 250 W window
        gpu.step()
    assert gpu.state.phase == "measure"
    gpu.epoch_end()
    assert gpu.state.cancelled == 1 and gpu.state.phase == "warmup" and not gpu.state.measurements
    assert gpu.limits_set == [250]  # same limit, profiled again from warm-up
    for _ in range(5):
        gpu.step()
    assert gpu.state.phase == "measure"  # 2 warm-up + 3 steps: window not closed yet
    gpu.step()
    assert [m.limit_w for m in gpu.state.measurements] == [250]
    assert gpu.state.measurements[0].time_s == pytest.approx(3.0)


def test_epoch_end_between_windows_cancels_nothing() -> None:
    gpu = FakeGpu(config(), SECONDS, WATTS)
    gpu.epoch_end()  # before any step
    assert gpu.state.cancelled == 0


def run_epochs(gpu: FakeGpu, steps_per_epoch: int, epochs: int) -> None:
    for _ in range(epochs):
        for _ in range(steps_per_epoch):
            gpu.step()
        gpu.epoch_end()


def test_upstream_never_finishes_when_epochs_are_shorter_than_the_schedule() -> None:
    gpu = FakeGpu(config(adapt_short_epochs=False), SECONDS, WATTS)
    run_epochs(gpu, steps_per_epoch=4, epochs=50)  # 4 < 2 + 3 + 1
    assert gpu.state.phase != "done" and not gpu.state.measurements


def test_short_epochs_shrink_the_schedule_to_fit() -> None:
    gpu = FakeGpu(config(), SECONDS, WATTS)
    run_epochs(gpu, steps_per_epoch=4, epochs=10)
    assert gpu.state.phase == "done"
    # usable = 3 steps: warm-up max(1, 3 // 5) = 1, window 2
    assert (gpu.state.warmup_steps, gpu.state.measure_steps) == (1, 2)
    assert gpu.state.chosen_w == 200


def test_epochs_too_short_to_profile_keep_the_highest_limit() -> None:
    gpu = FakeGpu(config(), SECONDS, WATTS)
    run_epochs(gpu, steps_per_epoch=2, epochs=3)
    assert gpu.state.phase == "done" and gpu.state.reason == "epochs too short to profile"
    assert gpu.state.chosen_w == 250


def test_adaptive_search_stops_after_cost_rises_twice() -> None:
    limits = (250, 225, 200, 175, 150, 125, 100)
    # Per-step cost falls to 200 W and rises after it (convex).
    seconds = {250: 1.0, 225: 1.02, 200: 1.05, 175: 1.2, 150: 1.45, 125: 1.8, 100: 2.4}
    watts = {250: 240.0, 225: 215.0, 200: 190.0, 175: 170.0, 150: 150.0, 125: 125.0, 100: 100.0}
    cfg = config(limits_w=limits, strategy="adaptive", patience=2)
    gpu = FakeGpu(cfg, seconds, watts)
    while gpu.state.phase != "done":
        gpu.step()
    assert [m.limit_w for m in gpu.state.measurements] == [250, 225, 200, 175, 150]
    assert gpu.state.chosen_w == 200 and gpu.state.reason == "cost rose"


def test_near_ties_go_to_the_least_energy() -> None:
    # 200 W costs 0.2% more than 250 W per step but uses much less energy.
    seconds = {250: 1.0, 200: 1.2}
    watts = {250: 250.0, 200: 167.4}
    cost_250 = 0.5 * 250 * 1.0 + 125 * 1.0
    cost_200 = 0.5 * 167.4 * 1.2 + 125 * 1.2
    assert cost_200 / cost_250 - 1 == pytest.approx(0.0018, abs=1e-4)
    for tolerance, expected in ((0.0, 250), (0.005, 200)):
        cfg = config(limits_w=(250, 200), tie_tolerance=tolerance)
        gpu = FakeGpu(cfg, seconds, watts)
        while gpu.state.phase != "done":
            gpu.step()
        assert gpu.state.chosen_w == expected


def test_state_survives_json() -> None:
    gpu = FakeGpu(config(), SECONDS, WATTS)
    for _ in range(8):
        gpu.step()
    text = json.dumps(gpu.state.to_dict())
    assert ProfilerState.from_dict(json.loads(text)) == gpu.state


def test_counter_going_backwards_is_an_error() -> None:
    gpu = FakeGpu(config(), SECONDS, WATTS)
    for _ in range(3):
        gpu.step()
    state = gpu.state
    for _ in range(2):
        state = profiler.step_begin(gpu.cfg, state, 100.0, 1e6).state
    with pytest.raises(ProfilerError, match="backwards"):
        profiler.step_begin(gpu.cfg, state, 100.5, 0.0)


def test_an_epoch_exactly_as_long_as_the_schedule_keeps_it() -> None:
    """2 warm-up steps, then a window from the 3rd step's begin to the 6th's: an epoch of 6
    steps holds the whole schedule, so it is not short and nothing is shrunk. Each epoch
    measures one limit in full; its end only cancels the next limit's first warm-up step."""
    gpu = FakeGpu(config(), SECONDS, WATTS)
    run_epochs(gpu, steps_per_epoch=6, epochs=3)
    assert gpu.state.phase == "done" and gpu.state.reason == "exhausted"
    assert (gpu.state.warmup_steps, gpu.state.measure_steps) == (2, 3)
    assert [(m.limit_w, m.steps) for m in gpu.state.measurements] == [(250, 3), (200, 3), (150, 3)]
    assert gpu.state.chosen_w == 200


def test_kwatt_profiling_fits_short_epochs_and_upstream_never_does() -> None:
    """The two styles the policies profile with (docs/benchmark.md): kwatt's shrinks its
    windows to fit 20-step epochs (its default schedule is 10 + 40 steps), upstream's keeps
    cancelling them."""
    results = {}
    for name, style in (
        ("kwatt", profiler.KWATT_PROFILING),
        ("upstream", profiler.UPSTREAM_PROFILING),
    ):
        gpu = FakeGpu(style.config((150, 250, 200), MODEL), SECONDS, WATTS)
        run_epochs(gpu, steps_per_epoch=20, epochs=10)
        results[name] = gpu.state
    assert results["kwatt"].phase == "done" and results["kwatt"].chosen_w == 200
    assert results["upstream"].phase != "done" and not results["upstream"].measurements


def test_a_cached_start_survives_json() -> None:
    """The state travels as JSON whether the run profiles or starts at a cached limit."""
    step = profiler.start(config(), cached_limit_w=200)
    text = json.dumps(step.state.to_dict())
    assert ProfilerState.from_dict(json.loads(text)) == step.state


@pytest.mark.parametrize(
    ("margin", "measured", "reason"),
    [
        (0.0, [250, 225, 200, 175, 150], "cost rose"),
        # 150 W costs 290.0 a step, 1.26 x the best (200 W, 231.0): within a 30% margin
        # it is no rise yet; 125 W (337.5, 1.46 x) is.
        (0.3, [250, 225, 200, 175, 150, 125], "cost rose"),
        # 100 W (420.0, 1.82 x) is the last limit: a 90% margin never stops the descent.
        (0.9, [250, 225, 200, 175, 150, 125, 100], "exhausted"),
    ],
)
def test_a_rise_within_the_margin_is_no_rise(
    margin: float, measured: list[int], reason: str
) -> None:
    """kwatt's profiles are noisy (docs/benchmark.md): the descent stops only once the cost
    has risen twice and stands more than `rise_margin` above the best."""
    limits = (250, 225, 200, 175, 150, 125, 100)
    seconds = {250: 1.0, 225: 1.02, 200: 1.05, 175: 1.2, 150: 1.45, 125: 1.8, 100: 2.4}
    watts = {250: 240.0, 225: 215.0, 200: 190.0, 175: 170.0, 150: 150.0, 125: 125.0, 100: 100.0}
    cfg = config(limits_w=limits, strategy="adaptive", patience=2, rise_margin=margin)
    gpu = FakeGpu(cfg, seconds, watts)
    while gpu.state.phase != "done":
        gpu.step()
    assert [m.limit_w for m in gpu.state.measurements] == measured
    assert gpu.state.chosen_w == 200 and gpu.state.reason == reason


def test_kwatts_margin_is_three_spreads_of_two_windows() -> None:
    """Real 40-step windows' costs stray about 4.5% (docs/benchmark.md, "Noise"); a rise
    beyond three spreads of the difference of two of them is no luck."""
    assert profiler.KWATT_PROFILING.rise_margin == pytest.approx(3 * 2**0.5 * 0.045, abs=0.005)
    assert profiler.UPSTREAM_PROFILING.rise_margin == 0.0
    with pytest.raises(ProfilerError, match="rise_margin"):
        config(rise_margin=1.0)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"limits_w": ()}, "candidate power limit"),
        ({"warmup_steps": -1}, "warmup_steps"),
        ({"measure_steps": 0}, "measure_steps"),
        ({"tie_tolerance": 1.0}, "tie_tolerance"),
        ({"patience": 0}, "patience"),
        ({"rise_margin": 1.0}, "rise_margin"),
    ],
)
def test_a_bad_schedule_is_refused_naming_the_setting(
    change: dict[str, object], named: str
) -> None:
    with pytest.raises(ProfilerError, match=named):
        config(**change)


def test_the_smallest_settings_are_allowed() -> None:
    """No warm-up, a one-step window, patience 1, ties never broken: all valid."""
    cfg = config(warmup_steps=0, measure_steps=1, patience=1, tie_tolerance=0.0, rise_margin=0.0)
    gpu = FakeGpu(cfg, SECONDS, WATTS)
    while gpu.state.phase != "done":
        gpu.step()
    assert gpu.state.chosen_w == 200


def test_a_window_that_used_no_energy_is_a_measurement_not_an_error() -> None:
    """Only a counter that goes backwards is an error; one that stood still (a GPU whose
    counter did not move in the window) is measured as it is."""
    cfg = config(warmup_steps=0, measure_steps=1, limits_w=(250,))
    state = profiler.start(cfg).state
    state = profiler.step_begin(cfg, state, 0.0, 5.0).state  # opens the window
    done = profiler.step_begin(cfg, state, 1.0, 5.0).state  # closes it: 1 s, 0 J
    assert done.phase == "done" and done.measurements[0].energy_j == 0.0


def test_epochs_that_end_as_their_window_opens_are_short_too() -> None:
    """2 warm-up steps and a window opened by the 3rd step's begin: 3-step epochs end every
    window as it opens. kwatt counts each as cancelled and shrinks the schedule to fit."""
    gpu = FakeGpu(config(), SECONDS, WATTS)
    gpu.step()
    gpu.step()
    gpu.step()
    assert gpu.state.phase == "measure" and gpu.state.counted == 0
    gpu.epoch_end()
    assert gpu.state.cancelled == 1
    run_epochs(gpu, steps_per_epoch=3, epochs=10)
    assert gpu.state.phase == "done" and gpu.state.chosen_w == 200
    assert (gpu.state.warmup_steps, gpu.state.measure_steps) == (1, 1)
