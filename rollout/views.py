"""Rollouts as JSON for the HTTP API. Pure: dataclasses in, plain dicts out."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rollout.analysis import assess_instance, describe_instance
from rollout.knobs import knob_fields
from rollout.model import EventKind, FleetView, Health, ModelSpec, Rollout, RolloutEvent, TargetRecord
from rollout.targets import TargetsConfig
from rollout.waves import GroupRelease


def _time(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def model_json(spec: ModelSpec | None) -> dict[str, Any] | None:
    if spec is None:
        return None
    out: dict[str, Any] = {}
    if spec.image_id:
        out["imageId"] = spec.image_id
    if spec.extension is not None:
        ext = spec.extension
        out["extension"] = {
            "name": ext.name,
            "publisher": ext.publisher,
            "type": ext.type,
            "typeHandlerVersion": ext.type_handler_version,
            "settings": dict(ext.settings),
            # Never echo protected settings: say only whether they are known.
            "protectedSettingsKnown": ext.protected_settings is not None,
            "autoUpgradeMinorVersion": ext.auto_upgrade_minor_version,
        }
        # The other properties the release keeps as they were, when the scale set has them.
        optional = {
            "forceUpdateTag": ext.force_update_tag,
            "enableAutomaticUpgrade": ext.enable_automatic_upgrade,
            "provisionAfterExtensions": ext.provision_after_list,
            "suppressFailures": ext.suppress_failures,
        }
        out["extension"].update({k: v for k, v in optional.items() if v is not None})
    return out


def rollout_summary(r: Rollout) -> dict[str, Any]:
    return {
        "id": r.id,
        "release": r.release.blob_name,
        "version": r.release.version,
        "kind": r.release.kind.value,
        "phase": r.phase.value,
        "reason": r.reason,
        "createdAt": _time(r.created_at),
        "updatedAt": _time(r.updated_at),
        **({"revert": True} if r.revert else {}),  # a group release halted: back to an older release
    }


def rollout_detail(r: Rollout, events: list[RolloutEvent]) -> dict[str, Any]:
    return {
        **rollout_summary(r),
        "release": {
            "name": r.release.blob_name,
            "app": r.release.app,
            "version": r.release.version,
            "kind": r.release.kind.value,
            "url": r.release.blob_url,
            "sha256": r.release.sha256,
            "imageId": r.release.image_id,
            "group": r.release.group,
        },
        "phaseSince": _time(r.phase_since),
        "canary": list(r.canary_ids),
        "batch": {"number": r.batch_number, "instances": list(r.batch_ids), "startedAt": _time(r.batch_started_at)},
        "upgraded": list(r.upgraded_ids),
        "rolledBack": list(r.rollback_ids),
        "unhealthyStreak": r.unhealthy_streak,
        "pausedFrom": _stopped_at(r),
        "holdUntil": _time(r.hold_until),
        "rollbackReason": r.rollback_reason or None,
        "judgement": judgement_json(r),
        "unhealthyBefore": list(r.unhealthy_before),
        "desired": model_json(r.desired),
        "baseline": model_json(r.baseline),
        "events": [
            {
                "at": _time(e.at),
                "kind": e.kind.value,
                "message": e.message,
                "actor": e.actor,
                "phase": e.phase.value if e.phase else None,
                # A verdict of the canary judge carries its figures (p-values, effect sizes, counts).
                **({"judgement": e.data["judgement"]} if e.kind is EventKind.JUDGED and "judgement" in e.data else {}),
            }
            for e in events
        ],
    }


def judgement_json(r: Rollout) -> dict[str, Any] | None:
    """The canary judge's state: its verdict, the instances compared, the counts, the last look's figures."""
    j = r.judge
    if j is None:
        return None
    return {
        "verdict": j.verdict.value,
        "startedAt": _time(j.started_at),
        "looks": j.looks,
        "canaryInstances": list(r.canary_ids),
        "baselineInstances": list(j.baseline_ids),
        "canary": {"requests": j.canary.requests, "errors": j.canary.errors, "latencies": j.canary.latency_count},
        "baseline": {
            "requests": j.baseline.requests,
            "errors": j.baseline.errors,
            "latencies": j.baseline.latency_count,
        },
        "alphaSpent": {"fail": j.spent_fail, "pass": j.spent_pass},
        "figures": dict(j.figures),
    }


def _stopped_at(r: Rollout) -> str | None:
    """``pausedFrom`` in the API: where a Paused rollout resumes, or where a Failed one stopped."""
    phase = r.resume_to or r.failed_from
    return phase.value if phase else None


def target_json(t: TargetRecord | None) -> dict[str, Any] | None:
    if t is None:
        return None
    return {
        "key": t.key,
        "activeRolloutId": t.active_rollout_id,
        "stableVersion": t.stable_version,
        "stableRelease": t.stable_release.blob_name if t.stable_release else None,
        "updatedAt": _time(t.updated_at),
    }


def fleet_json(fleet: FleetView) -> dict[str, Any]:
    """The scale set as the controller sees it: per instance, the model, health and why.

    Where ARM does not report whether an instance runs the latest model (Flexible orchestration), the
    view says null rather than a guess: only a rollout's records know (docs/design.md)."""
    healths = {v.instance_id: assess_instance(v) for v in fleet.instances}
    reported = fleet.model_applied_reported
    return {
        "provisioningState": fleet.provisioning_state,
        "orchestrationMode": fleet.orchestration_mode,
        "upgradeMode": fleet.upgrade_mode,
        "model": model_json(fleet.model),
        "summary": {
            "instances": len(fleet.instances),
            "onLatestModel": sum(v.latest_model_applied for v in fleet.instances) if reported else None,
            **{h.value.lower(): sum(1 for x in healths.values() if x is h) for h in Health},
        },
        "instances": [
            {
                "instanceId": v.instance_id,
                "latestModelApplied": v.latest_model_applied if reported else None,
                "provisioningState": v.provisioning_state,
                "extensionStatus": v.extension_status,
                "vmHealth": v.vm_health,
                "privateIp": v.private_ip,
                "health": healths[v.instance_id].value,
                "detail": describe_instance(v),
            }
            for v in fleet.instances
        ],
    }


# --- group releases (rollout.waves, rollout.groups) ----------------------------------------------


def group_release_summary(g: GroupRelease) -> dict[str, Any]:
    return {
        "id": g.id,
        "group": g.group,
        "release": g.release.blob_name,
        "version": g.release.version,
        "kind": g.release.kind.value,
        "phase": g.phase.value,
        "wave": g.wave + 1,
        "waves": g.wave_count,
        "reason": g.reason,
        "createdAt": _time(g.created_at),
        "updatedAt": _time(g.updated_at),
    }


def group_release_detail(
    g: GroupRelease,
    events: list[RolloutEvent],
    rollouts: Mapping[str, Rollout | None],
    reverts: Mapping[str, Rollout | None],
) -> dict[str, Any]:
    """A group release with, per target, its wave and the rollouts it started there (their summaries)."""
    targets = []
    for t in g.targets:
        rollout, revert = rollouts.get(t.key), reverts.get(t.key)
        targets.append(
            {
                "target": t.key,
                "wave": t.wave + 1,
                "rolloutId": t.rollout_id or None,
                "rollout": rollout_summary(rollout) if rollout is not None else None,
                "previousRelease": t.previous.blob_name if t.previous else None,
                "takenOut": t.excluded,
                "revert": {"id": t.revert_id, "rollout": rollout_summary(revert) if revert else None}
                if t.revert_id
                else None,
            }
        )
    return {
        **group_release_summary(g),
        "phaseSince": _time(g.phase_since),
        "waveBakeSeconds": g.wave_bake_seconds,
        "onFailure": g.on_failure.value,
        "waveCompletedAt": _time(g.wave_completed_at),
        "pausedFrom": g.resume_to.value if g.resume_to else None,
        "targets": targets,
        "events": [
            {
                "at": _time(e.at),
                "kind": e.kind.value,
                "message": e.message,
                "actor": e.actor,
                "target": e.data.get("target"),
            }
            for e in events
        ],
    }


def knob_settings(instance: Any) -> dict[str, Any]:
    """A knob dataclass (``RolloutPolicy``, ``ProbeSettings``) as its app settings: the names and values the
    targets document and the app settings use (a count/percent pair as one setting: ``2`` or ``"25%"``)."""
    out: dict[str, Any] = {}
    fields = knob_fields(type(instance))
    shared = {kf.knob.setting for kf in fields if kf.knob.percent}
    for kf in fields:
        setting, value = kf.knob.setting, getattr(instance, kf.name)
        if setting in out:
            continue
        if kf.knob.percent:
            out[setting] = f"{value}%"
        elif setting in shared and value == 0:
            continue  # 0 = use the percent field, which follows
        else:
            out[setting] = value
    return out


def targets_json(
    config: TargetsConfig,
    problems: tuple[str, ...],
    states: dict[str, dict[str, Any]],
    unrouted: list[Rollout],
) -> dict[str, Any]:
    """``GET /api/targets``: where the configuration comes from, its groups, waves and targets with their
    effective policy and probe and their state (``states`` by target key), the problems that keep it from
    being used, and the latest releases that reached no target."""
    return {
        "source": config.source,
        "ok": not problems,
        "errors": list(problems),
        "defaultGroup": config.default_group,
        "groups": [
            {
                "name": group.name,
                "waveBakeSeconds": group.wave_bake_seconds,
                "onFailure": group.on_failure.value,
                "waves": [
                    {
                        "wave": number,
                        "targets": [
                            {
                                "key": target.key,
                                "subscription": target.ref.subscription_id,
                                "resourceGroup": target.ref.resource_group,
                                "name": target.ref.name,
                                "policy": knob_settings(target.policy),
                                "probe": knob_settings(target.probe),
                                "state": states.get(target.key),
                            }
                            for target in wave.targets
                        ],
                    }
                    for number, wave in enumerate(group.waves, start=1)
                ],
            }
            for group in config.groups
        ],
        "unrouted": [rollout_summary(r) | {"group": r.release.group} for r in unrouted],
    }
