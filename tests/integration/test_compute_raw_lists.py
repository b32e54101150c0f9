"""The fleet read pages through the VM and NIC lists as raw JSON through the client's own pipeline, not through the
SDK's models (issue 13, tick cost). Same requests, same views: checked here against the SDK's list operations on
the HTTPS ARM emulator, over several pages, for both orchestration modes, and for errors."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from rollout.adapters.compute import (
    AzureCompute,
    _as_json,
    credential_for,
    flexible_instance_view,
    flexible_vm_filter,
    instance_view_from_vm,
    parse_private_ips,
    parse_private_ips_by_vm,
)
from rollout.ports import NotFoundError, TransientError
from tests.fixtures.emulator import EMULATOR_TOKEN, SUBSCRIPTION_ID

pytestmark = pytest.mark.integration


@pytest.fixture
def compute_for(arm_emulator: Any) -> Iterator[Callable[..., AzureCompute]]:
    """``compute_for(handle, **overrides)``: the adapter for the emulator's scale set, closed afterwards."""
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
            **overrides,
        }
        made.append(AzureCompute(**kwargs))
        return made[-1]

    yield make
    for compute in made:
        compute.close()


def _lists(emu: Any) -> list[tuple[str, str, tuple[tuple[str, str], ...]]]:
    """The list requests the emulator answered: (method, path, query), in order."""
    return [
        (r.method, r.path, tuple(sorted(r.query.items())))
        for r in emu.requests()
        if r.path.lower().endswith(("/virtualmachines", "/networkinterfaces"))
    ]


def test_a_uniform_fleet_read_over_pages_is_the_sdks(
    arm_emulator: Any, make_scale_set: Callable[..., Any], compute_for: Callable[..., AzureCompute]
) -> None:
    arm_emulator.set_page_size(7)  # 20 instances: 3 pages of VMs and 3 of NICs
    handle = make_scale_set(20, serve=False)
    compute = compute_for(handle)
    arm_emulator.clear_requests()
    view = compute.observe()
    ours = _lists(arm_emulator)

    arm_emulator.clear_requests()
    rg, name = handle.resource_group, handle.name
    sdk = compute._compute.virtual_machine_scale_set_vms.list(rg, name, expand="instanceView")
    vms = [_as_json(vm) for vm in sdk]
    nics = compute._network.network_interfaces.list_virtual_machine_scale_set_network_interfaces(rg, name)
    ips = parse_private_ips(_as_json(nic) for nic in nics)
    expected = tuple(instance_view_from_vm(vm, "CustomScript", ips.get(str(vm.get("instanceId")))) for vm in vms)

    assert len(view.instances) == 20 and all(i.private_ip for i in view.instances)
    assert view.instances == expected
    assert len(ours) == 6 and ours == _lists(arm_emulator)  # the same requests, page for page


def test_a_flexible_fleet_read_over_pages_is_the_sdks(
    arm_emulator: Any, make_scale_set: Callable[..., Any], compute_for: Callable[..., AzureCompute]
) -> None:
    arm_emulator.set_page_size(4)
    handle = make_scale_set(9, orchestration_mode="Flexible", serve=False)
    compute = compute_for(handle)
    arm_emulator.clear_requests()
    view = compute.observe()
    ours = _lists(arm_emulator)

    arm_emulator.clear_requests()
    scale_set_id = compute._scale_set_id()
    rg = handle.resource_group
    sdk = compute._compute.virtual_machines.list(rg, filter=flexible_vm_filter(scale_set_id), expand="instanceView")
    vms = [_as_json(vm) for vm in sdk]
    ips = parse_private_ips_by_vm(_as_json(nic) for nic in compute._network.network_interfaces.list(rg))
    expected = tuple(flexible_instance_view(vm, "CustomScript", ips.get(str(vm.get("id", "")).lower())) for vm in vms)

    assert len(view.instances) == 9 and view.instances == expected
    assert len(ours) >= 4 and ours == _lists(arm_emulator)


@pytest.mark.parametrize(("status", "code"), [(404, "ResourceNotFound"), (429, "TooManyRequests")])
def test_a_failed_list_page_fails_the_read_as_the_sdk_does(
    arm_emulator: Any,
    make_scale_set: Callable[..., Any],
    compute_for: Callable[..., AzureCompute],
    status: int,
    code: str,
) -> None:
    arm_emulator.set_page_size(3)
    handle = make_scale_set(5, serve=False)
    compute = compute_for(handle, max_retries=0)
    # The VM list fails: the error carries ARM's status and code, as the SDK's list operation raises them.
    error = {"error": {"code": code, "message": "injected"}}
    arm_emulator.inject_fault("GET", r"/virtualMachines$", status, count=1, body=error, headers={"Retry-After": "30"})
    with pytest.raises(Exception) as raised:
        compute.observe()
    assert f"list VMs of {handle.name}: HTTP {status} {code}: injected" in str(raised.value)
    assert isinstance(raised.value, NotFoundError if status == 404 else TransientError)
