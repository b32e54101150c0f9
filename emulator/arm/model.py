"""The ARM-visible state types of the emulator: scale sets, their model and extensions, instances,
long-running operations; the constants of the emulated API and its error answer.

Everything here is plain data (dataclasses) plus ``extension_from_body``, the rule that turns a REST
extension body into an ``Extension``. The state is guarded by the fleet's lock (``fleet.Fleet``).
"""

from __future__ import annotations

import copy
import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from emulator.runtime import ExtensionResult, InstanceModel, InstanceRuntime
from emulator.synthetic import FailureRules

if TYPE_CHECKING:
    from emulator.arm.budgets import TokenBucket

API_VERSION = "2026-04-01"
DEFAULT_SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"
VMSS_TYPE = "Microsoft.Compute/virtualMachineScaleSets"
VM_TYPE = "Microsoft.Compute/virtualMachines"  # a Flexible scale set's instances are standalone VMs
CUSTOM_SCRIPT = ("Microsoft.Azure.Extensions", "CustomScript", "2.1")
DEFAULT_IMAGE = {"publisher": "Canonical", "offer": "ubuntu-24_04-lts", "sku": "server", "version": "latest"}

# A managed image or an Azure Compute Gallery image (definition, optionally a version): the ids an
# image release may name, and the Images_Get / GalleryImages_Get / GalleryImageVersions_Get paths.
IMAGE_ID = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/Microsoft\.Compute/"
    r"(?:images/(?P<image>[^/]+)|galleries/(?P<gallery>[^/]+)/images/(?P<definition>[^/]+)"
    r"(?:/versions/(?P<version>[^/]+))?)/?$",
    re.IGNORECASE,
)

RuntimeFactory = Callable[[str, InstanceModel], InstanceRuntime]
JSON = dict[str, Any]


class ArmError(Exception):
    """An ARM error answer: status + {"error": {"code", "message"}}."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: dict[str, str] | None = None,
        body: JSON | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
        self._body = body

    def body(self) -> JSON:
        if self._body is not None:
            return copy.deepcopy(self._body)
        return {"error": {"code": self.code, "message": self.message}}


def now() -> datetime:
    return datetime.now(UTC)


# The writable properties of VirtualMachineScaleSetExtensionProperties (REST spec 2026-04-01,
# tests/data/azure-rest-specs/ComputeRP.vmss-subset.json) that ``Extension`` keeps besides publisher,
# type, typeHandlerVersion, settings, protectedSettings, autoUpgradeMinorVersion and forceUpdateTag:
# stored as given (None = absent) and returned as stored, so a client that reads and writes back an
# extension can be checked for keeping them.
EXTENSION_EXTRA_PROPERTIES = (
    "enableAutomaticUpgrade",
    "provisionAfterExtensions",
    "suppressFailures",
    "protectedSettingsFromKeyVault",
)


@dataclass
class Extension:
    name: str
    publisher: str
    type: str
    type_handler_version: str
    settings: JSON = field(default_factory=dict)
    protected_settings: JSON = field(default_factory=dict)
    auto_upgrade_minor_version: bool | None = True  # None: absent from the last PUT, so not returned
    force_update_tag: str | None = None
    # REST name -> value, for EXTENSION_EXTRA_PROPERTIES present in the last write.
    extra: JSON = field(default_factory=dict)

    def content(self) -> tuple[Any, ...]:
        """What "the same extension" means for latestModelApplied (``semantics``, model_applied="content")."""
        return (
            self.name.lower(),
            self.publisher,
            self.type,
            self.type_handler_version,
            json.dumps(self.settings, sort_keys=True),
            json.dumps(self.protected_settings, sort_keys=True),
            self.force_update_tag or None,
            json.dumps(self.extra, sort_keys=True),
        )

    def to_json(
        self, vmss_id: str | None = None, *, in_profile: bool = False, key_vault_reference: bool = True
    ) -> JSON:
        """The REST shape (``render.extension_json``)."""
        from emulator.arm.render import extension_json

        return extension_json(self, vmss_id, in_profile=in_profile, key_vault_reference=key_vault_reference)


def extension_from_body(name: str, body: JSON, old: Extension | None, *, replace: bool) -> Extension:
    """The extension a REST write leaves: PATCH (``replace=False``) merges ``body`` into ``old``,
    PUT replaces it. Properties absent from the body are kept (merge) or absent (replace)."""
    props = body.get("properties") or {}
    base = (
        copy.deepcopy(old)
        if old is not None and not replace
        else Extension(name, "", "", "", auto_upgrade_minor_version=None)
    )
    if "publisher" in props:
        base.publisher = props["publisher"]
    if "type" in props:
        base.type = props["type"]
    if "typeHandlerVersion" in props:
        base.type_handler_version = props["typeHandlerVersion"]
    if "settings" in props:
        base.settings = copy.deepcopy(props["settings"] or {})
    if "protectedSettings" in props:
        base.protected_settings = copy.deepcopy(props["protectedSettings"] or {})
    if "autoUpgradeMinorVersion" in props:
        flag = props["autoUpgradeMinorVersion"]
        base.auto_upgrade_minor_version = None if flag is None else bool(flag)
    if "forceUpdateTag" in props:
        base.force_update_tag = props["forceUpdateTag"]
    for extra in EXTENSION_EXTRA_PROPERTIES:
        if extra in props:
            if props[extra] is None:
                base.extra.pop(extra, None)
            else:
                base.extra[extra] = copy.deepcopy(props[extra])
    base.name = name or base.name
    return base


@dataclass(frozen=True)
class Model:
    """The scale set model's parts that matter: image and extensions (by name, in order)."""

    image_id: str | None
    extensions: tuple[Extension, ...]
    # Bumped by every model write (PUT/PATCH of the scale set or an extension); not part of key().
    # Only the "version" latest-model semantics look at it (ArmEmulator(model_applied=...)).
    version: int = field(default=0, compare=False)

    def key(self) -> tuple[Any, ...]:
        return ((self.image_id or "").lower(), tuple(e.content() for e in self.extensions))

    def main_extension(self) -> Extension | None:
        """The extension an instance runtime runs: the CustomScript one, else the first."""
        ext = next((e for e in self.extensions if e.type == "CustomScript"), None)
        return ext if ext is not None or not self.extensions else self.extensions[0]

    def instance_model(self) -> InstanceModel:
        ext = self.main_extension()
        if ext is None:
            return InstanceModel(image_id=self.image_id)
        settings, protected = copy.deepcopy(ext.settings), copy.deepcopy(ext.protected_settings)
        return InstanceModel(
            self.image_id, ext.name, ext.publisher, ext.type, ext.type_handler_version, settings, protected
        )


@dataclass
class Instance:
    instance_id: str
    address: str
    runtime: InstanceRuntime
    applied: Model
    vm_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    provisioning_state: str = "Succeeded"
    updating: bool = False
    extension_state: str = "succeeded"  # succeeded | failed | transitioning
    extension_result: ExtensionResult | None = None
    vm_health: str | None = None  # None: no application health extension reported
    changed: datetime = field(default_factory=now)
    upgrades: int = 0  # applies actually started (tests: "no instance upgraded twice")
    seq: int = 0  # creation order within the scale set (Flexible instance ids are names, not numbers)
    created: datetime = field(default_factory=now)

    def begin_work(self, provisioning_state: str, at: datetime | None = None) -> None:
        """The instance starts an apply: Updating/Creating, its extension transitioning. ``at``: the emulator
        clock's time (None: real time)."""
        self.updating = True
        self.provisioning_state = provisioning_state
        self.extension_state = "transitioning"
        self.changed = at or now()

    def finish_work(self, model: Model, result: ExtensionResult, at: datetime | None = None) -> None:
        """An apply ended: the instance is on ``model``; the extension's result decides its state."""
        self.applied = model
        self.updating = False
        self.extension_result = result
        self.extension_state = "succeeded" if result.succeeded else "failed"
        self.provisioning_state = "Succeeded" if result.succeeded else "Failed"
        self.changed = at or now()


@dataclass
class ScaleSet:
    resource_group: str
    name: str
    location: str
    orchestration_mode: str
    upgrade_mode: str
    model: Model
    upgrade_seconds: float
    runtime_factory: RuntimeFactory
    rules: FailureRules
    bucket: TokenBucket | None  # the model/upgrade write budget; None: not throttled
    instances: dict[str, Instance] = field(default_factory=dict)
    next_id: int = 0
    unique_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    created: datetime = field(default_factory=now)
    sku_name: str = "Standard_B1s"
    tags: dict[str, str] = field(default_factory=dict)  # the resource's tags (tag discovery reads them)

    @property
    def flexible(self) -> bool:
        """Flexible orchestration: instances are ``Microsoft.Compute/virtualMachines`` named
        ``<scale set>_<8 hex>``, listed by ``VirtualMachines_List`` (``api``, ``render.flex_vm_json``)."""
        return self.orchestration_mode.lower() == "flexible"

    def instances_in_order(self) -> list[Instance]:
        return sorted(self.instances.values(), key=lambda i: i.seq)

    def find_extension(self, name: str) -> Extension | None:
        return next((e for e in self.model.extensions if e.name.lower() == name.lower()), None)


@dataclass
class Operation:
    op_id: str
    kind: str  # "model" | "create" | "manualupgrade" | "reimage"
    location: str
    started: datetime
    pending: set[str] = field(default_factory=set)  # instance ids still being worked on
    failures: list[str] = field(default_factory=list)
    ended: datetime | None = None
    result: Callable[[], JSON | None] | None = None  # final body for the Location GET

    @property
    def status(self) -> str:
        if self.ended is None:
            return "InProgress"
        return "Failed" if self.failures else "Succeeded"
