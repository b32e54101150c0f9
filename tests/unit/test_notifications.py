"""Notifications derived from the audit trail (rollout.notifications): which events are one, what each
channel's payload looks like, the queue envelope, the retry schedule and the dead-letter bound."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from rollout.model import EventKind, Phase, RolloutEvent
from rollout.notifications import (
    CLOUDEVENT_TYPE_PREFIX,
    SCHEMA,
    DeadLetter,
    Delivered,
    Envelope,
    Notification,
    NotificationError,
    NotificationKind,
    Retry,
    after_delivery,
    backoff_seconds,
    notification_for,
    render,
)

AT = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def event(kind: EventKind, message: str, phase: Phase | None = None, **data: object) -> RolloutEvent:
    return RolloutEvent("r1", "rg:vmss", AT, kind, message, phase=phase, data=data)


@pytest.mark.parametrize(
    ("message", "kind"),
    [
        ("Queued -> Canary: upgrading the canary", NotificationKind.CANARY_STARTED),
        ("Canary -> Baking: the canary is healthy", NotificationKind.CANARY_PASSED),
        ("Baking -> Promoting: the bake passed", NotificationKind.BAKE_PASSED),
        ("Canary -> Paused: paused by ops", NotificationKind.PAUSED),
        ("Paused -> Baking: resumed by ops", NotificationKind.RESUMED),
        ("Canary -> RollingBack: 2 unhealthy observations", NotificationKind.ROLLING_BACK),
        ("Promoting -> Succeeded: all 5 on the release", NotificationKind.SUCCEEDED),
        ("RollingBack -> RolledBack: done", NotificationKind.ROLLED_BACK),
        ("Canary -> Aborted: aborted by ops", NotificationKind.ABORTED),
        ("RollingBack -> Failed: needs a human", NotificationKind.FAILED),
    ],
)
def test_each_phase_change_is_a_notification_of_its_kind(message: str, kind: NotificationKind) -> None:
    n = notification_for(event(EventKind.PHASE_CHANGED, message), release="install_nginx v7")
    assert n is not None and n.kind is kind
    before, rest = message.split(" -> ")
    after, reason = rest.split(": ", 1)
    assert (n.phase_before, n.phase_after, n.reason) == (before, after, reason)
    assert (n.rollout_id, n.target, n.release, n.at) == ("r1", "rg:vmss", "install_nginx v7", AT.isoformat())
    assert n.link == "/api/rollouts/r1"


def test_events_that_are_not_phase_changes_are_not_notifications() -> None:
    for kind in (EventKind.BATCH_STARTED, EventKind.HEALTH_CHECK_FAILED, EventKind.ACTION_FAILED, EventKind.RECEIVED):
        assert notification_for(event(kind, "x -> y: z"), release="a v1") is None
    assert notification_for(event(EventKind.PHASE_CHANGED, "no arrow here"), release="a v1") is None


def test_rejections_orphans_and_group_waves_are_notifications() -> None:
    rejected = notification_for(event(EventKind.REJECTED, "v1 is not newer than v2"), release="a v1")
    assert rejected is not None and rejected.kind is NotificationKind.REJECTED and rejected.phase_after == "Rejected"
    orphan = notification_for(event(EventKind.ORPHANED, "Canary -> Aborted: another rollout holds it"), release="a v1")
    assert orphan is not None and orphan.kind is NotificationKind.ABORTED
    wave = notification_for(
        event(EventKind.WAVE_SUCCEEDED, "wave 1 of 3 succeeded", wave=1),
        release="a v1",
        group="web",
        group_release="r1",
        scope="groupRelease",
    )
    assert wave is not None and wave.kind is NotificationKind.WAVE_SUCCEEDED and wave.wave == 1
    assert wave.link == "/api/releases/r1?group=web"
    first = notification_for(
        event(EventKind.PHASE_CHANGED, "Queued -> Running: wave 1 started"), release="a v1", group="web", scope="group"
    )
    assert first is not None and first.kind is NotificationKind.WAVE_STARTED and first.wave == 1


def test_the_same_event_gives_the_same_id_and_another_event_another() -> None:
    a = notification_for(event(EventKind.PHASE_CHANGED, "Canary -> Baking: ok"), release="a v1")
    b = notification_for(event(EventKind.PHASE_CHANGED, "Canary -> Baking: ok"), release="a v1")
    c = notification_for(event(EventKind.PHASE_CHANGED, "Baking -> Promoting: ok"), release="a v1")
    assert a is not None and b is not None and c is not None
    assert a.id == b.id != c.id


def _note() -> Notification:
    n = notification_for(
        event(EventKind.PHASE_CHANGED, "Canary -> RollingBack: <b>bad</b> & worse"),
        release="install_nginx v7",
        group="web",
        group_release="r1",
    )
    assert n is not None
    return n


def test_the_envelope_round_trips_and_refuses_what_is_not_one() -> None:
    n = _note()
    env = Envelope(n, ("teams", "slack"), 3, {"teams": "teams: HTTP 500"})
    assert Envelope.decode(env.encode()) == env
    assert Envelope.decode(Envelope(n).encode()).pending is None
    for bad in (b"not json", b"[]", b'{"notification": {}}', json.dumps({"notification": {"schema": "x"}}).encode()):
        with pytest.raises(NotificationError):
            Envelope.decode(bad)
    good = json.loads(env.encode())
    for field, value in (("pending", ["pager"]), ("attempt", 0), ("attempt", True), ("failures", {"a": 1})):
        with pytest.raises(NotificationError):
            Envelope.decode(json.dumps({**good, field: value}))
    wrong = {**good, "notification": {**good["notification"], "kind": "Exploded"}}
    with pytest.raises(NotificationError):
        Envelope.decode(json.dumps(wrong))


def test_retries_back_off_exponentially_and_dead_letter_after_the_bound() -> None:
    assert [backoff_seconds(a, 30) for a in range(1, 9)] == [30, 60, 120, 240, 480, 960, 1920, 3600]
    env = Envelope(_note(), None, 1)
    assert isinstance(after_delivery(env, {}, max_attempts=3, base_seconds=30), Delivered)
    step = after_delivery(env, {"teams": "teams: HTTP 500"}, max_attempts=3, base_seconds=30)
    assert isinstance(step, Retry) and step.delay_seconds == 30
    assert step.envelope.pending == ("teams",) and step.envelope.attempt == 2  # the others are not sent again
    step2 = after_delivery(step.envelope, {"teams": "teams: timed out"}, max_attempts=3, base_seconds=30)
    assert isinstance(step2, Retry) and step2.delay_seconds == 60 and step2.envelope.attempt == 3
    last = after_delivery(step2.envelope, {"teams": "teams: HTTP 503"}, max_attempts=3, base_seconds=30)
    assert isinstance(last, DeadLetter)
    assert last.envelope.pending == ("teams",) and last.envelope.failures == {"teams": "teams: HTTP 503"}


def test_each_channel_gets_its_own_format() -> None:
    n = _note()
    webhook = render("webhook", n)
    assert webhook["schema"] == SCHEMA and webhook["kind"] == "RollingBack" and webhook["rolloutId"] == "r1"
    assert webhook["phaseBefore"] == "Canary" and webhook["phaseAfter"] == "RollingBack"
    assert webhook["groupRelease"] == "r1" and webhook["link"] == "/api/rollouts/r1"
    teams = render("teams", n)
    assert teams["type"] == "message"
    (attachment,) = teams["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = attachment["content"]
    assert card["type"] == "AdaptiveCard" and card["body"][0]["color"] == "Attention"
    facts = {f["title"]: f["value"] for f in card["body"][1]["facts"]}
    assert facts["Phase"] == "Canary -> RollingBack" and facts["API"] == "/api/rollouts/r1"
    slack = render("slack", n)
    assert "&lt;b&gt;bad&lt;/b&gt; &amp; worse" in slack["text"]  # Slack's control characters escaped
    assert slack["blocks"][0]["type"] == "header" and slack["blocks"][1]["type"] == "section"
    ce = render("eventgrid", n, source="/vmss-canary/app")
    assert {k: ce[k] for k in ("specversion", "source", "type", "datacontenttype")} == {
        "specversion": "1.0",
        "source": "/vmss-canary/app",
        "type": CLOUDEVENT_TYPE_PREFIX + "RollingBack",
        "datacontenttype": "application/json",
    }
    assert ce["id"] == webhook["id"] and ce["time"] == AT.isoformat() and ce["data"] == webhook
    with pytest.raises(ValueError, match="unknown channel"):
        render("pager", n)
