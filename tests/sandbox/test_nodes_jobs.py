"""The Job controller on simulated nodes, checked against the documented Job behaviour."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from nodes_support import (
    condition,
    container,
    events,
    get_job,
    job,
    job_pods,
    node_sandbox,
    wait_condition,
)
from sandbox_support import eventually

pytestmark = pytest.mark.timeout(60)


def test_job_runs_python_and_completes(tmp_path: Path) -> None:
    with node_sandbox(tmp_path) as sb:
        created = sb.create(job("ok", [container("main", "print('trained')")]))
        done = wait_condition(sb, "ok", "Complete")
        status = done["status"]
        assert status["succeeded"] == 1 and status["failed"] == 0 and status["active"] == 0
        assert status["startTime"] <= status["completionTime"]
        assert condition(done, "SuccessCriteriaMet")["status"] == "True"
        assert condition(done, "Complete")["reason"] == "CompletionsReached"
        (pod,) = job_pods(sb, "ok")
        meta = pod["metadata"]
        assert meta["name"].startswith("ok-")
        uid = created["metadata"]["uid"]
        for key in ("controller-uid", "batch.kubernetes.io/controller-uid"):
            assert meta["labels"][key] == uid
        assert meta["labels"]["batch.kubernetes.io/job-name"] == "ok"
        (ref,) = meta["ownerReferences"]
        assert ref["uid"] == uid and ref["controller"] and ref["blockOwnerDeletion"]
        assert pod["status"]["phase"] == "Succeeded"
        assert pod["spec"]["nodeName"] == "cpu-0"  # CPU pods prefer CPU nodes
        assert sb.call(sb.store.logs.read, "default", meta["name"], "main") == "trained\n"
        reasons = [r for _, r, _ in events(sb, "ok")]
        assert "SuccessfulCreate" in reasons and "Completed" in reasons


def test_failing_pods_retried_until_backoff_limit(tmp_path: Path) -> None:
    with node_sandbox(tmp_path) as sb:
        sb.create(job("bad", [container("main", "raise SystemExit(3)")], backoffLimit=2))
        failed = wait_condition(sb, "bad", "Failed")
        assert failed["status"]["failed"] == 3 and failed["status"].get("succeeded", 0) == 0
        cond = condition(failed, "Failed")
        assert cond["reason"] == "BackoffLimitExceeded"
        assert condition(failed, "FailureTarget")["status"] == "True"
        assert "completionTime" not in failed["status"]
        pods = job_pods(sb, "bad")
        assert len(pods) == 3
        for pod in pods:
            (cs,) = pod["status"]["containerStatuses"]
            assert cs["state"]["terminated"]["exitCode"] == 3
            assert cs["state"]["terminated"]["reason"] == "Error"
            assert pod["status"]["phase"] == "Failed"
        assert ("Warning", "BackoffLimitExceeded", cond["message"]) in events(sb, "bad")


def test_active_deadline_kills_the_sleeper(tmp_path: Path) -> None:
    with node_sandbox(tmp_path) as sb:
        sleeper = container("main", "import time; print('up', flush=True); time.sleep(60)")
        sb.create(job("slow", [sleeper], activeDeadlineSeconds=1))
        start = time.monotonic()
        failed = wait_condition(sb, "slow", "Failed")
        assert time.monotonic() - start < 10
        assert condition(failed, "Failed")["reason"] == "DeadlineExceeded"
        assert failed["status"]["active"] == 0
        eventually(lambda: all(p["status"]["phase"] == "Failed" for p in job_pods(sb, "slow")))
        assert any(r == "DeadlineExceeded" for _, r, _ in events(sb, "slow"))


def test_suspend_deletes_pods_and_resume_restarts(tmp_path: Path) -> None:
    with node_sandbox(tmp_path) as sb:
        sleeper = container("main", "import time; time.sleep(60)")
        sb.create(job("pause", [sleeper], backoffLimit=0))
        eventually(lambda: get_job(sb, "pause")["status"].get("active") == 1)
        first = get_job(sb, "pause")["status"]["startTime"]
        patch = {"spec": {"suspend": True}}
        jobs = sb.call(sb.store.resolve, "batch", "v1", "jobs")
        sb.call(sb.store.patch, jobs, "default", "pause", "merge", patch)
        suspended = wait_condition(sb, "pause", "Suspended")
        assert condition(suspended, "Suspended")["reason"] == "JobSuspended"
        eventually(lambda: not job_pods(sb, "pause"))
        assert get_job(sb, "pause")["status"].get("failed", 0) == 0
        time.sleep(1.1)  # startTime has a one-second resolution
        sb.call(sb.store.patch, jobs, "default", "pause", "merge", {"spec": {"suspend": False}})
        eventually(lambda: get_job(sb, "pause")["status"].get("active") == 1)
        resumed = get_job(sb, "pause")
        cond = condition(resumed, "Suspended")
        assert cond["status"] == "False" and cond["reason"] == "JobResumed"
        assert resumed["status"]["startTime"] > first
        reasons = [r for _, r, _ in events(sb, "pause")]
        assert "Suspended" in reasons and "Resumed" in reasons
        assert condition(resumed, "Failed") is None


def test_ttl_after_finished_deletes_job_and_pods(tmp_path: Path) -> None:
    with node_sandbox(tmp_path) as sb:
        sb.create(job("short", [container("main", "pass")], ttlSecondsAfterFinished=1))
        wait_condition(sb, "short", "Complete")

        def gone() -> bool:
            try:
                get_job(sb, "short")
            except Exception:
                return not job_pods(sb, "short")
            return False

        eventually(gone, timeout=10)


def test_kill_container_fault_makes_the_job_retry(tmp_path: Path) -> None:
    with node_sandbox(tmp_path) as sb:
        code = "import time; print('try', flush=True); time.sleep(0.5)"
        sb.faults.kill_container(namespace="default", container="main", count=1, after=0.1)
        sb.create(job("flaky", [container("main", code)], backoffLimit=3))
        done = wait_condition(sb, "flaky", "Complete")
        assert done["status"]["failed"] == 1 and done["status"]["succeeded"] == 1
        killed = [p for p in job_pods(sb, "flaky") if p["status"]["phase"] == "Failed"]
        (cs,) = killed[0]["status"]["containerStatuses"]
        assert cs["state"]["terminated"]["exitCode"] == 137
