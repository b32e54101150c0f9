"""What one page of the ARM emulator's VM and NIC lists costs it, over HTTPS: a page renders its own
instances only (not the whole fleet for each page), and answers the same JSON as rendering every instance
would; its connections have Nagle's algorithm off, so a keep-alive client is not held up waiting to ACK."""

from __future__ import annotations

import socket
from collections import Counter
from typing import Any

import pytest
import requests

from emulator.arm import render
from emulator.arm.server import ArmHandler
from tests.fixtures.emulator import EMULATOR_TOKEN, SUBSCRIPTION_ID

pytestmark = pytest.mark.integration

SIZE = 120
PAGE = 50


def _get(arm_emulator: Any, url: str) -> dict[str, Any]:
    answer = requests.get(
        url, headers={"Authorization": f"Bearer {EMULATOR_TOKEN}"}, timeout=10, verify=arm_emulator.ca_bundle
    )
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def _get_all(arm_emulator: Any, url: str) -> list[dict[str, Any]]:
    """Every page of a list, following nextLink."""
    pages = [_get(arm_emulator, url)]
    while "nextLink" in pages[-1]:
        pages.append(_get(arm_emulator, pages[-1]["nextLink"]))
    return pages


def _counting(monkeypatch: pytest.MonkeyPatch, name: str, calls: Counter[str]) -> None:
    original = getattr(render, name)

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls[name] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(render, name, counted)


def test_a_uniform_list_page_renders_its_own_vms_and_nics_only(
    arm_emulator: Any, make_scale_set: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    ss = make_scale_set(SIZE, serve=False)
    arm_emulator.set_page_size(PAGE)
    calls: Counter[str] = Counter()
    for name in ("vm_json", "nic_json"):
        _counting(monkeypatch, name, calls)
    base = f"{arm_emulator.url}{ss.id}"

    vm_pages = []
    for skip in (None, "50", "100"):
        before = calls["vm_json"]
        token = f"&$skiptoken={skip}" if skip else ""
        one = _get(arm_emulator, f"{base}/virtualMachines?api-version=2026-04-01&$expand=instanceView{token}")
        vm_pages.append(one)
        assert calls["vm_json"] - before == len(one["value"])  # 50, 50, 20: not 120 each
    assert [len(p["value"]) for p in vm_pages] == [50, 50, 20]
    nic_calls = calls["nic_json"]
    nic_pages = _get_all(arm_emulator, f"{base}/networkInterfaces?api-version=2018-10-01")
    assert calls["nic_json"] - nic_calls == SIZE  # three pages, each instance rendered once

    # The same answers as rendering the whole fleet and cutting it into pages (what the emulator did before).
    state = ss.state
    insts = state.instances_in_order()
    whole = [
        render.vm_json(state, i, SUBSCRIPTION_ID, latest=arm_emulator.semantics.latest(state, i), instance_view=True)
        for i in insts
    ]
    assert [vm for p in vm_pages for vm in p["value"]] == whole
    assert [nic for p in nic_pages for nic in p["value"]] == [render.nic_json(state, i, SUBSCRIPTION_ID) for i in insts]
    assert [p.get("nextLink", "").rsplit("$skiptoken=", 1)[-1] for p in vm_pages] == ["50", "100", ""]


def test_a_filtered_vm_list_still_filters_before_it_pages(arm_emulator: Any, make_scale_set: Any) -> None:
    ss = make_scale_set(7, serve=False)
    arm_emulator.set_page_size(3)
    flt = "properties/latestModelApplied eq true"
    url = f"{arm_emulator.url}{ss.id}/virtualMachines?api-version=2026-04-01&$filter={flt}"
    pages = _get_all(arm_emulator, url)
    assert [vm["instanceId"] for p in pages for vm in p["value"]] == [str(i) for i in range(7)]
    assert [len(p["value"]) for p in pages] == [3, 3, 1]
    none = _get_all(arm_emulator, url.replace("eq true", "eq false"))
    assert none == [{"value": []}]


def test_a_flexible_list_page_renders_its_own_vms_and_nics_only(
    arm_emulator: Any, make_scale_set: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    ss = make_scale_set(SIZE, orchestration_mode="Flexible", serve=False)
    arm_emulator.set_page_size(PAGE)
    calls: Counter[str] = Counter()
    for name in ("flex_vm_json", "nic_json"):
        _counting(monkeypatch, name, calls)
    group = f"{arm_emulator.url}/subscriptions/{SUBSCRIPTION_ID}/resourceGroups/{ss.resource_group}/providers"
    flt = f"'virtualMachineScaleSet/id' eq '{ss.id}'"
    vms = _get_all(
        arm_emulator,
        f"{group}/Microsoft.Compute/virtualMachines?api-version=2026-04-01&$expand=instanceView&$filter={flt}",
    )
    nics = _get_all(arm_emulator, f"{group}/Microsoft.Network/networkInterfaces?api-version=2026-03-01")
    assert [len(p["value"]) for p in vms] == [len(p["value"]) for p in nics] == [50, 50, 20]
    assert calls == Counter({"flex_vm_json": SIZE, "nic_json": SIZE})  # once each, not once per page
    names = [vm["name"] for p in vms for vm in p["value"]]
    assert names == [i.instance_id for i in ss.state.instances_in_order()]


def test_arm_connections_have_nagle_off(
    arm_emulator: Any, make_scale_set: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[int] = []
    original = ArmHandler.setup

    def setup(self: ArmHandler) -> None:
        original(self)
        seen.append(self.connection.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))

    monkeypatch.setattr(ArmHandler, "setup", setup)
    ss = make_scale_set(1, serve=False)
    _get_all(arm_emulator, f"{arm_emulator.url}{ss.id}/virtualMachines?api-version=2026-04-01")
    assert seen and all(flag != 0 for flag in seen)
