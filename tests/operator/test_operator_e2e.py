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
import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kwatt_operator.crd import crd_path
from kwatt_operator.reconcile import ANNOTATION_RUN_REQUEST
from kwatt_sandbox.testing import Cluster, eventually

pytestmark = pytest.mark.timeout(240)


def trainingjob(namespace: str) -> dict[str, Any]:
    trainer = {
        "name": "train",
        "image": "ignored:1",
        "command": ["python", "-m", "kwatt_sandbox.gpu.trainer"],
        "args": ["--workload", "cifar100", "--gpu", "v100", "--time-scale", "0.0005"],
        "resources": {"limits": {"nvidia.com/gpu": 1}},
    }
    return {
        "apiVersion": "kwatt.dev/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": "cifar", "namespace": namespace, "labels": {"team": "vision"}},
        "spec": {
            "template": {"spec": {"terminationGracePeriodSeconds": 1, "containers": [trainer]}},
            "batchSizes": {"candidates": [256, 512, 1024], "default": 1024},
            "target": {"metric": "accuracy", "value": 0.6, "maxEpochs": 100},
            "backoffLimit": 0,
            "historyLimit": 1,
        },
    }


REPO = Path(__file__).resolve().parents[2]
RBAC = REPO / "operator" / "rbac" / "clusterrole.yaml"
ACCOUNT = "kwatt-operator"


def service_account_kubeconfig(cluster: Cluster, namespace: str, path: Path) -> Path:
    """A kubeconfig for the ServiceAccount `kwatt-operator`, bound to the operator's
    ClusterRole only: the operator gets exactly the rights the chart gives it."""
    cluster.kubectl("apply", "--server-side", "-f", str(RBAC))
    cluster.kubectl("create", "serviceaccount", ACCOUNT, "-n", namespace)
    cluster.kubectl(
        "create",
        "clusterrolebinding",
        f"{ACCOUNT}-{namespace}",
        f"--clusterrole={ACCOUNT}",
        f"--serviceaccount={namespace}:{ACCOUNT}",
    )
    token = cluster.kubectl("create", "token", ACCOUNT, "-n", namespace).stdout.strip()
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    server = admin["clusters"][0]["cluster"]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "sandbox", "cluster": server}],
        "users": [{"name": ACCOUNT, "user": {"token": token}}],
        "contexts": [{"name": ACCOUNT, "context": {"cluster": "sandbox", "user": ACCOUNT}}],
        "current-context": ACCOUNT,
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


@pytest.fixture
def operator(sandbox: Cluster, namespace: str, tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """`kwatt operator` watching the test's namespace, as its ServiceAccount."""
    sandbox.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crd_path()))
    sandbox.kubectl("wait", "--for=condition=Established", "crd/trainingjobs.kwatt.dev")
    kubeconfig = service_account_kubeconfig(sandbox, namespace, tmp_path / "operator.kubeconfig")
    log = (tmp_path / "operator.log").open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kwatt_cli.main",
            "operator",
            "--kubeconfig",
            str(kubeconfig),
            "--namespace",
            namespace,
            "--sidecar-image",
            "ignored:1",
            "--sidecar-state-dir",
            str(tmp_path / "state"),
            "--metrics-port",
            "0",
        ],
        env=sandbox.env(),
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    yield proc
    sandbox.kubectl("delete", "clusterrolebinding", f"{ACCOUNT}-{namespace}", check=False)
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    log.close()
    print((tmp_path / "operator.log").read_text()[-6000:])


def status_of(cluster: Cluster, namespace: str) -> dict[str, Any]:
    tj = cluster.kubectl_json("get", "trainingjob", "cifar", "-n", namespace)
    status: dict[str, Any] = tj.get("status") or {}
    return status


def metrics(log: Path) -> dict[tuple[str, str], float]:
    """The operator's Prometheus metrics, found through the address it logged."""
    from prometheus_client.parser import text_string_to_metric_families

    found = re.search(r"Metrics on (http://127\.0\.0\.1:\d+/metrics)", log.read_text())
    assert found, log.read_text()[-2000:]
    with urllib.request.urlopen(found.group(1), timeout=10) as response:
        text = response.read().decode()
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[(sample.name, sample.labels.get("result", ""))] = sample.value
    return values


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


def allowed(rules: list[dict[str, Any]], group: str, resource: str, verb: str) -> bool:
    return any(
        group in rule["apiGroups"] and resource in rule["resources"] and verb in rule["verbs"]
        for rule in rules
    )


def check_rbac(cluster: Cluster, namespace: str) -> None:
    """Every request the operator made was allowed by the role, and the role has no rule
    (group, resource, verb) that the operator did not use."""
    rules = yaml.safe_load(RBAC.read_text())["rules"]
    user = f"system:serviceaccount:{namespace}:{ACCOUNT}"
    used: set[tuple[str, str, str]] = set()
    for event in eventually(lambda: cluster.audit_events(user), timeout=10):
        ref = event.get("objectRef")
        if ref is None:
            continue  # discovery (non-resource URLs), allowed to every authenticated user
        resource = ref["resource"] + (f"/{ref['subresource']}" if ref.get("subresource") else "")
        key = (ref.get("apiGroup", ""), resource, event["verb"])
        assert event["responseStatus"]["code"] != 403, (key, event["responseStatus"])
        assert allowed(rules, *key), f"the operator used {key}, which the role does not grant"
        used.add(key)
    granted = {
        (group, resource, verb)
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    assert granted <= used, f"rules the operator never used: {sorted(granted - used)}"
