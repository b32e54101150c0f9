"""BATCH_MODE=progressive: promotion batches of 1, 2, 4, ... instances, each capped by MAX_UNAVAILABLE
and by what remains; BATCH_MODE=fixed (the default) keeps BATCH_SIZE / BATCH_PERCENT."""

from __future__ import annotations

from datetime import timedelta

import pytest

from rollout.machine import UpgradeInstances, decide
from rollout.model import EventKind, Phase
from rollout.policy import RolloutPolicy
from rollout.settings import SettingsError, load_settings
from rollout.targets_doc import TargetDefaults, TargetsDocumentError, config_from_data
from tests.unit.test_machine import BAD, OK, T0, I, fleet, rollout

SUB = "00000000-0000-0000-0000-000000000000"
REQUIRED = {"AZURE_SUBSCRIPTION_ID": SUB, "VMSS_RESOURCE_GROUP": "rg", "VMSS_NAME": "vmss", "StateStorage": "x"}


def progressive(**changes: object) -> RolloutPolicy:
    return RolloutPolicy(batch_mode="progressive", bake_seconds=0, progress_deadline_seconds=600, **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("policy", "fleet_size", "plan"),
    [
        # Doubling, the last batch what remains (canary 1, MAX_UNAVAILABLE large enough not to bite).
        (progressive(max_unavailable=100), 16, (1, 2, 4, 8)),
        (progressive(max_unavailable=100), 10, (1, 2, 4, 2)),
        (progressive(max_unavailable=100), 2, (1,)),
        (progressive(max_unavailable=100), 1, ()),  # the canary is the whole fleet
        (progressive(max_unavailable=100), 0, ()),
        # Capped by MAX_UNAVAILABLE, as a count or as a share of the fleet (20% of 20 = 4).
        (progressive(max_unavailable=3), 16, (1, 2, 3, 3, 3, 3)),
        (progressive(max_unavailable=1), 5, (1, 1, 1, 1)),
        (progressive(), 20, (1, 2, 4, 4, 4, 4)),
        (progressive(max_unavailable_percent=50), 40, (1, 2, 4, 8, 16, 8)),
        # A larger canary: the batches after it still start at 1; BATCH_SIZE/BATCH_PERCENT play no part.
        (progressive(canary_count=3, max_unavailable=100, batch_size=5), 12, (1, 2, 4, 2)),
        # Fixed (the default): every batch BATCH_SIZE or BATCH_PERCENT, within MAX_UNAVAILABLE.
        (RolloutPolicy(batch_size=3, max_unavailable=100), 10, (3, 3, 3)),
        (RolloutPolicy(batch_size=5, max_unavailable=2), 6, (2, 2, 1)),
        (RolloutPolicy(), 10, (2, 2, 2, 2, 1)),
    ],
)
def test_the_sequence_of_batch_sizes(policy: RolloutPolicy, fleet_size: int, plan: tuple[int, ...]) -> None:
    assert policy.batch_plan(fleet_size) == plan
    assert sum(plan) == max(0, fleet_size - policy.canary_count)


@pytest.mark.parametrize(
    ("promoted", "cap", "size"),
    [(0, 10, 1), (1, 10, 2), (3, 10, 4), (7, 10, 8), (15, 10, 10), (2, 10, 3), (-1, 10, 1), (10**9, 10, 10)],
)
def test_a_progressive_batch_is_one_more_than_the_instances_already_promoted(
    promoted: int, cap: int, size: int
) -> None:
    assert progressive(max_unavailable=cap).promotion_batch_size(100, promoted) == size


def test_the_default_is_fixed_and_fixed_ignores_what_is_promoted() -> None:
    policy = RolloutPolicy(batch_size=3)
    assert policy.batch_mode == "fixed"
    assert {policy.promotion_batch_size(10, n) for n in range(10)} == {3}


def run_promotion(policy: RolloutPolicy, size: int, down: frozenset[str] = frozenset()) -> list[tuple[str, ...]]:
    """Drive the decider over a simulated fleet of ``size`` instances from Promoting (canary 0 done) to
    Succeeded: every upgrade lands at the next observation. ``down``: instances unhealthy until upgraded."""
    ids = [str(n) for n in range(size)]
    latest = {"0"}
    r = rollout(Phase.PROMOTING, canary_ids=("0",), upgraded_ids=("0",))
    batches: list[tuple[str, ...]] = []
    now = T0
    for _ in range(100):
        now += timedelta(seconds=30)
        view = fleet(*(I(i, latest=i in latest, probe=BAD if i in down and i not in latest else OK) for i in ids))
        decision = decide(r, view, policy, now)
        r = decision.rollout
        for action in decision.actions:
            if isinstance(action, UpgradeInstances):
                batches.append(action.instance_ids)
                latest |= set(action.instance_ids)
        if r.phase is not Phase.PROMOTING:
            break
    assert r.phase is Phase.SUCCEEDED, r.reason
    return batches


@pytest.mark.parametrize(("cap", "size"), [(100, 16), (100, 11), (3, 12), (1, 4), (4, 30)])
def test_the_decider_promotes_in_the_planned_sizes(cap: int, size: int) -> None:
    policy = progressive(max_unavailable=cap)
    batches = run_promotion(policy, size)
    assert tuple(len(b) for b in batches) == policy.batch_plan(size)
    assert sorted(i for b in batches for i in b) == sorted(str(n) for n in range(1, size))


def test_an_instance_already_down_is_taken_in_the_batch_and_the_budget_still_holds() -> None:
    # 2 is down before its batch: it costs nothing to upgrade and is taken first; with it down, batch 1
    # (of 1) holds only it, so no healthy instance goes down beyond MAX_UNAVAILABLE=2.
    policy = progressive(max_unavailable=2)
    batches = run_promotion(policy, 8, down=frozenset({"2"}))
    assert batches[0] == ("2",)
    assert all(len(b) <= 2 for b in batches)
    assert [len(b) for b in batches] == [1, 2, 2, 2]


def test_a_trimmed_batch_does_not_grow_the_next_one() -> None:
    # Canary 0, then 1 promoted; batch 2 was 2 and 3, but 3 was trimmed out (not recorded as upgraded):
    # the next batch is sized from the instances on the release (1 and 2), i.e. 3, not 4.
    policy = progressive(max_unavailable=10)
    r = rollout(Phase.PROMOTING, canary_ids=("0",), upgraded_ids=("0", "1", "2"), batch_number=2)
    view = fleet(*(I(str(n), latest=n <= 2) for n in range(10)))
    decision = decide(r, view, policy, T0 + timedelta(seconds=30))
    assert decision.actions == (UpgradeInstances(("3", "4", "5"), "batch"),)
    assert decision.rollout.batch_number == 3
    assert any(e.kind is EventKind.BATCH_STARTED for e in decision.events)


def test_instances_scaled_in_do_not_count_as_promoted() -> None:
    policy = progressive(max_unavailable=10)
    r = rollout(Phase.PROMOTING, canary_ids=("0",), upgraded_ids=("0", "1", "2", "3"))
    view = fleet(I("0", latest=True), *(I(str(n)) for n in range(4, 10)))  # 1, 2, 3 scaled in
    decision = decide(r, view, policy, T0 + timedelta(seconds=30))
    assert decision.actions == (UpgradeInstances(("4",), "batch"),)


def test_the_setting_and_its_bad_values() -> None:
    assert load_settings({**REQUIRED, "BATCH_MODE": "Progressive"}).policy.batch_mode == "progressive"
    assert load_settings(REQUIRED).policy.batch_mode == "fixed"
    with pytest.raises(SettingsError, match="BATCH_MODE='doubling' must be one of fixed, progressive"):
        load_settings({**REQUIRED, "BATCH_MODE": "doubling"})


def test_a_target_of_the_targets_document_may_choose_it() -> None:
    defaults = TargetDefaults(subscription_id=SUB)
    target = {"resourceGroup": "rg", "name": "a", "policy": {"BATCH_MODE": "progressive", "MAX_UNAVAILABLE": 3}}
    config = config_from_data({"groups": [{"name": "web", "waves": [{"targets": [target]}]}]}, defaults, "t")
    [policy] = [t.policy for g in config.groups for w in g.waves for t in w.targets]
    assert policy.batch_mode == "progressive" and policy.batch_plan(10) == (1, 2, 3, 3)
    target["policy"] = {"BATCH_MODE": 2}
    with pytest.raises(TargetsDocumentError, match="BATCH_MODE='2' must be one of fixed, progressive"):
        config_from_data({"groups": [{"name": "web", "waves": [{"targets": [target]}]}]}, defaults, "t")
