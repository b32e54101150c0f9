"""Pre-flight refusals, the what-if plan and undo, through the service on the in-memory fakes."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from rollout.model import EventKind, ModelSpec, Phase, Release
from rollout.policy import RolloutPolicy
from rollout.releases import ExtensionDefaults, build_release, parse_release_name
from rollout.service import PlanInputError, RolloutService, UndoRefusedError
from tests.fakes import (
    BASE_URL,
    FakeClock,
    FakeNotifier,
    FakeProber,
    FakeReleaseContainer,
    FakeScaleSet,
    FakeStore,
)
from tests.service.test_rollouts import TARGET, World

V0 = b"#!/bin/bash\necho v0\n"
WRITES = ("update_model", "upgrade_instances", "reimage_instances", "update_model:denied")


def content(version: int) -> bytes:
    return f"#!/bin/bash\necho v{version}\n".encode()


def make(size: int = 5, policy: RolloutPolicy | None = None, *, container: bool = True, **scale_set: Any) -> Any:
    ss = FakeScaleSet(size=size, **scale_set)
    store, clock = FakeStore(), FakeClock()
    blobs = FakeReleaseContainer({"install_nginx.sh": V0}) if container else None
    service = RolloutService(
        target_key=TARGET,
        compute=ss,
        prober=FakeProber(ss),
        store=store,
        notifier=FakeNotifier(),
        clock=clock,
        policy=policy or RolloutPolicy(bake_seconds=60, failure_threshold=2),
        extension=ExtensionDefaults(),
        release_container_url=BASE_URL,
        releases=blobs,
    )
    world = World(ss, store, clock, FakeNotifier(), service)
    world.blobs = blobs  # type: ignore[attr-defined]
    return world


def release(world: Any, version: int, body: bytes | None = None) -> Release:
    """Upload ``install_nginx.v<N>.sh`` to the fake container and return its Release."""
    data = body if body is not None else content(version)
    name = parse_release_name(f"install_nginx.v{version}.sh")
    assert not isinstance(name, str)
    if world.blobs is not None:
        world.blobs.blobs[name.blob_name] = data
    return build_release(name, f"{BASE_URL}/{name.blob_name}", data)


def ship(world: Any, version: int) -> str:
    outcome = world.service.start_release(release(world, version))
    assert outcome.status == "Advanced", outcome
    rid = outcome.rollout_id or ""
    assert world.tick_until(Phase.SUCCEEDED, rollout_id=rid) is Phase.SUCCEEDED
    return rid


def writes(ss: FakeScaleSet) -> list[tuple[str, object]]:
    return [c for c in ss.calls if c[0] in WRITES]


def rejected(world: Any, outcome: Any) -> str:
    """The outcome is a recorded Rejected (row and event) and nothing was written to the scale set."""
    assert outcome.status == "Rejected", outcome
    row = world.store.get_rollout(TARGET, outcome.rollout_id)
    assert row is not None and row.phase is Phase.REJECTED
    assert world.kinds(outcome.rollout_id)[-1] is EventKind.REJECTED
    assert writes(world.scale_set) == []
    return str(row.reason)


# --- pre-flight refusals ---------------------------------------------------------------------------


def test_a_share_of_the_fleet_that_rounds_up_to_half_of_it_is_refused() -> None:
    world = make(size=2)  # MAX_UNAVAILABLE 20% (the default) of 2 instances: 1 instance, 50%
    reason = rejected(world, world.service.start_release(release(world, 1)))
    assert "MAX_UNAVAILABLE 20% of 2 instance(s) rounds up to 1 instance(s) (50% of the fleet)" in reason
    assert "Set MAX_UNAVAILABLE to a count" in reason


def test_the_same_fleet_with_a_count_budget_starts() -> None:
    world = make(size=2, policy=RolloutPolicy(bake_seconds=60, max_unavailable=1))
    assert world.service.start_release(release(world, 1)).status == "Advanced"


def test_a_canary_as_large_as_the_fleet_is_refused() -> None:
    world = make(size=3, policy=RolloutPolicy(canary_count=3, max_unavailable=1))
    reason = rejected(world, world.service.start_release(release(world, 1)))
    assert "CANARY_COUNT 3 covers all 3 instance(s)" in reason


def test_a_budget_of_the_whole_fleet_is_refused() -> None:
    world = make(size=3, policy=RolloutPolicy(max_unavailable=3))
    reason = rejected(world, world.service.start_release(release(world, 1)))
    assert "lets 3 of 3 instance(s) be down at once" in reason


def test_a_baseline_script_that_no_longer_exists_is_refused() -> None:
    world = make()
    del world.blobs.blobs["install_nginx.sh"]
    reason = rejected(world, world.service.start_release(release(world, 1)))
    assert reason == (
        "blob install_nginx.sh (a script of the scale set's current extension, which a rollback restores) "
        "no longer exists in the release container"
    )


def test_a_baseline_script_that_cannot_be_read_is_refused() -> None:
    world = make()
    world.blobs.unreadable.add("install_nginx.sh")
    reason = rejected(world, world.service.start_release(release(world, 1)))
    assert "blob install_nginx.sh" in reason and "cannot be read" in reason and "403" in reason


def test_a_release_container_busy_just_now_leaves_the_release_queued_for_the_next_tick() -> None:
    world = make()
    world.blobs.busy = 1
    outcome = world.service.start_release(release(world, 1))
    assert outcome.status == "Queued" and "cannot read the release container" in outcome.message
    assert writes(world.scale_set) == []
    world.clock.advance(30)
    assert world.service.tick().status == "Advanced"
    assert world.phase(outcome.rollout_id) is Phase.CANARY


def test_the_plan_of_a_version_in_other_digits_is_no_version() -> None:
    world = make()
    with pytest.raises(PlanInputError, match="does not match"):
        world.service.plan_release("v\u00b2")


def test_an_image_that_no_longer_exists_is_refused() -> None:
    world = make()
    name = parse_release_name("install_nginx.v1.image.json")
    assert not isinstance(name, str)
    manifest = b'{"imageId": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/images/gone"}'
    image = build_release(name, f"{BASE_URL}/{name.blob_name}", manifest)
    world.scale_set.model = ModelSpec(extension=world.scale_set.model.extension, image_id="/img/base")
    reason = rejected(world, world.service.start_release(image))
    assert reason.startswith("image /subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/images/gone")
    assert "does not exist" in reason


def test_an_unhealthy_fleet_is_refused() -> None:
    world = make(policy=RolloutPolicy(bake_seconds=60, min_healthy_instances=4))
    for iid in ("1", "2"):
        world.scale_set.instances[iid].forced_unhealthy = True
    reason = rejected(world, world.service.start_release(release(world, 1)))
    assert reason.startswith("3 of 5 instances are healthy; at least 4 needed")


def test_a_warning_is_recorded_on_a_rollout_that_starts_anyway() -> None:
    world = make(size=3)  # 20% of 3: 1 instance, 33%
    outcome = world.service.start_release(release(world, 1))
    assert outcome.status == "Advanced"
    messages = [e.message for e in world.store.list_events(TARGET, outcome.rollout_id) if e.kind == "PreflightWarning"]
    assert "pre-flight (policy): MAX_UNAVAILABLE 20% of 3 instance(s) rounds up to 1 instance(s)" in messages[0]


# --- what-if ---------------------------------------------------------------------------------------


def snapshot(world: Any) -> tuple[Any, ...]:
    store = world.store
    return copy.deepcopy((store.targets, store.rollouts, store.events, store.commits, store.group_releases))


def test_the_plan_writes_nothing_and_lists_the_canary_then_each_batch() -> None:
    world = make()
    release(world, 1)  # uploaded, not received yet
    before = snapshot(world)
    rel, revert, notes = world.service.plan_release("install_nginx.v1.sh")
    result = world.service.plan(rel, revert=revert, notes=notes).as_dict()

    assert snapshot(world) == before
    assert writes(world.scale_set) == []
    assert [(s["kind"], s["instances"]) for s in result["steps"]] == [
        ("canary", ["0"]),
        ("batch", ["1"]),
        ("batch", ["2"]),
        ("batch", ["3"]),
        ("batch", ["4"]),
    ]
    assert result["verdict"] == "ok" and result["findings"] == []
    assert result["capacity"] == {"maxUnavailable": 1, "maxUnavailablePercent": 20.0, "minServing": 4}
    assert result["armWrites"]["promotion"] == {"model": 1, "upgrades": 5, "reimages": 0, "total": 6}
    # A rollback after the last batch: the release's and the baseline's model writes, every upgrade,
    # then 5 moves back and 5 reimages (budgeted, one instance at a time).
    assert result["armWrites"]["rollbackFromLastBatch"] == {"model": 2, "upgrades": 10, "reimages": 5, "total": 17}
    assert result["armWrites"]["rollbackOfCanary"] == {"model": 2, "upgrades": 2, "reimages": 1, "total": 5}
    assert result["estimate"]["source"].startswith("policy: no past batch")
    assert result["estimate"]["promotionSeconds"] == 5 * 900 + 60


def test_the_plan_takes_its_times_from_past_batches() -> None:
    world = make()
    ship(world, 1)  # each tick is 30 s: every batch took 30 s from its start to its success
    release(world, 2)
    rel, revert, notes = world.service.plan_release("install_nginx.v2.sh")
    result = world.service.plan(rel, revert=revert, notes=notes).as_dict()
    assert result["estimate"]["source"] == "observed: the median of 4 batch(es) of past rollouts on this scale set"
    assert result["estimate"]["stepSeconds"] == 30.0
    assert result["estimate"]["promotionSeconds"] == 5 * 30 + 60
    assert result["estimate"]["rollbackSeconds"] == 5 * 2 * 30


def test_the_plan_warns_where_it_cannot_work() -> None:
    world = make(size=2)
    world.blobs.blobs.pop("install_nginx.sh")
    world.scale_set.instances["1"].forced_unhealthy = True
    before = snapshot(world)
    rel, revert, notes = world.service.plan_release("install_nginx.v1.sh")
    result = world.service.plan(rel, revert=revert, notes=notes).as_dict()
    assert snapshot(world) == before and writes(world.scale_set) == []
    assert result["verdict"] == "refused"
    checks = {(f["check"], f["severity"]) for f in result["findings"]}
    assert {("policy", "refuse"), ("blob", "refuse"), ("fleet", "warn"), ("release", "warn")} <= checks


def test_the_plan_of_a_version_not_newer_than_the_stable_one_is_refused() -> None:
    world = make()
    ship(world, 2)
    rel, revert, notes = world.service.plan_release("install_nginx.v1.sh")
    result = world.service.plan(rel, revert=revert, notes=notes).as_dict()
    assert {"check": "version", "severity": "refuse", "reason": "v1 is not newer than the stable v2"} in result[
        "findings"
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("v9", "no release v9 is recorded on this scale set"),
        ("nginx.sh", "does not match <app>.v<N>.sh"),
        ("../etc/passwd", "virtual folder that cannot be a group"),
        ("", "name the release to plan"),
        ("v12345678901", "out of range"),
    ],
)
def test_the_plan_of_something_that_names_no_release_says_why(text: str, message: str) -> None:
    world = make()
    with pytest.raises(PlanInputError, match=message.replace("(", r"\(").replace(".", r"\.")):
        world.service.plan_release(text)


def test_the_plan_without_a_release_is_the_next_version_of_the_stable_one() -> None:
    world = make()
    ship(world, 3)
    rel, _, notes = world.service.plan_release("")
    assert rel.version == 4 and rel.blob_name == "install_nginx.v4.sh"
    assert notes[0].reason == "no release named: planned as the next one, install_nginx.v4.sh"


# --- undo ------------------------------------------------------------------------------------------


def test_undo_replaces_the_stable_release_with_the_previous_one_through_canary_and_batches() -> None:
    world = make()
    ship(world, 1)
    ship(world, 2)
    before = len(world.scale_set.calls_of("upgrade_instances"))

    outcome = world.service.undo(actor="alice", reason="v2 leaks memory")

    assert outcome.status == "Advanced" and outcome.phase is Phase.CANARY
    rid = outcome.rollout_id or ""
    assert rid.startswith("undo-install_nginx-v1-")
    row = world.store.get_rollout(TARGET, rid)
    assert row is not None and row.revert and row.release.version == 1
    [received] = [e for e in world.store.list_events(TARGET, rid) if e.kind is EventKind.RECEIVED]
    assert received.actor == "alice"
    assert received.message.startswith("revert to install_nginx v1 (install_nginx.v1.sh")
    assert received.message.endswith("undo of install_nginx v2 by alice (v2 leaks memory)")
    assert world.tick_until(Phase.SUCCEEDED, rollout_id=rid) is Phase.SUCCEEDED
    assert world.scale_set.calls_of("upgrade_instances")[before:] == [("0",), ("1",), ("2",), ("3",), ("4",)]
    assert set(world.scale_set.releases().values()) == {"install_nginx.v1.sh"}
    target = world.store.get_target(TARGET)
    assert target is not None and target.stable_version == 1


def test_undo_to_a_named_version() -> None:
    world = make()
    for v in (1, 2, 3):
        ship(world, v)
    rid = world.service.undo(1).rollout_id or ""
    assert world.tick_until(Phase.SUCCEEDED, rollout_id=rid) is Phase.SUCCEEDED
    # Back to v3, which succeeded here, with --to: undoing the undo.
    rid = world.service.undo(3).rollout_id or ""
    assert world.tick_until(Phase.SUCCEEDED, rollout_id=rid) is Phase.SUCCEEDED
    assert set(world.scale_set.releases().values()) == {"install_nginx.v3.sh"}


def test_undo_refuses_what_it_cannot_do_and_writes_nothing() -> None:
    world = make()
    with pytest.raises(UndoRefusedError, match="nothing to undo: no release has succeeded"):
        world.service.undo()
    ship(world, 1)
    with pytest.raises(UndoRefusedError, match="nothing to undo: no release older than the stable v1"):
        world.service.undo()
    with pytest.raises(UndoRefusedError, match="nothing to undo: v1 is the stable release"):
        world.service.undo(1)
    ship(world, 2)
    with pytest.raises(UndoRefusedError, match=r"unknown version v7: .*succeeded here: v1\)"):
        world.service.undo(7)
    world.scale_set.failing_releases.add("install_nginx.v3.sh")
    rid = world.service.start_release(release(world, 3)).rollout_id or ""
    with pytest.raises(UndoRefusedError, match=r"install_nginx v3\) is Canary on this scale set"):
        world.service.undo()
    world.tick_until(Phase.ROLLED_BACK, rollout_id=rid)
    with pytest.raises(UndoRefusedError, match="v3 never succeeded on this scale set"):
        world.service.undo(3)
    rows = len(world.store.rollouts)
    world.clock.advance(1)
    with pytest.raises(UndoRefusedError):
        world.service.undo(2)
    assert len(world.store.rollouts) == rows


def test_undo_to_a_release_whose_script_is_gone_is_rejected_with_the_reason() -> None:
    world = make()
    ship(world, 1)
    ship(world, 2)
    del world.blobs.blobs["install_nginx.v1.sh"]
    calls = len(writes(world.scale_set))
    outcome = world.service.undo()
    assert outcome.status == "Rejected"
    assert "blob install_nginx.v1.sh (the script of install_nginx v1, which this rollout installs again) " in (
        outcome.message
    )
    assert "no longer exists" in outcome.message
    assert len(writes(world.scale_set)) == calls


def test_undo_to_a_release_whose_script_was_replaced_is_rejected() -> None:
    world = make()
    ship(world, 1)
    ship(world, 2)
    world.blobs.blobs["install_nginx.v1.sh"] = b"#!/bin/bash\necho other\n"
    outcome = world.service.undo()
    assert outcome.status == "Rejected" and "has changed since install_nginx v1 was released" in outcome.message
