"""Notifications: what an operator hears about a rollout, derived from the audit trail. Pure: no I/O.

The service already records every phase change as an event (``EventKind.PHASE_CHANGED``, "<before> ->
<after>: <reason>", made by ``machine._Plan.transition`` and ``waves._GroupPlan.transition``); a group
release's finished wave is ``EventKind.WAVE_SUCCEEDED``. ``notification_for`` turns those events (and
the two that end a rollout without a phase change: ``REJECTED``, ``ORPHANED``, ``STATE_TOO_LARGE``)
into a ``Notification``; every other event is not one. The service puts it on a queue and a queue
trigger delivers it (``rollout.adapters.notify``), outside the rollout's critical path.

Each channel has its own payload (``render``): the generic webhook gets the notification itself (JSON,
``schema`` names its version), Microsoft Teams an Adaptive Card in a message, Slack ``text`` and
``blocks``, Event Grid a CloudEvents 1.0 event. None of them carries a secret: a notification holds ids,
names, phases, the reason and an API path, nothing of the settings.

Delivery state travels in the queue message (``Envelope``): the channels still to deliver to and the
attempt number. A failed channel is retried in a new message delayed by ``backoff_seconds``; after
``max_attempts`` it is dead-lettered (``after_delivery``).
"""

from __future__ import annotations

import enum
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Final

from rollout.model import EventKind, Phase, RolloutEvent

SCHEMA: Final = "vmss-canary.notification/1"
# CloudEvents ``type`` prefix (reverse-DNS, as the spec recommends for ``type``).
CLOUDEVENT_TYPE_PREFIX: Final = "com.vmss-canary.rollout."
MAX_REASON_CHARS: Final = 1000
MAX_MESSAGE_BYTES: Final = 48 * 1024  # a Storage queue message holds 64 KiB; base64 takes a third more
CHANNELS: Final = ("webhook", "teams", "slack", "eventgrid")

_TRANSITION = re.compile(r"^(?P<before>[A-Za-z]+) -> (?P<after>[A-Za-z]+): (?P<reason>.*)$", re.DOTALL)


class NotificationKind(enum.StrEnum):
    """What happened, in one word; the CloudEvents type is ``CLOUDEVENT_TYPE_PREFIX`` + this."""

    CANARY_STARTED = "CanaryStarted"
    CANARY_PASSED = "CanaryPassed"  # the canary's verdict: healthy, the bake starts
    BAKE_PASSED = "BakePassed"  # the bake's verdict: healthy, promotion starts
    ROLLING_BACK = "RollingBack"  # the verdict: unhealthy (or an operator's abort with rollback)
    PAUSED = "Paused"
    RESUMED = "Resumed"
    WAVE_SUCCEEDED = "WaveSucceeded"
    WAVE_STARTED = "WaveStarted"
    SUCCEEDED = "Succeeded"
    ROLLED_BACK = "RolledBack"
    ABORTED = "Aborted"
    FAILED = "Failed"
    HALTED = "Halted"
    REJECTED = "Rejected"


# The phase a rollout (or a group release) entered -> what to call it. A phase missing here (Queued,
# a group's Halting, WaveBaking) is no notification of its own.
_BY_PHASE: Final[Mapping[str, NotificationKind]] = {
    Phase.CANARY.value: NotificationKind.CANARY_STARTED,
    Phase.BAKING.value: NotificationKind.CANARY_PASSED,
    Phase.PROMOTING.value: NotificationKind.BAKE_PASSED,
    Phase.PAUSED.value: NotificationKind.PAUSED,
    Phase.ROLLING_BACK.value: NotificationKind.ROLLING_BACK,
    Phase.SUCCEEDED.value: NotificationKind.SUCCEEDED,
    Phase.ROLLED_BACK.value: NotificationKind.ROLLED_BACK,
    Phase.ABORTED.value: NotificationKind.ABORTED,
    Phase.FAILED.value: NotificationKind.FAILED,
    Phase.REJECTED.value: NotificationKind.REJECTED,
    "Halted": NotificationKind.HALTED,
}
BAD_KINDS: Final = frozenset(
    {
        NotificationKind.ROLLING_BACK,
        NotificationKind.ROLLED_BACK,
        NotificationKind.ABORTED,
        NotificationKind.FAILED,
        NotificationKind.HALTED,
        NotificationKind.REJECTED,
    }
)


class NotificationError(ValueError):
    """A queue message that is not a notification envelope (it is dropped: retrying cannot help)."""


@dataclass(frozen=True)
class Notification:
    """One phase change of a rollout or of a group release, as the channels receive it."""

    id: str  # stable for the same event: a receiver can drop a duplicate delivery
    kind: NotificationKind
    rollout_id: str  # the rollout's id, or the group release's id (``scope`` says which)
    scope: str  # "rollout" or "groupRelease"
    target: str  # the target's key; a group release: "group:<name>"
    release: str  # the release's label, e.g. "install_nginx v7"
    phase_before: str | None
    phase_after: str | None
    reason: str
    at: str  # ISO 8601, UTC
    link: str  # the API path that shows it, e.g. "/api/rollouts/<id>"
    actor: str = "controller"
    group: str | None = None
    group_release: str | None = None  # the group release this rollout belongs to, if any
    wave: int | None = None

    @property
    def title(self) -> str:
        what = (
            f"{self.release} on {self.target}" if self.scope == "rollout" else f"{self.release} in group {self.group}"
        )
        return f"{self.kind.value}: {what}"

    @property
    def bad(self) -> bool:
        return self.kind in BAD_KINDS

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["kind"] = self.kind.value
        return {"schema": SCHEMA, **{_camel(k): v for k, v in data.items()}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Notification:
        if data.get("schema") != SCHEMA:
            raise NotificationError(f"not a {SCHEMA} notification")
        try:
            values: dict[str, Any] = {name: data.get(_camel(name)) for name in cls.__dataclass_fields__}
            values["kind"] = NotificationKind(str(values["kind"]))
            for name in ("id", "rollout_id", "scope", "target", "release", "reason", "at", "link", "actor"):
                if not isinstance(values[name], str):
                    raise NotificationError(f"{_camel(name)} must be a string")
            wave = values["wave"]
            if wave is not None and (not isinstance(wave, int) or isinstance(wave, bool)):
                raise NotificationError("wave must be a whole number")
            for name in ("phase_before", "phase_after", "group", "group_release"):
                if values[name] is not None and not isinstance(values[name], str):
                    raise NotificationError(f"{_camel(name)} must be a string or null")
            return cls(**values)
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, NotificationError):
                raise
            raise NotificationError(f"not a notification: {exc}") from None


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def notification_for(
    event: RolloutEvent,
    *,
    release: str,
    group: str | None = None,
    group_release: str | None = None,
    scope: str = "rollout",
) -> Notification | None:
    """The notification an audit-trail event stands for, or None (most events are not one)."""
    before: str | None = None
    after: str | None = event.phase.value if event.phase is not None else None
    reason = event.message
    wave: int | None = None
    if event.kind is EventKind.PHASE_CHANGED or event.kind is EventKind.ORPHANED:
        match = _TRANSITION.match(event.message)
        if match is None:
            return None
        before, after, reason = match["before"], match["after"], match["reason"]
        kind = _BY_PHASE.get(after)
        if scope != "rollout" and after == "Running" and before == Phase.QUEUED.value:
            kind, wave = NotificationKind.WAVE_STARTED, 1  # a group release starts its first wave
        if kind is None:
            return None
        if before == Phase.PAUSED.value and kind in (
            NotificationKind.CANARY_STARTED,
            NotificationKind.CANARY_PASSED,
            NotificationKind.BAKE_PASSED,
        ):
            kind = NotificationKind.RESUMED
    elif event.kind is EventKind.WAVE_SUCCEEDED or event.kind is EventKind.WAVE_STARTED:
        kind = (
            NotificationKind.WAVE_SUCCEEDED if event.kind is EventKind.WAVE_SUCCEEDED else NotificationKind.WAVE_STARTED
        )
        raw = event.data.get("wave")
        wave = raw if isinstance(raw, int) and not isinstance(raw, bool) else None
    elif event.kind is EventKind.REJECTED:
        kind, after = NotificationKind.REJECTED, Phase.REJECTED.value
    elif event.kind is EventKind.STATE_TOO_LARGE and event.phase in (Phase.FAILED, Phase.REJECTED):
        kind = NotificationKind.FAILED if event.phase is Phase.FAILED else NotificationKind.REJECTED
    else:
        return None
    at = event.at.isoformat()
    link = f"/api/rollouts/{event.rollout_id}" if scope == "rollout" else f"/api/releases/{event.rollout_id}"
    if scope != "rollout" and group:
        link += f"?group={group}"
    reason = reason if len(reason) <= MAX_REASON_CHARS else reason[:MAX_REASON_CHARS] + "..."
    return Notification(
        id=_id(event, kind),
        kind=kind,
        rollout_id=event.rollout_id,
        scope=scope,
        target=event.target if scope == "rollout" or not group else f"group:{group}",
        release=release,
        phase_before=before,
        phase_after=after,
        reason=reason,
        at=at,
        link=link,
        actor=event.actor,
        group=group,
        group_release=group_release,
        wave=wave,
    )


def _id(event: RolloutEvent, kind: NotificationKind) -> str:
    text = "|".join((event.target, event.rollout_id, kind.value, event.at.isoformat(), event.message))
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


# --- the queue message ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Envelope:
    """A notification on the queue: ``pending`` the channels still to deliver to (None: every channel
    configured when it is first delivered), ``attempt`` the delivery attempt this message is (1 first)."""

    notification: Notification
    pending: tuple[str, ...] | None = None
    attempt: int = 1
    failures: Mapping[str, str] = field(default_factory=dict)  # channel -> the last error (no secret)

    def encode(self) -> str:
        body = {
            "notification": self.notification.as_dict(),
            "pending": list(self.pending) if self.pending is not None else None,
            "attempt": self.attempt,
            "failures": dict(self.failures),
        }
        text = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
        if len(text.encode("utf-8")) > MAX_MESSAGE_BYTES:
            clipped = replace(self.notification, reason=self.notification.reason[:200] + "...")
            return replace(self, notification=clipped).encode()
        return text

    @classmethod
    def decode(cls, raw: bytes | str) -> Envelope:
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            raise NotificationError(f"not JSON: {str(exc)[:80]}") from None
        if not isinstance(body, dict) or not isinstance(body.get("notification"), dict):
            raise NotificationError("not a notification envelope")
        notification = Notification.from_dict(body["notification"])
        pending = body.get("pending")
        if pending is not None and (not isinstance(pending, list) or not all(c in CHANNELS for c in pending)):
            raise NotificationError(f"pending must be a list of channels among {', '.join(CHANNELS)}")
        attempt = body.get("attempt", 1)
        if not isinstance(attempt, int) or isinstance(attempt, bool) or not 1 <= attempt <= 1000:
            raise NotificationError("attempt must be a whole number from 1")
        failures = body.get("failures") or {}
        if not isinstance(failures, dict) or not all(isinstance(v, str) for v in failures.values()):
            raise NotificationError("failures must map channels to text")
        return cls(notification, tuple(pending) if pending is not None else None, attempt, failures)


def backoff_seconds(attempt: int, base: float, cap: float = 3600.0) -> int:
    """The delay before attempt ``attempt + 1`` after attempt ``attempt`` failed: ``base`` doubling,
    at most ``cap`` (and at most a Storage queue message's 7-day visibility limit)."""
    return int(min(cap, base * 2 ** max(0, attempt - 1), 7 * 24 * 3600))


@dataclass(frozen=True)
class Retry:
    envelope: Envelope
    delay_seconds: int


@dataclass(frozen=True)
class DeadLetter:
    envelope: Envelope


@dataclass(frozen=True)
class Delivered:
    pass


def after_delivery(
    envelope: Envelope, failed: Mapping[str, str], *, max_attempts: int, base_seconds: float
) -> Retry | DeadLetter | Delivered:
    """What follows one delivery attempt: every channel took it (``Delivered``); some failed and
    attempts remain (``Retry`` of those channels only, delayed); or this was the last attempt
    (``DeadLetter``, naming the channels that never took it and why)."""
    if not failed:
        return Delivered()
    remaining = tuple(sorted(failed))
    failures = {**envelope.failures, **failed}
    if envelope.attempt >= max_attempts:
        return DeadLetter(replace(envelope, pending=remaining, failures=failures))
    nxt = replace(envelope, pending=remaining, attempt=envelope.attempt + 1, failures=failures)
    return Retry(nxt, backoff_seconds(envelope.attempt, base_seconds))


# --- the channels' payloads ---------------------------------------------------------------------------------


def render(channel: str, notification: Notification, *, source: str = "/vmss-canary") -> dict[str, Any]:
    """The JSON body ``channel`` receives for ``notification``."""
    if channel == "webhook":
        return notification.as_dict()
    if channel == "teams":
        return teams_message(notification)
    if channel == "slack":
        return slack_message(notification)
    if channel == "eventgrid":
        return cloudevent(notification, source)
    raise ValueError(f"unknown channel {channel!r}")


def _facts(n: Notification) -> list[tuple[str, str]]:
    facts = [("Release", n.release), ("Target", n.target)]
    if n.phase_before or n.phase_after:
        facts.append(("Phase", f"{n.phase_before or '?'} -> {n.phase_after or '?'}"))
    if n.group:
        facts.append(("Group", n.group))
    if n.group_release:
        facts.append(("Group release", n.group_release))
    if n.wave is not None:
        facts.append(("Wave", str(n.wave)))
    facts += [("Reason", n.reason or "-"), ("By", n.actor), ("At", n.at), ("API", n.link)]
    return facts


def teams_message(n: Notification) -> dict[str, Any]:
    """A Teams incoming webhook message carrying one Adaptive Card: ``"type"`` must be ``"message"``, the
    ``"attachments"`` hold the card with ``"contentType": "application/vnd.microsoft.card.adaptive"`` and the
    card itself in ``"content"`` (MicrosoftDocs/msteams-docs
    msteams-platform/webhooks-and-connectors/how-to/connectors-using.md, "Send adaptive cards using an
    incoming webhook", whose example card is version 1.2; ``TextBlock`` and ``FactSet`` are card 1.0
    elements)."""
    card = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.2",
        "body": [
            {
                "type": "TextBlock",
                "text": n.title,
                "weight": "Bolder",
                "size": "Medium",
                "wrap": True,
                "color": "Attention" if n.bad else "Good",
            },
            {"type": "FactSet", "facts": [{"title": k, "value": v} for k, v in _facts(n)]},
        ],
    }
    return {
        "type": "message",
        "attachments": [
            {"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None, "content": card}
        ],
    }


def _slack_escape(text: str) -> str:
    # "Slack uses &, <, and > as control characters for special parsing in text objects, so they must be
    # converted to HTML entities" (api.slack.com/reference/surfaces/formatting, "Escaping text"). Only in
    # mrkdwn: the header's plain_text is shown as is.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_message(n: Notification) -> dict[str, Any]:
    """A Slack incoming webhook message: ``text`` (the notification's fallback) and Block Kit ``blocks``
    (a header and a section of fields), as the Slack SDK's ``IncomingWebhookSendArguments`` types them
    (docs.slack.dev/tools/node-slack-sdk/reference/webhook/interfaces/IncomingWebhookSendArguments)."""
    fields = [{"type": "mrkdwn", "text": f"*{k}*\n{_slack_escape(v)}"[:2000]} for k, v in _facts(n)][:10]
    return {
        "text": _slack_escape(f"{n.title}: {n.reason}")[:3000],
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": n.title[:150]}},
            {"type": "section", "fields": fields},
        ],
    }


def cloudevent(n: Notification, source: str) -> dict[str, Any]:
    """The notification as a CloudEvents 1.0 event in its JSON format: required ``specversion``, ``id``,
    ``source``, ``type``; optional ``subject``, ``time``, ``datacontenttype``, ``data``
    (cloudevents/spec v1.0 spec.md "Required Attributes"/"Optional Attributes", json-format.md).
    ``id`` is the notification's id, so a retried delivery is a duplicate the spec lets consumers drop
    ("Consumers MAY assume that Events with identical source and id are duplicates")."""
    return {
        "specversion": "1.0",
        "id": n.id,
        "source": source,
        "type": CLOUDEVENT_TYPE_PREFIX + n.kind.value,
        "subject": f"{n.target}/{n.rollout_id}",
        "time": n.at,
        "datacontenttype": "application/json",
        "data": n.as_dict(),
    }


__all__ = [
    "CHANNELS",
    "DeadLetter",
    "Delivered",
    "Envelope",
    "Notification",
    "NotificationError",
    "NotificationKind",
    "Retry",
    "after_delivery",
    "backoff_seconds",
    "cloudevent",
    "notification_for",
    "render",
    "slack_message",
    "teams_message",
]
