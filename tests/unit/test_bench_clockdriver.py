"""The shared clock's driver (bench/clockdriver.py): when the next tick starts, where the idle clock may jump,
and the driver jumping both sides to each emulator event, letting its work finish, then on to the tick."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bench.clockdriver import (
    Driver,
    EmulatorClock,
    default_look_delay,
    jump_target,
    next_tick_at,
    next_timer_tick,
)
from bench.perf import _next_look
from emulator.clock import SkipClock


def test_the_timer_fires_on_multiples_of_its_period() -> None:
    assert next_timer_tick(1000.0, 30) == 1020.0
    assert next_timer_tick(1020.0, 30) == 1050.0  # strictly after: a tick at 1020 just ran
    assert next_timer_tick(1049.9, 30) == 1050.0


def test_a_next_look_comes_first_only_when_it_is_earlier_than_the_timer() -> None:
    assert next_tick_at(1000.0, 30, None, 0) == (1020.0, "timer")
    assert next_tick_at(1000.0, 30, 1010.0, 0) == (1010.0, "next look")
    assert next_tick_at(1000.0, 30, 1010.0, 5) == (1015.0, "next look")  # delivered 5 s late
    assert next_tick_at(1000.0, 30, 1010.0, 15) == (1020.0, "timer")  # late enough that the timer wins
    assert next_tick_at(1000.0, 30, 1030.0, 0) == (1020.0, "timer")
    assert next_tick_at(1000.0, 30, 990.0, 0) == (1000.0, "next look")  # already due: at once


def test_the_clock_jumps_to_the_earlier_of_the_wake_time_and_the_emulators_next_event() -> None:
    idle = EmulatorClock(now=100.0, offset=0.0, next_event_in=None, in_flight=0)
    assert jump_target(100.0, 130.0, idle) == (130.0, False)
    event = EmulatorClock(now=100.0, offset=0.0, next_event_in=12.0, in_flight=0)
    assert event.next_event == 112.0
    assert jump_target(100.5, 130.0, event) == (112.0, True)
    later = EmulatorClock(now=100.0, offset=0.0, next_event_in=45.0, in_flight=0)
    assert jump_target(100.0, 130.0, later) == (130.0, False)


def test_the_look_delay_is_host_jsons_max_polling_interval_or_zero(tmp_path: Path) -> None:
    host = tmp_path / "host.json"
    host.write_text(json.dumps({"extensions": {"queues": {"batchSize": 16}}}))
    assert default_look_delay(host) == 0.0
    host.write_text(json.dumps({"extensions": {"queues": {"maxPollingInterval": "00:00:02"}}}))
    assert default_look_delay(host) == 2.0
    host.write_text(json.dumps({"extensions": {"queues": {"maxPollingInterval": "00:01:00.500"}}}))
    assert default_look_delay(host) == 60.5
    host.write_text(json.dumps({"extensions": {"queues": {"maxPollingInterval": 2000}}}))  # 1.x: milliseconds
    assert default_look_delay(host) == 2.0
    host.write_text(json.dumps({"extensions": {"queues": {"maxPollingInterval": "soon"}}}))
    with pytest.raises(ValueError, match="TimeSpan"):
        default_look_delay(host)
    # This repository's host.json sets 2 s (the engine's own next looks are delayed queue messages).
    assert default_look_delay() == 2.0


def test_the_next_look_is_read_when_the_outcome_has_one() -> None:
    class Old:  # an outcome of a product without next looks
        pass

    class New:
        def __init__(self, look: datetime | None) -> None:
            self.next_look = look

    at = datetime(2026, 1, 1, 12, 0, 30, tzinfo=UTC)
    assert _next_look(Old()) is None
    assert _next_look(New(None)) is None
    assert _next_look(New(at)) == at.timestamp()


class FakeEmulator:
    """The emulator's clock API: its own skip clock, operations due at virtual times, and each one's work in
    flight for a few polls once due (its applies)."""

    def __init__(self, due_in: list[float], work_polls: int = 3) -> None:
        self.clock = SkipClock()
        start = self.clock.time()
        self.events = sorted(start + d for d in due_in)
        self.work_polls = work_polls
        self.working: list[int] = []  # polls left per event being worked on
        self.finished: list[tuple[float, float]] = []  # (due, virtual time its work ended)
        self.due: dict[int, float] = {}

    def state(self) -> EmulatorClock:
        now = self.clock.time()
        while self.events and self.events[0] <= now:
            self.due[len(self.working)] = self.events.pop(0)
            self.working.append(self.work_polls)
        for i, left in enumerate(self.working):
            if left > 0:
                self.working[i] = left - 1
                if left == 1:
                    self.finished.append((self.due[i], now))
        nxt = (self.events[0] - now) if self.events else None
        return EmulatorClock(now, self.clock.offset, nxt, sum(1 for w in self.working if w > 0))

    def advance(self, seconds: float) -> EmulatorClock:
        assert not any(self.working), "jumped while work was in flight"
        self.clock.advance(seconds)
        return self.state()


def test_the_driver_jumps_to_each_event_lets_its_work_finish_then_jumps_to_the_tick() -> None:
    emu = FakeEmulator(due_in=[120.0, 125.0, 600.0])
    ours = SkipClock()
    driver = Driver(ours, emu, poll_s=0.0)
    started = time.monotonic()
    tick = ours.time() + 300
    driver.sleep_until(tick)
    assert time.monotonic() - started < 5  # five virtual minutes in (much) less than real ones
    assert ours.time() >= tick and ours.time() - tick < 1
    assert ours.offset == pytest.approx(emu.clock.offset)  # both sides jumped alike
    # The two events before the tick: each reached by a jump, its work done before the next jump.
    assert [due for due, _ in emu.finished] == sorted(due for due, _ in emu.finished) and len(emu.finished) == 2
    assert all(0 <= ended - due < 1 for due, ended in emu.finished)
    assert driver.stats.event_jumps == 2 and driver.stats.jumps == 3
    assert driver.stats.jumped_s == pytest.approx(300, abs=1)
    assert emu.events and emu.events[0] > ours.time()  # the event after the tick still waits


def test_the_driver_does_not_jump_backwards_or_past_a_time_already_reached() -> None:
    emu = FakeEmulator(due_in=[])
    ours = SkipClock()
    driver = Driver(ours, emu, poll_s=0.0)
    driver.sleep_until(ours.time() - 10)
    assert driver.stats.jumps == 0 and ours.offset == 0


def test_the_makespan_of_a_run_on_the_shared_clock_counts_its_next_looks_and_skipped_time() -> None:
    from bench.makespan import analyse_makespan
    from bench.perf import ControllerRun

    t0 = 1_800_000_010.0  # 10 s after a timer start (a multiple of 30)
    # The canary written at once, ready after 120 + 300 s; one batch written at 430, ready at 550, the end at 560.
    run = ControllerRun(
        instances=2,
        phase="Succeeded",
        seconds=4.0,
        tick_wall_s=[0.1, 0.1, 0.1],
        tick_cpu_s=[0.1, 0.1, 0.1],
        peak_rss_mib=50,
        peak_threads=3,
        release_started_at=t0,
        tick_log=[(t0 + 130, t0 + 130.1), (t0 + 430, t0 + 430.1), (t0 + 560, t0 + 560.1)],
        events=[("PhaseChanged", t0 + 560.05, "Promoting -> Succeeded")],
        upgrades=[(t0 + 0.5, 202, ["0"]), (t0 + 430.05, 202, ["1"])],
        tick_why=["timer", "next look", "next look"],
        next_looks=[None, t0 + 430, t0 + 550, None],
        next_look_supported=True,
        clock={"jumps": 5, "jumped_s": 555.0, "event_jumps": 2, "settle_s": 0.1},
    )
    span = analyse_makespan(run)
    assert span.timings == (120.0, 300, 30.0) and span.lower_bound_s == 120 + 300 + 120
    assert span.makespan_s == pytest.approx(560.05) and span.batches == 1
    assert span.next_look_ticks == 2 and span.next_look_supported and span.skipped_s == 555.0
    assert span.wall_s == 4.0 and span.start_phase_s == pytest.approx(10.0)
    assert [s.name for s in span.steps] == ["canary", "batch 1"]
    assert span.steps[0].lost_s == pytest.approx(430.05 - 420.5)
