"""Use cases: start a release, advance rollouts, steer them. The imperative shell around ``admit`` and ``decide``.

A use case flows one way: LOAD the target's partition (its claim row and its rollouts) -> ADMIT
(``rollout.admission.admit``: no rollout holds the scale set) or DECIDE (``machine.decide``: the
rollout the claim names) -> COMMIT (one ``StateStore.commit``: one entity group transaction) -> ACT
(the ARM calls, fenced) -> RECORD the events. Nothing calls back into itself; the loops that take
more than one step say their bound where they are (``tick``, ``_advance``, ``_refused``).

Committing before acting is what makes two concurrent ticks safe (two hosts after a scale-out, or a
retried timer): both read the rollout with the same ETag and both decide, but only one conditional
commit succeeds; the loser gets ``ConcurrencyError`` and exits without touching the scale set. The
price is a crash between the commit and the ARM call: the saved status then claims an upgrade that
was never issued. The decider heals that on a later tick (``_reissue_stalled``: an instance that is
neither updated nor updating after ``upgrade_retry_seconds`` gets its upgrade again), and the model
write is level-triggered anyway (model differs -> write it).

The target's claim row (who holds the scale set, what is stable on it) lives in the same partition as
its rollouts, so the claim and a rollout change together (docs/design.md, "Who holds the scale set"):
a rollout starts (Queued -> Canary) in the transaction that names it in the claim and supersedes the
older queued releases; it ends (a terminal phase) in the transaction that clears the claim and records
the stable release. The one exception is a rollout ended while a reimage it sent may still be landing:
the claim is kept until the reimage is confirmed sent (or its host is past the bound), and handed over
then, again in one transaction with the rollout's row. A reimage is recorded in two phases (intent
saved, then confirmed sent): ``_confirm_reimage``.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from rollout import admission, cadence, machine, preflight, whatif
from rollout.admission import MAX_TEXT_CHARS, clip
from rollout.intake import Received, Vanished, parse_release_content, read_release_blob
from rollout.logcontext import log_context
from rollout.machine import (
    Action,
    CommandError,
    Decision,
    Notify,
    ReimageInstances,
    UpdateModel,
    UpgradeInstances,
    Verb,
)
from rollout.model import (
    EventKind,
    FleetView,
    Phase,
    Release,
    ReleaseKind,
    Rollout,
    RolloutEvent,
    TargetRecord,
)
from rollout.notifications import notification_for
from rollout.orchestration import decide_with_records, unsent_after
from rollout.policy import RolloutPolicy
from rollout.ports import (
    MAX_COMMIT_RECORDS,
    AccessDeniedError,
    AlreadyExistsError,
    Clock,
    Compute,
    ConcurrencyError,
    LookScheduler,
    NotFoundError,
    NotificationSink,
    Notifier,
    PortError,
    Prober,
    ProbeTarget,
    RecordTooLargeError,
    ReleaseBlob,
    ReleaseSource,
    ScriptChecker,
    SignalSource,
    StateStore,
    TransientError,
)
from rollout.preflight import BLOB_MISSING, Finding, Severity
from rollout.releases import (
    MAX_SCRIPT_BYTES,
    ExtensionDefaults,
    desired_model,
    max_release_bytes,
    parse_release_name,
    rollout_id_for,
    unread_release,
)
from rollout.whatif import TargetPlan

log = logging.getLogger("rollout")

_ARM_WRITES = (UpdateModel, UpgradeInstances, ReimageInstances)
_clip = clip  # the name tests and older callers use


class OutcomeStatus(enum.StrEnum):
    """What a use case did, in one word: ``Outcome.status``. The value is what logs and the HTTP API show."""

    ADVANCED = "Advanced"  # a rollout was started or moved on (decided, saved, acted)
    QUEUED = "Queued"  # the release waits its turn: another rollout holds the scale set, or it could not start yet
    DUPLICATE = "Duplicate"  # a release with this content was received before
    REJECTED = "Rejected"  # recorded and never started (not newer, pre-flight, unreadable, superseded)
    IGNORED = "Ignored"  # not a release blob, or gone or changed before it was read
    IDLE = "Idle"  # nothing to do: no queued release, or the active rollout waits (Paused, Failed)
    BUSY = "Busy"  # another rollout holds the scale set (or has not handed it over yet)
    LOST = "Lost"  # another host got there first; it acts, this one did nothing
    ERROR = "Error"  # a backend failed; nothing more was done, the next tick tries again
    DONE = "Done"  # an operator command was applied


@dataclass(frozen=True)
class Outcome:
    """What a use case did, for the trigger to log or return."""

    status: OutcomeStatus
    message: str
    rollout_id: str | None = None
    phase: Phase | None = None
    # A tick's outcome only: when the engine wants its next look, earlier than the timer (rollout.cadence),
    # and the stamp of the rollout that look is for (None: the timer is enough).
    next_look: datetime | None = None
    look_stamp: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status.value,
            "message": self.message,
            "rolloutId": self.rollout_id,
            "phase": self.phase.value if self.phase else None,
        }


class RolloutNotFoundError(LookupError):
    pass


class PlanInputError(ValueError):
    """A what-if asked about something that names no release (the HTTP API answers 400)."""


class UndoRefusedError(Exception):
    """An undo that cannot be done (nothing to undo, a version that never succeeded here, a rollout
    active): nothing was written. The HTTP API answers 409 with the message."""


def undo_choice(target: TargetRecord | None, rollouts: Sequence[Rollout], to_version: int | None) -> Release:
    """The release an undo goes back to, from the stored release records (``Rollout.release``): the
    newest version below the stable one that succeeded on this scale set, or ``to_version`` if it did
    (a newer one too: after an undo, ``--to`` the release undone brings it back).
    Raises ``UndoRefusedError`` saying why there is none."""
    held = _held(target, rollouts)
    if held is not None:
        raise UndoRefusedError(
            f"{held.id} ({held.release.label}) is {held.phase.value} on this scale set: an undo starts only when "
            "no rollout is active (wait for it to end, or abort it)"
        )
    if target is None or target.stable_release is None or target.stable_version is None:
        raise UndoRefusedError("nothing to undo: no release has succeeded on this scale set yet")
    stable = target.stable_version
    succeeded = sorted(
        (r for r in rollouts if r.phase is Phase.SUCCEEDED),
        key=lambda r: (r.release.version, r.updated_at),
        reverse=True,
    )
    if to_version is None:
        earlier = [r for r in succeeded if r.release.version < stable]
        if not earlier:
            raise UndoRefusedError(
                f"nothing to undo: no release older than the stable v{stable} has succeeded on this scale set"
            )
        return earlier[0].release
    if to_version == stable:
        raise UndoRefusedError(f"nothing to undo: v{to_version} is the stable release")
    matching = [r for r in succeeded if r.release.version == to_version]
    if matching:
        return matching[0].release
    seen = sorted({r.phase.value for r in rollouts if r.release.version == to_version})
    if seen:
        raise UndoRefusedError(
            f"v{to_version} never succeeded on this scale set (its rollouts ended {', '.join(seen)}): only a release "
            "that succeeded here can be restored"
        )
    known = sorted({r.release.version for r in succeeded if r.release.version != stable})
    listed = ", ".join(f"v{v}" for v in known[-10:]) or "none"
    raise UndoRefusedError(
        f"unknown version v{to_version}: no release of it is recorded on this scale set (other releases that "
        f"succeeded here: {listed})"
    )


class RolloutService:
    def __init__(
        self,
        *,
        target_key: str,
        compute: Compute,
        prober: Prober,
        store: StateStore,
        notifier: Notifier,
        clock: Clock,
        policy: RolloutPolicy,
        extension: ExtensionDefaults,
        release_container_url: str | None = None,
        script_checker: ScriptChecker | None = None,
        notifications: NotificationSink | None = None,
        releases: ReleaseSource | None = None,
        signals: SignalSource | None = None,
        looks: LookScheduler | None = None,
    ) -> None:
        self.target_key = target_key
        self.compute = compute
        self.prober = prober
        self.store = store
        self.notifier = notifier
        self.clock = clock
        self.policy = policy
        self.extension = extension
        self.release_container_url = release_container_url
        self.script_checker = script_checker
        # Phase changes for the channels (rollout.notifications), put on a queue; None: none configured.
        self.notifications = notifications
        # The release container, for pre-flight's checks of the scripts a rollback or a revert needs
        # (None: not checked) and for the what-if of a release named by its blob.
        self.releases = releases
        self.signals = signals  # per-instance signals for the canary judge; None: it counts the probes only
        # Delivers the engine's own earlier looks (rollout.cadence); None: only the outcome says when (benchmarks).
        self.looks = looks

    # --- start -------------------------------------------------------------------------------

    def start_release(self, release: Release) -> Outcome:
        """A release blob arrived. Record it, then start it, queue it or reject it (one admission)."""
        now = self.clock.now()
        rollout_id = rollout_id_for(release)
        target, rollouts = self.store.load(self.target_key)
        if any(r.id == rollout_id for r in rollouts):
            return Outcome(
                OutcomeStatus.DUPLICATE, f"{release.blob_name} with this content was already received", rollout_id
            )
        rollout = self._new_rollout(release, rollout_id, now)
        reason = admission.not_newer_reason(release, target, _held(target, rollouts))
        if reason is not None:
            return self._record_rejected(rollout, reason)
        try:
            rollout = self.store.insert_rollout(rollout)
        except AlreadyExistsError:
            return Outcome(
                OutcomeStatus.DUPLICATE, f"{release.blob_name} with this content was already received", rollout_id
            )
        self._record(
            rollout, EventKind.RECEIVED, f"{release.label} received ({release.blob_name}, sha256 {release.sha256[:12]})"
        )
        return self._start_received(rollout_id)

    def start_revert(self, release: Release, rollout_id: str, reason: str, *, actor: str = "controller") -> Outcome:
        """Return the scale set to ``release``, an older release it had: a group release halted and
        this target goes back (``rollout.waves``). A rollout like any other (queued behind an active
        one, pre-flight, canary, bake, batches) under its own ``rollout_id`` (the same id twice is a
        duplicate), marked ``revert``: the not-newer check, which refuses older versions, allows it."""
        rollout_id = rollout_id.lower()
        if self.store.get_rollout(self.target_key, rollout_id) is not None:
            return Outcome(OutcomeStatus.DUPLICATE, f"the revert {rollout_id} was already received", rollout_id)
        rollout = self._new_rollout(release, rollout_id, self.clock.now()).evolve(revert=True)
        try:
            rollout = self.store.insert_rollout(rollout)
        except AlreadyExistsError:
            return Outcome(OutcomeStatus.DUPLICATE, f"the revert {rollout_id} was already received", rollout_id)
        self._append(
            RolloutEvent(
                rollout.id,
                rollout.target,
                self.clock.now(),
                EventKind.RECEIVED,
                clip(f"revert to {release.label} ({release.blob_name}, sha256 {release.sha256[:12]}): {reason}"),
                actor=actor,
                phase=rollout.phase,
                data={"revert": True},
            )
        )
        return self._start_received(rollout_id)

    def undo(self, to_version: int | None = None, *, actor: str = "operator", reason: str = "") -> Outcome:
        """Replace the stable release with an earlier one that succeeded here: the newest that succeeded
        with a lower version than the stable one, or ``to_version``. A new rollout of that release
        (canary, bake, batches, its own audit trail) through ``start_revert``, the path a halted group
        release takes back, so the not-newer check lets it through and pre-flight checks that its script
        still exists unchanged. Raises ``UndoRefusedError`` (nothing to undo, a version that never
        succeeded here, a rollout active) before anything is written."""
        target, rollouts = self.store.load(self.target_key)
        previous = undo_choice(target, rollouts, to_version)
        assert target is not None and target.stable_release is not None  # undo_choice refused otherwise
        now = self.clock.now()
        digest = hashlib.sha256(
            f"undo|{self.target_key}|{target.stable_release.sha256}|{previous.sha256}|{now.isoformat()}".encode()
        ).hexdigest()[:10]
        rollout_id = f"undo-{previous.app.lower()[:57]}-v{previous.version}-{digest}"
        said = f" ({reason})" if reason else ""
        why = f"undo of {target.stable_release.label} by {actor}{said}"
        return self.start_revert(previous, rollout_id, why, actor=actor)

    def _start_received(self, rollout_id: str) -> Outcome:
        """A rollout was just recorded Queued: start it now if the scale set is free (and ask for the
        engine's next look at it: its canary is in flight)."""
        outcome, started = self._admit()
        outcome = self._with_look(outcome, started, changed=started is not None, share=1)
        current = self.store.get_rollout(self.target_key, rollout_id)
        if current is not None and current.phase is Phase.QUEUED:
            # Busy: another rollout holds the scale set. Error/Lost: it could not start just now;
            # either way the timer starts it as soon as it can.
            why = outcome.message if outcome.status in (OutcomeStatus.ERROR, OutcomeStatus.LOST) else current.reason
            return Outcome(OutcomeStatus.QUEUED, why, rollout_id, current.phase)
        if current is not None and current.id == outcome.rollout_id:
            return outcome
        if current is None:
            return Outcome(OutcomeStatus.ERROR, "lost", rollout_id)
        if current.phase is Phase.REJECTED:  # superseded by a newer release meanwhile
            return Outcome(OutcomeStatus.REJECTED, current.reason, rollout_id, current.phase)
        # Another host moved it on (started it) between our insert and our read: that host acts.
        return Outcome(OutcomeStatus.LOST, current.reason, rollout_id, current.phase)

    def receive_blob(self, blob_path: str, blob_url: str, content: bytes, container: str) -> Outcome:
        """A blob landed in the release container: parse it, then start, queue or reject it.

        ``blob_path`` is "<container>/<name>" (as ``receive_release_blob`` passes it); ``content`` was
        read already, after the size check.
        """
        name = blob_path[len(container) + 1 :] if blob_path.startswith(container + "/") else blob_path
        parsed = parse_release_name(name)
        if isinstance(parsed, str):
            log.info("ignored blob %r: %s", name, parsed)
            return Outcome(OutcomeStatus.IGNORED, parsed)
        return self._take(parse_release_content(parsed, blob_url, content, self.script_checker))

    def receive_release_blob(self, blob: ReleaseBlob) -> Outcome:
        """The blob trigger fired for ``blob`` (nothing of it read yet): check its size, then read it
        (``rollout.intake``), then start, queue or reject it."""
        parsed = parse_release_name(blob.name)
        if isinstance(parsed, str):
            log.info("ignored blob %r: %s", blob.name, parsed)
            return Outcome(OutcomeStatus.IGNORED, parsed)
        read = read_release_blob(blob, parsed, self.script_checker)
        if isinstance(read, Vanished):
            return Outcome(OutcomeStatus.IGNORED, read.reason)
        return self._take(read)

    def _take(self, received: Received) -> Outcome:
        if received.problem is not None:
            return self.reject_release(received.release, received.problem, rollout_id=received.rollout_id)
        return self.start_release(received.release)

    def reject_release(self, release: Release, reason: str, rollout_id: str | None = None) -> Outcome:
        """A release blob whose content is unusable: recorded, never started."""
        rollout_id = rollout_id or rollout_id_for(release)
        if self.store.get_rollout(self.target_key, rollout_id) is not None:
            return Outcome(
                OutcomeStatus.DUPLICATE, f"{release.blob_name} with this content was already received", rollout_id
            )
        return self._record_rejected(self._new_rollout(release, rollout_id, self.clock.now()), reason)

    def _new_rollout(self, release: Release, rollout_id: str, now: Any) -> Rollout:
        return Rollout(
            id=rollout_id,
            target=self.target_key,
            release=release,
            phase=Phase.QUEUED,
            desired=desired_model(release, self.extension),
            baseline=None,
            created_at=now,
            updated_at=now,
            phase_since=now,
            last_progress_at=now,
            reason="waiting for the active rollout to end",
        )

    def _record_rejected(self, rollout: Rollout, reason: str) -> Outcome:
        reason = _clip(reason)
        rejected = rollout.evolve(phase=Phase.REJECTED, reason=reason)
        try:
            rejected = self.store.insert_rollout(rejected)
        except AlreadyExistsError:
            return Outcome(OutcomeStatus.DUPLICATE, "already received", rollout.id)
        self._record(rejected, EventKind.REJECTED, reason)
        log.warning("release %s rejected: %s", rollout.release.blob_name, reason)
        return Outcome(OutcomeStatus.REJECTED, reason, rollout.id, Phase.REJECTED)

    # --- admission -----------------------------------------------------------------------------

    def _load(self) -> tuple[TargetRecord, list[Rollout]]:
        target, rollouts = self.store.load(self.target_key)
        return target or TargetRecord(key=self.target_key), rollouts

    def _admit(self) -> tuple[Outcome, Rollout | None]:
        """Load; if no rollout holds the scale set, admit (``admission.admit``) and commit the result
        as ONE transaction: the claim naming the started rollout, the start, the rejections. Then take
        the started rollout's first steps (``_advance``, two: the model write, then the canary).

        A claim naming a finished rollout is handed over first (its own transaction), unless a reimage
        it sent may still be landing. A claim naming a rollout that is not started (only rows written
        by an earlier version can hold one) does not hold the scale set: the start's transaction is
        conditional on the claim row and that rollout's row as read, so it cannot race a start of it.
        Started rollouts no claim names (orphans, only in hand-edited rows) are adopted first."""
        target, rollouts = self._load()
        held = next((r for r in rollouts if r.id == target.active_rollout_id), None)
        if held is not None and held.phase.is_active:
            return Outcome(OutcomeStatus.BUSY, f"{held.id} holds the scale set", held.id, held.phase), None
        if held is not None and held.phase.is_terminal:
            try:
                handed = self._hand_over(held, target)
            except ConcurrencyError:
                return Outcome(
                    OutcomeStatus.LOST, "another instance changed the scale set's claim first", held.id
                ), None
            if handed is None:
                message = f"{held.id} ended; a reimage it sent is not confirmed yet"
                return Outcome(OutcomeStatus.BUSY, message, held.id, held.phase), None
            target = handed
        orphans = [r for r in rollouts if r.phase.is_active]
        if orphans:
            return self._adopt(orphans, target), None

        def admit(
            fleet: FleetView | None,
            images: dict[str, str | None] | None = None,
            blobs: dict[str, admission.BlobRead] | None = None,
        ) -> admission.Admission:
            return admission.admit(
                target,
                rollouts,
                fleet,
                self.policy,
                self.clock.now(),
                extension=self.extension,
                release_container_url=self.release_container_url,
                images=images,
                blobs=blobs,
                state_problem=self._state_too_large,
            )

        decided, fleet = admit(None), None
        if decided.needs_fleet is not None:
            newest = decided.needs_fleet
            try:
                fleet = self._observe()
            except PortError as exc:
                message = f"cannot observe the scale set: {exc}"
                return Outcome(OutcomeStatus.ERROR, message, newest.id, newest.phase), None
            try:
                images = self._read_images(admission.images_to_check(newest.release, fleet))
            except PortError as exc:  # throttled, unreachable: it stays queued for the next tick
                message = f"cannot read the release's image: {exc}"
                return Outcome(OutcomeStatus.ERROR, message, newest.id, newest.phase), None
            try:
                blobs = self._read_blobs(newest.release, fleet, newest.revert)
            except TransientError as exc:  # Storage busy or unreachable: it stays queued for the next tick
                message = f"cannot read the release container: {exc}"
                return Outcome(OutcomeStatus.ERROR, message, newest.id, newest.phase), None
            decided = admit(fleet, images, blobs)
        if decided.claim is None and not decided.rejected:
            return Outcome(OutcomeStatus.IDLE, decided.reason), None
        candidate = decided.candidate
        try:
            _, written = self.store.commit(decided.claim, decided.writes)
        except ConcurrencyError:
            # Another host claimed the scale set, or changed one of these rows, since our read.
            rid, phase = (candidate.id, candidate.phase) if candidate else (None, None)
            return Outcome(OutcomeStatus.LOST, "another instance claimed the scale set first", rid, phase), None
        except RecordTooLargeError:
            # Each row fits (checked), but not all of them in one transaction (4 MiB): the rejections
            # go first, one row a commit, and the start waits for the next pass.
            self._reject_one_by_one(decided)
            return Outcome(OutcomeStatus.IDLE, "older releases superseded first; the newest starts next"), None
        by_id = {r.id: r for r in written}
        for event in decided.events:
            self._append(event, by_id.get(event.rollout_id))
        if decided.started is not None and fleet is not None:
            return self._advance(written[0], fleet, steps=2)
        if candidate is not None and any(r.id == candidate.id for r in decided.rejected):
            return Outcome(OutcomeStatus.REJECTED, decided.reason, candidate.id, Phase.REJECTED), None
        return Outcome(OutcomeStatus.IDLE, decided.reason), None

    def _reject_one_by_one(self, decided: admission.Admission) -> None:
        for row in decided.rejected:
            try:
                self.store.commit(None, [row])
            except ConcurrencyError:
                continue  # changed since: the next admission judges it again
            for event in decided.events:
                if event.rollout_id == row.id and event.kind is EventKind.REJECTED:
                    self._append(event, row)

    def _read_images(self, image_ids: Sequence[str]) -> dict[str, str | None]:
        """Read each image in turn (``admission.images_to_check``), up to the first that fails."""
        results: dict[str, str | None] = {}
        for image_id in image_ids:
            try:
                self.compute.read_image(image_id)
                results[image_id] = None
            except AccessDeniedError as exc:
                results[image_id] = f"403 {exc.code or 'AuthorizationFailed'}"
            except NotFoundError:
                results[image_id] = admission.IMAGE_MISSING
            if results[image_id] is not None:
                break
        return results

    def _read_blobs(self, release: Release, fleet: FleetView, revert: bool) -> dict[str, admission.BlobRead] | None:
        """Read each blob of ``preflight.blobs_to_check`` (None without a release container). A blob
        that is gone or that the app may not read (403) is a finding: a rollback could not use it.
        ``TransientError`` (throttled, 5xx, unreachable) propagates: the next tick reads again."""
        if self.releases is None:
            return None
        results: dict[str, admission.BlobRead] = {}
        for name in admission.blobs_to_check(release, fleet, self.release_container_url, revert):
            try:
                _, content = self.releases.read(name, MAX_SCRIPT_BYTES)
                results[name] = admission.BlobRead(sha256=hashlib.sha256(content).hexdigest())
            except NotFoundError:
                results[name] = admission.BlobRead(problem=BLOB_MISSING)
            except TransientError:
                raise
            except (PortError, ValueError) as exc:
                results[name] = admission.BlobRead(problem=clip(str(exc), 300))
        return results

    def _state_too_large(self, started: Rollout, claim: TargetRecord) -> str | None:
        """Would the started rollout, or the claim row it leaves on success, be too large to store?

        Checked before the scale set is claimed or anything is written to ARM: a rollout whose state
        cannot be saved could never be advanced or rolled back (save, then act)."""
        on_success = replace(
            claim,
            stable_version=started.release.version,
            stable_release=started.release,
            stable_model=admission.merge_model(claim.stable_model, started.desired),
        )
        try:
            self.store.check_fits(started)
            self.store.check_fits(on_success)
        except RecordTooLargeError as exc:
            return _too_large_reason(started, exc)
        return None

    def _released_claim(self, target: TargetRecord | None, rollout: Rollout) -> TargetRecord | None:
        return admission.released_claim(target, rollout, self.clock.now(), self._reimage_in_flight(rollout))

    def _claim_after(self, rollout: Rollout) -> TargetRecord | None:
        """The claim row to commit with ``rollout``'s next state: when that state ends it, the claim
        as read now, released (``_released_claim``); else None (the rollout's row alone)."""
        if not rollout.phase.is_terminal:
            return None
        return self._released_claim(self.store.get_target(self.target_key), rollout)

    def _hand_over(self, rollout: Rollout, target: TargetRecord) -> TargetRecord | None:
        """Clear the claim of a finished rollout whose transaction kept it: one transaction with the
        rollout's row, conditional on both as read. None when it must wait (``_released_claim``);
        ``ConcurrencyError`` when either row changed since."""
        claim = self._released_claim(target, rollout)
        if claim is None:
            return None
        saved, _ = self.store.commit(claim, [rollout.evolve(updated_at=self.clock.now())])
        return saved

    def _adopt(self, orphans: Sequence[Rollout], target: TargetRecord) -> Outcome:
        """Started rollouts no claim names while the scale set is free: rows written by an earlier
        version (before the claim and the rollout changed together) or edited by hand. The newest
        takes the scale set again, so ticks follow it; any other is stopped. One transaction,
        conditional on the claim row and every orphan's row as read, so a start or an adoption by
        another host in between makes it fail."""
        keep, rest = orphans[0], orphans[1 : MAX_COMMIT_RECORDS - 1]
        now = self.clock.now()
        stopped = [admission.orphan_stopped(r, keep.id, now) for r in rest]
        try:
            self.store.commit(
                replace(target, active_rollout_id=keep.id, updated_at=now), [keep.evolve(updated_at=now), *stopped]
            )
        except ConcurrencyError:
            return Outcome(OutcomeStatus.LOST, "another instance claimed the scale set first", keep.id, keep.phase)
        message = (
            f"{keep.phase.value} but not holding the scale set (a lost claim race, or a row edited by hand); "
            "the scale set was free, so it holds it again"
        )
        self._record(keep, EventKind.ADOPTED, message)
        for before, after in zip(rest, stopped, strict=True):
            self._record(after, EventKind.ORPHANED, f"{before.phase.value} -> Aborted: {after.reason}")
        return Outcome(OutcomeStatus.ADVANCED, message, keep.id, keep.phase)

    def _stop_orphans(self, rollouts: Sequence[Rollout], holder: Rollout) -> None:
        """Stop every started rollout other than ``holder`` (which the claim names), without touching
        the scale set. Such rows are never written by this protocol (a rollout starts only in the
        transaction naming it); each stop is conditional on the row as read: a rollout the claim comes
        to name meanwhile was written by that transaction, so its stop fails."""
        now = self.clock.now()
        orphans = [r for r in rollouts if r.phase.is_active and r.id != holder.id][:MAX_COMMIT_RECORDS]
        if not orphans:
            return
        stopped = [admission.orphan_stopped(r, holder.id, now) for r in orphans]
        try:
            _, saved = self.store.commit(None, stopped)
        except ConcurrencyError:
            return  # the next tick judges them again
        for before, after in zip(orphans, saved, strict=True):
            self._record(after, EventKind.ORPHANED, f"{before.phase.value} -> Aborted: {after.reason}")

    # --- tick ----------------------------------------------------------------------------------

    def tick(self, look: str | None = None, share: int = 1) -> Outcome:
        """Advance the rollout the claim names one step (the timer trigger), or admit the next release
        when none holds the scale set. Never waits on ARM operations.

        ``look``: this tick is the engine's own earlier look, asked for by the tick that left the rollout
        with this stamp (``rollout.cadence``); if the rollout has changed since, it is superseded and does
        nothing (no ARM read). ``share``: the targets the timer found with work (the look interval grows
        with it). The outcome says when the next earlier look is wanted (``next_look``).

        Bound: one decision for the held rollout; if that ends it (handing the scale set over in the
        same transaction), one admission pass, which may start the next release and take its first
        two steps. No more: a later release waits for the next tick."""
        target, rollouts = self._load()
        held = next((r for r in rollouts if r.id == target.active_rollout_id), None)
        if look is not None and (held is None or not held.phase.is_active or cadence.stamp(held) != look):
            # The outcome names the rollout the look was for and the phase it is in now (it may have ended).
            looked_at = next((r for r in rollouts if r.id == cadence.rollout_of(look)), None)
            return Outcome(
                OutcomeStatus.IDLE,
                "an earlier look was superseded: the rollout has changed since it was asked for",
                looked_at.id if looked_at else cadence.rollout_of(look),
                looked_at.phase if looked_at else None,
            )
        if held is None or not held.phase.is_active:
            with log_context(target=self.target_key):
                outcome, started = self._admit()
            return self._with_look(outcome, started, changed=started is not None, share=share)
        before = cadence.stamp(held)
        with log_context(target=self.target_key, rollout_id=held.id, phase=held.phase):
            outcome, after = self._tick_held(held, rollouts)
        changed = after is not None and cadence.stamp(after) != before
        return self._with_look(outcome, after, changed=changed or look is not None, share=share)

    def _with_look(self, outcome: Outcome, rollout: Rollout | None, *, changed: bool, share: int) -> Outcome:
        """``outcome`` with the engine's next earlier look at ``rollout``, when this tick may ask for one:
        it changed the rollout, or it was the current look (one chain of looks: ``rollout.cadence``)."""
        if not changed or rollout is None or outcome.status not in (OutcomeStatus.ADVANCED, OutcomeStatus.IDLE):
            return outcome
        now = self.clock.now()
        due = cadence.next_look(rollout, self.policy, now, share)
        if due is None:
            return outcome
        look = cadence.stamp(rollout)
        if self.looks is not None:
            try:
                self.looks.ask(self.target_key, look, share, math.ceil((due - now).total_seconds()))
            except PortError as exc:  # the timer still looks; only the earlier look is lost
                log.warning("the next look at %s could not be asked for: %s", rollout.id, exc)
        return replace(outcome, next_look=due, look_stamp=look)

    def _tick_held(self, held: Rollout, rollouts: Sequence[Rollout]) -> tuple[Outcome, Rollout | None]:
        """The tick of a held rollout: its outcome, and the rollout as the tick left it (the next one when
        this one ended and the next release started; None when nothing was decided)."""
        self._stop_orphans(rollouts, held)
        if held.phase in (Phase.PAUSED, Phase.FAILED):
            return Outcome(OutcomeStatus.IDLE, f"{held.phase.value}: {held.reason}", held.id, held.phase), None
        try:
            fleet = self._observe()
        except PortError as exc:
            log.warning("tick: cannot observe the scale set: %s", exc)
            outcome = Outcome(OutcomeStatus.ERROR, f"cannot observe the scale set: {exc}", held.id, held.phase)
            return outcome, None
        if held.phase is Phase.BAKING:
            fleet = self._with_signals(held, fleet)
        outcome, rollout = self._advance(held, fleet, steps=1)
        if rollout is not None and rollout.phase.is_terminal:
            return outcome, self._admit_after(rollout) or rollout
        return outcome, rollout

    def _admit_after(self, rollout: Rollout) -> Rollout | None:
        """One admission pass after ``rollout`` ended, so the next release starts in the same
        invocation; its outcome is logged (the caller reports on ``rollout``). The started rollout, if any."""
        try:
            outcome, started = self._admit()
        except PortError as exc:
            log.warning("after %s: admission failed for now: %s", rollout.id, exc)
            return None
        if outcome.status not in (OutcomeStatus.IDLE, OutcomeStatus.BUSY):
            log.info("after %s: %s %s", rollout.id, outcome.status, outcome.message)
        return started

    def _observe(self) -> FleetView:
        fleet = self.compute.observe()
        targets = [
            ProbeTarget(v.instance_id, v.private_ip)
            for v in fleet.instances
            if v.private_ip and v.provisioning_state.lower() not in ("updating", "creating", "deleting")
        ]
        results = self.prober.probe(targets) if targets else {}
        instances = tuple(replace(v, probe=results.get(v.instance_id)) for v in fleet.instances)
        return replace(fleet, instances=instances)

    def _with_signals(self, rollout: Rollout, fleet: FleetView) -> FleetView:
        """The observation with what the signal source says each instance did since the bake's previous
        tick (the canary judge's window). A source that cannot answer leaves the judge with the probes."""
        if self.signals is None:
            return fleet
        start = rollout.updated_at if rollout.judge is not None else rollout.phase_since
        end = self.clock.now()
        if start >= end:
            return fleet
        try:
            read = self.signals.read([v.instance_id for v in fleet.instances], start, end)
        except PortError as exc:
            log.warning("tick: signals unavailable, judging on the probes only: %s", exc)
            return fleet
        return replace(fleet, signals=dict(read))

    def _advance(self, rollout: Rollout, fleet: FleetView, steps: int) -> tuple[Outcome, Rollout | None]:
        """Decide, commit, act, at most ``steps`` times: after a step that wrote the model, observe
        again and take the next (the model write is the one action waited for, briefly, so a start
        issues the canary at once). A model write ARM refuses for good ends the loop in ``_refused``."""
        step = _Step(Outcome(OutcomeStatus.IDLE, rollout.reason, rollout.id, rollout.phase), rollout)
        for n in range(steps):
            step = self._commit(rollout, decide_with_records(rollout, fleet, self.policy, self.clock.now()))
            if step.refused is not None:
                return self._refused(step.rollout, *step.refused)
            if not step.ok or step.rollout.phase.is_terminal or n + 1 == steps or not step.wrote_model:
                break
            try:
                fleet = self._observe()
            except PortError:
                break
            rollout = step.rollout
        return step.outcome, step.rollout

    def _refused(self, rollout: Rollout, action: UpdateModel, reason: str) -> tuple[Outcome, Rollout | None]:
        """ARM refused a model write for good (403). Commit that (a refused release write starts the
        rollback, a refused rollback write fails the rollout for a human), then take the rollback's
        first step at once: usually nothing took the release, and the rollback ends there. Bound: two
        rounds (a refusal in Canary/Baking/Promoting -> RollingBack; one in RollingBack -> Failed)."""
        step = _Step(Outcome(OutcomeStatus.IDLE, rollout.reason, rollout.id, rollout.phase), rollout)
        for _ in range(2):
            step = self._commit(rollout, machine.write_refused(rollout, action, reason, self.clock.now()))
            if not step.ok or step.rollout.phase is not Phase.ROLLING_BACK:
                break
            try:
                fleet = self._observe()
            except PortError:
                break
            rollout = step.rollout
            step = self._commit(rollout, decide_with_records(rollout, fleet, self.policy, self.clock.now()))
            if step.refused is None:
                break
            rollout, (action, reason) = step.rollout, step.refused
        return step.outcome, step.rollout

    def _commit(self, before: Rollout, decision: Decision) -> _Step:
        """Commit ``decision`` (one transaction: the rollout's row, and the claim row when the decision
        ends the rollout), then act on it and record its events."""
        rollout = _clipped(decision.rollout)
        if rollout != before or decision.actions:
            try:
                claim = self._claim_after(rollout)
                _, (rollout,) = self.store.commit(claim, [rollout])
            except ConcurrencyError:
                log.info("tick for %s lost the race to another host; it acts, we exit", before.id)
                lost = Outcome(OutcomeStatus.LOST, "another tick changed the rollout first", before.id, before.phase)
                return _Step(lost, before, ok=False)
            except RecordTooLargeError as exc:
                # Save, then act: a decision that cannot be saved is not acted on. Stop for a human.
                return self._stop_unsavable(before, exc)
        for event in decision.events:
            self._append(event, rollout)
        failed, failed_action, error = self._execute(rollout, decision.actions)
        if isinstance(error, AccessDeniedError) and isinstance(failed_action, UpdateModel):
            # 403: the identity lacks a permission the write needs (e.g. read on the image). No
            # retry can fix that: stop now with the reason instead of retrying to the deadline.
            outcome = Outcome(OutcomeStatus.ERROR, str(error), rollout.id, rollout.phase)
            return _Step(outcome, rollout, refused=(failed_action, str(error)))
        retry_after = error.retry_after if isinstance(error, TransientError) else None
        actions = list(decision.actions)
        sent = actions[: actions.index(failed_action)] if failed_action is not None else actions
        decided = rollout
        if any(isinstance(a, ReimageInstances) for a in sent):
            rollout = self._confirm_reimage(rollout)
        if any(isinstance(a, _ARM_WRITES) for a in sent):
            self._record_late_writes(decided, [a for a in sent if isinstance(a, _ARM_WRITES)])
        unsent = unsent_after(
            rollout.unsent_ids,
            (a.instance_ids for a in sent if isinstance(a, UpgradeInstances)),
            (a.instance_ids for a in actions if isinstance(a, UpgradeInstances) and a not in sent),
        )
        if unsent != rollout.unsent_ids and not failed:
            # Upgrades that reached ARM leave unsent_ids (saved there with the decision where ARM does
            # not report the latest model: rollout.orchestration): the records may count them as moved.
            with contextlib.suppress(ConcurrencyError, RecordTooLargeError):  # kept: they are sent again
                _, (rollout,) = self.store.commit(None, [rollout.evolve(unsent_ids=unsent)])
        if failed:
            # The call did not reach ARM (throttled, refused): clear batch_started_at so a later
            # tick re-issues an upgrade without waiting for upgrade_retry_seconds, but not before
            # ARM's Retry-After (hold_until) when it gave one. A reimage leaves no trace the next
            # observation could show: one not sent stays pending, marked to be sent again.
            hold = self.clock.now() + timedelta(seconds=retry_after) if retry_after else None
            changes: dict[str, Any] = {}
            if any(isinstance(a, ReimageInstances) for a in actions if a not in sent):
                changes["reimage_requested_at"] = None
            retry = rollout.evolve(
                batch_started_at=None,
                unsent_ids=unsent,
                hold_until=hold,
                reason=_clip(f"{rollout.reason}; {failed}"),
                **changes,
            )
            with contextlib.suppress(ConcurrencyError, RecordTooLargeError):  # a newer tick decides afresh anyway
                _, (rollout,) = self.store.commit(None, [retry])
        status = OutcomeStatus.ERROR if failed else OutcomeStatus.ADVANCED
        wrote_model = any(isinstance(a, UpdateModel) for a in sent)
        return _Step(Outcome(status, rollout.reason, rollout.id, rollout.phase), rollout, wrote_model=wrote_model)

    def _confirm_reimage(self, saved: Rollout) -> Rollout:
        """The second phase of a reimage: ARM took the call ``saved`` intended, so record it done.

        Conditional like every write; on a conflict the row is read again and the confirmation is
        applied to it as long as it still holds the same intent (an abort in between changes the
        phase, not the fact that the call was sent). If another host has sent it again since (a
        newer ``reimage_requested_at``), that host confirms its own call: confirming it here could
        end the rollback before that second call has landed. A rollout that ended meanwhile kept the
        claim for this reimage: the confirmation hands it over, in the same transaction. Bound: five
        attempts."""
        intent = (saved.reimage_pending, saved.reimage_requested_at)
        current: Rollout | None = saved
        for _ in range(5):
            if current is None or (current.reimage_pending, current.reimage_requested_at) != intent:
                return current or saved
            done = tuple(machine.sort_ids(set(current.reimaged_ids) | set(current.reimage_pending)))
            confirmed = current.evolve(reimaged_ids=done, reimage_pending=(), reimage_requested_at=None)
            try:
                claim = self._claim_after(confirmed)
                _, (written,) = self.store.commit(claim, [confirmed])
                return written
            except ConcurrencyError:
                current = self.store.get_rollout(self.target_key, saved.id)
            except RecordTooLargeError:  # it only shrinks the row; the intent stays and is sent again
                return current
        return current or saved

    def _record_late_writes(self, saved: Rollout, sent: Sequence[Action]) -> None:
        """Record in the trail an ARM write that landed after another host changed the rollout's
        phase (an operator's abort accepted while this tick's call was in flight): save, then act
        orders ticks against ticks, not a tick against a verb. The decider heals it (a rollback
        moves back every instance it observes on the release); the trail must show it happened."""
        try:
            current = self.store.get_rollout(self.target_key, saved.id)
        except PortError:
            return
        if current is None or current.phase is saved.phase:
            return
        for action in sent:
            ids = list(getattr(action, "instance_ids", ()))
            what = {
                UpgradeInstances: f"manualupgrade of {', '.join(ids)}",
                ReimageInstances: f"reimage of {', '.join(ids)}",
            }.get(type(action), f"{getattr(action, 'purpose', '')} model write".strip())
            self._record(
                current,
                EventKind.LATE_WRITE,
                f"{what} issued by a tick that decided in {saved.phase.value}, before the rollout became "
                f"{current.phase.value} ({current.reason})",
                instances=ids,
                decidedIn=saved.phase.value,
            )

    def _stop_unsavable(self, before: Rollout, exc: RecordTooLargeError) -> _Step:
        """The next state of ``before`` is too large to store: nothing was acted on. A rollout that has
        not started is Rejected; one that has is Failed (keeping the scale set for a human)."""
        now = self.clock.now()
        reason = _clip(f"the rollout's next state could not be saved, so it was not acted on: {exc}")
        if before.phase is Phase.QUEUED:
            changes: dict[str, Any] = {"phase": Phase.REJECTED}
        else:
            if before.phase is Phase.PAUSED:
                failed_from = before.resume_to
            elif before.phase is Phase.FAILED:
                failed_from = before.failed_from
            else:
                failed_from = before.phase
            changes = {"phase": Phase.FAILED, "failed_from": failed_from, "resume_to": None}
        stopped = before.evolve(**changes, reason=reason, phase_since=now, updated_at=now)
        try:
            claim = self._claim_after(stopped)
            _, (saved,) = self.store.commit(claim, [stopped])
        except PortError as again:
            log.error("rollout %s: %s; recording that failed too: %s", before.id, reason, again)
            return _Step(Outcome(OutcomeStatus.ERROR, reason, before.id, before.phase), before, ok=False)
        self._record(saved, EventKind.STATE_TOO_LARGE, reason)
        return _Step(Outcome(OutcomeStatus.ERROR, reason, saved.id, saved.phase), saved)

    def _execute(self, rollout: Rollout, actions: Sequence[Action]) -> tuple[str, Action | None, PortError | None]:
        """Each action is one port call. Returns the first failure ('' if none), the first action not
        sent (it failed, or was fenced) and the failure's error. Actions after it are not attempted."""
        for action in actions:
            if isinstance(action, _ARM_WRITES) and not self._still_current(rollout, action):
                # Fenced: another host took this step over since we saved it (an abort, a re-issue
                # after our host stalled past the retry window). Acting on our older decision now would
                # repeat or contradict its writes. ARM has no fencing token, so this narrows the window
                # to the gap between this read and the call.
                log.info("rollout %s changed since this tick saved it: %s not sent", rollout.id, type(action).__name__)
                return "", action, None  # not a failure, but not sent: nothing to confirm or record
            try:
                if isinstance(action, UpdateModel):
                    self.compute.update_model(action.spec)
                elif isinstance(action, UpgradeInstances):
                    self.compute.upgrade_instances(list(action.instance_ids))
                elif isinstance(action, ReimageInstances):
                    self.compute.reimage_instances(list(action.instance_ids))
                elif isinstance(action, Notify):
                    self.notifier.notify(rollout, action.message)
            except PortError as exc:
                message = f"{type(action).__name__} failed: {exc}"
                log.warning("rollout %s: %s", rollout.id, message)
                self._record(rollout, EventKind.ACTION_FAILED, message)
                return message, action, exc
        return "", None, None

    def _still_current(self, saved: Rollout, action: Action) -> bool:
        """Is the step ``action`` belongs to still the one ``saved`` (the row this tick wrote) decided?
        Not when another host has since changed the phase, or stamped the same step again (a re-issued
        batch or move back: ``batch_started_at``; a reimage sent again: ``reimage_requested_at``).
        Other changes (a reason, a count) do not fence the call. A read error counts as current: the
        decision was saved, and the usual save-then-act reasoning covers it."""
        if saved.etag is None:
            return True
        try:
            current = self.store.get_rollout(self.target_key, saved.id)
        except PortError:
            return True
        if current is None:
            return True
        if current.phase is not saved.phase:
            return False
        if isinstance(action, UpgradeInstances):
            return current.batch_started_at == saved.batch_started_at
        if isinstance(action, ReimageInstances):
            return current.reimage_requested_at == saved.reimage_requested_at
        return True

    def _reimage_in_flight(self, rollout: Rollout) -> bool:
        """An unconfirmed reimage that its host may still be sending (an abort ended the rollout
        meanwhile): the next rollout must not get the scale set before it lands or is past the bound."""
        asked = rollout.reimage_requested_at
        if not rollout.reimage_pending or asked is None:
            return False
        return (self.clock.now() - asked).total_seconds() < self.policy.upgrade_retry_seconds

    # --- steering ------------------------------------------------------------------------------

    def command(
        self, rollout_id: str, verb: Verb, *, actor: str = "operator", reason: str = "", rollback: bool = False
    ) -> Outcome:
        """An operator verb (abort, pause, resume, promote, promote-full, retry). Raises
        ``RolloutNotFoundError`` or ``CommandError``; retries once if a tick wins the race."""
        for _ in range(3):
            rollout = self.store.get_rollout(self.target_key, rollout_id)
            if rollout is None:
                raise RolloutNotFoundError(rollout_id)
            decision = machine.apply_command(
                rollout, verb, self.clock.now(), actor=actor, reason=reason, rollback=rollback
            )
            step = self._commit(rollout, decision)
            saved = step.rollout
            if step.ok:
                if saved.phase.is_active:
                    # Act on the verb now rather than at the next timer tick (a paused or failed
                    # rollout's tick only reads it). The verb is saved already: a backend failing
                    # here is the next tick's to retry, not an error to report (a caller told "try
                    # again" would find the verb no longer applies).
                    try:
                        self.tick()
                        saved = self.store.get_rollout(self.target_key, rollout_id) or saved
                    except PortError as exc:
                        log.warning("%s of %s saved; acting on it now failed: %s", verb, rollout_id, exc)
                        return Outcome(
                            OutcomeStatus.DONE,
                            f"{verb}: {saved.reason} (saved; acting on it failed for now, the next tick does: {exc})",
                            rollout_id,
                            saved.phase,
                        )
                elif saved.phase.is_terminal:
                    self._admit_after(saved)  # the scale set was handed over with the verb: the next may start
                return Outcome(OutcomeStatus.DONE, f"{verb}: {saved.reason}", rollout_id, saved.phase)
        raise CommandError("the rollout kept changing under the command; try again")

    # --- what-if ---------------------------------------------------------------------------------

    def plan_release(self, text: str) -> tuple[Release, bool, list[Finding]]:
        """The release a what-if asks about: ``v7`` / ``7`` (a release recorded on this scale set, the
        newest of that version) or a blob name (``install_nginx.v7.sh``, ``<group>/...``), read from the
        release container when it is there, else taken from its name alone (not uploaded yet: a note
        says so); nothing: the next version of the stable release. Returns the release, whether
        starting it would be a revert (a version not newer than the stable one, recorded here: what
        ``undo`` starts) and notes. ``PlanInputError`` for text that names no release."""
        text = text.strip()
        notes: list[Finding] = []
        if not text:
            target = self.store.get_target(self.target_key)
            stable = target.stable_release if target is not None else None
            if stable is None:
                raise PlanInputError(
                    "name the release to plan (release=<app>.v<N>.sh or a version): no release is stable on "
                    f"{self.target_key} to plan the next version of"
                )
            text = f"{stable.app}.v{stable.version + 1}.{'sh' if stable.kind is ReleaseKind.SCRIPT else 'image.json'}"
            notes.append(Finding("release", Severity.WARN, f"no release named: planned as the next one, {text}"))
        version = text[1:] if text[:1] in ("v", "V") else text
        if version.isascii() and version.isdigit():
            if len(version) > 9:
                raise PlanInputError(f"version {shorten(text)} is out of range")
            target, rollouts = self.store.load(self.target_key)
            matching = sorted(
                (r for r in rollouts if r.release.version == int(version)), key=lambda r: r.created_at, reverse=True
            )
            succeeded = [r for r in matching if r.phase is Phase.SUCCEEDED]
            if not matching:
                raise PlanInputError(
                    f"no release v{int(version)} is recorded on this scale set; name a release file instead "
                    "(release=<app>.v<N>.sh)"
                )
            chosen = (succeeded or matching)[0]
            stable_version = target.stable_version if target is not None else None
            return chosen.release, stable_version is not None and chosen.release.version <= stable_version, notes
        parsed = parse_release_name(text)
        if isinstance(parsed, str):
            raise PlanInputError(f"release {parsed}")
        url = f"{(self.release_container_url or '').rstrip('/')}/{parsed.path}"
        content: bytes | None = None
        if self.releases is not None:
            try:
                url, content = self.releases.read(parsed.path, max_release_bytes(parsed.kind))
            except NotFoundError:
                content = None
            except ValueError as exc:  # too large, or a name the container refuses
                notes.append(Finding("release", Severity.REFUSE, clip(str(exc), 300)))
        if content is None:
            notes.append(
                Finding(
                    "release",
                    Severity.WARN,
                    f"{parsed.path} is not in the release container yet: planned from its name alone"
                    + (" (its image was not checked)" if parsed.kind is ReleaseKind.IMAGE else ""),
                )
            )
            return unread_release(parsed, url), False, notes
        received = parse_release_content(parsed, url, content, self.script_checker)
        if received.problem is not None:
            notes.append(Finding("release", Severity.REFUSE, f"{parsed.path}: {received.problem}"))
        return received.release, False, notes

    def plan(self, release: Release, *, revert: bool = False, notes: Sequence[Finding] = ()) -> TargetPlan:
        """What ``release`` would do on this scale set now (``rollout.whatif``). Reads only: the state
        rows, the scale set and its probes, the images and the release container's blobs pre-flight
        checks, the trails of the last rollouts for the upgrade times. Writes nothing."""
        target, rollouts = self.store.load(self.target_key)
        fleet = self._observe()
        images = self._read_images(admission.images_to_check(release, fleet))
        blobs = self._read_blobs(release, fleet, revert)
        found: list[Finding] = list(notes)
        held = _held(target, rollouts)
        if held is not None:
            found.append(
                Finding(
                    "queue",
                    Severity.WARN,
                    f"{held.id} ({held.release.label}) is {held.phase.value}: this release would wait for it to "
                    "end, and the fleet may differ by then",
                )
            )
        not_newer = None if revert else admission.not_newer_reason(release, target, held)
        if not_newer is not None:
            found.append(Finding("version", Severity.REFUSE, not_newer))
        found.extend(
            preflight.findings(
                release,
                fleet,
                self.policy,
                self.extension,
                images,
                blobs=blobs,
                release_container_url=self.release_container_url,
                revert=revert,
            )
        )
        if release.kind is ReleaseKind.IMAGE and release.image_id is None:
            found.append(Finding("image", Severity.WARN, "the image is not known yet (no manifest read): not checked"))
        past = [r for r in rollouts if r.batch_number > 0 or r.phase is Phase.SUCCEEDED]
        past.sort(key=lambda r: r.created_at, reverse=True)
        history = [self.store.list_events(self.target_key, r.id) for r in past[: whatif.HISTORY_ROLLOUTS]]
        return whatif.plan(self.target_key, release, fleet, self.policy, found, history)

    def fleet(self) -> FleetView:
        """The scale set now, probes included: what the next tick would decide on."""
        return self._observe()

    def get(self, rollout_id: str) -> tuple[Rollout, list[RolloutEvent]]:
        rollout = self.store.get_rollout(self.target_key, rollout_id)
        if rollout is None:
            raise RolloutNotFoundError(rollout_id)
        return rollout, self.store.list_events(self.target_key, rollout_id)

    def list(self) -> tuple[TargetRecord | None, list[Rollout]]:
        return self.store.load(self.target_key)

    # --- helpers -------------------------------------------------------------------------------

    def _record(self, rollout: Rollout, kind: EventKind, message: str, **data: Any) -> None:
        self._append(
            RolloutEvent(
                rollout_id=rollout.id,
                target=rollout.target,
                at=self.clock.now(),
                kind=kind,
                message=message,
                phase=rollout.phase,
                data=data,
            ),
            rollout,
        )

    def _append(self, event: RolloutEvent, rollout: Rollout | None = None) -> None:
        event = replace(event, message=_clip(event.message))
        try:
            try:
                self.store.append_event(event)
            except RecordTooLargeError as exc:
                # Keep the line in the trail; say what could not be kept instead of losing it all.
                dropped = _clip(f"the event's evidence was too large to store: {exc}")
                self.store.append_event(replace(event, data={"evidenceDropped": dropped}))
        except PortError as exc:  # the audit trail must not stop a rollback
            log.error("could not record event %s for %s: %s", event.kind, event.rollout_id, exc)
        with log_context(rollout_id=event.rollout_id, target=event.target, phase=event.phase):
            log.info("[%s] %s: %s", event.rollout_id, event.kind, event.message)
            if rollout is not None:
                self._announce(event, rollout)

    def _announce(self, event: RolloutEvent, rollout: Rollout) -> None:
        """Put the notification ``event`` stands for (a phase change) on the queue. Never raises and
        never waits long: a failed enqueue is logged and recorded (ActionFailed), and the rollout
        carries on; the notification is lost (docs/design.md, "Notifications")."""
        if self.notifications is None:
            return
        release = rollout.release
        note = notification_for(
            event,
            release=release.label,
            group=release.group,
            group_release=rollout.id if release.group and not rollout.revert else None,
        )
        if note is None:
            return
        try:
            self.notifications.publish(note)
        except Exception as exc:  # noqa: BLE001 - a notification must never fail a rollout
            message = _clip(f"notification {note.kind.value} not enqueued: {type(exc).__name__}: {exc}")
            log.warning("rollout %s: %s", rollout.id, message)
            with contextlib.suppress(Exception):
                self.store.append_event(
                    replace(event, kind=EventKind.ACTION_FAILED, message=message, at=self.clock.now(), data={})
                )


def _clipped(rollout: Rollout) -> Rollout:
    reason, rollback_reason = _clip(rollout.reason), _clip(rollout.rollback_reason)
    if reason == rollout.reason and rollback_reason == rollout.rollback_reason:
        return rollout
    return rollout.evolve(reason=reason, rollback_reason=rollback_reason)


def _too_large_reason(rollout: Rollout, exc: RecordTooLargeError) -> str:
    """Why a rollout cannot start because its state would not fit, and what the operator can do."""
    baseline = rollout.baseline.extension if rollout.baseline else None
    held = ""
    if baseline is not None:
        size = len(json.dumps(dict(baseline.settings), separators=(",", ":")))
        script = baseline.settings.get("script")
        inline = f", including an inline 'script' of {len(str(script))} characters" if script else ""
        held = (
            f" The rollout keeps the scale set's current extension {baseline.name!r} (public settings of "
            f"{size} characters{inline}) as its baseline, so that a rollback can restore it exactly."
        )
    return (
        f"the rollout's state is too large to store ({exc}); nothing was changed on the scale set.{held} "
        "Azure Tables stores at most 64 KiB per string property and 1 MiB per entity "
        "(learn.microsoft.com/rest/api/storageservices/understanding-the-table-service-data-model). "
        "Move an inline script into a file the extension downloads (settings.fileUris) or otherwise shrink "
        "the extension's settings, then upload the release again as a new version"
    )


@dataclass(frozen=True)
class _Step:
    """What one commit-and-act did: the outcome, the rollout as it now is, whether the commit landed,
    whether a model write was sent, and a model write ARM refused for good (with why)."""

    outcome: Outcome
    rollout: Rollout
    ok: bool = True
    wrote_model: bool = False
    refused: tuple[UpdateModel, str] | None = None


def shorten(text: str, limit: int = 40) -> str:
    """``repr`` of at most ``limit`` characters: an answer never echoes a long input whole."""
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}... ({len(text)} characters)"


def _held(target: TargetRecord | None, rollouts: Sequence[Rollout]) -> Rollout | None:
    """The rollout the claim names, if it is started."""
    if target is None or not target.active_rollout_id:
        return None
    held = next((r for r in rollouts if r.id == target.active_rollout_id), None)
    return held if held is not None and held.phase.is_active else None


__all__ = [
    "MAX_TEXT_CHARS",
    "CommandError",
    "Outcome",
    "PlanInputError",
    "RolloutNotFoundError",
    "RolloutService",
    "UndoRefusedError",
    "undo_choice",
]
