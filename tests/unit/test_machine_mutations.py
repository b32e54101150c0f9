"""The decider's steps checked whole: phase, actions, the fields that carry the clocks, the reason and
the audit events (kind, message, actor, phase, evidence).

These close the gaps mutation testing found in tests/unit/test_machine.py (docs/mutation.md): steps that
were reached but whose result was only partly checked, and steps that were never reached (the rollback
deadline, several rollback triggers, the budget when MAX_UNAVAILABLE is below the batch size, a
healthy bake observation resetting the unhealthy streak, BAKE_SECONDS=0). What is asserted is what an
operator sees: "Every transition writes an audit event with its reason" (README), and the rules of
README "What it does" and docs/design.md "The control loop".
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from rollout.machine import (
    CommandError,
    Decision,
    Notify,
    ReimageInstances,
    UpdateModel,
    UpgradeInstances,
    _foreign_digest,
    apply_command,
    decide,
    sort_ids,
    write_refused,
)
from rollout.model import ModelSpec, Phase, ProbeResult, Release, ReleaseKind, Rollout
from rollout.policy import RolloutPolicy
from tests.unit.test_machine import BAD, NEW, OLD, POLICY, T0, I, fleet, rollout

LATER = T0 + timedelta(seconds=30)
FAILED_EXT = {"state": "Failed", "ext": "Failed"}


def events(decision: Decision) -> list[tuple[str, str, str, Phase | None, dict[str, Any]]]:
    return [(e.kind, e.message, e.actor, e.phase, dict(e.data)) for e in decision.events]


def kinds(decision: Decision) -> list[str]:
    return [e.kind for e in decision.events]


def changed(before: Phase, after: Phase, reason: str, actor: str = "controller") -> tuple[Any, ...]:
    return ("PhaseChanged", f"{before.value} -> {after.value}: {reason}", actor, after, {})


def canary(**changes: Any) -> Rollout:
    return rollout(Phase.CANARY, canary_ids=("0",), batch_ids=("0",), upgraded_ids=("0",), **changes)


# --- instance ids ------------------------------------------------------------------------------------


def test_instance_ids_sort_as_numbers_and_anything_else_after_them() -> None:
    assert sort_ids(["10", "b", "2", "a", "1"]) == ["1", "2", "10", "a", "b"]


# --- Canary ------------------------------------------------------------------------------------------


def test_writing_the_model_is_recorded() -> None:
    d = decide(rollout(Phase.CANARY), fleet(I("0"), model=OLD), POLICY, LATER)
    assert d.actions == (UpdateModel(NEW, "release"),)
    assert d.rollout.reason == "writing the release to the scale set model"
    assert events(d) == [
        ("ModelUpdateIssued", "writing install_nginx v1 to the scale set model", "controller", Phase.CANARY, {})
    ]
    assert d.rollout.updated_at == LATER


def test_a_model_write_in_progress_is_waited_for_with_a_reason() -> None:
    d = decide(rollout(Phase.CANARY), fleet(I("0"), model=OLD, state="Updating"), POLICY, LATER)
    assert (d.actions, d.rollout.reason) == ((), "waiting for the scale set model write to finish")


def test_a_model_write_that_never_lands_rolls_back_at_the_deadline() -> None:
    d = decide(rollout(Phase.CANARY), fleet(I("0"), model=OLD), POLICY, T0 + timedelta(seconds=601))
    assert d.rollout.phase is Phase.ROLLING_BACK
    assert d.rollout.rollback_reason == "the model write did not land within 600 s"
    assert d.actions == (Notify("install_nginx v1: rolling back: the model write did not land within 600 s"),)


def test_the_progress_deadline_is_not_yet_passed_at_exactly_the_deadline() -> None:
    at = T0 + timedelta(seconds=600)
    d = decide(rollout(Phase.CANARY), fleet(I("0"), model=OLD), POLICY, at)
    assert d.rollout.phase is Phase.CANARY and d.actions == (UpdateModel(NEW, "release"),)


def test_the_canary_is_upgraded_with_its_clocks_started() -> None:
    r = rollout(Phase.CANARY, last_progress_at=T0 - timedelta(seconds=100))
    d = decide(r, fleet(I("0"), I("1"), I("2")), RolloutPolicy(canary_count=2), LATER)
    assert d.actions == (UpgradeInstances(("0", "1"), "canary"),)
    assert (d.rollout.canary_ids, d.rollout.batch_ids, d.rollout.upgraded_ids) == (("0", "1"),) * 3
    assert d.rollout.batch_started_at == LATER and d.rollout.last_progress_at == LATER
    assert d.rollout.reason == "upgrading the canary: instance(s) 0, 1"
    assert events(d) == [
        ("CanaryStarted", "upgrading canary instance(s) 0, 1", "controller", Phase.CANARY, {"instances": ["0", "1"]})
    ]


def test_no_healthy_instance_for_the_canary_waits_then_rolls_back() -> None:
    sick = fleet(I("0", probe=BAD), I("1", state="Updating"))
    waiting = decide(rollout(Phase.CANARY), sick, POLICY, LATER)
    assert (waiting.rollout.phase, waiting.actions) == (Phase.CANARY, ())
    assert waiting.rollout.reason == "waiting for a canary: no healthy instance to use as the canary"
    late = decide(rollout(Phase.CANARY), sick, POLICY, T0 + timedelta(seconds=601))
    assert late.rollout.phase is Phase.ROLLING_BACK
    assert late.rollout.rollback_reason == "no healthy instance to use as the canary"


def test_a_canary_that_left_the_scale_set_is_recorded_and_dropped() -> None:
    r = rollout(Phase.CANARY, canary_ids=("0", "1"), batch_ids=("0", "1"), upgraded_ids=("0", "1"))
    d = decide(r, fleet(I("1", state="Updating", probe=None), I("2")), POLICY, LATER)
    assert (d.rollout.canary_ids, d.rollout.batch_ids) == (("1",), ("1",))
    assert events(d) == [("CanaryLost", "canary instance(s) 0 left the scale set", "controller", Phase.CANARY, {})]


def test_every_lost_canary_is_named_before_a_new_one_is_chosen() -> None:
    r = rollout(Phase.CANARY, canary_ids=("0", "1"), batch_ids=("0", "1"), upgraded_ids=("0", "1"))
    d = decide(r, fleet(I("2"), I("3")), POLICY, LATER)
    assert kinds(d) == ["CanaryLost", "CanaryStarted"]
    assert d.events[0].message == "canary instance(s) 0, 1 left the scale set"
    assert d.actions == (UpgradeInstances(("2",), "canary"),)


def test_a_pending_canary_says_what_it_waits_for_and_nothing_is_lost() -> None:
    d = decide(canary(batch_started_at=T0), fleet(I("0", state="Updating", probe=None), I("1")), POLICY, LATER)
    assert d.rollout.reason == "canary: waiting for instance 0"
    assert d.events == () and d.rollout.canary_ids == ("0",)


def test_a_stalled_canary_is_reissued_after_exactly_the_retry_window_and_the_clock_restamped() -> None:
    r = rollout(Phase.CANARY, canary_ids=("0", "1"), batch_ids=("0", "1"), upgraded_ids=("0", "1"), batch_started_at=T0)
    at = T0 + timedelta(seconds=300)  # UPGRADE_RETRY_SECONDS
    d = decide(r, fleet(I("0"), I("1"), I("2")), POLICY, at)
    assert d.actions == (UpgradeInstances(("0", "1"), "retry"),)
    assert d.rollout.batch_started_at == at
    assert events(d) == [
        ("UpgradeIssued", "upgrade (re)issued for 0, 1", "controller", Phase.CANARY, {"instances": ["0", "1"]})
    ]


def test_a_canary_that_makes_no_progress_rolls_back_with_what_it_waited_for() -> None:
    d = decide(
        canary(batch_started_at=T0), fleet(I("0", state="Updating", probe=None)), POLICY, T0 + timedelta(seconds=601)
    )
    assert d.rollout.rollback_reason == "canary made no progress in 600 s: waiting for instance 0"


def test_a_healthy_canary_starts_the_bake_with_a_clean_slate() -> None:
    r = canary(batch_started_at=T0, unhealthy_streak=2)
    d = decide(r, fleet(I("0", latest=True), I("1")), POLICY, LATER)
    assert d.rollout.phase is Phase.BAKING
    assert (d.rollout.batch_ids, d.rollout.batch_started_at, d.rollout.unhealthy_streak) == ((), None, 0)
    assert d.rollout.last_progress_at == LATER and d.rollout.phase_since == LATER
    assert d.rollout.reason == "canary healthy; baking for 300 s"
    assert events(d) == [changed(Phase.CANARY, Phase.BAKING, "canary healthy; baking for 300 s")]


def test_bake_seconds_zero_promotes_as_soon_as_the_canary_is_healthy() -> None:
    policy = RolloutPolicy(bake_seconds=0, batch_size=2, max_unavailable=2)
    d = decide(canary(), fleet(I("0", latest=True), I("1"), I("2"), I("3")), policy, LATER)
    assert d.rollout.phase is Phase.PROMOTING
    assert d.actions == (UpgradeInstances(("1", "2"), "batch"),)
    assert events(d)[0] == changed(Phase.CANARY, Phase.PROMOTING, "canary healthy; bake skipped")


def test_an_unhealthy_observation_is_counted_with_its_evidence() -> None:
    d = decide(canary(), fleet(I("0", latest=True, probe=BAD), I("1"), I("2")), POLICY, LATER)
    reason = "canary unhealthy: instance 0: probe failed: 500 Internal Server Error"
    assert d.rollout.unhealthy_streak == 1
    assert d.rollout.reason == f"{reason} (1 of 3 before rollback)"
    assert events(d) == [("HealthCheckFailed", f"{reason} (1 of 3)", "controller", Phase.CANARY, {"streak": 1})]


def test_a_rollback_starts_with_the_batch_cleared_and_the_progress_clock_restarted() -> None:
    r = canary(batch_started_at=T0)
    d = decide(r, fleet(I("0", latest=True, **FAILED_EXT), I("1")), POLICY, LATER)
    reason = "canary failed: instance 0: extension failed"
    assert d.rollout.phase is Phase.ROLLING_BACK and d.rollout.rollback_reason == reason
    assert (d.rollout.batch_ids, d.rollout.batch_started_at, d.rollout.last_progress_at) == ((), None, LATER)
    assert events(d) == [changed(Phase.CANARY, Phase.ROLLING_BACK, reason)]
    assert d.actions == (Notify(f"install_nginx v1: rolling back: {reason}"),)


# --- the canary judged against the baseline, inside the decider -----------------------------------


def test_instances_already_on_the_new_model_are_not_the_baseline() -> None:
    # 2 and 3 came up on the new model (a scale-out): they are not the old fleet the canary is compared
    # with, so their trouble does not make the canary's trouble "inconclusive".
    observed = fleet(
        I("0", latest=True, probe=BAD), I("1"), I("2", latest=True, probe=BAD), I("3", latest=True, probe=BAD)
    )
    d = decide(canary(), observed, POLICY, LATER)
    assert d.rollout.unhealthy_streak == 1


def test_the_latency_floor_comes_from_the_policy() -> None:
    observed = fleet(
        I("0", latest=True, probe=ProbeResult(True, "200", 40.0)), I("1", probe=ProbeResult(True, "200", 10.0))
    )
    strict = RolloutPolicy(latency_ratio=2, latency_min_delta_ms=10)
    assert decide(canary(), observed, strict, LATER).rollout.unhealthy_streak == 1
    assert decide(canary(), observed, RolloutPolicy(latency_ratio=2), LATER).rollout.phase is Phase.BAKING


# --- Baking ------------------------------------------------------------------------------------------


def baking(**changes: Any) -> Rollout:
    return rollout(Phase.BAKING, canary_ids=("0",), upgraded_ids=("0",), **changes)


def test_a_healthy_bake_observation_resets_the_unhealthy_streak() -> None:
    d = decide(baking(unhealthy_streak=2), fleet(I("0", latest=True), I("1")), POLICY, LATER)
    assert d.rollout.phase is Phase.BAKING and d.rollout.unhealthy_streak == 0
    assert d.rollout.reason == "baking: 30 of 300 s, canary healthy"


def test_a_canary_failing_while_baking_rolls_back_at_once() -> None:
    d = decide(baking(), fleet(I("0", latest=True, **FAILED_EXT), I("1")), POLICY, LATER)
    assert d.rollout.phase is Phase.ROLLING_BACK
    assert d.rollout.rollback_reason == "canary failed while baking: instance 0: extension failed"


def test_an_inconclusive_bake_says_so() -> None:
    d = decide(baking(), fleet(I("0", latest=True, probe=BAD), I("1", probe=BAD)), POLICY, LATER)
    assert d.rollout.reason.startswith("bake on hold: instance 0: probe failed")
    assert d.rollout.updated_at == LATER


def test_a_full_bake_promotes_and_says_how_long_the_canary_was_healthy() -> None:
    r = baking(last_progress_at=T0)
    at = T0 + timedelta(seconds=305)
    d = decide(r, fleet(I("0", latest=True), I("1"), I("2")), POLICY, at)
    assert d.rollout.phase is Phase.PROMOTING and d.rollout.last_progress_at == at
    assert events(d)[0] == changed(Phase.BAKING, Phase.PROMOTING, "canary healthy for 305 s")


def test_the_promotion_deadline_starts_when_the_bake_ends() -> None:
    # No budget for a first batch yet (someone else is upgrading 1 and 2): promotion waits, and its
    # progress deadline counts from the end of the bake, not from the start of the rollout.
    at = T0 + timedelta(seconds=300)
    observed = fleet(I("0", latest=True), I("1", state="Updating", probe=None), I("2", state="Updating"), I("3"))
    d = decide(baking(), observed, POLICY, at)
    assert (d.rollout.phase, d.actions, d.rollout.last_progress_at) == (Phase.PROMOTING, (), at)


def test_an_operator_promotion_says_who_skipped_the_bake() -> None:
    d = decide(baking(skip_bake=True), fleet(I("0", latest=True), I("1"), I("2")), POLICY, LATER)
    assert d.rollout.phase is Phase.PROMOTING
    assert events(d)[0] == changed(Phase.BAKING, Phase.PROMOTING, "promoted by operator")


def test_a_scale_set_model_write_in_progress_is_not_drift() -> None:
    d = decide(baking(), fleet(I("0", latest=True), I("1"), model=OLD, state="Updating"), POLICY, LATER)
    assert d.rollout.phase is Phase.BAKING


def test_drift_fails_the_rollout_with_the_reason() -> None:
    d = decide(baking(), fleet(I("0", latest=True), I("1"), model=OLD), POLICY, LATER)
    assert d.rollout.reason == "the scale set model no longer holds this release (changed outside the rollout)"


# --- Promoting ---------------------------------------------------------------------------------------


def promoting(**changes: Any) -> Rollout:
    values: dict[str, Any] = {"canary_ids": ("0",), "upgraded_ids": ("0",), **changes}
    return rollout(Phase.PROMOTING, **values)


def test_a_failed_batch_rolls_back_naming_the_batch() -> None:
    r = promoting(upgraded_ids=("0", "1"), batch_ids=("1",), batch_number=1, batch_started_at=T0)
    d = decide(r, fleet(I("0", latest=True), I("1", latest=True, **FAILED_EXT), I("2")), POLICY, LATER)
    assert d.rollout.rollback_reason == "batch 1 failed: instance 1: extension failed"


def test_an_unhealthy_batch_is_counted_naming_the_batch() -> None:
    r = promoting(upgraded_ids=("0", "1"), batch_ids=("1",), batch_number=1, batch_started_at=T0)
    d = decide(r, fleet(I("0", latest=True), I("1", latest=True, probe=BAD), I("2"), I("3")), POLICY, LATER)
    assert d.rollout.reason == (
        "batch 1 unhealthy: instance 1: probe failed: 500 Internal Server Error (1 of 3 before rollback)"
    )


def test_a_batch_that_makes_no_progress_rolls_back() -> None:
    r = promoting(upgraded_ids=("0", "1"), batch_ids=("1",), batch_number=1, batch_started_at=T0)
    d = decide(
        r, fleet(I("0", latest=True), I("1", state="Updating", probe=None), I("2")), POLICY, T0 + timedelta(seconds=601)
    )
    assert d.rollout.rollback_reason == "batch 1 made no progress in 600 s"


def test_a_batch_whose_call_failed_is_reissued_at_once_as_a_batch() -> None:
    r = promoting(upgraded_ids=("0", "1", "2"), batch_ids=("1", "2"), batch_number=1, batch_started_at=None)
    d = decide(r, fleet(I("0", latest=True), I("1"), I("2"), I("3")), POLICY, LATER)
    assert d.actions == (UpgradeInstances(("1", "2"), "batch"),)
    assert d.rollout.reason == "batch 1: waiting for instance 1, instance 2"


def test_a_batch_is_not_reissued_inside_the_retry_window() -> None:
    r = promoting(upgraded_ids=("0", "1"), batch_ids=("1",), batch_number=1, batch_started_at=T0)
    d = decide(r, fleet(I("0", latest=True), I("1"), I("2")), POLICY, T0 + timedelta(seconds=299))
    assert d.actions == () and d.rollout.reason == "batch 1: waiting for instance 1"


def test_waiting_for_budget_says_the_budget_of_a_percentage_policy() -> None:
    policy = RolloutPolicy(batch_size=2, max_unavailable_percent=50)  # 50% of 4 instances: 2
    observed = fleet(I("0", latest=True), I("1", state="Updating", probe=None), I("2", state="Updating"), I("3"))
    d = decide(promoting(), observed, policy, LATER)
    assert d.rollout.reason == "3 outdated; waiting: 2 instance(s) unavailable, max unavailable 2"


def test_a_finished_batch_is_recorded_and_cleared_before_the_next_is_chosen() -> None:
    # 2 and 3 are being upgraded by someone else and 4 is down: no budget is left for a next batch.
    r = promoting(upgraded_ids=("0", "1"), batch_ids=("1",), batch_number=1, batch_started_at=T0, unhealthy_streak=2)
    observed = fleet(
        I("0", latest=True), I("1", latest=True), I("2", state="Updating", probe=None), I("3", state="Updating")
    )
    d = decide(r, observed, POLICY, LATER)
    assert d.actions == ()
    assert (d.rollout.batch_ids, d.rollout.batch_started_at, d.rollout.unhealthy_streak) == ((), None, 0)
    assert d.rollout.last_progress_at == LATER
    assert events(d) == [
        (
            "BatchSucceeded",
            "batch 1 (1) on the new model and healthy",
            "controller",
            Phase.PROMOTING,
            {"instances": ["1"]},
        )
    ]
    assert d.rollout.reason == "2 outdated; waiting: 2 instance(s) unavailable, max unavailable 2"


def test_the_batch_success_message_names_every_instance() -> None:
    r = promoting(upgraded_ids=("0", "1", "2"), batch_ids=("1", "2"), batch_number=1, batch_started_at=T0)
    d = decide(r, fleet(I("0", latest=True), I("1", latest=True), I("2", latest=True)), POLICY, LATER)
    assert d.events[0].message == "batch 1 (1, 2) on the new model and healthy"
    assert d.rollout.phase is Phase.SUCCEEDED and d.rollout.batch_ids == ()


def test_an_upgraded_instance_that_fails_later_rolls_back() -> None:
    d = decide(promoting(), fleet(I("0", latest=True, **FAILED_EXT), I("1"), I("2")), POLICY, LATER)
    assert d.rollout.rollback_reason == "an upgraded instance failed: instance 0: extension failed"


def test_an_upgraded_instance_that_turns_unhealthy_is_counted() -> None:
    d = decide(promoting(), fleet(I("0", latest=True, probe=BAD), I("1"), I("2")), POLICY, LATER)
    assert d.rollout.unhealthy_streak == 1 and d.actions == ()
    why = "instance 0: probe failed: 500 Internal Server Error"
    assert d.rollout.reason == f"an upgraded instance is unhealthy: {why} (1 of 3 before rollback)"


def test_a_scale_out_on_the_release_is_watched_like_an_upgraded_instance() -> None:
    # 1 came up on the new model by itself (a scale-out) and is unhealthy: it runs the release, so it
    # counts as upgraded (docs/design.md, "Level-triggered, whatever put the release there").
    observed = fleet(I("0", latest=True), I("1", latest=True, probe=BAD))
    d = decide(promoting(), observed, POLICY, LATER)
    assert d.rollout.phase is Phase.PROMOTING and d.actions == () and d.rollout.upgraded_ids == ("0", "1")
    why = "an upgraded instance is unhealthy: instance 1: probe failed: 500 Internal Server Error"
    assert d.rollout.reason == f"{why} (1 of 3 before rollback)"
    assert kinds(d) == ["InstancesOnRelease", "HealthCheckFailed"]


def test_succeeded_needs_every_instance_healthy_not_only_the_upgraded_ones() -> None:
    # 1 came up on the new model by itself while the scale-out that made it is still under way (the
    # scale set is Updating, so it is not yet recorded as on the release) and is unhealthy: not a success.
    observed = fleet(I("0", latest=True), I("1", latest=True, probe=BAD), state="Updating")
    d = decide(promoting(), observed, POLICY, LATER)
    assert d.rollout.phase is Phase.PROMOTING and d.actions == () and d.rollout.upgraded_ids == ("0",)
    assert d.rollout.reason == "every instance is on the new model; waiting for all to be healthy"
    late = decide(promoting(), observed, POLICY, T0 + timedelta(seconds=601))
    assert late.rollout.phase is Phase.ROLLING_BACK
    assert late.rollout.rollback_reason == "the fleet did not become healthy on the new model in time"


def test_succeeded_is_recorded_with_the_fleet_size() -> None:
    d = decide(promoting(upgraded_ids=("0", "1")), fleet(I("0", latest=True), I("1", latest=True)), POLICY, LATER)
    assert events(d) == [changed(Phase.PROMOTING, Phase.SUCCEEDED, "all 2 instances on install_nginx v1 and healthy")]
    assert d.actions == (Notify("install_nginx v1 succeeded on 2 instances"),)


def test_a_batch_is_started_with_its_clocks_and_recorded() -> None:
    r = promoting(last_progress_at=T0 - timedelta(seconds=100))
    d = decide(r, fleet(I("0", latest=True), I("1"), I("2"), I("3")), POLICY, LATER)
    assert d.actions == (UpgradeInstances(("1", "2"), "batch"),)
    assert (d.rollout.batch_ids, d.rollout.batch_number, d.rollout.upgraded_ids) == (("1", "2"), 1, ("0", "1", "2"))
    assert d.rollout.batch_started_at == LATER and d.rollout.last_progress_at == LATER
    assert events(d) == [
        (
            "BatchStarted",
            "batch 1: upgrading 1, 2 (1 outdated after it)",
            "controller",
            Phase.PROMOTING,
            {"instances": ["1", "2"]},
        )
    ]
    assert d.rollout.reason == "batch 1: upgrading 1, 2"


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        # MAX_UNAVAILABLE below the batch size: the budget, not the batch size, decides.
        (RolloutPolicy(batch_size=4, max_unavailable=2), ("1", "2")),
        (RolloutPolicy(batch_size=4, max_unavailable=1), ("1",)),
        # The batch size below the budget: the batch size decides.
        (RolloutPolicy(batch_size=2, max_unavailable=5), ("1", "2")),
    ],
)
def test_a_batch_is_the_smaller_of_the_batch_size_and_the_budget(
    policy: RolloutPolicy, expected: tuple[str, ...]
) -> None:
    observed = fleet(I("0", latest=True), I("1"), I("2"), I("3"), I("4"), I("5"))
    assert decide(promoting(), observed, policy, LATER).actions == (UpgradeInstances(expected, "batch"),)


def test_an_instance_that_is_down_already_is_upgraded_first_for_free() -> None:
    observed = fleet(I("0", latest=True), I("1"), I("2"), I("3"), I("4", probe=BAD))
    policy = RolloutPolicy(batch_size=1, max_unavailable=2)
    assert decide(promoting(), observed, policy, LATER).actions == (UpgradeInstances(("4",), "batch"),)


def test_an_instance_someone_else_is_upgrading_is_skipped_not_the_rest() -> None:
    observed = fleet(I("0", latest=True), I("1", state="Updating", probe=None), I("2", probe=BAD), I("3"))
    d = decide(promoting(), observed, POLICY, LATER)
    assert d.actions == (UpgradeInstances(("2",), "batch"),)


def test_no_budget_for_too_long_rolls_back() -> None:
    observed = fleet(I("0", latest=True), I("1", state="Updating", probe=None), I("2", state="Updating"), I("3"))
    d = decide(promoting(), observed, POLICY, T0 + timedelta(seconds=601))
    assert d.rollout.rollback_reason == "promotion stalled: 2 instance(s) unavailable"


def test_promote_full_names_what_it_waits_for_and_records_the_jump() -> None:
    busy = fleet(I("0", latest=True), I("1", state="Updating", probe=None), I("2", state="Creating", probe=None))
    d = decide(promoting(promote_full=True), busy, POLICY, LATER)
    assert d.rollout.reason == "promote-full: waiting for 1, 2 to finish updating"
    go = decide(promoting(promote_full=True), fleet(I("0", latest=True), I("1"), I("2")), POLICY, LATER)
    assert kinds(go) == ["PromoteFull", "BatchStarted"]
    assert go.events[0].message == "promote-full: upgrading all 2 remaining instances at once"


# --- RollingBack -------------------------------------------------------------------------------------


def rolling_back(**changes: Any) -> Rollout:
    values: dict[str, Any] = {"upgraded_ids": ("0",), "rollback_reason": "x", **changes}
    return rollout(Phase.ROLLING_BACK, **values)


def test_without_a_baseline_there_is_no_automatic_rollback() -> None:
    d = decide(rolling_back(baseline=None), fleet(I("0", latest=True)), POLICY, LATER)
    reason = "no baseline was recorded: cannot roll back automatically"
    assert d.rollout.phase is Phase.FAILED
    assert events(d) == [changed(Phase.ROLLING_BACK, Phase.FAILED, reason)]


def test_a_rollback_gets_twice_the_progress_deadline_then_a_human() -> None:
    observed = fleet(I("0", latest=True), I("1"), model=OLD, state="Updating")
    waiting = rolling_back(reason="rollback: waiting for the scale set model write to finish")
    on_time = decide(waiting, observed, POLICY, T0 + timedelta(seconds=1200))
    assert on_time.rollout.phase is Phase.ROLLING_BACK
    stuck = decide(waiting, observed, POLICY, T0 + timedelta(seconds=1201))
    assert stuck.rollout.phase is Phase.FAILED and stuck.rollout.failed_from is Phase.ROLLING_BACK
    # The reason says what the rollback was still waiting for when the deadline passed.
    why = "rollback did not finish in 1200 s (rollback: waiting for the scale set model write to finish)"
    assert events(stuck) == [changed(Phase.ROLLING_BACK, Phase.FAILED, why)]
    assert stuck.actions == (Notify("install_nginx v1: rollback stuck, needs a human"),)
    assert decide(waiting, observed, POLICY, T0 + timedelta(seconds=1799)).rollout.phase is Phase.FAILED


def test_restoring_the_baseline_model_waits_for_a_write_in_progress() -> None:
    d = decide(rolling_back(), fleet(I("0", latest=True), state="Updating"), POLICY, LATER)
    assert (d.actions, d.rollout.reason) == ((), "rollback: waiting for the scale set model write to finish")


def test_restoring_the_baseline_model_is_recorded() -> None:
    d = decide(rolling_back(), fleet(I("0", latest=True)), POLICY, LATER)
    assert d.actions == (UpdateModel(OLD, "rollback"),)
    assert d.rollout.reason == "rollback: restoring the baseline model"
    assert events(d) == [("ModelUpdateIssued", "restoring the baseline model", "controller", Phase.ROLLING_BACK, {})]


def test_moving_an_instance_back_is_recorded_with_its_clock() -> None:
    d = decide(rolling_back(), fleet(I("0", probe=BAD), I("1", latest=True), model=OLD), POLICY, LATER)
    assert d.actions == (UpgradeInstances(("0",), "rollback"),)
    assert d.rollout.batch_started_at == LATER
    assert d.rollout.reason == "rollback: upgrading 0 to the baseline"
    assert events(d) == [
        (
            "RollbackUpgradeStarted",
            "moving 0 back to the baseline",
            "controller",
            Phase.ROLLING_BACK,
            {"instances": ["0"]},
        )
    ]


def test_moving_unhealthy_instances_back_names_each() -> None:
    r = rolling_back(upgraded_ids=("0", "1"))
    d = decide(r, fleet(I("0", probe=BAD), I("1", probe=BAD), I("2", latest=True), model=OLD), POLICY, LATER)
    assert d.actions == (UpgradeInstances(("0", "1"), "rollback"),)
    assert d.events[0].message == "moving 0, 1 back to the baseline"
    assert d.rollout.reason == "rollback: upgrading 0, 1 to the baseline"


def test_a_move_back_is_not_reissued_inside_the_retry_window() -> None:
    r = rolling_back(upgraded_ids=("0", "1"), rollback_ids=("0", "1"), batch_started_at=T0)
    observed = fleet(I("0", probe=BAD), I("1", probe=BAD), I("2", latest=True), model=OLD)
    d = decide(r, observed, POLICY, LATER)
    assert d.actions == () and d.rollout.reason == "rollback: waiting for 0, 1 to be back on the baseline"
    again = decide(r, observed, POLICY, T0 + timedelta(seconds=300))
    assert again.actions == (UpgradeInstances(("0", "1"), "retry"),)


def test_a_move_back_whose_call_failed_is_reissued_at_once() -> None:
    r = rolling_back(rollback_ids=("0",), batch_started_at=None)
    d = decide(r, fleet(I("0", probe=BAD), I("1", latest=True), model=OLD), POLICY, LATER)
    assert d.actions == (UpgradeInstances(("0",), "rollback"),)


def test_an_instance_still_updating_back_is_waited_for() -> None:
    r = rolling_back(upgraded_ids=("0", "1"), rollback_ids=("0", "1"))
    observed = fleet(I("0", latest=True, ext="Transitioning"), I("1", latest=True, ext="Transitioning"), model=OLD)
    d = decide(r, observed, POLICY, LATER)
    assert d.actions == () and d.rollout.reason == "rollback: waiting for 0, 1 to finish updating"


def test_a_script_release_reimages_what_it_moved_back_and_says_so() -> None:
    r = rolling_back(upgraded_ids=("0", "1"), rollback_ids=("0", "1"))
    observed = fleet(I("0", latest=True), I("1", latest=True), I("2", latest=True), I("3", latest=True), model=OLD)
    d = decide(r, observed, POLICY, LATER)
    # Two phases: the reimage is saved as intended, and counts as done only once the service confirms
    # it was sent (docs/design.md, "A reimage: intent, then confirmation").
    assert (d.rollout.reimage_pending, d.rollout.reimage_requested_at, d.rollout.reimaged_ids) == (
        ("0", "1"),
        LATER,
        (),
    )
    assert d.actions == (ReimageInstances(("0", "1")),)
    assert events(d) == [
        (
            "ReimageStarted",
            "reimaging 0, 1: a fresh disk with the baseline extension",
            "controller",
            Phase.ROLLING_BACK,
            {},
        )
    ]
    assert d.rollout.reason == "rollback: reimaging 0, 1"


def test_a_reimage_starts_with_a_clean_unhealthy_streak() -> None:
    r = rolling_back(rollback_ids=("0",), unhealthy_streak=2)
    d = decide(r, fleet(I("0", latest=True), I("1", latest=True), model=OLD), POLICY, LATER)
    assert d.rollout.reimage_pending == ("0",) and d.rollout.unhealthy_streak == 0


def test_an_instance_the_baseline_does_not_repair_is_reimaged_with_the_evidence() -> None:
    r = rolling_back(upgraded_ids=("0", "1"), rollback_ids=("0", "1"), unhealthy_streak=2, last_progress_at=T0)
    observed = fleet(I("0", latest=True, probe=BAD), I("1", latest=True, **FAILED_EXT), I("2", latest=True), model=OLD)
    d = decide(r, observed, RolloutPolicy(rollback_reimage=False), LATER)
    why = "instance 0: probe failed: 500 Internal Server Error; instance 1: extension failed"
    assert d.rollout.last_progress_at == LATER
    assert (d.rollout.reimage_pending, d.rollout.reimage_requested_at) == (("0", "1"), LATER)
    assert events(d) == [
        ("ReimageStarted", f"the baseline did not repair 0, 1: reimaging ({why})", "controller", Phase.ROLLING_BACK, {})
    ]
    assert d.rollout.reason == "rollback: reimaging 0, 1"


def test_an_instance_a_reimage_did_not_repair_needs_a_human() -> None:
    r = rolling_back(rollback_ids=("0",), reimaged_ids=("0",), unhealthy_streak=2)
    d = decide(r, fleet(I("0", latest=True, probe=BAD), I("1", latest=True), model=OLD), POLICY, LATER)
    why = "instance 0: probe failed: 500 Internal Server Error"
    assert events(d) == [
        changed(Phase.ROLLING_BACK, Phase.FAILED, f"baseline restored and reimaged, still unhealthy: {why}")
    ]
    assert d.actions == (Notify(f"install_nginx v1: rollback could not repair {why}; needs a human"),)


# --- a model write ARM refused -----------------------------------------------------------------------


def test_a_refused_rollback_write_fails_so_that_retry_rolls_back_again() -> None:
    d = write_refused(rolling_back(), UpdateModel(OLD, "rollback"), "403", LATER)
    assert d.rollout.phase is Phase.FAILED and d.rollout.failed_from is Phase.ROLLING_BACK


def test_a_late_refusal_does_not_move_a_rollout_that_already_ended() -> None:
    ended = rollout(Phase.ABORTED)
    assert write_refused(ended, UpdateModel(NEW, "release"), "403", LATER).rollout == ended


# --- operator commands -------------------------------------------------------------------------------


def test_an_abort_without_actor_or_reason_is_the_operators() -> None:
    d = apply_command(rollout(Phase.PROMOTING, batch_ids=("1",), batch_started_at=T0), "abort", LATER)
    assert events(d) == [changed(Phase.PROMOTING, Phase.ABORTED, "aborted by operator; no rollback", "operator")]
    assert (d.rollout.batch_ids, d.rollout.batch_started_at) == ((), None)
    assert d.actions == (Notify("install_nginx v1 aborted by operator"),)


def test_an_abort_names_who_and_why() -> None:
    d = apply_command(rollout(Phase.BAKING), "abort", LATER, actor="alice", reason="error rate up")
    assert d.actions == (Notify("install_nginx v1 aborted by alice (error rate up)"),)


def test_only_a_paused_rollout_can_be_resumed_not_a_failed_one() -> None:
    with pytest.raises(CommandError, match="only a paused rollout can be resumed; this one is Failed"):
        apply_command(rollout(Phase.FAILED, failed_from=Phase.PROMOTING), "resume", LATER)


def test_resume_is_recorded_as_the_operators_and_forgets_the_pause() -> None:
    d = apply_command(rollout(Phase.PAUSED, resume_to=Phase.BAKING), "resume", LATER, actor="alice", reason="ok")
    assert d.rollout.resume_to is None
    assert events(d) == [changed(Phase.PAUSED, Phase.BAKING, "resumed by alice (ok)", "alice")]


def test_promote_says_where_it_applies() -> None:
    with pytest.raises(CommandError) as caught:
        apply_command(rollout(Phase.PROMOTING), "promote", LATER)
    assert str(caught.value) == "promote applies to a rollout in Canary, Baking; this one is Promoting"


def test_promote_is_recorded_even_when_repeated() -> None:
    first = apply_command(rollout(Phase.BAKING), "promote", LATER, actor="alice")
    assert events(first) == [("Promoted", "promote by alice", "alice", Phase.BAKING, {})]
    again_at = LATER + timedelta(seconds=5)
    again = apply_command(first.rollout, "promote", again_at, actor="alice")
    assert kinds(again) == ["Promoted"] and again.rollout.updated_at == again_at


def test_retry_of_a_failed_rollback_restarts_its_clocks_and_is_the_operators() -> None:
    r = rollout(Phase.FAILED, failed_from=Phase.ROLLING_BACK, batch_started_at=T0, last_progress_at=T0)
    d = apply_command(r, "retry", LATER, actor="alice", reason="fixed the image")
    assert d.rollout.phase is Phase.ROLLING_BACK and d.rollout.failed_from is None
    assert (d.rollout.last_progress_at, d.rollout.batch_started_at) == (LATER, None)
    assert events(d) == [changed(Phase.FAILED, Phase.ROLLING_BACK, "retried by alice (fixed the image)", "alice")]


def test_retry_after_drift_is_recorded_as_the_operators_and_restarts_the_progress_clock() -> None:
    r = rollout(Phase.FAILED, failed_from=Phase.PROMOTING, batch_started_at=T0, last_progress_at=T0)
    d = apply_command(r, "retry", LATER, actor="alice")
    assert d.rollout.phase is Phase.CANARY and d.rollout.failed_from is None
    assert (d.rollout.last_progress_at, d.rollout.batch_started_at) == (LATER, None)
    assert [e.actor for e in d.events] == ["alice"]


def test_an_unknown_command_lists_the_known_ones() -> None:
    with pytest.raises(CommandError) as caught:
        apply_command(rollout(Phase.CANARY), "explode", LATER)
    assert str(caught.value) == (
        "unknown command 'explode'; expected one of abort, pause, resume, promote, promote-full, retry"
    )


# --- defects found while closing the gaps (regression tests of their fixes) ----------------------------


def test_the_bake_counts_only_healthy_time() -> None:
    # README: BAKE_SECONDS is the "healthy time the canary must show before promotion".
    r = baking()
    observations = [(100, BAD), (200, None), (300, None)]
    for seconds, probe in observations:
        canary_view = I("0", latest=True, probe=probe) if probe else I("0", latest=True)
        r = decide(r, fleet(canary_view, I("1"), I("2")), POLICY, T0 + timedelta(seconds=seconds)).rollout
    # Unhealthy at 100 s, healthy from 200 s: at 300 s it has shown at most 100 s of healthy time.
    assert r.phase is Phase.BAKING


def test_promotion_rolls_back_only_on_consecutive_unhealthy_observations() -> None:
    # README: FAILURE_THRESHOLD is the number of "consecutive unhealthy observations before rolling back".
    # No budget for a next batch (1 and 2 are being upgraded by someone else), so no batch finishes.
    r = promoting()
    busy = (I("1", state="Updating", probe=None), I("2", state="Updating", probe=None), I("3"))
    for tick, probe in enumerate([BAD, None, BAD, None, BAD], start=1):
        upgraded = I("0", latest=True, probe=probe) if probe else I("0", latest=True)
        r = decide(r, fleet(upgraded, *busy), POLICY, T0 + timedelta(seconds=30 * tick)).rollout
    assert r.phase is Phase.PROMOTING and r.unhealthy_streak == 1


# --- issue 8's decider changes, each step checked whole ------------------------------------------------


def test_an_unconfirmed_reimage_is_sent_again_after_the_retry_window_and_says_why() -> None:
    r = rolling_back(rollback_ids=("0", "1"), reimage_pending=("0", "1"), reimage_requested_at=T0)
    observed = fleet(I("0", latest=True), I("1", latest=True), model=OLD)
    inside = decide(r, observed, POLICY, T0 + timedelta(seconds=299))
    assert inside.actions == () and inside.rollout.reimage_requested_at == T0
    assert inside.rollout.reason == "rollback: the reimage of 0, 1 is being sent; waiting for its confirmation"
    at = T0 + timedelta(seconds=300)
    again = decide(r, observed, POLICY, at)
    assert again.actions == (ReimageInstances(("0", "1")),) and again.rollout.reimage_requested_at == at
    why = "not confirmed sent within 300 s"
    assert events(again) == [
        ("ReimageReissued", f"reimaging 0, 1 again: {why}", "controller", Phase.ROLLING_BACK, {"instances": ["0", "1"]})
    ]
    assert again.rollout.reason == f"rollback: reimaging 0, 1 again ({why})"


def test_a_reimage_whose_call_failed_is_sent_again_at_once() -> None:
    r = rolling_back(rollback_ids=("0",), reimage_pending=("0",), reimage_requested_at=None)
    d = decide(r, fleet(I("0", latest=True), I("1", latest=True), model=OLD), POLICY, LATER)
    assert d.actions == (ReimageInstances(("0",)),) and d.rollout.reimage_requested_at == LATER
    assert events(d) == [
        (
            "ReimageReissued",
            "reimaging 0 again: its call failed",
            "controller",
            Phase.ROLLING_BACK,
            {"instances": ["0"]},
        )
    ]


def test_retry_after_drift_forgets_the_canary_and_the_model_reference_but_not_what_it_upgraded() -> None:
    r = rollout(
        Phase.FAILED,
        failed_from=Phase.PROMOTING,
        canary_ids=("0",),
        batch_ids=("1",),
        upgraded_ids=("0", "1"),
        foreign_model="f" * 32,
        unhealthy_streak=2,
    )
    d = apply_command(r, "retry", LATER, actor="alice", reason="image edit reverted")
    after = d.rollout
    assert (after.canary_ids, after.batch_ids, after.foreign_model, after.unhealthy_streak) == ((), (), "", 0)
    assert after.upgraded_ids == ("0", "1")
    why = "retried by alice (image edit reverted): re-writing the model if needed, resuming from the fleet"
    assert events(d) == [changed(Phase.FAILED, Phase.CANARY, why, "alice")]


def test_the_model_reference_of_a_script_release_is_its_image_whatever_the_case() -> None:
    r = rollout(Phase.PROMOTING)
    assert _foreign_digest(r, ModelSpec(image_id="/IMG/A")) == _foreign_digest(r, ModelSpec(image_id="/img/a"))
    assert _foreign_digest(r, ModelSpec(image_id="/img/a")) != _foreign_digest(r, ModelSpec(image_id="/img/b"))
    assert _foreign_digest(r, ModelSpec(image_id=None)) != _foreign_digest(r, ModelSpec(image_id="/img/a"))


def test_the_model_reference_of_an_image_release_is_its_extension_up_to_the_minor_version() -> None:
    image = Release(
        ReleaseKind.IMAGE, "install_nginx", 2, "install_nginx.v2.image.json", "https://a/m", "cd" * 32, "/i"
    )
    r = rollout(Phase.PROMOTING, release=image)
    base = OLD.extension
    assert base is not None

    def digest(**changes: Any) -> str:
        return _foreign_digest(r, ModelSpec(extension=replace(base, **changes), image_id="/i"))

    # ARM upgrades the minor version of an extension by itself (autoUpgradeMinorVersion): not an edit.
    assert digest(type_handler_version="2.2") == digest()
    assert digest(type_handler_version="3.0") != digest()
    assert digest(force_update_tag="again") != digest()
    assert digest(settings={"commandToExecute": "bash other.sh"}) != digest()
    # The same settings read back in another key order are the same model.
    assert digest(settings=dict(reversed(list(base.settings.items())))) == digest()
    assert digest(name="Other") != digest() and digest(publisher="P") != digest() and digest(type="T") != digest()
    assert _foreign_digest(r, ModelSpec(extension=None, image_id="/i")) != digest()


def test_instances_already_on_the_release_are_the_canary_without_an_upgrade() -> None:
    policy = RolloutPolicy(canary_count=2, max_unavailable=2, batch_size=2, progress_deadline_seconds=600)
    d = decide(rollout(Phase.CANARY), fleet(I("0", latest=True), I("1", latest=True), I("2")), policy, LATER)
    assert d.actions == () and (d.rollout.canary_ids, d.rollout.batch_ids) == (("0", "1"), ())
    assert d.rollout.batch_started_at is None and d.rollout.last_progress_at == LATER
    assert d.rollout.reason == "canary: instance(s) 0, 1 already on the release"
    assert events(d)[1] == (
        "CanaryStarted",
        "canary instance(s) 0, 1 already on install_nginx v1: not upgraded again",
        "controller",
        Phase.CANARY,
        {"instances": ["0", "1"]},
    )


def test_a_canary_lost_while_baking_goes_back_to_choosing_a_canary_and_says_so() -> None:
    policy = RolloutPolicy(canary_count=2, max_unavailable=2, batch_size=2, progress_deadline_seconds=600)
    r = rollout(Phase.BAKING, canary_ids=("0", "1"), upgraded_ids=("0", "1"))
    d = decide(r, fleet(I("2"), I("3"), I("4")), policy, LATER)
    assert d.rollout.phase is Phase.CANARY and d.actions == (UpgradeInstances(("2", "3"), "canary"),)
    assert events(d)[:2] == [
        ("CanaryLost", "canary instance(s) 0, 1 left the scale set while baking", "controller", Phase.BAKING, {}),
        changed(Phase.BAKING, Phase.CANARY, "the canary left the scale set while baking: choosing a new canary"),
    ]


def test_no_canary_within_the_budget_names_the_budget() -> None:
    d = decide(rollout(Phase.CANARY), fleet(I("0", probe=BAD), I("1", probe=BAD), I("2")), POLICY, LATER)
    assert d.actions == ()
    assert d.rollout.reason == (
        "waiting for a canary: no canary within the unavailability budget: 2 instance(s) unavailable, max unavailable 2"
    )


def test_a_healthy_bake_observation_is_progress() -> None:
    r = baking(last_progress_at=T0 - timedelta(seconds=100))
    d = decide(r, fleet(I("0", latest=True), I("1"), I("2")), POLICY, LATER)
    assert d.rollout.phase is Phase.BAKING and d.rollout.last_progress_at == LATER
    assert d.rollout.reason == "baking: 30 of 300 s, canary healthy"


def test_a_batch_scaled_in_is_recorded_and_the_next_batch_chosen() -> None:
    r = promoting(upgraded_ids=("0", "1", "2"), batch_ids=("1", "2"), batch_number=1, batch_started_at=T0)
    d = decide(r, fleet(I("0", latest=True), I("3"), I("4")), POLICY, LATER)
    assert events(d)[0] == ("BatchShrunk", "batch 1: 1, 2 left the scale set", "controller", Phase.PROMOTING, {})
    assert d.actions == (UpgradeInstances(("3", "4"), "batch"),) and d.rollout.batch_number == 2


def test_a_reissued_batch_trimmed_to_nothing_chooses_the_next_batch_afresh() -> None:
    # The call for 1, 2 failed; 3 and 4 went down since: no budget for a healthy one, and the down ones
    # cost nothing, so they are the next batch.
    r = promoting(upgraded_ids=("0", "1", "2"), batch_ids=("1", "2"), batch_number=1, batch_started_at=None)
    d = decide(r, fleet(I("0", latest=True), I("1"), I("2"), I("3", probe=BAD), I("4", probe=BAD)), POLICY, LATER)
    assert d.actions == (UpgradeInstances(("3", "4"), "batch"),)
    assert (d.rollout.batch_ids, d.rollout.batch_number, d.rollout.upgraded_ids) == (("3", "4"), 2, ("0", "3", "4"))
    assert events(d)[0] == (
        "BatchTrimmed",
        "batch 1: 1, 2 left out of the re-issue: 2 instance(s) unavailable, max unavailable 2",
        "controller",
        Phase.PROMOTING,
        {"instances": ["1", "2"]},
    )


def test_a_budgeted_reimage_waits_for_the_budget_and_says_so() -> None:
    # 1 (on the release, being moved back) is updating and 2 is down: no budget for reimaging 0.
    r = rolling_back(upgraded_ids=("0", "1"), rollback_ids=("0", "1"))
    observed = fleet(I("0", latest=True), I("1", latest=True, state="Updating"), I("2", probe=BAD), model=OLD)
    d = decide(r, observed, POLICY, LATER)
    assert d.actions == ()
    assert (
        d.rollout.reason
        == "rollback: 1 instance(s) to reimage, waiting for the budget (2 unavailable, max unavailable 2)"
    )


def test_a_rollback_waiting_for_instances_the_release_never_reached_names_each() -> None:
    r = rolling_back(upgraded_ids=("0",), rollback_ids=("0",), reimaged_ids=("0",))
    d = decide(r, fleet(I("0", latest=True), I("1", probe=BAD), I("2", probe=BAD), model=OLD), POLICY, LATER)
    bad = "probe failed: 500 Internal Server Error"
    assert d.actions == () and d.rollout.reason == (
        "rollback: baseline restored; waiting for instances the release never reached: "
        f"instance 1: {bad}; instance 2: {bad}"
    )


def test_a_canary_reissue_waits_for_the_canary_budget_and_keeps_the_canary() -> None:
    # The canary's upgrade call failed; since then 1 and 2 went down: no budget to take 0 down now.
    d = decide(canary(batch_started_at=None), fleet(I("0"), I("1", probe=BAD), I("2", probe=BAD)), POLICY, LATER)
    assert d.actions == () and d.events == ()
    assert (d.rollout.canary_ids, d.rollout.batch_ids, d.rollout.upgraded_ids) == (("0",), ("0",), ("0",))
    assert d.rollout.reason == "canary: waiting for instance 0"


def test_a_promote_full_reissue_is_not_trimmed_to_max_unavailable() -> None:
    r = promoting(promote_full=True, upgraded_ids=("0", "1", "2", "3"), batch_ids=("1", "2", "3"), batch_number=1)
    d = decide(r, fleet(I("0", latest=True), I("1"), I("2"), I("3"), I("4", probe=BAD)), POLICY, LATER)
    assert d.actions == (UpgradeInstances(("1", "2", "3"), "batch"),) and kinds(d) == ["UpgradeIssued"]


def test_a_move_back_reissued_stays_within_the_rollback_budget() -> None:
    # 3 is down for another reason; none of the rollback's own instances is down: one more at a time.
    r = rolling_back(upgraded_ids=("0", "1", "2"), rollback_ids=("0", "1", "2"), batch_started_at=None)
    d = decide(r, fleet(I("0"), I("1"), I("2"), I("3", probe=BAD), model=OLD), POLICY, LATER)
    assert d.actions == (UpgradeInstances(("0",), "rollback"),)


def test_a_canary_lost_while_baking_with_no_instance_to_replace_it_waits_with_its_clock_restarted() -> None:
    r = baking(last_progress_at=T0 - timedelta(seconds=100))
    d = decide(r, fleet(I("1", probe=BAD), I("2", state="Updating")), POLICY, LATER)
    assert d.rollout.phase is Phase.CANARY and d.actions == () and d.rollout.last_progress_at == LATER
    assert d.rollout.reason == "waiting for a canary: no healthy instance to use as the canary"


def test_the_canary_budget_in_the_reason_is_the_one_of_this_fleet_size() -> None:
    policy = RolloutPolicy(max_unavailable=0, max_unavailable_percent=50)
    observed = fleet(I("0", probe=BAD), I("1", probe=BAD), I("2"), I("3"))
    d = decide(rollout(Phase.CANARY), observed, policy, LATER)
    assert d.actions == () and d.rollout.reason.endswith(
        f"2 instance(s) unavailable, max unavailable {policy.calculate_canary_budget(4)}"
    )
