"""Carbon-aware power limits (Chase): intensity readings, their checks, a forecast, the decision.

The run's power curve is profiled once (kwatt_core.profiler); every interval after that
(30 minutes by default) the limit is picked again from that same curve, with the energy
term of the cost weighted by the grid's carbon intensity:

    cost = eta * (I / I_ref) * energy + (1 - eta) * MaxPower * time      (per step)

where I is the forecast intensity for the next interval and I_ref the reference: a fixed
value from the spec, or the mean of the readings of the last day, against which I / I_ref
is never taken below 1 (`decide`). At I = I_ref this is kwatt's ordinary choice, exactly
(`choose_limit` is anchored to it); a dirtier grid pushes to lower limits (less energy per
step), a cleaner one than a fixed reference to higher limits (more speed, paid in cheap
carbon).

Everything here is pure: parsers take the decoded body a provider answered, checks take
the time, and the controller state is JSON-able. The sidecar fetches and sets limits;
the simulator replays series; both call these functions. A reading that cannot be used
raises `CarbonError` with one sentence saying why, and the caller keeps its last good
decision.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from itertools import pairwise
from typing import Any, Literal

from kwatt_core import profiler
from kwatt_core.cost import CostModel

# No generator emits more than about 1,200 g CO2/kWh (lignite); a grid average or a
# marginal rate above this bound is a unit error or garbage, not a dirty hour.
MAX_G_PER_KWH = 2000.0
# WattTime's MOER is in lbs CO2/MWh: 1 lb = 453.59237 g and 1 MWh = 1,000 kWh.
G_PER_KWH_PER_LBS_PER_MWH = 0.45359237
DEFAULT_INTERVAL_S = 1800.0
DEFAULT_MAX_AGE_S = 3 * 3600.0
DAY_S = 86400.0
# A reading dated this far ahead of the clock is a forecast or a wrong clock, not "now".
FUTURE_SLACK_S = 3600.0
# Readings kept for the reference and the daily forecast: a day and a bit at 30 minutes.
MAX_HISTORY = 64
# After a failed fetch, try again this share of an interval later (not a whole interval).
RETRY_FRACTION = 0.2

Method = Literal["last", "daily"]
METHODS: tuple[Method, ...] = ("last", "daily")


class CarbonError(ValueError):
    """A reading or a setting that cannot be used; the message is one sentence saying why."""


@dataclass(frozen=True)
class Reading:
    """One intensity value: grams of CO2 per kWh, for the period starting at `at_s` (Unix s)."""

    at_s: float
    g_per_kwh: float


# --- times and values --------------------------------------------------------------------


def parse_time(text: Any, what: str) -> float:
    """Unix seconds of an ISO 8601 time ("2026-01-20T12:00Z", with or without seconds or
    fraction); a time without a zone is taken as UTC."""
    if not isinstance(text, str) or not text.strip():
        raise CarbonError(f"{what} has no time ({_show(text)}).")
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise CarbonError(f"{what} has a time that is not ISO 8601: {_show(text)}.") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def check_value(value: Any, what: str) -> float:
    """An intensity in g CO2/kWh that makes sense, or CarbonError saying why not.

    Zero is refused too: no grid's average is zero, and a provider that has no value
    tends to answer 0 (a marginal rate can be 0 when renewables are curtailed; kwatt then
    keeps its last decision, which errs towards saving energy)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CarbonError(f"{what} gave {_show(value)}, not a number of g CO2/kWh.")
    number = float(value)
    if not math.isfinite(number):
        raise CarbonError(f"{what} gave {_show(value)}, not a finite number of g CO2/kWh.")
    if number < 0:
        raise CarbonError(f"{what} gave a negative intensity, {number:g} g CO2/kWh.")
    if number == 0:
        raise CarbonError(f"{what} gave an intensity of 0 g CO2/kWh, taken as a missing value.")
    if number > MAX_G_PER_KWH:
        raise CarbonError(
            f"{what} gave {number:g} g CO2/kWh, above the {MAX_G_PER_KWH:g} that any grid "
            "can reach: a unit error or garbage."
        )
    return number


def check_reading(reading: Reading, now_s: float, max_age_s: float, what: str) -> Reading:
    """The reading, if it is recent enough and not dated in the future."""
    check_value(reading.g_per_kwh, what)
    age = now_s - reading.at_s
    if age > max_age_s:
        raise CarbonError(
            f"{what} gave a reading from {_duration(age)} ago, older than the "
            f"{_duration(max_age_s)} allowed (a stale value)."
        )
    if -age > FUTURE_SLACK_S:
        raise CarbonError(
            f"{what} gave a reading dated {_duration(-age)} in the future; the clock or the "
            "source is wrong."
        )
    return reading


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _duration(seconds: float) -> str:
    seconds = abs(seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


# --- what each provider answers ----------------------------------------------------------


def parse_uk(body: Any, now_s: float, max_age_s: float = DEFAULT_MAX_AGE_S) -> Reading:
    """The UK Carbon Intensity API (National Grid ESO / NESO), `GET /intensity` and friends.

    Documented shape: `{"data": [{"from": "2018-01-20T12:00Z", "to": "2018-01-20T12:30Z",
    "intensity": {"forecast": 266, "actual": 263, "index": "moderate"}}]}`; the regional
    endpoints nest one more level (`{"data": [{"regionid": .., "data": [ ... ]}]}`) and
    carry only the forecast. `actual` is null for a half-hour not yet closed: the forecast
    is used then. Of several half-hours, the one holding `now_s` (else the latest begun).
    """
    what = "The UK Carbon Intensity API"
    periods = _data_list(body, what)
    if isinstance(periods[0], dict) and isinstance(periods[0].get("data"), list):
        periods = _data_list(periods[0], what)  # regional: one region's periods
    dated = _dated(periods, what, "from", ".from")
    begun = [d for d in dated if d[0] <= now_s]
    soon = [d for d in dated if now_s < d[0] <= now_s + FUTURE_SLACK_S]
    if begun:
        chosen = max(begun, key=lambda d: d[0])
    elif soon:  # a clock a little behind the provider's
        chosen = min(soon, key=lambda d: d[0])
    else:
        raise CarbonError(f"{what} answered only periods that begin in the future.")
    start, period = chosen
    intensity = period.get("intensity")
    if not isinstance(intensity, dict):
        raise CarbonError(f"{what} answered a period without an 'intensity' object.")
    value = intensity.get("actual")
    if value is None:
        value = intensity.get("forecast")
    reading = Reading(start, check_value(value, what))
    return check_reading(reading, now_s, max_age_s, what)


def _dated(
    items: list[Any], what: str, field: str, suffix: str = ""
) -> list[tuple[float, dict[str, Any]]]:
    """Each item of a provider's `data` list with the time its `field` gives; an item that
    is not an object, or whose time is not one, is named in the error."""
    dated = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise CarbonError(f"{what} answered data[{i}] that is not an object.")
        dated.append((parse_time(item.get(field), f"{what}'s data[{i}]{suffix}"), item))
    return dated


def parse_electricitymaps(body: Any, now_s: float, max_age_s: float = DEFAULT_MAX_AGE_S) -> Reading:
    """ElectricityMaps `GET /v3/carbon-intensity/latest?zone=Z` (header `auth-token`).

    Documented shape: `{"zone": "DE", "carbonIntensity": 302, "datetime":
    "2019-05-21T00:00:00.000Z", "updatedAt": ..., "emissionFactorType": "lifecycle",
    "isEstimated": false, ...}`: the hour's average intensity of consumption."""
    what = "ElectricityMaps"
    if not isinstance(body, dict):
        raise CarbonError(f"{what} answered {_kind(body)}, not a JSON object.")
    if "carbonIntensity" not in body:
        raise CarbonError(f"{what} answered no 'carbonIntensity' field.")
    value = check_value(body.get("carbonIntensity"), what)
    at = parse_time(body.get("datetime"), f"{what}'s datetime")
    return check_reading(Reading(at, value), now_s, max_age_s, what)


WATTTIME_UNITS = {
    "lbs_co2_per_mwh": G_PER_KWH_PER_LBS_PER_MWH,
    "g_co2_per_kwh": 1.0,
    "kg_co2_per_mwh": 1.0,
}


def parse_watttime(body: Any, now_s: float, max_age_s: float = DEFAULT_MAX_AGE_S) -> Reading:
    """WattTime v3's signal shape (`GET /v3/forecast` or `/v3/historical`, bearer token).

    Documented shape: `{"data": [{"point_time": "2026-04-01T00:00:00+00:00", "value":
    412.5}, ...], "meta": {"region": .., "signal_type": "co2_moer", "units":
    "lbs_co2_per_mwh", ...}}`. The value is a marginal rate (MOER), converted to
    g CO2/kWh; `/v3/signal-index` answers a percentile (units "percentile"), which is no
    intensity and is refused. Of several points, the latest at or before `now_s`, else the
    first."""
    what = "WattTime"
    points = _data_list(body, what)
    meta = body.get("meta") if isinstance(body, dict) else None
    units = meta.get("units") if isinstance(meta, dict) else None
    if units not in WATTTIME_UNITS:
        raise CarbonError(
            f"{what} answered values in {_show(units)}, not an intensity "
            f"({', '.join(WATTTIME_UNITS)}); use the forecast or historical endpoint."
        )
    dated = _dated(points, what, "point_time")
    past = [d for d in dated if d[0] <= now_s]
    at, point = max(past, key=lambda d: d[0]) if past else min(dated, key=lambda d: d[0])
    raw = check_value(point.get("value"), what)
    reading = Reading(at, check_value(raw * WATTTIME_UNITS[str(units)], what))
    return check_reading(reading, now_s, max_age_s, what)


def parse_file(
    text: str, now_s: float, mtime_s: float, max_age_s: float = DEFAULT_MAX_AGE_S
) -> Reading:
    """A file another system keeps current (a ConfigMap key mounted in the sidecar).

    Either a JSON object `{"gPerKWh": 123.4, "datetime": "2026-01-20T12:00Z"}` (the time
    is optional: without it, the file's modification time) or a bare number, dated by the
    modification time."""
    what = "The intensity file"
    try:
        body = json.loads(text)
    except ValueError:
        raise CarbonError(f"{what} is neither JSON nor a number: {_show(text[:60])}.") from None
    if isinstance(body, dict):
        if "gPerKWh" not in body:
            raise CarbonError(f"{what} holds an object without a 'gPerKWh' field.")
        value = check_value(body["gPerKWh"], what)
        at = mtime_s if body.get("datetime") is None else parse_time(body["datetime"], what)
    else:
        value, at = check_value(body, what), mtime_s
    return check_reading(Reading(at, value), now_s, max_age_s, what)


def _data_list(body: Any, what: str) -> list[Any]:
    if not isinstance(body, dict):
        raise CarbonError(f"{what} answered {_kind(body)}, not a JSON object.")
    data = body.get("data")
    if not isinstance(data, list) or not data:
        raise CarbonError(f"{what} answered no 'data' list with a value in it.")
    return data


def _kind(body: Any) -> str:
    return "null" if body is None else f"a {type(body).__name__}"


# --- a replayed series -------------------------------------------------------------------

SERIES_COLUMNS = ("datetime", "g_co2_per_kwh")


@dataclass(frozen=True)
class Series:
    """An intensity series (times ascending), replayed for tests, the demo and the benchmark.

    It repeats: a time past its end wraps around to its start, so a benchmark may start
    runs anywhere in it."""

    readings: tuple[Reading, ...]

    @property
    def start_s(self) -> float:
        return self.readings[0].at_s

    @property
    def step_s(self) -> float:
        """The spacing of the readings (the last one lasts that long too)."""
        if len(self.readings) < 2:
            return 3600.0
        gaps = sorted(b.at_s - a.at_s for a, b in pairwise(self.readings))
        return gaps[len(gaps) // 2]

    @property
    def span_s(self) -> float:
        return self.readings[-1].at_s - self.start_s + self.step_s

    def index_at(self, t_s: float) -> int:
        """Index of the reading in force at `t_s` (wrapped into the series)."""
        offset = (t_s - self.start_s) % self.span_s
        target = self.start_s + offset
        lo, hi = 0, len(self.readings) - 1
        while lo < hi:  # the last reading whose time is at or before the target
            mid = (lo + hi + 1) // 2
            if self.readings[mid].at_s <= target:
                lo = mid
            else:
                hi = mid - 1
        return lo

    def at(self, t_s: float) -> float:
        """Intensity in force at `t_s`."""
        return self.readings[self.index_at(t_s)].g_per_kwh

    def next_change_s(self, t_s: float) -> float:
        """The first time after `t_s` at which the value in force may change."""
        i = self.index_at(t_s)
        offset = (t_s - self.start_s) % self.span_s
        base = t_s - offset  # the start of this lap of the series
        if i + 1 < len(self.readings):
            return base + self.readings[i + 1].at_s - self.start_s
        return base + self.span_s

    def mean(self) -> float:
        return sum(r.g_per_kwh for r in self.readings) / len(self.readings)


def parse_series(text: str, name: str = "The series") -> Series:
    """A CSV with the columns `datetime` (ISO 8601) and `g_co2_per_kwh`, times ascending;
    every problem names its line."""
    reader = csv.DictReader(io.StringIO(text))
    header = reader.fieldnames or []
    missing = [c for c in SERIES_COLUMNS if c not in header]
    if missing:
        raise CarbonError(f"{name} lacks the column(s) {', '.join(missing)}.")
    readings: list[Reading] = []
    try:
        for row in reader:
            line = reader.line_num
            where = f"{name} line {line}"
            at = parse_time(row.get("datetime"), where)
            text_value = (row.get("g_co2_per_kwh") or "").strip()
            try:
                value = float(text_value)
            except ValueError:
                raise CarbonError(
                    f"{where}: g_co2_per_kwh should be a number, got {_show(text_value)}."
                ) from None
            if readings and at <= readings[-1].at_s:
                raise CarbonError(f"{where}: times must ascend, and this one does not.")
            readings.append(Reading(at, check_value(value, where)))
    except csv.Error as exc:
        raise CarbonError(f"{name} is not valid CSV: {exc}.") from None
    if not readings:
        raise CarbonError(f"{name} holds no reading.")
    return Series(tuple(readings))


# --- forecast, reference and the decision ------------------------------------------------


def forecast(
    history: Sequence[Reading], now_s: float, horizon_s: float, method: Method = "last"
) -> float:
    """The intensity expected over the next `horizon_s` from the readings so far.

    - `last`: the last value (persistence), which is what most providers' "latest" means.
    - `daily`: the last value, moved by how the intensity changed over the same hours one
      day earlier: `last + (I(mid - 1 day) - I(last.at - 1 day))`, where `mid` is the
      middle of the next interval and I(t) the reading in force at t. Grids repeat their
      day (solar noon, the evening peak), and this carries that shape forward. Without
      readings a day back (a run younger than a day) it is the last value.
    The result is kept within the sane range (above 0, at most MAX_G_PER_KWH)."""
    if not history:
        raise CarbonError("No reading yet, so there is nothing to forecast from.")
    last = history[-1]
    if method == "last":
        return last.g_per_kwh
    then_now = _in_force(history, last.at_s - DAY_S)
    then_next = _in_force(history, now_s + horizon_s / 2.0 - DAY_S)
    if then_now is None or then_next is None:
        return last.g_per_kwh
    guess = last.g_per_kwh + (then_next - then_now)
    return min(max(guess, 1.0), MAX_G_PER_KWH)


def _in_force(history: Sequence[Reading], t_s: float) -> float | None:
    """The reading in force at `t_s`, if the history reaches back that far."""
    if not history or history[0].at_s > t_s:
        return None
    value = history[0].g_per_kwh
    for reading in history:
        if reading.at_s > t_s:
            break
        value = reading.g_per_kwh
    return value


def reference(
    history: Sequence[Reading], now_s: float, fixed: float | None = None, window_s: float = DAY_S
) -> float:
    """The intensity at which the carbon-aware choice equals kwatt's ordinary one: `fixed`
    if given, else the mean of the readings of the last `window_s` (all of them if none is
    that recent)."""
    if fixed is not None:
        return check_value(fixed, "The reference intensity")
    if not history:
        raise CarbonError("No reading yet, so there is no reference intensity.")
    recent = [r.g_per_kwh for r in history if r.at_s >= now_s - window_s] or [
        r.g_per_kwh for r in history
    ]
    return sum(recent) / len(recent)


@dataclass(frozen=True)
class CurvePoint:
    """One profiled limit's energy and time per training step."""

    limit_w: int
    energy_j: float
    time_s: float


def curve_of(measurements: Sequence[profiler.Measurement]) -> tuple[CurvePoint, ...]:
    """The power curve from a profile's windows: per step, one point per limit (the later
    window wins when a limit was measured twice), highest limit first."""
    points: dict[int, CurvePoint] = {}
    for m in measurements:
        if m.steps > 0 and m.energy_j > 0 and m.time_s > 0:
            points[m.limit_w] = CurvePoint(m.limit_w, m.energy_j / m.steps, m.time_s / m.steps)
    return tuple(sorted(points.values(), key=lambda p: -p.limit_w))


def usable_curve(curve: Sequence[CurvePoint], low_w: int, high_w: int) -> tuple[CurvePoint, ...]:
    """The points whose limit this run's GPUs accept (a cached curve may come from others)."""
    return tuple(
        p
        for p in curve
        if low_w <= p.limit_w <= high_w
        and math.isfinite(p.energy_j)
        and math.isfinite(p.time_s)
        and p.energy_j > 0
        and p.time_s > 0
    )


def choose_limit(
    curve: Sequence[CurvePoint],
    eta: float,
    max_power_w: float,
    weight: float,
    base_limit_w: int | None = None,
    tie_tolerance: float = profiler.KWATT_PROFILING.tie_tolerance,
) -> int:
    """The limit of `curve` with the least carbon-weighted cost per step; near-ties go to
    the one using less energy, as in the profiler (kwatt_core.profiler.choose_limit).

    With `base_limit_w` (kwatt's ordinary limit) on the curve, the choice is anchored to it:
    at weight 1 it is that limit, whatever the curve says. kwatt's policy chose it from
    more than this one profile (its beliefs gather every run's windows), so a curve point
    that looks cheaper at weight 1 is taken as noise and costed as the base; only the weight
    moves the choice, to a limit cheaper than staying (near-ties among those as above)."""
    if not curve:
        raise CarbonError("The power curve is empty, so no limit can be chosen from it.")
    if not (math.isfinite(weight) and weight >= 0):
        raise CarbonError(f"The energy weight must be a finite number >= 0, got {weight}.")
    model, plain = CostModel(eta, max_power_w, weight), CostModel(eta, max_power_w)
    base = next((p for p in curve if p.limit_w == base_limit_w), None)
    floor = plain.cost(base.energy_j, base.time_s) if base is not None else 0.0

    def cost(p: CurvePoint) -> float:
        weighted, unweighted = model.cost(p.energy_j, p.time_s), plain.cost(p.energy_j, p.time_s)
        return weighted - unweighted + max(unweighted, floor)

    candidates = list(curve)
    if base is not None:
        here = cost(base)
        candidates = [p for p in curve if cost(p) < here]
        if not candidates:
            return base.limit_w
    windows = [
        profiler.Measurement(p.limit_w, p.energy_j, p.time_s, 1, cost(p)) for p in candidates
    ]
    return profiler.choose_limit(windows, tie_tolerance)


# --- the controller: one run's carbon state, JSON-able -----------------------------------


@dataclass(frozen=True)
class CarbonSettings:
    """How a run follows the grid (the sidecar's environment, parsed)."""

    interval_s: float = DEFAULT_INTERVAL_S
    method: Method = "last"
    max_age_s: float = DEFAULT_MAX_AGE_S
    reference_g: float | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.interval_s) and self.interval_s > 0):
            raise CarbonError(
                f"The interval must be a positive number of seconds, got {self.interval_s}."
            )
        if self.method not in METHODS:
            raise CarbonError(
                f"The forecast must be one of {', '.join(METHODS)}, got {_show(self.method)}."
            )
        if not (math.isfinite(self.max_age_s) and self.max_age_s > 0):
            raise CarbonError(
                f"The maximum age must be a positive number of seconds, got {self.max_age_s}."
            )
        if self.reference_g is not None:
            check_value(self.reference_g, "The reference intensity")


@dataclass(frozen=True)
class Ledger:
    """Grams of CO2 so far, and what the same work would have emitted over the same hours
    without carbon awareness (at kwatt's ordinary limit), with the time it would have taken.

    Energy before the first good reading is priced when that reading comes (`unpriced_*`);
    if none ever comes the run has no carbon figure."""

    grams: float = 0.0
    baseline_grams: float = 0.0
    energy_j: float = 0.0
    time_s: float = 0.0
    baseline_time_s: float = 0.0
    unpriced_j: float = 0.0
    unpriced_baseline_j: float = 0.0
    priced: bool = False


@dataclass(frozen=True)
class CarbonState:
    """Where the run's carbon awareness stands."""

    history: tuple[Reading, ...] = ()
    intensity: float | None = None  # the last good reading, what energy is priced at
    limit_w: int | None = None  # the limit chosen from the curve (None: none chosen yet)
    next_s: float | None = None  # the caller's clock at which to ask the source again
    decisions: int = 0
    failures: int = 0
    last_error: str = ""
    ledger: Ledger = field(default_factory=Ledger)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CarbonState:
        fields = dict(data)
        fields["history"] = tuple(Reading(**r) for r in fields["history"])
        fields["ledger"] = Ledger(**fields["ledger"])
        return cls(**fields)


def due(state: CarbonState, clock_s: float) -> bool:
    """Whether the source should be asked now."""
    return state.next_s is None or clock_s >= state.next_s


@dataclass(frozen=True)
class Decision:
    """What one interval decided: the new state, the limit to set (None: keep it), and a
    sentence for the log when the source failed."""

    state: CarbonState
    set_limit_w: int | None = None
    weight: float | None = None
    forecast_g: float | None = None
    problem: str = ""


def decide(
    settings: CarbonSettings,
    state: CarbonState,
    outcome: Reading | CarbonError,
    clock_s: float,
    now_s: float,
    curve: Sequence[CurvePoint],
    eta: float,
    max_power_w: float,
    base_limit_w: int | None = None,
) -> Decision:
    """One interval: take a reading (or the source's failure) and pick the limit (anchored
    to `base_limit_w`, kwatt's ordinary limit, when given: `choose_limit`).

    `clock_s` is the caller's clock (what `next_s` is in); `now_s` the time the readings'
    times are in (Unix seconds, or the replayed series' time).

    A failure leaves the limit where it is (the last good decision, or kwatt's ordinary
    limit before any) and asks again after a fifth of an interval. A good reading joins the
    history (a day of them at most), prices any energy used before it, and, if the curve
    has points, picks the limit for the forecast intensity."""
    if isinstance(outcome, CarbonError):
        retry = clock_s + RETRY_FRACTION * settings.interval_s
        failed = replace(state, failures=state.failures + 1, last_error=str(outcome), next_s=retry)
        return Decision(failed, problem=str(outcome))
    history = (*(r for r in state.history if r.at_s != outcome.at_s), outcome)
    history = tuple(sorted(history, key=lambda r: r.at_s))
    history = tuple(r for r in history if r.at_s >= outcome.at_s - DAY_S - settings.interval_s)
    history = history[-MAX_HISTORY:]
    ledger = state.ledger
    if not ledger.priced:
        ledger = replace(
            ledger,
            grams=ledger.grams + grams(ledger.unpriced_j, outcome.g_per_kwh),
            baseline_grams=ledger.baseline_grams
            + grams(ledger.unpriced_baseline_j, outcome.g_per_kwh),
            unpriced_j=0.0,
            unpriced_baseline_j=0.0,
            priced=True,
        )
    state = replace(
        state,
        history=history,
        intensity=outcome.g_per_kwh,
        next_s=clock_s + settings.interval_s,
        last_error="",
        ledger=ledger,
    )
    if not curve:
        return Decision(state)
    expected = forecast(history, now_s, settings.interval_s, settings.method)
    ref = reference(history, now_s, settings.reference_g)
    weight = expected / ref
    if settings.reference_g is None:
        # Against the day's own mean, speed bought in clean hours costs about as much carbon
        # as slowing in dirty ones saves (energy rises steeply above kwatt's limit), so by
        # default a run is only ever slowed, in hours dirtier than the day's mean: it never
        # spends carbon to save time. A reference given explicitly trades both ways.
        weight = max(weight, 1.0)
    limit = choose_limit(curve, eta, max_power_w, weight, base_limit_w)
    changed = limit if limit != state.limit_w else None
    state = replace(state, limit_w=limit, decisions=state.decisions + 1)
    return Decision(state, changed, weight, expected)


def grams(energy_j: float, g_per_kwh: float) -> float:
    """Grams of CO2 of `energy_j` joules at `g_per_kwh` (1 kWh = 3.6e6 J)."""
    return energy_j / 3.6e6 * g_per_kwh


def account(
    state: CarbonState,
    energy_j: float,
    time_s: float,
    curve: Sequence[CurvePoint],
    limit_w: int | None,
    base_limit_w: int | None,
) -> CarbonState:
    """Charge `energy_j` used over `time_s` at `limit_w` (priced at the last good reading).

    The baseline is the same work at `base_limit_w`, kwatt's ordinary choice, over the
    same hours: the energy scaled by the curve's per-step energy at the two limits, the
    time by their per-step time (1 where either limit is not on the curve, as while
    profiling). Timing shifts (the same work ending earlier or later) are not modelled."""
    energy_j, time_s = max(energy_j, 0.0), max(time_s, 0.0)
    e_ratio = t_ratio = 1.0
    points = {p.limit_w: p for p in curve}
    now = points.get(limit_w) if limit_w is not None else None
    base = points.get(base_limit_w) if base_limit_w is not None else None
    if now is not None and base is not None:
        e_ratio, t_ratio = base.energy_j / now.energy_j, base.time_s / now.time_s
    base_j = energy_j * e_ratio
    ledger = state.ledger
    ledger = replace(
        ledger,
        energy_j=ledger.energy_j + energy_j,
        time_s=ledger.time_s + time_s,
        baseline_time_s=ledger.baseline_time_s + time_s * t_ratio,
    )
    if state.intensity is None:
        ledger = replace(
            ledger,
            unpriced_j=ledger.unpriced_j + energy_j,
            unpriced_baseline_j=ledger.unpriced_baseline_j + base_j,
        )
    else:
        ledger = replace(
            ledger,
            grams=ledger.grams + grams(energy_j, state.intensity),
            baseline_grams=ledger.baseline_grams + grams(base_j, state.intensity),
        )
    return replace(state, ledger=ledger)
