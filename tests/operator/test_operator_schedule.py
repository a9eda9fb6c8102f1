"""Cron schedules as a batch/v1 CronJob runs them (kwatt_operator.schedule).

Every expected time here is worked out by hand from the cron rules and the 2026 calendar
(1 January 2026 is a Thursday; Berlin springs forward at 01:00Z on 29 March and falls
back at 01:00Z on 25 October), not read back from the code.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from conftest import sample_trainingjob
from kwatt_operator import crd
from kwatt_operator.schedule import (
    Due,
    ScheduleError,
    due,
    next_after,
    parse_schedule,
    parse_time_zone,
)
from kwatt_operator.spec import SpecError, parse_spec


def z(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0, us: int = 0) -> datetime:
    """A UTC time; every expectation is written in UTC."""
    return datetime(y, mo, d, h, mi, s, us, tzinfo=UTC)


def chain(schedule: str, zone: str | None, start: datetime, n: int) -> list[datetime]:
    parsed = parse_schedule(schedule, zone)
    times: list[datetime] = []
    t: datetime | None = start
    for _ in range(n):
        assert t is not None
        t = next_after(parsed, t)
        assert t is not None
        times.append(t)
    return times


# --- parsing ---------------------------------------------------------------------------------


def test_every_15_minutes_runs_on_the_quarter_hours() -> None:
    assert chain("*/15 * * * *", None, z(2026, 5, 4, 10, 7), 4) == [
        z(2026, 5, 4, 10, 15),
        z(2026, 5, 4, 10, 30),
        z(2026, 5, 4, 10, 45),
        z(2026, 5, 4, 11, 0),
    ]
    # Strictly after: a scheduled time itself is not its own next time.
    assert chain("*/15 * * * *", None, z(2026, 5, 4, 10, 15), 1) == [z(2026, 5, 4, 10, 30)]
    assert chain("*/15 * * * *", None, z(2026, 5, 4, 10, 14, 59, 999999), 1) == [
        z(2026, 5, 4, 10, 15)
    ]


def test_no_zone_means_utc_and_times_come_back_in_utc() -> None:
    parsed = parse_schedule("0 9 * * *", None)
    assert parsed.time_zone == "UTC"
    berlin_morning = datetime(2026, 5, 4, 8, 0, tzinfo=parse_time_zone("Europe/Berlin"))  # 06:00Z
    result = next_after(parsed, berlin_morning)
    assert result == z(2026, 5, 4, 9) and result is not None and result.tzinfo is UTC


def test_daily_in_berlin_across_spring_forward() -> None:
    """Local midnight each day: 24 h apart, then 23 h across 29 March 2026."""
    assert chain("@daily", "Europe/Berlin", z(2026, 3, 27, 12), 4) == [
        z(2026, 3, 27, 23),  # 28 March 00:00 CET (+01:00)
        z(2026, 3, 28, 23),  # 29 March 00:00 CET, two hours before the change
        z(2026, 3, 29, 22),  # 30 March 00:00 CEST (+02:00)
        z(2026, 3, 30, 22),
    ]


def test_daily_in_berlin_across_fall_back() -> None:
    """Local midnight each day: 25 h between 25 and 26 October 2026."""
    assert chain("@midnight", "Europe/Berlin", z(2026, 10, 23, 12), 4) == [
        z(2026, 10, 23, 22),  # 24 October 00:00 CEST
        z(2026, 10, 24, 22),  # 25 October 00:00 CEST
        z(2026, 10, 25, 23),  # 26 October 00:00 CET
        z(2026, 10, 26, 23),
    ]


def test_a_time_lost_to_spring_forward_is_skipped_that_day() -> None:
    """02:30 does not exist in Berlin on 29 March 2026 (02:00 CET became 03:00 CEST);
    robfig/cron, and so CronJob, skips it rather than running at 03:00."""
    assert chain("30 2 * * *", "Europe/Berlin", z(2026, 3, 27, 12), 3) == [
        z(2026, 3, 28, 1, 30),  # 28 March 02:30 CET
        z(2026, 3, 30, 0, 30),  # 30 March 02:30 CEST: 29 March has none
        z(2026, 3, 31, 0, 30),
    ]


def test_a_repeated_time_at_fall_back_runs_for_both_instants() -> None:
    """02:30 happens twice in Berlin on 25 October 2026 (CEST, then CET an hour later);
    robfig/cron, and so CronJob, runs both."""
    assert chain("30 2 * * *", "Europe/Berlin", z(2026, 10, 24, 12), 3) == [
        z(2026, 10, 25, 0, 30),  # 02:30 CEST
        z(2026, 10, 25, 1, 30),  # 02:30 CET
        z(2026, 10, 26, 1, 30),
    ]


def test_names_ranges_and_lists() -> None:
    # 27 March 2026 is a Friday: the next weekday 09:00 is Monday the 30th.
    assert chain("0 9 * * MON-FRI", None, z(2026, 3, 27, 10), 2) == [
        z(2026, 3, 30, 9),
        z(2026, 3, 31, 9),
    ]
    assert chain("0 9 * * mon-fri", None, z(2026, 3, 27, 10), 1) == [z(2026, 3, 30, 9)]
    assert chain("0 0 1 jan,JUL *", None, z(2026, 2, 1), 2) == [z(2026, 7, 1), z(2027, 1, 1)]
    # "5/15" is "5-59/15".
    assert chain("5/15 * * * *", None, z(2026, 5, 4, 10, 50), 2) == [
        z(2026, 5, 4, 11, 5),
        z(2026, 5, 4, 11, 20),
    ]
    # Sunday is 0 (SUN); 1 March 2026 is a Sunday.
    assert chain("0 0 * * SUN", None, z(2026, 2, 28), 2) == [z(2026, 3, 1), z(2026, 3, 8)]
    assert chain("0 0 * * 0", None, z(2026, 2, 28), 1) == [z(2026, 3, 1)]


def test_day_of_month_and_day_of_week_match_either_unless_one_is_a_star() -> None:
    # Both restricted: the 12th (a Thursday in March 2026) or any Friday.
    assert chain("0 0 12 * FRI", None, z(2026, 3, 1), 3) == [
        z(2026, 3, 6),
        z(2026, 3, 12),
        z(2026, 3, 13),
    ]
    # A "?" in day-of-month is a star: Fridays only.
    assert chain("0 0 ? * FRI", None, z(2026, 3, 1), 2) == [z(2026, 3, 6), z(2026, 3, 13)]


def test_macros() -> None:
    start = z(2026, 5, 4, 10, 30)  # a Monday
    assert chain("@hourly", None, start, 1) == [z(2026, 5, 4, 11)]
    assert chain("@weekly", None, start, 1) == [z(2026, 5, 10)]  # Sunday 00:00
    assert chain("@monthly", None, start, 1) == [z(2026, 6, 1)]
    assert chain("@yearly", None, start, 1) == chain("@annually", None, start, 1) == [z(2027, 1, 1)]
    # @every counts from the time it is given, dropping the fraction of a second.
    assert chain("@every 1h30m", None, z(2026, 5, 4, 10, 0, 0, 500000), 2) == [
        z(2026, 5, 4, 11, 30),
        z(2026, 5, 4, 13, 0),
    ]


def test_leap_day_and_none_within_five_years() -> None:
    assert chain("0 0 29 2 *", None, z(2026, 1, 1), 2) == [z(2028, 2, 29), z(2032, 2, 29)]
    # 2100 is not a leap year: after 2096 the next 29 February is in 2104, past the
    # five years robfig/cron looks ahead.
    assert next_after(parse_schedule("0 0 29 2 *"), z(2096, 3, 1)) is None


@pytest.mark.parametrize(
    ("schedule", "words"),
    [
        ("0 */15 * * * *", ["6 fields", "seconds are not supported"]),
        ("*/15 * * *", ["4 fields", "five"]),
        ("soon", ["1 field,"]),
        ("TZ=Europe/Berlin 0 9 * * *", ["spec.timeZone"]),
        ("CRON_TZ=UTC 0 9 * * *", ["spec.timeZone"]),
        ("0 9 * * 7", ["day-of-week", "above 6", "SUN"]),
        ("60 * * * *", ["minute", "above 59"]),
        ("0 24 * * *", ["hour", "above 23"]),
        ("0 0 0 * *", ["day-of-month", "below 1"]),
        ("0 0 1 13 *", ["month", "above 12"]),
        ("0 9 * * FRI-MON", ["starts after it ends"]),
        ("*/0 * * * *", ["step", "is 0"]),
        ("0 9 L * *", ["'L'"]),
        ("0 9 * * MONDAY", ["'MONDAY'", "name such as MON"]),
        ("0x 9 * * *", ["minute", "'0x' where a number belongs"]),  # minutes have no names
        ("*/x 9 * * *", ["minute field has 'x'"]),
        ("0 9 1-2-3 * *", ["hyphens"]),
        ("0 9 1/2/3 * *", ["slashes"]),
        ("0 9 30 2 *", ["never run"]),
        ("0 , * * *", ["hour", "lists no value"]),
        ("@fortnightly", ["@yearly", "@every"]),
        ("@Daily", ["@daily"]),
        ("@every soon", ["Go duration"]),
    ],
)
def test_bad_schedules_are_one_sentence_naming_the_field(schedule: str, words: list[str]) -> None:
    with pytest.raises(ScheduleError) as info:
        parse_schedule(schedule, None)
    text = str(info.value)
    assert text.startswith(f"spec.schedule {schedule!r} ")
    assert text.endswith(".") and ". " not in text
    for word in words:
        assert word in text


def test_empty_schedule_is_refused() -> None:
    with pytest.raises(ScheduleError, match=r"^spec\.schedule must not be empty\.$"):
        parse_schedule("", None)


@pytest.mark.parametrize("zone", ["Mars/Olympus", "Europe", "../etc/passwd", "Europe/Berlin "])
def test_unknown_zones_are_refused(zone: str) -> None:
    with pytest.raises(ScheduleError) as info:
        parse_schedule("0 9 * * *", zone)
    text = str(info.value)
    assert text.startswith(f"spec.timeZone {zone!r} is not an IANA time zone")
    assert text.endswith(".") and ". " not in text


@pytest.mark.parametrize("zone", ["Local", "localtime", ""])
def test_the_machines_zone_is_refused(zone: str) -> None:
    with pytest.raises(ScheduleError) as info:
        parse_time_zone(zone)
    assert str(info.value).startswith("spec.timeZone ")
    assert "UTC" in str(info.value)


def test_known_zones_are_kept_by_name() -> None:
    parsed = parse_schedule("0 9 * * *", "America/New_York")
    assert parsed.time_zone == "America/New_York"
    assert parse_schedule("0 9 * * *", "America/New_York") == parsed


# --- what is due -----------------------------------------------------------------------------


def test_nothing_due_before_the_first_time() -> None:
    s = parse_schedule("*/15 * * * *")
    assert due(s, None, z(2026, 5, 4, 10, 7), z(2026, 5, 4, 10, 14)) == Due(
        None, 0, False, z(2026, 5, 4, 10, 15)
    )


def test_the_first_time_after_creation_is_due() -> None:
    s = parse_schedule("*/15 * * * *")
    assert due(s, None, z(2026, 5, 4, 10, 7), z(2026, 5, 4, 10, 15)) == Due(
        z(2026, 5, 4, 10, 15), 0, False, z(2026, 5, 4, 10, 30)
    )
    # Created exactly on a scheduled time: that time is not "after" creation.
    assert due(s, None, z(2026, 5, 4, 10, 15), z(2026, 5, 4, 10, 20)).time is None


def test_the_last_run_is_not_due_again() -> None:
    s = parse_schedule("*/15 * * * *")
    got = due(s, z(2026, 5, 4, 10, 15), z(2026, 5, 1), z(2026, 5, 4, 10, 29, 59))
    assert got == Due(None, 0, False, z(2026, 5, 4, 10, 30))


def test_after_three_hours_down_only_the_most_recent_runs() -> None:
    """Last run 09:00, back at 12:05: 09:15 ... 12:00 are unmet, 12 times; 12:00 runs and
    the 11 before it are missed."""
    s = parse_schedule("*/15 * * * *")
    got = due(s, z(2026, 5, 4, 9), z(2026, 5, 1), z(2026, 5, 4, 12, 5))
    assert got == Due(z(2026, 5, 4, 12), 11, False, z(2026, 5, 4, 12, 15))


def test_a_starting_deadline_drops_stale_times() -> None:
    s = parse_schedule("*/15 * * * *")
    last, created, now = z(2026, 5, 4, 9), z(2026, 5, 1), z(2026, 5, 4, 12, 5)
    # Within an hour: 11:15, 11:30, 11:45 and 12:00; the older ones are neither run nor counted.
    assert due(s, last, created, now, starting_deadline_s=3600) == Due(
        z(2026, 5, 4, 12), 3, False, z(2026, 5, 4, 12, 15)
    )
    assert due(s, last, created, now, starting_deadline_s=600) == Due(
        z(2026, 5, 4, 12), 0, False, z(2026, 5, 4, 12, 15)
    )
    # 12:00 is 5 minutes old: too late for a 4-minute deadline, and for 300 s exactly
    # (CronJob only starts times after now - deadline).
    for deadline in (240, 300):
        assert due(s, last, created, now, starting_deadline_s=deadline) == Due(
            None, 0, False, z(2026, 5, 4, 12, 15)
        )


def test_more_than_100_unmet_times_is_too_many_but_the_latest_still_runs() -> None:
    """Every minute, last run 10:00: at 11:41 the unmet times are 10:01 ... 11:41, 101 of
    them, which CronJob warns about; at 11:40 there are 100, which it does not."""
    s = parse_schedule("* * * * *")
    last, created = z(2026, 5, 4, 10), z(2026, 5, 1)
    assert due(s, last, created, z(2026, 5, 4, 11, 41)) == Due(
        z(2026, 5, 4, 11, 41), 100, True, z(2026, 5, 4, 11, 42)
    )
    assert due(s, last, created, z(2026, 5, 4, 11, 40)) == Due(
        z(2026, 5, 4, 11, 40), 99, False, z(2026, 5, 4, 11, 41)
    )
    assert due(s, last, created, z(2026, 5, 4, 11, 40), max_missed=50).too_many


def test_ten_years_of_missed_minutes_stay_cheap_and_a_deadline_bounds_them() -> None:
    """Created 2016-01-01 00:00, first looked at 2026-01-01 00:00:30: 3653 days (2016, 2020
    and 2024 are leap years) of minutes, 5,260,320 unmet times from 00:01 on."""
    s = parse_schedule("* * * * *")
    created, now = z(2016, 1, 1), z(2026, 1, 1, 0, 0, 30)
    assert due(s, None, created, now) == Due(z(2026, 1, 1), 5_260_319, True, z(2026, 1, 1, 0, 1))
    # With an hour's deadline: 23:01 ... 00:00, 60 times, 59 missed.
    assert due(s, None, created, now, starting_deadline_s=3600) == Due(
        z(2026, 1, 1), 59, False, z(2026, 1, 1, 0, 1)
    )


def test_weekday_catch_up_over_a_weekend_finds_friday() -> None:
    """Last run Wednesday 25 March 09:00, back on Monday 30 March 08:00: Thursday's run is
    missed and Friday's is due (CronJob's own estimate from the first interval misses it)."""
    s = parse_schedule("0 9 * * MON-FRI")
    got = due(s, z(2026, 3, 25, 9), z(2026, 3, 1), z(2026, 3, 30, 8))
    assert got == Due(z(2026, 3, 27, 9), 1, False, z(2026, 3, 30, 9))


def test_daily_in_berlin_is_due_at_local_midnight_after_spring_forward() -> None:
    s = parse_schedule("@daily", "Europe/Berlin")
    last = z(2026, 3, 28, 23)  # the run of 29 March 00:00 CET
    got = due(s, last, z(2026, 3, 1), z(2026, 3, 29, 22, 30))
    assert got == Due(z(2026, 3, 29, 22), 0, False, z(2026, 3, 30, 22))


def test_due_across_the_daylight_saving_days() -> None:
    s = parse_schedule("30 2 * * *", "Europe/Berlin")
    # Nothing was due on 29 March: its 02:30 never happened.
    assert due(s, z(2026, 3, 28, 1, 30), z(2026, 3, 1), z(2026, 3, 29, 12)) == Due(
        None, 0, False, z(2026, 3, 30, 0, 30)
    )
    # On 25 October the second 02:30 (CET) is due after the first (CEST) ran.
    assert due(s, z(2026, 10, 25, 0, 30), z(2026, 10, 1), z(2026, 10, 25, 1, 45)) == Due(
        z(2026, 10, 25, 1, 30), 0, False, z(2026, 10, 26, 1, 30)
    )


def test_every_zero_is_every_second_as_in_cronjob() -> None:
    assert parse_schedule("@every 0").every_s == 1
    assert parse_schedule("@every 1s").every_s == 1


@pytest.fixture
def tokyo_machine(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The operator's machine set to Asia/Tokyo (UTC+9): no schedule may depend on it."""
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.parametrize(
    ("schedule", "after", "expected"),
    [
        ("* * * * *", z(2026, 5, 4, 6, 0, 30), z(2026, 5, 4, 6, 1)),
        ("0 0 1 * *", z(2026, 5, 4, 6), z(2026, 6, 1)),
        ("0 0 1 6 *", z(2026, 5, 4, 6), z(2026, 6, 1)),  # steps a month at a time
        ("0 9 * * *", z(2026, 5, 4, 6), z(2026, 5, 4, 9)),
    ],
)
def test_the_machines_zone_changes_nothing(
    tokyo_machine: None, schedule: str, after: datetime, expected: datetime
) -> None:
    result = next_after(parse_schedule(schedule, None), after)
    assert result == expected and result is not None and result.tzinfo is UTC


def test_every_counts_from_the_last_run() -> None:
    s = parse_schedule("@every 90m")
    assert due(s, None, z(2026, 5, 4, 10, 0, 0, 500000), z(2026, 5, 4, 13, 10)) == Due(
        z(2026, 5, 4, 13), 1, False, z(2026, 5, 4, 14, 30)
    )
    assert due(s, z(2026, 5, 4, 13), z(2026, 5, 4, 10), z(2026, 5, 4, 13, 10)) == Due(
        None, 0, False, z(2026, 5, 4, 14, 30)
    )


def test_times_must_be_timezone_aware() -> None:
    s = parse_schedule("@hourly")
    with pytest.raises(ValueError, match="now must be a timezone-aware datetime"):
        due(s, None, z(2026, 5, 4), datetime(2026, 5, 4, 12))
    with pytest.raises(ValueError, match="created must be"):
        due(s, None, datetime(2026, 5, 4), z(2026, 5, 4, 12))
    with pytest.raises(ValueError, match="last must be"):
        due(s, datetime(2026, 5, 4, 9), z(2026, 5, 4), z(2026, 5, 4, 12))
    with pytest.raises(ValueError, match="starting_deadline_s"):
        due(s, None, z(2026, 5, 4), z(2026, 5, 4, 12), starting_deadline_s=-1)


def test_other_zones_compare_as_instants() -> None:
    """`now` in another zone is the same instant: only the schedule's zone matters."""
    s = parse_schedule("0 9 * * *", "America/New_York")  # 13:00Z in May (EDT, -04:00)
    tokyo = parse_time_zone("Asia/Tokyo")
    now = datetime(2026, 5, 5, 2, 30, tzinfo=tokyo)  # 4 May 17:30Z
    assert due(s, None, z(2026, 5, 4), now) == Due(z(2026, 5, 4, 13), 0, False, z(2026, 5, 5, 13))


# --- the spec and the CRD --------------------------------------------------------------------


def _spec_problems(**fields: Any) -> str:
    with pytest.raises(SpecError) as info:
        parse_spec(sample_trainingjob(**fields)["spec"])
    return str(info.value)


def test_spec_reads_schedule_zone_and_deadline() -> None:
    parsed = parse_spec(
        sample_trainingjob(
            schedule="0 3 * * MON-FRI", timeZone="Europe/Berlin", startingDeadlineSeconds=600
        )["spec"]
    )
    assert parsed.schedule == "0 3 * * MON-FRI"
    assert parsed.time_zone == "Europe/Berlin" and parsed.starting_deadline_seconds == 600
    plain = parse_spec(sample_trainingjob()["spec"])
    assert plain.time_zone is None and plain.starting_deadline_seconds is None


@pytest.mark.parametrize(
    ("fields", "sentence"),
    [
        ({"schedule": "0 0 3 * * *"}, "spec.schedule '0 0 3 * * *' is not a cron schedule: it"),
        ({"schedule": "0 9 * * 7"}, "spec.schedule '0 9 * * 7' is not a cron schedule: the"),
        ({"schedule": "TZ=UTC 0 9 * * *"}, "give the zone in spec.timeZone instead."),
        (
            {"schedule": "@daily", "timeZone": "Mars/Olympus"},
            "spec.timeZone 'Mars/Olympus' is not an IANA time zone",
        ),
        ({"timeZone": ""}, "spec.timeZone must be a non-empty string, got ''."),
        ({"timeZone": 1}, "spec.timeZone must be a non-empty string, got 1."),
        (
            {"startingDeadlineSeconds": -1},
            "spec.startingDeadlineSeconds must be at least 0, got -1.",
        ),
        (
            {"startingDeadlineSeconds": "10m"},
            "spec.startingDeadlineSeconds must be an integer, got '10m'.",
        ),
    ],
)
def test_spec_problems_name_the_field(fields: dict[str, Any], sentence: str) -> None:
    assert sentence in _spec_problems(**fields)


def test_a_bad_schedule_and_a_bad_zone_are_both_reported() -> None:
    text = _spec_problems(schedule="61 * * * *", timeZone="Nowhere/City")
    assert "spec.timeZone 'Nowhere/City'" in text and "spec.schedule '61 * * * *'" in text


def test_crd_declares_the_fields_as_the_parser_reads_them() -> None:
    spec = crd.openapi_schema()["properties"]["spec"]["properties"]
    assert spec["timeZone"]["type"] == "string" and "default" not in spec["timeZone"]
    deadline = spec["startingDeadlineSeconds"]
    assert deadline["type"] == "integer" and deadline["minimum"] == 0
    assert "default" not in deadline  # the parser's default is None: no deadline
    zero = parse_spec(sample_trainingjob(startingDeadlineSeconds=0)["spec"])
    assert zero.starting_deadline_seconds == 0  # allowed, as on a CronJob
