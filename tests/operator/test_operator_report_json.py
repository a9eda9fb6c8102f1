"""`kwatt report --json` names what docs/operator.md lists, with values worked out from the
runs; and the report reads a status that an older operator or a hand wrote, where the
operator's own fields are missing, from the fields that are there."""

from __future__ import annotations

import pytest
from test_operator_report import DEFAULT, MEASURED, observed, operated

from kwatt_operator.status_report import NoRunsError, job_report, report_json


def test_the_json_has_the_documented_names_and_values() -> None:
    tj = operated(MEASURED)
    data = report_json(job_report(tj))
    energies = [700.0, 3000.0, 1000.0, 650.0, 0.0, 1100.0, 900.0]  # MEASURED's, in order
    cumulative = [sum(energies[: i + 1]) for i in range(len(energies))]
    assert [r["cumulativeEnergyJoules"] for r in data["runs"]] == pytest.approx(cumulative)
    for row in data["runs"]:
        assert {"stage", "metric", "note"} <= set(row)
    assert data["gpu"] == tj["status"]["gpu"] and data["gpu"]["maxLimitWatts"] == 250
    assert data["earlierRuns"] == {"runs": 0, "energyJoules": 0.0}
    # The default configuration: the two default-size runs that reached the target.
    default = data["defaultConfiguration"]
    assert default["secondsPerRun"] == pytest.approx((100.0 + 110.0) / 2)
    # kwatt: the five runs that reached the target (the stopped and the failed one are out).
    reached = data["reached"]
    assert reached["runs"] == 5
    assert reached["energyJoulesPerRun"] == pytest.approx((700 + 1000 + 650 + 1100 + 900) / 5)
    assert reached["secondsPerRun"] == pytest.approx((70 + 100 + 65 + 110 + 90) / 5)
    # Every recorded run's energy over the runs that reached the target, against 1,050 J.
    assert data["savings"]["energyPercentAllRuns"] == pytest.approx(
        100 * (1 - 7350.0 / 5 / 1050.0), abs=0.01
    )


def test_two_runs_in_flight_are_said_in_the_plural() -> None:
    tj = operated([], in_flight=True, concurrencyPolicy="Allow")
    tj["status"]["active"].append({**tj["status"]["active"][0], "run": 2})
    with pytest.raises(NoRunsError, match=r"no finished run yet: runs 1, 2 are in flight\.$"):
        job_report(tj)


def test_a_status_without_recorded_runs_counts_them_from_its_totals() -> None:
    """runs beyond the kept history count from status.totals when status.recordedRuns is
    missing: those are earlier runs, not lost ones."""
    tj = operated(MEASURED[:3], historyLimit=2)
    status = tj["status"]
    del status["recordedRuns"]
    rep = job_report(tj)
    assert (rep.runs_recorded, rep.earlier_runs, len(rep.rows)) == (3, 1, 2)
    assert rep.earlier_energy_j == pytest.approx(700.0)


def test_the_default_batch_size_is_the_specs_even_before_the_operator_saw_an_edit() -> None:
    """The default configuration is spec.batchSizes.default (docs/operator.md), also when
    the spec was edited since the policy's state was last written."""
    tj = operated([(DEFAULT, observed(DEFAULT, 1000.0, 100.0))])
    tj["spec"]["batchSizes"]["default"] = 32
    assert job_report(tj).default_batch_size == 32
    del tj["spec"]["batchSizes"]
    assert job_report(tj).default_batch_size == DEFAULT  # from the policy's space


def test_a_status_without_gpus_takes_the_highest_limit_from_the_policy() -> None:
    tj = operated([(DEFAULT, observed(DEFAULT, 1000.0, 100.0))])
    del tj["status"]["gpu"]
    assert tj["status"]["policy"]["space"]["max_limit_w"] == 250
    rep = job_report(tj)
    assert rep.max_limit_w == 250 and rep.gpu is None
    assert report_json(rep)["defaultConfiguration"]["powerLimitWatts"] == 250


def test_each_row_has_its_runs_stage_epochs_and_times() -> None:
    tj = operated(MEASURED[:3])
    data = report_json(job_report(tj))
    history = tj["status"]["history"]
    assert [r["stage"] for r in data["runs"]] == ["explore"] * 3  # ScriptedPolicy's stage
    assert [r["epochs"] for r in data["runs"]] == [h["epochs"] for h in history] == [10] * 3
    assert [r["completionTime"] for r in data["runs"]] == [h["completionTime"] for h in history]
    assert all(r["completionTime"] for r in data["runs"])


def test_a_negative_energy_written_by_hand_counts_as_none() -> None:
    tj = operated(MEASURED[:2])
    tj["status"]["history"][0]["energyJoules"] = -700.0
    rep = job_report(tj)
    assert rep.rows[0].energy_j == 0.0
    assert rep.rows[1].cumulative_energy_j == pytest.approx(3000.0)
