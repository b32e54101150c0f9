"""What an emulated instance really did, for the emulator's Azure Monitor endpoints (``emulator.arm.monitor``).

Each runtime that serves keeps a record of every request it answered (``RequestRecord``: when, status,
how long, bytes in and out) and says how much CPU time it has used so far:

* ``NginxRuntime``: nginx writes one extra access log, ``/var/log/nginx/twin-signals.log``, in
  ``TWIN_LOG_FORMAT`` (a ``log_format``/``access_log`` pair the twin adds to the launch copy of the
  instance's config, inside Debian's ``http { include /etc/nginx/conf.d/*.conf; }``); CPU time is the
  sum of ``utime + stime`` of the sandbox's processes (``/proc/<pid>/stat``).
* ``SyntheticRuntime``: its page handler records each answer and the thread CPU time it spent.

Nothing here is invented: a figure the instance did not produce is absent, never a made-up zero.
"""

from __future__ import annotations

import collections
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

# nginx variables (https://nginx.org/en/docs/http/ngx_http_log_module.html and
# https://nginx.org/en/docs/http/ngx_http_core_module.html#variables): $msec is the time of the log
# write in seconds with millisecond resolution, $request_time the request processing time in seconds
# with millisecond resolution, $request_length the request's length (request line, header and body),
# $bytes_sent the bytes sent to the client.
TWIN_LOG_FORMAT = "$msec $status $request_time $request_length $bytes_sent"
TWIN_LOG_NAME = "twin-signals.log"
TWIN_CONF_NAME = "zz-twin-signals.conf"
TWIN_CONF = (
    "# Added by the twin to the launch copy only: per-request records for the emulator's Azure Monitor endpoints.\n"
    f"log_format twin_signals '{TWIN_LOG_FORMAT}';\n"
    f"access_log /var/log/nginx/{TWIN_LOG_NAME} twin_signals;\n"
)
MAX_RECORDS = 20_000  # per instance; the oldest are dropped first


@dataclass(frozen=True, slots=True)
class RequestRecord:
    at: float  # epoch seconds when the answer was sent
    status: int
    seconds: float  # request processing time
    bytes_in: int
    bytes_out: int


def parse_access_line(line: str) -> RequestRecord | None:
    """One line of ``TWIN_LOG_FORMAT`` -> a record; None for anything else (a torn last line)."""
    parts = line.split()
    if len(parts) != 5:
        return None
    try:
        return RequestRecord(
            at=float(parts[0]),
            status=int(parts[1]),
            seconds=float(parts[2]),
            bytes_in=int(parts[3]),
            bytes_out=int(parts[4]),
        )
    except ValueError:
        return None


class RequestLog:
    """A bounded, thread-safe list of ``RequestRecord`` in arrival order."""

    def __init__(self, limit: int = MAX_RECORDS) -> None:
        self._records: collections.deque[RequestRecord] = collections.deque(maxlen=limit)
        self._lock = threading.Lock()

    def add(self, record: RequestRecord) -> None:
        with self._lock:
            self._records.append(record)

    def between(self, start: float, end: float) -> list[RequestRecord]:
        """The records with ``start <= at < end``."""
        with self._lock:
            return [r for r in self._records if start <= r.at < end]


class AccessLogReader:
    """Reads an nginx access log in ``TWIN_LOG_FORMAT`` incrementally into a ``RequestLog``.

    Only whole lines are taken; a log that got shorter (the disk was re-laid) is read again from the start."""

    def __init__(self, path: Path, log: RequestLog) -> None:
        self.path = path
        self.log = log
        self._offset = 0
        self._lock = threading.Lock()

    def ingest(self) -> None:
        with self._lock:
            try:
                size = self.path.stat().st_size
            except OSError:
                self._offset = 0
                return
            if size < self._offset:
                self._offset = 0
            if size == self._offset:
                return
            with self.path.open("rb") as handle:
                handle.seek(self._offset)
                data = handle.read(size - self._offset)
            complete = data.rfind(b"\n") + 1
            for line in data[:complete].decode(errors="replace").splitlines():
                record = parse_access_line(line)
                if record is not None:
                    self.log.add(record)
            self._offset += complete

    def forget(self) -> None:
        """The file is about to be removed: read what it has, then start over on the next file."""
        self.ingest()
        with self._lock:
            self._offset = 0


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def process_cpu_seconds(pids: list[int]) -> float:
    """utime + stime of ``pids`` (``/proc/<pid>/stat`` fields 14 and 15), in seconds; gone pids count 0."""
    total = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()  # after the command name, which may contain spaces
        total += int(fields[11]) + int(fields[12])  # fields 14 and 15 of the whole line
    return total / _CLOCK_TICKS


@runtime_checkable
class ObservableRuntime(Protocol):
    """A runtime the emulator's monitor endpoints can read."""

    def requests_between(self, start: float, end: float) -> list[RequestRecord]:
        """Every request answered with ``start <= at < end`` (epoch seconds)."""
        ...

    def cpu_seconds(self) -> float | None:
        """CPU time used so far (it may restart from 0 when the service restarts); None: not known."""
        ...
