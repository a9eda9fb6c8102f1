"""Cron schedules as Kubernetes' CronJob reads and runs them, as pure functions of `now`.

kwatt's `spec.schedule`, `spec.timeZone` and `spec.startingDeadlineSeconds` mean what
they mean on a batch/v1 CronJob, so this is a port of what CronJob runs: robfig/cron
v3's `ParseStandard` and `SpecSchedule.Next`, and the controller's
`mostRecentScheduleTime`. The cron libraries on PyPI do otherwise (croniter 7 and
cronsim 2.8 accept six fields, 7 for Sunday, `L` and `#`, and run a time lost to
spring-forward at 03:00; cronsim has no `@daily` and runs the repeated autumn time
once), and a schedule that fires at other times than the same CronJob would is a bug
a user cannot see.

What follows CronJob, on purpose:

- Exactly five fields, minute hour day-of-month month day-of-week, with `*`, `?`,
  lists, ranges, steps (`5/15` is `5-59/15`) and the names JAN-DEC and SUN-SAT;
  day-of-week is 0-6 (7 is refused, as CronJob does). A six-field schedule (with
  seconds) is refused: `ParseStandard` has no seconds field.
- The macros @yearly, @annually, @monthly, @weekly, @daily, @midnight, @hourly, and
  `@every <Go duration>` (counted from the last run, or from creation).
- A day-of-month and a day-of-week that are both restricted match either; when one
  of them is `*`, `?` or `*/1`, a day must match both (`0 0 ? * FRI`: Fridays only).
- `TZ=` and `CRON_TZ=` in the schedule are refused: the zone goes in spec.timeZone.
- Daylight saving time: times are wall-clock times in the zone. A time that does not
  exist (02:30 on a spring-forward day in Berlin) is skipped that day, and one that
  exists twice (02:30 on the fall-back day) runs twice, once for each instant.

What does not: CronJob's API accepts a schedule that can never fire (`0 0 30 2 *`,
an empty list) and its controller then only reports InvalidSchedule; kwatt refuses
it up front. With no spec.timeZone, CronJob uses the kube-controller-manager's local
zone, which users cannot see and which differs between clusters; kwatt uses UTC, so
a schedule means the same wherever the operator runs. Where robfig/cron never
returns (a day skipped whole, as Samoa's 30 December 2011) this moves on, and `due`
finds the most recent time exactly where CronJob estimates it (see there).

All times come back in UTC: Python compares and subtracts two datetimes of one
ZoneInfo zone by wall clock, which is wrong across a DST change.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from fractions import Fraction
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DEFAULT_TIME_ZONE = "UTC"
DEFAULT_MAX_MISSED = 100  # CronJob's limit before it warns "too many missed start times"
MACROS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")

_SECOND = timedelta(seconds=1)
_MINUTE = timedelta(minutes=1)
_HOUR = timedelta(hours=1)
# Go's strings.Fields splits on unicode.IsSpace, which is narrower than str.split().
_GO_SPACE = re.compile("[\t\n\v\f\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+")
_GO_INT = re.compile(r"[+-]?[0-9]+")  # strconv.Atoi: a sign, then ASCII digits only
_GO_DURATION = re.compile(r"([0-9]*(?:\.[0-9]*)?)(ns|us|µs|μs|ms|s|m|h)")
_GO_UNITS_NS = {"ns": 1, "us": 10**3, "µs": 10**3, "μs": 10**3, "ms": 10**6}
_GO_UNITS_NS |= {"s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}
_ZONE_PART = re.compile(r"[A-Za-z.\-_0-9+]{1,14}")  # Kubernetes' check of a timeZone's parts
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_MONTH_NAMES = {name: i + 1 for i, name in enumerate(_MONTHS)}
_DAY_NAMES = {name: i for i, name in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))}
_DAYS_IN_MONTH = (0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)  # February as in leap years
_FIELDS: tuple[tuple[str, int, int, dict[str, int] | None], ...] = (
    ("minute", 0, 59, None),
    ("hour", 0, 23, None),
    ("day-of-month", 1, 31, None),
    ("month", 1, 12, _MONTH_NAMES),
    ("day-of-week", 0, 6, _DAY_NAMES),
)


class ScheduleError(ValueError):
    """A schedule or time zone CronJob would not run; the message is one sentence."""


_Bad = Callable[[str], ScheduleError]  # builds the one sentence from the reason


@dataclass(frozen=True)
class Schedule:
    """A parsed schedule: one bit per allowed value of each field, as robfig/cron keeps it."""

    text: str
    time_zone: str
    minutes: int = 0
    hours: int = 0
    days_of_month: int = 0
    months: int = 0
    days_of_week: int = 0
    dom_star: bool = False  # a `*` or `?` in day-of-month: day fields AND, not OR
    dow_star: bool = False
    every_s: int | None = None  # @every: seconds between runs, counted from the last one
    tz: tzinfo = field(default=UTC, repr=False, compare=False)


@dataclass(frozen=True)
class Due:
    """What is due at `now`: the run to start (if any), what was skipped, when to look again."""

    time: datetime | None  # the most recent unmet scheduled time, in UTC; None: nothing due
    missed: int  # unmet scheduled times before `time` that will not run
    too_many: bool  # more than max_missed unmet times: CronJob warns, still starts `time`
    next: datetime | None  # the next scheduled time after now, in UTC; None: none in 5 years


def parse_time_zone(time_zone: str | None) -> tzinfo:
    """The zone of spec.timeZone (UTC when unset), checked as Kubernetes checks CronJob's."""
    if time_zone is None:
        return UTC
    if not time_zone:
        raise ScheduleError("spec.timeZone must not be empty; leave it out for UTC.")
    if time_zone.lower() in ("local", "localtime"):
        raise ScheduleError(
            f"spec.timeZone {time_zone!r} would be the machine's own zone; name an IANA zone "
            "such as Europe/Berlin, or leave spec.timeZone out for UTC."
        )
    unknown = ScheduleError(
        f"spec.timeZone {time_zone!r} is not an IANA time zone known here "
        "(such as Europe/Berlin, America/New_York or UTC)."
    )
    for part in time_zone.split("/"):
        if part in (".", "..") or part.startswith("-") or not _ZONE_PART.fullmatch(part):
            raise unknown
    try:
        return ZoneInfo(time_zone)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise unknown from None


def parse_schedule(schedule: str, time_zone: str | None = None) -> Schedule:
    """Parse spec.schedule in spec.timeZone as CronJob does; ScheduleError otherwise."""
    tz = parse_time_zone(time_zone)
    zone = DEFAULT_TIME_ZONE if time_zone is None else time_zone
    if not schedule:
        raise ScheduleError("spec.schedule must not be empty.")
    if "TZ" in schedule:  # Kubernetes refuses any schedule that contains TZ
        raise ScheduleError(
            f"spec.schedule {schedule!r} sets a time zone (TZ= or CRON_TZ=), which CronJob "
            "refuses; give the zone in spec.timeZone instead."
        )

    def bad(reason: str) -> ScheduleError:
        return ScheduleError(f"spec.schedule {schedule!r} is not a cron schedule: {reason}.")

    if schedule.startswith("@"):
        return _macro(schedule, zone, tz, bad)
    fields = [f for f in _GO_SPACE.split(schedule) if f]
    if len(fields) != 5:
        seconds = ", and seconds are not supported" if len(fields) == 6 else ""
        raise bad(
            f"it has {len(fields)} field{'s' if len(fields) != 1 else ''}, not the five of "
            f"minute hour day-of-month month day-of-week{seconds}"
        )
    parsed: list[tuple[int, bool]] = []
    for text, (name, low, high, names) in zip(fields, _FIELDS, strict=True):
        bits, star = _field(text, name, low, high, names, bad)
        if not bits:
            raise bad(f"the {name} field {text!r} lists no value, so it would never run")
        parsed.append((bits, star))
    (minutes, _), (hours, _), (dom, dom_star), (months, _), (dow, dow_star) = parsed
    result = Schedule(schedule, zone, minutes, hours, dom, months, dow, dom_star, dow_star, tz=tz)
    if (dom_star or dow_star) and not any(
        dom & ((2 << _DAYS_IN_MONTH[m]) - 1) for m in range(1, 13) if months >> m & 1
    ):
        raise bad("no month it allows has a day it allows, so it would never run")
    return result


def _macro(schedule: str, zone: str, tz: tzinfo, bad: _Bad) -> Schedule:
    """The @-forms of robfig/cron's parseDescriptor, matched exactly (case and spaces count)."""
    every = "@every "
    if schedule.startswith(every):
        return Schedule(schedule, zone, every_s=_every_seconds(schedule[len(every) :], bad), tz=tz)
    if schedule not in MACROS:
        raise bad(f"the macros are {', '.join(MACROS)} and @every <duration>")
    days = _all(1, 31)
    dom, month, dow, hour = days, _all(1, 12), _all(0, 6), 1  # @daily / @midnight
    if schedule in ("@yearly", "@annually"):
        dom, month = 1 << 1, 1 << 1
    elif schedule == "@monthly":
        dom = 1 << 1
    elif schedule == "@weekly":
        dow = 1  # Sunday
    elif schedule == "@hourly":
        hour = _all(0, 23)
    return Schedule(
        schedule,
        zone,
        minutes=1,
        hours=hour,
        days_of_month=dom,
        months=month,
        days_of_week=dow,
        dom_star=dom == days,
        dow_star=dow == _all(0, 6),
        tz=tz,
    )


def _every_seconds(text: str, bad: _Bad) -> int:
    """A Go duration (`90m`, `1h30m`, `1.5h`), as robfig's Every keeps it: whole seconds, >= 1."""
    body = text[1:] if text[:1] in ("+", "-") else text
    negative = text[:1] == "-"
    if body == "0":
        return 1
    pos, total = 0, Fraction(0)
    while pos < len(body):
        match = _GO_DURATION.match(body, pos)
        if match is None or match.group(1) in ("", "."):
            raise bad(f"@every takes a Go duration such as 90m or 1h30m, not {text!r}")
        total += Fraction(match.group(1)) * _GO_UNITS_NS[match.group(2)]
        pos = match.end()
    if not body or total >= 2**63:
        raise bad(f"@every takes a Go duration such as 90m or 1h30m, not {text!r}")
    nanoseconds = -int(total) if negative else int(total)
    return max(1, nanoseconds // 10**9)


def _field(
    text: str, name: str, low: int, high: int, names: dict[str, int] | None, bad: _Bad
) -> tuple[int, bool]:
    """One field's bits and whether it holds a `*`, as robfig/cron's getField reads it."""
    bits, star = 0, False
    for expr in (part for part in text.split(",") if part):  # empty list items are dropped
        range_and_step = expr.split("/")
        low_high = range_and_step[0].split("-")
        this_star = low_high[0] in ("*", "?")
        if this_star:  # robfig reads "*-5" as "*": what follows the star is ignored
            start, end = low, high
        elif len(low_high) > 2:
            raise bad(f"the {name} range {expr!r} has too many hyphens")
        else:
            start = _number(low_high[0], name, names, bad)
            end = _number(low_high[-1], name, names, bad)
        step = 1
        if len(range_and_step) > 2:
            raise bad(f"the {name} step {expr!r} has too many slashes")
        if len(range_and_step) == 2:
            step = _number(range_and_step[1], name, None, bad)
            if len(low_high) == 1:
                end = high  # "5/15" means "5-59/15"
            if step > 1:
                this_star = False
        if start < low:
            raise bad(f"the {name} value {start} in {expr!r} is below {low}")
        if end > high:
            hint = " (Sunday is 0 or SUN)" if name == "day-of-week" and end == 7 else ""
            raise bad(f"the {name} value {end} in {expr!r} is above {high}{hint}")
        if start > end:
            raise bad(f"the {name} range {expr!r} starts after it ends")
        if step == 0:
            raise bad(f"the {name} step in {expr!r} is 0")
        bits |= sum(1 << i for i in range(start, end + 1, step))
        star = star or this_star
    return bits, star


def _number(text: str, name: str, names: dict[str, int] | None, bad: _Bad) -> int:
    if names is not None and text.lower() in names:
        return names[text.lower()]
    if not _GO_INT.fullmatch(text):
        kind = "a number or a name such as MON or JAN" if names is not None else "a number"
        raise bad(f"the {name} field has {text!r} where {kind} belongs")
    value = int(text)
    if value < 0 or value >= 2**63:
        raise bad(f"the {name} field has {text!r}, which is out of range")
    return value


def _all(low: int, high: int) -> int:
    return sum(1 << i for i in range(low, high + 1))


def _utc(moment: datetime, name: str) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime.")
    return moment.astimezone(UTC)


def next_after(schedule: Schedule, after: datetime) -> datetime | None:
    """The first scheduled time after `after` (whole seconds, in UTC), or None if there is
    none within five years; robfig/cron's SpecSchedule.Next, step for step."""
    t = _utc(after, "after").replace(microsecond=0) + _SECOND
    if schedule.every_s is not None:  # ConstantDelaySchedule: drop the fraction, add the delay
        return t - _SECOND + timedelta(seconds=schedule.every_s)
    tz = schedule.tz
    added = False  # whether a field has moved on (then the smaller ones start from zero)
    year_limit = t.astimezone(tz).year + 5
    while True:  # robfig's WRAP label: recheck every field from the month down
        local = t.astimezone(tz)
        if local.year > year_limit:
            return None
        wrapped = False
        while not schedule.months >> local.month & 1:
            if not added:
                added = True
                local = _go_date(tz, local.year, local.month, 1).astimezone(tz)
            t = _add_date(tz, local, months=1)
            local = t.astimezone(tz)
            if local.month == 1:
                wrapped = True
                break
        if wrapped:
            continue
        while not _day_matches(schedule, local):
            if not added:
                added = True
                local = _go_date(tz, local.year, local.month, local.day).astimezone(tz)
            t = _add_date(tz, local, days=1)
            local = t.astimezone(tz)
            if local.hour != 0:  # midnight did not exist (DST at 00:00): robfig's fix-up
                shift = 24 - local.hour if local.hour > 12 else -local.hour
                t += timedelta(hours=shift)
                local = t.astimezone(tz)
            if local.day == 1:
                wrapped = True
                break
        if wrapped:
            continue
        while not schedule.hours >> local.hour & 1:
            if not added:
                added = True
                t = _go_date(tz, local.year, local.month, local.day, local.hour)
            t += _HOUR  # absolute hours: a spring-forward hour never shows up, a repeated one twice
            local = t.astimezone(tz)
            if local.hour == 0:
                wrapped = True
                break
        if wrapped:
            continue
        while not schedule.minutes >> local.minute & 1:
            if not added:
                added = True
                t = t.replace(second=0)  # Go's Truncate(time.Minute) counts in UTC
            t += _MINUTE
            local = t.astimezone(tz)
            if local.minute == 0:
                wrapped = True
                break
        if wrapped:
            continue
        while local.second != 0:  # the seconds field of a five-field schedule is 0
            added = True
            t += _SECOND
            local = t.astimezone(tz)
            if local.second == 0:
                wrapped = True
                break
        if wrapped:
            continue
        return t


def _add_date(tz: tzinfo, local: datetime, months: int = 0, days: int = 0) -> datetime:
    """Go's t.AddDate(0, months, days), except that it always moves forward: where the
    target day was skipped whole (Samoa's 30 December 2011) Go's Date lands on `local`
    again and robfig/cron loops forever; here the next day that exists is taken."""
    clock = (local.hour, local.minute, local.second)
    moved = _go_date(tz, local.year, local.month + months, local.day + days, *clock)
    while moved <= local:  # compared as instants: the two have different tzinfo
        days += 1
        moved = _go_date(tz, local.year, local.month + months, local.day + days, *clock)
    return moved


def _day_matches(schedule: Schedule, local: datetime) -> bool:
    dom = bool(schedule.days_of_month >> local.day & 1)
    dow = bool(schedule.days_of_week >> (local.weekday() + 1) % 7 & 1)  # Go: Sunday is 0
    if schedule.dom_star or schedule.dow_star:
        return dom and dow
    return dom or dow


def _go_date(
    tz: tzinfo, year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    """Go's time.Date: overflowing months and days roll over, and a wall time that does
    not exist or exists twice gets the offset Go's lookup gives it (robfig relies on it)."""
    year, month = year + (month - 1) // 12, (month - 1) % 12 + 1
    wall = datetime(year, month, 1, tzinfo=UTC) + timedelta(
        days=day - 1, hours=hour, minutes=minute, seconds=second
    )
    offset = wall.astimezone(tz).utcoffset() or timedelta(0)  # the zone at "wall as if UTC"
    utc = wall - offset
    actual = utc.astimezone(tz).utcoffset() or timedelta(0)
    if actual != offset:  # wall - offset lies in another period: take that period's offset
        utc = wall - actual
    return utc


def due(
    schedule: Schedule,
    last: datetime | None,
    created: datetime,
    now: datetime,
    *,
    starting_deadline_s: int | None = None,
    max_missed: int = DEFAULT_MAX_MISSED,
) -> Due:
    """What CronJob's controller would start at `now`: the most recent scheduled time after
    `last` (the last scheduled run, or `created` before any), if any, and what it skipped.

    As in CronJob, only the most recent unmet time runs; the ones before it are counted
    in `missed` and never run. A starting deadline drops times older than
    now - starting_deadline_s (neither run nor counted), which bounds the catch-up after
    downtime. `too_many` is CronJob's warning: more than max_missed unmet times, the one
    that starts included (so 100 skipped plus 1 started warns at the default 100).
    Unlike CronJob, which estimates the most recent time from the first interval (and can
    miss it for schedules like 0 9 * * 1-5), `time` is exact; `missed` is exact unless
    `too_many`, where it is at least max_missed and otherwise CronJob's estimate.
    """
    now_u = _utc(now, "now")
    earliest = _utc(last, "last") if last is not None else _utc(created, "created")
    if starting_deadline_s is not None:
        if starting_deadline_s < 0:
            raise ValueError("starting_deadline_s must be at least 0.")
        earliest = max(earliest, now_u - timedelta(seconds=starting_deadline_s))
    if schedule.every_s is not None:
        return _due_every(schedule.every_s, earliest, now_u, max_missed)
    first = next_after(schedule, earliest)
    if first is None or first > now_u:
        return Due(None, 0, False, first)
    unmet, recent, following = 0, first, next_after(schedule, first)
    while True:
        unmet += 1
        if following is None or following > now_u:
            return Due(recent, unmet - 1, unmet > max_missed, following)
        if unmet > max_missed:
            break
        recent, following = following, next_after(schedule, following)
    # Too many to walk through one by one (a long outage, a wrong clock): jump to the end.
    latest = _most_recent(schedule, following, now_u)
    step = (next_after(schedule, first) or now_u) - first
    estimate = (now_u - first) // step + 1 if step > timedelta(0) else 0
    missed = max(estimate, unmet + 1) - 1
    return Due(latest, missed, True, next_after(schedule, latest))


def _due_every(every_s: int, earliest: datetime, now: datetime, max_missed: int) -> Due:
    """@every runs at earliest + k * delay (after dropping the fraction of a second)."""
    delay = timedelta(seconds=every_s)
    first = earliest.replace(microsecond=0) + delay
    if first > now:
        return Due(None, 0, False, first)
    skipped = (now - first) // delay
    time = first + skipped * delay
    return Due(time, skipped, skipped + 1 > max_missed, time + delay)


def _most_recent(schedule: Schedule, floor: datetime, now: datetime) -> datetime:
    """The last scheduled time <= now, given one (`floor`) that is: look back from now in
    windows that double, so a years-long gap costs a few dozen steps, not millions."""
    width = _MINUTE
    recent = floor
    while now - width > floor:
        found = next_after(schedule, now - width)
        if found is not None and found <= now:
            recent = found
            break
        width *= 2
    following = next_after(schedule, recent)
    while following is not None and following <= now:
        recent, following = following, next_after(schedule, following)
    return recent
