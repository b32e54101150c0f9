"""Rollouts as JSON for the HTTP API. Pure: dataclasses in, plain dicts out."""

from __future__ import annotations

from typing import Any

from rollout.analysis import assess_instance, describe_instance
from rollout.model import FleetView, Health, ModelSpec, Rollout, RolloutEvent, TargetRecord


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
        "desired": model_json(r.desired),
        "baseline": model_json(r.baseline),
        "events": [
            {
                "at": _time(e.at),
                "kind": e.kind.value,
                "message": e.message,
                "actor": e.actor,
                "phase": e.phase.value if e.phase else None,
            }
            for e in events
        ],
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
