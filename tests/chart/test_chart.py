"""The Helm chart (charts/kwatt) without a cluster, under Helm 3 and Helm 4.

- one source of truth: the chart's CRD is crds/trainingjob.yaml byte for byte, its operator
  rules are operator/rbac/clusterrole.yaml's, its appVersion is pyproject.toml's version;
- `helm lint --strict` and `helm template` with the default values and with every value
  changed, Helm 3 and Helm 4 rendering the same objects;
- what the objects say: one replica, Recreate, probes on kopf's /healthz, the restricted Pod
  security settings, the aggregated roles, the metrics Service and ServiceMonitor toggles,
  the operator's flags, which `kwatt operator`'s own parser must accept, and the Grafana
  dashboard's ConfigMap (dashboards/kwatt.json as it is, labelled for Grafana's sidecar);
- bad values fail with a message that names them (values.schema.json, and the template's
  checks for what a schema cannot say), and a Kubernetes older than kubeVersion is refused;
- every rendered object, the CRD and the test hook included, decodes strictly into the API
  types of Kubernetes 1.29, the oldest the chart claims (kubecheck, built from k8s.io/api
  v0.29 and friends); v1.37 is checked against a real API server in test_chart_cluster.py.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import tarfile
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from chart_support import CHART, REPO, Helm, find, objects

from kwatt_cli import operator as operator_cli
from kwatt_operator import crd, jobs, spec
from kwatt_operator.jobs import SidecarSettings

CUSTOM: dict[str, Any] = {
    "image": {
        "repository": "registry.example.com/kwatt/operator",
        "tag": "9.9.9",
        "pullPolicy": "Always",
    },
    "imagePullSecrets": [{"name": "regcred"}],
    "fullnameOverride": "energy",
    "command": ["python", "-m", "kwatt_cli.main", "operator"],
    "serviceAccount": {"create": True, "name": "kwatt-sa", "annotations": {"team": "ml"}},
    "rbac": {"create": True, "aggregate": False},
    "watchNamespaces": ["ml", "research"],
    "workers": 8,
    "defaultObjective": {"eta": 0.25, "beta": 3.5},
    "verbose": True,
    "sidecar": {
        "image": {
            "repository": "registry.example.com/kwatt/sidecar",
            "tag": "9.9.8",
            "pullPolicy": "Always",
        },
        "resources": {
            "requests": {"cpu": "100m", "memory": "128Mi"},
            "limits": {"memory": "256Mi"},
        },
        "port": 9931,
        "metricsPort": 9932,
        "stateDir": "/var/lib/kwatt",
    },
    "metrics": {
        "enabled": True,
        "port": 9100,
        "service": {"enabled": True, "annotations": {"prometheus.io/scrape": "true"}},
        "serviceMonitor": {
            "enabled": True,
            "interval": "15s",
            "scrapeTimeout": "5s",
            "labels": {"release": "prom"},
        },
        "podMonitor": {
            "enabled": True,
            "interval": "10s",
            "scrapeTimeout": "4s",
            "labels": {"release": "prom"},
        },
    },
    "dashboard": {
        "enabled": True,
        "label": "example.com/dashboard",
        "labelValue": "kwatt",
        "namespace": "monitoring",
        "annotations": {"grafana_folder": "kwatt"},
    },
    "health": {"port": 9090},
    "livenessProbe": {
        "initialDelaySeconds": 3,
        "periodSeconds": 7,
        "timeoutSeconds": 2,
        "failureThreshold": 4,
    },
    "readinessProbe": {
        "initialDelaySeconds": 1,
        "periodSeconds": 3,
        "timeoutSeconds": 2,
        "failureThreshold": 2,
    },
    "resources": {
        "requests": {"cpu": "200m", "memory": "256Mi"},
        "limits": {"cpu": 1, "memory": "1Gi"},
    },
    "podAnnotations": {"example.com/owner": "ml-platform"},
    "podLabels": {"tier": "control"},
    "priorityClassName": "system-cluster-critical",
    "nodeSelector": {"kubernetes.io/os": "linux"},
    "tolerations": [
        {"key": "dedicated", "operator": "Equal", "value": "ops", "effect": "NoSchedule"}
    ],
    "affinity": {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {
                        "matchExpressions": [
                            {
                                "key": "kubernetes.io/arch",
                                "operator": "In",
                                "values": ["amd64", "arm64"],
                            }
                        ]
                    }
                ]
            }
        }
    },
    "tests": {"enabled": True, "host": "127.0.0.1"},
}
NO_METRICS: dict[str, Any] = {
    "metrics": {"enabled": False},
    "dashboard": {"enabled": False},
    "rbac": {"create": False},
    "serviceAccount": {"create": False, "name": "existing"},
}


@pytest.fixture(scope="module")
def values_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("values")
    files = {}
    for name, values in (("custom", CUSTOM), ("no-metrics", NO_METRICS)):
        files[name] = folder / f"{name}.yaml"
        files[name].write_text(yaml.safe_dump(values))
    return files


def render(helm: Helm, *args: str) -> list[dict[str, Any]]:
    return objects(helm.template(*args))


def deployment_args(docs: list[dict[str, Any]]) -> list[str]:
    container = find(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    return list(container["args"])


# --- one source of truth ------------------------------------------------------------------


def test_the_charts_crd_is_the_repositorys_crd() -> None:
    """Helm installs crds/ as it is: it must be crds/trainingjob.yaml (here a link to it)."""
    chart_crd = CHART / "crds" / "trainingjob.yaml"
    assert chart_crd.read_bytes() == (REPO / "crds" / "trainingjob.yaml").read_bytes()
    assert sorted(p.name for p in (CHART / "crds").iterdir()) == ["trainingjob.yaml"]


def test_chart_versions_follow_the_project() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert chart["appVersion"] == project["version"]
    assert chart["apiVersion"] == "v2"
    # Native sidecars (restartPolicy: Always init containers) are on by default from 1.29.
    assert chart["kubeVersion"] == ">=1.29.0-0"


def test_kubecheck_checks_the_oldest_minor_the_chart_claims(kubecheck: Path) -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    oldest = re.fullmatch(r">=1\.(\d+)\.0-0", chart["kubeVersion"])
    assert oldest is not None
    built_with = subprocess.run(
        [str(kubecheck), "-version"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert re.fullmatch(rf"v0\.{oldest.group(1)}\.\d+", built_with), built_with


def test_operator_rules_are_the_audited_clusterrole(helm: Helm) -> None:
    """The operator's ClusterRole has exactly the rules the end-to-end audit proves."""
    audited = yaml.safe_load((REPO / "operator" / "rbac" / "clusterrole.yaml").read_text())
    docs = render(helm)
    role = find(docs, "ClusterRole", "kwatt-operator")
    assert role["rules"] == audited["rules"]
    binding = find(docs, "ClusterRoleBinding", "kwatt-operator")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "kwatt-operator",
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "kwatt", "namespace": "kwatt-system"}
    ]
    account = find(docs, "ServiceAccount")
    assert account["metadata"]["name"] == "kwatt"
    deployment = find(docs, "Deployment")
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == "kwatt"


# --- lint and template ----------------------------------------------------------------------


@pytest.mark.parametrize("values", ["default", "custom", "no-metrics"])
def test_lint_strict(helm: Helm, values: str, values_files: dict[str, Path]) -> None:
    args = [] if values == "default" else ["-f", str(values_files[values])]
    result = helm.run("lint", "--strict", str(CHART), *args)
    assert "0 chart(s) failed" in result.stdout
    assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout


def test_helm3_and_helm4_render_the_same_objects(
    helm3: Helm, values_files: dict[str, Path], helm_home: Path
) -> None:
    from kwatt_sandbox.controlplane.tools import ensure_tool

    helm4 = Helm("helm4", ensure_tool("helm4"), helm_home / "helm4")
    for args in ([], ["-f", str(values_files["custom"])], ["-f", str(values_files["no-metrics"])]):
        assert render(helm3, *args) == render(helm4, *args)


def test_default_deployment(helm: Helm) -> None:
    docs = render(helm)
    deployment = find(docs, "Deployment", "kwatt")
    spec = deployment["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532  # the image's user (docs/images.md)
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    assert container["image"] == "ghcr.io/kwatt/operator:0.1.0"  # the tag is the appVersion
    assert container["imagePullPolicy"] == "IfNotPresent"
    assert "command" not in container  # the image's entry point, `kwatt operator`
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["runAsNonRoot"] is True
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"health": 8080, "metrics": 8000}
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["resources"]["requests"] == {"cpu": "100m", "memory": "192Mi"}
    assert deployment_args(docs) == [
        "--sidecar-image=ghcr.io/kwatt/sidecar:0.1.0",
        '--sidecar-resources={"requests":{"cpu":"50m","memory":"64Mi"}}',
        "--sidecar-port=8931",
        "--sidecar-metrics-port=8932",
        "--sidecar-state-dir=/var/run/kwatt",
        "--default-eta=0.5",
        "--default-beta=2",
        "--workers=4",
        "--metrics-address=0.0.0.0",
        "--metrics-port=8000",
        "--liveness=http://0.0.0.0:8080/healthz",
    ]
    for key in ("nodeSelector", "tolerations", "affinity", "imagePullSecrets"):
        assert key not in pod
    assert not any(d["kind"] in ("ServiceMonitor", "PodMonitor") for d in docs)
    service = find(docs, "Service", "kwatt-metrics")
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 8000, "targetPort": "metrics", "protocol": "TCP"}
    ]
    assert service["spec"]["selector"] == spec["selector"]["matchLabels"]


def test_default_values_match_the_operators_defaults() -> None:
    """The chart's sidecar defaults are what `kwatt operator` injects without flags."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    defaults = SidecarSettings(image="x")
    assert values["sidecar"]["resources"] == dict(defaults.resources)
    assert values["sidecar"]["port"] == defaults.port
    assert values["sidecar"]["metricsPort"] == defaults.metrics_port
    assert values["sidecar"]["stateDir"] == defaults.state_dir_host_path
    objective = values["defaultObjective"]
    assert (objective["eta"], objective["beta"]) == (spec.DEFAULT_ETA, spec.DEFAULT_BETA)
    assert defaults.objective_defaults == spec.ObjectiveDefaults(
        spec.DEFAULT_ETA, spec.DEFAULT_BETA
    )


def test_aggregated_roles(helm: Helm) -> None:
    docs = render(helm)
    view = find(docs, "ClusterRole", "kwatt-view")
    edit = find(docs, "ClusterRole", "kwatt-edit")
    prefix = "rbac.authorization.k8s.io/aggregate-to-"
    assert {
        k for k, v in view["metadata"]["labels"].items() if k.startswith(prefix) and v == "true"
    } == {
        prefix + "view",
        prefix + "edit",
        prefix + "admin",
    }
    assert {
        k for k, v in edit["metadata"]["labels"].items() if k.startswith(prefix) and v == "true"
    } == {
        prefix + "edit",
        prefix + "admin",
    }
    (view_rule,) = view["rules"]
    assert view_rule["apiGroups"] == ["kwatt.dev"]
    assert set(view_rule["verbs"]) == {"get", "list", "watch"}
    (edit_rule,) = edit["rules"]
    assert edit_rule["resources"] == ["trainingjobs"]
    assert {"create", "update", "patch", "delete"} <= set(edit_rule["verbs"])
    assert set(edit_rule["verbs"]) <= {
        "get",
        "list",
        "watch",
        "create",
        "update",
        "patch",
        "delete",
        "deletecollection",
    }


def test_custom_values(helm: Helm, values_files: dict[str, Path]) -> None:
    docs = render(helm, "-f", str(values_files["custom"]))
    deployment = find(docs, "Deployment", "energy")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "registry.example.com/kwatt/operator:9.9.9"
    assert container["imagePullPolicy"] == "Always"
    assert container["command"] == CUSTOM["command"]
    assert container["resources"] == CUSTOM["resources"]
    assert pod["serviceAccountName"] == "kwatt-sa"
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["priorityClassName"] == "system-cluster-critical"
    assert pod["nodeSelector"] == CUSTOM["nodeSelector"]
    assert pod["tolerations"] == CUSTOM["tolerations"]
    assert pod["affinity"] == CUSTOM["affinity"]
    labels = deployment["spec"]["template"]["metadata"]
    assert labels["labels"]["tier"] == "control"
    assert labels["annotations"] == CUSTOM["podAnnotations"]
    assert container["livenessProbe"]["periodSeconds"] == 7
    assert container["readinessProbe"]["failureThreshold"] == 2
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {
        "health": 9090,
        "metrics": 9100,
    }
    args = deployment_args(docs)
    assert args == [
        "--sidecar-image=registry.example.com/kwatt/sidecar:9.9.8",
        "--sidecar-image-pull-policy=Always",
        '--sidecar-resources={"limits":{"memory":"256Mi"},"requests":{"cpu":"100m","memory":"128Mi"}}',
        "--sidecar-port=9931",
        "--sidecar-metrics-port=9932",
        "--sidecar-state-dir=/var/lib/kwatt",
        "--default-eta=0.25",
        "--default-beta=3.5",
        "--workers=8",
        "--metrics-address=0.0.0.0",
        "--metrics-port=9100",
        "--liveness=http://0.0.0.0:9090/healthz",
        "--namespace=ml",
        "--namespace=research",
        "--verbose",
    ]
    assert find(docs, "ServiceAccount", "kwatt-sa")["metadata"]["annotations"] == {"team": "ml"}
    assert find(docs, "ClusterRoleBinding", "energy-operator")["subjects"][0]["name"] == "kwatt-sa"
    assert not [d for d in docs if d["metadata"]["name"] in ("energy-view", "energy-edit")]
    monitor = find(docs, "ServiceMonitor", "energy")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["endpoints"] == [
        {"port": "metrics", "path": "/metrics", "interval": "15s", "scrapeTimeout": "5s"}
    ]
    service = find(docs, "Service", "energy-metrics")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["kwatt-system"]}
    assert service["metadata"]["annotations"] == {"prometheus.io/scrape": "true"}


def test_the_pod_monitor_scrapes_what_the_operator_injects(
    helm: Helm, values_files: dict[str, Path]
) -> None:
    """Off by default; on, it selects the Pods the operator labels with their TrainingJob and
    the sidecar's named metrics port, as jobs.build_job makes them, in the watched namespaces
    (every namespace when none is given), keeping the sidecar's own labels."""
    docs = render(helm, "-f", str(values_files["custom"]))
    monitor = find(docs, "PodMonitor", "energy-sidecars")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["namespace"] == "kwatt-system"
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["ml", "research"]}
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint == {
        "port": "kwatt-metrics",
        "path": "/metrics",
        "interval": "10s",
        "scrapeTimeout": "4s",
        "honorLabels": True,
    }
    # What the operator builds: a run's Pod labels and its sidecar's ports.
    from kwatt_core.policies.base import Choice

    trainingjob = {
        "metadata": {"name": "cifar", "namespace": "ml", "uid": "u-1"},
        "spec": {
            "template": {"spec": {"containers": [{"name": "train", "image": "t:1"}]}},
            "batchSizes": {"candidates": [16], "default": 16},
            "target": {"metric": "accuracy", "value": 0.6},
        },
    }
    job = jobs.build_job(trainingjob, 1, Choice(16, None, None, "explore"), SidecarSettings("s"))
    pod = job["spec"]["template"]
    (expression,) = monitor["spec"]["selector"]["matchExpressions"]
    assert expression == {"key": jobs.LABEL_TRAININGJOB, "operator": "Exists"}
    assert jobs.LABEL_TRAININGJOB in pod["metadata"]["labels"]
    (sidecar,) = pod["spec"]["initContainers"]
    assert endpoint["port"] in [port["name"] for port in sidecar["ports"]]
    everywhere = render(helm, "--set", "metrics.podMonitor.enabled=true")
    assert find(everywhere, "PodMonitor", "kwatt-sidecars")["spec"]["namespaceSelector"] == {
        "any": True
    }
    # Independent of the operator's own metrics.
    alone = render(
        helm, "--set", "metrics.enabled=false", "--set", "metrics.podMonitor.enabled=true"
    )
    assert find(alone, "PodMonitor", "kwatt-sidecars")
    assert not any(d["kind"] == "PodMonitor" for d in render(helm))


def test_default_objective_has_the_crds_bounds() -> None:
    """values.schema.json's defaultObjective allows exactly what spec.objective allows."""
    values = json.loads((CHART / "values.schema.json").read_text())["properties"]
    chart = values["defaultObjective"]["properties"]
    objective = crd.openapi_schema()["properties"]["spec"]["properties"]["objective"]
    eta, beta = objective["properties"]["eta"], objective["properties"]["beta"]
    assert (chart["eta"]["minimum"], chart["eta"]["maximum"]) == (eta["minimum"], eta["maximum"])
    # OpenAPI 3.0's boolean exclusiveMinimum is draft-07's numeric one.
    assert beta["exclusiveMinimum"] is True and chart["beta"]["exclusiveMinimum"] == beta["minimum"]
    assert "default" not in eta and "default" not in beta  # the operator's defaults apply


def test_the_dashboard_configmap(helm: Helm, values_files: dict[str, Path]) -> None:
    """On by default, labelled for Grafana's dashboard sidecar, holding dashboards/kwatt.json
    as it is; its label, namespace and annotations follow the values; off leaves it out."""
    dashboard = json.loads((CHART / "dashboards" / "kwatt.json").read_text())
    docs = render(helm)
    configmap = find(docs, "ConfigMap", "kwatt-dashboard")
    assert configmap["metadata"]["namespace"] == "kwatt-system"
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["metadata"]["labels"]["app.kubernetes.io/part-of"] == "kwatt"
    assert "annotations" not in configmap["metadata"]
    assert list(configmap["data"]) == ["kwatt.json"]
    assert json.loads(configmap["data"]["kwatt.json"]) == dashboard
    assert (
        configmap["data"]["kwatt.json"] == (CHART / "dashboards" / "kwatt.json").read_text().strip()
    )
    custom = find(render(helm, "-f", str(values_files["custom"])), "ConfigMap", "energy-dashboard")
    assert custom["metadata"]["namespace"] == "monitoring"
    assert custom["metadata"]["labels"]["example.com/dashboard"] == "kwatt"
    assert "grafana_dashboard" not in custom["metadata"]["labels"]
    assert custom["metadata"]["annotations"] == {"grafana_folder": "kwatt"}
    assert json.loads(custom["data"]["kwatt.json"]) == dashboard
    off = render(helm, "--set", "dashboard.enabled=false")
    assert not any(d["kind"] == "ConfigMap" for d in off)


def test_metrics_off(helm: Helm, values_files: dict[str, Path]) -> None:
    docs = render(helm, "-f", str(values_files["no-metrics"]))
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == ["ClusterRole", "ClusterRole", "Deployment"]  # no SA, no operator RBAC
    args = deployment_args(docs)
    assert "--metrics-port=-1" in args
    assert not any(a.startswith("--metrics-address") for a in args)
    container = find(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert [p["name"] for p in container["ports"]] == ["health"]
    assert find(docs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "existing"


@pytest.mark.parametrize("values", ["default", "custom", "no-metrics"])
def test_the_operator_accepts_the_charts_flags(
    helm3: Helm, values: str, values_files: dict[str, Path]
) -> None:
    """Every flag the Deployment passes is one `kwatt operator` knows, with a valid value."""
    args = [] if values == "default" else ["-f", str(values_files[values])]
    flags = deployment_args(render(helm3, *args))
    parser = argparse.ArgumentParser(exit_on_error=False)
    operator_cli.add_arguments(parser)
    parsed = parser.parse_args(flags)
    expected_objective = (
        CUSTOM if values == "custom" else yaml.safe_load((CHART / "values.yaml").read_text())
    )["defaultObjective"]
    assert operator_cli.objective_defaults(parsed) == spec.ObjectiveDefaults(
        expected_objective["eta"], expected_objective["beta"]
    )
    if parsed.sidecar_resources:
        resources = operator_cli.parse_resources(parsed.sidecar_resources)
        expected = (
            CUSTOM if values == "custom" else yaml.safe_load((CHART / "values.yaml").read_text())
        )
        assert resources == expected["sidecar"]["resources"]


def test_helm_test_hook(helm: Helm, values_files: dict[str, Path]) -> None:
    docs = render(helm)
    pod = find(docs, "Pod", "kwatt-test-metrics")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    (container,) = pod["spec"]["containers"]
    assert container["command"][-1] == "http://kwatt-metrics.kwatt-system.svc:8000/metrics"
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    custom = render(helm, "-f", str(values_files["custom"]))
    pod = find(custom, "Pod", "energy-test-metrics")
    assert pod["spec"]["containers"][0]["command"][-1] == "http://127.0.0.1:9100/metrics"
    assert not any(d["kind"] == "Pod" for d in render(helm, "-f", str(values_files["no-metrics"])))


def test_the_package_carries_the_linked_files(helm: Helm, tmp_path: Path) -> None:
    """`helm package` copies the CRD and the RBAC file through their links."""
    helm.run("package", str(CHART), "-d", str(tmp_path))
    (archive,) = tmp_path.glob("kwatt-*.tgz")
    with tarfile.open(archive) as tar:
        crd = tar.extractfile("kwatt/crds/trainingjob.yaml")
        rbac = tar.extractfile("kwatt/files/operator-clusterrole.yaml")
        assert crd is not None and rbac is not None
        assert crd.read() == (REPO / "crds" / "trainingjob.yaml").read_bytes()
        assert rbac.read() == (REPO / "operator" / "rbac" / "clusterrole.yaml").read_bytes()
    # The packaged chart renders the same objects as the folder.
    assert objects(
        helm.run("template", "kwatt", str(archive), "-n", "kwatt-system").stdout
    ) == render(helm)


# --- bad values -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "image.pullPolicy=Sometimes"], r"image/pullPolicy"),
        (["--set", "workers=0"], r"/workers"),
        (["--set", "metrics.port=70000"], r"metrics/port"),
        (["--set", "metrics.prot=9000"], r"prot"),
        (["--set", "replicas=2"], r"replicas"),
        (["--set", "sidecar.stateDir=relative/dir"], r"sidecar/stateDir"),
        (["--set", "sidecar.resources.requests.cpu=lots"], r"sidecar/resources/requests/cpu"),
        (["--set", "watchNamespaces[0]=Not_A_Namespace"], r"watchNamespaces/0"),
        (["--set", "metrics.serviceMonitor.interval=often"], r"serviceMonitor/interval"),
        (["--set-json", 'tolerations={"key":"x"}'], r"tolerations"),
        (["--set-json", "dashboard.labelValue=1"], r"dashboard/labelValue"),
        (["--set", "dashboard.label=bad label"], r"dashboard/label"),
        (["--set", "dashboard.namespace=Not_A_Namespace"], r"dashboard/namespace"),
        (["--set", "defaultObjective.eta=1.5"], r"defaultObjective/eta"),
        (["--set", "defaultObjective.eta=-0.1"], r"defaultObjective/eta"),
        (["--set", "defaultObjective.beta=1"], r"defaultObjective/beta"),
        (["--set", "defaultObjective.beta=high"], r"defaultObjective/beta"),
        (["--set", "metrics.podMonitor.interval=often"], r"podMonitor/interval"),
    ],
)
def test_bad_values_fail_with_their_name(helm: Helm, args: list[str], message: str) -> None:
    result = helm.run("template", "kwatt", str(CHART), *args, check=False)
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr
    assert re.search(message, result.stderr), result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--set", "metrics.enabled=false", "--set", "metrics.serviceMonitor.enabled=true"],
            "metrics.serviceMonitor.enabled needs metrics.enabled and metrics.service.enabled",
        ),
        (["--set", "metrics.port=8080"], "metrics.port and health.port must differ"),
        (["--set", "sidecar.port=8932"], "sidecar.port and sidecar.metricsPort must differ"),
        (
            ["--set", "serviceAccount.create=false"],
            "serviceAccount.name is required when serviceAccount.create is false",
        ),
    ],
)
def test_inconsistent_values_fail_with_a_sentence(
    helm: Helm, args: list[str], message: str
) -> None:
    result = helm.run("template", "kwatt", str(CHART), *args, check=False)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


def test_older_kubernetes_is_refused(helm: Helm) -> None:
    result = helm.run("template", "kwatt", str(CHART), "--kube-version", "1.28.9", check=False)
    assert result.returncode != 0
    assert "kubeVersion" in result.stderr or ">=1.29.0-0" in result.stderr, result.stderr
    helm.run("template", "kwatt", str(CHART), "--kube-version", "1.29.0")
    helm.run("template", "kwatt", str(CHART), "--kube-version", "v1.29.4-eks-036c24b")


# --- Kubernetes 1.29's API types ----------------------------------------------------------------


def run_kubecheck(kubecheck: Path, text: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(kubecheck)], input=text, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.parametrize("values", ["default", "custom", "no-metrics"])
def test_objects_are_valid_kubernetes_1_29(
    helm: Helm, kubecheck: Path, values: str, values_files: dict[str, Path]
) -> None:
    args = [] if values == "default" else ["-f", str(values_files[values])]
    rendered = helm.template("--include-crds", "--kube-version", "1.29.0", *args)
    result = run_kubecheck(kubecheck, rendered)
    assert result.returncode == 0, result.stderr
    count = len(objects(rendered))
    assert result.stdout.strip() == f"{count} objects, 0 invalid"
    assert any(d["kind"] == "CustomResourceDefinition" for d in objects(rendered))


def test_kubecheck_rejects_what_1_29_does_not_know(kubecheck: Path) -> None:
    """It is not a rubber stamp: unknown fields, wrong types, APIs newer than 1.29."""
    bad = [
        # Pod-level resources came in 1.32.
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "a"},
            "spec": {"containers": [{"name": "c", "image": "i"}], "resources": {}},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "b"},
            "spec": {"replicas": "one"},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "c"},
            "spec": {
                "template": {
                    "spec": {
                        "containers": [{"name": "c", "imagePullPolicy": "Always", "imagee": "i"}]
                    }
                }
            },
        },
        {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim", "metadata": {"name": "d"}},
        {
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": "ServiceMonitor",
            "metadata": {"name": "e"},
            "spec": {"endpoints": [{"port": "metrics", "intervall": "15s"}]},
        },
    ]
    good = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "ok"},
        "spec": {
            "initContainers": [{"name": "s", "image": "i", "restartPolicy": "Always"}],
            "containers": [{"name": "c", "image": "i"}],
        },
    }
    result = run_kubecheck(kubecheck, yaml.safe_dump_all([*bad, good]))
    assert result.returncode == 1
    assert result.stdout.strip() == "6 objects, 5 invalid"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 5
    assert 'unknown field "spec.resources"' in lines[0]
    assert "replicas" in lines[1]
    assert 'unknown field "spec.template.spec.containers[0].imagee"' in lines[2]
    assert "not an API this Kubernetes serves" in lines[3]
    assert "intervall" in lines[4]


def test_values_schema_is_json(tmp_path: Path) -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(values) <= set(schema["properties"])
    assert schema["additionalProperties"] is False


def test_the_test_hooks_check_passes_and_fails(helm3: Helm) -> None:
    """The hook's script, run here against a server with and without the operator's metrics."""
    import http.server
    import sys
    import threading

    pod = find(render(helm3), "Pod", "kwatt-test-metrics")
    python, flag, script, _url = pod["spec"]["containers"][0]["command"]
    assert (python, flag) == ("python", "-c")
    body = {"text": b"# HELP kwatt_reconcile_errors_total Reconcile errors.\n"}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()
            self.wfile.write(body["text"])

        def log_message(self, *_: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/metrics"
    try:
        ok = subprocess.run([sys.executable, "-c", script, url], capture_output=True, text=True)
        assert ok.returncode == 0, ok.stderr
        assert "the operator's metrics are there" in ok.stdout
        body["text"] = b"something else\n"
        bad = subprocess.run([sys.executable, "-c", script, url], capture_output=True, text=True)
        assert bad.returncode == 1
        assert "answered without the operator's metrics" in bad.stderr
    finally:
        server.shutdown()
