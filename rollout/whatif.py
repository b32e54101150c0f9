"""What-if: what a release would do to one scale set, computed before anything is written. Pure.

``plan(release, fleet, policy, findings, history)`` returns a ``TargetPlan``: the batch plan (the
canary, then each batch's instance ids, chosen as ``rollout.machine`` chooses them: the lowest healthy
ids, unavailable instances first in the batches since they cost no budget), the worst-case capacity
lost at any moment, the estimated time to full promotion and to a rollback, the ARM writes it draws,
and the pre-flight findings (``rollout.preflight``) plus any the simulation adds (a promotion that
would stall). The service (``RolloutService.plan``) reads what this needs and writes nothing.

Times: a step (the canary, a batch, a rollback step) takes as long as the instances' upgrades took on
this scale set before: the median of the past rollouts' batches (``BatchStarted`` to
``BatchSucceeded`` in their audit trails). Without any, the policy's bound is used:
``PROGRESS_DEADLINE_SECONDS`` per step, the longest a step may take before the rollout rolls back (an
upper bound, said so in ``estimate_source``). Each step also waits for a timer tick, not counted.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from rollout.analysis import assess_instance
from rollout.machine import sort_ids
from rollout.model import EventKind, FleetView, Health, Release, ReleaseKind, RolloutEvent
from rollout.policy import RolloutPolicy
from rollout.preflight import Finding, Severity

# How many past rollouts' trails the service reads for the upgrade times.
HISTORY_ROLLOUTS = 5


@dataclass(frozen=True)
class Step:
    kind: str  # "canary" or "batch"
    number: int  # 0 for the canary, then 1, 2, ...
    instance_ids: tuple[str, ...]
    unavailable: int  # instances down while this step runs (its own and those down already)

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "number": self.number, "instances": list(self.instance_ids)}


@dataclass(frozen=True)
class Writes:
    """ARM writes (model writes, manualupgrade and reimage calls) a path through the rollout draws."""

    model: int
    upgrades: int
    reimages: int = 0

    @property
    def total(self) -> int:
        return self.model + self.upgrades + self.reimages

    def as_dict(self) -> dict[str, int]:
        return {"model": self.model, "upgrades": self.upgrades, "reimages": self.reimages, "total": self.total}


@dataclass(frozen=True)
class TargetPlan:
    target: str
    release: str  # its label, "install_nginx v7"
    fleet_size: int
    healthy: int
    steps: tuple[Step, ...]
    max_unavailable: int  # the most instances down at once, worst case
    step_seconds: float  # how long one step is estimated to take
    estimate_source: str  # where step_seconds comes from
    promotion_seconds: float  # to full promotion
    rollback_seconds: float  # of a rollback from the last batch (the longest)
    promotion_writes: Writes
    rollback_writes: Writes  # a rollback from the last batch (the most writes)
    canary_rollback_writes: Writes  # a rollback of the canary (the likeliest)
    findings: tuple[Finding, ...] = field(default_factory=tuple)

    @property
    def refused(self) -> bool:
        return any(f.severity is Severity.REFUSE for f in self.findings)

    def as_dict(self) -> dict[str, Any]:
        n = self.fleet_size
        return {
            "target": self.target,
            "release": self.release,
            "verdict": "refused" if self.refused else ("warnings" if self.findings else "ok"),
            "fleet": {"instances": n, "healthy": self.healthy},
            "steps": [s.as_dict() for s in self.steps],
            "capacity": {
                "maxUnavailable": self.max_unavailable,
                "maxUnavailablePercent": round(100 * self.max_unavailable / n, 1) if n else 0.0,
                "minServing": n - self.max_unavailable,
            },
            "estimate": {
                "stepSeconds": round(self.step_seconds, 1),
                "source": self.estimate_source,
                "promotionSeconds": round(self.promotion_seconds),
                "rollbackSeconds": round(self.rollback_seconds),
            },
            "armWrites": {
                "promotion": self.promotion_writes.as_dict(),
                "rollbackFromLastBatch": self.rollback_writes.as_dict(),
                "rollbackOfCanary": self.canary_rollback_writes.as_dict(),
            },
            "findings": [f.as_dict() for f in self.findings],
        }


def batch_plan(fleet: FleetView, policy: RolloutPolicy) -> tuple[list[Step], Finding | None]:
    """The canary and the batches, as ``rollout.machine`` would choose them if every step succeeds
    (an upgraded instance is then healthy). A finding when the plan cannot finish."""
    n = len(fleet.instances)
    down = {v.instance_id for v in fleet.instances if assess_instance(v) is not Health.HEALTHY}
    healthy = sort_ids(v.instance_id for v in fleet.instances if v.instance_id not in down)
    allowed = policy.calculate_canary_budget(n) - len(down)
    canary = healthy[: max(0, min(policy.canary_count, allowed))]
    if not canary:
        why = "no healthy instance" if not healthy else f"{len(down)} instance(s) down use the budget"
        return [], Finding("plan", Severity.WARN, f"no canary can be chosen now: {why}")
    steps = [Step("canary", 0, tuple(canary), len(canary) + len(down))]
    outdated = [i for i in sort_ids(v.instance_id for v in fleet.instances) if i not in canary]
    budget_total = policy.calculate_max_unavailable(n)
    number = promoted = 0
    while outdated:
        size = policy.promotion_batch_size(n, promoted)  # fixed, or 1, 2, 4, ... (BATCH_MODE)
        budget = budget_total - len(down)
        candidates = sorted(outdated, key=lambda i: i not in down)  # stable: the id order within each
        chosen: list[str] = []
        for iid in candidates:
            if len(chosen) >= size:
                break
            if iid in down:
                chosen.append(iid)
            elif budget > 0:
                chosen.append(iid)
                budget -= 1
        if not chosen:
            return steps, Finding(
                "plan",
                Severity.WARN,
                f"promotion would stall after batch {number}: {len(down)} instance(s) down use the budget of "
                f"{budget_total} ({len(outdated)} instance(s) left outdated)",
            )
        number += 1
        unavailable = len(down | set(chosen))
        steps.append(Step("batch", number, tuple(sort_ids(chosen)), unavailable))
        outdated = [i for i in outdated if i not in chosen]
        down -= set(chosen)
        promoted += len(chosen)
    return steps, None


def upgrade_seconds(history: Iterable[Sequence[RolloutEvent]]) -> list[float]:
    """How long each batch of past rollouts took: ``BatchStarted`` to the next ``BatchSucceeded``."""
    durations: list[float] = []
    for events in history:
        started = None
        for event in sorted(events, key=lambda e: e.at):
            if event.kind is EventKind.BATCH_STARTED:
                started = event.at
            elif event.kind is EventKind.BATCH_SUCCEEDED and started is not None:
                durations.append((event.at - started).total_seconds())
                started = None
    return durations


def rollback_steps(policy: RolloutPolicy, fleet_size: int, moved: int) -> int:
    """Steps a rollback of ``moved`` healthy instances takes: one (``all-at-once``), else one per
    unavailability budget's worth (``budgeted``)."""
    if moved <= 0:
        return 0
    if policy.rollback_mode == "all-at-once":
        return 1
    return math.ceil(moved / policy.calculate_max_unavailable(fleet_size))


def plan(
    target: str,
    release: Release,
    fleet: FleetView,
    policy: RolloutPolicy,
    findings: Sequence[Finding],
    history: Iterable[Sequence[RolloutEvent]] = (),
) -> TargetPlan:
    n = len(fleet.instances)
    healthy = sum(1 for v in fleet.instances if assess_instance(v) is Health.HEALTHY)
    steps, stall = batch_plan(fleet, policy)
    found = [*findings, *([stall] if stall is not None else [])]
    observed = upgrade_seconds(history)
    if observed:
        step_seconds = float(statistics.median(observed))
        source = f"observed: the median of {len(observed)} batch(es) of past rollouts on this scale set"
    else:
        step_seconds = float(policy.progress_deadline_seconds)
        source = (
            "policy: no past batch on this scale set, so PROGRESS_DEADLINE_SECONDS per step "
            f"({policy.progress_deadline_seconds} s), an upper bound"
        )
    batches = sum(1 for s in steps if s.kind == "batch")
    promotion = (1 + batches) * step_seconds + policy.bake_seconds if steps else 0.0
    reimage = release.kind is ReleaseKind.SCRIPT and policy.rollback_reimage
    per_step = 2 if reimage else 1  # move back, then reimage: each an ARM call and a wait
    upgraded = sum(len(s.instance_ids) for s in steps)
    canary = len(steps[0].instance_ids) if steps else 0
    last = rollback_steps(policy, n, upgraded)
    first = rollback_steps(policy, n, canary)
    return TargetPlan(
        target=target,
        release=release.label,
        fleet_size=n,
        healthy=healthy,
        steps=tuple(steps),
        max_unavailable=max((s.unavailable for s in steps), default=0),
        step_seconds=step_seconds,
        estimate_source=source,
        promotion_seconds=promotion,
        rollback_seconds=last * per_step * step_seconds,
        promotion_writes=Writes(model=1, upgrades=len(steps)),
        rollback_writes=Writes(model=2, upgrades=len(steps) + last, reimages=last if reimage else 0),
        canary_rollback_writes=Writes(model=2, upgrades=1 + first, reimages=first if reimage else 0),
        findings=tuple(found),
    )


__all__ = [
    "HISTORY_ROLLOUTS",
    "Step",
    "TargetPlan",
    "Writes",
    "batch_plan",
    "plan",
    "rollback_steps",
    "upgrade_seconds",
]
