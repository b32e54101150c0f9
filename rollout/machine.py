"""The rollout decider: ``decide(rollout, fleet, policy, now) -> Decision``. Pure.

Level-triggered, like an Argo Rollouts reconcile: every tick re-observes the scale set and
recomputes what should happen from the persisted status and what it sees, never from what it
remembers doing. The decider returns the new status plus *actions as data*; the service saves the
status first (the ETag write is the lock, see ``rollout.service``) and then executes the actions.
So every action must be safe to issue twice, and every "not yet" returns early with a reason the
next tick will revisit.

Operator commands (abort, pause, resume, promote, promote-full, retry) are pure too:
``apply_command`` returns the same ``Decision`` shape or raises ``CommandError``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from rollout.analysis import Assessment, Verdict, assess_canary, assess_instance, describe_instance
from rollout.model import (
    FleetView,
    Health,
    InstanceView,
    ModelSpec,
    Phase,
    ReleaseKind,
    Rollout,
    RolloutEvent,
)
from rollout.policy import RolloutPolicy


@dataclass(frozen=True)
class UpdateModel:
    spec: ModelSpec
    purpose: str  # "release" or "rollback"


@dataclass(frozen=True)
class UpgradeInstances:
    instance_ids: tuple[str, ...]
    purpose: str  # "canary", "batch", "rollback", "retry"


@dataclass(frozen=True)
class ReimageInstances:
    instance_ids: tuple[str, ...]


@dataclass(frozen=True)
class Notify:
    message: str


Action = UpdateModel | UpgradeInstances | ReimageInstances | Notify


@dataclass(frozen=True)
class Decision:
    rollout: Rollout
    actions: tuple[Action, ...] = ()
    events: tuple[RolloutEvent, ...] = ()


class CommandError(Exception):
    """An operator command that does not apply to the rollout in its current phase."""


def _num(instance_id: str) -> tuple[int, int, str]:
    return (0, int(instance_id), "") if instance_id.isdigit() else (1, 0, instance_id)


def sort_ids(ids: Iterable[str]) -> list[str]:
    """Instance ids are numeric strings in Uniform scale sets; order them as numbers."""
    return sorted(ids, key=_num)


@dataclass
class _Plan:
    """Accumulates one decision. Mutable only inside ``decide``; what leaves is frozen."""

    rollout: Rollout
    now: datetime
    actions: list[Action] = field(default_factory=list)
    events: list[RolloutEvent] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.original = self.rollout

    def update(self, **changes: Any) -> None:
        self.rollout = self.rollout.evolve(**changes)

    def event(self, kind: str, message: str, actor: str = "controller", **data: Any) -> None:
        self.events.append(
            RolloutEvent(
                rollout_id=self.rollout.id,
                target=self.rollout.target,
                at=self.now,
                kind=kind,
                message=message,
                actor=actor,
                phase=self.rollout.phase,
                data=data,
            )
        )

    def transition(self, phase: Phase, reason: str, actor: str = "controller", **data: Any) -> None:
        before = self.rollout.phase
        self.update(phase=phase, phase_since=self.now, reason=reason, unhealthy_streak=0)
        self.event("PhaseChanged", f"{before.value} -> {phase.value}: {reason}", actor, **data)

    def wait(self, reason: str) -> Decision:
        self.update(reason=reason)
        return self.decision()

    def act(self, action: Action) -> None:
        self.actions.append(action)

    def decision(self) -> Decision:
        rollout = self.rollout
        if rollout != self.original or self.actions or self.events:
            rollout = rollout.evolve(updated_at=self.now)
        return Decision(rollout, tuple(self.actions), tuple(self.events))


_ARM_WRITES = (UpdateModel, UpgradeInstances, ReimageInstances)


def decide(rollout: Rollout, fleet: FleetView, policy: RolloutPolicy, now: datetime) -> Decision:
    """What happens next to ``rollout``, given one observation of its scale set."""
    decision = _decide(rollout, fleet, policy, now)
    hold = rollout.hold_until
    if hold is not None and now < hold and any(isinstance(a, _ARM_WRITES) for a in decision.actions):
        # ARM throttled our writes and said when to come back. The step needs a write, so it waits
        # whole (its events and counters too) and is decided afresh from the next observation then.
        wait = (hold - now).total_seconds()
        return _Plan(rollout, now).wait(f"ARM throttled writes to the scale set: next one in {wait:.0f} s")
    return decision


def _decide(rollout: Rollout, fleet: FleetView, policy: RolloutPolicy, now: datetime) -> Decision:
    plan = _Plan(rollout, now)
    if rollout.phase in (Phase.CANARY, Phase.BAKING, Phase.PROMOTING):
        drift = _model_drift(rollout, fleet)
        # Before the canary is chosen the model is ours to write; after, a different model is drift.
        if drift is not None and (rollout.phase is not Phase.CANARY or rollout.canary_ids):
            # Someone rewrote the model while we were promoting: any batch now would ship their
            # model, not ours. Stop and ask a human instead of guessing.
            plan.update(paused_from=rollout.phase)
            plan.transition(Phase.FAILED, drift)
            plan.act(Notify(f"{rollout.release.label} stopped: {drift}"))
            return plan.decision()
    if rollout.phase is Phase.CANARY:
        return _decide_canary(plan, fleet, policy)
    if rollout.phase is Phase.BAKING:
        return _decide_baking(plan, fleet, policy)
    if rollout.phase is Phase.PROMOTING:
        return _decide_promoting(plan, fleet, policy)
    if rollout.phase is Phase.ROLLING_BACK:
        return _decide_rolling_back(plan, fleet, policy)
    # Queued, Paused, Failed and the terminal phases: nothing moves without an operator (or, for
    # Queued, without the service activating it).
    return plan.decision()


def _model_drift(rollout: Rollout, fleet: FleetView) -> str | None:
    if rollout.desired.matches(fleet.model) or fleet.provisioning_state.lower() == "updating":
        return None
    return "the scale set model no longer holds this release (changed outside the rollout)"


def _start_rollback(plan: _Plan, reason: str, actor: str = "controller") -> Decision:
    plan.update(rollback_reason=reason, batch_ids=(), batch_started_at=None, last_progress_at=plan.now)
    plan.transition(Phase.ROLLING_BACK, reason, actor)
    plan.act(Notify(f"{plan.rollout.release.label}: rolling back: {reason}"))
    return plan.decision()


def _past_deadline(plan: _Plan, policy: RolloutPolicy) -> bool:
    elapsed = (plan.now - plan.rollout.last_progress_at).total_seconds()
    return elapsed > policy.progress_deadline_seconds


def _observed(ids: Sequence[str], fleet: FleetView) -> list[InstanceView]:
    views = fleet.by_id()
    return [views[i] for i in ids if i in views]


def _baseline_views(plan: _Plan, fleet: FleetView) -> list[InstanceView]:
    upgraded = set(plan.rollout.upgraded_ids)
    return [v for v in fleet.instances if v.instance_id not in upgraded and not v.latest_model_applied]


def _judge(views: Sequence[InstanceView], plan: _Plan, fleet: FleetView, policy: RolloutPolicy) -> Assessment:
    """The new model's instances against the instances the rollout has not touched."""
    return assess_canary(
        views,
        _baseline_views(plan, fleet),
        latency_ratio=policy.latency_ratio,
        latency_min_delta_ms=policy.latency_min_delta_ms,
    )


def _reissue_stalled(plan: _Plan, ids: Sequence[str], fleet: FleetView, policy: RolloutPolicy, purpose: str) -> None:
    """Re-issue an upgrade that never started: lost in a crash, refused, or throttled.

    ``batch_started_at is None`` means the service knows the call failed; otherwise wait for
    ``upgrade_retry_seconds`` first, because ARM may not show the instance Updating at once.
    """
    stalled = [
        v.instance_id
        for v in _observed(ids, fleet)
        if not v.latest_model_applied and assess_instance(v) is not Health.UPDATING
    ]
    if not stalled:
        return
    started = plan.rollout.batch_started_at
    if started is not None and (plan.now - started).total_seconds() < policy.upgrade_retry_seconds:
        return
    plan.update(batch_started_at=plan.now)
    plan.act(UpgradeInstances(tuple(stalled), "retry" if started is not None else purpose))
    plan.event("UpgradeIssued", f"upgrade (re)issued for {', '.join(stalled)}", instances=stalled)


def _decide_canary(plan: _Plan, fleet: FleetView, policy: RolloutPolicy) -> Decision:
    rollout = plan.rollout
    if not rollout.desired.matches(fleet.model):
        if fleet.provisioning_state.lower() == "updating":
            return plan.wait("waiting for the scale set model write to finish")
        if _past_deadline(plan, policy):
            return _start_rollback(plan, f"the model write did not land within {policy.progress_deadline_seconds} s")
        plan.act(UpdateModel(rollout.desired, "release"))
        plan.event("ModelUpdateIssued", f"writing {rollout.release.label} to the scale set model")
        return plan.wait("writing the release to the scale set model")

    present = fleet.by_id()
    canaries = [i for i in rollout.canary_ids if i in present]
    if len(canaries) < len(rollout.canary_ids):
        gone = sorted(set(rollout.canary_ids) - set(canaries))
        plan.event("CanaryLost", f"canary instance(s) {', '.join(gone)} left the scale set")
        plan.update(canary_ids=tuple(canaries), batch_ids=tuple(canaries))
    if not canaries:
        healthy = [v.instance_id for v in fleet.instances if assess_instance(v) is Health.HEALTHY]
        if not healthy:
            if _past_deadline(plan, policy):
                return _start_rollback(plan, "no healthy instance to use as the canary")
            return plan.wait("waiting for a healthy instance to use as the canary")
        chosen = tuple(sort_ids(healthy)[: policy.canary_count])
        plan.update(
            canary_ids=chosen,
            batch_ids=chosen,
            batch_started_at=plan.now,
            upgraded_ids=tuple(sort_ids(set(plan.rollout.upgraded_ids) | set(chosen))),
            last_progress_at=plan.now,
        )
        plan.act(UpgradeInstances(chosen, "canary"))
        plan.event("CanaryStarted", f"upgrading canary instance(s) {', '.join(chosen)}", instances=list(chosen))
        return plan.wait(f"upgrading the canary: instance(s) {', '.join(chosen)}")

    assessment = _judge(_observed(canaries, fleet), plan, fleet, policy)
    if assessment.verdict is Verdict.FAILED:
        return _start_rollback(plan, f"canary failed: {assessment.reason}")
    if assessment.verdict is Verdict.SUCCESSFUL:
        plan.update(batch_ids=(), batch_started_at=None, last_progress_at=plan.now)
        if rollout.skip_bake or policy.bake_seconds == 0:
            plan.transition(Phase.PROMOTING, "canary healthy; bake skipped")
            return _decide_promoting(plan, fleet, policy)
        plan.transition(Phase.BAKING, f"canary healthy; baking for {policy.bake_seconds} s")
        return plan.decision()
    if assessment.verdict is Verdict.UNHEALTHY:
        return _count_unhealthy(plan, policy, f"canary unhealthy: {assessment.reason}")
    if _past_deadline(plan, policy):
        return _start_rollback(
            plan, f"canary made no progress in {policy.progress_deadline_seconds} s: {assessment.reason}"
        )
    _reissue_stalled(plan, canaries, fleet, policy, "canary")
    return plan.wait(f"canary: {assessment.reason}")


def _count_unhealthy(plan: _Plan, policy: RolloutPolicy, reason: str) -> Decision:
    streak = plan.rollout.unhealthy_streak + 1
    plan.update(unhealthy_streak=streak)
    plan.event("HealthCheckFailed", f"{reason} ({streak} of {policy.failure_threshold})", streak=streak)
    if streak >= policy.failure_threshold:
        return _start_rollback(plan, f"{reason}, {streak} consecutive observations")
    return plan.wait(f"{reason} ({streak} of {policy.failure_threshold} before rollback)")


def _decide_baking(plan: _Plan, fleet: FleetView, policy: RolloutPolicy) -> Decision:
    assessment = _judge(_observed(plan.rollout.canary_ids, fleet), plan, fleet, policy)
    if assessment.verdict is Verdict.FAILED:
        return _start_rollback(plan, f"canary failed while baking: {assessment.reason}")
    if assessment.verdict is Verdict.UNHEALTHY:
        return _count_unhealthy(plan, policy, f"canary unhealthy while baking: {assessment.reason}")
    if assessment.verdict is not Verdict.SUCCESSFUL:
        # Inconclusive or pending: the bake clock only counts healthy time, so restart it.
        plan.update(phase_since=plan.now)
        return plan.wait(f"bake on hold: {assessment.reason}")
    plan.update(unhealthy_streak=0)
    baked = (plan.now - plan.rollout.phase_since).total_seconds()
    if plan.rollout.skip_bake or baked >= policy.bake_seconds:
        plan.update(last_progress_at=plan.now)
        why = "promoted by operator" if plan.rollout.skip_bake else f"canary healthy for {int(baked)} s"
        plan.transition(Phase.PROMOTING, why)
        return _decide_promoting(plan, fleet, policy)
    return plan.wait(f"baking: {int(baked)} of {policy.bake_seconds} s, canary healthy")


def _decide_promoting(plan: _Plan, fleet: FleetView, policy: RolloutPolicy) -> Decision:
    rollout = plan.rollout
    if rollout.batch_ids:
        batch = _observed(rollout.batch_ids, fleet)
        assessment = _judge(batch, plan, fleet, policy)
        if assessment.verdict is Verdict.FAILED:
            return _start_rollback(plan, f"batch {rollout.batch_number} failed: {assessment.reason}")
        if assessment.verdict is Verdict.UNHEALTHY:
            return _count_unhealthy(plan, policy, f"batch {rollout.batch_number} unhealthy: {assessment.reason}")
        if assessment.verdict is not Verdict.SUCCESSFUL:
            if _past_deadline(plan, policy):
                return _start_rollback(
                    plan, f"batch {rollout.batch_number} made no progress in {policy.progress_deadline_seconds} s"
                )
            _reissue_stalled(plan, rollout.batch_ids, fleet, policy, "batch")
            return plan.wait(f"batch {rollout.batch_number}: {assessment.reason}")
        plan.event(
            "BatchSucceeded",
            f"batch {rollout.batch_number} ({', '.join(rollout.batch_ids)}) on the new model and healthy",
            instances=list(rollout.batch_ids),
        )
        plan.update(batch_ids=(), batch_started_at=None, last_progress_at=plan.now, unhealthy_streak=0)

    # Every instance this rollout upgraded must stay healthy, not only the newest batch.
    watched = _judge(_observed(plan.rollout.upgraded_ids, fleet), plan, fleet, policy)
    if watched.verdict is Verdict.FAILED:
        return _start_rollback(plan, f"an upgraded instance failed: {watched.reason}")
    if watched.verdict is Verdict.UNHEALTHY:
        return _count_unhealthy(plan, policy, f"an upgraded instance is unhealthy: {watched.reason}")

    outdated = [v for v in fleet.instances if not v.latest_model_applied]
    if not outdated:
        if watched.verdict is Verdict.SUCCESSFUL and all(assess_instance(v) is Health.HEALTHY for v in fleet.instances):
            plan.transition(
                Phase.SUCCEEDED, f"all {len(fleet.instances)} instances on {rollout.release.label} and healthy"
            )
            plan.act(Notify(f"{rollout.release.label} succeeded on {len(fleet.instances)} instances"))
            return plan.decision()
        if _past_deadline(plan, policy):
            return _start_rollback(plan, "the fleet did not become healthy on the new model in time")
        return plan.wait("every instance is on the new model; waiting for all to be healthy")

    unavailable = {v.instance_id for v in fleet.instances if assess_instance(v) is not Health.HEALTHY}
    chosen: list[str] = []
    if plan.rollout.promote_full:
        # Not an instance that is already Updating (a scale-out still Creating, someone else's
        # upgrade): ARM may refuse the whole call for it (409), and it is upgraded once it is done.
        busy = [v.instance_id for v in outdated if assess_instance(v) is Health.UPDATING]
        chosen = sort_ids(v.instance_id for v in outdated if v.instance_id not in busy)
        if not chosen:
            if _past_deadline(plan, policy):
                return _start_rollback(plan, f"promotion stalled: {len(busy)} outdated instance(s) stay updating")
            return plan.wait(f"promote-full: waiting for {', '.join(sort_ids(busy))} to finish updating")
        plan.event("PromoteFull", f"promote-full: upgrading all {len(chosen)} remaining instances at once")
    else:
        budget = policy.calculate_max_unavailable(len(fleet.instances)) - len(unavailable)
        size = policy.calculate_batch_size(len(fleet.instances))
        # Instances that are already unavailable cost nothing to upgrade: take them first.
        candidates = sorted(outdated, key=lambda v: (v.instance_id not in unavailable, _num(v.instance_id)))
        for view in candidates:
            if len(chosen) >= size:
                break
            if view.instance_id in unavailable:
                if assess_instance(view) is Health.UPDATING:
                    continue  # somebody is already upgrading it; count it, do not re-issue
                chosen.append(view.instance_id)
            elif budget > 0:
                chosen.append(view.instance_id)
                budget -= 1
        if not chosen:
            if _past_deadline(plan, policy):
                return _start_rollback(plan, f"promotion stalled: {len(unavailable)} instance(s) unavailable")
            return plan.wait(
                f"{len(outdated)} outdated; waiting: {len(unavailable)} instance(s) unavailable, "
                f"max unavailable {policy.calculate_max_unavailable(len(fleet.instances))}"
            )
        chosen = sort_ids(chosen)
    number = rollout.batch_number + 1
    plan.update(
        batch_ids=tuple(chosen),
        batch_number=number,
        batch_started_at=plan.now,
        upgraded_ids=tuple(sort_ids(set(plan.rollout.upgraded_ids) | set(chosen))),
        last_progress_at=plan.now,
    )
    plan.act(UpgradeInstances(tuple(chosen), "batch"))
    plan.event(
        "BatchStarted",
        f"batch {number}: upgrading {', '.join(chosen)} ({len(outdated) - len(chosen)} outdated after it)",
        instances=list(chosen),
    )
    return plan.wait(f"batch {number}: upgrading {', '.join(chosen)}")


def _decide_rolling_back(plan: _Plan, fleet: FleetView, policy: RolloutPolicy) -> Decision:
    rollout = plan.rollout
    baseline = rollout.baseline
    if baseline is None:
        plan.transition(Phase.FAILED, "no baseline was recorded: cannot roll back automatically")
        return plan.decision()
    if (plan.now - rollout.phase_since).total_seconds() > policy.progress_deadline_seconds * 2:
        plan.update(paused_from=Phase.ROLLING_BACK)
        plan.transition(Phase.FAILED, f"rollback did not finish in {policy.progress_deadline_seconds * 2} s")
        plan.act(Notify(f"{rollout.release.label}: rollback stuck, needs a human"))
        return plan.decision()
    if rollout.reimage_pending:
        return _await_reimage(plan, policy)
    if not baseline.matches(fleet.model):
        if fleet.provisioning_state.lower() == "updating":
            return plan.wait("rollback: waiting for the scale set model write to finish")
        plan.act(UpdateModel(baseline, "rollback"))
        plan.event("ModelUpdateIssued", "restoring the baseline model")
        return plan.wait("rollback: restoring the baseline model")

    # Only the instances this rollout moved need moving back; the rest never left the baseline.
    touched = _observed(rollout.upgraded_ids, fleet)
    behind = [v for v in touched if not v.latest_model_applied]
    fresh = [
        v.instance_id
        for v in behind
        if v.instance_id not in rollout.rollback_ids and assess_instance(v) is not Health.UPDATING
    ]
    if fresh:
        plan.update(
            rollback_ids=tuple(sort_ids(set(rollout.rollback_ids) | set(fresh))),
            batch_started_at=plan.now,
        )
        plan.act(UpgradeInstances(tuple(sort_ids(fresh)), "rollback"))
        plan.event(
            "RollbackUpgradeStarted", f"moving {', '.join(sort_ids(fresh))} back to the baseline", instances=fresh
        )
        return plan.wait(f"rollback: upgrading {', '.join(sort_ids(fresh))} to the baseline")
    if behind:
        _reissue_stalled(plan, [v.instance_id for v in behind], fleet, policy, "rollback")
        return plan.wait(f"rollback: waiting for {', '.join(v.instance_id for v in behind)}")
    updating = [v for v in touched if assess_instance(v) is Health.UPDATING]
    if updating:
        return plan.wait(f"rollback: waiting for {', '.join(v.instance_id for v in updating)}")
    if policy.rollback_reimage and rollout.release.kind is ReleaseKind.SCRIPT:
        fresh = sort_ids(v.instance_id for v in touched if v.instance_id not in rollout.reimaged_ids)
        if fresh:
            # Back on the baseline model, but the bad script's changes are still on the disk.
            plan.update(reimage_pending=tuple(fresh), reimage_requested_at=plan.now, unhealthy_streak=0)
            plan.act(ReimageInstances(tuple(fresh)))
            plan.event("ReimageStarted", f"reimaging {', '.join(fresh)}: a fresh disk with the baseline extension")
            return plan.wait(f"rollback: reimaging {', '.join(fresh)}")
    broken = [v for v in touched if assess_instance(v) is not Health.HEALTHY]
    if broken:
        return _repair_or_fail(plan, broken, policy)
    plan.transition(
        Phase.ROLLED_BACK, f"baseline restored on {len(touched)} instance(s); cause: {rollout.rollback_reason}"
    )
    plan.act(Notify(f"{rollout.release.label} rolled back: {rollout.rollback_reason}"))
    return plan.decision()


def _await_reimage(plan: _Plan, policy: RolloutPolicy) -> Decision:
    """A reimage is saved (save, then act) but the service has not confirmed it sent yet.

    Nothing an observation shows tells a reimage sent from one never sent, so the rollback neither
    counts it done nor ends while it is pending: the host that saved it confirms it once ARM took the
    call. Unconfirmed after ``upgrade_retry_seconds`` (that host stopped in between), or known to have
    failed (``reimage_requested_at`` cleared), it is sent again: a second reimage of an instance on
    the baseline is harmless, a lost one leaves the bad release's changes on its disk."""
    rollout = plan.rollout
    ids = ", ".join(rollout.reimage_pending)
    asked = rollout.reimage_requested_at
    if asked is not None and (plan.now - asked).total_seconds() < policy.upgrade_retry_seconds:
        return plan.wait(f"rollback: the reimage of {ids} is being sent; waiting for its confirmation")
    plan.update(reimage_requested_at=plan.now)
    plan.act(ReimageInstances(rollout.reimage_pending))
    why = "its call failed" if asked is None else f"not confirmed sent within {policy.upgrade_retry_seconds} s"
    plan.event("ReimageReissued", f"reimaging {ids} again: {why}", instances=list(rollout.reimage_pending))
    return plan.wait(f"rollback: reimaging {ids} again ({why})")


def _repair_or_fail(plan: _Plan, broken: list[InstanceView], policy: RolloutPolicy) -> Decision:
    """The baseline model is back on these instances, yet they are unhealthy.

    Release scripts are written for fresh VMs (the walkthrough: "it is not an incremental update
    process"), so re-running the old script over a disk the bad release changed may not repair it.
    After ``failure_threshold`` unhealthy observations the instance is reimaged: a fresh disk from
    the image, with the baseline extension run on it. Still unhealthy after that: a human decides.
    """
    streak = plan.rollout.unhealthy_streak + 1
    reason = "; ".join(describe_instance(v) for v in broken)
    if streak < policy.failure_threshold:
        plan.update(unhealthy_streak=streak)
        return plan.wait(f"rollback: baseline applied but {reason} ({streak} of {policy.failure_threshold})")
    fresh = sort_ids(v.instance_id for v in broken if v.instance_id not in plan.rollout.reimaged_ids)
    if fresh:
        plan.update(
            reimage_pending=tuple(fresh),
            reimage_requested_at=plan.now,
            unhealthy_streak=0,
            last_progress_at=plan.now,
        )
        plan.act(ReimageInstances(tuple(fresh)))
        plan.event("ReimageStarted", f"the baseline did not repair {', '.join(fresh)}: reimaging ({reason})")
        return plan.wait(f"rollback: reimaging {', '.join(fresh)}")
    plan.update(paused_from=Phase.ROLLING_BACK)
    plan.transition(Phase.FAILED, f"baseline restored and reimaged, still unhealthy: {reason}")
    plan.act(Notify(f"{plan.rollout.release.label}: rollback could not repair {reason}; needs a human"))
    return plan.decision()


def write_refused(rollout: Rollout, action: UpdateModel, reason: str, now: datetime) -> Decision:
    """ARM refused a model write for good (403: the identity lacks a permission the write needs,
    e.g. read on the image it names). Retrying until the progress deadline would change nothing, so
    stop now with the reason: a refused release write rolls back (nothing took the release, or the
    rollback restores what did); a refused rollback write needs a human (``Failed``)."""
    plan = _Plan(rollout, now)
    if rollout.phase in (Phase.CANARY, Phase.BAKING, Phase.PROMOTING) and action.purpose == "release":
        return _start_rollback(plan, f"ARM refused the release's model write: {reason}")
    if rollout.phase is Phase.ROLLING_BACK:
        plan.update(paused_from=Phase.ROLLING_BACK)
        plan.transition(Phase.FAILED, f"ARM refused the rollback's model write: {reason}")
        plan.act(Notify(f"{rollout.release.label}: rollback refused by ARM, needs a human: {reason}"))
        return plan.decision()
    return plan.decision()


# --- operator commands -------------------------------------------------------------------------

COMMANDS = ("abort", "pause", "resume", "promote", "promote-full", "retry")


def apply_command(
    rollout: Rollout,
    command: str,
    now: datetime,
    *,
    actor: str = "operator",
    reason: str = "",
    rollback: bool = False,
) -> Decision:
    """An operator's verb, as a pure transition. Raises ``CommandError`` when it does not apply."""
    plan = _Plan(rollout, now)
    phase = rollout.phase
    said = f" ({reason})" if reason else ""
    if command == "abort":
        if phase.is_terminal:
            raise CommandError(f"rollout {rollout.id} is already {phase.value}")
        if rollback and phase is not Phase.QUEUED:
            return _start_rollback(plan, f"aborted by {actor}{said}", actor)
        plan.update(batch_ids=(), batch_started_at=None)
        plan.transition(Phase.ABORTED, f"aborted by {actor}{said}; no rollback", actor)
        plan.act(Notify(f"{rollout.release.label} aborted by {actor}{said}"))
        return plan.decision()
    if command == "pause":
        if phase not in (Phase.CANARY, Phase.BAKING, Phase.PROMOTING):
            raise CommandError(
                f"only a rollout in Canary, Baking or Promoting can be paused; this one is {phase.value}"
            )
        plan.update(paused_from=phase)
        plan.transition(Phase.PAUSED, f"paused by {actor}{said}", actor)
        return plan.decision()
    if command == "resume":
        if phase is not Phase.PAUSED or rollout.paused_from is None:
            raise CommandError(f"only a paused rollout can be resumed; this one is {phase.value}")
        # The bake clock and the progress deadline restart: time spent paused proves nothing.
        plan.update(paused_from=None, last_progress_at=now)
        plan.transition(rollout.paused_from, f"resumed by {actor}{said}", actor)
        return plan.decision()
    if command in ("promote", "promote-full"):
        allowed = (
            (Phase.CANARY, Phase.BAKING) if command == "promote" else (Phase.CANARY, Phase.BAKING, Phase.PROMOTING)
        )
        if phase not in allowed:
            names = ", ".join(p.value for p in allowed)
            raise CommandError(f"{command} applies to a rollout in {names}; this one is {phase.value}")
        plan.update(skip_bake=True, promote_full=rollout.promote_full or command == "promote-full")
        plan.event("Promoted", f"{command} by {actor}{said}", actor)
        return plan.wait(f"{command} by {actor}: the next tick skips the rest of the bake")
    if command == "retry":
        if phase is not Phase.FAILED:
            raise CommandError(f"only a Failed rollout can be retried; this one is {phase.value}")
        resume_to = rollout.paused_from or Phase.ROLLING_BACK
        plan.update(paused_from=None, last_progress_at=now, batch_started_at=None)
        if resume_to is not Phase.ROLLING_BACK:
            # It failed going forward (the model was changed under it): start again from the canary,
            # which writes the release's model again, instead of failing on the same drift.
            plan.update(canary_ids=(), batch_ids=())
            plan.transition(Phase.CANARY, f"retried by {actor}{said}: re-writing the model, a new canary", actor)
            return plan.decision()
        plan.transition(resume_to, f"retried by {actor}{said}", actor)
        return plan.decision()
    raise CommandError(f"unknown command {command!r}; expected one of {', '.join(COMMANDS)}")
