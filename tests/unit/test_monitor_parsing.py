"""The emulator's Azure Monitor parts that need no server: the query parameters of Metrics - List
(emulator/arm/monitor.py) and the per-request records instances keep (emulator/telemetry.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from emulator.arm.monitor import parse_duration, parse_filter, parse_timespan
from emulator.telemetry import TWIN_CONF, AccessLogReader, RequestLog, RequestRecord, parse_access_line

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("PT1M", timedelta(minutes=1)),
        ("PT6H", timedelta(hours=6)),
        ("P1D", timedelta(days=1)),
        ("P1DT12H30M", timedelta(days=1, hours=12, minutes=30)),
        ("pt1.5s", timedelta(seconds=1.5)),
    ],
)
def test_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "P", "PT", "1M", "PT1X", "P1W"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_timespans_in_every_iso_form() -> None:
    start, end = datetime(2021, 4, 20, 9, tzinfo=UTC), datetime(2021, 4, 20, 14, tzinfo=UTC)
    # The form of the specification's example, with milliseconds.
    assert parse_timespan("2021-04-20T09:00:00.000Z/2021-04-20T14:00:00.000Z", NOW, timedelta(hours=1)) == (start, end)
    assert parse_timespan("2021-04-20T09:00:00Z/PT5H", NOW, timedelta(hours=1)) == (start, end)
    assert parse_timespan("PT5H/2021-04-20T14:00:00+00:00", NOW, timedelta(hours=1)) == (start, end)
    assert parse_timespan("PT1H", NOW, timedelta(days=1)) == (NOW - timedelta(hours=1), NOW)
    assert parse_timespan(None, NOW, timedelta(days=1)) == (NOW - timedelta(days=1), NOW)


@pytest.mark.parametrize(
    "text", ["yesterday", "2021-04-20T14:00:00Z/2021-04-20T09:00:00Z", "2021-04-20/", "/PT1H", "PT1H/PT2H"]
)
def test_bad_timespans(text: str) -> None:
    with pytest.raises(ValueError, match="timespan"):
        parse_timespan(text, NOW, timedelta(hours=1))


def test_filters() -> None:
    assert parse_filter("VMName eq '*'") == {"vmname": {"*"}}
    assert parse_filter("VMName eq 'a' or VMName eq 'b'") == {"vmname": {"a", "b"}}
    assert parse_filter("BackendIPAddress eq '*' and BackendPort eq '80'") == {
        "backendipaddress": {"*"},
        "backendport": {"80"},
    }
    assert parse_filter(None) == {} and parse_filter("  ") == {}


@pytest.mark.parametrize(
    "text", ["VMName ne 'a'", "VMName eq a", "VMName eq 'a' or LUN eq '0'", "startswith(VMName, 'a')"]
)
def test_bad_filters(text: str) -> None:
    with pytest.raises(ValueError):
        parse_filter(text)


def test_access_lines_in_the_twins_format() -> None:
    assert "$request_time" in TWIN_CONF and "log_format twin_signals" in TWIN_CONF
    assert parse_access_line("1767268800.123 502 0.004 78 157") == RequestRecord(1767268800.123, 502, 0.004, 78, 157)
    assert parse_access_line("1767268800.123 502 0.004 78") is None  # torn
    assert parse_access_line('127.0.0.1 - - [01/Jan/2026] "GET / HTTP/1.1" 200 612') is None  # combined format


def test_the_reader_takes_whole_lines_and_starts_over_on_a_new_file(tmp_path: Path) -> None:
    log_file = tmp_path / "twin-signals.log"
    records = RequestLog()
    reader = AccessLogReader(log_file, records)
    reader.ingest()  # no file yet
    log_file.write_text("1.0 200 0.001 10 20\n2.0 500 0.002 10 20\n3.0 200")
    reader.ingest()
    assert [r.at for r in records.between(0, 10)] == [1.0, 2.0]
    with log_file.open("a") as handle:
        handle.write(" 0.003 10 20\n")
    reader.ingest()
    assert [r.status for r in records.between(0, 10)] == [200, 500, 200]
    assert [r.at for r in records.between(2.0, 3.0)] == [2.0]  # [start, end)
    reader.forget()
    log_file.write_text("4.0 200 0.001 1 2\n")  # a re-laid disk: a new, shorter file
    reader.ingest()
    assert [r.at for r in records.between(0, 10)] == [1.0, 2.0, 3.0, 4.0]
