"""The TrainingJob CRD: one file, a valid apiextensions.k8s.io/v1 shape, and a schema
whose defaults, validation (CEL rules included) and printer columns behave as
docs/design.md's contract says once a real kube-apiserver (the session's cluster) serves it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from kwatt_operator import crd, spec
from kwatt_sandbox.testing import Cluster, eventually

REPO = Path(__file__).resolve().parents[2]
SPEC = {
    "template": {"spec": {"containers": [{"name": "train", "image": "example.com/train:1"}]}},
    "batchSizes": {"candidates": [8, 16, 32], "default": 16},
    "target": {"metric": "accuracy", "value": 0.6},
}


def _props(schema: dict[str, Any], *path: str) -> dict[str, Any]:
    node = schema
    for key in path:
        node = node["properties"][key]
    return node


def test_one_file_is_the_source_of_truth() -> None:
    on_disk = yaml.safe_load((REPO / "crds" / "trainingjob.yaml").read_text())
    assert crd.load_crd() == on_disk
    assert crd.crd_path().resolve() == (REPO / "crds" / "trainingjob.yaml").resolve()
    first = crd.load_crd()
    first["spec"]["group"] = "changed"
    assert crd.load_crd()["spec"]["group"] == "kwatt.dev"  # callers get copies


def test_crd_has_the_apiextensions_v1_shape() -> None:
    doc = crd.load_crd()
    assert doc["apiVersion"] == "apiextensions.k8s.io/v1"
    assert doc["kind"] == "CustomResourceDefinition"
    assert doc["metadata"]["name"] == "trainingjobs.kwatt.dev" == crd.CRD_NAME
    s = doc["spec"]
    assert s["group"] == "kwatt.dev" and s["scope"] == "Namespaced"
    names = s["names"]
    assert (names["kind"], names["plural"], names["singular"]) == (
        "TrainingJob",
        "trainingjobs",
        "trainingjob",
    )
    assert names["shortNames"] == ["tj"]
    (version,) = s["versions"]
    assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}
    columns = {c["name"]: c for c in version["additionalPrinterColumns"]}
    assert {"State", "Runs", "Batch", "Limit (W)", "Energy (J)", "Age"} <= set(columns)
    assert columns["Age"] == {
        "name": "Age",
        "type": "date",
        "jsonPath": ".metadata.creationTimestamp",
    }
    for column in columns.values():
        assert column["type"] in {"integer", "number", "string", "boolean", "date"}
        assert column["jsonPath"].startswith(".")


def _check_structural(node: dict[str, Any], path: str, problems: list[str]) -> None:
    """Kubernetes' structural-schema rules that a YAML typo would break."""
    preserve = node.get("x-kubernetes-preserve-unknown-fields") or node.get(
        "x-kubernetes-int-or-string"
    )
    if "type" not in node and not preserve:
        problems.append(f"{path}: no type")
    for banned in ("$ref", "oneOf", "anyOf", "allOf", "not"):
        if banned in node and path.count(".") < 1:
            problems.append(f"{path}: {banned} at the root")
    if "exclusiveMinimum" in node and not isinstance(node["exclusiveMinimum"], bool):
        problems.append(f"{path}: exclusiveMinimum must be a boolean in apiextensions v1")
    if node.get("type") == "array" and "items" not in node:
        problems.append(f"{path}: array without items")
    if "default" in node:
        problems.extend(_check_default(node["default"], node, path))
    for key, sub in (node.get("properties") or {}).items():
        _check_structural(sub, f"{path}.{key}", problems)
    if isinstance(node.get("items"), dict):
        _check_structural(node["items"], f"{path}[]", problems)
    if node.get("x-kubernetes-embedded-resource"):
        problems.append(f"{path}: embedded resources need apiVersion/kind; a PodTemplate has none")


def _check_default(value: Any, node: dict[str, Any], path: str) -> list[str]:
    expected = {"string": str, "boolean": bool, "object": dict, "array": list}.get(node["type"])
    if node["type"] in ("integer", "number"):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    else:
        ok = expected is not None and isinstance(value, expected)
    if "enum" in node and value not in node["enum"]:
        ok = False
    return [] if ok else [f"{path}: default {value!r} does not fit its schema"]


def test_schema_is_structural() -> None:
    problems: list[str] = []
    _check_structural(crd.openapi_schema(), "", problems)
    assert problems == []


def test_crd_defaults_equal_the_parsers_defaults() -> None:
    s = _props(crd.openapi_schema(), "spec")
    assert _props(s, "batchSizes", "env")["default"] == spec.DEFAULT_BATCH_SIZE_ENV
    assert _props(s, "target", "higherIsBetter")["default"] is spec.DEFAULT_HIGHER_IS_BETTER
    # No schema default for eta and beta: the operator applies its own (--default-eta,
    # --default-beta), which the API server's defaulting would otherwise always pre-empt.
    assert "default" not in _props(s, "objective", "eta")
    assert "default" not in _props(s, "objective", "beta")
    assert (spec.DEFAULT_ETA, spec.DEFAULT_BETA) == (0.5, 2)
    assert _props(s, "powerLimit", "mode")["default"] == spec.DEFAULT_POWER_MODE == "optimize"
    assert _props(s, "powerLimit", "mode")["enum"] == list(spec.POWER_MODES)
    assert _props(s, "powerLimit", "warmupSteps")["default"] == spec.DEFAULT_WARMUP_STEPS == 10
    assert _props(s, "powerLimit", "measureSteps")["default"] == spec.DEFAULT_MEASURE_STEPS == 40
    assert _props(s, "concurrencyPolicy")["default"] == spec.DEFAULT_CONCURRENCY == "Forbid"
    assert _props(s, "concurrencyPolicy")["enum"] == list(spec.CONCURRENCY_POLICIES)
    assert _props(s, "suspend")["default"] is False
    assert _props(s, "historyLimit")["default"] == spec.DEFAULT_HISTORY_LIMIT == 20
    assert _props(s, "historyLimit")["maximum"] == spec.MAX_HISTORY_LIMIT == 100
    status = _props(crd.openapi_schema(), "status")
    assert _props(status, "history")["maxItems"] == spec.MAX_HISTORY_LIMIT
    # Nested defaults only apply when the parent exists: the parents default to {}.
    assert _props(s, "objective")["default"] == {} == _props(s, "powerLimit")["default"]


# --- served by an API server ----------------------------------------------------------------


def _register(cluster: Cluster, api_client: Any, namespace: str) -> Any:
    """Apply the CRD server-side (idempotent: other tests of the session apply it too)."""
    from kubernetes import client

    cluster.apply_crd(crd.crd_path(), crd.CRD_NAME)
    custom = client.CustomObjectsApi(api_client)
    eventually(
        lambda: (
            custom.list_namespaced_custom_object("kwatt.dev", "v1alpha1", namespace, "trainingjobs")
            is not None
        )
    )
    return custom


def _tj(name: str, spec_: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "kwatt.dev/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": name},
        "spec": spec_,
    }


@pytest.mark.timeout(60)
def test_served_crd_defaults_validates_and_prints(
    cluster: Cluster, api_client: Any, namespace: str
) -> None:
    from kubernetes.client.rest import ApiException

    custom = _register(cluster, api_client, namespace)
    created = custom.create_namespaced_custom_object(
        "kwatt.dev", "v1alpha1", namespace, "trainingjobs", _tj("cifar", SPEC)
    )
    s = created["spec"]
    assert s["objective"] == {}  # eta and beta are the operator's to fill in
    assert s["powerLimit"] == {"mode": "optimize", "warmupSteps": 10, "measureSteps": 40}
    assert s["batchSizes"]["env"] == "KWATT_BATCH_SIZE"
    assert s["target"]["higherIsBetter"] is True
    assert (s["concurrencyPolicy"], s["suspend"], s["historyLimit"]) == ("Forbid", False, 20)
    assert "schedule" not in s and "backoffLimit" not in s
    # What the API server stored, the operator's parser accepts, with the same values.
    parsed = spec.parse_spec(s)
    assert parsed.objective.eta == 0.5 and parsed.power_limit.mode == "optimize"
    assert parsed.objective.beta == 2
    own = spec.parse_spec(s, spec.ObjectiveDefaults(eta=0.8, beta=3))
    assert (own.objective.eta, own.objective.beta) == (0.8, 3)

    bad = {**SPEC, "objective": {"eta": 1.5}}
    with pytest.raises(ApiException) as info:
        custom.create_namespaced_custom_object(
            "kwatt.dev", "v1alpha1", namespace, "trainingjobs", _tj("bad", bad)
        )
    assert info.value.status == 422
    body = json.loads(info.value.body)
    fields = [cause.get("field") for cause in body["details"]["causes"]]
    assert "spec.objective.eta" in fields
    assert "spec.objective.eta" in body["message"]

    for wrong, field in [
        ({**SPEC, "objective": {"beta": 1}}, "spec.objective.beta"),
        ({**SPEC, "powerLimit": {"mode": "turbo"}}, "spec.powerLimit.mode"),
        ({**SPEC, "batchSizes": {"candidates": [], "default": 8}}, "spec.batchSizes.candidates"),
        ({**SPEC, "historyLimit": 101}, "spec.historyLimit"),
        ({k: v for k, v in SPEC.items() if k != "target"}, "spec.target"),
    ]:
        with pytest.raises(ApiException) as info:
            custom.create_namespaced_custom_object(
                "kwatt.dev", "v1alpha1", namespace, "trainingjobs", _tj("wrong", wrong)
            )
        assert info.value.status == 422, field
        assert field in info.value.body, field

    # The status subresource carries what the printer columns show, and keeps (does not
    # prune) the GPUs' record that the operator writes from the reports.
    gpu = {"model": "Tesla V100-SXM2-32GB", "count": 2, "minLimitWatts": 100, "maxLimitWatts": 250}
    patched = custom.patch_namespaced_custom_object_status(
        "kwatt.dev",
        "v1alpha1",
        namespace,
        "trainingjobs",
        "cifar",
        {
            "status": {
                "state": "Running",
                "runs": 3,
                "currentBatchSize": 16,
                "currentPowerLimitWatts": 175,
                "totals": {"energyJoules": 12345.5, "seconds": 60},
                "savings": {"energyPercent": 21.5, "timePercent": -3.0},
                "gpu": gpu,
            }
        },
    )
    assert patched["status"]["gpu"] == gpu
    result = cluster.kubectl("get", "tj", "-n", namespace)
    header, row = result.stdout.splitlines()[:2]
    assert header.split() == [
        "NAME",
        "STATE",
        "RUNS",
        "BATCH",
        "LIMIT",
        "(W)",
        "ENERGY",
        "(J)",
        "AGE",
    ]
    assert row.split()[:6] == ["cifar", "Running", "3", "16", "175", "12345.5"]
    wide = cluster.kubectl("get", "trainingjobs", "-o", "wide", "-n", namespace)
    assert "SAVED (%)" in wide.stdout and "21.5" in wide.stdout


@pytest.mark.timeout(60)
def test_cel_rules_reject_inconsistent_specs(
    cluster: Cluster, api_client: Any, namespace: str
) -> None:
    """The CRD's x-kubernetes-validations run in the real API server: a default batch size
    outside the candidates, and a fixed power limit without watts, are refused with the
    CRD's own messages (kubectl shows them to the user as they are)."""
    _register(cluster, api_client, namespace)
    not_a_candidate = {**SPEC, "batchSizes": {"candidates": [8, 16, 32], "default": 64}}
    fixed_without_watts = {**SPEC, "powerLimit": {"mode": "fixed"}}
    for name, wrong, message in [
        ("off-list", not_a_candidate, "spec.batchSizes.default must be one of"),
        ("no-watts", fixed_without_watts, "spec.powerLimit.fixedWatts is required"),
    ]:
        result = cluster.kubectl(
            "create", "-n", namespace, "-f", "-", input=json.dumps(_tj(name, wrong)), check=False
        )
        assert result.returncode != 0
        assert "is invalid" in result.stderr and message in result.stderr, result.stderr
        assert cluster.kubectl("get", "tj", name, "-n", namespace, check=False).returncode != 0
    fine = {**SPEC, "powerLimit": {"mode": "fixed", "fixedWatts": 200}}
    cluster.kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(_tj("fine", fine)))


@pytest.mark.timeout(60)
def test_cel_rules_check_the_carbon_source(
    cluster: Cluster, api_client: Any, namespace: str
) -> None:
    """spec.objective.carbon in the real API server: a provider that needs credentials
    without a Secret, a replayed series without a ConfigMap and an unknown source kind are
    refused with the CRD's messages; a complete one is stored as given (docs/carbon.md)."""
    _register(cluster, api_client, namespace)

    def with_carbon(carbon: dict[str, Any]) -> dict[str, Any]:
        return {**SPEC, "objective": {"carbon": carbon}}

    for name, carbon, message in [
        (
            "no-secret",
            {"source": {"kind": "electricitymaps", "zone": "DE"}},
            "spec.objective.carbon.source.secretName is required",
        ),
        ("no-map", {"source": {"kind": "csv"}}, "spec.objective.carbon.source.configMap is"),
        ("coal", {"source": {"kind": "coal"}}, "Unsupported value"),
        ("slow", {"source": {"kind": "uk"}, "intervalMinutes": 0}, "intervalMinutes"),
    ]:
        result = cluster.kubectl(
            "create",
            "-n",
            namespace,
            "-f",
            "-",
            input=json.dumps(_tj(name, with_carbon(carbon))),
            check=False,
        )
        assert result.returncode != 0 and message in result.stderr, result.stderr
    good = {
        "source": {"kind": "watttime", "zone": "CAISO_NORTH", "secretName": "wt"},
        "intervalMinutes": 15,
        "referenceGramsPerKWh": 90,
    }
    cluster.kubectl(
        "create", "-n", namespace, "-f", "-", input=json.dumps(_tj("ok", with_carbon(good)))
    )
    stored = json.loads(cluster.kubectl("get", "tj", "ok", "-n", namespace, "-o", "json").stdout)
    assert stored["spec"]["objective"]["carbon"] == good


def test_python_names_match_the_file() -> None:
    doc = crd.load_crd()
    assert doc["spec"]["group"] == crd.GROUP and doc["spec"]["names"]["kind"] == crd.KIND
    assert doc["spec"]["names"]["plural"] == crd.PLURAL
    assert f"{crd.GROUP}/{doc['spec']['versions'][0]['name']}" == crd.API_VERSION
