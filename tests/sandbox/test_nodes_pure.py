"""Pure helpers of the simulated nodes, without processes or a server."""

from __future__ import annotations

import base64
import sys
from typing import Any

import pytest

from kwatt_sandbox.nodes import NodeSpec, PlainGpuProvider, parse_node_option
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
    live_phase,
    merge_gpu_env,
    pod_gpus,
    pod_status,
    resolve_env,
)

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


def test_fallback_messages_and_exit_codes() -> None:
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
    for bad in ("gpu-0=", "GPU_0", "gpu-0=v100x0", "gpu-0=v100x17", "gpu-0=h999x2", "=v100"):
        with pytest.raises(ValueError) as info:
            parse_node_option(bad, ["p100", "v100"])
        message = str(info.value)
        # One sentence that names the option, the known GPUs and the bound on counts.
        assert repr(bad) in message and "p100, v100" in message and "from 1 to 16" in message
        assert message.endswith(".") and ". " not in message.replace("e.g. ", "")
    node = node_manifest(NodeSpec("gpu-0", "v100", 2), "2024-01-01T00:00:00Z", 10250)
    labels = node["metadata"]["labels"]
    assert labels["nvidia.com/gpu.product"] == "v100" and labels["nvidia.com/gpu.count"] == "2"
    assert node["status"]["allocatable"]["nvidia.com/gpu"] == "2"
    assert node["status"]["daemonEndpoints"] == {"kubeletEndpoint": {"Port": 10250}}
    cpu = node_manifest(NodeSpec("cpu-0"), "2024-01-01T00:00:00Z")
    assert "nvidia.com/gpu" not in cpu["status"]["capacity"]
    assert not any(k.startswith("nvidia.com/") for k in cpu["metadata"]["labels"])


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


def test_live_phase_is_pending_until_every_main_container_has_run() -> None:
    """As a kubelet reports it: a pod whose container waits on its config (never ran) is
    Pending, not Running; one waiting to restart after a run keeps the pod Running."""
    side = ContainerRun("side", "sidecar", state="running", started_at="t0")
    waiting = ContainerRun("main", "main", reason="CreateContainerConfigError")
    assert live_phase("Running", [side, waiting]) == "Pending"
    restarting = ContainerRun("main", "main", reason="CrashLoopBackOff", restart_count=1)
    restarting.last = {"exitCode": 1}
    assert live_phase("Running", [side, restarting]) == "Running"
    running = ContainerRun("main", "main", state="running", started_at="t1")
    assert live_phase("Running", [side, running]) == "Running"
    assert live_phase("Failed", [waiting]) == "Failed"  # a terminal phase stays
