"""The claim and the rollouts change together (issue 10, "State per target commits atomically").

A start (the claim naming R, R Queued -> Canary, the older queued releases superseded) is ONE
``StateStore.commit``; so is a hand-over (R terminal, the claim cleared, the stable release recorded).
``FakeStore.commits`` lists the rows of every commit that landed.
"""

from __future__ import annotations

from typing import Any

from rollout.model import Phase, TargetRecord
from rollout.releases import rollout_id_for
from tests.service.test_rollouts import TARGET, make_world, script


def rid(version: int) -> str:
    return rollout_id_for(script(version))


def test_a_start_names_the_rollout_starts_it_and_supersedes_the_older_ones_in_one_commit() -> None:
    world = make_world()
    host = world.service
    for version in (1, 3, 2):
        world.store.insert_rollout(host._new_rollout(script(version), rid(version), world.clock.now()))
        world.clock.advance(1)
    world.store.commits.clear()

    host.tick()

    start = world.store.commits[0]
    assert start[0] == "target" and sorted(start[1:]) == sorted([rid(3), rid(2), rid(1)])
    target = world.store.get_target(TARGET)
    assert target is not None and target.active_rollout_id == rid(3)
    phases = {r.id: r.phase for r in world.store.list_rollouts(TARGET)}
    assert phases == {rid(3): Phase.CANARY, rid(2): Phase.REJECTED, rid(1): Phase.REJECTED}


def test_the_end_of_a_rollout_and_its_hand_over_are_one_commit() -> None:
    world = make_world()
    assert world.service.start_release(script(1)).phase is Phase.CANARY
    world.tick_until(Phase.SUCCEEDED, rollout_id=rid(1))
    ended = [c for c in world.store.commits if rid(1) in c and "target" in c]
    assert len(ended) == 2, world.store.commits  # the start, and the end with the hand-over
    target = world.store.get_target(TARGET)
    assert target is not None and target.active_rollout_id is None and target.stable_version == 1


def test_an_abort_hands_the_scale_set_over_with_the_verb_and_the_next_release_starts() -> None:
    world = make_world()
    world.service.start_release(script(1))
    assert world.service.start_release(script(2)).status == "Queued"
    world.store.commits.clear()
    assert world.service.command(rid(1), "abort", reason="enough").phase is Phase.ABORTED
    assert world.store.commits[0] == ("target", rid(1))  # Aborted and the claim cleared: one commit
    assert world.phase(rid(2)) is Phase.CANARY  # admitted in the same invocation
    target = world.store.get_target(TARGET)
    assert target is not None and target.active_rollout_id == rid(2)


def test_a_start_whose_commit_loses_writes_neither_the_claim_nor_the_rollout() -> None:
    """Another host writes v1's row just before this host's start lands. Under the two-write
    protocol the claim landed first and the start then failed, leaving the claim on a Queued
    rollout for a later tick to repair; now the start is one commit and fails whole."""
    world = make_world()
    commit = world.store.commit

    def rival_writes_the_rollout_first(target: TargetRecord | None, rollouts: Any) -> Any:
        if target is not None and target.active_rollout_id is not None:
            world.store.commit = commit  # type: ignore[method-assign]
            queued = world.store.get_rollout(TARGET, rid(1))
            assert queued is not None and queued.phase is Phase.QUEUED
            commit(None, [queued.evolve(reason="written by another host")])
        return commit(target, rollouts)

    world.store.commit = rival_writes_the_rollout_first  # type: ignore[method-assign]
    outcome = world.service.start_release(script(1))
    assert outcome.status == "Queued"
    assert world.phase(rid(1)) is Phase.QUEUED
    target = world.store.get_target(TARGET)
    assert target is None or target.active_rollout_id is None  # no claim without a start
    assert world.scale_set.calls_of("update_model") == []
    world.clock.advance(30)
    world.service.tick()
    assert world.phase(rid(1)) is Phase.CANARY


def test_a_claim_row_of_the_previous_layout_keeps_its_stable_release_and_moves_on_the_first_start() -> None:
    world = make_world()
    world.store.legacy_targets[TARGET] = TargetRecord(key=TARGET, stable_version=3)
    assert world.service.start_release(script(2)).status == "Rejected"  # not newer than the stable v3
    assert world.store.get_target(TARGET) == TargetRecord(key=TARGET, stable_version=3)
    assert TARGET not in world.store.targets  # nothing moved by a rejection
    assert world.service.start_release(script(4)).phase is Phase.CANARY
    moved = world.store.targets[TARGET]
    assert moved.stable_version == 3 and moved.active_rollout_id == rid(4)
    world.tick_until(Phase.SUCCEEDED, rollout_id=rid(4))
    assert world.store.targets[TARGET].stable_version == 4
    assert world.store.legacy_targets[TARGET].stable_version == 3  # the old row is never written


def test_a_claim_left_on_a_queued_rollout_by_the_previous_protocol_is_not_a_hold() -> None:
    """A host on the previous version died between its claim and its start: the claim names a
    rollout still Queued. It does not hold the scale set; the next admission starts the newest."""
    world = make_world()
    host = world.service
    world.store.insert_rollout(host._new_rollout(script(1), rid(1), world.clock.now()))
    world.store.save_target(TargetRecord(key=TARGET, active_rollout_id=rid(1)))
    world.clock.advance(1)
    assert host.start_release(script(2)).phase is Phase.CANARY
    assert world.phase(rid(1)) is Phase.REJECTED
    target = world.store.get_target(TARGET)
    assert target is not None and target.active_rollout_id == rid(2)


def test_a_finished_rollout_still_named_by_the_claim_is_handed_over_then_the_next_starts() -> None:
    """A rollout that ended under the previous protocol without its hand-over (or whose reimage
    kept the claim): one commit hands the scale set over, the next commit starts the queued one."""
    world = make_world()
    world.service.start_release(script(1))
    world.tick_until(Phase.SUCCEEDED, rollout_id=rid(1))
    target = world.store.get_target(TARGET)
    assert target is not None
    world.store.save_target(TargetRecord(key=TARGET, active_rollout_id=rid(1), etag=target.etag))
    world.store.insert_rollout(world.service._new_rollout(script(2), rid(2), world.clock.now()))
    world.store.commits.clear()
    world.clock.advance(30)
    world.service.tick()
    assert world.store.commits[:2] == [("target", rid(1)), ("target", rid(2))]
    target = world.store.get_target(TARGET)
    assert target is not None and target.active_rollout_id == rid(2) and target.stable_version == 1


def test_the_tick_that_ends_a_rollout_starts_the_next_release_and_no_more() -> None:
    """The bound of a tick: one decision for the held rollout, then one admission pass (which may
    start the next release and take its first two steps)."""
    world = make_world()
    world.service.start_release(script(1))
    world.tick_until(Phase.PROMOTING, rollout_id=rid(1))
    world.service.start_release(script(2))
    for _ in range(60):
        world.clock.advance(30)
        world.service.tick()
        if world.phase(rid(1)) is Phase.SUCCEEDED:
            break
    assert world.phase(rid(1)) is Phase.SUCCEEDED
    v2 = world.store.get_rollout(TARGET, rid(2))
    assert v2 is not None and v2.phase is Phase.CANARY and v2.canary_ids  # started and its canary sent
    upgraded = world.scale_set.calls_of("upgrade_instances")
    assert upgraded[-1] == v2.canary_ids


def test_rejections_too_large_for_one_transaction_go_first_one_by_one_and_the_start_follows() -> None:
    """Each row fits, but together they pass the 4 MiB a transaction holds."""
    from rollout.ports import RecordTooLargeError

    world = make_world()
    for version in (1, 2, 3):
        world.store.insert_rollout(world.service._new_rollout(script(version), rid(version), world.clock.now()))
        world.clock.advance(1)
    commit = world.store.commit

    def at_most_two_rows(target: TargetRecord | None, rollouts: Any) -> Any:
        if len(rollouts) + (target is not None) > 2:
            raise RecordTooLargeError("the transaction is about 5000000 bytes")
        return commit(target, rollouts)

    world.store.commit = at_most_two_rows  # type: ignore[method-assign]
    world.service.tick()
    assert {world.phase(rid(1)), world.phase(rid(2)), world.phase(rid(3))} == {Phase.REJECTED, Phase.QUEUED}
    assert world.phase(rid(3)) is Phase.QUEUED
    world.clock.advance(30)
    world.service.tick()
    assert world.phase(rid(3)) is Phase.CANARY
