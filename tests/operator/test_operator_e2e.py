"""The operator end to end on the sandbox: `kwatt operator` (the real command, kopf
underneath) turns a TrainingJob into Jobs, one per recurrence, on the simulated V100
node; each run's sidecar report reaches the status, the policy learns from it, and a
new value of the run-request annotation asks for exactly one more run.

The operator runs as a ServiceAccount bound to operator/rbac/clusterrole.yaml and
nothing else, and the API server's audit log shows that it used every rule of that
file and needed nothing beyond it.
"""

from __future__ import annotations

import json
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from operator_support import (
    ACCOUNT,
    check_rbac,
    metrics,
    running_operator,
    service_account_kubeconfig,
    status_of,
    trainingjob,
)

from kwatt_operator.crd import CRD_NAME, crd_path
from kwatt_operator.reconcile import ANNOTATION_RUN_REQUEST
from kwatt_sandbox.testing import Cluster, eventually

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def operator(sandbox: Cluster, namespace: str, tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """`kwatt operator` watching the test's namespace, as its ServiceAccount."""
    with running_operator(sandbox, namespace, tmp_path) as op:
        assert op.proc is not None
        yield op.proc


def test_recurrences_run_report_and_teach_the_policy(
    sandbox: Cluster, namespace: str, operator: subprocess.Popen[str], tmp_path: Path
) -> None:
    sandbox.kubectl("create", "-f", "-", input=json.dumps(trainingjob(namespace)))

    def recorded(n: int) -> dict[str, Any] | None:
        assert operator.poll() is None, "the operator exited"
        status = status_of(sandbox, namespace)
        return status if int(status.get("recordedRuns") or 0) >= n else None

    first = eventually(lambda: recorded(1), timeout=120, interval=0.5)
    (run,) = first["history"]
    assert run["run"] == 1 and run["job"] == "cifar-run-1"
    assert run["result"] == "reached", run
    assert run["energyJoules"] > 0 and run["seconds"] > 0 and run["epochs"] > 0
    # The first run explores the default batch size and profiles its power limit.
    assert run["batchSize"] == 1024 and run["stage"] == "explore"
    assert first["policy"]["limits"].get("1024") == run["powerLimitWatts"]
    assert first["totals"]["energyJoules"] == pytest.approx(run["energyJoules"])
    assert first["active"] == [] and first["runs"] == 1
    # What run 1 saved against the default configuration (1024 at 250 W), estimated from
    # its own power profile since kwatt never ran that configuration.
    assert first["savings"]["basis"] == "estimated"
    assert run["powerLimitWatts"] < 250 and first["savings"]["energyPercent"] > 0
    # The sidecar reported the simulated V100's power range; the API server kept status.gpu.
    gpu = first["gpu"]
    assert (gpu["count"], gpu["minLimitWatts"], gpu["maxLimitWatts"]) == (1, 100, 250)
    assert gpu["model"] and first["policy"]["space"]["max_limit_w"] == 250
    conditions = {c["type"]: c for c in first["conditions"]}
    assert conditions["Ready"]["status"] == "True"
    assert conditions["LastRun"]["reason"] == "TargetReached"
    assert all(
        c.get("observedGeneration") == 1 for c in first["conditions"] if c["type"] != "LastRun"
    )

    # One more run on request: the same value twice asks once.
    for _ in range(2):
        sandbox.kubectl(
            "annotate", "--overwrite", "-n", namespace, "tj/cifar", f"{ANNOTATION_RUN_REQUEST}=a"
        )
    second = eventually(lambda: recorded(2), timeout=120, interval=0.5)
    # historyLimit 1: only the newest run is kept, and the older run's Job goes.
    assert [h["run"] for h in second["history"]] == [2]
    assert second["lastRunRequest"] == "a" and second["runs"] == 2
    assert second["totals"]["runs"] == 2
    # The second run keeps walking down from the default (kwatt's exploration).
    assert second["history"][0]["batchSize"] == 512

    def jobs_left() -> list[dict[str, Any]] | None:
        items: list[dict[str, Any]] = sandbox.kubectl_json("get", "jobs", "-n", namespace)["items"]
        return items if [j["metadata"]["name"] for j in items] == ["cifar-run-2"] else None

    jobs = eventually(jobs_left, timeout=30)
    for job in jobs:
        owner = job["metadata"]["ownerReferences"][0]
        assert owner["kind"] == "TrainingJob" and owner["name"] == "cifar"
        assert job["metadata"]["labels"]["team"] == "vision"
    events = sandbox.kubectl_json("get", "events", "-n", namespace)["items"]
    reasons = [e["reason"] for e in events if e["involvedObject"]["kind"] == "TrainingJob"]
    assert reasons.count("RunStarted") == 2 and reasons.count("TargetReached") == 2
    # No third run: the request was acted on once.
    final = status_of(sandbox, namespace)
    assert final["runs"] == 2
    # The metrics say what the status says, in base units.
    values = metrics(tmp_path / "operator.log")
    assert values[("kwatt_trainingjob_runs_total", "reached")] == 2
    assert values[("kwatt_trainingjob_energy_joules_total", "")] == pytest.approx(
        final["totals"]["energyJoules"]
    )
    assert values[("kwatt_trainingjob_seconds_total", "")] == pytest.approx(
        final["totals"]["seconds"]
    )
    check_rbac(sandbox, namespace)


def test_liveness_endpoint_answers(
    sandbox: Cluster, namespace: str, operator: subprocess.Popen[str]
) -> None:
    """`--liveness URL` serves kopf's liveness probe (what the chart's Deployment probes)."""
    url = next(a for a in operator.args if str(a).startswith("http://127.0.0.1:"))
    body = eventually(lambda: urllib.request.urlopen(str(url), timeout=5).read(), timeout=30)
    assert json.loads(body) is not None


def test_operator_in_a_pod_uses_its_service_account(
    sandbox: Cluster, namespace: str, tmp_path: Path
) -> None:
    """Run as a Pod (as the chart will), `kwatt operator` finds the cluster through the
    in-cluster configuration alone (the projected ServiceAccount token, the CA and the
    KUBERNETES_SERVICE_* variables) and runs a TrainingJob's first recurrence."""
    from kwatt_sandbox.controlplane.cluster import free_port

    sandbox.apply_crd(crd_path(), CRD_NAME)
    service_account_kubeconfig(sandbox, namespace, tmp_path / "unused.kubeconfig")
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "kwatt-operator", "namespace": namespace},
        "spec": {
            "serviceAccountName": ACCOUNT,
            "terminationGracePeriodSeconds": 2,
            "containers": [
                {
                    "name": "operator",
                    "image": "kwatt/operator:dev",
                    "command": ["python", "-m", "kwatt_cli.main", "operator"],
                    "args": [
                        "--namespace",
                        namespace,
                        "--sidecar-image",
                        "ignored:1",
                        "--sidecar-state-dir",
                        str(tmp_path / "state"),
                        "--sidecar-port",
                        str(free_port()),
                        "--sidecar-metrics-port",
                        str(free_port()),
                        "--metrics-port",
                        "-1",
                    ],
                }
            ],
        },
    }
    try:
        sandbox.kubectl("create", "-f", "-", input=json.dumps(pod))
        sandbox.kubectl("create", "-f", "-", input=json.dumps(trainingjob(namespace)))

        def recorded() -> dict[str, Any] | None:
            status = status_of(sandbox, namespace)
            return status if int(status.get("recordedRuns") or 0) >= 1 else None

        try:
            status = eventually(recorded, timeout=120, interval=0.5)
        except AssertionError:
            print(sandbox.kubectl("logs", "-n", namespace, "kwatt-operator", check=False).stdout)
            raise
        assert status["history"][0]["result"] == "reached"
        logs = sandbox.kubectl("logs", "-n", namespace, "kwatt-operator").stdout
        assert "kwatt operator started" in logs
        # It acted as its ServiceAccount: the audit log has its requests under that name.
        user = f"system:serviceaccount:{namespace}:{ACCOUNT}"
        assert eventually(lambda: sandbox.audit_events(user), timeout=10)
    finally:
        sandbox.kubectl("delete", "clusterrolebinding", f"{ACCOUNT}-{namespace}", check=False)


def test_runs_start_on_the_schedule(
    sandbox: Cluster, namespace: str, operator: subprocess.Popen[str]
) -> None:
    """spec.schedule starts recurrences by itself (here `@every 8s`, CronJob's syntax for a
    fixed interval): after the run on create, scheduled runs follow without any request,
    one at a time (concurrencyPolicy Forbid), each recorded once."""
    tj = trainingjob(namespace, history_limit=5)
    tj["spec"]["schedule"] = "@every 8s"
    sandbox.kubectl("create", "-f", "-", input=json.dumps(tj))

    def scheduled_runs() -> dict[str, Any] | None:
        status = status_of(sandbox, namespace)
        return status if int(status.get("recordedRuns") or 0) >= 3 else None

    status = eventually(scheduled_runs, timeout=150, interval=0.5)
    assert status.get("lastScheduleTime") and "lastRunRequest" not in status
    triggers = [
        e["message"]
        for e in sandbox.kubectl_json("get", "events", "-n", namespace)["items"]
        if e["reason"] == "RunStarted"
    ]
    assert any("(on create)" in m for m in triggers) and any("(on schedule)" in m for m in triggers)
    runs = [h["run"] for h in status["history"]]
    assert runs == sorted(set(runs)) and status["totals"]["runs"] == status["recordedRuns"]
