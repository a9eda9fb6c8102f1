"""Pure helpers of the simulated nodes, without processes or a server."""

from __future__ import annotations

import base64
import sys
from typing import Any

import pytest

from kwatt_sandbox.nodes import NodeSpec, PlainGpuProvider, parse_node_option
from kwatt_sandbox.nodes.jobs import pod_from_template, set_condition
from kwatt_sandbox.nodes.ledger import GpuLedger
from kwatt_sandbox.nodes.nodes import node_manifest
from kwatt_sandbox.nodes.podspec import (
    CommandError,
    ContainerRun,
    EnvError,
    build_argv,
    exit_code,
    expand,
    fallback_message,
    final_phase,
    gpu_plan,
    map_termination_path,
    merge_gpu_env,
    pod_gpus,
    pod_status,
    resolve_env,
)
from kwatt_sandbox.nodes.scheduler import fit_reason, unschedulable_message

POD: dict[str, Any] = {
    "metadata": {
        "name": "p",
        "namespace": "ns",
        "uid": "u-1",
        "labels": {"app": "train"},
        "annotations": {"a/b": "c"},
    },
    "spec": {"nodeName": "gpu-0"},
    "status": {"podIP": "127.0.0.1"},
}


def gpu(name: str, n: int, **extra: Any) -> dict[str, Any]:
    return {"name": name, "resources": {"limits": {"nvidia.com/gpu": n}}, **extra}


def test_expand_follows_kubelet_rules() -> None:
    env = {"A": "1", "B": "x"}
    assert expand("$(A)-$(B)", env) == "1-x"
    assert expand("$$(A) $(MISSING) $(", env) == "$(A) $(MISSING) $("


def test_resolve_env_downward_api_config_maps_and_secrets() -> None:
    objects = {
        ("ConfigMap", "cfg"): {"data": {"lr": "0.1", "bs": "32"}},
        ("Secret", "s"): {"data": {"token": base64.b64encode(b"t0k").decode()}},
    }
    container = {
        "envFrom": [{"configMapRef": {"name": "cfg"}, "prefix": "CFG_"}],
        "env": [
            {"name": "N", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "L", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {"name": "AN", "valueFrom": {"fieldRef": {"fieldPath": "metadata.annotations['a/b']"}}},
            {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {"name": "T", "valueFrom": {"secretKeyRef": {"name": "s", "key": "token"}}},
            {
                "name": "O",
                "valueFrom": {"configMapKeyRef": {"name": "no", "key": "k", "optional": True}},
            },
            {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
            {"name": "MSG", "value": "$(N) on $(NODE)"},
        ],
    }
    env = resolve_env(container, POD, lambda kind, name: objects.get((kind, name)), {"cpu": "8"})
    assert env == {
        "CFG_lr": "0.1",
        "CFG_bs": "32",
        "N": "p",
        "L": "train",
        "AN": "c",
        "NODE": "gpu-0",
        "T": "t0k",
        "CPU": "8",
        "MSG": "p on gpu-0",
    }
    missing = {"env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "no", "key": "k"}}}]}
    with pytest.raises(EnvError, match='configmap "no" not found'):
        resolve_env(missing, POD, lambda kind, name: None)


def test_build_argv_uses_this_interpreter_for_python() -> None:
    assert build_argv({"command": ["python3", "-m", "x"], "args": ["$(B)"]}, {"B": "2"}) == [
        sys.executable,
        "-m",
        "x",
        "2",
    ]
    assert build_argv({"args": ["sh", "-c", "true"]}, {})[0] == "sh"
    assert build_argv({"command": ["python3.11"]}, {}, python="/venv/python") == ["/venv/python"]
    with pytest.raises(CommandError, match="ignores images"):
        build_argv({"name": "c"}, {})


def test_termination_path_mapping_and_messages() -> None:
    env = {"KWATT_TERMINATION_PATH": "/dev/termination-log", "OTHER": "x"}
    map_termination_path(env, "/dev/termination-log", "/tmp/p/c/termination-log")
    assert env == {"KWATT_TERMINATION_PATH": "/tmp/p/c/termination-log", "OTHER": "x"}
    log = "".join(f"line {i}\n" for i in range(200))
    tail = fallback_message(log)
    assert tail.endswith("line 199\n") and len(tail.encode()) <= 2048
    assert exit_code(-9) == 137 and exit_code(3) == 3


def test_gpu_requests_plans_and_env() -> None:
    spec = {
        "initContainers": [gpu("setup", 1), gpu("side", 0, restartPolicy="Always")],
        "containers": [gpu("train", 2), {"name": "log"}],
    }
    assert pod_gpus(spec) == 2
    plan = gpu_plan(spec, ["G0", "G1"])
    assert plan == {"side": [], "train": ["G0", "G1"], "log": [], "setup": ["G0"]}
    provider = PlainGpuProvider()
    devices = provider.devices("gpu-0", "v100", 2)
    assert devices == provider.devices("gpu-0", "v100", 2) and len(set(devices)) == 2
    assert provider.container_env("gpu-0", devices, []) == {}
    assert provider.container_env("gpu-0", devices, devices[:1]) == {
        "NVIDIA_VISIBLE_DEVICES": devices[0]
    }
    merged = merge_gpu_env({"NVIDIA_VISIBLE_DEVICES": "all"}, {}, devices)
    assert merged["NVIDIA_VISIBLE_DEVICES"] == ",".join(devices)
    own = merge_gpu_env({"NVIDIA_VISIBLE_DEVICES": "none"}, {"NVIDIA_VISIBLE_DEVICES": "G"}, [])
    assert own["NVIDIA_VISIBLE_DEVICES"] == "none"


def test_ledger_allocates_and_releases() -> None:
    ledger = GpuLedger()
    ledger.add_node("gpu-0", ["G0", "G1"])
    pod = {"metadata": {"uid": "a"}, "spec": {"containers": [gpu("c", 2)]}}
    assert ledger.allocate("gpu-0", pod) == {"c": ["G0", "G1"]}
    assert ledger.allocate("gpu-0", {"metadata": {"uid": "b"}, "spec": pod["spec"]}) is None
    assert ledger.release("a") and ledger.free("gpu-0") == ["G0", "G1"]


def test_node_options_and_manifest() -> None:
    assert parse_node_option("gpu-0=v100x2") == NodeSpec("gpu-0", "v100", 2)
    assert parse_node_option("gpu-1=a100") == NodeSpec("gpu-1", "a100", 1)
    assert parse_node_option("cpu-0") == NodeSpec("cpu-0")
    with pytest.raises(ValueError, match="NAME=MODELxCOUNT"):
        parse_node_option("gpu-0=")
    with pytest.raises(ValueError, match="node name"):
        parse_node_option("GPU_0")
    node = node_manifest(NodeSpec("gpu-0", "v100", 2), "2024-01-01T00:00:00Z")
    assert node["metadata"]["labels"]["nvidia.com/gpu.product"] == "v100"
    assert node["status"]["allocatable"]["nvidia.com/gpu"] == "2"
    pod = {
        "spec": {"containers": [gpu("c", 1)], "nodeSelector": {"nvidia.com/gpu.product": "a100"}}
    }
    assert fit_reason(node, pod, 2, 0) == "node(s) didn't match Pod's node affinity/selector"
    assert fit_reason(node, {"spec": {"containers": [gpu("c", 3)]}}, 2, 0) == (
        "Insufficient nvidia.com/gpu"
    )
    assert unschedulable_message(2, ["Insufficient nvidia.com/gpu", "b", "b"]) == (
        "0/2 nodes are available: 1 Insufficient nvidia.com/gpu, 2 b."
    )
    assert unschedulable_message(0, []) == "no nodes available to schedule pods"


def test_pod_status_phases_and_conditions() -> None:
    side = ContainerRun("side", "sidecar", state="running", started_at="t0")
    main = ContainerRun("main", "main", state="running", started_at="t1")
    status = pod_status(
        {"conditions": [{"type": "PodScheduled", "status": "True"}]},
        [side, main],
        "Running",
        start_time="t0",
        host_ip="127.0.0.1",
        pod_ip="127.0.0.1",
        now="t2",
    )
    kinds = {c["type"]: c["status"] for c in status["conditions"]}
    assert kinds == {
        "PodReadyToStartContainers": "True",
        "Initialized": "True",
        "Ready": "True",
        "ContainersReady": "True",
        "PodScheduled": "True",
    }
    assert status["initContainerStatuses"][0]["started"] is True
    main.state, main.exit_code = "terminated", 1
    side.state, side.exit_code = "terminated", 143
    assert final_phase([side, main]) == "Failed"
    main.exit_code = 0
    assert final_phase([side, main]) == "Succeeded"  # a sidecar's exit code does not count


def test_job_pod_template_and_conditions() -> None:
    job = {
        "metadata": {"name": "j", "namespace": "ns", "uid": "U"},
        "spec": {"template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": []}}},
    }
    pod = pod_from_template(job)
    assert pod["metadata"]["generateName"] == "j-"
    assert pod["metadata"]["labels"] == {
        "a": "b",
        "batch.kubernetes.io/controller-uid": "U",
        "controller-uid": "U",
        "batch.kubernetes.io/job-name": "j",
        "job-name": "j",
    }
    status: dict[str, Any] = {}
    assert set_condition(status, "Suspended", True, "JobSuspended", "Job suspended", "t1")
    assert not set_condition(status, "Suspended", True, "JobSuspended", "Job suspended", "t2")
    assert set_condition(status, "Suspended", False, "JobResumed", "Job resumed", "t3")
    (cond,) = status["conditions"]
    assert cond["lastTransitionTime"] == "t3" and cond["reason"] == "JobResumed"
