"""A Job controller (batch/v1) for the sandbox, following the documented behaviour.

Part of the sandbox cluster, an emulator for tests and demos; production is a real
cluster. What it does, as the Kubernetes documentation describes Jobs:

- creates pods from the template (generateName `<job>-`, the job-name and
  controller-uid labels, a controller ownerReference with blockOwnerDeletion) until
  `completions` pods succeeded, at most `parallelism` at a time (NonIndexed only);
- counts succeeded and failed pods (a pod deleted before it finished counts as
  failed, except pods this controller deleted to suspend the Job); with
  restartPolicy OnFailure, container restarts count as failures too;
- fails the Job when failures exceed `backoffLimit` (BackoffLimitExceeded) or it has
  been active longer than `activeDeadlineSeconds` (DeadlineExceeded): first the
  FailureTarget condition, active pods are deleted, then Failed once none are left;
- on success adds SuccessCriteriaMet, then Complete and completionTime;
- `suspend: true` deletes active pods and sets Suspended=True (JobSuspended);
  resuming sets Suspended=False (JobResumed) and resets startTime, which restarts
  the activeDeadlineSeconds clock;
- deletes finished Jobs after `ttlSecondsAfterFinished` (background propagation).

Simplification: failed pods are replaced at once, without the real 10 s, 20 s, ...
exponential back-off.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from typing import Any

from kwatt_sandbox.errors import ApiError
from kwatt_sandbox.nodes.events import record_event
from kwatt_sandbox.nodes.workqueue import WorkQueue
from kwatt_sandbox.store import Store, WatchEvent, now_rfc3339

log = logging.getLogger(__name__)
COMPONENT = "job-controller"
TERMINAL = ("Succeeded", "Failed")
Key = tuple[str, str]  # (namespace, job name)

BACKOFF_MESSAGE = "Job has reached the specified backoff limit"
DEADLINE_MESSAGE = "Job was active longer than specified deadline"
SUCCESS_MESSAGE = "Reached expected number of succeeded pods"


def _parse_time(stamp: str | None) -> float | None:
    if not stamp:
        return None
    return dt.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC).timestamp()


def condition(status: dict[str, Any], kind: str) -> dict[str, Any] | None:
    return next((c for c in status.get("conditions") or [] if c.get("type") == kind), None)


def is_true(status: dict[str, Any], kind: str) -> bool:
    cond = condition(status, kind)
    return cond is not None and cond.get("status") == "True"


def set_condition(
    status: dict[str, Any], kind: str, ok: bool, reason: str, message: str, now: str
) -> bool:
    """Add or update a Job condition; True if it changed."""
    value = "True" if ok else "False"
    old = condition(status, kind)
    if old is not None and (old.get("status"), old.get("reason")) == (value, reason):
        return False
    new = {
        "type": kind,
        "status": value,
        "lastProbeTime": now,
        "lastTransitionTime": now
        if old is None or old.get("status") != value
        else old["lastTransitionTime"],
        "reason": reason,
        "message": message,
    }
    conditions = [c for c in status.get("conditions") or [] if c.get("type") != kind]
    status["conditions"] = [*conditions, new]
    return True


def owner_uid(pod: dict[str, Any]) -> str | None:
    for ref in (pod.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller") and ref.get("kind") == "Job":
            return str(ref.get("uid", ""))
    return None


def pod_from_template(job: dict[str, Any]) -> dict[str, Any]:
    """A new pod for `job`: its template, labels, and a controller ownerReference."""
    meta = job["metadata"]
    template = (job.get("spec") or {}).get("template") or {}
    tmeta = template.get("metadata") or {}
    labels = dict(tmeta.get("labels") or {})
    for key in ("batch.kubernetes.io/controller-uid", "controller-uid"):
        labels.setdefault(key, meta["uid"])
    for key in ("batch.kubernetes.io/job-name", "job-name"):
        labels.setdefault(key, meta["name"])
    pod_meta: dict[str, Any] = {
        "generateName": f"{meta['name']}-",
        "namespace": meta["namespace"],
        "labels": labels,
        "ownerReferences": [
            {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "name": meta["name"],
                "uid": meta["uid"],
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ],
    }
    if tmeta.get("annotations"):
        pod_meta["annotations"] = dict(tmeta["annotations"])
    if tmeta.get("finalizers"):
        pod_meta["finalizers"] = list(tmeta["finalizers"])
    return {"apiVersion": "v1", "kind": "Pod", "metadata": pod_meta, "spec": template.get("spec")}


class JobController:
    """Reconciles Jobs and their pods; all state lives in the store but the counts of
    pods already seen finishing (what the real controller keeps with finalizers)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.queue: WorkQueue[Key] = WorkQueue()
        self._jobs = store.resolve("batch", "v1", "jobs")
        self._pods = store.resolve("", "v1", "pods")
        self._counted: dict[str, set[str]] = {}  # job uid -> pod uids already counted
        self._gone: dict[str, list[dict[str, Any]]] = {}  # job uid -> deleted pods, last state
        self._suspended_pods: set[str] = set()  # pods deleted to suspend: not failures
        self._started: dict[str, float] = {}  # job uid -> monotonic start (deadline clock)
        store.subscribe(self._note)

    def _note(self, event: WatchEvent) -> None:
        meta = event.obj.get("metadata") or {}
        if event.storage == ("batch", "jobs"):
            if event.type == "DELETED":
                uid = str(meta.get("uid", ""))
                for table in (self._counted, self._gone, self._started):
                    table.pop(uid, None)
                return
            self.queue.add((meta.get("namespace", ""), meta.get("name", "")))
        elif event.storage == ("", "pods"):
            owner = owner_uid(event.obj)
            if owner is None:
                return
            if event.type == "DELETED":
                self._gone.setdefault(owner, []).append(event.obj)
            for ref in meta.get("ownerReferences") or []:
                if ref.get("uid") == owner:
                    self.queue.add((meta.get("namespace", ""), ref.get("name", "")))

    async def run(self) -> None:
        for job in self.store.list_objects(self._jobs, None):
            self.queue.add((job["metadata"]["namespace"], job["metadata"]["name"]))
        while True:
            for key in sorted(await self.queue.take()):
                try:
                    self.sync(*key)
                except ApiError as exc:
                    if exc.code != 404:
                        log.debug("Job %s/%s sync deferred: %s", *key, exc)
                        self.queue.add_after(0.1, key)
                except Exception:  # a bug here must not stop the sandbox
                    log.exception("Job %s/%s sync failed.", *key)

    # --- one reconciliation ----------------------------------------------------------------------

    def sync(self, namespace: str, name: str) -> None:
        try:
            job = self.store.get(self._jobs, namespace, name)
        except ApiError:
            return
        meta, spec = job["metadata"], job.get("spec") or {}
        if meta.get("deletionTimestamp"):
            return
        uid = meta["uid"]
        status: dict[str, Any] = dict(job.get("status") or {})
        before = {**status, "conditions": list(status.get("conditions") or [])}
        now = now_rfc3339(self.store.clock)
        if is_true(status, "Complete") or is_true(status, "Failed"):
            self._expire(job, status)
            return
        pods = [p for p in self.store.list_objects(self._pods, namespace) if owner_uid(p) == uid]
        self._count(uid, pods, status)
        live = [p for p in pods if (p.get("status") or {}).get("phase") not in TERMINAL]
        active = [p for p in live if not p["metadata"].get("deletionTimestamp")]
        terminating = [p for p in live if p["metadata"].get("deletionTimestamp")]
        status["active"] = len(active)
        status["ready"] = sum(1 for p in active if _pod_ready(p))
        status["terminating"] = len(terminating)
        status.setdefault("succeeded", 0)
        status.setdefault("failed", 0)

        finishing = is_true(status, "FailureTarget") or is_true(status, "SuccessCriteriaMet")
        if not finishing and spec.get("suspend"):
            self._suspend(job, status, active, now)
        elif not finishing:
            self._resume_if_needed(job, status, now)
            self._judge(job, status, active, now)
        if is_true(status, "FailureTarget") or is_true(status, "SuccessCriteriaMet"):
            self._delete_pods(job, active, counted_as_failed=True)
            if not live:
                self._finish(job, status, now)
        elif not spec.get("suspend"):
            self._create_pods(job, status, active)
        if status != before:
            body = {"metadata": {"name": name}, "status": status}
            self.store.update(self._jobs, namespace, name, body, subresource="status")
            if is_true(status, "Complete") or is_true(status, "Failed"):
                self.queue.add((namespace, name))

    def _count(self, uid: str, pods: list[dict[str, Any]], status: dict[str, Any]) -> None:
        counted = self._counted.setdefault(uid, set())
        seen = {p["metadata"]["uid"]: p for p in pods}
        for gone in self._gone.pop(uid, []):
            seen.setdefault(gone["metadata"]["uid"], {**gone, "_gone": True})
        for pod_uid, pod in seen.items():
            if pod_uid in counted:
                continue
            phase = (pod.get("status") or {}).get("phase")
            if phase == "Succeeded":
                status["succeeded"] = int(status.get("succeeded") or 0) + 1
            elif phase == "Failed" or pod.get("_gone"):
                if pod_uid not in self._suspended_pods:
                    status["failed"] = int(status.get("failed") or 0) + 1
            else:
                continue
            counted.add(pod_uid)
            self._suspended_pods.discard(pod_uid)

    def _suspend(
        self, job: dict[str, Any], status: dict[str, Any], active: list[dict[str, Any]], now: str
    ) -> None:
        self._delete_pods(job, active, counted_as_failed=False)
        if not is_true(status, "Suspended"):
            set_condition(status, "Suspended", True, "JobSuspended", "Job suspended", now)
            record_event(self.store, job, "Normal", "Suspended", "Job suspended", COMPONENT)

    def _resume_if_needed(self, job: dict[str, Any], status: dict[str, Any], now: str) -> None:
        uid = job["metadata"]["uid"]
        if is_true(status, "Suspended"):
            set_condition(status, "Suspended", False, "JobResumed", "Job resumed", now)
            record_event(self.store, job, "Normal", "Resumed", "Job resumed", COMPONENT)
            status["startTime"] = now
            self._started[uid] = time.monotonic()
        if not status.get("startTime"):
            status["startTime"] = now
            self._started[uid] = time.monotonic()

    def _judge(
        self, job: dict[str, Any], status: dict[str, Any], active: list[dict[str, Any]], now: str
    ) -> None:
        """Decide success or failure (FailureTarget / SuccessCriteriaMet)."""
        spec = job.get("spec") or {}
        uid = job["metadata"]["uid"]
        restarts = 0
        if (spec.get("template") or {}).get("spec", {}).get("restartPolicy") == "OnFailure":
            restarts = sum(_restarts(p) for p in active)
        limit = int(spec.get("backoffLimit", 6))
        completions = int(spec.get("completions") or 1)
        deadline = spec.get("activeDeadlineSeconds")
        if int(status.get("succeeded") or 0) >= completions:
            set_condition(
                status, "SuccessCriteriaMet", True, "CompletionsReached", SUCCESS_MESSAGE, now
            )
            return
        if int(status.get("failed") or 0) + restarts > limit:
            set_condition(
                status, "FailureTarget", True, "BackoffLimitExceeded", BACKOFF_MESSAGE, now
            )
            return
        if deadline is not None:
            started = self._started.get(uid)
            if started is None:
                wall = _parse_time(status.get("startTime")) or self.store.clock()
                started = time.monotonic() - (self.store.clock() - wall)
                self._started[uid] = started
            left = started + float(deadline) - time.monotonic()
            if left <= 0:
                set_condition(
                    status, "FailureTarget", True, "DeadlineExceeded", DEADLINE_MESSAGE, now
                )
            else:
                self.queue.add_after(
                    left + 0.01, (job["metadata"]["namespace"], job["metadata"]["name"])
                )

    def _finish(self, job: dict[str, Any], status: dict[str, Any], now: str) -> None:
        status["active"] = status["ready"] = status["terminating"] = 0
        target = condition(status, "FailureTarget")
        if target is not None and target.get("status") == "True":
            set_condition(status, "Failed", True, target["reason"], target["message"], now)
            record_event(self.store, job, "Warning", target["reason"], target["message"], COMPONENT)
        else:
            set_condition(status, "Complete", True, "CompletionsReached", SUCCESS_MESSAGE, now)
            status["completionTime"] = now
            record_event(self.store, job, "Normal", "Completed", "Job completed", COMPONENT)
        log.info("Job %s/%s finished.", job["metadata"]["namespace"], job["metadata"]["name"])

    def _create_pods(
        self, job: dict[str, Any], status: dict[str, Any], active: list[dict[str, Any]]
    ) -> None:
        spec = job.get("spec") or {}
        completions = int(spec.get("completions") or 1)
        parallelism = int(spec.get("parallelism", 1))
        left = completions - int(status.get("succeeded") or 0)
        wanted = min(parallelism, left) - len(active)
        for _ in range(max(wanted, 0)):
            pod = self.store.create(
                self._pods, job["metadata"]["namespace"], pod_from_template(job)
            )
            status["active"] = int(status.get("active") or 0) + 1
            record_event(
                self.store,
                job,
                "Normal",
                "SuccessfulCreate",
                f"Created pod: {pod['metadata']['name']}",
                COMPONENT,
            )

    def _delete_pods(
        self, job: dict[str, Any], pods: list[dict[str, Any]], *, counted_as_failed: bool
    ) -> None:
        for pod in pods:
            meta = pod["metadata"]
            if not counted_as_failed:
                self._suspended_pods.add(meta["uid"])
            try:
                self.store.delete(self._pods, meta["namespace"], meta["name"])
            except ApiError:
                continue
            record_event(
                self.store,
                job,
                "Normal",
                "SuccessfulDelete",
                f"Deleted pod: {meta['name']}",
                COMPONENT,
            )

    def _expire(self, job: dict[str, Any], status: dict[str, Any]) -> None:
        """ttlSecondsAfterFinished: delete the finished Job (and, in the background, its pods)."""
        ttl = (job.get("spec") or {}).get("ttlSecondsAfterFinished")
        if ttl is None:
            return
        meta = job["metadata"]
        failed = condition(status, "Failed")
        finished = status.get("completionTime") or (failed or {}).get("lastTransitionTime")
        when = _parse_time(finished) or self.store.clock()
        left = when + float(ttl) - self.store.clock()
        if left > 0:
            self.queue.add_after(left, (meta["namespace"], meta["name"]))
            return
        try:
            self.store.delete(self._jobs, meta["namespace"], meta["name"], propagation="Background")
        except ApiError:
            return
        log.info("Job %s/%s deleted after its TTL.", meta["namespace"], meta["name"])


def _pod_ready(pod: dict[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _restarts(pod: dict[str, Any]) -> int:
    status = pod.get("status") or {}
    return sum(
        int(s.get("restartCount") or 0)
        for key in ("containerStatuses", "initContainerStatuses")
        for s in status.get(key) or []
    )
