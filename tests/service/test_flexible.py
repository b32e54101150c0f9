"""Whole rollouts on a Flexible scale set, on the fakes: instance ids are VM names, and each of the
two readings of "latest model" the ARM emulator can be switched to (the VM list reports it, or not:
the REST shape of a VM has no latestModelApplied) leads to the same, right outcome."""

from __future__ import annotations

import pytest

from rollout.model import EventKind, Phase
from tests.fakes import FakeScaleSet
from tests.service.test_rollouts import TARGET, World, make_world, script

SWITCHES = ("absent", "in_vm_list")


def flexible_world(switch: str, size: int = 5, **scale_set: object) -> World:
    # "call": an upgrade applies the model of its call and a reimage re-runs the VM's own model, as in
    # the ARM emulator (so a reimage never hides an upgrade that was not sent).
    scale_set.setdefault("apply_model_at", "call")
    return make_world(size, orchestration_mode="Flexible", flexible_model_applied=switch, **scale_set)


def names_in_call_order(ss: FakeScaleSet) -> list[str]:
    return [name for call in ss.calls_of("upgrade_instances") for name in call]  # type: ignore[attr-defined]


@pytest.mark.parametrize("switch", SWITCHES)
def test_a_good_release_reaches_every_vm_of_a_flexible_scale_set_once(switch: str) -> None:
    world = flexible_world(switch)
    names = list(world.scale_set.instances)
    assert all(not n.isdigit() for n in names) and names != sorted(names)  # names, not in creation order
    outcome = world.service.start_release(script(1))
    assert outcome.status == "Advanced" and outcome.phase is Phase.CANARY

    assert world.tick_until(Phase.SUCCEEDED, rollout_id=outcome.rollout_id or "") is Phase.SUCCEEDED
    upgraded = names_in_call_order(world.scale_set)
    assert sorted(upgraded) == sorted(names)  # every VM, by name, exactly once
    assert all(inst.upgrades == 1 for inst in world.scale_set.instances.values())
    assert set(world.scale_set.releases().values()) == {"install_nginx.v1.sh"}
    target = world.store.get_target(TARGET)
    assert target is not None and target.stable_version == 1


@pytest.mark.parametrize("switch", SWITCHES)
def test_a_broken_release_on_a_flexible_scale_set_is_rolled_back_by_name(switch: str) -> None:
    world = flexible_world(switch, broken_releases={"install_nginx.v1.sh"})
    rid = world.service.start_release(script(1)).rollout_id or ""
    assert world.tick_until(Phase.ROLLED_BACK, rollout_id=rid) is Phase.ROLLED_BACK
    [canary] = (world.store.get_rollout(TARGET, rid) or pytest.fail()).canary_ids
    assert canary in world.scale_set.instances and not canary.isdigit()
    # Upgraded to the release, moved back, reimaged: the canary only, by its VM name.
    assert world.scale_set.calls_of("upgrade_instances") == [(canary,), (canary,)]
    assert world.scale_set.calls_of("reimage_instances") == [(canary,)]
    assert set(world.scale_set.releases().values()) == {"install_nginx.sh"}
    others = [i for n, i in world.scale_set.instances.items() if n != canary]
    assert all(i.upgrades == 0 for i in others)


@pytest.mark.parametrize("switch", SWITCHES)
def test_a_vm_created_during_a_flexible_rollout_ends_on_the_release(switch: str) -> None:
    """A scale-out while the model holds the release: the VM runs the release from its creation. With
    the reading absent nothing says so; the records do not know it, so it reads "not latest" and is
    upgraded (a no-op on the model it has) rather than left on an unknown model."""
    world = flexible_world(switch)
    rid = world.service.start_release(script(1)).rollout_id or ""
    world.tick_until(Phase.PROMOTING, rollout_id=rid)
    [added] = world.scale_set.scale_out(1)
    assert world.tick_until(Phase.SUCCEEDED, rollout_id=rid) is Phase.SUCCEEDED
    assert world.scale_set.releases()[added] == "install_nginx.v1.sh"
    rollout = world.store.get_rollout(TARGET, rid) or pytest.fail()
    assert added in rollout.upgraded_ids


@pytest.mark.parametrize("switch", SWITCHES)
def test_a_vm_created_from_the_release_is_moved_back_by_a_flexible_rollback(switch: str) -> None:
    """The dangerous case for records: a VM created from the release's model during the rollout, then
    a rollback. It must not be taken for a baseline VM and left on the release."""
    world = flexible_world(switch, broken_releases={"install_nginx.v1.sh"}, upgrade_observations=2)
    rid = world.service.start_release(script(1)).rollout_id or ""
    [added] = world.scale_set.scale_out(1)  # created from the release's model, before any probe
    assert world.tick_until(Phase.ROLLED_BACK, rollout_id=rid) is Phase.ROLLED_BACK
    assert world.scale_set.releases()[added] == "install_nginx.sh"
    assert set(world.scale_set.releases().values()) == {"install_nginx.sh"}
    assert EventKind.INSTANCES_ON_RELEASE in world.kinds(rid)


def test_the_absent_reading_is_what_the_fake_reports_for_flexible() -> None:
    """The fake behaves like the adapter over the emulator: no reading, said so; Uniform unchanged."""
    assert FakeScaleSet(orchestration_mode="Flexible").observe().model_applied_reported is False
    reported = FakeScaleSet(orchestration_mode="Flexible", flexible_model_applied="in_vm_list").observe()
    assert reported.model_applied_reported is True
    assert FakeScaleSet().observe().model_applied_reported is True


@pytest.mark.parametrize("switch", SWITCHES)
def test_a_throttled_batch_upgrade_is_sent_again_and_every_vm_ends_on_the_release(switch: str) -> None:
    """The records count an instance as moved from its upgrade's save; a call ARM refused (429) must
    not count, or a Flexible scale set would "succeed" with a VM still on the old release."""
    world = flexible_world(switch)
    rid = world.service.start_release(script(1)).rollout_id or ""
    world.tick_until(Phase.PROMOTING, rollout_id=rid)
    world.scale_set.throttle_next = 1
    world.clock.advance(30)
    world.service.tick()
    assert "upgrade_instances:throttled" in [c for c, _ in world.scale_set.calls]
    refused = world.store.get_rollout(TARGET, rid) or pytest.fail()
    assert refused.unsent_ids == refused.batch_ids != ()
    assert world.tick_until(Phase.SUCCEEDED, rollout_id=rid) is Phase.SUCCEEDED
    assert set(world.scale_set.releases().values()) == {"install_nginx.v1.sh"}
    assert (world.store.get_rollout(TARGET, rid) or pytest.fail()).unsent_ids == ()


@pytest.mark.parametrize("switch", SWITCHES)
def test_a_throttled_rollback_upgrade_is_sent_again_and_the_vm_goes_back(switch: str) -> None:
    world = flexible_world(switch, broken_releases={"install_nginx.v1.sh"})
    rid = world.service.start_release(script(1)).rollout_id or ""
    for _ in range(30):  # until the rollback has restored the baseline model, before it moves the canary
        world.clock.advance(30)
        rollout = world.store.get_rollout(TARGET, rid) or pytest.fail()
        if rollout.phase is Phase.ROLLING_BACK and world.scale_set.calls_of("update_model")[-1] != rollout.desired:
            break
        world.service.tick()
    world.scale_set.throttle_next = 1
    world.service.tick()
    assert "upgrade_instances:throttled" in [c for c, _ in world.scale_set.calls]
    assert world.tick_until(Phase.ROLLED_BACK, rollout_id=rid) is Phase.ROLLED_BACK
    assert set(world.scale_set.releases().values()) == {"install_nginx.sh"}
