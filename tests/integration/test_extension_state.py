"""The extension a release takes over, and oversized state, through the function app's own triggers:
Azurite for blobs and tables, the ARM emulator over HTTPS, the real SDK clients (the compute adapter
writes the extension with VirtualMachineScaleSetExtensions_CreateOrUpdate, a PUT of the whole child
resource)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.fixtures.emulator import EMULATOR_TOKEN
from tests.integration.test_emulator_shapes import SpecSchemas, _call, schemas  # noqa: F401 (schemas: fixture)
from tests.integration.test_function_app_rollout import App, app  # noqa: F401 (app is a fixture)

pytestmark = pytest.mark.integration

# Every optional property of VirtualMachineScaleSetExtensionProperties the product does not change.
EXTRAS: dict[str, Any] = {
    "typeHandlerVersion": "2.1",
    "autoUpgradeMinorVersion": False,
    "enableAutomaticUpgrade": True,
    "forceUpdateTag": "boot-1",
    "provisionAfterExtensions": ["HealthExtension"],
    "suppressFailures": True,
}
VAULT = {
    "secretUrl": "https://kv.vault.azure.net/secrets/cse/1",
    "sourceVault": {"id": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv"},
}


def use_scale_set(application: App, make_scale_set: Any, monkeypatch: pytest.MonkeyPatch, **kwargs: Any) -> Any:
    handle = make_scale_set(3, **kwargs)
    monkeypatch.setenv("VMSS_NAME", handle.name)
    return handle


def arm_writes(emulator: Any) -> list[Any]:
    return [r for r in emulator.requests() if r.method in ("PUT", "PATCH", "POST")]


def model_extension(emulator: Any, handle: Any) -> dict[str, Any]:
    [ext] = emulator.describe(handle.resource_group, handle.name)["extensions"]
    return ext["properties"]  # type: ignore[no-any-return]


def test_a_release_and_its_rollback_keep_every_property_of_the_extension(
    app: App,  # noqa: F811
    arm_emulator: Any,
    make_scale_set: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    v0_url = app.blobs.url_for("install_nginx.sh")  # uploaded by the app fixture
    settings = {"fileUris": [v0_url], "commandToExecute": "bash install_nginx.sh", "skipDos2Unix": True}
    handle = use_scale_set(app, make_scale_set, monkeypatch, extension_settings=settings, extension_properties=EXTRAS)
    before = model_extension(arm_emulator, handle)
    assert {k: before[k] for k in EXTRAS} == EXTRAS
    arm_emulator.fail_release(handle.resource_group, handle.name, r"install_nginx\.v1\.sh", mode="extension")
    arm_emulator.clear_requests()

    app.upload("install_nginx.v1.sh", b"#!/bin/bash\nexit 1\n")
    [release_put] = arm_emulator.requests("PUT", "/extensions/")
    props = release_put.body["properties"]
    assert {k: props[k] for k in EXTRAS} == EXTRAS
    assert props["settings"]["skipDos2Unix"] is True and props["settings"]["fileUris"][0].endswith(
        "/install_nginx.v1.sh"
    )
    during = model_extension(arm_emulator, handle)
    assert {k: during[k] for k in EXTRAS} == EXTRAS

    [summary] = app.rollouts()
    detail = app.tick_until(summary["id"], "RolledBack")
    assert "extension failed" in detail["rollbackReason"]
    for model in (detail["baseline"]["extension"], detail["desired"]["extension"]):  # what GET shows
        assert {k: model[k] for k in EXTRAS if k != "typeHandlerVersion"} == {
            k: v for k, v in EXTRAS.items() if k != "typeHandlerVersion"
        }
    release, rollback = arm_emulator.requests("PUT", "/extensions/")
    assert release.body == release_put.body
    restored = rollback.body["properties"]
    assert {k: restored[k] for k in EXTRAS} == EXTRAS
    assert restored["settings"] == settings
    assert "protectedSettings" in restored  # known: the baseline's script came from the release container
    [stored] = arm_emulator.scale_set(handle.resource_group, handle.name).model.extensions
    assert stored.protected_settings == {"managedIdentity": {}}
    assert model_extension(arm_emulator, handle) == before  # the scale set holds the original extension again


@pytest.mark.parametrize(
    ("extension", "expected"),
    [
        ({"type": "DockerExtension"}, "Microsoft.Azure.Extensions/DockerExtension, not the Custom Script Extension"),
        ({"protectedSettingsFromKeyVault": VAULT}, "reads its protected settings from Key Vault"),
    ],
)
def test_pre_flight_refuses_an_extension_the_release_could_not_give_back(
    app: App,  # noqa: F811
    arm_emulator: Any,
    make_scale_set: Any,
    monkeypatch: pytest.MonkeyPatch,
    extension: dict[str, Any],
    expected: str,
) -> None:
    use_scale_set(app, make_scale_set, monkeypatch, extension_properties=extension)
    arm_emulator.clear_requests()
    app.upload("install_nginx.v1.sh", b"#!/bin/bash\necho v1\n")
    [summary] = app.rollouts()
    assert summary["phase"] == "Rejected" and expected in summary["reason"]
    assert "nothing was changed" in summary["reason"]
    assert arm_writes(arm_emulator) == []
    detail = app.rollout(summary["id"])
    assert [e["kind"] for e in detail["events"]] == ["Received", "Rejected"]


@pytest.fixture
def key_vault_reference_hidden(arm_emulator: Any) -> Iterator[None]:
    arm_emulator.set_key_vault_reference_visible(False)
    try:
        yield
    finally:
        arm_emulator.set_key_vault_reference_visible(True)


def test_a_key_vault_reference_arm_does_not_return_leaves_the_protected_settings_unknown(
    app: App,  # noqa: F811
    arm_emulator: Any,
    make_scale_set: Any,
    monkeypatch: pytest.MonkeyPatch,
    key_vault_reference_hidden: None,
    compute_client: Any,
) -> None:
    # The undocumented alternative: GET does not show protectedSettingsFromKeyVault. Then nothing can
    # refuse it; the baseline's protected settings are unknown and the trail says so.
    settings = {"fileUris": ["https://elsewhere.example/boot.sh"], "commandToExecute": "sh boot.sh"}
    handle = use_scale_set(
        app,
        make_scale_set,
        monkeypatch,
        extension_settings=settings,
        extension_properties={"protectedSettingsFromKeyVault": VAULT},
    )
    seen = compute_client.virtual_machine_scale_sets.get(handle.resource_group, handle.name).as_dict()
    assert "protectedSettingsFromKeyVault" not in json.dumps(seen) and "sourceVault" not in json.dumps(seen)
    app.upload("install_nginx.v1.sh", b"#!/bin/bash\necho v1\n")
    [summary] = app.rollouts()
    assert summary["phase"] == "Canary"
    detail = app.rollout(summary["id"])
    [warning] = [e for e in detail["events"] if e["kind"] == "BaselineWarning"]
    assert "protected settings cannot be read back" in warning["message"]
    [put] = arm_emulator.requests("PUT", "/extensions/")
    assert "protectedSettingsFromKeyVault" not in put.body["properties"]


def test_a_100_kib_inline_script_is_rejected_with_the_reason_and_every_trigger_answers(
    app: App,  # noqa: F811
    arm_emulator: Any,
    make_scale_set: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    script = base64.b64encode(b"#!/bin/sh\n" + b"echo 0123456789abcdef\n" * (100 * 1024 // 21)).decode()
    assert len(script) > 100 * 1024
    use_scale_set(app, make_scale_set, monkeypatch, extension_settings={"script": script})
    arm_emulator.clear_requests()

    app.upload("install_nginx.v1.sh", b"#!/bin/bash\necho v1\n")  # the blob trigger returns normally

    assert arm_writes(arm_emulator) == []  # the scale set was left untouched
    [summary] = app.rollouts()
    assert summary["phase"] == "Rejected"
    reason = summary["reason"]
    assert "too large to store" in reason and "'baseline'" in reason and "inline 'script'" in reason
    assert "64 KiB per string property" in reason and "settings.fileUris" in reason
    detail = app.rollout(summary["id"])
    assert detail["reason"] == reason
    assert [e["kind"] for e in detail["events"]] == ["Received", "Rejected"]
    assert detail["events"][-1]["message"] == reason
    for _ in range(3):
        app.tick()  # raises if the timer trigger fails
    status, listing = app.http("list_rollouts", "GET", {})
    assert status == 200 and (listing["target"] is None or listing["target"]["activeRolloutId"] is None)
    assert app.http("fleet_status", "GET", {})[0] == 200
    status, payload = app.http("steer_rollout", "POST", {"id": summary["id"], "verb": "retry"})
    assert status == 409 and "Rejected" in payload["error"]
    assert arm_writes(arm_emulator) == []


def test_the_emulator_answers_every_extension_property_in_the_spec_shape(
    schemas: SpecSchemas,  # noqa: F811
    make_scale_set: Any,
    compute_client: Any,
) -> None:
    handle = make_scale_set(1, serve=False, extension_properties={**EXTRAS, "protectedSettingsFromKeyVault": VAULT})
    exts = compute_client.virtual_machine_scale_set_extensions
    one = _call(exts.get, handle.resource_group, handle.name, "CustomScript").last_body
    schemas.validate("VirtualMachineScaleSetExtensions_Get", one)
    assert {k: one["properties"][k] for k in EXTRAS} == EXTRAS
    assert one["properties"]["protectedSettingsFromKeyVault"] == VAULT
    vmss = _call(compute_client.virtual_machine_scale_sets.get, handle.resource_group, handle.name).last_body
    schemas.validate("VirtualMachineScaleSets_Get", vmss)
    [in_profile] = vmss["properties"]["virtualMachineProfile"]["extensionProfile"]["extensions"]
    assert {k: in_profile["properties"][k] for k in EXTRAS} == EXTRAS


def test_the_admin_api_creates_an_extension_with_any_spec_property(arm_emulator: Any, compute_client: Any) -> None:
    body = {
        "resource_group": "rg-admin",
        "name": "vmss-extension-props",
        "instances": 1,
        "serve": False,
        "extension": {"settings": {"commandToExecute": "true"}, "properties": EXTRAS},
    }
    answer = requests.post(
        f"{arm_emulator.url}/_admin/scalesets",
        json=body,
        headers={"Authorization": f"Bearer {EMULATOR_TOKEN}"},
        verify=arm_emulator.ca_bundle,
        timeout=10,
    )
    try:
        assert answer.status_code == 201, answer.text
        ext = compute_client.virtual_machine_scale_set_extensions.get(
            "rg-admin", "vmss-extension-props", "CustomScript"
        )
        props = ext.as_dict()["properties"]
        assert {k: props[k] for k in EXTRAS} == EXTRAS
    finally:
        arm_emulator.delete_scale_set("rg-admin", "vmss-extension-props")
