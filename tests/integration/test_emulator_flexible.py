"""The ARM emulator's Flexible scale sets, through the real azure-mgmt clients over HTTPS: the shapes
against the vendored REST spec (``VirtualMachines_List``, ``VirtualMachineScaleSets_Get``), the
filtered list, upgrades and reimages by VM name, the standalone NICs, throttling, the
``flexible_model_applied`` switch and the admin API's way to create one (docs/emulator.md)."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
import requests
from azure.core.exceptions import HttpResponseError

from emulator.arm import ArmEmulator
from tests.fixtures.emulator import EMULATOR_TOKEN, SUBSCRIPTION_ID
from tests.restspec import SPEC_FILE, SpecSchemas

pytestmark = pytest.mark.integration

V1 = {"fileUris": ["https://releases.example/init/install_nginx.v1.sh"], "commandToExecute": "bash install_nginx.v1.sh"}
V2 = {"fileUris": ["https://releases.example/init/install_nginx.v2.sh"], "commandToExecute": "bash install_nginx.v2.sh"}


@pytest.fixture(scope="module")
def schemas() -> SpecSchemas:
    return SpecSchemas(SPEC_FILE)


def flexible(make_scale_set: Any, instances: int = 3, **kwargs: Any) -> Any:
    kwargs.setdefault("extension_settings", V1)
    return make_scale_set(instances, orchestration_mode="Flexible", serve=False, upgrade_seconds=0.05, **kwargs)


def scale_set_filter(ss: Any) -> str:
    return f"'virtualMachineScaleSet/id' eq '{ss.id}'"


def raw_pages(compute_client: Any, ss: Any, **kwargs: Any) -> list[Any]:
    """Every page of VirtualMachines_List as the wire carried it."""
    pages: list[Any] = []

    def hook(response: Any) -> None:
        pages.append(json.loads(response.http_response.text()))

    list(compute_client.virtual_machines.list(ss.resource_group, raw_response_hook=hook, **kwargs))
    return pages


def test_the_filtered_vm_list_pages_match_the_spec(
    schemas: SpecSchemas, arm_emulator: ArmEmulator, make_scale_set: Any, compute_client: Any
) -> None:
    ss = flexible(make_scale_set, 3)
    flexible(make_scale_set, 2)  # another Flexible scale set in the same resource group
    make_scale_set(2, serve=False)  # and a Uniform one: its instances are no standalone VMs
    arm_emulator.set_page_size(2)
    try:
        pages = raw_pages(compute_client, ss, filter=scale_set_filter(ss), expand="instanceView")
        everything = raw_pages(compute_client, ss)
    finally:
        arm_emulator.set_page_size(50)
    assert len(pages) == 2 and "nextLink" in pages[0] and "nextLink" not in pages[1]
    vms = [vm for page in pages for vm in page["value"]]
    assert [vm["name"] for vm in vms] == [i.instance_id for i in ss.state.instances_in_order()]
    for page in pages + everything:
        schemas.validate("VirtualMachines_List", page)
    for vm in vms:
        assert vm["type"] == "Microsoft.Compute/virtualMachines"
        assert vm["properties"]["virtualMachineScaleSet"]["id"] == ss.id
        assert "latestModelApplied" not in vm["properties"]  # the default: the VM shape has none
        assert vm["properties"]["instanceView"]["statuses"][1]["code"] == "PowerState/running"
    # Unfiltered: the resource group's VMs, both Flexible scale sets' (5), no instance view.
    listed = [vm for page in everything for vm in page["value"]]
    assert len(listed) == 5 and all("instanceView" not in vm["properties"] for vm in listed)


def test_the_in_vm_list_alternative_adds_latest_model_applied_outside_the_spec(
    schemas: SpecSchemas, arm_emulator: ArmEmulator, make_scale_set: Any, compute_client: Any
) -> None:
    ss = flexible(make_scale_set, 1)
    arm_emulator.set_semantics(flexible_model_applied="in_vm_list")
    [page] = raw_pages(compute_client, ss, filter=scale_set_filter(ss))
    assert page["value"][0]["properties"]["latestModelApplied"] is True
    with pytest.raises(jsonschema.ValidationError, match="latestModelApplied"):
        schemas.validate("VirtualMachines_List", page)


def test_a_flexible_scale_set_get_matches_the_spec(
    schemas: SpecSchemas, make_scale_set: Any, compute_client: Any
) -> None:
    ss = flexible(make_scale_set, 1)
    captured: list[Any] = []
    compute_client.virtual_machine_scale_sets.get(
        ss.resource_group, ss.name, raw_response_hook=lambda r: captured.append(json.loads(r.http_response.text()))
    )
    [body] = captured
    schemas.validate("VirtualMachineScaleSets_Get", body)
    props = body["properties"]
    assert (props["orchestrationMode"], props["singlePlacementGroup"], props["upgradePolicy"]) == (
        "Flexible",
        False,
        {"mode": "Manual"},
    )


@pytest.mark.parametrize(
    "template",
    [
        "'virtualMachineScaleSet/id' eq '{id}'",
        "'virtualMachineScaleSet/id' eq {id}'",  # as the spec's parameter description writes it
        "'VirtualMachineScaleSet/id'  eq  '{id_upper}'",
    ],
)
def test_the_filter_forms_select_the_scale_set(template: str, make_scale_set: Any, compute_client: Any) -> None:
    ss = flexible(make_scale_set, 2)
    flt = template.format(id=ss.id, id_upper=ss.id.upper())
    names = [vm.name for vm in compute_client.virtual_machines.list(ss.resource_group, filter=flt)]
    assert names == [i.instance_id for i in ss.state.instances_in_order()]


def test_bad_list_queries_are_refused_with_a_clear_400(make_scale_set: Any, compute_client: Any) -> None:
    ss = flexible(make_scale_set, 1)
    for kwargs, message in (
        ({"expand": "instanceView"}, "only be specified with a valid $filter"),
        ({"filter": "name eq 'x'"}, "is not supported"),
    ):
        with pytest.raises(HttpResponseError) as refused:
            list(compute_client.virtual_machines.list(ss.resource_group, **kwargs))
        assert refused.value.status_code == 400 and message in str(refused.value)


def test_manualupgrade_takes_vm_names_and_reimage_goes_through_the_vm(
    arm_emulator: ArmEmulator, make_scale_set: Any, compute_client: Any
) -> None:
    ss = flexible(make_scale_set, 3)
    first, second, third = (i.instance_id for i in ss.state.instances_in_order())
    compute_client.virtual_machine_scale_set_extensions.begin_update(
        ss.resource_group, ss.name, "CustomScript", {"properties": {"settings": V2}}
    ).result()
    compute_client.virtual_machine_scale_sets.begin_update_instances(
        ss.resource_group, ss.name, {"instanceIds": [first]}
    ).result()
    compute_client.virtual_machines.begin_reimage(ss.resource_group, second).result()
    arm_emulator.wait_idle()
    runs = {i.instance_id: i.applied.main_extension() for i in ss.state.instances_in_order()}
    assert runs[first] is not None and runs[first].settings == V2
    assert runs[second] is not None and runs[second].settings == V1  # reimage keeps the VM's own model
    assert [i.upgrades for i in ss.state.instances_in_order()] == [1, 1, 0]
    with pytest.raises(HttpResponseError) as missing:
        compute_client.virtual_machine_scale_sets.begin_update_instances(
            ss.resource_group, ss.name, {"instanceIds": ["0"]}
        ).result()
    assert missing.value.status_code == 404
    vm = compute_client.virtual_machines.get(ss.resource_group, third, expand="instanceView")
    assert vm.virtual_machine_scale_set.id == ss.id and vm.instance_view.statuses[0].code.startswith(
        "ProvisioningState"
    )


def test_the_nics_are_standalone_resources_naming_their_vm(make_scale_set: Any, network_client: Any) -> None:
    ss = flexible(make_scale_set, 2)
    nics = list(network_client.network_interfaces.list(ss.resource_group))
    by_vm = {nic.virtual_machine.id.rsplit("/", 1)[-1]: nic.ip_configurations[0].private_ip_address for nic in nics}
    assert {name: by_vm[name] for name in ss.addresses()} == ss.addresses()
    one = next(n for n in nics if n.virtual_machine.id.endswith("/" + next(iter(ss.addresses()))))
    assert network_client.network_interfaces.get(ss.resource_group, one.name).id == one.id


def test_the_uniform_vm_apis_refuse_a_flexible_scale_set(make_scale_set: Any, compute_client: Any) -> None:
    ss = flexible(make_scale_set, 1)
    with pytest.raises(HttpResponseError) as refused:
        list(compute_client.virtual_machine_scale_set_vms.list(ss.resource_group, ss.name))
    assert refused.value.status_code == 400 and "Flexible orchestration" in str(refused.value)


def test_upgrades_and_vm_reimages_spend_the_scale_set_write_budget(
    arm_emulator: ArmEmulator, make_scale_set: Any, compute_client: Any
) -> None:
    ss = flexible(make_scale_set, 2)
    first, second = (i.instance_id for i in ss.state.instances_in_order())
    arm_emulator.set_throttling(2, per_minute=0.01)
    compute_client.virtual_machine_scale_sets.begin_update_instances(
        ss.resource_group, ss.name, {"instanceIds": [first]}, polling=False
    )
    compute_client.virtual_machines.begin_reimage(ss.resource_group, first, polling=False)
    with pytest.raises(HttpResponseError) as throttled:
        compute_client.virtual_machines.begin_reimage(ss.resource_group, second, polling=False)
    assert throttled.value.status_code == 429 and throttled.value.response.headers.get("Retry-After")


def test_an_arm_put_of_a_flexible_scale_set_with_automatic_upgrades_is_refused(compute_client: Any) -> None:
    body = {
        "location": "westeurope",
        "sku": {"name": "Standard_B1s", "capacity": 0},
        "properties": {"orchestrationMode": "Flexible", "upgradePolicy": {"mode": "Automatic"}},
    }
    with pytest.raises(HttpResponseError) as refused:
        compute_client.virtual_machine_scale_sets.begin_create_or_update("rg-flex-put", "auto", body).result()
    assert refused.value.status_code == 400 and "Uniform" in str(refused.value)


def test_the_admin_api_creates_a_flexible_scale_set_and_sets_the_switch(
    arm_emulator: ArmEmulator, compute_client: Any
) -> None:
    session = requests.Session()
    session.trust_env = False
    session.verify = arm_emulator.ca_bundle
    session.headers["Authorization"] = f"Bearer {EMULATOR_TOKEN}"
    admin = f"{arm_emulator.url}/_admin"
    created = session.post(
        f"{admin}/scalesets",
        json={
            "resource_group": "rg-admin-flex",
            "name": "web",
            "instances": 2,
            "orchestration_mode": "Flexible",
            "extension": {"settings": V1},
            "serve": False,
        },
        timeout=10,
    )
    try:
        assert created.status_code == 201, created.text
        names = [i["instanceId"] for i in created.json()["instances"]]
        assert all(n.startswith("web_") and len(n) == len("web_") + 8 for n in names)
        listed = compute_client.virtual_machines.list(
            "rg-admin-flex",
            filter=f"'virtualMachineScaleSet/id' eq '/subscriptions/{SUBSCRIPTION_ID}/resourceGroups/rg-admin-flex"
            "/providers/Microsoft.Compute/virtualMachineScaleSets/web'",
        )
        assert [vm.name for vm in listed] == names
        settings = session.post(f"{admin}/settings", json={"flexible_model_applied": "in_vm_list"}, timeout=5)
        assert settings.json()["flexible_model_applied"] == "in_vm_list"
        bad = session.post(f"{admin}/settings", json={"flexible_model_applied": "maybe"}, timeout=5)
        assert bad.status_code == 400
    finally:
        session.post(f"{admin}/settings", json={"flexible_model_applied": "absent"}, timeout=5)
        session.delete(f"{admin}/scalesets/rg-admin-flex/web", timeout=10)
