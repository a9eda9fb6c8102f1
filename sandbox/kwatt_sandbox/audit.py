"""The audit log: every request the sandbox served, named as RBAC names it.

Part of the sandbox cluster, an emulator for tests and demos; production is a real
cluster. Tests read it to prove that an operator's RBAC rules cover exactly the
verbs and resources it uses. Thread-safe: the server appends on its loop thread,
tests read from theirs.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class AuditRecord:
    """One request: the RBAC attributes (verb, group, resource, ...) and its outcome.

    Recorded when the request arrives (so open watches show up at once); `code` is
    filled in when the response is known (0 until then).
    """

    time: float
    method: str
    path: str
    verb: str
    group: str
    version: str
    resource: str
    subresource: str
    namespace: str
    name: str
    user_agent: str
    code: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def rbac_key(self) -> tuple[str, str, str]:
        """(group, resource[/subresource], verb): what one RBAC rule line grants."""
        resource = f"{self.resource}/{self.subresource}" if self.subresource else self.resource
        return (self.group, resource, self.verb)


class AuditLog:
    """A bounded, thread-safe list of `AuditRecord`s."""

    def __init__(self, limit: int = 100_000) -> None:
        self._records: deque[AuditRecord] = deque(maxlen=limit)
        self._lock = threading.Lock()

    def add(self, record: AuditRecord) -> None:
        with self._lock:
            self._records.append(record)

    def records(self, predicate: Callable[[AuditRecord], bool] | None = None) -> list[AuditRecord]:
        with self._lock:
            items = list(self._records)
        return [r for r in items if predicate is None or predicate(r)]

    def clear(self) -> None:
        with self._lock:
            self._records.clear()

    def rbac_usage(self, user_agent: str | None = None) -> set[tuple[str, str, str]]:
        """The set of (group, resource, verb) used by API requests (optionally one client's)."""
        return {
            r.rbac_key
            for r in self.records()
            if r.resource and (user_agent is None or user_agent in r.user_agent)
        }
