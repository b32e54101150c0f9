"""AzureCompute on a Flexible scale set, through the real SDKs over HTTPS against the ARM emulator:
the calls it makes (the emulator's request log), what it reads, and what its writes do.

What Azure documents, and the emulator follows (docs/design.md, "Flexible orchestration"):
* a Flexible scale set's instances are ``Microsoft.Compute/virtualMachines`` listed by
  ``VirtualMachines_List`` with ``$filter`` on ``virtualMachineScaleSet/id`` and ``$expand=instanceView``;
* their NICs are standalone resources of the resource group (``NetworkInterfaces_List``);
* ``manualupgrade`` takes VM names; a VM is reimaged with ``VirtualMachines_Reimage``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest

from rollout.adapters.compute import AzureCompute, credential_for, flexible_instance_view, flexible_vm_filter
from rollout.model import ModelSpec
from rollout.ports import NotFoundError, TransientError

pytestmark = pytest.mark.integration

SCRIPT = {"fileUris": ["https://releases.example/init/install_nginx.v1.sh"], "commandToExecute": "bash x.sh"}


@pytest.fixture
def compute_for(arm_emulator: Any) -> Iterator[Callable[..., AzureCompute]]:
    from tests.fixtures.emulator import EMULATOR_TOKEN, SUBSCRIPTION_ID

    made: list[AzureCompute] = []

    def make(handle: Any, **overrides: Any) -> AzureCompute:
        kwargs: dict[str, Any] = {
            "subscription_id": SUBSCRIPTION_ID,
            "resource_group": handle.resource_group,
            "vmss_name": handle.name,
            "extension_name": "CustomScript",
            "arm_endpoint": arm_emulator.url,
            "credential": credential_for(EMULATOR_TOKEN),
            "ca_bundle": arm_emulator.ca_bundle,
            "lro_poll_interval_s": 0.05,
            **overrides,
        }
        made.append(AzureCompute(**kwargs))
        return made[-1]

    yield make
    for compute in made:
        compute.close()


def flexible(make_scale_set: Callable[..., Any], instances: int = 3, **kwargs: Any) -> Any:
    return make_scale_set(instances, orchestration_mode="Flexible", serve=False, **kwargs)


def what(record: Any) -> str:
    """'GET vmss' / 'GET virtualmachines' / 'GET networkinterfaces' / 'POST manualupgrade' ...."""
    path = record.path.lower().rstrip("/")
    last = path.rsplit("/", 1)[-1]
    if last in ("manualupgrade", "reimage", "networkinterfaces", "virtualmachines"):
        return f"{record.method} {last}"
    if path.rsplit("/", 2)[-2] == "virtualmachinescalesets":
        return f"{record.method} vmss"
    return f"{record.method} {path}"


def test_observe_is_one_get_one_filtered_vm_list_and_one_nic_list(
    arm_emulator: Any, make_scale_set: Callable[..., Any], compute_for: Callable[..., AzureCompute]
) -> None:
    handle = flexible(make_scale_set, 5)
    neighbour = flexible(make_scale_set, 2)  # same resource group: its VMs and NICs are listed too
    arm_emulator.set_page_size(2)
    arm_emulator.clear_requests()
    try:
        fleet = compute_for(handle).observe()
    finally:
        arm_emulator.set_page_size(50)

    names = [i.instance_id for i in handle.state.instances_in_order()]
    assert [i.instance_id for i in fleet.instances] == names
    assert all(n.startswith(handle.name + "_") for n in names)
    assert {i.instance_id: i.private_ip for i in fleet.instances} == handle.addresses()
    assert not set(neighbour.addresses()) & {i.instance_id for i in fleet.instances}
    assert (fleet.orchestration_mode, fleet.upgrade_mode, fleet.model_applied_reported) == ("Flexible", "Manual", False)
    for inst in fleet.instances:
        assert (inst.provisioning_state, inst.power_state, inst.extension_status) == (
            "Succeeded",
            "running",
            "Succeeded",
        )

    log = arm_emulator.requests()
    kinds = [what(r) for r in log]
    # 5 VMs in pages of 2 (3 pages), 7 NICs of the resource group (4 pages), one scale set GET.
    assert sorted(kinds) == sorted(["GET vmss"] + ["GET virtualmachines"] * 3 + ["GET networkinterfaces"] * 4)
    vm_lists = [r for r in log if what(r) == "GET virtualmachines"]
    assert all("/virtualmachinescalesets/" not in r.path.lower() for r in vm_lists)  # not the Uniform VM API
    assert vm_lists[0].query["$filter"] == flexible_vm_filter(handle.id)
    assert vm_lists[0].query["$expand"] == "instanceView"
    assert all(r.status == 200 for r in log)


def test_the_latest_model_is_read_when_the_vm_list_reports_it(
    arm_emulator: Any, make_scale_set: Callable[..., Any], compute_for: Callable[..., AzureCompute]
) -> None:
    arm_emulator.set_semantics(flexible_model_applied="in_vm_list")
    handle = flexible(make_scale_set, 2)
    compute = compute_for(handle)
    fleet = compute.observe()
    assert fleet.model_applied_reported is True and all(i.latest_model_applied for i in fleet.instances)
    arm_emulator.set_semantics(flexible_model_applied="absent")
    assert compute.observe().model_applied_reported is False


def test_upgrade_is_one_manualupgrade_naming_the_vms(
    arm_emulator: Any, make_scale_set: Callable[..., Any], compute_for: Callable[..., AzureCompute]
) -> None:
    arm_emulator.set_semantics(flexible_model_applied="in_vm_list")  # to watch the result through ARM
    handle = flexible(make_scale_set, 3, extension_settings=SCRIPT)
    compute = compute_for(handle)
    fleet = compute.observe()
    model = fleet.model
    assert model.extension is not None
    compute.update_model(ModelSpec(extension=replace(model.extension, force_update_tag="v2")))
    first, second, third = (i.instance_id for i in fleet.instances)
    arm_emulator.clear_requests()

    compute.upgrade_instances([first, second])

    [call] = [r for r in arm_emulator.requests("POST") if r.path.lower().endswith("/manualupgrade")]
    assert call.body == {"instanceIds": [first, second]}
    arm_emulator.wait_idle()
    after = {i.instance_id: i.latest_model_applied for i in compute.observe().instances}
    assert after == {first: True, second: True, third: False}
    assert [i.upgrades for i in handle.state.instances_in_order()] == [1, 1, 0]


def test_reimage_is_one_virtual_machines_reimage_per_vm(
    arm_emulator: Any, make_scale_set: Callable[..., Any], compute_for: Callable[..., AzureCompute]
) -> None:
    handle = flexible(make_scale_set, 3)
    compute = compute_for(handle)
    names = [i.instance_id for i in compute.observe().instances]
    arm_emulator.clear_requests()

    compute.reimage_instances(names[1:])

    posts = arm_emulator.requests("POST")
    assert [r.path.rsplit("/", 2)[-2] for r in posts] == names[1:]
    assert all(r.path.lower().endswith("/reimage") and "/virtualmachinescalesets/" not in r.path.lower() for r in posts)
    arm_emulator.wait_idle()
    assert [i.upgrades for i in handle.state.instances_in_order()] == [0, 1, 1]


def test_a_reimage_knows_the_mode_without_an_observation_first(
    arm_emulator: Any, make_scale_set: Callable[..., Any], compute_for: Callable[..., AzureCompute]
) -> None:
    handle = flexible(make_scale_set, 1)
    [name] = handle.addresses()
    compute = compute_for(handle)  # a fresh adapter: it reads the scale set once to learn the mode
    arm_emulator.clear_requests()
    compute.reimage_instances([name])
    assert [what(r) for r in arm_emulator.requests()] == ["GET vmss", "POST reimage"]


def test_an_unknown_vm_name_is_not_found_and_throttling_is_transient(
    arm_emulator: Any, make_scale_set: Callable[..., Any], compute_for: Callable[..., AzureCompute]
) -> None:
    handle = flexible(make_scale_set, 2)
    compute = compute_for(handle)
    compute.observe()
    with pytest.raises(NotFoundError):
        compute.reimage_instances([f"{handle.name}_nosuchvm"])
    arm_emulator.set_throttling(1, per_minute=0.01)
    names = list(handle.addresses())
    compute.upgrade_instances(names[:1])  # the one token
    with pytest.raises(TransientError) as throttled:
        compute.upgrade_instances(names[1:])
    assert "429" in str(throttled.value)


def test_flexible_vm_mapping_takes_the_name_and_says_when_latest_is_not_reported() -> None:
    vm = {
        "name": "web_1a2b3c4d",
        "id": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/web_1a2b3c4d",
        "properties": {
            "provisioningState": "Succeeded",
            "instanceView": {"statuses": [{"code": "ProvisioningState/updating"}, {"code": "PowerState/running"}]},
        },
    }
    view = flexible_instance_view(vm, "CustomScript", "10.0.0.7")
    assert (view.instance_id, view.provisioning_state, view.private_ip) == ("web_1a2b3c4d", "Updating", "10.0.0.7")
    vm["properties"]["latestModelApplied"] = False
    assert flexible_instance_view(vm, "CustomScript", None).latest_model_applied is False
    assert flexible_vm_filter("/x/it's") == "'virtualMachineScaleSet/id' eq '/x/it''s'"
