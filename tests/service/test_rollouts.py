"""Whole rollouts, tick by tick, on the in-memory fakes (same Protocols as the real adapters)."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest

from rollout.machine import CommandError
from rollout.model import EventKind, Phase, Release, ReleaseKind, Rollout, TargetRecord
from rollout.policy import RolloutPolicy
from rollout.releases import (
    MAX_MANIFEST_BYTES,
    MAX_SCRIPT_BYTES,
    ExtensionDefaults,
    build_release,
    parse_release_name,
)
from rollout.service import RolloutService
from tests.fakes import BASE_URL, FakeClock, FakeNotifier, FakeProber, FakeReleaseBlob, FakeScaleSet, FakeStore

TARGET = "rg:vmss"


@dataclass
class World:
    scale_set: FakeScaleSet
    store: FakeStore
    clock: FakeClock
    notifier: FakeNotifier
    service: RolloutService

    def tick_until(self, *phases: Phase, rollout_id: str, max_ticks: int = 60, step: float = 30) -> Phase:
        for _ in range(max_ticks):
            rollout = self.store.get_rollout(TARGET, rollout_id)
            assert rollout is not None
            if rollout.phase in phases:
                return rollout.phase
            self.clock.advance(step)
            self.service.tick()
        rollout = self.store.get_rollout(TARGET, rollout_id)
        raise AssertionError(f"still {rollout.phase if rollout else None} after {max_ticks} ticks: {rollout}")

    def phase(self, rollout_id: str) -> Phase:
        rollout = self.store.get_rollout(TARGET, rollout_id)
        assert rollout is not None
        return rollout.phase

    def kinds(self, rollout_id: str) -> list[EventKind]:
        return [e.kind for e in self.store.list_events(TARGET, rollout_id)]


def make_world(size: int = 5, policy: RolloutPolicy | None = None, **scale_set: object) -> World:
    ss = FakeScaleSet(size=size, **scale_set)  # type: ignore[arg-type]
    store, clock, notifier = FakeStore(), FakeClock(), FakeNotifier()
    service = RolloutService(
        target_key=TARGET,
        compute=ss,
        prober=FakeProber(ss),
        store=store,
        notifier=notifier,
        clock=clock,
        policy=policy or RolloutPolicy(bake_seconds=60, failure_threshold=2),
        extension=ExtensionDefaults(),
        release_container_url=BASE_URL,
    )
    return World(ss, store, clock, notifier, service)


def script(version: int, body: bytes | None = None) -> Release:
    name = parse_release_name(f"install_nginx.v{version}.sh")
    assert not isinstance(name, str)
    content = body if body is not None else f"#!/bin/bash\necho v{version}\n".encode()
    return build_release(name, f"{BASE_URL}/{name.blob_name}", content)


def test_a_good_release_goes_canary_bake_batches_and_becomes_stable() -> None:
    world = make_world()
    outcome = world.service.start_release(script(1))

    assert outcome.status == "Advanced" and outcome.phase is Phase.CANARY
    # The blob trigger wrote the model once and upgraded exactly one instance: the canary.
    assert len(world.scale_set.calls_of("update_model")) == 1
    assert world.scale_set.calls_of("upgrade_instances") == [("0",)]

    assert world.tick_until(Phase.SUCCEEDED, rollout_id=outcome.rollout_id or "") is Phase.SUCCEEDED
    assert world.scale_set.calls_of("upgrade_instances") == [("0",), ("1",), ("2",), ("3",), ("4",)]
    assert all(inst.upgrades == 1 for inst in world.scale_set.instances.values())
    assert set(world.scale_set.releases().values()) == {"install_nginx.v1.sh"}
    assert len(world.scale_set.calls_of("update_model")) == 1
    target = world.store.get_target(TARGET)
    assert target is not None and target.stable_version == 1 and target.active_rollout_id is None
    kinds = world.kinds(outcome.rollout_id or "")
    assert kinds[:2] == [EventKind.RECEIVED, EventKind.PHASE_CHANGED] and kinds.count(EventKind.BATCH_SUCCEEDED) == 4
    events = world.store.list_events(TARGET, outcome.rollout_id or "")
    phases = [e.phase for e in events if e.kind is EventKind.PHASE_CHANGED]  # the phase entered
    assert phases == [Phase.CANARY, Phase.BAKING, Phase.PROMOTING, Phase.SUCCEEDED]
    assert world.notifier.messages[-1] == "install_nginx v1 succeeded on 5 instances"


def test_the_bake_waits_for_bake_seconds_of_healthy_canary() -> None:
    world = make_world(policy=RolloutPolicy(bake_seconds=300))
    rid = world.service.start_release(script(1)).rollout_id or ""
    world.tick_until(Phase.BAKING, rollout_id=rid, step=10)
    for _ in range(5):  # 5 x 50 s = 250 s < 300 s
        world.clock.advance(50)
        world.service.tick()
    assert world.phase(rid) is Phase.BAKING
    world.clock.advance(60)
    world.service.tick()
    assert world.phase(rid) is Phase.PROMOTING


def test_a_broken_canary_is_rolled_back_and_the_rest_never_touched() -> None:
    world = make_world(broken_releases={"install_nginx.v1.sh"})
    rid = world.service.start_release(script(1)).rollout_id or ""

    assert world.tick_until(Phase.ROLLED_BACK, rollout_id=rid) is Phase.ROLLED_BACK
    # Model restored to the baseline, with the protected settings Azure would not read back.
    restored = world.scale_set.calls_of("update_model")[-1]
    assert restored.extension.settings["fileUris"] == [f"{BASE_URL}/install_nginx.sh"]  # type: ignore[attr-defined]
    assert restored.extension.protected_settings == {"managedIdentity": {}}  # type: ignore[attr-defined]
    assert world.scale_set.calls_of("upgrade_instances") == [("0",), ("0",)]
    assert world.scale_set.calls_of("reimage_instances") == [("0",)]
    assert set(world.scale_set.releases().values()) == {"install_nginx.sh"}
    rollout = world.store.get_rollout(TARGET, rid)
    assert rollout is not None and "probe failed: 500" in rollout.rollback_reason
    assert world.kinds(rid).count(EventKind.HEALTH_CHECK_FAILED) == 2  # failure_threshold=2
    target = world.store.get_target(TARGET)
    assert target is not None and target.stable_version is None and target.active_rollout_id is None


def test_a_failed_extension_rolls_back_at_once() -> None:
    world = make_world(failing_releases={"install_nginx.v1.sh"})
    rid = world.service.start_release(script(1)).rollout_id or ""
    world.clock.advance(30)
    world.service.tick()
    rollout = world.store.get_rollout(TARGET, rid)
    assert rollout is not None and rollout.phase is Phase.ROLLING_BACK
    assert "extension failed" in rollout.rollback_reason and "exited with status 1" in rollout.rollback_reason
    assert world.tick_until(Phase.ROLLED_BACK, rollout_id=rid) is Phase.ROLLED_BACK


@pytest.mark.parametrize(
    ("mode", "moves", "reimages"),
    [
        # The default: the broken instance at once, the healthy canary within MAX_UNAVAILABLE (1 of 5).
        ("budgeted", [("1",), ("0",)], [("1",), ("0",)]),
        # One call for every instance that took the new model, whatever that takes offline.
        ("all-at-once", [("0", "1")], [("0", "1")]),
    ],
)
def test_a_batch_that_breaks_after_the_canary_rolls_back_every_upgraded_instance(
    mode: str, moves: list[tuple[str, ...]], reimages: list[tuple[str, ...]]
) -> None:
    world = make_world(policy=RolloutPolicy(bake_seconds=60, failure_threshold=2, rollback_mode=mode))
    rid = world.service.start_release(script(1)).rollout_id or ""
    world.tick_until(Phase.PROMOTING, rollout_id=rid)  # the same tick issued batch 1: instance 1
    assert world.scale_set.calls_of("upgrade_instances")[-1] == ("1",)
    before = len(world.scale_set.calls_of("upgrade_instances"))
    world.scale_set.instances["1"].forced_unhealthy = True
    assert world.tick_until(Phase.ROLLED_BACK, rollout_id=rid) is Phase.ROLLED_BACK
    assert world.scale_set.calls_of("upgrade_instances")[before:] == moves
    # Back on the baseline model, both get a fresh disk: re-running the old script undoes nothing.
    assert world.scale_set.calls_of("reimage_instances") == reimages
    assert set(world.scale_set.releases().values()) == {"install_nginx.sh"}
    assert EventKind.REIMAGE_STARTED in world.kinds(rid)


def test_abort_stops_promotion_and_frees_the_scale_set() -> None:
    world = make_world()
    rid = world.service.start_release(script(1)).rollout_id or ""
    world.tick_until(Phase.PROMOTING, rollout_id=rid)
    upgrades_before = len(world.scale_set.calls_of("upgrade_instances"))
    outcome = world.service.command(rid, "abort", reason="bad metrics")
    assert outcome.phase is Phase.ABORTED
    for _ in range(5):
        world.clock.advance(30)
        world.service.tick()
    assert len(world.scale_set.calls_of("upgrade_instances")) == upgrades_before
    target = world.store.get_target(TARGET)
    assert target is not None and target.active_rollout_id is None and target.stable_version is None
    assert "bad metrics" in (world.store.get_rollout(TARGET, rid) or pytest.fail()).reason


def test_abort_with_rollback_restores_the_baseline() -> None:
    world = make_world()
    rid = world.service.start_release(script(1)).rollout_id or ""
    world.tick_until(Phase.BAKING, rollout_id=rid)
    outcome = world.service.command(rid, "abort", rollback=True, reason="operator")
    assert outcome.phase is Phase.ROLLING_BACK
    assert world.tick_until(Phase.ROLLED_BACK, rollout_id=rid) is Phase.ROLLED_BACK
    assert set(world.scale_set.releases().values()) == {"install_nginx.sh"}


def test_a_duplicate_event_is_a_no_op() -> None:
    world = make_world()
    first = world.service.start_release(script(1))
    calls = list(world.scale_set.calls)
    second = world.service.start_release(script(1))
    assert second.status == "Duplicate" and second.rollout_id == first.rollout_id
    assert world.scale_set.calls == calls
    assert len(world.store.rollouts) == 1


def test_a_newer_release_is_queued_and_starts_when_the_active_one_ends() -> None:
    world = make_world()
    v1 = world.service.start_release(script(1)).rollout_id or ""
    queued = world.service.start_release(script(2))
    assert queued.status == "Queued"
    assert world.scale_set.calls_of("upgrade_instances") == [("0",)]  # no second canary
    world.tick_until(Phase.SUCCEEDED, rollout_id=v1)
    v2 = queued.rollout_id or ""
    assert world.phase(v2) is Phase.CANARY  # started by the tick that finished v1
    assert world.tick_until(Phase.SUCCEEDED, rollout_id=v2) is Phase.SUCCEEDED
    assert set(world.scale_set.releases().values()) == {"install_nginx.v2.sh"}
    target = world.store.get_target(TARGET)
    assert target is not None and target.stable_version == 2


def test_older_queued_releases_are_superseded_by_the_newest() -> None:
    world = make_world()
    v1 = world.service.start_release(script(1)).rollout_id or ""
    v2 = world.service.start_release(script(2)).rollout_id or ""
    v3 = world.service.start_release(script(3)).rollout_id or ""
    world.tick_until(Phase.SUCCEEDED, rollout_id=v1)
    assert world.phase(v2) is Phase.REJECTED
    assert "superseded by v3" in (world.store.get_rollout(TARGET, v2) or pytest.fail()).reason
    assert world.phase(v3) is Phase.CANARY


def test_a_release_not_newer_than_the_stable_one_is_rejected() -> None:
    world = make_world()
    v2 = world.service.start_release(script(2)).rollout_id or ""
    world.tick_until(Phase.SUCCEEDED, rollout_id=v2)
    calls = len(world.scale_set.calls)
    for version in (1, 2):
        outcome = world.service.start_release(script(version, body=b"#!/bin/bash\necho other\n"))
        assert outcome.status == "Rejected"
        assert f"v{version} is not newer than the stable v2" in outcome.message
    assert len(world.scale_set.calls) == calls


@pytest.mark.parametrize(
    ("scale_set", "expected"),
    [
        ({"upgrade_mode": "Rolling"}, "upgrade policy is Rolling"),
        ({"upgrade_mode": "Automatic"}, "upgrade policy is Automatic"),
        ({"orchestration_mode": "Flexible", "upgrade_mode": "Rolling"}, "upgrade policy is Rolling"),
        ({"orchestration_mode": "Flexible", "upgrade_mode": "Automatic"}, "upgrade policy is Automatic"),
        ({"orchestration_mode": "VMOrchestrator"}, "canary upgrades need Uniform or Flexible"),
    ],
)
def test_a_scale_set_that_would_run_over_the_canary_is_rejected(scale_set: dict[str, str], expected: str) -> None:
    world = make_world(**scale_set)
    outcome = world.service.start_release(script(1))
    assert outcome.status == "Rejected" and expected in outcome.message
    assert world.scale_set.calls_of("update_model") == [] and world.scale_set.calls_of("upgrade_instances") == []
    target = world.store.get_target(TARGET)
    assert target is None or target.active_rollout_id is None


def test_a_fleet_without_healthy_instances_is_rejected() -> None:
    world = make_world(broken_releases={"install_nginx.sh"})
    outcome = world.service.start_release(script(1))
    assert outcome.status == "Rejected" and "0 of 5 instances are healthy" in outcome.message


def test_a_throttled_upgrade_is_reissued_on_the_next_tick() -> None:
    world = make_world()
    rid = world.service.start_release(script(1)).rollout_id or ""
    world.tick_until(Phase.PROMOTING, rollout_id=rid)
    world.scale_set.throttle_next = 1
    world.clock.advance(30)
    world.service.tick()
    assert "upgrade_instances:throttled" in [c for c, _ in world.scale_set.calls]
    assert EventKind.ACTION_FAILED in world.kinds(rid)
    throttled = (world.store.get_rollout(TARGET, rid) or pytest.fail()).batch_ids
    assert throttled == ("2",) and world.scale_set.instances["2"].upgrades == 0
    world.clock.advance(30)
    world.service.tick()
    assert world.scale_set.calls_of("upgrade_instances")[-1] == ("2",)
    assert world.tick_until(Phase.SUCCEEDED, rollout_id=rid) is Phase.SUCCEEDED
    assert Counter(i.upgrades for i in world.scale_set.instances.values()) == Counter({1: 5})


def test_two_ticks_at_once_do_not_both_act() -> None:
    world = make_world()
    rid = world.service.start_release(script(1)).rollout_id or ""
    world.tick_until(Phase.PROMOTING, rollout_id=rid)
    stale = world.store.get_rollout(TARGET, rid)
    world.clock.advance(30)
    world.service.tick()  # host A issues batch 1
    upgrades = len(world.scale_set.calls_of("upgrade_instances"))

    class StaleStore(FakeStore):  # host B read the partition before host A saved the rollout
        def load(self, target: str):  # type: ignore[no-untyped-def]
            claim, rollouts = super().load(target)
            return claim, [stale if r.id == rid else r for r in rollouts]

    stale_store = StaleStore()
    stale_store.__dict__.update(world.store.__dict__)
    host_b = RolloutService(
        target_key=TARGET,
        compute=world.scale_set,
        prober=FakeProber(world.scale_set),
        store=stale_store,
        notifier=world.notifier,
        clock=world.clock,
        policy=world.service.policy,
        extension=ExtensionDefaults(),
    )
    outcome = host_b.tick()
    assert outcome.status == "Lost"
    assert len(world.scale_set.calls_of("upgrade_instances")) == upgrades


def test_pause_holds_and_resume_goes_on() -> None:
    world = make_world()
    rid = world.service.start_release(script(1)).rollout_id or ""
    world.tick_until(Phase.PROMOTING, rollout_id=rid)
    world.service.command(rid, "pause")
    upgrades = len(world.scale_set.calls_of("upgrade_instances"))
    for _ in range(10):
        world.clock.advance(30)
        world.service.tick()
    assert world.phase(rid) is Phase.PAUSED
    assert len(world.scale_set.calls_of("upgrade_instances")) == upgrades
    with pytest.raises(CommandError, match="only a rollout in Canary, Baking or Promoting"):
        world.service.command(rid, "pause")
    world.service.command(rid, "resume")
    assert world.tick_until(Phase.SUCCEEDED, rollout_id=rid) is Phase.SUCCEEDED


def test_promote_skips_the_bake_and_promote_full_upgrades_the_rest_at_once() -> None:
    world = make_world(policy=RolloutPolicy(bake_seconds=3600))
    rid = world.service.start_release(script(1)).rollout_id or ""
    world.tick_until(Phase.BAKING, rollout_id=rid)
    world.service.command(rid, "promote-full")
    assert world.tick_until(Phase.SUCCEEDED, rollout_id=rid, step=5) is Phase.SUCCEEDED
    assert world.scale_set.calls_of("upgrade_instances") == [("0",), ("1", "2", "3", "4")]


def test_an_image_release_rolls_out_the_same_way() -> None:
    world = make_world(size=3)
    name = parse_release_name("install_nginx.v4.image.json")
    assert not isinstance(name, str)
    image = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/images/nginx-updated-image"
    release = build_release(name, f"{BASE_URL}/{name.blob_name}", json.dumps({"imageId": image}).encode())
    assert release.kind is ReleaseKind.IMAGE
    world.scale_set.images.add(image)  # pre-flight reads it
    rid = world.service.start_release(release).rollout_id or ""
    assert world.tick_until(Phase.SUCCEEDED, rollout_id=rid) is Phase.SUCCEEDED
    assert world.scale_set.model.image_id == image
    assert world.scale_set.model.extension is not None  # the script stays as it was
    assert all(i.applied.image_id == image for i in world.scale_set.instances.values())


def test_a_rejected_content_is_recorded_with_its_reason() -> None:
    world = make_world()
    name = parse_release_name("install_nginx.v5.sh")
    assert not isinstance(name, str)
    from rollout.releases import rejected_release

    release = rejected_release(name, f"{BASE_URL}/install_nginx.v5.sh", b"")
    outcome = world.service.reject_release(release, "the script is empty")
    assert outcome.status == "Rejected"
    rollout = world.store.get_rollout(TARGET, outcome.rollout_id or "")
    assert rollout is not None and rollout.phase is Phase.REJECTED and rollout.reason == "the script is empty"
    assert hashlib.sha256(b"").hexdigest() == rollout.release.sha256


def test_without_rollback_reimage_only_instances_the_baseline_leaves_broken_are_reimaged() -> None:
    world = make_world(policy=RolloutPolicy(bake_seconds=60, failure_threshold=2, rollback_reimage=False))
    rid = world.service.start_release(script(1)).rollout_id or ""
    world.tick_until(Phase.PROMOTING, rollout_id=rid)
    world.scale_set.instances["1"].forced_unhealthy = True
    assert world.tick_until(Phase.ROLLED_BACK, rollout_id=rid) is Phase.ROLLED_BACK
    assert world.scale_set.calls_of("reimage_instances") == [("1",)]


def test_a_throttled_write_is_not_retried_before_arms_retry_after() -> None:
    world = make_world()
    rid = world.service.start_release(script(1)).rollout_id or ""
    world.tick_until(Phase.PROMOTING, rollout_id=rid)
    world.scale_set.throttle_next, world.scale_set.throttle_retry_after = 1, 100
    world.clock.advance(30)
    world.service.tick()  # batch 2 throttled: ARM says come back in 100 s

    def attempts() -> int:
        ss = world.scale_set
        return len(ss.calls_of("upgrade_instances")) + len(ss.calls_of("upgrade_instances:throttled"))

    after_throttle = attempts()
    rollout = world.store.get_rollout(TARGET, rid) or pytest.fail()
    assert rollout.hold_until == world.clock.now() + timedelta(seconds=100)
    for _ in range(3):  # 90 s of ticks: no write
        world.clock.advance(30)
        world.service.tick()
    assert attempts() == after_throttle
    assert "ARM throttled writes" in (world.store.get_rollout(TARGET, rid) or pytest.fail()).reason
    world.clock.advance(30)
    world.service.tick()
    assert world.scale_set.calls_of("upgrade_instances")[-1] == ("2",)
    assert world.tick_until(Phase.SUCCEEDED, rollout_id=rid) is Phase.SUCCEEDED


def test_a_throttled_reimage_is_issued_again_not_forgotten() -> None:
    world = make_world(broken_releases={"install_nginx.v1.sh"})
    world.scale_set.throttle_reimages, world.scale_set.throttle_retry_after = 1, 45
    rid = world.service.start_release(script(1)).rollout_id or ""
    assert world.tick_until(Phase.ROLLED_BACK, rollout_id=rid) is Phase.ROLLED_BACK
    assert "reimage_instances:throttled" in [c for c, _ in world.scale_set.calls]
    assert world.scale_set.calls_of("reimage_instances") == [("0",)]  # issued again after the 429
    assert EventKind.ACTION_FAILED in world.kinds(rid)


# --- the blob trigger: size first, then exactly the checked version ----------------------------------


def test_an_oversized_release_is_rejected_from_its_size_without_reading_it() -> None:
    world = make_world()
    blob = FakeReleaseBlob("install_nginx.v3.sh", None, size=2**30)
    outcome = world.service.receive_release_blob(blob)

    assert outcome.status == "Rejected" and outcome.phase is Phase.REJECTED
    assert outcome.message == (
        f"release is 1073741824 bytes; at most {MAX_SCRIPT_BYTES} are accepted for a script (it was not downloaded)"
    )
    assert blob.bytes_read == 0 and blob.properties_requests == 1
    rollout = world.store.get_rollout(TARGET, outcome.rollout_id or "")
    assert rollout is not None and rollout.phase is Phase.REJECTED and rollout.reason == outcome.message
    assert rollout.release.sha256 == "" and rollout.release.version == 3
    assert world.kinds(rollout.id) == [EventKind.REJECTED]
    assert world.scale_set.calls == []  # nothing reached the scale set
    # Event Grid delivers at least once: the same upload again is recognised, not recorded twice.
    again = world.service.receive_release_blob(blob)
    assert again.status == "Duplicate" and again.rollout_id == rollout.id
    assert len(world.store.list_rollouts(TARGET)) == 1
    # The same oversized name uploaded again (new ETag) is a new upload, recorded on its own.
    blob.etag = '"0x2"'
    assert world.service.receive_release_blob(blob).status == "Rejected"
    assert len(world.store.list_rollouts(TARGET)) == 2


def test_an_oversized_image_manifest_is_rejected_too() -> None:
    world = make_world()
    outcome = world.service.receive_release_blob(FakeReleaseBlob("a.v2.image.json", None, size=MAX_MANIFEST_BYTES + 1))
    assert outcome.status == "Rejected"
    assert outcome.message.startswith(f"release is {MAX_MANIFEST_BYTES + 1} bytes; at most {MAX_MANIFEST_BYTES}")


def test_a_release_of_allowed_size_is_read_once_exactly_and_starts() -> None:
    world = make_world()
    content = b"#!/bin/bash\necho v4\n"
    blob = FakeReleaseBlob("install_nginx.v4.sh", content)
    outcome = world.service.receive_release_blob(blob)
    assert outcome.phase is Phase.CANARY
    assert blob.bytes_read == len(content)
    rollout = world.store.get_rollout(TARGET, outcome.rollout_id or "")
    assert rollout is not None and rollout.release.sha256 == hashlib.sha256(content).hexdigest()
    assert rollout.release.blob_url == blob.url


def test_a_blob_replaced_between_the_size_check_and_the_read_is_left_to_its_own_event() -> None:
    world = make_world()
    blob = FakeReleaseBlob("install_nginx.v5.sh", b"#!/bin/bash\necho v5\n")
    blob.after_properties.append(lambda: blob.replace(b"x" * (MAX_SCRIPT_BYTES * 4)))
    outcome = world.service.receive_release_blob(blob)
    assert outcome.status == "Ignored" and "changed while it was read" in outcome.message
    assert blob.bytes_read == 0 and world.store.list_rollouts(TARGET) == []


def test_a_blob_gone_before_its_event_is_handled_is_ignored() -> None:
    world = make_world()
    blob = FakeReleaseBlob("install_nginx.v6.sh", b"#!/bin/bash\n")
    blob.exists = False
    outcome = world.service.receive_release_blob(blob)
    assert outcome.status == "Ignored" and "no longer exists" in outcome.message


def test_a_blob_that_is_not_a_release_is_ignored_without_a_request() -> None:
    world = make_world()
    blob = FakeReleaseBlob("README.md", None, size=2**40)
    assert world.service.receive_release_blob(blob).status == "Ignored"
    assert blob.properties_requests == 0


def test_a_malformed_image_manifest_is_rejected_not_a_crash() -> None:
    world = make_world()
    outcome = world.service.receive_release_blob(FakeReleaseBlob("a.v3.image.json", b"{not json"))
    assert outcome.status == "Rejected" and outcome.message.startswith("the image manifest is not valid JSON")


def test_a_call_fenced_by_another_hosts_abort_is_neither_sent_nor_recorded_as_sent() -> None:
    world = make_world()
    rollout_id = world.service.start_release(script(1)).rollout_id or ""
    world.tick_until(Phase.PROMOTING, rollout_id=rollout_id)
    sent_before = list(world.scale_set.calls_of("upgrade_instances"))
    save = world.store.commit
    raced: list[tuple[str, ...]] = []

    def save_then_abort_elsewhere(target: TargetRecord | None, rollouts: Sequence[Rollout]) -> Any:
        claim, saved = save(target, rollouts)
        for rollout in saved:
            if rollout.phase is Phase.PROMOTING and rollout.batch_ids and not raced:
                # Another host's abort lands between this tick's save of batch 1 and its manualupgrade.
                raced.append(rollout.batch_ids)
                save(None, [rollout.evolve(phase=Phase.ROLLING_BACK, rollback_reason="aborted elsewhere")])
        return claim, saved

    world.store.commit = save_then_abort_elsewhere  # type: ignore[method-assign]
    world.clock.advance(30)
    world.service.tick()

    assert raced, "batch 1 was never saved"
    assert world.scale_set.calls_of("upgrade_instances") == sent_before  # the fence dropped the call
    assert EventKind.LATE_WRITE not in world.kinds(rollout_id)  # and nothing claims it was sent
