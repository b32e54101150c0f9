"""Use cases of a release to a group: receive it, advance it across the waves, steer it. The imperative
shell around ``rollout.waves.decide_group``.

Order of operations, as in ``rollout.service``: read -> decide -> SAVE -> act -> record events.

A group release is one row (``GroupStore``, the ``groupreleases`` table, one partition per group);
every tick reads the group's releases, reads each target it needs through that target's own
``RolloutService`` (``list``: its row and its rollouts), decides, saves the row conditionally on its
ETag and only then acts through the targets' services: ``start_release`` (the release's rollout id
is deterministic, so a start sent twice is a duplicate there), ``start_revert`` (a deterministic id
too) and ``command`` (a verb that no longer applies is refused there). Of two hosts that read the
same version, one saves and acts; the other gets ``ConcurrencyError`` and does nothing. Each target
is then advanced by its own ticks, exactly as a single scale set: this service never writes to a
scale set itself.

One release of a group is active at a time. A release received while another is active is Queued;
when none is active the newest queued one starts and older queued ones are superseded, each with a
write conditional on the version of its row read as Queued (so two hosts cannot start two).
Versions are per group: a release not newer than the group's last successful release (or than its
active one) is Rejected.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from rollout.logcontext import log_context
from rollout.machine import CommandError, Verb
from rollout.model import EventKind, Release, Rollout, RolloutEvent
from rollout.notifications import notification_for
from rollout.ports import AlreadyExistsError, Clock, ConcurrencyError, NotificationSink, PortError
from rollout.releases import rollout_id_for
from rollout.service import OutcomeStatus, RolloutNotFoundError, RolloutService
from rollout.targets import Target, TargetsConfig
from rollout.waves import (
    GroupAction,
    GroupDecision,
    GroupPhase,
    GroupRelease,
    StartRevert,
    StartTarget,
    SteerTarget,
    TargetState,
    apply_group_command,
    apply_target_command,
    decide_group,
    group_partition,
    new_group_release,
)

log = logging.getLogger("rollout.groups")

MAX_TEXT_CHARS = 8000


class GroupStore(Protocol):
    """What the group service needs of the state store (``TableStateStore`` and the fake implement it)."""

    def get_group_release(self, group: str, release_id: str) -> GroupRelease | None: ...

    def insert_group_release(self, record: GroupRelease) -> GroupRelease: ...

    def update_group_release(self, record: GroupRelease) -> GroupRelease: ...

    def list_group_releases(self, group: str) -> list[GroupRelease]: ...

    def append_event(self, event: RolloutEvent) -> None: ...

    def list_events(self, target: str, rollout_id: str) -> list[RolloutEvent]: ...


# The per-target wiring: the service of a target, by a factory or by target key.
TargetServices = Callable[[Target], RolloutService] | Mapping[str, RolloutService]


class GroupReleaseNotFoundError(LookupError):
    """No group release with this id in any group."""


class AmbiguousGroupReleaseError(LookupError):
    """The id names releases of several groups (the same script, same content, released to each: a release's
    id is ``rollout_id_for`` its content): the caller has to say which group (``groups``: their names)."""

    def __init__(self, release_id: str, groups: list[str]) -> None:
        super().__init__(release_id, groups)
        self.release_id = release_id
        self.groups = groups


class GroupTargetNotFoundError(LookupError):
    """The target is not part of the group release."""


class UnknownTargetError(LookupError):
    """A target of a group release the configuration no longer names (or the wiring has no service for)."""


@dataclass(frozen=True)
class GroupOutcome:
    """What a use case did to a group release, for the trigger to log or return."""

    status: OutcomeStatus
    message: str
    group: str
    release_id: str | None = None
    phase: GroupPhase | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status.value,
            "message": self.message,
            "group": self.group,
            "releaseId": self.release_id,
            "phase": self.phase.value if self.phase else None,
        }


@dataclass(frozen=True)
class GroupView:
    """A group release with its audit trail and, per target, the rollouts it started there."""

    record: GroupRelease
    events: list[RolloutEvent]
    rollouts: dict[str, Rollout | None]  # target key -> the release's rollout there
    reverts: dict[str, Rollout | None]  # target key -> the revert started there (targets with one)


class GroupService:
    def __init__(
        self,
        *,
        config: TargetsConfig,
        store: GroupStore,
        services: TargetServices,
        clock: Clock,
        notifications: NotificationSink | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.services = services
        self.clock = clock
        # A group release's phase changes and finished waves for the channels (rollout.notifications).
        self.notifications = notifications

    # --- receive ---------------------------------------------------------------------------------

    def receive_release(self, group_name: str, release: Release) -> GroupOutcome:
        """A release for ``group_name`` arrived: record it, then start it (wave 1), queue or reject it."""
        group = self.config.group(group_name)
        if group is None:
            names = ", ".join(g.name for g in self.config.groups)
            return GroupOutcome(OutcomeStatus.IGNORED, f"no group named {_short(group_name)}; known: {names}", "")
        release_id = rollout_id_for(release)
        if self.store.get_group_release(group.name, release_id) is not None:
            return self._duplicate(group.name, release)
        record = new_group_release(release_id, group, release, self.clock.now())
        reason = _not_newer_reason(release, self.store.list_group_releases(group.name))
        if reason is not None:
            record = record.evolve(phase=GroupPhase.REJECTED, reason=reason)
        try:
            record = self.store.insert_group_release(record)
        except AlreadyExistsError:
            return self._duplicate(group.name, release)
        if record.phase is GroupPhase.REJECTED:
            self._event(record, EventKind.REJECTED, reason or "")
            self._reject_at_targets(record)
            return GroupOutcome(OutcomeStatus.REJECTED, reason or "", group.name, record.id, record.phase)
        plan = ", ".join(
            f"wave {n + 1}: {', '.join(t.key for t in record.wave_targets(n))}" for n in range(record.wave_count)
        )
        self._event(record, EventKind.RECEIVED, f"{release.label} received for group {group.name} ({plan})")
        try:
            self.advance_group(group.name)
        except PortError as exc:  # recorded; the next tick starts it
            log.warning("group %s: %s received, starting it failed for now: %s", group.name, record.id, exc)
        current = self.store.get_group_release(group.name, release_id) or record
        status = OutcomeStatus.QUEUED if current.phase is GroupPhase.QUEUED else OutcomeStatus.ADVANCED
        if current.phase is GroupPhase.REJECTED:
            status = OutcomeStatus.REJECTED
        return GroupOutcome(status, current.reason, group.name, current.id, current.phase)

    def reject_release(
        self, group_name: str, release: Release, reason: str, release_id: str | None = None
    ) -> GroupOutcome:
        """A release for ``group_name`` whose content is unusable (too large, a syntax error): recorded
        ``Rejected`` with ``reason`` in the group's releases and trail, never started anywhere.
        ``release_id``: the id of a release never read (``rollout.releases.unread_rollout_id``)."""
        group = self.config.group(group_name)
        if group is None:
            names = ", ".join(g.name for g in self.config.groups)
            return GroupOutcome(OutcomeStatus.IGNORED, f"no group named {_short(group_name)}; known: {names}", "")
        record = new_group_release(release_id or rollout_id_for(release), group, release, self.clock.now())
        record = record.evolve(phase=GroupPhase.REJECTED, reason=_clip(reason))
        try:
            record = self.store.insert_group_release(record)
        except AlreadyExistsError:
            return self._duplicate(group.name, release, record.id)
        self._event(record, EventKind.REJECTED, record.reason)
        self._reject_at_targets(record)
        return GroupOutcome(OutcomeStatus.REJECTED, record.reason, group.name, record.id, record.phase)

    def _reject_at_targets(self, record: GroupRelease) -> None:
        """A release refused for the group is refused for each of its scale sets: each target records it
        ``Rejected`` under the same id, so a target's own history (``GET /api/rollouts``) lists it, as
        it did before groups (a single scale set is the default group of one target). Best effort:
        the group's row is the record; a target that cannot write now is logged, not retried."""
        for target in record.targets:
            try:
                self.service_for(target.key).reject_release(record.release, record.reason, rollout_id=record.id)
            except (PortError, UnknownTargetError) as exc:
                log.warning(
                    "group %s: recording %s as rejected at %s failed: %s", record.group, record.id, target.key, exc
                )

    def _duplicate(self, group: str, release: Release, release_id: str | None = None) -> GroupOutcome:
        message = f"{release.blob_name} with this content was already received for group {group}"
        return GroupOutcome(OutcomeStatus.DUPLICATE, message, group, release_id or rollout_id_for(release))

    # --- advance ---------------------------------------------------------------------------------

    def advance(self) -> list[GroupOutcome]:
        """One tick for every group: its active release advances (or the next queued one starts)."""
        outcomes = []
        for group in self.config.groups:
            try:
                outcomes.append(self.advance_group(group.name))
            except PortError as exc:
                log.warning("group %s: %s", group.name, exc)
                outcomes.append(GroupOutcome(OutcomeStatus.ERROR, f"a backend failed: {exc}", group.name))
        return outcomes

    def advance_group(self, group: str) -> GroupOutcome:
        """The group's active release one step; when none is active (or the step ended the last one),
        the next queued release starts at once, so a release uploaded just after its predecessor's
        targets ended does not wait a timer period for the group to notice. Bounded: at most two
        passes (the active release, then the one started)."""
        releases = self.store.list_group_releases(group)
        outcome = GroupOutcome(OutcomeStatus.IDLE, "", group)
        for attempt in range(2):
            active = [r for r in releases if r.phase.is_active]
            if active:
                if attempt:
                    return outcome  # the step left it active, or another host started the next one
                for record in active:  # one, unless rows from a lost race: each is advanced on its own
                    outcome = self._advance(record)
                releases = self.store.list_group_releases(group)
                continue
            started = self._activate_next(group, releases)
            if not isinstance(started, GroupRelease):
                return started if attempt == 0 or started.status is not OutcomeStatus.IDLE else outcome
            return self._advance(started)
        return outcome

    def _activate_next(self, group: str, releases: Sequence[GroupRelease]) -> GroupRelease | GroupOutcome:
        queued = sorted(
            (r for r in releases if r.phase is GroupPhase.QUEUED), key=lambda r: (r.release.version, r.created_at)
        )
        if not queued:
            return GroupOutcome(OutcomeStatus.IDLE, "no active or queued release", group)
        newest = queued[-1]
        for older in queued[:-1]:
            if not self._end(
                older, GroupPhase.REJECTED, f"superseded by v{newest.release.version}", EventKind.REJECTED
            ):
                return GroupOutcome(OutcomeStatus.LOST, f"{older.id} changed while queued", group, older.id)
        reason = _not_newer_reason(newest.release, releases)
        if reason is not None:
            self._end(newest, GroupPhase.REJECTED, reason, EventKind.REJECTED)
            return GroupOutcome(OutcomeStatus.REJECTED, reason, group, newest.id, GroupPhase.REJECTED)
        now = self.clock.now()
        reason = f"wave 1 of {newest.wave_count} starting"
        try:
            started = self.store.update_group_release(
                newest.evolve(phase=GroupPhase.RUNNING, phase_since=now, updated_at=now, reason=reason)
            )
        except ConcurrencyError:
            return GroupOutcome(OutcomeStatus.LOST, "another instance started it first", group, newest.id)
        self._event(started, EventKind.PHASE_CHANGED, f"Queued -> Running: {reason}")
        return started

    def _end(self, record: GroupRelease, phase: GroupPhase, reason: str, kind: EventKind) -> bool:
        """End ``record`` if its row is still the version read; False when it changed since."""
        now = self.clock.now()
        try:
            saved = self.store.update_group_release(
                record.evolve(phase=phase, reason=_clip(reason), phase_since=now, updated_at=now)
            )
        except ConcurrencyError:
            return False
        self._event(saved, kind, f"{record.phase.value} -> {phase.value}: {reason}")
        return True

    def _advance(self, record: GroupRelease) -> GroupOutcome:
        states = self._read_states(record, self._keys_to_read(record))
        return self._commit(record, decide_group(record, states, self.clock.now()))

    def _keys_to_read(self, record: GroupRelease) -> list[str]:
        """The targets a decision needs: halting, every target started (any may have to be stopped or
        reverted); otherwise the current wave and the next (what is stable on it is recorded when it
        starts). An earlier wave is not read again: it completed only once every target of it had
        succeeded, a phase a rollout never leaves."""
        if record.phase is GroupPhase.HALTING:
            return [t.key for t in record.targets if t.rollout_id]
        return [t.key for t in record.targets if record.wave <= t.wave <= record.wave + 1]

    def _read_states(self, record: GroupRelease, keys: Sequence[str]) -> dict[str, TargetState]:
        """Each target as its own service reads it. A target the configuration no longer names reads
        as empty (the decision waits on it; its start is reported as failed in the trail)."""
        states: dict[str, TargetState] = {}
        for key in keys:
            try:
                service = self.service_for(key)
            except UnknownTargetError:
                states[key] = TargetState()
                continue
            target_row, rollouts = service.list()
            states[key] = TargetState(record=target_row, rollouts=tuple(rollouts))
        return states

    def _commit(self, before: GroupRelease, decision: GroupDecision) -> GroupOutcome:
        record = decision.record.evolve(reason=_clip(decision.record.reason))
        if record != before or decision.actions:
            try:
                record = self.store.update_group_release(record)
            except ConcurrencyError:
                log.info("group release %s: another host changed it first; it acts, this one exits", before.id)
                return GroupOutcome(
                    OutcomeStatus.LOST, "another tick changed the group release first", before.group, before.id
                )
        for event in decision.events:
            self._append(event, record)
        failed = self._execute(record, decision.actions)
        status = OutcomeStatus.ERROR if failed else OutcomeStatus.ADVANCED
        if not decision.actions and record == before:
            status = OutcomeStatus.IDLE
        return GroupOutcome(status, record.reason, record.group, record.id, record.phase)

    def _execute(self, saved: GroupRelease, actions: Sequence[GroupAction]) -> int:
        """Each action through its target's service; a failure on one target does not stop the others
        (the next tick sends what did not land again). Returns the number of failures."""
        failures = 0
        for action in actions:
            if isinstance(action, StartTarget | StartRevert) and not self._still_current(saved):
                # Fenced: another host (or an operator's verb) changed the release since this tick saved
                # it; a start decided on the older version must not go out now.
                log.info("group release %s changed since it was saved: starts not sent", saved.id)
                return failures
            try:
                service = self.service_for(action.target)
                if isinstance(action, StartTarget):
                    outcome = service.start_release(saved.release)
                    log.info("start of %s on %s: %s %s", saved.id, action.target, outcome.status, outcome.message)
                elif isinstance(action, StartRevert):
                    outcome = service.start_revert(action.release, action.rollout_id, action.reason)
                    log.info(
                        "revert %s on %s: %s %s", action.rollout_id, action.target, outcome.status, outcome.message
                    )
                else:
                    self._steer(service, action)
            except (PortError, UnknownTargetError) as exc:
                failures += 1
                what = type(action).__name__
                self._event(
                    saved,
                    EventKind.ACTION_FAILED,
                    f"{what} on {action.target} failed (the next tick sends it again): {exc}",
                    target=action.target,
                )
        return failures

    def _steer(self, service: RolloutService, action: SteerTarget) -> None:
        try:
            service.command(
                action.rollout_id, action.verb, actor=action.actor, reason=action.reason, rollback=action.rollback
            )
        except (CommandError, RolloutNotFoundError) as exc:
            # The rollout moved on since it was read (ended, paused by hand): nothing to do there.
            log.info("%s of %s on %s not applied: %s", action.verb, action.rollout_id, action.target, exc)

    def _still_current(self, saved: GroupRelease) -> bool:
        try:
            current = self.store.get_group_release(saved.group, saved.id)
        except PortError:
            return True  # the decision was saved: the usual save-then-act reasoning covers it
        return current is None or (current.phase is saved.phase and current.wave == saved.wave)

    # --- steering --------------------------------------------------------------------------------

    def command(
        self,
        release_id: str,
        verb: Verb,
        *,
        target: str | None = None,
        actor: str = "operator",
        reason: str = "",
        rollback: bool = False,
        group: str | None = None,
    ) -> GroupOutcome:
        """A verb on the whole group release (``target`` None) or on one of its targets; ``group``: the
        group whose release it is (needed when the id is in several groups). Raises
        ``GroupReleaseNotFoundError``, ``AmbiguousGroupReleaseError``, ``GroupTargetNotFoundError`` or
        ``CommandError``."""
        for _ in range(3):
            record = self._find(release_id, group)
            states = self._read_states(record, [t.key for t in record.targets if t.rollout_id])
            now = self.clock.now()
            if target is None:
                decision = apply_group_command(record, states, verb, now, actor=actor, reason=reason, rollback=rollback)
            else:
                try:
                    decision = apply_target_command(
                        record, states, target, verb, now, actor=actor, reason=reason, rollback=rollback
                    )
                except LookupError:
                    raise GroupTargetNotFoundError(target) from None
                if verb is not Verb.ABORT:  # the record does not change: the target's own verb
                    return self._pass_on(record, decision, target)
            try:
                saved = self.store.update_group_release(decision.record.evolve(reason=_clip(decision.record.reason)))
            except ConcurrencyError:
                continue  # a tick won the race: judge the verb again on what it wrote
            for event in decision.events:
                self._append(event, saved)
            self._execute(saved, decision.actions)
            return GroupOutcome(OutcomeStatus.DONE, f"{verb}: {saved.reason}", saved.group, saved.id, saved.phase)
        raise CommandError("the group release kept changing under the command; try again")

    def _pass_on(self, record: GroupRelease, decision: GroupDecision, target: str) -> GroupOutcome:
        """A verb passed on to one target: the target decides whether it applies (``CommandError``,
        409, if not); the group's trail records it once it did."""
        messages = []
        for action in decision.actions:
            assert isinstance(action, SteerTarget)
            outcome = self.service_for(action.target).command(
                action.rollout_id, action.verb, actor=action.actor, reason=action.reason, rollback=action.rollback
            )
            messages.append(outcome.message)
        for event in decision.events:
            self._append(event)
        return GroupOutcome(
            OutcomeStatus.DONE, f"{target}: {'; '.join(messages)}", record.group, record.id, record.phase
        )

    # --- reading ---------------------------------------------------------------------------------

    def list(self) -> list[GroupRelease]:
        """Every group's releases, newest first."""
        found = [r for group in self.config.groups for r in self.store.list_group_releases(group.name)]
        return sorted(found, key=lambda r: (r.created_at, r.id), reverse=True)

    def get(self, release_id: str, group: str | None = None) -> GroupView:
        """The release ``release_id`` (of ``group``, needed when the id is in several groups)."""
        record = self._find(release_id, group)
        events = self.store.list_events(group_partition(record.group), record.id)
        rollouts: dict[str, Rollout | None] = {}
        reverts: dict[str, Rollout | None] = {}
        for entry in record.targets:
            rollouts[entry.key] = self._rollout(entry.key, entry.rollout_id)
            if entry.revert_id:
                reverts[entry.key] = self._rollout(entry.key, entry.revert_id)
        return GroupView(record, events, rollouts, reverts)

    def _rollout(self, key: str, rollout_id: str) -> Rollout | None:
        if not rollout_id:
            return None
        try:
            return self.service_for(key).get(rollout_id)[0]
        except (RolloutNotFoundError, UnknownTargetError):
            return None

    def _find(self, release_id: str, group: str | None = None) -> GroupRelease:
        """The release ``release_id`` of ``group`` (any group when None). The same content released to two
        groups has the same id in both: then the group must be named, never one of them picked."""
        found = [
            record
            for g in self.config.groups
            if group is None or g.name == group
            for record in [self.store.get_group_release(g.name, release_id)]
            if record is not None
        ]
        if not found:
            raise GroupReleaseNotFoundError(release_id)
        if len(found) > 1:
            raise AmbiguousGroupReleaseError(release_id, [r.group for r in found])
        return found[0]

    def service_for(self, key: str) -> RolloutService:
        """The service of the target ``key`` (from the injected wiring)."""
        if isinstance(self.services, Mapping):
            service = self.services.get(key)
            if service is None:
                raise UnknownTargetError(f"no service for target {key}")
            return service
        target = next((t for t in self.config.targets() if t.key == key), None)
        if target is None:
            raise UnknownTargetError(f"target {key} is not in the configuration ({self.config.source})")
        return self.services(target)

    # --- helpers ---------------------------------------------------------------------------------

    def _event(self, record: GroupRelease, kind: EventKind, message: str, **data: Any) -> None:
        self._append(
            RolloutEvent(
                rollout_id=record.id,
                target=group_partition(record.group),
                at=self.clock.now(),
                kind=kind,
                message=message,
                data={"group": record.group, **data},
            ),
            record,
        )

    def _append(self, event: RolloutEvent, record: GroupRelease | None = None) -> None:
        event = RolloutEvent(
            rollout_id=event.rollout_id,
            target=event.target,
            at=event.at,
            kind=event.kind,
            message=_clip(event.message),
            actor=event.actor,
            phase=event.phase,
            data=event.data,
        )
        try:
            self.store.append_event(event)
        except PortError as exc:  # the audit trail must not stop a halt
            log.error("could not record event %s for %s: %s", event.kind, event.rollout_id, exc)
        with log_context(rollout_id=event.rollout_id, target=event.target, phase=record.phase if record else None):
            log.info("[%s] %s: %s", event.rollout_id, event.kind, event.message)
            if record is not None and self.notifications is not None:
                self._announce(event, record, self.notifications)

    def _announce(self, event: RolloutEvent, record: GroupRelease, sink: NotificationSink) -> None:
        """As ``RolloutService._announce``: a failed enqueue is logged, never raised. A group release of one
        target (the default group of the ``VMSS_*`` scale set) says nothing its rollout does not: no notification."""
        if len(record.targets) <= 1:
            return
        note = notification_for(
            event, release=record.release.label, group=record.group, group_release=record.id, scope="groupRelease"
        )
        if note is None:
            return
        try:
            sink.publish(note)
        except Exception as exc:  # noqa: BLE001 - a notification must never stop a group release
            log.warning(
                "group release %s: notification %s not enqueued: %s: %s", record.id, note.kind, type(exc).__name__, exc
            )


def _not_newer_reason(release: Release, releases: Sequence[GroupRelease]) -> str | None:
    """Versions are per group: not newer than its last successful release, or than its active one."""
    succeeded = [r.release.version for r in releases if r.phase is GroupPhase.SUCCEEDED]
    if succeeded and release.version <= max(succeeded):
        return f"v{release.version} is not newer than the group's v{max(succeeded)}"
    active = [r.release.version for r in releases if r.phase.is_active]
    if active and release.version <= max(active):
        return f"v{release.version} is not newer than the group's active release v{max(active)}"
    return None


def _clip(text: str, limit: int = MAX_TEXT_CHARS) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]} ... [{len(text) - limit} more characters not stored]"


def _short(text: str, limit: int = 60) -> str:
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}... ({len(text)} characters)"


__all__ = [
    "GroupOutcome",
    "AmbiguousGroupReleaseError",
    "GroupReleaseNotFoundError",
    "GroupService",
    "GroupStore",
    "GroupTargetNotFoundError",
    "GroupView",
    "TargetServices",
    "UnknownTargetError",
]
