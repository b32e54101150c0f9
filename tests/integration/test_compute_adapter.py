"""AzureCompute (rollout/adapters/compute.py) through the real SDKs, over HTTPS, against the ARM emulator.

Two parts:
* Mapping tests (no network, unmarked): the pure REST-JSON -> domain helpers, with bodies in the
  official REST shapes (trimmed from the 2026-04-01 examples).
* Integration tests (``pytest.mark.integration``): the adapter against the ``arm_emulator`` fixture,
  judged by what the emulator saw (its request log) and by what the next observation returns.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ServiceRequestError
from azure.core.rest import HttpRequest, HttpResponse

from rollout.adapters.compute import (
    AzureCompute,
    StaticTokenCredential,
    credential_for,
    extension_body,
    image_patch_body,
    instance_view_from_vm,
    parse_fleet_model,
    parse_private_ips,
    port_error_from,
)
from rollout.model import ExtensionSpec, FleetView, ModelSpec
from rollout.ports import ConflictError, NotFoundError, PortError, TransientError

VMSS_ID = "/subscriptions/sub/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/web"


# --------------------------------------------------------------------------------------------------
# Mapping helpers (no network)
# --------------------------------------------------------------------------------------------------


def _vm(instance_id: str, **props: Any) -> dict[str, Any]:
    return {
        "name": f"web_{instance_id}",
        "id": f"{VMSS_ID}/virtualMachines/{instance_id}",
        "instanceId": instance_id,
        "properties": props,
    }


def test_instance_view_reads_states_from_instance_view_statuses() -> None:
    vm = _vm(
        "4",
        latestModelApplied=False,
        provisioningState="Succeeded",  # stale: the instance view says an upgrade is running
        instanceView={
            "statuses": [
                {"code": "ProvisioningState/updating", "level": "Info", "displayStatus": "Updating"},
                {"code": "PowerState/running", "level": "Info", "displayStatus": "VM running"},
            ],
            "extensions": [
                {"name": "HealthExtension", "statuses": [{"code": "ProvisioningState/succeeded"}]},
                {
                    "name": "customscript",  # ARM names are case-insensitive
                    "type": "Microsoft.Azure.Extensions.CustomScript",
                    "statuses": [
                        {
                            "code": "ProvisioningState/failed/1",
                            "level": "Error",
                            "displayStatus": "Provisioning failed",
                            "message": "Enable failed: exit status 1: nginx: [emerg]",
                        }
                    ],
                },
            ],
            "vmHealth": {"status": {"code": "HealthState/unhealthy"}},
        },
    )

    view = instance_view_from_vm(vm, "CustomScript", "127.0.10.5")

    assert view.instance_id == "4"
    assert view.latest_model_applied is False
    assert view.provisioning_state == "Updating"
    assert view.power_state == "running"
    assert view.extension_status == "Failed"
    assert view.extension_message == "Enable failed: exit status 1: nginx: [emerg]"
    assert view.vm_health == "Unhealthy"
    assert view.private_ip == "127.0.10.5"


def test_instance_without_instance_view_falls_back_to_properties() -> None:
    view = instance_view_from_vm(_vm("0", latestModelApplied=True, provisioningState="Succeeded"), "CustomScript", None)
    assert view.computer_name is None  # neither an instance view nor an osProfile: not guessed

    assert (view.provisioning_state, view.power_state, view.extension_status, view.vm_health) == (
        "Succeeded",
        None,
        None,
        None,
    )
    assert view.latest_model_applied is True


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        ([{"code": "ProvisioningState/succeeded", "message": "Enable succeeded"}], ("Succeeded", "Enable succeeded")),
        (
            [{"code": "ProvisioningState/transitioning", "displayStatus": "Transitioning"}],
            ("Transitioning", "Transitioning"),
        ),
        ([], ("Transitioning", "")),
        ([{"code": "ComponentStatus/stderr", "level": "Error", "message": "boom"}], ("Failed", "boom")),
    ],
)
def test_extension_status_of_the_named_extension(statuses: list[dict[str, str]], expected: tuple[str, str]) -> None:
    vm = _vm(
        "1", latestModelApplied=True, instanceView={"extensions": [{"name": "CustomScript", "statuses": statuses}]}
    )

    view = instance_view_from_vm(vm, "CustomScript", None)

    assert (view.extension_status, view.extension_message) == expected


def test_fleet_model_reads_extension_image_and_modes() -> None:
    vmss = {
        "id": VMSS_ID,
        "properties": {
            "provisioningState": "Updating",
            "orchestrationMode": "Uniform",
            "upgradePolicy": {"mode": "Manual"},
            "virtualMachineProfile": {
                "storageProfile": {"imageReference": {"id": "/subscriptions/sub/images/web-v6"}},
                "extensionProfile": {
                    "extensions": [
                        {"name": "Other", "properties": {"publisher": "x", "type": "y", "typeHandlerVersion": "1.0"}},
                        {
                            "name": "CustomScript",
                            "properties": {
                                "publisher": "Microsoft.Azure.Extensions",
                                "type": "CustomScript",
                                "typeHandlerVersion": "2.1",
                                "autoUpgradeMinorVersion": True,
                                "forceUpdateTag": "v6",
                                "settings": {"fileUris": ["https://x/install_nginx.v6.sh"]},
                            },
                        },
                    ]
                },
            },
        },
    }

    fleet = parse_fleet_model(vmss, "CustomScript")

    assert fleet.provisioning_state == "Updating"
    assert (fleet.orchestration_mode, fleet.upgrade_mode) == ("Uniform", "Manual")
    assert fleet.model.image_id == "/subscriptions/sub/images/web-v6"
    assert fleet.model.extension == ExtensionSpec(
        name="CustomScript",
        publisher="Microsoft.Azure.Extensions",
        type="CustomScript",
        type_handler_version="2.1",
        settings={"fileUris": ["https://x/install_nginx.v6.sh"]},
        protected_settings=None,
        auto_upgrade_minor_version=True,
        force_update_tag="v6",
    )
    assert fleet.instances == ()


def test_fleet_model_without_the_extension_or_image_id() -> None:
    fleet = parse_fleet_model({"properties": {"provisioningState": "Succeeded"}}, "CustomScript")

    assert fleet.model.extension is None and fleet.model.image_id is None
    # ARM's defaults when the properties are omitted.
    assert (fleet.orchestration_mode, fleet.upgrade_mode) == ("Uniform", "Manual")


def test_private_ips_prefer_the_primary_nic_and_ip_configuration() -> None:
    def nic(instance: str, primary: bool, *configs: tuple[str, bool]) -> dict[str, Any]:
        return {
            "id": f"{VMSS_ID}/virtualMachines/{instance}/networkInterfaces/nic{int(primary)}",
            "properties": {
                "primary": primary,
                "virtualMachine": {"id": f"{VMSS_ID}/virtualMachines/{instance}"},
                "ipConfigurations": [
                    {"name": f"ip{n}", "properties": {"privateIPAddress": ip, "primary": p}}
                    for n, (ip, p) in enumerate(configs)
                ],
            },
        }

    nics = [
        nic("0", False, ("10.1.0.4", True)),  # the secondary NIC listed first
        nic("0", True, ("10.0.0.9", False), ("10.0.0.4", True)),
        nic("1", True, ("10.0.0.5", True)),
        {"id": "/subscriptions/sub/resourceGroups/rg/providers/Microsoft.Network/networkInterfaces/loose"},
    ]

    assert parse_private_ips(nics) == {"0": "10.0.0.4", "1": "10.0.0.5"}


def test_extension_body_omits_unknown_protected_settings() -> None:
    spec = ExtensionSpec(
        name="CustomScript",
        publisher="Microsoft.Azure.Extensions",
        type="CustomScript",
        type_handler_version="2.1",
        settings={"fileUris": ["u"]},
        protected_settings=None,
        force_update_tag="v7",
    )

    body = extension_body(spec)

    assert body == {
        "name": "CustomScript",
        "properties": {
            "publisher": "Microsoft.Azure.Extensions",
            "type": "CustomScript",
            "typeHandlerVersion": "2.1",
            "autoUpgradeMinorVersion": True,
            "settings": {"fileUris": ["u"]},
            "forceUpdateTag": "v7",
        },
    }
    with_secret = extension_body(
        ExtensionSpec(**{**spec.__dict__, "protected_settings": {"commandToExecute": "bash x.sh"}})
    )
    assert with_secret["properties"]["protectedSettings"] == {"commandToExecute": "bash x.sh"}
    assert image_patch_body("/img/7") == {
        "properties": {"virtualMachineProfile": {"storageProfile": {"imageReference": {"id": "/img/7"}}}}
    }


def _http_error(status: int, body: bytes, cls: type[HttpResponseError] = HttpResponseError) -> HttpResponseError:
    """An SDK error built the way the generated operations build it: from a real HttpResponse."""
    from azure.core.pipeline.transport import RequestsTransportResponse
    from requests import Response

    raw = Response()
    raw.status_code = status
    raw._content = body
    raw.headers["Content-Type"] = "application/json"
    request = HttpRequest("GET", "https://127.0.0.1/x")
    response: HttpResponse = RequestsTransportResponse(request, raw)  # type: ignore[assignment]
    return cls(response=response)


@pytest.mark.parametrize(
    ("status", "expected"),
    [(404, NotFoundError), (409, ConflictError), (429, TransientError), (503, TransientError), (400, PortError)],
)
def test_http_errors_map_to_port_errors_with_arm_code_and_message(status: int, expected: type[PortError]) -> None:
    err = _http_error(status, b'{"error": {"code": "SomeArmCode", "message": "what ARM said"}}')

    mapped = port_error_from(err, "GET scale set web")

    assert type(mapped) is expected
    assert "SomeArmCode" in str(mapped) and "what ARM said" in str(mapped)
    assert f"HTTP {status}" in str(mapped) and "GET scale set web" in str(mapped)


def test_subclassed_and_connection_errors_map_too() -> None:
    conflict = _http_error(409, b'{"error": {"code": "OperationNotAllowed", "message": "busy"}}', ResourceExistsError)
    assert isinstance(port_error_from(conflict, "x"), ConflictError)
    assert isinstance(port_error_from(ServiceRequestError("connection refused"), "x"), TransientError)


def test_credential_for_a_token_is_static() -> None:
    credential = credential_for("tok-123")

    assert isinstance(credential, StaticTokenCredential)
    assert credential.get_token("https://127.0.0.1:1/.default").token == "tok-123"
    assert credential.get_token_info("https://127.0.0.1:1/.default").token == "tok-123"


def test_credential_for_no_token_is_the_managed_identity_chain() -> None:
    from azure.identity import DefaultAzureCredential

    assert isinstance(credential_for(None), DefaultAzureCredential)
    assert isinstance(credential_for(""), DefaultAzureCredential)


# --------------------------------------------------------------------------------------------------
# Integration: the real SDK over HTTPS against the ARM emulator
# --------------------------------------------------------------------------------------------------

V2_SETTINGS = {
    "fileUris": ["https://releases.example/init/install_nginx.v2.sh"],
    "commandToExecute": "bash install_nginx.v2.sh",
}


def _v2_extension(settings: dict[str, Any] | None = None, tag: str = "v2") -> ExtensionSpec:
    return ExtensionSpec(
        name="CustomScript",
        publisher="Microsoft.Azure.Extensions",
        type="CustomScript",
        type_handler_version="2.1",
        settings=settings or V2_SETTINGS,
        protected_settings={"managedIdentity": {}},
        force_update_tag=tag,
    )


class _RecordingCredential(StaticTokenCredential):
    """The static credential, remembering which scopes the SDK asked it for."""

    def __init__(self, token: str) -> None:
        super().__init__(token)
        self.scopes: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        self.scopes.append(scopes)
        return super().get_token(*scopes, **kwargs)

    def get_token_info(self, *scopes: str, options: Any = None) -> Any:
        self.scopes.append(scopes)
        return super().get_token_info(*scopes, options=options)


@pytest.fixture
def compute_for(arm_emulator: Any) -> Iterator[Callable[..., AzureCompute]]:
    """``compute_for(handle, **overrides) -> AzureCompute`` built the way bootstrap builds it."""
    from tests.fixtures.emulator import EMULATOR_TOKEN, SUBSCRIPTION_ID

    made: list[AzureCompute] = []

    def make(handle: Any = None, **overrides: Any) -> AzureCompute:
        kwargs: dict[str, Any] = {
            "subscription_id": SUBSCRIPTION_ID,
            "resource_group": handle.resource_group if handle else "rg-canary",
            "vmss_name": handle.name if handle else "no-such-vmss",
            "extension_name": "CustomScript",
            "arm_endpoint": arm_emulator.url,
            "credential": credential_for(EMULATOR_TOKEN),
            "ca_bundle": arm_emulator.ca_bundle,
            "lro_poll_interval_s": 0.05,
        }
        kwargs.update(overrides)
        compute = AzureCompute(**kwargs)
        made.append(compute)
        return compute

    yield make
    for compute in made:
        compute.close()


def _arm_requests(emu: Any, handle: Any) -> list[Any]:
    """This scale set's ARM requests (not operation polls), oldest first."""
    return [r for r in emu.requests() if f"/virtualMachineScaleSets/{handle.name}".lower() in r.path.lower()]


def _kind(record: Any, handle: Any) -> str:
    """'GET vmss' / 'GET virtualMachines' / 'POST manualupgrade' ...: what a request was for."""
    rest = record.path.lower().split(f"/virtualmachinescalesets/{handle.name.lower()}", 1)[1].strip("/")
    return f"{record.method} {rest or 'vmss'}"


def _observe_until(compute: AzureCompute, done: Callable[[FleetView], bool], timeout: float = 15.0) -> FleetView:
    deadline = time.monotonic() + timeout
    while True:
        fleet = compute.observe()
        if done(fleet) or time.monotonic() > deadline:
            return fleet
        time.sleep(0.1)


@pytest.fixture
def page_size_two(arm_emulator: Any) -> Iterator[None]:
    old = arm_emulator.page_size
    arm_emulator.set_page_size(2)
    try:
        yield
    finally:
        arm_emulator.set_page_size(old)


@pytest.mark.integration
@pytest.mark.usefixtures("page_size_two")
def test_observe_reads_the_fleet_in_one_get_one_vm_list_and_one_nic_list(
    arm_emulator: Any, make_scale_set: Callable[..., Any], compute_for: Callable[..., AzureCompute]
) -> None:
    handle = make_scale_set(instances=5)
    compute = compute_for(handle)
    arm_emulator.clear_requests()

    fleet = compute.observe()

    assert [i.instance_id for i in fleet.instances] == ["0", "1", "2", "3", "4"]
    assert {i.instance_id: i.private_ip for i in fleet.instances} == handle.addresses()
    # The computer names the logs carry (VirtualMachineScaleSetVMInstanceView.computerName), one per instance.
    names = [i.computer_name for i in fleet.instances]
    assert all(names) and len(set(names)) == len(names), names
    for inst in fleet.instances:
        assert (inst.latest_model_applied, inst.provisioning_state, inst.power_state) == (True, "Succeeded", "running")
        assert inst.extension_status == "Succeeded" and inst.extension_message.startswith("Enable succeeded")
        assert inst.vm_health is None  # no application health extension in this set
    assert (fleet.provisioning_state, fleet.orchestration_mode, fleet.upgrade_mode) == (
        "Succeeded",
        "Uniform",
        "Manual",
    )
    assert fleet.model.extension is not None
    assert dict(fleet.model.extension.settings) == {
        "fileUris": ["https://releases.example/init/install_nginx.v1.sh"],
        "commandToExecute": "bash install_nginx.v1.sh",
    }
    assert fleet.model.extension.protected_settings is None

    # Page size 2 over 5 instances: each listing is 3 pages; nothing else was asked.
    log = _arm_requests(arm_emulator, handle)
    kinds = [_kind(r, handle) for r in log]
    assert sorted(kinds) == sorted(["GET vmss"] + ["GET virtualmachines"] * 3 + ["GET networkinterfaces"] * 3)
    first_pages = [r for r in log if "$skiptoken" not in r.query]
    assert sorted(_kind(r, handle) for r in first_pages) == ["GET networkinterfaces", "GET virtualmachines", "GET vmss"]
    vm_list = next(r for r in first_pages if _kind(r, handle) == "GET virtualmachines")
    assert vm_list.query.get("$expand") == "instanceView"
    assert all(r.status == 200 for r in log)


@pytest.mark.integration
def test_read_model_is_one_get_without_instances(
    arm_emulator: Any, make_scale_set: Callable[..., Any], compute_for: Callable[..., AzureCompute]
) -> None:
    handle = make_scale_set(instances=2)
    compute = compute_for(handle)
    arm_emulator.clear_requests()

    fleet = compute.read_model()

    assert fleet.instances == ()
    assert fleet.model.extension is not None and fleet.model.extension.name == "CustomScript"
    assert [_kind(r, handle) for r in _arm_requests(arm_emulator, handle)] == ["GET vmss"]


@pytest.mark.integration
def test_extension_model_update_makes_every_instance_outdated(
    arm_emulator: Any, make_scale_set: Callable[..., Any], compute_for: Callable[..., AzureCompute]
) -> None:
    handle = make_scale_set(instances=5)
    compute = compute_for(handle)
    spec = ModelSpec(extension=_v2_extension())
    arm_emulator.clear_requests()

    compute.update_model(spec)
    fleet = compute.observe()

    # update_model waited for its LRO and left no poller thread behind.
    assert not [t for t in threading.enumerate() if t.name.startswith("LROPoller")]

    assert [i.latest_model_applied for i in fleet.instances] == [False] * 5
    assert spec.matches(fleet.model)
    assert fleet.model.extension is not None and fleet.model.extension.protected_settings is None
    assert fleet.model.extension.force_update_tag == "v2"
    # The emulator received the protected settings (they are only never read back).
    assert handle.state.model.extensions[0].protected_settings == {"managedIdentity": {}}
    writes = [r for r in _arm_requests(arm_emulator, handle) if r.method != "GET"]
    assert [_kind(r, handle) for r in writes] == ["PUT extensions/customscript"]
    assert writes[0].body["properties"]["protectedSettings"] == "<redacted>"
    assert writes[0].body["properties"]["settings"] == V2_SETTINGS


@pytest.mark.integration
def test_upgrading_one_instance_shows_updating_then_latest(
    arm_emulator: Any, make_scale_set: Callable[..., Any], compute_for: Callable[..., AzureCompute]
) -> None:
    handle = make_scale_set(instances=5, upgrade_seconds=1.0)
    compute = compute_for(handle)
    compute.update_model(ModelSpec(extension=_v2_extension()))
    arm_emulator.clear_requests()

    started = time.monotonic()
    compute.upgrade_instances(["3"])
    returned_after = time.monotonic() - started
    right_after = compute.observe().by_id()

    assert returned_after < 1.0  # not waited for: the upgrade itself takes 1 s
    # ... and nothing keeps polling it in the background (the next tick observes instead).
    assert not [t for t in threading.enumerate() if t.name.startswith("LROPoller")]
    assert (right_after["3"].provisioning_state, right_after["3"].extension_status) == ("Updating", "Transitioning")
    assert all(right_after[i].provisioning_state == "Succeeded" for i in ("0", "1", "2", "4"))
    upgrades = [r for r in _arm_requests(arm_emulator, handle) if r.method == "POST"]
    assert [(_kind(r, handle), r.body) for r in upgrades] == [("POST manualupgrade", {"instanceIds": ["3"]})]

    done = _observe_until(compute, lambda f: f.by_id()["3"].provisioning_state != "Updating").by_id()
    assert (done["3"].latest_model_applied, done["3"].provisioning_state, done["3"].extension_status) == (
        True,
        "Succeeded",
        "Succeeded",
    )
    assert [done[i].latest_model_applied for i in ("0", "1", "2", "4")] == [False] * 4


@pytest.mark.integration
def test_upgrading_a_batch_is_one_call_for_all_ids(
    arm_emulator: Any, make_scale_set: Callable[..., Any], compute_for: Callable[..., AzureCompute]
) -> None:
    handle = make_scale_set(instances=5)
    compute = compute_for(handle)
    compute.update_model(ModelSpec(extension=_v2_extension()))
    arm_emulator.clear_requests()

    compute.upgrade_instances(["0", "2", "4"])
    compute.upgrade_instances([])  # nothing to do: no call at all

    posts = [r for r in _arm_requests(arm_emulator, handle) if r.method == "POST"]
    assert [r.body for r in posts] == [{"instanceIds": ["0", "2", "4"]}]
    fleet = _observe_until(compute, lambda f: sum(i.latest_model_applied for i in f.instances) == 3)
    assert {i.instance_id for i in fleet.instances if i.latest_model_applied} == {"0", "2", "4"}


@pytest.mark.integration
def test_image_model_change_patches_the_image_reference(
    arm_emulator: Any, make_scale_set: Callable[..., Any], compute_for: Callable[..., AzureCompute]
) -> None:
    image_v1 = "/subscriptions/s/resourceGroups/img/providers/Microsoft.Compute/images/web-v1"
    image_v2 = "/subscriptions/s/resourceGroups/img/providers/Microsoft.Compute/images/web-v2"
    handle = make_scale_set(instances=3, image_id=image_v1)
    compute = compute_for(handle)
    assert compute.read_model().model.image_id == image_v1
    arm_emulator.clear_requests()

    compute.update_model(ModelSpec(image_id=image_v2))
    fleet = compute.observe()

    assert fleet.model.image_id == image_v2
    assert [i.latest_model_applied for i in fleet.instances] == [False] * 3
    # The extension was not touched by an image release.
    assert fleet.model.extension is not None and fleet.model.extension.settings["fileUris"][0].endswith("v1.sh")
    writes = [r for r in _arm_requests(arm_emulator, handle) if r.method != "GET"]
    assert [(_kind(r, handle), r.body) for r in writes] == [("PATCH vmss", image_patch_body(image_v2))]

    compute.upgrade_instances(["1"])
    done = _observe_until(compute, lambda f: f.by_id()["1"].latest_model_applied).by_id()
    assert done["1"].provisioning_state == "Succeeded"


@pytest.mark.integration
def test_reimage_is_one_call_and_keeps_the_instances_model(
    arm_emulator: Any, make_scale_set: Callable[..., Any], compute_for: Callable[..., AzureCompute]
) -> None:
    handle = make_scale_set(instances=3, upgrade_seconds=1.0)
    compute = compute_for(handle)
    arm_emulator.clear_requests()

    compute.reimage_instances(["1", "2"])
    right_after = compute.observe().by_id()

    assert [right_after[i].provisioning_state for i in ("0", "1", "2")] == ["Succeeded", "Updating", "Updating"]
    posts = [r for r in _arm_requests(arm_emulator, handle) if r.method == "POST"]
    assert [(_kind(r, handle), r.body) for r in posts] == [("POST reimage", {"instanceIds": ["1", "2"]})]
    done = _observe_until(compute, lambda f: all(i.provisioning_state != "Updating" for i in f.instances))
    assert [(i.provisioning_state, i.latest_model_applied) for i in done.instances] == [("Succeeded", True)] * 3


@pytest.mark.integration
def test_a_failing_release_shows_the_extension_failure_and_its_message(
    arm_emulator: Any, make_scale_set: Callable[..., Any], compute_for: Callable[..., AzureCompute]
) -> None:
    handle = make_scale_set(instances=3)
    arm_emulator.fail_release(handle.resource_group, handle.name, r"v9\.sh", stderr="nginx: [emerg] unknown directive")
    compute = compute_for(handle)
    v9 = {"fileUris": ["https://releases.example/init/install_nginx.v9.sh"], "commandToExecute": "bash x"}
    compute.update_model(ModelSpec(extension=_v2_extension(v9, tag="v9")))

    compute.upgrade_instances(["0"])
    done = _observe_until(compute, lambda f: f.by_id()["0"].provisioning_state != "Updating").by_id()

    assert (done["0"].extension_status, done["0"].provisioning_state) == ("Failed", "Failed")
    assert "nginx: [emerg] unknown directive" in done["0"].extension_message
    assert [done[i].extension_status for i in ("1", "2")] == ["Succeeded", "Succeeded"]


@pytest.mark.integration
def test_missing_scale_set_is_not_found(arm_emulator: Any, compute_for: Callable[..., AzureCompute]) -> None:
    compute = compute_for(None, vmss_name="vmss-that-does-not-exist")

    with pytest.raises(NotFoundError, match="ResourceNotFound") as observed:
        compute.observe()
    with pytest.raises(NotFoundError, match="was not found"):
        compute.read_model()
    assert "vmss-that-does-not-exist" in str(observed.value)


@pytest.mark.integration
def test_injected_conflict_is_a_conflict_error(
    arm_emulator: Any, make_scale_set: Callable[..., Any], compute_for: Callable[..., AzureCompute]
) -> None:
    handle = make_scale_set(instances=2)
    compute = compute_for(handle)
    arm_emulator.inject_fault(
        "PUT",
        r"/extensions/",
        409,
        body={"error": {"code": "OperationNotAllowed", "message": "Another operation is in progress."}},
    )

    with pytest.raises(ConflictError, match=r"HTTP 409 OperationNotAllowed: Another operation is in progress"):
        compute.update_model(ModelSpec(extension=_v2_extension()))
    # The model was not changed, and the 409 was not retried.
    assert compute.read_model().model.extension.settings["fileUris"][0].endswith("v1.sh")  # type: ignore[union-attr]
    assert [r.status for r in _arm_requests(arm_emulator, handle) if r.method == "PUT"] == [409]


@pytest.mark.integration
def test_server_errors_beyond_the_retries_are_transient(
    arm_emulator: Any, make_scale_set: Callable[..., Any], compute_for: Callable[..., AzureCompute]
) -> None:
    handle = make_scale_set(instances=2)
    compute = compute_for(handle, max_retries=2)
    arm_emulator.inject_fault("GET", rf"/virtualMachineScaleSets/{handle.name}$", 500, count=10)
    arm_emulator.clear_requests()

    with pytest.raises(TransientError, match=r"HTTP 500 InternalServerError: Injected fault 500"):
        compute.observe()

    # The first try and two retries, then the tick gives up (the next tick retries).
    assert [r.status for r in _arm_requests(arm_emulator, handle)] == [500, 500, 500]


@pytest.mark.integration
def test_throttling_beyond_the_retries_is_transient(
    arm_emulator: Any, make_scale_set: Callable[..., Any], compute_for: Callable[..., AzureCompute]
) -> None:
    handle = make_scale_set(instances=2)
    compute = compute_for(handle, max_retries=1)
    arm_emulator.inject_fault("POST", r"/manualupgrade$", 429, count=5, headers={"Retry-After": "1"})
    arm_emulator.clear_requests()

    with pytest.raises(TransientError, match=r"HTTP 429 TooManyRequests"):
        compute.upgrade_instances(["0"])

    assert [r.status for r in _arm_requests(arm_emulator, handle)] == [429, 429]


@pytest.mark.integration
def test_a_long_retry_after_is_left_to_the_next_tick(
    arm_emulator: Any, make_scale_set: Callable[..., Any], compute_for: Callable[..., AzureCompute]
) -> None:
    handle = make_scale_set(instances=2)
    compute = compute_for(handle, max_retry_after_s=5.0)
    arm_emulator.inject_fault("GET", r"/virtualMachines$", 429, count=1, headers={"Retry-After": "60"})
    arm_emulator.clear_requests()

    started = time.monotonic()
    with pytest.raises(TransientError, match="HTTP 429") as raised:
        compute.observe()

    assert time.monotonic() - started < 5.0  # not slept through
    assert raised.value.retry_after == 60.0  # handed to the service, which holds its writes that long
    assert [r.status for r in _arm_requests(arm_emulator, handle) if "virtualMachines" in r.path] == [429]


@pytest.mark.integration
def test_a_single_throttle_with_retry_after_recovers(
    arm_emulator: Any, make_scale_set: Callable[..., Any], compute_for: Callable[..., AzureCompute]
) -> None:
    handle = make_scale_set(instances=3)
    compute = compute_for(handle)
    arm_emulator.inject_fault("GET", r"/virtualMachines$", 429, count=1, headers={"Retry-After": "1"})
    arm_emulator.clear_requests()

    started = time.monotonic()
    fleet = compute.observe()

    assert len(fleet.instances) == 3
    assert time.monotonic() - started >= 1.0  # Retry-After was obeyed
    vm_lists = [r.status for r in _arm_requests(arm_emulator, handle) if r.path.endswith("/virtualMachines")]
    assert vm_lists == [429, 200]


@pytest.mark.integration
def test_connection_refused_is_transient(compute_for: Callable[..., AzureCompute]) -> None:
    with socket.socket() as sock:  # a port nobody listens on: bound, never listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        compute = compute_for(None, arm_endpoint=f"https://127.0.0.1:{port}", max_retries=0)

        with pytest.raises(TransientError, match="ServiceRequestError"):
            compute.read_model()


@pytest.mark.integration
def test_the_static_token_is_what_reaches_arm(
    arm_emulator: Any, make_scale_set: Callable[..., Any], compute_for: Callable[..., AzureCompute]
) -> None:
    from tests.fixtures.emulator import EMULATOR_TOKEN

    handle = make_scale_set(instances=1)
    good = _RecordingCredential(EMULATOR_TOKEN)
    assert compute_for(handle, credential=good).read_model().model.extension is not None
    # The token was asked for the emulator's audience, not management.azure.com's.
    assert set(good.scopes) == {(arm_emulator.url + "/.default",)}

    arm_emulator.clear_requests()
    with pytest.raises(PortError, match="HTTP 401 AuthenticationFailed") as refused:
        compute_for(handle, credential=credential_for("not-the-emulator-token")).read_model()
    assert type(refused.value) is PortError  # not transient: retrying will not help
    assert [r.status for r in _arm_requests(arm_emulator, handle)] == [401]


@pytest.mark.integration
def test_model_write_stops_waiting_at_its_deadline(
    arm_emulator: Any, make_scale_set: Callable[..., Any], compute_for: Callable[..., AzureCompute]
) -> None:
    handle = make_scale_set(instances=2)
    compute = compute_for(handle, model_write_wait_s=1.0)
    # An LRO that never ends: every status poll says InProgress (a fault answering 200).
    arm_emulator.inject_fault("GET", r"/operations/", 200, count=1000, body={"status": "InProgress"})

    started = time.monotonic()
    compute.update_model(ModelSpec(extension=_v2_extension()))  # returns; does not raise
    waited = time.monotonic() - started
    arm_emulator.clear_faults()

    assert 1.0 <= waited < 3.0
    assert not [t for t in threading.enumerate() if t.name.startswith("LROPoller")]
    # The write itself was accepted: the next observation sees it.
    assert ModelSpec(extension=_v2_extension()).matches(compute.read_model().model)
