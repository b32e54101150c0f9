"""NCRONTAB schedules as the Azure Functions timer trigger reads them, and their next fire times.

The Functions host (via the .NET NCrontab library) takes six fields, seconds first::

    {second} {minute} {hour} {day} {month} {day-of-week}
    */30     *        *      *     *       *              -> every 30 seconds

Design decisions, each matching the real host so a schedule that works here works in Azure:

* Six fields are the norm; five fields (classic cron, seconds = 0) are accepted too, as NCrontab's
  fallback parse does. A ``hh:mm:ss`` TimeSpan (the App Service plan form) is an interval, see
  ``TimeSpanSchedule``.
* Day-of-month and day-of-week are combined with AND, as NCrontab does (classic Vixie cron uses OR
  when both are restricted). ``0 0 0 13 * FRI`` is "Friday the 13th", not "every 13th and every Friday".
* Day-of-week is 0-6 with 0 = Sunday; month and day names (``JAN``, ``mon``) are case-insensitive.
* Times are UTC (the host's default without ``WEBSITE_TIME_ZONE``); callers pass aware datetimes.

Errors are ``NCrontabError`` (a ``ValueError``) naming the expression, the field and the bad part, so
a typo in an app setting is found at host start and not at the first missed tick.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

__all__ = ["CronSchedule", "NCrontabError", "Schedule", "TimeSpanSchedule", "parse_schedule"]


class NCrontabError(ValueError):
    """The schedule expression is malformed; the message names the field and the offending part."""


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()  # names[i] is the alias of low + i


_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_DAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")

_FIELDS = (
    _Field("second", 0, 59),
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day", 1, 31),
    _Field("month", 1, 12, _MONTHS),
    _Field("day-of-week", 0, 6, _DAYS),
)

# A schedule that matches nothing (``0 0 0 31 2 *``) must fail fast rather than loop forever:
# every valid combination recurs within 28 years (the Gregorian weekday/leap cycle), so searching
# further proves it never fires.
_SEARCH_LIMIT = timedelta(days=366 * 28 + 7)

_TIMESPAN_RE = re.compile(r"^(?:(\d+)\.)?(\d{1,2}):(\d{2})(?::(\d{2}))?$")


class Schedule(Protocol):
    """What the host needs from a schedule: the first fire time strictly after a moment."""

    def next_after(self, moment: datetime) -> datetime: ...


def _parse_value(text: str, spec: _Field, expression: str) -> int:
    upper = text.upper()
    if spec.names and upper in spec.names:
        return spec.low + spec.names.index(upper)
    if not text.isdigit():
        raise NCrontabError(
            f"invalid {spec.name} value {text!r} in schedule {expression!r}"
            + (f" (expected {spec.low}-{spec.high} or a name like {spec.names[0]})" if spec.names else "")
        )
    value = int(text)
    if not spec.low <= value <= spec.high:
        raise NCrontabError(
            f"{spec.name} value {value} out of range {spec.low}-{spec.high} in schedule {expression!r}"
        )
    return value


def _parse_field(text: str, spec: _Field, expression: str) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        if not part:
            raise NCrontabError(f"empty list item in {spec.name} field {text!r} of schedule {expression!r}")
        base, slash, step_text = part.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) == 0:
                raise NCrontabError(
                    f"invalid step {step_text!r} in {spec.name} field {text!r} of schedule {expression!r}"
                )
            step = int(step_text)
        if base == "*":
            low, high = spec.low, spec.high
        elif "-" in base:
            first, _, last = base.partition("-")
            low = _parse_value(first, spec, expression)
            high = _parse_value(last, spec, expression)
            if low > high:
                raise NCrontabError(
                    f"range {base!r} runs backwards in {spec.name} field of schedule {expression!r}"
                )
        else:
            low = _parse_value(base, spec, expression)
            # "5/15" means "from 5 to the end, every 15" (NCrontab); a bare "5" is just 5.
            high = spec.high if slash else low
        values.update(range(low, high + 1, step))
    return frozenset(values)


@dataclass(frozen=True)
class CronSchedule:
    """A parsed NCRONTAB expression: the set of allowed values of each field."""

    expression: str
    seconds: frozenset[int]
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    days_of_week: frozenset[int]  # 0 = Sunday

    @classmethod
    def parse(cls, expression: str) -> CronSchedule:
        parts = expression.split()
        if len(parts) == 5:
            parts = ["0", *parts]
        if len(parts) != 6:
            raise NCrontabError(
                f"schedule {expression!r} has {len(parts)} fields; NCRONTAB needs 6 "
                "({second} {minute} {hour} {day} {month} {day-of-week}), e.g. '*/30 * * * * *'"
            )
        sets = [_parse_field(text, spec, expression) for text, spec in zip(parts, _FIELDS, strict=True)]
        schedule = cls(expression, *sets)
        # Fail now for schedules that can never fire (Feb 30th, Apr 31st) instead of at run time.
        schedule.next_after(datetime(2000, 1, 1, tzinfo=UTC))
        return schedule

    def _day_matches(self, moment: datetime) -> bool:
        # Python: Monday = 0 .. Sunday = 6; cron: Sunday = 0 .. Saturday = 6.
        cron_weekday = (moment.weekday() + 1) % 7
        return moment.day in self.days and moment.month in self.months and cron_weekday in self.days_of_week

    def next_after(self, moment: datetime) -> datetime:
        """The first fire time strictly after ``moment`` (aware; the result is in UTC)."""
        if moment.tzinfo is None:
            raise ValueError("next_after needs an aware datetime (the host schedules in UTC)")
        start = moment.astimezone(UTC).replace(microsecond=0) + timedelta(seconds=1)
        limit = start + _SEARCH_LIMIT
        candidate = start
        # Coarse to fine: skip whole days, then hours, minutes, seconds. Each step either advances to
        # the next unit boundary or narrows the search, so the loop is short even for sparse schedules.
        while candidate < limit:
            if not self._day_matches(candidate):
                candidate = (candidate + timedelta(days=1)).replace(hour=0, minute=0, second=0)
                continue
            if candidate.hour not in self.hours:
                candidate = (candidate + timedelta(hours=1)).replace(minute=0, second=0)
                continue
            if candidate.minute not in self.minutes:
                candidate = (candidate + timedelta(minutes=1)).replace(second=0)
                continue
            if candidate.second not in self.seconds:
                candidate += timedelta(seconds=1)
                continue
            return candidate
        raise NCrontabError(f"schedule {self.expression!r} never fires (no matching date)")

    def occurrences(self, after: datetime) -> Iterator[datetime]:
        """Successive fire times after ``after`` (for docs, tests and "next 5 runs" displays)."""
        moment = after
        while True:
            moment = self.next_after(moment)
            yield moment


@dataclass(frozen=True)
class TimeSpanSchedule:
    """``hh:mm:ss`` (or ``d.hh:mm:ss``): a fixed interval, the App Service plan alternative to cron."""

    expression: str
    interval: timedelta

    @classmethod
    def parse(cls, expression: str) -> TimeSpanSchedule:
        match = _TIMESPAN_RE.match(expression.strip())
        if not match:
            raise NCrontabError(f"invalid TimeSpan schedule {expression!r} (expected hh:mm:ss)")
        days, hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
        if hours > 23 or minutes > 59 or seconds > 59:
            raise NCrontabError(f"invalid TimeSpan schedule {expression!r}: a component is out of range")
        interval = timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
        if interval <= timedelta(0):
            raise NCrontabError(f"TimeSpan schedule {expression!r} must be positive")
        return cls(expression, interval)

    def next_after(self, moment: datetime) -> datetime:
        return moment.astimezone(UTC) + self.interval


def parse_schedule(expression: str) -> CronSchedule | TimeSpanSchedule:
    """A timer trigger ``schedule`` value (placeholders already resolved) -> a schedule."""
    text = expression.strip()
    if not text:
        raise NCrontabError("empty schedule expression")
    if ":" in text and " " not in text:
        return TimeSpanSchedule.parse(text)
    return CronSchedule.parse(text)
