"""The timer trigger: NCRONTAB schedules with seconds (``emulator.ncrontab``), in UTC.

``period_seconds`` overrides every schedule with a fixed period (demos, tests). A timer never runs
concurrently with itself: when a firing comes while the previous invocation still runs, the firing is
skipped and logged (the real host holds a singleton lock per timer function), and the next invocation
gets ``past_due=True`` because an occurrence was missed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from azure.functions.decorators.function_app import Function
from azure.functions.timer import TimerRequest

from emulator.funchost.core import HostedFunction, HostStartupError, Invocation, Runtime, log
from emulator.funchost.environment import resolve_placeholders
from emulator.ncrontab import NCrontabError, Schedule, parse_schedule


@dataclass
class TimerFunction(HostedFunction):
    schedule_text: str = ""
    run_on_startup: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)  # the singleton lock
    missed: bool = False  # an occurrence was skipped or missed: the next run is past due


class TimerTrigger:
    """Every ``timerTrigger`` function of the app: one scheduler thread each, one worker per run."""

    binding_type = "timerTrigger"
    input_hint: str | None = None

    def __init__(self, runtime: Runtime, period_seconds: float | None) -> None:
        self._runtime = runtime
        self._period = period_seconds
        self._functions: dict[str, TimerFunction] = {}

    def add(self, function: Function, name: str, trigger: Any, env: Mapping[str, str]) -> None:
        schedule_text = resolve_placeholders(trigger.schedule, env, f"function {name} schedule")
        try:
            parse_schedule(schedule_text)
        except NCrontabError as error:
            raise HostStartupError(f"function {name}: {error}") from None
        run_on_startup = bool(getattr(trigger, "run_on_startup", False))
        self._functions[name] = TimerFunction(function, name, "timer", trigger.name, schedule_text, run_on_startup)

    def names(self) -> list[str]:
        return list(self._functions)

    def clear(self) -> None:
        self._functions.clear()

    def start(self) -> None:
        for timer in self._functions.values():
            self._runtime.spawn(f"timer:{timer.name}", self._run, timer)

    def fire(self, name: str, input: str | None) -> Invocation:  # noqa: A002 - the admin API's name
        """Fire now and wait; a timer already running is skipped (the singleton lock), as a scheduled firing."""
        invocation = self._fire(self._functions[name], datetime.now(UTC), wait=True)
        assert invocation is not None  # wait=True always reports the invocation
        return invocation

    def _run(self, timer: TimerFunction) -> None:
        schedule = parse_schedule(timer.schedule_text)
        stop = self._runtime.stop
        if timer.run_on_startup:
            self._fire(timer, datetime.now(UTC), wait=False)
        began_wall, began_mono, firings = datetime.now(UTC), time.monotonic(), 0
        last = began_wall
        while not stop.is_set():
            if self._period is not None:
                # Fixed period on the monotonic clock: firing k is at start + k * period, so a slow
                # invocation does not shift every later firing.
                firings += 1
                if stop.wait(max(0.0, began_mono + firings * self._period - time.monotonic())):
                    return
                scheduled = began_wall + timedelta(seconds=firings * self._period)
            else:
                scheduled = self._next_due(timer, schedule, last)
                last = scheduled
                if stop.wait(max(0.0, (scheduled - datetime.now(UTC)).total_seconds())):
                    return
            self._fire(timer, scheduled, wait=False)

    @staticmethod
    def _next_due(timer: TimerFunction, schedule: Schedule, last: datetime) -> datetime:
        """The next occurrence after ``last``; after a stall (suspended machine, long GC) the latest
        missed one, flagged past due, instead of replaying every one of them back to back."""
        scheduled = schedule.next_after(last)
        now = datetime.now(UTC)
        while (following := schedule.next_after(scheduled)) <= now:
            scheduled = following
            timer.missed = True
        return scheduled

    def _fire(self, timer: TimerFunction, scheduled: datetime, *, wait: bool) -> Invocation | None:
        if not timer.lock.acquire(blocking=False):
            # The singleton lock: the previous invocation still runs, so this occurrence is missed.
            timer.missed = True
            skipped = Invocation(
                timer.name,
                "timer",
                datetime.now(UTC),
                0.0,
                "skipped",
                "previous invocation still running",
                {"scheduled": scheduled.isoformat()},
            )
            self._runtime.record(skipped, quiet=True)
            log.warning(
                "function %s: skipped the %s firing, the previous run is still going", timer.name, scheduled.isoformat()
            )
            return skipped
        past_due, timer.missed = timer.missed, False
        schedule_status = {
            "Last": scheduled.isoformat(),
            "Next": self._next_time(timer, scheduled).isoformat(),
            "LastUpdated": datetime.now(UTC).isoformat(),
        }
        request = TimerRequest(past_due=past_due, schedule_status=schedule_status, schedule={"AdjustForDST": True})
        outcome: list[Invocation] = []

        def run() -> None:
            try:
                detail = {"scheduled": scheduled.isoformat(), "past_due": past_due}
                outcome.append(self._runtime.invoke(timer, request, detail)[0])
            finally:
                timer.lock.release()

        if wait:
            run()
            return outcome[0]
        # The invocation runs on its own thread so the scheduler keeps time (and can see the lock).
        self._runtime.spawn_worker(f"run:{timer.name}", run)
        return None

    def _next_time(self, timer: TimerFunction, after: datetime) -> datetime:
        if self._period is not None:
            return after + timedelta(seconds=self._period)
        return parse_schedule(timer.schedule_text).next_after(after)
