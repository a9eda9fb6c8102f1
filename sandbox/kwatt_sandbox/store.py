"""The object store: etcd plus the generic registry logic of the API server.

Part of the sandbox cluster, an emulator for tests and demos; production is a real
cluster. One global resourceVersion counter orders every write, as etcd's revision
does; a bounded history of watch events lets watches resume and, once compacted,
answer 410 Gone. All methods run on the server's event-loop thread (use
`Sandbox.call` from other threads); listeners (watches, the garbage collector, and
later a Job controller or kubelet) are called synchronously after each write.
"""

from __future__ import annotations

import copy
import datetime as dt
import random
import re
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from kwatt_sandbox import schema as schema_mod
from kwatt_sandbox.errors import (
    ApiError,
    Cause,
    already_exists,
    bad_request,
    conflict,
    gone,
    invalid,
    not_found,
)
from kwatt_sandbox.events_conv import from_events_v1, to_events_v1
from kwatt_sandbox.logs import PodLogs
from kwatt_sandbox.patch import PatchError, json_patch, merge_patch, strategic_merge
from kwatt_sandbox.resources import Registry, ResourceInfo
from kwatt_sandbox.selectors import (
    FieldRequirement,
    Requirement,
    field_value,
    fields_match,
    labels_match,
)

Obj = dict[str, Any]
StorageKey = tuple[str, str]

_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' "
    "or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex "
    "used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
_LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and "
    "must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex "
    "used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)
_SUFFIX_CHARS = "bcdfghjklmnpqrstvwxz2456789"
_SERVER_META = (
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "selfLink",
)
FOREGROUND = "foregroundDeletion"
CRD_CLEANUP = "customresourcecleanup.apiextensions.k8s.io"
PATCH_TYPES = {
    "application/json-patch+json": "json",
    "application/merge-patch+json": "merge",
    "application/strategic-merge-patch+json": "strategic",
    "application/apply-patch+yaml": "apply",
}


@dataclass(frozen=True)
class WatchEvent:
    """One change as a watch reports it; `obj` is in storage form, `old` the prior state."""

    rv: int
    type: str
    storage: StorageKey
    namespace: str
    obj: Obj
    old: Obj | None


Listener = Callable[[WatchEvent], None]
PodTerminator = Callable[[Obj], bool]


def now_rfc3339(clock: Callable[[], float] = time.time) -> str:
    return dt.datetime.fromtimestamp(clock(), dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _clone(obj: Any) -> Any:
    return copy.deepcopy(obj)


def _meta(obj: Obj) -> Obj:
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        meta = {}
        obj["metadata"] = meta
    return meta


def _content(obj: Obj, info: ResourceInfo) -> Obj:
    """What counts for metadata.generation: all but metadata (and status if separate)."""
    skip = {"metadata", "apiVersion", "kind"}
    if info.has_status:
        skip.add("status")
    return {k: v for k, v in obj.items() if k not in skip}


class Store:
    """All objects, the resourceVersion counter, the watch history and the write rules."""

    def __init__(self, history_size: int = 5000, clock: Callable[[], float] = time.time) -> None:
        self.registry = Registry()
        self.clock = clock
        self.history_size = history_size
        self.logs = PodLogs()
        self.pod_terminators: list[PodTerminator] = []
        self._rv = 1
        self._floor = 1
        self._history: deque[WatchEvent] = deque()
        self._objects: dict[StorageKey, dict[tuple[str, str], Obj]] = {}
        self._uids: dict[str, tuple[StorageKey, str, str]] = {}
        self._listeners: list[Listener] = []
        for name in ("default", "kube-system", "kube-public", "kube-node-lease"):
            self.create(self.resolve("", "v1", "namespaces"), "", {"metadata": {"name": name}})

    # --- plumbing -------------------------------------------------------------------------

    @property
    def resource_version(self) -> int:
        return self._rv

    @property
    def oldest_resumable(self) -> int:
        """Watches from any resourceVersion at or above this one can resume."""
        return self._floor

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call `listener` after every write; returns a function that unsubscribes."""
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe

    def compact(self) -> int:
        """Forget the watch history, as etcd compaction does: older rvs now get 410."""
        self._history.clear()
        self._floor = self._rv
        return self._floor

    def events_after(self, rv: int) -> list[WatchEvent]:
        """History after `rv`, or 410 Gone if part of it was compacted away."""
        if rv < self._floor:
            raise gone(f"too old resource version: {rv} ({self._floor})")
        return [e for e in self._history if e.rv > rv]

    def _emit(
        self, kind: str, storage: StorageKey, namespace: str, obj: Obj, old: Obj | None
    ) -> None:
        event = WatchEvent(self._rv, kind, storage, namespace, obj, old)
        self._history.append(event)
        while len(self._history) > self.history_size:
            self._floor = self._history.popleft().rv
        for listener in list(self._listeners):
            listener(event)

    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def resolve(self, group: str, version: str, plural: str) -> ResourceInfo:
        info = self.registry.lookup(group, version, plural)
        if info is None:
            raise ApiError(404, "the server could not find the requested resource")
        return info

    def info_for(self, api_version: str, kind: str) -> ResourceInfo:
        """The resource for an object's apiVersion and kind (for Python-side callers)."""
        group, _, version = api_version.rpartition("/")
        for info in self.registry:
            if info.group == group and info.version == version and info.kind == kind:
                return info
        raise ApiError(404, f'no matches for kind "{kind}" in version "{api_version}"')

    # --- conversion between served versions and storage -----------------------------------

    def _storage_api_version(self, info: ResourceInfo) -> str:
        if info.storage != (info.group, info.plural):
            return "v1"
        if info.group:
            return f"{info.group}/{info.storage_version}"
        return info.storage_version

    def to_served(self, obj: Obj, info: ResourceInfo) -> Obj:
        """The stored object as the requested group/version presents it."""
        if info.group == "events.k8s.io":
            return to_events_v1(obj)
        if obj.get("apiVersion") == info.api_version:
            return obj
        out = dict(obj)
        out["apiVersion"] = info.api_version
        return out

    def _to_storage(self, obj: Obj, info: ResourceInfo) -> Obj:
        if info.group == "events.k8s.io":
            return from_events_v1(obj)
        out = dict(obj)
        out["apiVersion"] = self._storage_api_version(info)
        out["kind"] = info.kind
        return out

    # --- reads ------------------------------------------------------------------------------

    def _bucket(self, info: ResourceInfo) -> dict[tuple[str, str], Obj]:
        return self._objects.setdefault(info.storage, {})

    def _raw(self, info: ResourceInfo, namespace: str, name: str) -> Obj:
        obj = self._bucket(info).get((namespace if info.namespaced else "", name))
        if obj is None:
            raise not_found(info.group, info.plural, name)
        return obj

    def get(self, info: ResourceInfo, namespace: str, name: str) -> Obj:
        return self.to_served(self._raw(info, namespace, name), info)

    def list_objects(
        self,
        info: ResourceInfo,
        namespace: str | None,
        labels: Iterable[Requirement] = (),
        fields: Iterable[FieldRequirement] = (),
    ) -> list[Obj]:
        """Matching objects in (namespace, name) order; namespace None means all."""
        labels, fields = tuple(labels), tuple(fields)
        result = []
        for (ns, _), obj in sorted(self._bucket(info).items()):
            if namespace and info.namespaced and ns != namespace:
                continue
            if self.matches(info, obj, labels, fields):
                result.append(self.to_served(obj, info))
        return result

    def matches(
        self,
        info: ResourceInfo,
        obj: Obj,
        labels: tuple[Requirement, ...],
        fields: tuple[FieldRequirement, ...],
    ) -> bool:
        if labels and not labels_match(labels, (obj.get("metadata") or {}).get("labels")):
            return False
        if fields:

            def getter(o: Any, path: str) -> str:
                return field_value(o, info.field_aliases.get(path, path))

            return fields_match(fields, obj, getter)
        return True

    def exists_uid(self, uid: str) -> bool:
        return uid in self._uids

    def by_uid(self, uid: str) -> Obj | None:
        where = self._uids.get(uid)
        if where is None:
            return None
        storage, ns, name = where
        return self._objects.get(storage, {}).get((ns, name))

    def all_objects(self) -> Iterable[tuple[StorageKey, Obj]]:
        for storage, bucket in list(self._objects.items()):
            for obj in list(bucket.values()):
                yield storage, obj

    def any_info(self, storage: StorageKey) -> ResourceInfo | None:
        infos = self.registry.by_storage(storage)
        core = [i for i in infos if i.group == storage[0]]
        found = core or infos
        return found[0] if found else None

    # --- validation helpers ---------------------------------------------------------------

    def _check_namespace(self, info: ResourceInfo, namespace: str, creating: bool) -> None:
        if not info.namespaced:
            return
        if not namespace:
            raise bad_request("the namespace of the object must be set")
        ns = self._objects.get(("", "namespaces"), {}).get(("", namespace))
        if ns is None:
            raise not_found("", "namespaces", namespace)
        if creating and (ns.get("metadata") or {}).get("deletionTimestamp"):
            raise ApiError(
                403,
                f"unable to create new content in namespace {namespace} because it is being "
                "terminated",
                reason="Forbidden",
            )

    def _validate_name(self, info: ResourceInfo, name: str) -> list[Cause]:
        pattern, message, limit = _DNS_SUBDOMAIN, _SUBDOMAIN_MSG, 253
        if info.plural == "namespaces":
            pattern, message, limit = _DNS_LABEL, _LABEL_MSG, 63
        if len(name) > limit:
            return [
                Cause(
                    "FieldValueInvalid",
                    f'Invalid value: "{name}": must be no more than {limit} characters',
                    "metadata.name",
                )
            ]
        if not pattern.match(name):
            return [
                Cause("FieldValueInvalid", f'Invalid value: "{name}": {message}', "metadata.name")
            ]
        return []

    def _check_kind(self, info: ResourceInfo, body: Obj) -> None:
        api_version = body.get("apiVersion")
        if api_version and api_version != info.api_version:
            raise bad_request(
                f"the API version in the data ({api_version}) does not match the expected API "
                f"version ({info.api_version})"
            )
        kind = body.get("kind")
        if kind and kind != info.kind:
            raise bad_request(
                f"the kind in the data ({kind}) does not match the expected kind ({info.kind})"
            )

    def _schema_pass(
        self, info: ResourceInfo, obj: Obj, name: str, field_validation: str
    ) -> tuple[Obj, list[str]]:
        """Prune, default and validate a custom object; returns it and any warnings."""
        warnings: list[str] = []
        if info.schema is None:
            return obj, warnings
        result, dropped, causes = schema_mod.process(obj, info.schema)
        if dropped and field_validation == "Strict":
            unknown = ", ".join(f'unknown field "{d}"' for d in dropped)
            raise bad_request(
                f'{info.kind} in version "{info.version}" cannot be handled as a {info.kind}: '
                f"strict decoding error: {unknown}"
            )
        if dropped and field_validation == "Warn":
            warnings.extend(f'unknown field "{d}"' for d in dropped)
        if causes:
            raise invalid(info.group, info.kind, name, causes)
        return result, warnings

    def _validate_builtin(self, info: ResourceInfo, obj: Obj, name: str) -> None:
        causes: list[Cause] = []
        if info.plural == "pods":
            containers = (obj.get("spec") or {}).get("containers")
            if not containers:
                causes.append(Cause("FieldValueRequired", "Required value", "spec.containers"))
            for i, c in enumerate(containers or []):
                if not (isinstance(c, dict) and c.get("name")):
                    causes.append(
                        Cause("FieldValueRequired", "Required value", f"spec.containers[{i}].name")
                    )
                if not (isinstance(c, dict) and c.get("image")):
                    causes.append(
                        Cause("FieldValueRequired", "Required value", f"spec.containers[{i}].image")
                    )
        if info.plural == "customresourcedefinitions":
            causes.extend(self._validate_crd(obj, name))
        if causes:
            raise invalid(info.group, info.kind, name, causes)

    def _validate_crd(self, obj: Obj, name: str) -> list[Cause]:
        spec = obj.get("spec") or {}
        names = spec.get("names") or {}
        causes = []
        if not names.get("plural"):
            causes.append(Cause("FieldValueRequired", "Required value", "spec.names.plural"))
        if not names.get("kind"):
            causes.append(Cause("FieldValueRequired", "Required value", "spec.names.kind"))
        if not spec.get("group"):
            causes.append(Cause("FieldValueRequired", "Required value", "spec.group"))
        expected = f"{names.get('plural')}.{spec.get('group')}"
        if names.get("plural") and spec.get("group") and name != expected:
            causes.append(
                Cause(
                    "FieldValueInvalid",
                    f'Invalid value: "{name}": must be spec.names.plural+"."+spec.group',
                    "metadata.name",
                )
            )
        versions = spec.get("versions") or []
        if not versions:
            causes.append(Cause("FieldValueRequired", "Required value", "spec.versions"))
        elif sum(1 for v in versions if v.get("storage")) != 1:
            causes.append(
                Cause(
                    "FieldValueInvalid",
                    f"Invalid value: {[v.get('name') for v in versions]}: must have exactly one "
                    "version marked as storage version",
                    "spec.versions",
                )
            )
        if spec.get("scope") not in ("Namespaced", "Cluster"):
            causes.append(
                Cause(
                    "FieldValueNotSupported",
                    f'Unsupported value: "{spec.get("scope", "")}": supported values: '
                    '"Cluster", "Namespaced"',
                    "spec.scope",
                )
            )
        return causes

    # --- create -----------------------------------------------------------------------------

    def create(
        self,
        info: ResourceInfo,
        namespace: str,
        body: Obj,
        *,
        dry_run: bool = False,
        field_validation: str = "",
    ) -> Obj:
        """POST: server-set metadata, schema, uniqueness; emits ADDED."""
        return self.create_with_warnings(info, namespace, body, dry_run, field_validation)[0]

    def create_with_warnings(
        self, info: ResourceInfo, namespace: str, body: Obj, dry_run: bool, field_validation: str
    ) -> tuple[Obj, list[str]]:
        if not isinstance(body, dict):
            raise bad_request("the body of the request is not a JSON object")
        self._check_kind(info, body)
        obj = _clone(body)
        obj["apiVersion"] = info.api_version
        obj["kind"] = info.kind
        meta = _meta(obj)
        body_ns = meta.get("namespace")
        if info.namespaced:
            if body_ns and namespace and body_ns != namespace:
                raise bad_request(
                    "the namespace of the provided object does not match the namespace sent on "
                    "the request"
                )
            namespace = namespace or str(body_ns or "")
            self._check_namespace(info, namespace, creating=True)
            meta["namespace"] = namespace
        else:
            namespace = ""
            meta.pop("namespace", None)
        name = str(meta.get("name") or "")
        if not name:
            prefix = meta.get("generateName")
            if not prefix:
                raise invalid(
                    info.group,
                    info.kind,
                    "",
                    [
                        Cause(
                            "FieldValueRequired",
                            "Required value: name or generateName is required",
                            "metadata.name",
                        )
                    ],
                )
            name = str(prefix) + "".join(random.choice(_SUFFIX_CHARS) for _ in range(5))
            meta["name"] = name
        causes = self._validate_name(info, name)
        if causes:
            raise invalid(info.group, info.kind, name, causes)
        for key in _SERVER_META:
            meta.pop(key, None)
        meta.pop("managedFields", None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now_rfc3339(self.clock)
        if info.generation:
            meta["generation"] = 1
        if info.status_on_create is not None:
            obj["status"] = _clone(info.status_on_create)
        elif info.crd_name and info.has_status:
            obj.pop("status", None)
        if info.defaulter is not None:
            info.defaulter(obj)
        if info.plural == "customresourcedefinitions":
            finalizers = meta.setdefault("finalizers", [])
            if CRD_CLEANUP not in finalizers:
                finalizers.append(CRD_CLEANUP)
            obj["status"] = _crd_status(obj)
        obj, warnings = self._schema_pass(info, obj, name, field_validation)
        self._validate_builtin(info, obj, name)
        slot = (namespace, name)
        if slot in self._bucket(info):
            raise already_exists(info.group, info.plural, name)
        if dry_run:
            return obj, warnings
        stored = self._to_storage(obj, info)
        _meta(stored)["resourceVersion"] = self._next_rv()
        self._bucket(info)[slot] = stored
        self._uids[stored["metadata"]["uid"]] = (info.storage, namespace, name)
        if info.plural == "customresourcedefinitions":
            self.registry.set_crd(stored)
        self._emit("ADDED", info.storage, namespace, stored, None)
        return self.to_served(stored, info), warnings

    # --- update -----------------------------------------------------------------------------

    def update(
        self,
        info: ResourceInfo,
        namespace: str,
        name: str,
        body: Obj,
        *,
        subresource: str = "",
        dry_run: bool = False,
        field_validation: str = "",
    ) -> Obj:
        """PUT: optimistic concurrency on resourceVersion, status kept apart."""
        return self.update_with_warnings(
            info, namespace, name, body, subresource, dry_run, field_validation
        )[0]

    def update_with_warnings(
        self,
        info: ResourceInfo,
        namespace: str,
        name: str,
        body: Obj,
        subresource: str,
        dry_run: bool,
        field_validation: str,
    ) -> tuple[Obj, list[str]]:
        if not isinstance(body, dict):
            raise bad_request("the body of the request is not a JSON object")
        self._check_kind(info, body)
        namespace = namespace if info.namespaced else ""
        self._check_namespace(info, namespace, creating=False)
        current = self._raw(info, namespace, name)
        old = self.to_served(current, info)
        new_meta = body.get("metadata") or {}
        if new_meta.get("name") not in (None, "", name):
            raise bad_request(
                f"the name of the object ({new_meta.get('name')}) does not match the name on "
                f"the URL ({name})"
            )
        if info.namespaced and new_meta.get("namespace") not in (None, "", namespace):
            raise bad_request(
                "the namespace of the provided object does not match the namespace sent on the "
                "request"
            )
        wanted_rv = new_meta.get("resourceVersion")
        if wanted_rv and str(wanted_rv) != old["metadata"]["resourceVersion"]:
            raise conflict(
                info.group,
                info.plural,
                name,
                "the object has been modified; please apply your changes to the latest version "
                "and try again",
            )
        if subresource == "status":
            obj = _clone(old)
            if "status" in body:
                obj["status"] = _clone(body["status"])
            else:
                obj.pop("status", None)
        else:
            obj = _clone(body)
            obj["apiVersion"] = info.api_version
            obj["kind"] = info.kind
            meta = _meta(obj)
            for key in _SERVER_META:
                if key in old["metadata"]:
                    meta[key] = old["metadata"][key]
                else:
                    meta.pop(key, None)
            meta["name"] = name
            if info.namespaced:
                meta["namespace"] = namespace
            meta.pop("managedFields", None)
            if info.has_status:
                if "status" in old:
                    obj["status"] = _clone(old["status"])
                else:
                    obj.pop("status", None)
            if info.defaulter is not None and info.plural != "jobs":
                info.defaulter(obj)
            if info.plural == "jobs":
                _keep_job_selector(old, obj)
            if info.plural == "customresourcedefinitions":
                obj["status"] = _crd_status(obj)
        self._check_finalizers(info, old, obj)
        obj, warnings = self._schema_pass(info, obj, name, field_validation)
        self._validate_builtin(info, obj, name)
        if obj == old:
            return old, warnings
        if info.generation and _content(obj, info) != _content(old, info):
            obj["metadata"]["generation"] = int(old["metadata"].get("generation", 0)) + 1
        if dry_run:
            return obj, warnings
        return self._commit(info, namespace, name, obj, current), warnings

    def _check_finalizers(self, info: ResourceInfo, old: Obj, new: Obj) -> None:
        if not old["metadata"].get("deletionTimestamp"):
            return
        before = set(old["metadata"].get("finalizers") or [])
        added = [f for f in new["metadata"].get("finalizers") or [] if f not in before]
        if added:
            quoted = ", ".join(f'"{f}"' for f in added)
            raise invalid(
                info.group,
                info.kind,
                old["metadata"]["name"],
                [
                    Cause(
                        "FieldValueForbidden",
                        "Forbidden: no new finalizers can be added if the object is being "
                        f"deleted, found new finalizers []string{{{quoted}}}",
                        "metadata.finalizers",
                    )
                ],
            )

    def _commit(self, info: ResourceInfo, namespace: str, name: str, obj: Obj, current: Obj) -> Obj:
        """Store a changed object; an object being deleted with no finalizers left goes away."""
        stored = self._to_storage(obj, info)
        meta = _meta(stored)
        meta["resourceVersion"] = self._next_rv()
        key = (namespace, name)
        if (
            meta.get("deletionTimestamp")
            and not meta.get("finalizers")
            and not _ns_pending(stored)
            and not _pod_terminating(stored)
        ):
            self._remove(info, key, stored, current)
            return self.to_served(stored, info)
        self._bucket(info)[key] = stored
        if info.plural == "customresourcedefinitions":
            self.registry.set_crd(stored)
        self._emit("MODIFIED", info.storage, namespace, stored, current)
        return self.to_served(stored, info)

    def _remove(self, info: ResourceInfo, key: tuple[str, str], stored: Obj, current: Obj) -> None:
        self._bucket(info).pop(key, None)
        self._uids.pop(stored["metadata"].get("uid", ""), None)
        if info.plural == "customresourcedefinitions":
            self.registry.remove_crd(key[1])
        if info.storage == ("", "pods"):
            self.logs.forget(key[0], key[1])
        self._emit("DELETED", info.storage, key[0], stored, current)

    # --- patch --------------------------------------------------------------------------------

    def patch(
        self,
        info: ResourceInfo,
        namespace: str,
        name: str,
        patch_type: str,
        patch: Any,
        *,
        subresource: str = "",
        dry_run: bool = False,
        field_validation: str = "",
    ) -> Obj:
        """PATCH in one of the three flavours; `patch_type` is json, merge or strategic."""
        return self.patch_with_warnings(
            info, namespace, name, patch_type, patch, subresource, dry_run, field_validation
        )[0]

    def patch_with_warnings(
        self,
        info: ResourceInfo,
        namespace: str,
        name: str,
        patch_type: str,
        patch: Any,
        subresource: str,
        dry_run: bool,
        field_validation: str,
    ) -> tuple[Obj, list[str]]:
        namespace = namespace if info.namespaced else ""
        current = self.get(info, namespace, name)
        try:
            if patch_type == "merge":
                if not isinstance(patch, dict):
                    raise PatchError("merge patch must be a JSON object", 400)
                patched = merge_patch(current, patch)
            elif patch_type == "json":
                patched = json_patch(current, patch)
            elif patch_type == "strategic":
                if info.patch_meta is None:
                    raise _unsupported_patch(info)
                patched = strategic_merge(current, patch, info.patch_meta)
            else:
                raise _unsupported_patch(info)
        except PatchError as exc:
            if exc.code == 422:
                raise ApiError(
                    422,
                    "the server rejected our request due to an error in our request",
                    causes=[Cause("UnexpectedServerResponse", str(exc))],
                ) from exc
            raise bad_request(str(exc)) from exc
        if not isinstance(patched, dict):
            raise bad_request("the patched object is not a JSON object")
        return self.update_with_warnings(
            info, namespace, name, patched, subresource, dry_run, field_validation
        )

    # --- delete ---------------------------------------------------------------------------------

    def delete(
        self,
        info: ResourceInfo,
        namespace: str,
        name: str,
        *,
        propagation: str | None = None,
        grace_period: int | None = None,
        preconditions: Obj | None = None,
        dry_run: bool = False,
    ) -> tuple[Obj, bool]:
        """DELETE: returns the object and whether it is gone now (else it is finalizing)."""
        namespace = namespace if info.namespaced else ""
        current = self._raw(info, namespace, name)
        old = self.to_served(current, info)
        meta = old["metadata"]
        pre = preconditions or {}
        if pre.get("uid") and pre["uid"] != meta.get("uid"):
            raise conflict(
                info.group,
                info.plural,
                name,
                f"Precondition failed: UID in precondition: {pre['uid']}, "
                f"UID in object meta: {meta.get('uid')}",
            )
        if pre.get("resourceVersion") and pre["resourceVersion"] != meta.get("resourceVersion"):
            raise conflict(
                info.group,
                info.plural,
                name,
                f"Precondition failed: ResourceVersion in precondition: {pre['resourceVersion']}, "
                f"ResourceVersion in object meta: {meta.get('resourceVersion')}",
            )
        policy = propagation or info.default_propagation
        if policy not in ("Foreground", "Background", "Orphan"):
            raise bad_request(
                f'Unsupported value: "{policy}": supported values: "Foreground", '
                '"Background", "Orphan"'
            )
        if dry_run:
            return old, False
        if policy == "Orphan":
            self.orphan_dependents(meta.get("uid", ""))
            current = self._raw(info, namespace, name)
            old = self.to_served(current, info)
            meta = old["metadata"]
        obj = _clone(old)
        new_meta = obj["metadata"]
        finalizers = list(new_meta.get("finalizers") or [])
        if (
            policy == "Foreground"
            and FOREGROUND not in finalizers
            and not meta.get("deletionTimestamp")
        ):
            finalizers.append(FOREGROUND)
        graceful = False
        if info.storage == ("", "pods") and not meta.get("deletionTimestamp"):
            grace = (
                grace_period
                if grace_period is not None
                else int((old.get("spec") or {}).get("terminationGracePeriodSeconds", 30))
            )
            graceful = grace > 0 and any(t(old) for t in self.pod_terminators)
            if graceful:
                new_meta["deletionGracePeriodSeconds"] = grace
                new_meta["deletionTimestamp"] = now_rfc3339(lambda: self.clock() + grace)
        if info.plural == "namespaces":
            if meta.get("deletionTimestamp"):
                return old, False
            new_meta["deletionTimestamp"] = now_rfc3339(self.clock)
            new_meta["deletionGracePeriodSeconds"] = 0
            obj.setdefault("status", {})["phase"] = "Terminating"
            return self._commit(info, namespace, name, obj, current), False
        if finalizers or graceful:
            if meta.get("deletionTimestamp") and not graceful:
                if info.storage == ("", "pods") and grace_period == 0 and _pod_terminating(old):
                    new_meta["deletionGracePeriodSeconds"] = 0  # the kubelet is done with it
                    return self._commit(info, namespace, name, obj, current), False
                return old, False
            new_meta["finalizers"] = finalizers
            new_meta.setdefault("deletionTimestamp", now_rfc3339(self.clock))
            new_meta.setdefault("deletionGracePeriodSeconds", 0)
            if info.generation:
                new_meta["generation"] = int(meta.get("generation", 0)) + 1
            return self._commit(info, namespace, name, obj, current), False
        stored = self._to_storage(obj, info)
        stored["metadata"]["resourceVersion"] = self._next_rv()
        self._remove(info, (namespace, name), stored, current)
        return self.to_served(stored, info), True

    def orphan_dependents(self, owner_uid: str) -> None:
        """Strip ownerReferences to `owner_uid` from every dependent (Orphan propagation)."""
        if not owner_uid:
            return
        for storage, obj in list(self.all_objects()):
            refs = obj.get("metadata", {}).get("ownerReferences") or []
            if any(r.get("uid") == owner_uid for r in refs):
                info = self.any_info(storage)
                if info is None:
                    continue
                new = _clone(self.to_served(obj, info))
                kept = [r for r in refs if r.get("uid") != owner_uid]
                if kept:
                    new["metadata"]["ownerReferences"] = kept
                else:
                    new["metadata"].pop("ownerReferences", None)
                meta = obj["metadata"]
                self._commit(info, meta.get("namespace", ""), meta["name"], new, obj)

    def remove_finalizer(
        self, info: ResourceInfo, namespace: str, name: str, finalizer: str
    ) -> None:
        """Drop one finalizer (what a controller does when its cleanup is done)."""
        current = self._raw(info, namespace, name)
        obj = _clone(self.to_served(current, info))
        finalizers = [f for f in obj["metadata"].get("finalizers") or [] if f != finalizer]
        if finalizers == (obj["metadata"].get("finalizers") or []):
            return
        obj["metadata"]["finalizers"] = finalizers
        if not finalizers:
            obj["metadata"].pop("finalizers")
        self._commit(info, namespace if info.namespaced else "", name, obj, current)

    def finalize_namespace(self, name: str) -> None:
        """The namespace controller's last step: clear spec.finalizers and let it go."""
        info = self.resolve("", "v1", "namespaces")
        current = self._raw(info, "", name)
        obj = _clone(current)
        obj.setdefault("spec", {})["finalizers"] = []
        self._commit(info, "", name, obj, current)


def _ns_pending(obj: Obj) -> bool:
    """A namespace waits for its spec.finalizers (the namespace controller) too."""
    return obj.get("kind") == "Namespace" and bool((obj.get("spec") or {}).get("finalizers"))


def _pod_terminating(obj: Obj) -> bool:
    """A pod in graceful deletion stays until its kubelet (a pod terminator) removes it."""
    meta = obj.get("metadata") or {}
    return obj.get("kind") == "Pod" and int(meta.get("deletionGracePeriodSeconds") or 0) > 0


def _keep_job_selector(old: Obj, new: Obj) -> None:
    """Job selector and template labels set on create are immutable; keep them on update."""
    old_spec, new_spec = old.get("spec") or {}, new.setdefault("spec", {})
    if "selector" in old_spec and "selector" not in new_spec:
        new_spec["selector"] = _clone(old_spec["selector"])
    for key in (
        "parallelism",
        "backoffLimit",
        "completionMode",
        "suspend",
        "completions",
        "podReplacementPolicy",
    ):
        if key in old_spec and key not in new_spec:
            new_spec[key] = old_spec[key]


def _crd_status(crd: Obj) -> Obj:
    spec = crd.get("spec") or {}
    stamp = crd.get("metadata", {}).get("creationTimestamp", "")
    conditions = [
        {
            "type": "NamesAccepted",
            "status": "True",
            "reason": "NoConflicts",
            "message": "no conflicts found",
            "lastTransitionTime": stamp,
        },
        {
            "type": "Established",
            "status": "True",
            "reason": "InitialNamesAccepted",
            "message": "the initial names have been accepted",
            "lastTransitionTime": stamp,
        },
    ]
    return {
        "acceptedNames": _clone(spec.get("names") or {}),
        "conditions": conditions,
        "storedVersions": [v["name"] for v in spec.get("versions") or [] if v.get("storage")],
    }


def _unsupported_patch(info: ResourceInfo) -> ApiError:
    accepted = "application/json-patch+json, application/merge-patch+json"
    if info.patch_meta is not None:
        accepted += ", application/strategic-merge-patch+json"
    return ApiError(
        415,
        "the body of the request was in an unknown format - accepted media types include: "
        + accepted,
        reason="UnsupportedMediaType",
    )
