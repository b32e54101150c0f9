"""The extension a release takes over, and state too large for the store, on the in-memory fakes.

The fake scale set replaces the whole extension on a model write (as the child-resource PUT does) and
reads it back without protectedSettings; the fake store encodes every record with the Tables
adapter's own encoders, so it refuses what Azure Tables refuses (64 KiB per string property, 1 MiB
per entity)."""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Sequence
from typing import Any

import pytest

from rollout.model import EventKind, ExtensionSpec, ModelSpec, Phase, Rollout, TargetRecord
from rollout.ports import RecordTooLargeError
from tests.fakes import BASE_URL, v0_extension
from tests.service.test_rollouts import TARGET, World, make_world, script

VAULT = {
    "secretUrl": "https://kv.vault.azure.net/secrets/cse/1",
    "sourceVault": {"id": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv"},
}


def rich_extension(**changes: Any) -> ExtensionSpec:
    """The walkthrough's v0 extension with every optional property of the REST spec set."""
    base = dataclasses.replace(
        v0_extension(),
        type_handler_version="2.1",
        settings={**v0_extension().settings, "skipDos2Unix": True, "timestamp": 7},
        auto_upgrade_minor_version=False,
        force_update_tag="boot-1",
        enable_automatic_upgrade=True,
        provision_after_extensions=("HealthExtension",),
        suppress_failures=True,
    )
    return dataclasses.replace(base, **changes)


def world_with(extension: ExtensionSpec, size: int = 4, **scale_set: Any) -> World:
    return make_world(size, model=ModelSpec(extension=extension, image_id="/img/base"), **scale_set)


KEPT = (
    "name",
    "publisher",
    "type",
    "type_handler_version",
    "auto_upgrade_minor_version",
    "force_update_tag",
    "enable_automatic_upgrade",
    "provision_after_extensions",
    "suppress_failures",
)


def test_a_release_keeps_every_property_it_does_not_change_and_a_rollback_restores_all() -> None:
    original = rich_extension()
    world = world_with(original, broken_releases={"install_nginx.v1.sh"})
    rid = world.service.start_release(script(1)).rollout_id or ""

    [written, *_] = world.scale_set.calls_of("update_model")
    ext = written.extension  # type: ignore[attr-defined]
    for field in KEPT:
        assert getattr(ext, field) == getattr(original, field), field
    assert ext.settings == {
        "fileUris": [f"{BASE_URL}/install_nginx.v1.sh"],
        "commandToExecute": "bash install_nginx.v1.sh",
        "skipDos2Unix": True,
        "timestamp": 7,
    }
    rollout = world.store.get_rollout(TARGET, rid)
    assert rollout is not None and rollout.desired.extension == ext  # what is recorded is what was written

    assert world.tick_until(Phase.ROLLED_BACK, rollout_id=rid) is Phase.ROLLED_BACK
    restored = world.scale_set.calls_of("update_model")[-1].extension  # type: ignore[attr-defined]
    assert restored == original  # every field, protected settings included (ours: from the release container)
    assert world.scale_set.model.extension == original


def test_a_succeeded_release_leaves_the_other_properties_on_the_scale_set() -> None:
    original = rich_extension()
    world = world_with(original)
    rid = world.service.start_release(script(1)).rollout_id or ""
    assert world.tick_until(Phase.SUCCEEDED, rollout_id=rid) is Phase.SUCCEEDED
    model = world.scale_set.model.extension
    assert model is not None
    for field in KEPT:
        assert getattr(model, field) == getattr(original, field), field
    # The next release starts from the same extension, known from the targets row.
    rid2 = world.service.start_release(script(2)).rollout_id or ""
    rollout = world.store.get_rollout(TARGET, rid2)
    assert rollout is not None and rollout.baseline is not None and rollout.baseline.extension == model


@pytest.mark.parametrize(
    ("publisher", "type_"),
    [("Microsoft.Azure.Extensions", "DockerExtension"), ("Microsoft.OSTCExtensions", "CustomScriptForLinux")],
)
def test_an_extension_of_our_name_that_is_not_customscript_v2_is_refused(publisher: str, type_: str) -> None:
    world = world_with(rich_extension(publisher=publisher, type=type_))
    outcome = world.service.start_release(script(1))
    assert outcome.status == "Rejected"
    assert f"{publisher}/{type_}" in outcome.message and "Microsoft.Azure.Extensions/CustomScript" in outcome.message
    assert "nothing was changed" in outcome.message
    assert world.scale_set.calls_of("update_model") == [] and world.scale_set.calls_of("upgrade_instances") == []
    target = world.store.get_target(TARGET)
    assert target is None or target.active_rollout_id is None


def test_the_publisher_and_type_are_compared_as_arm_does_without_case() -> None:
    world = world_with(rich_extension(publisher="microsoft.azure.extensions", type="customScript"))
    assert world.service.start_release(script(1)).phase is Phase.CANARY


def test_protected_settings_from_key_vault_are_refused_with_what_to_do() -> None:
    world = world_with(rich_extension(protected_settings_from_key_vault=VAULT))
    outcome = world.service.start_release(script(1))
    assert outcome.status == "Rejected"
    assert "protectedSettingsFromKeyVault" in outcome.message and "never returns protected settings" in outcome.message
    assert "remove protectedSettingsFromKeyVault" in outcome.message
    assert world.scale_set.calls_of("update_model") == [] and world.scale_set.calls_of("upgrade_instances") == []
    assert world.kinds(outcome.rollout_id or "") == [EventKind.RECEIVED, EventKind.REJECTED]


def test_a_key_vault_reference_arm_does_not_show_cannot_be_refused_and_is_reported_unknown() -> None:
    # The other plausible behaviour: ARM hides the reference. The product cannot see it; the baseline's
    # protected settings are then unknown, and the trail says the rollback restores public settings only.
    foreign = rich_extension(
        settings={"fileUris": ["https://elsewhere.example/boot.sh"], "commandToExecute": "sh boot.sh"},
        protected_settings_from_key_vault=VAULT,
    )
    world = world_with(foreign, key_vault_reference_visible=False, broken_releases={"install_nginx.v1.sh"})
    rid = world.service.start_release(script(1)).rollout_id or ""
    assert EventKind.BASELINE_WARNING in world.kinds(rid)
    assert world.tick_until(Phase.ROLLED_BACK, rollout_id=rid) is Phase.ROLLED_BACK
    restored = world.scale_set.calls_of("update_model")[-1].extension  # type: ignore[attr-defined]
    assert restored.protected_settings is None  # not sent: the PUT does not claim to know them
    assert restored.settings == foreign.settings


def inline_script(kib: int) -> str:
    return base64.b64encode(b"#!/bin/sh\n" + b"echo padding\n" * (kib * 1024 // 13)).decode()


def test_an_oversized_baseline_is_rejected_before_any_arm_write_and_nothing_fails_afterwards() -> None:
    big = rich_extension(settings={"script": inline_script(100)})
    world = world_with(big)
    outcome = world.service.start_release(script(1))

    assert outcome.status == "Rejected"
    assert "too large to store" in outcome.message and "'baseline'" in outcome.message
    assert "inline 'script'" in outcome.message and "64 KiB" in outcome.message and "fileUris" in outcome.message
    assert "nothing was changed on the scale set" in outcome.message
    assert world.scale_set.calls_of("update_model") == [] and world.scale_set.calls_of("upgrade_instances") == []
    target = world.store.get_target(TARGET)
    assert target is None or target.active_rollout_id is None
    rollout = world.store.get_rollout(TARGET, outcome.rollout_id or "")
    assert rollout is not None and rollout.phase is Phase.REJECTED and rollout.baseline is None
    assert world.kinds(rollout.id) == [EventKind.RECEIVED, EventKind.REJECTED]
    # Every later trigger answers normally.
    for _ in range(3):
        world.clock.advance(30)
        assert world.service.tick().status == "Idle"
    assert [r.phase for r in world.service.list()[1]] == [Phase.REJECTED]
    assert world.service.get(rollout.id)[0].reason == outcome.message


def test_an_oversized_baseline_of_a_queued_release_is_rejected_when_its_turn_comes() -> None:
    world = world_with(rich_extension())
    v1 = world.service.start_release(script(1)).rollout_id or ""
    v2 = world.service.start_release(script(2)).rollout_id or ""
    assert world.phase(v2) is Phase.QUEUED
    # Someone replaces the extension with an inline 100 KiB script; the operator aborts v1.
    world.scale_set.model = ModelSpec(extension=rich_extension(settings={"script": inline_script(100)}))
    world.service.command(v1, "abort")  # the same call starts the next queued release: v2
    assert world.phase(v1) is Phase.ABORTED and world.phase(v2) is Phase.REJECTED
    reason = (world.store.get_rollout(TARGET, v2) or pytest.fail()).reason
    assert "too large to store" in reason and "inline 'script'" in reason
    assert len(world.scale_set.calls_of("update_model")) == 1  # v1's own write only
    target = world.store.get_target(TARGET)
    assert target is not None and target.active_rollout_id is None
    world.clock.advance(30)
    assert world.service.tick().status == "Idle"


def test_a_started_rollout_whose_next_state_cannot_be_saved_stops_as_failed_without_acting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world = world_with(rich_extension())
    rid = world.service.start_release(script(1)).rollout_id or ""
    world.tick_until(Phase.PROMOTING, rollout_id=rid)
    upgrades = len(world.scale_set.calls_of("upgrade_instances"))
    before = world.store.get_rollout(TARGET, rid) or pytest.fail()

    real_commit = world.store.commit

    def refuse_growing(target: TargetRecord | None, rollouts: Sequence[Rollout]) -> Any:
        if any(r.phase is Phase.PROMOTING and r.batch_number > before.batch_number for r in rollouts):
            raise RecordTooLargeError("rollout rg:vmss/x: property 'upgraded_ids' is 70000 bytes as UTF-16")
        return real_commit(target, rollouts)

    monkeypatch.setattr(world.store, "commit", refuse_growing)
    world.clock.advance(30)
    world.service.tick()
    world.clock.advance(30)
    outcome = world.service.tick()
    rollout = world.store.get_rollout(TARGET, rid) or pytest.fail()
    assert rollout.phase is Phase.FAILED and rollout.failed_from is Phase.PROMOTING
    assert "could not be saved, so it was not acted on" in rollout.reason and "'upgraded_ids'" in rollout.reason
    assert len(world.scale_set.calls_of("upgrade_instances")) == upgrades  # the unsaved batch was never issued
    assert EventKind.STATE_TOO_LARGE in world.kinds(rid)
    assert outcome.status == "Idle"  # Failed: a human decides; ticks answer normally
    target = world.store.get_target(TARGET)
    assert target is not None and target.active_rollout_id == rid


def test_a_huge_extension_message_is_clipped_so_the_rollback_is_saved() -> None:
    # The CustomScript status carries the script's output; one that prints 40,000 characters must
    # not make the rollback's reason unsavable (32 K characters per property).
    world = world_with(rich_extension(), failing_releases={"install_nginx.v1.sh"}, failure_output="x" * 40_000)
    rid = world.service.start_release(script(1)).rollout_id or ""
    assert world.tick_until(Phase.ROLLED_BACK, rollout_id=rid) is Phase.ROLLED_BACK
    rollout = world.store.get_rollout(TARGET, rid) or pytest.fail()
    assert "more characters not stored]" in rollout.rollback_reason
    assert len(rollout.rollback_reason) < 9000
    assert all(len(e.message) < 9000 for e in world.store.list_events(TARGET, rid))


def test_an_event_whose_evidence_is_too_large_is_kept_without_it() -> None:
    world = world_with(rich_extension())
    rid = world.service.start_release(script(1)).rollout_id or ""
    rollout = world.store.get_rollout(TARGET, rid) or pytest.fail()
    world.service._record(rollout, EventKind.BASELINE_WARNING, "a big observation", dump="y" * 70_000)
    [event] = [e for e in world.store.list_events(TARGET, rid) if e.message == "a big observation"]
    assert event.message == "a big observation"
    assert "too large to store" in event.data["evidenceDropped"] and "'data'" in event.data["evidenceDropped"]
