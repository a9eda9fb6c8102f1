"""GPU providers: the devices a simulated node has and the env its containers get.

Part of the sandbox cluster, a test and demo harness; production is a real
cluster, where a device plugin and the NVIDIA container runtime do this. A provider
is consulted once per GPU node at start (`devices`) and once per container start
(`container_env`); `PlainGpuProvider` only names devices, while a trace-driven
provider (kwatt_sandbox.gpu) can also point containers at simulated GPUs.
"""

from __future__ import annotations

import uuid
from typing import Protocol


class GpuProvider(Protocol):
    """What the simulated nodes need from a GPU backend."""

    def devices(self, node_name: str, model: str, count: int) -> list[str]:
        """The UUIDs of a node's `count` GPUs of `model` (called once per GPU node)."""
        ...

    def container_env(
        self, node_name: str, all_uuids: list[str], assigned_uuids: list[str]
    ) -> dict[str, str]:
        """Env for every container of a pod on the node; `assigned_uuids` is empty for
        containers that did not request nvidia.com/gpu."""
        ...


class PlainGpuProvider:
    """Stable device UUIDs and NVIDIA_VISIBLE_DEVICES for the containers that asked."""

    def devices(self, node_name: str, model: str, count: int) -> list[str]:
        return [
            f"GPU-{uuid.uuid5(uuid.NAMESPACE_DNS, f'{node_name}.{i}.sandbox.kwatt.dev')}"
            for i in range(count)
        ]

    def container_env(
        self, node_name: str, all_uuids: list[str], assigned_uuids: list[str]
    ) -> dict[str, str]:
        if not assigned_uuids:
            return {}
        return {"NVIDIA_VISIBLE_DEVICES": ",".join(assigned_uuids)}
