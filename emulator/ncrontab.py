"""NCRONTAB schedules as the Azure Functions timer trigger reads them, and their next fire times.

The Functions host (via the .NET NCrontab library) takes six fields, seconds first::

    {second} {minute} {hour} {day} {month} {day-of-week}
    */30     *        *      *     *       *              -> every 30 seconds

The next fire times come from ``croniter`` (PyPI, pinned in requirements-dev.txt), which reads a sixth
field of seconds *first* when given ``second_at_beginning=True`` (croniter 7.0.0 README, "You can also
use seconds as first field: croniter('15,25 * * * * *', base, second_at_beginning=True)";
croniter/croniter.py ``_expand``: "move second to its own (6th) field"), and combines day-of-month and
day-of-week with AND when given ``day_or=False``, as NCrontab does (classic Vixie cron uses OR).
``0 0 0 13 * FRI`` is "Friday the 13th", not "every 13th and every Friday".

This module is the thin wrapper that keeps croniter to what NCrontab accepts, so a schedule that works
here works in Azure. Where the two differ (each case has a test in tests/unit/test_ncrontab.py):

* Field count: NCrontab takes 6 fields, or 5 (classic cron, seconds = 0) as its fallback parse; croniter
  also takes a 7th (year) field. Seven fields are refused here.
* Day-of-week: NCrontab's range is 0-6, 0 = Sunday (atifaziz/NCrontab, NCrontab/CrontabFieldImpl.cs:
  ``DayOfWeek = new(CrontabFieldKind.DayOfWeek, 0, 6, ...)``); croniter also takes 7 for Sunday. 7 is
  refused here.
* A range that runs backwards (``30-10``): NCrontab swaps its ends (NCrontab/CrontabField.cs,
  ``Accumulate``: "if the start is bigger than the end value then swap them over", i.e. 10-30);
  croniter wraps it around (30-59 and 0-10). Refused here, with the reason, rather than run a schedule
  different from Azure's.
* Extensions NCrontab does not know (``L``, ``W``, ``#``, ``?``, ``H`` hashing), which croniter accepts:
  refused here. Letters are allowed only as month and day names (``JAN``, ``mon``; case-insensitive).

A ``hh:mm:ss`` TimeSpan (the App Service plan form) is an interval, see ``TimeSpanSchedule``. Times are
UTC (the host's default without ``WEBSITE_TIME_ZONE``); callers pass aware datetimes.

Errors are ``NCrontabError`` (a ``ValueError``) naming the expression and, where one field is at fault,
the field and its text, so a typo in an app setting is found at host start and not at the first
missed tick.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from croniter import CroniterBadDateError, CroniterError, croniter

__all__ = ["CronSchedule", "NCrontabError", "Schedule", "TimeSpanSchedule", "parse_schedule"]


class NCrontabError(ValueError):
    """The schedule expression is malformed; the message names the field and the offending part."""


_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_DAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
# (name, low, high, value names) of the six NCRONTAB fields, seconds first.
_FIELDS: tuple[tuple[str, int, int, tuple[str, ...]], ...] = (
    ("second", 0, 59, ()),
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day", 1, 31, ()),
    ("month", 1, 12, _MONTHS),
    ("day-of-week", 0, 6, _DAYS),
)
_FIELD_SYNTAX = re.compile(r"^[0-9A-Za-z*,/-]+$")
_TIMESPAN_RE = re.compile(r"^(?:(\d+)\.)?(\d{1,2}):(\d{2})(?::(\d{2}))?$")


class Schedule(Protocol):
    """What the host needs from a schedule: the first fire time strictly after a moment."""

    def next_after(self, moment: datetime) -> datetime: ...


def _value(text: str, low: int, names: tuple[str, ...]) -> int | None:
    """A field value as a number (names included), or None when it is not one (croniter judges it)."""
    if text.isdigit():
        return int(text)
    return low + names.index(text.upper()) if text.upper() in names else None


def _check_field(text: str, index: int, expression: str) -> None:
    """What NCrontab refuses and croniter would accept (see the module docstring)."""
    name, low, high, names = _FIELDS[index]

    def bad(reason: str) -> NCrontabError:
        return NCrontabError(f"{name} field {text!r} of schedule {expression!r}: {reason}")

    if not _FIELD_SYNTAX.match(text):
        raise bad("NCRONTAB allows only digits, names, '*', ',', '-' and '/'")
    for word in re.findall(r"[A-Za-z]+", text):
        if word.upper() not in names:
            raise bad(f"{word!r} is not a {name} name" if names else f"{word!r} is not a number")
    for item in text.split(","):
        if not item:
            raise bad("empty list item")
        base, slash, step = item.partition("/")
        if slash and not (step.isdigit() and int(step) > 0):
            raise bad(f"invalid step {step!r} (a positive number)")
        ends = [_value(end, low, names) for end in base.split("-")] if base != "*" else []
        if any(end is not None and not low <= end <= high for end in ends):
            raise bad(f"value out of range {low}-{high}")
        if len(ends) == 2 and ends[0] is not None and ends[1] is not None and ends[0] > ends[1]:
            raise bad("the range runs backwards (NCrontab swaps its ends, croniter wraps it around: write it low-high)")


@dataclass(frozen=True)
class CronSchedule:
    """A valid NCRONTAB expression; croniter computes its fire times."""

    expression: str
    fields: tuple[str, ...]  # always six, seconds first

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
        for index, text in enumerate(parts):
            _check_field(text, index, expression)
        schedule = cls(expression, tuple(parts))
        for index, text in enumerate(parts):
            # Name the field croniter refuses: the field alone, every other field '*'.
            alone = " ".join(text if i == index else "*" for i in range(6))
            try:
                croniter(alone, second_at_beginning=True)
            except CroniterError as error:
                name = _FIELDS[index][0]
                reason = re.sub(r"^\[[^\]]*\]\s*", "", str(error))  # croniter quotes its own (reordered) fields
                raise NCrontabError(
                    f"{name} field {text!r} of schedule {expression!r} is not valid NCRONTAB ({reason})"
                ) from None
        # Fail now for schedules that can never fire (Feb 30th, Apr 31st) instead of at run time.
        schedule.next_after(datetime(2000, 1, 1, tzinfo=UTC))
        return schedule

    def next_after(self, moment: datetime) -> datetime:
        """The first fire time strictly after ``moment`` (aware; the result is in UTC)."""
        if moment.tzinfo is None:
            raise ValueError("next_after needs an aware datetime (the host schedules in UTC)")
        try:
            found = croniter(
                " ".join(self.fields), moment.astimezone(UTC), day_or=False, second_at_beginning=True
            ).get_next(datetime)
        except CroniterBadDateError:
            raise NCrontabError(f"schedule {self.expression!r} never fires (no matching date)") from None
        assert isinstance(found, datetime)
        return found.astimezone(UTC)

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
