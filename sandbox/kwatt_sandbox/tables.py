"""Server-side printing: `meta.k8s.io/v1 Table` responses for `kubectl get`.

Part of the sandbox cluster, an emulator for tests and demos; production is a real
cluster. CRD `additionalPrinterColumns` are evaluated with a small JSONPath subset
(`.a.b[0].c`, `[*]`, `[?(@.type=="Ready")]`), dates are shown as ages the way the
real server formats them (`5m`, `3h2m`).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from collections.abc import Callable
from typing import Any

from kwatt_sandbox.resources import PrinterColumn, ResourceInfo

_NAME_DESC = (
    "Name must be unique within a namespace. Is required when creating resources, although "
    "some resources may allow a client to request the generation of an appropriate name "
    "automatically. Name is primarily intended for creation idempotence and configuration "
    "definition. Cannot be updated."
)
_TOKEN = re.compile(
    r"\.([A-Za-z0-9_\-/]+)|\[(\d+|\*)\]|\[\?\(@\.([A-Za-z0-9_.\-]+)\s*==\s*[\"']([^\"']*)[\"']\)\]|\.\."
)


def jsonpath(obj: Any, path: str) -> list[Any]:
    """Evaluate a simple JSONPath (`{.a.b[0]}` or `.a.b[0]`); returns all matches."""
    path = path.strip()
    if path.startswith("{") and path.endswith("}"):
        path = path[1:-1]
    if path.startswith("$"):
        path = path[1:]
    current: list[Any] = [obj]
    pos = 0
    while pos < len(path):
        match = _TOKEN.match(path, pos)
        if match is None:
            return []
        pos = match.end()
        key, index, fkey, fval = match.groups()
        nxt: list[Any] = []
        for item in current:
            if key is not None and isinstance(item, dict) and key in item:
                nxt.append(item[key])
            elif index == "*" and isinstance(item, list):
                nxt.extend(item)
            elif index is not None and index != "*" and isinstance(item, list):
                if int(index) < len(item):
                    nxt.append(item[int(index)])
            elif fkey is not None and isinstance(item, list):
                for element in item:
                    value = element
                    for part in fkey.split("."):
                        value = value.get(part) if isinstance(value, dict) else None
                    if value is not None and str(value) == fval:
                        nxt.append(element)
        current = nxt
    return current


def parse_time(stamp: str) -> float | None:
    try:
        return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except (ValueError, AttributeError):
        return None


def human_duration(seconds: float) -> str:
    """kubectl's HumanDuration: `45s`, `3m20s`, `12m`, `5h3m`, `30h`, `3d4h`, `20d`, `3y20d`."""
    if seconds < -1:
        return "<invalid>"
    s = max(int(seconds), 0)
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        rem = s % 60
        return f"{minutes}m{rem}s" if rem else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        rem = minutes % 60
        return f"{hours}h{rem}m" if rem else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 192:
        rem = hours % 24
        return f"{hours // 24}d{rem}h" if rem else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        days = (hours // 24) % 365
        return f"{hours // 24 // 365}y{days}d" if days else f"{hours // 24 // 365}y"
    return f"{hours // 24 // 365}y"


def _cell(column: PrinterColumn, obj: dict[str, Any], now: float) -> Any:
    if column.compute is not None:
        value = column.compute(obj)
    else:
        found = jsonpath(obj, column.json_path)
        if not found:
            return None
        value = found[0] if len(found) == 1 else ",".join(_text(v) for v in found)
    if column.type == "date":
        stamp = parse_time(str(value)) if value is not None else None
        return human_duration(now - stamp) if stamp is not None else "<unknown>"
    if column.type == "integer" and isinstance(value, int | float) and not isinstance(value, bool):
        return int(value)
    if column.type == "number" and isinstance(value, int | float):
        return value
    if column.type == "boolean" and isinstance(value, bool):
        return value
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    return _text(value) if column.type == "string" else value


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def _partial(obj: dict[str, Any]) -> dict[str, Any]:
    return {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata", {}),
    }


def render_table(
    info: ResourceInfo,
    objects: list[dict[str, Any]],
    list_meta: dict[str, Any],
    include_object: str = "Metadata",
    clock: Callable[[], float] = time.time,
) -> dict[str, Any]:
    """A Table with a Name column (unless the kind has none) plus its columns, one row each."""
    now = clock()
    columns = [
        {
            "name": "Name",
            "type": "string",
            "format": "name",
            "description": _NAME_DESC,
            "priority": 0,
        }
    ][: 1 if info.name_column else 0]
    for col in info.columns:
        columns.append(
            {
                "name": col.name,
                "type": "string" if col.type == "date" else col.type,
                "format": col.format,
                "description": col.description or col.name,
                "priority": col.priority,
            }
        )
    rows = []
    for obj in objects:
        row: dict[str, Any] = {
            "cells": [obj.get("metadata", {}).get("name", "")][: 1 if info.name_column else 0]
            + [_cell(col, obj, now) for col in info.columns]
        }
        if include_object == "Object":
            row["object"] = obj
        elif include_object != "None":
            row["object"] = _partial(obj)
        rows.append(row)
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "columnDefinitions": columns,
        "rows": rows,
    }
