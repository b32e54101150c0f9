"""Pure functions that render the emulator's state in the official REST shapes.

Shapes follow the REST spec subset vendored in ``tests/data/azure-rest-specs`` (api-version
2026-04-01; the network client's NIC listing uses its own default, 2018-10-01), and the image bodies
the azure-rest-api-specs examples Image_Get.json, GalleryImage_Get.json, GalleryImageVersion_Get.json
(docs/emulator.md). tests/unit/test_arm_render.py validates them against those schemas without a server.

No function here takes a lock, touches a socket or reads the clock: each reads the values it is given
(the caller holds the fleet's lock while instances may change) and returns new JSON.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import quote, urlencode

from emulator.arm.model import (
    DEFAULT_IMAGE,
    EXTENSION_EXTRA_PROPERTIES,
    JSON,
    VM_TYPE,
    VMSS_TYPE,
    ArmError,
    Extension,
    Instance,
    Operation,
    ScaleSet,
)

T = TypeVar("T")


def vmss_id(subscription_id: str, resource_group: str, name: str) -> str:
    return (
        f"/subscriptions/{subscription_id}/resourceGroups/{resource_group}/providers/"
        f"Microsoft.Compute/virtualMachineScaleSets/{name}"
    )


def subnet_id(subscription_id: str, scale_set: ScaleSet) -> str:
    return (
        f"/subscriptions/{subscription_id}/resourceGroups/{scale_set.resource_group}/providers/"
        f"Microsoft.Network/virtualNetworks/{scale_set.name}-vnet/subnets/default"
    )


def nic_id(subscription_id: str, scale_set: ScaleSet, inst: Instance) -> str:
    if scale_set.flexible:
        # A Flexible VM's NIC is a standalone resource of the resource group, named after the VM and
        # the profile's NIC configuration ("nic").
        return (
            f"/subscriptions/{subscription_id}/resourceGroups/{scale_set.resource_group}/providers/"
            f"Microsoft.Network/networkInterfaces/{inst.instance_id}-nic"
        )
    scale_set_id = vmss_id(subscription_id, scale_set.resource_group, scale_set.name)
    return f"{scale_set_id}/virtualMachines/{inst.instance_id}/networkInterfaces/nic"


def vm_id(subscription_id: str, scale_set: ScaleSet, inst: Instance) -> str:
    """The VM's resource id: a scale set VM (Uniform) or a standalone VM (Flexible)."""
    if scale_set.flexible:
        return (
            f"/subscriptions/{subscription_id}/resourceGroups/{scale_set.resource_group}/providers/"
            f"{VM_TYPE}/{inst.instance_id}"
        )
    return f"{vmss_id(subscription_id, scale_set.resource_group, scale_set.name)}/virtualMachines/{inst.instance_id}"


def image_reference(image_id: str | None) -> JSON:
    return {"id": image_id} if image_id else dict(DEFAULT_IMAGE)


def computer_name(scale_set: ScaleSet, inst: Instance) -> str:
    """Uniform: ``{computer name prefix}{base-36 instance id, six digits}`` ("Understand names and instance
    IDs for Azure Virtual Machine Scale Set VMs": instance 85 of prefix ``nsgvmss`` is ``nsgvmss00002D``,
    https://learn.microsoft.com/azure/virtual-machine-scale-sets/virtual-machine-scale-sets-instance-ids).
    Flexible VMs get the prefix and six hex digits of their creation order."""
    if not scale_set.flexible and inst.instance_id.isdigit():
        number, digits = int(inst.instance_id), ""
        while True:
            number, rest = divmod(number, 36)
            digits = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"[rest] + digits
            if number == 0:
                break
        return f"{scale_set.name[:9]}{digits.rjust(6, '0')}"
    return f"{scale_set.name[:9]}{inst.seq:06x}"


def extension_json(
    ext: Extension, scale_set_id: str | None = None, *, in_profile: bool = False, key_vault_reference: bool = True
) -> JSON:
    """VirtualMachineScaleSetExtension: standalone (with id and type), in the model's extensionProfile
    (``in_profile``: id, no type) or bare (no scale set id). protectedSettings are write-only in Azure
    and never rendered; protectedSettingsFromKeyVault only with ``key_vault_reference``."""
    props: JSON = {
        "publisher": ext.publisher,
        "type": ext.type,
        "typeHandlerVersion": ext.type_handler_version,
        "settings": copy.deepcopy(ext.settings),
        "provisioningState": "Succeeded",
    }
    if ext.auto_upgrade_minor_version is not None:
        props["autoUpgradeMinorVersion"] = ext.auto_upgrade_minor_version
    if ext.force_update_tag:
        props["forceUpdateTag"] = ext.force_update_tag
    for name in EXTENSION_EXTRA_PROPERTIES:
        if name in ext.extra and (key_vault_reference or name != "protectedSettingsFromKeyVault"):
            props[name] = copy.deepcopy(ext.extra[name])
    out: JSON = {"name": ext.name, "properties": props}
    if scale_set_id is not None and not in_profile:
        out = {"id": f"{scale_set_id}/extensions/{ext.name}", **out, "type": f"{VMSS_TYPE}/extensions"}
    elif scale_set_id is not None:
        out = {"id": f"{scale_set_id}/extensions/{ext.name}", **out}
    return out


def vmss_json(scale_set: ScaleSet, subscription_id: str, *, key_vault_reference: bool = True) -> JSON:
    """VirtualMachineScaleSet (VirtualMachineScaleSets_Get)."""
    scale_set_id = vmss_id(subscription_id, scale_set.resource_group, scale_set.name)
    model = scale_set.model
    ip_config = {"name": "ipconfig", "properties": {"subnet": {"id": subnet_id(subscription_id, scale_set)}}}
    vm_profile: JSON = {
        "osProfile": {
            "computerNamePrefix": scale_set.name[:9],
            "adminUsername": "azureuser",
            "linuxConfiguration": {"disablePasswordAuthentication": True},
        },
        "storageProfile": {
            "imageReference": image_reference(model.image_id),
            "osDisk": {
                "createOption": "FromImage",
                "caching": "ReadWrite",
                "managedDisk": {"storageAccountType": "Standard_LRS"},
            },
        },
        "networkProfile": {
            "networkInterfaceConfigurations": [
                {"name": "nic", "properties": {"primary": True, "ipConfigurations": [ip_config]}}
            ],
        },
    }
    if scale_set.flexible:
        # A Flexible scale set's profile creates standalone NICs: it names the network API version
        # (VirtualMachineScaleSetNetworkProfile.networkApiVersion, "specifies the Microsoft.Network API
        # version used when creating networking resources in the Network Interface Configurations").
        vm_profile["networkProfile"]["networkApiVersion"] = "2020-11-01"
    if model.extensions:
        vm_profile["extensionProfile"] = {
            "extensions": [
                extension_json(e, scale_set_id, in_profile=True, key_vault_reference=key_vault_reference)
                for e in model.extensions
            ]
        }
    tags: JSON = {"tags": dict(scale_set.tags)} if scale_set.tags else {}  # TrackedResource.tags; ARM omits none
    return {
        "id": scale_set_id,
        "name": scale_set.name,
        "type": VMSS_TYPE,
        "location": scale_set.location,
        **tags,
        "sku": {"name": scale_set.sku_name, "tier": "Standard", "capacity": len(scale_set.instances)},
        "properties": {
            # Flexible: singlePlacementGroup false and a fault domain count, no overprovisioning
            # (flexible-virtual-machine-scale-sets-migration-resources.md, "Update Uniform scale sets
            # deployment templates").
            "singlePlacementGroup": not scale_set.flexible,
            **({"platformFaultDomainCount": 1} if scale_set.flexible else {"overprovision": False}),
            "orchestrationMode": scale_set.orchestration_mode,
            "upgradePolicy": {"mode": scale_set.upgrade_mode},
            "virtualMachineProfile": vm_profile,
            "provisioningState": "Succeeded",
            "uniqueId": scale_set.unique_id,
            "timeCreated": scale_set.created.isoformat(),
        },
    }


def _counts(values: list[str]) -> list[tuple[str, int]]:
    counts: dict[str, int] = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    return sorted(counts.items())


def vmss_instance_view(scale_set: ScaleSet) -> JSON:
    """VirtualMachineScaleSetInstanceView: counts of provisioning and extension states."""
    insts = list(scale_set.instances.values())
    states = _counts([f"ProvisioningState/{i.provisioning_state.lower()}" for i in insts])
    ext_counts = _counts([i.extension_state for i in insts])
    return {
        "virtualMachine": {"statusesSummary": [{"code": c, "count": n} for c, n in states]},
        "extensions": [
            {
                "name": e.name,
                "statusesSummary": [{"code": f"ProvisioningState/{s}", "count": n} for s, n in ext_counts],
            }
            for e in scale_set.model.extensions
        ],
        "statuses": [
            {
                "code": "ProvisioningState/succeeded",
                "level": "Info",
                "displayStatus": "Provisioning succeeded",
                "time": scale_set.created.isoformat(),
            }
        ],
    }


def extension_status(inst: Instance) -> JSON:
    """The CustomScript extension's status in an instance view (failed: ``ProvisioningState/failed/<exit>``)."""
    result = inst.extension_result
    if inst.extension_state == "transitioning":
        return {
            "code": "ProvisioningState/transitioning",
            "level": "Info",
            "displayStatus": "Transitioning",
            "message": "Enable in progress",
        }
    if inst.extension_state == "failed" and result is not None:
        return {
            "code": f"ProvisioningState/failed/{result.exit_code if result.exit_code is not None else -1}",
            "level": "Error",
            "displayStatus": "Provisioning failed",
            "message": f"Enable failed: failed to execute command: command terminated with exit status="
            f"{result.exit_code}\n[stdout]\n{result.stdout}\n[stderr]\n{result.stderr}",
            "time": inst.changed.isoformat(),
        }
    message = "Enable succeeded"
    if result is not None:
        message = f"Enable succeeded: \n[stdout]\n{result.stdout}\n[stderr]\n{result.stderr}"
    return {
        "code": "ProvisioningState/succeeded",
        "level": "Info",
        "displayStatus": "Provisioning succeeded",
        "message": message,
        "time": inst.changed.isoformat(),
    }


def vm_instance_view(scale_set: ScaleSet, inst: Instance) -> JSON:
    """VirtualMachineScaleSetVMInstanceView."""
    prov = inst.provisioning_state
    prov_status: JSON = {
        "code": f"ProvisioningState/{prov.lower()}",
        "level": "Error" if prov == "Failed" else "Info",
        "displayStatus": f"Provisioning {prov.lower()}" if prov != "Updating" else "Updating",
        "time": inst.changed.isoformat(),
    }
    if prov == "Failed":
        prov_status["code"] = "ProvisioningState/failed/VMExtensionProvisioningError"
        prov_status["displayStatus"] = "Provisioning failed"
        prov_status["message"] = "VM has reported a failure when processing extension."
    agent_status = {
        "code": "ProvisioningState/succeeded",
        "level": "Info",
        "displayStatus": "Ready",
        "message": "Guest Agent is running",
        "time": inst.changed.isoformat(),
    }
    view: JSON = {
        "platformUpdateDomain": inst.seq % 5,
        "platformFaultDomain": inst.seq % 3,
        "computerName": computer_name(scale_set, inst),
        "osName": "ubuntu",
        "osVersion": "24.04",
        "vmAgent": {"vmAgentVersion": "2.12.0.2", "statuses": [agent_status]},
        "statuses": [prov_status, {"code": "PowerState/running", "level": "Info", "displayStatus": "VM running"}],
    }
    ext = inst.applied.main_extension()
    if ext is not None:
        view["extensions"] = [
            {
                "name": ext.name,
                "type": f"{ext.publisher}.{ext.type}",
                "typeHandlerVersion": ext.type_handler_version,
                "statuses": [extension_status(inst)],
            }
        ]
    if inst.vm_health:
        view["vmHealth"] = {
            "status": {
                "code": f"HealthState/{inst.vm_health}",
                "level": "Info",
                "displayStatus": f"The VM is {inst.vm_health}",
            }
        }
    return view


def vm_json(scale_set: ScaleSet, inst: Instance, subscription_id: str, *, latest: bool, instance_view: bool) -> JSON:
    """VirtualMachineScaleSetVM; ``latest`` is its latestModelApplied (``semantics.Semantics.latest``)."""
    scale_set_id = vmss_id(subscription_id, scale_set.resource_group, scale_set.name)
    props: JSON = {
        "latestModelApplied": latest,
        "vmId": inst.vm_id,
        "hardwareProfile": {"vmSize": scale_set.sku_name},
        "storageProfile": {
            "imageReference": image_reference(inst.applied.image_id),
            "osDisk": {
                "osType": "Linux",
                "name": f"{scale_set.name}_{inst.instance_id}_osdisk",
                "createOption": "FromImage",
                "caching": "ReadWrite",
            },
        },
        "osProfile": {"computerName": computer_name(scale_set, inst), "adminUsername": "azureuser"},
        "networkProfile": {"networkInterfaces": [{"id": nic_id(subscription_id, scale_set, inst)}]},
        "provisioningState": inst.provisioning_state,
    }
    if instance_view:
        props["instanceView"] = vm_instance_view(scale_set, inst)
    resources = [
        {
            "id": f"{scale_set_id}/virtualMachines/{inst.instance_id}/extensions/{e.name}",
            "name": e.name,
            "type": "Microsoft.Compute/virtualMachines/extensions",
            "location": scale_set.location,
            "properties": {
                "publisher": e.publisher,
                "type": e.type,
                "typeHandlerVersion": e.type_handler_version,
                "autoUpgradeMinorVersion": bool(e.auto_upgrade_minor_version),
                "settings": copy.deepcopy(e.settings),
                "provisioningState": "Failed" if inst.extension_state == "failed" else "Succeeded",
            },
        }
        for e in inst.applied.extensions
    ]
    out: JSON = {
        "id": f"{scale_set_id}/virtualMachines/{inst.instance_id}",
        "name": f"{scale_set.name}_{inst.instance_id}",
        "type": f"{VMSS_TYPE}/virtualMachines",
        "location": scale_set.location,
        "instanceId": inst.instance_id,
        "sku": {"name": scale_set.sku_name, "tier": "Standard"},
        "properties": props,
    }
    if resources:
        out["resources"] = resources
    return out


def flex_vm_instance_view(scale_set: ScaleSet, inst: Instance) -> JSON:
    """VirtualMachineInstanceView of a Flexible scale set's VM: the scale set VM's view without the
    update domain (update domains are deprecated in Flexible orchestration,
    flexible-virtual-machine-scale-sets-migration-resources.md)."""
    view = vm_instance_view(scale_set, inst)
    view.pop("platformUpdateDomain", None)
    return view


def flex_vm_json(
    scale_set: ScaleSet, inst: Instance, subscription_id: str, *, latest: bool | None, instance_view: bool
) -> JSON:
    """VirtualMachine (VirtualMachines_List / _Get) of a Flexible scale set's instance: a standalone VM
    naming its scale set in ``properties.virtualMachineScaleSet.id``. ``latest`` is None unless the
    "in_vm_list" alternative of ``semantics.flexible_model_applied`` puts a latestModelApplied in."""
    props: JSON = {
        "hardwareProfile": {"vmSize": scale_set.sku_name},
        "storageProfile": {
            "imageReference": image_reference(inst.applied.image_id),
            "osDisk": {
                "osType": "Linux",
                "name": f"{inst.instance_id}_OsDisk_1",
                "createOption": "FromImage",
                "caching": "ReadWrite",
            },
        },
        "osProfile": {"computerName": computer_name(scale_set, inst), "adminUsername": "azureuser"},
        "networkProfile": {
            "networkInterfaces": [{"id": nic_id(subscription_id, scale_set, inst), "properties": {"primary": True}}]
        },
        "virtualMachineScaleSet": {"id": vmss_id(subscription_id, scale_set.resource_group, scale_set.name)},
        "provisioningState": inst.provisioning_state,
        "vmId": inst.vm_id,
        "platformFaultDomain": inst.seq % 3,
        "timeCreated": inst.created.isoformat(),
    }
    if latest is not None:
        props["latestModelApplied"] = latest
    if instance_view:
        props["instanceView"] = flex_vm_instance_view(scale_set, inst)
    own_id = vm_id(subscription_id, scale_set, inst)
    out: JSON = {
        "id": own_id,
        "name": inst.instance_id,
        "type": VM_TYPE,
        "location": scale_set.location,
        "properties": props,
    }
    resources = [
        {
            "id": f"{own_id}/extensions/{e.name}",
            "name": e.name,
            "type": f"{VM_TYPE}/extensions",
            "location": scale_set.location,
            "properties": {
                "publisher": e.publisher,
                "type": e.type,
                "typeHandlerVersion": e.type_handler_version,
                "autoUpgradeMinorVersion": bool(e.auto_upgrade_minor_version),
                "settings": copy.deepcopy(e.settings),
                "provisioningState": "Failed" if inst.extension_state == "failed" else "Succeeded",
            },
        }
        for e in inst.applied.extensions
    ]
    if resources:
        out["resources"] = resources
    return out


def nic_json(scale_set: ScaleSet, inst: Instance, subscription_id: str) -> JSON:
    """NetworkInterface of a scale set instance (its loopback address is the private IP)."""
    nic = nic_id(subscription_id, scale_set, inst)
    ip_props = {
        "privateIPAddress": inst.address,
        "privateIPAllocationMethod": "Dynamic",
        "privateIPAddressVersion": "IPv4",
        "primary": True,
        "provisioningState": "Succeeded",
        "subnet": {"id": subnet_id(subscription_id, scale_set)},
    }
    return {
        "id": nic,
        "name": nic.rsplit("/", 1)[-1],
        "location": scale_set.location,
        "properties": {
            "provisioningState": "Succeeded",
            "primary": True,
            "macAddress": "00-0D-3A-" + "-".join(f"{int(x):02X}" for x in inst.address.split(".")[1:]),
            "virtualMachine": {"id": vm_id(subscription_id, scale_set, inst)},
            "ipConfigurations": [
                {"id": f"{nic}/ipConfigurations/ipconfig", "name": "ipconfig", "properties": ip_props}
            ],
        },
    }


def image_json(known: str, m: re.Match[str]) -> JSON:
    """A minimal Image, GalleryImage or GalleryImageVersion (``m``: its ``model.IMAGE_ID`` match)."""
    name = known.rsplit("/", 1)[-1]
    if m["image"]:
        kind = "Microsoft.Compute/images"
        props: JSON = {"storageProfile": {"osDisk": {"osType": "Linux", "osState": "Generalized"}}}
    elif m["version"]:
        kind = "Microsoft.Compute/galleries/images/versions"
        props = {"storageProfile": {"osDiskImage": {"sizeInGB": 30, "hostCaching": "ReadWrite"}}}
    else:
        kind = "Microsoft.Compute/galleries/images"
        props = {
            "osType": "Linux",
            "osState": "Generalized",
            "identifier": {"publisher": "vmss-canary", "offer": m["gallery"], "sku": name},
        }
    props["provisioningState"] = "Succeeded"
    return {"id": known, "name": name, "type": kind, "location": "westeurope", "properties": props}


def operation_status_json(op: Operation) -> JSON:
    """The Azure-AsyncOperation status resource."""
    doc: JSON = {"startTime": op.started.isoformat(), "status": op.status, "name": op.op_id}
    if op.ended is not None:
        doc["endTime"] = op.ended.isoformat()
    if op.status == "Failed":
        doc["error"] = {
            "code": "VMExtensionProvisioningError",
            "message": f"VM has reported a failure when processing extension on instance(s) "
            f"{', '.join(sorted(op.failures))}.",
        }
    return doc


def page(
    items: Sequence[T],
    path: str,
    query: dict[str, str],
    *,
    page_size: int,
    base_url: str,
    render: Callable[[T], Any] | None = None,
) -> JSON:
    """One page of a list (``$skiptoken`` = offset) with ``nextLink`` while more remain. ``render``: each
    item of the page is rendered by it (only those of the page: a list of 1,000 VMs renders 50 per page,
    not 1,000), else the items are the page's JSON as they are."""
    try:
        skip = int(query.get("$skiptoken", "0"))
    except ValueError as err:
        raise ArmError(400, "InvalidParameter", "Invalid $skiptoken.") from err
    chosen = items[skip : skip + page_size]
    out: JSON = {"value": list(chosen) if render is None else [render(item) for item in chosen]}
    if skip + page_size < len(items):
        q = {k: v for k, v in query.items() if k != "$skiptoken"}
        q["$skiptoken"] = str(skip + page_size)
        out["nextLink"] = f"{base_url}{quote(path)}?{urlencode(q, safe='$/,')}"
    return out


def admin_view(scale_set: ScaleSet, subscription_id: str, latest: dict[str, bool]) -> JSON:
    """The admin API's compact view of a scale set (``ArmEmulator.describe``); not an ARM shape."""
    return {
        "resourceGroup": scale_set.resource_group,
        "name": scale_set.name,
        "id": vmss_id(subscription_id, scale_set.resource_group, scale_set.name),
        "orchestrationMode": scale_set.orchestration_mode,
        "upgradeMode": scale_set.upgrade_mode,
        "upgradeSeconds": scale_set.upgrade_seconds,
        "imageId": scale_set.model.image_id,
        "extensions": [extension_json(e) for e in scale_set.model.extensions],
        "failureRules": scale_set.rules.as_list(),
        "instances": [
            {
                "instanceId": i.instance_id,
                "address": i.address,
                "port": getattr(i.runtime, "port", None),
                "provisioningState": i.provisioning_state,
                "latestModelApplied": latest[i.instance_id],
                "extensionState": i.extension_state,
                "upgrades": i.upgrades,
                "release": getattr(i.runtime, "release", None),
            }
            for i in scale_set.instances.values()
        ],
    }
