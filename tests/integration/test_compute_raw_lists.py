"""The fleet read pages through the VM and NIC lists as raw JSON through the client's own pipeline, not through the
SDK's models (issue 13, tick cost). Same requests, same views: checked here against the SDK's list operations on
the HTTPS ARM emulator, over several pages, for both orchestration modes, and for errors."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from emulator.arm import render
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


def _lists(emu: Any) -> dict[str, list[tuple[str, str, tuple[tuple[str, str], ...]]]]:
    """The list requests the emulator answered, VM list and NIC list apart: (method, path, query), in order
    within each list (the two lists are read at once, so their pages interleave)."""
    out: dict[str, list[tuple[str, str, tuple[tuple[str, str], ...]]]] = {"vms": [], "nics": []}
    for r in emu.requests():
        for key, suffix in (("vms", "/virtualmachines"), ("nics", "/networkinterfaces")):
            if r.path.lower().endswith(suffix):
                out[key].append((r.method, r.path, tuple(sorted(r.query.items()))))
    return out


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
    assert [len(ours["vms"]), len(ours["nics"])] == [3, 3]
    assert ours == _lists(arm_emulator)  # the same requests, page for page


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
    assert len(ours["vms"]) == 3 and len(ours["nics"]) >= 3 and ours == _lists(arm_emulator)


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


def _arm_list_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("arm-list")]


@pytest.mark.parametrize("mode", ["Uniform", "Flexible"])
def test_the_vm_and_nic_lists_are_read_at_once(
    arm_emulator: Any,
    make_scale_set: Callable[..., Any],
    compute_for: Callable[..., AzureCompute],
    monkeypatch: pytest.MonkeyPatch,
    mode: str,
) -> None:
    """The VM list's first page is held in the emulator until the NIC list's first request arrives: read one
    after the other, the look would wait the full 5 s and the VM page would record that it never saw one."""
    arm_emulator.set_page_size(4)
    handle = make_scale_set(10, orchestration_mode=mode, serve=False)
    compute = compute_for(handle)
    nic_asked = threading.Event()
    vm_page_saw_nics: list[bool] = []
    original = render.page

    def page(items: Any, path: str, query: dict[str, str], **kwargs: Any) -> Any:
        if path.lower().endswith("/networkinterfaces"):
            nic_asked.set()
        elif "$skiptoken" not in query:
            vm_page_saw_nics.append(nic_asked.wait(5))
        return original(items, path, query, **kwargs)

    monkeypatch.setattr(render, "page", page)
    arm_emulator.clear_requests()
    view = compute.observe()
    assert vm_page_saw_nics == [True]
    assert len(view.instances) == 10 and all(i.private_ip for i in view.instances)
    lists = _lists(arm_emulator)
    assert len(lists["vms"]) == 3 and len(lists["nics"]) >= 3  # every page of both, once
    assert _arm_list_threads() == []


@pytest.mark.parametrize(
    ("failing", "message"),
    [
        (("/networkInterfaces$",), "list NICs of {name}: HTTP 404 ResourceNotFound: injected"),
        (("/virtualMachines$", "/networkInterfaces$"), "list VMs of {name}: HTTP 404 ResourceNotFound: injected"),
    ],
)
def test_a_failed_page_of_either_list_fails_the_look(
    arm_emulator: Any,
    make_scale_set: Callable[..., Any],
    compute_for: Callable[..., AzureCompute],
    failing: tuple[str, ...],
    message: str,
) -> None:
    """A NIC page that fails fails the look with its own error; when both lists fail, the VM list's error is
    the one raised (what reading the VM list first gave). No reading thread outlives the look."""
    arm_emulator.set_page_size(3)
    handle = make_scale_set(5, serve=False)
    compute = compute_for(handle, max_retries=0)
    error = {"error": {"code": "ResourceNotFound", "message": "injected"}}
    for path in failing:
        arm_emulator.inject_fault("GET", path, 404, count=1, body=error)
    with pytest.raises(NotFoundError) as raised:
        compute.observe()
    assert message.format(name=handle.name) in str(raised.value)
    assert _arm_list_threads() == []
    arm_emulator.clear_faults()
    assert len(compute.observe().instances) == 5  # the next look reads both again


def test_each_page_is_parsed_once(
    arm_emulator: Any,
    make_scale_set: Callable[..., Any],
    compute_for: Callable[..., AzureCompute],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The pipeline already decodes each page's JSON (azure-core's ContentDecodePolicy); the fleet read takes
    that, and does not parse the page again."""
    arm_emulator.set_page_size(4)
    handle = make_scale_set(10, serve=False)
    compute = compute_for(handle)
    compute.observe()  # the clients made, the scale set read once
    parsed: list[int] = []
    original = json.JSONDecoder.decode

    def decode(self: json.JSONDecoder, text: str, *args: Any, **kwargs: Any) -> Any:
        if text.lstrip().startswith('{"value"'):  # a list page (every json.loads and .json() ends here)
            parsed.append(len(text))
        return original(self, text, *args, **kwargs)

    monkeypatch.setattr(json.JSONDecoder, "decode", decode)
    arm_emulator.clear_requests()
    view = compute.observe()
    pages = sum(len(v) for v in _lists(arm_emulator).values())
    assert len(view.instances) == 10 and pages == 6
    assert len(parsed) == pages
