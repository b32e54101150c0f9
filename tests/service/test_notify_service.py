"""The services put each phase change on the notification queue, and nothing about notifications can hold,
change or fail a rollout: a queue that raises, or channels that all fail, leave the rollout exactly as it
is without them. Also: every log line the service writes carries the rollout, target and phase."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import pytest

from rollout import logcontext
from rollout.adapters.notify import DeliveryError, deliver
from rollout.model import EventKind, Phase
from rollout.notifications import Envelope, Notification, NotificationKind
from rollout.policy import RolloutPolicy
from rollout.ports import TransientError
from rollout.releases import build_release, parse_release_name
from tests.fakes import BASE_URL
from tests.service import test_groups as groups
from tests.service.test_rollouts import TARGET, World, make_world, script


@dataclass
class RecordingSink:
    published: list[Notification] = field(default_factory=list)

    def publish(self, notification: Notification) -> None:
        self.published.append(notification)


class BrokenSink:
    calls = 0

    def publish(self, notification: Notification) -> None:
        self.calls += 1
        raise TransientError("queue rollout-notifications: HTTP 503: server busy")


class HangingUpSink:
    """Not even a port error: anything an adapter might raise."""

    def publish(self, notification: Notification) -> None:
        raise RuntimeError("socket closed")


@dataclass
class MemoryQueue:
    sent: list[tuple[Envelope, int]] = field(default_factory=list)
    dead: list[Envelope] = field(default_factory=list)

    def send(self, envelope: Envelope, delay_seconds: int) -> None:
        self.sent.append((envelope, delay_seconds))

    def dead_letter(self, envelope: Envelope) -> None:
        self.dead.append(envelope)


class FailingChannel:
    def __init__(self, name: str) -> None:
        self.name = name
        self.calls = 0

    def deliver(self, notification: Notification) -> None:
        self.calls += 1
        raise DeliveryError(f"{self.name}: HTTP 500")


def _run(world: World, version: int = 1) -> str:
    rid = world.service.start_release(script(version)).rollout_id or ""
    world.tick_until(Phase.SUCCEEDED, Phase.ROLLED_BACK, rollout_id=rid)
    return rid


def _trail(world: World, rid: str) -> list[tuple[EventKind, str]]:
    return [(e.kind, e.message) for e in world.store.list_events(TARGET, rid)]


def test_a_good_release_publishes_each_phase_change_in_order() -> None:
    world = make_world()
    sink = RecordingSink()
    world.service.notifications = sink
    rid = _run(world)
    kinds = [n.kind for n in sink.published]
    assert kinds == [
        NotificationKind.CANARY_STARTED,
        NotificationKind.CANARY_PASSED,
        NotificationKind.BAKE_PASSED,
        NotificationKind.SUCCEEDED,
    ]
    last = sink.published[-1]
    assert (last.rollout_id, last.target, last.release) == (rid, TARGET, "install_nginx v1")
    assert (last.phase_before, last.phase_after, last.link) == ("Promoting", "Succeeded", f"/api/rollouts/{rid}")


def test_a_bad_release_publishes_the_verdict_and_the_rollback() -> None:
    world = make_world(broken_releases={"install_nginx.v1.sh"})
    sink = RecordingSink()
    world.service.notifications = sink
    assert world.phase(_run(world)) is Phase.ROLLED_BACK
    kinds = [n.kind for n in sink.published]
    assert kinds[0] is NotificationKind.CANARY_STARTED
    assert NotificationKind.ROLLING_BACK in kinds and kinds[-1] is NotificationKind.ROLLED_BACK


@pytest.mark.parametrize("sink", [BrokenSink(), HangingUpSink()], ids=["port-error", "any-error"])
def test_a_queue_that_fails_changes_nothing_of_the_rollout_but_one_event(sink: object) -> None:
    plain, noisy = make_world(), make_world()
    noisy.service.notifications = sink  # type: ignore[assignment]
    rid_plain, rid_noisy = _run(plain), _run(noisy)
    assert rid_plain == rid_noisy
    assert plain.phase(rid_plain) is noisy.phase(rid_noisy) is Phase.SUCCEEDED
    assert plain.scale_set.calls_of("upgrade_instances") == noisy.scale_set.calls_of("upgrade_instances")
    failed = [m for k, m in _trail(noisy, rid_noisy) if k is EventKind.ACTION_FAILED]
    assert len(failed) == 4 and all(m.startswith("notification ") and "not enqueued" in m for m in failed)
    assert [t for t in _trail(noisy, rid_noisy) if t[0] is not EventKind.ACTION_FAILED] == _trail(plain, rid_plain)


def test_a_rollout_completes_the_same_when_every_channel_fails() -> None:
    """The channels run in the delivery trigger, not in the tick: whatever they do, the rollout's steps and
    trail are those of a rollout with no notifications at all; the failures end in the dead-letter queue."""
    plain, notified = make_world(), make_world()
    sink = RecordingSink()
    notified.service.notifications = sink
    assert _run(plain) == _run(notified)
    assert _trail(plain, plain.service.list()[1][0].id) == _trail(notified, notified.service.list()[1][0].id)
    channels = {name: FailingChannel(name) for name in ("webhook", "teams", "slack", "eventgrid")}
    queue = MemoryQueue()
    for n in sink.published:
        envelope = Envelope(n)
        for _ in range(3):
            report = deliver(envelope, channels, queue, max_attempts=3, base_seconds=1)
            if report.outcome != "retry":
                break
            envelope = queue.sent[-1][0]
        assert report.outcome == "dead-lettered"
    assert len(queue.dead) == len(sink.published) == 4
    assert all(c.calls == 3 * 4 for c in channels.values())
    assert [d for _, d in queue.sent] == [1, 2] * 4  # exponential backoff between the attempts


def test_the_service_log_lines_carry_rollout_target_and_phase(caplog: pytest.LogCaptureFixture) -> None:
    logcontext.install()
    world = make_world(policy=RolloutPolicy(bake_seconds=60, failure_threshold=2))
    with caplog.at_level(logging.INFO, logger="rollout"), logcontext.log_context(invocation_id="inv-42"):
        rid = _run(world)
    own = [r for r in caplog.records if r.name == "rollout" and f"[{rid}]" in r.getMessage()]
    assert own, "the service logged no event lines"
    for record in own:
        assert record.invocation_id == "inv-42"  # type: ignore[attr-defined]
        assert record.rollout_id == rid and record.target == TARGET  # type: ignore[attr-defined]
        assert record.phase in {p.value for p in Phase}  # type: ignore[attr-defined]
        assert f"rollout_id={rid}" in record.getMessage() and "invocation_id=inv-42" in record.getMessage()
    phases = {r.phase for r in own}  # type: ignore[attr-defined]
    assert {"Canary", "Baking", "Promoting", "Succeeded"} <= phases


def test_a_group_release_publishes_its_waves_and_its_end_and_each_target_its_own() -> None:
    world = groups.make_world(groups.make_group(bake=0))
    sink = RecordingSink()
    world.groups.notifications = sink
    for service in world.services.values():
        service.notifications = sink
    name = parse_release_name("web/install_nginx.v1.sh")  # uploaded to the group's folder, as the fleet routes it
    assert not isinstance(name, str)
    release = build_release(name, f"{BASE_URL}/web/install_nginx.v1.sh", b"#!/bin/bash\necho v1\n")
    world.groups.receive_release("web", release)
    world.run_until(release, groups.GroupPhase.SUCCEEDED)
    group_notes = [n for n in sink.published if n.scope == "groupRelease"]
    assert [(n.kind, n.wave) for n in group_notes] == [
        (NotificationKind.WAVE_STARTED, 1),
        (NotificationKind.WAVE_SUCCEEDED, 1),
        (NotificationKind.WAVE_STARTED, 2),
        (NotificationKind.WAVE_SUCCEEDED, 2),
        (NotificationKind.WAVE_STARTED, 3),
        (NotificationKind.WAVE_SUCCEEDED, 3),
        (NotificationKind.SUCCEEDED, None),
    ]
    assert all(n.group == "web" and n.target == "group:web" and n.link.endswith("?group=web") for n in group_notes)
    # Each target's own rollout says it too, naming the group release it belongs to.
    succeeded = [n for n in sink.published if n.scope == "rollout" and n.kind is NotificationKind.SUCCEEDED]
    assert sorted(n.target for n in succeeded) == sorted(groups.KEYS)
    assert {n.group_release for n in succeeded} == {group_notes[0].rollout_id}
