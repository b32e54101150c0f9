"""The emulator's clock (emulator/clock.py): real time by default; a clock that skips idle time only moves
forward, wakes its waiters when it jumps, and refills the throttling budgets by its own time."""

from __future__ import annotations

import math
import threading
import time

import pytest

from emulator.arm.budgets import ReadBuckets, ReadLimit, Throttle, TokenBucket
from emulator.arm.fleet import Fleet
from emulator.clock import REAL_TIME, Clock, SkipClock


def test_the_skip_clock_runs_at_real_speed_plus_its_jumps_and_never_goes_back() -> None:
    clock = SkipClock()
    real0, virtual0 = time.time(), clock.time()
    assert abs(virtual0 - real0) < 1  # no jump yet: real time
    assert clock.advance(300) == 300 and clock.offset == 300
    assert clock.time() - time.time() == pytest.approx(300, abs=1)
    assert clock.monotonic() - time.monotonic() == pytest.approx(300, abs=1)
    assert clock.now().timestamp() == pytest.approx(time.time() + 300, abs=1)
    for bad in (-1.0, math.nan):
        with pytest.raises(ValueError, match="only moves forward"):
            clock.advance(bad)
    assert clock.offset == 300


def test_a_jump_wakes_a_waiter_at_the_virtual_time_it_waits_for() -> None:
    clock = SkipClock()
    stop = threading.Event()
    due = clock.monotonic() + 120  # two minutes of virtual time
    woke: list[tuple[bool, float]] = []
    waiter = threading.Thread(target=lambda: woke.append((clock.wait_until(due, stop), clock.monotonic())))
    waiter.start()
    clock.advance(60)  # half way: still waiting
    waiter.join(0.2)
    assert waiter.is_alive() and not woke
    clock.advance(60)
    waiter.join(5)
    assert not waiter.is_alive()
    stopped, at = woke[0]
    assert stopped is False and at >= due  # woken by the jump, not after two real minutes


def test_a_stop_wakes_a_waiter_of_the_skip_clock() -> None:
    clock = SkipClock()
    stop = threading.Event()
    woke: list[bool] = []
    waiter = threading.Thread(target=lambda: woke.append(clock.wait_until(clock.monotonic() + 3600, stop)))
    waiter.start()
    stop.set()
    clock.wake()
    waiter.join(5)
    assert woke == [True]


def test_real_time_is_the_default_everywhere() -> None:
    assert not REAL_TIME.skips and type(REAL_TIME) is Clock
    assert Fleet().clock is REAL_TIME
    assert TokenBucket().clock is time.monotonic
    stop = threading.Event()
    started = time.monotonic()
    assert REAL_TIME.wait_until(time.monotonic() + 0.05, stop) is False
    assert time.monotonic() - started >= 0.05  # a real wait


def test_the_write_budget_refills_by_the_virtual_time() -> None:
    clock = SkipClock()
    bucket = Throttle(capacity=2, per_minute=4).new_bucket(clock.monotonic)
    assert bucket.take() == 0 and bucket.take() == 0
    wait = bucket.take()
    assert wait == pytest.approx(15, abs=0.1)  # 4 a minute: one token every 15 s
    clock.advance(15)
    assert bucket.take() == 0  # refilled by the jump, not by 15 real seconds
    assert bucket.take() > 0


def test_the_read_budget_refills_by_the_virtual_time() -> None:
    clock = SkipClock()
    reads = ReadBuckets(ReadLimit(capacity=3, per_second=1), clock.monotonic)
    for _ in range(3):
        reads.spend("sub", "westeurope")
    with pytest.raises(Exception, match="exceeded the limit"):
        reads.spend("sub", "westeurope")
    clock.advance(2)
    assert reads.spend("sub", "westeurope") is not None  # two tokens back after two virtual seconds
    reads.spend("sub", "westeurope")
    with pytest.raises(Exception, match="exceeded the limit"):
        reads.spend("sub", "westeurope")
