"""Simulated nodes for the sandbox cluster: Node objects, a scheduler, a Job
controller and a kubelet that runs pods' containers as real local processes.

This is an emulator for tests and demos; production is a real cluster. Give
`SandboxConfig(nodes=[NodeSpec("gpu-0", "v100", 2), NodeSpec("cpu-0")])` and the
server registers the nodes and runs the three controllers; with no nodes the
sandbox stays a bare API server (Jobs then get no pods, as before).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from kwatt_sandbox.nodes.gpus import GpuProvider, PlainGpuProvider
from kwatt_sandbox.nodes.jobs import JobController
from kwatt_sandbox.nodes.kubelet import Kubelet
from kwatt_sandbox.nodes.ledger import GpuLedger
from kwatt_sandbox.nodes.nodes import NodeSpec, node_manifest, parse_node_option
from kwatt_sandbox.nodes.scheduler import Scheduler
from kwatt_sandbox.store import now_rfc3339

if TYPE_CHECKING:
    from kwatt_sandbox.server import SandboxServer


@dataclass
class SimulatedCluster:
    """The node machinery of one sandbox, for tests that want to look inside."""

    ledger: GpuLedger
    scheduler: Scheduler
    jobs: JobController
    kubelet: Kubelet


def install(server: SandboxServer) -> SimulatedCluster:
    """Register the configured nodes and add the scheduler, Job controller and kubelet."""
    config = server.config
    store = server.store
    provider: GpuProvider = config.gpu_provider or PlainGpuProvider()
    ledger = GpuLedger()
    info = store.resolve("", "v1", "nodes")
    allocatable = {}
    for spec in config.nodes:
        uuids = (
            provider.devices(spec.name, spec.gpu_model, spec.gpu_count) if spec.gpu_count else []
        )
        ledger.add_node(spec.name, uuids)
        node = store.create(info, "", node_manifest(spec, now_rfc3339(store.clock)))
        allocatable[spec.name] = dict(node["status"]["allocatable"])
    scheduler = Scheduler(store, ledger)
    jobs = JobController(store)
    kubelet = Kubelet(store, ledger, provider, allocatable, server.faults, config.pod_dir)

    async def run_scheduler(_: SandboxServer) -> None:
        await scheduler.run()

    async def run_jobs(_: SandboxServer) -> None:
        await jobs.run()

    async def run_kubelet(_: SandboxServer) -> None:
        await kubelet.run()

    server.add_controller("scheduler", run_scheduler)
    server.add_controller("job-controller", run_jobs)
    server.add_controller("kubelet", run_kubelet)
    return SimulatedCluster(ledger, scheduler, jobs, kubelet)


__all__ = [
    "GpuProvider",
    "NodeSpec",
    "PlainGpuProvider",
    "SimulatedCluster",
    "install",
    "parse_node_option",
]
