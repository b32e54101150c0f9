"""Use cases: start a release, advance rollouts, steer them. The imperative shell around ``decide``.

Order of operations, everywhere: observe -> decide -> SAVE -> act -> record events.

Saving before acting is what makes two concurrent ticks safe (two hosts after a scale-out, or a
retried timer): both read the rollout with the same ETag and both decide, but only one conditional
write succeeds; the loser gets ``ConcurrencyError`` and exits without touching the scale set. The
price is a crash between the save and the ARM call: the saved status then claims an upgrade that was
never issued. The decider heals that on a later tick (``_reissue_stalled``: an instance that is
neither updated nor updating after ``upgrade_retry_seconds`` gets its upgrade again), and the model
write is level-triggered anyway (model differs -> write it).

The ``targets`` row (one per scale set) holds the active rollout id and the stable release. The rollout
row and the target row live in different tables, with no transaction across them; what keeps one
rollout active per scale set whatever the interleaving is the claim protocol (docs/design.md, "Who
holds the scale set"): a rollout is saved as started only after a conditional write of the target
naming it, with a write conditional on the version of its row read as ``Queued``; the target stops
naming a rollout only once its row is terminal (the hand-over) or once a host has written its row
while still ``Queued``, conditional on the version it judged (superseding it, or revoking the claim
to adopt an orphan). Ticks stop any started rollout the target does not name (``_stop_orphans``).
A reimage is recorded in two phases (intent saved, then confirmed sent): ``_confirm_reimage``.
"""

from __future__ import annotations

import contextlib
import enum
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

from rollout import machine
from rollout.analysis import assess_instance, mixed_fleet_warning
from rollout.intake import Received, Vanished, parse_release_content, read_release_blob
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
    ExtensionSpec,
    FleetView,
    Health,
    ModelSpec,
    Phase,
    Release,
    ReleaseKind,
    Rollout,
    RolloutEvent,
    TargetRecord,
)
from rollout.policy import RolloutPolicy
from rollout.ports import (
    AccessDeniedError,
    AlreadyExistsError,
    Clock,
    Compute,
    ConcurrencyError,
    NotFoundError,
    Notifier,
    PortError,
    Prober,
    ProbeTarget,
    RecordTooLargeError,
    ReleaseBlob,
    ScriptChecker,
    StateStore,
    TransientError,
)
from rollout.releases import (
    CUSTOM_SCRIPT_PUBLISHER,
    CUSTOM_SCRIPT_TYPE,
    ExtensionDefaults,
    desired_model,
    image_missing_reason,
    image_unreadable_reason,
    parse_release_name,
    rollout_id_for,
)

log = logging.getLogger("rollout")

_ARM_WRITES = (UpdateModel, UpgradeInstances, ReimageInstances)


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

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status.value,
            "message": self.message,
            "rolloutId": self.rollout_id,
            "phase": self.phase.value if self.phase else None,
        }


class RolloutNotFoundError(LookupError):
    pass


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

    # --- start -------------------------------------------------------------------------------

    def start_release(self, release: Release) -> Outcome:
        """A release blob arrived. Record it, then start it, queue it or reject it."""
        now = self.clock.now()
        rollout_id = rollout_id_for(release)
        if self.store.get_rollout(self.target_key, rollout_id) is not None:
            return Outcome(
                OutcomeStatus.DUPLICATE, f"{release.blob_name} with this content was already received", rollout_id
            )
        target = self.store.get_target(self.target_key) or TargetRecord(key=self.target_key)
        rollout = self._new_rollout(release, rollout_id, now)

        reason = self._not_newer_reason(release, target)
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

    def start_revert(self, release: Release, rollout_id: str, reason: str) -> Outcome:
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
        self._record(
            rollout,
            EventKind.RECEIVED,
            _clip(f"revert to {release.label} ({release.blob_name}, sha256 {release.sha256[:12]}): {reason}"),
            revert=True,
        )
        return self._start_received(rollout_id)

    def _start_received(self, rollout_id: str) -> Outcome:
        """A rollout was just recorded Queued: start it now if the scale set is free."""
        outcome = self._activate_next()
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

    def _not_newer_reason(self, release: Release, target: TargetRecord) -> str | None:
        if target.stable_version is not None and release.version <= target.stable_version:
            return f"v{release.version} is not newer than the stable v{target.stable_version}"
        if target.active_rollout_id:
            active = self.store.get_rollout(self.target_key, target.active_rollout_id)
            if active is not None and active.phase.is_active and release.version <= active.release.version:
                return f"v{release.version} is not newer than the active rollout's v{active.release.version}"
        return None

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

    def _activate_next(self) -> Outcome:
        """If nothing holds the scale set, start the newest queued release (older ones are superseded).

        The claim protocol (docs/design.md, "Who holds the scale set"): the target row is read first,
        the rollouts after it, so every row judged here is at least as new as the target read. The
        scale set is free when the target names nothing, a finished rollout (handed over first) or a
        rollout still ``Queued``. A ``Queued`` one may be mid-start on another host (claimed, not yet
        saved as Canary), so it is never passed over silently: it is either started here or
        superseded, each with a write conditional on the very version of its row judged ``Queued``;
        of that write and the other host's start exactly one succeeds. The claim itself is
        conditional on the target's ETag, and a rollout is saved as started only after its claim.
        """
        target = self.store.get_target(self.target_key) or TargetRecord(key=self.target_key)
        rollouts = self.store.list_rollouts(self.target_key)
        held = next((r for r in rollouts if r.id == target.active_rollout_id), None)
        if held is not None and held.phase.is_active:
            return Outcome(OutcomeStatus.BUSY, f"{held.id} holds the scale set", held.id, held.phase)
        if held is not None and held.phase.is_terminal:
            target = self._finish(held, target)
            if target.active_rollout_id == held.id:
                return Outcome(
                    OutcomeStatus.BUSY, f"{held.id} ended; a reimage it sent is not confirmed yet", held.id, held.phase
                )
            if target.active_rollout_id is not None:
                # Handed over and claimed again by another host since our read: it goes on.
                return Outcome(
                    OutcomeStatus.LOST, "another instance claimed the scale set first", target.active_rollout_id
                )
            held = None
        orphans = [r for r in rollouts if r.phase.is_active]
        if orphans:
            if held is not None and not self._revoke_claim(held):
                return Outcome(
                    OutcomeStatus.LOST, f"{held.id}, claimed by another instance, changed while starting", held.id
                )
            return self._adopt(orphans[0], target)
        queued = [r for r in rollouts if r.phase is Phase.QUEUED]
        if not queued:
            return Outcome(OutcomeStatus.IDLE, "no queued release")
        queued.sort(key=lambda r: (r.release.version, r.created_at))
        newest = queued[-1]
        for older in queued[:-1]:
            superseded = self._reject_existing(older, f"superseded by v{newest.release.version}")
            if not superseded and held is not None and older.id == held.id:
                # The scale set was claimed for it and its row changed since we read it Queued:
                # another host is starting it (or just superseded it). Re-judge on the next tick.
                return Outcome(
                    OutcomeStatus.LOST, f"{held.id}, claimed by another instance, changed while starting", held.id
                )
        reason = None if newest.revert else self._not_newer_reason(newest.release, target)
        if reason is not None:
            self._reject_existing(newest, reason)
            return Outcome(OutcomeStatus.REJECTED, reason, newest.id, Phase.REJECTED)

        try:
            fleet = self._observe()
        except PortError as exc:
            return Outcome(OutcomeStatus.ERROR, f"cannot observe the scale set: {exc}", newest.id, newest.phase)
        problem = self._preflight(newest.release, fleet)
        if problem is None:
            try:
                problem = self._preflight_image(newest.release, fleet)
            except PortError as exc:  # throttled, unreachable: it stays queued for the next tick
                return Outcome(OutcomeStatus.ERROR, f"cannot read the release's image: {exc}", newest.id, newest.phase)
        if problem is not None:
            self._reject_existing(newest, problem)
            return Outcome(OutcomeStatus.REJECTED, problem, newest.id, Phase.REJECTED)
        now = self.clock.now()
        baseline, warning = self._baseline(newest, fleet, target)
        started = newest.evolve(
            phase=Phase.CANARY,
            baseline=baseline,
            known_ids=tuple(v.instance_id for v in fleet.instances),
            # The release's model starts from the extension as observed: see desired_model.
            desired=desired_model(newest.release, self.extension, fleet.model.extension),
            phase_since=now,
            last_progress_at=now,
            updated_at=now,
            reason="starting the canary",
        )
        problem = self._state_too_large(started, target)
        if problem is not None:
            self._reject_existing(newest, problem)
            return Outcome(OutcomeStatus.REJECTED, problem, newest.id, Phase.REJECTED)
        try:
            self.store.save_target(replace(target, active_rollout_id=newest.id, updated_at=self.clock.now()))
        except ConcurrencyError:
            # Another host claimed the scale set between our read and our write; it will run it.
            return Outcome(OutcomeStatus.LOST, "another instance claimed the scale set first", newest.id, newest.phase)
        try:
            started = self.store.update_rollout(started)
        except ConcurrencyError:
            return Outcome(OutcomeStatus.LOST, "the rollout changed while starting", newest.id)
        self._record(started, EventKind.PHASE_CHANGED, "Queued -> Canary: pre-flight passed; baseline recorded")
        for text in (warning, mixed_fleet_warning(fleet.instances)):
            if text:
                self._record(started, EventKind.BASELINE_WARNING, text)
        return self._advance(started, fleet, steps=2)

    def _preflight(self, release: Release, fleet: FleetView) -> str | None:
        if fleet.orchestration_mode.lower() != "uniform":
            return f"the scale set uses {fleet.orchestration_mode} orchestration; canary upgrades need Uniform"
        if fleet.upgrade_mode.lower() != "manual":
            return (
                f"the scale set's upgrade policy is {fleet.upgrade_mode}: the platform would push the new model "
                "to every instance at once and run over the canary; set upgradePolicy.mode to Manual"
            )
        healthy = [v for v in fleet.instances if assess_instance(v) is Health.HEALTHY]
        if len(healthy) < self.policy.min_healthy_instances:
            return (
                f"{len(healthy)} of {len(fleet.instances)} instances are healthy; "
                f"at least {self.policy.min_healthy_instances} needed to start a canary"
            )
        if release.kind is ReleaseKind.SCRIPT and fleet.model.extension is None:
            return (
                f"the scale set has no extension named {self.extension.extension_name!r}: "
                "a script release needs one to roll back to"
            )
        if release.kind is ReleaseKind.IMAGE and not fleet.model.image_id:
            return "the scale set does not use a managed image id: an image release would have no image to roll back to"
        if release.kind is ReleaseKind.SCRIPT:
            return self._extension_problem(fleet.model.extension)
        return None

    def _extension_problem(self, current: ExtensionSpec | None) -> str | None:
        """Can a script release take over this extension and give it back intact on rollback?"""
        if current is None:
            return None
        # Releases are written for the Custom Script Extension v2 for Linux (publisher
        # Microsoft.Azure.Extensions, type CustomScript: "Use the Azure Custom Script Extension
        # Version 2 with Linux virtual machines", learn.microsoft.com/azure/virtual-machines/
        # extensions/custom-script-linux). Another extension of that name would get settings it
        # does not understand.
        if (current.publisher.lower(), current.type.lower()) != (
            CUSTOM_SCRIPT_PUBLISHER.lower(),
            CUSTOM_SCRIPT_TYPE.lower(),
        ):
            return (
                f"the scale set's extension {current.name!r} is {current.publisher or '?'}/{current.type or '?'}, "
                f"not the Custom Script Extension v2 for Linux ({CUSTOM_SCRIPT_PUBLISHER}/{CUSTOM_SCRIPT_TYPE}) "
                "that script releases are written for; nothing was changed. Point EXTENSION_NAME at the scale "
                "set's CustomScript extension, or add one (install the current script with it) before releasing"
            )
        if current.protected_settings_from_key_vault is not None:
            return (
                f"the scale set's extension {current.name!r} reads its protected settings from Key Vault "
                "(protectedSettingsFromKeyVault); nothing was changed. A release writes its own "
                "protectedSettings (how the VMs download the script), and an extension holds "
                "either protectedSettings or protectedSettingsFromKeyVault, so the release would drop the "
                "Key Vault reference; ARM never returns protected settings, so what the secret holds could "
                "not be checked or restored by a rollback. Move what the secret holds into the release script "
                "(the VMs' managed identity can read Key Vault at run time) and remove "
                "protectedSettingsFromKeyVault from the extension, or ship the change as an image release"
            )
        return None

    def _state_too_large(self, started: Rollout, target: TargetRecord) -> str | None:
        """Would the started rollout, or the target row it leaves on success, be too large to store?

        Checked before the scale set is claimed or anything is written to ARM: a rollout whose state
        cannot be saved could never be advanced or rolled back (save, then act)."""
        on_success = replace(
            target,
            active_rollout_id=started.id,
            stable_version=started.release.version,
            stable_release=started.release,
            stable_model=_merge_model(target.stable_model, started.desired),
        )
        try:
            self.store.check_fits(started)
            self.store.check_fits(on_success)
        except RecordTooLargeError as exc:
            return _too_large_reason(started, exc)
        return None

    def _preflight_image(self, release: Release, fleet: FleetView) -> str | None:
        """An image release: read the image first. ARM refuses a model write naming an image the
        identity cannot read (403 LinkedAuthorizationFailed), so without read access every write of
        the release would fail; say so now, before anything is written. The scale set's current
        image is read too: a rollback writes it back and meets the same check. Other port errors raise."""
        if release.kind is not ReleaseKind.IMAGE or not release.image_id:
            return None
        current = " (the scale set's current image, which a rollback writes back)"
        images = [(release.image_id, "")]
        if fleet.model.image_id and fleet.model.image_id.lower() != release.image_id.lower():
            images.append((fleet.model.image_id, current))
        for image_id, role in images:
            try:
                self.compute.read_image(image_id)
            except AccessDeniedError as exc:
                return image_unreadable_reason(image_id + role, f"403 {exc.code or 'AuthorizationFailed'}")
            except NotFoundError:
                return image_missing_reason(image_id + role)
        return None

    def _baseline(self, rollout: Rollout, fleet: FleetView, target: TargetRecord) -> tuple[ModelSpec, str]:
        """The exact current model, with the protected settings Azure will not give back.

        Protected settings are write-only in ARM. If the model is the stable release we wrote, we
        know them from the targets row. If its scripts come from our release container, they were
        written the way we write them (managed identity). Otherwise they are unknown: rollback then
        restores the public settings only, and says so.
        """
        if rollout.release.kind is ReleaseKind.IMAGE:
            return ModelSpec(image_id=fleet.model.image_id), ""
        current = fleet.model.extension
        assert current is not None
        stable = target.stable_model.extension if target.stable_model else None
        if stable is not None and stable.same_public_model(current) and stable.protected_settings is not None:
            return ModelSpec(extension=replace(current, protected_settings=stable.protected_settings)), ""
        uris = [str(u) for u in current.settings.get("fileUris", []) or []]
        ours = self.release_container_url
        if ours and uris and all(u.startswith(ours.rstrip("/") + "/") for u in uris):
            protected = desired_model(rollout.release, self.extension).extension
            assert protected is not None
            return ModelSpec(extension=replace(current, protected_settings=protected.protected_settings)), ""
        return ModelSpec(extension=replace(current, protected_settings=None)), (
            "the current extension was not written by this tool and its protected settings cannot be read "
            "back; a rollback restores its public settings only"
        )

    def _reject_existing(self, rollout: Rollout, reason: str) -> bool:
        """Reject ``rollout`` if its row is still the version read; False when it changed since."""
        reason = _clip(reason)
        try:
            saved = self.store.update_rollout(
                rollout.evolve(phase=Phase.REJECTED, reason=reason, updated_at=self.clock.now())
            )
        except ConcurrencyError:
            return False
        self._record(saved, EventKind.REJECTED, reason)
        return True

    def _revoke_claim(self, queued: Rollout) -> bool:
        """Take the scale set's claim away from a rollout still ``Queued`` without superseding it: a
        write on the version of its row read as ``Queued`` (it stays queued), so a start of it already
        under way on another host, conditional on that version, fails. False if it changed since."""
        try:
            self.store.update_rollout(queued.evolve(updated_at=self.clock.now()))
        except ConcurrencyError:
            return False
        return True

    def _adopt(self, orphan: Rollout, target: TargetRecord) -> Outcome:
        """A started rollout the target does not name, while the scale set is free: a leftover of
        the claim race this protocol closes (rows written by an earlier version). Claim the scale set
        for it (conditional on the target read before the listing that showed it, so a rollout that
        was started properly in between makes this claim fail), so that ticks follow it again."""
        try:
            self.store.save_target(replace(target, active_rollout_id=orphan.id, updated_at=self.clock.now()))
        except ConcurrencyError:
            return Outcome(OutcomeStatus.LOST, "another instance claimed the scale set first", orphan.id, orphan.phase)
        message = (
            f"{orphan.phase.value} but not holding the scale set (a lost claim race); "
            "the scale set was free, so it holds it again"
        )
        self._record(orphan, EventKind.ADOPTED, message)
        return Outcome(OutcomeStatus.ADVANCED, message, orphan.id, orphan.phase)

    def _stop_orphans(self, listed: Sequence[Rollout], target: TargetRecord) -> None:
        """Stop every started rollout the target does not name, without touching the scale set.

        ``listed`` was read BEFORE ``target``. A rollout started properly names itself in the target
        before it is saved as started, and the target moves on only once it is finished; so one
        listed as started that the later target read does not name either never held the scale set,
        or has finished since, and then its row changed and the conditional write below fails."""
        for orphan in listed:
            if not orphan.phase.is_active or orphan.id == target.active_rollout_id:
                continue
            reason = _clip(
                f"stopped: it was {orphan.phase.value} without holding the scale set ({target.active_rollout_id} "
                "holds it; a lost claim race). Nothing was written to the scale set for this; the rollout that "
                "holds it decides every instance"
            )
            now = self.clock.now()
            try:
                saved = self.store.update_rollout(
                    orphan.evolve(phase=Phase.ABORTED, reason=reason, phase_since=now, updated_at=now)
                )
            except ConcurrencyError:
                continue
            self._record(saved, EventKind.ORPHANED, f"{orphan.phase.value} -> Aborted: {reason}")

    # --- tick ----------------------------------------------------------------------------------

    def tick(self) -> Outcome:
        """Advance the active rollout one step (the timer trigger). Never waits on ARM operations."""
        listed = self.store.list_rollouts(self.target_key)  # before the target: see _stop_orphans
        target = self.store.get_target(self.target_key)
        if target is None or not target.active_rollout_id:
            return self._activate_next()
        rollout = self.store.get_rollout(self.target_key, target.active_rollout_id)
        if rollout is None or not rollout.phase.is_active:
            return self._activate_next()
        self._stop_orphans(listed, target)
        if rollout.phase in (Phase.PAUSED, Phase.FAILED):
            return Outcome(OutcomeStatus.IDLE, f"{rollout.phase.value}: {rollout.reason}", rollout.id, rollout.phase)
        try:
            fleet = self._observe()
        except PortError as exc:
            log.warning("tick: cannot observe the scale set: %s", exc)
            return Outcome(OutcomeStatus.ERROR, f"cannot observe the scale set: {exc}", rollout.id, rollout.phase)
        return self._advance(rollout, fleet, steps=1)

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

    def _advance(self, rollout: Rollout, fleet: FleetView, steps: int) -> Outcome:
        """Decide, save, act; when the decision wrote the model, observe again and take one more step
        (the model write is the one action we wait for, briefly, so a start issues the canary at once)."""
        outcome = Outcome(OutcomeStatus.IDLE, rollout.reason, rollout.id, rollout.phase)
        for step in range(steps):
            decision = machine.decide(rollout, fleet, self.policy, self.clock.now())
            outcome, rollout, ok = self._commit(rollout, decision)
            if not ok or rollout.phase.is_terminal:
                break
            if step + 1 < steps and any(isinstance(a, UpdateModel) for a in decision.actions):
                try:
                    fleet = self._observe()
                except PortError:
                    break
                continue
            break
        return outcome

    def _commit(self, before: Rollout, decision: Decision) -> tuple[Outcome, Rollout, bool]:
        rollout = _clipped(decision.rollout)
        if rollout != before or decision.actions:
            try:
                rollout = self.store.update_rollout(rollout)
            except ConcurrencyError:
                log.info("tick for %s lost the race to another host; it acts, we exit", before.id)
                return (
                    Outcome(OutcomeStatus.LOST, "another tick changed the rollout first", before.id, before.phase),
                    before,
                    False,
                )
            except RecordTooLargeError as exc:
                # Save, then act: a decision that cannot be saved is not acted on. Stop for a human.
                return self._stop_unsavable(before, exc)
        for event in decision.events:
            self._append(event)
        failed, failed_action, error = self._execute(rollout, decision.actions)
        if isinstance(error, AccessDeniedError) and isinstance(failed_action, UpdateModel):
            # 403: the identity lacks a permission the write needs (e.g. read on the image). No
            # retry can fix that: stop now with the reason instead of retrying to the deadline.
            return self._write_refused(rollout, failed_action, str(error))
        retry_after = error.retry_after if isinstance(error, TransientError) else None
        actions = list(decision.actions)
        sent = actions[: actions.index(failed_action)] if failed_action is not None else actions
        decided = rollout
        if any(isinstance(a, ReimageInstances) for a in sent):
            rollout = self._confirm_reimage(rollout)
        if any(isinstance(a, _ARM_WRITES) for a in sent):
            self._record_late_writes(decided, [a for a in sent if isinstance(a, _ARM_WRITES)])
        if failed:
            # The call did not reach ARM (throttled, refused): clear batch_started_at so a later
            # tick re-issues an upgrade without waiting for upgrade_retry_seconds, but not before
            # ARM's Retry-After (hold_until) when it gave one. A reimage leaves no trace the next
            # observation could show: one not sent stays pending, marked to be sent again.
            hold = self.clock.now() + timedelta(seconds=retry_after) if retry_after else None
            changes: dict[str, Any] = {}
            if any(isinstance(a, ReimageInstances) for a in actions if a not in sent):
                changes["reimage_requested_at"] = None
            with contextlib.suppress(ConcurrencyError, RecordTooLargeError):  # a newer tick decides afresh anyway
                rollout = self.store.update_rollout(
                    rollout.evolve(
                        batch_started_at=None,
                        hold_until=hold,
                        reason=_clip(f"{rollout.reason}; {failed}"),
                        **changes,
                    )
                )
        if rollout.phase.is_terminal:
            self._finish(rollout)
            self._activate_after(rollout)
        status = OutcomeStatus.ERROR if failed else OutcomeStatus.ADVANCED
        return Outcome(status, rollout.reason, rollout.id, rollout.phase), rollout, True

    def _confirm_reimage(self, saved: Rollout) -> Rollout:
        """The second phase of a reimage: ARM took the call ``saved`` intended, so record it done.

        Conditional like every write; on a conflict the row is read again and the confirmation is
        applied to it as long as it still holds the same intent (an abort in between changes the
        phase, not the fact that the call was sent). If another host has sent it again since (a
        newer ``reimage_requested_at``), that host confirms its own call: confirming it here could
        end the rollback before that second call has landed."""
        intent = (saved.reimage_pending, saved.reimage_requested_at)
        current: Rollout | None = saved
        for _ in range(5):
            if current is None or (current.reimage_pending, current.reimage_requested_at) != intent:
                return current or saved
            done = tuple(machine.sort_ids(set(current.reimaged_ids) | set(current.reimage_pending)))
            try:
                return self.store.update_rollout(
                    current.evolve(reimaged_ids=done, reimage_pending=(), reimage_requested_at=None)
                )
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

    def _stop_unsavable(self, before: Rollout, exc: RecordTooLargeError) -> tuple[Outcome, Rollout, bool]:
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
        try:
            saved = self.store.update_rollout(before.evolve(**changes, reason=reason, phase_since=now, updated_at=now))
        except PortError as again:
            log.error("rollout %s: %s; recording that failed too: %s", before.id, reason, again)
            return Outcome(OutcomeStatus.ERROR, reason, before.id, before.phase), before, False
        self._record(saved, EventKind.STATE_TOO_LARGE, reason)
        if saved.phase.is_terminal:
            self._finish(saved)
        return Outcome(OutcomeStatus.ERROR, reason, saved.id, saved.phase), saved, True

    def _write_refused(self, rollout: Rollout, action: UpdateModel, reason: str) -> tuple[Outcome, Rollout, bool]:
        outcome, saved, ok = self._commit(rollout, machine.write_refused(rollout, action, reason, self.clock.now()))
        if ok and saved.phase is Phase.ROLLING_BACK:
            # Usually nothing took the release (its write was refused): the rollback ends at once.
            with contextlib.suppress(PortError):
                return self._commit(saved, machine.decide(saved, self._observe(), self.policy, self.clock.now()))
        return outcome, saved, ok

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

    def _finish(self, rollout: Rollout, target: TargetRecord | None = None) -> TargetRecord:
        """Hand the scale set back: clear the claim (terminal phases) and record the stable release."""
        for _ in range(5):
            target = target or self.store.get_target(self.target_key) or TargetRecord(key=self.target_key)
            if target.active_rollout_id != rollout.id:
                return target
            if not rollout.phase.is_terminal:
                return target  # Failed keeps the claim: a human decides (retry or abort)
            if self._reimage_in_flight(rollout):
                return target  # handed over once confirmed sent (or its host is past the bound)
            changes: dict[str, Any] = {"active_rollout_id": None, "updated_at": self.clock.now()}
            if rollout.phase is Phase.SUCCEEDED:
                changes.update(
                    stable_version=rollout.release.version,
                    stable_release=rollout.release,
                    stable_model=_merge_model(target.stable_model, rollout.desired),
                )
            try:
                return self.store.save_target(replace(target, **changes))
            except ConcurrencyError:
                target = None
        raise ConcurrencyError("could not release the scale set after 5 attempts")

    def _reimage_in_flight(self, rollout: Rollout) -> bool:
        """An unconfirmed reimage that its host may still be sending (an abort ended the rollout
        meanwhile): the next rollout must not get the scale set before it lands or is past the bound."""
        asked = rollout.reimage_requested_at
        if not rollout.reimage_pending or asked is None:
            return False
        return (self.clock.now() - asked).total_seconds() < self.policy.upgrade_retry_seconds

    def _activate_after(self, rollout: Rollout) -> None:
        outcome = self._activate_next()
        if outcome.status not in (OutcomeStatus.IDLE, OutcomeStatus.BUSY):
            log.info("after %s: %s %s", rollout.id, outcome.status, outcome.message)

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
            _, saved, ok = self._commit(rollout, decision)
            if ok:
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
                return Outcome(OutcomeStatus.DONE, f"{verb}: {saved.reason}", rollout_id, saved.phase)
        raise CommandError("the rollout kept changing under the command; try again")

    def fleet(self) -> FleetView:
        """The scale set now, probes included: what the next tick would decide on."""
        return self._observe()

    def get(self, rollout_id: str) -> tuple[Rollout, list[RolloutEvent]]:
        rollout = self.store.get_rollout(self.target_key, rollout_id)
        if rollout is None:
            raise RolloutNotFoundError(rollout_id)
        return rollout, self.store.list_events(self.target_key, rollout_id)

    def list(self) -> tuple[TargetRecord | None, list[Rollout]]:
        return self.store.get_target(self.target_key), self.store.list_rollouts(self.target_key)

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
            )
        )

    def _append(self, event: RolloutEvent) -> None:
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
        log.info("[%s] %s: %s", event.rollout_id, event.kind, event.message)


# Free text (reasons, event messages) is cut to this many characters with a visible marker: a reason
# built from every instance's extension message could otherwise outgrow a Tables property (32 K
# characters) and make the rollout unsavable.
MAX_TEXT_CHARS = 8000


def _clip(text: str, limit: int = MAX_TEXT_CHARS) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]} ... [{len(text) - limit} more characters not stored]"


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


def _merge_model(stable: ModelSpec | None, desired: ModelSpec) -> ModelSpec:
    """The stable model after a release: a script release keeps the stable image and vice versa."""
    extension: ExtensionSpec | None = desired.extension or (stable.extension if stable else None)
    image_id = desired.image_id or (stable.image_id if stable else None)
    return ModelSpec(extension=extension, image_id=image_id)


__all__ = ["CommandError", "Outcome", "RolloutNotFoundError", "RolloutService"]
