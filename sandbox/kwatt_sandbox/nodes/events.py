"""Events that the simulated controllers record (what `kubectl describe` shows).

Part of the sandbox cluster, an emulator for tests and demos; production is a real
cluster.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from kwatt_sandbox.errors import ApiError
from kwatt_sandbox.store import Store, now_rfc3339

log = logging.getLogger(__name__)


def record_event(
    store: Store, obj: dict[str, Any], kind: str, reason: str, message: str, component: str
) -> None:
    """Create a core/v1 Event about `obj`; `kind` is Normal or Warning."""
    meta = obj.get("metadata") or {}
    namespace = meta.get("namespace") or "default"
    stamp = now_rfc3339(store.clock)
    body = {
        "metadata": {"name": f"{meta.get('name', '')}.{uuid.uuid4().hex[:16]}"},
        "involvedObject": {
            "apiVersion": obj.get("apiVersion", ""),
            "kind": obj.get("kind", ""),
            "name": meta.get("name", ""),
            "namespace": meta.get("namespace", ""),
            "uid": meta.get("uid", ""),
            "resourceVersion": meta.get("resourceVersion", ""),
        },
        "reason": reason,
        "message": message,
        "type": kind,
        "source": {"component": component},
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
        "reportingComponent": component,
        "reportingInstance": f"{component}-sandbox",
    }
    try:
        store.create(store.resolve("", "v1", "events"), namespace, body)
    except ApiError as exc:  # e.g. the namespace is being deleted
        log.debug("Event %s about %s not recorded: %s", reason, meta.get("name"), exc)
