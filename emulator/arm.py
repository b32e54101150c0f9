"""An HTTPS emulator of the slice of Azure Resource Manager the canary product uses.

The real ``azure-mgmt-compute`` (39.0.0) and ``azure-mgmt-network`` (33.1.0) clients talk to it with
``base_url=emu.url``, a static bearer token and ``connection_verify=emu.ca_bundle``; nothing in the
product knows it is not Azure. Shapes follow the REST spec subset vendored in ``tests/data/azure-rest-specs``
(api-version 2026-04-01; the network client's NIC listing uses its own default, 2018-10-01); the
integration tests validate the responses against those schemas.

Design decisions (the why; docs/emulator.md has the how):

* **One lock, short critical sections.** All ARM-visible state (scale sets, instances, operations)
  is guarded by ``self._lock``. Slow work (an instance applying a model through its runtime, which
  for nginx means running a script) happens on worker threads *outside* the lock; the worker
  re-takes the lock only to publish the result. So a VM list is never blocked behind an upgrade.
* **Upgrades are visible at once.** ``manualupgrade`` marks the instances ``Updating`` before it
  answers, so an observer right after the call sees them updating, as in Azure. A worker then waits
  the scale set's ``upgrade_seconds`` and applies the model.
* **Idempotent writes.** Upgrading an instance already on the latest model is accepted and changes
  nothing (it is still in the request log). Upgrading an instance that is *already Updating* is
  accepted too (by default, ``upgrade_while_updating="accept"``) and does NOT start a second apply:
  the running one finishes the job. (If the model
  changed in between, the instance ends on the model the first upgrade took, so it reads
  ``latestModelApplied: false`` and the next tick upgrades it again: level-triggered callers heal.)
* **"Latest model" is content equality by default** (``model_applied="content"``): image id plus each
  extension's publisher/type/typeHandlerVersion/settings/protectedSettings/forceUpdateTag. Writing
  back the baseline (a rollback) therefore makes instances still on the baseline "latest" again.
  Azure does not document which it is, so ``model_applied="version"`` is the other alternative:
  every model write bumps a counter and only instances upgraded since the last write are latest.
  Likewise ``upgrade_while_updating="accept"|"conflict"`` picks whether manualupgrade naming an
  instance that is already Updating is accepted or refused with 409 (docs/emulator.md).
* **Linked authorization.** A model write whose ``imageReference.id`` lies outside
  ``readable_scopes`` answers 403 LinkedAuthorizationFailed, and the image GETs (managed image,
  gallery image, gallery image version) answer 403 AuthorizationFailed there, as ARM checks the
  caller's read permission on resources a request body references. ``None`` (default) = all readable.
* **A failed extension** leaves the instance on the new model (``latestModelApplied: true``) with
  ``provisioningState: Failed`` and the CustomScript status ``ProvisioningState/failed/1``; the
  manualupgrade operation then ends ``Failed`` (the SDK poller raises), as Azure reports
  ``VMExtensionProvisioningError``.
* **Reimage** re-runs the instance's *own* (applied) model from a clean image; it never moves an
  instance to a newer model (that is what manualupgrade is for).
* **Long-running operations** answer with ``Azure-AsyncOperation`` (status resource) and ``Location``
  (``...&monitor=true``: 202 while running, then 200 with the final resource) plus ``Retry-After``.
  ``Retry-After`` must be an integer (the SDK deserialises it as ``int``), so a sub-second
  ``retry_after`` is sent as ``retry-after-ms`` only, which azure-core honours for polling.
* **Throttling** is a token bucket per scale set over model/upgrade writes (PUT/PATCH of the scale
  set or its extensions, manualupgrade, reimage), answering 429 ``OperationNotAllowed`` with
  ``Retry-After``, like Compute's "too many requests" for a scale set.
* **Addresses.** Each instance gets a loopback address 127.0.X.Y (from ``address_base``) unique
  within the emulator; if a runtime cannot bind its address (someone else's test holds it), the next
  address is tried.
"""

from __future__ import annotations

import contextlib
import copy
import ipaddress
import json
import math
import re
import socket
import socketserver
import ssl
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlencode, urlsplit

from emulator.certs import generate_certs
from emulator.runtime import ExtensionResult, InstanceModel, InstanceRuntime
from emulator.synthetic import FailureRule, FailureRules, SyntheticRuntime

API_VERSION = "2026-04-01"
DEFAULT_SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"
MAX_LOG = 100_000  # request log entries kept (oldest tenth dropped beyond it)
VMSS_TYPE = "Microsoft.Compute/virtualMachineScaleSets"
CUSTOM_SCRIPT = ("Microsoft.Azure.Extensions", "CustomScript", "2.1")
DEFAULT_IMAGE = {"publisher": "Canonical", "offer": "ubuntu-24_04-lts", "sku": "server", "version": "latest"}

# A managed image or an Azure Compute Gallery image (definition, optionally a version): the ids an
# image release may name, and the Images_Get / GalleryImages_Get / GalleryImageVersions_Get paths.
_IMAGE_ID = re.compile(
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


def _now() -> datetime:
    return datetime.now(UTC)


# ----------------------------------------------------------------------------------------------
# State
# ----------------------------------------------------------------------------------------------


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
        """What "the same extension" means for latestModelApplied (see module docstring)."""
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
        props: JSON = {
            "publisher": self.publisher,
            "type": self.type,
            "typeHandlerVersion": self.type_handler_version,
            "settings": copy.deepcopy(self.settings),
            "provisioningState": "Succeeded",
        }
        if self.auto_upgrade_minor_version is not None:
            props["autoUpgradeMinorVersion"] = self.auto_upgrade_minor_version
        if self.force_update_tag:
            props["forceUpdateTag"] = self.force_update_tag
        for name in EXTENSION_EXTRA_PROPERTIES:
            if name in self.extra and (key_vault_reference or name != "protectedSettingsFromKeyVault"):
                props[name] = copy.deepcopy(self.extra[name])
        # protectedSettings are write-only in Azure: never serialised back.
        out: JSON = {"name": self.name, "properties": props}
        if vmss_id is not None and not in_profile:
            out = {"id": f"{vmss_id}/extensions/{self.name}", **out, "type": f"{VMSS_TYPE}/extensions"}
        elif vmss_id is not None:
            out = {"id": f"{vmss_id}/extensions/{self.name}", **out}
        return out


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

    def instance_model(self) -> InstanceModel:
        ext = next((e for e in self.extensions if e.type == "CustomScript"), None)
        if ext is None and self.extensions:
            ext = self.extensions[0]
        if ext is None:
            return InstanceModel(image_id=self.image_id)
        return InstanceModel(
            image_id=self.image_id,
            extension_name=ext.name,
            extension_publisher=ext.publisher,
            extension_type=ext.type,
            extension_version=ext.type_handler_version,
            settings=copy.deepcopy(ext.settings),
            protected_settings=copy.deepcopy(ext.protected_settings),
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
    changed: datetime = field(default_factory=_now)
    upgrades: int = 0  # applies actually started (tests: "no instance upgraded twice")


@dataclass
class TokenBucket:
    capacity: float = 12.0
    per_minute: float = 4.0
    tokens: float = 12.0
    stamp: float = field(default_factory=time.monotonic)

    def take(self) -> float:
        """Take one token; return 0 on success, else the seconds until one is available."""
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.per_minute / 60.0)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) * 60.0 / self.per_minute


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
    bucket: TokenBucket | None
    instances: dict[str, Instance] = field(default_factory=dict)
    next_id: int = 0
    unique_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    created: datetime = field(default_factory=_now)
    sku_name: str = "Standard_B1s"


@dataclass
class Operation:
    op_id: str
    kind: str  # "model" | "manualupgrade" | "reimage"
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


@dataclass(frozen=True)
class Fault:
    method: str  # "*" for any
    path_regex: str
    status: int
    body: JSON | None
    headers: dict[str, str]


@dataclass(frozen=True)
class RequestRecord:
    method: str
    path: str
    query: dict[str, str]
    body: Any  # parsed JSON (protectedSettings redacted) or None
    status: int
    time: datetime

    def to_json(self) -> JSON:
        return {
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "body": self.body,
            "status": self.status,
            "time": self.time.isoformat(),
        }


def _redact(body: Any) -> Any:
    """Keep protectedSettings out of the log (they can hold secrets); keep the fact they were sent."""
    if isinstance(body, dict):
        return {k: ("<redacted>" if k == "protectedSettings" else _redact(v)) for k, v in body.items()}
    if isinstance(body, list):
        return [_redact(v) for v in body]
    return body


# ----------------------------------------------------------------------------------------------
# The emulator
# ----------------------------------------------------------------------------------------------


class ArmEmulator:
    """ARM for compute + network over HTTPS, with a Python and an HTTP (``/_admin``) control API."""

    # Whether GET answers carry an extension's protectedSettingsFromKeyVault (a secret's URL and its
    # vault's id, not the secret). Not documented either way: the spec marks it neither readOnly nor
    # secret, and Terraform's azurerm provider reads it back from GET (hashicorp/terraform-provider-azurerm,
    # internal/services/compute/virtual_machine_scale_set_extension_resource.go) while it keeps
    # protectedSettings from its own state because ARM does not return them. Default: returned.
    # ``set_key_vault_reference_visible(False)`` hides it, so the product can be tested under both.
    key_vault_reference_in_answers: bool = True

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str = "emulator-token",
        state_dir: str | Path | None = None,
        *,
        subscription_id: str = DEFAULT_SUBSCRIPTION,
        address_base: str = "127.0.10.1",
        instance_port: int = 80,
        upgrade_seconds: float = 2.0,
        retry_after: float = 1.0,
        page_size: int = 50,
        throttle: tuple[float, float] | None = (12.0, 4.0),
        workers: int = 32,
        model_applied: str = "content",
        upgrade_while_updating: str = "accept",
        readable_scopes: Sequence[str] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.token = token
        self.subscription_id = subscription_id
        self.instance_port = instance_port
        self.default_upgrade_seconds = upgrade_seconds
        self.retry_after = retry_after
        self.page_size = page_size
        self.throttle = throttle  # (bucket capacity, refill per minute); None disables
        # Two behaviours Azure does not document (docs/emulator.md, "Undocumented behaviours"):
        self.model_applied = "content"  # "content" | "version": what latestModelApplied compares
        self.upgrade_while_updating = "accept"  # "accept" | "conflict": manualupgrade of an Updating instance
        self.set_semantics(model_applied=model_applied, upgrade_while_updating=upgrade_while_updating)
        # Scopes the caller may read (linked authorization of image ids); None = everything.
        self.readable_scopes: tuple[str, ...] | None = None
        self.set_readable_scopes(readable_scopes)
        self.caller_id = "11111111-0000-0000-0000-00000000ca11"  # the caller's object id in 403 messages
        self._images: dict[str, str] = {}  # lower-case image resource id -> its id as registered
        self.runtime_kinds: dict[str, Callable[[ScaleSet, JSON], RuntimeFactory]] = {
            "synthetic": self._synthetic_factory_from_admin,
        }
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if state_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="arm-emulator-")
            state_dir = self._tmp.name
        self.state_dir = Path(state_dir)
        self._certs = generate_certs(self.state_dir / "certs", hosts=(host, "localhost"))
        self._lock = threading.RLock()
        self._scale_sets: dict[tuple[str, str], ScaleSet] = {}
        self._operations: dict[str, Operation] = {}
        self._faults: list[list[Any]] = []  # [Fault, remaining]
        self._log: list[RequestRecord] = []
        self._next_address = int(ipaddress.IPv4Address(address_base))
        self._address_base = address_base
        self._used_addresses: set[str] = set()
        self._workers = workers
        self._pool: ThreadPoolExecutor | None = None
        self._timers: list[threading.Thread] = []  # one per operation waiting out its upgrade time
        self._stopping = threading.Event()
        self._server: _ArmServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("emulator not started")
        return f"https://{self.host}:{self._server.server_address[1]}"

    @property
    def ca_bundle(self) -> str:
        return str(self._certs.ca_bundle)

    def start(self) -> ArmEmulator:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self._certs.cert_chain, self._certs.key)
        self._pool = ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix="arm-upgrade")
        self._server = _ArmServer((self.host, self.port), self, ctx)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.2}, name="arm-emulator", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, finish/cancel upgrades, stop every instance runtime, delete temp files."""
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.close_connections()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        for timer in list(self._timers):
            timer.join(timeout=5)
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        for key in list(self._scale_sets):
            self.delete_scale_set(*key)
        self._server = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> ArmEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- ids ----------------------------------------------------------------------------------------
    def vmss_id(self, rg: str, name: str) -> str:
        return (
            f"/subscriptions/{self.subscription_id}/resourceGroups/{rg}/providers/"
            f"Microsoft.Compute/virtualMachineScaleSets/{name}"
        )

    # -- admin: Python API --------------------------------------------------------------------------
    def create_scale_set(
        self,
        resource_group: str,
        name: str,
        instances: int = 3,
        *,
        location: str = "westeurope",
        orchestration_mode: str = "Uniform",
        upgrade_mode: str = "Manual",
        image_id: str | None = None,
        extension_settings: JSON | None = None,
        extension_protected_settings: JSON | None = None,
        extension_name: str = "CustomScript",
        upgrade_seconds: float | None = None,
        runtime_factory: RuntimeFactory | None = None,
        serve: bool = True,
        extension_properties: JSON | None = None,
    ) -> ScaleSet:
        """Create (or replace) a scale set with ``instances`` running instances, all on the model.

        ``extension_settings=None`` creates no extension; ``runtime_factory`` defaults to synthetic
        runtimes on ``instance_port`` (``serve=False``: no sockets, for paging/scale tests).
        ``extension_properties`` are REST-named extension properties (``publisher``,
        ``suppressFailures``, ``provisionAfterExtensions``, ...) laid over the CustomScript defaults.
        """
        key = (resource_group.lower(), name.lower())
        if key in self._scale_sets:
            self.delete_scale_set(resource_group, name)
        if image_id and _IMAGE_ID.match(image_id):
            self.add_image(image_id)  # the image a scale set was created from exists
        exts: tuple[Extension, ...] = ()
        if extension_settings is not None:
            publisher, etype, version = CUSTOM_SCRIPT
            exts = (
                Extension(
                    extension_name,
                    publisher,
                    etype,
                    version,
                    dict(extension_settings),
                    dict(extension_protected_settings or {}),
                ),
            )
            if extension_properties:
                exts = (
                    self._extension_from_body(
                        extension_name, {"properties": extension_properties}, exts[0], replace=False
                    ),
                )
        rules = FailureRules()
        scale_set = ScaleSet(
            resource_group=resource_group,
            name=name,
            location=location,
            orchestration_mode=orchestration_mode,
            upgrade_mode=upgrade_mode,
            model=Model(image_id, exts),
            upgrade_seconds=self.default_upgrade_seconds if upgrade_seconds is None else upgrade_seconds,
            runtime_factory=runtime_factory or self._synthetic_factory(rules, serve),
            rules=rules,
            bucket=self._new_bucket(),
        )
        with self._lock:
            self._scale_sets[key] = scale_set
        try:
            for _ in range(instances):
                self._add_instance(scale_set, apply=False)
        except BaseException:
            self.delete_scale_set(resource_group, name)
            raise
        return scale_set

    def scale_out(self, resource_group: str, name: str, count: int = 1) -> list[str]:
        """Add ``count`` instances on the *current* model (their extension runs as they provision)."""
        scale_set = self._get(resource_group, name)
        return [self._add_instance(scale_set, apply=True).instance_id for _ in range(count)]

    def delete_scale_set(self, resource_group: str, name: str) -> None:
        with self._lock:
            scale_set = self._scale_sets.pop((resource_group.lower(), name.lower()), None)
        if scale_set is None:
            return

        def stop(inst: Instance) -> None:
            try:
                inst.runtime.stop()
            finally:
                with self._lock:
                    self._used_addresses.discard(inst.address)

        # In parallel: a served runtime takes up to its poll interval to stop, and a fleet has hundreds.
        instances = list(scale_set.instances.values())
        if len(instances) <= 1:
            for inst in instances:
                stop(inst)
            return
        with ThreadPoolExecutor(max_workers=min(64, len(instances)), thread_name_prefix="arm-stop") as pool:
            for future in [pool.submit(stop, inst) for inst in instances]:
                future.result()  # re-raise a runtime's stop failure after all were attempted

    def register_runtime_kind(self, kind: str, builder: Callable[[ScaleSet, JSON], RuntimeFactory]) -> None:
        """Make ``{"runtime": kind}`` available to the admin API's scale set creation.

        ``builder(scale_set, request_body)`` returns the runtime factory for that scale set; e.g. the
        local twin registers "nginx" with ``emulator.nginx.nginx_runtime_factory(...)``."""
        self.runtime_kinds[kind] = builder

    def scale_set(self, resource_group: str, name: str) -> ScaleSet:
        return self._get(resource_group, name)

    def instance(self, resource_group: str, name: str, instance_id: str) -> Instance:
        return self._get_instance(self._get(resource_group, name), instance_id)

    def set_timings(
        self,
        resource_group: str | None = None,
        name: str | None = None,
        *,
        upgrade_seconds: float | None = None,
        retry_after: float | None = None,
    ) -> None:
        """``upgrade_seconds`` for one scale set (or the default for new ones); ``retry_after`` global."""
        with self._lock:
            if upgrade_seconds is not None:
                if resource_group and name:
                    self._get(resource_group, name).upgrade_seconds = upgrade_seconds
                else:
                    self.default_upgrade_seconds = upgrade_seconds
            if retry_after is not None:
                self.retry_after = retry_after

    def set_key_vault_reference_visible(self, visible: bool) -> None:
        """See ``key_vault_reference_in_answers``."""
        with self._lock:
            self.key_vault_reference_in_answers = visible

    def set_page_size(self, page_size: int) -> None:
        if page_size < 1:
            raise ValueError("page_size must be >= 1")
        self.page_size = page_size

    def set_throttling(self, capacity: float | None, per_minute: float = 4.0) -> None:
        """Token bucket for every scale set (reset to full); ``capacity=None`` disables throttling."""
        with self._lock:
            self.throttle = None if capacity is None else (capacity, per_minute)
            for scale_set in self._scale_sets.values():
                scale_set.bucket = self._new_bucket()

    def set_semantics(self, *, model_applied: str | None = None, upgrade_while_updating: str | None = None) -> None:
        """Pick an alternative for each undocumented ARM behaviour (see docs/emulator.md).

        ``model_applied``: "content" (an instance is latest when its applied model equals the scale
        set model: writing the old model back makes untouched instances latest again) or "version"
        (every model write bumps a counter: an instance is latest only when upgraded after the last
        write). ``upgrade_while_updating``: "accept" (manualupgrade naming an Updating instance is
        accepted, no second apply) or "conflict" (409 OperationNotAllowed, nothing starts)."""
        if model_applied is not None:
            if model_applied not in ("content", "version"):
                raise ValueError(f"model_applied must be 'content' or 'version', not {model_applied!r}")
            self.model_applied = model_applied
        if upgrade_while_updating is not None:
            if upgrade_while_updating not in ("accept", "conflict"):
                raise ValueError(
                    f"upgrade_while_updating must be 'accept' or 'conflict', not {upgrade_while_updating!r}"
                )
            self.upgrade_while_updating = upgrade_while_updating

    def set_readable_scopes(self, scopes: Sequence[str] | None) -> None:
        """The resource scopes the caller may read; ``None`` = everything (the default).

        A model write whose ``imageReference.id`` lies outside them answers 403
        LinkedAuthorizationFailed; an image GET outside them answers 403 AuthorizationFailed."""
        if scopes is None:
            self.readable_scopes = None
            return
        if isinstance(scopes, str) or not all(isinstance(x, str) and x.startswith("/") for x in scopes):
            raise ValueError("readable_scopes must be a list of resource ids starting with '/'")
        self.readable_scopes = tuple(x.rstrip("/").lower() or "/" for x in scopes)

    def can_read(self, resource_id: str) -> bool:
        """Whether the caller may read ``resource_id`` (a role at the id or any scope above it)."""
        if self.readable_scopes is None:
            return True
        rid = resource_id.rstrip("/").lower()
        return any(s == "/" or rid == s or rid.startswith(s + "/") for s in self.readable_scopes)

    def add_image(self, image_id: str) -> None:
        """Register a managed image (``.../images/<name>``) or gallery image version
        (``.../galleries/<g>/images/<i>/versions/<v>``; its image definition then exists too), so
        the image GETs find it."""
        if _IMAGE_ID.match(image_id) is None:
            raise ValueError(f"not a managed image or gallery image (version) id: {image_id!r}")
        with self._lock:
            self._images[image_id.lower()] = image_id
            parent = re.sub(r"/versions/[^/]+$", "", image_id, flags=re.IGNORECASE)
            self._images.setdefault(parent.lower(), parent)

    def images(self) -> list[str]:
        with self._lock:
            return sorted(self._images.values())

    def clear_images(self) -> None:
        """Forget every registered image (tests: each starts from none)."""
        with self._lock:
            self._images.clear()

    def inject_fault(
        self,
        method: str,
        path_regex: str,
        status: int,
        *,
        count: int = 1,
        body: JSON | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """The next ``count`` ARM requests matching METHOD (or "*") and path regex answer ``status``."""
        re.compile(path_regex)
        if body is None:
            code = {429: "TooManyRequests", 409: "Conflict", 500: "InternalServerError"}.get(status, "Fault")
            body = {"error": {"code": code, "message": f"Injected fault {status} (emulator)."}}
        with self._lock:
            self._faults.append([Fault(method.upper(), path_regex, status, body, dict(headers or {})), count])

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def set_instance_health(
        self,
        resource_group: str,
        name: str,
        instance_id: str,
        healthy: bool,
        *,
        vm_health: str | None = None,
    ) -> None:
        """Make the instance's page fail/recover (runtime) and optionally set its vmHealth state."""
        inst = self.instance(resource_group, name, instance_id)
        inst.runtime.set_healthy(healthy)
        with self._lock:
            inst.vm_health = vm_health

    def fail_release(
        self,
        resource_group: str,
        name: str,
        pattern: str,
        *,
        mode: str = "extension",
        stderr: str = "install failed: injected failure",
    ) -> None:
        """Releases whose fileUris / image id match ``pattern`` fail (synthetic runtimes only)."""
        self._get(resource_group, name).rules.add(FailureRule(pattern, mode, stderr))

    def clear_release_failures(self, resource_group: str, name: str) -> None:
        self._get(resource_group, name).rules.clear()

    def requests(
        self,
        method: str | None = None,
        path_contains: str | None = None,
        *,
        path_regex: str | None = None,
        include_polls: bool = False,
    ) -> list[RequestRecord]:
        """The request log, oldest first, filtered by method, substring (case-insensitive) or regex of
        the path. Operation polls are left out unless ``include_polls``. Bodies are parsed JSON, so
        ``[r.body["instanceIds"] for r in emu.requests("POST", "manualupgrade")]`` reads naturally."""
        with self._lock:
            records = list(self._log)
        out = []
        for r in records:
            if method and r.method != method.upper():
                continue
            if path_contains and path_contains.lower() not in r.path.lower():
                continue
            if path_regex and not re.search(path_regex, r.path, re.IGNORECASE):
                continue
            if not include_polls and "/operations/" in r.path.lower():
                continue
            out.append(r)
        return out

    def clear_requests(self) -> None:
        with self._lock:
            self._log.clear()

    def wait_idle(self, timeout: float = 30.0) -> None:
        """Block until no operation is in progress (tests: "let the upgrades finish")."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                busy = any(op.ended is None for op in self._operations.values())
            if not busy:
                return
            time.sleep(0.02)
        raise TimeoutError("operations still in progress")

    def describe(self, resource_group: str, name: str) -> JSON:
        """A compact admin view: every instance's address, state and applied model."""
        scale_set = self._get(resource_group, name)
        with self._lock:
            return {
                "resourceGroup": scale_set.resource_group,
                "name": scale_set.name,
                "id": self.vmss_id(scale_set.resource_group, scale_set.name),
                "orchestrationMode": scale_set.orchestration_mode,
                "upgradeMode": scale_set.upgrade_mode,
                "upgradeSeconds": scale_set.upgrade_seconds,
                "imageId": scale_set.model.image_id,
                "extensions": [e.to_json() for e in scale_set.model.extensions],
                "failureRules": scale_set.rules.as_list(),
                "instances": [
                    {
                        "instanceId": i.instance_id,
                        "address": i.address,
                        "port": getattr(i.runtime, "port", None),
                        "provisioningState": i.provisioning_state,
                        "latestModelApplied": self._latest(scale_set, i),
                        "extensionState": i.extension_state,
                        "upgrades": i.upgrades,
                        "release": getattr(i.runtime, "release", None),
                    }
                    for i in scale_set.instances.values()
                ],
            }

    # -- internals: instances ---------------------------------------------------------------------
    def _latest(self, scale_set: ScaleSet, inst: Instance) -> bool:
        """``latestModelApplied`` under the chosen semantics (``model_applied``); lock held or not."""
        if self.model_applied == "version":
            return inst.applied.version == scale_set.model.version
        return inst.applied.key() == scale_set.model.key()

    def _new_bucket(self) -> TokenBucket | None:
        if self.throttle is None:
            return None
        capacity, per_minute = self.throttle
        return TokenBucket(capacity=capacity, per_minute=per_minute, tokens=capacity)

    def _synthetic_factory(self, rules: FailureRules, serve: bool) -> RuntimeFactory:
        port = self.instance_port

        def factory(address: str, initial: InstanceModel) -> InstanceRuntime:
            return SyntheticRuntime(address, initial, port=port, rules=rules, serve=serve)

        return factory

    def _synthetic_factory_from_admin(self, scale_set: ScaleSet, spec: JSON) -> RuntimeFactory:
        return self._synthetic_factory(scale_set.rules, bool(spec.get("serve", True)))

    def _allocate_address(self) -> str:
        with self._lock:
            while True:
                addr = ipaddress.IPv4Address(self._next_address)
                self._next_address += 1
                last = int(addr) & 0xFF
                if last in (0, 255) or str(addr) == "127.0.0.1" or str(addr) in self._used_addresses:
                    continue
                if not addr.is_loopback:
                    raise RuntimeError(f"address pool exhausted (started at {self._address_base})")
                self._used_addresses.add(str(addr))
                return str(addr)

    def _add_instance(self, scale_set: ScaleSet, *, apply: bool) -> Instance:
        with self._lock:
            instance_id = str(scale_set.next_id)
            scale_set.next_id += 1
            model = scale_set.model
        last_error: OSError | None = None
        for _attempt in range(20):
            address = self._allocate_address()
            runtime = scale_set.runtime_factory(address, model.instance_model())
            try:
                runtime.start()
            except OSError as err:  # someone else holds this address:port; keep it reserved, move on
                last_error = err
                runtime.stop()
                continue
            break
        else:
            raise RuntimeError(f"could not bind an instance address: {last_error}")
        inst = Instance(instance_id, address, runtime, applied=model)
        with self._lock:
            scale_set.instances[instance_id] = inst
            if apply:
                # A new instance runs the current extension as it provisions: "Creating" until done.
                inst.provisioning_state = "Creating"
                inst.updating = True
                inst.extension_state = "transitioning"
        if apply:
            op = self._new_operation("create", scale_set, {instance_id})
            self._submit([(inst, model)], op, reimage=False, delay=0.0)
        return inst

    def _get(self, resource_group: str, name: str) -> ScaleSet:
        with self._lock:
            scale_set = self._scale_sets.get((resource_group.lower(), name.lower()))
        if scale_set is None:
            raise ArmError(
                404,
                "ResourceNotFound",
                f"The Resource '{VMSS_TYPE}/{name}' under resource group '{resource_group}' was not found. "
                "For more details please go to https://aka.ms/ARMResourceNotFoundFix",
            )
        return scale_set

    @staticmethod
    def _get_instance(scale_set: ScaleSet, instance_id: str) -> Instance:
        inst = scale_set.instances.get(instance_id)
        if inst is None:
            raise ArmError(
                404,
                "NotFound",
                f"The entity was not found in this Azure location. (instance '{instance_id}' of '{scale_set.name}')",
            )
        return inst

    def _new_operation(self, kind: str, scale_set: ScaleSet, pending: set[str]) -> Operation:
        op = Operation(
            op_id=str(uuid.uuid4()), kind=kind, location=scale_set.location, started=_now(), pending=set(pending)
        )
        with self._lock:
            self._operations[op.op_id] = op
            if not op.pending:
                op.ended = _now()
        return op

    def _submit(self, jobs: list[tuple[Instance, Model]], op: Operation, *, reimage: bool, delay: float) -> None:
        """Run the applies of one operation after ``delay`` seconds, in parallel on the pool.

        The delay is waited once per operation on its own small thread (not per instance on a pool
        worker), so upgrading 500 instances takes about ``delay``, as a parallel upgrade in Azure does,
        and the pool's workers only do real work (nginx runtimes run scripts there)."""

        def release() -> None:
            # Waits on the stop event so emu.stop() never sits through a long upgrade_seconds.
            if delay > 0 and self._stopping.wait(delay):
                return
            for inst, model in jobs:
                if self._stopping.is_set() or self._pool is None:
                    return
                try:
                    self._pool.submit(self._run_upgrade, inst, model, op, reimage)
                except RuntimeError:  # the pool shut down under us: stop() is running
                    return

        if not jobs:
            return
        timer = threading.Thread(target=release, name=f"arm-op-{op.op_id[:8]}", daemon=True)
        with self._lock:
            self._timers = [t for t in self._timers if t.is_alive()] + [timer]
        timer.start()

    def _run_upgrade(self, inst: Instance, model: Model, op: Operation, reimage: bool) -> None:
        try:
            target = model.instance_model()
            result = inst.runtime.reimage(target) if reimage else inst.runtime.apply(target)
        except Exception as err:  # a broken runtime is an extension failure, not a dead worker
            result = ExtensionResult(succeeded=False, exit_code=None, stderr=repr(err), message=str(err))
        with self._lock:
            inst.applied = model
            inst.updating = False
            inst.extension_result = result
            inst.extension_state = "succeeded" if result.succeeded else "failed"
            inst.provisioning_state = "Succeeded" if result.succeeded else "Failed"
            inst.changed = _now()
            op.pending.discard(inst.instance_id)
            if not result.succeeded:
                op.failures.append(inst.instance_id)
            if not op.pending and op.ended is None:
                op.ended = _now()

    def _start_upgrades(self, scale_set: ScaleSet, ids: list[str], *, reimage: bool) -> Operation:
        """Mark the instances Updating now and hand the applies to workers (see module docstring)."""
        with self._lock:
            insts = [self._get_instance(scale_set, i) for i in ids]
            model = scale_set.model
            busy = sorted((inst.instance_id for inst in insts if inst.updating), key=int)
            if busy and not reimage and self.upgrade_while_updating == "conflict":
                # The "conflict" alternative (undocumented in Azure, see docs/emulator.md): the whole
                # call is refused and nothing starts.
                raise ArmError(
                    409,
                    "OperationNotAllowed",
                    f"Operation 'manualupgrade' is not allowed on VM instance(s) {', '.join(busy)} of "
                    f"'{scale_set.name}' since another operation is in progress on them.",
                )
            to_run: list[tuple[Instance, Model]] = []
            for inst in insts:
                if inst.updating:
                    continue  # already being upgraded: no second apply
                if not reimage and self._latest(scale_set, inst):
                    continue  # already latest: a no-op
                inst.updating = True
                inst.upgrades += 1
                inst.provisioning_state = "Updating"
                inst.extension_state = "transitioning"
                inst.changed = _now()
                to_run.append((inst, inst.applied if reimage else model))
            op = self._new_operation(
                "reimage" if reimage else "manualupgrade", scale_set, {inst.instance_id for inst, _ in to_run}
            )
            delay = scale_set.upgrade_seconds
        self._submit(to_run, op, reimage=reimage, delay=delay)
        return op

    # -- request handling -------------------------------------------------------------------------
    def handle(
        self, method: str, raw_path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], Any]:
        """Route one request; returns (status, headers, JSON body or None). Used by the HTTP handler."""
        split = urlsplit(raw_path)
        path = split.path
        query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        parsed: Any = None
        status: int = 500
        out_headers: dict[str, str] = {}
        out_body: Any = None
        try:
            if headers.get("authorization", "") != f"Bearer {self.token}":
                raise ArmError(
                    401,
                    "AuthenticationFailed",
                    "Authentication failed. The 'Authorization' header is missing or its bearer token is invalid.",
                )
            if body:
                try:
                    parsed = json.loads(body)
                except ValueError as err:
                    raise ArmError(400, "InvalidRequestContent", f"The request content was invalid: {err}") from err
            if path.startswith("/_admin/"):
                try:
                    status, out_body = self._admin(method, path, query, parsed)
                except (KeyError, ValueError, TypeError) as err:  # a malformed admin request
                    raise ArmError(400, "InvalidParameter", f"Bad admin request: {err!r}") from err
                return status, {}, out_body
            self._check_fault(method, path)
            status, out_headers, out_body = self._arm(method, path, query, parsed)
            return status, out_headers, out_body
        except ArmError as err:
            status, out_headers, out_body = err.status, err.headers, err.body()
            return status, out_headers, out_body
        except Exception as err:  # a bug in the emulator: answer 500 like ARM, keep serving
            status, out_body = 500, {"error": {"code": "InternalServerError", "message": repr(err)}}
            return status, {}, out_body
        finally:
            if not path.startswith("/_admin/"):
                record = RequestRecord(method, path, query, _redact(parsed), status, _now())
                with self._lock:
                    self._log.append(record)
                    if len(self._log) > MAX_LOG:  # a long demo must not grow without bound
                        del self._log[: MAX_LOG // 10]

    def _check_fault(self, method: str, path: str) -> None:
        with self._lock:
            for entry in self._faults:
                fault, remaining = entry
                if remaining <= 0:
                    continue
                if fault.method not in ("*", method.upper()) or not re.search(fault.path_regex, path):
                    continue
                entry[1] = remaining - 1
                self._faults = [f for f in self._faults if f[1] > 0]
                headers = dict(fault.headers)
                if fault.status == 429 and "Retry-After" not in headers:
                    headers["Retry-After"] = "1"
                raise ArmError(fault.status, "Fault", "injected fault", headers, body=fault.body)

    def _throttle(self, scale_set: ScaleSet) -> None:
        with self._lock:
            wait = scale_set.bucket.take() if scale_set.bucket is not None else 0.0
        if wait > 0:
            raise ArmError(
                429,
                "OperationNotAllowed",
                "The number of requests for this scale set's model/upgrade operations exceeded the "
                f"allowed limit (bucket {self.throttle}). Retry after {math.ceil(wait)} seconds.",
                {"Retry-After": str(max(1, math.ceil(wait)))},
            )

    def _lro_headers(self, op: Operation) -> dict[str, str]:
        base = f"{self.url}/subscriptions/{self.subscription_id}/providers/Microsoft.Compute/locations/{op.location}"
        status_url = f"{base}/operations/{op.op_id}?api-version={API_VERSION}"
        headers = {"Azure-AsyncOperation": status_url, "Location": f"{status_url}&monitor=true"}
        headers.update(self._retry_after_headers())
        return headers

    def _retry_after_headers(self) -> dict[str, str]:
        if self.retry_after >= 1:
            return {"Retry-After": str(int(math.ceil(self.retry_after)))}
        return {"retry-after-ms": str(max(1, int(self.retry_after * 1000)))}

    _VMSS = re.compile(
        r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/Microsoft\.Compute/"
        r"virtualMachineScaleSets/(?P<name>[^/]+)(?P<rest>/.*)?$",
        re.IGNORECASE,
    )
    _OPERATION = re.compile(
        r"^/subscriptions/(?P<sub>[^/]+)/providers/Microsoft\.Compute/locations/[^/]+/operations/(?P<op>[^/]+)$",
        re.IGNORECASE,
    )

    def _arm(self, method: str, path: str, query: dict[str, str], body: Any) -> tuple[int, dict[str, str], Any]:
        m = self._OPERATION.match(path)
        if m and method == "GET":
            return self._operation_status(m["op"], monitor="monitor" in query)
        m = _IMAGE_ID.match(path)
        if m and method == "GET":
            if "api-version" not in query:
                raise ArmError(
                    400,
                    "MissingApiVersionParameter",
                    "The api-version query parameter (?api-version=) is required for all requests.",
                )
            return 200, {}, self._get_image(path.rstrip("/"), m)
        m = self._VMSS.match(path)
        if not m:
            raise ArmError(404, "NotFound", f"No route for {method} {path} in the ARM emulator.")
        if m["sub"].lower() != self.subscription_id.lower():
            raise ArmError(404, "SubscriptionNotFound", f"The subscription '{m['sub']}' could not be found.")
        if "api-version" not in query:
            raise ArmError(
                400,
                "MissingApiVersionParameter",
                "The api-version query parameter (?api-version=) is required for all requests.",
            )
        rg, name, rest = m["rg"], m["name"], (m["rest"] or "").rstrip("/")
        rest_l = rest.lower()
        if rest == "" and method == "PUT":
            return self._put_vmss(rg, name, body or {})
        scale_set = self._get(rg, name)
        if rest == "":
            if method == "GET":
                return 200, {}, self._vmss_json(scale_set)
            if method == "PATCH":
                return self._patch_vmss(scale_set, body or {})
        elif rest_l == "/instanceview" and method == "GET":
            return 200, {}, self._vmss_instance_view(scale_set)
        elif rest_l == "/manualupgrade" and method == "POST":
            ids = (body or {}).get("instanceIds")
            if not isinstance(ids, list) or not ids:
                raise ArmError(400, "InvalidParameter", "instanceIds is required for manualupgrade.")
            self._throttle(scale_set)
            op = self._start_upgrades(scale_set, [str(i) for i in ids], reimage=False)
            return 202, self._lro_headers(op), None
        elif rest_l == "/reimage" and method == "POST":
            ids = (body or {}).get("instanceIds") or list(scale_set.instances)
            self._throttle(scale_set)
            op = self._start_upgrades(scale_set, [str(i) for i in ids], reimage=True)
            return 202, self._lro_headers(op), None
        elif rest_l == "/extensions" and method == "GET":
            vmss_id = self.vmss_id(scale_set.resource_group, scale_set.name)
            with self._lock:
                kv = self.key_vault_reference_in_answers
                value = [e.to_json(vmss_id, key_vault_reference=kv) for e in scale_set.model.extensions]
            return 200, {}, {"value": value}
        elif rest_l.startswith("/extensions/") and rest.count("/") == 2:
            return self._extension(method, scale_set, rest.split("/")[2], body)
        elif rest_l == "/virtualmachines" and method == "GET":
            return 200, {}, self._list_vms(scale_set, path, query)
        elif rest_l.startswith("/virtualmachines/"):
            parts = rest.split("/")[2:]
            inst = self._get_instance(scale_set, parts[0])
            if len(parts) == 1 and method == "GET":
                expand = query.get("$expand", "")
                return 200, {}, self._vm_json(scale_set, inst, instance_view=expand == "instanceView")
            if len(parts) == 2 and parts[1].lower() == "instanceview" and method == "GET":
                with self._lock:
                    return 200, {}, self._vm_instance_view(scale_set, inst)
            if len(parts) == 2 and parts[1].lower() == "reimage" and method == "POST":
                self._throttle(scale_set)
                op = self._start_upgrades(scale_set, [inst.instance_id], reimage=True)
                return 202, self._lro_headers(op), None
        elif rest_l == "/networkinterfaces" and method == "GET":
            return 200, {}, self._list_nics(scale_set, path, query)
        raise ArmError(404, "NotFound", f"No route for {method} {path} in the ARM emulator.")

    def _operation_status(self, op_id: str, *, monitor: bool) -> tuple[int, dict[str, str], Any]:
        with self._lock:
            op = self._operations.get(op_id)
            if op is None:
                raise ArmError(404, "NotFound", f"Operation '{op_id}' was not found.")
            status = op.status
            if monitor:
                if op.ended is None:
                    return 202, self._lro_headers(op), None
                if op.failures:
                    # ARMPolling never gets here (the status resource already said Failed); a
                    # Location-only client sees the failure as an error answer.
                    raise ArmError(
                        409,
                        "VMExtensionProvisioningError",
                        f"Extension failed on instance(s) {', '.join(sorted(op.failures))}.",
                    )
                return 200, {}, op.result() if op.result else None
            doc: JSON = {"startTime": op.started.isoformat(), "status": status, "name": op.op_id}
            if op.ended is not None:
                doc["endTime"] = op.ended.isoformat()
            if status == "Failed":
                doc["error"] = {
                    "code": "VMExtensionProvisioningError",
                    "message": f"VM has reported a failure when processing extension on instance(s) "
                    f"{', '.join(sorted(op.failures))}.",
                }
            headers = self._retry_after_headers() if op.ended is None else {}
            return 200, headers, doc

    # -- images (read only) -------------------------------------------------------------------------
    @staticmethod
    def _image_read_action(m: re.Match[str]) -> str:
        if m["image"]:
            return "Microsoft.Compute/images/read"
        if m["version"]:
            return "Microsoft.Compute/galleries/images/versions/read"
        return "Microsoft.Compute/galleries/images/read"

    def _get_image(self, image_id: str, m: re.Match[str]) -> JSON:
        """Images_Get, GalleryImages_Get, GalleryImageVersions_Get: minimal bodies in the official
        shapes (azure-rest-api-specs examples Image_Get.json, GalleryImage_Get.json,
        GalleryImageVersion_Get.json; see docs/emulator.md). RBAC comes first, as at the ARM gateway:
        an unreadable image answers 403 whether it exists or not."""
        if not self.can_read(image_id):
            # Shape: MicrosoftDocs/azure-docs articles/role-based-access-control/troubleshooting.md
            raise ArmError(
                403,
                "AuthorizationFailed",
                f"The client '{self.caller_id}' with object id '{self.caller_id}' does not have authorization "
                f"to perform action '{self._image_read_action(m)}' over scope '{image_id}' or the scope is "
                "invalid. If access was recently granted, please refresh your credentials.",
            )
        with self._lock:
            known = self._images.get(image_id.lower())
        if known is None:
            kind = self._image_read_action(m).rsplit("/", 1)[0]
            raise ArmError(
                404,
                "ResourceNotFound",
                f"The Resource '{kind}/{image_id.rsplit('/', 1)[-1]}' under resource group '{m['rg']}' was not "
                "found. For more details please go to https://aka.ms/ARMResourceNotFoundFix",
            )
        name = known.rsplit("/", 1)[-1]
        if m["image"]:
            return {
                "id": known,
                "name": name,
                "type": "Microsoft.Compute/images",
                "location": "westeurope",
                "properties": {
                    "storageProfile": {"osDisk": {"osType": "Linux", "osState": "Generalized"}},
                    "provisioningState": "Succeeded",
                },
            }
        if m["version"]:
            return {
                "id": known,
                "name": name,
                "type": "Microsoft.Compute/galleries/images/versions",
                "location": "westeurope",
                "properties": {
                    "storageProfile": {"osDiskImage": {"sizeInGB": 30, "hostCaching": "ReadWrite"}},
                    "provisioningState": "Succeeded",
                },
            }
        return {
            "id": known,
            "name": name,
            "type": "Microsoft.Compute/galleries/images",
            "location": "westeurope",
            "properties": {
                "osType": "Linux",
                "osState": "Generalized",
                "identifier": {"publisher": "vmss-canary", "offer": m["gallery"], "sku": name},
                "provisioningState": "Succeeded",
            },
        }

    def _check_linked_image(self, scale_set_id: str, body: JSON) -> None:
        """ARM's linked authorization: a model write referencing an image the caller cannot read is
        refused before it reaches Compute (403 LinkedAuthorizationFailed; shape: see docs/emulator.md)."""
        vmp = (body.get("properties") or {}).get("virtualMachineProfile") or {}
        image_id = ((vmp.get("storageProfile") or {}).get("imageReference") or {}).get("id")
        if not image_id or self.can_read(str(image_id)):
            return
        m = _IMAGE_ID.match(str(image_id))
        action = self._image_read_action(m) if m else "Microsoft.Compute/images/read"
        raise ArmError(
            403,
            "LinkedAuthorizationFailed",
            f"The client '{self.caller_id}' with object id '{self.caller_id}' has permission to perform action "
            f"'Microsoft.Compute/virtualMachineScaleSets/write' on scope '{scale_set_id}'; however, it does not "
            f"have permission to perform action '{action}' on the linked scope(s) '{image_id}' or the linked "
            "scope(s) are invalid.",
        )

    # -- scale set model --------------------------------------------------------------------------
    def _put_vmss(self, rg: str, name: str, body: JSON) -> tuple[int, dict[str, str], Any]:
        self._check_linked_image(self.vmss_id(rg, name), body)
        props = body.get("properties") or {}
        try:
            scale_set = self._get(rg, name)
        except ArmError:
            scale_set = None
        if scale_set is None:
            # Create through ARM: a synthetic scale set with sku.capacity instances.
            vmp = props.get("virtualMachineProfile") or {}
            created = self.create_scale_set(
                rg,
                name,
                int((body.get("sku") or {}).get("capacity") or 0),
                location=body.get("location") or "westeurope",
                orchestration_mode=props.get("orchestrationMode") or "Uniform",
                upgrade_mode=(props.get("upgradePolicy") or {}).get("mode") or "Manual",
                image_id=((vmp.get("storageProfile") or {}).get("imageReference") or {}).get("id"),
            )
            self._apply_model_patch(created, body, replace=True)
            with self._lock:
                for inst in created.instances.values():
                    inst.applied = created.model
            op = self._new_operation("model", created, set())
            op.result = lambda: self._vmss_json(created)
            return 201, self._lro_headers(op), self._vmss_json(created)
        self._throttle(scale_set)
        self._apply_model_patch(scale_set, body, replace=True)
        op = self._new_operation("model", scale_set, set())
        op.result = lambda: self._vmss_json(scale_set)
        return 200, self._lro_headers(op), self._vmss_json(scale_set)

    def _patch_vmss(self, scale_set: ScaleSet, body: JSON) -> tuple[int, dict[str, str], Any]:
        self._check_linked_image(self.vmss_id(scale_set.resource_group, scale_set.name), body)
        self._throttle(scale_set)
        self._apply_model_patch(scale_set, body, replace=False)
        op = self._new_operation("model", scale_set, set())
        op.result = lambda: self._vmss_json(scale_set)
        return 200, self._lro_headers(op), self._vmss_json(scale_set)

    def _apply_model_patch(self, scale_set: ScaleSet, body: JSON, *, replace: bool) -> None:
        """Merge the model parts we keep from a PUT/PATCH body (others are accepted and ignored)."""
        props = body.get("properties") or {}
        vmp = props.get("virtualMachineProfile") or {}
        add = 0
        with self._lock:
            image_id = scale_set.model.image_id
            image_ref = (vmp.get("storageProfile") or {}).get("imageReference")
            if image_ref is not None:
                image_id = image_ref.get("id") or (None if replace else image_id)
            extensions = scale_set.model.extensions
            ext_profile = vmp.get("extensionProfile")
            if ext_profile is not None and ext_profile.get("extensions") is not None:
                old = {e.name.lower(): e for e in extensions}
                extensions = tuple(
                    self._extension_from_body(
                        e.get("name", ""), e, old.get(str(e.get("name", "")).lower()), replace=False
                    )
                    for e in ext_profile["extensions"]
                )
            mode = (props.get("upgradePolicy") or {}).get("mode")
            if mode:
                scale_set.upgrade_mode = mode
            scale_set.model = Model(image_id, extensions, scale_set.model.version + 1)
            capacity = (body.get("sku") or {}).get("capacity")
            if capacity is not None and int(capacity) > len(scale_set.instances):
                add = int(capacity) - len(scale_set.instances)
        if add:
            self.scale_out(scale_set.resource_group, scale_set.name, add)

    @staticmethod
    def _extension_from_body(name: str, body: JSON, old: Extension | None, *, replace: bool) -> Extension:
        props = body.get("properties") or {}
        # PATCH merges into the existing extension; PUT replaces it.
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

    def _extension(self, method: str, scale_set: ScaleSet, ext_name: str, body: Any) -> tuple[int, dict[str, str], Any]:
        vmss_id = self.vmss_id(scale_set.resource_group, scale_set.name)
        with self._lock:
            existing = next((e for e in scale_set.model.extensions if e.name.lower() == ext_name.lower()), None)
        if method == "GET":
            if existing is None:
                raise ArmError(404, "NotFound", f"Extension '{ext_name}' of '{scale_set.name}' was not found.")
            return 200, {}, existing.to_json(vmss_id, key_vault_reference=self.key_vault_reference_in_answers)
        if method not in ("PUT", "PATCH"):
            raise ArmError(405, "MethodNotAllowed", f"{method} is not supported on extensions.")
        if method == "PATCH" and existing is None:
            raise ArmError(404, "NotFound", f"Extension '{ext_name}' of '{scale_set.name}' was not found.")
        self._throttle(scale_set)
        new = self._extension_from_body(ext_name, body or {}, existing, replace=method == "PUT")
        if not (new.publisher and new.type and new.type_handler_version):
            raise ArmError(400, "InvalidParameter", "publisher, type and typeHandlerVersion are required.")
        with self._lock:
            exts = list(scale_set.model.extensions)
            idx = next((i for i, e in enumerate(exts) if e.name.lower() == ext_name.lower()), None)
            if idx is None:
                exts.append(new)
            else:
                exts[idx] = new
            scale_set.model = Model(scale_set.model.image_id, tuple(exts), scale_set.model.version + 1)
        op = self._new_operation("model", scale_set, set())
        kv = self.key_vault_reference_in_answers
        op.result = lambda: new.to_json(vmss_id, key_vault_reference=kv)
        return (201 if existing is None else 200), self._lro_headers(op), new.to_json(vmss_id, key_vault_reference=kv)

    # -- JSON views -------------------------------------------------------------------------------
    def _image_reference(self, image_id: str | None) -> JSON:
        return {"id": image_id} if image_id else dict(DEFAULT_IMAGE)

    def _subnet_id(self, scale_set: ScaleSet) -> str:
        return (
            f"/subscriptions/{self.subscription_id}/resourceGroups/{scale_set.resource_group}/providers/"
            f"Microsoft.Network/virtualNetworks/{scale_set.name}-vnet/subnets/default"
        )

    def _vmss_json(self, scale_set: ScaleSet) -> JSON:
        vmss_id = self.vmss_id(scale_set.resource_group, scale_set.name)
        with self._lock:
            model = scale_set.model
            capacity = len(scale_set.instances)
        vm_profile: JSON = {
            "osProfile": {
                "computerNamePrefix": scale_set.name[:9],
                "adminUsername": "azureuser",
                "linuxConfiguration": {"disablePasswordAuthentication": True},
            },
            "storageProfile": {
                "imageReference": self._image_reference(model.image_id),
                "osDisk": {
                    "createOption": "FromImage",
                    "caching": "ReadWrite",
                    "managedDisk": {"storageAccountType": "Standard_LRS"},
                },
            },
            "networkProfile": {
                "networkInterfaceConfigurations": [
                    {
                        "name": "nic",
                        "properties": {
                            "primary": True,
                            "ipConfigurations": [
                                {
                                    "name": "ipconfig",
                                    "properties": {"subnet": {"id": self._subnet_id(scale_set)}},
                                }
                            ],
                        },
                    }
                ],
            },
        }
        if model.extensions:
            vm_profile["extensionProfile"] = {
                "extensions": [
                    e.to_json(vmss_id, in_profile=True, key_vault_reference=self.key_vault_reference_in_answers)
                    for e in model.extensions
                ]
            }
        return {
            "id": vmss_id,
            "name": scale_set.name,
            "type": VMSS_TYPE,
            "location": scale_set.location,
            "sku": {"name": scale_set.sku_name, "tier": "Standard", "capacity": capacity},
            "properties": {
                "singlePlacementGroup": True,
                "orchestrationMode": scale_set.orchestration_mode,
                "upgradePolicy": {"mode": scale_set.upgrade_mode},
                "virtualMachineProfile": vm_profile,
                "provisioningState": "Succeeded",
                "overprovision": False,
                "uniqueId": scale_set.unique_id,
                "timeCreated": scale_set.created.isoformat(),
            },
        }

    def _vmss_instance_view(self, scale_set: ScaleSet) -> JSON:
        with self._lock:
            states: dict[str, int] = {}
            for inst in scale_set.instances.values():
                code = f"ProvisioningState/{inst.provisioning_state.lower()}"
                states[code] = states.get(code, 0) + 1
            ext_counts: dict[str, int] = {}
            for inst in scale_set.instances.values():
                ext_counts[inst.extension_state] = ext_counts.get(inst.extension_state, 0) + 1
            exts = scale_set.model.extensions
        return {
            "virtualMachine": {"statusesSummary": [{"code": c, "count": n} for c, n in sorted(states.items())]},
            "extensions": [
                {
                    "name": e.name,
                    "statusesSummary": [
                        {"code": f"ProvisioningState/{s}", "count": n} for s, n in sorted(ext_counts.items())
                    ],
                }
                for e in exts
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

    def _vm_instance_view(self, scale_set: ScaleSet, inst: Instance) -> JSON:
        """Called with the lock held."""
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
        view: JSON = {
            "platformUpdateDomain": int(inst.instance_id) % 5,
            "platformFaultDomain": int(inst.instance_id) % 3,
            "computerName": f"{scale_set.name[:9]}{int(inst.instance_id):06x}",
            "osName": "ubuntu",
            "osVersion": "24.04",
            "vmAgent": {
                "vmAgentVersion": "2.12.0.2",
                "statuses": [
                    {
                        "code": "ProvisioningState/succeeded",
                        "level": "Info",
                        "displayStatus": "Ready",
                        "message": "Guest Agent is running",
                        "time": inst.changed.isoformat(),
                    }
                ],
            },
            "statuses": [prov_status, {"code": "PowerState/running", "level": "Info", "displayStatus": "VM running"}],
        }
        applied_ext = next((e for e in inst.applied.extensions if e.type == "CustomScript"), None)
        ext = applied_ext or (inst.applied.extensions[0] if inst.applied.extensions else None)
        if ext is not None:
            view["extensions"] = [
                {
                    "name": ext.name,
                    "type": f"{ext.publisher}.{ext.type}",
                    "typeHandlerVersion": ext.type_handler_version,
                    "statuses": [self._extension_status(inst)],
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

    @staticmethod
    def _extension_status(inst: Instance) -> JSON:
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

    def _nic_id(self, scale_set: ScaleSet, inst: Instance) -> str:
        vmss_id = self.vmss_id(scale_set.resource_group, scale_set.name)
        return f"{vmss_id}/virtualMachines/{inst.instance_id}/networkInterfaces/nic"

    def _vm_json(self, scale_set: ScaleSet, inst: Instance, *, instance_view: bool) -> JSON:
        vmss_id = self.vmss_id(scale_set.resource_group, scale_set.name)
        with self._lock:
            latest = self._latest(scale_set, inst)
            props: JSON = {
                "latestModelApplied": latest,
                "vmId": inst.vm_id,
                "hardwareProfile": {"vmSize": scale_set.sku_name},
                "storageProfile": {
                    "imageReference": self._image_reference(inst.applied.image_id),
                    "osDisk": {
                        "osType": "Linux",
                        "name": f"{scale_set.name}_{inst.instance_id}_osdisk",
                        "createOption": "FromImage",
                        "caching": "ReadWrite",
                    },
                },
                "osProfile": {
                    "computerName": f"{scale_set.name[:9]}{int(inst.instance_id):06x}",
                    "adminUsername": "azureuser",
                },
                "networkProfile": {"networkInterfaces": [{"id": self._nic_id(scale_set, inst)}]},
                "provisioningState": inst.provisioning_state,
            }
            if instance_view:
                props["instanceView"] = self._vm_instance_view(scale_set, inst)
            resources = [
                {
                    "id": f"{vmss_id}/virtualMachines/{inst.instance_id}/extensions/{e.name}",
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
            "id": f"{vmss_id}/virtualMachines/{inst.instance_id}",
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

    def _page(self, items: list[Any], path: str, query: dict[str, str]) -> JSON:
        try:
            skip = int(query.get("$skiptoken", "0"))
        except ValueError as err:
            raise ArmError(400, "InvalidParameter", "Invalid $skiptoken.") from err
        size = self.page_size
        out: JSON = {"value": items[skip : skip + size]}
        if skip + size < len(items):
            q = {k: v for k, v in query.items() if k != "$skiptoken"}
            q["$skiptoken"] = str(skip + size)
            out["nextLink"] = f"{self.url}{quote(path)}?{urlencode(q, safe='$/,')}"
        return out

    _FILTERS = {
        "properties/latestmodelapplied eq true": lambda vm: vm["properties"]["latestModelApplied"] is True,
        "properties/latestmodelapplied eq false": lambda vm: vm["properties"]["latestModelApplied"] is False,
        "startswith(instanceview/statuses/code, 'powerstate') eq true": lambda vm: True,
    }

    def _list_vms(self, scale_set: ScaleSet, path: str, query: dict[str, str]) -> JSON:
        expand = query.get("$expand", "")
        select = query.get("$select", "")
        if expand and expand != "instanceView":
            raise ArmError(400, "InvalidParameter", f"The value '{expand}' of $expand is not supported.")
        if select and select not in ("instanceView", "instanceView/statuses"):
            raise ArmError(400, "InvalidParameter", f"The value '{select}' of $select is not supported.")
        flt = query.get("$filter", "")
        predicate: Callable[[JSON], bool] = lambda vm: True  # noqa: E731
        if flt:
            norm = re.sub(r"\s+", " ", flt.strip().lower())
            if norm not in self._FILTERS:
                raise ArmError(400, "InvalidParameter", f"The $filter '{flt}' is not supported.")
            predicate = self._FILTERS[norm]
        with self._lock:
            insts = sorted(scale_set.instances.values(), key=lambda i: int(i.instance_id))
        vms = [self._vm_json(scale_set, i, instance_view=bool(expand or select)) for i in insts]
        if select == "instanceView/statuses":
            for vm in vms:
                view = vm["properties"]["instanceView"]
                vm["properties"]["instanceView"] = {"statuses": view["statuses"]}
        return self._page([vm for vm in vms if predicate(vm)], path, query)

    def _list_nics(self, scale_set: ScaleSet, path: str, query: dict[str, str]) -> JSON:
        vmss_id = self.vmss_id(scale_set.resource_group, scale_set.name)
        with self._lock:
            insts = sorted(scale_set.instances.values(), key=lambda i: int(i.instance_id))
        nics = []
        for inst in insts:
            nic_id = self._nic_id(scale_set, inst)
            nics.append(
                {
                    "id": nic_id,
                    "name": "nic",
                    "location": scale_set.location,
                    "properties": {
                        "provisioningState": "Succeeded",
                        "primary": True,
                        "macAddress": "00-0D-3A-" + "-".join(f"{int(x):02X}" for x in inst.address.split(".")[1:]),
                        "virtualMachine": {"id": f"{vmss_id}/virtualMachines/{inst.instance_id}"},
                        "ipConfigurations": [
                            {
                                "id": f"{nic_id}/ipConfigurations/ipconfig",
                                "name": "ipconfig",
                                "properties": {
                                    "privateIPAddress": inst.address,
                                    "privateIPAllocationMethod": "Dynamic",
                                    "privateIPAddressVersion": "IPv4",
                                    "primary": True,
                                    "provisioningState": "Succeeded",
                                    "subnet": {"id": self._subnet_id(scale_set)},
                                },
                            }
                        ],
                    },
                }
            )
        return self._page(nics, path, query)

    # -- admin HTTP API ---------------------------------------------------------------------------
    def _admin(self, method: str, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        body = body or {}
        parts = [p for p in path.split("/") if p][1:]  # drop "_admin"
        if parts == ["scalesets"] and method == "POST":
            return self._admin_create(body)
        if parts == ["settings"] and method == "POST":
            if "page_size" in body:
                self.set_page_size(int(body["page_size"]))
            if "retry_after" in body or "upgrade_seconds" in body:
                self.set_timings(retry_after=body.get("retry_after"), upgrade_seconds=body.get("upgrade_seconds"))
            if "throttle" in body:
                t = body["throttle"]
                self.set_throttling(
                    None if t is None else float(t.get("capacity", 12)),
                    4.0 if t is None else float(t.get("per_minute", 4)),
                )
            if "model_applied" in body or "upgrade_while_updating" in body:
                self.set_semantics(
                    model_applied=body.get("model_applied"), upgrade_while_updating=body.get("upgrade_while_updating")
                )
            if "readable_scopes" in body:
                self.set_readable_scopes(body["readable_scopes"])
            return 200, self._admin_settings()
        if parts == ["settings"] and method == "GET":
            return 200, self._admin_settings()
        if parts == ["faults"] and method == "POST":
            self.inject_fault(
                body.get("method", "*"),
                body["path_regex"],
                int(body["status"]),
                count=int(body.get("count", 1)),
                body=body.get("body"),
                headers=body.get("headers"),
            )
            return 201, {"faults": self._faults_json()}
        if parts == ["faults"] and method == "DELETE":
            self.clear_faults()
            return 200, {"faults": []}
        if parts == ["faults"] and method == "GET":
            return 200, {"faults": self._faults_json()}
        if parts == ["requests"] and method == "GET":
            records = self.requests(
                query.get("method"),
                query.get("path_contains"),
                path_regex=query.get("path_regex"),
                include_polls=query.get("include_polls") == "true",
            )
            return 200, {"requests": [r.to_json() for r in records]}
        if parts == ["requests"] and method == "DELETE":
            self.clear_requests()
            return 200, {"requests": []}
        if parts == ["images"] and method == "POST":
            self.add_image(str(body["id"]))
            return 201, {"images": self.images()}
        if parts == ["images"] and method == "GET":
            return 200, {"images": self.images()}
        if parts == ["images"] and method == "DELETE":
            self.clear_images()
            return 200, {"images": []}
        if parts == ["idle"] and method == "POST":
            self.wait_idle(float(body.get("timeout", 30)))
            return 200, {}
        if len(parts) >= 3 and parts[0] == "scalesets":
            rg, name, rest = parts[1], parts[2], parts[3:]
            if not rest and method == "GET":
                return 200, self.describe(rg, name)
            if not rest and method == "DELETE":
                self._get(rg, name)
                self.delete_scale_set(rg, name)
                return 200, {}
            if rest == ["scale"] and method == "POST":
                return 200, {"added": self.scale_out(rg, name, int(body.get("count", 1)))}
            if rest == ["timings"] and method == "POST":
                self.set_timings(rg, name, upgrade_seconds=body.get("upgrade_seconds"))
                return 200, self.describe(rg, name)
            if rest == ["release-failures"] and method == "POST":
                self.fail_release(
                    rg,
                    name,
                    body["pattern"],
                    mode=body.get("mode", "extension"),
                    stderr=body.get("stderr", "install failed: injected failure"),
                )
                return 200, self.describe(rg, name)
            if rest == ["release-failures"] and method == "DELETE":
                self.clear_release_failures(rg, name)
                return 200, self.describe(rg, name)
            if len(rest) == 3 and rest[0] == "instances" and rest[2] == "health" and method == "POST":
                self.set_instance_health(
                    rg, name, rest[1], bool(body.get("healthy", True)), vm_health=body.get("vm_health")
                )
                return 200, self.describe(rg, name)
        raise ArmError(404, "NotFound", f"No admin route for {method} {path}.")

    def _admin_create(self, body: JSON) -> tuple[int, Any]:
        ext = body.get("extension")
        kind = body.get("runtime", "synthetic")
        if kind not in self.runtime_kinds:
            raise ArmError(
                400, "InvalidParameter", f"Unknown runtime kind {kind!r}; known: {sorted(self.runtime_kinds)}"
            )
        holder: dict[str, ScaleSet] = {}
        builder = self.runtime_kinds[kind]

        def lazy_factory(address: str, initial: InstanceModel) -> InstanceRuntime:
            # The builder needs the scale set (its failure rules), which exists only once created.
            return builder(holder["ss"], body)(address, initial)

        rg, name = body["resource_group"], body["name"]
        try:
            scale_set = self.create_scale_set(
                rg,
                name,
                0,
                location=body.get("location", "westeurope"),
                orchestration_mode=body.get("orchestration_mode", "Uniform"),
                upgrade_mode=body.get("upgrade_mode", "Manual"),
                image_id=body.get("image_id"),
                extension_settings=None if ext is None else ext.get("settings", {}),
                extension_protected_settings=None if ext is None else ext.get("protected_settings"),
                extension_name="CustomScript" if ext is None else ext.get("name", "CustomScript"),
                extension_properties=None if ext is None else ext.get("properties"),
                upgrade_seconds=body.get("upgrade_seconds"),
                runtime_factory=lazy_factory,
            )
        except KeyError as err:
            raise ArmError(400, "InvalidParameter", f"missing {err}") from err
        holder["ss"] = scale_set
        for _ in range(int(body.get("instances", 3))):
            self._add_instance(scale_set, apply=False)
        return 201, self.describe(rg, name)

    def _admin_settings(self) -> JSON:
        return {
            "page_size": self.page_size,
            "retry_after": self.retry_after,
            "upgrade_seconds": self.default_upgrade_seconds,
            "throttle": None
            if self.throttle is None
            else {"capacity": self.throttle[0], "per_minute": self.throttle[1]},
            "model_applied": self.model_applied,
            "upgrade_while_updating": self.upgrade_while_updating,
            "readable_scopes": None if self.readable_scopes is None else list(self.readable_scopes),
        }

    def _faults_json(self) -> list[JSON]:
        with self._lock:
            return [
                {"method": f.method, "path_regex": f.path_regex, "status": f.status, "remaining": n}
                for f, n in self._faults
            ]


# ----------------------------------------------------------------------------------------------
# HTTP plumbing
# ----------------------------------------------------------------------------------------------


class _ArmHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the SDK's connection pool reuses connections
    server: _ArmServer

    def _dispatch(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        status, out_headers, payload = self.server.emulator.handle(self.command, self.path, headers, body)
        data = b"" if payload is None else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-ms-request-id", str(uuid.uuid4()))
        for key, value in out_headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_PUT = do_PATCH = do_POST = do_DELETE = _dispatch  # noqa: N815

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet; the request log has it
        pass


class _ArmServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], emulator: ArmEmulator, ctx: ssl.SSLContext) -> None:
        self.emulator = emulator
        self._ctx = ctx
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        super().__init__(address, _ArmHandler)

    def server_bind(self) -> None:
        socketserver.TCPServer.server_bind(self)  # skip HTTPServer's reverse DNS lookup (slow, unused)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def finish_request(self, request: Any, client_address: Any) -> None:
        # The TLS handshake runs here, in the connection's own thread, not in the accept loop: one slow
        # or broken client cannot stall everyone else.
        try:
            request.settimeout(60)  # an idle keep-alive connection is dropped after a minute
            tls = self._ctx.wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError):
            return
        with self._conns_lock:
            self._conns.add(tls)
        try:
            _ArmHandler(tls, client_address, self)
        except (OSError, ssl.SSLError):
            pass  # the client went away, or stop() shut the connection
        finally:
            with self._conns_lock:
                self._conns.discard(tls)
            with contextlib.suppress(OSError):
                tls.close()

    def close_connections(self) -> None:
        """Unblock keep-alive handler threads waiting for a next request, so none outlive stop()."""
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
