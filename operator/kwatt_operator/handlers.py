"""The kopf shell: watch TrainingJobs and their Jobs, reconcile each through a work queue.

kopf does the watching (with its retries, backoff and re-listing on 410) and posts
events; every handler here only puts a key in the queue. One worker at a time reads
the TrainingJob with what it owns, asks `reconcile.reconcile` what to do, writes the
status (with the resourceVersion it read) and only then creates or deletes Jobs.
kopf keeps no state on the objects: no finalizer (Jobs are owned by their
TrainingJob, so the garbage collector removes them), no handler progress in
annotations, so a TrainingJob can always be deleted, operator or not.
"""

from __future__ import annotations

import datetime
import logging
from dataclasses import dataclass, field
from typing import Any

import kopf

from kwatt_operator.crd import GROUP, PLURAL, VERSION
from kwatt_operator.jobs import LABEL_TRAININGJOB, SidecarSettings
from kwatt_operator.kube import Conflict, Gone, Kube
from kwatt_operator.reconcile import Plan, reconcile
from kwatt_operator.workqueue import Key, WorkQueue

log = logging.getLogger(__name__)
RESYNC_S = 60.0  # every TrainingJob is looked at again at least this often
RETRY_S = 2.0  # after an error, first retry (doubles, at most RESYNC_S)


@dataclass
class OperatorConfig:
    """What `kwatt operator` was told; kept in kopf's memo."""

    sidecar: SidecarSettings
    workers: int = 4
    api: Any = None  # a kubernetes.client.ApiClient; made at startup when None
    metrics: Any = None  # an OperatorMetrics, when metrics are served
    _failures: dict[Key, int] = field(default_factory=dict)


def configure(settings: kopf.OperatorSettings) -> None:
    """Every kopf setting the operator relies on, written out."""
    settings.peering.standalone = True  # one replica (Deployment strategy Recreate)
    settings.scanning.disabled = True  # the CRD exists before the operator: no CRD watch
    settings.peering.clusterwide = False
    settings.posting.enabled = True
    settings.posting.level = logging.INFO
    settings.persistence.finalizer = f"{GROUP}/kopf"  # used only if a handler needs one
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 10
    settings.networking.request_timeout = 30
    settings.queueing.error_delays = (1, 2, 5, 10, 20, 30)
    settings.execution.max_workers = 8


def register(registry: kopf.OperatorRegistry, config: OperatorConfig) -> None:
    """Register the handlers on `registry` (tests and the CLI use their own)."""
    queue = WorkQueue()

    @kopf.on.startup(registry=registry)
    async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        configure(settings)
        if config.api is None:
            config.api = _api_client()
        kube = Kube(config.api)
        queue.start(lambda key: _work(key, kube, config, queue), config.workers)
        log.info("kwatt operator started with %d workers.", config.workers)

    @kopf.on.cleanup(registry=registry)
    async def cleanup(**_: Any) -> None:
        await queue.stop()

    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)  # type: ignore[arg-type]
    async def trainingjob_event(event: dict[str, Any], namespace: str, name: str, **_: Any) -> None:
        key = (namespace, name)
        if event.get("type") == "DELETED":
            queue.forget(key)
            if config.metrics is not None:
                config.metrics.forget(namespace, name)
            return
        queue.add(key)

    @kopf.on.event(  # type: ignore[arg-type]
        "batch", "v1", "jobs", labels={LABEL_TRAININGJOB: kopf.PRESENT}, registry=registry
    )
    async def job_event(body: Any, namespace: str, **_: Any) -> None:
        for ref in body.get("metadata", {}).get("ownerReferences") or []:
            if ref.get("kind") == "TrainingJob" and ref.get("controller"):
                queue.add((namespace, str(ref.get("name"))))


async def _work(key: Key, kube: Kube, config: OperatorConfig, queue: WorkQueue) -> None:
    """One reconcile of one TrainingJob; errors come back later with backoff."""
    namespace, name = key
    try:
        requeue = await _reconcile_once(key, kube, config)
    except Gone:
        queue.forget(key)
        return
    except Conflict:
        queue.add(key)  # someone wrote since we read: read again at once
        return
    except Exception as exc:
        failures = config._failures.get(key, 0) + 1
        config._failures[key] = failures
        delay = min(RETRY_S * 2 ** (failures - 1), RESYNC_S)
        log.warning(
            "Reconciling TrainingJob %s/%s failed (%s); retrying in %.0f s.",
            namespace,
            name,
            _brief(exc),
            delay,
        )
        if config.metrics is not None:
            config.metrics.reconcile_error(namespace, name, "ApiError")
        queue.add_after(key, delay)
        return
    config._failures.pop(key, None)
    queue.add_after(key, min(RESYNC_S, requeue or RESYNC_S))


async def _reconcile_once(key: Key, kube: Kube, config: OperatorConfig) -> float | None:
    """One pass; how soon the TrainingJob wants to be looked at again (None: resync)."""
    snapshot = await kube.read(*key)
    now = datetime.datetime.now(datetime.UTC)
    plan = reconcile(snapshot.trainingjob, snapshot.jobs, snapshot.pods, now, config.sidecar)
    if plan.status is not None:
        await kube.write_status(snapshot.trainingjob, plan.status)
    await _act(snapshot.trainingjob, plan, kube)
    await _report(snapshot.trainingjob, plan, config, kube)
    return plan.requeue_after_s


async def _act(trainingjob: dict[str, Any], plan: Plan, kube: Kube) -> None:
    namespace = trainingjob["metadata"]["namespace"]
    for name in plan.delete:
        await kube.delete_job(namespace, name)
    for job in plan.create:
        await kube.create_job(job)


async def _report(
    trainingjob: dict[str, Any], plan: Plan, config: OperatorConfig, kube: Kube
) -> None:
    """Events and metrics after the fact: a lost event must not undo a recorded run."""
    for event in plan.events:
        try:
            await kube.post_event(trainingjob, event.type, event.reason, event.message)
        except Exception as exc:
            log.warning(
                "Event %s about %s not posted: %s",
                event.reason,
                trainingjob["metadata"]["name"],
                exc,
            )
    if config.metrics is None:
        return
    meta = trainingjob["metadata"]
    for run in plan.finished:
        config.metrics.run_finished(
            meta["namespace"],
            meta["name"],
            run.result,
            run.energy_j,
            run.seconds,
            profiling_energy_j=run.profiling.energy_j,
            profiling_seconds=run.profiling.seconds,
            profiling_extra_energy_j=run.profiling.extra_energy_j,
            profiling_extra_seconds=run.profiling.extra_seconds,
        )
    for choice in plan.started:
        config.metrics.run_started(
            meta["namespace"], meta["name"], choice.batch_size, choice.power_limit_w
        )
    status = plan.status if plan.status is not None else trainingjob.get("status")
    _status_metrics(config.metrics, meta["namespace"], meta["name"], status or {})


def _status_metrics(metrics: Any, namespace: str, name: str, status: dict[str, Any]) -> None:
    """The gauges that mirror the status (after a restart too): the current batch size and
    power limit, and the saving against the default configuration. A value the metrics
    refuse (a status written by hand) is logged, never fatal to the pass."""
    try:
        size = status.get("currentBatchSize")
        if isinstance(size, int) and not isinstance(size, bool) and size > 0:
            limit = status.get("currentPowerLimitWatts")
            valid = isinstance(limit, int) and not isinstance(limit, bool) and limit > 0
            metrics.current(namespace, name, size, limit if valid else None)
        savings = status.get("savings")
        if isinstance(savings, dict) and savings.get("basis") in ("measured", "estimated"):
            energy, time = (
                _percent(savings.get("energyPercent")),
                _percent(savings.get("timePercent")),
            )
            metrics.savings(namespace, name, energy, time, str(savings["basis"]))
        else:
            metrics.savings(namespace, name, None, None)
    except ValueError as exc:
        log.warning("Metrics of TrainingJob %s/%s not updated: %s", namespace, name, exc)


def _percent(value: Any) -> float | None:
    """A status percentage as a ratio; None when it is not a number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value / 100


def _brief(exc: Exception) -> str:
    """One line about a failure: an API error's status and reason, not its headers."""
    status = getattr(exc, "status", None)
    if isinstance(status, int):
        return f"HTTP {status} {getattr(exc, 'reason', '') or ''}".strip()
    return f"{type(exc).__name__}: {exc}".splitlines()[0][:300]


def _api_client() -> Any:
    """In a Pod: its ServiceAccount; elsewhere: KUBECONFIG or ~/.kube/config."""
    from kubernetes import client, config

    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    return client.ApiClient(configuration)


__all__ = ["OperatorConfig", "configure", "register"]
