"""``ArmControls``: the knobs of the Python control API (timings, paging, throttling, the
undocumented-behaviour switches, readable scopes and images, faults, instance health and release
failures, the request log). ``ArmEmulator`` inherits them; each delegates to the part that owns it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Generic, TypeVar, cast

from emulator.arm import render
from emulator.arm.access import ImageAccess
from emulator.arm.budgets import FaultTable, ReadBuckets, ReadLimit, Throttle, injected_fault
from emulator.arm.fleet import Fleet
from emulator.arm.model import JSON, ScaleSet
from emulator.arm.operations import OperationRunner
from emulator.arm.requestlog import RequestLog, RequestRecord
from emulator.arm.semantics import Semantics
from emulator.clock import Clock
from emulator.synthetic import FailureRule

T = TypeVar("T")


class _ReadOnly(Generic[T]):
    """A read-only attribute reading ``<part>.<name>``, so each setting has one source: the part."""

    def __init__(self, part: str, name: str) -> None:
        self._part, self._name = part, name

    def __get__(self, obj: object, owner: type | None = None) -> T:
        return cast(T, getattr(getattr(obj, self._part), self._name))

    def __set__(self, obj: object, value: T) -> None:
        raise AttributeError(f"read-only: change {self._name} through its set_* method")


class ArmControls:
    # Set by ArmEmulator.__init__.
    subscription_id: str
    default_upgrade_seconds: float
    retry_after: float
    page_size: int
    _throttle: Throttle | None
    semantics: Semantics
    fleet: Fleet
    access: ImageAccess
    operations: OperationRunner
    faults: FaultTable
    log: RequestLog
    reads: ReadBuckets
    region: str
    clock: Clock

    def set_timings(
        self,
        resource_group: str | None = None,
        name: str | None = None,
        *,
        upgrade_seconds: float | None = None,
        retry_after: float | None = None,
    ) -> None:
        """``upgrade_seconds`` for one scale set (or the default for new ones); ``retry_after`` global."""
        with self.fleet.lock:
            if upgrade_seconds is not None:
                if resource_group and name:
                    self.fleet.get(resource_group, name).upgrade_seconds = upgrade_seconds
                else:
                    self.default_upgrade_seconds = upgrade_seconds
            if retry_after is not None:
                self.retry_after = retry_after

    def set_page_size(self, page_size: int) -> None:
        if page_size < 1:
            raise ValueError("page_size must be >= 1")
        self.page_size = page_size

    # -- throttling -------------------------------------------------------------------------------
    @property
    def throttle(self) -> tuple[float, float] | None:
        """(bucket capacity, refill per minute) of every scale set's write budget; None: disabled."""
        return None if self._throttle is None else self._throttle.as_tuple()

    def set_throttling(self, capacity: float | None, per_minute: float = 4.0) -> None:
        """Token bucket for every scale set (reset to full); ``capacity=None`` disables throttling."""
        with self.fleet.lock:
            self._throttle = None if capacity is None else Throttle(capacity, per_minute)
            for scale_set in self.fleet.scale_sets():
                scale_set.bucket = None if self._throttle is None else self._throttle.new_bucket(self.clock.monotonic)

    def spend_budget(self, scale_set: ScaleSet) -> None:
        """A model/upgrade write on ``scale_set``: one token, or 429 (``budgets.Throttle.spend``)."""
        with self.fleet.lock:
            if self._throttle is not None:
                self._throttle.spend(scale_set.bucket)

    # -- the subscription read bucket (budgets.ReadBuckets) -----------------------------------------
    @property
    def read_limit(self) -> tuple[float, float] | None:
        """(bucket size, refill per second) of each subscription's read bucket per region; None: unlimited."""
        limit = self.reads.limit
        return None if limit is None else limit.as_tuple()

    @property
    def reads_throttled(self) -> int:
        """Reads answered 429 ``SubscriptionRequestsThrottled`` since the limit was last set."""
        with self.fleet.lock:
            return self.reads.throttled

    def set_read_limit(self, capacity: float | None, per_second: float = 25.0) -> None:
        """Every subscription's read bucket (all full again); ``capacity=None``: reads are unlimited."""
        if capacity is not None and (capacity < 1 or per_second <= 0):
            raise ValueError("a read bucket needs capacity >= 1 and a refill rate > 0")
        with self.fleet.lock:
            self.reads.reset(None if capacity is None else ReadLimit(capacity, per_second))

    def spend_read(self, method: str, path: str) -> int | None:
        """A request through the gateway: a GET under ``/subscriptions/<id>/`` takes a token from that
        subscription's bucket in this emulator's region (or raises 429); the reads left, else None."""
        parts = path.split("/")
        if method.upper() != "GET" or len(parts) < 3 or parts[1].lower() != "subscriptions" or not parts[2]:
            return None
        with self.fleet.lock:
            return self.reads.spend(parts[2], self.region)

    # -- undocumented behaviours (semantics.Semantics) ------------------------------------------------
    model_applied = _ReadOnly[str]("semantics", "model_applied")  # "content" | "version"
    upgrade_while_updating = _ReadOnly[str]("semantics", "upgrade_while_updating")  # "accept" | "conflict"
    key_vault_reference_in_answers = _ReadOnly[bool]("semantics", "key_vault_reference_in_answers")
    flexible_model_applied = _ReadOnly[str]("semantics", "flexible_model_applied")  # "absent" | "in_vm_list"

    def set_semantics(
        self,
        *,
        model_applied: str | None = None,
        upgrade_while_updating: str | None = None,
        flexible_model_applied: str | None = None,
    ) -> None:
        """Pick an alternative for each undocumented ARM behaviour (``semantics``, docs/emulator.md)."""
        self.semantics.choose(
            model_applied=model_applied,
            upgrade_while_updating=upgrade_while_updating,
            flexible_model_applied=flexible_model_applied,
        )

    def set_key_vault_reference_visible(self, visible: bool) -> None:
        """See ``key_vault_reference_in_answers``."""
        with self.fleet.lock:
            self.semantics.key_vault_reference_in_answers = visible

    # -- linked authorization and images (access.ImageAccess) --------------------------------------------
    readable_scopes = _ReadOnly["tuple[str, ...] | None"]("access", "readable_scopes")  # None: everything
    caller_id = _ReadOnly[str]("access", "caller_id")  # the caller's object id in 403 messages

    def set_readable_scopes(self, scopes: Sequence[str] | None) -> None:
        """The resource scopes the caller may read; ``None`` = everything (the default).

        A model write whose ``imageReference.id`` lies outside them answers 403
        LinkedAuthorizationFailed; an image GET outside them answers 403 AuthorizationFailed."""
        self.access.set_readable_scopes(scopes)

    def can_read(self, resource_id: str) -> bool:
        """Whether the caller may read ``resource_id`` (a role at the id or any scope above it)."""
        return self.access.can_read(resource_id)

    def add_image(self, image_id: str) -> None:
        """Register a managed image (``.../images/<name>``) or gallery image version
        (``.../galleries/<g>/images/<i>/versions/<v>``; its image definition then exists too), so
        the image GETs find it."""
        self.access.add(image_id)

    def images(self) -> list[str]:
        return self.access.all()

    def clear_images(self) -> None:
        """Forget every registered image (tests: each starts from none)."""
        self.access.clear()

    # -- faults (budgets.FaultTable) ------------------------------------------------------------------
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
        fault = injected_fault(method, path_regex, status, body, headers)
        with self.fleet.lock:
            self.faults.arm(fault, count)

    def clear_faults(self) -> None:
        with self.fleet.lock:
            self.faults.clear()

    def faults_json(self) -> list[JSON]:
        with self.fleet.lock:
            return self.faults.as_json()

    def check_faults(self, method: str, path: str) -> None:
        with self.fleet.lock:
            self.faults.check(method, path)

    # -- instances ------------------------------------------------------------------------------------
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
        inst = self.fleet.get_instance(self.fleet.get(resource_group, name), instance_id)
        inst.runtime.set_healthy(healthy)
        with self.fleet.lock:
            inst.vm_health = vm_health

    def fail_release(
        self,
        resource_group: str,
        name: str,
        pattern: str,
        *,
        mode: str = "extension",
        stderr: str = "install failed: injected failure",
        spare_path: str = "",
    ) -> None:
        """Releases whose fileUris / image id match ``pattern`` fail (synthetic runtimes only); an ``http500``
        failure with ``spare_path`` still answers 200 on that path (a health endpoint)."""
        self.fleet.get(resource_group, name).rules.add(FailureRule(pattern, mode, stderr, spare_path))

    def clear_release_failures(self, resource_group: str, name: str) -> None:
        self.fleet.get(resource_group, name).rules.clear()

    def describe(self, resource_group: str, name: str) -> JSON:
        """A compact admin view: every instance's address, state and applied model."""
        scale_set = self.fleet.get(resource_group, name)
        with self.fleet.lock:
            latest = {i.instance_id: self.semantics.latest(scale_set, i) for i in scale_set.instances.values()}
            return render.admin_view(scale_set, self.subscription_id, latest)

    # -- the request log and operations ---------------------------------------------------------------
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
        return self.log.select(method, path_contains, path_regex, include_polls)

    def clear_requests(self) -> None:
        self.log.clear()

    def wait_idle(self, timeout: float = 30.0) -> None:
        """Block until no operation is in progress (tests: "let the upgrades finish")."""
        self.operations.wait_idle(timeout)
