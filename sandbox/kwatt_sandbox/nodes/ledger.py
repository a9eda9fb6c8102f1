"""Which GPU of which node each pod holds (the device plugin's bookkeeping).

Part of the sandbox cluster, a test and demo harness; production is a real
cluster. The real scheduler only counts `nvidia.com/gpu`; which devices a pod gets is
the node's business: the kubelet allocates them when it admits a pod, reads the plan
to build each container's env, and releases them when the pod ends or goes away.
"""

from __future__ import annotations

from typing import Any

from kwatt_sandbox.nodes.podspec import gpu_plan, pod_gpus


class GpuLedger:
    """Devices per node and their holders; only touched on the loop thread."""

    def __init__(self) -> None:
        self.devices: dict[str, list[str]] = {}
        self._holder: dict[str, str] = {}  # device UUID -> pod uid
        self._plans: dict[str, tuple[str, dict[str, list[str]]]] = {}  # pod uid -> plan

    def add_node(self, node: str, uuids: list[str]) -> None:
        self.devices[node] = list(uuids)

    def free(self, node: str) -> list[str]:
        return [u for u in self.devices.get(node, []) if u not in self._holder]

    def allocate(self, node: str, pod: dict[str, Any]) -> dict[str, list[str]] | None:
        """Reserve the pod's GPUs on `node`; None if they do not fit. Idempotent."""
        uid = str(pod["metadata"]["uid"])
        if uid in self._plans:
            return self._plans[uid][1]
        spec = pod.get("spec") or {}
        free = self.free(node)
        need = pod_gpus(spec)
        if need > len(free):
            return None
        pool = free[:need]
        for device in pool:
            self._holder[device] = uid
        plan = gpu_plan(spec, pool)
        self._plans[uid] = (node, plan)
        return plan

    def plan(self, pod_uid: str) -> dict[str, list[str]] | None:
        entry = self._plans.get(pod_uid)
        return entry[1] if entry else None

    def release(self, pod_uid: str) -> bool:
        """Give the pod's GPUs back; True if it held any reservation."""
        if self._plans.pop(pod_uid, None) is None:
            return False
        for device in [d for d, holder in self._holder.items() if holder == pod_uid]:
            del self._holder[device]
        return True
