"""bench/plots.py on small hand-made figures: the JSON of ``bench.perf.Figures`` and every plot rendered from it
(the PNG files, and the makespan plot's rows read from its axes, not from pixels). No benchmark runs here; the
real run at the smallest sizes is tests/integration/test_perf_bench.py."""

from __future__ import annotations

import ast
import dataclasses
import json
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench import plots
from bench.coldstart import ColdStart
from bench.makespan import Makespan, Rollback, Step
from bench.perf import ControllerRun, Figures, NaiveRun, report_lines
from bench.startlatency import StartLatency, StartRun

REPO = Path(__file__).parents[2]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from the PNG's IHDR chunk, after checking the signature."""
    head = path.read_bytes()[:24]
    assert head[:8] == PNG_SIGNATURE, f"{path.name} is not a PNG"
    assert head[12:16] == b"IHDR"
    width, height = struct.unpack(">II", head[16:24])
    return width, height


def small_figures() -> Figures:
    """Two sizes, hand-made: numbers chosen so that every plotted part is non-zero somewhere."""
    cold = [
        ColdStart("azure.functions", 0.070, 28.0),
        ColdStart("azure.functions + azure.data.tables", 0.110, 34.0),
        ColdStart("with the blob extension", 0.220, 55.0),
        ColdStart("function_app", 0.320, 61.0, serve_s=0.015, serve_rss_mib=62.0, loaded=("azure.data.tables",)),
    ]
    runs = [
        ControllerRun(
            instances=n,
            phase="Succeeded",
            seconds=10.0,
            tick_wall_s=[0.1 * k, 0.3 * k, 0.2 * k],
            tick_cpu_s=[0.05 * k, 0.1 * k, 0.08 * k],
            peak_rss_mib=60.0 + k,
            peak_threads=33,
            tick_observe_s=[0.05 * k, 0.2 * k, 0.1 * k],
            tick_probe_s=[0.03 * k, 0.05 * k, 0.06 * k],
            batches=5,
            by_operation={"GET scale set": 9, "GET list NICs": 9 * k, "POST manualupgrade": 6, "PUT extension": 1},
        )
        for n, k in ((10, 1), (1000, 10))
    ]
    naive = [
        NaiveRun(n, 12, 5.0, {"GET instance view (one VM)": 3 * n, "POST manualupgrade": n}, {}, True, n)
        for n in (10, 1000)
    ]
    budgeted = NaiveRun(1000, 40, 60.0, {"POST manualupgrade": 1300}, {"POST manualupgrade": 1285}, False, 15)

    def span(n: int, tick_phase: float) -> Makespan:
        # Canary written at 0.8 s: upgrade 4 s + bake 10 s -> ready at 14.8; then batches of 4 s each.
        steps = [Step("canary", 14.8, 16.0, 0.7, 0.4, 0.1)]
        t = 16.0
        for i in range(1, 4):
            steps.append(Step(f"batch {i}", t + 4.0, t + 5.0 + tick_phase, 0.9, 0.0, 0.1 + tick_phase))
            t += 5.0 + tick_phase
        return Makespan(
            n, "Succeeded", 3, t, 26.0, 0.8, steps, ticks=30, tick_wall_median_s=0.1, timings=(4.0, 10.0, 1.0)
        )

    rollbacks = [
        Rollback(10, "extension", "RolledBack", "0", 3.0, 0, 2.1, 6.1, 12.1, True, 4.0, "install_nginx.sh", True),
        Rollback(10, "http500", "RolledBack", "0", 5.0, 3, 4.1, 8.1, 14.1, True, 4.0, "install_nginx.sh", True),
    ]
    start = StartLatency(10, [StartRun(0.15, 0.55, 1), StartRun(0.16, 0.61, 1)])
    return Figures(
        cold,
        runs,
        naive,
        budgeted,
        60.0,
        7,
        50,
        (0.5, 0.4, 0.3),
        100.0,
        [span(10, 0.0), span(1000, 2.0)],
        rollbacks,
        start,
    )


def walk_numbers(value: Any) -> list[float]:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return []
    if isinstance(value, int | float):
        return [float(value)]
    if isinstance(value, dict):
        return [x for v in value.values() for x in walk_numbers(v)]
    return [x for v in value for x in walk_numbers(v)]


def test_the_json_has_every_section_with_the_figures_read_from_the_dataclasses() -> None:
    f = small_figures()
    data = json.loads(json.dumps(plots.figures_json(f, "test")))  # JSON-serializable as it is
    assert data["schema"] == plots.SCHEMA and set(plots.SECTIONS) <= data.keys()
    for section in plots.SECTIONS:
        assert walk_numbers(data[section]), f"{section} has no numbers"
    cold = data["cold_start"]
    assert [r["import_s"] for r in cold["rows"]] == [c.import_s for c in f.cold]
    assert cold["rows"][cold["baseline"]]["label"] == "azure.functions + azure.data.tables"
    product = data["arm_requests"]["product"][1]
    assert product["instances"] == 1000 and product["writes"] == 7 and product["by_operation"]["GET list NICs"] == 90
    assert data["arm_requests"]["naive_budgeted"]["throttled"] == {"POST manualupgrade": 1285}
    tick = data["tick"]["sizes"][1]
    assert tick["wall_s"] == f.runs[1].tick_wall_s and tick["fleet_read_s"] == f.runs[1].tick_observe_s
    span = data["makespan"]["sizes"][1]
    assert span["ratio"] == pytest.approx(f.makespans[1].ratio) and len(span["steps"]) == 4
    assert (span["upgrade_s"], span["bake_s"], span["tick_s"]) == (4.0, 10.0, 1.0) and span["ticks"] == 30
    canary, batch = span["steps"][0], span["steps"][1]
    # The step's write: its ready time less its upgrade (and, for the canary, the bake).
    assert canary["write_s"] == pytest.approx(0.8) and batch["write_s"] == pytest.approx(16.0)
    for s in span["steps"]:
        assert s["lost_s"] == pytest.approx(s["waiting_s"] + s["idle_ticks_s"] + s["tick_phase_s"])
    assert [r["mode"] for r in data["rollback"]] == ["extension", "http500"]
    assert data["start_latency"]["median_s"] == pytest.approx(0.58)


def test_a_makespan_field_added_later_is_carried_into_the_json_under_its_own_name() -> None:
    @dataclasses.dataclass
    class Later(Makespan):
        added_later_s: float = 0.0
        added_later_flag: bool = False

    base = small_figures().makespans[0]
    later = Later(
        **{f.name: getattr(base, f.name) for f in dataclasses.fields(base)}, added_later_s=900.0, added_later_flag=True
    )
    entry = json.loads(json.dumps(plots._makespan(later)))
    assert entry["added_later_s"] == 900.0 and entry["added_later_flag"] is True
    assert entry["ratio"] == pytest.approx(later.ratio) and len(entry["steps"]) == len(base.steps)


def test_every_plot_is_written_as_a_png_and_the_makespan_plot_has_one_row_per_step(tmp_path: Path) -> None:
    data = json.loads(json.dumps(plots.figures_json(small_figures(), "test")))
    written = plots.render(data, tmp_path)
    assert [p.name for p in written] == list(plots.PLOTS)
    for path in written:
        width, height = png_size(path)
        assert 500 <= width <= 3000 and 250 <= height <= 3000, (path.name, width, height)

    fig = plots.plot_makespan(data)
    axes = fig.get_axes()
    assert len(axes) == 2  # one per size
    for ax, size in zip(axes, data["makespan"]["sizes"], strict=True):
        names = [s["name"] for s in size["steps"]]
        assert [t.get_text() for t in ax.get_yticklabels()] == names
        assert str(size["instances"]) in ax.get_title().replace(",", "")
        # Each step's row holds its own bars: from its write (the canary: from start_release) to the next write.
        for row, s in enumerate(size["steps"]):
            bars = [b for b in _bars(ax) if b[2] == row and b[3] != "lower bound"]
            assert {b[3] for b in bars} >= {"upgrade", "waiting"}
            assert min(b[0] for b in bars) <= s["write_s"] + 1e-9
            assert max(b[1] for b in bars) == pytest.approx(s["acted_s"])
        lines = {round(line.get_xdata()[0], 6) for line in ax.get_lines()}
        assert round(size["lower_bound_s"], 6) in lines and round(size["makespan_s"], 6) in lines
    assert axes[-1].get_xlabel() == "time after start_release (s)"
    # Two runs of one size (the timer only, the engine's next looks honoured) are told apart in their titles.
    data["makespan"]["sizes"][0]["honoured"], data["makespan"]["sizes"][1]["honoured"] = False, True
    titles = [ax.get_title() for ax in plots.plot_makespan(data).get_axes()]
    assert "the timer only" in titles[0] and "next looks honoured" in titles[1]

    arm = plots.plot_arm_requests(data)
    assert all(ax.get_xscale() == "log" for ax in arm.get_axes())
    tick = plots.plot_tick(data)
    assert any(
        line.get_ydata()[0] == 1.0
        for ax in tick.get_axes()
        for line in ax.get_lines()
        if line.get_label().startswith("target")
    )
    cold = plots.plot_coldstart(data)
    targets = [line.get_xdata()[0] for ax in cold.get_axes() for line in ax.get_lines()]
    assert targets == pytest.approx([1.3 * 110, 1.3 * 34])  # 1.3 x the functions + tables row, time and memory


def _bars(ax: Any) -> list[tuple[float, float, int, str]]:
    """(start, end, row, kind) of every bar of the makespan axes (its ``broken_barh`` collections)."""
    out = []
    for coll in ax.collections:
        for path in coll.get_paths():
            xs, ys = path.vertices[:, 0], path.vertices[:, 1]
            out.append((float(xs.min()), float(xs.max()), round(float(ys.mean())), coll.get_label()))
    return out


def test_the_report_links_every_plot_and_the_json() -> None:
    text = "\n".join(report_lines(small_figures(), "test") + plots.report_lines())
    assert "no plots" not in text
    assert "[performance.json](performance.json)" in text
    for name in plots.PLOTS:
        assert f"]({name})" in text


def test_the_plots_are_rendered_again_from_the_json_alone(tmp_path: Path) -> None:
    path = plots.write_json(plots.figures_json(small_figures(), "test"), tmp_path / "performance.json")
    out = subprocess.run(
        [sys.executable, "-m", "bench.plots", "--json", str(path), "--out", str(tmp_path / "again")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert sorted(p.name for p in (tmp_path / "again").iterdir()) == sorted(plots.PLOTS)
    for name in plots.PLOTS:
        png_size(tmp_path / "again" / name)


def test_a_json_that_is_not_the_figures_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "performance.json"
    bad.write_text(json.dumps({"schema": plots.SCHEMA, "cold_start": {}}))
    assert plots.main(["--json", str(bad)]) == 2
    bad.write_text("not json")
    assert plots.main(["--json", str(bad)]) == 2
    assert plots.main(["--json", str(tmp_path / "missing.json")]) == 2


def imported_roots(path: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_matplotlib_is_a_benchmark_dependency_only() -> None:
    deployed = [REPO / "function_app.py", *sorted((REPO / "rollout").rglob("*.py"))]
    assert all("matplotlib" not in imported_roots(p) for p in deployed)
    assert "matplotlib" not in (REPO / "requirements.txt").read_text()
    assert any(line.startswith("matplotlib==") for line in (REPO / "requirements-dev.txt").read_text().splitlines())
