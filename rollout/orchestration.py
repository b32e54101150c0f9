"""Uniform and Flexible orchestration: what the product asks of a scale set's mode, and where a
Flexible scale set's instances take their "latest model" reading from. Pure functions, no I/O.

Design decisions
----------------
* **Both modes, one product.** ``az vmss create`` and the portal create Flexible scale sets, and a
  Flexible scale set supports the Manual upgrade policy and ``manualupgrade`` with instance *names*
  (MicrosoftDocs/azure-docs, articles/virtual-machine-scale-sets/virtual-machine-scale-sets-perform-manual-upgrades.md
  @ 0af0f2eff281c7aa9a7ce00a83daf73ed3f544af: "The instanceIds parameter refers to the ID of the instance
  if using Uniform Orchestration and the instance name if using Flexible Orchestration"). What the
  product needs of either mode is the Manual upgrade policy: Automatic and Rolling would push the new
  model to instances behind the canary's back.
* **A Flexible VM does not say whether it runs the scale set's latest model.** Its instances are
  standalone ``Microsoft.Compute/virtualMachines``; their REST shape (``VirtualMachineProperties``,
  azure-rest-api-specs ComputeRP.json 2026-04-01, vendored in tests/data/azure-rest-specs) has no
  ``latestModelApplied``, which only ``VirtualMachineScaleSetVMProperties`` (Uniform) carries. So when
  the adapter could not read it (``FleetView.model_applied_reported`` is false), the reading comes from
  the rollout's own records instead (``with_recorded_models``): which instances it moved to the release
  (``upgraded_ids``), which back to the baseline (``rollback_ids``), which existed at its start
  (``known_ids``). docs/design.md, "Flexible orchestration", says what this trusts.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import datetime

from rollout.machine import Decision, UpgradeInstances, decide
from rollout.model import FleetView, InstanceView, ModelSpec, Rollout
from rollout.policy import RolloutPolicy

UNIFORM = "uniform"
FLEXIBLE = "flexible"


def orchestration_problem(fleet: FleetView) -> str | None:
    """Why a canary rollout cannot run on this scale set's orchestration and upgrade policy, or None.

    Uniform and Flexible are both accepted; either must have the Manual upgrade policy (with Rolling or
    Automatic the platform itself moves instances to a new model and runs over the canary)."""
    mode = fleet.orchestration_mode.strip().lower()
    if mode not in (UNIFORM, FLEXIBLE):
        return (
            f"the scale set uses {fleet.orchestration_mode!r} orchestration; canary upgrades need Uniform or Flexible"
        )
    if fleet.upgrade_mode.strip().lower() != "manual":
        return (
            f"the scale set's upgrade policy is {fleet.upgrade_mode}: the platform would push the new model "
            "to every instance at once and run over the canary; set upgradePolicy.mode to Manual"
            + (" (Flexible scale sets support it)" if mode == FLEXIBLE else "")
        )
    return None


def is_flexible(fleet: FleetView) -> bool:
    return fleet.orchestration_mode.strip().lower() == FLEXIBLE


def recorded_model(rollout: Rollout, instance_id: str) -> ModelSpec | None:
    """The model the rollout's records say ``instance_id`` runs: the baseline once moved back, the
    release once upgraded, the baseline when untouched since the start, None when unknown (created
    during the rollout, from whatever model the scale set had then).

    An instance whose last upgrade call is not known to have reached ARM (``unsent_ids``: saved, then
    refused, or its host died around the call) runs an unknown model too: the one it had, or the one the
    call moves it to. Unknown reads "not latest" whichever way the rollout goes, so it is upgraded to
    the current model again: forward, a release it may not have; back, a baseline it may not have."""
    if instance_id in rollout.unsent_ids:
        return None
    if instance_id in rollout.rollback_ids:
        return rollout.baseline
    if instance_id in rollout.upgraded_ids:
        return rollout.desired
    if rollout.known_ids and instance_id not in rollout.known_ids:
        return None
    return rollout.baseline


def decide_with_records(rollout: Rollout, fleet: FleetView, policy: RolloutPolicy, now: datetime) -> Decision:
    """``machine.decide`` on ``fleet`` as the records read it (``with_recorded_models``). Where ARM does not
    report the latest model, the decision's upgrades are saved as not yet sent (``unsent_ids``) and
    leave it only once their call has reached ARM (``unsent_after``, in the service after the call):
    a host that dies between saving an upgrade and sending it leaves its instances counted as
    where they were, so the upgrade is sent again rather than taken as done (two-phase, like a reimage)."""
    decision = decide(rollout, with_recorded_models(fleet, rollout), policy, now)
    if fleet.model_applied_reported:
        return decision
    upgrading = {i for a in decision.actions if isinstance(a, UpgradeInstances) for i in a.instance_ids}
    if not upgrading:
        return decision
    pending = tuple(sorted(set(decision.rollout.unsent_ids) | upgrading))
    return replace(decision, rollout=decision.rollout.evolve(unsent_ids=pending))


def unsent_after(
    before: tuple[str, ...], sent: Iterable[Sequence[str]], not_sent: Iterable[Sequence[str]]
) -> tuple[str, ...]:
    """``Rollout.unsent_ids`` after a tick's upgrade calls: the ids of calls that reached ARM leave it,
    the ids of calls that did not (throttled, refused, fenced, never attempted) join it."""
    reached = {i for ids in sent for i in ids}
    missed = {i for ids in not_sent for i in ids}
    return tuple(sorted((set(before) - reached) | missed))


def _on(model: ModelSpec | None, rollout: Rollout, fleet: FleetView) -> bool:
    """Is ``model`` (the release or the baseline, as recorded) the scale set model now?"""
    on_release = rollout.desired.matches(fleet.model) and not (
        rollout.baseline is not None and rollout.baseline.matches(fleet.model)
    )
    if model is None:
        return False
    if model is rollout.desired:
        return on_release
    # The baseline: the model restored, or never left. Without a recorded baseline (not taken yet),
    # an untouched instance is on whatever the model is unless that is already the release.
    return model.matches(fleet.model) if rollout.baseline is not None else not on_release


def with_recorded_models(fleet: FleetView, rollout: Rollout) -> FleetView:
    """``fleet`` with each instance's ``latest_model_applied`` taken from the rollout's records when the
    scale set could not report it (Flexible orchestration); unchanged when it did (Uniform).

    An instance the records do not know (created during the rollout) reads "not latest": moving an
    instance to the scale set's current model is always safe, leaving one on an unknown model is not."""
    if fleet.model_applied_reported:
        return fleet
    instances = tuple(
        _with_latest(v, _on(recorded_model(rollout, v.instance_id), rollout, fleet)) for v in fleet.instances
    )
    return replace(fleet, instances=instances)


def _with_latest(view: InstanceView, latest: bool) -> InstanceView:
    return view if view.latest_model_applied is latest else replace(view, latest_model_applied=latest)


__all__ = [
    "FLEXIBLE",
    "UNIFORM",
    "decide_with_records",
    "is_flexible",
    "orchestration_problem",
    "recorded_model",
    "unsent_after",
    "with_recorded_models",
]
