"""Makespan against its lower bound, and rollback latency (issue 13), part of ``bench/perf.py``.

The emulator in its own process, synthetic instances, the product's controller in a process of its own
(``bench.perf.run_controller``). The clock is **not** scaled: the emulator and the engine run on real time with
the issue's scaled-down ratios applied directly (upgrade 120 s -> 4 s, bake 300 s -> 10 s, the shipped timer's
30 s -> a tick every 1 s, batches of 20%). Ticks start on a fixed 1 s schedule, as the timer fires; the
queue hop of the fan-out (timer -> queue -> ``advance_target``) is not in the loop.

* **Makespan**: from ``start_release`` to the rollout's ``-> Succeeded`` event. The lower bound is what the
  policy allows at best: the canary's upgrade + the bake + each batch's upgrade, back to back. Where the rest
  goes, per step (the canary, then each batch), from the emulator's accepted ``manualupgrade`` times and the
  controller's tick log: the step is *ready* when its upgrade is done (the canary: and baked); *waiting for the
  next tick* runs from ready to the first tick that starts after it; *ticks that did not act* from there to the
  start of the tick that wrote the next step (e.g. the bake starts at the tick that first sees the canary
  healthy, not when its upgrade ends); *tick phase* from that tick's start to its write. Throttling: the
  ``manualupgrade`` calls answered 429 and the time from the first refused call to the accepted one.
* **Rollback latency**: a broken release (``fail_release`` in ``emulator/arm/controls.py``: its install fails,
  or it serves 500s). From the canary's first failing observation (the start of the tick that recorded the
  first ``HealthCheckFailed`` or ``-> RollingBack``) to the rollback's ``manualupgrade`` of the canary, to the
  baseline being back on the canary (that call + the upgrade time) and to the controller recording
  ``-> RolledBack`` (after the reimage the shipped ``ROLLBACK_REIMAGE`` asks for).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bench.perf import ControllerRun, Emulator, run_controller

UPGRADE_S = 4.0  # 120 s scaled by 1/30
BAKE_S = 10  # 300 s scaled by 1/30 (the ratio: 10 s)
TICK_S = 1.0  # the shipped timer's 30 s (rollout/settings.py DEFAULT_TICK_SCHEDULE) scaled by 1/30


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
    )


def measure_makespan(
    emu: Emulator, storage: str, instances: int, table_prefix: str | None = None, *, scale: float = 1.0
) -> Makespan:
    """``scale``: the timings multiplied by it (CI runs them at half: the same ratios, half the wait)."""
    upgrade_s, bake_s, tick_s = UPGRADE_S * scale, round(BAKE_S * scale), TICK_S * scale
    run = run_controller(
        emu,
        storage,
        instances,
        f"makespan-{instances}",
        table_prefix,
        upgrade_seconds=upgrade_s,
        bake_seconds=bake_s,
        tick_period=tick_s,
    )
    return analyse_makespan(run, upgrade_s, bake_s, tick_s)


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


def measure_rollback(
    emu: Emulator,
    storage: str,
    instances: int,
    table_prefix: str | None = None,
    mode: str = "extension",
    *,
    scale: float = 1.0,
) -> Rollback:
    upgrade_s = UPGRADE_S * scale
    run = run_controller(
        emu,
        storage,
        instances,
        f"rollback-{mode}-{instances}",
        table_prefix,
        upgrade_seconds=upgrade_s,
        bake_seconds=round(BAKE_S * scale),
        tick_period=TICK_S * scale,
        fail_pattern="install_nginx.v1",
        fail_mode=mode,
    )
    return analyse_rollback(run, mode, upgrade_s)


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


def report_lines(spans: list[Makespan], rollbacks: list[Rollback]) -> list[str]:
    upgrade_s, bake_s, tick_s = spans[0].timings if spans else (UPGRADE_S, BAKE_S, TICK_S)
    lines = [
        "## Makespan against its lower bound",
        "",
        f"The issue's ratios scaled down by {120 / upgrade_s:g}, on real time (the emulator and the engine do not "
        f"share a scaled clock): upgrades take {upgrade_s:g} s (120 s), bake {bake_s:g} s (300 s), a tick every "
        f"{tick_s:g} s (the shipped timer's 30 s), batches of 20% after a canary of 1. The emulator in its own process,"
        " synthetic instances, the controller in its own process ticking on a fixed schedule (the timer -> queue hop "
        "of the fan-out is not in the loop). Makespan: `start_release` to the rollout's `-> Succeeded` event. Lower "
        "bound: canary upgrade + bake + each batch's upgrade, back to back (bench/makespan.py).",
        "",
        "| instances | result | batches | lower bound | makespan | makespan / lower bound | target | "
        "start to canary write | waiting for the next tick | ticks that did not act | tick phase | "
        "throttling (429s) | ticks | tick wall (median) |",
        "|---:|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m in spans:
        lines.append(
            f"| {m.instances:,} | {m.phase} | {m.batches} | {m.lower_bound_s:.1f} s | {m.makespan_s:.1f} s "
            f"| **{m.ratio:.2f}** | at most 1.05: {'met' if m.ratio <= 1.05 else 'missed'} | {_s(m.start_s)} "
            f"| {_s(m.total('waiting_s'))} | {_s(m.total('idle_ticks_s'))} | {_s(m.total('tick_phase_s'))} "
            f"| {_s(m.throttled_s)} ({m.refused}) | {m.ticks} | {_s(m.tick_wall_median_s)} |"
        )
    if spans:
        m = spans[-1]
        lines += [
            "",
            f"Per step at {m.instances:,} instances (seconds after `start_release`; lost = next write - ready):",
            "",
            "| step | ready | next write | lost | waiting for the next tick | ticks that did not act | tick phase |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for s in m.steps:
            lines.append(
                f"| {s.name} | {s.ready:.2f} | {s.acted:.2f} | {s.lost_s:.2f} | {s.waiting_s:.2f} "
                f"| {s.idle_ticks_s:.2f} | {s.tick_phase_s:.2f} |"
            )
    if rollbacks:
        lines += [
            "",
            "## Rollback latency",
            "",
            f"A broken release on {rollbacks[0].instances:,} synthetic instances (`fail_release`: its install "
            "fails, or it installs and serves 500s), the same timings and tick. From the canary's first failing "
            "observation (the start of the tick that recorded the first `HealthCheckFailed` or `-> RollingBack`; "
            "a failed install is definite, served errors count towards `FAILURE_THRESHOLD`, 3 by default). "
            "The rollback writes the baseline's model, then upgrades the canary back; with the shipped "
            "`ROLLBACK_REIMAGE` it then reimages it, and records `-> RolledBack` when it sees the baseline healthy.",
            "",
            "| release fails by | result | failing observations | to the rollback's `manualupgrade` "
            f"| to the baseline back on the canary (+ {rollbacks[0].upgrade_s:g} s upgrade) "
            "| to `-> RolledBack` recorded "
            "| reimaged | the canary at the end: release served, on the model |",
            "|---|---|---:|---:|---:|---:|---|---|",
        ]
        for r in rollbacks:
            lines.append(
                f"| {r.mode} | {r.phase} | {r.failing_observations} | {_s(r.to_rollback_write_s)} "
                f"| {_s(r.to_baseline_s)} | {_s(r.to_recorded_s)} | {'yes' if r.reimaged else 'no'} "
                f"| {r.canary_release} / {r.canary_latest} |"
            )
        lines.append("")
    return lines
