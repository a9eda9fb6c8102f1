"""A node agent: one simulated node's kubelet, as the API server sees it.

Part of the sandbox cluster (a test and demo harness; production is a real cluster).
It registers its Node (capacity, GPU feature discovery's labels, the port of its log
server), renews its Lease in `kube-node-lease` as a kubelet's heartbeat, runs the
pods bound to it (kubelet.py) and serves their logs over TLS to the API server
(logserver.py). Every call uses the node's own client certificate, so the Node
authorizer and NodeRestriction apply to it as to a real kubelet.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp

from kwatt_sandbox.nodes.api import STRATEGIC_PATCH, ApiClient, ApiError, now_micro, now_rfc3339
from kwatt_sandbox.nodes.gpus import GpuProvider
from kwatt_sandbox.nodes.kubelet import Kubelet
from kwatt_sandbox.nodes.ledger import GpuLedger
from kwatt_sandbox.nodes.logserver import LogServer
from kwatt_sandbox.nodes.nodes import NodeSpec, node_manifest

if TYPE_CHECKING:
    import ssl

    from kwatt_sandbox.controlplane.pki import ClusterPki
    from kwatt_sandbox.faults import Faults

log = logging.getLogger(__name__)
LEASE_NAMESPACE = "kube-node-lease"
LEASE_DURATION_S = 40
RENEW_INTERVAL_S = 1.0  # compressed sandbox time: a real kubelet renews every 10 s
_API_ERRORS = (ApiError, aiohttp.ClientError, TimeoutError)


class NodeAgent:
    """One simulated node: registration, heartbeat, pods and their logs."""

    def __init__(
        self,
        spec: NodeSpec,
        url: str,
        pki: ClusterPki,
        provider: GpuProvider,
        faults: Faults,
        pod_dir: Path,
        service_port: int,
    ) -> None:
        self.spec = spec
        self.url = url
        self.pki = pki
        self.provider = provider
        self.faults = faults
        self.pod_dir = pod_dir
        self.service_port = service_port
        client, serving = pki.node(spec.name)
        self.api = ApiClient(url, _client_ssl(pki.ca, client.cert, client.key), "kubelet/sandbox")
        self.ledger = GpuLedger()
        uuids = (
            provider.devices(spec.name, spec.gpu_model, spec.gpu_count) if spec.gpu_count else []
        )
        self.ledger.add_node(spec.name, uuids)
        self.kubelet: Kubelet | None = None
        self.log_server = LogServer(serving, pki.ca, self._container_log)
        self.heartbeats = 0
        self._tasks: list[asyncio.Task[None]] = []

    def _container_log(self, namespace: str, pod: str, container: str) -> Any:
        return self.kubelet.container_log(namespace, pod, container) if self.kubelet else None

    async def start(self) -> None:
        """Serve logs, register the Node, take its Lease, and start running pods."""
        port = await self.log_server.start()
        node = await self._register(port)
        allocatable = dict(node.get("status", {}).get("allocatable") or {})
        self.kubelet = Kubelet(
            self.spec.name,
            self.api,
            self.ledger,
            self.provider,
            allocatable,
            self.faults,
            self.pod_dir,
            self.service_port,
        )
        await self._renew(node["metadata"]["uid"])
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._heartbeat(node["metadata"]["uid"]), name="heartbeat"),
            loop.create_task(self.kubelet.run(), name=f"kubelet {self.spec.name}"),
        ]

    async def _register(self, port: int) -> dict[str, Any]:
        manifest = node_manifest(self.spec, now_rfc3339(), port)
        status = manifest.pop("status")
        name = self.spec.name
        for attempt in range(50):
            try:
                try:
                    await self.api.create("/api/v1/nodes", manifest)
                except ApiError as exc:
                    if exc.code != 409:
                        raise
                    patch = {"metadata": {"labels": manifest["metadata"]["labels"]}}
                    await self.api.patch(f"/api/v1/nodes/{name}", patch, STRATEGIC_PATCH)
                return await self.api.patch(
                    f"/api/v1/nodes/{name}/status", {"status": status}, STRATEGIC_PATCH
                )
            except _API_ERRORS as exc:
                if attempt == 49:
                    raise
                log.debug("Node %s not registered yet: %s", name, exc)
                await asyncio.sleep(0.2)
        raise AssertionError("unreachable")

    async def _heartbeat(self, node_uid: str) -> None:
        while True:
            await asyncio.sleep(RENEW_INTERVAL_S)
            if self.faults.take_heartbeat_stop(self.spec.name):
                continue
            try:
                await self._renew(node_uid)
            except _API_ERRORS as exc:
                log.debug("Lease of %s not renewed: %s", self.spec.name, exc)

    async def _renew(self, node_uid: str) -> None:
        """Renew the Lease; if the node was marked NotReady, report Ready again."""
        name = self.spec.name
        path = f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NAMESPACE}/leases/{name}"
        spec = {
            "holderIdentity": name,
            "leaseDurationSeconds": LEASE_DURATION_S,
            "renewTime": now_micro(),
        }
        try:
            await self.api.patch(path, {"spec": spec})
        except ApiError as exc:
            if exc.code != 404:
                raise
            lease = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {
                    "name": name,
                    "namespace": LEASE_NAMESPACE,
                    "ownerReferences": [
                        {"apiVersion": "v1", "kind": "Node", "name": name, "uid": node_uid}
                    ],
                },
                "spec": spec,
            }
            await self.api.create(
                f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NAMESPACE}/leases", lease
            )
        self.heartbeats += 1
        await self._report_ready()

    async def _report_ready(self) -> None:
        """After missed heartbeats the node controller sets Ready Unknown; a kubelet that
        is back posts Ready again, as a real one does with its status updates."""
        node = await self.api.get(f"/api/v1/nodes/{self.spec.name}")
        conditions = node.get("status", {}).get("conditions") or []
        ready: dict[str, Any] = next((c for c in conditions if c.get("type") == "Ready"), {})
        if ready.get("status") == "True":
            return
        now = now_rfc3339()
        condition = {
            "type": "Ready",
            "status": "True",
            "reason": "KubeletReady",
            "message": "kubelet is posting ready status",
            "lastHeartbeatTime": now,
            "lastTransitionTime": now,
        }
        body = {"status": {"conditions": [condition]}}
        await self.api.patch(f"/api/v1/nodes/{self.spec.name}/status", body, STRATEGIC_PATCH)

    async def stop(self) -> None:
        """Stop running pods (killing their processes) and the log server."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.kubelet is not None:
            await self.kubelet.shutdown()
        await self.log_server.stop()
        await self.api.close()


def _client_ssl(ca: Path, cert: Path, key: Path) -> ssl.SSLContext:
    import ssl

    context = ssl.create_default_context(cafile=str(ca))
    context.load_cert_chain(cert, key)
    return context


__all__ = ["LEASE_NAMESPACE", "NodeAgent"]
