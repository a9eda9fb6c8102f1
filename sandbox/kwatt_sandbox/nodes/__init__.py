"""kwatt's simulated nodes: node agents that stand in for kubelets on a real control plane.

Part of the sandbox cluster (a test and demo harness; production is a real cluster).
Each agent registers a Node, renews its Lease, runs the pods the real scheduler binds
to it as local processes (with their volumes, ServiceAccount token, probes and
termination messages) and serves their logs to the API server; GPU nodes carry
simulated GPUs whose speed and power follow the traces.
"""

from kwatt_sandbox.nodes.gpus import GpuProvider, PlainGpuProvider
from kwatt_sandbox.nodes.nodes import MAX_GPUS, NodeSpec, node_manifest, parse_node_option

__all__ = [
    "MAX_GPUS",
    "GpuProvider",
    "NodeSpec",
    "PlainGpuProvider",
    "node_manifest",
    "parse_node_option",
]
