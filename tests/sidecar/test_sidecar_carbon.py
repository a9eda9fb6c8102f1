"""The sidecar's carbon awareness against local HTTP servers answering in each provider's
documented shape: good answers, timeouts, 401s, malformed bodies, negative, zero and absurd
values. The limit always stays within the GPU's range, a bad answer leaves the last good
decision, and the run goes on; the default limit is back at the end.

The servers listen on 127.0.0.1 only. Expected grams are worked out by hand: energy in
kWh times g CO2/kWh; the baseline scales the energy by the curve's per-step energy at
kwatt's limit over that at the limit in force."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sidecar_support import make_node, sample

from kwatt_core.carbon import CarbonError
from kwatt_core.report import decode
from kwatt_sidecar import carbon as sidecar_carbon
from kwatt_sidecar import config as configlib
from kwatt_sidecar.app import Sidecar
from kwatt_sidecar.gpu.simulated import SimulatedBackend

pytestmark = pytest.mark.timeout(30)

# ResNet-50 at batch 256 on the V100 trace, per step (one epoch is 5,005 steps): J and s.
STEPS = 5005
CURVE = [[250, 774_000 / STEPS, 3515 / STEPS], [175, 641_000 / STEPS, 3852 / STEPS]]
CURVE += [[150, 600_000 / STEPS, 4149 / STEPS]]


@dataclass
class Answer:
    status: int = 200
    body: Any = None  # JSON-able, or bytes sent as they are
    delay_s: float = 0.0


@dataclass
class Provider:
    """A local HTTP server: each path answers what the test put there, and remembers the
    headers it was sent."""

    answers: dict[str, Answer] = field(default_factory=dict)
    seen: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    port: int = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture
def provider() -> Iterator[Provider]:
    state = Provider()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?")[0]
            state.seen.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
            answer = state.answers.get(path, Answer(404, {"error": "no such path"}))
            time.sleep(answer.delay_s)
            body = answer.body
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            try:
                self.send_response(answer.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except OSError:
                pass  # the client gave up (a timeout test)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def uk_body(value: Any, at: float | None = None) -> dict[str, Any]:
    start = time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime(time.time() if at is None else at))
    return {
        "data": [{"from": start, "to": start, "intensity": {"forecast": value, "actual": None}}]
    }


# --- each source against its documented shape --------------------------------------------------


def test_uk_source_reads_the_documented_shape(provider: Provider) -> None:
    provider.answers["/intensity"] = Answer(body=uk_body(231))
    source = sidecar_carbon.UkSource(provider.url("/intensity"), timeout_s=2)
    assert source.fetch(time.time(), 0.0).g_per_kwh == 231


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        (Answer(500, {"error": "down"}), "answered HTTP 500"),
        (Answer(401, {"error": "who"}), "refused the credentials"),
        (Answer(403, {"error": "forbidden"}), r"refused the credentials \(HTTP 403\)"),
        (
            Answer(404, {"error": "no such path"}),
            r"^The UK Carbon Intensity API answered HTTP 404\.$",
        ),
        (Answer(200, b"<html>maintenance</html>"), "not JSON"),
        (Answer(200, {"data": "soon"}), "no 'data' list"),
        (Answer(200, uk_body(-40)), "negative"),
        (Answer(200, uk_body(0)), "missing value"),
        (Answer(200, uk_body(50_000)), "above the 2000"),
        (Answer(200, uk_body(200, at=time.time() - 6 * 3600)), "stale"),
        (Answer(200, uk_body(200), delay_s=1.0), "did not answer within 0.3 s"),
    ],
)
def test_uk_source_turns_every_failure_into_a_sentence(
    provider: Provider, answer: Answer, why: str
) -> None:
    provider.answers["/intensity"] = answer
    source = sidecar_carbon.UkSource(provider.url("/intensity"), timeout_s=0.3)
    with pytest.raises(CarbonError, match=why):
        source.fetch(time.time(), 0.0)


def test_uk_source_with_a_region_asks_that_regions_forecast(
    provider: Provider, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/carbon.md: with `zone` set to a region id, `GET /regional/regionid/<id>` next to
    `/intensity`, whose answer nests the region's periods one level deeper."""
    monkeypatch.setitem(sidecar_carbon.DEFAULT_URLS, "uk", provider.url("/api/intensity"))
    start = time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime())
    periods = [{"from": start, "to": start, "intensity": {"forecast": 87, "index": "low"}}]
    region = {"regionid": 13, "shortname": "London", "data": periods}
    provider.answers["/api/regional/regionid/13"] = Answer(body={"data": [region]})
    source = sidecar_carbon.UkSource(sidecar_carbon.DEFAULT_URLS["uk"], "13", timeout_s=2)
    assert source.fetch(time.time(), 0.0).g_per_kwh == 87
    assert [path for path, _ in provider.seen] == ["/api/regional/regionid/13"]


def test_unreachable_source_is_a_sentence() -> None:
    source = sidecar_carbon.UkSource("http://127.0.0.1:9/intensity", timeout_s=0.5)
    with pytest.raises(CarbonError, match="cannot be reached"):
        source.fetch(time.time(), 0.0)


def test_electricitymaps_sends_the_secrets_token_and_never_says_it(
    provider: Provider, tmp_path: Path
) -> None:
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "token").write_text("s3cr3t-token\n")
    now = time.strftime("%Y-%m-%dT%H:00:00.000Z", time.gmtime())
    body = {"zone": "DE", "carbonIntensity": 412, "datetime": now, "isEstimated": True}
    provider.answers["/v3/carbon-intensity/latest"] = Answer(body=body)
    source = sidecar_carbon.ElectricityMapsSource(
        provider.url("/v3/carbon-intensity/latest"), "DE", secret, timeout_s=2
    )
    assert source.fetch(time.time(), 0.0).g_per_kwh == 412
    path, headers = provider.seen[-1]
    assert path == "/v3/carbon-intensity/latest?zone=DE"
    assert headers["auth-token"] == "s3cr3t-token"
    provider.answers["/v3/carbon-intensity/latest"] = Answer(401, {"message": "bad token"})
    with pytest.raises(CarbonError, match="refused the credentials") as refused:
        source.fetch(time.time(), 0.0)
    assert "s3cr3t" not in str(refused.value)
    (secret / "token").unlink()
    with pytest.raises(CarbonError, match="token cannot be read from the mounted Secret"):
        source.fetch(time.time(), 0.0)


def test_watttime_logs_in_with_the_secret_and_again_when_the_token_expires(
    provider: Provider, tmp_path: Path
) -> None:
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "username").write_text("kwatt")
    (secret / "password").write_text("pa55")
    tokens = iter(["token-1", "token-2"])
    provider.answers["/login"] = Answer(body={"token": next(tokens)})
    now = time.strftime("%Y-%m-%dT%H:%M:00+00:00", time.gmtime(time.time() - 60))
    forecast = {
        "data": [{"point_time": now, "value": 1000.0}],
        "meta": {"region": "CAISO_NORTH", "signal_type": "co2_moer", "units": "lbs_co2_per_mwh"},
    }
    provider.answers["/v3/forecast"] = Answer(body=forecast)
    source = sidecar_carbon.WattTimeSource(provider.url(""), "CAISO_NORTH", secret, timeout_s=2)
    assert source.fetch(time.time(), 0.0).g_per_kwh == pytest.approx(453.59237)
    login, forecast_call = provider.seen[0], provider.seen[1]
    expected = "Basic " + base64.b64encode(b"kwatt:pa55").decode()
    assert login[0] == "/login" and login[1]["authorization"] == expected
    assert forecast_call[0] == "/v3/forecast?region=CAISO_NORTH&signal_type=co2_moer"
    assert forecast_call[1]["authorization"] == "Bearer token-1"
    # The token expired: the forecast says 401, the source logs in once more and goes on.
    provider.answers["/v3/forecast"] = Answer(401, {"error": "expired"})
    provider.answers["/login"] = Answer(body={"token": next(tokens)})

    def forecast_after_login() -> None:
        provider.answers["/v3/forecast"] = Answer(body=forecast)

    seen = len(provider.seen)
    with pytest.raises(CarbonError, match="refused the credentials"):
        source.fetch(time.time(), 0.0)  # still 401 after the fresh login: said, not looped
    assert [p for p, _ in provider.seen[seen:]] == [
        "/v3/forecast?region=CAISO_NORTH&signal_type=co2_moer",
        "/login",
        "/v3/forecast?region=CAISO_NORTH&signal_type=co2_moer",
    ]
    forecast_after_login()
    assert source.fetch(time.time(), 0.0).g_per_kwh == pytest.approx(453.59237)
    # A signal index is a percentile, not an intensity.
    provider.answers["/v3/forecast"] = Answer(body={**forecast, "meta": {"units": "percentile"}})
    with pytest.raises(CarbonError, match="not an intensity"):
        source.fetch(time.time(), 0.0)
    # Any other failure of the forecast is WattTime's sentence too.
    provider.answers["/v3/forecast"] = Answer(500, {"error": "down"})
    with pytest.raises(CarbonError, match=r"^WattTime answered HTTP 500\.$"):
        source.fetch(time.time(), 0.0)
    provider.answers["/login"] = Answer(401, {"error": "no"})
    source.token = ""
    with pytest.raises(CarbonError, match="login refused the credentials"):
        source.fetch(time.time(), 0.0)


def test_file_and_csv_sources(tmp_path: Path) -> None:
    file = tmp_path / "intensity.json"
    file.write_text('{"gPerKWh": 95}')
    assert sidecar_carbon.FileSource(file).fetch(time.time(), 0.0).g_per_kwh == 95
    file.write_text("-3")
    with pytest.raises(CarbonError, match="negative"):
        sidecar_carbon.FileSource(file).fetch(time.time(), 0.0)
    series = tmp_path / "series.csv"
    series.write_text("datetime,g_co2_per_kwh\n2026-01-01T00:00Z,100\n2026-01-01T01:00Z,300\n")
    source = sidecar_carbon.CsvSource(series)
    assert [source.fetch(0.0, s).g_per_kwh for s in (0, 3599, 3600, 7200)] == [100, 100, 300, 100]
    with pytest.raises(CarbonError, match="cannot be read"):
        sidecar_carbon.CsvSource(tmp_path / "missing.csv").fetch(0.0, 0.0)


# --- the environment --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "word"),
    [
        ({"KWATT_CARBON_SOURCE": "coal"}, "KWATT_CARBON_SOURCE='coal' is not a carbon source"),
        ({"KWATT_CARBON_SOURCE": "csv"}, "needs KWATT_CARBON_FILE"),
        ({"KWATT_CARBON_SOURCE": "watttime"}, "needs KWATT_CARBON_SECRET_DIR"),
        (
            {"KWATT_CARBON_SOURCE": "uk", "KWATT_CARBON_URL": "ftp://x/y"},
            "not an http or https URL",
        ),
        ({"KWATT_CARBON_SOURCE": "uk", "KWATT_CARBON_INTERVAL_S": "0"}, "KWATT_CARBON_INTERVAL"),
        ({"KWATT_CARBON_SOURCE": "uk", "KWATT_CARBON_FORECAST": "tarot"}, "not a forecast"),
        ({"KWATT_CARBON_SOURCE": "uk", "KWATT_CARBON_REFERENCE_G": "-5"}, "negative"),
        ({"KWATT_CARBON_SOURCE": "uk", "KWATT_CARBON_PROFILE": "[[250, 1]]"}, "PROFILE\\[0\\]"),
        ({"KWATT_CARBON_SOURCE": "uk", "KWATT_CARBON_PROFILE": "{"}, "not JSON"),
        *[
            ({"KWATT_CARBON_SOURCE": "uk", "KWATT_CARBON_PROFILE": json.dumps(curve)}, word)
            for curve, word in [
                ([[250, 154.6, 0.7], [0, 128.1, 0.77]], r"PROFILE\[1\] must be \[limit W >= 1"),
                ([[-175, 128.1, 0.77]], r"PROFILE\[0\] must be \[limit W >= 1"),
                ([[175, 0, 0.77]], r"PROFILE\[0\]"),
                ([[175, 128.1, -0.77]], r"PROFILE\[0\]"),
            ]
        ],
    ],
)
def test_bad_carbon_settings_stop_the_sidecar_with_a_sentence(
    env: dict[str, str], word: str
) -> None:
    with pytest.raises(configlib.ConfigError, match=word):
        configlib.load(env)


def test_a_cached_curve_is_taken_as_given() -> None:
    """Any positive J and seconds per step are a point (a small model's step may well cost
    less than a joule); the limit is whole watts from 1 W up."""
    curve = [[1, 0.25, 0.001], [250, 774_000 / STEPS, 3515 / STEPS]]
    env = {"KWATT_CARBON_SOURCE": "uk", "KWATT_CARBON_PROFILE": json.dumps(curve)}
    carbon = configlib.load(env).carbon
    assert carbon is not None
    assert [(p.limit_w, p.energy_j, p.time_s) for p in carbon.profile] == [
        (1, 0.25, 0.001),
        (250, 774_000 / STEPS, 3515 / STEPS),
    ]


def test_no_carbon_source_means_off() -> None:
    assert configlib.load({}).carbon is None


# --- the sidecar following the grid -----------------------------------------------------------


def carbon_sidecar(tmp: Path, provider: Provider, mode: str = "optimize", **env: str) -> Any:
    node = make_node(tmp)
    cfg = configlib.load(
        {
            "KWATT_TERMINATION_PATH": str(tmp / "term"),
            "KWATT_STATE_DIR": str(tmp / "state"),
            "KWATT_POWER_MODE": mode,
            "KWATT_CACHED_LIMIT_W": "175",
            "KWATT_FIXED_LIMIT_W": "200",
            "KWATT_CARBON_SOURCE": "uk",
            "KWATT_CARBON_URL": provider.url("/intensity"),
            "KWATT_CARBON_INTERVAL_S": "60",
            "KWATT_CARBON_TIMEOUT_S": "0.3",
            "KWATT_CARBON_REFERENCE_G": "100",
            "KWATT_CARBON_PROFILE": json.dumps(CURVE),
            **env,
        }
    )
    sc = Sidecar(cfg, SimulatedBackend(node.gpu_dir, "all"))
    sc.hello(node.uuids, None)
    return node, sc


def beat(node: Any, sc: Sidecar, seconds: float = 0.0, joules: float = 0.0) -> None:
    """Move the GPU's clock and energy on, and let the sidecar beat until its fetch is in."""
    if seconds or joules:
        dev = node.device()
        node.patch(
            node.uuids[0], clock_s=dev.clock_s + seconds, energy_mj=dev.energy_mj + joules * 1000
        )
    sc.poll()
    assert sc.grid is not None
    sc.grid.wait(5.0)
    sc.poll()


def test_the_sidecar_follows_the_grid_and_keeps_its_last_good_decision(
    tmp_path: Path, provider: Provider
) -> None:
    provider.answers["/intensity"] = Answer(body=uk_body(200))
    node, sc = carbon_sidecar(tmp_path, provider)
    assert node.device().limit_w == 175  # the cached limit, no profiling
    # 200 g against a reference of 100: energy weighs twice as much -> 150 W.
    beat(node, sc)
    assert node.device().limit_w == 150
    # 1 kWh (3.6 MJ) over the next minute at 150 W and 200 g: 200 g; without carbon
    # awareness the same work at 175 W would have used 641/600 of it.
    provider.answers["/intensity"] = Answer(body=uk_body(20))
    beat(node, sc, 60, 3.6e6)
    assert node.device().limit_w == 250  # a clean grid: speed is cheap
    # Every kind of bad answer leaves 250 W in place, and the run goes on.
    bad = [
        Answer(500, {"error": "down"}),
        Answer(200, b"not json"),
        Answer(200, uk_body(-1)),
        Answer(200, uk_body(0)),
        Answer(200, uk_body(10**6)),
        Answer(200, uk_body(200), delay_s=1.0),
    ]
    for i, answer in enumerate(bad):
        provider.answers["/intensity"] = answer
        started = time.monotonic()
        # The next interval; after a failure, a fifth of one: the retry is due.
        beat(node, sc, 60 if i == 0 else 12, 0)
        assert node.device().limit_w == 250
        assert sc.grid is not None and sc.grid.failures == i + 1
    assert time.monotonic() - started < 3  # a slow source never stalls a beat for long
    body, _ = sc.metrics()
    pod = {"namespace": "", "pod": ""}  # no downward API here
    assert sample(body, "kwatt_carbon_source_failures_total", **pod) == len(bad)
    assert sample(body, "kwatt_carbon_intensity_grams_per_kwh", **pod) == 20
    assert sample(body, "kwatt_carbon_emissions_grams_total", **pod) == pytest.approx(200.0)
    # Dirty again, then the run ends: the default limit is back, the report has the grams.
    provider.answers["/intensity"] = Answer(body=uk_body(1000))
    beat(node, sc, 60, 0)
    assert node.device().limit_w == 150
    sc.finish()
    assert node.device().limit_w == 250
    report = decode((tmp_path / "term").read_text())
    assert report.limit_w == 175  # what the policy caches: kwatt's ordinary limit
    assert report.carbon_g == pytest.approx(200.0)
    assert report.carbon_baseline_g == pytest.approx(200.0 * 641 / 600)
    assert report.carbon_baseline_time_s is not None
    assert report.carbon_failures == len(bad)
    assert "failed or answered nonsense 6 time(s)" in report.note


def test_observe_mode_prices_the_run_but_never_changes_a_limit(
    tmp_path: Path, provider: Provider
) -> None:
    provider.answers["/intensity"] = Answer(body=uk_body(300))
    node, sc = carbon_sidecar(tmp_path, provider, mode="observe")
    limit = node.device().limit_w
    beat(node, sc)
    beat(node, sc, 60, 7.2e6)  # 2 kWh at 300 g
    assert node.device().limit_w == limit
    report = sc.finish()
    assert report.carbon_g == pytest.approx(600.0)
    assert report.carbon_baseline_g == pytest.approx(600.0)


def test_the_grams_cover_the_run_from_the_trainers_hello(
    tmp_path: Path, provider: Provider
) -> None:
    """Energy used between the hello and the sidecar's first beat is priced too, so the
    grams are the report's energy times the intensity (on the sandbox, a second between
    two beats is half an hour of the simulated clock)."""
    provider.answers["/intensity"] = Answer(body=uk_body(300))
    node, sc = carbon_sidecar(tmp_path, provider, mode="observe")
    beat(node, sc, 60, 3.6e6)  # 1 kWh before the first beat, priced at the first reading
    beat(node, sc, 60, 3.6e6)  # 1 kWh more
    report = sc.finish()
    assert report.energy_j == pytest.approx(7.2e6)
    assert report.carbon_g == pytest.approx(2 * 300.0)


def test_a_run_that_ends_before_its_first_beat_is_still_priced(
    tmp_path: Path, provider: Provider
) -> None:
    """A run shorter than a beat (in the sandbox's compressed time, a whole run fits in
    one second) asks the source once more as it ends: its energy is priced, not dropped."""
    provider.answers["/intensity"] = Answer(body=uk_body(300))
    node, sc = carbon_sidecar(tmp_path, provider, mode="observe")
    dev = node.device()
    node.patch(node.uuids[0], clock_s=dev.clock_s + 60, energy_mj=dev.energy_mj + 3.6e9)
    report = sc.finish()  # no beat in between
    assert report.energy_j == pytest.approx(3.6e6)
    assert report.carbon_g == pytest.approx(300.0)  # 1 kWh at 300 g CO2/kWh


def test_a_source_that_never_answers_leaves_the_run_alone(
    tmp_path: Path, provider: Provider
) -> None:
    provider.answers["/intensity"] = Answer(503, {"error": "maintenance"})
    node, sc = carbon_sidecar(tmp_path, provider)
    for _ in range(3):
        beat(node, sc, 12, 1e6)
    assert node.device().limit_w == 175
    report = sc.finish()
    assert report.carbon_g is None
    assert "no carbon figure" in report.note
    assert report.result == "interrupted"  # the trainer never ended; nothing about carbon


def test_an_unusable_reading_is_logged_with_the_limit_it_keeps(
    tmp_path: Path, provider: Provider, caplog: pytest.LogCaptureFixture
) -> None:
    """The WARNING names the limit in force (the cached 175 W here, then the 150 W a
    reading chose), so that the log says what the run goes on at."""
    provider.answers["/intensity"] = Answer(503, {"error": "maintenance"})
    node, sc = carbon_sidecar(tmp_path, provider)
    with caplog.at_level("WARNING", logger="kwatt.sidecar"):
        beat(node, sc)
        provider.answers["/intensity"] = Answer(body=uk_body(200))
        beat(node, sc, 12, 0)  # a fifth of the interval after a failure: the retry
        assert node.device().limit_w == 150
        provider.answers["/intensity"] = Answer(200, b"<html>maintenance</html>")
        beat(node, sc, 60, 0)
    said = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    unusable = [m for m in said if m.startswith("Carbon intensity unusable")]
    assert len(unusable) == 2, said
    assert unusable[0].startswith("Carbon intensity unusable, keeping 175 W: ")
    assert "HTTP 503" in unusable[0]
    assert unusable[1].startswith("Carbon intensity unusable, keeping 150 W: ")
    assert "not JSON" in unusable[1]
    sc.finish()
