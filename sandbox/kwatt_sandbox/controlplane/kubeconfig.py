"""Kubeconfigs for the sandbox cluster's users: the admin, the controllers, the node agents.

Part of the sandbox cluster (a test and demo harness; production is a real cluster,
whose kubeconfig comes from its provider). Certificates are embedded, so a
kubeconfig stands alone: `kubectl` in another terminal needs nothing else.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import yaml

from kwatt_sandbox.controlplane.pki import KeyPair

CONTEXT = "kwatt-sandbox"
NOTICE = "# kwatt sandbox cluster: a test and demo harness; production is a real cluster.\n"


def _data(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def kubeconfig_dict(
    url: str, ca: Path, user: KeyPair, *, name: str = CONTEXT, namespace: str = "default"
) -> dict[str, Any]:
    """A kubeconfig for one TLS client-certificate user of the cluster at `url`."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": name, "cluster": {"server": url, "certificate-authority-data": _data(ca)}}
        ],
        "users": [
            {
                "name": name,
                "user": {
                    "client-certificate-data": _data(user.cert),
                    "client-key-data": _data(user.key),
                },
            }
        ],
        "contexts": [
            {"name": name, "context": {"cluster": name, "user": name, "namespace": namespace}}
        ],
        "current-context": name,
        "preferences": {},
    }


def write_kubeconfig(
    path: Path, url: str, ca: Path, user: KeyPair, *, namespace: str = "default"
) -> Path:
    """Write (replace, atomically, owner-only) a kubeconfig; returns the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = NOTICE + yaml.safe_dump(
        kubeconfig_dict(url, ca, user, namespace=namespace), sort_keys=False
    )
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)
    return path


__all__ = ["CONTEXT", "kubeconfig_dict", "write_kubeconfig"]
