"""The operator under faults, on the sandbox: `kwatt operator` (the real command, as its
ServiceAccount) SIGKILLed at each step of a run and started again, API errors, 409s,
dropped and expired watches through the fault proxy, a spec only kwatt can reject, Pods
and Jobs deleted by hand mid-run, a node lost mid-run (on a sandbox of its own), and a
TrainingJob deleted while the operator is down.

Every assertion reads the TrainingJob and its Jobs straight from the API server (never
through the proxy): each run has exactly one Job and is recorded exactly once.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from operator_support import (
    Operator,
    condition,
    create,
    jobs_of,
    pods_of,
    request_run,
    running_operator,
    status_of,
    trainingjob,
)

from kwatt_operator.reconcile import job_finished
from kwatt_sandbox.testing import Cluster, FaultsClient, eventually, running_sandbox

RUN_S = 60.0  # the longest a run may take to be recorded on a busy machine
SLOW = 0.002  # a trainer time scale whose runs last long enough to act on mid-run
ARGS = "/spec/template/spec/containers/0/args"  # the trainer's; [5] is its time scale


@pytest.fixture
def faults(sandbox: Cluster) -> FaultsClient:
    assert sandbox.faults is not None
    return sandbox.faults


def job_named(cluster: Cluster, namespace: str, name: str) -> dict[str, Any] | None:
    return next((j for j in jobs_of(cluster, namespace) if j["metadata"]["name"] == name), None)


def recorded(op: Operator, cluster: Cluster, namespace: str, n: int, name: str = "cifar") -> Any:
    """Poll until `n` runs are recorded (while the operator keeps running)."""

    def check() -> dict[str, Any] | None:
        op.alive()
        status = status_of(cluster, namespace, name)
        return status if int(status.get("recordedRuns") or 0) >= n else None

    return eventually(check, timeout=RUN_S, interval=0.3)


def running_job(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    """Poll until Job `name` has a running Pod and has not ended."""

    def check() -> dict[str, Any] | None:
        job = job_named(cluster, namespace, name)
        if job is None or job_finished(job) is not None:
            return None
        return job if (job.get("status") or {}).get("active") else None

    found: dict[str, Any] = eventually(check, timeout=RUN_S, interval=0.2)
    return found


def job_seen(cluster: Cluster, namespace: str, run: int) -> dict[str, Any] | None:
    """The status once the operator has seen run `run`'s Job (`jobCreated` written)."""
    status = status_of(cluster, namespace)
    active = [a for a in status.get("active") or [] if a["run"] == run]
    return status if active and active[0].get("jobCreated") else None


def assert_exactly_once(
    cluster: Cluster,
    namespace: str,
    runs: int,
    *,
    kept: int | None = None,
    jobs: list[str] | None = None,
) -> dict[str, Any]:
    """`runs` runs, each recorded once (counters, totals, the newest `kept` in the history)
    and none in flight; the Jobs left come to be `jobs` (default: those of the kept runs)."""
    status: dict[str, Any] = status_of(cluster, namespace)
    assert status["runs"] == runs, status
    assert status["recordedRuns"] == runs, status
    assert status["totals"]["runs"] == runs, status
    expected_runs = list(range(1, runs + 1))[-(kept or runs) :]
    assert [h["run"] for h in status["history"]] == expected_runs, status["history"]
    assert status["active"] == [], status["active"]
    expected = sorted(jobs if jobs is not None else [f"cifar-run-{i}" for i in expected_runs])

    def names() -> list[str]:
        return sorted(j["metadata"]["name"] for j in jobs_of(cluster, namespace))

    eventually(lambda: names() == expected, timeout=30, interval=0.3)
    assert condition(status, "Ready")["status"] == "True"
    return status


def assert_failed(item: dict[str, Any]) -> None:
    """A run whose Pod went away mid-run: the Job failed (backoffLimit 0), and the history
    says why. The Pod usually takes the sidecar's report with it; if the operator read the
    Pod before it went, the report's own result says so."""
    if item["result"] == "noreport":
        assert item["note"].startswith("the Job failed (BackoffLimitExceeded)"), item
    else:
        assert item["result"] in ("interrupted", "failed"), item


def live_rules(faults: FaultsClient, **match: Any) -> list[dict[str, Any]]:
    return [r for r in faults.rules() if all(r["match"].get(k) == v for k, v in match.items())]


# --- 1. SIGKILL at each step of a run --------------------------------------------------


def killed_between_create_and_record(
    op: Operator, cluster: Cluster, faults: FaultsClient, namespace: str, run: int
) -> dict[str, Any]:
    """Kill the operator after it created run `run`'s Job but before the status says so:
    the create is held 3 s in the proxy, and meanwhile every status write starts failing.
    Returns the Job; the faults are cleared."""
    faults.slow(3.0, resource="jobs", verb="create", namespace=namespace, count=1)
    if run > 1:
        request_run(cluster, namespace, str(run))

    def starting() -> bool:
        op.alive()
        active = status_of(cluster, namespace).get("active") or []
        return any(a["run"] == run and not a["jobCreated"] for a in active)

    eventually(starting, timeout=30, interval=0.1)
    faults.error(500, resource="trainingjobs/status", verb="update", namespace=namespace, count=999)

    def created_unseen() -> dict[str, Any] | None:
        op.alive()
        tried = any(r["hits"] for r in live_rules(faults, resource="trainingjobs/status"))
        return job_named(cluster, namespace, f"cifar-run-{run}") if tried else None

    job: dict[str, Any] = eventually(created_unseen, timeout=30, interval=0.1)
    op.kill()
    faults.clear()
    active = status_of(cluster, namespace)["active"]
    assert [(a["run"], a["jobCreated"]) for a in active] == [(run, False)], active
    return job


@pytest.mark.timeout(150)
def test_operator_killed_at_each_step_of_a_run_records_each_run_once(
    sandbox: Cluster, faults: FaultsClient, namespace: str, tmp_path: Path
) -> None:
    """SIGKILL after the run is in status.active but before its Job exists, after the Job
    exists but before the status says so, while the Job runs, and after the Job ended but
    before the status records it: after each restart, one Job per run (the same Job, never
    made twice) and each run recorded once."""
    with running_operator(sandbox, namespace, tmp_path, proxy=True, start=False) as op:
        # (a) The Job's create fails, so the run waits in status.active without a Job.
        faults.error(500, resource="jobs", verb="create", namespace=namespace, count=999, ttl=60)
        op.start()
        create(sandbox, trainingjob(namespace, time_scale=SLOW, history_limit=10))

        def started_without_job() -> bool:
            op.alive()
            active = status_of(sandbox, namespace).get("active") or []
            tried = any(r["hits"] for r in live_rules(faults, resource="jobs"))
            return bool(active and tried and not jobs_of(sandbox, namespace))

        eventually(started_without_job, timeout=30, interval=0.2)
        op.kill()
        (entry,) = status_of(sandbox, namespace)["active"]
        assert entry["run"] == 1 and entry["jobCreated"] is False
        assert jobs_of(sandbox, namespace) == []
        faults.clear()
        op.start()
        recorded(op, sandbox, namespace, 1)
        assert_exactly_once(sandbox, namespace, 1)

        # (b) The Job exists, the status does not say so yet.
        uids = {2: killed_between_create_and_record(op, sandbox, faults, namespace, 2)}
        op.start()
        recorded(op, sandbox, namespace, 2)
        assert_exactly_once(sandbox, namespace, 2)

        # (c) Killed while the run's Job runs; the Job ends while nobody watches.
        request_run(sandbox, namespace, "3")
        uids[3] = running_job(sandbox, namespace, "cifar-run-3")
        op.kill()

        def ended() -> str | None:
            return job_finished(job_named(sandbox, namespace, "cifar-run-3") or {})

        eventually(ended, timeout=RUN_S, interval=0.2)
        op.start()
        recorded(op, sandbox, namespace, 3)
        assert_exactly_once(sandbox, namespace, 3)

        # (d) The Job ended, but the status write that records it fails: killed meanwhile.
        request_run(sandbox, namespace, "4")
        eventually(lambda: job_seen(sandbox, namespace, 4), timeout=RUN_S, interval=0.2)
        faults.error(
            500, resource="trainingjobs/status", verb="update", namespace=namespace, count=999
        )

        def ended_unrecorded() -> dict[str, Any] | None:
            op.alive()
            job = job_named(sandbox, namespace, "cifar-run-4")
            tried = any(r["hits"] for r in live_rules(faults, resource="trainingjobs/status"))
            return job if job and job_finished(job) and tried else None

        uids[4] = eventually(ended_unrecorded, timeout=RUN_S, interval=0.2)
        op.kill()
        before = status_of(sandbox, namespace)
        assert before["recordedRuns"] == 3 and [a["run"] for a in before["active"]] == [4]
        faults.clear()
        op.start()
        recorded(op, sandbox, namespace, 4)
        status = assert_exactly_once(sandbox, namespace, 4)
        # The Jobs seen before each kill are the ones left: none was made a second time.
        for run, job in uids.items():
            now = job_named(sandbox, namespace, f"cifar-run-{run}")
            assert now is not None and now["metadata"]["uid"] == job["metadata"]["uid"], run
        # Each run was recorded from its ended Job, never taken for a Job deleted by hand.
        assert not [h for h in status["history"] if h["result"] in ("deleted", "replaced")]
        assert status["totals"]["energyJoules"] == pytest.approx(
            sum(h["energyJoules"] for h in status["history"])
        )


@pytest.mark.timeout(90)
def test_a_job_with_a_ttl_is_kept_until_its_run_is_recorded(
    sandbox: Cluster, faults: FaultsClient, namespace: str, tmp_path: Path
) -> None:
    """ttlSecondsAfterFinished 0, and the operator SIGKILLed between the Job's create and the
    status write that notes it: the Job ends while the operator is down but is not removed
    (the TTL is the operator's to apply, after recording), so after the restart the run is
    recorded once with its report, its Job was created once, and only then is it deleted."""
    with running_operator(sandbox, namespace, tmp_path, proxy=True, start=False) as op:
        tj = trainingjob(namespace)
        tj["spec"]["ttlSecondsAfterFinished"] = 0
        op.start()
        create(sandbox, tj)
        first = killed_between_create_and_record(op, sandbox, faults, namespace, 1)
        assert "ttlSecondsAfterFinished" not in first["spec"]

        def ended() -> bool:
            job = job_named(sandbox, namespace, "cifar-run-1")
            assert job is not None, "the Job went before its run was recorded"
            return any(
                c["type"] == "Complete" and c["status"] == "True"
                for c in (job.get("status") or {}).get("conditions") or []
            )

        eventually(ended, timeout=RUN_S, interval=0.3)
        time.sleep(2)  # what Kubernetes' own TTL controller would have needed to remove it
        assert job_named(sandbox, namespace, "cifar-run-1") is not None
        op.start()
        status = recorded(op, sandbox, namespace, 1)
        assert status["runs"] == 1 and status["active"] == []
        assert status["history"][0]["result"] == "reached", status["history"]
        eventually(lambda: not jobs_of(sandbox, namespace), timeout=30, interval=0.3)
        events = sandbox.kubectl_json("get", "events", "-n", namespace)["items"]
        made = {
            e["involvedObject"]["uid"]
            for e in events
            if e["involvedObject"]["kind"] == "Job" and e["reason"] == "SuccessfulCreate"
        }
        assert made == {first["metadata"]["uid"]}, "the run's Job was created twice"


# --- 2. API faults through the proxy -------------------------------------------------


@pytest.mark.timeout(120)
def test_api_errors_conflicts_and_lost_watches_end_in_the_right_status(
    sandbox: Cluster, faults: FaultsClient, namespace: str, tmp_path: Path
) -> None:
    """500s and 429s on the operator's reads and writes, 409s on its status writes, watches
    cut and ended with 410 Gone: it retries with backoff, and the requested runs are each
    recorded once, Ready True."""
    with running_operator(sandbox, namespace, tmp_path, proxy=True, start=False) as op:
        # Before it starts: its first list of TrainingJobs, its reads and its first writes.
        faults.error(429, resource="trainingjobs", verb="list", namespace=namespace, count=1)
        faults.error(500, resource="trainingjobs", verb="get", namespace=namespace, count=1)
        faults.conflicts("trainingjobs/status", namespace=namespace, count=2)
        faults.error(429, resource="jobs", verb="create", namespace=namespace, count=1)
        op.start()
        create(sandbox, trainingjob(namespace))  # historyLimit 1: run 1's Job goes after run 2
        running_job(sandbox, namespace, "cifar-run-1")
        # While run 1 runs: its Pods' list fails, and every open watch is cut, then expired.
        faults.error(500, resource="pods", verb="list", namespace=namespace, count=1)
        faults.error(500, resource="jobs", verb="list", namespace=namespace, count=1)
        faults.drop_open_watches("jobs", how="drop")
        faults.drop_open_watches("trainingjobs", how="gone")
        recorded(op, sandbox, namespace, 1)
        # Run 2 is asked for while the watches expire again and the status writes fail.
        faults.drop_open_watches("trainingjobs", how="gone")
        faults.drop_open_watches("jobs", how="gone")
        faults.error(500, resource="trainingjobs/status", verb="update", namespace=namespace)
        faults.error(429, resource="trainingjobs", verb="get", namespace=namespace, count=1)
        faults.conflicts("trainingjobs", namespace=namespace, count=2)
        faults.error(500, resource="jobs", verb="delete", namespace=namespace, count=1)
        request_run(sandbox, namespace, "again")
        recorded(op, sandbox, namespace, 2)
        status = assert_exactly_once(sandbox, namespace, 2, kept=1)
        assert status["lastRunRequest"] == "again"
        assert not [h for h in status["history"] if h["result"] in ("deleted", "replaced")]
        # Every fault was met (each rule used up), and the operator never restarted.
        assert faults.rules() == [], faults.rules()
        op.alive()
        log = op.log()
        assert "failed (HTTP 500" in log and "failed (HTTP 429" in log and "retrying in" in log


# --- 3. A spec only kwatt can reject --------------------------------------------------


@pytest.mark.timeout(90)
def test_invalid_spec_is_reported_and_other_trainingjobs_still_run(
    sandbox: Cluster, namespace: str, tmp_path: Path
) -> None:
    """A template that uses kwatt's reserved volume name passes the schema but gets Ready
    False, InvalidSpec, naming the field, and no Job; a valid TrainingJob beside it runs."""
    broken = trainingjob(namespace, "broken")
    broken["spec"]["template"]["spec"]["volumes"] = [{"name": "kwatt-state", "emptyDir": {}}]
    with running_operator(sandbox, namespace, tmp_path) as op:
        create(sandbox, broken)
        create(sandbox, trainingjob(namespace))

        def rejected() -> dict[str, Any] | None:
            op.alive()
            ready = [
                c
                for c in status_of(sandbox, namespace, "broken").get("conditions") or []
                if c["type"] == "Ready"
            ]
            return ready[0] if ready else None

        ready = eventually(rejected, timeout=30, interval=0.3)
        assert ready["status"] == "False" and ready["reason"] == "InvalidSpec", ready
        assert (
            "spec.template.spec.volumes" in ready["message"] and "kwatt-state" in ready["message"]
        )
        assert ready["observedGeneration"] == 1
        status = recorded(op, sandbox, namespace, 1)
        assert [h["run"] for h in status["history"]] == [1]
        assert condition(status, "Ready")["status"] == "True"
        bad = status_of(sandbox, namespace, "broken")
        assert bad["state"] == "Invalid" and not bad.get("runs") and not bad.get("active")
        assert [j["metadata"]["name"] for j in jobs_of(sandbox, namespace)] == ["cifar-run-1"]
        events = sandbox.kubectl_json("get", "events", "-n", namespace)["items"]
        assert any(
            e["reason"] == "InvalidSpec" and e["involvedObject"]["name"] == "broken" for e in events
        )


# --- 4. A run's Pod or Job deleted by hand --------------------------------------------


@pytest.mark.timeout(120)
def test_pod_or_job_deleted_mid_run_is_recorded_and_the_next_run_goes_on(
    sandbox: Cluster, namespace: str, tmp_path: Path
) -> None:
    """A run whose Pod is deleted mid-run is recorded as failed, one whose Job is deleted
    as deleted, each with a note saying why; the next requested run then runs."""
    with running_operator(sandbox, namespace, tmp_path) as op:
        create(sandbox, trainingjob(namespace, time_scale=SLOW, history_limit=10))
        running_job(sandbox, namespace, "cifar-run-1")
        eventually(lambda: job_seen(sandbox, namespace, 1), timeout=30, interval=0.2)
        (pod,) = pods_of(sandbox, namespace)
        sandbox.kubectl("delete", "pod", "-n", namespace, pod["metadata"]["name"], "--wait=false")
        status = recorded(op, sandbox, namespace, 1)
        assert_failed(status["history"][0])
        assert condition(status, "LastRun")["status"] == "False"

        request_run(sandbox, namespace, "2")
        running_job(sandbox, namespace, "cifar-run-2")
        eventually(lambda: job_seen(sandbox, namespace, 2), timeout=30, interval=0.2)
        sandbox.kubectl("delete", "job", "-n", namespace, "cifar-run-2", "--wait=false")
        status = recorded(op, sandbox, namespace, 2)
        second = status["history"][1]
        assert second["result"] == "deleted", second
        assert second["note"] == "the run's Job was deleted before it finished", second
        assert condition(status, "LastRun")["reason"] == "JobDeleted"

        request_run(sandbox, namespace, "3")
        status = recorded(op, sandbox, namespace, 3)
        third = status["history"][2]
        assert third["result"] not in ("deleted", "replaced"), third
        assert_exactly_once(sandbox, namespace, 3, jobs=["cifar-run-1", "cifar-run-3"])


@pytest.mark.timeout(120)
def test_node_lost_mid_run_is_recorded_and_the_next_run_goes_on(
    cluster: Cluster, tmp_path: Path
) -> None:
    """A node that stops heartbeating mid-run (its own sandbox with two one-GPU nodes, so the
    session's stays whole): the control plane evicts the run's Pod, the run is recorded
    once as failed, and the next requested run goes on the other node."""
    if not cluster.is_sandbox:
        pytest.skip("needs a sandbox of its own (the tests run on another cluster)")
    with running_sandbox(tmp_path / "sandbox", nodes=["gpu-a=v100x1", "gpu-b=v100x1"]) as sb:
        assert sb.faults is not None
        namespace = "lost"
        sb.kubectl("create", "namespace", namespace)
        with running_operator(sb, namespace, tmp_path) as op:
            tj = trainingjob(namespace, time_scale=0.05, history_limit=10)
            # Evicted as soon as the node is unreachable (the default waits 20 s more).
            tj["spec"]["template"]["spec"]["tolerations"] = [
                {
                    "key": f"node.kubernetes.io/{taint}",
                    "operator": "Exists",
                    "effect": "NoExecute",
                    "tolerationSeconds": 0,
                }
                for taint in ("unreachable", "not-ready")
            ]
            create(sb, tj)
            running_job(sb, namespace, "cifar-run-1")
            eventually(lambda: job_seen(sb, namespace, 1), timeout=30, interval=0.2)
            (pod,) = pods_of(sb, namespace)
            node = pod["spec"]["nodeName"]
            sb.faults.stop_heartbeat(node, ttl=60)
            status = recorded(op, sb, namespace, 1)
            assert_failed(status["history"][0])
            # The next run at full speed (the template's new args are the next Job's).
            fast = [{"op": "replace", "path": f"{ARGS}/5", "value": "0.0005"}]
            sb.kubectl("patch", "tj/cifar", "-n", namespace, "--type=json", "-p", json.dumps(fast))
            request_run(sb, namespace, "after")
            status = recorded(op, sb, namespace, 2)
            assert status["history"][1]["result"] not in ("deleted", "replaced"), status
            assert_exactly_once(sb, namespace, 2)
            (pod,) = [p for p in pods_of(sb, namespace) if "cifar-run-2" in p["metadata"]["name"]]
            assert pod["spec"]["nodeName"] != node


# --- 5. Deleting a TrainingJob, operator or not ---------------------------------------


@pytest.mark.timeout(90)
def test_deleting_a_trainingjob_with_the_operator_down_removes_its_jobs_and_pods(
    sandbox: Cluster, namespace: str, tmp_path: Path
) -> None:
    """No finalizer holds a TrainingJob: deleted while the operator is killed, it goes, and
    the garbage collector removes its Jobs and their Pods through ownerReferences."""
    with running_operator(sandbox, namespace, tmp_path) as op:
        create(sandbox, trainingjob(namespace, time_scale=SLOW))
        running_job(sandbox, namespace, "cifar-run-1")
        eventually(lambda: job_seen(sandbox, namespace, 1), timeout=30, interval=0.2)
        assert pods_of(sandbox, namespace)
        op.kill()
        tj = sandbox.kubectl_json("get", "trainingjob", "cifar", "-n", namespace)
        assert not tj["metadata"].get("finalizers"), tj["metadata"]
        sandbox.kubectl("delete", "trainingjob", "cifar", "-n", namespace, "--timeout=20s")

        def all_gone() -> bool:
            left = sandbox.kubectl_json("get", "trainingjobs,jobs,pods", "-n", namespace)
            return not left["items"]

        eventually(all_gone, timeout=45, interval=0.3)
