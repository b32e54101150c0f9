"""Two hosts, one store, one scale set: the state protocol under interleavings (issue 8).

Each scenario replays one interleaving exactly (``tests/service/interleave.py``): the hosts run in
threads but only one port call happens at a time, in the order the test says.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest

from rollout.model import EventKind, ModelSpec, Phase, Release, Rollout, TargetRecord
from rollout.releases import build_release, parse_release_name
from rollout.service import OutcomeStatus, RolloutService
from tests.fakes import BASE_URL, release_of, v0_extension
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


def writes_only_for_the_holder(world: TwoHosts) -> Callable[[], None]:
    """Every ARM write just made is for the rollout the target names, and that rollout is started."""

    def check() -> None:
        call = world.log[-1] if world.log else None
        if call is None or call.error is not None or call.name not in ("update_model", "upgrade_instances"):
            return
        target = world.store.get_target(TARGET)
        holder = world.store.rollouts.get((TARGET, target.active_rollout_id or "")) if target else None
        assert holder is not None and holder.phase.is_active, f"{call.name} by {call.host} with no rollout holding"
        if call.name == "update_model":
            spec = call.args[0]
            assert spec in (holder.desired, holder.baseline), f"model write by {call.host} is not {holder.id}'s"

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
        if call.name == "load":
            return any(r.id == rollout_id and r.phase is Phase.QUEUED for r in call.result[1])
        return False

    return made


def saves_as(rollout_id: str, phase: Phase) -> Callable[[Call], bool]:
    """A commit that writes ``rollout_id`` in ``phase``."""

    def stop(call: Call) -> bool:
        return call.name == "commit" and any(r.id == rollout_id and r.phase is phase for r in call.args[1])

    return stop


# --- defect 1: two blob events start two canaries ------------------------------------------------


def test_two_blob_events_at_once_start_one_canary() -> None:
    """Issue 8, defect 1, step by step: A is about to commit v1's start (the claim and v1 as Canary,
    one transaction); B records v2 and reads the partition while v1 is still Queued and the scale set
    free; A's commit lands; B goes on. B's start (v2, superseding v1) is conditional on the claim row
    and v1's row as it read them, so it fails: v2 waits. Before issue 8's fix B claimed the target
    with the ETag A left and started v2 as well."""
    world = two_hosts()
    world.checks.append(at_most_one_started(world))
    v1, v2 = rid(1), rid(2)
    world.start("A", lambda s: s.start_release(script(1)))
    world.start("B", lambda s: s.start_release(script(2)))

    world.run_until("A", saves_as(v1, Phase.CANARY))  # A is about to commit v1's start
    world.run_past("B", lambda c: c.name == "insert_rollout")  # v2 recorded
    world.run_past("B", is_queued_read_of(v1))  # B sees v1 Queued and the scale set free ...
    world.step("A")  # ... and then A's start of v1 lands
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


def _pre_legacy_claim(world: TwoHosts) -> None:
    """The claim row is still where the previous version kept it (the targets table): both hosts
    read it with no ETag and each start would move it by an insert; one insert wins."""
    world.store.legacy_targets[TARGET] = TargetRecord(key=TARGET, stable_version=0)


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


def _pre_about_to_reimage(world: TwoHosts) -> None:
    """v1 broke its canary; the rollback has moved instance 0 back, so the next tick reimages it.
    v2 is queued behind it."""
    world.scale_set.broken_releases.add("install_nginx.v1.sh")
    plain = world.service("setup", gated=False)
    plain.start_release(script(1))
    plain.start_release(script(2))
    for _ in range(40):
        if world.scale_set.calls_of("upgrade_instances") == [("0",), ("0",)]:  # the canary, then back
            assert world.scale_set.calls_of("reimage_instances") == []
            return
        world.clock.advance(30)
        plain.tick()
    raise AssertionError("the rollback never got to its reimage")


def _reimaged_before_the_hand_over(world: TwoHosts) -> None:
    calls = world.scale_set.calls
    assert world.store.rollouts[(TARGET, rid(1))].phase is Phase.ROLLED_BACK
    reimaged = [i for i, (c, arg) in enumerate(calls) if c == "reimage_instances" and arg == ("0",)]
    v2 = [i for i, (c, arg) in enumerate(calls) if c == "update_model" and release_of(arg) == "install_nginx.v2.sh"]  # type: ignore[arg-type]
    assert reimaged and v2 and max(reimaged) < min(v2), [c for c, _ in calls]


def _no_reimage_after_the_hand_over(world: TwoHosts) -> None:
    calls = world.scale_set.calls
    reimaged = [i for i, (c, _) in enumerate(calls) if c == "reimage_instances"]
    v2 = [i for i, (c, arg) in enumerate(calls) if c == "update_model" and release_of(arg) == "install_nginx.v2.sh"]  # type: ignore[arg-type]
    assert v2 and all(i < min(v2) for i in reimaged), [c for c, _ in calls]


def _no_check(world: TwoHosts) -> None:
    pass


Work = Callable[[RolloutService], Any]
SCENARIOS: dict[str, tuple[Callable[[TwoHosts], None], Work, Work]] = {
    "start v1 | start v2": (_pre_empty, lambda s: s.start_release(script(1)), lambda s: s.start_release(script(2))),
    "stale claim: tick | start v2": (_pre_stale_claim, lambda s: s.tick(), lambda s: s.start_release(script(2))),
    "claim row of the previous layout: start v1 | start v2": (
        _pre_legacy_claim,
        lambda s: s.start_release(script(1)),
        lambda s: s.start_release(script(2)),
    ),
    "stale claim: tick | tick": (_pre_stale_claim, lambda s: s.tick(), lambda s: s.tick()),
    "two queued: tick | tick": (_pre_two_queued, lambda s: s.tick(), lambda s: s.tick()),
    "hand-over: tick | start v4": (
        _pre_finished_not_handed_over,
        lambda s: s.tick(),
        lambda s: s.start_release(script(4)),
    ),
    "reimage: tick | tick": (_pre_about_to_reimage, lambda s: s.tick(), lambda s: s.tick()),
    "reimage: tick | abort": (
        _pre_about_to_reimage,
        lambda s: s.tick(),
        lambda s: s.command(rid(1), "abort", reason="enough"),
    ),
}
FINAL_CHECKS: dict[str, Callable[[TwoHosts], None]] = {
    "reimage: tick | tick": _reimaged_before_the_hand_over,
    "reimage: tick | abort": _no_reimage_after_the_hand_over,
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
        world.checks += [at_most_one_started(world), writes_only_for_the_holder(world)]
        world.start("A", work_a)
        world.start("B", work_b)
        try:
            done_first = world.run(first, k)
            done_other = world.run(other, j)
            world.join()
        except AssertionError as exc:
            raise AssertionError(f"{scenario}, schedule {first}{k} {other}{j} then both to the end: {exc}") from exc
        # Whatever the interleaving, each host answers with one of the documented statuses (a start whose
        # rollout another host started meanwhile once answered with the phase's name, e.g. "Canary").
        for name in ("A", "B"):
            outcome = world.hosts[name].outcome
            assert isinstance(outcome.status, OutcomeStatus), (scenario, first, k, j, name, outcome)
        if done_first:
            lengths[first] = min(lengths.get(first, 10**6), k)
        if done_other:
            lengths[other] = min(lengths.get(other, 10**6), j)
        settle(world)
        bad = [(r.id, r.phase.value, r.reason) for r in world.store.rollouts.values() if r.phase is Phase.FAILED]
        assert not bad, f"{scenario}, schedule {first}{k} {other}{j}: {bad}"
        try:
            FINAL_CHECKS.get(scenario, _no_check)(world)
        except AssertionError as exc:
            raise AssertionError(f"{scenario}, schedule {first}{k} {other}{j}: {exc}") from exc
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
    events = [e for e in world.store.list_events(TARGET, rid(1)) if e.kind is EventKind.ORPHANED]
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
    assert EventKind.ADOPTED in [e.kind for e in world.store.list_events(TARGET, rid(1))]
    settle(world)
    assert world.store.rollouts[(TARGET, rid(1))].phase is Phase.SUCCEEDED


# --- defect 5, variant 2: a reimage saved but not sent ------------------------------------------------


class HostDied(Exception):
    """Not a port error: the service does not catch it, like a host stopping mid-tick."""


class DiesBeforeReimage:
    """The scale set of a host that stops right after saving a reimage and before sending it."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def reimage_instances(self, instance_ids: Any) -> None:
        raise HostDied(f"host stopped before sending the reimage of {list(instance_ids)}")


def _broken_v1(world: TwoHosts) -> RolloutService:
    """v1 breaks its canary (instance 0); returns a plain host that started it."""
    world.scale_set.broken_releases.add("install_nginx.v1.sh")
    host = world.service("setup", gated=False)
    assert host.start_release(script(1)).phase is Phase.CANARY
    return host


def _tick_until_about_to(world: TwoHosts, name: str, max_ticks: int = 40) -> None:
    """Tick gated host A (a new tick each time) until its next port call is ``name``; A waits there."""
    for n in range(max_ticks):
        world.clock.advance(30)
        world.start(f"A{n}", lambda s: s.tick())
        while (call := world.gate.next_call(f"A{n}")) is not None and call.name != name:
            world.step(f"A{n}")
        if call is not None:
            world.hosts["A"] = world.hosts.pop(f"A{n}")
            world.hosts["A"].name = f"A{n}"
            return
    raise AssertionError(f"no tick reached {name}")


def test_a_tick_that_dies_between_saving_and_sending_a_reimage_has_it_issued_again() -> None:
    """Issue 8, crash window: the saved reimage used to count as done, so the next tick declared
    RolledBack with the canary never reimaged (the bad release's changes still on its disk)."""
    world = two_hosts()
    _broken_v1(world)
    dying = world.service("dying", gated=False)
    dying.compute = DiesBeforeReimage(world.scale_set)
    for _ in range(40):
        world.clock.advance(30)
        try:
            dying.tick()
        except HostDied:
            break
    else:
        raise AssertionError("the rollback never reached its reimage")
    assert world.scale_set.calls_of("reimage_instances") == []

    other = world.service("B", gated=False)  # a fresh host takes over
    for _ in range(40):
        if world.store.rollouts[(TARGET, rid(1))].phase is Phase.ROLLED_BACK:
            break
        world.clock.advance(30)
        other.tick()
    rollout = world.store.rollouts[(TARGET, rid(1))]
    assert rollout.phase is Phase.ROLLED_BACK, rollout.reason
    assert world.scale_set.calls_of("reimage_instances") == [("0",)]
    assert rollout.reimaged_ids == ("0",)
    assert EventKind.REIMAGE_REISSUED in [e.kind for e in world.store.list_events(TARGET, rid(1))]


def test_a_reimage_another_host_has_saved_but_not_sent_is_not_read_as_done() -> None:
    """Issue 8, defect 5, second variant: host A saved "reimaging 0" and is about to send it; host B
    ticks meanwhile. B used to read the reimage as done, declare RolledBack and hand the scale set to
    the queued v2, and A's reimage then landed in the middle of v2's canary."""
    world = two_hosts()
    host = _broken_v1(world)
    host.start_release(script(2))  # queued behind v1
    _tick_until_about_to(world, "reimage_instances")  # A saved the reimage and waits before sending it

    other = world.service("B", gated=False)
    world.clock.advance(30)
    other.tick()
    assert world.store.rollouts[(TARGET, rid(1))].phase is Phase.ROLLING_BACK
    assert world.store.rollouts[(TARGET, rid(2))].phase is Phase.QUEUED
    world.join()  # A's reimage lands, and is confirmed

    settle(world)
    calls = [c for c, _ in world.scale_set.calls]
    reimaged_at = world.scale_set.calls.index(("reimage_instances", ("0",)))
    v2_model = next(
        i
        for i, (c, arg) in enumerate(world.scale_set.calls)
        if c == "update_model" and release_of(arg) == "install_nginx.v2.sh"  # type: ignore[arg-type]
    )
    assert reimaged_at < v2_model, calls
    assert world.scale_set.calls_of("reimage_instances") == [("0",)]  # B did not send it again
    assert world.store.rollouts[(TARGET, rid(1))].phase is Phase.ROLLED_BACK
    assert world.store.rollouts[(TARGET, rid(2))].phase is Phase.SUCCEEDED


def test_an_abort_while_a_reimage_is_being_sent_hands_over_only_once_it_is_sent() -> None:
    """The same window through an abort: host A saved "reimaging 0"; an operator aborts on host B
    (no rollback). Before, the scale set went to the queued v2 at once and A's reimage landed in
    v2's canary. Now the hand-over waits for A's confirmation (or the bound, if A died)."""
    world = two_hosts()
    host = _broken_v1(world)
    host.start_release(script(2))
    _tick_until_about_to(world, "reimage_instances")

    operator = world.service("B", gated=False)
    assert operator.command(rid(1), "abort", reason="enough").phase is Phase.ABORTED
    target = world.store.get_target(TARGET)
    assert target is not None and target.active_rollout_id == rid(1)
    assert world.store.rollouts[(TARGET, rid(2))].phase is Phase.QUEUED
    world.join()  # A sends the reimage and confirms it

    v1 = world.store.rollouts[(TARGET, rid(1))]
    assert v1.reimaged_ids == ("0",) and v1.reimage_pending == ()
    late = [e for e in world.store.list_events(TARGET, rid(1)) if e.kind is EventKind.LATE_WRITE]
    assert [e.message.split(",")[0] for e in late] == ["reimage of 0 issued by a tick that decided in RollingBack"]
    settle(world)
    reimaged_at = world.scale_set.calls.index(("reimage_instances", ("0",)))
    v2_model = next(
        i
        for i, (c, arg) in enumerate(world.scale_set.calls)
        if c == "update_model" and release_of(arg) == "install_nginx.v2.sh"  # type: ignore[arg-type]
    )
    assert reimaged_at < v2_model
    assert world.store.rollouts[(TARGET, rid(2))].phase is Phase.SUCCEEDED


# --- defect 5, variant 1: an abort accepted while a tick's manualupgrade is in flight ------------------


def test_a_manualupgrade_that_lands_after_an_abort_is_recorded_in_the_trail() -> None:
    """Issue 8, defect 5: a tick saved "batch 1: upgrading 1"; an abort with rollback is accepted on
    another host; then the tick's manualupgrade lands anyway. The trail says so, with the ids."""
    world = two_hosts()
    host = world.service("setup", gated=False)
    assert host.start_release(script(1)).phase is Phase.CANARY
    _tick_until_about_to(world, "upgrade_instances")  # A saved batch 1 and is about to send it
    batch = world.store.rollouts[(TARGET, rid(1))].batch_ids
    assert world.store.rollouts[(TARGET, rid(1))].phase is Phase.PROMOTING and batch

    operator = world.service("B", gated=False)
    assert operator.command(rid(1), "abort", rollback=True, reason="error rate up").phase is Phase.ROLLING_BACK
    world.join()  # the manualupgrade lands after the abort

    late = [e for e in world.store.list_events(TARGET, rid(1)) if e.kind is EventKind.LATE_WRITE]
    assert len(late) == 1, [e.message for e in world.store.list_events(TARGET, rid(1))]
    assert late[0].message.startswith(
        f"manualupgrade of {', '.join(batch)} issued by a tick that decided in Promoting, "
        "before the rollout became RollingBack"
    )
    assert late[0].data["instances"] == list(batch)
    settle(world)
    assert world.store.rollouts[(TARGET, rid(1))].phase is Phase.ROLLED_BACK
    assert set(world.scale_set.releases().values()) == {"install_nginx.sh"}


# --- the hand-over racing the next start ----------------------------------------------------------


def test_a_hand_over_that_finds_the_scale_set_claimed_again_stops_there() -> None:
    """v1 succeeded but its host died before handing the scale set back; v3 is queued. Host B's tick
    reads the target (v1) and is about to hand it over; meanwhile host A hands it over, claims it for
    v3 and starts v3; then v4 arrives. B's hand-over write fails and re-reads the target, now naming
    v3. Before, B went on from there as if the scale set were free and started v4 next to v3."""
    world = two_hosts()
    _pre_finished_not_handed_over(world)
    world.checks.append(at_most_one_started(world))
    world.start("B", lambda s: s.tick())
    world.run_until("B", lambda c: c.name == "commit" and c.args[0] is not None)  # B: about to clear v1's claim

    other = world.service("A", gated=False)
    other.tick()  # A hands over, claims v3, starts v3
    assert world.store.rollouts[(TARGET, rid(3))].phase is Phase.CANARY
    world.store.insert_rollout(_queued(other, 4))  # v4's blob event recorded it
    world.join()

    assert world.store.rollouts[(TARGET, rid(4))].phase is Phase.QUEUED
    assert world.hosts["B"].outcome.status == "Lost"
    settle(world)
    assert world.store.rollouts[(TARGET, rid(3))].phase is Phase.SUCCEEDED
    assert world.store.rollouts[(TARGET, rid(4))].phase is Phase.SUCCEEDED


def test_adopting_an_orphan_makes_a_start_under_way_fail() -> None:
    """A started rollout no claim names turns up (a row edited by hand, or written by the code
    before this protocol) while host A is about to commit v1's start. Host B's tick claims the scale
    set for the orphan; A's start, conditional on the claim row A read, must then fail, or two
    rollouts run."""
    world = two_hosts()
    world.checks.append(at_most_one_started(world))
    world.start("A", lambda s: s.start_release(script(1)))
    world.run_until("A", saves_as(rid(1), Phase.CANARY))
    plain = world.service("setup", gated=False)
    orphan = world.store.insert_rollout(_queued(plain, 2))
    world.store.update_rollout(orphan.evolve(phase=Phase.CANARY, baseline=ModelSpec(extension=v0_extension())))

    world.service("B", gated=False).tick()
    target = world.store.get_target(TARGET)
    assert target is not None and target.active_rollout_id == rid(2)
    world.join()
    assert world.hosts["A"].outcome.status == "Queued"  # its start lost; v1 waits its turn
    assert world.store.rollouts[(TARGET, rid(1))].phase is Phase.QUEUED


# --- a verb is saved, then acted on -----------------------------------------------------------------


def test_a_verb_saved_whose_follow_up_tick_meets_a_backend_error_is_reported_done() -> None:
    """Before, the abort was saved and then the follow-up tick's store error made the call answer
    503 "try again", and trying again answered 409: the rollout was already rolling back."""
    from rollout.ports import TransientError

    world = two_hosts()
    host = world.service("A", gated=False)
    assert host.start_release(script(1)).phase is Phase.CANARY
    failing = {"load": 1}

    class FlakyStore:
        def __getattr__(self, name: str) -> Any:
            attr = getattr(world.store, name)
            if failing.get(name):

                def fail(*args: Any) -> Any:
                    failing[name] -= 1
                    raise TransientError("503 Server Busy (fake)")

                return fail
            return attr

    host.store = FlakyStore()  # type: ignore[assignment]
    outcome = host.command(rid(1), "abort", rollback=True, reason="bad")
    assert outcome.status == "Done" and outcome.phase is Phase.ROLLING_BACK
    assert "the next tick does" in outcome.message
    settle(world)
    assert world.store.rollouts[(TARGET, rid(1))].phase is Phase.ROLLED_BACK
