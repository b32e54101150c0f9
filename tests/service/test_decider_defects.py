"""Issue 8's decider defects as whole rollouts on the fakes: each scenario failed before the fix.

Every scenario also checks the budget the issue asks for: after every tick, no more than
MAX_UNAVAILABLE instances are down or updating because of the rollout.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Any

import pytest

from rollout.machine import apply_command
from rollout.model import EventKind, Phase
from rollout.policy import RolloutPolicy
from rollout.service import RolloutService
from tests.fakes import release_of
from tests.service.test_rollouts import TARGET, World, make_world, script


def policy(**changes: Any) -> RolloutPolicy:
    base: dict[str, Any] = {"bake_seconds": 60, "failure_threshold": 2, "progress_deadline_seconds": 600}
    return RolloutPolicy(**{**base, **changes})


def ticks(world: World, rid: str, *until: Phase, budget: int | None = None, max_ticks: int = 80) -> Phase:
    """Tick until one of ``until``; with ``budget``, check the unavailable instances after every tick."""
    for _ in range(max_ticks):
        rollout = world.store.get_rollout(TARGET, rid)
        assert rollout is not None
        if rollout.phase in until:
            return rollout.phase
        world.clock.advance(30)
        world.service.tick()
        if budget is not None:
            down = world.scale_set.unavailable()
            assert len(down) <= budget, f"{down} unavailable with MAX_UNAVAILABLE={budget}: {world.kinds(rid)}"
    rollout = world.store.get_rollout(TARGET, rid)
    raise AssertionError(f"still {rollout.phase if rollout else None}: {rollout.reason if rollout else ''}")


def step(world: World, count: int = 1) -> None:
    for _ in range(count):
        world.clock.advance(30)
        world.service.tick()


def on(world: World, name: str) -> bool:
    return all(r == name for r in world.scale_set.releases().values())


# --- 2 -------------------------------------------------------------------------------------------


def test_a_canary_scaled_in_while_baking_is_replaced_and_the_rollout_finishes() -> None:
    world = make_world(policy=policy(bake_seconds=300))
    rid = world.service.start_release(script(1)).rollout_id or ""
    assert ticks(world, rid, Phase.BAKING) is Phase.BAKING
    world.scale_set.scale_in("0")
    assert ticks(world, rid, Phase.SUCCEEDED, Phase.ROLLED_BACK, Phase.FAILED) is Phase.SUCCEEDED
    assert EventKind.CANARY_LOST in world.kinds(rid)
    assert on(world, "install_nginx.v1.sh")


def test_an_image_edit_during_a_script_release_stops_it_instead_of_baking_for_ever() -> None:
    world = make_world(policy=policy(bake_seconds=300))
    rid = world.service.start_release(script(1)).rollout_id or ""
    assert ticks(world, rid, Phase.BAKING) is Phase.BAKING
    world.scale_set.edit_model(image_id="/img/someone-elses")
    assert ticks(world, rid, Phase.FAILED, Phase.SUCCEEDED, Phase.ROLLED_BACK, max_ticks=40) is Phase.FAILED
    rollout = world.store.get_rollout(TARGET, rid)
    assert rollout is not None and "model changed outside the rollout" in rollout.reason
    # Nothing was upgraded to the edited model by the rollout.
    assert world.scale_set.calls_of("upgrade_instances") == [("0",)]


# --- 3 -------------------------------------------------------------------------------------------


def test_retry_after_the_model_changed_resumes_without_upgrading_an_instance_twice() -> None:
    # Upgrades finish at once, so none is in flight when the model is edited (an upgrade that lands
    # after the edit applies the edited model: upgrading that instance again is not "twice").
    world = make_world(policy=policy(batch_size=1, max_unavailable=1), upgrade_observations=0)
    rid = world.service.start_release(script(1)).rollout_id or ""
    world.tick_until(Phase.PROMOTING, rollout_id=rid)
    step(world, 1)  # the canary, batches 1 and 2 on the release
    v9 = script(9)
    stray = dataclasses.replace(world.scale_set.model.extension, settings={"fileUris": [v9.blob_url]})  # type: ignore[arg-type]
    world.scale_set.edit_model(extension=stray)
    assert ticks(world, rid, Phase.FAILED) is Phase.FAILED
    world.service.command(rid, "retry")
    assert ticks(world, rid, Phase.SUCCEEDED, Phase.ROLLED_BACK, Phase.FAILED, budget=1) is Phase.SUCCEEDED
    assert on(world, "install_nginx.v1.sh")
    upgrades = Counter(i for call in world.scale_set.calls_of("upgrade_instances") for i in call)  # type: ignore[union-attr]
    assert set(upgrades.values()) == {1}, upgrades


def test_retry_does_not_take_a_second_instance_down_while_an_earlier_canary_is_down() -> None:
    world = make_world(policy=policy(max_unavailable=1, failure_threshold=5))
    rid = world.service.start_release(script(1)).rollout_id or ""
    world.scale_set.instances["0"].forced_unhealthy = True  # the canary breaks
    world.clock.advance(30)
    world.service.tick()
    # Someone writes a model by hand: Failed, with the canary still down.
    stray = dataclasses.replace(world.scale_set.model.extension, settings={"fileUris": ["https://x/y.sh"]})  # type: ignore[arg-type]
    world.scale_set.edit_model(extension=stray)
    assert ticks(world, rid, Phase.FAILED) is Phase.FAILED
    world.service.command(rid, "retry")
    ticks(world, rid, Phase.ROLLED_BACK, Phase.FAILED, Phase.SUCCEEDED, budget=1)


# --- 4 -------------------------------------------------------------------------------------------


def test_a_throttled_batch_is_reissued_within_the_budget_of_the_fleet_as_it_is_then() -> None:
    world = make_world(size=8, policy=policy(batch_size=4, max_unavailable=3, bake_seconds=0))
    rid = world.service.start_release(script(1)).rollout_id or ""
    ticks(world, rid, Phase.PROMOTING)
    # Batch 1 is chosen while 4..7 are down (free to take), and its call is throttled.
    for iid in ("4", "5", "6", "7"):
        world.scale_set.instances[iid].forced_unhealthy = True
    world.scale_set.throttle_next = 1
    world.clock.advance(30)
    world.service.tick()
    rollout = world.store.get_rollout(TARGET, rid)
    assert rollout is not None and rollout.batch_ids == ("4", "5", "6", "7")
    for iid in ("4", "5", "6", "7"):  # they recover before the batch is issued again
        world.scale_set.instances[iid].forced_unhealthy = False
    assert ticks(world, rid, Phase.SUCCEEDED, Phase.ROLLED_BACK, Phase.FAILED, budget=3) is Phase.SUCCEEDED
    assert all(len(call) <= 3 for call in world.scale_set.calls_of("upgrade_instances"))  # type: ignore[arg-type]


# --- 5 and 6 -------------------------------------------------------------------------------------


def test_a_scale_out_during_the_rollout_is_rolled_back_too() -> None:
    world = make_world()
    rid = world.service.start_release(script(1)).rollout_id or ""
    world.tick_until(Phase.PROMOTING, rollout_id=rid)
    [new] = world.scale_set.scale_out(1)  # created from the release's model
    assert release_of(world.scale_set.instances[new].applied) == "install_nginx.v1.sh"
    world.clock.advance(30)
    world.service.tick()
    world.service.command(rid, "abort", rollback=True, reason="bad metrics")
    assert ticks(world, rid, Phase.ROLLED_BACK, Phase.FAILED) is Phase.ROLLED_BACK
    assert on(world, "install_nginx.sh"), world.scale_set.releases()
    assert all(world.scale_set.healthy(i) for i in world.scale_set.instances)


def test_a_scale_out_of_a_broken_release_is_not_left_behind_by_the_rollback() -> None:
    world = make_world(broken_releases={"install_nginx.v1.sh"})
    rid = world.service.start_release(script(1)).rollout_id or ""
    world.scale_set.scale_out(2)  # an autoscaler adds two instances while the canary runs
    assert ticks(world, rid, Phase.ROLLED_BACK, Phase.FAILED) is Phase.ROLLED_BACK
    assert on(world, "install_nginx.sh"), world.scale_set.releases()
    assert all(world.scale_set.healthy(i) for i in world.scale_set.instances)


def test_an_unhealthy_scale_out_on_the_release_blocks_succeeded_and_is_rolled_back() -> None:
    world = make_world()
    rid = world.service.start_release(script(1)).rollout_id or ""
    world.tick_until(Phase.PROMOTING, rollout_id=rid)
    [new] = world.scale_set.scale_out(1)
    world.scale_set.instances[new].forced_unhealthy = True  # the release does not come up on it
    assert ticks(world, rid, Phase.SUCCEEDED, Phase.ROLLED_BACK, Phase.FAILED) is Phase.ROLLED_BACK
    rollout = world.store.get_rollout(TARGET, rid)
    assert rollout is not None and f"instance {new}" in rollout.rollback_reason
    assert on(world, "install_nginx.sh"), world.scale_set.releases()
    assert all(world.scale_set.healthy(i) for i in world.scale_set.instances)


class _LateCompute:
    """Host A's compute: its manualupgrade is held back (in flight) until ``land`` is called."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.held: list[list[str]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def upgrade_instances(self, ids: Any) -> None:
        self.held.append(list(ids))

    def land(self) -> None:
        for ids in self.held:
            self.inner.upgrade_instances(ids)
        self.held.clear()


@pytest.mark.parametrize("lands", ["before the baseline is restored", "after the baseline is restored"])
def test_an_upgrade_in_flight_when_an_abort_is_accepted_does_not_leave_the_release_behind(lands: str) -> None:
    world = make_world(size=6, policy=policy(batch_size=2, max_unavailable=2), upgrade_observations=0)
    rid = world.service.start_release(script(1)).rollout_id or ""
    world.tick_until(Phase.PROMOTING, rollout_id=rid)
    late = _LateCompute(world.scale_set)
    host_a = RolloutService(
        target_key=TARGET,
        compute=late,  # type: ignore[arg-type]
        prober=world.service.prober,
        store=world.store,
        notifier=world.notifier,
        clock=world.clock,
        policy=world.service.policy,
        extension=world.service.extension,
    )
    world.clock.advance(30)
    host_a.tick()  # saves "batch N: upgrading ..."; the call is still in flight
    assert late.held, "host A issued nothing"
    if lands.startswith("before"):
        # Host B accepts the abort (saved), and A's call lands before B's tick restores the model.
        saved = world.store.get_rollout(TARGET, rid)
        assert saved is not None
        world.store.update_rollout(apply_command(saved, "abort", world.clock.now(), rollback=True).rollout)
        late.land()
        step(world)
    else:
        world.service.command(rid, "abort", rollback=True, reason="stop")  # host B, over HTTP
        late.land()  # host A's manualupgrade lands after the abort was accepted and acted on
    assert ticks(world, rid, Phase.ROLLED_BACK, Phase.FAILED) is Phase.ROLLED_BACK
    assert on(world, "install_nginx.sh"), world.scale_set.releases()
    assert all(world.scale_set.healthy(i) for i in world.scale_set.instances)


# --- the rollback capacity policy ----------------------------------------------------------------


def test_a_budgeted_rollback_of_a_healthy_fleet_stays_within_max_unavailable() -> None:
    world = make_world(size=6, policy=policy(batch_size=2, max_unavailable=2))
    rid = world.service.start_release(script(1)).rollout_id or ""
    world.tick_until(Phase.PROMOTING, rollout_id=rid)
    step(world, 2)  # canary and two batches on the release
    rollout = world.store.get_rollout(TARGET, rid)
    assert rollout is not None and len(rollout.upgraded_ids) >= 4
    world.service.command(rid, "abort", rollback=True, reason="operator")
    assert ticks(world, rid, Phase.ROLLED_BACK, Phase.FAILED, budget=2) is Phase.ROLLED_BACK
    assert on(world, "install_nginx.sh")
    assert all(len(call) <= 2 for call in world.scale_set.calls_of("upgrade_instances"))  # type: ignore[arg-type]
    assert all(len(call) <= 2 for call in world.scale_set.calls_of("reimage_instances"))  # type: ignore[arg-type]


# --- a fleet mixed before the rollout started (make chaos, seed 1272273318) ----------------------


def test_a_rollback_on_a_fleet_left_mixed_by_an_abort_leaves_the_untouched_instances_as_they_were() -> None:
    """v1 is aborted without rollback part-way: the model is v1's, some instances still run the release
    before it. v2 is broken and rolls back. RolledBack then means "as before v2": instances v2 took go
    back to v1's model, instances it never touched keep what they ran, and the start said so."""
    world = make_world(size=4, policy=policy(batch_size=1, max_unavailable=1), broken_releases={"install_nginx.v2.sh"})
    v1 = world.service.start_release(script(1)).rollout_id or ""
    world.tick_until(Phase.PROMOTING, rollout_id=v1)
    world.service.command(v1, "abort", reason="enough for today")  # no rollback: the fleet stays mixed
    ticks(world, v1, Phase.ABORTED)
    for _ in range(3):  # an upgrade in flight at the abort lands (the fake moves on when observed)
        world.service.fleet()
    before = world.scale_set.releases()
    left = sorted(i for i, r in before.items() if r == "install_nginx.sh")
    assert left and len(left) < len(before), before  # mixed, or the scenario proves nothing

    v2 = world.service.start_release(script(2)).rollout_id or ""
    warnings = [e.message for e in world.store.list_events(TARGET, v2) if e.kind is EventKind.BASELINE_WARNING]
    assert any(f"instances {', '.join(left)} do not" in w and "current model" in w for w in warnings), (left, warnings)
    assert ticks(world, v2, Phase.ROLLED_BACK, Phase.FAILED, budget=1) is Phase.ROLLED_BACK
    after = world.scale_set.releases()
    assert "install_nginx.v2.sh" not in after.values(), after
    assert {i: after[i] for i in left} == {i: "install_nginx.sh" for i in left}, after
    assert all(world.scale_set.healthy(i) for i in world.scale_set.instances)
