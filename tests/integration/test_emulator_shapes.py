"""The emulator's JSON answers, obtained through the real azure-mgmt SDK clients, validated against
the official REST spec subset vendored in ``tests/data/azure-rest-specs`` (Microsoft.Compute 2026-04-01).

``tests/restspec.py`` turns the swagger into JSON Schemas (``SpecSchemas``; how, in its docstring).

Two sanity tests keep the validator honest: the official example bodies validate, and a body with an
invented property fails. The raw JSON is captured with azure-core's ``raw_response_hook``, so the
request really went through the SDK (URL, api-version, auth, TLS).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import jsonschema
import pytest

from tests.restspec import SPEC_FILE, SpecSchemas, drop_nulls, example_body

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def schemas() -> SpecSchemas:
    # Vendored with the project: a missing file is a broken checkout, never a reason to skip.
    assert SPEC_FILE.exists(), f"REST spec subset missing at {SPEC_FILE}"
    return SpecSchemas(SPEC_FILE)


class Capture:
    """raw_response_hook target: keeps every (status, headers, JSON body) the SDK received."""

    def __init__(self) -> None:
        self.responses: list[tuple[int, dict[str, str], Any]] = []

    def __call__(self, pipeline_response: Any) -> None:
        http = pipeline_response.http_response
        # LRO initial calls are streamed; reading here caches the bytes for the SDK as well.
        text = http.read().decode() if hasattr(http, "read") else http.text()
        self.responses.append((http.status_code, dict(http.headers), json.loads(text) if text else None))

    @property
    def last_body(self) -> Any:
        return self.responses[-1][2]


# -- the validator itself -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("operation_id", "example"),
    [
        ("VirtualMachineScaleSets_Get", "VirtualMachineScaleSet_Get_WithUserData.json"),
        ("VirtualMachineScaleSetVMs_List", "VirtualMachineScaleSetVM_List_MinimumSet_Gen.json"),
        ("VirtualMachineScaleSetVMs_Get", "VirtualMachineScaleSetVM_Get_WithUserData.json"),
        (
            "VirtualMachineScaleSetVMs_GetInstanceView",
            "VirtualMachineScaleSetVM_Get_InstanceViewAutoPlacedOnDedicatedHostGroup.json",
        ),
        ("VirtualMachineScaleSets_GetInstanceView", "VirtualMachineScaleSet_GetInstanceView_MaximumSet_Gen.json"),
        ("VirtualMachineScaleSetExtensions_Get", "VirtualMachineScaleSetExtension_Get_MaximumSet_Gen.json"),
        ("VirtualMachineScaleSetExtensions_List", "VirtualMachineScaleSetExtension_List_MinimumSet_Gen.json"),
    ],
)
def test_schema_accepts_the_official_examples(schemas: SpecSchemas, operation_id: str, example: str) -> None:
    body = example_body(example)
    # The examples use JSON null for "absent" where the spec says object/string (x-nullable in ARM's
    # own tooling); drop nulls so the check is about shapes, as the examples validator upstream does.
    schemas.validate(operation_id, drop_nulls(body))


def test_schema_rejects_a_property_the_spec_does_not_know(schemas: SpecSchemas) -> None:
    body = drop_nulls(example_body("VirtualMachineScaleSetVM_Get_WithUserData.json"))
    body["properties"]["inventedByTheEmulator"] = True
    with pytest.raises(jsonschema.ValidationError, match="inventedByTheEmulator"):
        schemas.validate("VirtualMachineScaleSetVMs_Get", body)


# -- the emulator's answers -----------------------------------------------------------------------


def _call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Capture:
    capture = Capture()
    result = fn(*args, raw_response_hook=capture, **kwargs)
    if hasattr(result, "__iter__") and not isinstance(result, dict | str):
        list(result)  # drain pagers: every page goes through the hook
    return capture


def test_scale_set_get_matches_the_spec(schemas: SpecSchemas, make_scale_set: Any, compute_client: Any) -> None:
    ss = make_scale_set(2, image_id="/subscriptions/s/resourceGroups/img/providers/Microsoft.Compute/images/v1")
    body = _call(compute_client.virtual_machine_scale_sets.get, ss.resource_group, ss.name).last_body
    schemas.validate("VirtualMachineScaleSets_Get", body)
    example = example_body("VirtualMachineScaleSet_Get_WithUserData.json")
    # Same top-level keys as the official example, apart from the optional tags.
    assert set(body) == set(example) - {"tags"}
    shared = {"storageProfile", "osProfile", "networkProfile"}
    assert shared <= set(body["properties"]["virtualMachineProfile"]) & set(
        example["properties"]["virtualMachineProfile"]
    )
    assert body["properties"]["upgradePolicy"] == {"mode": "Manual"}


def test_vm_list_pages_with_instance_view_match_the_spec(
    schemas: SpecSchemas, arm_emulator: Any, make_scale_set: Any, compute_client: Any
) -> None:
    ss = make_scale_set(3, serve=False)
    arm_emulator.set_page_size(2)
    try:
        capture = _call(
            compute_client.virtual_machine_scale_set_vms.list, ss.resource_group, ss.name, expand="instanceView"
        )
    finally:
        arm_emulator.set_page_size(50)
    pages = [body for _, _, body in capture.responses]
    assert len(pages) == 2 and "nextLink" in pages[0] and "nextLink" not in pages[1]
    example_item = example_body("VirtualMachineScaleSetVM_List_MinimumSet_Gen.json")["value"][0]
    for page in pages:
        schemas.validate("VirtualMachineScaleSetVMs_List", page)
        for vm in page["value"]:
            assert set(example_item) <= set(vm)
            assert vm["properties"]["instanceView"]["statuses"][1]["code"] == "PowerState/running"


def test_vm_get_and_instance_view_match_the_spec(
    schemas: SpecSchemas, arm_emulator: Any, make_scale_set: Any, compute_client: Any
) -> None:
    ss = make_scale_set(1, serve=False)
    arm_emulator.set_instance_health(ss.resource_group, ss.name, "0", True, vm_health="healthy")
    vms = compute_client.virtual_machine_scale_set_vms
    body = _call(vms.get, ss.resource_group, ss.name, "0", expand="instanceView").last_body
    schemas.validate("VirtualMachineScaleSetVMs_Get", body)
    example = example_body("VirtualMachineScaleSetVM_Get_WithUserData.json")
    assert set(example) - {"tags", "etag"} <= set(body)
    view = _call(vms.get_instance_view, ss.resource_group, ss.name, "0").last_body
    schemas.validate("VirtualMachineScaleSetVMs_GetInstanceView", view)
    assert view["vmHealth"]["status"]["code"] == "HealthState/healthy"
    assert view["extensions"][0]["statuses"][0]["code"] == "ProvisioningState/succeeded"
    whole = _call(compute_client.virtual_machine_scale_sets.get_instance_view, ss.resource_group, ss.name)
    schemas.validate("VirtualMachineScaleSets_GetInstanceView", whole.last_body)


def test_extension_get_and_list_match_the_spec_and_hide_protected_settings(
    schemas: SpecSchemas, make_scale_set: Any, compute_client: Any
) -> None:
    ss = make_scale_set(1, serve=False, extension_protected_settings={"storageAccountKey": "s3cr3t"})
    exts = compute_client.virtual_machine_scale_set_extensions
    one = _call(exts.get, ss.resource_group, ss.name, "CustomScript").last_body
    schemas.validate("VirtualMachineScaleSetExtensions_Get", one)
    many = _call(exts.list, ss.resource_group, ss.name).last_body
    schemas.validate("VirtualMachineScaleSetExtensions_List", many)
    vmss = _call(compute_client.virtual_machine_scale_sets.get, ss.resource_group, ss.name).last_body
    for body in (one, many, vmss):
        assert "s3cr3t" not in json.dumps(body)
        assert "protectedSettings" not in json.dumps(body)


def test_write_answers_match_the_spec(schemas: SpecSchemas, make_scale_set: Any, compute_client: Any) -> None:
    from azure.mgmt.compute.models import VirtualMachineScaleSetExtension, VirtualMachineScaleSetExtensionProperties

    ss = make_scale_set(1, serve=False)
    ext = VirtualMachineScaleSetExtension(
        properties=VirtualMachineScaleSetExtensionProperties(
            publisher="Microsoft.Azure.Extensions",
            type="CustomScript",
            type_handler_version="2.1",
            settings={"fileUris": ["https://r.example/init/install_nginx.v2.sh"]},
            protected_settings={"k": "v"},
        )
    )
    capture = _call(
        lambda *a, **k: compute_client.virtual_machine_scale_set_extensions.begin_create_or_update(*a, **k).result(),
        ss.resource_group,
        ss.name,
        "CustomScript",
        ext,
    )
    status, _, body = capture.responses[0]
    assert status == 200
    schemas.validate("VirtualMachineScaleSetExtensions_CreateOrUpdate", body)
    patch = {"properties": {"virtualMachineProfile": {"storageProfile": {"imageReference": {"id": "/x/images/v2"}}}}}
    capture = _call(
        lambda *a, **k: compute_client.virtual_machine_scale_sets.begin_update(*a, **k).result(),
        ss.resource_group,
        ss.name,
        patch,
    )
    status, headers, body = capture.responses[0]
    assert status == 200 and "Location" in headers
    schemas.validate("VirtualMachineScaleSets_Update", body)


def test_manualupgrade_answers_202_with_lro_headers_and_a_status_resource(
    arm_emulator: Any, make_scale_set: Any, compute_client: Any
) -> None:
    ss = make_scale_set(2, serve=False)
    compute_client.virtual_machine_scale_set_extensions.begin_update(
        ss.resource_group, ss.name, "CustomScript", {"properties": {"settings": {"fileUris": ["https://r/v2.sh"]}}}
    ).result()
    arm_emulator.set_timings(retry_after=1)  # an integer Retry-After, as Azure sends
    try:
        capture = Capture()
        poller = compute_client.virtual_machine_scale_sets.begin_update_instances(
            ss.resource_group, ss.name, {"instanceIds": ["0", "1"]}, polling=False, raw_response_hook=capture
        )
        poller.result()
    finally:
        arm_emulator.set_timings(retry_after=0.05)
    status, headers, body = capture.responses[0]
    assert status == 202 and body is None
    assert int(headers["Retry-After"]) == 1
    assert headers["Location"].startswith(arm_emulator.url)
    status_url = headers["Azure-AsyncOperation"]
    assert "api-version=2026-04-01" in status_url

    # The status resource, read through the SDK's own pipeline: InProgress, then Succeeded.
    from azure.core.rest import HttpRequest

    first = compute_client.send_request(HttpRequest("GET", status_url)).json()
    assert first["status"] == "InProgress" and set(first) >= {"name", "startTime", "status"}
    arm_emulator.wait_idle()
    done = compute_client.send_request(HttpRequest("GET", status_url)).json()
    assert done["status"] == "Succeeded" and "endTime" in done
    final = compute_client.send_request(HttpRequest("GET", headers["Location"]))
    assert final.status_code == 200
