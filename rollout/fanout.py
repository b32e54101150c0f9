"""The fan-out: the timer finds the targets with work and puts one message per target on a Storage queue;
a queue-triggered function advances that one target (docs/design.md, "Fan-out").

This module is the part of it that needs no Azure client:

* ``TickMessage``: the message, small JSON (``{"v": 1, "target": "<rg>:<name>", "enqueuedAt": ...,
  "notBefore": ...}``), and ``decode_tick``, which names what is wrong with anything else
  (``TickMessageError``: the queue function logs it and drops the message).
* ``has_work`` / ``targets_with_work``: which targets have an active or a queued rollout, read from the
  state store (one point read of the target row; the target's rollouts only when nothing holds it).
* ``ReadBudget`` / ``spread``: how long each message stays invisible so that the ticks it causes
  never draw more ARM reads than the budget (a bucket of ``burst`` reads refilled ``rate`` a second,
  the shape of ARM's own subscription read bucket), and ``fan_out``, which does all of it.

Delivering a message twice is harmless: a tick is level-triggered and the ETag claim keeps one writer
per target (docs/design.md, "Who holds the scale set").
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from rollout.model import Phase, Rollout, TargetRecord
from rollout.ports import PortError
from rollout.targets import Target, TargetsConfig

MESSAGE_VERSION = 1
# A target key is "<resource group>:<name>": at most 90 + 1 + 64 characters; a message is far below
# the queue's 64 KiB (learn.microsoft.com/rest/api/storageservices/put-message). Anything larger
# than this is not one of ours and is refused before it is parsed.
MAX_MESSAGE_BYTES = 2048
MAX_KEY_CHARS = 256
MAX_LOOK_CHARS = 512  # a rollout id and its row's ETag (rollout.cadence.stamp)
MAX_SHARE = 100_000
# ARM reads one tick of one target makes when it observes the scale set: GET the scale set, list its
# VMs with their instance view, list its NICs (rollout/adapters/compute.py, AzureCompute.observe; one
# page each up to the list's page size). A start's model read and further pages come out of the room
# the default budget leaves below ARM's bucket.
READS_PER_TICK = 3


class TickMessageError(ValueError):
    """A queue message that is not a tick message; the text says why (logged, the message dropped)."""


@dataclass(frozen=True)
class TickMessage:
    """Advance ``target`` (its state-table key). ``not_before``: the earliest time the tick is wanted
    (the message's visibility delay; a tick seen earlier still runs: ticks are level-triggered).

    ``look``: the engine's own earlier look (``rollout.cadence``), for the rollout with this stamp; None: a
    timer tick. ``share``: how many targets the timer found with work (the look interval grows with it)."""

    target: str
    enqueued_at: datetime
    not_before: datetime
    look: str | None = None
    share: int = 1

    def encode(self) -> str:
        data: dict[str, Any] = {
            "v": MESSAGE_VERSION,
            "target": self.target,
            "enqueuedAt": self.enqueued_at.isoformat(),
            "notBefore": self.not_before.isoformat(),
        }
        if self.look is not None:
            data["look"] = self.look
        if self.share != 1:
            data["share"] = self.share
        return json.dumps(data, separators=(",", ":"))


def decode_tick(body: bytes | str) -> TickMessage:
    """The message in ``body`` (what the queue trigger hands over, already base64-decoded by the host)."""
    raw = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body
    if len(raw) > MAX_MESSAGE_BYTES:
        raise TickMessageError(f"message is {len(raw)} bytes; a tick message is at most {MAX_MESSAGE_BYTES}")
    try:
        data: Any = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise TickMessageError(f"message is not JSON: {_shorten(str(exc))}") from None
    if not isinstance(data, dict):
        raise TickMessageError("message must be a JSON object")
    if data.get("v") != MESSAGE_VERSION:
        raise TickMessageError(f"message version {_shorten(repr(data.get('v')))} is not {MESSAGE_VERSION}")
    unknown = sorted(set(data) - {"v", "target", "enqueuedAt", "notBefore", "look", "share"})
    if unknown:
        raise TickMessageError(f"unknown field(s) {_shorten(', '.join(map(str, unknown)))}")
    target = data.get("target")
    if not isinstance(target, str) or not target or len(target) > MAX_KEY_CHARS:
        raise TickMessageError(f'"target" must be a target key of 1 to {MAX_KEY_CHARS} characters')
    enqueued_at = _timestamp(data, "enqueuedAt")
    not_before = _timestamp(data, "notBefore")
    look = data.get("look")
    if look is not None and (not isinstance(look, str) or not look or len(look) > MAX_LOOK_CHARS):
        raise TickMessageError(f'"look" must be a rollout stamp of 1 to {MAX_LOOK_CHARS} characters')
    share = data.get("share", 1)
    if isinstance(share, bool) or not isinstance(share, int) or not 1 <= share <= MAX_SHARE:
        raise TickMessageError(f'"share" must be a whole number from 1 to {MAX_SHARE}')
    return TickMessage(target=target, enqueued_at=enqueued_at, not_before=not_before, look=look, share=share)


def _timestamp(data: dict[str, Any], name: str) -> datetime:
    value = data.get(name)
    if not isinstance(value, str):
        raise TickMessageError(f'"{name}" must be an ISO 8601 timestamp')
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise TickMessageError(f'"{name}" {_shorten(value)} is not an ISO 8601 timestamp') from None
    if parsed.tzinfo is None:
        raise TickMessageError(f'"{name}" must carry a UTC offset')
    return parsed


def _shorten(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


# --------------------------------------------------------------------------------------------------
# Which targets have work


class WorkReader(Protocol):
    """The two reads of the state store the selection needs (``rollout.ports.StateStore`` has both)."""

    def get_target(self, key: str) -> TargetRecord | None: ...

    def list_rollouts(self, target: str) -> list[Rollout]: ...


def has_work(store: WorkReader, key: str) -> bool:
    """Whether a tick of ``key`` has anything to do: a rollout holds the scale set (active, or ended and
    not handed over yet), or a rollout waits for it (``Queued``, or a started orphan to stop or adopt).
    One point read when a rollout holds it; the partition's rollouts only when none does."""
    target = store.get_target(key)
    if target is not None and target.active_rollout_id:
        return True
    return any(r.phase is Phase.QUEUED or r.phase.is_active for r in store.list_rollouts(key))


@dataclass(frozen=True)
class Selection:
    """The targets with work, in configuration order, and the ones whose state could not be read."""

    with_work: tuple[Target, ...]
    unreadable: tuple[tuple[Target, str], ...] = ()


def targets_with_work(config: TargetsConfig, store: WorkReader) -> Selection:
    """Every target of ``config`` with work. A target whose rows cannot be read is reported, not fatal:
    the others are still advanced."""
    found: list[Target] = []
    unreadable: list[tuple[Target, str]] = []
    for target in config.targets():
        try:
            if has_work(store, target.key):
                found.append(target)
        except PortError as exc:
            unreadable.append((target, str(exc)))
    return Selection(tuple(found), tuple(unreadable))


# --------------------------------------------------------------------------------------------------
# Spreading the reads


@dataclass(frozen=True)
class ReadBudget:
    """The ARM reads the ticks of one fan-out may draw: ``burst`` at once, then ``rate`` a second.

    ARM's subscription read bucket is 250 tokens refilled 25 a second, per subscription, per service
    principal and per region (learn.microsoft.com/azure/azure-resource-manager/management/
    request-limits-and-throttling, "Regional throttling and token bucket algorithm"); the defaults
    (``TICK_READ_BURST``, ``TICK_READ_RATE``) stay below it, leaving room for the operator API and
    other clients of the same identity."""

    burst: int = 100
    rate: float = 20.0
    reads_per_tick: int = READS_PER_TICK


def spread(count: int, budget: ReadBudget) -> list[int]:
    """Whole-second visibility delays for ``count`` messages, in order: message ``i`` becomes visible
    once the bucket holds the reads of ticks ``0..i``, so all of them together never exceed
    ``burst + rate * t`` reads by any time ``t``. The first ``burst // reads_per_tick`` go at once."""
    delays: list[int] = []
    for i in range(count):
        needed = (i + 1) * budget.reads_per_tick - budget.burst
        delays.append(0 if needed <= 0 else math.ceil(needed / budget.rate))
    return delays


class TickSender(Protocol):
    def send(self, message: TickMessage, delay_seconds: int) -> None: ...


@dataclass(frozen=True)
class FanoutResult:
    enqueued: tuple[tuple[str, int], ...] = ()  # (target key, delay in seconds)
    unreadable: tuple[tuple[str, str], ...] = ()  # (target key, why)
    failed: tuple[tuple[str, str], ...] = ()  # (target key, why the send failed)
    idle: int = 0  # targets without work

    def summary(self) -> str:
        last = max((d for _, d in self.enqueued), default=0)
        text = f"{len(self.enqueued)} target(s) enqueued (spread over {last} s), {self.idle} idle"
        if self.unreadable:
            text += f", {len(self.unreadable)} unreadable ({', '.join(k for k, _ in self.unreadable)})"
        if self.failed:
            text += f", {len(self.failed)} not sent ({', '.join(k for k, _ in self.failed)})"
        return text


@dataclass
class Fanout:
    """The timer's work: select, spread, send. ``service_for`` is the per-target service accessor the
    queue function uses (``rollout.bootstrap``)."""

    config: TargetsConfig
    store: WorkReader
    sender: TickSender
    now: Callable[[], datetime]
    budget: ReadBudget = field(default_factory=ReadBudget)

    def target(self, key: str) -> Target | None:
        return next((t for t in self.config.targets() if t.key == key), None)

    def fan_out(self) -> FanoutResult:
        selection = targets_with_work(self.config, self.store)
        now = self.now()
        enqueued: list[tuple[str, int]] = []
        failed: list[tuple[str, str]] = []
        for target, delay in zip(selection.with_work, spread(len(selection.with_work), self.budget), strict=True):
            share = max(1, len(selection.with_work))
            message = TickMessage(target.key, now, now + timedelta(seconds=delay), share=share)
            try:
                self.sender.send(message, delay)
            except PortError as exc:
                failed.append((target.key, str(exc)))
                continue
            enqueued.append((target.key, delay))
        idle = len(self.config.targets()) - len(selection.with_work) - len(selection.unreadable)
        return FanoutResult(
            tuple(enqueued), tuple((t.key, why) for t, why in selection.unreadable), tuple(failed), idle
        )


@dataclass
class QueuedLooks:
    """``rollout.ports.LookScheduler`` on the tick queue: the engine's own earlier look is a tick message
    for the target, invisible until it is due (``rollout.cadence``). ``sender`` is called on the first
    look, so a process that never asks for one never connects to the queue."""

    sender: Callable[[], TickSender]
    now: Callable[[], datetime]

    def ask(self, target: str, stamp: str, share: int, delay_seconds: int) -> None:
        try:
            sender = self.sender()
        except ValueError as exc:  # the tick queue's settings (rollout.settings.SettingsError)
            raise PortError(f"the tick queue is not usable: {exc}") from exc
        now = self.now()
        delay = max(0, delay_seconds)
        message = TickMessage(target, now, now + timedelta(seconds=delay), look=stamp, share=max(1, share))
        sender.send(message, delay)
