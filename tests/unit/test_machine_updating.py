"""The decider never names an instance that is already Updating in a manualupgrade: ARM may refuse
the whole call for it (409, docs/emulator.md "Undocumented behaviours"), and it is upgraded once done."""

from __future__ import annotations

from datetime import timedelta

from rollout.machine import UpgradeInstances, decide
from rollout.model import Phase
from tests.unit.test_machine import POLICY, T0, I, fleet, rollout


def test_promote_full_leaves_out_an_outdated_instance_that_is_updating() -> None:
    decision = decide(
        rollout(Phase.PROMOTING, canary_ids=("0",), upgraded_ids=("0",), promote_full=True),
        fleet(I("0", latest=True), I("1"), I("2", state="Creating", probe=None), I("3", ext="Transitioning")),
        POLICY,
        T0 + timedelta(seconds=30),
    )
    assert decision.actions == (UpgradeInstances(("1",), "batch"),)
    assert decision.rollout.batch_ids == ("1",)


def test_promote_full_waits_while_every_outdated_instance_is_updating_then_takes_them() -> None:
    busy = rollout(Phase.PROMOTING, canary_ids=("0",), upgraded_ids=("0",), promote_full=True)
    waiting = decide(busy, fleet(I("0", latest=True), I("1", state="Updating", probe=None)), POLICY, T0)
    assert waiting.actions == () and waiting.rollout.phase is Phase.PROMOTING
    assert waiting.rollout.reason == "promote-full: waiting for 1 to finish updating"
    done = decide(busy, fleet(I("0", latest=True), I("1")), POLICY, T0)
    assert done.actions == (UpgradeInstances(("1",), "batch"),)


def test_promote_full_rolls_back_when_the_updating_instances_never_finish() -> None:
    busy = rollout(Phase.PROMOTING, canary_ids=("0",), upgraded_ids=("0",), promote_full=True)
    late = T0 + timedelta(seconds=POLICY.progress_deadline_seconds + 1)
    decision = decide(busy, fleet(I("0", latest=True), I("1", state="Updating", probe=None)), POLICY, late)
    assert decision.rollout.phase is Phase.ROLLING_BACK
    assert "promotion stalled" in decision.rollout.rollback_reason
