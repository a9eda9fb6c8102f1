"""What the sandbox serves: built-in kinds and the ones CRDs add, with their rules.

Part of the sandbox cluster, an emulator for tests and demos; production is a real
cluster. A `ResourceInfo` carries everything the server needs to know about one
resource (names, scope, subresources, schema, printer columns, patch semantics,
selectable fields); a `Registry` maps URLs to them and follows CRD changes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kwatt_sandbox.patch import EMPTY_META, PatchMeta

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")

Defaulter = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class PrinterColumn:
    """One Table column: `jsonPath` is evaluated on the object unless `compute` is set."""

    name: str
    type: str = "string"
    json_path: str = ""
    format: str = ""
    description: str = ""
    priority: int = 0
    compute: Callable[[dict[str, Any]], Any] | None = None


@dataclass
class ResourceInfo:
    """One served resource (group/version/plural) and the rules that apply to it."""

    group: str
    version: str
    plural: str
    singular: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()
    verbs: tuple[str, ...] = ALL_VERBS
    schema: dict[str, Any] | None = None
    columns: tuple[PrinterColumn, ...] = ()
    patch_meta: PatchMeta | None = None  # None: strategic merge patch is refused (CRDs)
    field_selectors: tuple[str, ...] = ()
    field_aliases: dict[str, str] = field(default_factory=dict)
    default_propagation: str = "Background"
    defaulter: Defaulter | None = None
    status_on_create: dict[str, Any] | None = None  # status set on create (None: keep)
    storage: tuple[str, str] = ("", "")  # (group, plural) where objects live
    crd_name: str = ""
    storage_version: str = ""
    generation: bool = False  # whether metadata.generation is tracked (jobs, CRDs, CRs)
    name_column: bool = True  # events' tables lead with Last Seen, not Name

    def __post_init__(self) -> None:
        if self.storage == ("", ""):
            self.storage = (self.group, self.plural)
        if not self.storage_version:
            self.storage_version = self.version

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def has_status(self) -> bool:
        return "status" in self.subresources

    @property
    def selectable(self) -> tuple[str, ...]:
        base = ("metadata.name", "metadata.namespace")
        return base + tuple(f for f in self.field_selectors if f not in base)

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"


# --- patch metadata of the built-in types ---------------------------------------------------

_OBJECT_META = PatchMeta(
    fields={
        "finalizers": PatchMeta(set_merge=True),
        "ownerReferences": PatchMeta(merge_key="uid"),
    }
)
_CONTAINER = PatchMeta(
    merge_key="name",
    fields={
        "ports": PatchMeta(merge_key="containerPort"),
        "env": PatchMeta(merge_key="name"),
        "volumeMounts": PatchMeta(merge_key="mountPath"),
        "volumeDevices": PatchMeta(merge_key="devicePath"),
    },
)
_POD_SPEC = PatchMeta(
    fields={
        "containers": _CONTAINER,
        "initContainers": _CONTAINER,
        "ephemeralContainers": _CONTAINER,
        "volumes": PatchMeta(merge_key="name", retain_keys=True),
        "imagePullSecrets": PatchMeta(merge_key="name"),
        "hostAliases": PatchMeta(merge_key="ip"),
        "topologySpreadConstraints": PatchMeta(merge_key="topologyKey"),
        "resourceClaims": PatchMeta(merge_key="name", retain_keys=True),
        "schedulingGates": PatchMeta(merge_key="name"),
    }
)
_CONDITIONS = PatchMeta(merge_key="type")
_POD_TEMPLATE = PatchMeta(fields={"metadata": _OBJECT_META, "spec": _POD_SPEC})


def _meta(**fields: PatchMeta) -> PatchMeta:
    return PatchMeta(fields={"metadata": _OBJECT_META, **fields})


POD_META = _meta(
    spec=_POD_SPEC,
    status=PatchMeta(
        fields={
            "conditions": _CONDITIONS,
            "podIPs": PatchMeta(merge_key="ip"),
            "hostIPs": PatchMeta(merge_key="ip"),
        }
    ),
)
JOB_META = _meta(
    spec=PatchMeta(fields={"template": _POD_TEMPLATE}),
    status=PatchMeta(fields={"conditions": _CONDITIONS}),
)
NAMESPACE_META = _meta(status=PatchMeta(fields={"conditions": _CONDITIONS}))
NODE_META = _meta(
    status=PatchMeta(fields={"conditions": _CONDITIONS, "addresses": PatchMeta(merge_key="type")})
)
SA_META = _meta(secrets=PatchMeta(merge_key="name"))
PLAIN_META = _meta()


# --- defaulting of the built-in types (the few fields controllers rely on) ----------------


def _default_pod_spec(spec: dict[str, Any]) -> None:
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("securityContext", {})
    for key in ("containers", "initContainers"):
        for container in spec.get(key) or []:
            if isinstance(container, dict):
                container.setdefault("terminationMessagePath", "/dev/termination-log")
                container.setdefault("terminationMessagePolicy", "File")
                image = str(container.get("image", ""))
                latest = ":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest")
                container.setdefault("imagePullPolicy", "Always" if latest else "IfNotPresent")
                container.setdefault("resources", {})


def _default_pod(obj: dict[str, Any]) -> None:
    spec = obj.setdefault("spec", {})
    if isinstance(spec, dict):
        _default_pod_spec(spec)


def _default_job(obj: dict[str, Any]) -> None:
    """Job defaults and the controller-uid selector the Job controller depends on."""
    spec = obj.setdefault("spec", {})
    meta = obj.setdefault("metadata", {})
    if not isinstance(spec, dict):
        return
    spec.setdefault("parallelism", 1)
    if spec.get("completions") is None and spec.get("completionMode") != "Indexed":
        spec.setdefault("completions", 1)
    spec.setdefault("backoffLimit", 6)
    spec.setdefault("completionMode", "NonIndexed")
    spec.setdefault("suspend", False)
    spec.setdefault("podReplacementPolicy", "TerminatingOrFailed")
    template = spec.setdefault("template", {})
    if isinstance(template, dict):
        tmeta = template.setdefault("metadata", {})
        uid = meta.get("uid", "")
        if not spec.get("manualSelector") and uid and isinstance(tmeta, dict):
            labels = tmeta.setdefault("labels", {})
            labels.setdefault("batch.kubernetes.io/controller-uid", uid)
            labels.setdefault("batch.kubernetes.io/job-name", meta.get("name", ""))
            labels.setdefault("controller-uid", uid)
            labels.setdefault("job-name", meta.get("name", ""))
            spec.setdefault(
                "selector", {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
            )
        tspec = template.setdefault("spec", {})
        if isinstance(tspec, dict):
            _default_pod_spec(tspec)


def _default_namespace(obj: dict[str, Any]) -> None:
    obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
    meta = obj.setdefault("metadata", {})
    meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = meta.get("name", "")


def _default_secret(obj: dict[str, Any]) -> None:
    if not obj.get("type"):
        obj["type"] = "Opaque"


def _default_crd(obj: dict[str, Any]) -> None:
    spec = obj.setdefault("spec", {})
    names = spec.setdefault("names", {})
    if isinstance(names, dict) and names.get("kind"):
        names.setdefault("singular", str(names["kind"]).lower())
        names.setdefault("listKind", f"{names['kind']}List")
    for version in spec.get("versions") or []:
        if isinstance(version, dict):
            version.setdefault("served", True)
            version.setdefault("storage", True)
    spec.setdefault("conversion", {"strategy": "None"})


# --- printer columns of the built-in types ------------------------------------------------


def _pod_ready(obj: dict[str, Any]) -> str:
    containers = (obj.get("spec") or {}).get("containers") or []
    statuses = (obj.get("status") or {}).get("containerStatuses") or []
    ready = sum(1 for s in statuses if s.get("ready"))
    return f"{ready}/{len(containers)}"


def _pod_status(obj: dict[str, Any]) -> str:
    if (obj.get("metadata") or {}).get("deletionTimestamp"):
        return "Terminating"
    status = obj.get("status") or {}
    reason = status.get("reason") or status.get("phase") or "Pending"
    for cs in status.get("containerStatuses") or []:
        state = cs.get("state") or {}
        if state.get("waiting", {}).get("reason"):
            reason = state["waiting"]["reason"]
        elif state.get("terminated", {}).get("reason") and status.get("phase") != "Running":
            reason = state["terminated"]["reason"]
    return str(reason)


def _pod_restarts(obj: dict[str, Any]) -> int:
    statuses = (obj.get("status") or {}).get("containerStatuses") or []
    return sum(int(s.get("restartCount") or 0) for s in statuses)


def _job_status(obj: dict[str, Any]) -> str:
    status = obj.get("status") or {}
    for cond in status.get("conditions") or []:
        if cond.get("status") == "True" and cond.get("type") in ("Complete", "Failed"):
            return str(cond["type"])
        if cond.get("status") == "True" and cond.get("type") == "Suspended":
            return "Suspended"
    if (obj.get("spec") or {}).get("suspend"):
        return "Suspended"
    return "Running"


def _job_completions(obj: dict[str, Any]) -> str:
    spec = obj.get("spec") or {}
    succeeded = int((obj.get("status") or {}).get("succeeded") or 0)
    completions = spec.get("completions")
    if completions is None:
        return f"{succeeded}/1 of {spec.get('parallelism', 1)}"
    return f"{succeeded}/{completions}"


def _path(obj: Any, path: str) -> Any:
    for part in path.strip(".").split("."):
        obj = obj.get(part) if isinstance(obj, dict) else None
    return obj


def _or_none(path: str) -> Callable[[dict[str, Any]], str]:
    """A column showing the value at `path`, or <none> as kubectl's printers do."""
    return lambda obj: str(_path(obj, path) or "<none>")


def _readiness_gates(obj: dict[str, Any]) -> str:
    gates = (obj.get("spec") or {}).get("readinessGates") or []
    if not gates:
        return "<none>"
    conditions = {
        c.get("type"): c.get("status") for c in (obj.get("status") or {}).get("conditions") or []
    }
    ready = sum(1 for g in gates if conditions.get(g.get("conditionType")) == "True")
    return f"{ready}/{len(gates)}"


def _names(key: str) -> Callable[[dict[str, Any]], str]:
    def names(obj: dict[str, Any]) -> str:
        containers = _path(obj, ".spec.template.spec.containers") or []
        return ",".join(str(c.get(key, "")) for c in containers)

    return names


def _job_selector(obj: dict[str, Any]) -> str:
    labels = _path(obj, ".spec.selector.matchLabels") or {}
    return ",".join(f"{k}={v}" for k, v in labels.items()) or "<none>"


def _parse_time(value: Any) -> datetime | None:
    try:
        return datetime.strptime(str(value), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None


def _job_duration(obj: dict[str, Any]) -> str:
    status = obj.get("status") or {}
    start = _parse_time(status.get("startTime"))
    if start is None:
        return ""
    end = _parse_time(status.get("completionTime")) or datetime.now(UTC)
    from kwatt_sandbox.tables import human_duration  # tables imports this module

    return human_duration((end - start).total_seconds())


def _node_roles(obj: dict[str, Any]) -> str:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    prefix = "node-role.kubernetes.io/"
    roles = sorted(k[len(prefix) :] for k in labels if k.startswith(prefix) and k[len(prefix) :])
    return ",".join(roles) or "<none>"


def _node_address(kind: str) -> Callable[[dict[str, Any]], str]:
    def address(obj: dict[str, Any]) -> str:
        for item in (obj.get("status") or {}).get("addresses") or []:
            if item.get("type") == kind:
                return str(item.get("address", ""))
        return "<none>"

    return address


def _service_ports(obj: dict[str, Any]) -> str:
    ports = (obj.get("spec") or {}).get("ports") or []
    shown = []
    for port in ports:
        node = f":{port['nodePort']}" if port.get("nodePort") else ""
        shown.append(f"{port.get('port', '')}{node}/{port.get('protocol', 'TCP')}")
    return ",".join(shown) or "<none>"


def _service_selector(obj: dict[str, Any]) -> str:
    selector = (obj.get("spec") or {}).get("selector") or {}
    return ",".join(f"{k}={v}" for k, v in selector.items()) or "<none>"


def _default_service(obj: dict[str, Any]) -> None:
    spec = obj.setdefault("spec", {})
    if not isinstance(spec, dict):
        return
    spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    spec.setdefault("clusterIP", "None" if spec.get("clusterIP") == "None" else "10.96.0.1")
    spec.setdefault("clusterIPs", [spec["clusterIP"]])
    for port in spec.get("ports") or []:
        if isinstance(port, dict):
            port.setdefault("protocol", "TCP")
            port.setdefault("targetPort", port.get("port"))


def _event_source(obj: dict[str, Any]) -> str:
    source = obj.get("source") or {}
    component = source.get("component") or obj.get("reportingComponent") or ""
    host = source.get("host")
    return f"{component}, {host}" if host else str(component)


def _event_first_seen(obj: dict[str, Any]) -> Any:
    return (
        obj.get("firstTimestamp")
        or obj.get("eventTime")
        or (obj.get("metadata") or {}).get("creationTimestamp")
    )


def _len_data(obj: dict[str, Any]) -> int:
    return len(obj.get("data") or {}) + len(obj.get("binaryData") or {})


def _event_object(obj: dict[str, Any]) -> str:
    ref = obj.get("involvedObject") or {}
    return f"{str(ref.get('kind', '')).lower()}/{ref.get('name', '')}"


def _event_last_seen(obj: dict[str, Any]) -> Any:
    return (
        obj.get("lastTimestamp")
        or obj.get("eventTime")
        or (obj.get("metadata") or {}).get("creationTimestamp")
    )


AGE = PrinterColumn("Age", "date", ".metadata.creationTimestamp")

EVENT_COLUMNS = (
    PrinterColumn("Last Seen", "date", compute=_event_last_seen),
    PrinterColumn("Type", json_path=".type"),
    PrinterColumn("Reason", json_path=".reason"),
    PrinterColumn("Object", compute=_event_object),
    PrinterColumn("Subobject", json_path=".involvedObject.fieldPath", priority=1),
    PrinterColumn("Source", compute=_event_source, priority=1),
    PrinterColumn("Message", json_path=".message"),
    PrinterColumn("First Seen", "date", compute=_event_first_seen, priority=1),
    PrinterColumn("Count", "integer", compute=lambda o: int(o.get("count") or 1), priority=1),
    PrinterColumn("Name", json_path=".metadata.name", priority=1),
)

_ALL = ("all",)


def builtin_resources() -> list[ResourceInfo]:
    """The built-in resources the sandbox serves, as the real server names them."""
    pod_fields = (
        "spec.nodeName",
        "spec.restartPolicy",
        "spec.schedulerName",
        "spec.serviceAccountName",
        "spec.hostNetwork",
        "status.phase",
        "status.podIP",
        "status.nominatedNodeName",
    )
    event_fields = (
        "involvedObject.kind",
        "involvedObject.namespace",
        "involvedObject.name",
        "involvedObject.uid",
        "involvedObject.apiVersion",
        "involvedObject.resourceVersion",
        "involvedObject.fieldPath",
        "reason",
        "reportingComponent",
        "source",
        "type",
    )
    return [
        ResourceInfo(
            "",
            "v1",
            "namespaces",
            "namespace",
            "Namespace",
            False,
            ("ns",),
            subresources=("status",),
            verbs=("create", "delete", "get", "list", "patch", "update", "watch"),
            columns=(PrinterColumn("Status", json_path=".status.phase"), AGE),
            patch_meta=NAMESPACE_META,
            field_selectors=("status.phase",),
            defaulter=_default_namespace,
            status_on_create={"phase": "Active"},
        ),
        ResourceInfo(
            "",
            "v1",
            "pods",
            "pod",
            "Pod",
            True,
            ("po",),
            _ALL,
            ("status", "log"),
            columns=(
                PrinterColumn("Ready", compute=_pod_ready),
                PrinterColumn("Status", compute=_pod_status),
                PrinterColumn("Restarts", "integer", compute=_pod_restarts),
                AGE,
                PrinterColumn("IP", compute=_or_none(".status.podIP"), priority=1),
                PrinterColumn("Node", compute=_or_none(".spec.nodeName"), priority=1),
                PrinterColumn(
                    "Nominated Node", compute=_or_none(".status.nominatedNodeName"), priority=1
                ),
                PrinterColumn("Readiness Gates", compute=_readiness_gates, priority=1),
            ),
            patch_meta=POD_META,
            field_selectors=pod_fields,
            defaulter=_default_pod,
            status_on_create={"phase": "Pending", "qosClass": "BestEffort"},
        ),
        ResourceInfo(
            "",
            "v1",
            "nodes",
            "node",
            "Node",
            False,
            ("no",),
            subresources=("status",),
            columns=(
                PrinterColumn("Status", compute=_node_status),
                PrinterColumn("Roles", compute=_node_roles),
                AGE,
                PrinterColumn("Version", json_path=".status.nodeInfo.kubeletVersion"),
                PrinterColumn("Internal-IP", compute=_node_address("InternalIP"), priority=1),
                PrinterColumn("External-IP", compute=_node_address("ExternalIP"), priority=1),
                PrinterColumn("OS-Image", json_path=".status.nodeInfo.osImage", priority=1),
                PrinterColumn(
                    "Kernel-Version", json_path=".status.nodeInfo.kernelVersion", priority=1
                ),
                PrinterColumn(
                    "Container-Runtime",
                    json_path=".status.nodeInfo.containerRuntimeVersion",
                    priority=1,
                ),
            ),
            patch_meta=NODE_META,
            field_selectors=("spec.unschedulable",),
        ),
        ResourceInfo(
            "",
            "v1",
            "events",
            "event",
            "Event",
            True,
            ("ev",),
            columns=EVENT_COLUMNS,
            name_column=False,
            patch_meta=PLAIN_META,
            field_selectors=event_fields,
            field_aliases={"source": "source.component"},
        ),
        ResourceInfo(
            "events.k8s.io",
            "v1",
            "events",
            "event",
            "Event",
            True,
            ("ev",),
            columns=EVENT_COLUMNS,
            name_column=False,
            patch_meta=PLAIN_META,
            field_selectors=event_fields,
            field_aliases={"source": "source.component"},
            storage=("", "events"),
        ),
        ResourceInfo(
            "",
            "v1",
            "configmaps",
            "configmap",
            "ConfigMap",
            True,
            ("cm",),
            columns=(PrinterColumn("Data", "integer", compute=_len_data), AGE),
            patch_meta=PLAIN_META,
        ),
        ResourceInfo(
            "",
            "v1",
            "secrets",
            "secret",
            "Secret",
            True,
            columns=(
                PrinterColumn("Type", json_path=".type"),
                PrinterColumn("Data", "integer", compute=_len_data),
                AGE,
            ),
            patch_meta=PLAIN_META,
            field_selectors=("type",),
            defaulter=_default_secret,
        ),
        ResourceInfo(
            "",
            "v1",
            "serviceaccounts",
            "serviceaccount",
            "ServiceAccount",
            True,
            ("sa",),
            columns=(AGE,),
            patch_meta=SA_META,
        ),
        ResourceInfo(
            "batch",
            "v1",
            "jobs",
            "job",
            "Job",
            True,
            (),
            _ALL,
            ("status",),
            columns=(
                PrinterColumn("Status", compute=_job_status),
                PrinterColumn("Completions", compute=_job_completions),
                PrinterColumn("Duration", compute=_job_duration),
                AGE,
                PrinterColumn("Containers", compute=_names("name"), priority=1),
                PrinterColumn("Images", compute=_names("image"), priority=1),
                PrinterColumn("Selector", compute=_job_selector, priority=1),
            ),
            patch_meta=JOB_META,
            field_selectors=("status.successful",),
            default_propagation="Orphan",
            defaulter=_default_job,
            status_on_create={},
            generation=True,
        ),
        ResourceInfo(
            "apiextensions.k8s.io",
            "v1",
            "customresourcedefinitions",
            "customresourcedefinition",
            "CustomResourceDefinition",
            False,
            ("crd", "crds"),
            (),
            ("status",),
            columns=(PrinterColumn("Created At", json_path=".metadata.creationTimestamp"),),
            patch_meta=_meta(),
            defaulter=_default_crd,
            generation=True,
        ),
        ResourceInfo(
            "",
            "v1",
            "services",
            "service",
            "Service",
            True,
            ("svc",),
            _ALL,
            ("status",),
            columns=(
                PrinterColumn("Type", json_path=".spec.type"),
                PrinterColumn("Cluster-IP", compute=_or_none(".spec.clusterIP")),
                PrinterColumn("External-IP", compute=lambda _: "<none>"),
                PrinterColumn("Port(s)", compute=_service_ports),
                AGE,
                PrinterColumn("Selector", compute=_service_selector, priority=1),
            ),
            patch_meta=_meta(spec=PatchMeta(fields={"ports": PatchMeta(merge_key="port")})),
            defaulter=_default_service,
            status_on_create={"loadBalancer": {}},
        ),
        *(
            ResourceInfo(
                "authorization.k8s.io",
                "v1",
                kind.lower() + "s",
                kind.lower(),
                kind,
                False,
                verbs=("create",),
                patch_meta=PLAIN_META,
            )
            for kind in ("SelfSubjectAccessReview", "SelfSubjectRulesReview")
        ),
        ResourceInfo(
            "coordination.k8s.io",
            "v1",
            "leases",
            "lease",
            "Lease",
            True,
            columns=(PrinterColumn("Holder", json_path=".spec.holderIdentity"), AGE),
            patch_meta=PLAIN_META,
        ),
    ]


def _node_status(obj: dict[str, Any]) -> str:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return "Ready" if cond.get("status") == "True" else "NotReady"
    return "Unknown"


def crd_resources(crd: dict[str, Any]) -> list[ResourceInfo]:
    """The resources (one per served version) that a CustomResourceDefinition adds."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    group = str(spec.get("group", ""))
    versions = [v for v in spec.get("versions") or [] if v.get("served", True)]
    storage = next((v["name"] for v in spec.get("versions") or [] if v.get("storage")), "")
    result = []
    for version in versions:
        subs = version.get("subresources") or {}
        columns = tuple(
            PrinterColumn(
                str(c.get("name", "")),
                str(c.get("type", "string")),
                str(c.get("jsonPath", "")),
                str(c.get("format", "")),
                str(c.get("description", "")),
                int(c.get("priority", 0)),
            )
            for c in version.get("additionalPrinterColumns") or []
        )
        result.append(
            ResourceInfo(
                group=group,
                version=str(version.get("name")),
                plural=str(names.get("plural", "")),
                singular=str(names.get("singular") or str(names.get("kind", "")).lower()),
                kind=str(names.get("kind", "")),
                namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                short_names=tuple(names.get("shortNames") or ()),
                categories=tuple(names.get("categories") or ()),
                subresources=tuple(k for k in ("status", "scale") if k in subs),
                schema=(version.get("schema") or {}).get("openAPIV3Schema"),
                columns=columns or (AGE,),
                patch_meta=None,
                crd_name=str((crd.get("metadata") or {}).get("name", "")),
                storage_version=storage,
                generation=True,
            )
        )
    return result


class Registry:
    """Served resources by (group, version, plural), built-ins plus those from CRDs."""

    def __init__(self) -> None:
        self._by_gvr: dict[tuple[str, str, str], ResourceInfo] = {}
        self._crds: dict[str, list[ResourceInfo]] = {}
        for info in builtin_resources():
            self._by_gvr[(info.group, info.version, info.plural)] = info

    def lookup(self, group: str, version: str, plural: str) -> ResourceInfo | None:
        return self._by_gvr.get((group, version, plural))

    def __iter__(self) -> Iterator[ResourceInfo]:
        return iter(list(self._by_gvr.values()))

    def by_storage(self, storage: tuple[str, str]) -> list[ResourceInfo]:
        return [i for i in self._by_gvr.values() if i.storage == storage]

    def set_crd(self, crd: dict[str, Any]) -> None:
        name = str((crd.get("metadata") or {}).get("name", ""))
        self.remove_crd(name)
        infos = crd_resources(crd)
        self._crds[name] = infos
        for info in infos:
            self._by_gvr[(info.group, info.version, info.plural)] = info

    def remove_crd(self, name: str) -> None:
        for info in self._crds.pop(name, []):
            self._by_gvr.pop((info.group, info.version, info.plural), None)

    def groups(self) -> dict[str, list[str]]:
        """Group name -> served versions, in a stable order (core group is "")."""
        result: dict[str, list[str]] = {}
        for info in self._by_gvr.values():
            versions = result.setdefault(info.group, [])
            if info.version not in versions:
                versions.append(info.version)
        return result

    def preferred_version(self, group: str) -> str:
        for crd_infos in self._crds.values():
            if crd_infos and crd_infos[0].group == group:
                return crd_infos[0].storage_version or crd_infos[0].version
        return self.groups().get(group, ["v1"])[0]


__all__ = ["EMPTY_META", "PrinterColumn", "Registry", "ResourceInfo", "crd_resources"]
