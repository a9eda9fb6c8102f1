"""Events that a node agent records about its pods (what `kubectl describe` shows).

Part of the sandbox cluster (a test and demo harness; production is a real cluster).
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import aiohttp

from kwatt_sandbox.nodes.api import ApiClient, ApiError, now_rfc3339

log = logging.getLogger(__name__)


def event_body(
    obj: dict[str, Any], kind: str, reason: str, message: str, component: str, host: str
) -> dict[str, Any]:
    """A core/v1 Event about `obj`, as a kubelet on `host` writes it; `kind` is Normal or
    Warning."""
    meta = obj.get("metadata") or {}
    stamp = now_rfc3339()
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": f"{meta.get('name', '')}.{uuid.uuid4().hex[:16]}",
            "namespace": meta.get("namespace") or "default",
        },
        "involvedObject": {
            "apiVersion": obj.get("apiVersion") or "v1",
            "kind": obj.get("kind") or "Pod",
            "name": meta.get("name", ""),
            "namespace": meta.get("namespace", ""),
            "uid": meta.get("uid", ""),
        },
        "reason": reason,
        "message": message,
        "type": kind,
        "source": {"component": component, "host": host},
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
        "reportingComponent": component,
        "reportingInstance": host,
    }


async def record_event(
    api: ApiClient,
    obj: dict[str, Any],
    kind: str,
    reason: str,
    message: str,
    component: str,
    host: str,
) -> None:
    """Create the event; an event that cannot be written is logged, never raised."""
    body = event_body(obj, kind, reason, message, component, host)
    namespace = body["metadata"]["namespace"]
    try:
        await api.create(f"/api/v1/namespaces/{namespace}/events", body)
    except (ApiError, aiohttp.ClientError, TimeoutError) as exc:
        log.debug("Event %s about %s not recorded: %s", reason, body["metadata"]["name"], exc)
