"""The decider's defects of issue 8 (2, 3, 4, 5/6 and the rollback capacity policy), as tables of cases.

Each test failed on the decider as it was before the fix; the service-level scenarios on the fakes
are in tests/service/test_decider_defects.py.
"""

from __future__ import annotations

from datetime import timedelta

from rollout.machine import ReimageInstances, UpdateModel, UpgradeInstances, apply_command, decide
from rollout.model import EventKind, ModelSpec, Phase
from rollout.policy import RolloutPolicy
from tests.unit.test_machine import BAD, NEW, OLD, POLICY, T0, I, fleet, rollout

LATER = T0 + timedelta(seconds=30)
NEW_ON_IMAGE_A = ModelSpec(extension=NEW.extension, image_id="/img/a")
NEW_ON_IMAGE_B = ModelSpec(extension=NEW.extension, image_id="/img/b")


# --- 2. a rollout can bake for ever ---------------------------------------------------------------


def test_baking_a_canary_scaled_in_is_replaced_within_the_budget() -> None:
    baking = rollout(Phase.BAKING, canary_ids=("0",), upgraded_ids=("0",))
    decision = decide(baking, fleet(I("1"), I("2"), I("3")), POLICY, LATER)
    assert decision.rollout.phase is Phase.CANARY, decision.rollout.reason
    assert decision.actions == (UpgradeInstances(("1",), "canary"),)
    assert decision.rollout.canary_ids == ("1",)
    assert [e.kind for e in decision.events][:1] == [EventKind.CANARY_LOST]


def test_baking_with_one_of_two_canaries_scaled_in_bakes_on_with_the_other() -> None:
    baking = rollout(Phase.BAKING, canary_ids=("0", "1"), upgraded_ids=("0", "1"))
    decision = decide(baking, fleet(I("1", latest=True), I("2")), POLICY, T0 + timedelta(seconds=100))
    assert decision.rollout.phase is Phase.BAKING and decision.rollout.canary_ids == ("1",)
    assert decision.actions == ()


def test_baking_on_hold_past_the_progress_deadline_rolls_back() -> None:
    baking = rollout(Phase.BAKING, canary_ids=("0",), upgraded_ids=("0",))
    on_hold = fleet(I("0", latest=True, probe=BAD), I("1", probe=BAD), I("2", probe=BAD))  # inconclusive
    assert decide(baking, on_hold, POLICY, T0 + timedelta(seconds=600)).rollout.phase is Phase.BAKING
    late = decide(baking, on_hold, POLICY, T0 + timedelta(seconds=601))
    assert late.rollout.phase is Phase.ROLLING_BACK
    assert "the bake made no progress in 600 s" in late.rollout.rollback_reason


def test_a_healthy_bake_longer_than_the_progress_deadline_is_progress() -> None:
    policy = RolloutPolicy(bake_seconds=900, progress_deadline_seconds=600, max_unavailable=2, batch_size=2)
    baking = rollout(Phase.BAKING, canary_ids=("0",), upgraded_ids=("0",))
    healthy = fleet(I("0", latest=True), I("1"), I("2"))
    r = baking
    for minute in range(1, 15):
        r = decide(r, healthy, policy, T0 + timedelta(seconds=60 * minute)).rollout
        assert r.phase is Phase.BAKING, r.reason
    assert decide(r, healthy, policy, T0 + timedelta(seconds=900)).rollout.phase is Phase.PROMOTING


def test_an_edit_of_the_image_during_a_script_release_stops_it_as_failed_in_every_phase() -> None:
    for phase, extra in (
        (Phase.CANARY, {"batch_ids": ("0",)}),
        (Phase.BAKING, {}),
        (Phase.PROMOTING, {}),
    ):
        r = rollout(phase, canary_ids=("0",), upgraded_ids=("0",), **extra)
        canary = I("0", state="Updating", probe=None) if phase is Phase.CANARY else I("0", latest=True)
        seen = decide(r, fleet(canary, I("1"), I("2"), model=NEW_ON_IMAGE_A), POLICY, LATER).rollout
        assert seen.phase is phase
        assert seen.foreign_model, phase  # the reference is taken once the release's part is on the model
        edited = fleet(I("0"), I("1"), I("2"), model=NEW_ON_IMAGE_B)
        decision = decide(seen, edited, POLICY, LATER + timedelta(seconds=30))
        assert decision.rollout.phase is Phase.FAILED, (phase, decision.rollout.reason)
        assert decision.rollout.failed_from is phase
        assert "model changed outside the rollout" in decision.rollout.reason and "image" in decision.rollout.reason
        assert not [a for a in decision.actions if isinstance(a, UpgradeInstances)]


# --- 3. retry re-canaried from scratch ------------------------------------------------------------


def test_retry_keeps_instances_already_on_the_release_as_the_canary_and_upgrades_none_again() -> None:
    failed = rollout(Phase.FAILED, failed_from=Phase.PROMOTING, canary_ids=("0",), upgraded_ids=("0", "1"))
    retried = apply_command(failed, "retry", T0 + timedelta(hours=1)).rollout
    assert retried.upgraded_ids == ("0", "1")  # a rollback still knows what to move back
    # The release's model written again; 0 and 1 still run it (latest), 2 and 3 do not.
    observed = fleet(I("0", latest=True), I("1", latest=True), I("2"), I("3"))
    decision = decide(retried, observed, POLICY, T0 + timedelta(hours=1, seconds=30))
    upgraded = [i for a in decision.actions if isinstance(a, UpgradeInstances) for i in a.instance_ids]
    assert "0" not in upgraded and "1" not in upgraded, decision.actions
    assert decision.rollout.canary_ids == ("0",)


def test_retry_counts_an_earlier_canary_still_down_against_the_budget() -> None:
    policy = RolloutPolicy(max_unavailable=1, batch_size=1, progress_deadline_seconds=600)
    failed = rollout(Phase.FAILED, failed_from=Phase.BAKING, canary_ids=("0",), upgraded_ids=("0",))
    retried = apply_command(failed, "retry", T0).rollout
    # The old canary reads outdated after the model is written again (a model version) and is down.
    observed = fleet(I("0", probe=BAD), I("1"), I("2"), I("3"), I("4"))
    decision = decide(retried, observed, policy, LATER)
    assert decision.actions == (), "a new canary now would take a second instance down with MAX_UNAVAILABLE=1"
    assert "unavailability budget" in decision.rollout.reason


def test_retry_restamps_progress_and_the_phase_clock() -> None:
    later = T0 + timedelta(hours=3)
    for failed_from in (Phase.PROMOTING, Phase.ROLLING_BACK):
        failed = rollout(Phase.FAILED, failed_from=failed_from, batch_started_at=T0)
        retried = apply_command(failed, "retry", later).rollout
        assert retried.last_progress_at == later and retried.phase_since == later
        assert retried.batch_started_at is None


# --- 4. a re-issued batch skipped the budget ------------------------------------------------------


def test_a_reissued_batch_is_trimmed_to_the_budget_of_the_current_observation() -> None:
    policy = RolloutPolicy(batch_size=4, max_unavailable=3, progress_deadline_seconds=600)
    # Chosen while 4..7 were down (they cost nothing then); throttled; now they are all healthy.
    r = rollout(
        Phase.PROMOTING,
        canary_ids=("0",),
        upgraded_ids=("0", "4", "5", "6", "7"),
        batch_ids=("4", "5", "6", "7"),
        batch_number=1,
        batch_started_at=None,
    )
    observed = fleet(I("0", latest=True), *(I(str(i)) for i in range(1, 8)))
    decision = decide(r, observed, policy, LATER)
    assert decision.actions == (UpgradeInstances(("4", "5", "6"), "batch"),)
    assert decision.rollout.batch_ids == ("4", "5", "6")
    assert "7" not in decision.rollout.upgraded_ids  # back in the outdated pool for a later batch
    assert EventKind.BATCH_TRIMMED in [e.kind for e in decision.events]


def test_a_reissued_batch_counts_instances_down_outside_it() -> None:
    policy = RolloutPolicy(batch_size=2, max_unavailable=2, progress_deadline_seconds=600)
    r = rollout(Phase.PROMOTING, canary_ids=("0",), upgraded_ids=("0", "1", "2"), batch_ids=("1", "2"), batch_number=1)
    # Since the batch was chosen, 3 went down: only one of the batch may go now.
    observed = fleet(I("0", latest=True), I("1"), I("2"), I("3", probe=BAD), I("4"))
    decision = decide(r, observed, policy, T0 + timedelta(seconds=301))
    assert decision.actions == (UpgradeInstances(("1",), "batch"),)


def test_a_batch_scaled_in_entirely_does_not_stall_promotion() -> None:
    r = rollout(Phase.PROMOTING, canary_ids=("0",), upgraded_ids=("0", "1"), batch_ids=("1",), batch_number=1)
    decision = decide(r, fleet(I("0", latest=True), I("2"), I("3")), POLICY, LATER)
    assert decision.actions == (UpgradeInstances(("2", "3"), "batch"),)
    assert decision.rollout.batch_number == 2


# --- 5 and 6: rollback is level-triggered --------------------------------------------------------


def test_an_instance_on_the_release_that_the_rollout_did_not_upgrade_is_recorded() -> None:
    r = rollout(Phase.PROMOTING, canary_ids=("0",), upgraded_ids=("0",), batch_ids=("1",), batch_number=1)
    observed = fleet(I("0", latest=True), I("1", state="Updating", probe=None), I("2"), I("5", latest=True))
    decision = decide(r, observed, POLICY, LATER)
    assert decision.rollout.upgraded_ids == ("0", "5")
    assert EventKind.INSTANCES_ON_RELEASE in [e.kind for e in decision.events]


def test_rollback_moves_back_an_instance_scaled_out_on_the_release() -> None:
    r = rollout(Phase.ROLLING_BACK, upgraded_ids=("0",), rollback_reason="x")
    # Before the baseline is written back, instance 5 (a scale-out) runs the release.
    restoring = decide(r, fleet(I("0", latest=True), I("1"), I("5", latest=True)), POLICY, LATER)
    assert restoring.actions == (UpdateModel(OLD, "rollback"),)
    assert restoring.rollout.upgraded_ids == ("0", "5")
    # Baseline back: 0 and 5 are outdated, 1 never left it.
    moving = decide(restoring.rollout, fleet(I("0"), I("1"), I("5"), model=OLD), POLICY, LATER)
    assert moving.actions == (UpgradeInstances(("0", "5"), "rollback"),)


def test_rolled_back_is_not_declared_while_an_instance_is_off_the_baseline_or_updating() -> None:
    done = {"upgraded_ids": ("0",), "rollback_ids": ("0",), "reimaged_ids": ("0",), "rollback_reason": "x"}
    # Content comparison: an outdated instance after the baseline came back is not on it (a scale-out
    # created between the last observation and the restore); it was recorded as on the release.
    r = rollout(Phase.ROLLING_BACK, **{**done, "upgraded_ids": ("0", "3")})
    decision = decide(r, fleet(I("0", latest=True), I("1", latest=True), I("3"), model=OLD), POLICY, LATER)
    assert decision.rollout.phase is Phase.ROLLING_BACK
    assert decision.actions == (UpgradeInstances(("3",), "rollback"),)
    # Someone's upgrade (or a scale-out) still running: not done yet.
    r = rollout(Phase.ROLLING_BACK, **done)
    busy = fleet(I("0", latest=True), I("1", latest=True), I("2", state="Creating", probe=None), model=OLD)
    assert decide(r, busy, POLICY, LATER).rollout.phase is Phase.ROLLING_BACK


def test_an_instance_moved_back_that_takes_the_release_again_is_moved_back_again() -> None:
    # A manualupgrade of the release saved before an abort landed after the instance was moved back.
    r = rollout(
        Phase.ROLLING_BACK,
        upgraded_ids=("0", "1"),
        rollback_ids=("0", "1"),
        reimaged_ids=("0", "1"),
        batch_started_at=T0,
        rollback_reason="aborted",
    )
    observed = fleet(I("0", latest=True), I("1"), I("2", latest=True), model=OLD)
    assert decide(r, observed, POLICY, LATER).actions == ()  # inside the retry window
    decision = decide(r, observed, POLICY, T0 + timedelta(seconds=301))
    assert decision.actions == (UpgradeInstances(("1",), "retry"),)
    assert decision.rollout.phase is Phase.ROLLING_BACK


def test_rolled_back_needs_every_instance_healthy() -> None:
    r = rollout(Phase.ROLLING_BACK, upgraded_ids=("0",), rollback_ids=("0",), reimaged_ids=("0",), rollback_reason="x")
    observed = fleet(I("0", latest=True), I("1", probe=BAD), model=OLD)
    decision = decide(r, observed, POLICY, LATER)
    assert decision.rollout.phase is Phase.ROLLING_BACK and decision.actions == ()
    assert "instance 1: probe failed" in decision.rollout.reason
    # Not reimaged (the release never reached it); the rollback deadline makes it a human's call.
    stuck = decide(decision.rollout, observed, POLICY, T0 + timedelta(seconds=1201))
    assert stuck.rollout.phase is Phase.FAILED and "instance 1: probe failed" in stuck.rollout.reason


# --- the rollback capacity policy ---------------------------------------------------------------


def test_budgeted_rollback_moves_unhealthy_instances_at_once_and_healthy_ones_within_the_budget() -> None:
    policy = RolloutPolicy(max_unavailable=2)
    r = rollout(Phase.ROLLING_BACK, upgraded_ids=("0", "1", "2", "3", "4"), rollback_reason="x")
    observed = fleet(I("0"), I("1"), I("2"), I("3", probe=BAD), I("4", probe=BAD), I("5"), model=OLD)
    decision = decide(r, observed, policy, LATER)
    # 3 and 4 are down already (they cost nothing); of 0, 1, 2 none fits: 2 of 2 are down.
    assert decision.actions == (UpgradeInstances(("3", "4"), "rollback"),)
    healthier = fleet(I("0"), I("1"), I("2"), I("3", latest=True), I("4", latest=True), I("5"), model=OLD)
    next_step = decide(decision.rollout, healthier, policy, LATER + timedelta(seconds=30))
    assert next_step.actions == (UpgradeInstances(("0", "1"), "rollback"),)


def test_all_at_once_rollback_moves_every_instance_in_one_call() -> None:
    policy = RolloutPolicy(max_unavailable=2, rollback_mode="all-at-once")
    r = rollout(Phase.ROLLING_BACK, upgraded_ids=("0", "1", "2", "3", "4"), rollback_reason="x")
    observed = fleet(I("0"), I("1"), I("2"), I("3", probe=BAD), I("4", probe=BAD), I("5"), model=OLD)
    assert decide(r, observed, policy, LATER).actions == (UpgradeInstances(("0", "1", "2", "3", "4"), "rollback"),)


def test_budgeted_rollback_reimages_within_the_budget_too() -> None:
    policy = RolloutPolicy(max_unavailable=1)
    r = rollout(Phase.ROLLING_BACK, upgraded_ids=("0", "1", "2"), rollback_ids=("0", "1", "2"), rollback_reason="x")
    observed = fleet(I("0", latest=True), I("1", latest=True), I("2", latest=True), I("3"), model=OLD)
    decision = decide(r, observed, policy, LATER)
    assert decision.actions == (ReimageInstances(("0",)),)


# --- a mutation survivor that was a real bug: "consecutive" unhealthy observations -----------------


def test_a_healthy_observation_while_promoting_resets_the_unhealthy_streak() -> None:
    r = rollout(Phase.PROMOTING, canary_ids=("0",), upgraded_ids=("0",), unhealthy_streak=2)
    decision = decide(r, fleet(I("0", latest=True), I("1"), I("2")), POLICY, LATER)
    assert decision.actions == (UpgradeInstances(("1", "2"), "batch"),)
    assert decision.rollout.unhealthy_streak == 0  # the next unhealthy observation is the first again


def test_a_budgeted_rollback_is_not_stalled_by_instances_down_for_other_reasons() -> None:
    # MAX_UNAVAILABLE=1 and instance 3 (never on the release) is down: a rollback still moves one
    # healthy instance at a time, never more, rather than waiting for ever.
    policy = RolloutPolicy(max_unavailable=1)
    r = rollout(Phase.ROLLING_BACK, upgraded_ids=("0", "1"), rollback_reason="x")
    observed = fleet(I("0"), I("1"), I("2"), I("3", probe=BAD), model=OLD)
    decision = decide(r, observed, policy, LATER)
    assert decision.actions == (UpgradeInstances(("0",), "rollback"),)
    moving = fleet(I("0", state="Updating", probe=None), I("1"), I("2"), I("3", probe=BAD), model=OLD)
    assert decide(decision.rollout, moving, policy, LATER + timedelta(seconds=30)).actions == ()
