"""A scheduler for the simulated nodes: binds pending pods to a node that fits.

Part of the sandbox cluster, an emulator for tests and demos; production is a real
cluster. It checks what kwatt's pods depend on: free `nvidia.com/gpu` devices,
`nodeSelector`, cordoned and not-Ready nodes and the pods capacity (CPU and memory
requests and tolerations are not checked). CPU-only pods prefer CPU nodes, then
nodes go by name. A pod that fits nowhere stays Pending with PodScheduled False
(reason Unschedulable) and a FailedScheduling event; it is retried whenever a pod
ends or a node changes.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from kwatt_sandbox.errors import ApiError
from kwatt_sandbox.nodes.events import record_event
from kwatt_sandbox.nodes.ledger import GpuLedger
from kwatt_sandbox.nodes.podspec import GPU, pod_gpus
from kwatt_sandbox.nodes.workqueue import WorkQueue
from kwatt_sandbox.store import Store, WatchEvent, now_rfc3339

log = logging.getLogger(__name__)
COMPONENT = "default-scheduler"
TERMINAL = ("Succeeded", "Failed")
_ALL = "*"


def _ready(node: dict[str, Any]) -> bool:
    conditions = (node.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def fit_reason(
    node: dict[str, Any], pod: dict[str, Any], free_gpus: int, pods_on_node: int
) -> str | None:
    """Why `pod` cannot go to `node` (the scheduler's wording), or None if it fits."""
    spec = pod.get("spec") or {}
    labels = (node.get("metadata") or {}).get("labels") or {}
    if not _ready(node):
        return "node(s) were not ready"
    if (node.get("spec") or {}).get("unschedulable"):
        return "node(s) were unschedulable"
    selector = spec.get("nodeSelector") or {}
    if any(labels.get(k) != v for k, v in selector.items()):
        return "node(s) didn't match Pod's node affinity/selector"
    capacity = int(((node.get("status") or {}).get("allocatable") or {}).get("pods", "110"))
    if pods_on_node >= capacity:
        return "Too many pods"
    if pod_gpus(spec) > free_gpus:
        return f"Insufficient {GPU}"
    return None


def unschedulable_message(total: int, reasons: list[str]) -> str:
    """'0/N nodes are available: ...' with the reasons counted and sorted."""
    if total == 0:
        return "no nodes available to schedule pods"
    counts = Counter(reasons)
    parts = ", ".join(f"{n} {reason}" for reason, n in sorted(counts.items()))
    return f"0/{total} nodes are available: {parts}."


class Scheduler:
    """Binds pods with no spec.nodeName and schedulerName default-scheduler."""

    def __init__(self, store: Store, ledger: GpuLedger) -> None:
        self.store = store
        self.ledger = ledger
        self.queue: WorkQueue[str] = WorkQueue()
        self._reported: dict[str, str] = {}  # pod uid -> last FailedScheduling message
        self._pods = store.resolve("", "v1", "pods")
        self._nodes = store.resolve("", "v1", "nodes")
        store.subscribe(self._note)

    def _note(self, event: WatchEvent) -> None:
        if event.storage == ("", "nodes"):
            self.queue.add(_ALL)
        if event.storage != ("", "pods"):
            return
        uid = str(event.obj["metadata"].get("uid", ""))
        phase = (event.obj.get("status") or {}).get("phase")
        if event.type == "DELETED" or phase in TERMINAL:
            self._reported.pop(uid, None)
            if self.ledger.release(uid):
                self.queue.add(_ALL)
        elif not (event.obj.get("spec") or {}).get("nodeName"):
            self.queue.add(uid)

    async def run(self) -> None:
        self.queue.add(_ALL)
        while True:
            await self.queue.take()
            try:
                self.schedule_pending()
            except Exception:  # a bug here must not stop the sandbox
                log.exception("Scheduling pass failed.")

    def schedule_pending(self) -> None:
        for pod in self.store.list_objects(self._pods, None):
            spec = pod.get("spec") or {}
            meta = pod["metadata"]
            if (
                spec.get("nodeName")
                or spec.get("schedulerName", COMPONENT) != COMPONENT
                or meta.get("deletionTimestamp")
                or (pod.get("status") or {}).get("phase", "Pending") != "Pending"
                or spec.get("schedulingGates")
            ):
                continue
            self.schedule(pod)

    def schedule(self, pod: dict[str, Any]) -> str | None:
        """Bind `pod` to the best node that fits and return its name, else report why not."""
        nodes = self.store.list_objects(self._nodes, None)
        counts = Counter(
            (p.get("spec") or {}).get("nodeName")
            for p in self.store.list_objects(self._pods, None)
            if (p.get("status") or {}).get("phase") not in TERMINAL
        )
        wants_gpu = pod_gpus(pod.get("spec") or {}) > 0

        def order(node: dict[str, Any]) -> tuple[bool, str]:
            has_gpu = bool(self.ledger.devices.get(node["metadata"]["name"]))
            return (has_gpu != wants_gpu, node["metadata"]["name"])

        reasons = []
        for node in sorted(nodes, key=order):
            name = str(node["metadata"]["name"])
            why = fit_reason(node, pod, len(self.ledger.free(name)), counts[name])
            if why is None and self.ledger.allocate(name, pod) is not None:
                self._bind(pod, name)
                return name
            reasons.append(why or f"Insufficient {GPU}")
        self._unschedulable(pod, unschedulable_message(len(nodes), reasons))
        return None

    def _bind(self, pod: dict[str, Any], node: str) -> None:
        meta = pod["metadata"]
        ns, name = meta["namespace"], meta["name"]
        try:
            body = dict(pod)
            body["spec"] = {**pod["spec"], "nodeName": node}
            bound = self.store.update(self._pods, ns, name, body)
            self._set_scheduled(bound, True, "", "")
        except ApiError as exc:
            self.ledger.release(meta["uid"])
            log.debug("Binding %s/%s to %s failed: %s", ns, name, node, exc)
            return
        self._reported.pop(meta["uid"], None)
        record_event(
            self.store,
            pod,
            "Normal",
            "Scheduled",
            f"Successfully assigned {ns}/{name} to {node}",
            COMPONENT,
        )
        log.debug("Bound %s/%s to %s.", ns, name, node)

    def _unschedulable(self, pod: dict[str, Any], message: str) -> None:
        uid = pod["metadata"]["uid"]
        try:
            self._set_scheduled(pod, False, "Unschedulable", message)
        except ApiError:
            return
        if self._reported.get(uid) != message:
            self._reported[uid] = message
            record_event(self.store, pod, "Warning", "FailedScheduling", message, COMPONENT)

    def _set_scheduled(self, pod: dict[str, Any], ok: bool, reason: str, message: str) -> None:
        status = dict(pod.get("status") or {})
        conditions = [c for c in status.get("conditions") or [] if c.get("type") != "PodScheduled"]
        old = next(
            (c for c in status.get("conditions") or [] if c.get("type") == "PodScheduled"), None
        )
        cond: dict[str, Any] = {
            "type": "PodScheduled",
            "status": "True" if ok else "False",
            "lastProbeTime": None,
            "lastTransitionTime": now_rfc3339(self.store.clock),
        }
        if not ok:
            cond.update(reason=reason, message=message)
        if old is not None and old.get("status") == cond["status"]:
            cond["lastTransitionTime"] = old.get("lastTransitionTime")
        if old == cond:
            return
        status["conditions"] = [cond, *conditions]
        meta = pod["metadata"]
        body = {"metadata": {"name": meta["name"]}, "status": status}
        self.store.update(self._pods, meta["namespace"], meta["name"], body, subresource="status")
