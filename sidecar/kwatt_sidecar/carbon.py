"""The sidecar's carbon awareness: where intensity comes from, and the follower that acts on it.

Sources share one interface, `fetch(now_s, elapsed_s) -> Reading` raising
`kwatt_core.carbon.CarbonError` with a sentence (never anything else):

- `uk`: the UK Carbon Intensity API (open, no token);
- `electricitymaps`: `carbon-intensity/latest`, the token read from the mounted Secret's
  `token` key at every fetch (so a rotated Secret is picked up; never from the spec);
- `watttime`: `GET /login` with the Secret's `username` and `password` (HTTP basic) for a
  token that lives 30 minutes, then `/v3/forecast` with it; a 401 logs in again once;
- `file`: a file another system keeps current (a ConfigMap key mounted in the Pod);
- `csv`: a replayed series (a ConfigMap holding `datetime,g_co2_per_kwh` rows), from its
  start in the run's own clock, for tests and the demo.

Parsing and every decision are kwatt_core.carbon's. `CarbonFollower` asks the source in a
thread of its own (a slow source never holds the sidecar's lock) and hands back what it
got; the sidecar's beat (`Sidecar.poll`) feeds that to `kwatt_core.carbon.decide` and sets
the limit it returns.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, Protocol

from kwatt_core import carbon, contract, run
from kwatt_core.carbon import CarbonError, CurvePoint, Reading
from kwatt_core.report import Report
from kwatt_sidecar.envnumber import env_number
from kwatt_sidecar.metrics import CarbonReading

log = logging.getLogger("kwatt.sidecar")

Kind = Literal["uk", "electricitymaps", "watttime", "file", "csv"]
KINDS: tuple[Kind, ...] = ("uk", "electricitymaps", "watttime", "file", "csv")
DEFAULT_URLS: dict[str, str] = {
    "uk": "https://api.carbonintensity.org.uk/intensity",
    "electricitymaps": "https://api.electricitymap.org/v3/carbon-intensity/latest",
    "watttime": "https://api.watttime.org",
}
DEFAULT_TIMEOUT_S = 10.0
MAX_BODY = 1 << 20  # a provider's answer is a few hundred bytes; more is not an answer
INTERVAL_RANGE_S = (1.0, 86400.0)
TIMEOUT_RANGE_S = (0.1, 120.0)


class CarbonConfigError(ValueError):
    """A carbon setting of the environment is unusable; the message names the variable."""


@dataclass(frozen=True)
class CarbonConfig:
    """The carbon part of the sidecar's environment, parsed."""

    kind: Kind
    settings: carbon.CarbonSettings
    url: str = ""
    zone: str = ""
    file: Path | None = None
    secret_dir: Path | None = None
    timeout_s: float = DEFAULT_TIMEOUT_S
    profile: tuple[CurvePoint, ...] = ()  # the curve cached for this batch size, if any


def load_config(env: Mapping[str, str]) -> CarbonConfig | None:
    """The carbon settings, None when KWATT_CARBON_SOURCE is unset (carbon awareness off)."""
    kind = env.get(contract.ENV_CARBON_SOURCE, "").strip().lower()
    if not kind:
        return None
    if kind not in KINDS:
        raise CarbonConfigError(
            f"{contract.ENV_CARBON_SOURCE}={kind!r} is not a carbon source; use one of "
            f"{', '.join(KINDS)}."
        )
    interval = _seconds(env, contract.ENV_CARBON_INTERVAL, INTERVAL_RANGE_S)
    max_age = _seconds(env, contract.ENV_CARBON_MAX_AGE, (60.0, 7 * 86400.0))
    timeout = _seconds(env, contract.ENV_CARBON_TIMEOUT, TIMEOUT_RANGE_S)
    reference = _number(env, contract.ENV_CARBON_REFERENCE)
    method = env.get(contract.ENV_CARBON_FORECAST, "").strip().lower() or "last"
    if method not in carbon.METHODS:
        raise CarbonConfigError(
            f"{contract.ENV_CARBON_FORECAST}={method!r} is not a forecast; use one of "
            f"{', '.join(carbon.METHODS)}."
        )
    try:
        settings = carbon.CarbonSettings(
            interval_s=carbon.DEFAULT_INTERVAL_S if interval is None else interval,
            method=method,
            max_age_s=carbon.DEFAULT_MAX_AGE_S if max_age is None else max_age,
            reference_g=reference,
        )
    except CarbonError as exc:
        raise CarbonConfigError(f"{contract.ENV_CARBON_REFERENCE}: {exc}") from None
    url = env.get(contract.ENV_CARBON_URL, "").strip() or DEFAULT_URLS.get(kind, "")
    if kind in DEFAULT_URLS:
        scheme = urllib.parse.urlsplit(url).scheme
        if scheme not in ("http", "https"):
            raise CarbonConfigError(
                f"{contract.ENV_CARBON_URL}={url!r} is not an http or https URL."
            )
    file = env.get(contract.ENV_CARBON_FILE, "").strip()
    if kind in ("file", "csv") and not file:
        raise CarbonConfigError(
            f"Carbon source {kind} needs {contract.ENV_CARBON_FILE}, the mounted file to read."
        )
    secret = env.get(contract.ENV_CARBON_SECRET_DIR, "").strip()
    if kind in ("electricitymaps", "watttime") and not secret:
        raise CarbonConfigError(
            f"Carbon source {kind} needs {contract.ENV_CARBON_SECRET_DIR}, the mounted Secret "
            "holding its credentials."
        )
    return CarbonConfig(
        kind=kind,
        settings=settings,
        url=url,
        zone=env.get(contract.ENV_CARBON_ZONE, "").strip(),
        file=Path(file) if file else None,
        secret_dir=Path(secret) if secret else None,
        timeout_s=DEFAULT_TIMEOUT_S if timeout is None else timeout,
        profile=_profile(env),
    )


def _number(env: Mapping[str, str], name: str) -> float | None:
    return env_number(env, name, float, CarbonConfigError)


def _seconds(env: Mapping[str, str], name: str, bounds: tuple[float, float]) -> float | None:
    value = _number(env, name)
    if value is not None and not bounds[0] <= value <= bounds[1]:
        raise CarbonConfigError(
            f"{name}={value:g} is outside the range {bounds[0]:g} to {bounds[1]:g} seconds."
        )
    return value


def _profile(env: Mapping[str, str]) -> tuple[CurvePoint, ...]:
    """KWATT_CARBON_PROFILE: `[[limit W, J/step, s/step], ...]`, the operator's cached curve."""
    text = env.get(contract.ENV_CARBON_PROFILE, "").strip()
    if not text:
        return ()
    name = contract.ENV_CARBON_PROFILE
    try:
        raw = json.loads(text)
    except ValueError:
        raise CarbonConfigError(f"{name} is not JSON.") from None
    if not isinstance(raw, list) or len(raw) > 200:
        raise CarbonConfigError(f"{name} must be a list of at most 200 [limit, J, s] points.")
    points = []
    for i, item in enumerate(raw):
        ok = isinstance(item, list) and len(item) == 3
        numbers = ok and all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
            for v in item
        )
        if not numbers or item[0] < 1 or item[1] <= 0 or item[2] <= 0:
            raise CarbonConfigError(
                f"{name}[{i}] must be [limit W >= 1, J per step > 0, s per step > 0]."
            )
        points.append(CurvePoint(int(item[0]), float(item[1]), float(item[2])))
    return tuple(points)


# --- sources ------------------------------------------------------------------------------


class Source(Protocol):
    """Where intensity comes from. `now_s` is Unix time; `elapsed_s` the run's own clock
    since the trainer's hello (what a replayed series follows)."""

    name: str

    def fetch(self, now_s: float, elapsed_s: float) -> Reading: ...


def _secret(directory: Path | None, key: str, what: str) -> str:
    if directory is None:
        raise CarbonError(f"{what} has no Secret mounted to read its {key} from.")
    try:
        value = (directory / key).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise CarbonError(
            f"{what}'s {key} cannot be read from the mounted Secret ({directory / key}): "
            f"{exc.strerror or exc}."
        ) from None
    if not value:
        raise CarbonError(f"{what}'s {key} in the mounted Secret is empty.")
    return value


class HttpError(CarbonError):
    """An HTTP answer other than 200; `status` is its code."""

    def __init__(self, sentence: str, status: int) -> None:
        super().__init__(sentence)
        self.status = status


def get_json(url: str, headers: Mapping[str, str], timeout_s: float, what: str) -> Any:
    """GET `url` and decode its JSON; every failure is a CarbonError sentence (a token in a
    header is never part of one)."""
    request = urllib.request.Request(url, headers={"Accept": "application/json", **headers})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            body = response.read(MAX_BODY + 1)
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            raise HttpError(
                f"{what} refused the credentials (HTTP {exc.code}); check the Secret.", exc.code
            ) from None
        raise HttpError(f"{what} answered HTTP {exc.code}.", exc.code) from None
    except TimeoutError:
        raise CarbonError(f"{what} did not answer within {timeout_s:g} s.") from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, TimeoutError):
            raise CarbonError(f"{what} did not answer within {timeout_s:g} s.") from None
        raise CarbonError(f"{what} cannot be reached: {reason}.") from None
    except OSError as exc:
        raise CarbonError(f"{what} cannot be reached: {exc.strerror or exc}.") from None
    if len(body) > MAX_BODY:
        raise CarbonError(f"{what} answered more than {MAX_BODY} bytes, which is no reading.")
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise CarbonError(f"{what} answered something that is not JSON.") from None


def _with_query(url: str, **params: str) -> str:
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query)
    query += [(k, v) for k, v in params.items() if v]
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


@dataclass
class UkSource:
    """The UK Carbon Intensity API: national `/intensity`, or a region's forecast when a
    region id is given (`/regional/regionid/<id>`)."""

    url: str
    zone: str = ""
    timeout_s: float = DEFAULT_TIMEOUT_S
    max_age_s: float = carbon.DEFAULT_MAX_AGE_S
    name: str = "The UK Carbon Intensity API"

    def fetch(self, now_s: float, elapsed_s: float) -> Reading:
        url = self.url
        if self.zone and url == DEFAULT_URLS["uk"]:
            url = f"{url.rsplit('/', 1)[0]}/regional/regionid/{urllib.parse.quote(self.zone)}"
        body = get_json(url, {}, self.timeout_s, self.name)
        return carbon.parse_uk(body, now_s, self.max_age_s)


@dataclass
class ElectricityMapsSource:
    url: str
    zone: str
    secret_dir: Path | None
    timeout_s: float = DEFAULT_TIMEOUT_S
    max_age_s: float = carbon.DEFAULT_MAX_AGE_S
    name: str = "ElectricityMaps"

    def fetch(self, now_s: float, elapsed_s: float) -> Reading:
        token = _secret(self.secret_dir, "token", self.name)
        url = _with_query(self.url, zone=self.zone)
        body = get_json(url, {"auth-token": token}, self.timeout_s, self.name)
        return carbon.parse_electricitymaps(body, now_s, self.max_age_s)


@dataclass
class WattTimeSource:
    url: str  # the base URL
    zone: str  # the region, e.g. CAISO_NORTH
    secret_dir: Path | None
    timeout_s: float = DEFAULT_TIMEOUT_S
    max_age_s: float = carbon.DEFAULT_MAX_AGE_S
    name: str = "WattTime"
    token: str = ""

    def fetch(self, now_s: float, elapsed_s: float) -> Reading:
        if not self.zone:
            raise CarbonError(f"{self.name} needs a region ({contract.ENV_CARBON_ZONE}).")
        url = _with_query(
            self.url.rstrip("/") + "/v3/forecast", region=self.zone, signal_type="co2_moer"
        )
        for attempt in (1, 2):
            if not self.token:
                self.token = self._login()
            try:
                body = get_json(
                    url, {"Authorization": f"Bearer {self.token}"}, self.timeout_s, self.name
                )
            except HttpError as exc:
                self.token = ""  # expired (they last 30 minutes) or revoked: log in again
                if exc.status == 401 and attempt == 1:
                    continue
                raise
            return carbon.parse_watttime(body, now_s, self.max_age_s)
        raise CarbonError(f"{self.name} refused a fresh token.")  # not reached

    def _login(self) -> str:
        user = _secret(self.secret_dir, "username", self.name)
        password = _secret(self.secret_dir, "password", self.name)
        basic = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        body = get_json(
            self.url.rstrip("/") + "/login",
            {"Authorization": f"Basic {basic}"},
            self.timeout_s,
            f"{self.name}'s login",
        )
        token = body.get("token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise CarbonError(f"{self.name}'s login answered no token.")
        return token


@dataclass
class FileSource:
    path: Path
    max_age_s: float = carbon.DEFAULT_MAX_AGE_S
    name: str = "The intensity file"

    def fetch(self, now_s: float, elapsed_s: float) -> Reading:
        try:
            text = self.path.read_text(encoding="utf-8")
            mtime = self.path.stat().st_mtime
        except OSError as exc:
            raise CarbonError(
                f"{self.name} {self.path} cannot be read: {exc.strerror or exc}."
            ) from None
        return carbon.parse_file(text, now_s, mtime, self.max_age_s)


@dataclass
class CsvSource:
    """A replayed series: the run's first second is the series' first, and so on (it
    repeats past its end). The reading's time is the series' own, so it is never stale."""

    path: Path
    name: str = "The replayed series"
    series: carbon.Series | None = None

    def fetch(self, now_s: float, elapsed_s: float) -> Reading:
        if self.series is None:
            try:
                text = self.path.read_text(encoding="utf-8")
            except OSError as exc:
                raise CarbonError(
                    f"{self.name} {self.path} cannot be read: {exc.strerror or exc}."
                ) from None
            self.series = carbon.parse_series(text, f"{self.name} {self.path}")
        t = self.series.start_s + elapsed_s
        return Reading(t, self.series.at(t))


def open_source(cfg: CarbonConfig) -> Source:
    age = cfg.settings.max_age_s
    if cfg.kind == "uk":
        return UkSource(cfg.url, cfg.zone, cfg.timeout_s, age)
    if cfg.kind == "electricitymaps":
        return ElectricityMapsSource(cfg.url, cfg.zone, cfg.secret_dir, cfg.timeout_s, age)
    if cfg.kind == "watttime":
        return WattTimeSource(cfg.url, cfg.zone, cfg.secret_dir, cfg.timeout_s, age)
    assert cfg.file is not None
    if cfg.kind == "file":
        return FileSource(cfg.file, age)
    return CsvSource(cfg.file)


# --- the follower ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Fetched:
    """What one fetch brought: a reading or the source's failure, and the times it was asked."""

    outcome: Reading | CarbonError
    now_s: float  # Unix time (or the replayed series' time) the reading is judged against


class CarbonFollower:
    """Asks the source in its own thread, one fetch at a time, and keeps what it answered.

    `start_fetch` returns at once; `take` hands over a finished fetch (None while one is in
    flight or none was asked). A source that hangs costs its timeout in that thread only."""

    def __init__(
        self, cfg: CarbonConfig, source: Source, wall: Callable[[], float] = time.time
    ) -> None:
        self.cfg = cfg
        self.source = source
        self.wall = wall
        self.state = carbon.CarbonState()
        self.failures = 0  # failed fetches and unusable answers, for the metric
        self.decisions = 0
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._done: Fetched | None = None

    @property
    def in_flight(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start_fetch(self, elapsed_s: float) -> bool:
        """Ask the source now (False when a fetch is already in flight)."""
        with self._lock:
            if self.in_flight or self._done is not None:
                return False
            thread = threading.Thread(
                target=self._fetch, args=(elapsed_s,), name="kwatt-carbon", daemon=True
            )
            self._thread = thread
        thread.start()
        return True

    def _fetch(self, elapsed_s: float) -> None:
        now = self.wall()
        outcome: Reading | CarbonError
        try:
            outcome = self.source.fetch(now, elapsed_s)
        except CarbonError as exc:
            outcome = exc
        except Exception as exc:  # a source must never take the sidecar down
            outcome = CarbonError(f"{self.source.name} failed: {type(exc).__name__}: {exc}")
        if isinstance(outcome, Reading) and self.cfg.kind == "csv":
            now = outcome.at_s  # a replayed series lives in its own time
        with self._lock:
            self._done = Fetched(outcome, now)

    def take(self) -> Fetched | None:
        with self._lock:
            done, self._done = self._done, None
            return done

    def wait(self, timeout_s: float) -> None:
        """Wait for the fetch in flight (tests, and the sidecar's last reading)."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout_s)


class GridFollower(CarbonFollower):
    """A run's carbon awareness in the sidecar: accounting, fetching, deciding.

    The sidecar calls `beat` on its idle beat (every second) with the run's state and a
    fresh reading of the clock and energy counter; it returns the limit to set, if any.
    Limits are only ever chosen from the run's profiled curve (or the curve cached for
    this batch size), within the GPUs' range, once profiling is over, in optimize mode.
    In observe and fixed modes the run is priced in grams but no limit is changed."""

    def __init__(
        self, cfg: CarbonConfig, source: Source, wall: Callable[[], float] = time.time
    ) -> None:
        super().__init__(cfg, source, wall)
        self.curve: tuple[CurvePoint, ...] = ()
        self.base_limit_w: int | None = None  # kwatt's ordinary limit (the profile's choice)
        self.limit_w: int | None = None  # the limit in force
        self.weight: float | None = None
        self._mark: tuple[float, float] | None = None  # clock and energy last accounted
        self._ready = False  # the curve is known (or known to be missing)

    def beat(self, state: run.RunState, clock_s: float, energy_j: float) -> int | None:
        self.settle(state, clock_s, energy_j)
        if state.stage != "running":
            return None
        if not self._ready and (state.prof is None or state.prof.phase == "done"):
            self._learn_curve(state)
        if carbon.due(self.state, clock_s):
            self.start_fetch(clock_s - state.start_s)  # a replayed series starts with the run
        fetched = self.take()
        if fetched is None:
            return None
        decision = self._decide(state, fetched, clock_s, self.curve if self._ready else ())
        if decision.problem:
            log.warning(
                "Carbon intensity unusable, keeping %s: %s",
                f"{self.limit_w} W" if self.limit_w else "the current limit",
                decision.problem,
            )
            return None
        if decision.weight is not None:
            self.decisions += 1
            self.weight = decision.weight
        if decision.set_limit_w is None or decision.set_limit_w == self.limit_w:
            return None
        log.info(
            "Carbon intensity %.0f g CO2/kWh forecast, %.2f times the reference: limit %d W.",
            decision.forecast_g or 0.0,
            decision.weight or 0.0,
            decision.set_limit_w,
        )
        self.limit_w = decision.set_limit_w
        return decision.set_limit_w

    def _learn_curve(self, state: run.RunState) -> None:
        """Once profiling is over: the curve to choose from and kwatt's ordinary limit."""
        self._ready = True
        prof = state.prof
        self.limit_w = self.base_limit_w = state.limit_w if prof is None else prof.chosen_w
        if state.mode != "optimize" or prof is None or self.base_limit_w is None:
            return  # observe or fixed: priced only
        curve = carbon.curve_of(prof.measurements) if prof.reason not in run.NOT_PROFILED else ()
        if not curve:
            curve = self.cfg.profile
        limits = state.hardware.settable_range()
        if limits is not None:
            curve = carbon.usable_curve(curve, *limits)
        if self.base_limit_w not in {p.limit_w for p in curve}:
            curve = ()  # without kwatt's own limit on it the curve cannot be compared to
        self.curve = curve
        if curve:
            self.state = replace(self.state, next_s=None, limit_w=self.base_limit_w)  # now
        else:
            log.warning(
                "No power curve is known for this batch size, so carbon awareness prices the "
                "run but keeps its limit."
            )

    def settle(self, state: run.RunState, clock_s: float, energy_j: float) -> None:
        """Charge the energy used since the last beat at the limit that was in force.

        The first charge runs from the trainer's hello, as the run's report does, so that
        the grams cover all of the run's energy and not only what followed the first beat."""
        start_s, start_j = self._mark or (state.start_s, state.start_j)
        dt, de = clock_s - start_s, energy_j - start_j
        if dt >= 0 and de >= 0:
            self.state = carbon.account(
                self.state, de, dt, self.curve, self.limit_w, self.base_limit_w
            )
        self._mark = (clock_s, energy_j)

    def last_reading(
        self, state: run.RunState, clock_s: float, energy_j: float, wait_s: float
    ) -> None:
        """The run's last accounting. A run that ends before its first reading came (shorter
        than a beat, as in the sandbox's compressed time, or with the first fetch still out)
        asks once more and waits up to `wait_s`, so that its energy is priced, not dropped."""
        self.settle(state, clock_s, energy_j)
        if self.state.ledger.priced:
            return
        self.start_fetch(clock_s - state.start_s)
        self.wait(wait_s)
        fetched = self.take()
        if fetched is not None:  # no limit is set any more: the reading only prices the run
            self._decide(state, fetched, clock_s, ())

    def _decide(
        self,
        state: run.RunState,
        fetched: Fetched,
        clock_s: float,
        curve: tuple[CurvePoint, ...],
    ) -> carbon.Decision:
        """Take a fetched reading (or its failure, counted) into the state; the decision."""
        decision = carbon.decide(
            self.cfg.settings,
            self.state,
            fetched.outcome,
            clock_s,
            fetched.now_s,
            curve,
            state.cost_model.eta,
            state.cost_model.max_power_w,
            self.base_limit_w,
        )
        self.state = decision.state
        if decision.problem:
            self.failures += 1
        return decision

    def reading(self) -> CarbonReading:
        """What /metrics shows of the run's carbon awareness."""
        ledger = self.state.ledger
        return CarbonReading(
            self.state.intensity, ledger.grams, ledger.baseline_grams, self.failures
        )

    def with_carbon(self, report: Report) -> Report:
        """The report with the run's carbon figures; with a note instead when no reading came."""
        ledger = self.state.ledger
        if self.failures:
            last = f" The last: {self.state.last_error}" if self.state.last_error else ""
            sentence = (
                f"The carbon source failed or answered nonsense {self.failures} time(s); the "
                f"limit stayed at the last good decision each time.{last}"
            )
            report = replace(report, note=f"{report.note} {sentence}".strip())
        report = replace(report, carbon_failures=self.failures)
        if not ledger.priced:
            sentence = "No usable carbon-intensity reading came, so the run has no carbon figure."
            return replace(report, note=f"{report.note} {sentence}".strip())
        return replace(
            report,
            carbon_g=ledger.grams,
            carbon_baseline_g=ledger.baseline_grams,
            carbon_baseline_time_s=ledger.baseline_time_s,
        )
