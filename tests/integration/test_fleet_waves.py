"""The fleet benchmark's claim, checked at a small size in CI: a release crosses the waves of a group of
many scale sets through the function app (local Functions host: blob trigger, timer fan-out, queue-triggered
ticks; Azurite; the ARM emulator over HTTPS in its own process with ARM's subscription read bucket and the
per-scale-set write budget on), every target with work is ticked within one tick interval of the timer,
and ARM answers no 429. ``make bench-waves`` runs the same function on 200 scale sets of 20 instances
(docs/fleet-benchmark.md)."""

from __future__ import annotations

import pytest

from bench.waves import WavesConfig, report_lines, run_waves

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_a_release_crosses_two_waves_of_ten_scale_sets_every_target_ticked_in_time_and_no_429() -> None:
    config = WavesConfig(scale_sets=10, instances=3, waves=2, tick_seconds=5, upgrade_seconds=1.0, timeout_s=120)
    report = run_waves(config)
    text = "\n".join(report_lines(report, "pytest"))
    assert report.phase == "Succeeded", text
    # Both waves ran, one after the other.
    assert len(report.wave_seconds) == 2, text
    (first_start, first_end), (second_start, second_end) = report.wave_seconds
    assert first_end <= second_start < second_end, text
    # Every timer run with work: each of its targets ticked, within one interval of the timer firing.
    active = [p for p in report.periods if p.with_work]
    assert len(active) >= 4, text  # at least two ticks per wave: the fan-out really drove the rollouts
    # One wave at a time (never more than its 5 targets), each target with work ticked once. A target may end
    # a timer run before its wave-mates (a CI run saw 5, 5, 2 in one wave), so a run may have fewer.
    assert all(1 <= p.with_work <= 5 and p.ticked == p.with_work for p in active), text
    assert max(p.with_work for p in active) == 5, text
    assert report.late_periods == [], text
    assert report.timer_skipped == 0 and report.all_in_time, text
    assert all(max(p.latencies) <= config.tick_seconds for p in active), text
    assert report.unmatched_ticks == 0, text
    # Zero 429s, reads and writes, with both budgets on; the reads did go through the bucket.
    assert report.arm_429_by_operation == {}, text
    assert report.reads_throttled == 0, text
    assert report.arm_by_operation["GET list VMs (instance view)"] >= 10 * 2, text
    assert report.arm_by_operation["POST manualupgrade"] >= 10 * 2, text  # a canary and a batch per target
    # Each tick is a handful of state-store requests, not a scan.
    ticks = [t for t in report.ticks if t.status != "error"]
    assert ticks and max(t.table_requests for t in ticks) <= 12, text
