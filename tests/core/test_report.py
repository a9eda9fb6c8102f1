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
