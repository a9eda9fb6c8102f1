"""kwatt_core.carbon: each provider's documented shape, the checks, the forecast, the decision.

Expected values are worked out by hand from the providers' documented shapes and the
cost formula in the module's docstring (per-epoch figures of ResNet-50 at batch size
256 on the V100 trace stand in for a profiled curve)."""

from __future__ import annotations

import math

import pytest

from kwatt_core import carbon
from kwatt_core.carbon import CarbonError, CurvePoint, Reading
from kwatt_core.profiler import Measurement

NOW = carbon.parse_time("2026-03-01T12:10Z", "test")
HOUR = 3600.0

# ImageNet / ResNet-50, batch 256, V100 trace: energy (J) and time (s) of one epoch.
CURVE = (
    CurvePoint(250, 774_000.0, 3515.0),
    CurvePoint(175, 641_000.0, 3852.0),
    CurvePoint(150, 600_000.0, 4149.0),
)


# --- values and times ---------------------------------------------------------------------


def test_parse_time_accepts_the_providers_forms() -> None:
    assert carbon.parse_time("2026-03-01T12:00Z", "x") == NOW - 600
    assert carbon.parse_time("2026-03-01T12:00:00.000Z", "x") == NOW - 600
    assert carbon.parse_time("2026-03-01T13:00:00+01:00", "x") == NOW - 600
    assert carbon.parse_time("2026-03-01T12:00", "x") == NOW - 600  # no zone: UTC
    with pytest.raises(CarbonError, match="not ISO 8601"):
        carbon.parse_time("yesterday", "x")
    with pytest.raises(CarbonError, match="has no time"):
        carbon.parse_time(None, "x")


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (-5, "negative"),
        (0, "0 g CO2/kWh, taken as a missing value"),
        (0.0, "missing value"),
        (2500, "above the 2000"),
        (float("nan"), "not a finite number"),
        (float("inf"), "not a finite number"),
        ("143", "not a number"),
        (None, "not a number"),
        (True, "not a number"),
    ],
)
def test_check_value_refuses_nonsense(value: object, why: str) -> None:
    with pytest.raises(CarbonError, match=why):
        carbon.check_value(value, "Source")


def test_check_value_takes_sane_values() -> None:
    assert carbon.check_value(143, "Source") == 143.0
    assert carbon.check_value(2000, "Source") == 2000.0
    assert carbon.check_value(0.5, "Source") == 0.5


def test_check_reading_refuses_stale_and_future_readings() -> None:
    assert carbon.check_reading(Reading(NOW - 2 * HOUR, 100), NOW, 3 * HOUR, "S").g_per_kwh == 100
    with pytest.raises(CarbonError, match="stale"):
        carbon.check_reading(Reading(NOW - 4 * HOUR, 100), NOW, 3 * HOUR, "S")
    with pytest.raises(CarbonError, match="in the future"):
        carbon.check_reading(Reading(NOW + 2 * HOUR, 100), NOW, 3 * HOUR, "S")


# --- the UK Carbon Intensity API ------------------------------------------------------------


def uk(actual: object, forecast: object = 266, start: str = "2026-03-01T12:00Z") -> object:
    return {
        "data": [
            {
                "from": start,
                "to": "2026-03-01T12:30Z",
                "intensity": {"forecast": forecast, "actual": actual, "index": "moderate"},
            }
        ]
    }


def test_uk_takes_the_actual_value_else_the_forecast() -> None:
    assert carbon.parse_uk(uk(263), NOW) == Reading(NOW - 600, 263.0)
    assert carbon.parse_uk(uk(None), NOW).g_per_kwh == 266.0


def test_uk_regional_shape_has_only_a_forecast() -> None:
    body = {
        "data": [
            {
                "regionid": 13,
                "shortname": "London",
                "data": [
                    {
                        "from": "2026-03-01T12:00Z",
                        "to": "2026-03-01T12:30Z",
                        "intensity": {"forecast": 181, "index": "moderate"},
                        "generationmix": [],
                    }
                ],
            }
        ]
    }
    assert carbon.parse_uk(body, NOW).g_per_kwh == 181.0


def test_uk_picks_the_half_hour_holding_now() -> None:
    periods = [
        {"from": f"2026-03-01T{h}Z", "intensity": {"forecast": v, "actual": None}}
        for h, v in (("11:30", 100), ("12:00", 200), ("12:30", 300), ("14:00", 400))
    ]
    assert carbon.parse_uk({"data": periods}, NOW).g_per_kwh == 200.0


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ([1, 2], "not a JSON object"),
        ({"data": []}, "no 'data' list"),
        ({"error": {"code": "400"}}, "no 'data' list"),
        ({"data": ["x"]}, "not an object"),
        ({"data": [{"from": "2026-03-01T12:00Z"}]}, "without an 'intensity'"),
        (uk(-10, None), "negative"),
        (uk(None, 0), "missing value"),
        (uk(None, 99999), "above"),
        (uk(None, None), "not a number"),
        (uk(250, 260, "2026-03-01T06:00Z"), "stale"),
        (uk(250, 260, "not a time"), "not ISO 8601"),
    ],
)
def test_uk_refuses_malformed_answers(body: object, why: str) -> None:
    with pytest.raises(CarbonError, match=why):
        carbon.parse_uk(body, NOW)


# --- ElectricityMaps -------------------------------------------------------------------------


def em(value: object, at: str = "2026-03-01T12:00:00.000Z") -> dict[str, object]:
    return {
        "zone": "DE",
        "carbonIntensity": value,
        "datetime": at,
        "updatedAt": "2026-03-01T12:05:00.000Z",
        "emissionFactorType": "lifecycle",
        "isEstimated": True,
    }


def test_electricitymaps_latest() -> None:
    assert carbon.parse_electricitymaps(em(302), NOW) == Reading(NOW - 600, 302.0)


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ("302", "not a JSON object"),
        ({"zone": "DE"}, "no 'carbonIntensity'"),
        (em(-1), "negative"),
        (em(0), "missing value"),
        (em(1e6), "above"),
        (em(302, "2026-02-28T00:00:00Z"), "stale"),
        (em(302, ""), "has no time"),
    ],
)
def test_electricitymaps_refuses_malformed_answers(body: object, why: str) -> None:
    with pytest.raises(CarbonError, match=why):
        carbon.parse_electricitymaps(body, NOW)


# --- WattTime ---------------------------------------------------------------------------------


def wt(points: list[tuple[str, object]], units: object = "lbs_co2_per_mwh") -> dict[str, object]:
    return {
        "data": [{"point_time": t, "value": v, "version": "3.0"} for t, v in points],
        "meta": {"region": "CAISO_NORTH", "signal_type": "co2_moer", "units": units},
    }


def test_watttime_converts_pounds_per_mwh_and_picks_the_current_point() -> None:
    body = wt(
        [
            ("2026-03-01T12:00:00+00:00", 900.0),
            ("2026-03-01T12:05:00+00:00", 1000.0),
            ("2026-03-01T12:15:00+00:00", 1200.0),
        ]
    )
    reading = carbon.parse_watttime(body, NOW)
    assert reading.at_s == NOW - 300
    assert reading.g_per_kwh == pytest.approx(1000.0 * 453.59237 / 1000.0)


def test_watttime_forecast_of_the_future_only_takes_its_first_point() -> None:
    body = wt([("2026-03-01T12:20:00+00:00", 500.0), ("2026-03-01T12:15:00+00:00", 400.0)])
    assert carbon.parse_watttime(body, NOW).g_per_kwh == pytest.approx(400 * 0.45359237)


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (wt([("2026-03-01T12:00:00Z", 55)], "percentile"), "not an intensity"),
        ({"data": [{"point_time": "2026-03-01T12:00:00Z", "value": 1}]}, "not an intensity"),
        (wt([]), "no 'data' list"),
        (wt([("2026-03-01T12:00:00Z", -3)]), "negative"),
        (wt([("2026-03-01T12:00:00Z", 0)]), "missing value"),
        (wt([("2026-03-01T12:00:00Z", 9000)]), "above"),
        (wt([("2026-03-01T12:00:00Z", "high")]), "not a number"),
        (wt([("2026-02-01T12:00:00Z", 800)]), "stale"),
    ],
)
def test_watttime_refuses_malformed_answers(body: object, why: str) -> None:
    with pytest.raises(CarbonError, match=why):
        carbon.parse_watttime(body, NOW)


# --- a file another system keeps current --------------------------------------------------------


def test_file_holds_an_object_or_a_number() -> None:
    assert carbon.parse_file('{"gPerKWh": 210, "datetime": "2026-03-01T12:00Z"}', NOW, 0.0) == (
        Reading(NOW - 600, 210.0)
    )
    assert carbon.parse_file('{"gPerKWh": 210}', NOW, NOW - 60) == Reading(NOW - 60, 210.0)
    assert carbon.parse_file("187.5\n", NOW, NOW - 60) == Reading(NOW - 60, 187.5)
    with pytest.raises(CarbonError, match="neither JSON nor a number"):
        carbon.parse_file("lots", NOW, NOW)
    with pytest.raises(CarbonError, match="without a 'gPerKWh'"):
        carbon.parse_file('{"g": 1}', NOW, NOW)
    with pytest.raises(CarbonError, match="stale"):
        carbon.parse_file("187.5", NOW, NOW - 5 * HOUR)
    with pytest.raises(CarbonError, match="negative"):
        carbon.parse_file("-1", NOW, NOW)


# --- a replayed series -------------------------------------------------------------------------

SERIES = (
    "datetime,g_co2_per_kwh\n2026-01-01T00:00Z,100\n2026-01-01T01:00Z,200\n2026-01-01T02:00Z,300\n"
)


def test_series_replays_and_wraps_around() -> None:
    series = carbon.parse_series(SERIES)
    t0 = series.start_s
    assert (series.step_s, series.span_s) == (HOUR, 3 * HOUR)
    assert [series.at(t0 + h * HOUR + 1) for h in range(5)] == [100, 200, 300, 100, 200]
    assert series.at(t0 - 1) == 300  # before the start: the previous lap's last hour
    assert series.next_change_s(t0 + 10) == t0 + HOUR
    assert series.next_change_s(t0 + 2 * HOUR + 5) == t0 + 3 * HOUR
    assert series.mean() == 200


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("time,value\n", "lacks the column"),
        ("datetime,g_co2_per_kwh\n", "holds no reading"),
        ("datetime,g_co2_per_kwh\n2026-01-01T00:00Z,abc\n", "line 2: g_co2_per_kwh should"),
        ("datetime,g_co2_per_kwh\n2026-01-01T00:00Z,-4\n", "line 2 gave a negative"),
        (SERIES + "2026-01-01T01:30Z,5\n", "line 5: times must ascend"),
    ],
)
def test_series_errors_name_the_line(text: str, why: str) -> None:
    with pytest.raises(CarbonError, match=why):
        carbon.parse_series(text)


def test_bundled_series_is_readable_and_marked_synthetic() -> None:
    from pathlib import Path

    folder = Path(__file__).resolve().parents[2] / "traces" / "carbon"
    series = carbon.parse_series((folder / "gb-2023q3-synthetic.csv").read_text())
    assert len(series.readings) == 92 * 24
    assert series.step_s == HOUR
    assert series.mean() == pytest.approx(143.0, abs=0.5)  # the published Q3 2023 mean
    assert min(r.g_per_kwh for r in series.readings) >= 27  # the published record low
    assert "synthetic" in (folder / "SOURCE.md").read_text().lower()


# --- forecast and reference -------------------------------------------------------------------


def test_forecast_last_is_persistence() -> None:
    history = [Reading(0, 100), Reading(HOUR, 160)]
    assert carbon.forecast(history, HOUR + 5, 1800, "last") == 160


def test_forecast_daily_carries_yesterdays_change_forward() -> None:
    # Yesterday the intensity rose from 100 (at 0) to 160 (from 1 h on); today's last
    # reading is 120 at 24 h. The next half-hour's middle is 24 h + 1 h 20 min, whose
    # time yesterday had 160 in force, against 100 at the last reading's time yesterday.
    history = [Reading(0, 100), Reading(HOUR, 160), Reading(carbon.DAY_S, 120)]
    now = carbon.DAY_S + 3000
    assert carbon.forecast(history, now, 3600, "daily") == 120 + (160 - 100)
    # Younger than a day: persistence.
    assert carbon.forecast(history[1:], now, 3600, "daily") == 120
    # Kept sane: a fall below zero stops at 1 g.
    falling = [Reading(0, 900), Reading(HOUR, 10), Reading(carbon.DAY_S, 50)]
    assert carbon.forecast(falling, now, 3600, "daily") == 1.0
    with pytest.raises(CarbonError, match="No reading yet"):
        carbon.forecast([], now, 3600)


def test_reference_is_the_days_mean_or_the_fixed_value() -> None:
    history = [Reading(0, 500), Reading(carbon.DAY_S, 100), Reading(carbon.DAY_S + HOUR, 200)]
    assert carbon.reference(history, carbon.DAY_S + HOUR) == 150  # the first is over a day old
    assert carbon.reference(history[:1], 10 * carbon.DAY_S) == 500  # none recent: all of them
    assert carbon.reference(history, 0, fixed=80) == 80
    with pytest.raises(CarbonError, match="negative"):
        carbon.reference(history, 0, fixed=-1)


# --- the decision ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("weight", "limit"),
    [
        # costs (0.5 w E + 0.5 * 250 * T), w = 1: 826,375 / 802,000 / 818,625 -> 175 W
        (1.0, 175),
        # w = 2: 1,213,375 / 1,122,500 / 1,118,625 -> 150 W
        (2.0, 150),
        # w = 0.5: 632,875 / 641,750 / 668,625 -> 250 W
        (0.5, 250),
        (0.0, 250),  # energy free: time only
    ],
)
def test_choose_limit_weighs_energy_by_intensity(weight: float, limit: int) -> None:
    assert carbon.choose_limit(CURVE, 0.5, 250.0, weight) == limit


@pytest.mark.parametrize(
    ("base", "weight", "limit"),
    [
        # kwatt's policy kept 150 W though this curve puts 175 W first at weight 1 (802,000
        # against 818,625): points cheaper than the base are costed as the base, 818,625,
        # so at weight 1 nothing is cheaper than staying.
        (150, 1.0, 150),
        # w = 1.02 adds 0.01 E: 250 834,115, 175 825,035, 150 824,625 -> still 150
        # (unanchored, 175 W's 808,410 would win on a 2% change of the grid).
        (150, 1.02, 150),
        # w = 0.5 subtracts 0.25 E: 250 632,875, 175 658,375, 150 668,625 -> 250 W.
        (150, 0.5, 250),
        # base 250, w = 2 adds 0.5 E to max(cost, 826,375): 250 1,213,375, 175 1,146,875,
        # 150 1,126,375 -> 150 W.
        (250, 2.0, 150),
        (250, 1.0, 250),
        # A base the curve does not have anchors nothing: the plain choice, 175 W.
        (200, 1.0, 175),
    ],
)
def test_choose_limit_is_anchored_to_kwatts_own_limit(base: int, weight: float, limit: int) -> None:
    assert carbon.choose_limit(CURVE, 0.5, 250.0, weight, base) == limit


def test_choose_limit_refuses_an_empty_curve_or_a_bad_weight() -> None:
    with pytest.raises(CarbonError, match="empty"):
        carbon.choose_limit((), 0.5, 250.0, 1.0)
    with pytest.raises(CarbonError, match="weight"):
        carbon.choose_limit(CURVE, 0.5, 250.0, math.nan)


def test_curve_of_a_profile_is_per_step_and_keeps_the_later_window() -> None:
    windows = [
        Measurement(250, 880.0, 4.0, 40, 0.0),
        Measurement(200, 800.0, 4.4, 40, 0.0),
        Measurement(200, 760.0, 4.0, 40, 0.0),  # measured again: this one counts
        Measurement(175, 0.0, 0.0, 40, 0.0),  # nothing measured: left out
    ]
    assert carbon.curve_of(windows) == (CurvePoint(250, 22.0, 0.1), CurvePoint(200, 19.0, 0.1))


def test_usable_curve_keeps_the_gpus_range() -> None:
    assert [p.limit_w for p in carbon.usable_curve(CURVE, 160, 300)] == [250, 175]


# --- the controller ----------------------------------------------------------------------------

SETTINGS = carbon.CarbonSettings(interval_s=1800)


def test_decide_follows_the_grid_and_keeps_the_last_good_decision_on_failure() -> None:
    state = carbon.CarbonState(limit_w=175)
    # First reading: the reference is that reading, so weight 1: kwatt's own limit.
    d = carbon.decide(SETTINGS, state, Reading(0, 100), 0.0, 0.0, CURVE, 0.5, 250.0)
    assert (d.set_limit_w, d.state.limit_w, d.weight) == (None, 175, 1.0)
    assert d.state.next_s == 1800
    # A dirty hour: 1000 against a mean of 550, weight 1.82: costs 1,141,136 / 1,064,227 /
    # 1,064,080, so 150 W (the cheapest, and the less energy of a near-tie too).
    d = carbon.decide(SETTINGS, d.state, Reading(1800, 1000), 1800.0, 1800.0, CURVE, 0.5, 250.0)
    assert d.weight == pytest.approx(1000 / 550)
    assert d.forecast_g == 1000
    assert (d.set_limit_w, d.state.limit_w) == (150, 150)
    # The source fails: nothing changes but the count; asked again a fifth of an interval on.
    failed = carbon.decide(
        SETTINGS, d.state, CarbonError("timed out"), 3600.0, 3600.0, CURVE, 0.5, 250.0
    )
    assert failed.set_limit_w is None
    assert failed.state.limit_w == 150
    assert (failed.state.failures, failed.state.last_error) == (1, "timed out")
    assert failed.state.next_s == 3600 + 0.2 * 1800
    assert failed.problem == "timed out"
    assert not carbon.due(failed.state, 3600 + 300)
    assert carbon.due(failed.state, 3600 + 360)
    # A clean hour: 100 against a mean of 400, weight 0.25; against the day's own mean the
    # weight never goes below 1 (no carbon is spent on speed), so back to kwatt's 175 W.
    d = carbon.decide(SETTINGS, failed.state, Reading(3960, 100), 3960.0, 3960.0, CURVE, 0.5, 250.0)
    assert (d.weight, d.set_limit_w, d.state.limit_w) == (1.0, 175, 175)
    assert d.state.last_error == ""
    assert [r.g_per_kwh for r in d.state.history] == [100, 1000, 100]


def test_decide_with_a_fixed_reference() -> None:
    settings = carbon.CarbonSettings(reference_g=100.0)
    d = carbon.decide(settings, carbon.CarbonState(), Reading(0, 200), 0.0, 0.0, CURVE, 0.5, 250)
    assert (d.weight, d.set_limit_w) == (2.0, 150)
    # A reference given explicitly trades both ways: 100 against 400 is weight 0.25, and
    # costs 536,125 / 561,625 / 593,625 put 250 W first.
    settings = carbon.CarbonSettings(reference_g=400.0)
    d = carbon.decide(settings, carbon.CarbonState(), Reading(0, 100), 0.0, 0.0, CURVE, 0.5, 250)
    assert (d.weight, d.set_limit_w) == (0.25, 250)


def test_decide_keeps_a_bounded_history_of_distinct_readings() -> None:
    state = carbon.CarbonState()
    for i in range(200):
        state = carbon.decide(
            SETTINGS, state, Reading(i * 1800.0, 100 + i % 7), i * 1800.0, i * 1800.0, (), 0.5, 250
        ).state
    assert len(state.history) <= carbon.MAX_HISTORY
    assert state.history[-1].at_s - state.history[0].at_s <= carbon.DAY_S + 1800
    again = carbon.decide(SETTINGS, state, state.history[-1], 0.0, 0.0, (), 0.5, 250).state
    assert len(again.history) == len(state.history)


def test_account_prices_energy_and_the_same_work_at_kwatts_limit() -> None:
    state = carbon.CarbonState(intensity=300.0)
    # 3.6 MJ (1 kWh) over 2 h at 150 W, where kwatt would have run 175 W.
    state = carbon.account(state, 3.6e6, 7200.0, CURVE, 150, 175)
    ledger = state.ledger
    assert ledger.grams == pytest.approx(300.0)
    assert ledger.baseline_grams == pytest.approx(300.0 * 641_000 / 600_000)
    assert ledger.baseline_time_s == pytest.approx(7200.0 * 3852 / 4149)
    # A limit off the curve (while profiling): the baseline is the energy itself.
    state = carbon.account(state, 3.6e6, 10.0, CURVE, 225, 175)
    assert state.ledger.baseline_grams - ledger.baseline_grams == pytest.approx(300.0)


def test_energy_before_the_first_reading_is_priced_by_it() -> None:
    state = carbon.account(carbon.CarbonState(), 7.2e6, 100.0, CURVE, 175, 175)
    assert state.ledger.grams == 0 and state.ledger.unpriced_j == 7.2e6
    d = carbon.decide(SETTINGS, state, Reading(0, 50), 0.0, 0.0, CURVE, 0.5, 250.0)
    assert d.state.ledger.grams == pytest.approx(100.0)  # 2 kWh at 50 g
    assert d.state.ledger.unpriced_j == 0 and d.state.ledger.priced


def test_state_is_json_able() -> None:
    import json

    d = carbon.decide(SETTINGS, carbon.CarbonState(), Reading(0, 120), 0.0, 0.0, CURVE, 0.5, 250)
    state = carbon.account(d.state, 1000.0, 1.0, CURVE, 175, 175)
    assert carbon.CarbonState.from_dict(json.loads(json.dumps(state.to_dict()))) == state


@pytest.mark.parametrize(
    ("kwargs", "why"),
    [
        ({"interval_s": 0}, "interval"),
        ({"method": "magic"}, "forecast"),
        ({"max_age_s": -1}, "maximum age"),
        ({"reference_g": 0}, "missing value"),
    ],
)
def test_settings_are_checked(kwargs: dict[str, object], why: str) -> None:
    with pytest.raises(CarbonError, match=why):
        carbon.CarbonSettings(**kwargs)  # type: ignore[arg-type]


def test_the_report_carries_the_carbon_figures_only_when_there_are_some() -> None:
    import json

    from kwatt_core.report import Report, ReportError, decode, encode

    plain = Report("reached", 16, 3, 3.6e6, 100.0, 1.0)
    assert "carbon" not in encode(plain)
    assert decode(encode(plain)).carbon_g is None
    aware = Report(
        "reached",
        16,
        3,
        3.6e6,
        100.0,
        1.0,
        carbon_g=143.5,
        carbon_baseline_g=150.25,
        carbon_baseline_time_s=95.5,
        carbon_failures=2,
    )
    assert decode(encode(aware)) == aware
    with pytest.raises(ReportError, match="carbon_failures"):
        decode(json.dumps({**json.loads(encode(aware)), "carbon_failures": -1}))
    with pytest.raises(ReportError, match="carbon_g"):
        decode(json.dumps({**json.loads(encode(aware)), "carbon_g": "lots"}))
