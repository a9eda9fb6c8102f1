"""Simulated GPUs for the sandbox's nodes: create the device files and the containers' env.

The sandbox kubelet calls exactly two methods: `devices` when a simulated GPU
node registers, and `container_env` for every container of a pod it starts on
that node. A device's limits come from the trace of its GPU model (V100:
100-250 W), so what the sidecar profiles is what the traces measured.
"""

from __future__ import annotations

import os
import uuid as uuidlib
from functools import cache
from pathlib import Path

from kwatt_core import simgpu as device
from kwatt_core.sim.trace import load_workloads

ENV_TRACE_DIR = "KWATT_TRACE_DIR"
ENV_STATE_DIR = "KWATT_STATE_DIR"  # the same name as kwatt_core.contract.ENV_STATE_DIR
ENV_BACKEND = "KWATT_GPU_BACKEND"


def default_trace_dir() -> Path:
    """The Zeus trace shipped with the repository, unless KWATT_TRACE_DIR names another."""
    env = os.environ.get(ENV_TRACE_DIR)
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3] / "traces" / "zeus" / "trace"


@cache
def gpu_limits(trace_dir: Path, model: str) -> tuple[float, float]:
    """(min, max) power limit in watts that the trace holds for this GPU model."""
    traces = load_workloads(trace_dir, model)
    limits = [w for t in traces for w in t.limits_w]
    return float(min(limits)), float(max(limits))


class SimulatedGpuProvider:
    """Device files under `base_dir/<node>/gpus`, limit state files under `base_dir/<node>/state`.

    `hardened_runtime` makes containers that were not allocated GPUs see none, as
    runtimes that ignore NVIDIA_VISIBLE_DEVICES for unprivileged containers do.
    """

    def __init__(
        self, base_dir: Path, trace_dir: Path | None = None, hardened_runtime: bool = False
    ) -> None:
        self.base_dir = Path(base_dir)
        self.trace_dir = trace_dir or default_trace_dir()
        self.hardened_runtime = hardened_runtime

    def node_dir(self, node_name: str) -> Path:
        return self.base_dir / node_name / "gpus"

    def state_dir(self, node_name: str) -> Path:
        return self.base_dir / node_name / "state"

    def devices(self, node_name: str, model: str, count: int) -> list[str]:
        """Create (or keep) `count` simulated `model` GPUs for a node; their UUIDs."""
        min_w, max_w = gpu_limits(self.trace_dir, model)
        directory = self.node_dir(node_name)
        self.state_dir(node_name).mkdir(parents=True, exist_ok=True)
        uuids = []
        for index in range(count):
            uid = "GPU-" + str(uuidlib.uuid5(uuidlib.NAMESPACE_URL, f"kwatt/{node_name}/{index}"))
            device.create(
                directory,
                device.Device(
                    uuid=uid,
                    model=model,
                    min_limit_w=min_w,
                    max_limit_w=max_w,
                    default_limit_w=max_w,
                    limit_w=max_w,
                ),
            )
            uuids.append(uid)
        return uuids

    def container_env(
        self, node_name: str, all_uuids: list[str], assigned_uuids: list[str]
    ) -> dict[str, str]:
        """Env for one container of a pod on the node; it overrides the pod spec's values.

        The container that was allocated GPUs gets NVIDIA_VISIBLE_DEVICES with their
        UUIDs, as the NVIDIA device plugin does; other containers keep what the pod
        spec says (the sidecar asks for `all`).
        """
        del all_uuids  # every file of the node's directory is one of them
        env = {
            device.ENV_DIR: str(self.node_dir(node_name)),
            ENV_STATE_DIR: str(self.state_dir(node_name)),
            ENV_BACKEND: "simulated",
        }
        if assigned_uuids:
            env["NVIDIA_VISIBLE_DEVICES"] = ",".join(assigned_uuids)
        elif self.hardened_runtime:
            env[device.ENV_HIDDEN] = "1"
        return env
