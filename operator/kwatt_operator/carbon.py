"""`spec.objective.carbon`: parsed and checked; what it adds to a run's Pod; what the status keeps.

Pure functions over plain dicts, like the rest of the operator (docs/carbon.md):
- `parse_carbon` reads the spec's object into `Carbon`, or says in sentences what is wrong;
- `sidecar_env` and `pod_volumes` are what the Job builder adds: the source's settings as
  the sidecar's environment (kwatt_core.contract), the Secret with the provider's
  credentials and the ConfigMap with a file or a series, mounted read-only in the sidecar
  only (a token never goes through the spec or the environment);
- `record` keeps, from each run's report, the power curve of its batch size (so a later run
  of that size that skips profiling can still follow the grid) and the grams of CO2.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kwatt_core import contract as c
from kwatt_core.carbon import MAX_G_PER_KWH, METHODS
from kwatt_core.report import Report
from kwatt_operator.fields import env_var as _env
from kwatt_operator.fields import show as _show

KINDS = ("uk", "electricitymaps", "watttime", "file", "csv")
NEEDS_SECRET = ("electricitymaps", "watttime")
NEEDS_CONFIG_MAP = ("file", "csv")
DEFAULT_INTERVAL_MINUTES = 30.0
DEFAULT_MAX_AGE_MINUTES = 180.0
SECRET_VOLUME = "kwatt-carbon-secret"
CONFIG_VOLUME = "kwatt-carbon-config"
SECRET_MODE = 0o444  # the Secret's files: readable, never writable
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")  # a Secret's or ConfigMap's name
_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")  # a ConfigMap key
MAX_CURVES = 64  # batch sizes whose curve the status keeps


@dataclass(frozen=True)
class CarbonSource:
    kind: str
    url: str | None = None
    zone: str | None = None
    secret_name: str | None = None
    config_map: str | None = None
    key: str | None = None


@dataclass(frozen=True)
class Carbon:
    """Carbon-aware power limits: where intensity comes from and how often to re-decide."""

    source: CarbonSource
    interval_minutes: float = DEFAULT_INTERVAL_MINUTES
    forecast: str = "last"
    max_age_minutes: float = DEFAULT_MAX_AGE_MINUTES
    reference_g_per_kwh: float | None = None


def parse_carbon(value: Any, problems: list[str]) -> Carbon | None:
    """`spec.objective.carbon` as a `Carbon` (None when absent); each problem is appended to
    `problems` as one sentence naming its field."""
    path = "spec.objective.carbon"
    if value is None:
        return None
    if not isinstance(value, Mapping):
        problems.append(f"{path} must be an object, got {_show(value)}.")
        return None
    before = len(problems)
    raw = value.get("source")
    if not isinstance(raw, Mapping):
        problems.append(f"{path}.source is required: an object with a kind ({', '.join(KINDS)}).")
        return None
    kind = raw.get("kind")
    if kind not in KINDS:
        problems.append(f"{path}.source.kind must be one of {', '.join(KINDS)}, got {_show(kind)}.")
        return None
    url = _string(raw, "url", f"{path}.source.url", problems)
    if url is not None and not re.match(r"^https?://[^\s]+$", url):
        problems.append(f"{path}.source.url must be an http or https URL, got {_show(url)}.")
    if url is not None and kind in NEEDS_CONFIG_MAP:
        problems.append(f"{path}.source.url is for HTTP sources, not for kind {kind}.")
    zone = _string(raw, "zone", f"{path}.source.zone", problems)
    if kind == "watttime" and zone is None:
        problems.append(
            f"{path}.source.zone is required for watttime: its region, e.g. CAISO_NORTH."
        )
    if kind == "electricitymaps" and zone is None:
        problems.append(f"{path}.source.zone is required for electricitymaps: a zone, e.g. DE.")
    secret = _string(raw, "secretName", f"{path}.source.secretName", problems)
    if kind in NEEDS_SECRET and secret is None:
        keys = "token" if kind == "electricitymaps" else "username and password"
        problems.append(
            f"{path}.source.secretName is required for {kind}: the Secret holding its {keys} "
            "(credentials never go in the spec)."
        )
    if secret is not None and not _NAME.match(secret):
        problems.append(f"{path}.source.secretName {secret!r} is not a valid Secret name.")
    config_map, key = None, None
    cm = raw.get("configMap")
    if kind in NEEDS_CONFIG_MAP:
        if not isinstance(cm, Mapping):
            problems.append(
                f"{path}.source.configMap is required for {kind}: its name and key, the "
                "ConfigMap holding the " + ("intensity." if kind == "file" else "series.")
            )
        else:
            config_map = _string(cm, "name", f"{path}.source.configMap.name", problems)
            key = _string(cm, "key", f"{path}.source.configMap.key", problems)
            if config_map is None or key is None:
                problems.append(f"{path}.source.configMap needs both name and key.")
            elif not _NAME.match(config_map) or not _KEY.match(key):
                problems.append(
                    f"{path}.source.configMap {config_map!r}/{key!r} is not a valid ConfigMap "
                    "name and key."
                )
    elif cm is not None:
        problems.append(f"{path}.source.configMap is for kinds file and csv, not {kind}.")
    interval = _number(value, "intervalMinutes", path, DEFAULT_INTERVAL_MINUTES, 1, 1440, problems)
    max_age = _number(value, "maxAgeMinutes", path, DEFAULT_MAX_AGE_MINUTES, 1, 10080, problems)
    reference = value.get("referenceGramsPerKWh")
    if reference is not None:
        reference = _number(value, "referenceGramsPerKWh", path, 0.0, 0, MAX_G_PER_KWH, problems)
        if reference == 0:
            problems.append(f"{path}.referenceGramsPerKWh must be above 0.")
    forecast = value.get("forecast", "last")
    if forecast not in METHODS:
        problems.append(
            f"{path}.forecast must be one of {', '.join(METHODS)}, got {_show(forecast)}."
        )
    unknown = sorted(
        set(value)
        - {"source", "intervalMinutes", "maxAgeMinutes", "referenceGramsPerKWh", "forecast"}
    )
    if unknown:
        problems.append(f"{path} has unknown field(s) {', '.join(unknown)}.")
    if len(problems) > before:
        return None
    return Carbon(
        CarbonSource(str(kind), url, zone, secret, config_map, key),
        interval,
        str(forecast),
        max_age,
        reference,
    )


def _string(data: Mapping[str, Any], key: str, path: str, problems: list[str]) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > 2048:
        problems.append(f"{path} must be a non-empty string, got {_show(value)}.")
        return None
    return value.strip()


def _number(
    data: Mapping[str, Any],
    key: str,
    path: str,
    default: float,
    low: float,
    high: float,
    problems: list[str],
) -> float:
    value = data.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        problems.append(f"{path}.{key} must be a number, got {_show(value)}.")
        return default
    if not low <= value <= high:
        problems.append(f"{path}.{key} must be between {low:g} and {high:g}, got {value:g}.")
        return default
    return float(value)


# --- the run's Pod ------------------------------------------------------------------------------


def sidecar_env(carbon: Carbon, curve: Sequence[Sequence[float]] | None) -> list[dict[str, Any]]:
    """The sidecar's carbon settings (docs/sidecar.md); `curve` is the power curve cached for
    this run's batch size, which a run that skips profiling follows the grid with."""
    source = carbon.source
    env = [
        _env(c.ENV_CARBON_SOURCE, source.kind),
        _env(c.ENV_CARBON_INTERVAL, _seconds(carbon.interval_minutes)),
        _env(c.ENV_CARBON_FORECAST, carbon.forecast),
        _env(c.ENV_CARBON_MAX_AGE, _seconds(carbon.max_age_minutes)),
    ]
    if source.url is not None:
        env.append(_env(c.ENV_CARBON_URL, source.url))
    if source.zone is not None:
        env.append(_env(c.ENV_CARBON_ZONE, source.zone))
    if source.secret_name is not None:
        env.append(_env(c.ENV_CARBON_SECRET_DIR, c.CARBON_SECRET_DIR))
    if source.config_map is not None and source.key is not None:
        env.append(_env(c.ENV_CARBON_FILE, f"{c.CARBON_CONFIG_DIR}/{source.key}"))
    if carbon.reference_g_per_kwh is not None:
        env.append(_env(c.ENV_CARBON_REFERENCE, repr(carbon.reference_g_per_kwh)))
    if curve:
        env.append(_env(c.ENV_CARBON_PROFILE, json.dumps([list(p) for p in curve])))
    return env


def _seconds(minutes: float) -> str:
    text = repr(float(minutes) * 60.0)
    return text[:-2] if text.endswith(".0") else text


def pod_volumes(carbon: Carbon) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The Pod's volumes and the sidecar's mounts: the Secret and the ConfigMap, read-only.

    Only the sidecar mounts them; the trainer sees neither. A Secret or ConfigMap that does
    not exist keeps the Pod from starting, which Kubernetes reports on the Pod."""
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    source = carbon.source
    if source.secret_name is not None:
        # Read-only for everyone in the sidecar: Kubernetes writes a Secret's files as root,
        # and the observe-mode sidecar runs as a non-root user (jobs.OBSERVE_UID). Only the
        # sidecar mounts it, so no other container of the Pod can read it.
        volumes.append(
            {
                "name": SECRET_VOLUME,
                "secret": {"secretName": source.secret_name, "defaultMode": SECRET_MODE},
            }
        )
        mounts.append({"name": SECRET_VOLUME, "mountPath": c.CARBON_SECRET_DIR, "readOnly": True})
    if source.config_map is not None and source.key is not None:
        volumes.append(
            {
                "name": CONFIG_VOLUME,
                "configMap": {
                    "name": source.config_map,
                    "items": [{"key": source.key, "path": source.key}],
                },
            }
        )
        mounts.append({"name": CONFIG_VOLUME, "mountPath": c.CARBON_CONFIG_DIR, "readOnly": True})
    return volumes, mounts


# --- the status ----------------------------------------------------------------------------------


def cached_curve(status: Mapping[str, Any] | None, batch_size: int) -> list[list[float]] | None:
    """The power curve the status keeps for `batch_size` (None when none)."""
    carbon = (status or {}).get("carbon")
    curves = carbon.get("curves") if isinstance(carbon, Mapping) else None
    curve = curves.get(str(batch_size)) if isinstance(curves, Mapping) else None
    return curve if isinstance(curve, list) and curve else None


def record(
    status: dict[str, Any], item: dict[str, Any], report: Report | None
) -> list[tuple[str, str, str]]:
    """Keep what a recorded run tells about carbon: its batch size's power curve (from a
    complete profile) and, for a carbon-aware run, its grams and those of the same work at
    kwatt's limit without carbon awareness over the same hours (history item and sums).

    Returns the Events to post, as (type, reason, message): a Warning
    `CarbonSourceFailed` when the run's carbon source failed or answered nonsense."""
    if report is None:
        return []
    events = []
    if report.carbon_failures:
        events.append(
            (
                "Warning",
                "CarbonSourceFailed",
                f"Run {item.get('run')}: the carbon-intensity source failed or answered "
                f"nonsense {report.carbon_failures} time(s); the run kept its last good "
                "power limit each time (the sidecar's log says why).",
            )
        )
    carbon = dict(status.get("carbon") or {})
    if report.profile_complete and report.profile:
        curve = [
            [p.limit_w, round(p.energy_j / p.steps, 6), round(p.time_s / p.steps, 9)]
            for p in report.profile
            if p.steps > 0 and p.energy_j > 0 and p.time_s > 0
        ]
        curves = dict(carbon.get("curves") or {})
        if curve:
            curves.pop(str(report.batch_size), None)
            curves[str(report.batch_size)] = curve
            while len(curves) > MAX_CURVES:
                curves.pop(next(iter(curves)))
            carbon["curves"] = curves
    if report.carbon_g is not None:
        item["carbonGrams"] = report.carbon_g
        if report.carbon_baseline_g is not None:
            item["carbonBaselineGrams"] = report.carbon_baseline_g
        sums = dict(carbon.get("totals") or {})
        sums["runs"] = int(sums.get("runs") or 0) + 1
        sums["grams"] = float(sums.get("grams") or 0.0) + report.carbon_g
        sums["baselineGrams"] = float(sums.get("baselineGrams") or 0.0) + (
            report.carbon_baseline_g if report.carbon_baseline_g is not None else report.carbon_g
        )
        sums["seconds"] = float(sums.get("seconds") or 0.0) + report.time_s
        sums["baselineSeconds"] = float(sums.get("baselineSeconds") or 0.0) + (
            report.carbon_baseline_time_s
            if report.carbon_baseline_time_s is not None
            else report.time_s
        )
        carbon["totals"] = sums
    if carbon:
        status["carbon"] = carbon
    return events


def summary(status: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """What `kwatt report` says of carbon: the grams of the carbon-aware runs, the baseline's
    over the same hours, the saving and the time added (percent); None without any."""
    carbon = (status or {}).get("carbon")
    totals = carbon.get("totals") if isinstance(carbon, Mapping) else None
    if not isinstance(totals, Mapping) or not totals.get("runs"):
        return None
    grams = float(totals.get("grams") or 0.0)
    base = float(totals.get("baselineGrams") or 0.0)
    seconds = float(totals.get("seconds") or 0.0)
    base_s = float(totals.get("baselineSeconds") or 0.0)
    return {
        "runs": int(totals["runs"]),
        "grams": grams,
        "baselineGrams": base,
        "savedPercent": round(100.0 * (1.0 - grams / base), 2) if base > 0 else None,
        "timeAddedPercent": round(100.0 * (seconds / base_s - 1.0), 2) if base_s > 0 else None,
    }
