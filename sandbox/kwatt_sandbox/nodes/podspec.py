"""Pure helpers for the simulated nodes: env, commands, GPU requests and pod status.

Part of the sandbox cluster (a test and demo harness; production is a real cluster).
Nothing here starts a process or calls the API server, so the rules a kubelet
follows (downward API, `$(VAR)` expansion, phases, conditions, container statuses)
can be unit-tested on plain dicts.
"""

from __future__ import annotations

import base64
import math
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Obj = dict[str, Any]
GPU = "nvidia.com/gpu"
DEFAULT_TERMINATION_PATH = "/dev/termination-log"
MESSAGE_LIMIT = 4096  # bytes of a termination message the kubelet keeps
FALLBACK_LINES = 80  # FallbackToLogsOnError: last lines of the log ...
FALLBACK_BYTES = 2048  # ... or last bytes, whichever is smaller
_PYTHON = re.compile(r"^python(3(\.\d+)?)?$")
_FIELD = re.compile(r"^metadata\.(labels|annotations)\['([^']*)'\]$")
_SUFFIXES = {
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
    "n": 1e-9,
    "u": 1e-6,
    "m": 1e-3,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "P": 1e15,
    "E": 1e18,
}


class EnvError(Exception):
    """A container's env cannot be built (missing ConfigMap key, bad fieldRef)."""


class CommandError(Exception):
    """A container has nothing this kubelet can run (images are not used here)."""


# --- quantities and GPU requests -----------------------------------------------------------


def quantity(value: Any) -> float:
    """A Kubernetes resource quantity ("2", "500m", "1Gi") as a number."""
    text = str(value).strip()
    for suffix in sorted(_SUFFIXES, key=len, reverse=True):
        if text.endswith(suffix) and text[: -len(suffix)]:
            return float(text[: -len(suffix)]) * _SUFFIXES[suffix]
    return float(text)


def is_sidecar(container: Obj) -> bool:
    """A native sidecar: an init container with restartPolicy Always."""
    return container.get("restartPolicy") == "Always"


def container_gpus(container: Obj) -> int:
    """GPUs a container asks for; extended resources default their request to the limit."""
    resources = container.get("resources") or {}
    for key in ("limits", "requests"):
        value = (resources.get(key) or {}).get(GPU)
        if value is not None:
            return int(quantity(value))
    return 0


def pod_gpus(spec: Obj) -> int:
    """GPUs a pod needs: what runs together, or the largest regular init container."""
    inits = spec.get("initContainers") or []
    together = sum(container_gpus(c) for c in spec.get("containers") or [])
    together += sum(container_gpus(c) for c in inits if is_sidecar(c))
    alone = max((container_gpus(c) for c in inits if not is_sidecar(c)), default=0)
    return max(together, alone)


def gpu_plan(spec: Obj, pool: list[str]) -> dict[str, list[str]]:
    """Split a pod's devices among its containers.

    Containers that run together (main containers and native sidecars) get disjoint
    devices; a regular init container runs alone, so it reuses the first ones.
    """
    plan: dict[str, list[str]] = {}
    cursor = 0
    inits = spec.get("initContainers") or []
    for container in [c for c in inits if is_sidecar(c)] + list(spec.get("containers") or []):
        n = container_gpus(container)
        plan[str(container.get("name", ""))] = pool[cursor : cursor + n]
        cursor += n
    for container in inits:
        if not is_sidecar(container):
            plan[str(container.get("name", ""))] = pool[: container_gpus(container)]
    return plan


# --- env ---------------------------------------------------------------------------------


def expand(text: str, env: dict[str, str]) -> str:
    """Expand `$(VAR)` from `env` as the kubelet does; `$$` is a literal `$`, unknown
    references stay as written."""
    out: list[str] = []
    i = 0
    while i < len(text):
        if text.startswith("$$", i):
            out.append("$")
            i += 2
        elif text.startswith("$(", i):
            end = text.find(")", i + 2)
            if end < 0:
                out.append(text[i:])
                break
            name = text[i + 2 : end]
            out.append(env.get(name, text[i : end + 1]))
            i = end + 1
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def field_ref(pod: Obj, path: str) -> str:
    """The downward API's `fieldRef` value for `path`."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    simple: dict[str, Callable[[], Any]] = {
        "metadata.name": lambda: meta.get("name", ""),
        "metadata.namespace": lambda: meta.get("namespace", ""),
        "metadata.uid": lambda: meta.get("uid", ""),
        "spec.nodeName": lambda: spec.get("nodeName", ""),
        "spec.serviceAccountName": lambda: spec.get("serviceAccountName", "default"),
        "status.podIP": lambda: status.get("podIP", ""),
        "status.hostIP": lambda: status.get("hostIP", ""),
        "status.podIPs": lambda: ",".join(p.get("ip", "") for p in status.get("podIPs") or []),
        "status.hostIPs": lambda: ",".join(p.get("ip", "") for p in status.get("hostIPs") or []),
    }
    if path in simple:
        return str(simple[path]())
    match = _FIELD.match(path)
    if match:
        return str((meta.get(match.group(1)) or {}).get(match.group(2), ""))
    raise EnvError(f"The downward API field {path!r} is not supported.")


def resource_field_ref(container: Obj, ref: Obj, node_allocatable: Obj) -> str:
    """`resourceFieldRef`: a limit (or the node's allocatable when unset) or a request."""
    resource = str(ref.get("resource", ""))
    kind, _, name = resource.partition(".")
    resources = container.get("resources") or {}
    value = (resources.get(kind) or {}).get(name)
    if value is None:
        value = node_allocatable.get(name, "0") if kind == "limits" else "0"
    divisor = quantity(ref.get("divisor") or "1")
    return str(math.ceil(quantity(value) / divisor))


Lookup = Callable[[str, str], Obj | None]  # (kind "ConfigMap"/"Secret", name) -> object


def _source_data(obj: Obj, kind: str) -> dict[str, str]:
    data = {str(k): str(v) for k, v in (obj.get("data") or {}).items()}
    if kind == "Secret":
        data = {k: base64.b64decode(v).decode(errors="replace") for k, v in data.items()}
        data.update({str(k): str(v) for k, v in (obj.get("stringData") or {}).items()})
    return data


def _key_ref(ref: Obj, kind: str, lookup: Lookup) -> str | None:
    name, key = str(ref.get("name", "")), str(ref.get("key", ""))
    obj = lookup(kind, name)
    data = _source_data(obj, kind) if obj is not None else None
    if data is not None and key in data:
        return data[key]
    if ref.get("optional"):
        return None
    if data is None:
        raise EnvError(f'{kind.lower()} "{name}" not found')
    raise EnvError(f"couldn't find key {key} in {kind} {name}")


def resolve_env(
    container: Obj, pod: Obj, lookup: Lookup, node_allocatable: Obj | None = None
) -> dict[str, str]:
    """The container's own environment: `envFrom` first, then `env` in order, with
    `$(VAR)` expanded against what came before (as the kubelet does)."""
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        prefix = str(source.get("prefix", ""))
        for key, kind in (("configMapRef", "ConfigMap"), ("secretRef", "Secret")):
            ref = source.get(key)
            if not ref:
                continue
            obj = lookup(kind, str(ref.get("name", "")))
            if obj is None:
                if ref.get("optional"):
                    continue
                raise EnvError(f'{kind.lower()} "{ref.get("name", "")}" not found')
            for k, v in _source_data(obj, kind).items():
                env[prefix + k] = v
    for var in container.get("env") or []:
        name = str(var.get("name", ""))
        source = var.get("valueFrom")
        if not source:
            env[name] = expand(str(var.get("value", "")), env)
            continue
        value: str | None
        if "fieldRef" in source:
            value = field_ref(pod, str(source["fieldRef"].get("fieldPath", "")))
        elif "resourceFieldRef" in source:
            value = resource_field_ref(
                container, source["resourceFieldRef"], node_allocatable or {}
            )
        elif "configMapKeyRef" in source:
            value = _key_ref(source["configMapKeyRef"], "ConfigMap", lookup)
        elif "secretKeyRef" in source:
            value = _key_ref(source["secretKeyRef"], "Secret", lookup)
        else:
            raise EnvError(f"The env var {name} has a valueFrom this sandbox does not support.")
        if value is not None:
            env[name] = value
    return env


def merge_gpu_env(
    own: dict[str, str], provider_env: dict[str, str], all_uuids: list[str]
) -> dict[str, str]:
    """Provider env, overridden by the container's own; an explicit
    NVIDIA_VISIBLE_DEVICES=all becomes every device of the node, as a runtime gives."""
    merged = {**provider_env, **own}
    if own.get("NVIDIA_VISIBLE_DEVICES") == "all" and all_uuids:
        merged["NVIDIA_VISIBLE_DEVICES"] = ",".join(all_uuids)
    return merged


# --- commands ----------------------------------------------------------------------------


def build_argv(container: Obj, env: dict[str, str], python: str = sys.executable) -> list[str]:
    """`command` + `args` with `$(VAR)` expanded; a first word `python`/`python3`/
    `python3.N` becomes this interpreter, so the sandbox's environment runs the code."""
    command = [expand(str(a), env) for a in container.get("command") or []]
    args = [expand(str(a), env) for a in container.get("args") or []]
    argv = command + args
    if not argv:
        raise CommandError(
            f"Container {container.get('name', '')} has no command or args; the sandbox "
            "kubelet runs them as local processes and ignores images."
        )
    if _PYTHON.match(argv[0]):
        argv[0] = python
    return argv


def exit_code(returncode: int) -> int:
    """A process's exit status as a container reports it (signal N gives 128+N)."""
    return 128 - returncode if returncode < 0 else returncode


def termination_message(data: bytes) -> str:
    return data[:MESSAGE_LIMIT].decode(errors="replace")


def fallback_message(log_text: str) -> str:
    """FallbackToLogsOnError: the last 80 lines or 2 KiB of the log, whichever is smaller."""
    tail = "".join(log_text.splitlines(keepends=True)[-FALLBACK_LINES:])
    raw = tail.encode()[-FALLBACK_BYTES:]
    return raw.decode(errors="ignore")


# --- status ------------------------------------------------------------------------------


@dataclass
class ContainerRun:
    """What the kubelet knows about one container; turned into a containerStatus."""

    name: str
    kind: str  # "init", "sidecar" or "main"
    image: str = ""
    state: str = "waiting"  # "waiting", "running" or "terminated"
    reason: str = "ContainerCreating"
    message: str = ""
    exit_code: int = 0
    started_at: str = ""
    finished_at: str = ""
    restart_count: int = 0
    pid: int = 0
    last: Obj | None = None

    def terminated(self) -> Obj:
        out: Obj = {
            "exitCode": self.exit_code,
            "reason": self.reason,
            "startedAt": self.started_at or None,
            "finishedAt": self.finished_at,
            "containerID": f"sandbox://{self.pid}",
        }
        if self.message:
            out["message"] = self.message
        return out

    @property
    def ready(self) -> bool:
        return self.state == "running" and self.kind != "init"

    def status(self) -> Obj:
        if self.state == "running":
            state: Obj = {"running": {"startedAt": self.started_at}}
        elif self.state == "terminated":
            state = {"terminated": self.terminated()}
        else:
            waiting: Obj = {"reason": self.reason}
            if self.message:
                waiting["message"] = self.message
            state = {"waiting": waiting}
        out: Obj = {
            "name": self.name,
            "state": state,
            "lastState": {"terminated": self.last} if self.last else {},
            "ready": self.ready,
            "restartCount": self.restart_count,
            "image": self.image,
            "imageID": "",
            "started": self.state == "running",
        }
        if self.pid:
            out["containerID"] = f"sandbox://{self.pid}"
        return out


def _condition(old: list[Obj], kind: str, ok: bool, reason: str, message: str, now: str) -> Obj:
    status = "True" if ok else "False"
    previous = next((c for c in old if c.get("type") == kind), None)
    since = (previous or {}).get("lastTransitionTime") or now
    if previous is None or previous.get("status") != status:
        since = now
    cond: Obj = {"type": kind, "status": status, "lastProbeTime": None}
    cond["lastTransitionTime"] = since
    if not ok and reason:
        cond["reason"] = reason
        if message:
            cond["message"] = message
    return cond


def pod_conditions(old: list[Obj], runs: list[ContainerRun], phase: str, now: str) -> list[Obj]:
    """The conditions a kubelet owns, from container state; every other condition
    (PodScheduled, DisruptionTarget, readiness gates) is kept as the API server has it."""
    done = phase in ("Succeeded", "Failed")
    pending_init = [
        r.name
        for r in runs
        if (r.kind == "init" and not (r.state == "terminated" and r.exit_code == 0))
        or (r.kind == "sidecar" and r.state == "waiting" and not r.restart_count)
    ]
    unready = [r.name for r in runs if r.kind != "init" and not r.ready]
    names = " ".join(pending_init)
    not_ready = "PodCompleted" if done else "ContainersNotReady"
    ready_msg = "" if done else f"containers with unready status: [{' '.join(unready)}]"
    conditions = [
        _condition(old, "PodReadyToStartContainers", True, "", "", now),
        _condition(
            old,
            "Initialized",
            not pending_init or done,
            "ContainersNotInitialized",
            f"containers with incomplete status: [{names}]",
            now,
        ),
        _condition(old, "Ready", not unready and not done, not_ready, ready_msg, now),
        _condition(old, "ContainersReady", not unready and not done, not_ready, ready_msg, now),
    ]
    owned = {c["type"] for c in conditions}
    conditions += [c for c in old if c.get("type") not in owned]
    return conditions


def pod_status(
    old: Obj,
    runs: list[ContainerRun],
    phase: str,
    *,
    start_time: str,
    host_ip: str,
    pod_ip: str,
    now: str,
) -> Obj:
    """The pod's status as a kubelet reports it (phase, IPs, conditions, statuses)."""
    status: Obj = {k: v for k, v in old.items() if k in ("qosClass", "nominatedNodeName")}
    status.update(
        {
            "phase": phase,
            "conditions": pod_conditions(old.get("conditions") or [], runs, phase, now),
            "hostIP": host_ip,
            "hostIPs": [{"ip": host_ip}],
            "podIP": pod_ip,
            "podIPs": [{"ip": pod_ip}],
            "startTime": start_time,
        }
    )
    inits = [r.status() for r in runs if r.kind != "main"]
    if inits:
        status["initContainerStatuses"] = inits
    status["containerStatuses"] = [r.status() for r in runs if r.kind == "main"]
    return status


def live_phase(phase: str, runs: list[ContainerRun]) -> str:
    """The phase to report while the pod runs: Pending as long as a main container has
    never started (e.g. waiting on CreateContainerConfigError), as the kubelet's getPhase
    counts it; one waiting to restart after a run does not hold the pod back."""
    never_started = any(r.kind == "main" and r.state == "waiting" and r.last is None for r in runs)
    return "Pending" if phase == "Running" and never_started else phase


def final_phase(runs: list[ContainerRun]) -> str:
    """Succeeded if every main container (and every init container that ran) exited 0."""
    failed = any(
        r.state == "terminated" and r.exit_code != 0 for r in runs if r.kind in ("main", "init")
    )
    never_ran = any(r.state != "terminated" for r in runs if r.kind == "main")
    return "Failed" if failed or never_ran else "Succeeded"


def container_runs(spec: Obj) -> list[ContainerRun]:
    """Fresh run records, init containers (regular and sidecar) first, in spec order."""
    runs = []
    for c in spec.get("initContainers") or []:
        kind = "sidecar" if is_sidecar(c) else "init"
        runs.append(ContainerRun(str(c.get("name", "")), kind, str(c.get("image", ""))))
    for c in spec.get("containers") or []:
        runs.append(ContainerRun(str(c.get("name", "")), "main", str(c.get("image", ""))))
    if any(r.kind != "main" for r in runs):
        for r in runs:
            r.reason = "PodInitializing" if r.kind == "main" else r.reason
    return runs
