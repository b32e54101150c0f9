"""Behaviour of the ARM emulator, driven through the real azure-mgmt-compute / -network clients.

What the product relies on: auth and ARM error codes, paging, ``$filter``, LRO polling, upgrades
that are visible at once and finish later, idempotent upgrades, failure injection, protectedSettings
handling, throttling, injected faults, the request log, the admin HTTP API and a clean shutdown.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import requests
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ResourceNotFoundError

from emulator.arm import ArmEmulator
from tests.fixtures.emulator import EMULATOR_TOKEN, SUBSCRIPTION_ID, StaticTokenCredential

pytestmark = pytest.mark.integration

V2 = {"fileUris": ["https://releases.example/init/install_nginx.v2.sh"], "commandToExecute": "bash install_nginx.v2.sh"}
V3 = {"fileUris": ["https://releases.example/init/install_nginx.v3.sh"], "commandToExecute": "bash install_nginx.v3.sh"}


def write_extension(client: Any, ss: Any, settings: dict[str, Any], protected: dict[str, Any] | None = None) -> None:
    props: dict[str, Any] = {"settings": settings}
    if protected is not None:
        props["protectedSettings"] = protected
    client.virtual_machine_scale_set_extensions.begin_update(
        ss.resource_group, ss.name, "CustomScript", {"properties": props}
    ).result()


def upgrade(client: Any, ss: Any, ids: list[str]) -> Any:
    return client.virtual_machine_scale_sets.begin_update_instances(ss.resource_group, ss.name, {"instanceIds": ids})


def page_of(ss: Any, instance_id: str) -> requests.Response:
    return requests.get(f"http://{ss.addresses()[instance_id]}:{ss.port}/", timeout=5)


def vms_by_id(client: Any, ss: Any, **kwargs: Any) -> dict[str, Any]:
    return {
        vm.instance_id: vm for vm in client.virtual_machine_scale_set_vms.list(ss.resource_group, ss.name, **kwargs)
    }


# -- auth and errors -------------------------------------------------------------------------------


def test_a_wrong_bearer_token_is_rejected_with_authentication_failed(
    arm_emulator: ArmEmulator, make_scale_set: Any
) -> None:
    from azure.mgmt.compute import ComputeManagementClient

    ss = make_scale_set(1, serve=False)
    client = ComputeManagementClient(
        StaticTokenCredential("not-the-token"),
        SUBSCRIPTION_ID,
        base_url=arm_emulator.url,
        connection_verify=arm_emulator.ca_bundle,
        retry_total=0,
    )
    with client, pytest.raises(ClientAuthenticationError) as info:
        client.virtual_machine_scale_sets.get(ss.resource_group, ss.name)
    assert info.value.status_code == 401
    assert info.value.error.code == "AuthenticationFailed"
    raw = requests.get(f"{arm_emulator.url}{ss.id}?api-version=2026-04-01", verify=arm_emulator.ca_bundle, timeout=5)
    assert raw.status_code == 401 and raw.json()["error"]["code"] == "AuthenticationFailed"


def test_unknown_resources_answer_404_with_arm_error_codes(make_scale_set: Any, compute_client: Any) -> None:
    ss = make_scale_set(1, serve=False)
    with pytest.raises(ResourceNotFoundError) as missing_vmss:
        compute_client.virtual_machine_scale_sets.get(ss.resource_group, "no-such-vmss")
    assert missing_vmss.value.error.code == "ResourceNotFound"
    with pytest.raises(ResourceNotFoundError) as missing_vm:
        compute_client.virtual_machine_scale_set_vms.get(ss.resource_group, ss.name, "42")
    assert missing_vm.value.error.code == "NotFound"
    with pytest.raises(ResourceNotFoundError):
        compute_client.virtual_machine_scale_set_extensions.get(ss.resource_group, ss.name, "NoSuchExtension")


# -- reading: model, paging, filters, network ----------------------------------------------------------


def test_scale_set_reports_its_modes_and_model(make_scale_set: Any, compute_client: Any) -> None:
    ss = make_scale_set(2, serve=False, orchestration_mode="Flexible", upgrade_mode="Rolling", image_id="/img/v1")
    vmss = compute_client.virtual_machine_scale_sets.get(ss.resource_group, ss.name)
    assert vmss.properties.orchestration_mode == "Flexible"
    assert vmss.properties.upgrade_policy.mode == "Rolling"
    assert vmss.sku.capacity == 2
    profile = vmss.properties.virtual_machine_profile
    assert profile.storage_profile.image_reference.id == "/img/v1"
    [ext] = profile.extension_profile.extensions
    assert ext.name == "CustomScript" and ext.properties.settings["fileUris"][0].endswith("install_nginx.v1.sh")


def test_vm_list_follows_next_links_through_every_page(
    arm_emulator: ArmEmulator, make_scale_set: Any, compute_client: Any, network_client: Any
) -> None:
    ss = make_scale_set(23, serve=False)
    arm_emulator.set_page_size(10)
    try:
        vms = list(compute_client.virtual_machine_scale_set_vms.list(ss.resource_group, ss.name, expand="instanceView"))
        nics = list(
            network_client.network_interfaces.list_virtual_machine_scale_set_network_interfaces(
                ss.resource_group, ss.name
            )
        )
    finally:
        arm_emulator.set_page_size(50)
    assert [vm.instance_id for vm in vms] == [str(i) for i in range(23)]
    assert all(vm.properties.instance_view is not None for vm in vms)
    list_calls = arm_emulator.requests("GET", path_regex="/virtualMachines$")
    assert [c.query.get("$skiptoken") for c in list_calls] == [None, "10", "20"]
    assert all(c.query["$expand"] == "instanceView" for c in list_calls)  # the nextLink keeps the query
    # NICs page too, and map each VM to its loopback address.
    addresses = {
        nic.properties.virtual_machine.id.rsplit("/", 1)[-1]: nic.properties.ip_configurations[
            0
        ].properties.private_ip_address
        for nic in nics
    }
    assert addresses == ss.addresses()
    assert len(set(addresses.values())) == 23
    assert all(addr.startswith("127.0.1") and addr != "127.0.0.1" for addr in addresses.values())
    assert len(arm_emulator.requests("GET", path_contains="/networkInterfaces")) == 3


def test_filter_on_latest_model_applied_and_select_instance_view(make_scale_set: Any, compute_client: Any) -> None:
    ss = make_scale_set(4, serve=False)
    write_extension(compute_client, ss, V2)
    upgrade(compute_client, ss, ["1", "3"]).result()
    outdated = vms_by_id(compute_client, ss, filter="properties/latestModelApplied eq false")
    latest = vms_by_id(compute_client, ss, filter="properties/latestModelApplied eq true")
    assert sorted(outdated) == ["0", "2"] and sorted(latest) == ["1", "3"]
    selected = vms_by_id(compute_client, ss, select="instanceView/statuses")
    assert [s.code for s in selected["0"].properties.instance_view.statuses] == [
        "ProvisioningState/succeeded",
        "PowerState/running",
    ]
    with pytest.raises(HttpResponseError) as bad:
        vms_by_id(compute_client, ss, filter="name eq 'x'")
    assert bad.value.status_code == 400


# -- upgrades ----------------------------------------------------------------------------------------


def test_manualupgrade_shows_updating_at_once_then_applies_the_new_release(
    arm_emulator: ArmEmulator, make_scale_set: Any, compute_client: Any
) -> None:
    ss = make_scale_set(3)
    assert "release=" not in page_of(ss, "0").text  # the image's stock page before any release
    write_extension(compute_client, ss, V2)
    assert not any(vm.properties.latest_model_applied for vm in vms_by_id(compute_client, ss).values())

    poller = upgrade(compute_client, ss, ["0"])
    right_after = compute_client.virtual_machine_scale_set_vms.get(
        ss.resource_group, ss.name, "0", expand="instanceView"
    )
    assert right_after.properties.provisioning_state == "Updating"
    assert right_after.properties.instance_view.extensions[0].statuses[0].code == "ProvisioningState/transitioning"
    poller.result()

    vm = compute_client.virtual_machine_scale_set_vms.get(ss.resource_group, ss.name, "0", expand="instanceView")
    assert vm.properties.provisioning_state == "Succeeded"
    assert vm.properties.latest_model_applied is True
    status = vm.properties.instance_view.extensions[0].statuses[0]
    assert status.code == "ProvisioningState/succeeded" and "installed install_nginx.v2.sh" in status.message
    response = page_of(ss, "0")
    assert response.status_code == 200
    assert "<title>Welcome to nginx!</title> release=install_nginx.v2.sh" in response.text
    assert "release=" not in page_of(ss, "1").text  # only the canary moved
    [call] = arm_emulator.requests("POST", path_contains="manualupgrade")
    assert call.body == {"instanceIds": ["0"]} and call.status == 202


def test_upgrading_a_latest_or_already_updating_instance_applies_only_once(
    arm_emulator: ArmEmulator, make_scale_set: Any, compute_client: Any
) -> None:
    ss = make_scale_set(2, serve=False, upgrade_seconds=0.3)
    write_extension(compute_client, ss, V2)
    first = upgrade(compute_client, ss, ["0"])
    second = upgrade(compute_client, ss, ["0", "1"])  # "0" is still Updating: accepted, no second apply
    first.result()
    second.result()
    upgrade(compute_client, ss, ["0", "1"]).result()  # both latest now: accepted no-op
    runtimes = {i: ss.state.instances[i].runtime for i in ("0", "1")}
    assert [runtimes[i].applied_count for i in ("0", "1")] == [1, 1]
    assert len(arm_emulator.requests("POST", path_contains="manualupgrade")) == 3
    assert all(vm.properties.latest_model_applied for vm in vms_by_id(compute_client, ss).values())


def test_protected_settings_count_for_latest_model_but_are_never_returned(
    arm_emulator: ArmEmulator, make_scale_set: Any, compute_client: Any
) -> None:
    ss = make_scale_set(1, serve=False, extension_protected_settings={"token": "one"})
    write_extension(compute_client, ss, ss.state.model.extensions[0].settings, protected={"token": "two"})
    vm = compute_client.virtual_machine_scale_set_vms.get(ss.resource_group, ss.name, "0")
    assert vm.properties.latest_model_applied is False  # only the protected part changed
    ext = compute_client.virtual_machine_scale_set_extensions.get(ss.resource_group, ss.name, "CustomScript")
    assert ext.properties.protected_settings is None
    [write] = arm_emulator.requests("PATCH", path_contains="/extensions/")
    assert write.body["properties"]["protectedSettings"] == "<redacted>"  # the log keeps no secrets either


def test_a_failing_release_marks_the_instance_failed_and_fails_the_operation(
    arm_emulator: ArmEmulator, make_scale_set: Any, compute_client: Any
) -> None:
    ss = make_scale_set(2)
    arm_emulator.fail_release(ss.resource_group, ss.name, r"v3\.sh$", stderr="nginx: [emerg] bad config")
    write_extension(compute_client, ss, V3)
    with pytest.raises(HttpResponseError) as failed:
        upgrade(compute_client, ss, ["1"]).result()
    assert "VMExtensionProvisioningError" in str(failed.value)
    vm = compute_client.virtual_machine_scale_set_vms.get(ss.resource_group, ss.name, "1", expand="instanceView")
    assert vm.properties.provisioning_state == "Failed"
    status = vm.properties.instance_view.extensions[0].statuses[0]
    assert status.code == "ProvisioningState/failed/1"
    assert "nginx: [emerg] bad config" in status.message
    assert "release=" not in page_of(ss, "1").text  # a failed script leaves the old content


def test_http500_rule_and_instance_health_break_the_page(
    arm_emulator: ArmEmulator, make_scale_set: Any, compute_client: Any
) -> None:
    ss = make_scale_set(3)
    arm_emulator.fail_release(ss.resource_group, ss.name, "v2", mode="http500")
    write_extension(compute_client, ss, V2)
    upgrade(compute_client, ss, ["0"]).result()
    assert page_of(ss, "0").status_code == 500
    vm = compute_client.virtual_machine_scale_set_vms.get(ss.resource_group, ss.name, "0")
    assert vm.properties.provisioning_state == "Succeeded"  # the script "worked"; only probes see it
    arm_emulator.set_instance_health(ss.resource_group, ss.name, "2", False, vm_health="unhealthy")
    assert page_of(ss, "2").status_code == 500
    view = compute_client.virtual_machine_scale_set_vms.get_instance_view(ss.resource_group, ss.name, "2")
    assert view.vm_health.status.code == "HealthState/unhealthy"
    arm_emulator.set_instance_health(ss.resource_group, ss.name, "2", True)
    assert page_of(ss, "2").status_code == 200


def test_image_update_and_reimage(arm_emulator: ArmEmulator, make_scale_set: Any, compute_client: Any) -> None:
    ss = make_scale_set(2, extension_settings=None, image_id="/images/nginx-v1")
    compute_client.virtual_machine_scale_sets.begin_update(
        ss.resource_group,
        ss.name,
        {"properties": {"virtualMachineProfile": {"storageProfile": {"imageReference": {"id": "/images/nginx-v2"}}}}},
    ).result()
    upgrade(compute_client, ss, ["0"]).result()
    assert "release=nginx-v2" in page_of(ss, "0").text
    vm = compute_client.virtual_machine_scale_set_vms.get(ss.resource_group, ss.name, "0")
    assert vm.properties.storage_profile.image_reference.id == "/images/nginx-v2"
    # Reimage re-runs the instance's own model; it does not move "1" to the new image.
    compute_client.virtual_machine_scale_set_vms.begin_reimage(ss.resource_group, ss.name, "1").result()
    assert "release=nginx-v1" in page_of(ss, "1").text
    compute_client.virtual_machine_scale_sets.begin_reimage(ss.resource_group, ss.name).result()
    assert [ss.state.instances[i].upgrades for i in ("0", "1")] == [2, 2]


def test_scale_out_instances_get_the_current_model(
    arm_emulator: ArmEmulator, make_scale_set: Any, compute_client: Any
) -> None:
    ss = make_scale_set(1)
    write_extension(compute_client, ss, V2)
    [new_id] = arm_emulator.scale_out(ss.resource_group, ss.name, 1)
    arm_emulator.wait_idle()
    vms = vms_by_id(compute_client, ss)
    assert vms["0"].properties.latest_model_applied is False
    assert vms[new_id].properties.latest_model_applied is True
    assert "release=install_nginx.v2.sh" in page_of(ss, new_id).text


# -- throttling, faults, request log --------------------------------------------------------------------


def test_model_writes_are_throttled_per_scale_set(
    arm_emulator: ArmEmulator, make_scale_set: Any, compute_client: Any
) -> None:
    ss = make_scale_set(1, serve=False)
    other = make_scale_set(1, serve=False)
    arm_emulator.set_throttling(3, per_minute=4)
    for i in range(3):
        write_extension(compute_client, ss, {"fileUris": [f"https://r/install_nginx.v{i + 2}.sh"]})
    with pytest.raises(HttpResponseError) as throttled:
        upgrade(compute_client, ss, ["0"])
    assert throttled.value.status_code == 429
    assert throttled.value.error.code == "OperationNotAllowed"
    assert 1 <= int(throttled.value.response.headers["Retry-After"]) <= 15
    write_extension(compute_client, other, V2)  # the bucket is per scale set
    compute_client.virtual_machine_scale_sets.get(ss.resource_group, ss.name)  # reads are not throttled
    arm_emulator.set_throttling(None)
    upgrade(compute_client, ss, ["0"]).result()


def test_injected_faults_answer_the_next_matching_requests(
    arm_emulator: ArmEmulator, make_scale_set: Any, compute_client: Any
) -> None:
    ss = make_scale_set(1, serve=False)
    arm_emulator.inject_fault("POST", r"/manualupgrade$", 500, count=1)
    arm_emulator.inject_fault(
        "GET", r"/virtualMachines$", 409, count=2, body={"error": {"code": "Conflict", "message": "busy"}}
    )
    with pytest.raises(HttpResponseError) as server_error:
        upgrade(compute_client, ss, ["0"])
    assert server_error.value.status_code == 500
    for _ in range(2):
        with pytest.raises(HttpResponseError) as conflict:
            vms_by_id(compute_client, ss)
        assert conflict.value.status_code == 409 and conflict.value.error.code == "Conflict"
    assert list(vms_by_id(compute_client, ss)) == ["0"]  # faults used up
    upgrade(compute_client, ss, ["0"]).result()
    statuses = [r.status for r in arm_emulator.requests("POST", path_contains="manualupgrade")]
    assert statuses == [500, 202]


def test_request_log_is_filterable_and_clearable(
    arm_emulator: ArmEmulator, make_scale_set: Any, compute_client: Any
) -> None:
    ss = make_scale_set(3, serve=False)
    write_extension(compute_client, ss, V2)
    upgrade(compute_client, ss, ["0", "1"]).result()
    upgrade(compute_client, ss, ["2"]).result()
    bodies = [r.body["instanceIds"] for r in arm_emulator.requests("POST", path_contains="manualupgrade")]
    assert bodies == [["0", "1"], ["2"]]
    assert len(arm_emulator.requests("PATCH", path_contains="/extensions/CustomScript")) == 1
    polls = arm_emulator.requests("GET", path_contains="/operations/", include_polls=True)
    assert polls and all(r.status in (200, 202) for r in polls)
    arm_emulator.clear_requests()
    assert arm_emulator.requests() == []


# -- admin HTTP API, scale, shutdown ------------------------------------------------------------------


def test_admin_http_api_drives_the_emulator(arm_emulator: ArmEmulator, compute_client: Any) -> None:
    session = requests.Session()
    # Not session.verify: requests lets REQUESTS_CA_BUNDLE from the environment override it.
    session.trust_env = False
    session.verify = arm_emulator.ca_bundle
    session.headers["Authorization"] = f"Bearer {EMULATOR_TOKEN}"
    admin = f"{arm_emulator.url}/_admin"
    assert requests.get(f"{admin}/settings", verify=arm_emulator.ca_bundle, timeout=5).status_code == 401
    created = session.post(
        f"{admin}/scalesets",
        json={
            "resource_group": "rg-admin",
            "name": "web",
            "instances": 2,
            "upgrade_seconds": 0.1,
            "extension": {"settings": V2},
            "serve": False,
        },
        timeout=10,
    )
    try:
        assert created.status_code == 201, created.text
        assert [i["instanceId"] for i in created.json()["instances"]] == ["0", "1"]
        vmss = compute_client.virtual_machine_scale_sets.get("rg-admin", "web")
        assert vmss.sku.capacity == 2
        assert session.post(f"{admin}/scalesets/rg-admin/web/scale", json={"count": 1}, timeout=10).json()["added"] == [
            "2"
        ]
        session.post(f"{admin}/faults", json={"method": "GET", "path_regex": "/web$", "status": 500}, timeout=5)
        with pytest.raises(HttpResponseError):
            compute_client.virtual_machine_scale_sets.get("rg-admin", "web")
        log = session.get(f"{admin}/requests", params={"method": "GET", "path_contains": "/web"}, timeout=5).json()
        assert [r["status"] for r in log["requests"]][-2:] == [200, 500]
        health = session.post(
            f"{admin}/scalesets/rg-admin/web/instances/1/health",
            json={"healthy": False, "vm_health": "unhealthy"},
            timeout=5,
        )
        assert health.status_code == 200
        view = compute_client.virtual_machine_scale_set_vms.get_instance_view("rg-admin", "web", "1")
        assert view.vm_health.status.code == "HealthState/unhealthy"
        settings = session.post(f"{admin}/settings", json={"page_size": 7}, timeout=5).json()
        assert settings["page_size"] == 7
    finally:
        session.post(f"{admin}/settings", json={"page_size": 50}, timeout=5)
        assert session.delete(f"{admin}/scalesets/rg-admin/web", timeout=10).status_code == 200
    with pytest.raises(ResourceNotFoundError):
        compute_client.virtual_machine_scale_sets.get("rg-admin", "web")


@pytest.mark.slow
def test_a_served_fleet_of_500_lists_in_pages_of_50_and_upgrades_in_parallel(
    arm_emulator: ArmEmulator, make_scale_set: Any, compute_client: Any, network_client: Any
) -> None:
    started = time.monotonic()
    ss = make_scale_set(500)  # every instance serves its page on its own loopback address
    created = time.monotonic() - started
    started = time.monotonic()
    vms = list(compute_client.virtual_machine_scale_set_vms.list(ss.resource_group, ss.name, expand="instanceView"))
    listed = time.monotonic() - started
    assert len(vms) == 500 and len({vm.instance_id for vm in vms}) == 500
    assert len(arm_emulator.requests("GET", path_regex="/virtualMachines$")) == 10
    nics = network_client.network_interfaces.list_virtual_machine_scale_set_network_interfaces(
        ss.resource_group, ss.name
    )
    assert len({nic.properties.ip_configurations[0].properties.private_ip_address for nic in nics}) == 500
    write_extension(compute_client, ss, V2)
    started = time.monotonic()
    upgrade(compute_client, ss, [str(i) for i in range(500)]).result()
    upgraded = time.monotonic() - started
    print(f"\n500 served instances: create {created:.2f}s, paged list {listed:.2f}s, upgrade all {upgraded:.2f}s")
    for instance_id in ("0", "250", "499"):
        assert "release=install_nginx.v2.sh" in page_of(ss, instance_id).text
    assert listed < 10 and upgraded < 10  # one upgrade_seconds (0.2 s) for all, not 500 of them


def test_stop_leaves_no_threads_or_sockets_behind(tmp_path: Any) -> None:
    before = set(threading.enumerate())
    emu = ArmEmulator(token="t", state_dir=tmp_path, address_base="127.0.19.1", instance_port=0, upgrade_seconds=5)
    emu.start()
    emu.create_scale_set("rg", "s", 3, extension_settings=V2)
    keepalive = requests.Session()
    keepalive.trust_env = False  # else REQUESTS_CA_BUNDLE from the environment overrides verify
    keepalive.verify = emu.ca_bundle
    response = keepalive.get(f"{emu.url}/_admin/settings", headers={"Authorization": "Bearer t"}, timeout=5)
    assert response.status_code == 200
    emu.set_throttling(None)
    emu.fail_release("rg", "s", "nothing")
    emu.create_scale_set("rg", "s2", 1, extension_settings=V3)
    emu._start_upgrades(emu.scale_set("rg", "s2"), ["0"], reimage=True)  # a 5 s upgrade in flight
    url = emu.url
    started = time.monotonic()
    emu.stop()
    assert time.monotonic() - started < 3  # the in-flight upgrade does not hold stop() for 5 s
    deadline = time.monotonic() + 2  # handler threads notice their closed socket asynchronously
    while (
        leftover := [t for t in threading.enumerate() if t not in before and t.is_alive()]
    ) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert leftover == []
    with pytest.raises(requests.ConnectionError):
        requests.get(url, verify=False, timeout=2)
    keepalive.close()
