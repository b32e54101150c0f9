"""The fleet read pages through ARM's lists as raw JSON (rollout/adapters/compute.py ``_list_json``) with the
api-versions the SDK's own list operations send: an SDK upgrade that changes one fails here, not in Azure."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from azure.mgmt.compute.operations import _operations as compute_ops
from azure.mgmt.network.operations import _operations as network_ops

from rollout.adapters.compute import (
    COMPUTE_LIST_API_VERSION,
    NETWORK_LIST_API_VERSION,
    NETWORK_VMSS_NIC_LIST_API_VERSION,
)


def _api_version(request: object) -> str:
    [version] = parse_qs(urlsplit(request.url).query)["api-version"]  # type: ignore[attr-defined]
    return version


def test_the_list_api_versions_are_the_sdks() -> None:
    assert _api_version(compute_ops.build_virtual_machine_scale_set_vms_list_request("rg", "ss", "sub")) == (
        COMPUTE_LIST_API_VERSION
    )
    assert _api_version(compute_ops.build_virtual_machines_list_request("rg", "sub")) == COMPUTE_LIST_API_VERSION
    vmss_nics = network_ops.build_network_interfaces_list_virtual_machine_scale_set_network_interfaces_request
    assert _api_version(vmss_nics("rg", "ss", "sub")) == NETWORK_VMSS_NIC_LIST_API_VERSION
    assert _api_version(network_ops.build_network_interfaces_list_request("rg", "sub")) == NETWORK_LIST_API_VERSION
