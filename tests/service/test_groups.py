"""Releases crossing the waves of a group, tick by tick, on the in-memory fakes: one FakeScaleSet and one
RolloutService per target over one shared FakeStore, and the GroupService on top (rollout.groups)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

import pytest

from rollout.groups import AmbiguousGroupReleaseError, GroupReleaseNotFoundError, GroupService, GroupTargetNotFoundError
from rollout.machine import CommandError, Verb
from rollout.model import EventKind, Phase, Release, Rollout
from rollout.policy import RolloutPolicy
from rollout.ports import TransientError
from rollout.releases import ExtensionDefaults, build_release, parse_release_name, rollout_id_for
from rollout.service import OutcomeStatus, RolloutService
from rollout.targets import Group, OnFailure, Target, TargetRef, TargetsConfig, Wave
from rollout.waves import GroupPhase, GroupRelease, group_partition
from tests.fakes import BASE_URL, FakeClock, FakeNotifier, FakeProber, FakeScaleSet, FakeStore

WAVES = (("canary",), ("west", "east"), ("north", "south"))
KEYS = [f"rg:{n}" for wave in WAVES for n in wave]


def script(version: int, body: str = "") -> Release:
    name = parse_release_name(f"install_nginx.v{version}.sh")
    assert not isinstance(name, str)
    return build_release(name, f"{BASE_URL}/web/{name.blob_name}", f"#!/bin/bash\necho v{version}{body}\n".encode())


V1, V2, V3 = script(1), script(2), script(3)


def make_group(on_failure: OnFailure = OnFailure.HALT, bake: int = 600) -> Group:
    return Group(
        name="web",
        waves=tuple(Wave(tuple(Target(TargetRef("sub", "rg", n)) for n in wave)) for wave in WAVES),
        wave_bake_seconds=bake,
        on_failure=on_failure,
    )


@dataclass
class World:
    store: FakeStore
    clock: FakeClock
    scale_sets: dict[str, FakeScaleSet]
    services: dict[str, RolloutService]
    groups: GroupService
    started: list[tuple[str, str]] = field(default_factory=list)  # (target key, rollout id) per start_release

    def step(self, seconds: float = 30) -> None:
        """One timer interval: every target's tick (the fan-out's job), then the groups' tick."""
        self.clock.advance(seconds)
        for service in self.services.values():
            service.tick()
        self.groups.advance()

    def record(self, release: Release) -> GroupRelease:
        record = self.store.get_group_release("web", rollout_id_for(release))
        assert record is not None
        return record

    def run_until(self, release: Release, *phases: GroupPhase, max_steps: int = 200) -> GroupRelease:
        for _ in range(max_steps):
            record = self.record(release)
            if record.phase in phases:
                return record
            self.step()
        raise AssertionError(f"still {self.record(release).phase}: {self.record(release).reason}")

    def rollout(self, key: str, rollout_id: str) -> Rollout | None:
        return self.store.get_rollout(key, rollout_id)

    def stable(self, key: str) -> int | None:
        row = self.store.get_target(key)
        return row.stable_version if row else None

    def on_script(self, key: str) -> str:
        ext = self.scale_sets[key].model.extension
        assert ext is not None
        return str(ext.settings["fileUris"][0]).rsplit("/", 1)[-1]

    def group_events(self, release: Release) -> list[tuple[EventKind, str]]:
        events = self.store.list_events(group_partition("web"), rollout_id_for(release))
        return [(e.kind, str(e.data.get("target", ""))) for e in events]


def make_world(
    group: Group | None = None,
    *,
    broken: dict[str, set[str]] | None = None,
    factory: bool = False,
    slow: frozenset[str] = frozenset(),
) -> World:
    """``broken``: per target key, the releases that serve a broken page there; ``slow``: targets whose
    upgrades take 6 observations (still active when a faster wave-mate has ended)."""
    store, clock = FakeStore(), FakeClock()
    scale_sets = {
        key: FakeScaleSet(
            size=3, broken_releases=set((broken or {}).get(key, ())), upgrade_observations=6 if key in slow else 1
        )
        for key in KEYS
    }
    services = {
        key: RolloutService(
            target_key=key,
            compute=ss,
            prober=FakeProber(ss),
            store=store,
            notifier=FakeNotifier(),
            clock=clock,
            policy=RolloutPolicy(bake_seconds=60, failure_threshold=2),
            extension=ExtensionDefaults(),
            release_container_url=BASE_URL,
        )
        for key, ss in scale_sets.items()
    }
    config = TargetsConfig(groups=(group or make_group(),), source="test")
    world = World(
        store, clock, scale_sets, services, GroupService(config=config, store=store, services={}, clock=clock)
    )
    # The wiring is injected: a factory of the per-target service, or a mapping by target key.
    for service in services.values():
        counted(world, service)
    if factory:

        def wiring(target: Target) -> RolloutService:
            return services[target.key]

        world.groups.services = wiring
    else:
        world.groups.services = services
    return world


def counted(world: World, service: RolloutService) -> RolloutService:
    """The same service, recording every start_release it is asked for (to count starts per target)."""
    original = service.start_release

    def start_release(release: Release) -> object:
        world.started.append((service.target_key, rollout_id_for(release)))
        return original(release)

    service.start_release = start_release  # type: ignore[method-assign,assignment]
    return service


def release_everywhere(world: World, release: Release) -> None:
    outcome = world.groups.receive_release("web", release)
    assert outcome.status is OutcomeStatus.ADVANCED, outcome
    world.run_until(release, GroupPhase.SUCCEEDED)


# --- going forward -----------------------------------------------------------------------------


@pytest.mark.parametrize("factory", [False, True], ids=["mapping", "factory"])
def test_a_group_of_3_waves_over_5_targets_goes_out_wave_by_wave_with_the_bake_between(factory: bool) -> None:
    world = make_world(factory=factory)
    outcome = world.groups.receive_release("web", V1)
    assert outcome.status is OutcomeStatus.ADVANCED and outcome.phase is GroupPhase.RUNNING
    rid = rollout_id_for(V1)
    first_seen: dict[str, object] = {}
    for _ in range(300):
        record = world.record(V1)
        for key in KEYS:
            if key not in first_seen and world.rollout(key, rid) is not None:
                first_seen[key] = world.clock.now()
        if record.phase is GroupPhase.SUCCEEDED:
            break
        world.step()
    assert world.record(V1).phase is GroupPhase.SUCCEEDED
    # Wave by wave: a wave starts only after every target of the one before succeeded, plus the bake.
    waves = [[f"rg:{n}" for n in wave] for wave in WAVES]
    for before, after in zip(waves, waves[1:], strict=False):
        done = max(r.phase_since for r in (world.rollout(k, rid) for k in before) if r is not None)
        for key in after:
            rollout = world.rollout(key, rid)
            assert rollout is not None and rollout.created_at >= done + timedelta(seconds=600)
        # ... and both targets of a wave start together.
        assert len({first_seen[k] for k in after}) == 1
    assert all(world.stable(k) == 1 and world.on_script(k) == "install_nginx.v1.sh" for k in KEYS)
    assert sorted(world.started) == sorted((k, rid) for k in KEYS)  # one start per target, no more
    trail = world.group_events(V1)
    assert [t for k, t in trail if k is EventKind.TARGET_STARTED] == KEYS
    assert [k for k, _ in trail].count(EventKind.WAVE_STARTED) == 2
    assert [k for k, _ in trail].count(EventKind.WAVE_SUCCEEDED) == 3


def test_a_release_not_newer_for_the_group_is_rejected_and_a_duplicate_is_one() -> None:
    world = make_world(make_group(bake=0))
    release_everywhere(world, V2)
    assert world.groups.receive_release("web", V2).status is OutcomeStatus.DUPLICATE
    older = world.groups.receive_release("web", V1)
    assert older.status is OutcomeStatus.REJECTED and "not newer than the group's v2" in older.message
    assert world.record(V1).phase is GroupPhase.REJECTED
    assert world.groups.receive_release("nope", V3).status is OutcomeStatus.IGNORED


def test_a_release_received_while_another_is_active_waits_then_the_newest_starts() -> None:
    world = make_world(make_group(bake=0))
    world.groups.receive_release("web", V1)
    assert world.groups.receive_release("web", V2).status is OutcomeStatus.QUEUED
    assert world.groups.receive_release("web", V3).status is OutcomeStatus.QUEUED
    world.run_until(V1, GroupPhase.SUCCEEDED)
    world.step()
    assert world.record(V2).phase is GroupPhase.REJECTED and "superseded by v3" in world.record(V2).reason
    world.run_until(V3, GroupPhase.SUCCEEDED)
    assert all(world.stable(k) == 3 for k in KEYS)


# --- halting -----------------------------------------------------------------------------------


def test_a_bad_release_halts_at_wave_1_and_rolls_back_only_there() -> None:
    world = make_world(make_group(bake=0), broken={"rg:canary": {"install_nginx.v2.sh"}})
    release_everywhere(world, V1)
    world.groups.receive_release("web", V2)
    record = world.run_until(V2, GroupPhase.HALTED)
    rid = rollout_id_for(V2)
    canary = world.rollout("rg:canary", rid)
    assert canary is not None and canary.phase is Phase.ROLLED_BACK
    assert world.on_script("rg:canary") == "install_nginx.v1.sh"
    for key in KEYS[1:]:  # later waves never started
        assert world.rollout(key, rid) is None and world.stable(key) == 1
    assert record.failed_wave == 0
    halted = [e for e in world.store.list_events(group_partition("web"), rid) if e.kind is EventKind.PHASE_CHANGED]
    assert any("rg:canary" in e.message and "-> Halting" in e.message for e in halted)


def test_a_failure_in_wave_2_rolls_that_wave_back_and_earlier_waves_keep_the_release() -> None:
    world = make_world(make_group(bake=0), broken={"rg:west": {"install_nginx.v2.sh"}}, slow=frozenset({"rg:east"}))
    release_everywhere(world, V1)
    world.groups.receive_release("web", V2)
    record = world.run_until(V2, GroupPhase.HALTED)
    rid = rollout_id_for(V2)
    west, east = world.rollout("rg:west", rid), world.rollout("rg:east", rid)
    assert west is not None and west.phase is Phase.ROLLED_BACK
    # Its wave-mate, still active, was aborted with a rollback by the group.
    assert east is not None and east.phase is Phase.ROLLED_BACK
    assert east.rollback_reason.startswith(f"aborted by group web (group release {rid} is halting: rg:west")
    assert world.on_script("rg:east") == "install_nginx.v1.sh" and world.stable("rg:east") == 1
    assert not any(t.revert_id for t in record.targets)  # nothing had succeeded in wave 2: no revert
    assert world.on_script("rg:canary") == "install_nginx.v2.sh" and world.stable("rg:canary") == 2
    assert world.rollout("rg:north", rid) is None and world.rollout("rg:south", rid) is None


def test_rollback_all_returns_the_earlier_waves_to_their_previous_release() -> None:
    world = make_world(make_group(OnFailure.ROLLBACK_ALL, bake=0), broken={"rg:north": {"install_nginx.v2.sh"}})
    release_everywhere(world, V1)
    world.groups.receive_release("web", V2)
    record = world.run_until(V2, GroupPhase.ROLLED_BACK)
    for key in KEYS:
        assert world.on_script(key) == "install_nginx.v1.sh", key
        assert world.stable(key) == 1, key
    reverted = {t.key for t in record.targets if t.revert_id}
    assert {"rg:canary", "rg:west", "rg:east"} <= reverted
    for entry in record.targets:
        if entry.revert_id:
            revert = world.rollout(entry.key, entry.revert_id)
            assert revert is not None and revert.revert and revert.phase is Phase.SUCCEEDED
            assert revert.release == V1
            received = world.store.list_events(entry.key, entry.revert_id)[0]
            assert received.kind is EventKind.RECEIVED and received.message.startswith("revert to install_nginx v1")
    trail = world.group_events(V2)
    assert {t for k, t in trail if k is EventKind.REVERT_STARTED} == reverted
    # The group can go on with a fixed v3 afterwards.
    assert world.groups.receive_release("web", V3).status is OutcomeStatus.ADVANCED


# --- verbs -------------------------------------------------------------------------------------


def _run_to_wave_2(world: World, release: Release) -> None:
    world.groups.receive_release("web", release)
    for _ in range(200):
        record = world.record(release)
        if record.wave == 1 and all(
            world.rollout(k, record.id) is not None and world.rollout(k, record.id).phase is Phase.BAKING  # type: ignore[union-attr]
            for k in ("rg:west", "rg:east")
        ):
            return
        world.step()
    raise AssertionError("wave 2 never reached Baking")


def test_abort_of_one_target_stops_only_that_target() -> None:
    world = make_world(make_group(bake=0))
    _run_to_wave_2(world, V1)
    outcome = world.groups.command(rollout_id_for(V1), Verb.ABORT, target="rg:east", actor="ana", rollback=True)
    assert outcome.status is OutcomeStatus.DONE
    record = world.run_until(V1, GroupPhase.SUCCEEDED)
    east = world.rollout("rg:east", record.id)
    assert east is not None and east.phase is Phase.ROLLED_BACK and "ana" in east.reason
    assert world.on_script("rg:east") == "install_nginx.sh"  # back on what it had
    for key in ("rg:canary", "rg:west", "rg:north", "rg:south"):
        assert world.stable(key) == 1
    steered = [
        e for e in world.store.list_events(group_partition("web"), record.id) if e.kind is EventKind.TARGET_STEERED
    ]
    assert len(steered) == 1 and steered[0].actor == "ana" and steered[0].data["target"] == "rg:east"


def test_abort_of_the_whole_release_stops_every_active_target_and_every_later_wave() -> None:
    world = make_world(make_group(bake=0))
    _run_to_wave_2(world, V1)
    outcome = world.groups.command(rollout_id_for(V1), Verb.ABORT, actor="ana", rollback=True, reason="incident")
    assert outcome.status is OutcomeStatus.DONE
    record = world.run_until(V1, GroupPhase.ABORTED)
    for key in ("rg:west", "rg:east"):
        rollout = world.rollout(key, record.id)
        assert rollout is not None and rollout.phase is Phase.ROLLED_BACK
        assert rollout.rollback_reason.startswith("aborted by ana (group release")  # in the operator's name
    assert world.stable("rg:canary") == 1  # an abort reverts nothing that succeeded
    assert world.rollout("rg:north", record.id) is None and world.rollout("rg:south", record.id) is None
    for _ in range(20):
        world.step()
    assert world.rollout("rg:north", record.id) is None  # and never does


def test_pause_and_resume_of_the_whole_release_and_a_verb_on_one_target() -> None:
    world = make_world(make_group(bake=0))
    _run_to_wave_2(world, V1)
    rid = rollout_id_for(V1)
    world.groups.command(rid, Verb.PAUSE)
    assert world.record(V1).phase is GroupPhase.PAUSED
    assert all(world.rollout(k, rid).phase is Phase.PAUSED for k in ("rg:west", "rg:east"))  # type: ignore[union-attr]
    for _ in range(10):
        world.step()
    assert world.record(V1).phase is GroupPhase.PAUSED and world.rollout("rg:north", rid) is None
    world.groups.command(rid, Verb.RESUME, target="rg:west")  # one target only
    assert world.rollout("rg:west", rid).phase is not Phase.PAUSED  # type: ignore[union-attr]
    assert world.rollout("rg:east", rid).phase is Phase.PAUSED  # type: ignore[union-attr]
    world.groups.command(rid, Verb.RESUME)
    assert world.record(V1).phase is GroupPhase.RUNNING
    world.run_until(V1, GroupPhase.SUCCEEDED)


def test_verbs_on_unknown_releases_and_targets_and_ones_that_do_not_apply() -> None:
    world = make_world(make_group(bake=0))
    world.groups.receive_release("web", V1)
    rid = rollout_id_for(V1)
    with pytest.raises(GroupReleaseNotFoundError):
        world.groups.command("install_nginx-v9-0000000000", Verb.ABORT)
    with pytest.raises(GroupTargetNotFoundError):
        world.groups.command(rid, Verb.ABORT, target="rg:elsewhere")
    with pytest.raises(CommandError):
        world.groups.command(rid, Verb.RESUME)
    world.clock.advance(1)
    with pytest.raises(CommandError):  # the target decides: its rollout is not paused
        world.groups.command(rid, Verb.RESUME, target="rg:canary")
    assert not [e for e in world.store.events if e.kind is EventKind.TARGET_STEERED]  # and nothing is recorded


def test_get_shows_each_targets_rollout() -> None:
    world = make_world(make_group(bake=0))
    world.groups.receive_release("web", V1)
    view = world.groups.get(rollout_id_for(V1))
    assert set(view.rollouts) == set(KEYS)
    assert view.rollouts["rg:canary"] is not None and view.rollouts["rg:west"] is None
    assert [e.kind for e in view.events][:2] == [EventKind.RECEIVED, EventKind.PHASE_CHANGED]
    assert [r.id for r in world.groups.list()] == [rollout_id_for(V1)]


# --- two hosts ---------------------------------------------------------------------------------


class RacingStore(FakeStore):
    """Host B's view of the shared store: before its next group release write lands, ``before_write`` runs
    (host A's whole tick), so both hosts decided on the same version of the row."""

    def __init__(self, shared: FakeStore) -> None:  # noqa: D107 - shares every table of ``shared``
        self.__dict__ = shared.__dict__
        self.before_write: list[Callable[[], object]] = []

    def update_group_release(self, record: GroupRelease) -> GroupRelease:
        while self.before_write:
            self.before_write.pop(0)()
        return super().update_group_release(record)


def test_two_hosts_advancing_the_same_group_release_start_each_target_once() -> None:
    world = make_world(make_group(bake=0))
    host_a = world.groups
    racing = RacingStore(world.store)
    host_b = GroupService(config=host_a.config, store=racing, services=host_a.services, clock=world.clock)
    world.groups.receive_release("web", V1)
    rid = rollout_id_for(V1)
    lost = 0
    for _ in range(200):
        if world.record(V1).phase is GroupPhase.SUCCEEDED:
            break
        world.clock.advance(30)
        for service in world.services.values():
            service.tick()
        racing.before_write.append(lambda: host_a.advance_group("web"))
        outcome = host_b.advance_group("web")
        lost += outcome.status is OutcomeStatus.LOST
        racing.before_write.clear()
    assert world.record(V1).phase is GroupPhase.SUCCEEDED
    assert lost > 0  # the race did happen: B decided on rows A had just changed
    assert sorted(world.started) == sorted((k, rid) for k in KEYS)  # each target started once
    trail = world.group_events(V1)
    assert sorted(t for k, t in trail if k is EventKind.TARGET_STARTED) == sorted(KEYS)
    assert [k for k, _ in trail].count(EventKind.WAVE_SUCCEEDED) == 3


def test_two_hosts_receiving_two_releases_at_once_start_only_one() -> None:
    world = make_world(make_group(bake=0))
    racing = RacingStore(world.store)
    host_b = GroupService(config=world.groups.config, store=racing, services=world.groups.services, clock=world.clock)
    # B inserts v2 and, before its first write (activation), A receives v1 and activates it.
    racing.before_write.append(lambda: world.groups.receive_release("web", V1))
    host_b.receive_release("web", V2)
    active = [r for r in world.store.list_group_releases("web") if r.phase.is_active]
    assert len(active) == 1
    for _ in range(300):
        world.step()
        if all(r.phase.is_terminal for r in world.store.list_group_releases("web")):
            break
    phases = {r.release.version: r.phase for r in world.store.list_group_releases("web")}
    assert phases[2] is GroupPhase.SUCCEEDED
    assert all(world.stable(k) == 2 for k in KEYS)


# --- the pieces ----------------------------------------------------------------------------------


def test_start_revert_goes_back_past_the_not_newer_check_and_is_marked() -> None:
    world = make_world(make_group(bake=0))
    service = world.services["rg:canary"]
    for release in (V1, V2):
        assert service.start_release(release).status is OutcomeStatus.ADVANCED
        for _ in range(60):
            world.clock.advance(30)
            service.tick()
        assert world.stable("rg:canary") == release.version
    assert service.start_release(V1).status is OutcomeStatus.DUPLICATE  # an older release stays refused
    assert service.start_release(script(1, " again")).status is OutcomeStatus.REJECTED
    revert_id = "revert-install_nginx-v1-0123456789"
    outcome = service.start_revert(V1, revert_id, "group release x halted")
    assert outcome.status is OutcomeStatus.ADVANCED, outcome
    assert service.start_revert(V1, revert_id, "again").status is OutcomeStatus.DUPLICATE
    for _ in range(60):
        world.clock.advance(30)
        service.tick()
    revert = world.rollout("rg:canary", revert_id)
    assert revert is not None and revert.revert and revert.phase is Phase.SUCCEEDED
    assert world.stable("rg:canary") == 1 and world.on_script("rg:canary") == "install_nginx.v1.sh"
    received = world.store.list_events("rg:canary", revert.id)[0]
    assert received.message.startswith("revert to install_nginx v1") and received.data["revert"] is True


def test_a_start_that_fails_is_recorded_naming_the_target_and_sent_again_next_tick() -> None:
    world = make_world(make_group(bake=0))
    service = world.services["rg:west"]
    original = service.start_release
    failures = [TransientError("Tables answered 503")]

    def flaky(release: Release) -> object:
        if failures:
            raise failures.pop()
        return original(release)

    service.start_release = flaky  # type: ignore[method-assign,assignment]
    world.groups.receive_release("web", V1)
    record = world.run_until(V1, GroupPhase.SUCCEEDED)
    trail = world.store.list_events(group_partition("web"), record.id)
    failed = [e for e in trail if e.kind is EventKind.ACTION_FAILED]
    assert len(failed) == 1 and failed[0].data["target"] == "rg:west" and "503" in failed[0].message
    assert world.stable("rg:west") == 1


def test_an_abort_between_a_hosts_save_and_its_starts_keeps_the_next_wave_from_starting() -> None:
    world = make_world(make_group(bake=0))
    host_a = world.groups
    rid = rollout_id_for(V1)

    class SlowHost(GroupService):
        """Host B: between saving "start wave 2" and sending the starts, an operator aborts through host A."""

        def _still_current(self, saved: GroupRelease) -> bool:
            if saved.wave == 1 and saved.phase is GroupPhase.RUNNING:
                host_a.command(rid, Verb.ABORT, actor="ana", rollback=True)
            return super()._still_current(saved)

    host_b = SlowHost(config=host_a.config, store=world.store, services=host_a.services, clock=world.clock)
    host_a.receive_release("web", V1)
    for _ in range(100):
        if world.record(V1).wave == 1 or world.record(V1).phase.is_terminal:
            break
        world.clock.advance(30)
        for service in world.services.values():
            service.tick()
        host_b.advance_group("web")
    record = world.record(V1)
    assert record.wave == 1 and record.phase in (GroupPhase.HALTING, GroupPhase.ABORTED)
    assert world.rollout("rg:west", rid) is None and world.rollout("rg:east", rid) is None  # not sent
    world.clock.advance(200)
    host_a.advance_group("web")
    assert world.record(V1).phase is GroupPhase.ABORTED
    assert world.stable("rg:canary") == 1


def test_a_release_rejected_for_its_content_is_recorded_for_the_group_and_never_started() -> None:
    world = make_world(make_group(bake=0))
    outcome = world.groups.reject_release("web", V1, "line 2: syntax error near unexpected token")
    assert outcome.status is OutcomeStatus.REJECTED and outcome.phase is GroupPhase.REJECTED
    assert world.groups.reject_release("web", V1, "again").status is OutcomeStatus.DUPLICATE
    assert world.groups.receive_release("web", V1).status is OutcomeStatus.DUPLICATE
    assert world.groups.reject_release("nope", V1, "x").status is OutcomeStatus.IGNORED
    world.step()
    # Each scale set of the group records the refusal in its own history, and none was started.
    for key in KEYS:
        rollout = world.rollout(key, rollout_id_for(V1))
        assert rollout is not None and rollout.phase is Phase.REJECTED and "syntax error" in rollout.reason
    assert all(not ss.calls_of("update_model") for ss in world.scale_sets.values())
    assert world.group_events(V1) == [(EventKind.REJECTED, "")]


def test_a_release_uploaded_once_its_predecessor_ended_at_its_targets_starts_at_once() -> None:
    # The group only notices that v1's targets ended when it is advanced; a v2 uploaded before the next
    # timer must not wait for it: receiving v2 advances v1 to its end and starts v2 in the same call.
    world = make_world(make_group(bake=0), broken={"rg:canary": {"install_nginx.v1.sh"}})
    world.groups.receive_release("web", V1)
    for _ in range(40):  # only the targets' ticks: the group is not advanced
        world.clock.advance(30)
        for service in world.services.values():
            service.tick()
        rollout = world.rollout("rg:canary", rollout_id_for(V1))
        if rollout is not None and rollout.phase is Phase.ROLLED_BACK:
            break
    assert world.record(V1).phase.is_active  # the group has not looked yet
    outcome = world.groups.receive_release("web", V2)
    assert outcome.status is OutcomeStatus.ADVANCED, outcome
    assert not world.record(V1).phase.is_active and world.record(V2).phase is GroupPhase.RUNNING
    started = world.rollout("rg:canary", rollout_id_for(V2))
    assert started is not None and started.phase is Phase.CANARY


def test_the_same_content_released_to_two_groups_is_never_confused_between_them() -> None:
    """A release's id is that of its content (``rollout_id_for``): the same script released to two groups has
    the same id in both. Reading or steering it by id alone must not pick one of them: the group is named."""
    world = make_world()

    def wave(*names: str) -> Wave:
        return Wave(tuple(Target(TargetRef("sub", "rg", n)) for n in names))

    web = Group(name="web", waves=(wave("canary"), wave("west", "east")))
    api = Group(name="api", waves=(wave("north", "south"),))
    world.groups.config = TargetsConfig(groups=(web, api), source="test")
    for group in ("web", "api"):
        assert world.groups.receive_release(group, V1).status is OutcomeStatus.ADVANCED
    rid = rollout_id_for(V1)
    with pytest.raises(AmbiguousGroupReleaseError) as ambiguous:
        world.groups.get(rid)
    assert ambiguous.value.groups == ["web", "api"]
    with pytest.raises(AmbiguousGroupReleaseError):
        world.groups.command(rid, Verb.ABORT, actor="ana", rollback=True)
    assert world.groups.get(rid, group="api").record.group == "api"
    with pytest.raises(GroupReleaseNotFoundError):
        world.groups.get(rid, group="nope")
    outcome = world.groups.command(rid, Verb.ABORT, actor="ana", rollback=True, group="api")
    assert outcome.group == "api" and outcome.phase is GroupPhase.HALTING  # aborting api's targets
    assert world.store.get_group_release("web", rid).phase is GroupPhase.RUNNING  # type: ignore[union-attr]
    assert world.rollout("rg:north", rid).phase is Phase.ROLLING_BACK  # type: ignore[union-attr]
    assert world.rollout("rg:canary", rid).phase in (Phase.CANARY, Phase.BAKING)  # type: ignore[union-attr]
