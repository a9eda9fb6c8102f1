"""The reconcile pass as a table of cases, on plain dicts: no cluster.

Every expectation is worked out from the contracts (docs/design.md, the exactly-once rules
in reconcile.py's docstring, Kubernetes' conventions for conditions), not read back
from the code: a run is written to `status.active` before its Job exists, a finished
Job is moved to `history` (policy fed, totals added) in one status write, and a pass
that is repeated, or cut short anywhere, neither loses nor double-counts a run.
`World` plays the kopf shell: status first (with the resourceVersion it read), then
the Jobs, and it can "crash" between the two.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import random
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from conftest import TJ_UID, sample_trainingjob
from kwatt_core.contract import SIDECAR_CONTAINER
from kwatt_core.policies import DefaultPolicy, KwattPolicy
from kwatt_core.policies.base import Choice, SearchSpace, State
from kwatt_core.report import ProfilePoint, Report, decode, encode
from kwatt_operator import crd
from kwatt_operator.jobs import SidecarSettings, build_job, choice_of_job
from kwatt_operator.reconcile import (
    ANNOTATION_RUN_REQUEST,
    Plan,
    ProfilingCost,
    profiling_cost,
    reconcile,
    seed_of,
)
from kwatt_operator.spec import DEFAULT_HISTORY_LIMIT

Obj = dict[str, Any]
SETTINGS = SidecarSettings(image="ghcr.io/kwatt/sidecar:0.1")
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
SIZES = (8, 16, 32)
DEFAULT = 16
CAMEL = re.compile(r"^[A-Z][A-Za-z0-9]*$")
BATCH_ENV = "KWATT_BATCH_SIZE"


# --- building the inputs ------------------------------------------------------------------


def trainingjob(
    status: Obj | None = None, request: str | None = None, generation: int = 1, **spec: Any
) -> Obj:
    """A TrainingJob as read from the API server: metadata, spec, and the last status."""
    tj = sample_trainingjob(**spec)
    tj["metadata"].update(generation=generation, resourceVersion="1", annotations={})
    if request is not None:
        tj["metadata"]["annotations"][ANNOTATION_RUN_REQUEST] = request
    if status is not None:
        tj["status"] = copy.deepcopy(status)
    return tj


def report(
    batch_size: int,
    result: str = "reached",
    energy: float = 5000.0,
    seconds: float = 600.0,
    epochs: int = 10,
    limit: int | None = 200,
    profiled: bool = True,
) -> Report:
    cost = 0.5 * energy + 0.5 * 250.0 * seconds
    return Report(
        result=result,  # type: ignore[arg-type]
        batch_size=batch_size,
        epochs=epochs,
        energy_j=energy,
        time_s=seconds,
        cost=cost,
        limit_w=limit,
        profile_complete=profiled,
        epoch_cost=cost / epochs if epochs else None,
        metric=0.61 if result == "reached" else 0.4,
        gpu_model="Tesla V100-SXM2-32GB",
    )


def finished(job: Mapping[str, Any], kind: str = "Complete", reason: str = "") -> Obj:
    """`job` with the condition the Job controller sets when it ends."""
    done = copy.deepcopy(dict(job))
    condition = {"type": kind, "status": "True", "reason": reason or kind}
    done["status"] = {"conditions": [condition]}
    return done


def running(job: Mapping[str, Any]) -> Obj:
    out = copy.deepcopy(dict(job))
    out["status"] = {"active": 1}
    return out


def pod(job_name: str, message: str | None, created: str = "2025-03-01T12:00:00Z") -> Obj:
    """A Pod of `job_name` whose native sidecar has terminated with `message`."""
    terminated: Obj = {"exitCode": 0, "reason": "Completed"}
    if message is not None:
        terminated["message"] = message
    return {
        "metadata": {"name": f"{job_name}-abcde", "creationTimestamp": created},
        "status": {
            "initContainerStatuses": [
                {"name": SIDECAR_CONTAINER, "state": {"terminated": terminated}}
            ]
        },
    }


def pods_with(job_name: str, rep: Report | None) -> dict[str, list[Obj]]:
    return {job_name: [pod(job_name, None if rep is None else encode(rep))]}


def conditions(status: Mapping[str, Any]) -> dict[str, Obj]:
    return {c["type"]: c for c in status.get("conditions") or []}


def space(sizes: Sequence[int] = SIZES, default: int = DEFAULT) -> SearchSpace:
    return SearchSpace(tuple(sizes), default, 0, 2.0)


def fresh_policy(sizes: Sequence[int] = SIZES, default: int = DEFAULT) -> State:
    return KwattPolicy().init(space(sizes, default), seed_of(TJ_UID))


def trainer_batch(job: Mapping[str, Any]) -> int:
    trainer = job["spec"]["template"]["spec"]["containers"][0]
    return int(next(e["value"] for e in trainer["env"] if e["name"] == BATCH_ENV))


def status_json(status: Mapping[str, Any]) -> Obj:
    """What the API server hands back: JSON, nothing Python-only."""
    out: Obj = json.loads(json.dumps(status))
    return out


def started_once() -> tuple[Obj, Plan]:
    """Pass 1 of a fresh TrainingJob, and the status the shell wrote."""
    plan = reconcile(trainingjob(), [], {}, T0, SETTINGS)
    assert plan.status is not None
    return status_json(plan.status), plan


class World:
    """The kopf shell and the cluster in miniature: write status first, then act on Jobs."""

    def __init__(self, policy: KwattPolicy | None = None, **spec: Any) -> None:
        self.spec = spec
        self.policy = policy
        self.status: Obj = {}
        self.annotations: dict[str, str] = {}
        self.jobs: dict[str, Obj] = {}
        self.pods: dict[str, list[Obj]] = {}
        self.now = T0
        self.created: list[str] = []  # every successful Job create, in order
        self.writes = 0

    def tj(self) -> Obj:
        tj = trainingjob(self.status or None, **self.spec)
        tj["metadata"]["annotations"] = dict(self.annotations)
        tj["metadata"]["resourceVersion"] = str(self.writes + 1)
        return tj

    def step(self, write: bool = True, act: bool = True) -> Plan:
        """One pass; `write=False`: died before the status write; `act=False`: after it."""
        tj = self.tj()
        before = copy.deepcopy((tj, self.jobs, self.pods))
        plan = reconcile(
            tj, list(self.jobs.values()), self.pods, self.now, SETTINGS, policy=self.policy
        )
        assert (tj, self.jobs, self.pods) == before, "reconcile changed its inputs"
        self.now += timedelta(minutes=1)
        if not write:
            return plan
        if plan.status is not None:
            self.status = status_json(plan.status)
            self.writes += 1
        if act:
            for name in plan.delete:
                self.jobs.pop(name, None)
                self.pods.pop(name, None)
            for job in plan.create:
                name = job["metadata"]["name"]
                if name not in self.jobs:  # a second create gets 409 and changes nothing
                    self.jobs[name] = running(job)
                    self.created.append(name)
        return plan

    def finish(self, name: str, rep: Report | None, kind: str = "Complete") -> None:
        self.jobs[name] = finished(self.jobs[name], kind, "" if kind == "Complete" else "Failed")
        self.pods[name] = pods_with(name, rep)[name]

    def request(self, value: str) -> None:
        self.annotations[ANNOTATION_RUN_REQUEST] = value

    def active_job(self) -> str:
        (entry,) = self.status["active"]
        return str(entry["job"])


# --- 1. a fresh TrainingJob ---------------------------------------------------------------


def test_fresh_trainingjob_starts_run_one_at_the_policys_first_choice() -> None:
    """Run 1 is written to status.active before its Job exists; one Job, one RunStarted."""
    plan = reconcile(trainingjob(generation=3), [], {}, T0, SETTINGS)
    status = plan.status
    assert status is not None
    assert status["runs"] == 1
    (entry,) = status["active"]
    assert entry["run"] == 1 and entry["job"] == "cifar-run-1"
    assert entry["jobCreated"] is False and entry["trigger"] == "on create"
    # The policy's state is a fresh one for this uid; its first choice is the default size.
    policy = status["policy"]
    assert policy == fresh_policy()
    choice, _ = KwattPolicy().choose(fresh_policy())
    assert choice.batch_size == DEFAULT == entry["batchSize"]
    assert entry["powerLimitWatts"] is None  # nothing cached: the run profiles its limit
    (job,) = plan.create
    assert job == build_job(trainingjob(generation=3), 1, choice, SETTINGS)
    owner = job["metadata"]["ownerReferences"][0]
    assert owner["uid"] == TJ_UID and owner["controller"] is True
    assert trainer_batch(job) == DEFAULT and plan.delete == []
    assert [(e.type, e.reason) for e in plan.events] == [("Normal", "RunStarted")]
    assert [c.batch_size for c in plan.started] == [DEFAULT] and plan.finished == []
    ready = conditions(status)["Ready"]
    assert (ready["status"], ready["observedGeneration"]) == ("True", 3)
    assert status["observedGeneration"] == 3 and status["state"] == "Running"
    assert conditions(status)["Running"]["status"] == "True"
    assert status["currentBatchSize"] == DEFAULT
    json.dumps(status)  # the status is plain JSON


# --- 2. crash safety: status written, Job not yet created ---------------------------------


def test_replayed_pass_creates_the_same_job_and_starts_no_second_run() -> None:
    """Died after the status write: the next pass creates the same Job, nothing more."""
    status, first = started_once()
    replay = reconcile(trainingjob(status), [], {}, T0 + timedelta(minutes=1), SETTINGS)
    assert replay.create == first.create
    assert replay.status is None  # nothing new to write: runs stays 1, one active entry
    assert replay.events == [] and replay.started == [] and replay.delete == []
    # The Job exists now and is running: nothing to create, the entry says it was seen.
    job = running(first.create[0])
    seen = reconcile(trainingjob(status), [job], {}, T0 + timedelta(minutes=2), SETTINGS)
    assert seen.create == [] and seen.delete == [] and seen.events == []
    assert seen.status is not None
    (entry,) = seen.status["active"]
    assert entry["jobCreated"] is True and seen.status["runs"] == 1
    # And a pass over that status with nothing new writes nothing.
    again = reconcile(
        trainingjob(status_json(seen.status)), [job], {}, T0 + timedelta(hours=1), SETTINGS
    )
    assert again.status is None and again.create == [] and again.events == []


# --- 3. a completed run is recorded exactly once ------------------------------------------


def test_completed_run_is_recorded_once_and_teaches_the_policy() -> None:
    """Complete + `reached` report: active -> history, totals, policy fed; a replay adds nothing."""
    status, first = started_once()
    job = finished(first.create[0])
    rep = report(DEFAULT, energy=4321.5, seconds=610.25, epochs=12, limit=175)
    pods = pods_with("cifar-run-1", rep)
    now = T0 + timedelta(hours=1)
    plan = reconcile(trainingjob(status), [job], pods, now, SETTINGS)
    new = plan.status
    assert new is not None
    assert new["active"] == [] and new["runs"] == 1 and new["recordedRuns"] == 1
    (item,) = new["history"]
    assert item["run"] == 1 and item["job"] == "cifar-run-1" and item["result"] == "reached"
    assert (item["batchSize"], item["powerLimitWatts"], item["epochs"]) == (DEFAULT, 175, 12)
    assert (item["energyJoules"], item["seconds"], item["cost"]) == (4321.5, 610.25, rep.cost)
    assert item["completionTime"] == "2025-03-01T13:00:00Z" and item["metric"] == 0.61
    assert new["totals"] == {"energyJoules": 4321.5, "seconds": 610.25, "runs": 1}
    # The policy observed it: exactly what feeding it the report as it travelled gives.
    expected = KwattPolicy().observe(fresh_policy(), decode(encode(rep)).outcome())
    assert new["policy"] == expected and new["policy"]["limits"] == {str(DEFAULT): 175}
    last = conditions(new)["LastRun"]
    assert (last["status"], last["reason"]) == ("True", "TargetReached")
    assert new["state"] == "Idle" and conditions(new)["Running"]["status"] == "False"
    assert [(e.type, e.reason) for e in plan.events] == [("Normal", "TargetReached")]
    assert [(f.run, f.result, f.energy_j) for f in plan.finished] == [(1, "reached", 4321.5)]
    assert plan.create == [] and plan.delete == []  # the Job stays while its run is in history
    # Exactly once: the same Job and Pod again, with the status just written.
    later = now + timedelta(minutes=5)
    replay = reconcile(trainingjob(status_json(new)), [job], pods, later, SETTINGS)
    assert replay.status is None and replay.finished == [] and replay.events == []
    assert replay.create == [] and replay.delete == []


def test_stale_status_replays_the_record_identically() -> None:
    """A pass from a stale read computes the same record (its write then loses the 409 race)."""
    status, first = started_once()
    job, pods = finished(first.create[0]), pods_with("cifar-run-1", report(DEFAULT))
    a = reconcile(trainingjob(status), [job], pods, T0 + timedelta(hours=1), SETTINGS)
    b = reconcile(trainingjob(status), [job], pods, T0 + timedelta(hours=1), SETTINGS)
    assert a.status == b.status and a.status is not None
    assert a.status["recordedRuns"] == 1


# --- 4. failed runs ------------------------------------------------------------------------


def test_failed_job_without_report_is_recorded_as_noreport_and_not_fed() -> None:
    """Failed, no report: result noreport, a note, LastRun False; the policy is untouched."""
    status, first = started_once()
    job = finished(first.create[0], "Failed", "BackoffLimitExceeded")
    pods = pods_with("cifar-run-1", None)  # the sidecar ended without a message
    plan = reconcile(trainingjob(status), [job], pods, T0 + timedelta(hours=1), SETTINGS)
    new = plan.status
    assert new is not None
    (item,) = new["history"]
    assert item["result"] == "noreport" and "BackoffLimitExceeded" in item["note"]
    assert (item["energyJoules"], item["seconds"], item["epochs"]) == (0.0, 0.0, 0)
    assert item["batchSize"] == DEFAULT and new["recordedRuns"] == 1
    assert new["policy"] == status["policy"]  # not fed
    last = conditions(new)["LastRun"]
    assert last["status"] == "False" and CAMEL.match(last["reason"])
    assert [e.type for e in plan.events] == ["Warning"]
    # The next request still starts run 2, at the same size (the policy did not move).
    nxt = reconcile(
        trainingjob(status_json(new), request="again"),
        [job],
        pods,
        T0 + timedelta(hours=2),
        SETTINGS,
    )
    assert nxt.status is not None
    (entry,) = nxt.status["active"]
    assert entry["run"] == 2 and entry["batchSize"] == DEFAULT and entry["trigger"] == "on request"
    assert [j["metadata"]["name"] for j in nxt.create] == ["cifar-run-2"]


def test_failed_job_with_a_failed_report_keeps_its_result_and_energy() -> None:
    """A `failed` report names the result and counts its energy, but does not teach."""
    status, first = started_once()
    job = finished(first.create[0], "Failed", "BackoffLimitExceeded")
    rep = report(DEFAULT, "failed", energy=800.0, seconds=90.0, epochs=1, profiled=False)
    plan = reconcile(
        trainingjob(status), [job], pods_with("cifar-run-1", rep), T0 + timedelta(1), SETTINGS
    )
    new = plan.status
    assert new is not None
    (item,) = new["history"]
    assert item["result"] == "failed" and item["energyJoules"] == 800.0
    assert new["totals"] == {"energyJoules": 800.0, "seconds": 90.0, "runs": 1}
    assert new["policy"] == status["policy"]
    last = conditions(new)["LastRun"]
    assert last["status"] == "False" and CAMEL.match(last["reason"])
    assert last["reason"] != "TargetReached"


def test_unreadable_report_is_noreport_with_the_reason() -> None:
    """A report that does not decode is recorded as noreport, with why, and not fed."""
    status, first = started_once()
    job = finished(first.create[0])
    pods = {"cifar-run-1": [pod("cifar-run-1", '{"v": 1, "result": "maybe"}')]}
    plan = reconcile(trainingjob(status), [job], pods, T0 + timedelta(1), SETTINGS)
    assert plan.status is not None
    (item,) = plan.status["history"]
    assert item["result"] == "noreport" and "result" in item["note"]
    assert plan.status["policy"] == status["policy"]


# --- 5. a Job deleted by hand ----------------------------------------------------------------


def test_job_deleted_by_hand_is_recorded_as_deleted() -> None:
    """Seen once (jobCreated) and then gone: recorded as deleted with a note, not fed."""
    status, first = started_once()
    seen = reconcile(trainingjob(status), [running(first.create[0])], {}, T0, SETTINGS)
    assert seen.status is not None
    status = status_json(seen.status)
    plan = reconcile(trainingjob(status), [], {}, T0 + timedelta(minutes=9), SETTINGS)
    new = plan.status
    assert new is not None and plan.create == []
    (item,) = new["history"]
    assert item["result"] == "deleted" and item["note"]
    assert new["active"] == [] and new["recordedRuns"] == 1
    assert new["policy"] == status["policy"]
    last = conditions(new)["LastRun"]
    assert last["status"] == "False" and CAMEL.match(last["reason"])
    assert new["totals"]["energyJoules"] == 0.0


# --- 6. on-demand runs -------------------------------------------------------------------------


def test_run_request_annotation_starts_exactly_one_run_per_new_value() -> None:
    """A new value of kwatt.dev/run-requested starts one run and is stored; the same value none."""
    world = World()
    world.step()
    world.finish("cifar-run-1", report(DEFAULT))
    world.step()
    assert world.status["recordedRuns"] == 1 and world.status["active"] == []
    world.request("2025-03-01T13:00")
    plan = world.step()
    assert [j["metadata"]["name"] for j in plan.create] == ["cifar-run-2"]
    assert [e.reason for e in plan.events] == ["RunStarted"]
    assert world.status["lastRunRequest"] == "2025-03-01T13:00" and world.status["runs"] == 2
    assert world.status["active"][0]["trigger"] == "on request"
    world.finish("cifar-run-2", report(8))
    world.step()
    for _ in range(3):  # the same value again, even after the run ended: nothing
        plan = world.step()
        assert plan.create == [] and plan.started == [] and plan.status is None
    assert world.status["runs"] == 2
    world.request("another")
    world.step()
    assert world.status["runs"] == 3 and world.created[-1] == "cifar-run-3"


# --- 7. concurrency policies ------------------------------------------------------------------


def test_forbid_keeps_the_request_pending_until_the_run_in_flight_is_recorded() -> None:
    """Forbid: no second run while one is in flight; the request starts once it is recorded."""
    world = World(concurrencyPolicy="Forbid")
    world.step()
    world.step()  # the Job is seen
    world.request("a")
    for _ in range(2):
        plan = world.step()
        assert plan.create == [] and plan.started == []
        assert "lastRunRequest" not in world.status and world.status["runs"] == 1
    world.finish("cifar-run-1", report(DEFAULT))
    plan = world.step()
    assert [f.run for f in plan.finished] == [1]
    assert [j["metadata"]["name"] for j in plan.create] == ["cifar-run-2"]
    assert world.status["lastRunRequest"] == "a" and world.status["runs"] == 2
    assert [a["run"] for a in world.status["active"]] == [2]


class SpyPolicy(KwattPolicy):
    """The kwatt policy, remembering what `choose` was told was in flight."""

    def __init__(self) -> None:
        super().__init__()
        self.in_flight: list[list[int]] = []

    def choose(self, state: State, in_flight: Sequence[int] = ()) -> tuple[Choice, State]:
        self.in_flight.append(list(in_flight))
        return super().choose(state, in_flight)


def test_allow_runs_concurrently_and_tells_the_policy_what_is_in_flight() -> None:
    """Allow: run 2 starts while run 1 runs; both are tracked; choose saw run 1's size."""
    status, first = started_once()
    spy = SpyPolicy()
    tj = trainingjob(status, request="a", concurrencyPolicy="Allow")
    plan = reconcile(tj, [running(first.create[0])], {}, T0, SETTINGS, policy=spy)
    assert spy.in_flight == [[DEFAULT]]
    assert plan.status is not None and plan.delete == []
    assert [(a["run"], a["job"]) for a in plan.status["active"]] == [
        (1, "cifar-run-1"),
        (2, "cifar-run-2"),
    ]
    assert [j["metadata"]["name"] for j in plan.create] == ["cifar-run-2"]
    assert plan.status["runs"] == 2 and plan.status["lastRunRequest"] == "a"
    # Both are recorded, each once, when they end (in either order).
    status = status_json(plan.status)
    job2 = running(plan.create[0])
    jobs = [running(first.create[0]), finished(job2)]
    pods = pods_with("cifar-run-2", report(plan.status["active"][1]["batchSize"], energy=900.0))
    plan = reconcile(
        trainingjob(status, request="a", concurrencyPolicy="Allow"), jobs, pods, T0, SETTINGS
    )
    assert plan.status is not None
    assert [a["run"] for a in plan.status["active"]] == [1]
    assert [h["run"] for h in plan.status["history"]] == [2]
    assert plan.create == [] and plan.delete == []


def test_replace_deletes_the_run_in_flight_and_records_it_as_replaced() -> None:
    """Replace: the old Job is deleted and recorded as replaced (not fed), the new run starts."""
    world = World(concurrencyPolicy="Replace")
    world.step()
    world.step()
    world.request("a")
    plan = world.step()
    assert plan.delete == ["cifar-run-1"]
    assert [j["metadata"]["name"] for j in plan.create] == ["cifar-run-2"]
    (item,) = world.status["history"]
    assert item["run"] == 1 and item["result"] == "replaced" and item["note"]
    assert [a["run"] for a in world.status["active"]] == [2]
    assert world.status["policy"]["limits"] == {}  # not fed
    assert world.status["recordedRuns"] == 1 and world.status["totals"]["runs"] == 1
    assert sorted(world.jobs) == ["cifar-run-2"]


def test_replace_never_creates_the_job_of_the_run_it_replaces() -> None:
    """Run 1's Job was never created (the shell died after the status write) when a request
    under Replace arrives: run 1 is replaced, and its Job must not be created after all."""
    world = World(concurrencyPolicy="Replace")
    world.step(act=False)  # status written with run 1 in flight, no Job
    world.request("a")
    plan = world.step()
    assert [j["metadata"]["name"] for j in plan.create] == ["cifar-run-2"]
    assert sorted(world.jobs) == ["cifar-run-2"]
    assert [h["result"] for h in world.status["history"]] == ["replaced"]


def test_replace_retries_the_delete_when_the_shell_died_before_it() -> None:
    """Status written (run 1 replaced), delete not sent: a later pass deletes the old Job."""
    world = World(concurrencyPolicy="Replace")
    world.step()
    world.step()
    world.request("a")
    world.step(act=False)
    world.step()  # creates run 2's Job; run 1's Job must go too
    assert "cifar-run-1" not in world.jobs, "a replaced run kept running"
    assert sorted(world.jobs) == ["cifar-run-2"]
    assert [h["run"] for h in world.status["history"]] == [1]


# --- 8. suspend ----------------------------------------------------------------------------------


def test_suspend_holds_new_runs_but_records_the_one_in_flight() -> None:
    """spec.suspend: requests stay pending, Suspended True; a run in flight is still recorded."""
    world = World()
    world.step()
    world.step()
    world.spec["suspend"] = True
    world.finish("cifar-run-1", report(DEFAULT, energy=1234.0))
    world.request("a")
    plan = world.step()
    assert [f.run for f in plan.finished] == [1] and plan.create == []
    assert world.status["recordedRuns"] == 1 and world.status["totals"]["energyJoules"] == 1234.0
    assert world.status["runs"] == 1 and "lastRunRequest" not in world.status
    assert world.status["state"] == "Suspended"
    assert conditions(world.status)["Suspended"]["status"] == "True"
    assert world.step().create == []
    world.spec["suspend"] = False  # resumed: the pending request starts now
    plan = world.step()
    assert [j["metadata"]["name"] for j in plan.create] == ["cifar-run-2"]
    assert world.status["lastRunRequest"] == "a"
    assert conditions(world.status)["Suspended"]["status"] == "False"


def test_created_suspended_starts_nothing_until_resumed() -> None:
    """A TrainingJob created suspended runs nothing on create until it is resumed."""
    plan = reconcile(trainingjob(suspend=True), [], {}, T0, SETTINGS)
    assert plan.status is not None and plan.create == []
    assert not plan.status.get("runs") and plan.status["state"] == "Suspended"
    resumed = reconcile(trainingjob(status_json(plan.status)), [], {}, T0, SETTINGS)
    assert [j["metadata"]["name"] for j in resumed.create] == ["cifar-run-1"]


# --- 9. invalid specs -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"batchSizes": {"candidates": [8, 16], "default": 64}}, "spec.batchSizes.default"),
        (
            {"template": {"spec": {"containers": []}}},
            "spec.template.spec.containers",
        ),
        ({"target": {"metric": "accuracy"}}, "spec.target.value"),
        (
            {
                "template": {
                    "spec": {
                        "containers": [{"name": "train", "image": "x"}],
                        "volumes": [{"name": "kwatt-state", "emptyDir": {}}],
                    }
                }
            },
            "spec.template.spec.volumes",
        ),
    ],
)
def test_invalid_spec_is_a_condition_not_a_job(spec: Obj, field: str) -> None:
    """Ready False/InvalidSpec naming the field, no Jobs; a second pass changes nothing."""
    plan = reconcile(trainingjob(generation=2, **spec), [], {}, T0, SETTINGS)
    assert plan.create == [] and plan.delete == [] and plan.started == []
    assert plan.status is not None
    ready = conditions(plan.status)["Ready"]
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    assert field in ready["message"] and ready["observedGeneration"] == 2
    assert plan.status["observedGeneration"] == 2
    assert not plan.status.get("active") and not plan.status.get("runs")
    assert [(e.type, e.reason) for e in plan.events] == [("Warning", "InvalidSpec")]
    again = reconcile(
        trainingjob(status_json(plan.status), generation=2, **spec),
        [],
        {},
        T0 + timedelta(minutes=3),
        SETTINGS,
    )
    assert again.status is None and again.create == [] and again.events == []


def test_fixed_spec_becomes_ready_and_starts() -> None:
    """Once the spec is fixed, Ready turns True for the new generation and run 1 starts."""
    bad = reconcile(
        trainingjob(batchSizes={"candidates": [8], "default": 16}), [], {}, T0, SETTINGS
    )
    assert bad.status is not None
    good = reconcile(trainingjob(status_json(bad.status), generation=2), [], {}, T0, SETTINGS)
    assert good.status is not None
    ready = conditions(good.status)["Ready"]
    assert (ready["status"], ready["observedGeneration"]) == ("True", 2)
    assert [j["metadata"]["name"] for j in good.create] == ["cifar-run-1"]


# --- 10. policy state and spec edits ----------------------------------------------------------


def learned_status() -> Obj:
    world = World()
    world.step()
    world.finish("cifar-run-1", report(DEFAULT, limit=180))
    world.step()
    assert world.status["policy"]["limits"] == {"16": 180}
    return world.status


def test_changed_candidates_reset_the_policy_with_an_event() -> None:
    """New candidates: a fresh policy state and a PolicyReset event; the next run uses it."""
    status = learned_status()
    sizes = {"candidates": [16, 32, 64], "default": 16}
    plan = reconcile(
        trainingjob(status, request="a", generation=2, batchSizes=sizes), [], {}, T0, SETTINGS
    )
    assert plan.status is not None
    assert "PolicyReset" in [e.reason for e in plan.events]
    state = plan.status["policy"]
    assert state["space"]["batch_sizes"] == [16, 32, 64]
    assert state == fresh_policy((16, 32, 64), 16)
    (entry,) = plan.status["active"]
    assert entry["powerLimitWatts"] is None  # the cache went with the old state


@pytest.mark.parametrize(
    "edit",
    [{}, {"objective": {"eta": 0.9}}, {"historyLimit": 5}, {"backoffLimit": 2}],
)
def test_other_spec_edits_keep_the_policy_state(edit: Obj) -> None:
    """A spec that leaves the search space alone keeps what the policy learned."""
    status = learned_status()
    plan = reconcile(trainingjob(status, generation=2, **edit), [], {}, T0, SETTINGS)
    assert "PolicyReset" not in [e.reason for e in plan.events]
    new = status if plan.status is None else plan.status
    assert new["policy"] == status["policy"]


def test_run_of_a_removed_batch_size_is_still_recorded() -> None:
    """Candidates edited while a run of a size now removed is in flight: when it ends it is
    recorded (history, totals), though the reset policy cannot learn from it."""
    world = World()
    world.step()
    world.finish("cifar-run-1", report(DEFAULT))
    world.request("a")
    world.step()  # run 2 in flight, at the walk's next size
    job2 = world.active_job()
    bs = world.status["active"][0]["batchSize"]
    world.step()
    world.spec["batchSizes"] = {"candidates": [s for s in (16, 32, 64) if s != bs], "default": 16}
    world.finish(job2, report(bs, energy=777.0))
    plan = world.step()
    assert [f.run for f in plan.finished] == [2]
    assert world.status["recordedRuns"] == 2 and world.status["active"] == []
    assert world.status["history"][-1]["batchSize"] == bs
    assert world.status["totals"]["energyJoules"] == 5000.0 + 777.0
    assert str(bs) not in world.status["policy"]["limits"]


def test_unbuilt_run_of_a_removed_batch_size_does_not_wedge_the_trainingjob() -> None:
    """Run written, Job never created, then its size removed from the candidates: the pass
    must not fail forever; the run is recorded without a report and no Job is created."""
    world = World()
    world.step()
    world.finish("cifar-run-1", report(DEFAULT))
    world.request("a")
    world.step(act=False)  # run 2 written, its Job not created
    bs = world.status["active"][0]["batchSize"]
    assert bs != DEFAULT
    world.spec["batchSizes"] = {"candidates": [16, 64], "default": 16}
    plan = world.step()
    assert all(trainer_batch(j) in (16, 64) for j in plan.create)
    assert world.status["active"] == [] and world.status["recordedRuns"] == 2
    assert world.status["history"][-1]["result"] == "noreport"
    assert world.status["history"][-1]["note"]


# --- 11. bounded history and old Jobs --------------------------------------------------------


def test_history_is_bounded_and_old_jobs_are_deleted_but_never_an_active_one() -> None:
    """historyLimit entries are kept; the Jobs of runs that fell out are deleted."""
    world = World(historyLimit=2, concurrencyPolicy="Allow")
    world.step()
    for n in range(1, 4):
        world.finish(f"cifar-run-{n}", report(world.status["active"][0]["batchSize"]))
        world.request(str(n))
        world.step()
    # Runs 1-3 recorded, run 4 in flight; run 1's Job fell out of history.
    assert [h["run"] for h in world.status["history"]] == [2, 3]
    assert world.status["recordedRuns"] == 3 and world.status["totals"]["runs"] == 3
    assert sorted(world.jobs) == ["cifar-run-2", "cifar-run-3", "cifar-run-4"]
    # Run 5 starts alongside run 4 (Allow) and ends first: history trims to [3, 5], which
    # drops run 2's Job; run 4, older than every kept entry but in flight, keeps its Job.
    world.request("x")
    world.step()
    assert [a["run"] for a in world.status["active"]] == [4, 5]
    world.finish("cifar-run-5", report(world.status["active"][1]["batchSize"]))
    plan = world.step()
    assert [h["run"] for h in world.status["history"]] == [3, 5]
    assert plan.delete == ["cifar-run-2"]
    assert sorted(world.jobs) == ["cifar-run-3", "cifar-run-4", "cifar-run-5"]
    assert [a["run"] for a in world.status["active"]] == [4]


def test_history_limit_zero_keeps_no_history() -> None:
    """historyLimit 0 (the CRD's minimum) keeps no entries, so history cannot grow."""
    world = World(historyLimit=0)
    world.step()
    for n in range(1, 4):
        world.finish(f"cifar-run-{n}", report(world.status["active"][0]["batchSize"]))
        world.request(str(n))
        world.step()
    assert world.status["history"] == [] and world.status["recordedRuns"] == 3
    assert sorted(world.jobs) == ["cifar-run-4"]


def test_jobs_newer_than_the_status_read_are_never_deleted() -> None:
    """A stale read (runs=1) next to Jobs listed after it (run 2's): the Jobs are the truth
    about runs in flight, so run 2's Job is not deleted as if it fell out of history."""
    world = World(concurrencyPolicy="Forbid")
    world.step()
    world.finish("cifar-run-1", report(DEFAULT))
    world.step()
    stale = world.tj()
    world.request("a")
    world.step()  # another pass (another replica) starts run 2 and creates its Job
    plan = reconcile(stale, list(world.jobs.values()), world.pods, world.now, SETTINGS)
    assert plan.status is None  # nothing new from the stale view, so no write to fail...
    assert "cifar-run-2" not in plan.delete  # ...and the new run's Job survives


# --- 12. 1,000 recurrences ------------------------------------------------------------------


def test_status_stays_bounded_over_a_thousand_recurrences() -> None:
    """1,000 runs through reconcile: status JSON under 64 KiB, totals = sum of reports."""
    world = World()
    world.step()
    rng = random.Random(7)
    energy = seconds = 0.0
    results = ("reached",) * 8 + ("stopped", "exhausted")
    for n in range(1, 1001):
        (entry,) = world.status["active"]
        assert entry["run"] == n
        bs = int(entry["batchSize"])
        rep = report(
            bs,
            rng.choice(results),
            energy=round(rng.uniform(800.0, 1200.0) * bs / 16, 3),
            seconds=round(rng.uniform(50.0, 70.0), 3),
            epochs=rng.randint(5, 15),
            limit=entry["powerLimitWatts"] or 150 + bs,
            profiled=entry["powerLimitWatts"] is None,
        )
        energy += rep.energy_j
        seconds += rep.time_s
        world.finish(str(entry["job"]), rep)
        world.request(f"r{n}")
        world.step()
    status = world.status
    size = len(json.dumps(status, separators=(",", ":")).encode())
    print(f"status after 1,000 recurrences: {size} bytes")
    assert size < 64 * 1024
    assert status["recordedRuns"] == 1000 and status["runs"] == 1001
    assert len(status["history"]) == DEFAULT_HISTORY_LIMIT
    assert status["totals"]["runs"] == 1000
    assert status["totals"]["energyJoules"] == pytest.approx(energy, rel=1e-9)
    assert status["totals"]["seconds"] == pytest.approx(seconds, rel=1e-9)
    # Only the Jobs of the kept history and the run in flight remain.
    assert len(world.jobs) == DEFAULT_HISTORY_LIMIT + 1


# --- 13. savings ----------------------------------------------------------------------------


class ScriptedPolicy(KwattPolicy):
    """The kwatt policy, except that `choose` runs the batch sizes it is given, in order."""

    def __init__(self, sizes: Sequence[int]) -> None:
        super().__init__()
        self.sizes = list(sizes)

    def choose(self, state: State, in_flight: Sequence[int] = ()) -> tuple[Choice, State]:
        bs = self.sizes.pop(0)
        return Choice(bs, state["limits"].get(str(bs)), None, "explore"), state


def test_savings_are_measured_against_runs_of_the_default_configuration() -> None:
    """The default configuration is the default batch size at the GPU's highest limit.
    Runs that ran it (observe mode here) are its measured cost: savings.energyPercent =
    100 (1 - mean(every reached run) / mean(reached default-configuration runs)), basis
    measured; nothing before such a run has reached the target."""
    runs = [
        (8, "reached", 700.0),  # not the default: no savings yet
        (32, "stopped", 3000.0),  # did not reach: not counted
        (16, "failed", 400.0),  # the default, but did not reach
        (16, "reached", 1000.0),
        (8, "reached", 650.0),
        (16, "reached", 1100.0),
        (32, "reached", 900.0),
    ]
    world = World(policy=ScriptedPolicy([bs for bs, _, _ in runs] + [16]))
    world.step()
    reached: list[tuple[int, float]] = []
    for n, (bs, result, joules) in enumerate(runs, start=1):
        (entry,) = world.status["active"]
        assert (entry["job"], entry["batchSize"]) == (f"cifar-run-{n}", bs)
        observed = dataclasses.replace(
            report(bs, result, energy=joules, seconds=joules / 10, limit=None, profiled=False),
            mode="observe",
        )
        world.finish(str(entry["job"]), observed)
        world.request(str(n))
        plan = world.step()
        assert [f.run for f in plan.finished] == [n]
        if result == "reached":
            reached.append((bs, joules))
        defaults = [e for b, e in reached if b == DEFAULT]
        if not defaults:
            assert "savings" not in world.status, n
            continue
        mean_all = sum(e for _, e in reached) / len(reached)
        mean_default = sum(defaults) / len(defaults)
        savings = world.status["savings"]
        assert savings["basis"] == "measured"
        assert savings["energyPercent"] == pytest.approx(
            100.0 * (1.0 - mean_all / mean_default), abs=0.006
        )
    # (700 + 1000 + 650 + 1100 + 900) / 5 = 870 against (1000 + 1100) / 2 = 1050: 17.14 %.
    assert world.status["savings"]["energyPercent"] == pytest.approx(17.14, abs=0.006)


def test_savings_are_estimated_from_a_default_size_runs_own_profile() -> None:
    """When kwatt never ran the default configuration (it profiled the default batch size
    and kept 175 W), the run's own profile estimates it: per step, 250 W cost 0.5 J in
    0.1 s and 175 W 0.4 J in 0.125 s, so the 4,000 J / 1,000 s run would have cost
    5,000 J / 800 s at 250 W; every later run counts against that, basis estimated."""
    profile = (
        ProfilePoint(250, 20.0, 4.0, 40),  # 0.5 J and 0.1 s a step
        ProfilePoint(175, 16.0, 5.0, 40),  # 0.4 J and 0.125 s a step
    )
    world = World(policy=ScriptedPolicy([DEFAULT, 8, 16]))
    world.step()
    first = dataclasses.replace(
        report(DEFAULT, energy=4000.0, seconds=1000.0, limit=175), profile=profile
    )
    world.finish("cifar-run-1", first)
    world.request("1")
    world.step()
    savings = world.status["savings"]
    assert savings["basis"] == "estimated"
    assert savings["energyPercent"] == pytest.approx(100.0 * (1 - 4000.0 / 5000.0))  # 20 %
    assert savings["timePercent"] == pytest.approx(100.0 * (1 - 1000.0 / 800.0))  # -25 %
    world.finish("cifar-run-2", report(8, energy=3000.0, seconds=900.0, limit=150))
    world.request("2")
    world.step()
    savings = world.status["savings"]
    assert savings["energyPercent"] == pytest.approx(100.0 * (1 - 3500.0 / 5000.0))  # 30 %
    assert savings["timePercent"] == pytest.approx(100.0 * (1 - 950.0 / 800.0))


def test_a_run_that_kept_the_admins_cap_measured_the_default_configuration() -> None:
    """On a GPU an admin capped at 200 W (250 W maximum) the job ran at 200 W before kwatt,
    so the default configuration is the default batch size at 200 W (the report's
    start_limit_w). A default-size run that kept 200 W (from the cache: no profile) measured
    it: 4,000 J and 1,000 s, basis measured; a later 3,000 J / 900 s run saves
    1 - 3,500 / 4,000 = 12.5 % energy and 1 - 950 / 1,000 = 5 % time."""
    capped = {"min_limit_w": 100, "max_limit_w": 250, "start_limit_w": 200}
    world = World(policy=ScriptedPolicy([DEFAULT, 8, 16]))
    world.step()
    first = report(DEFAULT, energy=4000.0, seconds=1000.0, limit=200, profiled=False)
    world.finish("cifar-run-1", dataclasses.replace(first, **capped))
    world.request("1")
    world.step()
    assert world.status["savings"]["basis"] == "measured"
    assert world.status["baseline"]["default"]["runs"] == 1
    second = dataclasses.replace(report(8, energy=3000.0, seconds=900.0, limit=150), **capped)
    world.finish("cifar-run-2", second)
    world.request("2")
    world.step()
    savings = world.status["savings"]
    assert savings["energyPercent"] == pytest.approx(12.5)
    assert savings["timePercent"] == pytest.approx(5.0)


def test_a_finished_run_carries_its_profiling_cost_for_the_metrics() -> None:
    """The windows' energy and time, and what they cost beyond the same steps at the kept
    limit (175 W: 0.4 J and 0.125 s a step): 250 W used 4 J more and 1 s less, 150 W 2 J
    and 2 s more, so 6 J and 1 s of overhead."""
    profile = (
        ProfilePoint(250, 20.0, 4.0, 40),
        ProfilePoint(175, 16.0, 5.0, 40),
        ProfilePoint(150, 18.0, 7.0, 40),
    )
    world = World(policy=ScriptedPolicy([DEFAULT, 8]))
    world.step()
    world.finish("cifar-run-1", dataclasses.replace(report(DEFAULT, limit=175), profile=profile))
    plan = world.step()
    (run,) = plan.finished
    assert run.profiling.energy_j == pytest.approx(54.0)
    assert run.profiling.seconds == pytest.approx(16.0)
    assert run.profiling.extra_energy_j == pytest.approx(6.0)
    assert run.profiling.extra_seconds == pytest.approx(1.0)


def test_profiling_cost_without_a_usable_profile() -> None:
    assert profiling_cost(None) == ProfilingCost()
    assert profiling_cost(report(DEFAULT)) == ProfilingCost()  # a cached limit: no profile
    # The kept limit is not among the points (a thinned report): the windows, no overhead.
    points = (ProfilePoint(250, 20.0, 4.0, 40), ProfilePoint(150, 18.0, 7.0, 40))
    thinned = dataclasses.replace(report(DEFAULT, limit=175), profile=points)
    assert profiling_cost(thinned) == ProfilingCost(38.0, 11.0)
    # Keeping the cheapest window's limit never gives a negative overhead.
    kept_high = dataclasses.replace(report(DEFAULT, limit=250), profile=points[:1])
    assert profiling_cost(kept_high) == ProfilingCost(20.0, 4.0, 0.0, 0.0)


# --- 14. a crash anywhere -------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("policy", ["Forbid", "Allow", "Replace"])
def test_passes_cut_short_anywhere_record_every_run_exactly_once(seed: int, policy: str) -> None:
    """Random crashes before or after the status write, runs ending at random: every run
    started is recorded exactly once, its Job was created at most once, totals add up."""
    rng = random.Random(seed)
    world = World(concurrencyPolicy=policy, historyLimit=100)
    energy: dict[int, float] = {}
    for i in range(150):
        if rng.random() < 0.15:
            world.request(f"q{i}")
        for name, job in list(world.jobs.items()):
            if job.get("status", {}).get("conditions") or rng.random() > 0.3:
                continue
            run = int(job["metadata"]["labels"]["kwatt.dev/run"])
            choice = choice_of_job(job)
            assert choice is not None
            energy[run] = float(100 + run)
            world.finish(name, report(choice.batch_size, energy=energy[run]))
        crash = rng.random()
        world.step(write=crash > 0.15, act=crash > 0.3)
        if crash > 0.3:  # after a whole pass, nothing runs that the status does not track
            tracked = {a["job"] for a in world.status["active"]}
            for name, job in world.jobs.items():
                assert job["status"].get("conditions") or name in tracked, (i, name)
    world.request("last")
    for _ in range(3):  # settle: finish what runs, with no more crashes
        for name, job in list(world.jobs.items()):
            if not job.get("status", {}).get("conditions"):
                run = int(job["metadata"]["labels"]["kwatt.dev/run"])
                choice = choice_of_job(job)
                assert choice is not None
                energy[run] = float(100 + run)
                world.finish(name, report(choice.batch_size, energy=energy[run]))
        world.step()
        world.step()
    status = world.status
    assert len(world.created) == len(set(world.created)), "a Job was created twice"
    assert status["active"] == []
    history = status["history"]
    recorded = [h["run"] for h in history]
    assert len(recorded) == len(set(recorded)), "a run was recorded twice"
    assert status["recordedRuns"] == len(history) == status["totals"]["runs"]
    assert set(recorded) | {a["run"] for a in status["active"]} == set(range(1, status["runs"] + 1))
    counted = sum(energy[h["run"]] for h in history if h["result"] not in ("replaced",))
    assert status["totals"]["energyJoules"] == pytest.approx(counted)
    assert all(h["result"] != "deleted" for h in history), "no Job was deleted by hand"
    for h in history:  # each recorded run that ran to its end was fed with its own report
        if h["result"] == "reached":
            assert h["energyJoules"] == energy[h["run"]]


# --- 13. the GPUs' power range, from the reports: status.gpu ----------------------------------

V100 = "Tesla V100-SXM2-32GB"  # report()'s GPU


def _gpu(low: int, high: int, count: int = 1) -> Obj:
    return {"model": V100, "count": count, "minLimitWatts": low, "maxLimitWatts": high}


@pytest.mark.parametrize(
    ("runs", "gpu", "space_max"),
    [
        # Each run: (the report's result, or None for a run without a report, and its range).
        ([("reached", (100, 250, 1))], _gpu(100, 250), 250),
        ([("reached", (150, 300, 4))], _gpu(150, 300, 4), 300),
        # The range describes the hardware: a failed or interrupted run's report teaches it too.
        ([("failed", (100, 250, 1))], _gpu(100, 250), 250),
        ([("interrupted", (100, 250, 1))], _gpu(100, 250), 250),
        # Nothing known yet: an old sidecar's report (no range), or no report at all.
        ([("reached", None)], None, 0),
        ([(None, None)], None, 0),
        # What is known stays when later reports say nothing of it.
        ([("reached", (100, 250, 1)), ("reached", None), (None, None)], _gpu(100, 250), 250),
        ([("reached", None), ("stopped", (100, 250, 1))], _gpu(100, 250), 250),
        # The latest report with a range is status.gpu; the space's maximum, once it is no
        # longer the placeholder, is left to the policy.
        ([("reached", (100, 250, 1)), ("exhausted", (150, 300, 2))], _gpu(150, 300, 2), 250),
    ],
)
def test_status_gpu_records_the_latest_reported_power_range(
    runs: list[tuple[str | None, tuple[int, int, int] | None]], gpu: Obj | None, space_max: int
) -> None:
    world = World()
    for i, (result, limits) in enumerate(runs, start=1):
        if i > 1:
            world.request(f"r{i}")
        world.step()
        (entry,) = world.status["active"]
        rep: Report | None = None
        if result is not None:
            rep = report(int(entry["batchSize"]), result=result)
            if limits is not None:
                low, high, count = limits
                rep = dataclasses.replace(rep, min_limit_w=low, max_limit_w=high, gpu_count=count)
        world.finish(str(entry["job"]), rep, "Complete" if rep is not None else "Failed")
        world.step()
    assert world.status["recordedRuns"] == len(runs) and world.status["active"] == []
    assert world.status.get("gpu") == gpu
    assert world.status["policy"]["space"]["max_limit_w"] == space_max
    if gpu is not None:  # fields the CRD's status schema has: the API server keeps them
        schema = crd.openapi_schema()["properties"]["status"]["properties"]["gpu"]["properties"]
        assert set(gpu) <= set(schema)
        assert {k: type(v).__name__ for k, v in gpu.items()} == {
            k: {"string": "str", "integer": "int"}[schema[k]["type"]] for k in gpu
        }


def test_the_default_policy_runs_at_the_reported_maximum_limit() -> None:
    """DefaultPolicy runs the default batch size at the space's maximum limit: unknown (the
    placeholder 0) for run 1, the GPUs' reported maximum from run 2 on, and across a reset."""
    policy = DefaultPolicy()
    first = reconcile(trainingjob(), [], {}, T0, SETTINGS, policy=policy)
    assert first.status is not None
    assert first.status["policy"]["space"]["max_limit_w"] == 0
    status = status_json(first.status)
    rep = dataclasses.replace(report(DEFAULT), min_limit_w=100, max_limit_w=250)
    done = reconcile(
        trainingjob(status, request="again"),
        [finished(first.create[0])],
        pods_with("cifar-run-1", rep),
        T0 + timedelta(hours=1),
        SETTINGS,
        policy=policy,
    )
    assert done.status is not None
    assert done.status["gpu"] == _gpu(100, 250)
    assert done.status["policy"]["space"]["max_limit_w"] == 250
    (entry,) = done.status["active"]
    assert (entry["run"], entry["batchSize"], entry["powerLimitWatts"]) == (2, DEFAULT, 250)
    (job,) = done.create
    sidecar = job["spec"]["template"]["spec"]["initContainers"][-1]
    assert {"name": "KWATT_CACHED_LIMIT_W", "value": "250"} in sidecar["env"]
    # New candidates reset the policy; the GPUs are the same, so their maximum is kept.
    sizes = {"candidates": [16, 64], "default": 16}
    reset = reconcile(
        trainingjob(status_json(done.status), generation=2, batchSizes=sizes),
        [],
        {},
        T0 + timedelta(hours=2),
        SETTINGS,
        policy=policy,
    )
    assert reset.status is not None and "PolicyReset" in [e.reason for e in reset.events]
    assert reset.status["policy"]["space"]["max_limit_w"] == 250


def test_schedule_starts_the_due_run_once_and_says_when_to_look_again() -> None:
    """spec.schedule, CronJob's way: at 10:15 an every-15-minutes TrainingJob created at
    10:01 whose first run is recorded starts one run for 10:15, remembers 10:15 as the last
    scheduled time, starts nothing more at 10:20, and asks to be looked at again at 10:30."""
    from datetime import UTC, datetime

    from kwatt_operator.jobs import SidecarSettings
    from kwatt_operator.reconcile import reconcile

    created = datetime(2026, 3, 2, 10, 1, tzinfo=UTC)
    tj: dict[str, Any] = {
        "apiVersion": "kwatt.dev/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {
            "name": "nightly",
            "namespace": "ml",
            "uid": "u-sched",
            "generation": 1,
            "resourceVersion": "1",
            "creationTimestamp": "2026-03-02T10:01:00Z",
        },
        "spec": {
            "template": {"spec": {"containers": [{"name": "train", "image": "t:1"}]}},
            "batchSizes": {"candidates": [8, 16], "default": 16},
            "target": {"metric": "accuracy", "value": 0.5},
            "schedule": "*/15 * * * *",
        },
    }
    settings = SidecarSettings(image="sidecar:1")
    first = reconcile(tj, [], {}, created, settings)  # run 1, on create
    assert first.status is not None
    status = {**first.status, "active": []}  # run 1 recorded meanwhile (not this test's point)
    at_1015 = reconcile(
        {**tj, "status": status}, [], {}, datetime(2026, 3, 2, 10, 15, 5, tzinfo=UTC), settings
    )
    assert at_1015.status is not None and at_1015.status["runs"] == 2
    assert at_1015.status["active"][0]["trigger"] == "on schedule"
    assert at_1015.status["lastScheduleTime"] == "2026-03-02T10:15:00Z"
    assert at_1015.requeue_after_s == pytest.approx(14 * 60 + 55)
    later = {**at_1015.status, "active": []}
    at_1020 = reconcile(
        {**tj, "status": later}, [], {}, datetime(2026, 3, 2, 10, 20, tzinfo=UTC), settings
    )
    assert at_1020.create == [] and (at_1020.status or later)["runs"] == 2
    assert at_1020.requeue_after_s == pytest.approx(10 * 60)


class ScheduledWorld(World):
    """A World whose TrainingJob was created at T0, as the API server would stamp it."""

    def tj(self) -> Obj:
        tj = super().tj()
        tj["metadata"]["creationTimestamp"] = T0.strftime("%Y-%m-%dT%H:%M:%SZ")
        return tj


def test_too_many_missed_runs_is_one_warning_when_the_latest_starts() -> None:
    """An every-minute TrainingJob whose first run (Forbid) holds the schedule for three
    hours has missed about 180 times, more than CronJob's 100: while the run is in flight
    nothing starts and nothing is said on every pass; when it is recorded the latest time
    starts with one TooManyMissedRuns warning, and the passes after it repeat none."""
    world = ScheduledWorld(schedule="* * * * *", concurrencyPolicy="Forbid")
    world.step()  # run 1, on create
    world.now = T0 + timedelta(hours=3)
    held = [world.step() for _ in range(3)]
    assert all(p.create == [] and p.events == [] for p in held)
    world.finish("cifar-run-1", report(DEFAULT))
    starts = world.step()
    assert [j["metadata"]["name"] for j in starts.create] == ["cifar-run-2"]
    assert world.status["active"][0]["trigger"] == "on schedule"
    warnings = [e for e in starts.events if e.reason == "TooManyMissedRuns"]
    assert len(warnings) == 1 and warnings[0].type == "Warning"
    assert "startingDeadlineSeconds" in warnings[0].message
    after = [world.step() for _ in range(3)]
    assert all(e.reason != "TooManyMissedRuns" for p in after for e in p.events)


def test_ttl_deletes_a_recorded_runs_job_only_after_its_time() -> None:
    """ttlSecondsAfterFinished is applied to recorded runs only, counted from the Job's
    completion: kept before (and the pass asks to look again when it expires), deleted after;
    an unrecorded finished Job is never deleted by it."""
    from datetime import UTC, datetime

    from kwatt_operator.jobs import SidecarSettings
    from kwatt_operator.reconcile import reconcile

    settings = SidecarSettings(image="sidecar:1")
    tj: dict[str, Any] = {
        "apiVersion": "kwatt.dev/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": "t", "namespace": "ml", "uid": "u-ttl", "generation": 1},
        "spec": {
            "template": {"spec": {"containers": [{"name": "train", "image": "t:1"}]}},
            "batchSizes": {"candidates": [8, 16], "default": 16},
            "target": {"metric": "accuracy", "value": 0.5},
            "ttlSecondsAfterFinished": 600,
        },
    }
    start = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
    plan = reconcile(tj, [], {}, start, settings)
    assert plan.status is not None
    job = plan.create[0]
    done = {
        **job,
        "status": {
            "completionTime": "2026-03-02T10:05:00Z",
            "conditions": [{"type": "Complete", "status": "True"}],
        },
    }
    # The pass that records run 1 (no report: noreport) keeps its Job for 10 minutes.
    at_1006 = reconcile(
        {**tj, "status": plan.status}, [done], {}, datetime(2026, 3, 2, 10, 6, tzinfo=UTC), settings
    )
    assert at_1006.status is not None and at_1006.status["recordedRuns"] == 1
    assert at_1006.delete == []
    assert at_1006.requeue_after_s == pytest.approx(9 * 60)
    at_1016 = reconcile(
        {**tj, "status": at_1006.status},
        [done],
        {},
        datetime(2026, 3, 2, 10, 16, tzinfo=UTC),
        settings,
    )
    assert at_1016.delete == [job["metadata"]["name"]]


def test_a_job_suspended_again_by_a_queue_is_an_interrupted_run_not_a_failure() -> None:
    """Kueue suspends a Job (spec.suspend, condition Suspended) when it takes its quota
    back: the Job has not ended, so the run stays in flight, nothing is recorded and the
    policy learns nothing; resumed later, it ends and is recorded once."""
    world = World()
    world.step()
    name = world.active_job()
    world.step()  # the Job is seen
    suspended = copy.deepcopy(world.jobs[name])
    suspended["spec"]["suspend"] = True
    suspended["status"] = {
        "conditions": [{"type": "Suspended", "status": "True", "reason": "JobSuspended"}]
    }
    world.jobs[name] = suspended
    policy_before = copy.deepcopy(world.status["policy"])
    for _ in range(3):
        world.step()
    assert [a["job"] for a in world.status["active"]] == [name]
    assert world.status.get("recordedRuns", 0) == 0 and "history" not in world.status
    assert "LastRun" not in {c["type"] for c in world.status["conditions"]}
    assert world.status["policy"] == policy_before
    world.finish(name, report(16))
    world.step()
    assert world.status["recordedRuns"] == 1 and world.status["history"][0]["result"] == "reached"
