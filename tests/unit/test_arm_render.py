"""The emulator's REST rendering (``emulator.arm.render``), checked against the vendored REST spec
(tests/data/azure-rest-specs, Microsoft.Compute 2026-04-01) without a server: the render functions
are pure, so each state an instance can be in is built here and its body validated.

tests/integration/test_emulator_shapes.py checks the same shapes as the SDK receives them over HTTPS.
"""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest

from emulator.arm import render
from emulator.arm.model import CUSTOM_SCRIPT, Extension, Instance, Model, Operation, ScaleSet, now
from emulator.runtime import ExtensionResult, InstanceModel
from emulator.synthetic import FailureRules, SyntheticRuntime
from tests.restspec import SPEC_FILE, SpecSchemas

SUB = "00000000-0000-0000-0000-000000000000"
IMAGE = f"/subscriptions/{SUB}/resourceGroups/img/providers/Microsoft.Compute/galleries/g/images/web/versions/1.0.0"


@pytest.fixture(scope="module")
def schemas() -> SpecSchemas:
    assert SPEC_FILE.exists(), f"REST spec subset missing at {SPEC_FILE}"
    return SpecSchemas(SPEC_FILE)


def _extension() -> Extension:
    return Extension(
        "CustomScript",
        *CUSTOM_SCRIPT,
        settings={"fileUris": ["https://r.example/install.v2.sh"]},
        protected_settings={"storageAccountKey": "s3cr3t"},
        force_update_tag="v2",
        extra={
            "suppressFailures": False,
            "provisionAfterExtensions": ["HealthExtension"],
            "protectedSettingsFromKeyVault": {"secretUrl": "https://kv.example/secrets/s", "sourceVault": {"id": "/v"}},
        },
    )


def _scale_set(states: list[str]) -> ScaleSet:
    """A scale set whose instance i is in ``states[i]``: succeeded | failed | transitioning."""
    model = Model(IMAGE, (_extension(),), version=3)
    scale_set = ScaleSet(
        "rg",
        "web",
        "westeurope",
        "Uniform",
        "Manual",
        model,
        0.0,
        lambda a, m: SyntheticRuntime(a, m),
        FailureRules(),
        None,
    )
    for i, state in enumerate(states):
        runtime = SyntheticRuntime(f"127.0.10.{i + 1}", InstanceModel(image_id=IMAGE), serve=False)  # never started
        inst = Instance(str(i), runtime.address, runtime, applied=model)
        if state == "transitioning":
            inst.begin_work("Updating")
        else:
            ok = state == "succeeded"
            inst.finish_work(model, ExtensionResult(ok, 0 if ok else 3, "out", "" if ok else "install failed"))
        scale_set.instances[inst.instance_id] = inst
    scale_set.instances["0"].vm_health = "healthy"
    return scale_set


STATES = ["succeeded", "failed", "transitioning"]


def test_scale_set_get_matches_the_spec_and_hides_protected_settings(schemas: SpecSchemas) -> None:
    body = render.vmss_json(_scale_set(STATES), SUB)
    schemas.validate("VirtualMachineScaleSets_Get", body)
    assert body["sku"]["capacity"] == 3
    assert body["properties"]["virtualMachineProfile"]["storageProfile"]["imageReference"] == {"id": IMAGE}
    assert "s3cr3t" not in json.dumps(body) and 'protectedSettings"' not in json.dumps(body)


@pytest.mark.parametrize("state", STATES)
def test_vm_get_with_instance_view_matches_the_spec_in_every_extension_state(schemas: SpecSchemas, state: str) -> None:
    scale_set = _scale_set([state])
    inst = scale_set.instances["0"]
    body = render.vm_json(scale_set, inst, SUB, latest=True, instance_view=True)
    schemas.validate("VirtualMachineScaleSetVMs_Get", body)
    view = render.vm_instance_view(scale_set, inst)
    schemas.validate("VirtualMachineScaleSetVMs_GetInstanceView", view)
    code = view["extensions"][0]["statuses"][0]["code"]
    assert code == {"succeeded": "ProvisioningState/succeeded", "failed": "ProvisioningState/failed/3"}.get(
        state, "ProvisioningState/transitioning"
    )
    assert view["vmHealth"]["status"]["code"] == "HealthState/healthy"


def test_scale_set_instance_view_counts_every_state(schemas: SpecSchemas) -> None:
    view = render.vmss_instance_view(_scale_set(STATES))
    schemas.validate("VirtualMachineScaleSets_GetInstanceView", view)
    summary = {s["code"]: s["count"] for s in view["extensions"][0]["statusesSummary"]}
    assert summary == {f"ProvisioningState/{s}": 1 for s in STATES}


def test_vm_list_pages_match_the_spec(schemas: SpecSchemas) -> None:
    scale_set = _scale_set(STATES)
    vms = [render.vm_json(scale_set, i, SUB, latest=False, instance_view=False) for i in scale_set.instances_in_order()]
    first = render.page(vms, "/p", {"api-version": "2026-04-01"}, page_size=2, base_url="https://arm")
    second = render.page(
        vms, "/p", {"api-version": "2026-04-01", "$skiptoken": "2"}, page_size=2, base_url="https://arm"
    )
    for page in (first, second):
        schemas.validate("VirtualMachineScaleSetVMs_List", page)
    assert first["nextLink"] == "https://arm/p?api-version=2026-04-01&$skiptoken=2" and "nextLink" not in second
    assert [vm["instanceId"] for vm in first["value"] + second["value"]] == ["0", "1", "2"]


@pytest.mark.parametrize("key_vault_reference", [True, False])
def test_extension_get_and_list_match_the_spec(schemas: SpecSchemas, key_vault_reference: bool) -> None:
    scale_set_id = render.vmss_id(SUB, "rg", "web")
    one = render.extension_json(_extension(), scale_set_id, key_vault_reference=key_vault_reference)
    schemas.validate("VirtualMachineScaleSetExtensions_Get", one)
    schemas.validate("VirtualMachineScaleSetExtensions_List", {"value": [one]})
    assert ("protectedSettingsFromKeyVault" in one["properties"]) is key_vault_reference
    assert "protectedSettings" not in one["properties"]


def test_the_validator_rejects_what_the_spec_does_not_know(schemas: SpecSchemas) -> None:
    """The admin view is not an ARM shape: validated as a scale set it must fail (the check has teeth)."""
    scale_set = _scale_set(["succeeded"])
    admin = render.admin_view(scale_set, SUB, {"0": True})
    with pytest.raises(jsonschema.ValidationError):
        schemas.validate("VirtualMachineScaleSets_Get", admin)


def test_operation_status_names_the_failed_instances() -> None:
    op = Operation("op-1", "manualupgrade", "westeurope", now(), pending=set(), failures=["2", "0"], ended=now())
    doc: dict[str, Any] = render.operation_status_json(op)
    assert doc["status"] == "Failed" and doc["error"]["code"] == "VMExtensionProvisioningError"
    assert doc["error"]["message"].endswith("instance(s) 0, 2.")
