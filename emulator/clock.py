"""The emulator's clock: real time (the default everywhere), or a clock that **skips idle time**.

``SkipClock``: virtual time = real time + an offset that only grows, by jumps (``advance``) that whoever drives it
makes when nothing is computing. While anything computes the clock runs at real speed, so work costs what it
costs; an idle wait of minutes costs nothing. Two processes share one virtual time by applying the same jumps to
their own ``SkipClock`` (CLOCK_REALTIME and CLOCK_MONOTONIC are system-wide on Linux): the ARM emulator
(``python -m emulator serve --skip-clock``, jumped through its admin API ``POST /_admin/clock``) and the benchmark's
controller process (``bench/clockdriver.py``).

Everything time-based in the ARM emulator reads its ``Clock``: an operation's upgrade delay (``wait_until``,
woken by a jump), the timestamps it renders and logs (``now``), the throttling budgets' refill (``monotonic``).
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime


class Clock:
    """Real time: ``time.monotonic``, ``time.time``, ``datetime.now(UTC)`` and ``Event.wait``."""

    skips = False

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.time(), UTC)

    def wait_until(self, deadline: float, stop: threading.Event) -> bool:
        """Wait until ``monotonic() >= deadline``; True when ``stop`` was set first (or is set)."""
        return stop.wait(max(0.0, deadline - self.monotonic())) or stop.is_set()

    def wake(self) -> None:
        """Wake the waiters of ``wait_until`` (they check their stop event). Real time: they wake themselves."""


class SkipClock(Clock):
    """Real time plus ``offset``, which grows only by ``advance`` (a jump over idle time)."""

    skips = True

    def __init__(self) -> None:
        self._offset = 0.0
        self._changed = threading.Condition()

    @property
    def offset(self) -> float:
        return self._offset

    def monotonic(self) -> float:
        return time.monotonic() + self._offset

    def time(self) -> float:
        return time.time() + self._offset

    def advance(self, seconds: float) -> float:
        """Jump ``seconds`` ahead (never back); wakes every ``wait_until``. Returns the new offset."""
        if not seconds >= 0:  # also refuses NaN
            raise ValueError(f"the clock only moves forward: advance({seconds!r})")
        with self._changed:
            self._offset += seconds
            self._changed.notify_all()
            return self._offset

    def wait_until(self, deadline: float, stop: threading.Event) -> bool:
        with self._changed:
            while not stop.is_set():
                remaining = deadline - self.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(remaining)  # at real speed, unless a jump or wake() comes first
            return True

    def wake(self) -> None:
        with self._changed:
            self._changed.notify_all()


REAL_TIME = Clock()
