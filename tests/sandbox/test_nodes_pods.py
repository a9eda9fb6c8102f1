"""Pods on simulated nodes: sidecar order, termination messages, downward API env,
logs, GPU scheduling and graceful deletion (from the Kubernetes documentation)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from nodes_support import container, node_sandbox, pods
from sandbox_support import eventually

from kwatt_sandbox.testing import Sandbox

pytestmark = pytest.mark.timeout(60)

ALIVE = """
def alive(*parts):
    import os
    tag = "-".join(parts).encode()
    found = 0
    for pid in os.listdir("/proc"):
        try:
            with open("/proc/" + pid + "/cmdline", "rb") as f:
                found += tag in f.read()
        except OSError:
            pass
    return found
"""
SIDECAR = (
    ALIVE
    + """
import os, signal, sys, time
# marker: sidecar-{name}-proof
def stop(*_):
    print('sidecar-term', time.time(), flush=True)
    with open(os.environ['REPORT'], 'w') as f:
        f.write('{{"outcome": "done"}}')
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
print('sidecar-start', time.time(), flush=True)
print('earlier-sidecars', alive({earlier}), flush=True)
while True:
    time.sleep(0.02)
"""
)
MAIN = (
    ALIVE
    + """
import time
print('main-start', time.time(), flush=True)
print('sidecars-at-start', alive('sidecar', 'a', 'proof') + alive('sidecar', 'b', 'proof'))
time.sleep(0.3)
print('sidecars-at-end', alive('sidecar', 'a', 'proof') + alive('sidecar', 'b', 'proof'))
print('main-end', time.time(), flush=True)
"""
)


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    """Overrides the plain sandbox so `api` and `kubectl` talk to one with nodes."""
    with node_sandbox(tmp_path) as sb:
        yield sb


def pod(name: str, containers: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    body = {"restartPolicy": "Never", "terminationGracePeriodSeconds": 2, **spec}
    body["containers"] = containers
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": body}


def get_pod(sb: Sandbox, name: str) -> dict[str, Any]:
    return sb.get("v1", "Pod", name, "default")


def phase(sb: Sandbox, name: str) -> str:
    return str(get_pod(sb, name)["status"].get("phase"))


def stamps(text: str) -> dict[str, float]:
    return {line.split()[0]: float(line.split()[1]) for line in text.splitlines() if line}


def test_native_sidecar_order_and_termination_messages(sandbox: Sandbox) -> None:
    sidecars = [
        container(
            "default-path",
            SIDECAR.format(name="a", earlier="'nothing', 'before'"),
            restartPolicy="Always",
            env=[{"name": "REPORT", "value": "/dev/termination-log"}],
        ),
        container(
            "custom-path",
            SIDECAR.format(name="b", earlier="'sidecar', 'a', 'proof'"),
            restartPolicy="Always",
            terminationMessagePath="/tmp/kwatt/report.json",
            env=[{"name": "REPORT", "value": "/tmp/kwatt/report.json"}],
        ),
    ]
    sandbox.create(pod("sc", [container("main", MAIN)], initContainers=sidecars))
    eventually(lambda: phase(sandbox, "sc") == "Succeeded", timeout=20)
    logs = {
        n: sandbox.call(sandbox.store.logs.read, "default", "sc", n)
        for n in ("default-path", "custom-path", "main")
    }
    first, second, main = (stamps(logs[n]) for n in ("default-path", "custom-path", "main"))
    # sidecars start in order (each sees the earlier ones' processes), both run while
    # the main container runs, and get SIGTERM only after it exited, in reverse order
    assert first["earlier-sidecars"] == 0 and second["earlier-sidecars"] == 1
    assert main["sidecars-at-start"] == 2 and main["sidecars-at-end"] == 2
    assert main["main-end"] < second["sidecar-term"] < first["sidecar-term"]
    status = get_pod(sandbox, "sc")["status"]
    inits = {s["name"]: s for s in status["initContainerStatuses"]}
    for name in ("default-path", "custom-path"):
        terminated = inits[name]["state"]["terminated"]
        assert terminated["message"] == '{"outcome": "done"}'
        assert terminated["exitCode"] == 0
    (main_status,) = status["containerStatuses"]
    assert main_status["state"]["terminated"]["reason"] == "Completed"
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Initialized"]["status"] == "True"
    assert conditions["Ready"]["reason"] == "PodCompleted"


def test_sidecar_is_running_and_ready_while_main_runs(sandbox: Sandbox) -> None:
    side = container("side", "import time; time.sleep(30)", restartPolicy="Always")
    main = container("main", "import time; time.sleep(1)")
    sandbox.create(pod("live", [main], initContainers=[side], terminationGracePeriodSeconds=1))
    eventually(lambda: phase(sandbox, "live") == "Running")
    status = get_pod(sandbox, "live")["status"]
    (side_status,) = status["initContainerStatuses"]
    assert "running" in side_status["state"] and side_status["started"] and side_status["ready"]
    assert status["containerStatuses"][0]["ready"]
    assert {c["type"]: c["status"] for c in status["conditions"]}["Ready"] == "True"
    # the sidecar dies of SIGTERM (exit 143) after the main exits: the pod still succeeds
    eventually(lambda: phase(sandbox, "live") == "Succeeded", timeout=10)


def test_failure_with_fallback_to_logs_message(sandbox: Sandbox) -> None:
    code = "import sys; print('loading'); print('boom: out of memory'); sys.exit(2)"
    main = container("main", code, terminationMessagePolicy="FallbackToLogsOnError")
    sandbox.create(pod("oops", [main]))
    eventually(lambda: phase(sandbox, "oops") == "Failed")
    terminated = get_pod(sandbox, "oops")["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 2 and terminated["reason"] == "Error"
    assert terminated["message"].endswith("boom: out of memory\n")


def test_env_from_downward_api_and_config_maps(sandbox: Sandbox) -> None:
    sandbox.create(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "cfg"},
            "data": {"lr": "0.1"},
        }
    )
    env = [
        {"name": "NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}},
        {"name": "TEAM", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['team']"}}},
        {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "LR", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "lr"}}},
        {"name": "GREETING", "value": "hello $(NAME)"},
    ]
    keys = ["NAME", "NS", "UID", "TEAM", "NODE", "IP", "LR", "GREETING"]
    code = f"import os; print('|'.join(os.environ[k] for k in {keys!r}))"
    manifest = pod("envy", [container("main", code, env=env)])
    manifest["metadata"]["labels"] = {"team": "ml"}
    created = sandbox.create(manifest)
    eventually(lambda: phase(sandbox, "envy") == "Succeeded")
    out = sandbox.call(sandbox.store.logs.read, "default", "envy", "main").strip().split("|")
    uid = created["metadata"]["uid"]
    assert out == ["envy", "default", uid, "ml", "cpu-0", "127.0.0.1", "0.1", "hello envy"]


def test_logs_through_kubectl_and_client(sandbox: Sandbox, kubectl: Any, api: Any) -> None:
    from kubernetes import client

    code = "import time\nfor i in range(3):\n    print('line', i, flush=True); time.sleep(0.1)"
    sandbox.create(pod("chatty", [container("main", code)]))
    followed = kubectl("logs", "-f", "chatty", "-c", "main", "--pod-running-timeout=20s")
    assert followed.stdout == "line 0\nline 1\nline 2\n"
    eventually(lambda: phase(sandbox, "chatty") == "Succeeded")
    text = client.CoreV1Api(api).read_namespaced_pod_log("chatty", "default", container="main")
    assert text == "line 0\nline 1\nline 2\n"


def test_gpu_pods_get_devices_and_wait_for_free_gpus(sandbox: Sandbox) -> None:
    code = "import os, time; print(os.environ.get('NVIDIA_VISIBLE_DEVICES')); time.sleep(0.8)"
    gpus = {"limits": {"nvidia.com/gpu": 2}}
    side = container(
        "side",
        "import os; print(os.environ.get('NVIDIA_VISIBLE_DEVICES'))",
        env=[{"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"}],
    )
    sandbox.create(pod("gpu-a", [container("main", code, resources=gpus), side]))
    eventually(lambda: phase(sandbox, "gpu-a") == "Running")
    sandbox.create(pod("gpu-b", [container("main", code, resources=gpus)]))
    first = get_pod(sandbox, "gpu-a")
    assert first["spec"]["nodeName"] == "gpu-0"
    devices = sandbox.server.cluster.ledger.devices["gpu-0"]  # type: ignore[union-attr]
    assert len(devices) == 2 and all(d.startswith("GPU-") for d in devices)

    def pending_unschedulable() -> bool:
        found = get_pod(sandbox, "gpu-b")
        cond = next(
            (c for c in found["status"].get("conditions", []) if c["type"] == "PodScheduled"), {}
        )
        return found["status"]["phase"] == "Pending" and cond.get("reason") == "Unschedulable"

    eventually(pending_unschedulable)
    cond = next(
        c for c in get_pod(sandbox, "gpu-b")["status"]["conditions"] if c["type"] == "PodScheduled"
    )
    assert cond["message"] == "0/2 nodes are available: 2 Insufficient nvidia.com/gpu."
    evs = sandbox.call(
        lambda: sandbox.store.list_objects(sandbox.store.resolve("", "v1", "events"), "default")
    )
    assert any(
        e["reason"] == "FailedScheduling"
        and e["involvedObject"]["name"] == "gpu-b"
        and e["type"] == "Warning"
        for e in evs
    )
    eventually(lambda: phase(sandbox, "gpu-a") == "Succeeded", timeout=10)
    eventually(lambda: phase(sandbox, "gpu-b") == "Succeeded", timeout=10)
    seen = sandbox.call(sandbox.store.logs.read, "default", "gpu-a", "main").strip()
    assert sorted(seen.split(",")) == sorted(devices)
    assert sandbox.call(sandbox.store.logs.read, "default", "gpu-a", "side").strip() == ",".join(
        devices
    )
    assert sandbox.call(sandbox.store.logs.read, "default", "gpu-b", "main").strip() == seen


def test_deleting_a_running_pod_terminates_its_process(sandbox: Sandbox, api: Any) -> None:
    from kubernetes import client

    code = (
        "import os, signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *_: (time.sleep(0.3), sys.exit(0)))\n"
        "print(os.getpid(), flush=True)\n"
        "time.sleep(60)"
    )
    sandbox.create(pod("victim", [container("main", code)]))
    pid = int(
        eventually(
            lambda: sandbox.call(sandbox.store.logs.read, "default", "victim", "main").strip()
        )
    )
    os.kill(pid, 0)  # alive
    client.CoreV1Api(api).delete_namespaced_pod("victim", "default")
    # graceful: the pod stays, marked for deletion, while its process handles SIGTERM
    assert get_pod(sandbox, "victim")["metadata"]["deletionGracePeriodSeconds"] == 2

    def gone() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False

    eventually(gone, timeout=5)
    eventually(lambda: not [p for p in pods(sandbox) if p["metadata"]["name"] == "victim"])


def test_node_objects(sandbox: Sandbox, kubectl: Any) -> None:
    node = sandbox.get("v1", "Node", "gpu-0")
    labels = node["metadata"]["labels"]
    assert labels["nvidia.com/gpu.product"] == "v100"
    assert labels["kubernetes.io/hostname"] == "gpu-0"
    assert node["status"]["capacity"]["nvidia.com/gpu"] == "2"
    assert node["status"]["allocatable"]["nvidia.com/gpu"] == "2"
    assert "nvidia.com/gpu" not in sandbox.get("v1", "Node", "cpu-0")["status"]["capacity"]
    table = kubectl("get", "nodes").stdout
    assert "gpu-0" in table and "Ready" in table
