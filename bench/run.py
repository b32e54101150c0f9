"""``make bench``: the speed and memory figures, printed and written to docs/benchmarks.md.

1. ``decide`` alone (pure, no I/O) on fleets of 100 to 10,000 instances: the cost of one decision.
2. Whole rollouts through the real adapters (ARM emulator over HTTPS, Azurite tables, real HTTP
   probes of every synthetic instance) on fleets of 100 to 500: ticks, ARM calls, the slowest tick
   and the process's peak resident memory.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.harness import TOKEN, expected_batches, run_rollout
from emulator.twin import backends
from rollout.machine import decide
from rollout.model import (
    ExtensionSpec,
    FleetView,
    InstanceView,
    ModelSpec,
    Phase,
    ProbeResult,
    Release,
    ReleaseKind,
    Rollout,
)
from rollout.policy import RolloutPolicy

DOCS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def bench_decide(size: int, repeat: int = 20) -> float:
    ext = ExtensionSpec("CustomScript", "Microsoft.Azure.Extensions", "CustomScript", "2.1", {"fileUris": ["u1"]})
    old = ModelSpec(
        extension=ExtensionSpec(
            "CustomScript", "Microsoft.Azure.Extensions", "CustomScript", "2.1", {"fileUris": ["u0"]}
        )
    )
    new = ModelSpec(extension=ext)
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    half = size // 2
    upgraded = tuple(str(i) for i in range(half))
    rollout = Rollout(
        id="r",
        target="t",
        release=Release(ReleaseKind.SCRIPT, "a", 1, "a.v1.sh", "https://x/a.v1.sh", "0" * 64),
        phase=Phase.PROMOTING,
        desired=new,
        baseline=old,
        created_at=t0,
        updated_at=t0,
        phase_since=t0,
        last_progress_at=t0,
        canary_ids=("0",),
        upgraded_ids=upgraded,
    )
    ok = ProbeResult(True, "200 in 1 ms")
    fleet = FleetView(
        model=new,
        provisioning_state="Succeeded",
        instances=tuple(
            InstanceView(
                str(i), i < half, "Succeeded", "running", "Succeeded", "", None, f"10.0.{i // 250}.{i % 250}", ok
            )
            for i in range(size)
        ),
    )
    policy = RolloutPolicy()
    started = time.perf_counter()
    for _ in range(repeat):
        decision = decide(rollout, fleet, policy, t0 + timedelta(seconds=30))
    elapsed = (time.perf_counter() - started) / repeat
    assert decision.actions, "the benchmark must measure a decision that starts a batch"
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make bench")
    parser.add_argument("--sizes", default="100,300,500", help="fleet sizes for whole rollouts")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    lines = [
        "# Benchmarks",
        "",
        f"Written by `make bench` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {platform.machine()}, "
        f"Python {platform.python_version()}, the 2-core machine of this project. Figures from one run.",
        "",
        "## `decide`: one decision, pure (fleet half promoted, next batch chosen)",
        "",
        "| instances | time per decision |",
        "|---:|---:|",
    ]
    for size in (100, 1000, 10_000):
        seconds = bench_decide(size)
        lines.append(f"| {size:,} | {seconds * 1000:.2f} ms |")
        print(lines[-1], flush=True)

    lines += [
        "",
        "## Whole rollouts through the real adapters",
        "",
        "ARM emulator over HTTPS (VM list page size 50; 0.2 s per upgrade), Azurite tables, HTTP probes",
        "of every served synthetic instance; policy: no bake, batches of 20%, max unavailable 20%.",
        "A tick = one scale set GET + the paged VM list + the NIC list + one probe per instance + decide + save.",
        "Controller, emulator and every instance's HTTP server share one Python process (and its GIL), so",
        "the tick times are an upper bound for the controller alone; the RSS includes all of them.",
        "",
        "| instances | result | ticks | wall time | median tick | slowest tick "
        "| manualupgrade calls (expected) | extension writes | peak RSS (whole process) |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    policy = RolloutPolicy(bake_seconds=0, batch_percent=20, max_unavailable_percent=20)
    # The twin's two backends (emulator/twin.py), with synthetic instances on port 8080 and no throttling.
    arm_options = {"token": TOKEN, "address_base": "127.0.60.1", "instance_port": 8080, "throttle": None}
    with backends(**arm_options, upgrade_seconds=0.2, retry_after=0.05) as parts:
        emulator = parts.emulator
        emulator.set_page_size(50)
        for size in sizes:
            run = run_rollout(emulator, parts.azurite.connection_string, f"b{size}", size, policy=policy)
            median, slowest = run.median_tick * 1000, run.slowest_tick * 1000
            calls = f"{run.manualupgrade_calls} ({expected_batches(size, policy)})"
            lines.append(
                f"| {size} | {run.phase.value} | {run.ticks} | {run.seconds:.1f} s | {median:.0f} ms "
                f"| {slowest:.0f} ms | {calls} | {run.extension_writes} | {run.peak_rss_mib:.0f} MiB |"
            )
            print(lines[-1], flush=True)
    lines += [
        "",
        "The scale test `tests/integration/test_scale.py` (marked `slow`) runs the same rollout on 40",
        "instances in `make test`; `SCALE_INSTANCES=500` runs it at this size.",
        "",
        "A release across the waves of 200 scale sets through the function app (timer fan-out, queue-triggered",
        "ticks, ARM's read and write budgets): `make bench-waves`, figures in docs/fleet-benchmark.md.",
        "",
    ]
    if not args.no_write:
        DOCS.parent.mkdir(exist_ok=True)
        DOCS.write_text("\n".join(lines))
        print(f"written to {DOCS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
