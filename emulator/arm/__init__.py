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

from emulator.arm.budgets import Fault as Fault
from emulator.arm.budgets import FaultTable as FaultTable
from emulator.arm.budgets import Throttle as Throttle
from emulator.arm.budgets import TokenBucket as TokenBucket
from emulator.arm.emulator import ArmEmulator as ArmEmulator
from emulator.arm.model import API_VERSION as API_VERSION
from emulator.arm.model import CUSTOM_SCRIPT as CUSTOM_SCRIPT
from emulator.arm.model import DEFAULT_IMAGE as DEFAULT_IMAGE
from emulator.arm.model import DEFAULT_SUBSCRIPTION as DEFAULT_SUBSCRIPTION
from emulator.arm.model import EXTENSION_EXTRA_PROPERTIES as EXTENSION_EXTRA_PROPERTIES
from emulator.arm.model import JSON as JSON
from emulator.arm.model import VMSS_TYPE as VMSS_TYPE
from emulator.arm.model import ArmError as ArmError
from emulator.arm.model import Extension as Extension
from emulator.arm.model import Instance as Instance
from emulator.arm.model import Model as Model
from emulator.arm.model import Operation as Operation
from emulator.arm.model import RuntimeFactory as RuntimeFactory
from emulator.arm.model import ScaleSet as ScaleSet
from emulator.arm.requestlog import MAX_LOG as MAX_LOG
from emulator.arm.requestlog import RequestRecord as RequestRecord
