"""Two hosts, one store, one scale set: the state protocol under interleavings (issue 8).

Each scenario replays one interleaving exactly (``tests/service/interleave.py``): the hosts run in
threads but only one port call happens at a time, in the order the test says.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest

from rollout.model import Phase, Release, Rollout, TargetRecord
from rollout.releases import build_release, parse_release_name
from rollout.service import RolloutService
from tests.fakes import BASE_URL, release_of
from tests.service.interleave import TARGET, Call, TwoHosts, two_hosts


def script(version: int) -> Release:
    name = parse_release_name(f"install_nginx.v{version}.sh")
    assert not isinstance(name, str)
    return build_release(name, f"{BASE_URL}/{name.blob_name}", f"#!/bin/bash\necho v{version}\n".encode())


def rid(version: int) -> str:
    from rollout.releases import rollout_id_for

    return rollout_id_for(script(version))


def started(world: TwoHosts) -> list[Rollout]:
    """Rollouts that hold (or act as if they held) the scale set: active and past Queued."""
    return [r for r in world.store.rollouts.values() if r.phase.is_active]


def at_most_one_started(world: TwoHosts) -> Callable[[], None]:
    def check() -> None:
        active = started(world)
        assert len(active) <= 1, f"two rollouts active at once: {[(r.id, r.phase.value) for r in active]}"

    return check


def settle(world: TwoHosts, max_ticks: int = 200) -> None:
    """Tick one (ungated) host until nothing is active or queued."""
    host = world.service("settler", gated=False)
    for _ in range(max_ticks):
        rollouts = world.store.rollouts.values()
        if not any(r.phase.is_active or r.phase is Phase.QUEUED for r in rollouts):
            return
        world.clock.advance(30)
        host.tick()
    raise AssertionError(f"not settled: {[(r.id, r.phase.value, r.reason) for r in world.store.rollouts.values()]}")


def is_queued_read_of(rollout_id: str) -> Callable[[Call], bool]:
    """A read whose answer shows ``rollout_id`` still Queued (a get or a listing)."""

    def made(call: Call) -> bool:
        if call.name == "get_rollout" and isinstance(call.result, Rollout):
            return call.result.id == rollout_id and call.result.phase is Phase.QUEUED
        if call.name == "list_rollouts":
            return any(r.id == rollout_id and r.phase is Phase.QUEUED for r in call.result)
        return False

    return made


def saves_as(rollout_id: str, phase: Phase) -> Callable[[Call], bool]:
    def stop(call: Call) -> bool:
        return call.name == "update_rollout" and call.args[0].id == rollout_id and call.args[0].phase is phase

    return stop


# --- defect 1: two blob events start two canaries ------------------------------------------------


def test_two_blob_events_at_once_start_one_canary() -> None:
    """Issue 8, defect 1, step by step: A claims the target for v1 and is about to save v1 as
    Canary; B reads the target (v1) and v1 while it is still Queued; A's save lands; B goes on.
    Before the fix B claimed the target with the ETag A left and started v2 as well."""
    world = two_hosts()
    world.checks.append(at_most_one_started(world))
    v1, v2 = rid(1), rid(2)
    world.start("A", lambda s: s.start_release(script(1)))
    world.start("B", lambda s: s.start_release(script(2)))

    world.run_until("A", saves_as(v1, Phase.CANARY))  # A holds the claim, v1 still Queued
    world.run_past("B", lambda c: c.name == "insert_rollout")  # v2 recorded
    world.run_past("B", lambda c: c.name == "get_target" and c.result.active_rollout_id == v1)
    world.run_past("B", is_queued_read_of(v1))  # B sees v1 Queued ...
    world.step("A")  # ... and then A's save of v1 as Canary lands
    world.join()

    assert world.store.rollouts[(TARGET, v1)].phase is Phase.CANARY
    assert world.store.rollouts[(TARGET, v2)].phase is Phase.QUEUED
    target = world.store.get_target(TARGET)
    assert target is not None and target.active_rollout_id == v1
    assert [release_of(m) for m in world.scale_set.calls_of("update_model")] == ["install_nginx.v1.sh"]  # type: ignore[arg-type]

    settle(world)  # v1 ends, then v2 runs: neither is stopped by the other's model
    phases = {r.id: r.phase for r in world.store.rollouts.values()}
    assert phases == {v1: Phase.SUCCEEDED, v2: Phase.SUCCEEDED}
    assert set(world.scale_set.releases().values()) == {"install_nginx.v2.sh"}


# --- every interleaving of two starts, with up to two preemptions ------------------------------------


def _queued(service: RolloutService, version: int) -> Rollout:
    release = script(version)
    return service._new_rollout(release, rid(version), service.clock.now())


def _pre_empty(world: TwoHosts) -> None:
    pass


def _pre_stale_claim(world: TwoHosts) -> None:
    """v1 was claimed by a host that died before it saved v1 as Canary."""
    plain = world.service("setup", gated=False)
    world.store.insert_rollout(_queued(plain, 1))
    world.store.save_target(TargetRecord(key=TARGET, active_rollout_id=rid(1), updated_at=world.clock.now()))


def _pre_two_queued(world: TwoHosts) -> None:
    plain = world.service("setup", gated=False)
    world.store.insert_rollout(_queued(plain, 1))
    world.clock.advance(1)
    world.store.insert_rollout(_queued(plain, 2))


def _pre_finished_not_handed_over(world: TwoHosts) -> None:
    """v1 succeeded but the host died before it cleared the target; v3 is queued behind it."""
    plain = world.service("setup", gated=False)
    plain.start_release(script(1))
    settle(world)
    target = world.store.get_target(TARGET)
    assert target is not None
    world.store.save_target(TargetRecord(**{**target.__dict__, "active_rollout_id": rid(1)}))
    world.store.insert_rollout(_queued(plain, 3))


Work = Callable[[RolloutService], Any]
SCENARIOS: dict[str, tuple[Callable[[TwoHosts], None], Work, Work]] = {
    "start v1 | start v2": (_pre_empty, lambda s: s.start_release(script(1)), lambda s: s.start_release(script(2))),
    "stale claim: tick | start v2": (_pre_stale_claim, lambda s: s.tick(), lambda s: s.start_release(script(2))),
    "stale claim: tick | tick": (_pre_stale_claim, lambda s: s.tick(), lambda s: s.tick()),
    "two queued: tick | tick": (_pre_two_queued, lambda s: s.tick(), lambda s: s.tick()),
    "hand-over: tick | start v4": (
        _pre_finished_not_handed_over,
        lambda s: s.tick(),
        lambda s: s.start_release(script(4)),
    ),
}


def _schedules(limit: int = 40) -> list[tuple[str, int, int]]:
    """(first host, k, j): the first runs k calls, the other j, then the first to its end, then the other."""
    return [(first, k, j) for first in ("A", "B") for k, j in itertools.product(range(limit), repeat=2)]


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_every_interleaving_with_two_preemptions_keeps_one_rollout_active(scenario: str) -> None:
    """Bounded-preemption exhaustive check (every schedule that switches hosts at most twice):
    never two active rollouts, and everything started ends without one stopping the other."""
    prepare, work_a, work_b = SCENARIOS[scenario]
    tried = 0
    lengths: dict[str, int] = {}
    for first, k, j in _schedules():
        other = "B" if first == "A" else "A"
        if k > lengths.get(first, 10**6) or j > lengths.get(other, 10**6):
            continue  # the same schedule as a shorter one
        world = two_hosts()
        prepare(world)
        world.checks.append(at_most_one_started(world))
        world.start("A", work_a)
        world.start("B", work_b)
        try:
            done_first = world.run(first, k)
            done_other = world.run(other, j)
            world.join()
        except AssertionError as exc:
            raise AssertionError(f"{scenario}, schedule {first}{k} {other}{j} then both to the end: {exc}") from exc
        if done_first:
            lengths[first] = min(lengths.get(first, 10**6), k)
        if done_other:
            lengths[other] = min(lengths.get(other, 10**6), j)
        settle(world)
        bad = [(r.id, r.phase.value, r.reason) for r in world.store.rollouts.values() if r.phase is Phase.FAILED]
        assert not bad, f"{scenario}, schedule {first}{k} {other}{j}: {bad}"
        tried += 1
    assert tried > 20


# --- orphans: a started rollout the target does not name (left by the race before the fix) ----------


def _orphan_world() -> tuple[TwoHosts, RolloutService]:
    """v1 started properly (its canary is upgrading); then, as the old claim race left it, the target
    names v2, which a second host saved as Canary with the ETag v1's start left."""
    world = two_hosts()
    host = world.service("A", gated=False)
    assert host.start_release(script(1)).phase is Phase.CANARY
    v2 = world.store.insert_rollout(_queued(host, 2))
    world.store.update_rollout(v2.evolve(phase=Phase.CANARY, baseline=world.store.rollouts[(TARGET, rid(1))].baseline))
    target = world.store.get_target(TARGET)
    assert target is not None
    world.store.save_target(TargetRecord(**{**target.__dict__, "active_rollout_id": rid(2)}))
    return world, host


def test_a_started_rollout_the_target_does_not_name_is_stopped_by_the_next_tick() -> None:
    """Before the fix it stayed Canary for ever: ticks only follow the target."""
    world, host = _orphan_world()
    writes = len(world.scale_set.calls)
    world.clock.advance(30)
    host.tick()
    orphan = world.store.rollouts[(TARGET, rid(1))]
    assert orphan.phase is Phase.ABORTED and "without holding the scale set" in orphan.reason
    events = [e for e in world.store.list_events(TARGET, rid(1)) if e.kind == "Orphaned"]
    assert len(events) == 1 and events[0].message.startswith("Canary -> Aborted")
    # Nothing was written to the scale set for the orphan; the holder (v2) goes on and ends.
    assert all(release_of(m) != "install_nginx.v1.sh" for m in world.scale_set.calls_of("update_model")[1:])  # type: ignore[arg-type]
    assert len(world.scale_set.calls) > writes
    settle(world)
    assert world.store.rollouts[(TARGET, rid(2))].phase is Phase.SUCCEEDED
    assert set(world.scale_set.releases().values()) == {"install_nginx.v2.sh"}


def test_a_started_rollout_left_without_a_claim_is_adopted_when_the_scale_set_is_free() -> None:
    """The target names nothing (the rival finished and handed it back) but v1 is still Canary:
    it holds the scale set again and runs to its end instead of sitting there for ever."""
    world = two_hosts()
    host = world.service("A", gated=False)
    assert host.start_release(script(1)).phase is Phase.CANARY
    target = world.store.get_target(TARGET)
    assert target is not None
    world.store.save_target(TargetRecord(**{**target.__dict__, "active_rollout_id": None}))
    world.clock.advance(30)
    host.tick()
    held = world.store.get_target(TARGET)
    assert held is not None and held.active_rollout_id == rid(1)
    assert "Adopted" in [e.kind for e in world.store.list_events(TARGET, rid(1))]
    settle(world)
    assert world.store.rollouts[(TARGET, rid(1))].phase is Phase.SUCCEEDED
