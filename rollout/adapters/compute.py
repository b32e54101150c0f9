"""The ``Compute`` port over ARM: azure-mgmt-compute 39 and azure-mgmt-network 33.

Design decisions
----------------
* **Few, predictable calls.** ``observe`` is exactly one scale set GET, one paged VM list with
  ``$expand=instanceView`` and one paged NIC listing, whatever the fleet size (docs/design.md,
  "Layers": few ARM calls; Compute throttles per scale set). There is no per-instance GET anywhere. The
  VM list and the NIC list are independent: they are read at once, on two threads (``_read_lists``).
* **Both orchestration modes, one adapter.** The mode is read from the scale set. Uniform: the scale
  set's VM list and NIC listing. Flexible: ``VirtualMachines_List`` of the resource group filtered by
  the scale set, and the resource group's NIC list; instance ids are VM names, which ``manualupgrade``
  takes as they are; a reimage is one ``VirtualMachines_Reimage`` per VM (docs/design.md,
  "Flexible orchestration").
* **Raw REST shapes in, domain values out.** The VM and NIC lists are paged as the REST JSON itself
  (``_list_json``: the client's pipeline, the SDK's api-versions, no SDK models: at 1,000 instances the models
  cost about a second of CPU per look, docs/performance.md); the other answers are SDK 39 models,
  ``MutableMapping``s over the REST JSON read through ``as_dict()``. Either way the mapping helpers
  below (``assess_*`` / ``calculate_*``) are pure functions of the documented REST shape. They are unit-testable with
  plain dicts and do not depend on the SDK's attribute naming, which changed between the msrest and
  TypeSpec generations of these packages.
* **Never block on long-running operations.** ``upgrade_instances`` and ``reimage_instances`` send
  the initial request with ``polling=False``: the 202 means ARM accepted the work and the next tick
  observes the result. No poller thread is left behind. ``update_model`` is the one place that waits,
  for at most ``model_write_wait_s`` (the model write is quick in Azure, and the canary upgrade that
  follows it in the same tick would otherwise race it). Its poller runs under a deadline
  (``_DeadlineARMPolling``) so the SDK's background thread ends when we stop waiting, instead of
  polling on for the life of the process as ``LROPoller.result(timeout=...)`` would leave it.
* **Bounded retries.** The SDK retry policy handles 408/429/5xx and connection errors, but its
  defaults (10 retries, exponential backoff to 120 s, obeying any ``Retry-After``) can hold a tick for
  minutes. We use a small total and refuse to sleep through a ``Retry-After`` longer than
  ``max_retry_after_s``: that throttle is surfaced as ``TransientError`` and the next timer tick,
  30-60 s later, is the retry.
* **One error vocabulary.** Every ``azure.core`` exception is turned into a ``rollout.ports`` error
  whose message carries the HTTP status and the ARM error code and message, so the service and the
  audit trail never see an SDK type.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import quote

from azure.core.credentials import AccessToken, AccessTokenInfo, TokenCredential
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
    ResourceNotModifiedError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.core.pipeline import PipelineResponse
from azure.core.pipeline.policies import RetryPolicy
from azure.mgmt.core.polling.arm_polling import ARMPolling

from rollout.adapters.lazy import LazyClient
from rollout.model import ExtensionSpec, FleetView, InstanceView, ModelSpec
from rollout.ports import AccessDeniedError, ConflictError, NotFoundError, PortError, TransientError
from rollout.releases import image_unreadable_reason

if TYPE_CHECKING:
    # Types only. azure.mgmt.compute and azure.mgmt.network are imported where a client is first made
    # (``AzureCompute._compute`` / ``_network``, ``_compute_for``) and where a body model is built: their
    # generated models take about a third of a second to import and more than 40 MB, which every cold
    # start would pay, the HTTP reads that never call ARM included (docs/performance.md, "Cold start").
    from azure.mgmt.compute import ComputeManagementClient
    from azure.mgmt.network import NetworkManagementClient

Json = Mapping[str, Any]

# Azure's own spelling of the lower-case state names found in instance view status codes
# ("ProvisioningState/succeeded" -> "Succeeded"), so views compare equal to ``provisioningState``.
_AZURE_STATE_SPELLING = {
    "succeeded": "Succeeded",
    "failed": "Failed",
    "updating": "Updating",
    "creating": "Creating",
    "deleting": "Deleting",
    "canceled": "Canceled",
    "cancelled": "Canceled",
    "transitioning": "Transitioning",
    "migrating": "Migrating",
    "healthy": "Healthy",
    "unhealthy": "Unhealthy",
    "unknown": "Unknown",
    "initializing": "Initializing",
}


# --------------------------------------------------------------------------------------------------
# Credentials
# --------------------------------------------------------------------------------------------------


class StaticTokenCredential:
    """A bearer token given in configuration (``ARM_TOKEN``): the local emulator, or a token minted
    outside the app. It is returned as is for every scope; ARM decides whether it is still valid."""

    # An hour ahead, so azure-core's bearer policy never tries to refresh it before each request.
    _LIFETIME_S = 3600

    def __init__(self, token: str) -> None:
        if not token:
            raise ValueError("StaticTokenCredential needs a non-empty token")
        self._token = token

    def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        return AccessToken(self._token, int(time.time()) + self._LIFETIME_S)

    def get_token_info(self, *scopes: str, options: Any = None) -> AccessTokenInfo:
        return AccessTokenInfo(self._token, int(time.time()) + self._LIFETIME_S)

    def close(self) -> None:
        """Nothing to release; present so callers can treat every credential alike."""


def credential_for(arm_token: str | None) -> TokenCredential:
    """The static ``ARM_TOKEN`` when set, else the managed identity chain (DefaultAzureCredential).

    ``azure.identity`` is imported lazily: with a static token (tests, the emulator) it is never
    needed, and its import is the slowest part of cold start."""
    if arm_token:
        return StaticTokenCredential(arm_token)
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential()


# --------------------------------------------------------------------------------------------------
# Pure mapping helpers: REST JSON -> domain values
# --------------------------------------------------------------------------------------------------


def _get(obj: Json | None, *path: str) -> Any:
    """``obj[path[0]][path[1]]...`` or ``None`` where any step is missing (ARM omits empty parts)."""
    cur: Any = obj
    for key in path:
        if not isinstance(cur, Mapping):
            return None
        cur = cur.get(key)
    return cur


def azure_state_spelling(word: str) -> str:
    """``"succeeded"`` -> ``"Succeeded"``: the spelling ARM uses in ``provisioningState``."""
    lowered = word.lower()
    return _AZURE_STATE_SPELLING.get(lowered, word[:1].upper() + word[1:])


def _status_value(statuses: Iterable[Json] | None, prefix: str) -> tuple[str, Json] | None:
    """The first status whose code is ``<prefix>/<value>[/<detail>]``: (value, the status)."""
    for status in statuses or ():
        code = str(status.get("code") or "")
        head, sep, rest = code.partition("/")
        if sep and head.lower() == prefix.lower():
            # "ProvisioningState/failed/-1": the value is the first segment after the prefix.
            return rest.split("/", 1)[0], status
    return None


def parse_extension_spec(vmss: Json, extension_name: str) -> ExtensionSpec | None:
    """The extension called ``extension_name`` on the scale set model, as ARM lets us read it back:
    ``protectedSettings`` is never returned, so ``protected_settings`` is ``None`` (not known)."""
    extensions = _get(vmss, "properties", "virtualMachineProfile", "extensionProfile", "extensions")
    for ext in extensions or ():
        if str(ext.get("name", "")).lower() != extension_name.lower():
            continue
        props: Json = ext.get("properties") or {}
        after = props.get("provisionAfterExtensions")
        vault = props.get("protectedSettingsFromKeyVault")
        return ExtensionSpec(
            name=str(ext["name"]),
            publisher=str(props.get("publisher", "")),
            type=str(props.get("type", "")),
            type_handler_version=str(props.get("typeHandlerVersion", "")),
            settings=dict(props.get("settings") or {}),
            protected_settings=None,
            # ARM treats an absent flag as false.
            auto_upgrade_minor_version=bool(props.get("autoUpgradeMinorVersion", False)),
            force_update_tag=props.get("forceUpdateTag") or None,
            # The rest as ARM gave them (None = absent), so a write starting from this spec keeps them.
            enable_automatic_upgrade=_opt_bool(props.get("enableAutomaticUpgrade")),
            provision_after_extensions=None if after is None else tuple(str(a) for a in after),
            suppress_failures=_opt_bool(props.get("suppressFailures")),
            protected_settings_from_key_vault=None if vault is None else dict(vault),
        )
    return None


def _opt_bool(value: Any) -> bool | None:
    return None if value is None else bool(value)


def parse_fleet_model(vmss: Json, extension_name: str) -> FleetView:
    """The scale set GET body -> a ``FleetView`` with no instances (the model and the set's state)."""
    image_id = _get(vmss, "properties", "virtualMachineProfile", "storageProfile", "imageReference", "id")
    return FleetView(
        model=ModelSpec(extension=parse_extension_spec(vmss, extension_name), image_id=image_id or None),
        provisioning_state=str(_get(vmss, "properties", "provisioningState") or "Unknown"),
        instances=(),
        # ARM omits orchestrationMode on older Uniform sets and upgradePolicy when it is the
        # default (Manual); the defaults here are ARM's.
        orchestration_mode=str(_get(vmss, "properties", "orchestrationMode") or "Uniform"),
        upgrade_mode=str(_get(vmss, "properties", "upgradePolicy", "mode") or "Manual"),
    )


def parse_instance_id(vm_or_nic_owner_id: str) -> str | None:
    """``.../virtualMachineScaleSets/x/virtualMachines/3[/networkInterfaces/n]`` -> ``"3"``."""
    parts = vm_or_nic_owner_id.strip("/").split("/")
    for i, part in enumerate(parts[:-1]):
        if part.lower() == "virtualmachines":
            return parts[i + 1]
    return None


def parse_private_ips(nics: Iterable[Json]) -> dict[str, str]:
    """The scale-set NIC listing -> {instance id: private IP of its primary NIC's primary IP config}.

    A VM with several NICs is listed once per NIC; the primary one wins, whatever the order."""
    return _private_ips(
        nics, lambda props, nic: parse_instance_id(_get(props, "virtualMachine", "id") or str(nic.get("id", "")))
    )


def parse_private_ips_by_vm(nics: Iterable[Json]) -> dict[str, str]:
    """A resource group's NIC listing (``NetworkInterfaces_List``) -> {VM resource id, lower case:
    private IP of its primary NIC's primary IP config}. NICs attached to no VM are left out.

    Flexible scale set VMs are standalone VMs with standalone NICs: each NIC names its VM in
    ``properties.virtualMachine.id`` (NetworkInterfacePropertiesFormat, azure-rest-api-specs
    specification/network/resource-manager/.../networkInterface.json)."""

    def owner(props: Json, nic: Json) -> str | None:
        vm_id = _get(props, "virtualMachine", "id")
        return str(vm_id).lower() if vm_id else None

    return _private_ips(nics, owner)


def _private_ips(nics: Iterable[Json], key: Callable[[Json, Json], str | None]) -> dict[str, str]:
    found: dict[str, tuple[bool, str]] = {}
    for nic in nics:
        props: Json = nic.get("properties") or {}
        instance_id = key(props, nic)
        if instance_id is None:
            continue
        configs = list(props.get("ipConfigurations") or ())
        # The primary IP configuration, else the first one that has an address.
        configs.sort(key=lambda c: not bool(_get(c, "properties", "primary")))
        address = next((str(a) for c in configs if (a := _get(c, "properties", "privateIPAddress"))), None)
        if address is None:
            continue
        primary = bool(props.get("primary", True))
        if instance_id not in found or (primary and not found[instance_id][0]):
            found[instance_id] = (primary, address)
    return {iid: addr for iid, (_, addr) in found.items()}


def instance_view_from_vm(vm: Json, extension_name: str, private_ip: str | None) -> InstanceView:
    """One element of ``VirtualMachineScaleSetVMs_List`` (``$expand=instanceView``) -> InstanceView.

    The provisioning state comes from the instance view's ``ProvisioningState/<x>`` status, which is
    what changes while an upgrade runs; ``properties.provisioningState`` is the fallback."""
    props: Json = vm.get("properties") or {}
    view: Json = props.get("instanceView") or {}
    statuses = view.get("statuses")

    provisioning = _status_value(statuses, "ProvisioningState")
    if provisioning is not None:
        provisioning_state = azure_state_spelling(provisioning[0])
    else:
        provisioning_state = str(props.get("provisioningState") or "Unknown")

    power = _status_value(statuses, "PowerState")

    extension_status: str | None = None
    extension_message = ""
    for ext in view.get("extensions") or ():
        if str(ext.get("name", "")).lower() != extension_name.lower():
            continue
        ext_statuses = list(ext.get("statuses") or ())
        found = _status_value(ext_statuses, "ProvisioningState")
        if found is not None:
            extension_status = azure_state_spelling(found[0])
            chosen: Json = found[1]
        elif ext_statuses:
            # No ProvisioningState code: judge by the level, as the portal does.
            chosen = ext_statuses[0]
            extension_status = "Failed" if str(chosen.get("level", "")).lower() == "error" else "Succeeded"
        else:
            extension_status = "Transitioning"  # listed but no status yet: the agent has not reported
            chosen = {}
        extension_message = str(chosen.get("message") or chosen.get("displayStatus") or "")
        break

    health = _status_value([_get(view, "vmHealth", "status") or {}], "HealthState")

    instance_id = vm.get("instanceId") or parse_instance_id(str(vm.get("id", ""))) or str(vm.get("name"))
    return InstanceView(
        instance_id=str(instance_id),
        # Missing only in malformed answers; "outdated" is the safe reading: upgrading an instance
        # that is already current is a no-op, skipping one that is not would leave it behind.
        latest_model_applied=bool(props.get("latestModelApplied", False)),
        provisioning_state=provisioning_state,
        power_state=power[0] if power else None,
        extension_status=extension_status,
        extension_message=extension_message,
        vm_health=azure_state_spelling(health[0]) if health else None,
        private_ip=private_ip,
        # VirtualMachineScaleSetVMInstanceView.computerName, else the VM's osProfile.computerName (both in
        # the Compute REST specification: ../shared/azure-rest-specs/ComputeRP.vmss-subset.json)
        computer_name=_computer_name(view, props),
    )


def _computer_name(view: Json, props: Json) -> str | None:
    name = view.get("computerName") or _get(props, "osProfile", "computerName")
    return str(name) if name else None


def flexible_instance_view(vm: Json, extension_name: str, private_ip: str | None) -> InstanceView:
    """One element of ``VirtualMachines_List`` (``$filter`` on the scale set, ``$expand=instanceView``)
    -> InstanceView. The instance id is the VM's *name*: what ``manualupgrade`` takes for a Flexible
    scale set (docs/design.md, "Flexible orchestration"). The instance view has the shape of a scale
    set VM's (statuses, extensions, vmHealth), so the same reading applies.

    ``VirtualMachineProperties`` has no ``latestModelApplied``: when an answer carries one anyway it is
    used, else the reading is "latest" and ``FleetView.model_applied_reported`` says it was not read."""
    view = instance_view_from_vm(vm, extension_name, private_ip)
    latest = _get(vm, "properties", "latestModelApplied")
    return replace(view, instance_id=str(vm.get("name") or view.instance_id), latest_model_applied=latest is not False)


def flexible_vm_filter(scale_set_id: str) -> str:
    """The ``$filter`` of ``VirtualMachines_List`` selecting a Flexible scale set's VMs: the allowed
    value the REST spec names ("'virtualMachineScaleSet/id' eq /subscriptions/{subId}/resourceGroups/
    {resourceGroupName}/providers/Microsoft.Compute/virtualMachineScaleSets/{vmssName}'", ComputeRP.json
    2026-04-01), with the id quoted as MicrosoftDocs/azure-docs
    articles/governance/resource-graph/concepts/arg-get-list-api.md ("List VMSS VM (Flex) with
    InstanceView") writes it. A quote inside the id is doubled (OData string literal)."""
    return "'virtualMachineScaleSet/id' eq '" + scale_set_id.replace("'", "''") + "'"


def extension_body(spec: ExtensionSpec) -> dict[str, Any]:
    """The ``VirtualMachineScaleSetExtensions_CreateOrUpdate`` body for ``spec``.

    The PUT replaces the whole extension, so every writable property of
    ``VirtualMachineScaleSetExtensionProperties`` (REST spec 2026-04-01, vendored in
    tests/data/azure-rest-specs/ComputeRP.vmss-subset.json) that ``spec`` holds is sent; the optional
    ones only when ARM had them (``None`` = absent). ``protectedSettings`` is sent only when known:
    ``None`` means a baseline we could not read back, and sending ``{}`` would wipe what is there."""
    props: dict[str, Any] = {
        "publisher": spec.publisher,
        "type": spec.type,
        "typeHandlerVersion": spec.type_handler_version,
        "autoUpgradeMinorVersion": spec.auto_upgrade_minor_version,
        "settings": dict(spec.settings),
    }
    if spec.protected_settings is not None:
        props["protectedSettings"] = dict(spec.protected_settings)
    if spec.force_update_tag:
        props["forceUpdateTag"] = spec.force_update_tag
    if spec.enable_automatic_upgrade is not None:
        props["enableAutomaticUpgrade"] = spec.enable_automatic_upgrade
    if spec.provision_after_extensions is not None:
        props["provisionAfterExtensions"] = list(spec.provision_after_extensions)
    if spec.suppress_failures is not None:
        props["suppressFailures"] = spec.suppress_failures
    if spec.protected_settings_from_key_vault is not None:
        props["protectedSettingsFromKeyVault"] = dict(spec.protected_settings_from_key_vault)
    return {"name": spec.name, "properties": props}


def image_patch_body(image_id: str) -> dict[str, Any]:
    """The ``VirtualMachineScaleSets_Update`` (PATCH) body that changes only the image reference."""
    return {"properties": {"virtualMachineProfile": {"storageProfile": {"imageReference": {"id": image_id}}}}}


_IMAGE_ID = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/Microsoft\.Compute/"
    r"(?:images/(?P<image>[^/]+)|galleries/(?P<gallery>[^/]+)/images/(?P<definition>[^/]+)"
    r"(?:/versions/(?P<version>[^/]+))?)/?$",
    re.IGNORECASE,
)


def parse_image_id(image_id: str) -> dict[str, str] | None:
    """An image resource id -> its parts: ``sub``, ``rg`` and either ``image`` (a managed image) or
    ``gallery`` + ``definition`` [+ ``version``] (an Azure Compute Gallery image); None otherwise."""
    m = _IMAGE_ID.match(image_id.strip())
    if m is None:
        return None
    return {k: v for k, v in m.groupdict().items() if v}


def _retry_after(err: HttpResponseError) -> float | None:
    """ARM's Retry-After (whole seconds) or retry-after-ms, when the response carried one."""
    headers: Any = getattr(err.response, "headers", None) or {}
    for name, scale in (("retry-after-ms", 0.001), ("Retry-After", 1.0)):
        value = headers.get(name)
        if value is not None:
            try:
                return max(0.0, float(value) * scale)
            except ValueError:
                return None  # an HTTP date: rare from ARM; the next tick simply tries again
    return None


def port_error_from(err: AzureError, action: str) -> PortError:
    """An azure-core exception -> the port error the service understands, with ARM's code/message."""
    if isinstance(err, HttpResponseError):
        status = err.status_code
        odata = err.error
        code = getattr(odata, "code", None) or (err.reason or "")
        message = getattr(odata, "message", None) or err.message
        text = f"{action}: HTTP {status}" + (f" {code}" if code else "") + (f": {message}" if message else "")
        if status == 404:
            return NotFoundError(text)
        if status == 403:
            # AuthorizationFailed, or LinkedAuthorizationFailed for a resource the body references.
            return AccessDeniedError(text, code=str(code))
        if status == 409:
            return ConflictError(text)
        if status in (408, 429) or (status is not None and status >= 500):
            return TransientError(text, retry_after=_retry_after(err))
        return PortError(text)
    if isinstance(err, ClientAuthenticationError):
        return PortError(f"{action}: authentication failed: {err.message}")
    if isinstance(err, (ServiceRequestError, ServiceResponseError)):
        # Connection refused/reset, TLS failure, timeouts (the *TimeoutError types subclass these).
        return TransientError(f"{action}: {type(err).__name__}: {err.message}")
    return TransientError(f"{action}: {type(err).__name__}: {err}")


# --------------------------------------------------------------------------------------------------
# SDK plumbing: bounded retries and bounded LRO waits
# --------------------------------------------------------------------------------------------------


class _BoundedRetryPolicy(RetryPolicy[Any, Any]):
    """azure-core's RetryPolicy, except that a ``Retry-After`` longer than ``max_retry_after_s`` is not
    slept through: the response is returned as is (429 -> TransientError) and the next tick retries."""

    def __init__(self, *, max_retry_after_s: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._max_retry_after_s = max_retry_after_s

    def is_retry(self, settings: dict[str, Any], response: PipelineResponse[Any, Any]) -> bool:
        retry_after = self.get_retry_after(response)
        if retry_after is not None and retry_after > self._max_retry_after_s:
            return False
        return bool(super().is_retry(settings, response))


class _StillRunningError(Exception):
    """Raised inside the poller thread when the wait deadline passes: the LRO is still running."""


class _DeadlineARMPolling(ARMPolling):
    """ARMPolling that gives up at ``deadline`` (``time.monotonic()``) instead of polling forever.

    The poller's thread ends with ``_StillRunningError``, which ``LROPoller.result()`` re-raises."""

    def __init__(self, interval_s: float, deadline: float, **kwargs: Any) -> None:
        super().__init__(interval_s, **kwargs)
        self._deadline = deadline

    def _delay(self) -> None:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise _StillRunningError()
        # Retry-After from ARM may be long; never sleep past the deadline.
        self._sleep(min(float(self._extract_delay()), remaining))


# --------------------------------------------------------------------------------------------------
# The adapter
# --------------------------------------------------------------------------------------------------


class AzureCompute:
    """``rollout.ports.Compute`` for one scale set, Uniform or Flexible (the mode read from the scale set).

    Instance ids are what ``manualupgrade`` takes: the instance id (Uniform) or the VM name (Flexible)."""

    def __init__(
        self,
        *,
        subscription_id: str,
        resource_group: str,
        vmss_name: str,
        extension_name: str,
        arm_endpoint: str,
        credential: TokenCredential,
        ca_bundle: str | None = None,
        max_retries: int = 3,
        max_retry_after_s: float = 5.0,
        connection_timeout_s: float = 5.0,
        read_timeout_s: float = 20.0,
        model_write_wait_s: float = 30.0,
        lro_poll_interval_s: float = 1.0,
    ) -> None:
        self.subscription_id = subscription_id
        self.resource_group = resource_group
        self.vmss_name = vmss_name
        self.extension_name = extension_name
        self.arm_endpoint = arm_endpoint.rstrip("/")
        self._model_write_wait_s = model_write_wait_s
        self._lro_poll_interval_s = lro_poll_interval_s

        def client_kwargs() -> dict[str, Any]:
            # A policy instance per client: policies are linked into one pipeline each.
            kwargs: dict[str, Any] = {
                "base_url": self.arm_endpoint,
                "credential_scopes": [self.arm_endpoint + "/.default"],
                "retry_policy": _BoundedRetryPolicy(
                    max_retry_after_s=max_retry_after_s,
                    retry_total=max_retries,
                    retry_connect=max_retries,
                    retry_read=max_retries,
                    retry_status=max_retries,
                    retry_backoff_factor=0.5,
                    retry_backoff_max=4,
                    # An absolute budget per call, sleeps included: a tick stays in seconds.
                    timeout=max(read_timeout_s, 30.0),
                ),
                "connection_timeout": connection_timeout_s,
                "read_timeout": read_timeout_s,
                "polling_interval": lro_poll_interval_s,
            }
            if ca_bundle:
                kwargs["connection_verify"] = ca_bundle
            return kwargs

        # The clients (and the SDKs behind them) are made at first use: a process that only serves
        # reads from the state store never imports azure.mgmt.compute or azure.mgmt.network.
        self._compute_client: LazyClient[ComputeManagementClient] = LazyClient(self._make_compute)
        self._network_client: LazyClient[NetworkManagementClient] = LazyClient(self._make_network)
        # Images may live in another subscription: one compute client each, made when first needed.
        self._credential = credential
        self._client_kwargs = client_kwargs
        self._image_clients: dict[str, ComputeManagementClient] = {}
        self._orchestration_mode: str | None = None  # from the last scale set GET

    def _make_compute(self) -> ComputeManagementClient:
        from azure.mgmt.compute import ComputeManagementClient

        return ComputeManagementClient(self._credential, self.subscription_id, **self._client_kwargs())

    def _make_network(self) -> NetworkManagementClient:
        from azure.mgmt.network import NetworkManagementClient

        return NetworkManagementClient(self._credential, self.subscription_id, **self._client_kwargs())

    @property
    def _compute(self) -> ComputeManagementClient:
        return self._compute_client.get()

    @property
    def _network(self) -> NetworkManagementClient:
        return self._network_client.get()

    # -- lifecycle ---------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the clients' HTTP sessions (pooled connections), those that were made."""
        self._compute_client.close()
        self._network_client.close()
        for client in self._image_clients.values():
            client.close()

    def __enter__(self) -> AzureCompute:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- Compute port --------------------------------------------------------------------------------

    def observe(self) -> FleetView:
        # The scale set first: a 404 here is the clear "no such scale set" answer, before the lists.
        with _mapped_errors(f"GET scale set {self.vmss_name}"):
            vmss = self._get_scale_set()
            fleet = parse_fleet_model(vmss, self.extension_name)
        if _is_flexible(fleet):
            return self._observe_flexible(fleet, str(vmss.get("id") or self._scale_set_id()))
        scale_set = self._scale_set_path()
        vms, nics = _read_lists(
            _ListRead(
                f"list VMs of {self.vmss_name}",
                self._compute,
                f"{scale_set}/virtualMachines",
                {"api-version": COMPUTE_LIST_API_VERSION, "$expand": "instanceView"},
            ),
            _ListRead(
                f"list NICs of {self.vmss_name}",
                self._network,
                f"{scale_set}/networkInterfaces",
                {"api-version": NETWORK_VMSS_NIC_LIST_API_VERSION},
            ),
        )
        ips = parse_private_ips(nics)
        instances = tuple(
            instance_view_from_vm(vm, self.extension_name, ips.get(str(vm.get("instanceId")))) for vm in vms
        )
        return FleetView(
            model=fleet.model,
            provisioning_state=fleet.provisioning_state,
            instances=instances,
            orchestration_mode=fleet.orchestration_mode,
            upgrade_mode=fleet.upgrade_mode,
        )

    def _observe_flexible(self, fleet: FleetView, scale_set_id: str) -> FleetView:
        """A Flexible scale set: ONE paged ``VirtualMachines_List`` of the resource group filtered by the
        scale set with ``$expand=instanceView``, and ONE paged ``NetworkInterfaces_List`` of the resource
        group, joined on each NIC's ``virtualMachine.id`` (Flexible VMs and their NICs are standalone
        resources: the scale set's VM and NIC listings are the Uniform APIs). Still three calls whatever
        the fleet size; the NIC listing covers the whole resource group, so a group shared with many
        other VMs makes it longer (docs/design.md, "Flexible orchestration")."""
        group = self._group_path()
        vms, nics = _read_lists(
            _ListRead(
                f"list VMs of {self.vmss_name}",
                self._compute,
                f"{group}/providers/Microsoft.Compute/virtualMachines",
                {
                    "api-version": COMPUTE_LIST_API_VERSION,
                    "$filter": flexible_vm_filter(scale_set_id),
                    "$expand": "instanceView",
                },
            ),
            _ListRead(
                f"list NICs of resource group {self.resource_group}",
                self._network,
                f"{group}/providers/Microsoft.Network/networkInterfaces",
                {"api-version": NETWORK_LIST_API_VERSION},
            ),
        )
        ips = parse_private_ips_by_vm(nics)
        # The filter is the server's; a VM of another scale set in the answer would be upgraded by name.
        own = scale_set_id.lower()
        members = [vm for vm in vms if str(_get(vm, "properties", "virtualMachineScaleSet", "id") or "").lower() == own]
        instances = tuple(
            flexible_instance_view(vm, self.extension_name, ips.get(str(vm.get("id", "")).lower())) for vm in members
        )
        reported = bool(members) and all(
            isinstance(_get(vm, "properties", "latestModelApplied"), bool) for vm in members
        )
        return replace(fleet, instances=instances, model_applied_reported=reported)

    def read_model(self) -> FleetView:
        with _mapped_errors(f"GET scale set {self.vmss_name}"):
            return parse_fleet_model(self._get_scale_set(), self.extension_name)

    def update_model(self, spec: ModelSpec) -> None:
        # One deadline for the whole call: with both parts set the two writes share the wait.
        deadline = time.monotonic() + self._model_write_wait_s
        from azure.mgmt.compute import models as compute_models

        if spec.extension is not None:
            ext = spec.extension
            with _mapped_errors(f"write extension {ext.name} on {self.vmss_name}"):
                poller = self._compute.virtual_machine_scale_set_extensions.begin_create_or_update(
                    self.resource_group,
                    self.vmss_name,
                    ext.name,
                    # The SDK models take the raw REST JSON: the body builders stay pure dicts.
                    compute_models.VirtualMachineScaleSetExtension(extension_body(ext)),
                    polling=self._bounded_polling(deadline),
                )
                _wait_until_done_or_deadline(poller)
        if spec.image_id is not None:
            try:
                with _mapped_errors(f"write image of {self.vmss_name}"):
                    image_poller = self._compute.virtual_machine_scale_sets.begin_update(
                        self.resource_group,
                        self.vmss_name,
                        compute_models.VirtualMachineScaleSetUpdate(image_patch_body(spec.image_id)),
                        polling=self._bounded_polling(deadline),
                    )
                    _wait_until_done_or_deadline(image_poller)
            except AccessDeniedError as denied:
                if denied.code != "LinkedAuthorizationFailed":
                    raise
                # ARM refused the write because the identity cannot read the image it names.
                raise AccessDeniedError(
                    image_unreadable_reason(spec.image_id, "403 LinkedAuthorizationFailed on the model write"),
                    code=denied.code,
                ) from denied

    def read_image(self, image_id: str) -> None:
        parts = parse_image_id(image_id)
        if parts is None:
            raise NotFoundError(f"{image_id!r} is not a managed image or gallery image resource id")
        client = self._compute_for(parts["sub"])
        with _mapped_errors(f"GET image {image_id}"):
            if "image" in parts:
                client.images.get(parts["rg"], parts["image"])
            elif "version" in parts:
                client.gallery_image_versions.get(parts["rg"], parts["gallery"], parts["definition"], parts["version"])
            else:
                # A gallery image without a version: the scale set takes its latest version.
                client.gallery_images.get(parts["rg"], parts["gallery"], parts["definition"])

    def upgrade_instances(self, instance_ids: Sequence[str]) -> None:
        # Both modes: one manualupgrade naming instance ids (Uniform) or VM names (Flexible), as
        # articles/virtual-machine-scale-sets/virtual-machine-scale-sets-perform-manual-upgrades.md says.
        from azure.mgmt.compute import models as compute_models

        scale_sets = self._compute.virtual_machine_scale_sets
        body = compute_models.VirtualMachineScaleSetVMInstanceRequiredIDs
        self._post_for_instances("manualupgrade", instance_ids, scale_sets.begin_update_instances, body)

    def reimage_instances(self, instance_ids: Sequence[str]) -> None:
        if self._flexible():
            self._reimage_flexible_vms(instance_ids)
            return
        from azure.mgmt.compute import models as compute_models

        scale_sets = self._compute.virtual_machine_scale_sets
        body = compute_models.VirtualMachineScaleSetReimageParameters
        self._post_for_instances("reimage", instance_ids, scale_sets.begin_reimage, body)

    def _reimage_flexible_vms(self, names: Sequence[str]) -> None:
        """A Flexible scale set's VMs are reimaged one by one with ``VirtualMachines_Reimage``: the
        Flexible alternative the orchestration-mode API comparison names for the scale set's reimage
        (MicrosoftDocs/azure-docs articles/virtual-machine-scale-sets/orchestration-modes-api-comparison.md
        @ 012ad308577ca7a4bcf96132a0e71b2819fa4a98, "Invoke Single VM API - Reimage"). A reimage is the
        rare repair of an instance a release broke, so one call per VM is affordable; the first failure
        stops the rest (raised, so the service records the reimage as not confirmed and sends it again)."""
        for name in names:
            with _mapped_errors(f"reimage VM {name} of {self.vmss_name}"):
                # polling=False: the 202 is ARM's acceptance, as for the scale-set-wide calls.
                self._compute.virtual_machines.begin_reimage(self.resource_group, str(name), polling=False)

    def _post_for_instances(
        self, verb: str, instance_ids: Sequence[str], begin: Callable[..., Any], body: Callable[[Any], Any]
    ) -> None:
        """One POST naming many instances of the scale set (nothing for none)."""
        if not instance_ids:
            return
        with _mapped_errors(f"{verb} {list(instance_ids)} of {self.vmss_name}"):
            # polling=False: the initial POST is sent (and its errors raised) inside begin_*; the
            # 202 is ARM's acceptance. Nothing keeps polling once we return.
            begin(
                self.resource_group,
                self.vmss_name,
                body({"instanceIds": [str(i) for i in instance_ids]}),
                polling=False,
            )

    # -- helpers ---------------------------------------------------------------------------------

    def _compute_for(self, subscription_id: str) -> ComputeManagementClient:
        if subscription_id.lower() == self.subscription_id.lower():
            return self._compute
        client = self._image_clients.get(subscription_id.lower())
        if client is None:
            from azure.mgmt.compute import ComputeManagementClient

            client = ComputeManagementClient(self._credential, subscription_id, **self._client_kwargs())
            self._image_clients[subscription_id.lower()] = client
        return client

    def _get_scale_set(self) -> Json:
        vmss = _as_json(self._compute.virtual_machine_scale_sets.get(self.resource_group, self.vmss_name))
        # The orchestration mode is fixed when the scale set is created (MicrosoftDocs/azure-docs
        # articles/virtual-machine-scale-sets/virtual-machine-scale-sets-orchestration-modes.md: "cannot be
        # changed or updated later"), so the last one read holds for the writes that follow.
        self._orchestration_mode = str(_get(vmss, "properties", "orchestrationMode") or "Uniform")
        return vmss

    def _flexible(self) -> bool:
        """Whether the scale set is Flexible: from the last scale set GET, or one now."""
        if self._orchestration_mode is None:
            with _mapped_errors(f"GET scale set {self.vmss_name}"):
                self._get_scale_set()
        return str(self._orchestration_mode).lower() == "flexible"

    def _group_path(self) -> str:
        """The resource group's path, its names URL-quoted as the SDK's request builders quote them."""
        sub, group = quote(self.subscription_id, safe=""), quote(self.resource_group, safe="")
        return f"/subscriptions/{sub}/resourceGroups/{group}"

    def _scale_set_path(self) -> str:
        name = quote(self.vmss_name, safe="")
        return f"{self._group_path()}/providers/Microsoft.Compute/virtualMachineScaleSets/{name}"

    def _scale_set_id(self) -> str:
        return (
            f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"
            f"/providers/Microsoft.Compute/virtualMachineScaleSets/{self.vmss_name}"
        )

    def _bounded_polling(self, deadline: float) -> _DeadlineARMPolling:
        return _DeadlineARMPolling(
            self._lro_poll_interval_s,
            deadline,
            # What the generated begin_* methods pass to ARMPolling: the URL template's {endpoint}.
            path_format_arguments={"endpoint": self.arm_endpoint},
        )


def _is_flexible(fleet: FleetView) -> bool:
    return fleet.orchestration_mode.lower() == "flexible"


def _as_json(model: Any) -> Json:
    """An SDK 39 model (a MutableMapping over the REST JSON) -> a plain dict of REST names."""
    as_dict: Callable[[], dict[str, Any]] | None = getattr(model, "as_dict", None)
    if as_dict is not None:
        return as_dict()
    return dict(model)


# The api-versions the SDK's own list operations send (azure-mgmt-compute 39: VirtualMachineScaleSetVMs_List and
# VirtualMachines_List; azure-mgmt-network 33: NetworkInterfaces_ListVirtualMachineScaleSetNetworkInterfaces and
# NetworkInterfaces_List). tests/unit/test_compute_list_versions.py keeps them equal to the SDK's request builders.
COMPUTE_LIST_API_VERSION = "2026-04-01"
NETWORK_VMSS_NIC_LIST_API_VERSION = "2018-10-01"
NETWORK_LIST_API_VERSION = "2026-03-01"

# What the SDK's generated list operations raise for these statuses (``error_map``); any other status is an
# ``HttpResponseError`` parsed in ARM's error format, as they raise it.
_LIST_ERROR_MAP: dict[int, type[HttpResponseError]] = {
    401: ClientAuthenticationError,
    404: ResourceNotFoundError,
    409: ResourceExistsError,
    304: ResourceNotModifiedError,
}


def _list_json(client: Any, path: str, params: dict[str, str], stop: threading.Event | None = None) -> Iterator[Json]:
    """Every element of a paged ARM list, as the REST JSON it came in, following ``nextLink`` (until ``stop``
    is set: then no further page is asked for).

    The request goes through the client's own pipeline (``send_request``: the token, the bounded retries, the
    timeouts) and fails as the SDK's list operation would; what is skipped is the SDK turning each element
    into a model, which the adapter would turn back into a dict (``as_dict``). At 1,000 instances that round
    trip cost about a second of CPU per look at the fleet (docs/performance.md, "Tick cost"). The page's JSON
    is the one the pipeline's ``ContentDecodePolicy`` already parsed (``deserialized_data`` of the pipeline
    response, which ``send_request`` returns when asked with ``_return_pipeline_response``, as azure-core's
    own LRO polling asks for it: azure/core/polling/base_polling.py ``request_status``), not parsed a
    second time."""
    from azure.core.exceptions import map_error
    from azure.core.rest import HttpRequest
    from azure.mgmt.core.exceptions import ARMErrorFormat

    request: HttpRequest | None = HttpRequest("GET", path, params=params)
    while request is not None:
        answer = client.send_request(request, _return_pipeline_response=True)
        response = answer.http_response
        if response.status_code != 200:
            map_error(status_code=response.status_code, response=response, error_map=_LIST_ERROR_MAP)
            raise HttpResponseError(response=response, error_format=ARMErrorFormat)
        body = answer.context.get("deserialized_data")
        if not isinstance(body, Mapping):  # not decoded as JSON by the pipeline (no JSON content type)
            body = response.json()
        yield from body.get("value") or ()
        next_link = body.get("nextLink")
        request = HttpRequest("GET", str(next_link)) if next_link and not (stop and stop.is_set()) else None


class _ListRead(NamedTuple):
    """One paged list of a look at the fleet: what a failure is called, the client, the path and the query."""

    action: str
    client: Any
    path: str
    params: dict[str, str]


def _read_lists(first: _ListRead, second: _ListRead) -> tuple[list[Json], list[Json]]:
    """Both lists of a look at once: ``second`` on a thread of its own while this thread pages through ``first``.

    The two are independent reads (the VM list and the NIC list), so a look takes about as long as the longer
    of them instead of their sum, with the same requests as one after the other. A failure of either fails the
    look with its mapped error (``first``'s when both fail, as when ``first`` ran alone first) and stops the
    other at its next page; the thread is always joined before this returns or raises.

    The two lists go through two clients (compute and network), each with its own pipeline, token policy and
    HTTP session; what they share is the credential, whose token cache MSAL guards with a lock (msal
    token_cache.py, ``TokenCache``: ``self._lock = threading.RLock()``)."""
    stop = threading.Event()

    def read(one: _ListRead) -> list[Json]:
        try:
            with _mapped_errors(one.action):
                return list(_list_json(one.client, one.path, one.params, stop))
        except BaseException:
            stop.set()
            raise

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="arm-list") as pool:
        later = pool.submit(read, second)
        firsts = read(first)  # raising here leaves the with block only when ``second`` has ended
        seconds = later.result()
    return firsts, seconds


def _wait_until_done_or_deadline(poller: Any) -> None:
    """Join the LRO poller; a deadline reached is not an error (the next tick observes the result),
    a failed operation is (``HttpResponseError``, mapped by the caller)."""
    try:
        poller.result()
    except _StillRunningError:
        return


@contextmanager
def _mapped_errors(action: str) -> Iterator[None]:
    try:
        yield
    except AzureError as err:
        raise port_error_from(err, action) from err


__all__ = [
    "AzureCompute",
    "StaticTokenCredential",
    "azure_state_spelling",
    "credential_for",
    "extension_body",
    "flexible_instance_view",
    "flexible_vm_filter",
    "image_patch_body",
    "instance_view_from_vm",
    "parse_extension_spec",
    "parse_fleet_model",
    "parse_image_id",
    "parse_instance_id",
    "parse_private_ips",
    "parse_private_ips_by_vm",
    "port_error_from",
]
