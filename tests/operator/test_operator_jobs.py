"""Building run N's Job: names, owner, labels (Kueue's too), the trainer's env, and the
native sidecar with the env contract of kwatt_core.contract and docs/sidecar.md."""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import pytest

from conftest import TJ_UID, sample_trainingjob
from kwatt_core import contract
from kwatt_core.policies.base import Choice
from kwatt_operator.jobs import (
    SidecarSettings,
    build_job,
    choice_of_job,
    job_name,
    label_value,
    merge_env,
)
from kwatt_operator.spec import SpecError

SETTINGS = SidecarSettings(image="ghcr.io/kwatt/sidecar:0.1")
CHOICE = Choice(batch_size=32, power_limit_w=None, cost_threshold=1234.5, stage="explore")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def _sidecar(job: dict[str, Any]) -> dict[str, Any]:
    (sidecar,) = [
        c
        for c in job["spec"]["template"]["spec"]["initContainers"]
        if c["name"] == contract.SIDECAR_CONTAINER
    ]
    return sidecar


def test_name_owner_labels_and_annotations() -> None:
    tj = sample_trainingjob()
    job = build_job(tj, 7, CHOICE, SETTINGS)
    assert job["apiVersion"] == "batch/v1" and job["kind"] == "Job"
    meta = job["metadata"]
    assert meta["name"] == "cifar-run-7" and meta["namespace"] == "ml"
    assert meta["ownerReferences"] == [
        {
            "apiVersion": "kwatt.dev/v1alpha1",
            "kind": "TrainingJob",
            "name": "cifar",
            "uid": TJ_UID,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert meta["labels"] == {
        "kueue.x-k8s.io/queue-name": "gpu-queue",
        "team": "vision",
        "kwatt.dev/trainingjob": "cifar",
        "kwatt.dev/run": "7",
    }
    pod_labels = job["spec"]["template"]["metadata"]["labels"]
    assert pod_labels == {"app": "cifar", "kwatt.dev/trainingjob": "cifar", "kwatt.dev/run": "7"}
    assert json.loads(meta["annotations"]["kwatt.dev/choice"])["batchSize"] == 32
    assert choice_of_job(job) == CHOICE
    assert choice_of_job({"metadata": {"annotations": {"kwatt.dev/choice": "{"}}}) is None
    assert choice_of_job({}) is None


def test_names_are_deterministic_valid_labels() -> None:
    assert job_name("cifar", 1) == "cifar-run-1"
    long_a, long_b = "a" * 80 + "-x", "a" * 80 + "-y"
    for base in (long_a, long_b, "x" * 58, "my.dotted.name", "a" * 253):
        name = job_name(base, 12345)
        assert len(name) <= 63 and DNS_LABEL.match(name), name
        assert name.endswith("-run-12345") and name == job_name(base, 12345)
    assert job_name(long_a, 1) != job_name(long_b, 1)
    # Shortened, a name still starts with the TrainingJob's (cleaned) name, then the hash.
    assert job_name(long_a, 12345).startswith("a" * 44 + "-")
    assert job_name("my.dotted.name", 7).startswith("my-dotted-name-")
    cut_at_a_dash = job_name("a" * 43 + "-" + "b" * 40, 12345)
    assert cut_at_a_dash.startswith("a" * 43 + "-") and "--" not in cut_at_a_dash
    assert len(label_value("a" * 100)) <= 63 and label_value("short.name") == "short.name"


def test_run_policy_goes_to_the_job_and_suspend_only_when_asked() -> None:
    tj = sample_trainingjob(backoffLimit=1, activeDeadlineSeconds=7200, ttlSecondsAfterFinished=60)
    spec = build_job(tj, 1, CHOICE, SETTINGS)["spec"]
    assert (spec["backoffLimit"], spec["activeDeadlineSeconds"]) == (1, 7200)
    # The TTL is the operator's to apply once the run is recorded, never the Job's own.
    assert "ttlSecondsAfterFinished" not in spec and "suspend" not in spec
    assert build_job(tj, 1, CHOICE, SETTINGS, suspend=True)["spec"]["suspend"] is True
    bare = build_job(sample_trainingjob(), 1, CHOICE, SETTINGS)["spec"]
    assert set(bare) == {"template"}


def test_trainer_env_is_merged_without_duplicates() -> None:
    tj = sample_trainingjob()
    trainer = tj["spec"]["template"]["spec"]["containers"][0]
    trainer["env"] = [
        {"name": "EPOCHS", "value": "10"},
        {"name": "KWATT_BATCH_SIZE", "value": "999"},
        {"name": "KWATT_PORT", "valueFrom": {"configMapKeyRef": {"name": "x", "key": "y"}}},
    ]
    job = build_job(tj, 1, CHOICE, SETTINGS)
    env = job["spec"]["template"]["spec"]["containers"][0]["env"]
    assert env == [
        {"name": "EPOCHS", "value": "10"},
        {"name": "KWATT_BATCH_SIZE", "value": "32"},
        {"name": "KWATT_PORT", "value": str(contract.DEFAULT_PORT)},
        {"name": "KWATT_TARGET_METRIC_NAME", "value": "accuracy"},
    ]


def test_custom_batch_env_also_sets_the_clients_variable() -> None:
    tj = sample_trainingjob(batchSizes={"candidates": [8, 16, 32], "default": 16, "env": "BS"})
    names = _env(build_job(tj, 1, CHOICE, SETTINGS)["spec"]["template"]["spec"]["containers"][0])
    assert names["BS"] == "32" and names["KWATT_BATCH_SIZE"] == "32" and names["EPOCHS"] == "10"


def test_merge_env_collapses_existing_duplicates_to_one() -> None:
    env = [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}, {"name": "A", "value": "3"}]
    assert merge_env(env, [{"name": "A", "value": "9"}]) == [
        {"name": "A", "value": "9"},
        {"name": "B", "value": "2"},
    ]


def test_sidecar_is_a_native_sidecar_with_the_env_contract() -> None:
    tj = sample_trainingjob(objective={"eta": 0.25, "beta": 3})
    job = build_job(tj, 4, CHOICE, SETTINGS)
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert [c["name"] for c in pod["containers"]] == ["train"]
    sidecar = _sidecar(job)
    assert sidecar["restartPolicy"] == "Always"
    assert sidecar["command"] == ["python", "-m", "kwatt_sidecar"]
    assert sidecar["image"] == "ghcr.io/kwatt/sidecar:0.1"
    assert "nvidia.com/gpu" not in json.dumps(sidecar["resources"])  # only the trainer gets GPUs
    assert set(sidecar["resources"]) == {"requests"}
    env = _env(sidecar)
    assert env == {
        "KWATT_RUN": "4",
        "KWATT_JOB": "ml/cifar",
        "KWATT_BATCH_SIZE": "32",
        "KWATT_ETA": "0.25",
        "KWATT_BETA": "3",
        "KWATT_COST_THRESHOLD": "1234.5",
        "KWATT_TARGET_METRIC": "0.6",
        "KWATT_TARGET_HIGHER_IS_BETTER": "true",
        "KWATT_MAX_EPOCHS": "50",
        "KWATT_POWER_MODE": "optimize",
        "KWATT_WARMUP_STEPS": "10",
        "KWATT_MEASURE_STEPS": "40",
        "KWATT_PORT": "8931",
        "KWATT_METRICS_PORT": "8932",
        "KWATT_TERMINATION_PATH": sidecar["terminationMessagePath"],
        "KWATT_STATE_DIR": "/var/run/kwatt",
        "POD_NAME": {"fieldRef": {"fieldPath": "metadata.name"}},
        "POD_NAMESPACE": {"fieldRef": {"fieldPath": "metadata.namespace"}},
        "NVIDIA_VISIBLE_DEVICES": "all",
        "NVIDIA_DRIVER_CAPABILITIES": "utility",
    }
    assert len(sidecar["env"]) == len(env)  # no name twice
    assert sidecar["startupProbe"] == {
        "httpGet": {"path": "/healthz", "port": 8932},
        "periodSeconds": 1,
        "failureThreshold": 30,
    }
    assert sidecar["volumeMounts"] == [{"name": "kwatt-state", "mountPath": "/var/run/kwatt"}]
    assert {
        "name": "kwatt-state",
        "hostPath": {"path": "/var/run/kwatt", "type": "DirectoryOrCreate"},
    } in pod["volumes"]


@pytest.mark.parametrize(
    ("power", "choice", "privileged", "limits"),
    [
        ({"mode": "optimize"}, CHOICE, True, {}),
        (
            {"mode": "optimize"},
            Choice(16, 175, None, "exploit"),
            True,
            {"KWATT_CACHED_LIMIT_W": "175"},
        ),
        (
            {"mode": "fixed", "fixedWatts": 200},
            Choice(16, 175, None, "exploit"),
            True,
            {"KWATT_FIXED_LIMIT_W": "200"},
        ),
        ({"mode": "observe"}, Choice(16, 175, None, "exploit"), False, {}),
        # A fixedWatts left over from fixed mode is not handed on: the sidecar would check
        # it (1 to 10,000 W) and refuse to start over a limit it would never set.
        ({"mode": "observe", "fixedWatts": 20000}, CHOICE, False, {}),
        (
            {"mode": "optimize", "fixedWatts": 20000},
            Choice(16, 175, None, "exploit"),
            True,
            {"KWATT_CACHED_LIMIT_W": "175"},
        ),
    ],
)
def test_sidecar_privilege_and_limits_per_mode(
    power: dict[str, Any], choice: Choice, privileged: bool, limits: dict[str, str]
) -> None:
    job = build_job(sample_trainingjob(powerLimit=power), 1, choice, SETTINGS)
    sidecar = _sidecar(job)
    env = _env(sidecar)
    assert env["KWATT_POWER_MODE"] == power["mode"]
    assert {k: v for k, v in env.items() if k.endswith("_LIMIT_W")} == limits
    assert "KWATT_COST_THRESHOLD" not in env or choice.cost_threshold is not None
    security = sidecar["securityContext"]
    added = security.get("capabilities", {}).get("add", [])
    assert added == (["SYS_ADMIN"] if privileged else [])
    assert security["capabilities"]["drop"] == ["ALL"]  # nothing of the runtime's defaults
    assert not security.get("privileged")
    # The node folder for restore records goes with the privilege to change limits: observe
    # mode gets neither (no hostPath: the Pod can pass the baseline Pod Security Standard).
    volumes = job["spec"]["template"]["spec"].get("volumes", [])
    host_paths = [v for v in volumes if "hostPath" in v]
    if privileged:
        assert host_paths == [
            {
                "name": "kwatt-state",
                "hostPath": {"path": "/var/run/kwatt", "type": "DirectoryOrCreate"},
            }
        ]
        assert sidecar["volumeMounts"] == [{"name": "kwatt-state", "mountPath": "/var/run/kwatt"}]
        assert env["KWATT_STATE_DIR"] == "/var/run/kwatt"
        assert "runAsNonRoot" not in security  # root: the only user that can use SYS_ADMIN
    else:
        assert host_paths == [] and "volumeMounts" not in sidecar
        assert "KWATT_STATE_DIR" not in env
        # What the restricted standard asks of a container, on the sidecar's own context.
        assert security["allowPrivilegeEscalation"] is False
        assert security["runAsNonRoot"] is True and security["runAsUser"] > 0
        assert security["seccompProfile"] == {"type": "RuntimeDefault"}


def test_observe_mode_leaves_the_templates_volumes_and_still_reserves_the_name() -> None:
    template = {
        "spec": {
            "containers": [{"name": "train", "image": "train:1"}],
            "volumes": [{"name": "data", "emptyDir": {}}],
        }
    }
    tj = sample_trainingjob(template=template, powerLimit={"mode": "observe"})
    pod = build_job(tj, 1, CHOICE, SETTINGS)["spec"]["template"]["spec"]
    assert pod["volumes"] == [{"name": "data", "emptyDir": {}}]
    template["spec"]["volumes"].append({"name": "kwatt-state", "emptyDir": {}})
    clash = sample_trainingjob(template=template, powerLimit={"mode": "observe"})
    with pytest.raises(SpecError, match="kwatt-state"):
        build_job(clash, 1, CHOICE, SETTINGS)


def test_two_containers_with_trainer_and_user_init_containers() -> None:
    template = {
        "spec": {
            "restartPolicy": "OnFailure",
            "initContainers": [{"name": "fetch", "image": "busybox"}],
            "containers": [
                {"name": "logger", "image": "log:1"},
                {"name": "train", "image": "train:1"},
            ],
            "volumes": [{"name": "data", "emptyDir": {}}],
        }
    }
    tj = sample_trainingjob(template=template, trainer="train")
    pod = build_job(tj, 1, CHOICE, SETTINGS)["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "OnFailure"
    assert [c["name"] for c in pod["initContainers"]] == ["fetch", "kwatt-sidecar"]
    assert "env" not in pod["containers"][0]
    assert _env(pod["containers"][1])["KWATT_BATCH_SIZE"] == "32"
    assert [v["name"] for v in pod["volumes"]] == ["data", "kwatt-state"]
    with pytest.raises(SpecError, match=r"spec\.trainer is required"):
        build_job(sample_trainingjob(template=template), 1, CHOICE, SETTINGS)


def test_always_restart_policy_becomes_never() -> None:
    tj = sample_trainingjob()
    tj["spec"]["template"]["spec"]["restartPolicy"] = "Always"
    assert (
        build_job(tj, 1, CHOICE, SETTINGS)["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    )


def test_refusals() -> None:
    tj = sample_trainingjob()
    tj["spec"]["template"]["spec"]["containers"].append({"name": "kwatt-sidecar", "image": "x"})
    tj["spec"]["trainer"] = "train"
    with pytest.raises(SpecError, match="kwatt-sidecar"):
        build_job(tj, 1, CHOICE, SETTINGS)
    clash = sample_trainingjob()
    clash["spec"]["template"]["spec"]["volumes"] = [{"name": "kwatt-state", "emptyDir": {}}]
    with pytest.raises(SpecError, match=r"spec\.template\.spec\.volumes"):
        build_job(clash, 1, CHOICE, SETTINGS)
    with pytest.raises(SpecError, match="Batch size 64 is not among"):
        build_job(sample_trainingjob(), 1, Choice(64, None, None, "explore"), SETTINGS)
    with pytest.raises(ValueError, match=r"metadata\.uid"):
        no_uid = sample_trainingjob()
        del no_uid["metadata"]["uid"]
        build_job(no_uid, 1, CHOICE, SETTINGS)
    with pytest.raises(ValueError, match="start at 1"):
        build_job(sample_trainingjob(), 0, CHOICE, SETTINGS)


def test_the_input_is_never_changed() -> None:
    tj = sample_trainingjob(backoffLimit=0)
    before = copy.deepcopy(tj)
    job = build_job(tj, 1, CHOICE, SETTINGS)
    assert tj == before
    job["spec"]["template"]["spec"]["containers"][0]["env"].append({"name": "X", "value": "1"})
    job["metadata"]["labels"]["extra"] = "1"
    assert tj == before
    assert build_job(tj, 1, CHOICE, SETTINGS) == build_job(tj, 1, CHOICE, SETTINGS)


def test_settings_reach_the_sidecar() -> None:
    settings = SidecarSettings(
        image="img:2",
        command=("kwatt-sidecar",),
        image_pull_policy="IfNotPresent",
        port=9000,
        metrics_port=9001,
        state_dir_host_path="/opt/kwatt",
        log_level="DEBUG",
    )
    job = build_job(sample_trainingjob(), 1, CHOICE, settings)
    sidecar = _sidecar(job)
    env = _env(sidecar)
    assert sidecar["command"] == ["kwatt-sidecar"] and sidecar["imagePullPolicy"] == "IfNotPresent"
    assert (env["KWATT_PORT"], env["KWATT_METRICS_PORT"], env["KWATT_LOG_LEVEL"]) == (
        "9000",
        "9001",
        "DEBUG",
    )
    assert sidecar["startupProbe"]["httpGet"]["port"] == 9001
    assert sidecar["ports"] == [{"name": "kwatt-metrics", "containerPort": 9001, "protocol": "TCP"}]
    assert _env(job["spec"]["template"]["spec"]["containers"][0])["KWATT_PORT"] == "9000"
    volumes = job["spec"]["template"]["spec"]["volumes"]
    assert volumes[-1]["hostPath"]["path"] == "/opt/kwatt"


@pytest.mark.parametrize("metric", ["accuracy", "eval_f1", "f1", "val/acc"])
def test_the_target_metrics_name_reaches_the_trainer_and_its_client(metric: str) -> None:
    """spec.target.metric, as written, is KWATT_TARGET_METRIC_NAME on the trainer (replacing
    the user's own entry), the client's `target_metric`; the sidecar gets the value only."""
    from kwatt_client import Kwatt

    tj = sample_trainingjob(target={"metric": metric, "value": 0.6, "maxEpochs": 50})
    tj["spec"]["template"]["spec"]["containers"][0]["env"].append(
        {"name": "KWATT_TARGET_METRIC_NAME", "value": "stale"}
    )
    job = build_job(tj, 1, CHOICE, SETTINGS)
    trainer = job["spec"]["template"]["spec"]["containers"][0]
    names = [e["name"] for e in trainer["env"]]
    assert names.count(contract.ENV_TARGET_METRIC_NAME) == 1
    env = _env(trainer)
    assert env["KWATT_TARGET_METRIC_NAME"] == metric
    assert Kwatt(env=env, connect=False).target_metric == metric
    sidecar = _env(_sidecar(job))
    assert contract.ENV_TARGET_METRIC_NAME not in sidecar
    assert sidecar["KWATT_TARGET_METRIC"] == "0.6"


def test_the_target_metrics_name_goes_to_the_named_trainer_only() -> None:
    template = {
        "spec": {
            "containers": [
                {"name": "logger", "image": "log:1"},
                {"name": "train", "image": "train:1"},
            ]
        }
    }
    tj = sample_trainingjob(template=template, trainer="train")
    pod = build_job(tj, 1, CHOICE, SETTINGS)["spec"]["template"]["spec"]
    assert "env" not in pod["containers"][0]
    assert _env(pod["containers"][1])["KWATT_TARGET_METRIC_NAME"] == "accuracy"


def test_a_template_without_metadata_still_labels_the_runs_pods() -> None:
    """The Pods carry the TrainingJob's and the run's labels (the operator finds a run's Pods
    by them), also when the user's template has no metadata of its own."""
    for metadata in (None, {}):
        tj = sample_trainingjob()
        if metadata is None:
            del tj["spec"]["template"]["metadata"]
        else:
            tj["spec"]["template"]["metadata"] = metadata
        job = build_job(tj, 3, CHOICE, SETTINGS)
        labels = job["spec"]["template"]["metadata"]["labels"]
        assert labels["kwatt.dev/trainingjob"] == "cifar" and labels["kwatt.dev/run"] == "3"
