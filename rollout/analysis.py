"""Health verdicts: one instance, and the canary judged against the baseline. Pure.

``assess_instance`` turns everything one observation says about an instance (ARM provisioning
state, the CustomScript status, the application health extension, power state, our HTTP probe)
into one ``Health``. ``assess_canary`` is the Kayenta-style question: is the *release* bad, or is
the whole fleet having a bad minute? A canary that fails while most baseline instances fail too is
``Inconclusive``: the decider neither counts it against the release nor lets the bake progress.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from rollout.model import Health, InstanceView

_UPDATING_STATES = frozenset({"updating", "creating", "migrating", "deleting"})
_FAILED_STATES = frozenset({"failed"})


def assess_instance(view: InstanceView) -> Health:
    """One instance's health in this observation."""
    provisioning = view.provisioning_state.lower()
    extension = (view.extension_status or "").lower()
    if provisioning in _UPDATING_STATES or extension == "transitioning":
        return Health.UPDATING
    if provisioning in _FAILED_STATES or extension == "failed":
        return Health.FAILED
    if view.power_state is not None and view.power_state.lower() != "running":
        return Health.UNHEALTHY
    if view.vm_health is not None and view.vm_health.lower() == "unhealthy":
        return Health.UNHEALTHY
    if view.probe is None or not view.probe.ok:
        return Health.UNHEALTHY
    return Health.HEALTHY


def mixed_fleet_warning(instances: Iterable[InstanceView]) -> str:
    """What a rollout starting now should say about instances not on the scale set's current model
    (an earlier rollout aborted without rollback, a hand edit): its batches upgrade them, and a
    rollback leaves those it never touched as they were, since the baseline it restores is the
    model, not each instance's past (docs/safety.md, "A fleet mixed before the rollout"). '' if none."""
    off = sorted((v.instance_id for v in instances if not v.latest_model_applied), key=_id_order)
    if not off:
        return ""
    return (
        f"instances {', '.join(off)} do not run the scale set's current model (an earlier rollout aborted "
        "without rollback, or a hand edit); this rollout upgrades them with its batches, and a rollback "
        "leaves those it has not touched as they are"
    )


def _id_order(instance_id: str) -> tuple[int, int | str]:
    return (0, int(instance_id)) if instance_id.isdigit() else (1, instance_id)


def describe_instance(view: InstanceView) -> str:
    """Why an instance is what ``assess_instance`` says: for reasons and audit events."""
    health = assess_instance(view)
    if health is Health.FAILED:
        detail = view.extension_message.strip().splitlines()[:3]
        what = "extension failed" if (view.extension_status or "").lower() == "failed" else "provisioning failed"
        return f"instance {view.instance_id}: {what}" + (f" ({' '.join(detail)})" if detail else "")
    if health is Health.UPDATING:
        return f"instance {view.instance_id}: updating"
    if view.power_state is not None and view.power_state.lower() != "running":
        return f"instance {view.instance_id}: power state {view.power_state}"
    if view.vm_health is not None and view.vm_health.lower() == "unhealthy":
        return f"instance {view.instance_id}: application health extension reports Unhealthy"
    if view.probe is None:
        return f"instance {view.instance_id}: not probed (no private IP)"
    if not view.probe.ok:
        return f"instance {view.instance_id}: probe failed: {view.probe.detail}"
    return f"instance {view.instance_id}: healthy ({view.probe.detail})"


class Verdict(str, enum.Enum):
    SUCCESSFUL = "Successful"  # every canary is up to date and healthy
    FAILED = "Failed"  # the release is to blame: roll back now
    UNHEALTHY = "Unhealthy"  # a canary is unhealthy and the baseline is fine: count it
    INCONCLUSIVE = "Inconclusive"  # canary and baseline are both unhealthy: not the release's fault
    PENDING = "Pending"  # still updating, or not upgraded yet


@dataclass(frozen=True)
class Assessment:
    verdict: Verdict
    reason: str


def assess_canary(
    canaries: Sequence[InstanceView],
    baseline: Iterable[InstanceView],
    *,
    latency_ratio: float = 0.0,
    latency_min_delta_ms: float = 50.0,
) -> Assessment:
    """Judge the instances on the new model (``canaries``) against those still on the old one."""
    if not canaries:
        return Assessment(Verdict.PENDING, "no canary instance observed")
    failed = [c for c in canaries if assess_instance(c) is Health.FAILED]
    if failed:
        return Assessment(Verdict.FAILED, "; ".join(describe_instance(c) for c in failed))
    pending = [c for c in canaries if not c.latest_model_applied or assess_instance(c) is Health.UPDATING]
    unhealthy = [c for c in canaries if c not in pending and assess_instance(c) is not Health.HEALTHY]
    if unhealthy:
        reason = "; ".join(describe_instance(c) for c in unhealthy)
        base = list(baseline)
        base_bad = [b for b in base if assess_instance(b) in (Health.UNHEALTHY, Health.FAILED)]
        # More than half of the old fleet failing the same checks means the checks (or a shared
        # dependency) are down, not the release: do not roll back on that evidence alone.
        if base and len(base_bad) * 2 > len(base):
            return Assessment(
                Verdict.INCONCLUSIVE,
                f"{reason}; but {len(base_bad)} of {len(base)} baseline instances are unhealthy too",
            )
        return Assessment(Verdict.UNHEALTHY, reason)
    if pending:
        return Assessment(Verdict.PENDING, "waiting for " + ", ".join(f"instance {c.instance_id}" for c in pending))
    if latency_ratio:
        slower = assess_latency(canaries, baseline, latency_ratio, latency_min_delta_ms)
        if slower is not None:
            return Assessment(Verdict.UNHEALTHY, slower)
    return Assessment(Verdict.SUCCESSFUL, f"{len(canaries)} instance(s) on the new model and healthy")


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def assess_latency(
    canaries: Sequence[InstanceView], baseline: Iterable[InstanceView], ratio: float, min_delta_ms: float
) -> str | None:
    """A reason when the canaries answer markedly slower than the healthy baseline, else None.

    Medians, not means: one slow probe should not fail a release. Without healthy baseline
    latencies (the whole fleet is on the new model) there is nothing to compare: no verdict."""
    new = [c.probe.latency_ms for c in canaries if c.probe is not None and c.probe.latency_ms is not None]
    old = [
        b.probe.latency_ms
        for b in baseline
        if b.probe is not None and b.probe.latency_ms is not None and assess_instance(b) is Health.HEALTHY
    ]
    if not new or not old:
        return None
    canary, base = _median(new), _median(old)
    if canary > base * ratio and canary - base > min_delta_ms:
        return (
            f"canary median latency {canary:.0f} ms vs baseline {base:.0f} ms "
            f"(more than {ratio:g}x and {min_delta_ms:g} ms slower)"
        )
    return None
