"""The canary judge inside the decider (rollout.machine): what a bake tick does with each verdict, the
human's verbs on a Marginal pause, the judge's state in the rollout row, and the pre-batch health."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from rollout.adapters.tables import rollout_from_entity, rollout_to_entity
from rollout.judge import JudgeState, Tally
from rollout.judge import Verdict as JudgeVerdict
from rollout.machine import CommandError, Notify, UpgradeInstances, apply_command, decide
from rollout.model import EventKind, FleetView, Phase, Rollout
from rollout.signals import InstanceSignals
from rollout.views import rollout_detail
from tests.unit.test_machine import BAD, POLICY, T0, I, fleet, rollout


def baking(**changes: object) -> Rollout:
    return rollout(Phase.BAKING, canary_ids=("0",), upgraded_ids=("0",), **changes)


def with_signals(view: FleetView, at: int, **per_instance: tuple[int, int, tuple[float, ...]]) -> FleetView:
    start, end = T0 + timedelta(seconds=at - 30), T0 + timedelta(seconds=at)
    signals = {
        iid: InstanceSignals(iid, start, end, requests=n, errors=e, latencies_ms=lat)
        for iid, (n, e, lat) in per_instance.items()
    }
    return replace(view, signals=signals)


FLEET = fleet(I("0", latest=True), I("1"), I("2"))


def test_the_first_bake_tick_starts_the_judgement_with_an_equal_baseline_from_the_bake_start() -> None:
    d = decide(baking(), FLEET, POLICY, T0 + timedelta(seconds=30))
    j = d.rollout.judge
    assert j is not None and j.started_at == T0 and j.baseline_ids == ("1",)
    assert (j.canary.requests, j.canary.errors, j.baseline.requests) == (1, 0, 1)
    assert j.verdict is JudgeVerdict.PENDING and j.looks == 1
    assert d.rollout.phase is Phase.BAKING and d.events == ()


def test_signals_add_to_the_probes_and_inconsistent_ones_are_bounded() -> None:
    view = with_signals(FLEET, 30, **{"0": (50, 2, (10.0,) * 48), "1": (50, 70, ()), "2": (9, 0, ())})
    j = decide(baking(), view, POLICY, T0 + timedelta(seconds=30)).rollout.judge
    assert j is not None
    assert (j.canary.requests, j.canary.errors, j.canary.latency_count) == (51, 2, 48)
    assert (j.baseline.requests, j.baseline.errors) == (51, 50)  # 70 errors of 50 requests: counted as 50
    assert j.baseline_ids == ("1",)  # instance 2 is not in the comparison: as many baseline instances as canaries


def test_a_judged_fail_rolls_back_at_once_with_the_figures() -> None:
    view = with_signals(FLEET, 30, **{"0": (400, 120, ()), "1": (400, 2, ())})
    d = decide(baking(), view, POLICY, T0 + timedelta(seconds=30))
    assert d.rollout.phase is Phase.ROLLING_BACK
    assert d.rollout.rollback_reason.startswith("canary judged worse than the baseline: Fail: error rate 29.93%")
    [judged] = [e for e in d.events if e.kind is EventKind.JUDGED]
    assert judged.data["judgement"]["verdict"] == "Fail" and judged.data["judgement"]["errorRate"]["z"] > 5
    assert any(isinstance(a, Notify) for a in d.actions)


def test_a_failed_extension_is_rolled_back_before_the_judge_is_asked() -> None:
    d = decide(baking(), fleet(I("0", latest=True, state="Failed", ext="Failed"), I("1")), POLICY, T0)
    assert d.rollout.phase is Phase.ROLLING_BACK and d.rollout.judge is None
    assert d.rollout.rollback_reason.startswith("canary failed while baking")


def _marginal_tally() -> JudgeState:
    return JudgeState(baseline_ids=("1",), started_at=T0, canary=Tally(40, 4), baseline=Tally(40, 0))


def test_the_end_of_a_bake_leaning_worse_pauses_for_a_human() -> None:
    r = baking(judge=_marginal_tally())
    d = decide(r, FLEET, POLICY, T0 + timedelta(seconds=300))
    assert d.rollout.phase is Phase.PAUSED and d.rollout.resume_to is Phase.BAKING
    assert d.rollout.judge is not None and d.rollout.judge.verdict is JudgeVerdict.MARGINAL
    assert d.rollout.reason.startswith("canary judged Marginal, a human decides (promote or abort)")
    assert [e.kind for e in d.events] == [EventKind.JUDGED, EventKind.PHASE_CHANGED]
    assert not any(isinstance(a, UpgradeInstances) for a in d.actions)
    # Ticks leave it paused.
    assert decide(d.rollout, FLEET, POLICY, T0 + timedelta(seconds=400)).rollout.phase is Phase.PAUSED


def test_promote_after_a_marginal_verdict_goes_on_and_abort_rolls_back() -> None:
    paused = decide(baking(judge=_marginal_tally()), FLEET, POLICY, T0 + timedelta(seconds=300)).rollout
    at = T0 + timedelta(seconds=330)
    promoted = apply_command(paused, "promote", at, actor="alice")
    assert promoted.rollout.phase is Phase.BAKING and promoted.rollout.skip_bake
    assert promoted.rollout.resume_to is None and promoted.rollout.last_progress_at == at
    assert decide(promoted.rollout, FLEET, POLICY, at).rollout.phase is Phase.PROMOTING
    aborted = apply_command(paused, "abort", at, actor="bob")
    assert aborted.rollout.phase is Phase.ROLLING_BACK
    assert aborted.rollout.rollback_reason == "aborted by bob after a Marginal verdict"


def test_a_pause_by_an_operator_is_not_a_marginal_verdict() -> None:
    paused = apply_command(baking(judge=_marginal_tally()), "pause", T0).rollout
    with pytest.raises(CommandError):
        apply_command(paused, "promote", T0)
    assert apply_command(paused, "abort", T0).rollout.phase is Phase.ABORTED
    resumed = apply_command(paused, "resume", T0 + timedelta(seconds=10)).rollout
    assert resumed.phase is Phase.BAKING and resumed.judge is None  # judged afresh after a pause


def test_a_clean_canary_with_traffic_is_promoted_early_but_only_when_healthy() -> None:
    lat = tuple(20.0 + (i % 7) for i in range(3000))
    clean = with_signals(FLEET, 60, **{"0": (3000, 0, lat), "1": (3000, 0, lat)})
    d = decide(baking(), clean, POLICY, T0 + timedelta(seconds=60))
    assert d.rollout.phase is Phase.PROMOTING
    changes = [e.message for e in d.events if e.kind is EventKind.PHASE_CHANGED]
    assert changes[0].startswith("Baking -> Promoting: canary judged Pass 60 of 300 s into the bake: Pass:")
    sick = with_signals(fleet(I("0", latest=True, probe=BAD), I("1"), I("2")), 60, **{"0": (3000, 0, lat)})
    at = T0 + timedelta(seconds=60)
    held = decide(baking(), replace(sick, signals={**sick.signals, "1": clean.signals["1"]}), POLICY, at)
    assert held.rollout.phase is Phase.BAKING and held.rollout.unhealthy_streak == 1
    assert held.rollout.judge is not None and held.rollout.judge.verdict is JudgeVerdict.PASS


def test_the_judgement_is_stored_in_the_rollout_row_and_shown_by_the_api() -> None:
    d = decide(baking(), with_signals(FLEET, 30, **{"0": (50, 1, (12.0,) * 49)}), POLICY, T0 + timedelta(seconds=30))
    r = d.rollout.evolve(unhealthy_before=("2",))
    entity = rollout_to_entity(r)
    assert len(entity["judge"]) < 2000
    back = rollout_from_entity(entity)
    assert back.judge == r.judge and back.unhealthy_before == ("2",)
    old_row = {k: v for k, v in entity.items() if k not in ("judge", "unhealthy_before")}
    assert rollout_from_entity(old_row).judge is None  # rows written before the judge read back
    detail = rollout_detail(r, [])
    assert detail["judgement"]["verdict"] == "Pending" and detail["judgement"]["canary"]["requests"] == 51
    assert detail["judgement"]["baselineInstances"] == ["1"] and detail["unhealthyBefore"] == ["2"]
    assert rollout_detail(baking(), [])["judgement"] is None


# --- pre-batch health ----------------------------------------------------------------------------------


def promoting(**changes: object) -> Rollout:
    return rollout(Phase.PROMOTING, **{"canary_ids": ("0",), "upgraded_ids": ("0",), **changes})


def test_a_batch_records_which_of_its_instances_were_unhealthy_before_it() -> None:
    view = fleet(I("0", latest=True), I("1", probe=BAD), I("2"), I("3"))
    d = decide(promoting(), view, POLICY, T0)
    assert d.actions[-1] == UpgradeInstances(("1", "2"), "batch")
    assert d.rollout.unhealthy_before == ("1",)


def test_an_instance_unhealthy_before_its_batch_and_after_is_not_counted() -> None:
    r = promoting(batch_ids=("1", "2"), batch_number=1, upgraded_ids=("0", "1", "2"), unhealthy_before=("1",))
    view = fleet(I("0", latest=True), I("1", latest=True, probe=BAD), I("2", latest=True), I("3"))
    d = decide(r, view, POLICY, T0)
    assert EventKind.BATCH_SUCCEEDED in [e.kind for e in d.events]
    assert d.rollout.unhealthy_streak == 0 and d.rollout.phase is Phase.PROMOTING
    # Without the record it counts, as before.
    counted = decide(r.evolve(unhealthy_before=()), view, POLICY, T0)
    assert counted.rollout.unhealthy_streak == 1 and EventKind.HEALTH_CHECK_FAILED in [e.kind for e in counted.events]


def test_the_last_batch_succeeds_around_an_instance_unhealthy_before_it() -> None:
    r = promoting(upgraded_ids=("0", "1", "2"), unhealthy_before=("1",))
    view = fleet(I("0", latest=True), I("1", latest=True, probe=BAD), I("2", latest=True))
    d = decide(r, view, POLICY, T0)
    assert d.rollout.phase is Phase.SUCCEEDED
    assert d.rollout.reason == "all 3 instances on install_nginx v1; healthy but 1, unhealthy before their batch as now"


def test_a_failed_extension_on_an_instance_unhealthy_before_is_still_a_fail() -> None:
    r = promoting(batch_ids=("1",), batch_number=1, upgraded_ids=("0", "1"), unhealthy_before=("1",))
    view = fleet(I("0", latest=True), I("1", latest=True, state="Failed", ext="Failed"), I("2"))
    assert decide(r, view, POLICY, T0).rollout.phase is Phase.ROLLING_BACK


def test_an_instance_seen_healthy_on_the_release_counts_from_then_on() -> None:
    r = promoting(upgraded_ids=("0", "1"), unhealthy_before=("1", "9"))
    d = decide(r, fleet(I("0", latest=True), I("1", latest=True), I("2")), POLICY, T0)
    assert d.rollout.unhealthy_before == ()  # 1 recovered, 9 left the scale set
