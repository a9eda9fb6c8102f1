"""The operator's default eta and beta (`kwatt operator --default-eta/--default-beta`, the
chart's `defaultObjective`), applied where a TrainingJob's spec.objective leaves them out.

The CRD has no schema default for either (test_operator_crd.py): the API server would fill
one in before the operator reads the object, and an operator-wide default could never take
effect. So the operator's parser fills them in, the runs' sidecars get them (KWATT_ETA,
KWATT_BETA), the policy's early-stop factor is the beta used, `status.objective` says what the
runs use, and `kwatt report` says which came from the operator. Pure: dicts, no cluster.
"""

from __future__ import annotations

import argparse
import copy
import math
from datetime import UTC, datetime
from typing import Any

import pytest

from conftest import sample_trainingjob
from kwatt_cli import operator as operator_cli
from kwatt_cli.errors import UsageError
from kwatt_cli.report import render_table
from kwatt_core.policies.base import Choice
from kwatt_operator.jobs import SidecarSettings, build_job
from kwatt_operator.reconcile import reconcile
from kwatt_operator.spec import ObjectiveDefaults, parse_spec
from kwatt_operator.status_report import job_report, report_json

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
OWN = ObjectiveDefaults(eta=0.7, beta=3.0)
SETTINGS = SidecarSettings(image="ghcr.io/kwatt/sidecar:0.1", objective_defaults=OWN)


def sidecar_env(job: dict[str, Any]) -> dict[str, str]:
    (sidecar,) = job["spec"]["template"]["spec"]["initContainers"]
    return {e["name"]: e["value"] for e in sidecar["env"] if "value" in e}


# --- the parser ---------------------------------------------------------------------------


def test_built_in_defaults_are_the_methods() -> None:
    """Zeus's defaults: eta 0.5 (energy and time weighed alike), beta 2."""
    parsed = parse_spec(sample_trainingjob()["spec"])
    assert (parsed.objective.eta, parsed.objective.beta) == (0.5, 2.0)
    assert ObjectiveDefaults() == ObjectiveDefaults(0.5, 2.0)


@pytest.mark.parametrize(
    ("objective", "expected"),
    [
        (None, (0.7, 3.0)),  # no spec.objective at all
        ({}, (0.7, 3.0)),  # what the API server stores now: an empty object
        ({"eta": 0.2}, (0.2, 3.0)),
        ({"beta": 1.5}, (0.7, 1.5)),
        ({"eta": 0, "beta": 4}, (0.0, 4.0)),  # 0 is a value, not a missing one
        ({"eta": 1, "beta": 2}, (1.0, 2.0)),  # the old schema defaults, stored, are kept
    ],
)
def test_the_operators_defaults_fill_in_only_what_the_spec_leaves_out(
    objective: dict[str, Any] | None, expected: tuple[float, float]
) -> None:
    spec = sample_trainingjob()["spec"]
    if objective is not None:
        spec["objective"] = objective
    parsed = parse_spec(spec, OWN)
    assert (parsed.objective.eta, parsed.objective.beta) == expected
    assert parsed.search_space(250).beta == expected[1]  # the policy's early-stop factor


def test_a_bad_spec_value_is_still_refused_whatever_the_defaults() -> None:
    from kwatt_operator.spec import SpecError

    with pytest.raises(SpecError, match=r"spec\.objective\.beta must be greater than 1"):
        parse_spec(sample_trainingjob(objective={"beta": 1})["spec"], OWN)


@pytest.mark.parametrize(
    ("eta", "beta", "message"),
    [
        (1.5, 2.0, "default eta"),
        (-0.1, 2.0, "default eta"),
        (math.nan, 2.0, "default eta"),
        (0.5, 1.0, "default beta"),
        (0.5, 0.5, "default beta"),
        (0.5, math.inf, "default beta"),
        (0.5, math.nan, "default beta"),
    ],
)
def test_defaults_outside_the_crds_bounds_are_refused(
    eta: float, beta: float, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        ObjectiveDefaults(eta, beta)
    ObjectiveDefaults(0.0, 1.0001)
    ObjectiveDefaults(1.0, 1e6)


# --- what the runs get ---------------------------------------------------------------------


def test_the_runs_sidecar_gets_the_defaults_or_the_specs_values() -> None:
    choice = Choice(16, None, None, "explore")
    defaulted = build_job(sample_trainingjob(), 1, choice, SETTINGS)
    env = sidecar_env(defaulted)
    assert (env["KWATT_ETA"], env["KWATT_BETA"]) == ("0.7", "3")
    given = build_job(sample_trainingjob(objective={"eta": 0.25}), 1, choice, SETTINGS)
    env = sidecar_env(given)
    assert (env["KWATT_ETA"], env["KWATT_BETA"]) == ("0.25", "3")
    plain = build_job(sample_trainingjob(), 1, choice, SidecarSettings(image="x"))
    assert (sidecar_env(plain)["KWATT_ETA"], sidecar_env(plain)["KWATT_BETA"]) == ("0.5", "2")


def test_the_status_says_what_the_runs_use() -> None:
    tj = sample_trainingjob(objective={"eta": 0.25})
    plan = reconcile(tj, [], {}, T0, SETTINGS)
    assert plan.status is not None
    assert plan.status["objective"] == {"eta": 0.25, "beta": 3.0}
    assert plan.status["policy"]["space"]["beta"] == 3.0
    (job,) = plan.create
    assert sidecar_env(job)["KWATT_BETA"] == "3"


def test_a_new_default_beta_restarts_the_policy_of_jobs_that_leave_it_out() -> None:
    """beta is part of the policy's space: a TrainingJob that takes the operator's beta starts
    learning again when the operator's beta changes, one that sets its own does not."""
    for objective, resets in (({}, True), ({"beta": 2.5}, False)):
        tj = sample_trainingjob(objective=objective)
        first = reconcile(tj, [], {}, T0, SETTINGS)
        assert first.status is not None
        tj["status"] = copy.deepcopy(first.status)
        other = SidecarSettings(image="x", objective_defaults=ObjectiveDefaults(0.7, 4.0))
        again = reconcile(tj, [], {}, T0, other)
        reasons = [e.reason for e in again.events]
        assert ("PolicyReset" in reasons) is resets, objective
        status = again.status if again.status is not None else tj["status"]
        assert status["objective"]["beta"] == (4.0 if resets else 2.5)


# --- the report ----------------------------------------------------------------------------


def reported(objective: dict[str, Any]) -> dict[str, Any]:
    """A TrainingJob with one recorded run, its status.objective written by a reconcile."""
    tj = sample_trainingjob(objective=objective)
    plan = reconcile(tj, [], {}, T0, SETTINGS)
    assert plan.status is not None
    status = plan.status
    status["active"] = []
    status["recordedRuns"] = 1
    status["history"] = [
        {
            "run": 1,
            "job": "cifar-run-1",
            "batchSize": 16,
            "powerLimitWatts": 175,
            "result": "reached",
            "epochs": 3,
            "energyJoules": 1000.0,
            "seconds": 60.0,
        }
    ]
    status["totals"] = {"runs": 1, "energyJoules": 1000.0, "seconds": 60.0}
    tj["status"] = status
    return tj


def test_the_report_names_the_values_the_operator_gave() -> None:
    tj = reported({"eta": 0.25})
    text = render_table(job_report(tj))
    assert "Objective: eta 0.25, beta 3 (the operator's default)." in text.splitlines()
    data = report_json(job_report(tj))
    assert data["objective"] == {"eta": 0.25, "beta": 3.0, "operatorDefaults": ["beta"]}
    both = report_json(job_report(reported({})))
    assert both["objective"]["operatorDefaults"] == ["eta", "beta"]
    none = reported({"eta": 0.1, "beta": 1.5})
    assert "Objective: eta 0.1, beta 1.5." in render_table(job_report(none)).splitlines()
    older = reported({})
    del older["status"]["objective"]  # written by an operator before status.objective
    assert report_json(job_report(older))["objective"] is None
    assert "Objective:" not in render_table(job_report(older))


# --- the command line ------------------------------------------------------------------------


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(exit_on_error=False)
    operator_cli.add_arguments(parser)
    return parser.parse_args(argv)


def test_the_flags_and_their_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KWATT_DEFAULT_ETA", raising=False)
    monkeypatch.delenv("KWATT_DEFAULT_BETA", raising=False)
    assert operator_cli.objective_defaults(parse([])) == ObjectiveDefaults(0.5, 2.0)
    flags = parse(["--default-eta=0.3", "--default-beta", "2.5"])
    assert operator_cli.objective_defaults(flags) == ObjectiveDefaults(0.3, 2.5)
    monkeypatch.setenv("KWATT_DEFAULT_ETA", "0.9")
    monkeypatch.setenv("KWATT_DEFAULT_BETA", "5")
    assert operator_cli.objective_defaults(parse([])) == ObjectiveDefaults(0.9, 5.0)
    assert operator_cli.objective_defaults(parse(["--default-eta=0"])).eta == 0.0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--default-eta=1.5"], "--default-eta must be a number from 0 to 1, not 1.5."),
        (["--default-eta=nan"], "--default-eta must be a number from 0 to 1, not nan."),
        (["--default-beta=1"], "--default-beta must be a finite number above 1, not 1.0."),
        (["--default-beta=inf"], "--default-beta must be a finite number above 1, not inf."),
    ],
)
def test_bad_flags_are_one_sentence(argv: list[str], message: str) -> None:
    with pytest.raises(UsageError) as info:
        operator_cli.objective_defaults(parse(argv))
    assert str(info.value) == message
