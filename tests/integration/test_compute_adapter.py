"""AzureCompute (rollout/adapters/compute.py) through the real SDKs, over HTTPS, against the ARM emulator.

Two parts:
* Mapping tests (no network, unmarked): the pure REST-JSON -> domain helpers, with bodies in the
  official REST shapes (trimmed from the 2026-04-01 examples).
* Integration tests (``pytest.mark.integration``): the adapter against the ``arm_emulator`` fixture,
  judged by what the emulator saw (its request log) and by what the next observation returns.
"""

from __future__ import annotations

from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ServiceRequestError
from azure.core.rest import HttpRequest, HttpResponse

from rollout.adapters.compute import (
    StaticTokenCredential,
    assess_error,
    assess_fleet_model,
    assess_instance,
    calculate_extension_body,
    calculate_image_patch,
    calculate_private_ips,
    credential_for,
)
from rollout.model import ExtensionSpec
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

    view = assess_instance(vm, "CustomScript", "127.0.10.5")

    assert view.instance_id == "4"
    assert view.latest_model_applied is False
    assert view.provisioning_state == "Updating"
    assert view.power_state == "running"
    assert view.extension_status == "Failed"
    assert view.extension_message == "Enable failed: exit status 1: nginx: [emerg]"
    assert view.vm_health == "Unhealthy"
    assert view.private_ip == "127.0.10.5"


def test_instance_without_instance_view_falls_back_to_properties() -> None:
    view = assess_instance(_vm("0", latestModelApplied=True, provisioningState="Succeeded"), "CustomScript", None)

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

    view = assess_instance(vm, "CustomScript", None)

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

    fleet = assess_fleet_model(vmss, "CustomScript")

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
    fleet = assess_fleet_model({"properties": {"provisioningState": "Succeeded"}}, "CustomScript")

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

    assert calculate_private_ips(nics) == {"0": "10.0.0.4", "1": "10.0.0.5"}


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

    body = calculate_extension_body(spec)

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
    with_secret = calculate_extension_body(
        ExtensionSpec(**{**spec.__dict__, "protected_settings": {"commandToExecute": "bash x.sh"}})
    )
    assert with_secret["properties"]["protectedSettings"] == {"commandToExecute": "bash x.sh"}
    assert calculate_image_patch("/img/7") == {
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

    mapped = assess_error(err, "GET scale set web")

    assert type(mapped) is expected
    assert "SomeArmCode" in str(mapped) and "what ARM said" in str(mapped)
    assert f"HTTP {status}" in str(mapped) and "GET scale set web" in str(mapped)


def test_subclassed_and_connection_errors_map_too() -> None:
    conflict = _http_error(409, b'{"error": {"code": "OperationNotAllowed", "message": "busy"}}', ResourceExistsError)
    assert isinstance(assess_error(conflict, "x"), ConflictError)
    assert isinstance(assess_error(ServiceRequestError("connection refused"), "x"), TransientError)


def test_credential_for_a_token_is_static() -> None:
    credential = credential_for("tok-123")

    assert isinstance(credential, StaticTokenCredential)
    assert credential.get_token("https://127.0.0.1:1/.default").token == "tok-123"
    assert credential.get_token_info("https://127.0.0.1:1/.default").token == "tok-123"


def test_credential_for_no_token_is_the_managed_identity_chain() -> None:
    from azure.identity import DefaultAzureCredential

    assert isinstance(credential_for(None), DefaultAzureCredential)
    assert isinstance(credential_for(""), DefaultAzureCredential)
