"""Simulated nodes: what a node looks like in the API and how to describe one.

Part of the sandbox cluster (a test and demo harness; production is a real cluster).
Every simulated node is this machine: pods bound to any of them run as local
processes (see kubelet.py); only the advertised capacity, labels and GPU devices
differ, which is what scheduling and kwatt's sidecar care about. The labels are
those that NVIDIA's GPU feature discovery sets on a real GPU node.
"""

from __future__ import annotations

import platform
import re
from dataclasses import dataclass, field
from typing import Any

from kwatt_sandbox.nodes.podspec import GPU

HOST_IP = "127.0.0.1"
KUBELET_VERSION = "v1.37.2-kwatt-sandbox"
MAX_GPUS = 16  # per node: a real machine has at most 8 or 16
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


@dataclass(frozen=True)
class NodeSpec:
    """One simulated node; `gpu_count` GPUs of `gpu_model` (none for a CPU node)."""

    name: str
    gpu_model: str = ""
    gpu_count: int = 0
    cpu: str = "8"
    memory: str = "32Gi"
    pods: int = 110
    labels: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not _NAME.match(self.name) or len(self.name) > 63:
            raise ValueError(
                f"The node name {self.name!r} must be lowercase letters, digits, '-' or '.', "
                "and start and end with a letter or digit."
            )
        if not 0 <= self.gpu_count <= MAX_GPUS:
            raise ValueError(
                f"Node {self.name} cannot have {self.gpu_count} GPUs (0 to {MAX_GPUS})."
            )
        if self.gpu_count and not self.gpu_model:
            raise ValueError(f"Node {self.name} has GPUs but no GPU model.")


def parse_node_option(text: str, known_gpus: list[str] | None = None) -> NodeSpec:
    """`NAME`, `NAME=MODEL` (one GPU) or `NAME=MODELxCOUNT`, as `kwatt sandbox --node`.

    Every problem is a ValueError whose message is one sentence that says what a
    good option looks like, the GPU models there are traces for, and the bounds.
    """
    known = ", ".join(known_gpus) if known_gpus else "a GPU model with a trace"
    usage = (
        f"The node {text!r} should look like NAME, NAME=MODEL or NAME=MODELxCOUNT "
        f"(e.g. gpu-0=v100x2), with a lowercase name, MODEL one of {known} and COUNT "
        f"from 1 to {MAX_GPUS}."
    )
    name, sep, gpus = text.partition("=")
    if not sep:
        model, count = "", "0"
    else:
        model, x, count = gpus.rpartition("x")
        if not x or not count.isdigit():
            model, count = gpus, "1"
        if not model or not 1 <= int(count) <= MAX_GPUS:
            raise ValueError(usage)
        if known_gpus is not None and model not in known_gpus:
            raise ValueError(usage)
    try:
        return NodeSpec(name=name, gpu_model=model, gpu_count=int(count))
    except ValueError as exc:
        raise ValueError(usage) from exc


def node_manifest(spec: NodeSpec, now: str, kubelet_port: int = 0) -> dict[str, Any]:
    """The Node object a kubelet registers for `spec`; `kubelet_port` serves its logs."""
    labels = {
        "kubernetes.io/hostname": spec.name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "node.kubernetes.io/instance-type": "sandbox",
        **spec.labels,
    }
    capacity = {
        "cpu": spec.cpu,
        "memory": spec.memory,
        "pods": str(spec.pods),
        "ephemeral-storage": "100Gi",
    }
    if spec.gpu_count:
        labels["nvidia.com/gpu.product"] = spec.gpu_model
        labels["nvidia.com/gpu.count"] = str(spec.gpu_count)
        labels["nvidia.com/gpu.present"] = "true"
        capacity[GPU] = str(spec.gpu_count)

    def condition(kind: str, ok: bool, reason: str, message: str) -> dict[str, Any]:
        return {
            "type": kind,
            "status": "True" if ok else "False",
            "reason": reason,
            "message": message,
            "lastHeartbeatTime": now,
            "lastTransitionTime": now,
        }

    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": spec.name, "labels": labels},
        "spec": {"providerID": f"sandbox://{spec.name}"},
        "status": {
            "capacity": capacity,
            "allocatable": dict(capacity),
            "conditions": [
                condition("MemoryPressure", False, "KubeletHasSufficientMemory", "ok"),
                condition("DiskPressure", False, "KubeletHasNoDiskPressure", "ok"),
                condition("PIDPressure", False, "KubeletHasSufficientPID", "ok"),
                condition("Ready", True, "KubeletReady", "kubelet is posting ready status"),
            ],
            "addresses": [
                {"type": "InternalIP", "address": HOST_IP},
                {"type": "Hostname", "address": spec.name},
            ],
            "nodeInfo": {
                "architecture": "amd64",
                "operatingSystem": "linux",
                "osImage": "kwatt sandbox (simulated node)",
                "kernelVersion": platform.release(),
                "containerRuntimeVersion": "sandbox://local-processes",
                "kubeletVersion": KUBELET_VERSION,
                "kubeProxyVersion": "",
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
            },
            "daemonEndpoints": {"kubeletEndpoint": {"Port": kubelet_port}},
        },
    }
