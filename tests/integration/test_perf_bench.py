"""The smallest size of each benchmark of ``make bench``'s docs/performance.md (bench/perf.py), so they never
rot: the emulator and the controller each in their own process, the naive controller, the cold start, and
the report rendered from their figures; the makespan against its lower bound and the rollback latency of a broken
release at the issue's real timings on the shared clock that skips idle time (bench/makespan.py,
bench/clockdriver.py), and the start latency through the local Functions host (bench/startlatency.py).
Figures are printed (``-s``); counts and orderings are asserted, no timing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench import plots
from bench.coldstart import app_env, median_of
from bench.makespan import measure_makespan, measure_rollback
from bench.perf import Figures, emulator_process, report_lines, run_controller, run_naive
from bench.startlatency import measure_start
from tests.unit.test_bench_plots import png_size, walk_numbers

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SIZE = 10


def test_the_performance_benchmarks_run_at_their_smallest_size(
    azurite: Any, azurite_names: Any, tmp_path: Path
) -> None:
    storage = azurite.connection_string
    cold = [
        median_of("azure.functions", ("azure.functions",), 1),
        median_of("azure.functions + azure.data.tables", ("azure.functions", "azure.data.tables"), 1),
        median_of(
            "with the blob extension",
            ("azure.functions", "azure.data.tables", "azurefunctions.extensions.bindings.blob"),
            1,
        ),
        median_of("function_app", ("function_app",), 1, serve=True, env=app_env(storage, azurite_names.table_prefix)),
    ]
    with emulator_process(tmp_path / "arm", address_base="127.0.71.1", instance_port=8080) as emu:
        run = run_controller(emu, storage, SIZE, "perf-ci", table_prefix=azurite_names.table_prefix + "c")
        naive = run_naive(emu, SIZE, "naive-ci", budgets=False)
        budgeted = run_naive(emu, SIZE, "naive-ci-budgets", budgets=True, max_seconds=30)
        prefix = azurite_names.table_prefix
        start = measure_start(emu, storage, SIZE, runs=2, prefix=prefix.lower()[:6])
    # The makespan and the rollback at the real timings (upgrade 120 s, bake 300 s, the 30 s timer) on
    # the shared clock that skips idle time (bench/clockdriver.py): an emulator of their own started with it.
    with emulator_process(
        tmp_path / "arm-clock", address_base="127.0.72.1", instance_port=8080, skip_clock=True
    ) as emu:
        before = emu.admin("GET", "clock")
        span = measure_makespan(emu, storage, SIZE, table_prefix=prefix + "m")
        after_span = emu.admin("GET", "clock")
        rollback = measure_rollback(emu, storage, SIZE, table_prefix=prefix + "r", mode="extension")
        # Once the product asks for its own next looks (Outcome.next_look), the pass that honours them too.
        looks = (
            measure_makespan(emu, storage, SIZE, table_prefix=prefix + "n", honour_next_look=True)
            if span.next_look_supported
            else None
        )
    spans = [span] if looks is None else [span, looks]
    figures = Figures(
        cold, [run], [naive], budgeted, 30, 1, 50, (0.0, 0.0, 0.0), makespans=spans, rollbacks=[rollback], start=start
    )
    print("\n" + "\n".join(report_lines(figures, "pytest") + plots.report_lines()))
    # The figures' JSON and the plots rendered from it (bench/plots.py) as `make bench` writes them next to
    # docs/performance.md, here in a temporary directory; checked below, and rendered again from the JSON alone.
    written = plots.write_all(figures, tmp_path / "docs", "pytest")
    print("\n".join(f"written {p}" for p in written))

    assert run.phase == "Succeeded" and run.ticks > 0
    # One look at the fleet = the scale set GET + one VM list page + one NIC list page (10 < a page of 50).
    assert run.reads_per_observation == 3
    assert run.writes == 2 + run.batches and run.batches == 5  # the canary, then 9 instances in batches of 2
    assert sum(run.throttled.values()) == 0
    assert run.peak_threads > 0 and run.peak_rss_mib > 0
    # The naive controller: one upgrade and at least one instance-view read per instance.
    assert naive.finished and naive.by_operation["POST manualupgrade"] == SIZE
    assert naive.by_operation["GET instance view (one VM)"] >= SIZE
    # 11 writes fit the write bucket of 12: under the budgets it finishes too, unrefused.
    assert budgeted.finished and sum(budgeted.throttled.values()) == 0

    # Makespan: the canary, then 9 instances in batches of 2 (5 batches), every step after the one before it;
    # nothing can beat the lower bound (canary upgrade + bake + the batches' upgrades, back to back).
    assert span.phase == "Succeeded" and span.batches == 5 and len(span.steps) == 6
    assert span.timings == (120.0, 300, 30.0) and span.lower_bound_s == 120 + 300 + 5 * 120
    assert span.makespan_s >= span.lower_bound_s
    # The shared clock moved (virtual) by at least the lower bound during the rollout, mostly by jumps.
    assert before["skips"] is True
    assert after_span["now"] - before["now"] >= span.lower_bound_s
    assert after_span["offset"] - before["offset"] == pytest.approx(span.skipped_s, abs=1)
    assert span.skipped_s > 0 and span.ticks > 0 and all(s.waiting_s >= 0 for s in span.steps)
    assert span.next_look_ticks == 0  # timer only
    if looks is not None:
        assert looks.phase == "Succeeded" and looks.honoured and looks.makespan_s >= looks.lower_bound_s
    assert all(s.acted >= s.ready for s in span.steps)
    assert [s.ready for s in span.steps] == sorted(s.ready for s in span.steps)
    # Rollback: the failing canary was moved back and ends on the baseline's model and release.
    assert rollback.phase == "RolledBack" and rollback.canary == "0"
    assert rollback.to_rollback_write_s is not None and rollback.to_recorded_s is not None
    assert 0 <= rollback.to_rollback_write_s <= rollback.to_recorded_s
    assert rollback.canary_latest is True and rollback.canary_release == "install_nginx.sh"
    # Start: each upload started exactly one canary upgrade, after the trigger fired, after the upload.
    assert len(start.runs) == 2
    assert all(r.canary_upgrades == 1 and 0 <= r.to_trigger_s <= r.to_upgrade_s for r in start.runs)

    # The JSON: every section, with the figures of this run in it.
    data = json.loads((tmp_path / "docs" / "performance.json").read_text())
    assert data["schema"] == plots.SCHEMA
    for section in plots.SECTIONS:
        assert walk_numbers(data[section]), f"{section}: no numbers"
    assert data["arm_requests"]["product"][0]["writes"] == run.writes
    assert data["arm_requests"]["product"][0]["by_operation"] == dict(sorted(run.by_operation.items()))
    assert data["tick"]["sizes"][0]["wall_s"] == run.tick_wall_s
    assert [s["name"] for s in data["makespan"]["sizes"][0]["steps"]] == [s.name for s in span.steps]
    assert data["rollback"][0]["to_recorded_s"] == rollback.to_recorded_s
    assert len(data["start_latency"]["runs"]) == 2
    # The plots: real PNGs of a readable size, the makespan one with a row per step of this run.
    for name in plots.PLOTS:
        width, height = png_size(tmp_path / "docs" / name)
        assert 500 <= width <= 3000 and 250 <= height <= 3000, (name, width, height)
    # One panel per run (the timer only, and with the engine's next looks when it asks for them).
    axes = plots.plot_makespan(data).get_axes()
    assert len(axes) == len(data["makespan"]["sizes"]) == (1 if looks is None else 2)
    for ax in axes:
        assert [t.get_text() for t in ax.get_yticklabels()] == [s.name for s in span.steps]
    # Rendered again from the JSON alone, in a fresh interpreter.
    again = tmp_path / "again"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.plots",
            "--json",
            str(tmp_path / "docs" / "performance.json"),
            "--out",
            str(again),
        ],
        cwd=Path(__file__).parents[2],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    for name in plots.PLOTS:
        png_size(again / name)
