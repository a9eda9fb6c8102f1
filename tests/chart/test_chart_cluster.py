"""The Helm chart against a real API server: the session's cluster (the sandbox's
kube-apiserver v1.37.2 unless KWATT_TEST_KUBECONFIG names another).

- every rendered object passes a server-side dry run (`kubectl apply --dry-run=server
  --validate=strict`): the API server's own schema, defaulting and validation, unknown fields
  refused; the ServiceMonitor is left out (its CRD is not installed; kubecheck decodes it);
- on the sandbox, the whole life of a release, begun under Helm 3 and carried on under Helm 4
  as a cluster moving between them would: `helm install --wait` (the operator as a Pod, as
  the chart's ServiceAccount) and `helm test` with Helm 3, then `helm upgrade --wait` (the new
  Pod runs a TrainingJob's first recurrence) and `helm uninstall` (the CRD stays) with Helm 4.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from chart_support import CHART, REPO, Helm, objects, operator_support

from kwatt_sandbox.controlplane.cluster import free_port
from kwatt_sandbox.testing import Cluster, eventually

CRD = "trainingjobs.kwatt.dev"


def install_crd(cluster: Cluster) -> None:
    """As the docs say to on upgrade: the chart's crds/, applied server-side."""
    cluster.apply_crd(CHART / "crds", CRD)


def default_account(cluster: Cluster, namespace: str) -> None:
    """Pods are admitted only once the namespace's `default` ServiceAccount exists."""
    eventually(
        lambda: (
            cluster.kubectl(
                "get", "serviceaccount", "default", "-n", namespace, check=False
            ).returncode
            == 0
        ),
        timeout=30,
        interval=0.2,
    )


@pytest.mark.parametrize(
    "values",
    [
        {},
        {
            "watchNamespaces": ["ml"],
            "verbose": True,
            "sidecar": {
                "image": {"pullPolicy": "Always"},
                "resources": {"limits": {"memory": "1Gi"}},
            },
            "metrics": {"serviceMonitor": {"enabled": True}},
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
            "affinity": {"podAntiAffinity": {}},
            "imagePullSecrets": [{"name": "regcred"}],
            "priorityClassName": "system-cluster-critical",
            "podAnnotations": {"a": "b"},
        },
        {"metrics": {"enabled": False}, "rbac": {"aggregate": False}},
    ],
    ids=["default", "custom", "no-metrics"],
)
def test_the_api_server_accepts_every_object(
    cluster: Cluster,
    namespace: str,
    helm3: Helm,
    tmp_path: Path,
    values: dict[str, Any],
) -> None:
    install_crd(cluster)
    default_account(cluster, namespace)
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump({"fullnameOverride": f"kwatt-{namespace}", **values}))
    rendered = objects(
        helm3.template("-f", str(values_file), "--include-crds", namespace=namespace)
    )
    checked = [d for d in rendered if d["kind"] != "ServiceMonitor"]
    assert len(checked) >= 4
    result = cluster.kubectl(
        "apply",
        "--dry-run=server",
        "--validate=strict",
        "--server-side",
        "--force-conflicts",
        "-n",
        namespace,
        "-f",
        "-",
        input=yaml.safe_dump_all(checked),
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("(server dry run)") == len(checked), result.stdout


def test_the_dry_run_refuses_an_unknown_field(
    cluster: Cluster, namespace: str, helm3: Helm
) -> None:
    """A control: the same check fails on a Deployment with a misspelt field."""
    default_account(cluster, namespace)
    rendered = objects(helm3.template(namespace=namespace))
    deployment = next(d for d in rendered if d["kind"] == "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePulPolicy"] = "Always"
    result = cluster.kubectl(
        "apply",
        "--dry-run=server",
        "--validate=strict",
        "--server-side",
        "-n",
        namespace,
        "-f",
        "-",
        input=json.dumps(deployment),
        check=False,
    )
    assert result.returncode != 0
    assert "imagePulPolicy" in result.stderr


def test_install_test_upgrade_uninstall(
    sandbox: Cluster, namespace: str, helm3: Helm, helm4: Helm, tmp_path: Path
) -> None:
    """The chart's Deployment runs `kwatt operator` as its ServiceAccount. The sandbox's nodes
    ignore images and run `command` (docs/sandbox.md), so the release sets it; everything
    else is the chart's. Pods share the host's network here: every port is a free one, and
    `helm test` asks 127.0.0.1 (Services route nothing in the sandbox). Helm 4 takes over the
    release Helm 3 installed (both keep releases in the same Secrets), so one life covers
    both versions."""
    support = operator_support()
    release = f"kwatt-{namespace}"
    values = {
        "command": ["python", "-m", "kwatt_cli.main", "operator"],
        "image": {"repository": "ignored/operator"},
        "watchNamespaces": [namespace],
        "health": {"port": free_port()},
        "metrics": {"port": free_port()},
        "sidecar": {
            "image": {"repository": "ignored/sidecar"},
            "port": free_port(),
            "metricsPort": free_port(),
            "stateDir": str(tmp_path / "state"),
        },
        "livenessProbe": {"initialDelaySeconds": 0, "periodSeconds": 2},
        "readinessProbe": {"initialDelaySeconds": 0, "periodSeconds": 1},
        "tests": {"host": "127.0.0.1"},
    }
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    env = sandbox.env()
    common = ["-n", namespace, "-f", str(values_file)]
    default_account(sandbox, namespace)
    try:
        installed = helm3.run(
            "install",
            release,
            str(CHART),
            *common,
            "--wait",
            "--timeout",
            "120s",
            env=env,
            timeout=150,
        )
        assert "kubectl apply --server-side" in installed.stdout  # NOTES.txt
        assert sandbox.kubectl("get", f"crd/{CRD}", check=False).returncode == 0
        deployment = sandbox.kubectl_json("get", "deployment", release, "-n", namespace)
        assert deployment["status"].get("readyReplicas") == 1
        for role in (f"{release}-operator", f"{release}-view", f"{release}-edit"):
            sandbox.kubectl("get", "clusterrole", role)

        tested = helm3.run("test", release, "-n", namespace, env=env, timeout=120)
        print(tested.stdout)
        suite = rf"TEST SUITE:\s+{release}-test-metrics\n(.*\n)*?Phase:\s+Succeeded"
        assert re.search(suite, tested.stdout), tested.stdout

        helm4.run(
            "upgrade",
            release,
            str(CHART),
            *common,
            "--set",
            "workers=2",
            "--set",
            "verbose=true",
            "--set",
            "defaultObjective.beta=3",
            "--wait",
            "--timeout",
            "120s",
            env=env,
            timeout=150,
        )
        history = json.loads(
            helm4.run("history", release, "-n", namespace, "-o", "json", env=env).stdout
        )
        assert [(h["revision"], h["status"]) for h in history] == [
            (1, "superseded"),
            (2, "deployed"),
        ]
        pods = sandbox.kubectl_json(
            "get",
            "pods",
            "-n",
            namespace,
            "-l",
            f"app.kubernetes.io/instance={release},app.kubernetes.io/component=operator",
        )["items"]
        live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
        assert len(live) == 1
        assert "--workers=2" in live[0]["spec"]["containers"][0]["args"]
        assert "--verbose" in live[0]["spec"]["containers"][0]["args"]

        # The upgraded operator, a Pod under the chart's ServiceAccount, runs a recurrence.
        sandbox.kubectl("create", "-f", "-", input=json.dumps(support.trainingjob(namespace)))

        def recorded() -> dict[str, Any] | None:
            status = support.status_of(sandbox, namespace)
            return status if int(status.get("recordedRuns") or 0) >= 1 else None

        try:
            status = eventually(recorded, timeout=120, interval=0.5)
        except AssertionError:
            print(
                sandbox.kubectl(
                    "logs", "-n", namespace, f"deployment/{release}", check=False
                ).stdout
            )
            raise
        assert status["history"][0]["result"] == "reached"
        # Its spec leaves eta and beta out: the chart's defaultObjective applies, not a schema
        # default (the built-in eta 0.5, and the beta the upgrade set).
        assert status["objective"] == {"eta": 0.5, "beta": 3}
        assert status["policy"]["space"]["beta"] == 3
        account = f"system:serviceaccount:{namespace}:{release}"
        assert eventually(lambda: sandbox.audit_events(account), timeout=10)

        helm4.run("uninstall", release, "-n", namespace, "--wait", env=env, timeout=120)
        assert (
            sandbox.kubectl("get", "deployment", release, "-n", namespace, check=False).returncode
            != 0
        )
        assert (
            sandbox.kubectl("get", "clusterrole", f"{release}-operator", check=False).returncode
            != 0
        )
        # Helm never deletes what it installed from crds/: the CRD and the TrainingJobs stay.
        assert sandbox.kubectl("get", f"crd/{CRD}", check=False).returncode == 0
        assert sandbox.kubectl("get", "trainingjobs", "-n", namespace, "-o", "name").stdout.strip()
    finally:
        helm4.run("uninstall", release, "-n", namespace, env=env, check=False, timeout=60)


def test_upgrade_instructions_name_the_chart_crd() -> None:
    """The chart's README tells how to upgrade the CRD, which Helm never does."""
    text = (REPO / "charts" / "kwatt" / "README.md").read_text()
    assert "kubectl apply --server-side --force-conflicts -f" in text
