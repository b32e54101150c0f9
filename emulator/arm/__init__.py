"""An HTTPS emulator of the slice of Azure Resource Manager the canary product uses.

The real ``azure-mgmt-compute`` (39.0.0) and ``azure-mgmt-network`` (33.1.0) clients talk to it with
``base_url=emu.url``, a static bearer token and ``connection_verify=emu.ca_bundle``; nothing in the
product knows it is not Azure. Shapes follow the REST spec subset vendored in ``tests/data/azure-rest-specs``
(api-version 2026-04-01). docs/emulator.md has the how; each module's docstring has its design decisions.

The parts, each a module:

* ``model``: the state types (scale set, model, extension, instance, operation), ``ArmError``, constants.
* ``fleet``: the fleet state (scale sets, instances, loopback addresses) and the one lock guarding it.
* ``operations``: the long-running-operation runner (manualupgrade, reimage, provisioning).
* ``render``: pure functions rendering the state in the official REST shapes.
* ``budgets``: faults (``FaultTable``) and throttling budgets (``Throttle``, ``TokenBucket``).
* ``semantics``: the switches for behaviours Azure does not document.
* ``access``: the image registry and linked authorization (readable scopes).
* ``routes``: route tables; ``api`` (ARM reads, upgrades) and ``writes`` (model writes) fill one.
* ``admin``: the admin HTTP API (``/_admin/...``) over its own route table.
* ``gateway``: token, body, faults, dispatch, the request log (``requestlog``) for every request.
* ``server``: the HTTPS server and its connection workers.
* ``emulator``: ``ArmEmulator``, the facade; ``controls``: its Python control API's knobs.
"""

from emulator.arm.budgets import Fault, FaultTable, Throttle, TokenBucket
from emulator.arm.emulator import ArmEmulator
from emulator.arm.model import (
    API_VERSION,
    CUSTOM_SCRIPT,
    DEFAULT_IMAGE,
    DEFAULT_SUBSCRIPTION,
    EXTENSION_EXTRA_PROPERTIES,
    JSON,
    VMSS_TYPE,
    ArmError,
    Extension,
    Instance,
    Model,
    Operation,
    RuntimeFactory,
    ScaleSet,
)
from emulator.arm.requestlog import MAX_LOG, RequestRecord

__all__ = [
    "API_VERSION",
    "CUSTOM_SCRIPT",
    "DEFAULT_IMAGE",
    "DEFAULT_SUBSCRIPTION",
    "EXTENSION_EXTRA_PROPERTIES",
    "JSON",
    "MAX_LOG",
    "VMSS_TYPE",
    "ArmEmulator",
    "ArmError",
    "Extension",
    "Fault",
    "FaultTable",
    "Instance",
    "Model",
    "Operation",
    "RequestRecord",
    "RuntimeFactory",
    "ScaleSet",
    "Throttle",
    "TokenBucket",
]
