"""Tag discovery over ARM: the scale sets of a subscription tagged ``canary-group=<group>`` (azure-mgmt-compute 39).

One paged call per subscription, whatever the number of scale sets: Virtual Machine Scale Sets - List All,
``GET /subscriptions/{subscriptionId}/providers/Microsoft.Compute/virtualMachineScaleSets`` (operationId
``VirtualMachineScaleSets_ListAll`` in Azure/azure-rest-api-specs,
specification/compute/resource-manager/Microsoft.Compute/Compute/stable/2026-04-01/ComputeRP.json; the SDK's
``virtual_machine_scale_sets.list_all``, built by ``build_virtual_machine_scale_sets_list_all_request`` in
azure/mgmt/compute/operations/_operations.py, follows ``nextLink`` page by page). The answer is a
``VirtualMachineScaleSetListWithLinkResult``: ``value`` (scale sets, each a TrackedResource with ``id``,
``name`` and ``tags``) and ``nextLink``. The list has no tag filter, so the tags are matched here.

The identity needs ``Microsoft.Compute/virtualMachineScaleSets/read`` at the subscription (Reader:
infra/modules/discovery-access.bicep). Errors are ``rollout.ports`` errors.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from azure.core.credentials import TokenCredential
from azure.core.exceptions import AzureError
from azure.core.pipeline.policies import RetryPolicy

from rollout.adapters.compute import port_error_from
from rollout.targets import TargetRef
from rollout.targets_doc import GROUP_TAG, TaggedScaleSet

if TYPE_CHECKING:
    # Imported where the first client is made: a cold start that lists nothing does not load the SDK.
    from azure.mgmt.compute import ComputeManagementClient

_ID_RE = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/Microsoft\.Compute/"
    r"virtualMachineScaleSets/(?P<name>[^/]+)$",
    re.IGNORECASE,
)
MAX_SCALE_SETS = 5000  # per subscription: a bound on what one listing reads


def tagged_scale_set(item: Mapping[str, Any]) -> TaggedScaleSet | None:
    """A listed scale set (REST JSON) with a ``canary-group`` tag, or None (untagged, or an id that is not
    a scale set's). Pure."""
    tags = item.get("tags")
    if not isinstance(tags, Mapping) or not any(str(k).lower() == GROUP_TAG for k in tags):
        return None
    match = _ID_RE.match(str(item.get("id") or ""))
    if match is None:
        return None
    ref = TargetRef(subscription_id=match["sub"], resource_group=match["rg"], name=match["name"])
    return TaggedScaleSet(ref=ref, tags={str(k): str(v) for k, v in tags.items()})


class ArmDiscovery:
    """Lists tagged scale sets in each subscription with one compute client per subscription."""

    def __init__(
        self,
        *,
        arm_endpoint: str,
        credential: TokenCredential,
        ca_bundle: str | None = None,
        max_retries: int = 2,
        connection_timeout_s: float = 5.0,
        read_timeout_s: float = 20.0,
    ) -> None:
        self.arm_endpoint = arm_endpoint.rstrip("/")
        self._credential = credential
        self._kwargs: dict[str, Any] = {
            "base_url": self.arm_endpoint,
            "credential_scopes": [self.arm_endpoint + "/.default"],
            "connection_timeout": connection_timeout_s,
            "read_timeout": read_timeout_s,
        }
        self._max_retries = max_retries
        if ca_bundle:
            self._kwargs["connection_verify"] = ca_bundle
        self._clients: dict[str, ComputeManagementClient] = {}

    def _client(self, subscription_id: str) -> ComputeManagementClient:
        client = self._clients.get(subscription_id)
        if client is None:
            from azure.mgmt.compute import ComputeManagementClient

            retry = RetryPolicy(retry_total=self._max_retries, retry_backoff_factor=0.5, retry_backoff_max=4)
            client = ComputeManagementClient(self._credential, subscription_id, retry_policy=retry, **self._kwargs)
            self._clients[subscription_id] = client
        return client

    def tagged_scale_sets(self, subscription_ids: Iterable[str]) -> list[TaggedScaleSet]:
        """Every scale set tagged ``canary-group`` in these subscriptions, in the order ARM lists them."""
        found: list[TaggedScaleSet] = []
        for subscription_id in subscription_ids:
            try:
                for count, item in enumerate(self._client(subscription_id).virtual_machine_scale_sets.list_all()):
                    if count >= MAX_SCALE_SETS:
                        break
                    tagged = tagged_scale_set(item.as_dict())
                    if tagged is not None:
                        found.append(tagged)
            except AzureError as err:
                raise port_error_from(err, f"list the scale sets of subscription {subscription_id}") from err
        return found

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()
