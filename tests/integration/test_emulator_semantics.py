"""The emulator's switches for ARM behaviour Azure does not document, and its linked authorization
of image ids, driven through the real azure-mgmt-compute client (docs/emulator.md).

* ``model_applied``: "content" (writing the old model back makes untouched instances latest again)
  or "version" (every model write bumps a counter; only instances upgraded since are latest).
* ``upgrade_while_updating``: "accept" (manualupgrade naming an Updating instance is accepted) or
  "conflict" (409 OperationNotAllowed, nothing starts).
* ``readable_scopes``: image GETs answer 403 AuthorizationFailed outside them, a model write naming
  such an image answers 403 LinkedAuthorizationFailed and changes nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

from emulator.arm import ArmEmulator
from tests.fixtures.emulator import EMULATOR_TOKEN, SUBSCRIPTION_ID, free_port

pytestmark = pytest.mark.integration

V1 = {"fileUris": ["https://releases.example/init/install_nginx.v1.sh"], "commandToExecute": "bash install_nginx.v1.sh"}
V2 = {"fileUris": ["https://releases.example/init/install_nginx.v2.sh"], "commandToExecute": "bash install_nginx.v2.sh"}
RG_IMAGES = f"/subscriptions/{SUBSCRIPTION_ID}/resourceGroups/rg-images/providers/Microsoft.Compute"
GALLERY = f"{RG_IMAGES}/galleries/gal"


def write_extension(client: Any, ss: Any, settings: dict[str, Any]) -> None:
    client.virtual_machine_scale_set_extensions.begin_update(
        ss.resource_group, ss.name, "CustomScript", {"properties": {"settings": settings}}
    ).result()


def latest(client: Any, ss: Any) -> dict[str, bool]:
    return {
        vm.instance_id: vm.properties.latest_model_applied
        for vm in client.virtual_machine_scale_set_vms.list(ss.resource_group, ss.name)
    }


def image_patch(image_id: str) -> dict[str, Any]:
    return {"properties": {"virtualMachineProfile": {"storageProfile": {"imageReference": {"id": image_id}}}}}


# -- latestModelApplied: content or version ----------------------------------------------------------


def test_content_mode_makes_untouched_instances_latest_again_when_the_old_model_is_written_back(
    arm_emulator: ArmEmulator, make_scale_set: Any, compute_client: Any
) -> None:
    ss = make_scale_set(3, serve=False, upgrade_seconds=0.05, extension_settings=V1)
    write_extension(compute_client, ss, V2)
    compute_client.virtual_machine_scale_sets.begin_update_instances(
        ss.resource_group, ss.name, {"instanceIds": ["0"]}
    ).result()
    write_extension(compute_client, ss, V1)  # the rollback's model write
    assert latest(compute_client, ss) == {"0": False, "1": True, "2": True}


def test_version_mode_leaves_every_instance_outdated_until_upgraded_after_the_last_write(
    arm_emulator: ArmEmulator, make_scale_set: Any, compute_client: Any
) -> None:
    arm_emulator.set_semantics(model_applied="version")
    ss = make_scale_set(3, serve=False, upgrade_seconds=0.05, extension_settings=V1)
    write_extension(compute_client, ss, V2)
    compute_client.virtual_machine_scale_sets.begin_update_instances(
        ss.resource_group, ss.name, {"instanceIds": ["0"]}
    ).result()
    assert latest(compute_client, ss) == {"0": True, "1": False, "2": False}
    write_extension(compute_client, ss, V1)
    assert latest(compute_client, ss) == {"0": False, "1": False, "2": False}
    # Upgrading an instance whose content already equals the model is a real apply in this mode.
    compute_client.virtual_machine_scale_sets.begin_update_instances(
        ss.resource_group, ss.name, {"instanceIds": ["0", "1"]}
    ).result()
    assert latest(compute_client, ss) == {"0": True, "1": True, "2": False}
    assert [ss.state.instances[i].upgrades for i in ("0", "1", "2")] == [2, 1, 0]
    assert arm_emulator.describe(ss.resource_group, ss.name)["instances"][2]["latestModelApplied"] is False
    # The $filter reads the same flag.
    outdated = compute_client.virtual_machine_scale_set_vms.list(
        ss.resource_group, ss.name, filter="properties/latestModelApplied eq false"
    )
    assert [vm.instance_id for vm in outdated] == ["2"]


# -- manualupgrade of an Updating instance: accept or conflict ------------------------------------------


def test_conflict_mode_refuses_a_manualupgrade_naming_an_updating_instance_and_starts_nothing(
    arm_emulator: ArmEmulator, make_scale_set: Any, compute_client: Any
) -> None:
    arm_emulator.set_semantics(upgrade_while_updating="conflict")
    ss = make_scale_set(2, serve=False, upgrade_seconds=0.5)
    write_extension(compute_client, ss, V2)
    first = compute_client.virtual_machine_scale_sets.begin_update_instances(
        ss.resource_group, ss.name, {"instanceIds": ["0"]}
    )
    with pytest.raises(HttpResponseError) as refused:
        compute_client.virtual_machine_scale_sets.begin_update_instances(
            ss.resource_group, ss.name, {"instanceIds": ["0", "1"]}
        )
    assert refused.value.status_code == 409
    assert refused.value.error is not None and refused.value.error.code == "OperationNotAllowed"
    assert "instance(s) 0 " in refused.value.error.message
    assert ss.state.instances["1"].upgrades == 0  # the other named instance did not start either
    first.result()
    assert [r.status for r in arm_emulator.requests("POST", "/manualupgrade")] == [202, 409]
    # Once it is no longer Updating, the same call is accepted.
    compute_client.virtual_machine_scale_sets.begin_update_instances(
        ss.resource_group, ss.name, {"instanceIds": ["0", "1"]}
    ).result()
    assert latest(compute_client, ss) == {"0": True, "1": True}


def test_accept_mode_takes_the_same_call(arm_emulator: ArmEmulator, make_scale_set: Any, compute_client: Any) -> None:
    ss = make_scale_set(2, serve=False, upgrade_seconds=0.5)
    write_extension(compute_client, ss, V2)
    first = compute_client.virtual_machine_scale_sets.begin_update_instances(
        ss.resource_group, ss.name, {"instanceIds": ["0"]}
    )
    second = compute_client.virtual_machine_scale_sets.begin_update_instances(
        ss.resource_group, ss.name, {"instanceIds": ["0", "1"]}
    )
    first.result()
    second.result()
    assert [ss.state.instances[i].upgrades for i in ("0", "1")] == [1, 1]


# -- images and linked authorization -------------------------------------------------------------------


def test_image_gets_answer_in_the_official_shapes_404_when_missing_403_when_unreadable(
    arm_emulator: ArmEmulator, make_scale_set: Any, compute_client: Any
) -> None:
    make_scale_set(1, serve=False)  # restores readable_scopes at teardown
    arm_emulator.add_image(f"{RG_IMAGES}/images/web")
    arm_emulator.add_image(f"{GALLERY}/images/nginx/versions/1.0.0")
    image = compute_client.images.get("rg-images", "web")
    assert image.id == f"{RG_IMAGES}/images/web" and image.type == "Microsoft.Compute/images"
    version = compute_client.gallery_image_versions.get("rg-images", "gal", "nginx", "1.0.0")
    assert version.name == "1.0.0" and version.properties.storage_profile.os_disk_image is not None
    definition = compute_client.gallery_images.get("rg-images", "gal", "nginx")
    assert definition.properties.identifier.sku == "nginx" and definition.properties.os_state == "Generalized"
    with pytest.raises(ResourceNotFoundError) as missing:
        compute_client.gallery_image_versions.get("rg-images", "gal", "nginx", "8.0.0")
    assert missing.value.error is not None and missing.value.error.code == "ResourceNotFound"

    arm_emulator.set_readable_scopes([f"/subscriptions/{SUBSCRIPTION_ID}/resourceGroups/rg-canary"])
    for call in (
        lambda: compute_client.images.get("rg-images", "web"),
        lambda: compute_client.gallery_image_versions.get("rg-images", "gal", "nginx", "1.0.0"),
        lambda: compute_client.gallery_image_versions.get("rg-images", "gal", "nginx", "9.9.9"),  # missing too
    ):
        with pytest.raises(HttpResponseError) as denied:
            call()
        assert denied.value.status_code == 403
        assert denied.value.error is not None and denied.value.error.code == "AuthorizationFailed"
        assert "does not have authorization to perform action 'Microsoft.Compute/" in denied.value.error.message
    arm_emulator.set_readable_scopes([GALLERY])  # Reader on the gallery
    assert compute_client.gallery_image_versions.get("rg-images", "gal", "nginx", "1.0.0").name == "1.0.0"
    with pytest.raises(HttpResponseError):
        compute_client.images.get("rg-images", "web")  # outside the gallery


def test_a_model_write_naming_an_unreadable_image_is_linked_authorization_failed_and_changes_nothing(
    arm_emulator: ArmEmulator, make_scale_set: Any, compute_client: Any
) -> None:
    base = f"/subscriptions/{SUBSCRIPTION_ID}/resourceGroups/rg-canary/providers/Microsoft.Compute/images/base"
    ss = make_scale_set(1, serve=False, image_id=base)
    arm_emulator.set_readable_scopes([f"/subscriptions/{SUBSCRIPTION_ID}/resourceGroups/rg-canary"])
    unreadable = f"{GALLERY}/images/nginx/versions/2.0.0"
    with pytest.raises(HttpResponseError) as denied:
        compute_client.virtual_machine_scale_sets.begin_update(ss.resource_group, ss.name, image_patch(unreadable))
    assert denied.value.status_code == 403
    error = denied.value.error
    assert error is not None and error.code == "LinkedAuthorizationFailed"
    assert f"'Microsoft.Compute/virtualMachineScaleSets/write' on scope '{ss.id}'" in error.message
    assert f"'Microsoft.Compute/galleries/images/versions/read' on the linked scope(s) '{unreadable}'" in error.message
    assert ss.state.model.image_id == base
    # A readable image goes through.
    arm_emulator.set_readable_scopes([f"/subscriptions/{SUBSCRIPTION_ID}/resourceGroups/rg-canary", GALLERY])
    compute_client.virtual_machine_scale_sets.begin_update(ss.resource_group, ss.name, image_patch(unreadable)).result()
    assert ss.state.model.image_id == unreadable


def test_the_admin_api_sets_and_reports_the_switches(arm_emulator: ArmEmulator, make_scale_set: Any) -> None:
    make_scale_set(1, serve=False)  # restores the defaults at teardown
    session = requests.Session()
    session.trust_env = False
    session.verify = arm_emulator.ca_bundle
    session.headers["Authorization"] = f"Bearer {EMULATOR_TOKEN}"
    admin = f"{arm_emulator.url}/_admin"
    before = session.get(f"{admin}/settings", timeout=5).json()
    assert (before["model_applied"], before["upgrade_while_updating"], before["readable_scopes"]) == (
        "content",
        "accept",
        None,
    )
    body = {"model_applied": "version", "upgrade_while_updating": "conflict", "readable_scopes": [GALLERY]}
    after = session.post(f"{admin}/settings", json=body, timeout=5).json()
    assert after["model_applied"] == "version" and after["upgrade_while_updating"] == "conflict"
    assert after["readable_scopes"] == [GALLERY.lower()]
    assert (arm_emulator.model_applied, arm_emulator.upgrade_while_updating) == ("version", "conflict")
    bad = session.post(f"{admin}/settings", json={"model_applied": "generation"}, timeout=5)
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "InvalidParameter"
    added = session.post(f"{admin}/images", json={"id": f"{GALLERY}/images/x/versions/1.0.0"}, timeout=5)
    assert added.status_code == 201 and f"{GALLERY}/images/x" in added.json()["images"]
    assert session.delete(f"{admin}/images", timeout=5).json() == {"images": []}
    assert arm_emulator.images() == []
    assert session.post(f"{admin}/images", json={"id": "/not/an/image"}, timeout=5).status_code == 400


def test_the_cli_flags_pick_the_alternatives(tmp_path: Path) -> None:
    cmd = [
        sys.executable,
        "-m",
        "emulator",
        "serve",
        "--token",
        "t",
        "--state-dir",
        str(tmp_path),
        "--instance-port",
        str(free_port("127.0.17.1")),
        "--address-base",
        "127.0.17.1",
        "--model-applied",
        "version",
        "--upgrade-while-updating",
        "conflict",
        "--readable-scope",
        GALLERY,
        "--image",
        f"{GALLERY}/images/nginx/versions/1.0.0",
    ]
    proc = subprocess.Popen(
        cmd, cwd=Path(__file__).resolve().parents[2], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
        get = {"headers": {"Authorization": "Bearer t"}, "verify": info["ca_bundle"], "timeout": 5}
        settings = requests.get(f"{info['url']}/_admin/settings", **get).json()  # type: ignore[arg-type]
        assert settings["model_applied"] == "version" and settings["upgrade_while_updating"] == "conflict"
        assert settings["readable_scopes"] == [GALLERY.lower()]
        images = requests.get(f"{info['url']}/_admin/images", **get).json()  # type: ignore[arg-type]
        assert f"{GALLERY}/images/nginx/versions/1.0.0" in images["images"]
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def _paths(node: Any, prefix: str = "") -> set[str]:
    """Every key path of a JSON body ("properties.storageProfile.osDisk.osType"); list items as "[]"."""
    out: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            path = f"{prefix}.{key}" if prefix else key
            out |= {path} | _paths(value, path)
    elif isinstance(node, list):
        for value in node:
            out |= _paths(value, f"{prefix}[]")
    return out


# Key paths of the official example bodies (Azure/azure-rest-api-specs, cited in docs/emulator.md):
# Compute/Compute/examples/2026-04-01/imageExamples/Image_Get.json @ c3c12ca9,
# GalleryRP/stable/2025-03-03/examples/galleryExamples/GalleryImageVersion_Get.json @ 0c20ffea and
# GalleryImage_Get.json @ 3dd59678. The emulator's bodies must use no key outside them.
OFFICIAL_KEYS = {
    "image": {"id", "name", "type", "location", "properties", "properties.provisioningState"}
    | {f"properties.storageProfile{p}" for p in ("", ".osDisk", ".osDisk.osType", ".osDisk.osState", ".zoneResilient")},
    "version": {"id", "name", "location", "properties", "properties.provisioningState", "properties.storageProfile"}
    | {f"properties.storageProfile.osDiskImage{p}" for p in ("", ".sizeInGB", ".hostCaching")}
    | {"properties.publishingProfile", "properties.safetyProfile"},
    "definition": {"id", "name", "location", "properties", "properties.provisioningState"}
    | {f"properties.{p}" for p in ("osType", "osState", "hyperVGeneration", "identifier")}
    | {f"properties.identifier.{p}" for p in ("publisher", "offer", "sku")},
}
# "type" is in every ARM resource envelope (common-types Resource) though two examples leave it out.
RESOURCE_ENVELOPE = {"type"}


@pytest.mark.parametrize(
    ("kind", "suffix"),
    [
        ("image", "/images/web"),
        ("version", "/galleries/gal/images/nginx/versions/1.0.0"),
        ("definition", "/galleries/gal/images/nginx"),
    ],
)
def test_image_bodies_use_only_keys_of_the_official_examples(
    arm_emulator: ArmEmulator, make_scale_set: Any, kind: str, suffix: str
) -> None:
    make_scale_set(1, serve=False)
    arm_emulator.add_image(f"{RG_IMAGES}/images/web")
    arm_emulator.add_image(f"{GALLERY}/images/nginx/versions/1.0.0")
    answer = requests.get(
        f"{arm_emulator.url}{RG_IMAGES}{suffix}",
        params={"api-version": "2026-04-01"},
        headers={"Authorization": f"Bearer {EMULATOR_TOKEN}"},
        verify=arm_emulator.ca_bundle,
        timeout=5,
    )
    assert answer.status_code == 200
    assert _paths(answer.json()) <= OFFICIAL_KEYS[kind] | RESOURCE_ENVELOPE
