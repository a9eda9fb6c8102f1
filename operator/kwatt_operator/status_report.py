"""A TrainingJob's runs and its saving against the default configuration, from its status alone.

`job_report(trainingjob)` turns a TrainingJob as the API server returns it (a plain dict)
into a `JobReport`: one row per run the status still lists (`status.history`, then the
runs in flight in `status.active`), the totals over every recorded run, and the
comparison with the default configuration that the operator keeps in `status.baseline`.
`report_json(report)` is the same data as JSON (base units, the status's camelCase).
Nothing here talks to the API server: `kwatt report` reads the object and renders these,
and the reconcile pass computes `status.savings` with the very same `compare_with_default`.

The default configuration is the default batch size (`spec.batchSizes.default`) at the
GPU's highest power limit: what the job ran before kwatt. The operator sums, over the runs
that reached the target, what kwatt's runs cost ("all") and what the default configuration
costs per run, either measured on default-size runs that ran at the highest limit
("default") or estimated from default-size runs at a lower limit through their own power
profile ("estimated"); see `reconcile._baseline`. Runs that did not reach the target are
in neither mean (their energy is in the totals, and in `energy_percent_all_runs`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from kwatt_operator.carbon import summary as carbon_summary

Obj = dict[str, Any]
Basis = Literal["measured", "estimated"]
RUNNING = "running"  # the result shown for a run in flight


class NoRunsError(ValueError):
    """The status has no recorded run to report on; the message is one sentence."""


@dataclass(frozen=True)
class DefaultComparison:
    """kwatt's runs against the default configuration, per run that reached the target."""

    basis: Basis
    default_runs: int  # runs the default configuration's cost comes from
    default_energy_j: float  # per run
    default_seconds: float  # per run
    runs: int  # kwatt's runs that reached the target
    energy_j: float  # per run, mean
    seconds: float  # per run, mean

    @property
    def energy_percent(self) -> float:
        """Energy saved per run, in percent (negative: kwatt used more)."""
        return round(100.0 * (1.0 - self.energy_j / self.default_energy_j), 2)

    @property
    def time_percent(self) -> float:
        """Time saved per run, in percent (negative: kwatt's runs took longer)."""
        return round(100.0 * (1.0 - self.seconds / self.default_seconds), 2)

    def savings(self) -> Obj:
        """`status.savings` as the operator writes it."""
        return {
            "energyPercent": self.energy_percent,
            "timePercent": self.time_percent,
            "basis": self.basis,
        }


def compare_with_default(baseline: Any) -> DefaultComparison | None:
    """The comparison from `status.baseline`'s sums: measured when some run ran the default
    configuration, else estimated; None while neither exists, or nothing reached the target."""
    sums = baseline if isinstance(baseline, Mapping) else {}
    every = _bucket(sums.get("all"))
    measured = _bucket(sums.get("default"))
    basis: Basis = "measured" if measured is not None else "estimated"
    default = measured if measured is not None else _bucket(sums.get("estimated"))
    if default is None or every is None:
        return None
    base_e, base_t = default[1] / default[0], default[2] / default[0]
    if base_e <= 0 or base_t <= 0:
        return None
    return DefaultComparison(
        basis=basis,
        default_runs=default[0],
        default_energy_j=base_e,
        default_seconds=base_t,
        runs=every[0],
        energy_j=every[1] / every[0],
        seconds=every[2] / every[0],
    )


def _bucket(value: Any) -> tuple[int, float, float] | None:
    """(runs, energy, seconds) of one of `status.baseline`'s sums, None when it has no runs."""
    if not isinstance(value, Mapping):
        return None
    runs = _int(value.get("runs")) or 0
    if runs <= 0:
        return None
    return runs, _float(value.get("energyJoules")) or 0.0, _float(value.get("seconds")) or 0.0


@dataclass(frozen=True)
class RunRow:
    """One run: a recorded one from `status.history`, or one in flight (result `running`)."""

    run: int
    job: str
    batch_size: int | None
    power_limit_w: int | None  # None: not set by kwatt, or still being profiled
    result: str
    stage: str
    epochs: int | None
    energy_j: float | None  # None while in flight
    seconds: float | None
    cumulative_energy_j: float | None  # every recorded run's energy up to this one
    metric: float | None
    start_time: str | None
    completion_time: str | None
    note: str


@dataclass(frozen=True)
class JobReport:
    namespace: str
    name: str
    state: str
    runs_started: int
    runs_recorded: int
    default_batch_size: int | None
    # The default configuration's limit, once a report has told it: the GPUs' limit before
    # the run (an admin's cap), or their highest in older statuses.
    max_limit_w: int | None
    gpu: Obj | None
    rows: tuple[RunRow, ...]
    earlier_runs: int  # recorded runs no longer in status.history
    earlier_energy_j: float
    total_energy_j: float
    total_seconds: float
    comparison: DefaultComparison | None
    savings: Obj | None  # status.savings, as the operator wrote it
    history_limit: int | None  # spec.historyLimit: how many recorded runs the status lists
    # status.objective (the eta and beta the runs use), with `operatorDefaults` listing those
    # that spec.objective leaves out, so the operator's defaults gave them; None before
    # an operator that writes it.
    objective: Obj | None = None
    # The carbon-aware runs' grams of CO2 against the same work without carbon awareness over
    # the same hours (kwatt_operator.carbon.summary); None when no run was carbon-aware.
    carbon: Obj | None = None

    @property
    def recorded_rows(self) -> tuple[RunRow, ...]:
        return tuple(r for r in self.rows if r.result != RUNNING)

    @property
    def energy_saved_j(self) -> float | None:
        """Energy saved over kwatt's runs that reached the target, against running each of
        them in the default configuration (negative: kwatt used more)."""
        c = self.comparison
        return None if c is None else (c.default_energy_j - c.energy_j) * c.runs

    @property
    def energy_percent_all_runs(self) -> float | None:
        """The energy saving when every recorded run's energy counts, also that of runs that
        did not reach the target (stopped early, exhausted, failed), spread over those that
        did: kwatt's exploration paid in full."""
        c = self.comparison
        if c is None or self.total_energy_j <= 0:
            return None
        return round(100.0 * (1.0 - self.total_energy_j / c.runs / c.default_energy_j), 2)


def job_report(trainingjob: Mapping[str, Any]) -> JobReport:
    """The report of a TrainingJob from its status; NoRunsError when it has no recorded run."""
    meta = _mapping(trainingjob.get("metadata"))
    spec = _mapping(trainingjob.get("spec"))
    status = _mapping(trainingjob.get("status"))
    namespace, name = str(meta.get("namespace") or ""), str(meta.get("name") or "")
    who = f"TrainingJob {namespace}/{name}" if namespace else f"TrainingJob {name}"
    history = [_mapping(h) for h in _list(status.get("history"))]
    active = [_mapping(a) for a in _list(status.get("active"))]
    totals = _mapping(status.get("totals"))
    recorded = max(
        _int(status.get("recordedRuns")) or 0, _int(totals.get("runs")) or 0, len(history)
    )
    started = max(_int(status.get("runs")) or 0, recorded + len(active))
    if recorded == 0:
        raise NoRunsError(_no_runs(who, status, active))

    policy_space = _mapping(_mapping(status.get("policy")).get("space"))
    default_bs = _int(_mapping(spec.get("batchSizes")).get("default"))
    if default_bs is None:
        default_bs = _int(policy_space.get("default_batch_size"))
    gpu = status.get("gpu") if isinstance(status.get("gpu"), Mapping) else None
    max_limit = (
        _int(_mapping(gpu).get("startLimitWatts"))
        or _int(_mapping(gpu).get("maxLimitWatts"))
        or _int(policy_space.get("max_limit_w"))
    )
    max_limit = max_limit if max_limit and max_limit > 0 else None

    listed_energy = sum(_float(h.get("energyJoules")) or 0.0 for h in history)
    total_energy = _float(totals.get("energyJoules"))
    total_energy = listed_energy if total_energy is None else max(total_energy, listed_energy)
    total_seconds = _float(totals.get("seconds"))
    if total_seconds is None:
        total_seconds = sum(_float(h.get("seconds")) or 0.0 for h in history)
    earlier = max(0, recorded - len(history))
    earlier_energy = max(0.0, total_energy - listed_energy) if earlier else 0.0

    rows: list[RunRow] = []
    cumulative = earlier_energy
    for item in history:
        energy = _float(item.get("energyJoules")) or 0.0
        cumulative += energy
        rows.append(_row(item, item.get("result") or "unknown", energy, cumulative))
    for item in active:
        rows.append(_row(item, RUNNING, None, None))

    savings = status.get("savings")
    return JobReport(
        namespace=namespace,
        name=name,
        state=str(status.get("state") or "Unknown"),
        runs_started=started,
        runs_recorded=recorded,
        default_batch_size=default_bs,
        max_limit_w=max_limit,
        gpu=dict(gpu) if gpu is not None else None,
        rows=tuple(rows),
        earlier_runs=earlier,
        earlier_energy_j=earlier_energy,
        total_energy_j=total_energy,
        total_seconds=total_seconds,
        comparison=compare_with_default(status.get("baseline")),
        savings=dict(savings) if isinstance(savings, Mapping) else None,
        history_limit=_int(spec.get("historyLimit")),
        objective=_objective(spec, status),
        carbon=carbon_summary(status),
    )


def _objective(spec: Mapping[str, Any], status: Mapping[str, Any]) -> Obj | None:
    """status.objective's eta and beta, and which of them the spec leaves to the operator."""
    used = _mapping(status.get("objective"))
    eta, beta = _float(used.get("eta")), _float(used.get("beta"))
    if eta is None or beta is None:
        return None
    given = _mapping(spec.get("objective"))
    defaulted = [key for key in ("eta", "beta") if given.get(key) is None]
    return {"eta": eta, "beta": beta, "operatorDefaults": defaulted}


def _no_runs(who: str, status: Mapping[str, Any], active: Sequence[Mapping[str, Any]]) -> str:
    if active:
        runs = ", ".join(str(a.get("run")) for a in active)
        one = len(active) == 1
        return (
            f"{who} has no finished run yet: run{'' if one else 's'} {runs} "
            f"{'is' if one else 'are'} in flight."
        )
    if status.get("state") == "Invalid":
        ready: Any = next(
            (c for c in _list(status.get("conditions")) if _mapping(c).get("type") == "Ready"), {}
        )
        why = str(_mapping(ready).get("message") or "").strip().rstrip(".")
        return f"{who} has no runs yet: its spec is invalid" + (f" ({why})." if why else ".")
    if status.get("state") == "Suspended":
        return f"{who} has no runs yet: it is suspended (spec.suspend)."
    if not status:
        return f"{who} has no runs yet: the operator has not written its status (is it running?)."
    return f"{who} has no runs yet."


def _row(item: Mapping[str, Any], result: Any, energy: float | None, cum: float | None) -> RunRow:
    in_flight = result == RUNNING
    return RunRow(
        run=_int(item.get("run")) or 0,
        job=str(item.get("job") or ""),
        batch_size=_int(item.get("batchSize")),
        power_limit_w=_int(item.get("powerLimitWatts")),
        result=str(result),
        stage=str(item.get("stage") or ""),
        epochs=None if in_flight else _int(item.get("epochs")),
        energy_j=energy,
        seconds=None if in_flight else _float(item.get("seconds")),
        cumulative_energy_j=cum,
        metric=_float(item.get("metric"), allow_negative=True),
        start_time=_str(item.get("startTime")),
        completion_time=_str(item.get("completionTime")),
        note=str(item.get("note") or (f"started {item['trigger']}" if item.get("trigger") else "")),
    )


def report_json(report: JobReport) -> Obj:
    """The report as JSON: base units (J, s, W), the status's camelCase names."""
    c = report.comparison
    default: Obj = {
        "batchSize": report.default_batch_size,
        "powerLimitWatts": report.max_limit_w,
        "basis": c.basis if c else None,
        "runs": c.default_runs if c else 0,
        "energyJoulesPerRun": c.default_energy_j if c else None,
        "secondsPerRun": c.default_seconds if c else None,
    }
    savings: Obj | None = None
    if report.savings is not None or c is not None:
        savings = dict(report.savings or (c.savings() if c else {}))
        savings["energySavedJoules"] = report.energy_saved_j
        savings["energyPercentAllRuns"] = report.energy_percent_all_runs
    return {
        "trainingJob": {"namespace": report.namespace, "name": report.name},
        "state": report.state,
        "runsStarted": report.runs_started,
        "runsRecorded": report.runs_recorded,
        "gpu": report.gpu,
        "objective": report.objective,
        "defaultConfiguration": default,
        "runs": [
            {
                "run": r.run,
                "job": r.job,
                "batchSize": r.batch_size,
                "powerLimitWatts": r.power_limit_w,
                "result": r.result,
                "stage": r.stage,
                "epochs": r.epochs,
                "energyJoules": r.energy_j,
                "seconds": r.seconds,
                "cumulativeEnergyJoules": r.cumulative_energy_j,
                "metric": r.metric,
                "startTime": r.start_time,
                "completionTime": r.completion_time,
                "note": r.note,
            }
            for r in report.rows
        ],
        # Recorded runs that fell out of status.history (spec.historyLimit): totals only.
        "earlierRuns": {"runs": report.earlier_runs, "energyJoules": report.earlier_energy_j},
        "totals": {
            "runs": report.runs_recorded,
            "energyJoules": report.total_energy_j,
            "seconds": report.total_seconds,
        },
        "reached": (
            {"runs": c.runs, "energyJoulesPerRun": c.energy_j, "secondsPerRun": c.seconds}
            if c
            else None
        ),
        "savings": savings,
        # Carbon-aware runs (docs/carbon.md): grams, the baseline's over the same hours.
        "carbon": report.carbon,
    }


# --- reading a status defensively: a hand-edited or older status must not crash the report ---


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else []


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _float(value: Any, allow_negative: bool = False) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    if not math.isfinite(number) or (number < 0 and not allow_negative):
        return None
    return number


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


__all__ = [
    "RUNNING",
    "DefaultComparison",
    "JobReport",
    "NoRunsError",
    "RunRow",
    "compare_with_default",
    "job_report",
    "report_json",
]
