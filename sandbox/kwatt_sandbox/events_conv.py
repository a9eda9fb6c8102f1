"""Conversion between core/v1 Events (storage) and events.k8s.io/v1 Events.

Part of the sandbox cluster, an emulator for tests and demos; production is a real
cluster. Both APIs share one storage as on the real server, so an event posted by
kopf (core/v1) is visible through events.k8s.io/v1 and the other way round.
"""

from __future__ import annotations

from typing import Any

# events.k8s.io/v1 field -> core/v1 field
_RENAMES = {
    "regarding": "involvedObject",
    "note": "message",
    "reportingController": "reportingComponent",
    "deprecatedSource": "source",
    "deprecatedFirstTimestamp": "firstTimestamp",
    "deprecatedLastTimestamp": "lastTimestamp",
    "deprecatedCount": "count",
}
_BACK = {v: k for k, v in _RENAMES.items()}


def to_events_v1(core: dict[str, Any]) -> dict[str, Any]:
    out = {_BACK.get(k, k): v for k, v in core.items()}
    out["apiVersion"] = "events.k8s.io/v1"
    return out


def from_events_v1(event: dict[str, Any]) -> dict[str, Any]:
    out = {_RENAMES.get(k, k): v for k, v in event.items()}
    out["apiVersion"] = "v1"
    return out
