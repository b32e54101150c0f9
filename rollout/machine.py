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

import enum
import hashlib
import json
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from rollout import judge as judging
from rollout.analysis import Assessment, Verdict, assess_canary, assess_instance, describe_instance
from rollout.model import (
    EventKind,
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


class ActionPurpose(enum.StrEnum):
    """Why an ARM write is issued: the model write (``RELEASE``, ``ROLLBACK``) or an upgrade."""

    RELEASE = "release"  # the release's model (UpdateModel)
    ROLLBACK = "rollback"  # the baseline's model (UpdateModel), or instances moved back to it
    CANARY = "canary"  # the canary instances
    BATCH = "batch"  # a promotion batch
    RETRY = "retry"  # an upgrade issued again after it stalled


@dataclass(frozen=True)
class UpdateModel:
    spec: ModelSpec
    purpose: ActionPurpose  # RELEASE or ROLLBACK


@dataclass(frozen=True)
class UpgradeInstances:
    instance_ids: tuple[str, ...]
    purpose: ActionPurpose  # CANARY, BATCH, ROLLBACK or RETRY


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

    def event(self, kind: EventKind, message: str, actor: str = "controller", **data: Any) -> None:
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
        self.event(EventKind.PHASE_CHANGED, f"{before.value} -> {phase.value}: {reason}", actor, **data)

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
        if drift is None:
            drift = _foreign_drift(plan, fleet)
        elif rollout.phase is Phase.CANARY and not rollout.canary_ids:
            drift = None  # before the canary is chosen the model is ours to write; after, it is drift
        if drift is not None:
            # Someone rewrote the model while we were promoting: any batch now would ship their
            # model, not ours. Stop and ask a human instead of guessing.
            plan.update(failed_from=rollout.phase, resume_to=None)
            plan.transition(Phase.FAILED, drift)
            plan.act(Notify(f"{rollout.release.label} stopped: {drift}"))
            return plan.decision()
        _record_on_release(plan, fleet)
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


def _foreign_digest(rollout: Rollout, model: ModelSpec) -> str:
    """A digest of the parts of ``model`` the release does not own, as far as ARM lets us read them."""
    if rollout.release.kind is ReleaseKind.SCRIPT:
        part: Any = (model.image_id or "").lower()
    else:
        ext = model.extension
        part = None
        if ext is not None:
            part = [ext.name, ext.publisher, ext.type, ext.type_handler_version.split(".")[0]]
            part += [dict(ext.settings), ext.force_update_tag or None]
    text = json.dumps(part, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _foreign_drift(plan: _Plan, fleet: FleetView) -> str | None:
    """Someone edited a part of the model the release does not own (the image during a script
    release): the release's part still matches, so ``_model_drift`` cannot see it, but every
    instance is outdated again and any further upgrade would ship their edit with ours. Stop, like
    for a change of our own part. The digest is taken once the release's part is on the model."""
    rollout = plan.rollout
    if fleet.provisioning_state.lower() == "updating" or not rollout.desired.matches(fleet.model):
        return None
    digest = _foreign_digest(rollout, fleet.model)
    if not rollout.foreign_model:
        plan.update(foreign_model=digest)
        return None
    if digest == rollout.foreign_model:
        return None
    what = "image" if rollout.release.kind is ReleaseKind.SCRIPT else "extension"
    return (
        f"the scale set model changed outside the rollout: its {what}, which this release does not own, "
        "was edited (every instance is outdated again)"
    )


def _on_release_model(rollout: Rollout, fleet: FleetView) -> bool:
    """Does the scale set model hold the release (so an instance with the latest model runs it)?"""
    if fleet.provisioning_state.lower() == "updating" or not rollout.desired.matches(fleet.model):
        return False
    return rollout.baseline is None or not rollout.baseline.matches(fleet.model)


def _record_on_release(plan: _Plan, fleet: FleetView) -> None:
    """Every instance observed with the latest model while the model holds the release runs it,
    whoever put it there: a scale-out created from the release's model, an upgrade that landed late.
    They count as upgraded (never upgraded again, watched, and moved back by a rollback)."""
    if not _on_release_model(plan.rollout, fleet):
        return
    known = set(plan.rollout.upgraded_ids)
    new = sort_ids(v.instance_id for v in fleet.instances if v.latest_model_applied and v.instance_id not in known)
    if not new:
        return
    plan.update(upgraded_ids=tuple(sort_ids(known | set(new))))
    plan.event(
        EventKind.INSTANCES_ON_RELEASE,
        f"{', '.join(new)} observed on {plan.rollout.release.label} without an upgrade by this rollout "
        "(e.g. created by a scale-out): counted as upgraded",
        instances=new,
    )


def _record_created_during(plan: _Plan, fleet: FleetView) -> None:
    """With the baseline model restored: an instance created during the rollout (not among
    ``known_ids``) that is not on the baseline was created from another model, the release's or a hand
    edit of it, and may never have been seen with the latest model while it was running it (still being
    created when the baseline was written). It is moved back, health-checked and reimaged like an
    upgraded instance. Instances created from the baseline report the latest model and are left alone."""
    rollout = plan.rollout
    if not rollout.known_ids:
        return
    known = set(rollout.known_ids) | set(rollout.upgraded_ids)
    strays = sort_ids(
        v.instance_id for v in fleet.instances if v.instance_id not in known and not v.latest_model_applied
    )
    if not strays:
        return
    plan.update(upgraded_ids=tuple(sort_ids(set(rollout.upgraded_ids) | set(strays))))
    plan.event(
        EventKind.INSTANCES_ON_RELEASE,
        f"{', '.join(strays)} created during the rollout and not on the restored baseline: moved back "
        "like the upgraded instances",
        instances=strays,
    )


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


def _unavailable(fleet: FleetView) -> set[str]:
    return {v.instance_id for v in fleet.instances if assess_instance(v) is not Health.HEALTHY}


def _within_budget(
    candidates: Sequence[InstanceView], fleet: FleetView, allowed: int | None, pending: Collection[str] = ()
) -> list[str]:
    """The candidates that may be taken down now: the unavailable ones cost nothing (they are down
    already), healthy ones only while fewer than ``allowed`` instances are unavailable (None: no limit).
    ``pending``: instances an upgrade was already sent to that the observation does not show going
    down yet; they count as unavailable (they are about to be), never as free candidates."""
    down = _unavailable(fleet) | set(pending)
    free = [v.instance_id for v in candidates if v.instance_id in down]
    healthy = [v.instance_id for v in candidates if v.instance_id not in down]
    if allowed is not None:
        healthy = healthy[: max(0, allowed - len(down))]
    return sort_ids(free + healthy)


def _reissue_stalled(
    plan: _Plan,
    ids: Sequence[str],
    fleet: FleetView,
    policy: RolloutPolicy,
    purpose: ActionPurpose,
    allowed: int | None,
) -> None:
    """Re-issue an upgrade that never started: lost in a crash, refused, or throttled.

    ``batch_started_at is None`` means the service knows the call failed; otherwise wait for
    ``upgrade_retry_seconds`` first, because ARM may not show the instance Updating at once.
    The budget is computed again against this observation (the fleet may have shrunk, instances
    that were down when the batch was chosen may be healthy now): a batch is trimmed to it, the
    instances left out go back to the outdated pool for a later batch.
    """
    stalled = [
        v for v in _observed(ids, fleet) if not v.latest_model_applied and assess_instance(v) is not Health.UPDATING
    ]
    if not stalled:
        return
    started = plan.rollout.batch_started_at
    if started is not None and (plan.now - started).total_seconds() < policy.upgrade_retry_seconds:
        return
    chosen = _within_budget(stalled, fleet, allowed)
    left = sort_ids(v.instance_id for v in stalled if v.instance_id not in chosen)
    if left and purpose is ActionPurpose.BATCH:
        plan.update(
            batch_ids=tuple(i for i in plan.rollout.batch_ids if i not in left),
            upgraded_ids=tuple(i for i in plan.rollout.upgraded_ids if i not in left),
        )
        plan.event(
            EventKind.BATCH_TRIMMED,
            f"batch {plan.rollout.batch_number}: {', '.join(left)} left out of the re-issue: "
            f"{len(_unavailable(fleet))} instance(s) unavailable, max unavailable {allowed}",
            instances=left,
        )
    if not chosen:
        return
    plan.update(batch_started_at=plan.now)
    plan.act(UpgradeInstances(tuple(chosen), ActionPurpose.RETRY if started is not None else purpose))
    plan.event(EventKind.UPGRADE_ISSUED, f"upgrade (re)issued for {', '.join(chosen)}", instances=chosen)


def _decide_canary(plan: _Plan, fleet: FleetView, policy: RolloutPolicy) -> Decision:
    rollout = plan.rollout
    if not rollout.desired.matches(fleet.model):
        if fleet.provisioning_state.lower() == "updating":
            return plan.wait("waiting for the scale set model write to finish")
        if _past_deadline(plan, policy):
            return _start_rollback(plan, f"the model write did not land within {policy.progress_deadline_seconds} s")
        plan.act(UpdateModel(rollout.desired, ActionPurpose.RELEASE))
        plan.event(EventKind.MODEL_UPDATE_ISSUED, f"writing {rollout.release.label} to the scale set model")
        return plan.wait("writing the release to the scale set model")

    present = fleet.by_id()
    canaries = [i for i in rollout.canary_ids if i in present]
    if len(canaries) < len(rollout.canary_ids):
        gone = sorted(set(rollout.canary_ids) - set(canaries))
        plan.event(EventKind.CANARY_LOST, f"canary instance(s) {', '.join(gone)} left the scale set")
        plan.update(canary_ids=tuple(canaries), batch_ids=tuple(canaries))
    if not canaries:
        return _choose_canary(plan, fleet, policy)

    assessment = _judge(_observed(canaries, fleet), plan, fleet, policy)
    if assessment.verdict is Verdict.FAILED:
        return _start_rollback(plan, f"canary failed: {assessment.reason}")
    if assessment.verdict is Verdict.SUCCESSFUL:
        plan.update(batch_ids=(), batch_started_at=None, last_progress_at=plan.now)
        if rollout.skip_bake or policy.bake_seconds == 0:
            plan.transition(Phase.PROMOTING, "canary healthy; bake skipped")
            return _decide_promoting(plan, fleet, policy)
        plan.update(judge=None)  # a bake judges afresh, from its first tick
        plan.transition(Phase.BAKING, f"canary healthy; baking for {policy.bake_seconds} s")
        return plan.decision()
    if assessment.verdict is Verdict.UNHEALTHY:
        return _count_unhealthy(plan, policy, f"canary unhealthy: {assessment.reason}")
    if _past_deadline(plan, policy):
        return _start_rollback(
            plan, f"canary made no progress in {policy.progress_deadline_seconds} s: {assessment.reason}"
        )
    _reissue_stalled(
        plan, canaries, fleet, policy, ActionPurpose.CANARY, policy.calculate_canary_budget(len(fleet.instances))
    )
    return plan.wait(f"canary: {assessment.reason}")


def _choose_canary(plan: _Plan, fleet: FleetView, policy: RolloutPolicy) -> Decision:
    """Pick the canary from what is observed (a start, a lost canary, a retry).

    Instances already on the release (they took it earlier in this rollout, before a retry, or were
    created from its model) are the canary first: they are never upgraded again to it. New ones
    are the lowest healthy ids, within the unavailability budget (instances already down, such as
    an earlier canary still broken, count against it)."""
    on_release = [
        v.instance_id
        for v in fleet.instances
        if v.latest_model_applied
        and assess_instance(v) is not Health.UPDATING
        and _on_release_model(plan.rollout, fleet)
    ]
    already = sort_ids(on_release)[: policy.canary_count]
    healthy = [v for v in fleet.instances if assess_instance(v) is Health.HEALTHY and v.instance_id not in already]
    wanted = sorted(healthy, key=lambda v: _num(v.instance_id))[: policy.canary_count - len(already)]
    new = _within_budget(wanted, fleet, policy.calculate_canary_budget(len(fleet.instances)))
    chosen = tuple(sort_ids([*already, *new]))
    if not chosen:
        why = (
            "no healthy instance to use as the canary"
            if not healthy
            else f"no canary within the unavailability budget: {len(_unavailable(fleet))} instance(s) unavailable, "
            f"max unavailable {policy.calculate_canary_budget(len(fleet.instances))}"
        )
        if _past_deadline(plan, policy):
            return _start_rollback(plan, why)
        return plan.wait(f"waiting for a canary: {why}")
    plan.update(
        canary_ids=chosen,
        batch_ids=tuple(new),
        batch_started_at=plan.now if new else None,
        upgraded_ids=tuple(sort_ids(set(plan.rollout.upgraded_ids) | set(chosen))),
        last_progress_at=plan.now,
    )
    if already:
        plan.event(
            EventKind.CANARY_STARTED,
            f"canary instance(s) {', '.join(already)} already on {plan.rollout.release.label}: not upgraded again",
            instances=list(already),
        )
    if not new:
        return plan.wait(f"canary: instance(s) {', '.join(chosen)} already on the release")
    plan.act(UpgradeInstances(tuple(new), ActionPurpose.CANARY))
    plan.event(EventKind.CANARY_STARTED, f"upgrading canary instance(s) {', '.join(new)}", instances=list(new))
    return plan.wait(f"upgrading the canary: instance(s) {', '.join(new)}")


def _count_unhealthy(plan: _Plan, policy: RolloutPolicy, reason: str) -> Decision:
    streak = plan.rollout.unhealthy_streak + 1
    plan.update(unhealthy_streak=streak)
    plan.event(EventKind.HEALTH_CHECK_FAILED, f"{reason} ({streak} of {policy.failure_threshold})", streak=streak)
    if streak >= policy.failure_threshold:
        return _start_rollback(plan, f"{reason}, {streak} consecutive observations")
    return plan.wait(f"{reason} ({streak} of {policy.failure_threshold} before rollback)")


def _on_failed_or_unhealthy(
    plan: _Plan, policy: RolloutPolicy, assessment: Assessment, subject: str
) -> Decision | None:
    """Roll back on a Failed judgement, count an Unhealthy one; None for any other verdict.

    ``subject`` names what was judged, with ``{}`` where "failed" or "unhealthy" goes."""
    if assessment.verdict is Verdict.FAILED:
        return _start_rollback(plan, f"{subject.format('failed')}: {assessment.reason}")
    if assessment.verdict is Verdict.UNHEALTHY:
        return _count_unhealthy(plan, policy, f"{subject.format('unhealthy')}: {assessment.reason}")
    return None


def _thresholds(policy: RolloutPolicy) -> judging.Thresholds:
    return judging.Thresholds(
        alpha=policy.judge_alpha,
        pass_alpha=policy.judge_pass_alpha,
        error_margin=policy.judge_error_margin_percent / 100,
        latency_ratio=policy.judge_latency_ratio,
        min_samples=policy.judge_min_samples,
        marginal_p=policy.judge_marginal_p,
        latency_min_delta_ms=policy.latency_min_delta_ms,
    )


def _what_it_did(view: InstanceView, fleet: FleetView) -> tuple[int, int, list[float]]:
    """One instance in one observation, as the judge counts it: our probe is one request (failed unless the
    instance is healthy, with its latency if it answered), plus what the signal source counted since the
    previous observation. An instance updating says nothing."""
    health = assess_instance(view)
    if health is Health.UPDATING:
        return 0, 0, []
    ok = health is Health.HEALTHY
    latencies = [view.probe.latency_ms] if ok and view.probe is not None and view.probe.latency_ms is not None else []
    requests, errors = 1, 0 if ok else 1
    signals = fleet.signals.get(view.instance_id)
    if signals is not None and signals.requests is not None and signals.requests >= 0:
        # A source's figures are taken as far as they are consistent (no more errors than requests).
        requests += signals.requests
        errors += min(max(0, signals.errors or 0), signals.requests)
        latencies += [ms for ms in signals.latencies_ms if ms >= 0]
    return requests, errors, latencies


def _tally(tally: judging.Tally, views: Sequence[InstanceView], fleet: FleetView) -> judging.Tally:
    for view in views:
        requests, errors, latencies = _what_it_did(view, fleet)
        if requests:
            tally = tally.add(requests, errors, latencies)
    return tally


def _look(plan: _Plan, fleet: FleetView, policy: RolloutPolicy, assessment: Assessment) -> Decision | None:
    """The canary judge's look at this tick of the bake (``rollout.judge``): the canary against as many
    baseline instances (the same ones while they last) over the same window. Fail rolls back now; a
    conclusive Pass promotes before the bake ends; at the end of the bake, Marginal pauses for a human
    (``promote`` or ``abort``) and Pass promotes. None: the bake goes on as before."""
    rollout = plan.rollout
    if assessment.verdict is Verdict.PENDING:
        return None  # the canary is still updating: this observation says nothing about the release
    state = rollout.judge if rollout.judge is not None and rollout.judge.started_at is not None else None
    if state is None:
        state = judging.JudgeState(started_at=rollout.phase_since)  # the bake's start: its first window
    canaries = _observed(rollout.canary_ids, fleet)
    views = fleet.by_id()
    upgraded = set(rollout.upgraded_ids)
    still = [i for i in state.baseline_ids if i in views and i not in upgraded and not views[i].latest_model_applied]
    kept = still[: len(canaries)]
    if len(kept) < len(canaries):
        spare = [
            v.instance_id
            for v in _baseline_views(plan, fleet)
            if v.instance_id not in kept and assess_instance(v) is Health.HEALTHY
        ]
        kept += sort_ids(spare)[: len(canaries) - len(kept)]
    baseline = [views[i] for i in sort_ids(kept)]
    state = replace(
        state,
        baseline_ids=tuple(sort_ids(kept)),
        canary=_tally(state.canary, canaries, fleet),
        baseline=_tally(state.baseline, baseline, fleet),
    )
    started = state.started_at or plan.now
    fraction = (plan.now - started).total_seconds() / policy.bake_seconds if policy.bake_seconds else 1.0
    baked = (plan.now - rollout.phase_since).total_seconds()
    ending = assessment.verdict is Verdict.SUCCESSFUL and baked >= policy.bake_seconds
    state = judging.look(state, _thresholds(policy), fraction, final=ending)
    plan.update(judge=state)
    verdict, line = state.verdict, judging.summary(state)
    if verdict is judging.Verdict.PENDING:
        return None
    if verdict is judging.Verdict.PASS and (assessment.verdict is not Verdict.SUCCESSFUL or ending):
        # Not healthy right now: the bake goes on. At the end of the bake: promoted as before (and recorded).
        return None
    plan.event(EventKind.JUDGED, f"canary judged {verdict.value}: {line}", judgement=dict(state.figures))
    if verdict is judging.Verdict.FAIL:
        return _start_rollback(plan, f"canary judged worse than the baseline: {line}")
    if verdict is judging.Verdict.MARGINAL:
        plan.update(resume_to=Phase.BAKING, failed_from=None)
        plan.transition(Phase.PAUSED, f"canary judged Marginal, a human decides (promote or abort): {line}")
        plan.act(Notify(f"{rollout.release.label}: canary judged Marginal; promote or abort: {line}"))
        return plan.decision()
    plan.update(unhealthy_streak=0, last_progress_at=plan.now)
    plan.transition(
        Phase.PROMOTING, f"canary judged Pass {int(baked)} of {policy.bake_seconds} s into the bake: {line}"
    )
    return _decide_promoting(plan, fleet, policy)


def _decide_baking(plan: _Plan, fleet: FleetView, policy: RolloutPolicy) -> Decision:
    present = fleet.by_id()
    canaries = [i for i in plan.rollout.canary_ids if i in present]
    if len(canaries) < len(plan.rollout.canary_ids):
        # Lost while baking (scale-in): handled as in Canary. The rest bake on; with none left a new
        # canary is chosen within the budget (or the rollout rolls back at the progress deadline).
        gone = sorted(set(plan.rollout.canary_ids) - set(canaries))
        plan.event(EventKind.CANARY_LOST, f"canary instance(s) {', '.join(gone)} left the scale set while baking")
        plan.update(canary_ids=tuple(canaries))
        if not canaries:
            plan.transition(Phase.CANARY, "the canary left the scale set while baking: choosing a new canary")
            plan.update(last_progress_at=plan.now)
            return _decide_canary(plan, fleet, policy)
    assessment = _judge(_observed(canaries, fleet), plan, fleet, policy)
    if assessment.verdict not in (Verdict.SUCCESSFUL, Verdict.FAILED):
        # The bake clock only counts healthy time (BAKE_SECONDS), so any other observation restarts it.
        plan.update(phase_since=plan.now)
    # A CustomScript failure stays an immediate Fail (below); anything else is evidence for the judge.
    judged = (
        None
        if assessment.verdict is Verdict.FAILED or plan.rollout.skip_bake
        else _look(plan, fleet, policy, assessment)
    )
    if judged is not None:
        return judged
    if (acted := _on_failed_or_unhealthy(plan, policy, assessment, "canary {} while baking")) is not None:
        return acted
    if assessment.verdict is not Verdict.SUCCESSFUL:
        # Inconclusive or pending. The progress deadline applies, as in every phase that waits: a bake
        # on hold for ever would hold the scale set (and the queue behind it) for ever.
        if _past_deadline(plan, policy):
            return _start_rollback(
                plan, f"the bake made no progress in {policy.progress_deadline_seconds} s: {assessment.reason}"
            )
        return plan.wait(f"bake on hold: {assessment.reason}")
    # A healthy observation is progress (the bake may be longer than the progress deadline).
    plan.update(unhealthy_streak=0, last_progress_at=plan.now)
    baked = (plan.now - plan.rollout.phase_since).total_seconds()
    if plan.rollout.skip_bake or baked >= policy.bake_seconds:
        plan.update(last_progress_at=plan.now)
        why = "promoted by operator" if plan.rollout.skip_bake else f"canary healthy for {int(baked)} s"
        # A Pass at the end of the bake is the ordinary way on: its figures stay on the rollout (the API's
        # ``judgement``), without an event of their own (Fail, Marginal and an early Pass have one).
        plan.transition(Phase.PROMOTING, why)
        return _decide_promoting(plan, fleet, policy)
    return plan.wait(f"baking: {int(baked)} of {policy.bake_seconds} s, canary healthy")


def _excused(plan: _Plan, fleet: FleetView) -> set[str]:
    """Instances unhealthy before their batch and still unhealthy on the release (not failed, not updating):
    not the release's doing, so not counted against it. One that was healthy and is not after its upgrade
    is counted, as is any failure of the extension (an immediate Fail)."""
    views = fleet.by_id()
    return {
        i
        for i in plan.rollout.unhealthy_before
        if i in views and views[i].latest_model_applied and assess_instance(views[i]) is Health.UNHEALTHY
    }


def _forget_recovered(plan: _Plan, fleet: FleetView) -> None:
    """An instance unhealthy before its batch that has been seen healthy on the release (or left the scale
    set) is an ordinary upgraded instance from then on."""
    views = fleet.by_id()
    kept = tuple(
        i
        for i in plan.rollout.unhealthy_before
        if i in views and not (views[i].latest_model_applied and assess_instance(views[i]) is Health.HEALTHY)
    )
    if kept != plan.rollout.unhealthy_before:
        plan.update(unhealthy_before=kept)


def _judge_counted(views: Sequence[InstanceView], plan: _Plan, fleet: FleetView, policy: RolloutPolicy) -> Assessment:
    """``_judge`` of the instances that count against the release (``_excused`` left out)."""
    excused = _excused(plan, fleet)
    counted = [v for v in views if v.instance_id not in excused]
    if views and not counted:
        ids = ", ".join(v.instance_id for v in views)
        return Assessment(Verdict.SUCCESSFUL, f"{ids} unhealthy before the batch and still: not counted")
    return _judge(counted, plan, fleet, policy)


def _record_unhealthy_before(plan: _Plan, fleet: FleetView, chosen: Sequence[str]) -> None:
    """The batch's pre-batch health: which of its instances are unhealthy (not failed) before their upgrade."""
    views = fleet.by_id()
    down = [i for i in chosen if i in views and assess_instance(views[i]) is Health.UNHEALTHY]
    if down:
        plan.update(unhealthy_before=tuple(sort_ids(set(plan.rollout.unhealthy_before) | set(down))))


def _decide_promoting(plan: _Plan, fleet: FleetView, policy: RolloutPolicy) -> Decision:
    _forget_recovered(plan, fleet)
    rollout = plan.rollout
    gone = [i for i in rollout.batch_ids if i not in fleet.by_id()]
    if gone:
        # Scaled in while upgrading: nothing left to wait for on them.
        plan.event(EventKind.BATCH_SHRUNK, f"batch {rollout.batch_number}: {', '.join(gone)} left the scale set")
        plan.update(batch_ids=tuple(i for i in rollout.batch_ids if i not in gone))
        rollout = plan.rollout
    if rollout.batch_ids:
        batch = _observed(rollout.batch_ids, fleet)
        assessment = _judge_counted(batch, plan, fleet, policy)
        subject = f"batch {rollout.batch_number} {{}}"
        if (acted := _on_failed_or_unhealthy(plan, policy, assessment, subject)) is not None:
            return acted
        if assessment.verdict is not Verdict.SUCCESSFUL:
            if _past_deadline(plan, policy):
                return _start_rollback(
                    plan, f"batch {rollout.batch_number} made no progress in {policy.progress_deadline_seconds} s"
                )
            allowed = len(fleet.instances) if rollout.promote_full else None
            if allowed is None:
                allowed = policy.calculate_max_unavailable(len(fleet.instances))
            _reissue_stalled(plan, rollout.batch_ids, fleet, policy, ActionPurpose.BATCH, allowed)
            if not plan.rollout.batch_ids:
                return _decide_promoting(plan, fleet, policy)  # trimmed to nothing: choose afresh
            return plan.wait(f"batch {rollout.batch_number}: {assessment.reason}")
        plan.event(
            EventKind.BATCH_SUCCEEDED,
            f"batch {rollout.batch_number} ({', '.join(rollout.batch_ids)}) on the new model and healthy",
            instances=list(rollout.batch_ids),
        )
        plan.update(batch_ids=(), batch_started_at=None, last_progress_at=plan.now, unhealthy_streak=0)

    # Every instance this rollout upgraded must stay healthy, not only the newest batch.
    watched = _judge_counted(_observed(plan.rollout.upgraded_ids, fleet), plan, fleet, policy)
    if watched.verdict is Verdict.FAILED:
        return _start_rollback(plan, f"an upgraded instance failed: {watched.reason}")
    if watched.verdict is Verdict.UNHEALTHY:
        return _count_unhealthy(plan, policy, f"an upgraded instance is unhealthy: {watched.reason}")
    if watched.verdict is Verdict.SUCCESSFUL:
        plan.update(unhealthy_streak=0)  # FAILURE_THRESHOLD counts consecutive unhealthy observations

    outdated = [v for v in fleet.instances if not v.latest_model_applied]
    if not outdated:
        excused = _excused(plan, fleet)
        healthy = all(assess_instance(v) is Health.HEALTHY or v.instance_id in excused for v in fleet.instances)
        if watched.verdict is Verdict.SUCCESSFUL and healthy:
            why = f"all {len(fleet.instances)} instances on {rollout.release.label} and healthy"
            if excused:
                why = (
                    f"all {len(fleet.instances)} instances on {rollout.release.label}; healthy but "
                    f"{', '.join(sort_ids(excused))}, unhealthy before their batch as now"
                )
            plan.transition(Phase.SUCCEEDED, why)
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
        plan.event(EventKind.PROMOTE_FULL, f"promote-full: upgrading all {len(chosen)} remaining instances at once")
    else:
        budget = policy.calculate_max_unavailable(len(fleet.instances)) - len(unavailable)
        # BATCH_MODE=progressive sizes the batch by what is already on the release besides the canary.
        present, canaries = fleet.by_id(), set(plan.rollout.canary_ids)
        promoted = [i for i in plan.rollout.upgraded_ids if i not in canaries and i in present]
        size = policy.promotion_batch_size(len(fleet.instances), len(promoted))
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
    _record_unhealthy_before(plan, fleet, chosen)
    plan.update(
        batch_ids=tuple(chosen),
        batch_number=number,
        batch_started_at=plan.now,
        upgraded_ids=tuple(sort_ids(set(plan.rollout.upgraded_ids) | set(chosen))),
        last_progress_at=plan.now,
    )
    plan.act(UpgradeInstances(tuple(chosen), ActionPurpose.BATCH))
    plan.event(
        EventKind.BATCH_STARTED,
        f"batch {number}: upgrading {', '.join(chosen)} ({len(outdated) - len(chosen)} outdated after it)",
        instances=list(chosen),
    )
    return plan.wait(f"batch {number}: upgrading {', '.join(chosen)}")


def _decide_rolling_back(plan: _Plan, fleet: FleetView, policy: RolloutPolicy) -> Decision:
    """Level-triggered: every instance observed on the release goes back to the baseline.

    "On the release" is what the rollout upgraded plus every instance observed with the latest model
    while the model held the release (``_record_on_release``: scale-outs, late upgrades). Once the
    baseline model is back, such an instance is back on the baseline when it reports the latest
    model. Instances never on the release are not judged by ``latestModelApplied``: where ARM keeps
    a model version (docs/design.md, "Behaviour Azure does not document") they read outdated after
    the baseline is written back although they run it. ``RolledBack`` needs every instance on the
    baseline, none updating, and every one healthy."""
    rollout = plan.rollout
    baseline = rollout.baseline
    if baseline is None:
        plan.update(failed_from=Phase.ROLLING_BACK, resume_to=None)
        plan.transition(Phase.FAILED, "no baseline was recorded: cannot roll back automatically")
        return plan.decision()
    if (plan.now - rollout.phase_since).total_seconds() > policy.progress_deadline_seconds * 2:
        plan.update(failed_from=Phase.ROLLING_BACK, resume_to=None)
        plan.transition(
            Phase.FAILED, f"rollback did not finish in {policy.progress_deadline_seconds * 2} s ({rollout.reason})"
        )
        plan.act(Notify(f"{rollout.release.label}: rollback stuck, needs a human"))
        return plan.decision()
    if rollout.reimage_pending:
        return _await_reimage(plan, fleet, policy)
    if not baseline.matches(fleet.model):
        _record_on_release(plan, fleet)
        if fleet.provisioning_state.lower() == "updating":
            return plan.wait("rollback: waiting for the scale set model write to finish")
        plan.act(UpdateModel(baseline, ActionPurpose.ROLLBACK))
        plan.event(EventKind.MODEL_UPDATE_ISSUED, "restoring the baseline model")
        return plan.wait("rollback: restoring the baseline model")

    _record_created_during(plan, fleet)
    rollout = plan.rollout
    moved = set(rollout.upgraded_ids)
    touched = [v for v in fleet.instances if v.instance_id in moved]
    behind = [v for v in touched if not v.latest_model_applied]
    # Moves back already sent (maybe by another host, after this observation was taken) that the
    # observation does not show yet: they are about to take their instance down, so they count
    # against the budget of the next ones (make chaos, seed 3138616654).
    pending = {
        v.instance_id for v in behind if v.instance_id in rollout.rollback_ids and assess_instance(v) is Health.HEALTHY
    }
    allowed = _rollback_allowance(rollout, fleet, policy, pending)
    fresh = [
        v for v in behind if v.instance_id not in rollout.rollback_ids and assess_instance(v) is not Health.UPDATING
    ]
    chosen = _within_budget(fresh, fleet, allowed, pending)
    if chosen:
        plan.update(
            rollback_ids=tuple(sort_ids(set(rollout.rollback_ids) | set(chosen))),
            batch_started_at=plan.now,
        )
        plan.act(UpgradeInstances(tuple(chosen), ActionPurpose.ROLLBACK))
        plan.event(
            EventKind.ROLLBACK_UPGRADE_STARTED, f"moving {', '.join(chosen)} back to the baseline", instances=chosen
        )
        return plan.wait(f"rollback: upgrading {', '.join(chosen)} to the baseline")
    # Moved back once but on the release again (a late upgrade landed), or the call was lost.
    again = [v.instance_id for v in behind if v.instance_id in rollout.rollback_ids]
    _reissue_stalled(plan, again, fleet, policy, ActionPurpose.ROLLBACK, allowed)
    if plan.actions:
        return plan.decision()
    if policy.rollback_reimage and rollout.release.kind is ReleaseKind.SCRIPT:
        # Back on the baseline model, but the bad script's changes are still on the disk.
        due = [
            v
            for v in touched
            if v.latest_model_applied
            and v.instance_id not in rollout.reimaged_ids
            and assess_instance(v) is not Health.UPDATING
        ]
        reimage = _within_budget(due, fleet, allowed, pending)
        if reimage:
            plan.update(reimage_pending=tuple(reimage), reimage_requested_at=plan.now, unhealthy_streak=0)
            plan.act(ReimageInstances(tuple(reimage)))
            plan.event(
                EventKind.REIMAGE_STARTED, f"reimaging {', '.join(reimage)}: a fresh disk with the baseline extension"
            )
            return plan.wait(f"rollback: reimaging {', '.join(reimage)}")
        if due:
            return plan.wait(
                f"rollback: {len(due)} instance(s) to reimage, waiting for the budget "
                f"({len(_unavailable(fleet))} unavailable, max unavailable {allowed})"
            )
    # Back on the baseline yet unhealthy: repaired (reimaged) or Failed now, not after the others, so
    # that a broken instance does not hold the budget the healthy ones wait for.
    back = [v for v in touched if v.latest_model_applied]
    broken = [v for v in back if assess_instance(v) in (Health.UNHEALTHY, Health.FAILED)]
    if broken:
        return _repair_or_fail(plan, broken, policy)
    if behind:
        ids = sort_ids(v.instance_id for v in behind)
        return plan.wait(f"rollback: waiting for {', '.join(ids)} to be back on the baseline")
    updating = sort_ids(v.instance_id for v in fleet.instances if assess_instance(v) is Health.UPDATING)
    if updating:
        return plan.wait(f"rollback: waiting for {', '.join(updating)} to finish updating")
    others = [v for v in fleet.instances if v.instance_id not in moved and assess_instance(v) is not Health.HEALTHY]
    if others:
        # Never on the release, so not the release's doing: not reimaged, waited for (up to the
        # rollback deadline, then Failed for a human with this reason).
        why = "; ".join(describe_instance(v) for v in others)
        return plan.wait(f"rollback: baseline restored; waiting for instances the release never reached: {why}")
    plan.transition(
        Phase.ROLLED_BACK,
        f"baseline restored on {len(touched)} instance(s), all {len(fleet.instances)} healthy; "
        f"cause: {rollout.rollback_reason}",
    )
    plan.act(Notify(f"{rollout.release.label} rolled back: {rollout.rollback_reason}"))
    return plan.decision()


def _rollback_allowance(
    rollout: Rollout, fleet: FleetView, policy: RolloutPolicy, pending: Collection[str] = ()
) -> int | None:
    """How many instances a rollback may have unavailable (None: no limit, ``all-at-once``)."""
    if policy.rollback_mode == "all-at-once":
        return None
    allowed = policy.calculate_max_unavailable(len(fleet.instances))
    down = _unavailable(fleet) | set(pending)
    if not down & set(rollout.upgraded_ids):
        # Instances down for other reasons (never on the release) must not stall the rollback for
        # ever: with none of its own instances down, it always takes one more healthy one at a time.
        allowed = max(allowed, len(down) + 1)
    return allowed


def _await_reimage(plan: _Plan, fleet: FleetView, policy: RolloutPolicy) -> Decision:
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
    # Sent again, it is budgeted again against this observation (as a re-issued batch is): instances
    # chosen because they were down may have recovered since. Those left out are dropped from the
    # intent; a later step chooses them again within the budget (ROLLBACK_REIMAGE) or finds them
    # healthy on the baseline and needing no repair.
    present = {v.instance_id: v for v in fleet.instances}
    candidates = [present[i] for i in rollout.reimage_pending if i in present]
    again = _within_budget(candidates, fleet, _rollback_allowance(rollout, fleet, policy))
    why = "its call failed" if asked is None else f"not confirmed sent within {policy.upgrade_retry_seconds} s"
    if not again:
        plan.update(reimage_pending=(), reimage_requested_at=None)
        return plan.wait(f"rollback: the reimage of {ids} was not sent ({why}); it waits for the budget")
    plan.update(reimage_pending=tuple(again), reimage_requested_at=plan.now)
    plan.act(ReimageInstances(tuple(again)))
    plan.event(EventKind.REIMAGE_REISSUED, f"reimaging {', '.join(again)} again: {why}", instances=list(again))
    return plan.wait(f"rollback: reimaging {', '.join(again)} again ({why})")


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
        plan.event(EventKind.REIMAGE_STARTED, f"the baseline did not repair {', '.join(fresh)}: reimaging ({reason})")
        return plan.wait(f"rollback: reimaging {', '.join(fresh)}")
    plan.update(failed_from=Phase.ROLLING_BACK, resume_to=None)
    plan.transition(Phase.FAILED, f"baseline restored and reimaged, still unhealthy: {reason}")
    plan.act(Notify(f"{plan.rollout.release.label}: rollback could not repair {reason}; needs a human"))
    return plan.decision()


def write_refused(rollout: Rollout, action: UpdateModel, reason: str, now: datetime) -> Decision:
    """ARM refused a model write for good (403: the identity lacks a permission the write needs,
    e.g. read on the image it names). Retrying until the progress deadline would change nothing, so
    stop now with the reason: a refused release write rolls back (nothing took the release, or the
    rollback restores what did); a refused rollback write needs a human (``Failed``)."""
    plan = _Plan(rollout, now)
    if rollout.phase in (Phase.CANARY, Phase.BAKING, Phase.PROMOTING) and action.purpose is ActionPurpose.RELEASE:
        return _start_rollback(plan, f"ARM refused the release's model write: {reason}")
    if rollout.phase is Phase.ROLLING_BACK:
        plan.update(failed_from=Phase.ROLLING_BACK, resume_to=None)
        plan.transition(Phase.FAILED, f"ARM refused the rollback's model write: {reason}")
        plan.act(Notify(f"{rollout.release.label}: rollback refused by ARM, needs a human: {reason}"))
        return plan.decision()
    return plan.decision()


# --- operator commands -------------------------------------------------------------------------


class Verb(enum.StrEnum):
    """The operator's verbs (``POST /api/rollouts/{id}/{verb}``). The value is the verb in the URL."""

    ABORT = "abort"
    PAUSE = "pause"
    RESUME = "resume"
    PROMOTE = "promote"
    PROMOTE_FULL = "promote-full"
    RETRY = "retry"


@dataclass(frozen=True)
class Command:
    """One operator command: the verb, who gave it, why, and (``abort`` only) whether to roll back."""

    verb: Verb
    actor: str = "operator"
    reason: str = ""
    rollback: bool = False

    @property
    def said(self) -> str:
        return f" ({self.reason})" if self.reason else ""


def apply_command(
    rollout: Rollout,
    command: Verb,
    now: datetime,
    *,
    actor: str = "operator",
    reason: str = "",
    rollback: bool = False,
) -> Decision:
    """An operator's verb, as a pure transition. Raises ``CommandError`` when it does not apply."""
    try:
        verb = Verb(command)
    except ValueError:
        raise CommandError(f"unknown command {command!r}; expected one of {', '.join(Verb)}") from None
    return _VERBS[verb](_Plan(rollout, now), Command(verb, actor, reason, rollback))


def _abort(plan: _Plan, command: Command) -> Decision:
    rollout, actor, said = plan.rollout, command.actor, command.said
    if rollout.phase.is_terminal:
        raise CommandError(f"rollout {rollout.id} is already {rollout.phase.value}")
    if command.rollback and rollout.phase is not Phase.QUEUED:
        return _start_rollback(plan, f"aborted by {actor}{said}", actor)
    if _paused_on_marginal(rollout):
        # The human's other answer to a Marginal verdict: the canary is not good enough; it goes back.
        return _start_rollback(plan, f"aborted by {actor}{said} after a Marginal verdict", actor)
    plan.update(batch_ids=(), batch_started_at=None)
    plan.transition(Phase.ABORTED, f"aborted by {actor}{said}; no rollback", actor)
    plan.act(Notify(f"{rollout.release.label} aborted by {actor}{said}"))
    return plan.decision()


def _pause(plan: _Plan, command: Command) -> Decision:
    phase = plan.rollout.phase
    if phase not in (Phase.CANARY, Phase.BAKING, Phase.PROMOTING):
        raise CommandError(f"only a rollout in Canary, Baking or Promoting can be paused; this one is {phase.value}")
    plan.update(resume_to=phase, failed_from=None)
    plan.transition(Phase.PAUSED, f"paused by {command.actor}{command.said}", command.actor)
    return plan.decision()


def _resume(plan: _Plan, command: Command) -> Decision:
    rollout = plan.rollout
    if rollout.phase is not Phase.PAUSED or rollout.resume_to is None:
        raise CommandError(f"only a paused rollout can be resumed; this one is {rollout.phase.value}")
    # The bake clock and the progress deadline restart: time spent paused proves nothing. So does the canary
    # judge: a bake resumed is judged afresh (the verdict that paused it is in the events).
    plan.update(resume_to=None, last_progress_at=plan.now)
    if rollout.resume_to is Phase.BAKING:
        plan.update(judge=None)
    plan.transition(rollout.resume_to, f"resumed by {command.actor}{command.said}", command.actor)
    return plan.decision()


def _paused_on_marginal(rollout: Rollout) -> bool:
    """Paused by the canary judge's Marginal verdict (not by an operator), waiting for promote or abort."""
    return (
        rollout.phase is Phase.PAUSED
        and rollout.resume_to is Phase.BAKING
        and rollout.judge is not None
        and rollout.judge.verdict is judging.Verdict.MARGINAL
    )


def _promote(plan: _Plan, command: Command) -> Decision:
    rollout, verb, actor = plan.rollout, command.verb, command.actor
    full = verb is Verb.PROMOTE_FULL
    if _paused_on_marginal(rollout):
        # The human's answer to a Marginal verdict: the canary is good enough; promotion goes on.
        plan.update(skip_bake=True, promote_full=rollout.promote_full or full, resume_to=None)
        plan.update(last_progress_at=plan.now)
        plan.event(EventKind.PROMOTED, f"{verb} by {actor}{command.said}: Marginal verdict accepted", actor)
        plan.transition(Phase.BAKING, f"{verb} by {actor}{command.said} after a Marginal verdict", actor)
        return plan.decision()
    allowed = (Phase.CANARY, Phase.BAKING, Phase.PROMOTING) if full else (Phase.CANARY, Phase.BAKING)
    if rollout.phase not in allowed:
        names = ", ".join(p.value for p in allowed)
        raise CommandError(f"{verb} applies to a rollout in {names}; this one is {rollout.phase.value}")
    plan.update(skip_bake=True, promote_full=rollout.promote_full or full)
    plan.event(EventKind.PROMOTED, f"{verb} by {actor}{command.said}", actor)
    return plan.wait(f"{verb} by {actor}: the next tick skips the rest of the bake")


def _retry(plan: _Plan, command: Command) -> Decision:
    rollout, actor, said = plan.rollout, command.actor, command.said
    if rollout.phase is not Phase.FAILED:
        raise CommandError(f"only a Failed rollout can be retried; this one is {rollout.phase.value}")
    resume_to = rollout.failed_from or Phase.ROLLING_BACK
    plan.update(failed_from=None, last_progress_at=plan.now, batch_started_at=None)
    if resume_to is not Phase.ROLLING_BACK:
        # It failed going forward (the model was changed under it): start again from the canary,
        # which writes the release's model again, instead of failing on the same drift. It resumes
        # from what the next observation shows, not from scratch: instances it upgraded stay
        # recorded (a rollback still moves them back), instances already on the release are the
        # canary and are never upgraded again, instances down count against the budget, and the
        # model as it is now becomes the reference for later edits (``foreign_model``).
        plan.update(canary_ids=(), batch_ids=(), foreign_model="", unhealthy_streak=0)
        plan.transition(
            Phase.CANARY,
            f"retried by {actor}{said}: re-writing the model if needed, resuming from the fleet",
            actor,
        )
        return plan.decision()
    plan.transition(resume_to, f"retried by {actor}{said}", actor)
    return plan.decision()


# One function per verb: a reader lists the verbs here (tests/unit/test_machine.py checks that none is missing).
_VERBS: dict[Verb, Callable[[_Plan, Command], Decision]] = {
    Verb.ABORT: _abort,
    Verb.PAUSE: _pause,
    Verb.RESUME: _resume,
    Verb.PROMOTE: _promote,
    Verb.PROMOTE_FULL: _promote,
    Verb.RETRY: _retry,
}
