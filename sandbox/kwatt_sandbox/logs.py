"""Container logs that a (simulated) kubelet writes and `pods/log` serves.

Part of the sandbox cluster, an emulator for tests and demos; production is a real
cluster. A kubelet plugged into the sandbox calls `append` as its container prints
and `close` when the container exits; `kubectl logs [-f]` then reads them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

LogKey = tuple[str, str, str]


@dataclass
class _Log:
    chunks: list[str] = field(default_factory=list)
    closed: bool = False

    @property
    def text(self) -> str:
        return "".join(self.chunks)


class PodLogs:
    """Log text per (namespace, pod, container); append-only, forgotten with the pod."""

    def __init__(self) -> None:
        self._logs: dict[LogKey, _Log] = {}

    def append(self, namespace: str, pod: str, container: str, text: str) -> None:
        self._logs.setdefault((namespace, pod, container), _Log()).chunks.append(text)

    def close(self, namespace: str, pod: str, container: str) -> None:
        """Mark the container as exited: a following reader then stops."""
        self._logs.setdefault((namespace, pod, container), _Log()).closed = True

    def read(self, namespace: str, pod: str, container: str) -> str:
        log = self._logs.get((namespace, pod, container))
        return log.text if log else ""

    def closed(self, namespace: str, pod: str, container: str) -> bool:
        log = self._logs.get((namespace, pod, container))
        return bool(log and log.closed)

    def forget(self, namespace: str, pod: str) -> None:
        for key in [k for k in self._logs if k[0] == namespace and k[1] == pod]:
            del self._logs[key]
