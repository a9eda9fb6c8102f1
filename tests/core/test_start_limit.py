"""The limit the GPUs had when a run began (an admin's cap) tops what the run may set.

Worked out from docs/admin.md: on a V100 (100-250 W) capped at 200 W, the profile's
candidates are 200, 175, 150, 125, 100 W (25 W steps down from the cap), a fixed or cached
limit above 200 W becomes 200 W with a note, MaxPower stays 250 W (the GPU's maximum), and
the report says 200 W as `start_limit_w` next to the 100-250 W range.
"""

from __future__ import annotations

import json

import pytest

from kwatt_core import run
from kwatt_core.report import Report, ReportError, decode, encode


def v100(start: float | None, count: int = 1) -> run.Hardware:
    return run.Hardware("v100", count, 100.0, 250.0, start_limit_w=start)


@pytest.mark.parametrize(
    ("start", "expected"),
    [
        (None, (100, 250)),  # unknown: the maximum, as before
        (250.0, (100, 250)),
        (200.0, (100, 200)),
        (212.5, (100, 212)),  # whole watts, rounded inward
        (100.0, (100, 100)),
        (99.0, None),  # below the range: nothing the run may set
    ],
)
def test_settable_range_is_topped_at_the_start_limit(
    start: float | None, expected: tuple[int, int] | None
) -> None:
    hw = run.Hardware("v100", 1, 100.0, 250.0, can_limit=False, start_limit_w=start)
    assert hw.settable_range() == expected
    assert hw.limit_range() == (100, 250)  # the GPU's range is reported unchanged


def test_profiling_walks_down_from_the_cap_and_maxpower_stays_the_maximum() -> None:
    settings = run.RunSettings(batch_size=32)
    t = run.begin(settings, v100(200.0, count=2), 0.0, 0.0)
    assert t.set_limit_w == 200
    assert t.state.prof_config is not None
    assert t.state.prof_config.limits_w == (200, 175, 150, 125, 100)
    assert t.state.cost_model.max_power_w == 500.0  # 250 W x 2, not the cap
    report = run.report(settings, t.state, 1.0, 1.0)
    assert (report.min_limit_w, report.max_limit_w, report.start_limit_w) == (100, 250, 200)


@pytest.mark.parametrize(("asked", "used"), [(230, 200), (200, 200), (150, 150), (300, 200)])
def test_fixed_limits_are_topped_at_the_cap(asked: int, used: int) -> None:
    settings = run.RunSettings(batch_size=32, mode="fixed", fixed_limit_w=asked)
    t = run.begin(settings, v100(200.0), 0.0, 0.0)
    assert (t.set_limit_w, t.state.limit_w) == (used, used)
    if asked == used:
        assert t.state.note == ""
    elif asked <= 250:
        assert "above the limit the GPUs had when the run began (200 W" in t.state.note
    else:
        assert "outside the GPU's range 100-250 W" in t.state.note


def test_a_cached_limit_above_the_cap_becomes_the_cap_with_a_note() -> None:
    settings = run.RunSettings(batch_size=32, cached_limit_w=225)
    t = run.begin(settings, v100(200.0), 0.0, 0.0)
    assert t.set_limit_w == 200 and not t.state.profiling
    assert "The cached limit 225 W is above the limit" in t.state.note


def test_a_cap_below_the_common_range_is_measured_only() -> None:
    hw = run.Hardware("v100", 2, 160.0, 250.0, start_limit_w=150.0)
    t = run.begin(run.RunSettings(batch_size=32), hw, 0.0, 0.0)
    assert t.state.mode == "observe" and t.set_limit_w is None
    assert "150 W" in t.state.note and "measured only" in t.state.note


def test_bad_readings_fall_back_to_the_cap_not_the_maximum() -> None:
    settings = run.RunSettings(batch_size=32, warmup_steps=0, measure_steps=1)
    state = run.begin(settings, v100(200.0), 0.0, 0.0).state
    state = run.step(state, 0.0, 0.0).state  # opens the window at 200 W
    state = run.step(state, 1.0, 10.0).state  # closes it: next, 175 W
    assert state.limit_w == 175
    state = run.step(state, 2.0, 20.0).state  # opens the window at 175 W
    t = run.step(state, 2.0, 20.0)  # a clock that stood still: profiling is abandoned
    assert t.state.prof is not None and t.state.prof.reason == "bad readings"
    assert t.set_limit_w == 200 and t.state.limit_w == 200


def test_observe_reports_no_start_limit() -> None:
    settings = run.RunSettings(batch_size=32, mode="observe")
    state = run.begin(settings, v100(200.0), 0.0, 0.0).state
    assert run.report(settings, state, 1.0, 1.0).start_limit_w is None


BASE = Report("reached", 32, 3, 10.0, 5.0, 7.0, min_limit_w=100, max_limit_w=250)


def test_the_report_carries_the_start_limit_and_older_reports_still_decode() -> None:
    with_start = Report(**{**BASE.__dict__, "start_limit_w": 200})
    assert decode(encode(with_start)).start_limit_w == 200
    text = encode(BASE)
    assert "start_limit_w" not in json.loads(text)  # absent, like an older sidecar's report
    assert decode(text).start_limit_w is None


@pytest.mark.parametrize("value", [99, 251, 0, -5, 200.5, "200", True])
def test_a_start_limit_outside_the_range_is_refused(value: object) -> None:
    data = json.loads(encode(BASE))
    data["start_limit_w"] = value
    with pytest.raises(ReportError, match="start_limit_w"):
        decode(json.dumps(data))


def test_a_start_limit_without_a_range_is_refused() -> None:
    data = json.loads(encode(Report("reached", 32, 3, 10.0, 5.0, 7.0)))
    data["start_limit_w"] = 200
    with pytest.raises(ReportError, match="start_limit_w"):
        decode(json.dumps(data))
