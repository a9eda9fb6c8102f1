"""One sandbox cluster: the real control plane, the fault proxy and kwatt's node agents.

Part of the sandbox cluster (a test and demo harness; production is a real cluster).
Everything above the kubelet is Kubernetes' own (kwatt_sandbox.controlplane); the
kubelets are kwatt's node agents, whose pods run as local processes on simulated
GPUs that follow the traces. `kwatt sandbox` runs one in the foreground, and
`kwatt_sandbox.testing` starts that command for the tests.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kwatt_sandbox.controlplane.build import Binaries
from kwatt_sandbox.controlplane.cluster import ControlPlane
from kwatt_sandbox.controlplane.kubeconfig import write_kubeconfig
from kwatt_sandbox.faultproxy import FaultProxy
from kwatt_sandbox.faults import Faults
from kwatt_sandbox.gpu.provider import SimulatedGpuProvider
from kwatt_sandbox.nodes.agent import NodeAgent
from kwatt_sandbox.nodes.nodes import NodeSpec

log = logging.getLogger(__name__)
HARNESS_NOTICE = (
    "kwatt sandbox: a real Kubernetes control plane with simulated nodes and GPUs, "
    "for tests and demos; production is a real cluster."
)


def default_nodes() -> list[NodeSpec]:
    """What a newcomer gets: one CPU node and one GPU node with two simulated V100s."""
    return [NodeSpec("cpu-0"), NodeSpec("gpu-0", "v100", 2)]


@dataclass
class SandboxConfig:
    nodes: list[NodeSpec] = field(default_factory=default_nodes)
    port: int = 0
    gpu_dir: Path | None = None
    directory: Path | None = None  # default: a temporary folder, removed at stop


@dataclass
class Sandbox:
    """A running sandbox cluster; `start()` then `stop()`."""

    binaries: Binaries
    config: SandboxConfig = field(default_factory=SandboxConfig)
    faults: Faults = field(default_factory=Faults)
    plane: ControlPlane | None = None
    proxy: FaultProxy | None = None
    agents: list[NodeAgent] = field(default_factory=list)
    directory: Path = Path()
    _own_directory: bool = False

    async def start(self) -> None:
        started = time.monotonic()
        if self.config.directory is None:
            self.directory = Path(tempfile.mkdtemp(prefix="kwatt-sandbox-"))
            self._own_directory = True
        else:
            self.directory = self.config.directory
            self.directory.mkdir(parents=True, exist_ok=True)
        os.chmod(self.directory, 0o700)
        self.plane = ControlPlane(self.binaries, self.directory, port=self.config.port)
        await self.plane.start()
        assert self.plane.pki is not None
        self.proxy = FaultProxy(self.plane.url, self.plane.pki, self.faults)
        await self.proxy.start()
        provider = SimulatedGpuProvider(self.config.gpu_dir or self.directory / "gpus")
        for spec in self.config.nodes:
            agent = NodeAgent(
                spec,
                self.plane.url,
                self.plane.pki,
                provider,
                self.faults,
                self.directory / "pods",
                self.plane.port,
            )
            self.agents.append(agent)
        await asyncio.gather(*(agent.start() for agent in self.agents))
        log.info(
            "Sandbox cluster up in %.1fs: %s, nodes %s.",
            time.monotonic() - started,
            self.plane.url,
            ", ".join(n.name for n in self.config.nodes) or "none",
        )

    def write_kubeconfig(self, path: Path, *, through_proxy: bool = False) -> Path:
        """The admin's kubeconfig, straight to the API server or through the fault proxy."""
        assert self.plane is not None and self.plane.pki is not None and self.proxy is not None
        url = self.proxy.url if through_proxy else self.plane.url
        return write_kubeconfig(path, url, self.plane.pki.ca, self.plane.pki.admin)

    def state(self) -> dict[str, Any]:
        """What a test harness needs to find this cluster (written as the ready file)."""
        assert self.plane is not None and self.proxy is not None
        return {
            "pid": os.getpid(),
            "url": self.plane.url,
            "proxy_url": self.proxy.url,
            "directory": str(self.directory),
            "nodes": [n.name for n in self.config.nodes],
            "logs": str(self.directory / "logs"),
        }

    def write_state(self, path: Path) -> None:
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(self.state(), indent=2))
        os.replace(tmp, path)

    async def wait_failed(self) -> str:
        """Return when a control-plane component exits, with a sentence about it."""
        assert self.plane is not None
        while True:
            failed = self.plane.failed()
            if failed:
                component = failed[0]
                return (
                    f"{component.name} exited unexpectedly; its log ({component.log_path}) "
                    f"ends:\n{component.tail()}"
                )
            await asyncio.sleep(0.5)

    async def stop(self) -> None:
        """Stop pods first (their processes die), then the proxy, then the control plane."""
        await asyncio.gather(*(agent.stop() for agent in self.agents), return_exceptions=True)
        if self.proxy is not None:
            await self.proxy.stop()
        if self.plane is not None:
            await self.plane.stop()
        if self._own_directory:
            shutil.rmtree(self.directory, ignore_errors=True)


__all__ = ["HARNESS_NOTICE", "Sandbox", "SandboxConfig", "default_nodes"]
