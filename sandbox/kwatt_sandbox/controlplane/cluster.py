"""A real Kubernetes control plane on 127.0.0.1: etcd, apiserver, controller-manager, scheduler.

Part of the sandbox cluster (a test and demo harness; production is a real cluster).
The binaries are Kubernetes' own, built from their Go modules once per machine
(`kwatt_sandbox.controlplane.build`); this module only chooses their flags. Everything
listens on loopback and speaks TLS with certificates from a CA made at start: etcd
wants a client certificate, the API server authenticates client certificates and
ServiceAccount tokens (never anonymous requests) and authorizes with the Node and
RBAC authorizers, as a kubeadm cluster does. Every process gets SIGKILL if the
sandbox dies, and stopping the sandbox stops them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from kwatt_sandbox.controlplane.build import Binaries
from kwatt_sandbox.controlplane.kubeconfig import write_kubeconfig
from kwatt_sandbox.controlplane.pki import LOOPBACK, ClusterPki, KeyPair, make_cluster_pki
from kwatt_sandbox.nodes.shim import pdeathsig_preexec

log = logging.getLogger(__name__)
SERVICE_CIDR = "10.96.0.0/16"
ISSUER = "https://kubernetes.default.svc.cluster.local"
# Compressed sandbox time: a node that stops heartbeating is NotReady after this many
# seconds (a real cluster waits 50 s), and its pods are evicted this much later.
NODE_GRACE_S = 8
EVICTION_S = 20


class ControlPlaneError(RuntimeError):
    """A control-plane component did not start; the message names it and its log."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Component:
    """One control-plane process and the file its output goes to."""

    name: str
    argv: list[str]
    log_path: Path
    proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as out:
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                env=_component_env(),
                preexec_fn=pdeathsig_preexec(os.getpid()),
                start_new_session=True,
            )

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    async def stop(self, grace: float = 5.0) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.proc.wait(), grace)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()


def _component_env() -> dict[str, str]:
    """A minimal environment: nothing of the caller's (no proxies, no KUBECONFIG)."""
    return {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/"}


@dataclass
class ControlPlane:
    """The control plane of one sandbox cluster, all state under `directory`."""

    binaries: Binaries
    directory: Path
    port: int = 0
    pki: ClusterPki | None = None
    url: str = ""
    components: list[Component] = field(default_factory=list)

    async def start(self, timeout: float = 90.0) -> None:
        """Make the PKI, start etcd and kube-apiserver, wait until it is ready, then the
        controller-manager and scheduler. Raises ControlPlaneError with the log tail."""
        started = time.monotonic()
        self.pki = pki = make_cluster_pki(self.directory / "pki")
        etcd_port, etcd_peer = free_port(), free_port()
        self.port = self.port or free_port()
        self.url = f"https://{LOOPBACK}:{self.port}"
        etcd = self._component("etcd", _etcd_args(self, pki, etcd_port, etcd_peer))
        await etcd.start()
        await self._wait_tcp(etcd, etcd_port, started + timeout)
        apiserver = self._component("kube-apiserver", _apiserver_args(self, pki, etcd_port))
        await apiserver.start()
        await self._wait_ready(apiserver, started + timeout)
        kubeconfigs = self.directory / "kubeconfigs"
        kcm_config = write_kubeconfig(
            kubeconfigs / "controller-manager", self.url, pki.ca, pki.controller_manager
        )
        scheduler_config = write_kubeconfig(
            kubeconfigs / "scheduler", self.url, pki.ca, pki.scheduler
        )
        for component in (
            self._component("kube-controller-manager", _controller_manager_args(pki, kcm_config)),
            self._component("kube-scheduler", _scheduler_args(scheduler_config)),
        ):
            await component.start()
        log.info("Control plane ready at %s in %.1fs.", self.url, time.monotonic() - started)

    def _component(self, name: str, args: list[str]) -> Component:
        component = Component(
            name, [str(self.binaries.path(name)), *args], self.directory / "logs" / f"{name}.log"
        )
        self.components.append(component)
        return component

    def write_admin_kubeconfig(self, path: Path, namespace: str = "default") -> Path:
        assert self.pki is not None
        return write_kubeconfig(path, self.url, self.pki.ca, self.pki.admin, namespace=namespace)

    def client_ssl(self, user: KeyPair | None = None) -> ssl.SSLContext:
        """A TLS context that trusts the cluster CA and presents `user` (default: admin)."""
        assert self.pki is not None
        context = ssl.create_default_context(cafile=str(self.pki.ca))
        pair = user or self.pki.admin
        context.load_cert_chain(pair.cert, pair.key)
        return context

    def failed(self) -> list[Component]:
        """Components that have exited (the sandbox then stops with their log tails)."""
        return [c for c in self.components if c.proc is not None and not c.running]

    async def _wait_tcp(self, component: Component, port: int, deadline: float) -> None:
        while time.monotonic() < deadline:
            self._check_alive(component)
            with contextlib.suppress(OSError):
                _reader, writer = await asyncio.open_connection(LOOPBACK, port)
                writer.close()
                return
            await asyncio.sleep(0.1)
        raise ControlPlaneError(f"{component.name} did not listen in time.\n{component.tail()}")

    async def _wait_ready(self, component: Component, deadline: float) -> None:
        context = self.client_ssl()
        last = ""
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                self._check_alive(component)
                try:
                    async with session.get(
                        f"{self.url}/readyz", ssl=context, timeout=aiohttp.ClientTimeout(total=5)
                    ) as response:
                        if response.status == 200:
                            return
                        last = f"/readyz answered {response.status}"
                except (aiohttp.ClientError, TimeoutError) as exc:
                    last = str(exc) or type(exc).__name__
                await asyncio.sleep(0.2)
        raise ControlPlaneError(
            f"{component.name} was not ready in time ({last}); its log ends:\n{component.tail()}"
        )

    @staticmethod
    def _check_alive(component: Component) -> None:
        if not component.running:
            code = component.proc.returncode if component.proc else None
            raise ControlPlaneError(
                f"{component.name} exited with code {code}; its log "
                f"({component.log_path}) ends:\n{component.tail()}"
            )

    async def stop(self) -> None:
        """Stop the components in reverse order (controllers first, etcd last)."""
        for component in reversed(self.components):
            await component.stop()


def _etcd_args(plane: ControlPlane, pki: ClusterPki, port: int, peer: int) -> list[str]:
    client_url, peer_url = f"https://{LOOPBACK}:{port}", f"https://{LOOPBACK}:{peer}"
    tls = [
        f"--cert-file={pki.etcd.cert}",
        f"--key-file={pki.etcd.key}",
        f"--trusted-ca-file={pki.ca}",
        "--client-cert-auth=true",
        f"--peer-cert-file={pki.etcd.cert}",
        f"--peer-key-file={pki.etcd.key}",
        f"--peer-trusted-ca-file={pki.ca}",
        "--peer-client-cert-auth=true",
    ]
    return [
        "--name=sandbox",
        f"--data-dir={plane.directory / 'etcd'}",
        f"--listen-client-urls={client_url}",
        f"--advertise-client-urls={client_url}",
        f"--listen-peer-urls={peer_url}",
        f"--initial-advertise-peer-urls={peer_url}",
        f"--initial-cluster=sandbox={peer_url}",
        "--initial-cluster-state=new",
        *tls,
        # Throwaway data: no fsync, which makes writes fast on a small machine.
        "--unsafe-no-fsync=true",
        "--log-level=warn",
    ]


AUDIT_POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
# Who did what: every request's user, verb, resource and answer, without bodies.
omitStages: [RequestReceived]
rules:
  - level: None
    nonResourceURLs: ["/healthz*", "/readyz*", "/livez*", "/version", "/openapi*"]
  - level: Metadata
"""


def _audit_args(plane: ControlPlane) -> list[str]:
    """The API server's audit log (JSON lines), so tests can see every request a client
    made, e.g. to check that an RBAC file covers exactly what the operator uses."""
    policy = plane.directory / "audit-policy.yaml"
    policy.write_text(AUDIT_POLICY)
    return [
        f"--audit-policy-file={policy}",
        f"--audit-log-path={plane.directory / 'logs' / 'audit.log'}",
        "--audit-log-format=json",
        "--audit-log-maxsize=200",
        "--audit-log-maxbackup=1",
        "--audit-log-mode=batch",
        "--audit-log-batch-max-wait=1s",
    ]


def _apiserver_args(plane: ControlPlane, pki: ClusterPki, etcd_port: int) -> list[str]:
    return [
        *_audit_args(plane),
        f"--bind-address={LOOPBACK}",
        f"--advertise-address={LOOPBACK}",
        f"--secure-port={plane.port}",
        f"--etcd-servers=https://{LOOPBACK}:{etcd_port}",
        f"--etcd-cafile={pki.ca}",
        f"--etcd-certfile={pki.apiserver_etcd_client.cert}",
        f"--etcd-keyfile={pki.apiserver_etcd_client.key}",
        f"--tls-cert-file={pki.apiserver.cert}",
        f"--tls-private-key-file={pki.apiserver.key}",
        f"--client-ca-file={pki.ca}",
        "--anonymous-auth=false",
        "--authorization-mode=Node,RBAC",
        "--enable-admission-plugins=NodeRestriction",
        f"--service-account-issuer={ISSUER}",
        f"--service-account-key-file={pki.service_accounts.cert}",
        f"--service-account-signing-key-file={pki.service_accounts.key}",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        # The default/kubernetes endpoints would name 127.0.0.1, which Endpoints refuse.
        "--endpoint-reconciler-type=none",
        f"--kubelet-client-certificate={pki.apiserver_kubelet_client.cert}",
        f"--kubelet-client-key={pki.apiserver_kubelet_client.key}",
        f"--kubelet-certificate-authority={pki.ca}",
        "--kubelet-preferred-address-types=InternalIP",
        # Identity from the fault proxy in front (request-header authentication).
        f"--requestheader-client-ca-file={pki.front_proxy_ca}",
        "--requestheader-allowed-names=front-proxy-client",
        "--requestheader-username-headers=X-Remote-User",
        "--requestheader-group-headers=X-Remote-Group",
        "--requestheader-extra-headers-prefix=X-Remote-Extra-",
        f"--proxy-client-cert-file={pki.front_proxy_client.cert}",
        f"--proxy-client-key-file={pki.front_proxy_client.key}",
        f"--default-not-ready-toleration-seconds={EVICTION_S}",
        f"--default-unreachable-toleration-seconds={EVICTION_S}",
        "--allow-privileged=true",
        "--profiling=false",
        "--v=0",
    ]


def _controller_args(kubeconfig: Path) -> list[str]:
    """What the controller-manager and the scheduler share: their identity, and their own
    health and metrics endpoint on loopback, which asks the API server who may read it."""
    return [
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        f"--bind-address={LOOPBACK}",
        f"--secure-port={free_port()}",
        "--leader-elect=false",
        "--profiling=false",
        "--v=0",
    ]


def _controller_manager_args(pki: ClusterPki, kubeconfig: Path) -> list[str]:
    return [
        *_controller_args(kubeconfig),
        "--use-service-account-credentials=true",
        f"--service-account-private-key-file={pki.service_accounts.key}",
        f"--root-ca-file={pki.ca}",
        "--controllers=*,-bootstrap-signer-controller,-token-cleaner-controller",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--node-monitor-period=1s",
        f"--node-monitor-grace-period={NODE_GRACE_S}s",
        "--kube-api-qps=100",
        "--kube-api-burst=200",
    ]


def _scheduler_args(kubeconfig: Path) -> list[str]:
    return _controller_args(kubeconfig)


__all__ = ["ControlPlane", "ControlPlaneError", "free_port"]
