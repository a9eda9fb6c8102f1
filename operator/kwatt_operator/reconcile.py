"""One reconcile pass of a TrainingJob, as a pure function: what exists -> what to do.

`reconcile(trainingjob, jobs, pods, now, settings)` reads the TrainingJob (its spec
and the status the last pass wrote), the Jobs it owns and their Pods, and returns a
`Plan`: the new status, the Jobs to create and to delete, and the events to post.
The kopf shell (handlers.py) writes the status FIRST, with the resourceVersion it
read as a precondition, and only then creates or deletes Jobs. That order is what
makes a pass safe to repeat or to cut short at any point:

- a run is started by writing it into `status.active` (with the policy's choice and
  the run number) before its Job exists; a later pass that finds an active run
  without a Job creates the Job (its name is deterministic, so a second create
  gets 409 and does nothing), unless the Job was created once already
  (`jobCreated`), in which case it was deleted by hand and the run is recorded as
  such;
- a finished Job is recorded (policy fed, history, totals) by moving its run from
  `active` to `history` in one status write, so it is counted exactly once however
  often the pass runs, and a stale read loses the write race (409) instead of
  counting twice;
- Jobs are deleted only when their runs are recorded: those that fell out of the kept
  history, and a replaced run's Job (asked again each pass until it is gone). The Job
  of an active run, or of a run newer than the status read, is never deleted.
Nothing here talks to the API server or reads a clock: tests give it dicts and a time.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kwatt_core.contract import SIDECAR_CONTAINER
from kwatt_core.policies import KwattPolicy, Policy
from kwatt_core.policies.base import Choice
from kwatt_core.report import Report, ReportError, decode
from kwatt_operator import conditions as cond
from kwatt_operator.carbon import record as record_carbon
from kwatt_operator.crd import GROUP
from kwatt_operator.jobs import LABEL_RUN, SidecarSettings, build_job, job_name
from kwatt_operator.schedule import due, parse_schedule
from kwatt_operator.spec import SpecError, TrainingJobSpec, parse_spec
from kwatt_operator.status_report import compare_with_default

Obj = dict[str, Any]
ANNOTATION_RUN_REQUEST = f"{GROUP}/run-requested"  # a new value asks for one more run
POLICY = "kwatt"
UNKNOWN_MAX_LIMIT_W = 0  # the GPU's range is learned from its first report
RESULTS_WITHOUT_REPORT = ("noreport", "deleted", "replaced")


@dataclass(frozen=True)
class Event:
    type: str  # Normal or Warning
    reason: str  # CamelCase
    message: str  # a sentence


@dataclass(frozen=True)
class ProfilingCost:
    """What a run's power-limit profiling took, from its report's profile (`profiling_cost`)."""

    energy_j: float = 0.0  # the measurement windows' energy
    seconds: float = 0.0  # and their time
    extra_energy_j: float = 0.0  # beyond the same steps at the limit the run kept
    extra_seconds: float = 0.0


@dataclass(frozen=True)
class FinishedRun:
    """A run recorded in this pass, for metrics."""

    run: int
    result: str
    energy_j: float
    seconds: float
    profiling: ProfilingCost = field(default_factory=ProfilingCost)


@dataclass
class Plan:
    """What one pass decided. `status` is the whole new status (None: unchanged)."""

    status: Obj | None
    create: list[Obj] = field(default_factory=list)
    delete: list[str] = field(default_factory=list)  # Job names, deleted in background
    events: list[Event] = field(default_factory=list)
    finished: list[FinishedRun] = field(default_factory=list)
    started: list[Choice] = field(default_factory=list)
    requeue_after_s: float | None = None  # look again then (the next scheduled time)


# --- reading Jobs and Pods ---------------------------------------------------------------


def job_finished(job: Mapping[str, Any]) -> str | None:
    """ "Complete" or "Failed" when the Job has ended, else None (suspended counts as not)."""
    for item in (job.get("status") or {}).get("conditions") or []:
        if item.get("status") == "True" and item.get("type") in ("Complete", "Failed"):
            return str(item["type"])
    return None


def job_failure_reason(job: Mapping[str, Any]) -> str:
    for item in (job.get("status") or {}).get("conditions") or []:
        if item.get("type") == "Failed" and item.get("status") == "True":
            return str(item.get("reason") or "Failed")
    return ""


def report_of(pods: Sequence[Mapping[str, Any]]) -> tuple[Report | None, str]:
    """The sidecar's report from the newest Pod that has one, and a note on why not."""
    note = "no pod of the run reported"
    ordered = sorted(
        pods, key=lambda p: str((p.get("metadata") or {}).get("creationTimestamp") or "")
    )
    for pod in reversed(ordered):
        statuses = (pod.get("status") or {}).get("initContainerStatuses") or []
        for status in statuses:
            if status.get("name") != SIDECAR_CONTAINER:
                continue
            terminated = (status.get("state") or {}).get("terminated") or {}
            message = terminated.get("message")
            if not message:
                note = "the sidecar left no report"
                continue
            try:
                return decode(str(message)), ""
            except ReportError as exc:
                note = f"the sidecar's report could not be read: {exc}"
    return None, note


# --- the pass ----------------------------------------------------------------------------


def seed_of(uid: str) -> int:
    """A stable seed per TrainingJob: its policy's random stream survives restarts."""
    return int(hashlib.sha256(uid.encode()).hexdigest()[:8], 16)


def reconcile(
    trainingjob: Mapping[str, Any],
    jobs: Sequence[Mapping[str, Any]],
    pods: Mapping[str, Sequence[Mapping[str, Any]]],
    now: datetime,
    settings: SidecarSettings,
    policy: Policy | None = None,
) -> Plan:
    """One level-triggered pass; `pods` maps a Job's name to its Pods."""
    meta = trainingjob.get("metadata") or {}
    old: Obj = copy.deepcopy(dict(trainingjob.get("status") or {}))
    status: Obj = copy.deepcopy(old)
    generation = meta.get("generation")
    stamp = cond.timestamp(now)
    plan = Plan(status=None)
    try:
        spec = parse_spec(trainingjob.get("spec"), settings.objective_defaults)
        _check_buildable(trainingjob, spec, settings)
    except SpecError as exc:
        _set(status, "Ready", "False", "InvalidSpec", str(exc), generation, now)
        status["state"] = "Invalid"
        status["observedGeneration"] = generation
        if _changed(old, status):
            plan.status = status
            plan.events.append(Event("Warning", "InvalidSpec", str(exc)))
        return plan
    policy = policy or KwattPolicy()
    state = _policy_state(status, spec, str(meta.get("uid", "")), policy, plan)
    by_name = {str((j.get("metadata") or {}).get("name")): j for j in jobs}
    active: list[Obj] = [dict(a) for a in status.get("active") or []]

    # 1. Runs in flight: record the finished, create the missing.
    still: list[Obj] = []
    for entry in active:
        job = by_name.get(str(entry["job"]))
        if job is None:
            if entry.get("jobCreated"):
                state = _record(status, state, policy, entry, None, "deleted", now, plan, spec)
                continue
            try:
                plan.create.append(_job(trainingjob, entry, settings))
            except SpecError as exc:
                # Its batch size left the candidates before its Job was made: it never ran.
                note = f"its Job could not be built: {exc}"
                state = _record(status, state, policy, entry, None, note, now, plan, spec)
                continue
            still.append(entry)
            continue
        entry["jobCreated"] = True
        ended = job_finished(job)
        if ended is None:
            still.append(entry)
            continue
        report, note = report_of(pods.get(str(entry["job"]), ()))
        if report is None and ended == "Failed":
            note = f"the Job failed ({job_failure_reason(job)}) and {note}"
        state = _record(status, state, policy, entry, report, note, now, plan, spec)
    active = still

    # 2. A new run, when one is asked for and allowed.
    request = str((meta.get("annotations") or {}).get(ANNOTATION_RUN_REQUEST, ""))
    scheduled, missed_warning = _scheduled(status, meta, spec, now, plan)
    reason = _trigger(status, request) or ("on schedule" if scheduled else "")
    if reason and spec.suspend:
        reason = ""  # held until resumed; the request stays pending
    if reason and active and spec.concurrency_policy == "Forbid":
        reason = ""  # the request stays pending until the run in flight ends
    if reason:
        if active and spec.concurrency_policy == "Replace":
            replaced = {str(entry["job"]) for entry in active}
            for entry in active:
                plan.delete.append(str(entry["job"]))
                state = _record(status, state, policy, entry, None, "replaced", now, plan, spec)
            # A replaced run whose Job was still to be created must not be created after all.
            plan.create = [j for j in plan.create if j["metadata"]["name"] not in replaced]
            active = []
        if request:
            status["lastRunRequest"] = request
        if scheduled is not None:
            status["lastScheduleTime"] = cond.timestamp(scheduled)
            if missed_warning:  # once, as the latest time starts, not on every held pass
                plan.events.append(Event("Warning", "TooManyMissedRuns", missed_warning))
        choice, state = policy.choose(state, [int(a["batchSize"]) for a in active])
        run = int(status.get("runs") or 0) + 1
        entry = {
            "run": run,
            "job": job_name(str(meta["name"]), run),
            "batchSize": choice.batch_size,
            "powerLimitWatts": choice.power_limit_w,
            "costThreshold": choice.cost_threshold,
            "stage": choice.stage,
            "startTime": stamp,
            "trigger": reason,
            "jobCreated": False,
        }
        active.append(entry)
        status["runs"] = run
        status["lastRunTime"] = stamp
        plan.create.append(_job(trainingjob, entry, settings))
        plan.started.append(choice)
        limit = (
            f"power limit {choice.power_limit_w} W"
            if choice.power_limit_w is not None
            else "its power limit profiled in the run"
        )
        plan.events.append(
            Event(
                "Normal",
                "RunStarted",
                f"Run {run} started ({reason}) with batch size {choice.batch_size} and {limit}.",
            )
        )

    # 3. What the status says now.
    status["active"] = active
    status["policy"] = state
    _summary(status, spec, now, generation)
    plan.delete += [name for name in _old_jobs(status, by_name) if name not in plan.delete]
    plan.delete += [
        n for n in _expired_jobs(status, by_name, spec, now, plan) if n not in plan.delete
    ]
    if _changed(old, status):
        plan.status = status
    return plan


def _check_buildable(
    trainingjob: Mapping[str, Any], spec: TrainingJobSpec, settings: SidecarSettings
) -> None:
    """Raise SpecError when no run's Job can be built from this spec (rules that only the
    Job builder knows, e.g. a volume with kwatt's name), so it is InvalidSpec, not a crash."""
    default = spec.batch_sizes.default
    build_job(trainingjob, 1, Choice(default, None, None, "default"), settings)


def _scheduled(
    status: Mapping[str, Any],
    meta: Mapping[str, Any],
    spec: TrainingJobSpec,
    now: datetime,
    plan: Plan,
) -> tuple[datetime | None, str]:
    """The scheduled time due now (CronJob's rules, schedule.py), if any, and the warning
    to give when it starts if too many times before it were missed; sets when the shell
    should look again. A due time held by Forbid or suspend stays due (within
    startingDeadlineSeconds), as CronJob starts it late rather than never."""
    if not spec.schedule:
        return None, ""
    schedule = parse_schedule(spec.schedule, spec.time_zone)
    last = _time(status.get("lastScheduleTime"))
    created = _time(meta.get("creationTimestamp")) or now
    found = due(schedule, last, created, now, starting_deadline_s=spec.starting_deadline_seconds)
    if found.next is not None:
        plan.requeue_after_s = max(1.0, (found.next - now).total_seconds())
    warning = ""
    if found.too_many:
        warning = (
            f"More than {found.missed} scheduled runs were missed; only the latest starts. "
            "Set spec.startingDeadlineSeconds to bound the catch-up."
        )
    return found.time, warning


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _trigger(status: Mapping[str, Any], request: str) -> str:
    if not status.get("runs"):
        return "on create"
    if request and request != status.get("lastRunRequest"):
        return "on request"
    return ""


def _policy_state(status: Obj, spec: TrainingJobSpec, uid: str, policy: Policy, plan: Plan) -> Obj:
    """The policy's state from the status, or a fresh one when there is none or the
    candidates changed (what was learned about other batch sizes does not carry over)."""
    gpu = status.get("gpu")
    known = gpu.get("maxLimitWatts") if isinstance(gpu, dict) else None  # kept across resets
    known = known if isinstance(known, int) and known > 0 else UNKNOWN_MAX_LIMIT_W
    space = spec.search_space(known)
    state = status.get("policy")
    if isinstance(state, dict) and state.get("policy") == policy.name:
        old = state.get("space") or {}
        if (
            list(old.get("batch_sizes") or []) == list(space.batch_sizes)
            and old.get("default_batch_size") == space.default_batch_size
            and old.get("beta") == space.beta
        ):
            return state
        plan.events.append(
            Event(
                "Normal",
                "PolicyReset",
                "The batch sizes or beta changed, so the policy starts learning again.",
            )
        )
    return policy.init(space, seed_of(uid))


def _record(
    status: Obj,
    state: Obj,
    policy: Policy,
    entry: Mapping[str, Any],
    report: Report | None,
    note: str,
    now: datetime,
    plan: Plan,
    spec: TrainingJobSpec,
) -> Obj:
    """Move one run from in flight to history; feed the policy what it teaches."""
    if report is not None:
        state = _learn_gpu(status, state, report)
    if report is not None and report.teaches_policy():
        if not measured(report):
            note = note or "the run measured no cost (no energy or time); the policy skips it"
        elif report.batch_size in (state.get("space") or {}).get("batch_sizes", ()):
            state = policy.observe(state, report.outcome())
        elif not note:
            # The candidates changed while it ran: the fresh policy knows nothing of this size.
            note = f"batch size {report.batch_size} is no longer a candidate; the policy skips it"
    result = (
        report.result
        if report is not None
        else (note if note in RESULTS_WITHOUT_REPORT else "noreport")
    )
    if result in RESULTS_WITHOUT_REPORT and note in RESULTS_WITHOUT_REPORT:
        note = {
            "deleted": "the run's Job was deleted before it finished",
            "replaced": "replaced by a newer run (concurrencyPolicy Replace)",
            "noreport": "",
        }[note]
    energy = report.energy_j if report else 0.0
    seconds = report.time_s if report else 0.0
    item: Obj = {
        "run": int(entry["run"]),
        "job": str(entry["job"]),
        "stage": str(entry.get("stage", "")),
        "batchSize": int(entry["batchSize"]),
        "powerLimitWatts": report.limit_w
        if report and report.limit_w
        else entry.get("powerLimitWatts"),
        "result": result,
        "epochs": report.epochs if report else 0,
        "energyJoules": energy,
        "seconds": seconds,
        "cost": report.cost if report else 0.0,
        "startTime": entry.get("startTime"),
        "completionTime": cond.timestamp(now),
    }
    if report is not None and report.metric is not None:
        item["metric"] = report.metric
    if note:
        item["note"] = note[:512]
    # The batch size's power curve, a run's grams of CO2, a failing carbon source's Event.
    plan.events += [Event(*e) for e in record_carbon(status, item, report)]
    history = [*(status.get("history") or []), item]
    status["history"] = history[max(0, len(history) - spec.history_limit) :]
    totals = dict(status.get("totals") or {})
    totals["energyJoules"] = float(totals.get("energyJoules") or 0.0) + energy
    totals["seconds"] = float(totals.get("seconds") or 0.0) + seconds
    totals["runs"] = int(totals.get("runs") or 0) + 1
    status["totals"] = totals
    status["recordedRuns"] = int(status.get("recordedRuns") or 0) + 1
    _baseline(status, item, spec, report)
    reason = _RUN_REASONS.get(result, "RunFinished")
    ok = result == "reached"
    message = f"Run {item['run']} ended: {result}" + (f" ({note})" if note else "")
    if report is not None:
        limit = item.get("powerLimitWatts")
        at = f" at {limit} W" if limit else ""
        message += (
            f", batch size {item['batchSize']}{at}, {energy:.0f} J in {seconds:.0f} s"
            f" over {report.epochs} epochs"
        )
    message += "."
    _set(status, "LastRun", "True" if ok else "False", reason, message, None, now)
    plan.events.append(Event("Normal" if ok else "Warning", reason, message))
    plan.finished.append(FinishedRun(item["run"], result, energy, seconds, profiling_cost(report)))
    return state


def profiling_cost(report: Report | None) -> ProfilingCost:
    """The energy and time of the run's profiling windows, and the overhead: what they took
    beyond the same steps at the limit the run kept (each window's steps at the kept
    window's per-step energy and time; never below 0 for the run). The overhead is 0 when
    the kept limit is not among the profiled points (no profile, a thinned report)."""
    if report is None or not report.profile:
        return ProfilingCost()
    points = [p for p in report.profile if p.steps > 0]
    energy = sum(max(0.0, p.energy_j) for p in points)
    seconds = sum(max(0.0, p.time_s) for p in points)
    kept = next((p for p in points if p.limit_w == report.limit_w), None)
    if kept is None:
        return ProfilingCost(energy, seconds)
    per_step_e, per_step_t = kept.energy_j / kept.steps, kept.time_s / kept.steps
    extra_e = sum(p.energy_j - p.steps * per_step_e for p in points)
    extra_t = sum(p.time_s - p.steps * per_step_t for p in points)
    return ProfilingCost(energy, seconds, max(0.0, extra_e), max(0.0, extra_t))


def measured(report: Report) -> bool:
    """False for a run that did epochs yet cost nothing (no GPU readings: no energy, or no
    time on a simulated clock): the policy would take its batch size for free, and its
    epoch cost of 0 breaks its log-cost model, so every later pass would fail."""
    return not (report.outcome().started and report.cost <= 0)


def _learn_gpu(status: Obj, state: Obj, report: Report) -> Obj:
    """`status.gpu` from a report that knows the GPUs' power-limit range (whatever the run's
    result: it describes the hardware), and the policy space's highest limit while that is
    still the placeholder (the default policy runs at it)."""
    if report.min_limit_w is None or report.max_limit_w is None:
        return state
    status["gpu"] = {
        "model": report.gpu_model,
        "count": report.gpu_count,
        "minLimitWatts": report.min_limit_w,
        "maxLimitWatts": report.max_limit_w,
    }
    if report.start_limit_w is not None:
        status["gpu"]["startLimitWatts"] = report.start_limit_w
    space = state.get("space")
    if isinstance(space, dict) and space.get("max_limit_w") == UNKNOWN_MAX_LIMIT_W:
        state = {**state, "space": {**space, "max_limit_w": report.max_limit_w}}
    return state


_RUN_REASONS = {
    "reached": "TargetReached",
    "stopped": "EarlyStopped",
    "exhausted": "EpochsExhausted",
    "failed": "RunFailed",
    "interrupted": "RunInterrupted",
    "noreport": "NoReport",
    "deleted": "JobDeleted",
    "replaced": "RunReplaced",
}


def _baseline(
    status: Obj, item: Mapping[str, Any], spec: TrainingJobSpec, report: Report | None
) -> None:
    """Sums (bounded) of what kwatt's runs cost ("all", every run that reached the target)
    and of what the default configuration — the default batch size at the GPU's limit as
    the admin left it (the report's `start_limit_w`: the highest limit the run could set;
    the GPU's highest limit in older reports), what the job would run without kwatt — costs
    per run:

    - measured ("default"): default-size runs that ran at that limit (observe mode, or a
      run that kept it);
    - estimated ("estimated"): a default-size run at a lower limit, its energy and time
      scaled by its own profile's per-step energy and time at the highest profiled limit
      (its first window, at that limit) over those at the limit it kept (the profile
      measured both, on this very job)."""
    if item["result"] != "reached" or report is None:
        return
    sums = dict(status.get("baseline") or {})
    _add(sums, "all", float(item["energyJoules"]), float(item["seconds"]))
    if item["batchSize"] == spec.batch_sizes.default:
        top = (
            report.start_limit_w
            or report.max_limit_w
            or max((p.limit_w for p in report.profile), default=0)
        )
        if report.mode == "observe" or (
            top and report.limit_w is not None and report.limit_w >= top
        ):
            _add(sums, "default", report.energy_j, report.time_s)
        else:
            estimate = _at_highest_limit(report)
            if estimate is not None:
                _add(sums, "estimated", *estimate)
    status["baseline"] = sums


def _add(sums: Obj, name: str, energy: float, seconds: float) -> None:
    bucket = dict(sums.get(name) or {"runs": 0, "energyJoules": 0.0, "seconds": 0.0})
    bucket["runs"] = int(bucket["runs"]) + 1
    bucket["energyJoules"] = float(bucket["energyJoules"]) + energy
    bucket["seconds"] = float(bucket["seconds"]) + seconds
    sums[name] = bucket


def _at_highest_limit(report: Report) -> tuple[float, float] | None:
    """The run's energy and time had it run at the highest profiled limit, or None."""
    points = {p.limit_w: p for p in report.profile if p.steps > 0}
    if not points or report.limit_w not in points:
        return None
    high, kept = points[max(points)], points[report.limit_w]
    if kept.energy_j <= 0 or kept.time_s <= 0:
        return None
    energy = report.energy_j * (high.energy_j / high.steps) / (kept.energy_j / kept.steps)
    seconds = report.time_s * (high.time_s / high.steps) / (kept.time_s / kept.steps)
    return energy, seconds


def _summary(status: Obj, spec: TrainingJobSpec, now: datetime, generation: Any) -> None:
    active = status.get("active") or []
    history = status.get("history") or []
    latest = active[-1] if active else (history[-1] if history else None)
    if latest is not None:
        status["currentBatchSize"] = int(latest["batchSize"])
        status["currentPowerLimitWatts"] = latest.get("powerLimitWatts")
    status["state"] = "Running" if active else "Suspended" if spec.suspend else "Idle"
    # What the runs use: spec.objective's eta and beta, or the operator's defaults for them.
    status["objective"] = {"eta": spec.objective.eta, "beta": spec.objective.beta}
    _set(status, "Ready", "True", "Reconciled", "The spec is valid.", generation, now)
    if active:
        runs = ", ".join(str(a["run"]) for a in active)
        _set(status, "Running", "True", "RunInProgress", f"Run {runs} in flight.", generation, now)
    else:
        _set(status, "Running", "False", "NoRunInFlight", "No run is in flight.", generation, now)
    if spec.suspend:
        _set(
            status,
            "Suspended",
            "True",
            "Suspended",
            "New runs wait for spec.suspend: false.",
            generation,
            now,
        )
    else:
        _set(status, "Suspended", "False", "Active", "New runs start when due.", generation, now)
    # The same comparison `kwatt report` shows (status_report.py), from the same sums.
    comparison = compare_with_default(status.get("baseline"))
    if comparison is not None:
        status["savings"] = comparison.savings()
    status["observedGeneration"] = generation


def _old_jobs(status: Obj, jobs: Mapping[str, Any]) -> list[str]:
    """Jobs to delete (with their Pods): those of recorded runs that fell out of the kept
    history, and those of replaced runs still running (the Replace's delete, until it is done).
    Never the Job of an active run, nor one of a run newer than this status knows (read
    before that Job was listed: the Jobs are the truth about runs in flight)."""
    active = {str(a["job"]) for a in status.get("active") or []}
    results = {str(h["job"]): h.get("result") for h in status.get("history") or []}
    runs = int(status.get("runs") or 0)
    out = []
    for name, job in jobs.items():
        if name in active:
            continue
        if name in results:
            if results[name] == "replaced" and job_finished(job) is None:
                out.append(name)
            continue
        run = _run_of(job)
        if run is not None and run <= runs:
            out.append(name)
    return sorted(out)


def _expired_jobs(
    status: Obj, jobs: Mapping[str, Any], spec: TrainingJobSpec, now: datetime, plan: Plan
) -> list[str]:
    """spec.ttlSecondsAfterFinished, applied by the operator and only to recorded runs.

    Left to the Job's own TTL, a Job (and the Pods holding the sidecar's report) could
    vanish before a pass saw it finish: the run would lose its report, or, when the
    operator died before noting the Job, be run a second time. So Jobs are built without
    a TTL, and a recorded run's Job is deleted once its TTL after completion has passed;
    the pass asks to be looked at again when the next one expires."""
    ttl = spec.ttl_seconds_after_finished
    if ttl is None:
        return []
    recorded = {str(h["job"]) for h in status.get("history") or []}
    out = []
    for name, job in jobs.items():
        if name not in recorded or job_finished(job) is None:
            continue
        done = _time((job.get("status") or {}).get("completionTime")) or _finished_at(job) or now
        left = (done - now).total_seconds() + ttl
        if left <= 0:
            out.append(name)
        else:
            soonest = plan.requeue_after_s
            plan.requeue_after_s = left if soonest is None else min(soonest, left)
    return sorted(out)


def _finished_at(job: Mapping[str, Any]) -> datetime | None:
    """When a Job's Complete or Failed condition turned true (a failed Job has no
    completionTime)."""
    for item in (job.get("status") or {}).get("conditions") or []:
        if item.get("status") == "True" and item.get("type") in ("Complete", "Failed"):
            return _time(item.get("lastTransitionTime"))
    return None


def _run_of(job: Mapping[str, Any]) -> int | None:
    """The run number a Job was labelled with, or None when it has none."""
    value = ((job.get("metadata") or {}).get("labels") or {}).get(LABEL_RUN)
    try:
        return int(str(value))
    except ValueError:
        return None


def _job(
    trainingjob: Mapping[str, Any], entry: Mapping[str, Any], settings: SidecarSettings
) -> Obj:
    choice = Choice(
        batch_size=int(entry["batchSize"]),
        power_limit_w=entry.get("powerLimitWatts"),
        cost_threshold=entry.get("costThreshold"),
        stage=entry.get("stage", "explore"),
    )
    return build_job(trainingjob, int(entry["run"]), choice, settings)


def _set(
    status: Obj,
    kind: str,
    value: cond.Status,
    reason: str,
    message: str,
    generation: Any,
    now: datetime,
) -> None:
    status["conditions"] = cond.set_condition(
        status.get("conditions"),
        kind,
        value,
        reason,
        message,
        observed_generation=None if generation is None else int(generation),
        now=now,
    )


def _changed(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    return dict(old) != dict(new)


__all__ = [
    "ANNOTATION_RUN_REQUEST",
    "Event",
    "FinishedRun",
    "Plan",
    "job_finished",
    "measured",
    "reconcile",
    "report_of",
    "seed_of",
]
