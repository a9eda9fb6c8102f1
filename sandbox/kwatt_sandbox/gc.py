"""Garbage collection: owner references, foreground deletion, namespaces and CRDs.

Part of the sandbox cluster, an emulator for tests and demos; production is a real
cluster. Like the real garbage collector and namespace controller it works
asynchronously after the writes that trigger it: `note` queues work from store
events, `process` does it (on the loop thread), `run` is the background task.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from kwatt_sandbox.errors import ApiError
from kwatt_sandbox.store import CRD_CLEANUP, FOREGROUND, Store, WatchEvent

log = logging.getLogger(__name__)


class GarbageCollector:
    """Deletes dependents of deleted owners and empties deleting namespaces and CRDs."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._dirty = False
        self._wakeup: asyncio.Event | None = None
        store.subscribe(self.note)

    def note(self, event: WatchEvent) -> None:
        meta = event.obj.get("metadata") or {}
        relevant = (
            event.type == "DELETED" or meta.get("deletionTimestamp") or meta.get("ownerReferences")
        )
        if relevant:
            self._dirty = True
            if self._wakeup is not None:
                self._wakeup.set()

    async def run(self) -> None:
        self._wakeup = asyncio.Event()
        self._dirty = True
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            await asyncio.sleep(0)  # let the request that triggered us answer first
            try:
                self.process()
            except Exception:  # keep collecting; a bug here must not stop the sandbox
                log.exception("Garbage collection pass failed.")

    def process(self) -> None:
        """Run passes until nothing changes (bounded, in case of a cycle)."""
        for _ in range(50):
            if not self._dirty:
                return
            self._dirty = False
            self._pass()

    def _pass(self) -> None:
        store = self.store
        objects = list(store.all_objects())
        for storage, obj in objects:
            meta = obj.get("metadata") or {}
            if meta.get("deletionTimestamp"):
                if obj.get("kind") == "Namespace":
                    self._namespace(meta["name"])
                elif obj.get("kind") == "CustomResourceDefinition" and CRD_CLEANUP in (
                    meta.get("finalizers") or []
                ):
                    self._crd(obj)
                if FOREGROUND in (meta.get("finalizers") or []):
                    self._foreground(storage, obj)
            refs = meta.get("ownerReferences") or []
            if refs and not any(store.exists_uid(r.get("uid", "")) for r in refs):
                self._delete(storage, obj, "Background")

    def _delete(self, storage: tuple[str, str], obj: dict[str, Any], policy: str) -> None:
        info = self.store.any_info(storage)
        if info is None:
            return
        meta = obj["metadata"]
        if meta.get("deletionTimestamp") and policy != "Foreground":
            return
        try:
            self.store.delete(info, meta.get("namespace", ""), meta["name"], propagation=policy)
        except ApiError as exc:
            if exc.code != 404:
                raise

    def _dependents(self, uid: str) -> list[tuple[tuple[str, str], dict[str, Any]]]:
        return [
            (storage, obj)
            for storage, obj in self.store.all_objects()
            if any(
                r.get("uid") == uid for r in obj.get("metadata", {}).get("ownerReferences") or []
            )
        ]

    def _foreground(self, storage: tuple[str, str], owner: dict[str, Any]) -> None:
        uid = owner["metadata"]["uid"]
        blocking = False
        for dep_storage, dep in self._dependents(uid):
            refs = dep["metadata"].get("ownerReferences") or []
            if any(r.get("uid") == uid and r.get("blockOwnerDeletion") for r in refs):
                blocking = True
            if not dep["metadata"].get("deletionTimestamp"):
                self._delete(dep_storage, dep, "Foreground")
        still = any(
            any(
                r.get("uid") == uid and r.get("blockOwnerDeletion")
                for r in d["metadata"].get("ownerReferences") or []
            )
            for _, d in self._dependents(uid)
        )
        if not still or not blocking:
            info = self.store.any_info(storage)
            if info is not None:
                meta = owner["metadata"]
                self.store.remove_finalizer(
                    info, meta.get("namespace", ""), meta["name"], FOREGROUND
                )
                self._dirty = True

    def _namespace(self, name: str) -> None:
        remaining = False
        for storage, obj in list(self.store.all_objects()):
            meta = obj.get("metadata") or {}
            if meta.get("namespace") != name or obj.get("kind") == "Namespace":
                continue
            remaining = True
            self._delete(storage, obj, "Background")
        if not remaining:
            self.store.finalize_namespace(name)
            self._dirty = True

    def _crd(self, crd: dict[str, Any]) -> None:
        spec = crd.get("spec") or {}
        storage = (str(spec.get("group", "")), str((spec.get("names") or {}).get("plural", "")))
        remaining = False
        for obj_storage, obj in list(self.store.all_objects()):
            if obj_storage != storage:
                continue
            remaining = True
            self._delete(obj_storage, obj, "Background")
        if not remaining:
            info = self.store.resolve("apiextensions.k8s.io", "v1", "customresourcedefinitions")
            self.store.remove_finalizer(info, "", crd["metadata"]["name"], CRD_CLEANUP)
            self._dirty = True
