"""Admission: which queued release starts, with which baseline and model, and which are rejected. Pure.

The counterpart of ``machine.decide`` for a scale set no rollout holds: ``admit(target, rollouts,
fleet, policy, now, ...)`` returns an ``Admission`` (data) that the service commits as ONE state
store transaction (the claim naming the started rollout, the started rollout, every rollout it
rejects) before any ARM write. Nothing here does I/O: what needs ARM (the observed scale set, whether
the release's images can be read) is passed in, and ``images_to_check`` says which images to read.

The rules, in order (the first that applies decides):

1. No queued release: nothing to do.
2. Supersede: the newest queued release (highest version, then latest received) is the candidate;
   every older queued one is rejected ("superseded by vN"), in the same transaction as the start.
   A transaction holds at most ``MAX_COMMIT_RECORDS`` rows: with more older releases than fit beside
   the claim and the start, a first transaction rejects a chunk of them and nothing starts yet.
3. Not newer: a candidate not newer than the stable release is rejected.
4. Observe: without the observed scale set, stop here (``needs_fleet``); nothing is written yet.
5. Pre-flight (``rollout.preflight``, each a small function): orchestration mode, upgrade mode, a
   policy the fleet size makes impossible, capacity (healthy instances), what the release replaces
   (an extension to roll back to, or an image), image access, the release container's scripts a
   rollback or a revert needs. Its ``refuse`` findings reject; its ``warn`` findings become events.
6. Baseline: the exact current model (with the protected settings Azure will not give back, where
   they are known), the release's model from the extension as observed, and the state fits the store.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from rollout.analysis import mixed_fleet_warning
from rollout.model import (
    EventKind,
    ExtensionSpec,
    FleetView,
    ModelSpec,
    Phase,
    Release,
    ReleaseKind,
    Rollout,
    RolloutEvent,
    TargetRecord,
)
from rollout.orchestration import orchestration_problem
from rollout.policy import RolloutPolicy
from rollout.ports import MAX_COMMIT_RECORDS
from rollout.preflight import (
    IMAGE_MISSING,
    BlobRead,
    Severity,
    blobs_to_check,
    capacity_problem,
    extension_problem,
    findings,
    image_problem,
    images_to_check,
    refusal,
    replaced_problem,
)
from rollout.releases import ExtensionDefaults, desired_model

# The start transaction writes the claim row and the started rollout beside the superseded ones.
MAX_SUPERSEDED = MAX_COMMIT_RECORDS - 2

# Free text (reasons, event messages) is cut to this many characters with a visible marker: a reason
# built from every instance's extension message could otherwise outgrow a Tables property (32 K
# characters) and make the rollout unsavable.
MAX_TEXT_CHARS = 8000

# A started rollout and the claim it leaves on success -> why they could not be stored, or None.
StateCheck = Callable[[Rollout, TargetRecord], str | None]


def clip(text: str, limit: int = MAX_TEXT_CHARS) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]} ... [{len(text) - limit} more characters not stored]"


@dataclass(frozen=True)
class Admission:
    """What admission decided. ``claim`` and ``writes`` are one transaction (``StateStore.commit``)."""

    started: Rollout | None = None  # the candidate, now Canary with its baseline and desired model
    claim: TargetRecord | None = None  # the target row naming ``started`` (None when nothing starts)
    rejected: tuple[Rollout, ...] = ()  # superseded, not newer or failing pre-flight: now Rejected
    events: tuple[RolloutEvent, ...] = ()
    needs_fleet: Rollout | None = None  # the candidate, when the observed scale set is needed to go on
    reason: str = ""  # why the candidate was rejected, or why nothing starts
    candidate: Rollout | None = None  # the newest queued rollout, as read

    @property
    def writes(self) -> list[Rollout]:
        return ([self.started] if self.started is not None else []) + list(self.rejected)


# --- pre-flight checks: rollout.preflight (also what the what-if plan reports) -------------------------


def preflight(
    release: Release,
    fleet: FleetView,
    policy: RolloutPolicy,
    extension: ExtensionDefaults,
    images: Mapping[str, str | None],
    blobs: Mapping[str, BlobRead] | None = None,
    release_container_url: str | None = None,
) -> str | None:
    """Why the release cannot start on this scale set (every ``refuse`` finding of
    ``rollout.preflight.findings``, joined), or None."""
    found = findings(
        release, fleet, policy, extension, images, blobs=blobs, release_container_url=release_container_url
    )
    return refusal(found)


def not_newer_reason(release: Release, target: TargetRecord | None, active: Rollout | None) -> str | None:
    """Why ``release`` is not newer than what the scale set runs or is moving to, or None."""
    if target is not None and target.stable_version is not None and release.version <= target.stable_version:
        return f"v{release.version} is not newer than the stable v{target.stable_version}"
    if active is not None and active.phase.is_active and release.version <= active.release.version:
        return f"v{release.version} is not newer than the active rollout's v{active.release.version}"
    return None


def baseline(
    rollout: Rollout,
    fleet: FleetView,
    target: TargetRecord,
    extension: ExtensionDefaults,
    release_container_url: str | None,
) -> tuple[ModelSpec, str]:
    """The exact current model, with the protected settings Azure will not give back; and a warning.

    Protected settings are write-only in ARM. If the model is the stable release we wrote, we
    know them from the target row. If its scripts come from our release container, they were
    written the way we write them (managed identity). Otherwise they are unknown: rollback then
    restores the public settings only, and says so.
    """
    if rollout.release.kind is ReleaseKind.IMAGE:
        return ModelSpec(image_id=fleet.model.image_id), ""
    current = fleet.model.extension
    assert current is not None  # replaced_problem refused a script release without one
    stable = target.stable_model.extension if target.stable_model else None
    if stable is not None and stable.same_public_model(current) and stable.protected_settings is not None:
        return ModelSpec(extension=replace(current, protected_settings=stable.protected_settings)), ""
    uris = [str(u) for u in current.settings.get("fileUris", []) or []]
    ours = release_container_url
    if ours and uris and all(u.startswith(ours.rstrip("/") + "/") for u in uris):
        protected = desired_model(rollout.release, extension).extension
        assert protected is not None
        return ModelSpec(extension=replace(current, protected_settings=protected.protected_settings)), ""
    return ModelSpec(extension=replace(current, protected_settings=None)), (
        "the current extension was not written by this tool and its protected settings cannot be read "
        "back; a rollback restores its public settings only"
    )


def merge_model(stable: ModelSpec | None, desired: ModelSpec) -> ModelSpec:
    """The stable model after a release: a script release keeps the stable image and vice versa."""
    extension: ExtensionSpec | None = desired.extension or (stable.extension if stable else None)
    image_id = desired.image_id or (stable.image_id if stable else None)
    return ModelSpec(extension=extension, image_id=image_id)


# --- the claim ---------------------------------------------------------------------------------------


def released_claim(
    target: TargetRecord | None, rollout: Rollout, now: datetime, reimage_in_flight: bool
) -> TargetRecord | None:
    """The claim row a finished ``rollout`` leaves, to commit with its row: cleared, with the stable
    release when it succeeded. None when it keeps the claim: the claim names another rollout, the
    rollout is not terminal (Failed keeps it: a human decides), or a reimage it sent may still be
    landing (``reimage_in_flight``: handed over once confirmed sent, or once its host is past the bound)."""
    if target is None or target.active_rollout_id != rollout.id or not rollout.phase.is_terminal:
        return None
    if reimage_in_flight:
        return None
    if rollout.phase is not Phase.SUCCEEDED:
        return replace(target, active_rollout_id=None, updated_at=now)
    return replace(
        target,
        active_rollout_id=None,
        updated_at=now,
        stable_version=rollout.release.version,
        stable_release=rollout.release,
        stable_model=merge_model(target.stable_model, rollout.desired),
    )


def orphan_stopped(orphan: Rollout, holder: str | None, now: datetime) -> Rollout:
    """A started rollout the claim does not name, stopped (nothing is written to the scale set for it)."""
    reason = clip(
        f"stopped: it was {orphan.phase.value} without holding the scale set ({holder} holds it; a lost "
        "claim race, or a row edited by hand). Nothing was written to the scale set for this; the rollout "
        "that holds it decides every instance"
    )
    return orphan.evolve(phase=Phase.ABORTED, reason=reason, phase_since=now, updated_at=now)


# --- admit ------------------------------------------------------------------------------------------


def _reject(rollout: Rollout, reason: str, now: datetime) -> tuple[Rollout, RolloutEvent]:
    rejected = rollout.evolve(phase=Phase.REJECTED, reason=clip(reason), updated_at=now)
    event = RolloutEvent(rollout.id, rollout.target, now, EventKind.REJECTED, rejected.reason, phase=Phase.REJECTED)
    return rejected, event


def admit(
    target: TargetRecord,
    rollouts: Sequence[Rollout],
    fleet: FleetView | None,
    policy: RolloutPolicy,
    now: datetime,
    *,
    extension: ExtensionDefaults,
    release_container_url: str | None = None,
    images: Mapping[str, str | None] | None = None,
    blobs: Mapping[str, BlobRead] | None = None,
    state_problem: StateCheck | None = None,
) -> Admission:
    """Admission for a scale set no rollout holds (the caller checks that). ``rollouts`` are the
    target's rollouts as read with ``target``; ``fleet`` the observed scale set, or None until
    ``needs_fleet`` asks for it; ``images`` the results of reading ``images_to_check`` (see
    ``IMAGE_MISSING``); ``blobs`` the results of reading ``blobs_to_check`` (None: not read);
    ``state_problem`` whether the started rollout's state can be stored."""
    queued = sorted((r for r in rollouts if r.phase is Phase.QUEUED), key=lambda r: (r.release.version, r.created_at))
    if not queued:
        return Admission(reason="no queued release")
    newest, older = queued[-1], queued[:-1]
    superseded = [_reject(r, f"superseded by v{newest.release.version}", now) for r in older]
    if len(superseded) > MAX_SUPERSEDED:
        # More than one transaction can hold beside the start: reject a chunk now, start later.
        chunk = superseded[:MAX_COMMIT_RECORDS]
        return Admission(
            rejected=tuple(r for r, _ in chunk),
            events=tuple(e for _, e in chunk),
            reason=f"superseding {len(superseded)} older releases first; v{newest.release.version} starts after",
            candidate=newest,
        )
    rejected = [r for r, _ in superseded]
    events = [e for _, e in superseded]

    def refuse(reason: str) -> Admission:
        row, event = _reject(newest, reason, now)
        return Admission(rejected=(*rejected, row), events=(*events, event), reason=row.reason, candidate=newest)

    # A revert (a group release halted: rollout.waves) goes back to an older release on purpose.
    reason = None if newest.revert else not_newer_reason(newest.release, target, None)
    if reason is not None:
        return refuse(reason)
    if fleet is None:
        return Admission(needs_fleet=newest, candidate=newest)
    found = findings(
        newest.release,
        fleet,
        policy,
        extension,
        images or {},
        blobs=blobs,
        release_container_url=release_container_url,
        revert=newest.revert,
    )
    problem = refusal(found)
    if problem is not None:
        return refuse(problem)
    base, warning = baseline(newest, fleet, target, extension, release_container_url)
    started = newest.evolve(
        phase=Phase.CANARY,
        baseline=base,
        known_ids=tuple(v.instance_id for v in fleet.instances),
        # The release's model starts from the extension as observed: see desired_model.
        desired=desired_model(newest.release, extension, fleet.model.extension),
        phase_since=now,
        last_progress_at=now,
        updated_at=now,
        reason="starting the canary",
    )
    claim = replace(target, active_rollout_id=newest.id, updated_at=now)
    if state_problem is not None:
        problem = state_problem(started, claim)
        if problem is not None:
            return refuse(problem)
    message = "Queued -> Canary: pre-flight passed; baseline recorded"
    events.append(RolloutEvent(started.id, started.target, now, EventKind.PHASE_CHANGED, message, phase=Phase.CANARY))
    for text in (warning, mixed_fleet_warning(fleet.instances)):
        if text:
            events.append(
                RolloutEvent(started.id, started.target, now, EventKind.BASELINE_WARNING, text, phase=Phase.CANARY)
            )
    for finding in found:
        if finding.severity is Severity.WARN:
            text = f"pre-flight ({finding.check}): {finding.reason}"
            events.append(
                RolloutEvent(started.id, started.target, now, EventKind.PREFLIGHT_WARNING, text, phase=Phase.CANARY)
            )
    return Admission(started=started, claim=claim, rejected=tuple(rejected), events=tuple(events), candidate=newest)


__all__ = [
    "IMAGE_MISSING",
    "BlobRead",
    "blobs_to_check",
    "MAX_SUPERSEDED",
    "MAX_TEXT_CHARS",
    "Admission",
    "admit",
    "baseline",
    "capacity_problem",
    "clip",
    "extension_problem",
    "image_problem",
    "images_to_check",
    "merge_model",
    "not_newer_reason",
    "orchestration_problem",
    "orphan_stopped",
    "preflight",
    "released_claim",
    "replaced_problem",
]
