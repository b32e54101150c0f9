"""Makespan against its lower bound, and rollback latency (issue 13), part of ``bench/perf.py``.

The emulator in its own process, synthetic instances, the product's controller in a process of its own
(``bench.perf.run_controller``), at the issue's **real timings**: upgrades take 120 s, the bake 300 s, the shipped
timer (``ROLLOUT_TICK_SCHEDULE``, ``*/30 * * * * *``) ticks every 30 s, batches of 20%. They run on a **shared
clock that skips idle time** (``emulator/clock.py``, ``bench/clockdriver.py``): virtual time = real time + an
offset that both processes add; it runs at real speed while anything computes (a tick, the emulator's applies),
and the driver in the controller process jumps it, when both sides are idle, to the earlier of the next tick and
the emulator's next pending event (an upgrade due to finish). A tick's own compute therefore counts at 1x against
the real timings, and a rollout of 17 minutes of virtual time takes seconds to a couple of minutes of wall time.
The queue hop of the fan-out (timer -> queue -> ``advance_target``) is not in the loop.

Each size runs twice when the product asks for its own next looks (``Outcome.next_look``; read with ``getattr``,
so a product without it runs the timer-only pass alone): **timer only** (next looks ignored), and **next looks
honoured**: a tick also at each next look, delivered ``look_delay`` seconds late (a tick-queue message with a
visibility delay, picked up within the queue trigger's polling interval; the default is the
``maxPollingInterval`` this repository's host.json sets, else 0: ``bench.clockdriver.default_look_delay``).

* **Makespan**: from ``start_release`` to the rollout's ``-> Succeeded`` event. The lower bound is what the
  policy allows at best: the canary's upgrade + the bake + each batch's upgrade, back to back. Where the rest
  goes, per step (the canary, then each batch), from the emulator's accepted ``manualupgrade`` times and the
  controller's tick log: the step is *ready* when its upgrade is done (the canary: and baked); *waiting for the
  next tick* runs from ready to the first tick that starts after it; *ticks that did not act* from there to the
  start of the tick that wrote the next step (e.g. the bake starts at the tick that first sees the canary
  healthy, not when its upgrade ends); *tick phase* from that tick's start to its write. Throttling: the
  ``manualupgrade`` calls answered 429 and the time from the first refused call to the accepted one. All in
  virtual seconds; the wall time of each run besides.
* **Rollback latency**: a broken release (``fail_release`` in ``emulator/arm/controls.py``: its install fails,
  or it serves 500s), on the same clock and timings. From the canary's first failing observation (the start of
  the tick that recorded the first ``HealthCheckFailed`` or ``-> RollingBack``) to the rollback's
  ``manualupgrade`` of the canary, to the baseline being back on the canary (that call + the upgrade time) and to
  the controller recording ``-> RolledBack`` (after the reimage the shipped ``ROLLBACK_REIMAGE`` asks for).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from bench.clockdriver import default_look_delay
from bench.perf import ControllerRun, Emulator, run_controller

UPGRADE_S = 120.0  # the upgrade time
BAKE_S = 300  # the bake
TICK_S = 30.0  # the shipped timer's period (rollout/settings.py DEFAULT_TICK_SCHEDULE, "*/30 * * * * *")
_RUNS = itertools.count(1)


def _phase_event(run: ControllerRun, after: str) -> float | None:
    return next((at for kind, at, msg in run.events if kind == "PhaseChanged" and f"-> {after}" in msg), None)


@dataclass
class Step:
    name: str
    ready: float  # seconds after the start: the upgrade done (the canary: done and baked)
    acted: float  # seconds after the start: the next step's write (the last one: Succeeded recorded)
    waiting_s: float
    idle_ticks_s: float
    tick_phase_s: float

    @property
    def lost_s(self) -> float:
        return self.acted - self.ready


@dataclass
class Makespan:
    instances: int
    phase: str
    batches: int
    makespan_s: float
    lower_bound_s: float
    start_s: float  # start_release to the canary's manualupgrade
    steps: list[Step] = field(default_factory=list)
    refused: int = 0
    throttled_s: float = 0.0
    ticks: int = 0
    tick_wall_median_s: float = 0.0
    timings: tuple[float, float, float] = (UPGRADE_S, BAKE_S, TICK_S)  # upgrade, bake, tick period (seconds)
    # On the shared clock: whether next looks were honoured and their delivery delay, the ticks they caused,
    # whether the product asks for them at all, the run's wall time and the virtual time the clock skipped.
    honoured: bool = False
    look_delay_s: float = 0.0
    next_look_ticks: int = 0
    next_look_supported: bool = False
    wall_s: float = 0.0
    skipped_s: float = 0.0
    start_phase_s: float = 0.0  # where ``start_release`` fell in the timer's period (seconds after a start)

    @property
    def ratio(self) -> float:
        return self.makespan_s / self.lower_bound_s

    def total(self, attr: str) -> float:
        return sum(float(getattr(s, attr)) for s in self.steps)


def analyse_makespan(
    run: ControllerRun, upgrade_s: float = UPGRADE_S, bake_s: float = BAKE_S, tick_s: float = TICK_S
) -> Makespan:
    t0 = run.release_started_at
    accepted = sorted(t for t, status, _ in run.upgrades if status < 300)
    refused = sorted(t for t, status, _ in run.upgrades if status == 429)
    end = _phase_event(run, "Succeeded")
    if end is None:
        end = run.tick_log[-1][1] if run.tick_log else t0
    batches = max(0, len(accepted) - 1)
    lower = upgrade_s + bake_s + batches * upgrade_s
    starts = [a for a, _ in run.tick_log]
    steps: list[Step] = []
    for i, posted in enumerate(accepted):
        ready = posted + upgrade_s + (bake_s if i == 0 else 0.0)
        acted = accepted[i + 1] if i + 1 < len(accepted) else end
        first = next((s for s in starts if s >= ready), acted)
        acting = max((s for s in starts if s <= acted), default=first)
        first = min(first, acted)
        acting = max(acting, first)
        steps.append(
            Step(
                "canary" if i == 0 else f"batch {i}",
                ready - t0,
                acted - t0,
                waiting_s=first - ready,
                idle_ticks_s=acting - first,
                tick_phase_s=acted - acting,
            )
        )
    throttled_s = 0.0
    for t in accepted:
        before = [r for r in refused if r < t and all(not (r < a < t) for a in accepted)]
        if before:
            throttled_s += t - before[0]
    walls = sorted(run.tick_wall_s)
    return Makespan(
        run.instances,
        run.phase,
        batches,
        end - t0,
        lower,
        (accepted[0] - t0) if accepted else 0.0,
        steps,
        refused=len(refused),
        throttled_s=throttled_s,
        ticks=run.ticks,
        tick_wall_median_s=walls[len(walls) // 2] if walls else 0.0,
        timings=(upgrade_s, bake_s, tick_s),
        next_look_ticks=sum(1 for why in run.tick_why if why == "next look"),
        next_look_supported=run.next_look_supported,
        wall_s=run.seconds,
        skipped_s=float((run.clock or {}).get("jumped_s", 0.0)),
        start_phase_s=t0 % tick_s if tick_s > 0 else 0.0,
    )


def measure_makespan(
    emu: Emulator,
    storage: str,
    instances: int,
    table_prefix: str | None = None,
    *,
    honour_next_look: bool = False,
    look_delay: float | None = None,
    upgrade_s: float = UPGRADE_S,
    bake_s: int = BAKE_S,
    tick_s: float = TICK_S,
) -> Makespan:
    """One rollout on the shared clock (``emu`` started with ``skip_clock=True``). ``look_delay``: the next
    looks' delivery delay (None: ``default_look_delay()``, host.json's ``maxPollingInterval`` or 0)."""
    delay = default_look_delay() if look_delay is None else look_delay
    run = run_controller(
        emu,
        storage,
        instances,
        f"makespan-{instances}-{next(_RUNS)}",  # a scale set (and a target) of its own per run: no duplicate release
        table_prefix,
        upgrade_seconds=upgrade_s,
        bake_seconds=bake_s,
        tick_period=tick_s,
        skip_clock=True,
        honour_next_look=honour_next_look,
        look_delay=delay,
    )
    span = analyse_makespan(run, upgrade_s, bake_s, tick_s)
    span.honoured, span.look_delay_s = honour_next_look, delay if honour_next_look else 0.0
    return span


@dataclass
class Rollback:
    instances: int
    mode: str  # how the release fails: "extension" (its install fails) or "http500" (it serves errors)
    phase: str
    canary: str
    first_failure_s: float  # the start of the tick that first saw the canary fail, seconds after start_release
    failing_observations: int  # HealthCheckFailed events (a definite failure such as a failed install: none)
    to_rollback_write_s: float | None
    to_baseline_s: float | None
    to_recorded_s: float | None
    reimaged: bool
    upgrade_s: float
    canary_release: str | None  # the release the emulator says the canary serves at the end
    canary_latest: bool | None  # the canary on the scale set's model (the baseline's, written back) at the end
    honoured: bool = False  # next looks honoured (on the shared clock)
    wall_s: float = 0.0  # the run's wall time


def measure_rollback(
    emu: Emulator,
    storage: str,
    instances: int,
    table_prefix: str | None = None,
    mode: str = "extension",
    *,
    honour_next_look: bool = False,
    look_delay: float | None = None,
) -> Rollback:
    """A broken release on the shared clock (``emu`` started with ``skip_clock=True``), the makespan's timings."""
    run = run_controller(
        emu,
        storage,
        instances,
        f"rollback-{mode}-{instances}",
        table_prefix,
        upgrade_seconds=UPGRADE_S,
        bake_seconds=BAKE_S,
        tick_period=TICK_S,
        fail_pattern="install_nginx.v1",
        fail_mode=mode,
        skip_clock=True,
        honour_next_look=honour_next_look,
        look_delay=default_look_delay() if look_delay is None else look_delay,
    )
    back = analyse_rollback(run, mode, UPGRADE_S)
    back.honoured, back.wall_s = honour_next_look, run.seconds
    return back


def analyse_rollback(run: ControllerRun, mode: str, upgrade_s: float = UPGRADE_S) -> Rollback:
    t0 = run.release_started_at
    accepted = sorted((t, ids) for t, status, ids in run.upgrades if status < 300)
    canary = accepted[0][1][0] if accepted and accepted[0][1] else ""
    failing = sorted(
        at
        for kind, at, msg in run.events
        if kind == "HealthCheckFailed" or (kind == "PhaseChanged" and "-> RollingBack" in msg)
    )
    seen = failing[0] if failing else t0
    # The observation was made by the tick that recorded it: its start.
    first = max((a for a, _ in run.tick_log if a <= seen), default=seen)
    # The rollback's write: the first accepted manualupgrade after the failure naming the canary.
    back = next((t for t, ids in accepted if t > first and canary in ids), None)
    recorded = _phase_event(run, "RolledBack")
    instances: list[dict[str, Any]] = run.final_view.get("instances", [])
    inst: dict[str, Any] = next((i for i in instances if i.get("instanceId") == canary), {})
    return Rollback(
        run.instances,
        mode,
        run.phase,
        canary,
        first - t0,
        sum(1 for kind, _, _ in run.events if kind == "HealthCheckFailed"),
        None if back is None else back - first,
        None if back is None else back + upgrade_s - first,
        None if recorded is None else recorded - first,
        any(kind == "ReimageStarted" for kind, _, _ in run.events),
        upgrade_s,
        inst.get("release"),
        inst.get("latestModelApplied"),
    )


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def _mode(m: Makespan) -> str:
    return f"next looks honoured (+{m.look_delay_s:g} s)" if m.honoured else "timer only"


def report_lines(spans: list[Makespan], rollbacks: list[Rollback]) -> list[str]:
    upgrade_s, bake_s, tick_s = spans[0].timings if spans else (UPGRADE_S, BAKE_S, TICK_S)
    supported = any(m.next_look_supported for m in spans)
    lines = [
        "## Makespan against its lower bound",
        "",
        f"The issue's timings: upgrades take {upgrade_s:g} s, bake {bake_s:g} s, the shipped timer ticks every "
        f"{tick_s:g} s (`*/{tick_s:g} * * * * *`), batches of 20% after a canary of 1. The emulator in its own "
        "process, synthetic instances, the controller in its own process; both on a shared clock that runs at real "
        "speed while anything computes and skips the idle waits (a tick's compute counts at 1x; figures are "
        "virtual seconds, wall time besides). The timer -> queue hop of the fan-out is not in the loop. "
        "Makespan: `start_release` to the rollout's `-> Succeeded` event. Lower bound: canary upgrade + bake + "
        "each batch's upgrade, back to back (bench/makespan.py, bench/clockdriver.py).",
        "",
        "Timer only: ticks on the timer's schedule alone. Next looks honoured: also a tick at each time the engine "
        "asked for one (`Outcome.next_look`), delivered after the queue's polling delay shown."
        + (
            ""
            if supported or not spans
            else " **This product's outcomes carry no `next_look`**: honouring them changes nothing, so only the "
            "timer-only pass ran."
        ),
        "",
        "| instances | ticks by | result | batches | lower bound | makespan | makespan / lower bound | target | "
        "start to canary write | waiting for the next tick | ticks that did not act | tick phase | "
        "throttling (429s) | ticks (by next look) | tick wall (median) | wall time | skipped |",
        "|---:|---|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m in spans:
        lines.append(
            f"| {m.instances:,} | {_mode(m)} | {m.phase} | {m.batches} | {m.lower_bound_s:.1f} s "
            f"| {m.makespan_s:.1f} s | **{m.ratio:.3f}** | at most 1.05: {'met' if m.ratio <= 1.05 else 'missed'} "
            f"| {_s(m.start_s)} | {_s(m.total('waiting_s'))} | {_s(m.total('idle_ticks_s'))} "
            f"| {_s(m.total('tick_phase_s'))} | {_s(m.throttled_s)} ({m.refused}) | {m.ticks} ({m.next_look_ticks}) "
            f"| {_s(m.tick_wall_median_s)} | {m.wall_s:.1f} s | {m.skipped_s:.0f} s |"
        )
    largest = max((m.instances for m in spans), default=0)
    for m in (m for m in spans if m.instances == largest):  # each pass at the largest size
        lines += [
            "",
            f"Per step at {m.instances:,} instances, {_mode(m)} (virtual seconds after `start_release`, which fell "
            f"{m.start_phase_s:.1f} s after a timer start; lost = next write - ready):",
            "",
            "| step | ready | next write | lost | waiting for the next tick | ticks that did not act | tick phase |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for st in m.steps:
            lines.append(
                f"| {st.name} | {st.ready:.2f} | {st.acted:.2f} | {st.lost_s:.2f} | {st.waiting_s:.2f} "
                f"| {st.idle_ticks_s:.2f} | {st.tick_phase_s:.2f} |"
            )
    if rollbacks:
        lines += [
            "",
            "## Rollback latency",
            "",
            f"A broken release on {rollbacks[0].instances:,} synthetic instances (`fail_release`: its install "
            "fails, or it installs and serves 500s), the same timings, tick and shared clock"
            + (", next looks honoured" if rollbacks[0].honoured else ", timer only")
            + ". From the canary's first failing "
            "observation (the start of the tick that recorded the first `HealthCheckFailed` or `-> RollingBack`; "
            "a failed install is definite, served errors count towards `FAILURE_THRESHOLD`, 3 by default). "
            "The rollback writes the baseline's model, then upgrades the canary back; with the shipped "
            "`ROLLBACK_REIMAGE` it then reimages it, and records `-> RolledBack` when it sees the baseline healthy.",
            "",
            "| release fails by | result | failing observations | to the rollback's `manualupgrade` "
            f"| to the baseline back on the canary (+ {rollbacks[0].upgrade_s:g} s upgrade) "
            "| to `-> RolledBack` recorded "
            "| reimaged | the canary at the end: release served, on the model | wall time |",
            "|---|---|---:|---:|---:|---:|---|---|---:|",
        ]
        for r in rollbacks:
            lines.append(
                f"| {r.mode} | {r.phase} | {r.failing_observations} | {_s(r.to_rollback_write_s)} "
                f"| {_s(r.to_baseline_s)} | {_s(r.to_recorded_s)} | {'yes' if r.reimaged else 'no'} "
                f"| {r.canary_release} / {r.canary_latest} | {r.wall_s:.1f} s |"
            )
        lines.append("")
    return lines
