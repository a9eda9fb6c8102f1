"""Run reports: always under 4 KiB, and every bad field named."""

from __future__ import annotations

import json

import pytest

from kwatt_core.report import MAX_BYTES, ProfilePoint, Report, ReportError, decode, encode


def sample(**kw: object) -> Report:
    args: dict[str, object] = {
        "result": "reached",
        "batch_size": 128,
        "epochs": 12,
        "energy_j": 1.5e6,
        "time_s": 3600.0,
        "cost": 1.2e6,
        "limit_w": 175,
        "profile_complete": True,
        "epoch_cost": 1e5,
        "metric": 0.61,
        "gpu_model": "NVIDIA H100 80GB HBM3",
        "gpu_count": 8,
        "profile": (ProfilePoint(700, 5000.0, 10.0, 40), ProfilePoint(675, 4900.0, 10.1, 40)),
    }
    args.update(kw)
    return Report(**args)  # type: ignore[arg-type]


def test_round_trip() -> None:
    report = sample()
    assert decode(encode(report)) == report
    counted = sample(kept_epochs=11)
    assert decode(encode(counted)) == counted
    assert "kept_epochs" not in json.loads(encode(report))  # absent unless known
    assert decode(encode(sample(limit_w=1))).limit_w == 1  # any whole watt from 1 up


def test_outcome_for_the_policy() -> None:
    outcome = sample(result="stopped", profile_complete=False).outcome()
    assert not outcome.reached and outcome.stopped_early and outcome.power_limit_w is None
    assert sample().outcome().power_limit_w == 175
    assert not sample(result="failed").teaches_policy()


def test_huge_profile_and_note_still_fit() -> None:
    points = tuple(ProfilePoint(700 - i, 1e7 + i, 1e3 + i, 40) for i in range(200))
    report = sample(profile=points, note="x" * 10_000)
    text = encode(report)
    assert len(text.encode()) <= MAX_BYTES
    back = decode(text)
    assert back.profile[0] == points[0] and back.profile[-1] == points[-1]
    assert back.limit_w == 175


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"result": "great"}, "result"),
        ({"batch_size": 0}, "batch_size"),
        ({"energy_j": -1}, "energy_j"),
        ({"epochs": 1.5}, "epochs"),
        ({"profile": [[1, 2, 3]]}, "profile[0]"),
        ({"v": 9}, "version"),
        ({"profile": "250 W"}, "profile"),
        ({"profile": [[250.5, 1.0, 1.0, 40]]}, "profile[0][0]"),
        ({"profile": [[250, "lots", 1.0, 40]]}, "profile[0][1]"),
        ({"profile": [[250, 1.0, -1.0, 40]]}, "profile[0][2]"),
        ({"profile": [[250, 1.0, 1.0, -40]]}, "profile[0][3]"),
        ({"limit_w": 0}, "limit_w"),
        ({"mode": "turbo"}, "mode"),
        ({"time_s": True}, "time_s"),
        ({"cost": None}, "cost"),
        ({"epoch_cost": -1.0}, "epoch_cost"),
        ({"kept_epochs": 0}, "kept_epochs"),
        ({"kept_epochs": 2.5}, "kept_epochs"),
        ({"kept_epochs": 3, "epoch_cost": None}, "kept_epochs"),
        ({"metric": "high"}, "metric"),
        ({"gpu_count": 0}, "gpu_count"),
    ],
)
def test_bad_fields_are_named(change: dict[str, object], field: str) -> None:
    data = json.loads(encode(sample()))
    data.update(change)
    with pytest.raises(ReportError, match=field.replace("[", r"\[").replace("]", r"\]")):
        decode(json.dumps(data))


def test_not_json() -> None:
    with pytest.raises(ReportError, match="not valid JSON"):
        decode("report: ok")


def test_the_gpus_power_range_round_trips() -> None:
    report = sample(min_limit_w=200, max_limit_w=700)
    back = decode(encode(report))
    assert back == report and (back.min_limit_w, back.max_limit_w) == (200, 700)
    assert decode(encode(sample())).min_limit_w is None  # no GPU found: null, and back


def test_old_reports_without_the_power_range_still_decode() -> None:
    """A report of a sidecar from before the range existed: same fields, the range None."""
    data = json.loads(encode(sample()))
    del data["min_limit_w"], data["max_limit_w"]
    back = decode(json.dumps(data))
    assert (back.min_limit_w, back.max_limit_w) == (None, None)
    assert back == sample()


def test_a_range_in_a_huge_report_survives_the_4k_squeeze() -> None:
    points = tuple(ProfilePoint(700 - i, 1e7 + i, 1e3 + i, 40) for i in range(200))
    text = encode(sample(profile=points, note="x" * 10_000, min_limit_w=200, max_limit_w=700))
    assert len(text.encode()) <= MAX_BYTES
    assert (decode(text).min_limit_w, decode(text).max_limit_w) == (200, 700)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"min_limit_w": 0, "max_limit_w": 250}, "min_limit_w"),
        ({"min_limit_w": 100, "max_limit_w": 250.5}, "max_limit_w"),
        ({"min_limit_w": "100", "max_limit_w": 250}, "min_limit_w"),
        ({"min_limit_w": 300, "max_limit_w": 250}, "min_limit_w"),
        ({"min_limit_w": 100, "max_limit_w": None}, "max_limit_w"),
    ],
)
def test_bad_power_ranges_are_named(change: dict[str, object], field: str) -> None:
    data = json.loads(encode(sample()))
    data.update(change)
    with pytest.raises(ReportError, match=field):
        decode(json.dumps(data))


def test_a_bad_choice_lists_what_is_accepted() -> None:
    data = json.loads(encode(sample()))
    data["result"] = "great"
    with pytest.raises(ReportError) as caught:
        decode(json.dumps(data))
    assert "reached, stopped, exhausted, failed, interrupted" in str(caught.value)
    assert "'great'" in str(caught.value)


def test_what_a_report_may_leave_out_and_what_it_may_say() -> None:
    """Optional fields have their documented defaults; a metric may be negative (a
    lower-is-better loss), and free text is cut to a size the operator's status can hold."""
    data = json.loads(encode(sample(metric=-2.5)))
    for key in ("mode", "profile", "profile_complete", "gpu_count", "epoch_cost", "note"):
        del data[key]
    data["gpu_model"] = "G" * 500
    data["note"] = "n" * 5000
    back = decode(json.dumps(data))
    assert back.mode == "optimize" and back.profile == () and not back.profile_complete
    assert back.gpu_count == 1 and back.epoch_cost is None and back.metric == -2.5
    assert back.gpu_model == "G" * 128 and back.note == "n" * 1024


@pytest.mark.parametrize(
    ("result", "teaches"),
    [
        ("reached", True),
        ("stopped", True),
        ("exhausted", True),
        ("failed", False),
        ("interrupted", False),
    ],
)
def test_which_runs_teach_the_policy(result: str, teaches: bool) -> None:
    """A run that ran its epochs out without the target is a lesson too (that batch size
    and limit cost this much and did not get there); failed and interrupted runs are not."""
    assert sample(result=result).teaches_policy() is teaches


def test_the_outcome_carries_what_the_run_measured() -> None:
    assert sample(result="reached").outcome().reached
    outcome = sample(result="exhausted").outcome()
    assert (outcome.batch_size, outcome.cost, outcome.reached) == (128, 1.2e6, False)
    assert (outcome.energy_j, outcome.time_s, outcome.epochs) == (1.5e6, 3600.0, 12)
    assert outcome.epoch_cost == 1e5 and outcome.started and not outcome.stopped_early
    # An older sidecar's epoch cost was one epoch's; a newer one says how many it averages.
    assert outcome.kept_epochs == 1 and sample(kept_epochs=11).outcome().kept_epochs == 11
    # No epoch ran (the threshold kept it from starting): not started, unless it reached.
    assert not sample(result="stopped", epochs=0).outcome().started
    assert sample(result="reached", epochs=0).outcome().started


def test_the_policy_gets_the_windows_costed_like_the_run() -> None:
    """The sidecar costs a run with eta * energy + (1 - eta) * MaxPower * time, MaxPower the
    range's maximum times the GPUs; the windows reach the policy costed the same way, per
    step, with their power per GPU. Here eta 0.3, 8 GPUs of 700 W: MaxPower 5600 W."""
    energy, time = 1.5e6, 3600.0
    report = sample(
        energy_j=energy,
        time_s=time,
        cost=0.3 * energy + 0.7 * 5600 * time,
        min_limit_w=200,
        max_limit_w=700,
    )
    outcome = report.outcome()
    assert outcome.kept_limit_w == 175
    (top, second) = outcome.profile
    # 700 W: 5000 J over 10 s and 40 steps: (0.3 * 5000 + 0.7 * 5600 * 10) / 40 = 1017.5.
    assert top == (700, pytest.approx(1017.5), 40, pytest.approx(5000 / 10 / 8))
    assert second == (
        675,
        pytest.approx((0.3 * 4900 + 0.7 * 5600 * 10.1) / 40),
        40,
        pytest.approx(4900 / 10.1 / 8),
    )
    # Without the GPUs' range the cost model cannot be told: no windows.
    assert sample().outcome().profile == ()


def test_a_long_note_is_shortened_from_its_end() -> None:
    note = "The sidecar could not set 175 W: NVML said no. " * 200
    back = decode(encode(sample(profile=(), note=note)))
    assert 0 < len(back.note) < len(note) and note.startswith(back.note)


def test_a_huge_gpu_name_still_fits() -> None:
    """What a driver reports as the model is cut last, after the profile."""
    text = encode(sample(gpu_model="G" * 5000, note=""))
    assert len(text.encode()) <= MAX_BYTES
    back = decode(text)
    assert back.gpu_model == "G" * 64 and back.profile == () and back.limit_w == 175


def test_a_run_that_never_started_reports_zeros() -> None:
    back = decode(encode(sample(result="stopped", epochs=0, energy_j=0.0, time_s=0.0, cost=0.0)))
    assert (back.energy_j, back.time_s, back.cost, back.epochs) == (0.0, 0.0, 0.0, 0)


def test_a_report_without_a_gpu_model_has_none() -> None:
    data = json.loads(encode(sample()))
    del data["gpu_model"]
    assert decode(json.dumps(data)).gpu_model == ""


@pytest.mark.parametrize(("cost", "per_step"), [(250.0, 10.0), (3000.0, 25.0)])
def test_window_costs_keep_eta_between_0_and_1(cost: float, per_step: float) -> None:
    """eta follows from the run's cost, energy and time; figures that a rounding pushed
    outside [0, 1] are costed at the nearest end: energy only (10 per step for 100 J over
    10 steps) or time only (250 W x 1 s over 10 steps)."""
    report = sample(
        energy_j=1000.0,
        time_s=10.0,
        cost=cost,
        gpu_count=1,
        min_limit_w=100,
        max_limit_w=250,
        profile=(ProfilePoint(200, 100.0, 1.0, 10),),
    )
    ((limit, cost_per_step, steps, *_),) = report.window_costs()
    assert (limit, steps) == (200, 10) and cost_per_step == pytest.approx(per_step)
