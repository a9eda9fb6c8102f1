"""What a reconcile pass says about the runs it starts and records (docs/operator.md,
"Status" and "Events and metrics"): the events' contents, the Running condition, the
profiling cost and the estimated saving of short profiling windows, the TTL of a failed
run's Job, and each TrainingJob's own random stream. Pure: reconcile on plain dicts."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from conftest import sample_trainingjob
from kwatt_core.contract import SIDECAR_CONTAINER
from kwatt_core.policies import KwattPolicy
from kwatt_core.policies.base import Choice, State
from kwatt_core.report import ProfilePoint, Report, encode
from kwatt_operator.jobs import SidecarSettings
from kwatt_operator.reconcile import Plan, profiling_cost, reconcile, seed_of

Obj = dict[str, Any]
SETTINGS = SidecarSettings(image="ghcr.io/kwatt/sidecar:0.1")
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
DEFAULT = 16  # sample_trainingjob's default batch size


def trainingjob(status: Obj | None = None, **spec: Any) -> Obj:
    tj = sample_trainingjob(**spec)
    tj["metadata"].update(resourceVersion="1", annotations={})
    if status is not None:
        tj["status"] = copy.deepcopy(status)
    return tj


def started(**spec: Any) -> tuple[Obj, Plan]:
    tj = trainingjob(**spec)
    plan = reconcile(tj, [], {}, T0, SETTINGS)
    assert plan.status is not None
    return tj, plan


def ended(job: Obj, rep: Report | None, kind: str = "Complete", at: str = "") -> tuple[Obj, Obj]:
    """`job` as the Job controller leaves it, and its Pod with the sidecar's report."""
    done = copy.deepcopy(job)
    condition = {"type": kind, "status": "True", "reason": kind}
    if at:
        condition["lastTransitionTime"] = at
    done["status"] = {"conditions": [condition]}
    terminated: Obj = {"exitCode": 0, "reason": "Completed"}
    if rep is not None:
        terminated["message"] = encode(rep)
    pod = {
        "metadata": {"name": f"{job['metadata']['name']}-abcde"},
        "status": {
            "initContainerStatuses": [
                {"name": SIDECAR_CONTAINER, "state": {"terminated": terminated}}
            ]
        },
    }
    return done, pod


def record(rep: Report, **spec: Any) -> Plan:
    """Run 1 started and finished with `rep`: the pass that records it."""
    _, first = started(**spec)
    job, pod = ended(first.create[0], rep)
    assert first.status is not None
    return reconcile(
        trainingjob(first.status, **spec),
        [job],
        {job["metadata"]["name"]: [pod]},
        T0 + timedelta(minutes=30),
        SETTINGS,
    )


def report(**fields: Any) -> Report:
    base: Obj = {
        "result": "reached",
        "batch_size": DEFAULT,
        "epochs": 12,
        "energy_j": 90_000.0,
        "time_s": 600.0,
        "cost": 50_000.0,
        "limit_w": 175,
        "profile_complete": True,
        "epoch_cost": 4_000.0,
        "metric": 0.61,
        "gpu_model": "v100",
    }
    base.update(fields)
    return Report(**base)


def test_run_started_says_the_batch_size_and_that_the_limit_is_profiled() -> None:
    _, plan = started()
    (event,) = plan.events
    assert (event.type, event.reason) == ("Normal", "RunStarted")
    assert f"batch size {DEFAULT}" in event.message
    assert "power limit profiled in the run" in event.message


def test_a_finished_run_says_its_batch_size_kept_limit_energy_time_and_epochs() -> None:
    plan = record(report())
    (event,) = plan.events
    assert (event.type, event.reason) == ("Normal", "TargetReached")
    for part in (f"batch size {DEFAULT}", "at 175 W", "90000 J", "in 600 s", "over 12 epochs"):
        assert part in event.message, part
    # The LastRun condition says the same.
    assert plan.status is not None
    (last,) = [c for c in plan.status["conditions"] if c["type"] == "LastRun"]
    assert (last["status"], last["reason"], last["message"]) == (
        "True",
        "TargetReached",
        event.message,
    )


def test_a_run_that_kept_no_limit_names_none() -> None:
    """Observe mode leaves the GPU's own limit: the event names no limit."""
    plan = record(report(limit_w=None, mode="observe", profile_complete=False))
    (event,) = plan.events
    assert " W," not in event.message and "batch size 16," in event.message


def test_the_running_condition_names_the_runs_in_flight() -> None:
    _, plan = started()
    assert plan.status is not None
    (running,) = [c for c in plan.status["conditions"] if c["type"] == "Running"]
    assert (running["status"], running["reason"]) == ("True", "RunInProgress")
    assert "Run 1 " in running["message"]
    done = record(report())
    assert done.status is not None
    (idle,) = [c for c in done.status["conditions"] if c["type"] == "Running"]
    assert (idle["status"], idle["reason"]) == ("False", "NoRunInFlight")


def test_profiling_windows_shorter_than_a_second_count_at_their_length() -> None:
    """Fast steps make windows of a fraction of a second: their time is what it was."""
    rep = report(
        limit_w=175,
        profile=(ProfilePoint(250, 500.0, 0.4, 40), ProfilePoint(175, 420.0, 0.6, 40)),
    )
    cost = profiling_cost(rep)
    assert cost.energy_j == pytest.approx(920.0)
    assert cost.seconds == pytest.approx(1.0)
    # Beyond the same 80 steps at 175 W's 10.5 J and 0.015 s a step: 80 J; no time.
    assert cost.extra_energy_j == pytest.approx(80.0)
    assert cost.extra_seconds == pytest.approx(0.0)


def test_a_saving_is_estimated_from_short_windows_too() -> None:
    """A default-size run that reached the target at 175 W, whose profile measured 250 W (the
    highest) at 20 J and 12.5 ms a step and 175 W at 15 J and 15 ms a step: at the highest
    limit it would have used 4/3 of its energy and 5/6 of its time. kwatt's run against that
    default configuration: 25% less energy, 20% more time."""
    rep = report(
        limit_w=175,
        profile=(ProfilePoint(250, 800.0, 0.5, 40), ProfilePoint(175, 600.0, 0.6, 40)),
    )
    plan = record(rep)
    assert plan.status is not None
    savings = plan.status["savings"]
    assert savings["basis"] == "estimated"
    assert savings["energyPercent"] == pytest.approx(25.0, abs=0.01)
    assert savings["timePercent"] == pytest.approx(-20.0, abs=0.01)


def test_a_failed_runs_job_is_kept_its_ttl_after_it_failed() -> None:
    """A failed Job has no completionTime: its TTL counts from when it failed."""
    spec = {"ttlSecondsAfterFinished": 600}
    _, first = started(**spec)
    assert first.status is not None
    job, _ = ended(first.create[0], None, kind="Failed", at="2025-03-01T12:05:00Z")
    at_1210 = reconcile(
        trainingjob(first.status, **spec), [job], {}, T0 + timedelta(minutes=10), SETTINGS
    )
    assert at_1210.status is not None and at_1210.status["recordedRuns"] == 1
    assert at_1210.delete == []
    assert at_1210.requeue_after_s == pytest.approx(5 * 60)
    at_1216 = reconcile(
        trainingjob(at_1210.status, **spec), [job], {}, T0 + timedelta(minutes=16), SETTINGS
    )
    assert at_1216.delete == [job["metadata"]["name"]]


def test_each_trainingjob_has_its_own_stable_random_stream() -> None:
    a, b = "0b7c5d5e-5a4b-4c7e-9a11-1f0f3f0a2b3c", "7d1e0a52-9b3f-4f0e-8c1d-2a6b5c4d3e2f"
    assert seed_of(a) == seed_of(a)
    assert seed_of(a) != seed_of(b)
    assert all(0 <= seed_of(u) < 2**32 for u in (a, b, ""))


def test_the_end_of_a_run_is_said_first() -> None:
    (event,) = record(report()).events
    assert event.message.startswith("Run 1 ended: reached, batch size 16 at 175 W, ")


def test_a_run_started_is_its_trainingjobs_last_run_time() -> None:
    _, plan = started()
    assert plan.status is not None
    (entry,) = plan.status["active"]
    assert plan.status["lastRunTime"] == entry["startTime"] == "2025-03-01T12:00:00Z"


def test_the_newest_pods_report_is_the_runs() -> None:
    """A Job that retried has several Pods: the run is what the newest one reported."""
    _, first = started()
    assert first.status is not None
    job, old = ended(first.create[0], report(result="failed", energy_j=10.0))
    _, new = ended(first.create[0], report(energy_j=80_000.0))
    old["metadata"]["creationTimestamp"] = "2025-03-01T12:01:00Z"
    new["metadata"]["creationTimestamp"] = "2025-03-01T12:10:00Z"
    new["metadata"]["name"] += "-2"
    for pods in ([old, new], [new, old]):
        plan = reconcile(
            trainingjob(first.status),
            [job],
            {job["metadata"]["name"]: pods},
            T0 + timedelta(minutes=30),
            SETTINGS,
        )
        assert plan.status is not None
        (item,) = plan.status["history"]
        assert (item["result"], item["energyJoules"]) == ("reached", 80_000.0)


def test_a_schedule_runs_in_its_time_zone() -> None:
    """0 9 * * * in Europe/Berlin (UTC+1 in March): due at 08:00 UTC, so a pass at 07:30 UTC
    looks again in 30 minutes, not at 09:00 UTC."""
    spec = {"schedule": "0 9 * * *", "timeZone": "Europe/Berlin"}
    tj = trainingjob(**spec)
    tj["metadata"]["creationTimestamp"] = "2025-03-01T07:00:00Z"
    plan = reconcile(tj, [], {}, datetime(2025, 3, 1, 7, 30, tzinfo=UTC), SETTINGS)
    assert plan.requeue_after_s == pytest.approx(30 * 60)


def test_no_estimate_from_a_profile_that_cannot_give_one() -> None:
    """The kept limit is not among the profiled points (a thinned report), or its window
    took no time (a simulated clock that did not move): no estimated saving, and the run is
    recorded all the same."""
    thinned = report(limit_w=175, profile=(ProfilePoint(250, 800.0, 0.5, 40),))
    still = report(
        limit_w=175,
        profile=(ProfilePoint(250, 800.0, 0.5, 40), ProfilePoint(175, 600.0, 0.0, 40)),
    )
    for rep in (thinned, still):
        plan = record(rep)
        assert plan.status is not None and plan.status["recordedRuns"] == 1
        assert "savings" not in plan.status
        assert "estimated" not in (plan.status.get("baseline") or {})


def test_the_suspended_condition_follows_spec_suspend() -> None:
    """The Suspended condition: `Suspended` while spec.suspend holds new runs, else
    `Active`, with the generation it was written for."""
    tj = trainingjob(suspend=True)
    tj["metadata"]["generation"] = 4
    plan = reconcile(tj, [], {}, T0, SETTINGS)
    assert plan.status is not None and plan.create == []
    (held,) = [c for c in plan.status["conditions"] if c["type"] == "Suspended"]
    assert (held["status"], held["reason"], held["observedGeneration"]) == ("True", "Suspended", 4)
    tj = trainingjob(plan.status, suspend=False)
    tj["metadata"]["generation"] = 5
    resumed = reconcile(tj, [], {}, T0 + timedelta(minutes=1), SETTINGS)
    assert resumed.status is not None
    (active,) = [c for c in resumed.status["conditions"] if c["type"] == "Suspended"]
    assert (active["status"], active["reason"], active["observedGeneration"]) == (
        "False",
        "Active",
        5,
    )


class Thresholded(KwattPolicy):
    """The kwatt policy, except that its choice comes with an early-stop threshold."""

    def choose(self, state: State, in_flight: Sequence[int] = ()) -> tuple[Choice, State]:
        return Choice(DEFAULT, None, 1234.5, "explore"), state


def test_a_replayed_pass_gives_the_job_its_early_stop_threshold() -> None:
    """The status was written, the Job not yet created (the operator died between the two):
    the next pass builds it from the status, with the same cost threshold."""
    tj = trainingjob()
    first = reconcile(tj, [], {}, T0, SETTINGS, policy=Thresholded())
    assert first.status is not None
    replay = reconcile(
        trainingjob(first.status), [], {}, T0 + timedelta(minutes=1), SETTINGS, policy=Thresholded()
    )
    assert replay.create == first.create

    def env(job: Obj) -> dict[str, Any]:
        (sidecar,) = [
            c
            for c in job["spec"]["template"]["spec"]["initContainers"]
            if c["name"] == SIDECAR_CONTAINER
        ]
        return {e["name"]: e.get("value") for e in sidecar["env"]}

    assert env(replay.create[0])["KWATT_COST_THRESHOLD"] == "1234.5"


def test_a_run_without_a_report_says_why_in_a_sentence() -> None:
    """A run whose Job was deleted by hand: its history note says what happened."""
    _, first = started()
    assert first.status is not None
    job = copy.deepcopy(first.create[0])
    job["status"] = {"active": 1}
    seen = reconcile(trainingjob(first.status), [job], {}, T0 + timedelta(minutes=1), SETTINGS)
    assert seen.status is not None
    gone = reconcile(trainingjob(seen.status), [], {}, T0 + timedelta(minutes=2), SETTINGS)
    assert gone.status is not None
    (item,) = gone.status["history"]
    assert (item["result"], item["note"]) == (
        "deleted",
        "the run's Job was deleted before it finished",
    )
