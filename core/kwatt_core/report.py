"""The run report: what the sidecar tells the operator when a run ends.

It travels in the sidecar container's termination message, which Kubernetes caps
at 4096 bytes, so `encode` always fits it: the profile is thinned and the note
shortened until it does. `decode` checks every field and names the first bad one.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from kwatt_core.policies.base import Outcome

MAX_BYTES = 4096
VERSION = 1
Result = Literal["reached", "stopped", "exhausted", "failed", "interrupted"]
Mode = Literal["optimize", "observe", "fixed"]
RESULTS: tuple[str, ...] = ("reached", "stopped", "exhausted", "failed", "interrupted")
MODES: tuple[str, ...] = ("optimize", "observe", "fixed")
CARBON_FIELDS = ("carbon_g", "carbon_baseline_g", "carbon_baseline_time_s", "carbon_failures")


class ReportError(ValueError):
    """A report that cannot be read: the message names the field."""


@dataclass(frozen=True)
class ProfilePoint:
    """One profiled limit: the window's energy and time over `steps` steps."""

    limit_w: int
    energy_j: float
    time_s: float
    steps: int


@dataclass(frozen=True)
class Report:
    """Outcome of one run, as the sidecar measured it.

    `result`: reached (target met), stopped (early-stopped for cost), exhausted
    (max epochs without the target), failed (the trainer failed), interrupted
    (killed or preempted before an outcome).

    `min_limit_w` / `max_limit_w`: the power-limit range (whole watts) that every GPU
    of the run supports, i.e. the highest of their minimums and the lowest of their
    maximums, since one limit is set on all of them. None when no GPU was found
    (and in reports of sidecars older than these fields).

    `epoch_cost`: the mean cost of the `kept_epochs` epochs that ran wholly at the kept
    limit (None when profiling took every epoch). Older sidecars sent the last such epoch
    alone and no `kept_epochs`, which reads as one.

    `start_limit_w`: the highest whole-watt limit the run could set, i.e. the limit its GPUs
    had when it began (an admin's cap, or the default) within that range; the sidecar put
    that limit back at the end. None in observe mode and from older sidecars (their top was
    `max_limit_w`).
    """

    result: Result
    batch_size: int
    epochs: int
    energy_j: float
    time_s: float
    cost: float
    mode: Mode = "optimize"
    limit_w: int | None = None
    profile_complete: bool = False
    epoch_cost: float | None = None
    kept_epochs: int | None = None
    metric: float | None = None
    gpu_model: str = ""
    gpu_count: int = 1
    min_limit_w: int | None = None
    max_limit_w: int | None = None
    start_limit_w: int | None = None
    profile: tuple[ProfilePoint, ...] = field(default=())
    note: str = ""
    # Carbon-aware runs only (docs/carbon.md): grams of CO2 of the run, and of the same work at
    # kwatt's ordinary limit over the same hours, with the time that would have taken.
    carbon_g: float | None = None
    carbon_baseline_g: float | None = None
    carbon_baseline_time_s: float | None = None
    carbon_failures: int | None = None  # fetches that failed or answered nonsense

    def outcome(self) -> Outcome:
        """What the batch-size policy learns from this run."""
        return Outcome(
            batch_size=self.batch_size,
            cost=self.cost,
            reached=self.result == "reached",
            energy_j=self.energy_j,
            time_s=self.time_s,
            power_limit_w=self.limit_w if self.profile_complete else None,
            started=self.epochs > 0 or self.result == "reached",
            epochs=self.epochs,
            epoch_cost=self.epoch_cost,
            kept_epochs=self.kept_epochs or 1,
            stopped_early=self.result == "stopped",
            kept_limit_w=self.limit_w,
            profile=self.window_costs(),
        )

    def window_costs(self) -> tuple[tuple[int, float, int, float], ...]:
        """The profile's windows as the policy gets them (`policies.Window`: limit, cost per
        step, steps, average power), costed like the run.

        The sidecar's cost model is eta * energy + (1 - eta) * MaxPower * time with MaxPower
        the limit range's maximum times the GPU count; eta follows from the run's own cost,
        energy and time. Empty when that cannot be told (no range, or no time)."""
        if not self.profile or self.max_limit_w is None:
            return ()
        max_power = float(self.max_limit_w * self.gpu_count)
        spare = self.energy_j - max_power * self.time_s
        if spare >= 0.0:  # drew the maximum power throughout: eta cannot be told
            return ()
        eta = min(max((self.cost - max_power * self.time_s) / spare, 0.0), 1.0)
        return tuple(
            (
                p.limit_w,
                (eta * p.energy_j + (1.0 - eta) * max_power * p.time_s) / p.steps,
                p.steps,
                p.energy_j / p.time_s / self.gpu_count,
            )
            for p in self.profile
            if p.steps > 0 and p.time_s > 0
        )

    def teaches_policy(self) -> bool:
        """Failed and interrupted runs say nothing about the batch size: keep them out."""
        return self.result in ("reached", "stopped", "exhausted")


def encode(report: Report) -> str:
    """Compact JSON of at most 4096 bytes (UTF-8)."""
    current = report
    while True:
        text = _dump(current)
        if len(text.encode("utf-8")) <= MAX_BYTES:
            return text
        if len(current.profile) > 2:
            # Keep the extremes and every other point: the chosen limit is in `limit_w`.
            points = current.profile
            thinned = (points[0], *points[1:-1:2], points[-1])
            if len(thinned) == len(points):
                thinned = (points[0], points[-1])
            current = replace(current, profile=thinned)
        elif current.note:
            current = replace(current, note=current.note[: len(current.note) // 2])
        elif current.profile:
            current = replace(current, profile=())
        else:
            current = replace(current, gpu_model=current.gpu_model[:64])
            return _dump(current)


def _dump(report: Report) -> str:
    data = asdict(report)
    data["v"] = VERSION
    data["profile"] = [
        [p.limit_w, round(p.energy_j, 3), round(p.time_s, 4), p.steps] for p in report.profile
    ]
    for key in (*CARBON_FIELDS, "start_limit_w", "kept_epochs"):
        if data[key] is None:
            del data[key]  # absent when unknown: reports stay as short as before
    for key in ("energy_j", "time_s", "cost", "epoch_cost", "metric", *CARBON_FIELDS):
        if isinstance(data.get(key), float):
            data[key] = round(data[key], 4)
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def decode(text: str) -> Report:
    """Parse and check a report; every problem names its field."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ReportError(
            f"The run report is not valid JSON ({exc.msg} at position {exc.pos})."
        ) from None
    if not isinstance(data, dict):
        raise ReportError("The run report must be a JSON object.")
    if data.get("v") != VERSION:
        raise ReportError(
            f"The run report has version {data.get('v')!r}; this operator reads {VERSION}."
        )
    result = _choice(data, "result", RESULTS)
    mode = _choice(data, "mode", MODES)
    profile_raw = data.get("profile", [])
    if not isinstance(profile_raw, list):
        raise ReportError("Field 'profile' of the run report must be a list.")
    profile = []
    for i, point in enumerate(profile_raw):
        if not (isinstance(point, list) and len(point) == 4):
            raise ReportError(f"Field 'profile[{i}]' must be [limit_w, energy_j, time_s, steps].")
        limit, energy, time, steps = point
        profile.append(
            ProfilePoint(
                _int_value(limit, f"profile[{i}][0]"),
                _float_value(energy, f"profile[{i}][1]"),
                _float_value(time, f"profile[{i}][2]"),
                _int_value(steps, f"profile[{i}][3]"),
            )
        )
    limit_w = data.get("limit_w")
    min_limit, max_limit = data.get("min_limit_w"), data.get("max_limit_w")
    min_limit_w = None if min_limit is None else _int_value(min_limit, "min_limit_w", minimum=1)
    max_limit_w = None if max_limit is None else _int_value(max_limit, "max_limit_w", minimum=1)
    if (min_limit_w is None) != (max_limit_w is None):
        raise ReportError(
            "Fields 'min_limit_w' and 'max_limit_w' of the run report come together; "
            f"got {min_limit!r} and {max_limit!r}."
        )
    if min_limit_w is not None and max_limit_w is not None and min_limit_w > max_limit_w:
        raise ReportError(
            f"Field 'min_limit_w' of the run report ({min_limit_w}) must not exceed "
            f"'max_limit_w' ({max_limit_w})."
        )
    start = data.get("start_limit_w")
    start_limit_w = None if start is None else _int_value(start, "start_limit_w", minimum=1)
    if start_limit_w is not None and not (min_limit_w or 0) <= start_limit_w <= (max_limit_w or 0):
        raise ReportError(
            f"Field 'start_limit_w' of the run report ({start_limit_w}) must lie within "
            f"'min_limit_w' and 'max_limit_w' ({min_limit!r} and {max_limit!r})."
        )
    epoch_cost = _optional_float(data, "epoch_cost")
    kept = data.get("kept_epochs")
    kept_epochs = None if kept is None else _int_value(kept, "kept_epochs", minimum=1)
    if kept_epochs is not None and epoch_cost is None:
        raise ReportError(
            "Field 'kept_epochs' of the run report comes with 'epoch_cost', which is missing."
        )
    return Report(
        result=result,  # type: ignore[arg-type]
        batch_size=_int_value(data.get("batch_size"), "batch_size", minimum=1),
        epochs=_int_value(data.get("epochs"), "epochs"),
        energy_j=_float_value(data.get("energy_j"), "energy_j"),
        time_s=_float_value(data.get("time_s"), "time_s"),
        cost=_float_value(data.get("cost"), "cost"),
        mode=mode,  # type: ignore[arg-type]
        limit_w=None if limit_w is None else _int_value(limit_w, "limit_w", minimum=1),
        profile_complete=bool(data.get("profile_complete", False)),
        epoch_cost=epoch_cost,
        kept_epochs=kept_epochs,
        metric=_optional_float(data, "metric", allow_negative=True),
        gpu_model=str(data.get("gpu_model", ""))[:128],
        gpu_count=_int_value(data.get("gpu_count", 1), "gpu_count", minimum=1),
        min_limit_w=min_limit_w,
        max_limit_w=max_limit_w,
        start_limit_w=start_limit_w,
        profile=tuple(profile),
        note=str(data.get("note", ""))[:1024],
        carbon_g=_optional_float(data, "carbon_g"),
        carbon_baseline_g=_optional_float(data, "carbon_baseline_g"),
        carbon_baseline_time_s=_optional_float(data, "carbon_baseline_time_s"),
        carbon_failures=None
        if data.get("carbon_failures") is None
        else _int_value(data["carbon_failures"], "carbon_failures"),
    )


def _choice(data: dict[str, Any], key: str, allowed: tuple[str, ...]) -> str:
    value = data.get(key, allowed[0] if key == "mode" else None)
    if value not in allowed:
        raise ReportError(
            f"Field '{key}' of the run report must be one of {', '.join(allowed)}; got {value!r}."
        )
    return str(value)


def _int_value(value: Any, name: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ReportError(
            f"Field '{name}' of the run report must be an integer >= {minimum}; got {value!r}."
        )
    return value


def _float_value(value: Any, name: str, allow_negative: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ReportError(
            f"Field '{name}' of the run report must be a finite number; got {value!r}."
        )
    if value < 0 and not allow_negative:
        raise ReportError(f"Field '{name}' of the run report must not be negative; got {value!r}.")
    return float(value)


def _optional_float(data: dict[str, Any], key: str, allow_negative: bool = False) -> float | None:
    value = data.get(key)
    return None if value is None else _float_value(value, key, allow_negative)
