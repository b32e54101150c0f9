"""The figures of ``bench/perf.py`` as JSON, and the plots of docs/performance.md rendered from that JSON.

``python -m bench.perf`` (``make bench``) writes ``docs/performance.json`` next to docs/performance.md and renders
the PNGs below from it; ``python -m bench.plots`` renders them again from an existing JSON without measuring
anything (``--json FILE``, ``--out DIR``; default docs/performance.json and docs/). matplotlib is a benchmark
dependency only (requirements-dev.txt): it is imported here, lazily, with the non-interactive Agg canvas, never by
the function app or ``rollout/``.

The JSON (``figures_json``; times in seconds, memory in MiB, counts as integers; a figure not measured is
``null``)::

    schema              1
    command, written_at the command that wrote it; ISO 8601 UTC
    machine             {arch, python, cores, load: [1, 5, 15 minute load averages when the run started]}
    seconds             the whole run's wall time
    cold_start          {runs (fresh interpreters per row, median), baseline (index of the row the target is
                        relative to: functions + tables), target_ratio (1.3),
                        rows: [{label, import_s, rss_mib, serve_s, serve_rss_mib, loaded: [module, ...]}]}
                        (serve_*: the first GET /api/rollouts after the import, on the function_app row only)
    arm_requests        {page_size, batch_percent, upgrade_s, naive_budget_seconds,
                        product: [{instances, phase, ticks, observations, reads, writes, batches,
                                   by_operation: {operation: count}, throttled: {operation: 429 count}}],
                        naive: [{instances, rounds, seconds, finished, upgraded, reads, writes, by_operation,
                                 throttled}],
                        naive_budgeted: one naive entry (the largest size under the budgets) or null}
    tick                {target_wall_s (1.0), target_peak_mb (150),
                        sizes: [{instances, wall_s: [per tick], cpu_s: [...], fleet_read_s: [...],
                                 probes_s: [...], peak_rss_mib, peak_threads}]}  (the tick cost: the last size)
    makespan            {target_ratio (1.05),
                        sizes: [{instances, phase, batches, makespan_s, lower_bound_s, ratio, start_s,
                                 upgrade_s, bake_s, tick_s, refused, throttled_s, ticks, tick_wall_median_s,
                                 steps: [{name, write_s, ready_s, acted_s, lost_s, waiting_s, idle_ticks_s,
                                          tick_phase_s}],
                                 and any other plain (number, string, boolean) field of
                                 ``bench.makespan.Makespan`` under its own name}]}
                        (step times: seconds after start_release; write_s: the step's accepted manualupgrade,
                        ready_s: its upgrade done (the canary: and baked), acted_s: the next step's write (the
                        last step: -> Succeeded recorded); lost_s = acted_s - ready_s = waiting_s + idle_ticks_s
                        + tick_phase_s)
    rollback            [{instances, mode, phase, first_failure_s, failing_observations, to_rollback_write_s,
                          to_baseline_s, to_recorded_s, reimaged, upgrade_s}]
    start_latency       {instances, median_s, median_trigger_s, runs: [{to_trigger_s, to_upgrade_s,
                        canary_upgrades}]} or null

The plots (``render``), each a PNG in the output directory:

* ``perf-makespan.png``: per fleet size, a timeline of each step (one row each: the canary, then the batches):
  its upgrade, the bake, the time waiting for the next tick, ticks that did not act and the tick phase up to the
  next write, against the lower bound's schedule (thin grey bars) and the lower bound itself (a dashed line).
* ``perf-arm-requests.png``: ARM requests per rollout by operation, per size, the product's controller against
  the naive one, on a log scale.
* ``perf-tick.png``: a tick's wall time split into the fleet read, the probes and the rest, with its CPU time,
  against the 1 s target: the median tick per size, and every tick at the largest size.
* ``perf-coldstart.png``: import time and peak memory per row of the cold-start table against the 1.3 x target.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from bench.perf import Figures

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
JSON_NAME = "performance.json"
SCHEMA = 1
COLD_TARGET = 1.3
MAKESPAN_TARGET = 1.05
TICK_TARGET_S = 1.0
TICK_TARGET_MB = 150
PLOTS = ("perf-makespan.png", "perf-arm-requests.png", "perf-tick.png", "perf-coldstart.png")
SECTIONS = ("cold_start", "arm_requests", "tick", "makespan", "rollback", "start_latency")


# --------------------------------------------------------------------------------------------------
# The figures as JSON


def _naive(n: Any) -> dict[str, Any]:
    return {
        "instances": n.instances,
        "rounds": n.rounds,
        "seconds": n.seconds,
        "finished": n.finished,
        "upgraded": n.upgraded,
        "reads": n.reads,
        "writes": n.writes,
        "by_operation": dict(sorted(n.by_operation.items())),
        "throttled": dict(sorted(n.throttled.items())),
    }


def _makespan(m: Any) -> dict[str, Any]:
    upgrade_s, bake_s, tick_s = m.timings
    steps = []
    for i, s in enumerate(m.steps):
        steps.append(
            {
                "name": s.name,
                "write_s": s.ready - upgrade_s - (bake_s if i == 0 else 0.0),
                "ready_s": s.ready,
                "acted_s": s.acted,
                "lost_s": s.lost_s,
                "waiting_s": s.waiting_s,
                "idle_ticks_s": s.idle_ticks_s,
                "tick_phase_s": s.tick_phase_s,
            }
        )
    # Any other plain field of the dataclass too, under its own name; the keys below keep their meaning.
    more = {
        f.name: getattr(m, f.name)
        for f in dataclasses.fields(m)
        if isinstance(getattr(m, f.name), bool | int | float | str) and f.name not in ("timings", "steps")
    }
    return more | {
        "instances": m.instances,
        "phase": m.phase,
        "batches": m.batches,
        "makespan_s": m.makespan_s,
        "lower_bound_s": m.lower_bound_s,
        "ratio": m.ratio,
        "start_s": m.start_s,
        "upgrade_s": float(upgrade_s),
        "bake_s": float(bake_s),
        "tick_s": float(tick_s),
        "refused": m.refused,
        "throttled_s": m.throttled_s,
        "ticks": m.ticks,
        "tick_wall_median_s": m.tick_wall_median_s,
        "steps": steps,
    }


def figures_json(f: Figures, command: str) -> dict[str, Any]:
    """``bench.perf.Figures`` (and the ``bench.makespan`` / ``bench.startlatency`` results it holds) as the JSON
    of this module's docstring. Reads the figures only; measures nothing."""
    start = f.start
    return {
        "schema": SCHEMA,
        "command": command,
        "written_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": {
            "arch": platform.machine(),
            "python": platform.python_version(),
            "cores": os.cpu_count(),
            "load": list(f.load),
        },
        "seconds": f.seconds,
        "cold_start": {
            "runs": f.cold_runs,
            "baseline": 1,
            "target_ratio": COLD_TARGET,
            "rows": [
                {
                    "label": c.label,
                    "import_s": c.import_s,
                    "rss_mib": c.rss_mib,
                    "serve_s": c.serve_s,
                    "serve_rss_mib": c.serve_rss_mib,
                    "loaded": list(c.loaded),
                }
                for c in f.cold
            ],
        },
        "arm_requests": {
            "page_size": f.page_size,
            "batch_percent": _perf("BATCH_PERCENT"),
            "upgrade_s": _perf("UPGRADE_SECONDS"),
            "naive_budget_seconds": f.naive_budget_seconds,
            "product": [
                {
                    "instances": r.instances,
                    "phase": r.phase,
                    "ticks": r.ticks,
                    "observations": r.observations,
                    "reads": r.reads,
                    "writes": r.writes,
                    "batches": r.batches,
                    "by_operation": dict(sorted(r.by_operation.items())),
                    "throttled": dict(sorted(r.throttled.items())),
                }
                for r in f.runs
            ],
            "naive": [_naive(n) for n in f.naive],
            "naive_budgeted": None if f.naive_budgeted is None else _naive(f.naive_budgeted),
        },
        "tick": {
            "target_wall_s": TICK_TARGET_S,
            "target_peak_mb": TICK_TARGET_MB,
            "sizes": [
                {
                    "instances": r.instances,
                    "wall_s": list(r.tick_wall_s),
                    "cpu_s": list(r.tick_cpu_s),
                    "fleet_read_s": list(r.tick_observe_s),
                    "probes_s": list(r.tick_probe_s),
                    "peak_rss_mib": r.peak_rss_mib,
                    "peak_threads": r.peak_threads,
                }
                for r in f.runs
            ],
        },
        "makespan": {"target_ratio": MAKESPAN_TARGET, "sizes": [_makespan(m) for m in f.makespans]},
        "rollback": [
            {
                "instances": r.instances,
                "mode": r.mode,
                "phase": r.phase,
                "first_failure_s": r.first_failure_s,
                "failing_observations": r.failing_observations,
                "to_rollback_write_s": r.to_rollback_write_s,
                "to_baseline_s": r.to_baseline_s,
                "to_recorded_s": r.to_recorded_s,
                "reimaged": r.reimaged,
                "upgrade_s": r.upgrade_s,
            }
            for r in f.rollbacks
        ],
        "start_latency": None
        if start is None
        else {
            "instances": start.instances,
            "median_s": start.median_s,
            "median_trigger_s": start.median_trigger_s,
            "runs": [
                {"to_trigger_s": r.to_trigger_s, "to_upgrade_s": r.to_upgrade_s, "canary_upgrades": r.canary_upgrades}
                for r in start.runs
            ],
        },
    }


def _perf(name: str) -> Any:
    from bench import perf

    return getattr(perf, name)


def write_json(data: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def read_json(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    if data.get("schema") != SCHEMA:
        raise ValueError(f"{path}: schema {data.get('schema')!r}, this module reads schema {SCHEMA}")
    missing = [s for s in SECTIONS if s not in data]
    if missing:
        raise ValueError(f"{path}: no {', '.join(missing)} section")
    return data


# --------------------------------------------------------------------------------------------------
# The plots (matplotlib's object API on the Agg canvas: no pyplot, no display, no global state)

COLORS = {
    "start": "#bbbbbb",
    "upgrade": "#4c72b0",
    "bake": "#8fb0dd",
    "waiting": "#dd8452",
    "idle": "#e8c07d",
    "tick": "#c44e52",
    "product": "#4c72b0",
    "naive": "#dd8452",
    "fleet read": "#4c72b0",
    "probes": "#55a868",
    "rest": "#bbbbbb",
    "cpu": "#000000",
    "target": "#c00000",
}


def _figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _size(n: int) -> str:
    return f"{n:,} instances"


def _variant(m: dict[str, Any]) -> str:
    """Which run of a size this is, where the makespan entry says (``honoured``: the engine's own next looks)."""
    if "honoured" not in m:
        return ""
    return ", the engine's next looks honoured" if m["honoured"] else ", the timer only"


def plot_makespan(data: dict[str, Any]) -> Figure:
    """One axes per size, one row per step (the canary first, at the top)."""
    from matplotlib.artist import Artist
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    section = data["makespan"]
    sizes = section["sizes"]
    fig = _figure(11, 1.2 + 0.45 * sum(len(m["steps"]) + 1 for m in sizes) + 0.6 * len(sizes))
    if not sizes:
        fig.suptitle("Makespan: not measured in this run")
        return fig
    axes = fig.subplots(len(sizes), 1, sharex=True, squeeze=False)[:, 0]
    for ax, m in zip(axes, sizes, strict=True):
        steps = m["steps"]
        upgrade_s, bake_s = m["upgrade_s"], m["bake_s"]
        for row, s in enumerate(steps):
            bars: list[tuple[float, float, str]] = []
            if row == 0 and s["write_s"] > 0:
                bars.append((0.0, s["write_s"], "start"))
            up_end = min(s["write_s"] + upgrade_s, s["ready_s"])
            bars.append((s["write_s"], up_end - s["write_s"], "upgrade"))
            if s["ready_s"] > up_end:
                bars.append((up_end, s["ready_s"] - up_end, "bake"))
            t = s["ready_s"]
            for key, kind in (("waiting_s", "waiting"), ("idle_ticks_s", "idle"), ("tick_phase_s", "tick")):
                if s[key] > 0:
                    bars.append((t, s[key], kind))
                    t += s[key]
            for x0, width, kind in bars:
                ax.broken_barh([(x0, width)], (row - 0.25, 0.5), facecolors=COLORS[kind], label=kind)
            # The lower bound's schedule for this step: back to back from time 0.
            ideal0 = 0.0 if row == 0 else upgrade_s + bake_s + (row - 1) * upgrade_s
            ideal1 = upgrade_s + bake_s if row == 0 else ideal0 + upgrade_s
            ax.broken_barh([(ideal0, ideal1 - ideal0)], (row + 0.27, 0.12), facecolors="#777777", label="lower bound")
        ax.axvline(m["lower_bound_s"], color=COLORS["target"], linestyle="--", linewidth=1.5)
        ax.axvline(m["makespan_s"], color="black", linewidth=1.5)
        ax.set_yticks(range(len(steps)), [s["name"] for s in steps])
        ax.set_ylim(len(steps) - 0.5, -0.6)
        ax.set_ylabel("step")
        ax.grid(axis="x", alpha=0.3)
        ax.set_title(
            f"{_size(m['instances'])}{_variant(m)}: makespan {m['makespan_s']:.1f} s = {m['ratio']:.2f} x the "
            f"lower bound {m['lower_bound_s']:.1f} s\n(target at most {section['target_ratio']:g} x; "
            f"upgrade {upgrade_s:g} s, bake {bake_s:g} s, a tick every {m['tick_s']:g} s)",
            fontsize=10,
        )
    axes[-1].set_xlabel("time after start_release (s)")
    legend: list[Artist] = [
        Patch(color=COLORS["start"], label="start_release to the canary's write"),
        Patch(color=COLORS["upgrade"], label="upgrade"),
        Patch(color=COLORS["bake"], label="bake"),
        Patch(color=COLORS["waiting"], label="waiting for the next tick"),
        Patch(color=COLORS["idle"], label="ticks that did not act"),
        Patch(color=COLORS["tick"], label="tick phase (tick start to the next write)"),
        Patch(color="#777777", label="the lower bound's schedule"),
    ]
    legend += [
        Line2D([], [], color=COLORS["target"], linestyle="--", label="lower bound"),
        Line2D([], [], color="black", label="makespan (-> Succeeded)"),
    ]
    fig.legend(handles=legend, loc="outside lower center", ncol=5, fontsize=8)
    fig.suptitle("Makespan against its lower bound, per step")
    return fig


def plot_arm_requests(data: dict[str, Any]) -> Figure:
    section = data["arm_requests"]
    pairs = list(zip(section["product"], section["naive"], strict=True))
    ops = sorted({op for p, n in pairs for op in (*p["by_operation"], *n["by_operation"])})
    fig = _figure(max(6.0, 4.6 * len(pairs)), 1.8 + 0.32 * len(ops))
    if not pairs:
        fig.suptitle("ARM requests per rollout: not measured in this run")
        return fig
    axes = fig.subplots(1, len(pairs), sharey=True, squeeze=False)[0]
    most = max(max([*p["by_operation"].values(), *n["by_operation"].values(), 1]) for p, n in pairs)
    for ax, (p, n) in zip(axes, pairs, strict=True):
        for offset, run, who in ((-0.2, p, "product"), (0.2, n, "naive")):
            ys = [i + offset for i, op in enumerate(ops) if run["by_operation"].get(op, 0) > 0]
            xs = [run["by_operation"][op] for op in ops if run["by_operation"].get(op, 0) > 0]
            label = "the product's controller" if who == "product" else "naive controller (per instance)"
            ax.barh(ys, xs, height=0.4, color=COLORS[who], label=label)
            for x, y in zip(xs, ys, strict=True):
                ax.text(x * 1.08, y, f"{x:,}", va="center", fontsize=7)
        ax.set_xscale("log")
        ax.set_xlim(0.8, most * 4)
        ax.set_yticks(range(len(ops)), ops)
        ax.set_ylim(len(ops) - 0.5, -0.5)
        ax.set_xlabel("requests per rollout (log scale)")
        ax.grid(axis="x", alpha=0.3)
        total_p, total_n = sum(p["by_operation"].values()), sum(n["by_operation"].values())
        throttled = sum(p["throttled"].values()), sum(n["throttled"].values())
        ax.set_title(
            f"{_size(p['instances'])}: {total_p:,} against {total_n:,}\n"
            f"writes {p['writes']} against {n['writes']:,}; 429s {throttled[0]} against {throttled[1]}",
            fontsize=9,
        )
    axes[0].set_ylabel("ARM operation")
    axes[0].legend(loc="lower right", fontsize=8)
    fig.suptitle("ARM requests per rollout, by operation (the naive controller without budgets)")
    return fig


def _median_tick(size: dict[str, Any]) -> int:
    """The index of the tick whose wall time is the (lower) median."""
    order = sorted(range(len(size["wall_s"])), key=lambda i: size["wall_s"][i])
    return order[(len(order) - 1) // 2]


def _tick_parts(size: dict[str, Any], i: int) -> tuple[float, float, float]:
    read, probes = size["fleet_read_s"][i], size["probes_s"][i]
    return read, probes, max(0.0, size["wall_s"][i] - read - probes)


def _stacked(ax: Any, xs: list[float], parts: list[tuple[float, float, float]], cpu: list[float]) -> None:
    bottom = [0.0] * len(xs)
    for k, name in enumerate(("fleet read", "probes", "rest")):
        heights = [p[k] for p in parts]
        ax.bar(xs, heights, bottom=bottom, width=0.6, color=COLORS[name], label=f"wall: {name}")
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    ax.plot(xs, cpu, "D", color=COLORS["cpu"], label="CPU time (all threads)")


def plot_tick(data: dict[str, Any]) -> Figure:
    section = data["tick"]
    sizes = [s for s in section["sizes"] if s["wall_s"]]
    fig = _figure(12, 5)
    if not sizes:
        fig.suptitle("Tick cost: not measured in this run")
        return fig
    left, right = fig.subplots(1, 2, width_ratios=[1, 2])
    target = section["target_wall_s"]
    medians = [_median_tick(s) for s in sizes]
    _stacked(
        left,
        list(range(len(sizes))),
        [_tick_parts(s, i) for s, i in zip(sizes, medians, strict=True)],
        [s["cpu_s"][i] for s, i in zip(sizes, medians, strict=True)],
    )
    left.set_xticks(range(len(sizes)), [f"{s['instances']:,}" for s in sizes])
    left.set_xlabel("instances")
    left.set_ylabel("seconds per tick")
    left.set_title("the median tick per size", fontsize=10)
    big = sizes[-1]
    n = len(big["wall_s"])
    _stacked(right, [float(i + 1) for i in range(n)], [_tick_parts(big, i) for i in range(n)], list(big["cpu_s"][:n]))
    right.set_xticks(range(1, n + 1))
    right.set_xlabel(f"tick of the rollout at {_size(big['instances'])}")
    right.set_ylabel("seconds")
    right.set_title(
        f"every tick at {_size(big['instances'])}: peak memory {big['peak_rss_mib']:.0f} MiB "
        f"(target under {section['target_peak_mb']} MB), {big['peak_threads']} threads at most",
        fontsize=10,
    )
    for ax in (left, right):
        ax.axhline(target, color=COLORS["target"], linestyle="--", label=f"target: under {target:g} s wall")
        ax.grid(axis="y", alpha=0.3)
        ax.set_ylim(0, max(target, *big["wall_s"], *big["cpu_s"], *(max(s["wall_s"]) for s in sizes)) * 1.15)
    handles, labels = right.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=len(labels), fontsize=8)
    fig.suptitle("Tick cost of the controller process: wall time (fleet read, probes, rest) and CPU time")
    return fig


def plot_coldstart(data: dict[str, Any]) -> Figure:
    section = data["cold_start"]
    rows = [(r["label"], r["import_s"] * 1000, r["rss_mib"]) for r in section["rows"]]
    for r in section["rows"]:
        if r.get("serve_s") is not None and r.get("serve_rss_mib") is not None:
            rows.append(
                (
                    f"{r['label']}, then the first GET /api/rollouts",
                    (r["import_s"] + r["serve_s"]) * 1000,
                    r["serve_rss_mib"],
                )
            )
    fig = _figure(12, 1.6 + 0.45 * len(rows))
    if not rows:
        fig.suptitle("Cold start: not measured in this run")
        return fig
    base_i = section["baseline"]
    ratio = section["target_ratio"]
    axes = fig.subplots(1, 2, sharey=True)
    labels = [_wrap(label) for label, _, _ in rows]
    for ax, k, unit, title in (
        (axes[0], 1, "ms", "import time (median)"),
        (axes[1], 2, "MiB", "peak resident memory (VmHWM)"),
    ):
        values = [row[k] for row in rows]
        limit = ratio * values[base_i]
        colors = [
            "#777777" if i == base_i else (COLORS["tick"] if v > limit else "#55a868") for i, v in enumerate(values)
        ]
        ax.barh(range(len(rows)), values, color=colors, height=0.6)
        for i, v in enumerate(values):
            ax.text(v, i, f" {v:.0f} {unit} ({v / values[base_i]:.2f} x)", va="center", fontsize=8)
        ax.axvline(
            limit,
            color=COLORS["target"],
            linestyle="--",
            label=f"target: {ratio:g} x functions + tables ({limit:.0f} {unit})",
        )
        ax.set_xlim(0, max(values) * 1.45)
        ax.set_xlabel(f"{title} ({unit})")
        ax.set_title(title, fontsize=10)
        ax.grid(axis="x", alpha=0.3)
        ax.legend(loc="upper right", fontsize=8)
    axes[0].set_yticks(range(len(rows)), labels, fontsize=8)
    axes[0].set_ylim(len(rows) - 0.5, -0.5)
    axes[0].set_ylabel("fresh interpreter importing")
    fig.suptitle(
        f"Cold start, median of {section['runs']} fresh interpreters each (grey: the baseline; red: over the target)"
    )
    return fig


def _wrap(text: str, width: int = 34) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width)) or text


RENDERERS = {
    "perf-makespan.png": plot_makespan,
    "perf-arm-requests.png": plot_arm_requests,
    "perf-tick.png": plot_tick,
    "perf-coldstart.png": plot_coldstart,
}


def render(data: dict[str, Any], out_dir: Path) -> list[Path]:
    """Every plot of ``PLOTS`` as a PNG in ``out_dir``, from the JSON alone."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name in PLOTS:
        fig = RENDERERS[name](data)
        path = out_dir / name
        fig.savefig(path, format="png", metadata={"Software": None})
        written.append(path)
    return written


def report_lines() -> list[str]:
    """docs/performance.md's links to the plots (after the tables of ``bench.perf.report_lines``)."""
    return [
        "## Plots",
        "",
        "Rendered from performance.json by bench/plots.py, from the run above.",
        "",
        "![Makespan per step against the lower bound's schedule, per size](perf-makespan.png)",
        "",
        "![ARM requests per rollout by operation, the product against the naive controller](perf-arm-requests.png)",
        "",
        "![Tick wall time (fleet read, probes, rest) and CPU time against the 1 s target](perf-tick.png)",
        "",
        "![Cold start: import time and peak memory per row against the 1.3 x target](perf-coldstart.png)",
        "",
    ]


def write_all(f: Figures, out_dir: Path, command: str) -> list[Path]:
    """The run's JSON (``out_dir/performance.json``) and the plots rendered from it."""
    data = figures_json(f, command)
    return [write_json(data, out_dir / JSON_NAME), *render(data, out_dir)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.plots", description="render the plots from the JSON")
    parser.add_argument("--json", type=Path, default=DOCS / JSON_NAME, help="the figures (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=None, help="where the PNGs go (default: next to the JSON)")
    args = parser.parse_args(argv)
    try:
        data = read_json(args.json)
    except (OSError, ValueError) as exc:
        print(f"cannot read the figures: {exc}", file=sys.stderr)
        return 2
    for path in render(data, args.out or args.json.parent):
        print(f"written {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
