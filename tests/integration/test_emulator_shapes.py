"""The emulator's JSON answers, obtained through the real azure-mgmt SDK clients, validated against
the official REST spec subset vendored in ``tests/data/azure-rest-specs`` (Microsoft.Compute 2026-04-01).

The swagger is OpenAPI 2.0, which jsonschema does not speak directly, so ``SpecSchemas`` converts
the definitions it needs into one JSON Schema:

* ``$ref``s are resolved across files (``./common-types/...``) and turned into local ``$defs``;
* ``allOf`` is flattened (properties and required merged) because every object gets
  ``additionalProperties: false`` when the spec lists its properties: an emulator property the spec
  does not know must fail, and ``allOf`` + closed objects would otherwise reject the base's fields;
* ``x-ms-enum`` with ``modelAsString: true`` is an open enum in ARM, so its ``enum`` is dropped;
* ``readOnly``, ``x-ms-*`` and ``format`` are annotations for this purpose (responses may carry
  read-only fields; formats are not asserted).

Two sanity tests keep the validator honest: the official example bodies validate, and a body with an
invented property fails. The raw JSON is captured with azure-core's ``raw_response_hook``, so the
request really went through the SDK (URL, api-version, auth, TLS).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest

pytestmark = pytest.mark.integration

SPECS = Path(__file__).resolve().parents[1] / "data" / "azure-rest-specs"
SPEC_FILE = SPECS / "ComputeRP.vmss-subset.json"
EXAMPLES = SPECS / "examples" / "virtualMachineScaleSetExamples"


class SpecSchemas:
    """JSON Schemas for the response bodies of the swagger's operations."""

    def __init__(self, spec_file: Path) -> None:
        self._files: dict[Path, dict[str, Any]] = {}
        self._spec_file = spec_file.resolve()
        self._defs: dict[str, Any] = {}

    def _load(self, path: Path) -> dict[str, Any]:
        path = path.resolve()
        if path not in self._files:
            self._files[path] = json.loads(path.read_text())
        return self._files[path]

    def _resolve(self, ref: str, base: Path) -> tuple[Path, str, dict[str, Any]]:
        file_part, _, pointer = ref.partition("#")
        target = (base.parent / file_part).resolve() if file_part else base
        node: Any = self._load(target)
        for part in pointer.strip("/").split("/"):
            node = node[part]
        return target, pointer.rsplit("/", 1)[-1], node

    def _def_ref(self, ref: str, base: Path) -> dict[str, Any]:
        target, name, node = self._resolve(ref, base)
        key = f"{target.stem}.{name}"
        if key not in self._defs:
            self._defs[key] = {}  # placeholder first: recursive definitions terminate
            self._defs[key] = self._convert(node, target)
        return {"$ref": f"#/$defs/{key}"}

    def _flatten(self, node: dict[str, Any], base: Path) -> tuple[dict[str, Any], list[str], dict[str, Any]]:
        """(properties with their files, required, the rest of the keys) of ``node`` with allOf merged."""
        props: dict[str, Any] = {}
        required: list[str] = []
        for part in node.get("allOf", []):
            if "$ref" in part:
                target, _, resolved = self._resolve(part["$ref"], base)
            else:
                target, resolved = base, part
            p, r, _ = self._flatten(resolved, target)
            props.update(p)
            required += r
        for name, sub in (node.get("properties") or {}).items():
            props[name] = (sub, base)
        required += node.get("required", [])
        return props, required, node

    def _convert(self, node: dict[str, Any], base: Path) -> dict[str, Any]:
        if "$ref" in node:
            return self._def_ref(node["$ref"], base)
        out: dict[str, Any] = {}
        if node.get("type"):
            out["type"] = node["type"]
        if "enum" in node and not (node.get("x-ms-enum") or {}).get("modelAsString", False):
            out["enum"] = node["enum"]
        if "items" in node:
            out["items"] = self._convert(node["items"], base)
        if "allOf" in node or "properties" in node:
            props, required, _ = self._flatten(node, base)
            out["type"] = "object"
            out["properties"] = {name: self._convert(sub, b) for name, (sub, b) in props.items()}
            if required:
                out["required"] = sorted(set(required))
        if isinstance(node.get("additionalProperties"), dict):
            out["additionalProperties"] = self._convert(node["additionalProperties"], base)
        elif "additionalProperties" in node:
            out["additionalProperties"] = node["additionalProperties"]
        elif "properties" in out:
            out["additionalProperties"] = False  # closed: unknown emulator properties fail
        return out

    def operation_schema(self, operation_id: str, status: str = "200") -> dict[str, Any]:
        spec = self._load(self._spec_file)
        for methods in spec["paths"].values():
            for method, op in methods.items():
                if method != "parameters" and op["operationId"] == operation_id:
                    root = self._convert(op["responses"][status]["schema"], self._spec_file)
                    return {
                        "$schema": "https://json-schema.org/draft/2020-12/schema",
                        **root,
                        "$defs": copy.deepcopy(self._defs),
                    }
        raise KeyError(operation_id)

    def validate(self, operation_id: str, body: Any) -> None:
        jsonschema.Draft202012Validator(self.operation_schema(operation_id)).validate(body)


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


def example_body(name: str) -> Any:
    return json.loads((EXAMPLES / name).read_text())["responses"]["200"]["body"]


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
    schemas.validate(operation_id, _drop_nulls(body))


def test_schema_rejects_a_property_the_spec_does_not_know(schemas: SpecSchemas) -> None:
    body = _drop_nulls(example_body("VirtualMachineScaleSetVM_Get_WithUserData.json"))
    body["properties"]["inventedByTheEmulator"] = True
    with pytest.raises(jsonschema.ValidationError, match="inventedByTheEmulator"):
        schemas.validate("VirtualMachineScaleSetVMs_Get", body)


def _drop_nulls(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _drop_nulls(v) for k, v in node.items() if v is not None}
    if isinstance(node, list):
        return [_drop_nulls(v) for v in node]
    return node


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
