"""A kubeconfig that points kubectl and clients at the sandbox (plain HTTP, no auth).

Part of the sandbox cluster, an emulator for tests and demos; production is a real
cluster, whose kubeconfig comes from its provider.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

CONTEXT = "kwatt-sandbox"


def kubeconfig_dict(url: str, namespace: str = "default") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": CONTEXT, "cluster": {"server": url}}],
        "users": [{"name": CONTEXT, "user": {}}],
        "contexts": [
            {
                "name": CONTEXT,
                "context": {"cluster": CONTEXT, "user": CONTEXT, "namespace": namespace},
            }
        ],
        "current-context": CONTEXT,
        "preferences": {},
    }


def write_kubeconfig(path: Path, url: str, namespace: str = "default") -> Path:
    """Write (replace) a kubeconfig for `url`; returns the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "# kwatt sandbox cluster: an emulator for tests and demos; production is a real cluster.\n"
        + yaml.safe_dump(kubeconfig_dict(url, namespace), sort_keys=False)
    )
    return path
