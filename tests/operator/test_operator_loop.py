"""The whole loop, 14 recurrences long: operator -> Job -> simulated Pod (trace trainer, real
client, real sidecar) -> report in the Pod status -> operator -> policy -> next Job.

The unit tests check each piece on dicts; this checks that nothing in between drops,
reorders or alters what the policy sees. Every run's report is read back from its Pod
and replayed through the core's `KwattPolicy` with the TrainingJob's own seed: the
operator must have chosen exactly what the replay chooses (batch size, cached power
limit, threshold, stage), run by run, and end with the same policy state. 14 runs on
four candidates walk down from the default (4 or 5 runs) and then exploit, so both stages
are covered (the seed comes from the TrainingJob's uid, so the walk's length varies).

The operator runs as its ServiceAccount with sidecar ports of its own
(operator_support.running_operator).
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from operator_support import Operator, running_operator, status_of, trainingjob

from conftest import sample_trainingjob
from kwatt_core.contract import SIDECAR_CONTAINER
from kwatt_core.policies import KwattPolicy
from kwatt_core.policies.base import SearchSpace, State
from kwatt_core.report import Report, encode
from kwatt_operator import reconcile
from kwatt_operator.jobs import SidecarSettings, choice_of_job
from kwatt_sandbox.testing import Cluster, eventually

RUNS = 14
CANDIDATES = [128, 256, 512, 1024]  # cifar100 on v100: the default and three sizes below
DEFAULT = 1024
TIME_SCALE = 0.0005  # simulated seconds -> wall seconds: well under a second of training a run
NAME = "loop"


def loop_trainingjob(namespace: str) -> dict[str, Any]:
    """The shared simulated-trainer TrainingJob, with four candidates to explore, one Pod per
    run (backoffLimit 0: its report is the one the operator read) and every run kept."""
    tj = trainingjob(namespace, NAME, time_scale=TIME_SCALE, history_limit=RUNS)
    tj["spec"]["batchSizes"] = {"candidates": CANDIDATES, "default": DEFAULT}
    return tj


@pytest.fixture
def operator(sandbox: Cluster, namespace: str, tmp_path: Path) -> Iterator[Operator]:
    """`kwatt operator` watching the test's namespace as its ServiceAccount, with sidecar
    ports of its own (operator_support.Operator)."""
    with running_operator(sandbox, namespace, tmp_path) as op:
        yield op


def learn_gpu(state: State, report: Report) -> State:
    """What the operator does with any report before the policy sees it: the GPU's highest
    limit replaces the space's placeholder (reconcile._learn_gpu)."""
    space = state["space"]
    if report.max_limit_w is None or space["max_limit_w"] != reconcile.UNKNOWN_MAX_LIMIT_W:
        return state
    return {**state, "space": {**space, "max_limit_w": report.max_limit_w}}


@pytest.mark.timeout(400)
def test_every_recurrence_chooses_what_the_policy_chooses(
    sandbox: Cluster, namespace: str, operator: Operator
) -> None:
    sandbox.kubectl("create", "-f", "-", input=json.dumps(loop_trainingjob(namespace)))
    began = time.monotonic()
    for n in range(1, RUNS + 1):
        if n > 1:  # a new value of the annotation asks for exactly one more run
            sandbox.kubectl(
                "annotate",
                "--overwrite",
                "-n",
                namespace,
                f"tj/{NAME}",
                f"{reconcile.ANNOTATION_RUN_REQUEST}=loop-{n}",
            )

        def recorded(n: int = n) -> dict[str, Any] | None:
            operator.alive()
            status = status_of(sandbox, namespace, NAME)
            done = int(status.get("recordedRuns") or 0) >= n and not status.get("active")
            return status if done else None

        eventually(recorded, timeout=60, interval=0.25)
    print(f"{RUNS} recurrences in {time.monotonic() - began:.1f} s")

    tj = sandbox.kubectl_json("get", "trainingjob", NAME, "-n", namespace)
    status = tj["status"]
    assert status["runs"] == RUNS and status["recordedRuns"] == RUNS
    history = status["history"]
    assert [h["run"] for h in history] == list(range(1, RUNS + 1))
    jobs = {
        j["metadata"]["name"]: j
        for j in sandbox.kubectl_json("get", "jobs", "-n", namespace)["items"]
    }
    pods: dict[str, list[dict[str, Any]]] = {}
    for pod in sandbox.kubectl_json("get", "pods", "-n", namespace)["items"]:
        job = pod["metadata"].get("labels", {}).get("batch.kubernetes.io/job-name")
        pods.setdefault(str(job), []).append(pod)

    # Replay: the same seed, the same reports, in the same order, through the core policy.
    policy = KwattPolicy()
    space = SearchSpace(
        batch_sizes=tuple(CANDIDATES),
        default_batch_size=DEFAULT,
        max_limit_w=reconcile.UNKNOWN_MAX_LIMIT_W,
    )
    state = policy.init(space, reconcile.seed_of(tj["metadata"]["uid"]))
    reports: list[Report] = []
    for item in history:
        choice, state = policy.choose(state, in_flight=[])
        made = choice_of_job(jobs[item["job"]])
        assert made == choice, f"run {item['run']}: the operator chose {made}, the policy {choice}"
        assert (item["batchSize"], item["stage"]) == (choice.batch_size, choice.stage), item
        report, note = reconcile.report_of(pods.get(item["job"], []))
        assert report is not None, f"run {item['run']}: {note}"
        assert report.batch_size == choice.batch_size and report.result == item["result"]
        # The limit the run kept: the one it profiled, else the cached one it was given.
        assert item["powerLimitWatts"] == (report.limit_w or choice.power_limit_w), item
        assert item["energyJoules"] == pytest.approx(report.energy_j), item
        assert item["seconds"] == pytest.approx(report.time_s), item
        assert item["epochs"] == report.epochs, item
        state = learn_gpu(state, report)
        if report.teaches_policy() and reconcile.measured(report):
            state = policy.observe(state, report.outcome())
        reports.append(report)

    assert status["policy"] == json.loads(json.dumps(state))
    totals = status["totals"]
    assert totals["runs"] == RUNS
    assert totals["energyJoules"] == pytest.approx(sum(r.energy_j for r in reports))
    assert totals["seconds"] == pytest.approx(sum(r.time_s for r in reports))

    # The loop did what it is for: walked down from the default, then exploited.
    print([(h["batchSize"], h["powerLimitWatts"], h["stage"], h["result"]) for h in history])
    stages = [h["stage"] for h in history]
    explored = stages.count("explore")
    assert 1 < explored < RUNS and stages == ["explore"] * explored + ["exploit"] * (
        RUNS - explored
    )


# --- found by the test above: a run that cost nothing ---------------------------------------

SETTINGS = SidecarSettings(image="ghcr.io/kwatt/sidecar:0.1")
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def _report(batch_size: int, epoch_cost: float) -> Report:
    epochs = {8: 30, 16: 20, 32: 25}[batch_size]
    cost = epoch_cost * epochs
    return Report(
        result="reached",
        batch_size=batch_size,
        epochs=epochs,
        energy_j=cost,
        time_s=cost / 100 if cost else 0.0,
        cost=cost,
        limit_w=200,
        profile_complete=True,
        epoch_cost=epoch_cost or None,
    )


def _sidecar_pod(message: str) -> dict[str, Any]:
    terminated = {"exitCode": 0, "reason": "Completed", "message": message}
    return {
        "metadata": {"name": "p", "creationTimestamp": "2025-03-01T12:00:00Z"},
        "status": {
            "initContainerStatuses": [
                {"name": SIDECAR_CONTAINER, "state": {"terminated": terminated}}
            ]
        },
    }


def test_a_run_that_cost_nothing_does_not_wedge_the_policy() -> None:
    """A report with epochs but no cost (its sidecar read another GPU's idle counters in the
    loop test) once gave the policy an epoch cost of 0; from then on every pass failed on
    log(0) and the TrainingJob never moved again. Now it is recorded and not learnt from."""
    tj = sample_trainingjob()
    tj["metadata"].update(resourceVersion="1", annotations={})
    status: dict[str, Any] = {}
    jobs: list[dict[str, Any]] = []
    pods: dict[str, list[dict[str, Any]]] = {}
    skipped = ""
    for n in range(1, 9):
        current = copy.deepcopy(tj)
        current["metadata"]["annotations"][reconcile.ANNOTATION_RUN_REQUEST] = str(n)
        current["status"] = status
        plan = reconcile.reconcile(current, jobs, pods, T0 + timedelta(hours=n), SETTINGS)
        assert plan.status is not None and len(plan.create) == 1
        status = plan.status
        (job,) = plan.create
        job["status"] = {"conditions": [{"type": "Complete", "status": "True"}]}
        size = int(status["active"][0]["batchSize"])
        cost_free = n == 2  # the second run, a step of the walk, measured nothing
        report = _report(size, 0.0 if cost_free else {8: 3.0, 16: 2.0, 32: 1.5}[size])
        jobs, pods = [job], {job["metadata"]["name"]: [_sidecar_pod(encode(report))]}
        if cost_free:
            skipped = job["metadata"]["name"]
    current = copy.deepcopy(tj)
    current["status"] = status
    plan = reconcile.reconcile(current, jobs, pods, T0 + timedelta(hours=9), SETTINGS)
    assert plan.status is not None
    item = next(h for h in plan.status["history"] if h["job"] == skipped)
    assert item["result"] == "reached" and "measured no cost" in item["note"]
    assert plan.status["policy"]["stage"] == "exploit"
    # Every epoch cost the policy believes in is a real one (a log of something above 0).
    beliefs = [b for v in plan.status["policy"]["info"].values() for b in v["limits"].values()]
    assert beliefs and all(math.isfinite(float(mean)) for mean, _, _ in beliefs)
