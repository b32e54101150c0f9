"""The shared clock of the makespan benchmark (``bench/makespan.py``): the emulator and the controller on one
virtual time that runs at real speed while anything computes and skips the idle waits.

Both processes keep a ``emulator.clock.SkipClock`` (virtual = real time + an offset) and apply the same jumps:
the emulator through its admin API (``POST /_admin/clock {"advance": s}``, started with ``--skip-clock``), the
controller process to its own. The ``Driver`` lives in the controller process, whose ticks it schedules: between
ticks it jumps the clock to the earliest of the next tick and the emulator's next pending event (an operation
due to finish), and after a jump to an event it lets the emulator finish that work (its applies) before it
decides the next jump. Ticks run at real speed: their compute counts in virtual time at 1x.

When ticks happen (``next_tick_at``): the shipped timer's schedule (``ROLLOUT_TICK_SCHEDULE``, ``*/30 * * * * *``:
every 30 s on the wall clock's :00 and :30; a tick that overruns a start skips it, as the timer's singleton lock
does), and, when honoured, the engine's own earlier next look (``Outcome.next_look``: the service-clock time at
which something is due) plus its delivery delay. In Azure that look is a tick-queue message with a visibility
delay, and a queue trigger picks up a message within its polling interval: up to host.json's
``extensions.queues.maxPollingInterval``, 1 minute when unset (MicrosoftDocs/azure-docs,
articles/azure-functions/functions-bindings-storage-queue.md, host.json settings: "The default value of
maxPollingInterval is 00:01:00 (1 min)"; the interval grows exponentially up to it while polls find nothing:
Azure/azure-webjobs-sdk issue 2967). The benchmark's
default delay is the ``maxPollingInterval`` this repository's host.json sets, else 0 (``default_look_delay``):
it sets none today, so a next look is taken as delivered on time; pass another delay to model a late pick-up.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from emulator.clock import SkipClock

HOST_JSON = Path(__file__).resolve().parents[1] / "host.json"


def default_look_delay(host_json: Path = HOST_JSON) -> float:
    """Seconds: host.json's ``extensions.queues.maxPollingInterval`` (a TimeSpan ``[d.]hh:mm:ss[.fff]``, or
    milliseconds as Functions 1.x wrote it) when it sets one, else 0."""
    queues = json.loads(host_json.read_text()).get("extensions", {}).get("queues", {})
    value = queues.get("maxPollingInterval")
    if value is None:
        return 0.0
    if isinstance(value, int | float):
        return float(value) / 1000.0
    m = re.fullmatch(r"(?:(\d+)\.)?(\d+):(\d+):(\d+(?:\.\d+)?)", str(value).strip())
    if m is None:
        raise ValueError(f"{host_json}: maxPollingInterval {value!r} is not a TimeSpan")
    days, hours, minutes, seconds = m.groups()
    return int(days or 0) * 86400 + int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def next_timer_tick(now: float, period: float) -> float:
    """The timer's next start after ``now`` (epoch seconds): the next multiple of ``period``, as a cron
    schedule of every ``period`` seconds fires on the wall clock (``*/30``: :00 and :30)."""
    return (math.floor(now / period) + 1) * period


def next_tick_at(now: float, period: float, next_look: float | None, delay: float) -> tuple[float, str]:
    """When the next tick starts and why ("timer" or "next look"): the timer's next start, or the engine's next
    look delivered ``delay`` later when that comes first (at once when it is already due)."""
    timer = next_timer_tick(now, period)
    if next_look is not None and next_look + delay < timer:
        return max(now, next_look + delay), "next look"
    return timer, "timer"


@dataclass(frozen=True)
class EmulatorClock:
    """What the emulator's admin API says of its clock (``GET /_admin/clock``)."""

    now: float  # epoch seconds, virtual
    offset: float
    next_event_in: float | None  # seconds until its next waiting operation is due
    in_flight: int  # operations due whose applies are not handed over yet, applies running

    @property
    def next_event(self) -> float | None:
        return None if self.next_event_in is None else self.now + self.next_event_in


def jump_target(now: float, wake_at: float, state: EmulatorClock) -> tuple[float, bool]:
    """Where the idle clock may jump from ``now`` on the way to ``wake_at``: the earlier of ``wake_at`` and the
    emulator's next event; True when that is the event (whose work must then finish before the next jump)."""
    event = state.next_event
    if event is not None and event < wake_at:
        return max(now, event), True
    return wake_at, False


class ClockApi(Protocol):
    """The emulator's clock over its admin API (``bench.armprocess.ArmProcess.admin``)."""

    def state(self) -> EmulatorClock: ...

    def advance(self, seconds: float) -> EmulatorClock: ...


class AdminClockApi:
    """``ClockApi`` through an admin call ``admin(method, path, body) -> JSON``."""

    def __init__(self, admin: Callable[[str, str, Any], Any]) -> None:
        self._admin = admin

    @staticmethod
    def _state(body: object) -> EmulatorClock:
        if not isinstance(body, dict) or not body.get("skips"):
            raise RuntimeError(f"the emulator does not skip idle time (start it with --skip-clock): {body!r}")
        nxt = body.get("next_event_in")
        return EmulatorClock(
            float(body["now"]), float(body["offset"]), None if nxt is None else float(nxt), int(body["in_flight"])
        )

    def state(self) -> EmulatorClock:
        return self._state(self._admin("GET", "clock", None))

    def advance(self, seconds: float) -> EmulatorClock:
        return self._state(self._admin("POST", "clock", {"advance": seconds}))


@dataclass
class DriverStats:
    jumps: int = 0
    jumped_s: float = 0.0  # virtual seconds skipped
    event_jumps: int = 0  # jumps that ended at an emulator event
    settle_s: float = 0.0  # real seconds spent letting the emulator finish its work after a jump


class Driver:
    """Moves the shared clock: ``sleep_until(at)`` from the controller's side, jumping idle time."""

    def __init__(self, clock: SkipClock, emulator: ClockApi, *, poll_s: float = 0.002, settle_timeout_s: float = 120):
        self.clock = clock
        self.emulator = emulator
        self.poll_s = poll_s
        self.settle_timeout_s = settle_timeout_s
        self.stats = DriverStats()

    def advance(self, seconds: float) -> None:
        """Jump both clocks by ``seconds``; they must agree afterwards (both started at offset 0)."""
        theirs = self.emulator.advance(seconds).offset
        ours = self.clock.advance(seconds)
        if abs(theirs - ours) > 1e-6:
            raise RuntimeError(f"the shared clock diverged: emulator offset {theirs}, controller offset {ours}")
        self.stats.jumps += 1
        self.stats.jumped_s += seconds

    def settle(self) -> EmulatorClock:
        """The emulator's clock once no work is in flight (polling at real speed: that time counts)."""
        started = time.monotonic()
        state = self.emulator.state()
        while state.in_flight:
            if time.monotonic() - started > self.settle_timeout_s:
                raise TimeoutError(f"the emulator still has {state.in_flight} pieces of work in flight")
            time.sleep(self.poll_s)
            state = self.emulator.state()
        self.stats.settle_s += time.monotonic() - started
        return state

    def sleep_until(self, at: float) -> None:
        """Return once the shared clock reads ``at`` (epoch seconds) or later, with the emulator idle: each step
        jumps to the earlier of ``at`` and the emulator's next event, then lets that event's work finish."""
        while True:
            state = self.settle()
            now = self.clock.time()
            if now >= at:
                return
            target, is_event = jump_target(now, at, state)
            step = target - self.clock.time()
            if step > 0:
                self.advance(step)
                self.stats.event_jumps += int(is_event)
            elif is_event:
                time.sleep(self.poll_s)  # the event is due this instant: the emulator is handing it over
