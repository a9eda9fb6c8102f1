"""metav1.Condition lists, kept the Kubernetes way, as pure functions.

`lastTransitionTime` must change only when `status` changes: clients use it to
tell how long a condition has held, so re-setting the same status (with a new
reason or message) keeps it. The clock is passed in to keep this testable.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

Status = Literal["True", "False", "Unknown"]
Condition = dict[str, Any]

_REASON = re.compile(r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
_STATUSES = ("True", "False", "Unknown")


def timestamp(now: datetime) -> str:
    """RFC 3339 in UTC with whole seconds, as metav1.Time serializes."""
    if now.tzinfo is None:
        raise ValueError("The clock must give timezone-aware datetimes.")
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def find(conditions: Sequence[Mapping[str, Any]] | None, kind: str) -> Condition | None:
    """The condition of this type, or None."""
    for cond in conditions or ():
        if cond.get("type") == kind:
            return dict(cond)
    return None


def set_condition(
    conditions: Sequence[Mapping[str, Any]] | None,
    kind: str,
    status: Status,
    reason: str,
    message: str,
    *,
    observed_generation: int | None,
    now: datetime,
) -> list[Condition]:
    """A new list with `kind` set; the others unchanged, in their order, new ones last."""
    if status not in _STATUSES:
        raise ValueError(f"Condition status must be True, False or Unknown, got {status!r}.")
    if not _REASON.match(reason):
        raise ValueError(f"Condition reason must be CamelCase, got {reason!r}.")
    old = find(conditions, kind)
    keep = old is not None and old.get("status") == status and old.get("lastTransitionTime")
    new: Condition = {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": old["lastTransitionTime"] if old and keep else timestamp(now),
    }
    if observed_generation is not None:
        new["observedGeneration"] = int(observed_generation)
    if old is None:
        return [*(dict(c) for c in conditions or ()), new]
    return [new if c.get("type") == kind else dict(c) for c in conditions or ()]


def remove_condition(conditions: Sequence[Mapping[str, Any]] | None, kind: str) -> list[Condition]:
    return [dict(c) for c in conditions or () if c.get("type") != kind]
