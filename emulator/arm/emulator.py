"""``ArmEmulator``: the facade that assembles the parts (see the package docstring) and keeps the
Python control API that tests, the demo and the CLI use."""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from emulator.arm import render
from emulator.arm.access import ImageAccess
from emulator.arm.admin import AdminApi
from emulator.arm.api import ArmApi
from emulator.arm.budgets import FaultTable, ReadBuckets, ReadLimit, Throttle
from emulator.arm.controls import ArmControls
from emulator.arm.fleet import Fleet
from emulator.arm.gateway import Gateway
from emulator.arm.model import (
    CUSTOM_SCRIPT,
    DEFAULT_SUBSCRIPTION,
    IMAGE_ID,
    JSON,
    Extension,
    Instance,
    Model,
    Operation,
    RuntimeFactory,
    ScaleSet,
    extension_from_body,
)
from emulator.arm.monitor import MonitorApi
from emulator.arm.operations import OperationRunner
from emulator.arm.requestlog import RequestLog
from emulator.arm.routes import Answer
from emulator.arm.semantics import Semantics
from emulator.arm.server import ArmServer, tls_context
from emulator.certs import generate_certs
from emulator.clock import REAL_TIME, Clock
from emulator.runtime import InstanceModel, InstanceRuntime
from emulator.serving import Lifecycle, serve_in_background, shut_down
from emulator.synthetic import FailureRules, SyntheticRuntime

RuntimeBuilder = Callable[[ScaleSet, JSON], RuntimeFactory]


class ArmEmulator(ArmControls, Lifecycle):
    """ARM for compute + network over HTTPS, with a Python and an HTTP (``/_admin``) control API."""

    _extension_from_body = staticmethod(extension_from_body)

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
        read_limit: tuple[float, float] | None = None,
        region: str = "westeurope",
        flexible_model_applied: str = "absent",
        clock: Clock | None = None,
    ) -> None:
        self.host, self.port, self.token = host, port, token
        # Real time unless given one that skips idle time (emulator/clock.py; the makespan benchmark's switch
        # ``python -m emulator serve --skip-clock``): every time-based behaviour below reads it.
        self.clock: Clock = clock or REAL_TIME
        self.subscription_id = subscription_id
        self.instance_port = instance_port
        self.default_upgrade_seconds = upgrade_seconds
        self.retry_after = retry_after
        self.page_size = page_size
        self._throttle = None if throttle is None else Throttle(*throttle)
        # ARM's subscription read bucket (budgets.ReadLimit: 250, 25 a second in Azure), per subscription and
        # region; this emulator is one region. None: reads are never throttled.
        self.reads = ReadBuckets(None if read_limit is None else ReadLimit(*read_limit), self.clock.monotonic)
        self.region = region
        self.semantics = Semantics()
        self.set_semantics(
            model_applied=model_applied,
            upgrade_while_updating=upgrade_while_updating,
            flexible_model_applied=flexible_model_applied,
        )
        self.fleet = Fleet(address_base, self.clock)
        self.access = ImageAccess(self.fleet.lock, readable_scopes)
        self.operations = OperationRunner(self.fleet, self.semantics, workers)
        self.faults = FaultTable()
        self.log = RequestLog(self.fleet.lock)
        self.monitor = MonitorApi(self)  # Azure Monitor's metrics and Log Analytics query endpoints
        self.api, self.admin, self.gateway = ArmApi(self), AdminApi(self), Gateway(self)
        self.runtime_kinds: dict[str, RuntimeBuilder] = {"synthetic": self._synthetic_factory_from_admin}
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if state_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="arm-emulator-")
            state_dir = self._tmp.name
        self.state_dir = Path(state_dir)
        self._certs = generate_certs(self.state_dir / "certs", hosts=(host, "localhost"))
        self._server: ArmServer | None = None
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
        self.operations.start()
        ctx = tls_context(self._certs.cert_chain, self._certs.key)
        self._server = ArmServer((self.host, self.port), self.handle, ctx)
        self._thread = serve_in_background(self._server, "arm-emulator", 0.2)
        self.monitor.start()
        return self

    def stop(self) -> None:
        """Stop serving, finish/cancel upgrades, stop every instance runtime, delete temp files."""
        self.operations.cancel_waiting()  # first: no operation starts its applies while the server stops
        if self._server is not None:
            server = self._server
            shut_down(server, [self._thread] if self._thread else [], timeout=5, before_close=server.close_connections)
        self.operations.stop()
        self.monitor.stop()
        for scale_set in self.fleet.scale_sets():
            self.delete_scale_set(scale_set.resource_group, scale_set.name)
        self._server = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def handle(self, method: str, raw_path: str, headers: dict[str, str], body: bytes) -> Answer:
        """Route one request; returns (status, headers, JSON body or None). Used by the HTTP handler."""
        return self.gateway.handle(method, raw_path, headers, body)

    def vmss_id(self, rg: str, name: str) -> str:
        return render.vmss_id(self.subscription_id, rg, name)

    # -- scale sets ---------------------------------------------------------------------------------
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
        tags: dict[str, str] | None = None,
    ) -> ScaleSet:
        """Create (or replace) a scale set with ``instances`` running instances, all on the model.

        ``extension_settings=None`` creates no extension; ``runtime_factory`` defaults to synthetic
        runtimes on ``instance_port`` (``serve=False``: no sockets, for paging/scale tests).
        ``extension_properties`` are REST-named extension properties (``publisher``,
        ``suppressFailures``, ``provisionAfterExtensions``, ...) laid over the CustomScript defaults.
        """
        if (resource_group, name) in self.fleet:
            self.delete_scale_set(resource_group, name)
        if image_id and IMAGE_ID.match(image_id):
            self.add_image(image_id)  # the image a scale set was created from exists
        exts: tuple[Extension, ...] = ()
        if extension_settings is not None:
            ext = Extension(
                extension_name, *CUSTOM_SCRIPT, dict(extension_settings), dict(extension_protected_settings or {})
            )
            if extension_properties:
                ext = extension_from_body(extension_name, {"properties": extension_properties}, ext, replace=False)
            exts = (ext,)
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
            bucket=None if self._throttle is None else self._throttle.new_bucket(self.clock.monotonic),
            tags=dict(tags or {}),
        )
        self.fleet.add(scale_set)
        try:
            for _ in range(instances):
                self.fleet.start_instance(scale_set, provisioning=False)
        except BaseException:
            self.delete_scale_set(resource_group, name)
            raise
        return scale_set

    def scale_out(self, resource_group: str, name: str, count: int = 1) -> list[str]:
        """Add ``count`` instances on the *current* model (their extension runs as they provision)."""
        scale_set = self.fleet.get(resource_group, name)
        added = []
        for _ in range(count):
            inst = self.fleet.start_instance(scale_set, provisioning=True)
            self.operations.provision(scale_set, inst)
            added.append(inst.instance_id)
        return added

    def delete_scale_set(self, resource_group: str, name: str) -> None:
        scale_set = self.fleet.pop(resource_group, name)
        if scale_set is not None:
            self.fleet.stop_instances(scale_set)

    def register_runtime_kind(self, kind: str, builder: RuntimeBuilder) -> None:
        """Make ``{"runtime": kind}`` available to the admin API's scale set creation.

        ``builder(scale_set, request_body)`` returns the runtime factory for that scale set; e.g. the
        local twin registers "nginx" with ``emulator.nginx.nginx_runtime_factory(...)``."""
        self.runtime_kinds[kind] = builder

    def scale_set(self, resource_group: str, name: str) -> ScaleSet:
        return self.fleet.get(resource_group, name)

    def instance(self, resource_group: str, name: str, instance_id: str) -> Instance:
        return self.fleet.get_instance(self.fleet.get(resource_group, name), instance_id)

    def _synthetic_factory(self, rules: FailureRules, serve: bool) -> RuntimeFactory:
        port = self.instance_port

        def factory(address: str, initial: InstanceModel) -> InstanceRuntime:
            return SyntheticRuntime(address, initial, port=port, rules=rules, serve=serve, clock=self.clock.time)

        return factory

    def _synthetic_factory_from_admin(self, scale_set: ScaleSet, spec: JSON) -> RuntimeFactory:
        return self._synthetic_factory(scale_set.rules, bool(spec.get("serve", True)))

    def _start_upgrades(self, scale_set: ScaleSet, ids: list[str], *, reimage: bool) -> Operation:
        return self.operations.start_upgrades(scale_set, ids, reimage=reimage)
