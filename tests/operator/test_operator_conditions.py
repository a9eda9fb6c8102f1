"""metav1.Condition helpers: lastTransitionTime moves only when status changes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from kwatt_operator.conditions import find, remove_condition, set_condition, timestamp

T0 = datetime(2025, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)


def test_adds_a_condition_with_every_field() -> None:
    out = set_condition(
        None,
        "Ready",
        "True",
        "RunSucceeded",
        "Run 1 reached the target.",
        observed_generation=3,
        now=T0,
    )
    assert out == [
        {
            "type": "Ready",
            "status": "True",
            "reason": "RunSucceeded",
            "message": "Run 1 reached the target.",
            "lastTransitionTime": "2025-01-02T03:04:05Z",
            "observedGeneration": 3,
        }
    ]


def test_same_status_keeps_transition_time_new_status_moves_it() -> None:
    first = set_condition(
        [], "Running", "True", "RunStarted", "Run 1.", observed_generation=1, now=T0
    )
    same = set_condition(
        first, "Running", "True", "RunStarted", "Run 2.", observed_generation=2, now=T1
    )
    assert same[0]["lastTransitionTime"] == "2025-01-02T03:04:05Z"
    assert same[0]["message"] == "Run 2." and same[0]["observedGeneration"] == 2
    flipped = set_condition(same, "Running", "False", "Idle", "", observed_generation=2, now=T1)
    assert flipped[0]["lastTransitionTime"] == "2025-01-02T03:09:05Z"
    assert first[0]["message"] == "Run 1."  # inputs are not changed


def test_other_conditions_keep_their_place() -> None:
    conds = set_condition([], "Ready", "True", "Ok", "", observed_generation=None, now=T0)
    conds = set_condition(
        conds, "Suspended", "False", "NotSuspended", "", observed_generation=None, now=T0
    )
    conds = set_condition(
        conds, "Ready", "False", "SpecInvalid", "bad", observed_generation=None, now=T1
    )
    assert [c["type"] for c in conds] == ["Ready", "Suspended"]
    assert "observedGeneration" not in conds[0]
    assert find(conds, "Ready") == conds[0] and find(conds, "Missing") is None
    assert [c["type"] for c in remove_condition(conds, "Ready")] == ["Suspended"]


def test_times_are_utc_and_clocks_must_be_aware() -> None:
    plus2 = timezone(timedelta(hours=2))
    assert timestamp(datetime(2025, 1, 1, 2, 0, tzinfo=plus2)) == "2025-01-01T00:00:00Z"
    with pytest.raises(ValueError, match="timezone-aware"):
        timestamp(datetime(2025, 1, 1))


@pytest.mark.parametrize("reason", ["", "not camel", "Bad-Reason", "1st"])
def test_reasons_must_be_camel_case(reason: str) -> None:
    with pytest.raises(ValueError, match="CamelCase"):
        set_condition([], "Ready", "True", reason, "", observed_generation=None, now=T0)


def test_status_must_be_true_false_or_unknown() -> None:
    with pytest.raises(ValueError, match="True, False or Unknown, got 'Yes'"):
        set_condition([], "Ready", "Yes", "Ok", "", observed_generation=None, now=T0)  # type: ignore[arg-type]
