"""Build run N's batch/v1 Job from a TrainingJob and the policy's Choice, as a plain dict.

Pure on purpose: the kopf handler only sends what this returns, so every rule
of the injection (names, owner, labels that Kueue reads, the sidecar's env
contract, its privilege per mode) is tested on dicts without a cluster.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kwatt_core import contract as c
from kwatt_core.policies.base import Choice
from kwatt_operator.carbon import cached_curve
from kwatt_operator.carbon import pod_volumes as carbon_pod_volumes
from kwatt_operator.carbon import sidecar_env as carbon_env
from kwatt_operator.crd import API_VERSION, GROUP, KIND
from kwatt_operator.fields import env_var as _env
from kwatt_operator.spec import ObjectiveDefaults, SpecError, TrainingJobSpec, parse_spec

LABEL_TRAININGJOB = f"{GROUP}/trainingjob"
LABEL_RUN = f"{GROUP}/run"
ANNOTATION_CHOICE = f"{GROUP}/choice"
STATE_VOLUME = "kwatt-state"
# The observe-mode sidecar's user: it needs no privilege, so it meets the restricted Pod
# Security Standard (numeric, as the operator image's, so runAsNonRoot can be verified).
OBSERVE_UID = 65532
METRICS_PORT_NAME = "kwatt-metrics"
MAX_NAME = 63
_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


@dataclass(frozen=True)
class SidecarSettings:
    """The operator's own settings for the injected sidecar (from its Helm values), and the
    eta and beta of TrainingJobs that leave them out (they reach the sidecar as KWATT_ETA
    and KWATT_BETA, and beta the policy)."""

    image: str
    command: tuple[str, ...] = ("python", "-m", "kwatt_sidecar")
    image_pull_policy: str | None = None
    port: int = c.DEFAULT_PORT
    metrics_port: int = c.DEFAULT_METRICS_PORT
    state_dir_host_path: str = c.DEFAULT_STATE_DIR
    state_dir: str = c.DEFAULT_STATE_DIR  # where it is mounted in the sidecar
    resources: Mapping[str, Any] = field(
        default_factory=lambda: {"requests": {"cpu": "50m", "memory": "64Mi"}}
    )
    log_level: str | None = None
    objective_defaults: ObjectiveDefaults = field(default_factory=ObjectiveDefaults)


def short_name(base: str, suffix: str, limit: int = MAX_NAME) -> str:
    """`base + suffix` if that is a DNS-1123 label; else a shortened, hashed, valid one.

    The hash keeps two long names that share a prefix apart, and is stable, so the
    same TrainingJob and run always give the same Job name.
    """
    name = base + suffix
    if len(name) <= limit and _LABEL.match(name):
        return name
    digest = hashlib.sha256(base.encode()).hexdigest()[:8]
    clean = re.sub(r"[^a-z0-9-]+", "-", base.lower()).strip("-")
    room = limit - len(suffix) - len(digest) - 1
    prefix = clean[: max(room, 0)].rstrip("-")
    return f"{prefix}-{digest}{suffix}" if prefix else f"{digest}{suffix}"


def job_name(trainingjob_name: str, run: int) -> str:
    """`<tj-name>-run-<N>`, shortened with a hash when it would not be a valid label."""
    return short_name(trainingjob_name, f"-run-{int(run)}")


def label_value(name: str) -> str:
    """A TrainingJob name as a label value (names may be longer than 63 characters)."""
    return name if len(name) <= MAX_NAME else short_name(name, "")


def choice_annotation(choice: Choice) -> str:
    return json.dumps(
        {
            "batchSize": choice.batch_size,
            "powerLimitWatts": choice.power_limit_w,
            "costThreshold": choice.cost_threshold,
            "stage": choice.stage,
        },
        separators=(",", ":"),
        sort_keys=True,
    )


def choice_of_job(job: Mapping[str, Any]) -> Choice | None:
    """The Choice a Job was built with (from its annotation), or None when absent or bad."""
    text = ((job.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_CHOICE)
    if not isinstance(text, str):
        return None
    try:
        data = json.loads(text)
        return Choice(
            batch_size=int(data["batchSize"]),
            power_limit_w=None if data["powerLimitWatts"] is None else int(data["powerLimitWatts"]),
            cost_threshold=None if data["costThreshold"] is None else float(data["costThreshold"]),
            stage=data["stage"],
        )
    except (TypeError, ValueError, KeyError, AttributeError):
        return None


def _number(value: float) -> str:
    """Shortest text that reads back as the same float ("0.5", "2", "1234.5678")."""
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


def merge_env(env: list[dict[str, Any]] | None, values: list[dict[str, Any]]) -> list[Any]:
    """The env list with each of `values` replacing the entry of its name in place, or appended.

    Duplicated names are legal in Kubernetes but the last one wins silently; kwatt
    never adds one, and leaves the user's other entries as they were.
    """
    out: list[Any] = [dict(e) if isinstance(e, Mapping) else e for e in env or []]
    for var in values:
        slots = [
            i for i, e in enumerate(out) if isinstance(e, Mapping) and e.get("name") == var["name"]
        ]
        if slots:
            out[slots[0]] = dict(var)
            for i in reversed(slots[1:]):
                del out[i]
        else:
            out.append(dict(var))
    return out


def _changes_limits(spec: TrainingJobSpec) -> bool:
    """Optimize and fixed modes change limits (privilege, restore records); observe never."""
    return spec.power_limit.mode != "observe"


def sidecar_env(
    tj_namespace: str,
    tj_name: str,
    run: int,
    spec: TrainingJobSpec,
    choice: Choice,
    settings: SidecarSettings,
) -> list[dict[str, Any]]:
    """The operator -> sidecar env contract (kwatt_core.contract, docs/sidecar.md)."""
    power = spec.power_limit
    env = [
        _env(c.ENV_RUN, run),
        _env(c.ENV_JOB, f"{tj_namespace}/{tj_name}"),
        _env(c.ENV_BATCH_SIZE, choice.batch_size),
        _env(c.ENV_ETA, _number(spec.objective.eta)),
        _env(c.ENV_BETA, _number(spec.objective.beta)),
    ]
    if choice.cost_threshold is not None:
        env.append(_env(c.ENV_COST_THRESHOLD, _number(choice.cost_threshold)))
    env += [
        # KWATT_TARGET_METRIC carries the target *value*; its name goes to the trainer only
        # (KWATT_TARGET_METRIC_NAME, see pod_template): the sidecar is sent values, not names.
        _env(c.ENV_TARGET_METRIC, _number(spec.target.value)),
        _env(c.ENV_TARGET_HIGHER, "true" if spec.target.higher_is_better else "false"),
    ]
    if spec.target.max_epochs is not None:
        env.append(_env(c.ENV_MAX_EPOCHS, spec.target.max_epochs))
    env.append(_env(c.ENV_POWER_MODE, power.mode))
    if power.mode == "fixed" and power.fixed_watts is not None:
        env.append(_env(c.ENV_FIXED_LIMIT, power.fixed_watts))
    if power.mode == "optimize" and choice.power_limit_w is not None:
        env.append(_env(c.ENV_CACHED_LIMIT, choice.power_limit_w))
    env += [
        _env(c.ENV_WARMUP_STEPS, power.warmup_steps),
        _env(c.ENV_MEASURE_STEPS, power.measure_steps),
        _env(c.ENV_PORT, settings.port),
        _env(c.ENV_METRICS_PORT, settings.metrics_port),
        _env(c.ENV_TERMINATION_PATH, c.DEFAULT_TERMINATION_PATH),
    ]
    if _changes_limits(spec):  # observe mode writes no restore record: no node folder
        env.append(_env(c.ENV_STATE_DIR, settings.state_dir))
    if settings.log_level:
        env.append(_env(c.ENV_LOG_LEVEL, settings.log_level))
    env += [
        {"name": c.ENV_POD_NAME, "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {
            "name": c.ENV_POD_NAMESPACE,
            "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
        },
        _env("NVIDIA_VISIBLE_DEVICES", "all"),
        _env("NVIDIA_DRIVER_CAPABILITIES", "utility"),
    ]
    return env


def sidecar_container(
    tj_namespace: str,
    tj_name: str,
    run: int,
    spec: TrainingJobSpec,
    choice: Choice,
    settings: SidecarSettings,
) -> dict[str, Any]:
    """The native sidecar: an init container with restartPolicy Always (Kubernetes >= 1.29).

    CAP_SYS_ADMIN is what changing a GPU power limit needs, so only optimize and
    fixed modes get it, and nothing else of the runtime's default set (the sidecar
    writes only files it owns: its state records and termination message), with the
    node folder for restore records. Observe mode changes no limit: no capability, no
    node folder, a non-root user and the runtime's seccomp profile, so its sidecar meets
    the restricted Pod Security Standard (docs/admin.md, "Hardened runtimes").
    """
    security: dict[str, Any]
    if not _changes_limits(spec):
        security = {
            "runAsNonRoot": True,
            "runAsUser": OBSERVE_UID,
            "runAsGroup": OBSERVE_UID,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        }
    else:
        # allowPrivilegeEscalation: false is refused by the API server with CAP_SYS_ADMIN.
        security = {"capabilities": {"drop": ["ALL"], "add": ["SYS_ADMIN"]}}
    container: dict[str, Any] = {
        "name": c.SIDECAR_CONTAINER,
        "image": settings.image,
        "restartPolicy": "Always",
        "command": list(settings.command),
        "env": sidecar_env(tj_namespace, tj_name, run, spec, choice, settings),
        "ports": [
            {"name": METRICS_PORT_NAME, "containerPort": settings.metrics_port, "protocol": "TCP"}
        ],
        # The trainer starts only once the sidecar answers, so its client finds it.
        "startupProbe": {
            "httpGet": {"path": "/healthz", "port": settings.metrics_port},
            "periodSeconds": 1,
            "failureThreshold": 30,
        },
        "resources": copy.deepcopy(dict(settings.resources)),
        "securityContext": security,
        "terminationMessagePath": c.DEFAULT_TERMINATION_PATH,
        "terminationMessagePolicy": "File",
    }
    if _changes_limits(spec):
        container["volumeMounts"] = [{"name": STATE_VOLUME, "mountPath": settings.state_dir}]
    if settings.image_pull_policy:
        container["imagePullPolicy"] = settings.image_pull_policy
    return container


def build_job(
    trainingjob: Mapping[str, Any],
    run: int,
    choice: Choice,
    settings: SidecarSettings,
    *,
    suspend: bool | None = None,
) -> dict[str, Any]:
    """Run `run`'s Job for `trainingjob` (a full object: metadata and spec) and `choice`.

    Raises SpecError (sentences naming fields) when the spec cannot be run. The
    input is never changed. `suspend` is left out unless given, so Kueue (or the
    API server's default) owns it.
    """
    if run < 1:
        raise ValueError(f"Run numbers start at 1, got {run}.")
    meta = trainingjob.get("metadata") or {}
    name, namespace, uid = meta.get("name"), meta.get("namespace"), meta.get("uid")
    if not name or not namespace or not uid:
        raise ValueError(
            "The TrainingJob needs metadata.name, metadata.namespace and metadata.uid."
        )
    spec = parse_spec(trainingjob.get("spec"), settings.objective_defaults)
    if choice.batch_size not in spec.batch_sizes.candidates:
        raise SpecError(
            [
                f"Batch size {choice.batch_size} is not among spec.batchSizes.candidates "
                f"{list(spec.batch_sizes.candidates)}."
            ]
        )
    kwatt_labels = {LABEL_TRAININGJOB: label_value(str(name)), LABEL_RUN: str(run)}
    job_meta: dict[str, Any] = {
        "name": job_name(str(name), run),
        "namespace": namespace,
        "labels": {**dict(meta.get("labels") or {}), **kwatt_labels},
        "annotations": {ANNOTATION_CHOICE: choice_annotation(choice)},
        "ownerReferences": [
            {
                "apiVersion": API_VERSION,
                "kind": KIND,
                "name": name,
                "uid": uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ],
    }
    template = pod_template(str(namespace), str(name), run, spec, choice, settings)
    job_spec: dict[str, Any] = {
        "template": with_carbon(template, spec, choice, trainingjob.get("status"))
    }
    if spec.backoff_limit is not None:
        job_spec["backoffLimit"] = spec.backoff_limit
    if spec.active_deadline_seconds is not None:
        job_spec["activeDeadlineSeconds"] = spec.active_deadline_seconds
    # No ttlSecondsAfterFinished: the operator deletes a run's Job after its TTL only once
    # the run is recorded (reconcile._expired_jobs), so no report is ever lost to it.
    if suspend is not None:
        job_spec["suspend"] = suspend
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": job_meta, "spec": job_spec}


def with_carbon(
    template: dict[str, Any],
    spec: TrainingJobSpec,
    choice: Choice,
    status: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The run's Pod template with spec.objective.carbon added (docs/carbon.md): the
    sidecar's carbon settings, with the power curve cached for this batch size, and the
    Secret and ConfigMap mounted in the sidecar alone. `template` is left as it was."""
    carbon = spec.objective.carbon
    if carbon is None:
        return template
    pod = dict(template["spec"])
    volumes, mounts = carbon_pod_volumes(carbon)
    taken = [v.get("name") for v in pod.get("volumes") or [] if isinstance(v, Mapping)]
    clash = [v["name"] for v in volumes if v["name"] in taken]
    if clash:
        raise SpecError(
            [f"spec.template.spec.volumes has a volume named {clash[0]!r}, which kwatt uses."]
        )
    pod["volumes"] = [*(pod.get("volumes") or []), *volumes]
    curve = cached_curve(status, choice.batch_size) if choice.power_limit_w is not None else None
    pod["initContainers"] = [
        {
            **x,
            "env": merge_env(x.get("env"), carbon_env(carbon, curve)),
            "volumeMounts": [*x.get("volumeMounts", []), *mounts],
        }
        if x.get("name") == c.SIDECAR_CONTAINER
        else x
        for x in pod["initContainers"]
    ]
    return {**template, "spec": pod}


def pod_template(
    namespace: str,
    name: str,
    run: int,
    spec: TrainingJobSpec,
    choice: Choice,
    settings: SidecarSettings,
) -> dict[str, Any]:
    """spec.template with the batch size, the sidecar's port and the target metric's name on
    the trainer, and the sidecar injected."""
    template = copy.deepcopy(dict(spec.template))
    tmeta = template.setdefault("metadata", {}) or {}
    template["metadata"] = tmeta
    tmeta["labels"] = {
        **dict(tmeta.get("labels") or {}),
        LABEL_TRAININGJOB: label_value(name),
        LABEL_RUN: str(run),
    }
    pod = template["spec"]
    trainer = pod["containers"][spec.trainer_index]
    values = [_env(spec.batch_sizes.env, choice.batch_size)]
    if spec.batch_sizes.env != c.ENV_BATCH_SIZE:
        values.append(_env(c.ENV_BATCH_SIZE, choice.batch_size))  # what the client reads
    values.append(_env(c.ENV_PORT, settings.port))
    # The name the framework callbacks look the metric up by, as spec.target.metric has it.
    values.append(_env(c.ENV_TARGET_METRIC_NAME, spec.target.metric))
    trainer["env"] = merge_env(trainer.get("env"), values)
    volumes = list(pod.get("volumes") or [])
    # The name is kwatt's in every mode, so that changing the mode never makes a spec invalid.
    if any(isinstance(v, Mapping) and v.get("name") == STATE_VOLUME for v in volumes):
        raise SpecError(
            [f"spec.template.spec.volumes has a volume named {STATE_VOLUME!r}, which kwatt uses."]
        )
    if _changes_limits(spec):  # the node folder for restore records (hostPath)
        volumes.append(
            {
                "name": STATE_VOLUME,
                "hostPath": {"path": settings.state_dir_host_path, "type": "DirectoryOrCreate"},
            }
        )
        pod["volumes"] = volumes
    sidecar = sidecar_container(namespace, name, run, spec, choice, settings)
    pod["initContainers"] = [*(pod.get("initContainers") or []), sidecar]
    if pod.get("restartPolicy") != "OnFailure":
        pod["restartPolicy"] = "Never"
    return template
