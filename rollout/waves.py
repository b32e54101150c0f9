"""A release crossing the waves of a group: ``decide_group(release, target_states, now)``. Pure.

A *group release* is one release going out to a group (``rollout.targets.Group``): wave 1 first,
every target of a wave through its own rollout (canary, bake, batches, as on one scale set), then,
once every target of the wave has succeeded and the group's wave bake has passed, the next wave.
The plan (which target is in which wave, the wave bake, ``onFailure``) is frozen into the record
when the release is received, so a configuration edited mid-release does not reshuffle it.

Like ``rollout.machine.decide`` this is level-triggered: every tick re-reads each target's rollouts
and recomputes what should happen from the stored group release and what it sees. It returns the
new record plus *actions as data* (start a target, start a revert, steer a target); the shell
(``rollout.groups.GroupService``) saves the record first (the ETag write is the lock) and then acts
through each target's own ``RolloutService``. Every action is safe to issue twice: a start of a
rollout id already received is a duplicate there, a verb that no longer applies is refused there.

A target that fails (its rollout ends RolledBack, Rejected, Aborted without the group having asked
for it, or stops Failed) halts the release: the other active targets of its wave are aborted with a
rollback, the targets of its wave that had already succeeded are returned to the release they had
before (a *revert*: a new rollout of their previous stable release), later waves never start, and
with ``onFailure: rollback-all`` the earlier waves are reverted the same way. The release ends
Halted (or RolledBack with rollback-all) once every target it touched has settled.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from rollout.machine import CommandError, Verb
from rollout.model import EventKind, Phase, Release, Rollout, RolloutEvent, TargetRecord
from rollout.targets import Group, OnFailure

# The events of a group release live in the events table under this partition (``group~<name>``):
# ``~`` never occurs in a target key (a resource group name and a scale set name hold letters, digits,
# '_', '-', '.', '(' and ')'), so a group's trail never shares a partition with a scale set's.
GROUP_PARTITION_PREFIX = "group~"


def group_partition(group: str) -> str:
    return f"{GROUP_PARTITION_PREFIX}{group}"


class GroupPhase(enum.StrEnum):
    """Where a group release is. Active: Queued waits its turn, the others are advanced by ticks."""

    QUEUED = "Queued"  # another release of the group is active; this one starts when it ends
    RUNNING = "Running"  # the current wave's targets are rolling out
    WAVE_BAKING = "WaveBaking"  # every target of the current wave succeeded; the wave bake runs
    PAUSED = "Paused"  # an operator paused the release: no wave starts (its targets were paused too)
    HALTING = "Halting"  # stopping: aborting the active targets, reverting the ones that must go back
    SUCCEEDED = "Succeeded"  # the last wave succeeded
    HALTED = "Halted"  # a target failed; later waves never started, earlier waves keep the release
    ROLLED_BACK = "RolledBack"  # a target failed with onFailure rollback-all; the targets went back
    ABORTED = "Aborted"  # an operator aborted the whole release
    REJECTED = "Rejected"  # not newer than the group's release, or superseded while queued

    @property
    def is_terminal(self) -> bool:
        return self in _GROUP_TERMINAL

    @property
    def is_active(self) -> bool:
        """Holding the group: ticks advance it and no other release of the group starts."""
        return self in (GroupPhase.RUNNING, GroupPhase.WAVE_BAKING, GroupPhase.PAUSED, GroupPhase.HALTING)


_GROUP_TERMINAL = frozenset(
    {GroupPhase.SUCCEEDED, GroupPhase.HALTED, GroupPhase.ROLLED_BACK, GroupPhase.ABORTED, GroupPhase.REJECTED}
)

# A start decided before a halt may still be on its way to a target (a host past the fence when the
# halt was saved): a halt does not end before this long after it began while a started target shows no
# rollout, so that a late start is seen, and aborted, by a later tick.
START_GRACE_SECONDS = 120

# A target's rollout in one of these phases failed the release there (see the module docstring).
FAILED_TARGET_PHASES = frozenset({Phase.ROLLED_BACK, Phase.ABORTED, Phase.REJECTED, Phase.FAILED})
# A rollout in one of these may still change the scale set: a halt aborts it.
_ABORTABLE = frozenset({Phase.QUEUED, Phase.CANARY, Phase.BAKING, Phase.PROMOTING, Phase.PAUSED})


@dataclass(frozen=True)
class GroupTarget:
    """One target of a group release: its wave, and what the release did there."""

    key: str  # the target key (``TargetRef.key``)
    wave: int  # 0-based wave index
    rollout_id: str = ""  # the release's rollout there, once started ("" = not started)
    previous: Release | None = None  # the target's stable release when the release started there
    revert_id: str = ""  # the revert started there ("" = none)
    excluded: bool = False  # an operator aborted this target through the group: no longer judged
    revert_skipped: bool = False  # it had to go back but no earlier release was known there


@dataclass(frozen=True)
class GroupRelease:
    """One release to one group: the persisted status of its progress across the waves."""

    id: str  # ``rollout_id_for(release)``: a duplicate upload finds the same row
    group: str
    release: Release
    phase: GroupPhase
    targets: tuple[GroupTarget, ...]
    wave_count: int
    created_at: datetime
    updated_at: datetime
    phase_since: datetime
    wave_bake_seconds: int = 0
    on_failure: OnFailure = OnFailure.HALT
    wave: int = 0  # the current wave (0-based)
    wave_completed_at: datetime | None = None  # when the current wave's last target succeeded
    skip_wave_bake: bool = False  # promote: the current wave bake is skipped
    resume_to: GroupPhase | None = None  # set only while Paused
    ending: GroupPhase | None = None  # set only while Halting: Halted, RolledBack or Aborted
    halt_rollback: bool = True  # while Halting: the active targets are aborted with a rollback
    failed_wave: int | None = None  # the wave of the first target that failed
    reason: str = ""
    etag: str | None = field(default=None, compare=False)

    def evolve(self, **changes: Any) -> GroupRelease:
        return dataclasses.replace(self, **changes)

    def entry(self, key: str) -> GroupTarget | None:
        return next((t for t in self.targets if t.key == key), None)

    def wave_targets(self, wave: int) -> tuple[GroupTarget, ...]:
        return tuple(t for t in self.targets if t.wave == wave)


def new_group_release(release_id: str, group: Group, release: Release, now: datetime) -> GroupRelease:
    """The record of ``release`` to ``group``, Queued, with the group's plan frozen into it."""
    targets = tuple(
        GroupTarget(key=target.key, wave=index) for index, wave in enumerate(group.waves) for target in wave.targets
    )
    return GroupRelease(
        id=release_id,
        group=group.name,
        release=release,
        phase=GroupPhase.QUEUED,
        targets=targets,
        wave_count=len(group.waves),
        created_at=now,
        updated_at=now,
        phase_since=now,
        wave_bake_seconds=group.wave_bake_seconds,
        on_failure=group.on_failure,
        reason="waiting for the group's active release to end",
    )


@dataclass(frozen=True)
class TargetState:
    """A target as one tick read it: its row and its rollouts (newest first), through its own service."""

    record: TargetRecord | None = None
    rollouts: tuple[Rollout, ...] = ()

    def rollout(self, rollout_id: str) -> Rollout | None:
        if not rollout_id:
            return None
        return next((r for r in self.rollouts if r.id == rollout_id), None)


# --- actions -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class StartTarget:
    """Start the release on a target: its service's ``start_release`` (a duplicate is refused there)."""

    target: str


@dataclass(frozen=True)
class StartRevert:
    """Return a target to ``release`` (its previous stable release): its service's ``start_revert``."""

    target: str
    release: Release
    rollout_id: str
    reason: str


@dataclass(frozen=True)
class SteerTarget:
    """An operator verb on a target's rollout, given by the group (a halt, or a verb on the whole release)."""

    target: str
    rollout_id: str
    verb: Verb
    rollback: bool = False
    actor: str = "controller"
    reason: str = ""


GroupAction = StartTarget | StartRevert | SteerTarget


@dataclass(frozen=True)
class GroupDecision:
    record: GroupRelease
    actions: tuple[GroupAction, ...] = ()
    events: tuple[RolloutEvent, ...] = ()


def revert_rollout_id(group_release_id: str, target: str, release: Release) -> str:
    """The id of the revert of ``target`` to ``release`` caused by ``group_release_id``: deterministic,
    so two hosts deciding the same revert start the same rollout (the second is a duplicate). It has
    the shape of every rollout id (``rollout.releases.ROLLOUT_ID_RE``), so the rollout API serves it."""
    digest = hashlib.sha256(f"{group_release_id}|{target}|{release.sha256}".encode()).hexdigest()[:10]
    return f"revert-{release.app.lower()[:56]}-v{release.version}-{digest}"


# --- the decider -------------------------------------------------------------------------------


@dataclass
class _Plan:
    record: GroupRelease
    now: datetime
    actions: list[GroupAction] = field(default_factory=list)
    events: list[RolloutEvent] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.original = self.record

    def update(self, **changes: Any) -> None:
        self.record = self.record.evolve(**changes)

    def set_target(self, key: str, **changes: Any) -> None:
        targets = tuple(dataclasses.replace(t, **changes) if t.key == key else t for t in self.record.targets)
        self.update(targets=targets)

    def event(self, kind: EventKind, message: str, actor: str = "controller", **data: Any) -> None:
        self.events.append(
            RolloutEvent(
                rollout_id=self.record.id,
                target=group_partition(self.record.group),
                at=self.now,
                kind=kind,
                message=message,
                actor=actor,
                data={"group": self.record.group, **data},
            )
        )

    def transition(self, phase: GroupPhase, reason: str, actor: str = "controller", **data: Any) -> None:
        before = self.record.phase
        self.update(phase=phase, phase_since=self.now, reason=reason)
        self.event(EventKind.PHASE_CHANGED, f"{before.value} -> {phase.value}: {reason}", actor, **data)

    def decision(self) -> GroupDecision:
        record = self.record
        if record != self.original or self.actions or self.events:
            record = record.evolve(updated_at=self.now)
        return GroupDecision(record, tuple(self.actions), tuple(self.events))


def decide_group(record: GroupRelease, states: Mapping[str, TargetState], now: datetime) -> GroupDecision:
    """The next step of a group release, from its record and its targets as read now.

    ``states`` maps target keys to what was read of them; a target missing from it is treated as
    read with nothing on it (no row, no rollouts)."""
    plan = _Plan(record, now)
    if record.phase.is_terminal or record.phase is GroupPhase.QUEUED:
        return plan.decision()
    if record.phase in (GroupPhase.RUNNING, GroupPhase.WAVE_BAKING, GroupPhase.PAUSED):
        failure = _first_failure(record, states)
        if failure is not None:
            entry, rollout = failure
            _halt_on_failure(plan, entry, rollout)
    phase = plan.record.phase
    if phase is GroupPhase.RUNNING:
        _decide_running(plan, states)
    elif phase is GroupPhase.WAVE_BAKING:
        _decide_wave_baking(plan, states)
    if plan.record.phase is GroupPhase.HALTING:
        _decide_halting(plan, states)
    return plan.decision()


def _state(states: Mapping[str, TargetState], key: str) -> TargetState:
    return states.get(key) or TargetState()


def _first_failure(record: GroupRelease, states: Mapping[str, TargetState]) -> tuple[GroupTarget, Rollout] | None:
    for entry in record.targets:
        if entry.excluded or not entry.rollout_id:
            continue
        rollout = _state(states, entry.key).rollout(entry.rollout_id)
        if rollout is not None and rollout.phase in FAILED_TARGET_PHASES:
            return entry, rollout
    return None


def _halt_on_failure(plan: _Plan, entry: GroupTarget, rollout: Rollout) -> None:
    record = plan.record
    ending = GroupPhase.ROLLED_BACK if record.on_failure is OnFailure.ROLLBACK_ALL else GroupPhase.HALTED
    earlier = (
        "the earlier waves go back to their previous release (onFailure rollback-all)"
        if ending is GroupPhase.ROLLED_BACK
        else "the earlier waves keep the release"
    )
    reason = (
        f"{entry.key} (wave {entry.wave + 1}) ended {rollout.phase.value}: {rollout.reason}. Halting: the other "
        f"targets of wave {entry.wave + 1} roll back, later waves never start, {earlier}"
    )
    plan.update(ending=ending, halt_rollback=True, failed_wave=entry.wave, resume_to=None, skip_wave_bake=False)
    plan.transition(GroupPhase.HALTING, reason, target=entry.key, rolloutId=rollout.id, targetPhase=rollout.phase.value)


def _start_wave(plan: _Plan, states: Mapping[str, TargetState]) -> None:
    """Start every target of the current wave not started yet (and re-send a start that left no row)."""
    record = plan.record
    for entry in record.wave_targets(record.wave):
        if entry.excluded:
            continue
        state = _state(states, entry.key)
        if entry.rollout_id:
            if state.rollout(entry.rollout_id) is None:
                plan.actions.append(StartTarget(entry.key))  # decided, not received there yet: send again
            continue
        stable = state.record.stable_release if state.record is not None else None
        previous = stable if stable is not None and stable.version < record.release.version else None
        plan.set_target(entry.key, rollout_id=record.id, previous=previous)
        plan.actions.append(StartTarget(entry.key))
        before = f"; it had {previous.label}" if previous is not None else ""
        plan.event(
            EventKind.TARGET_STARTED,
            f"{record.release.label} started on {entry.key} (wave {entry.wave + 1}){before}",
            target=entry.key,
            wave=entry.wave + 1,
            rolloutId=record.id,
        )


def _decide_running(plan: _Plan, states: Mapping[str, TargetState]) -> None:
    _start_wave(plan, states)
    record = plan.record
    entries = [e for e in record.wave_targets(record.wave) if not e.excluded]
    rollouts = [_state(states, e.key).rollout(e.rollout_id) for e in entries]
    waiting = [e.key for e, r in zip(entries, rollouts, strict=True) if r is None or r.phase is not Phase.SUCCEEDED]
    number = record.wave + 1
    if waiting:
        plan.update(reason=f"wave {number} of {record.wave_count}: waiting for {', '.join(waiting)}")
        return
    done = [r.phase_since for r in rollouts if r is not None]
    completed = min(max(done), plan.now) if done else plan.now
    skipped = [e.key for e in record.wave_targets(record.wave) if e.excluded]
    note = f" ({', '.join(skipped)} taken out by an operator)" if skipped else ""
    plan.event(EventKind.WAVE_SUCCEEDED, f"wave {number} of {record.wave_count} succeeded{note}", wave=number)
    if record.wave + 1 >= record.wave_count:
        plan.transition(GroupPhase.SUCCEEDED, f"every wave succeeded: {record.release.label} is out")
        return
    plan.update(wave_completed_at=completed)
    plan.transition(GroupPhase.WAVE_BAKING, f"wave {number} succeeded; baking {record.wave_bake_seconds} s")
    _decide_wave_baking(plan, states)


def _decide_wave_baking(plan: _Plan, states: Mapping[str, TargetState]) -> None:
    record = plan.record
    completed = record.wave_completed_at or plan.now
    until = completed + timedelta(seconds=record.wave_bake_seconds)
    if plan.now < until and not record.skip_wave_bake:
        plan.update(reason=f"wave {record.wave + 1} succeeded; the wave bake ends at {until.isoformat()}")
        return
    nxt = record.wave + 1
    plan.update(wave=nxt, wave_completed_at=None, skip_wave_bake=False)
    why = "the wave bake was skipped by promote" if record.skip_wave_bake else "the wave bake passed"
    plan.transition(GroupPhase.RUNNING, f"wave {nxt + 1} of {record.wave_count} starting: {why}")
    plan.event(EventKind.WAVE_STARTED, f"wave {nxt + 1} of {record.wave_count} started", wave=nxt + 1)
    _decide_running(plan, states)


def _must_revert(record: GroupRelease, entry: GroupTarget) -> bool:
    """Must this target go back to its previous release? Its wave failed (the wave rolls back), or it
    is in an earlier wave and the group says rollback-all. Not after an operator's abort."""
    if record.ending is GroupPhase.ABORTED or record.failed_wave is None or entry.excluded:
        return False
    if entry.wave == record.failed_wave:
        return True
    return record.ending is GroupPhase.ROLLED_BACK and entry.wave < record.failed_wave


def _decide_halting(plan: _Plan, states: Mapping[str, TargetState], actor: str = "") -> None:
    """Abort what is still active, revert what must go back, end once every target has settled.
    ``actor``: who the aborts are given by (the operator of an abort of the whole release; else the group)."""
    record = plan.record
    actor = actor or f"group {record.group}"
    unsettled: list[str] = []
    for entry in record.targets:
        state = _state(states, entry.key)
        rollout = state.rollout(entry.rollout_id)
        if rollout is None:
            # Never started there, or a start decided before the halt has not landed (yet).
            if entry.rollout_id and (plan.now - record.phase_since).total_seconds() < START_GRACE_SECONDS:
                unsettled.append(entry.key)
            continue
        if rollout.phase in _ABORTABLE and not entry.excluded:
            plan.actions.append(
                SteerTarget(
                    entry.key,
                    rollout.id,
                    Verb.ABORT,
                    rollback=record.halt_rollback,
                    actor=actor,
                    reason=f"group release {record.id} is halting: {_short(record.reason)}",
                )
            )
            unsettled.append(entry.key)
            continue
        if rollout.phase is Phase.ROLLING_BACK:
            unsettled.append(entry.key)
            continue
        if rollout.phase is not Phase.SUCCEEDED or not _must_revert(record, entry):
            continue
        _revert(plan, entry, state, rollout, unsettled)
    if unsettled:
        plan.update(reason=f"{_ending_word(record)}: waiting for {', '.join(unsettled)}")
        return
    ending = record.ending or GroupPhase.HALTED
    plan.update(ending=None)
    plan.transition(ending, _final_reason(plan.record, ending))


def _revert(plan: _Plan, entry: GroupTarget, state: TargetState, rollout: Rollout, unsettled: list[str]) -> None:
    record = plan.record
    if entry.revert_skipped:
        return
    if entry.previous is None:
        plan.set_target(entry.key, revert_skipped=True)
        plan.event(
            EventKind.REVERT_STARTED,
            f"{entry.key} keeps {record.release.label}: no earlier release of this app is recorded there to go back to",
            target=entry.key,
            wave=entry.wave + 1,
        )
        return
    revert_id = entry.revert_id or revert_rollout_id(record.id, entry.key, entry.previous)
    revert = state.rollout(revert_id)
    why = f"revert of {entry.key} to {entry.previous.label}: group release {record.id} ({record.release.label}) halted"
    if not entry.revert_id:
        plan.set_target(entry.key, revert_id=revert_id)
        plan.event(
            EventKind.REVERT_STARTED,
            f"{entry.key} (wave {entry.wave + 1}) goes back from {record.release.label} to {entry.previous.label} "
            f"(revert rollout {revert_id})",
            target=entry.key,
            wave=entry.wave + 1,
            rolloutId=revert_id,
            revert=True,
        )
        plan.actions.append(StartRevert(entry.key, entry.previous, revert_id, why))
        unsettled.append(entry.key)
    elif revert is None:
        plan.actions.append(StartRevert(entry.key, entry.previous, revert_id, why))  # decided, not received yet
        unsettled.append(entry.key)
    elif revert.phase.is_active and revert.phase is not Phase.FAILED:
        unsettled.append(entry.key)


def _ending_word(record: GroupRelease) -> str:
    return "aborting" if record.ending is GroupPhase.ABORTED else "halting"


def _final_reason(record: GroupRelease, ending: GroupPhase) -> str:
    reverted = [t.key for t in record.targets if t.revert_id]
    kept = [t.key for t in record.targets if t.revert_skipped]
    parts = [f"{record.release.label} stopped at wave {(record.failed_wave or record.wave) + 1}"]
    if reverted:
        parts.append(f"reverted: {', '.join(reverted)}")
    if kept:
        parts.append(f"no earlier release to go back to on {', '.join(kept)}")
    return "; ".join(parts)


def _short(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


# --- operator verbs ----------------------------------------------------------------------------

GROUP_VERBS = (Verb.ABORT, Verb.PAUSE, Verb.RESUME, Verb.PROMOTE, Verb.PROMOTE_FULL)
_PAUSABLE = (Phase.CANARY, Phase.BAKING, Phase.PROMOTING)


def apply_group_command(
    record: GroupRelease,
    states: Mapping[str, TargetState],
    verb: Verb,
    now: datetime,
    *,
    actor: str = "operator",
    reason: str = "",
    rollback: bool = False,
) -> GroupDecision:
    """A verb on the whole group release: applied to the wave progression and to every active target.
    Raises ``CommandError`` when it does not apply."""
    if verb not in GROUP_VERBS:
        names = ", ".join(GROUP_VERBS)
        raise CommandError(f"{verb} applies to one target of a group release, not to all; the whole takes {names}")
    plan = _Plan(record, now)
    said = f" ({reason})" if reason else ""
    phase = record.phase
    if phase.is_terminal:
        raise CommandError(f"group release {record.id} is already {phase.value}")
    if verb is Verb.ABORT:
        if phase is GroupPhase.HALTING:
            raise CommandError(f"group release {record.id} is already halting: {_short(record.reason)}")
        if phase is GroupPhase.QUEUED:
            plan.transition(GroupPhase.ABORTED, f"aborted by {actor}{said} before it started", actor)
            return plan.decision()
        plan.update(ending=GroupPhase.ABORTED, halt_rollback=rollback, resume_to=None, skip_wave_bake=False)
        how = "with rollback" if rollback else "without rollback"
        plan.transition(GroupPhase.HALTING, f"aborted by {actor}{said}: every active target {how}", actor)
        _decide_halting(plan, states, actor)
        return plan.decision()
    running = (GroupPhase.RUNNING, GroupPhase.WAVE_BAKING)
    if verb is Verb.PAUSE:
        if phase not in running:
            raise CommandError(f"only a Running or WaveBaking group release can be paused; this one is {phase.value}")
        plan.update(resume_to=phase)
        plan.transition(GroupPhase.PAUSED, f"paused by {actor}{said}", actor)
        _steer_all(plan, states, verb, _PAUSABLE, actor, reason)
        return plan.decision()
    if verb is Verb.RESUME:
        if phase is not GroupPhase.PAUSED or record.resume_to is None:
            raise CommandError(f"only a paused group release can be resumed; this one is {phase.value}")
        # The wave bake restarts: time spent paused proves nothing (as a rollout's bake).
        completed = now if record.resume_to is GroupPhase.WAVE_BAKING else None
        plan.update(resume_to=None, wave_completed_at=completed)
        plan.transition(record.resume_to, f"resumed by {actor}{said}", actor)
        _steer_all(plan, states, verb, (Phase.PAUSED,), actor, reason)
        return plan.decision()
    if phase not in running:
        raise CommandError(f"{verb} applies to a Running or WaveBaking group release; this one is {phase.value}")
    allowed = (
        (Phase.CANARY, Phase.BAKING, Phase.PROMOTING) if verb is Verb.PROMOTE_FULL else (Phase.CANARY, Phase.BAKING)
    )
    if phase is GroupPhase.WAVE_BAKING:
        plan.update(skip_wave_bake=True)
    plan.event(EventKind.PROMOTED, f"{verb} of the whole release by {actor}{said}", actor)
    _steer_all(plan, states, verb, allowed, actor, reason)
    return plan.decision()


def _steer_all(
    plan: _Plan, states: Mapping[str, TargetState], verb: Verb, phases: tuple[Phase, ...], actor: str, reason: str
) -> None:
    for entry in plan.record.targets:
        if entry.excluded:
            continue
        rollout = _state(states, entry.key).rollout(entry.rollout_id)
        if rollout is not None and rollout.phase in phases:
            plan.actions.append(SteerTarget(entry.key, rollout.id, verb, actor=actor, reason=reason))


def apply_target_command(
    record: GroupRelease,
    states: Mapping[str, TargetState],
    target: str,
    verb: Verb,
    now: datetime,
    *,
    actor: str = "operator",
    reason: str = "",
    rollback: bool = False,
) -> GroupDecision:
    """A verb on one target of the group release: only that target. ``abort`` takes it out of the
    release (the waves go on without it; not started yet: it never is). Raises ``CommandError``;
    ``LookupError`` when the target is not part of the release."""
    entry = record.entry(target)
    if entry is None:
        raise LookupError(target)
    if record.phase.is_terminal:
        raise CommandError(f"group release {record.id} is already {record.phase.value}")
    plan = _Plan(record, now)
    said = f" ({reason})" if reason else ""
    rollout = _state(states, target).rollout(entry.rollout_id)
    if verb is Verb.ABORT:
        if entry.excluded:
            raise CommandError(f"{target} was already taken out of group release {record.id}")
        if rollout is not None and rollout.phase.is_terminal:
            raise CommandError(f"the rollout on {target} is already {rollout.phase.value}")
        plan.set_target(target, excluded=True)
        if rollout is None:
            message = f"{target} taken out of the release by {actor}{said} before it started there"
        else:
            plan.actions.append(SteerTarget(target, rollout.id, verb, rollback=rollback, actor=actor, reason=reason))
            how = "with rollback" if rollback else "without rollback"
            message = f"{target} aborted by {actor}{said} ({how}); the other targets go on"
        plan.event(EventKind.TARGET_STEERED, message, actor, target=target, verb=str(verb))
        return plan.decision()
    if rollout is None:
        raise CommandError(f"the release has not started on {target}; only abort applies")
    plan.actions.append(SteerTarget(target, rollout.id, verb, rollback=rollback, actor=actor, reason=reason))
    plan.event(EventKind.TARGET_STEERED, f"{verb} of {target} by {actor}{said}", actor, target=target, verb=str(verb))
    return plan.decision()


__all__ = [
    "FAILED_TARGET_PHASES",
    "GROUP_VERBS",
    "GroupAction",
    "GroupDecision",
    "GroupPhase",
    "GroupRelease",
    "GroupTarget",
    "StartRevert",
    "StartTarget",
    "SteerTarget",
    "TargetState",
    "apply_group_command",
    "apply_target_command",
    "decide_group",
    "group_partition",
    "new_group_release",
    "revert_rollout_id",
]
