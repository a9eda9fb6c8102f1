"""The sandbox cluster's certificates: one CA made at start, and what each part presents.

Part of the sandbox cluster (a test and demo harness; production is a real cluster).
Every key and certificate lives in the cluster's temporary directory, readable by
its owner only, and dies with it. Identities follow Kubernetes' conventions: the
certificate's CN is the user and each O is a group (`system:masters` for the admin,
`system:nodes` with `system:node:NAME` for a node agent).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

LOOPBACK = "127.0.0.1"
_VALIDITY = datetime.timedelta(days=2)  # a sandbox lives for hours, not years


@dataclass(frozen=True)
class KeyPair:
    """A certificate and its private key, as PEM files."""

    cert: Path
    key: Path


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return path


def _key_pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(common_name: str, organizations: tuple[str, ...] = ()) -> x509.Name:
    parts = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
    parts.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(parts)


class Authority:
    """A certificate authority whose key never leaves `directory`."""

    def __init__(self, directory: Path, name: str) -> None:
        now = datetime.datetime.now(datetime.UTC)
        self._key = ec.generate_private_key(ec.SECP256R1())
        subject = _name(name)
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + _VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self._key.public_key()), critical=False
            )
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(self._key, hashes.SHA256())
        )
        self.directory = directory
        self.cert_path = _write(
            directory / f"{name}.crt", self._cert.public_bytes(serialization.Encoding.PEM)
        )

    def issue(
        self,
        file_stem: str,
        common_name: str,
        *,
        organizations: tuple[str, ...] = (),
        client: bool = False,
        server: bool = False,
        hosts: tuple[str, ...] = (),
    ) -> KeyPair:
        """A leaf certificate for a client identity, a server's `hosts`, or both."""
        now = datetime.datetime.now(datetime.UTC)
        key = ec.generate_private_key(ec.SECP256R1())
        usages = []
        if client:
            usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
        if server:
            usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name, organizations))
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + _VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            # Key identifiers and key usage: what strict verifiers (Python 3.13+) require.
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), False
            )
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_encipherment=False,
                    content_commitment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
        )
        if hosts:
            names: list[x509.GeneralName] = []
            for host in hosts:
                try:
                    names.append(x509.IPAddress(ipaddress.ip_address(host)))
                except ValueError:
                    names.append(x509.DNSName(host))
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        return KeyPair(
            cert=_write(
                self.directory / f"{file_stem}.crt", cert.public_bytes(serialization.Encoding.PEM)
            ),
            key=_write(self.directory / f"{file_stem}.key", _key_pem(key)),
        )


def service_account_keys(directory: Path) -> KeyPair:
    """The RSA key pair that signs ServiceAccount tokens (`cert` holds the public key)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return KeyPair(
        cert=_write(directory / "service-account.pub", public),
        key=_write(directory / "service-account.key", _key_pem(key)),
    )


API_SERVER_HOSTS = (
    LOOPBACK,
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)


@dataclass(frozen=True)
class ClusterPki:
    """Every certificate the control plane, the fault proxy and the node agents use."""

    directory: Path
    ca: Path
    front_proxy_ca: Path
    apiserver: KeyPair
    apiserver_etcd_client: KeyPair
    apiserver_kubelet_client: KeyPair
    etcd: KeyPair
    admin: KeyPair
    controller_manager: KeyPair
    scheduler: KeyPair
    front_proxy_client: KeyPair
    fault_proxy: KeyPair
    service_accounts: KeyPair
    _authority: Authority

    def node(self, name: str) -> tuple[KeyPair, KeyPair]:
        """(client, serving) certificates of the node agent `name`."""
        client = self._authority.issue(
            f"node-{name}-client",
            f"system:node:{name}",
            organizations=("system:nodes",),
            client=True,
        )
        serving = self._authority.issue(
            f"node-{name}-serving", f"system:node:{name}", server=True, hosts=(LOOPBACK, name)
        )
        return client, serving


ADMIN_USER = "kwatt-sandbox-admin"
KUBELET_CLIENT_USER = "kube-apiserver-kubelet-client"


def make_cluster_pki(directory: Path) -> ClusterPki:
    """Make a CA and every certificate of one sandbox cluster under `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    ca = Authority(directory, "kwatt-sandbox-ca")
    front = Authority(directory, "kwatt-sandbox-front-proxy-ca")
    return ClusterPki(
        directory=directory,
        ca=ca.cert_path,
        front_proxy_ca=front.cert_path,
        apiserver=ca.issue("apiserver", "kube-apiserver", server=True, hosts=API_SERVER_HOSTS),
        apiserver_etcd_client=ca.issue("apiserver-etcd-client", "kube-apiserver", client=True),
        apiserver_kubelet_client=ca.issue(
            "apiserver-kubelet-client",
            KUBELET_CLIENT_USER,
            client=True,
        ),
        etcd=ca.issue("etcd", "etcd", client=True, server=True, hosts=(LOOPBACK, "localhost")),
        admin=ca.issue("admin", ADMIN_USER, organizations=("system:masters",), client=True),
        controller_manager=ca.issue(
            "controller-manager", "system:kube-controller-manager", client=True
        ),
        scheduler=ca.issue("scheduler", "system:kube-scheduler", client=True),
        front_proxy_client=front.issue("front-proxy-client", "front-proxy-client", client=True),
        fault_proxy=ca.issue("fault-proxy", "kwatt-fault-proxy", server=True, hosts=(LOOPBACK,)),
        service_accounts=service_account_keys(directory),
        _authority=ca,
    )


__all__ = [
    "ADMIN_USER",
    "API_SERVER_HOSTS",
    "KUBELET_CLIENT_USER",
    "LOOPBACK",
    "Authority",
    "ClusterPki",
    "KeyPair",
    "make_cluster_pki",
]
