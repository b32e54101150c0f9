"""NCRONTAB parsing and next-fire times, table-driven (emulator/ncrontab.py).

The expected times are worked out by hand from the calendar (2026-03-06 is a Friday), not computed by
the code under test.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from emulator.ncrontab import CronSchedule, NCrontabError, TimeSpanSchedule, parse_schedule


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


FRIDAY = utc(2026, 3, 6, 10, 15, 7)  # Friday 2026-03-06 10:15:07 UTC

NEXT_CASES = [
    # (expression, after, expected next fire time)
    ("*/30 * * * * *", FRIDAY, utc(2026, 3, 6, 10, 15, 30)),
    ("*/30 * * * * *", utc(2026, 3, 6, 10, 15, 30), utc(2026, 3, 6, 10, 16, 0)),  # strictly after
    ("* * * * * *", FRIDAY, utc(2026, 3, 6, 10, 15, 8)),
    ("0 * * * * *", FRIDAY, utc(2026, 3, 6, 10, 16, 0)),
    ("15,45 * * * * *", FRIDAY, utc(2026, 3, 6, 10, 15, 15)),
    ("10-12 * * * * *", utc(2026, 3, 6, 10, 15, 11), utc(2026, 3, 6, 10, 15, 12)),
    ("10-12 * * * * *", utc(2026, 3, 6, 10, 15, 12), utc(2026, 3, 6, 10, 16, 10)),
    ("0-30/10 * * * * *", utc(2026, 3, 6, 10, 15, 21), utc(2026, 3, 6, 10, 15, 30)),
    ("0-30/10 * * * * *", utc(2026, 3, 6, 10, 15, 30), utc(2026, 3, 6, 10, 16, 0)),
    ("5/20 * * * * *", utc(2026, 3, 6, 10, 15, 26), utc(2026, 3, 6, 10, 15, 45)),  # from 5, every 20
    ("0 */5 * * * *", FRIDAY, utc(2026, 3, 6, 10, 20, 0)),
    ("0 0 * * * *", FRIDAY, utc(2026, 3, 6, 11, 0, 0)),
    ("0 30 9 * * *", FRIDAY, utc(2026, 3, 7, 9, 30, 0)),  # today's 09:30 has passed
    ("0 0 9-17 * * 1-5", utc(2026, 3, 6, 17, 0, 0), utc(2026, 3, 9, 9, 0, 0)),  # Fri evening -> Mon
    ("0 0 0 * * SUN", FRIDAY, utc(2026, 3, 8, 0, 0, 0)),
    ("0 0 0 * * 0", FRIDAY, utc(2026, 3, 8, 0, 0, 0)),
    ("0 0 12 * * mon,wed", FRIDAY, utc(2026, 3, 9, 12, 0, 0)),
    ("0 0 0 1 * *", FRIDAY, utc(2026, 4, 1, 0, 0, 0)),
    ("0 0 0 1 JAN *", FRIDAY, utc(2027, 1, 1, 0, 0, 0)),
    ("0 0 0 1 jan-mar *", FRIDAY, utc(2027, 1, 1, 0, 0, 0)),
    ("0 0 0 29 2 *", FRIDAY, utc(2028, 2, 29, 0, 0, 0)),  # next leap day
    ("0 0 0 31 * *", utc(2026, 3, 31, 0, 0, 1), utc(2026, 5, 31, 0, 0, 0)),  # April has no 31st
    # Day-of-month AND day-of-week, as NCrontab combines them: the next Friday the 13th.
    ("0 0 0 13 * FRI", FRIDAY, utc(2026, 3, 13, 0, 0, 0)),
    ("0 0 0 13 * FRI", utc(2026, 3, 13, 0, 0, 0), utc(2026, 11, 13, 0, 0, 0)),
    ("59 59 23 31 12 *", FRIDAY, utc(2026, 12, 31, 23, 59, 59)),
    # Five fields: classic cron, seconds implied 0.
    ("*/5 * * * *", FRIDAY, utc(2026, 3, 6, 10, 20, 0)),
]


@pytest.mark.parametrize(("expression", "after", "expected"), NEXT_CASES)
def test_next_fire_time(expression: str, after: datetime, expected: datetime) -> None:
    assert CronSchedule.parse(expression).next_after(after) == expected


def test_sub_second_moments_round_up_to_the_next_whole_second() -> None:
    schedule = CronSchedule.parse("* * * * * *")
    assert schedule.next_after(utc(2026, 3, 6, 10, 15, 7) + timedelta(microseconds=999_000)) == utc(
        2026, 3, 6, 10, 15, 8
    )


def test_other_time_zones_are_converted_to_utc() -> None:
    plus_two = timezone(timedelta(hours=2))
    after = datetime(2026, 3, 6, 12, 15, 7, tzinfo=plus_two)  # = 10:15:07 UTC
    assert CronSchedule.parse("0 0 11 * * *").next_after(after) == utc(2026, 3, 6, 11, 0, 0)


def test_occurrences_list_successive_fire_times() -> None:
    times = CronSchedule.parse("*/20 * * * * *").occurrences(FRIDAY)
    assert [next(times) for _ in range(4)] == [
        utc(2026, 3, 6, 10, 15, 20),
        utc(2026, 3, 6, 10, 15, 40),
        utc(2026, 3, 6, 10, 16, 0),
        utc(2026, 3, 6, 10, 16, 20),
    ]


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        CronSchedule.parse("* * * * * *").next_after(datetime(2026, 3, 6))


INVALID_CASES = [
    # (expression, fragment the error message must contain)
    ("* * * *", "has 4 fields"),
    ("* * * * * * *", "has 7 fields"),  # croniter alone reads a 7th field as the year
    ("60 * * * * *", "second field '60' of schedule '60 * * * * *': value out of range 0-59"),
    ("* 60 * * * *", "minute field '60'"),
    ("* * 24 * * *", "hour field '24' of schedule '* * 24 * * *': value out of range 0-23"),
    ("* * * 0 * *", "day field '0' of schedule '* * * 0 * *': value out of range 1-31"),
    ("* * * * 13 *", "month field '13' of schedule '* * * * 13 *': value out of range 1-12"),
    ("* * * * * 7", "day-of-week field '7' of schedule '* * * * * 7': value out of range 0-6"),  # croniter: Sunday
    ("*/0 * * * * *", "second field '*/0' of schedule '*/0 * * * * *': invalid step '0'"),
    ("*/x * * * * *", "second field '*/x' of schedule '*/x * * * * *': 'x' is not a number"),
    ("0 */0 * * * *", "minute field '*/0' of schedule '0 */0 * * * *': invalid step '0'"),
    ("30-10 * * * * *", "runs backwards"),  # NCrontab swaps the ends, croniter wraps around
    ("1,,2 * * * * *", "second field '1,,2' of schedule '1,,2 * * * * *': empty list item"),
    ("1-2-3 * * * * *", "second field '1-2-3' of schedule '1-2-3 * * * * *' is not valid NCRONTAB"),
    ("* * * * FOO *", "'FOO' is not a month name"),
    ("* * * * * FUNDAY", "'FUNDAY' is not a day-of-week name"),
    ("a * * * * *", "second field 'a' of schedule 'a * * * * *': 'a' is not a number"),
    ("0 0 0 30 2 *", "never fires"),
    ("", "empty schedule"),
    # croniter's extensions that NCrontab does not know: last day, nth weekday, '?', hashed values.
    ("0 0 0 L * *", "'L' is not a number"),
    ("0 0 0 * * 5#3", "day-of-week field '5#3'"),
    ("0 0 0 ? * *", "day field '?'"),
    ("H * * * * *", "'H' is not a number"),
]


@pytest.mark.parametrize(("expression", "message"), INVALID_CASES)
def test_invalid_expressions_are_reported_clearly(expression: str, message: str) -> None:
    with pytest.raises(NCrontabError) as raised:
        parse_schedule(expression)
    assert message in str(raised.value)
    if expression:
        assert repr(expression) in str(raised.value)  # the message names the expression


TIMESPAN_CASES = [
    ("00:00:30", timedelta(seconds=30)),
    ("01:00:00", timedelta(hours=1)),
    ("1.02:03:04", timedelta(days=1, hours=2, minutes=3, seconds=4)),
    ("00:05", timedelta(minutes=5)),
]


@pytest.mark.parametrize(("expression", "interval"), TIMESPAN_CASES)
def test_timespan_schedules_are_intervals(expression: str, interval: timedelta) -> None:
    schedule = parse_schedule(expression)
    assert isinstance(schedule, TimeSpanSchedule)
    assert schedule.next_after(FRIDAY) == FRIDAY + interval


@pytest.mark.parametrize("expression", ["00:00:00", "25:00:00", "00:61:00", "1:2:3:4"])
def test_invalid_timespans_are_refused(expression: str) -> None:
    with pytest.raises(NCrontabError, match="TimeSpan"):
        parse_schedule(expression)


def test_croniter_alone_differs_from_ncrontab_where_the_wrapper_refuses() -> None:
    """Why emulator/ncrontab.py checks fields itself: croniter (second_at_beginning, day_or=False)
    accepts these and runs them, where NCrontab refuses them or reads them otherwise."""
    from croniter import croniter

    def fires(expression: str) -> datetime:
        found = croniter(expression, FRIDAY, day_or=False, second_at_beginning=True).get_next(datetime)
        assert isinstance(found, datetime)
        return found

    assert fires("0 0 0 * * 7") == utc(2026, 3, 8)  # 7 = Sunday for croniter; NCrontab's range is 0-6
    assert fires("0 0 0 L * *") == utc(2026, 3, 31)  # last day of the month: no such syntax in NCrontab
    assert fires("0 0 0 1 1 * 2030") == utc(2030, 1, 1)  # a 7th field, the year
    # A backwards range wraps around in croniter (NCrontab swaps the ends: 10-30).
    assert fires("30-10 * * * * *") == utc(2026, 3, 6, 10, 15, 8)


def test_day_of_month_and_day_of_week_combine_with_and_unlike_croniters_default() -> None:
    from croniter import croniter

    after = utc(2026, 3, 6, 10, 15, 7)
    # croniter's default (OR): the 14th or any Friday, so the next Friday.
    assert croniter("0 0 0 14 * FRI", after, second_at_beginning=True).get_next(datetime) == utc(2026, 3, 13)
    assert CronSchedule.parse("0 0 0 14 * FRI").next_after(after) == utc(2026, 8, 14)  # Friday the 14th
