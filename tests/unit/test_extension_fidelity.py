"""An extension read from ARM and written back stays the same extension (a child-resource PUT replaces
all of it), and a release changes only what a release changes. The property list comes from the REST
spec vendored in tests/data/azure-rest-specs, so a spec with a new property fails here first."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from emulator.arm import ArmEmulator
from rollout.adapters.compute import extension_body, parse_extension_spec
from rollout.adapters.tables import extension_from_dict, extension_to_dict
from rollout.model import ExtensionSpec
from rollout.releases import ExtensionDefaults, build_release, desired_model, parse_release_name

SPEC_FILE = Path(__file__).resolve().parents[1] / "data" / "azure-rest-specs" / "ComputeRP.vmss-subset.json"
BASE = "https://releases.blob.core.windows.net/init"


def spec_properties() -> dict[str, Any]:
    definitions = json.loads(SPEC_FILE.read_text())["definitions"]
    return dict(definitions["VirtualMachineScaleSetExtensionProperties"]["properties"])


def writable_properties() -> set[str]:
    return {name for name, prop in spec_properties().items() if not prop.get("readOnly")}


# One value for every property of VirtualMachineScaleSetExtensionProperties, as ARM would return it.
FULL: dict[str, Any] = {
    "forceUpdateTag": "tag-7",
    "publisher": "Microsoft.Azure.Extensions",
    "type": "CustomScript",
    "typeHandlerVersion": "2.1",
    "autoUpgradeMinorVersion": False,
    "enableAutomaticUpgrade": True,
    "settings": {
        "fileUris": ["https://other.example/boot.sh"],
        "commandToExecute": "sh boot.sh",
        "skipDos2Unix": True,
        "timestamp": 42,
    },
    "protectedSettings": {"managedIdentity": {}},
    "provisioningState": "Succeeded",
    "provisionAfterExtensions": ["HealthExtension", "KeyVaultForLinux"],
    "suppressFailures": True,
    "protectedSettingsFromKeyVault": {
        "secretUrl": "https://kv.vault.azure.net/secrets/cse/1",
        "sourceVault": {"id": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv"},
    },
}


def vmss_with(props: dict[str, Any], name: str = "CustomScript") -> dict[str, Any]:
    return {
        "properties": {
            "virtualMachineProfile": {"extensionProfile": {"extensions": [{"name": name, "properties": props}]}}
        }
    }


def test_the_sample_covers_every_property_of_the_spec() -> None:
    assert set(FULL) == set(spec_properties())
    assert writable_properties() == set(FULL) - {"provisioningState"}


def test_every_writable_property_read_from_arm_is_written_back_unchanged() -> None:
    readable = {k: v for k, v in FULL.items() if k != "protectedSettings"}  # ARM never returns it
    spec = parse_extension_spec(vmss_with(readable), "customscript")
    assert spec is not None and spec.protected_settings is None
    body = extension_body(spec)
    assert body["name"] == "CustomScript"
    assert body["properties"] == {k: v for k, v in readable.items() if k != "provisioningState"}
    # With the protected settings known (our own release, or the targets row), they go along too.
    known = extension_body(ExtensionSpec(**{**spec.__dict__, "protected_settings": {"managedIdentity": {}}}))
    assert set(known["properties"]) == writable_properties()


def test_absent_optional_properties_stay_absent() -> None:
    minimal = {"publisher": "Microsoft.Azure.Extensions", "type": "CustomScript", "typeHandlerVersion": "2.1"}
    spec = parse_extension_spec(vmss_with(minimal), "CustomScript")
    assert spec is not None
    body = extension_body(spec)["properties"]
    for name in ("enableAutomaticUpgrade", "provisionAfterExtensions", "suppressFailures", "forceUpdateTag"):
        assert name not in body
    assert "protectedSettingsFromKeyVault" not in body and "protectedSettings" not in body


def test_the_state_store_keeps_every_field_and_reads_old_rows() -> None:
    spec = parse_extension_spec(vmss_with({k: v for k, v in FULL.items() if k != "protectedSettings"}), "x")
    assert spec is None  # a different name
    spec = parse_extension_spec(vmss_with(dict(FULL)), "CustomScript")
    assert spec is not None
    again = extension_from_dict(json.loads(json.dumps(extension_to_dict(spec))))
    assert again == spec
    old_row = {k: v for k, v in extension_to_dict(spec).items() if k in ExtensionSpec.__dataclass_fields__}
    for name in ("enable_automatic_upgrade", "provision_after_extensions", "suppress_failures"):
        old_row.pop(name)
    old_row.pop("protected_settings_from_key_vault")
    restored = extension_from_dict(old_row)
    assert restored.enable_automatic_upgrade is None and restored.provision_after_extensions is None


def test_the_emulator_stores_and_returns_every_property_but_protected_settings() -> None:
    # Through the code path of an extension PUT (replace) and PATCH (merge).
    stored = ArmEmulator._extension_from_body("CustomScript", {"properties": FULL}, None, replace=True)
    answer = stored.to_json("/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/v")
    assert answer["properties"] == {k: v for k, v in FULL.items() if k != "protectedSettings"}
    hidden = stored.to_json(key_vault_reference=False)["properties"]
    assert "protectedSettingsFromKeyVault" not in hidden and hidden["suppressFailures"] is True
    # A PUT replaces: what the new body leaves out is gone. A PATCH merges.
    replaced = ArmEmulator._extension_from_body(
        "CustomScript",
        {"properties": {"publisher": "p", "type": "t", "typeHandlerVersion": "1.0"}},
        stored,
        replace=True,
    )
    assert "suppressFailures" not in replaced.to_json()["properties"]
    assert "autoUpgradeMinorVersion" not in replaced.to_json()["properties"]  # absent stays absent
    merged = ArmEmulator._extension_from_body(
        "CustomScript", {"properties": {"settings": {"a": 1}}}, stored, replace=False
    )
    assert merged.to_json()["properties"]["provisionAfterExtensions"] == ["HealthExtension", "KeyVaultForLinux"]


def release(version: int) -> Any:
    name = parse_release_name(f"install_nginx.v{version}.sh")
    assert not isinstance(name, str)
    return build_release(name, f"{BASE}/{name.blob_name}", b"#!/bin/bash\necho hi\n")


def observed(**changes: Any) -> ExtensionSpec:
    spec = parse_extension_spec(
        vmss_with({k: v for k, v in FULL.items() if k != "protectedSettingsFromKeyVault"}), "CustomScript"
    )
    assert spec is not None
    return ExtensionSpec(**{**spec.__dict__, **changes})


def test_a_release_changes_only_the_script_the_command_and_the_protected_settings() -> None:
    current = observed()
    ext = desired_model(release(3), ExtensionDefaults(), current).extension
    assert ext is not None
    assert ext.settings == {
        "fileUris": [f"{BASE}/install_nginx.v3.sh"],
        "commandToExecute": "bash install_nginx.v3.sh",
        "skipDos2Unix": True,
        "timestamp": 42,
    }
    assert ext.protected_settings == {"managedIdentity": {}}
    unchanged = ("name", "publisher", "type", "type_handler_version", "auto_upgrade_minor_version", "force_update_tag")
    for field in (*unchanged, "enable_automatic_upgrade", "provision_after_extensions", "suppress_failures"):
        assert getattr(ext, field) == getattr(current, field), field
    body = extension_body(ext)["properties"]
    assert body["provisionAfterExtensions"] == ["HealthExtension", "KeyVaultForLinux"]
    assert body["suppressFailures"] is True and body["enableAutomaticUpgrade"] is True
    assert body["autoUpgradeMinorVersion"] is False and body["forceUpdateTag"] == "tag-7"


@pytest.mark.parametrize(
    ("settings", "file_auth", "gone"),
    [
        ({"script": "IyEvYmluL3NoCg=="}, "managedIdentity", {"script"}),
        ({"script": "IyEvYmluL3NoCg=="}, "none", {"script"}),
        (
            {"storageAccountName": "acct", "storageAccountKey": "k"},
            "managedIdentity",
            {"storageAccountName", "storageAccountKey"},
        ),
        ({"storageAccountName": "acct"}, "none", set()),
    ],
)
def test_settings_that_would_fight_the_release_are_dropped(
    settings: dict[str, Any], file_auth: str, gone: set[str]
) -> None:
    ext = desired_model(release(4), ExtensionDefaults(file_auth=file_auth), observed(settings=settings)).extension
    assert ext is not None
    assert not gone & set(ext.settings)
    assert set(settings) - gone <= set(ext.settings)


@pytest.mark.parametrize(("version", "expected"), [("2.0", "2.1"), ("2.1", "2.1"), ("2.2", "2.2"), ("3.0", "3.0")])
def test_managed_identity_needs_handler_2_1_or_later(version: str, expected: str) -> None:
    ext = desired_model(release(5), ExtensionDefaults(), observed(type_handler_version=version)).extension
    assert ext is not None and ext.type_handler_version == expected
    kept = desired_model(
        release(5), ExtensionDefaults(file_auth="none"), observed(type_handler_version="2.0")
    ).extension
    assert kept is not None and kept.type_handler_version == "2.0"


def test_a_key_vault_reference_is_never_written_next_to_our_protected_settings() -> None:
    vault = FULL["protectedSettingsFromKeyVault"]
    ext = desired_model(release(6), ExtensionDefaults(), observed(protected_settings_from_key_vault=vault)).extension
    assert ext is not None and ext.protected_settings_from_key_vault is None
