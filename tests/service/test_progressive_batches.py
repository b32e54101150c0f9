"""Whole rollouts with BATCH_MODE=progressive on the fakes: batches of 1, 2, 4, ... within MAX_UNAVAILABLE;
a batch that breaks rolls back every upgraded instance within the same budget as fixed batches."""

from __future__ import annotations

from rollout.model import EventKind, Phase
from rollout.policy import RolloutPolicy
from tests.service.test_rollouts import TARGET, World, make_world, script


def progressive(**changes: object) -> RolloutPolicy:
    return RolloutPolicy(batch_mode="progressive", bake_seconds=60, failure_threshold=2, **changes)  # type: ignore[arg-type]


def tick_watching_capacity(
    world: World, rollout_id: str, *phases: Phase, max_ticks: int = 80, broken: str | None = None
) -> int:
    """Tick until the rollout is in one of ``phases``; the most instances unavailable at any observation
    (besides ``broken``, the instance the test breaks: the rollout did not take it down)."""
    worst = 0
    for _ in range(max_ticks):
        worst = max(worst, len(set(world.scale_set.unavailable()) - {broken}))
        if world.phase(rollout_id) in phases:
            return worst
        world.clock.advance(30)
        world.service.tick()
    raise AssertionError(f"still {world.phase(rollout_id)} after {max_ticks} ticks")


def test_a_good_release_is_promoted_in_doubling_batches_capped_by_max_unavailable() -> None:
    policy = progressive(max_unavailable=4)
    world = make_world(size=12, policy=policy)
    rid = world.service.start_release(script(1)).rollout_id or ""
    worst = tick_watching_capacity(world, rid, Phase.SUCCEEDED)
    upgrades = world.scale_set.calls_of("upgrade_instances")
    assert upgrades == [
        ("0",),  # the canary
        ("1",),
        ("2", "3"),
        ("4", "5", "6", "7"),
        ("8", "9", "10", "11"),
    ]
    assert tuple(len(b) for b in upgrades[1:]) == policy.batch_plan(12) == (1, 2, 4, 4)  # type: ignore[arg-type]
    assert worst <= 4
    assert all(inst.upgrades == 1 for inst in world.scale_set.instances.values())
    assert set(world.scale_set.releases().values()) == {"install_nginx.v1.sh"}
    assert world.kinds(rid).count(EventKind.BATCH_SUCCEEDED) == 4
    target = world.store.get_target(TARGET)
    assert target is not None and target.stable_version == 1


def test_the_default_fixed_mode_is_unchanged() -> None:
    world = make_world(size=12, policy=RolloutPolicy(bake_seconds=60, failure_threshold=2, max_unavailable=4))
    rid = world.service.start_release(script(1)).rollout_id or ""
    tick_watching_capacity(world, rid, Phase.SUCCEEDED)
    sizes = [len(b) for b in world.scale_set.calls_of("upgrade_instances")]  # type: ignore[arg-type]
    assert sizes == [1, 3, 3, 3, 2]  # canary, then BATCH_PERCENT=20% of 12 = 3 per batch


def test_a_progressive_batch_that_breaks_rolls_back_within_the_budget() -> None:
    policy = progressive(max_unavailable=3)
    world = make_world(size=10, policy=policy)
    rid = world.service.start_release(script(1)).rollout_id or ""
    world.tick_until(Phase.PROMOTING, rollout_id=rid)
    # Batches 1 (1) and 2 (2, 3) go through; then instance 3 breaks on the release.
    for _ in range(10):
        if len(world.scale_set.calls_of("upgrade_instances")) >= 4:
            break
        world.clock.advance(30)
        world.service.tick()
    assert world.scale_set.calls_of("upgrade_instances")[:3] == [("0",), ("1",), ("2", "3")]
    world.scale_set.instances["3"].forced_unhealthy = True
    worst = tick_watching_capacity(world, rid, Phase.ROLLED_BACK, Phase.ROLLING_BACK, broken="3")
    assert world.phase(rid) is Phase.ROLLING_BACK
    world.scale_set.instances["3"].forced_unhealthy = False  # the baseline repairs it
    worst = max(worst, tick_watching_capacity(world, rid, Phase.ROLLED_BACK, broken="3"))
    assert worst <= 3
    assert set(world.scale_set.releases().values()) == {"install_nginx.sh"}
    moved_back = {i for call in world.scale_set.calls_of("upgrade_instances")[4:] for i in call}  # type: ignore[union-attr]
    upgraded = {i for call in world.scale_set.calls_of("upgrade_instances")[:4] for i in call}  # type: ignore[union-attr]
    assert moved_back == upgraded
