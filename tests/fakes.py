"""In-memory fakes implementing the Protocols of ``rollout.ports``. They record what they were asked.

``FakeScaleSet`` is a small simulation of a Uniform scale set with a Manual upgrade policy: a model,
instances that remember the model they last applied, upgrades that take a number of observations to
finish, and releases that can be made to fail (extension error) or to serve a broken page.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from rollout.adapters.tables import (
    EVENT_KEY_SEPARATOR,
    EntityKeyError,
    check_key,
    check_transaction,
    event_to_entity,
    group_release_to_entity,
    rollout_to_entity,
    target_to_entity,
)
from rollout.model import (
    ExtensionSpec,
    FleetView,
    InstanceView,
    ModelSpec,
    ProbeResult,
    Rollout,
    RolloutEvent,
    TargetRecord,
)
from rollout.ports import (
    AccessDeniedError,
    AlreadyExistsError,
    BlobVersion,
    ConcurrencyError,
    NotFoundError,
    PortError,
    ProbeTarget,
    TransientError,
)
from rollout.releases import image_unreadable_reason
from rollout.waves import GroupRelease

BASE_URL = "https://releases.blob.core.windows.net/init"


def v0_extension() -> ExtensionSpec:
    return ExtensionSpec(
        name="CustomScript",
        publisher="Microsoft.Azure.Extensions",
        type="CustomScript",
        type_handler_version="2.1",
        settings={"fileUris": [f"{BASE_URL}/install_nginx.sh"], "commandToExecute": "bash install_nginx.sh"},
        protected_settings={"managedIdentity": {}},
    )


def release_of(model: ModelSpec) -> str:
    """The name a model's release goes by: the script's blob name or the image id."""
    if model.image_id and model.extension is None:
        return model.image_id
    if model.extension is not None:
        uris = model.extension.settings.get("fileUris") or [""]
        return str(uris[0]).rsplit("/", 1)[-1]
    return ""


@dataclass
class FakeInstance:
    instance_id: str
    applied: ModelSpec
    provisioning_state: str = "Succeeded"
    extension_status: str = "Succeeded"
    extension_message: str = ""
    remaining_observations: int = 0  # while > 0 the instance is Updating
    busy_until: datetime | None = None  # with ``upgrade_seconds``: Updating until the clock reaches this
    forced_unhealthy: bool = False
    upgrades: int = 0
    reimages: int = 0
    model_version: int = 0  # the scale set's model version it applied ("version" mode of latestModelApplied)
    pending: ModelSpec | None = None  # the model an upgrade took at its call ("call" mode), applied when done
    reimaging: bool = False
    # Scripts that ran on this disk since it was last reimaged: a release script's changes stay on the
    # disk when the instance goes back to the old script (only a reimage gives a fresh disk).
    leftovers: set[str] = field(default_factory=set)


@dataclass
class FakeScaleSet:
    """Implements ``rollout.ports.Compute``."""

    size: int = 5
    model: ModelSpec = field(default_factory=lambda: ModelSpec(extension=v0_extension(), image_id="/img/base"))
    orchestration_mode: str = "Uniform"
    upgrade_mode: str = "Manual"
    upgrade_observations: int = 1  # observations an upgrade stays Updating
    # With a clock: an upgrade stays Updating this many seconds instead (the ARM emulator's upgrade_seconds).
    upgrade_seconds: float | None = None
    failing_releases: set[str] = field(default_factory=set)  # extension exits non-zero
    broken_releases: set[str] = field(default_factory=set)  # extension succeeds, page broken
    throttle_next: int = 0  # the next N write calls raise TransientError
    throttle_retry_after: float | None = None  # the Retry-After those errors carry
    throttle_reimages: int = 0  # the next N reimage calls raise TransientError
    failure_output: str = ""  # appended to a failed extension's status message (the script's stderr)
    key_vault_reference_visible: bool = True  # like ArmEmulator.key_vault_reference_in_answers
    instances: dict[str, FakeInstance] = field(default_factory=dict)
    calls: list[tuple[str, object]] = field(default_factory=list)
    # Images that exist (the model's own image is added), and the scopes the caller may read
    # (None = everything), like the ARM emulator's ``add_image`` / ``readable_scopes``.
    images: set[str] = field(default_factory=set)
    readable_scopes: tuple[str, ...] | None = None
    # Switches for behaviour ARM does not document, as the ARM emulator has them (docs/emulator.md):
    # ``model_applied``: "content" (latestModelApplied compares the model's content, the default) or
    # "version" (every model write bumps a version; only instances upgraded since are latest).
    model_applied: str = "content"
    # ``apply_model_at``: "finish" (an upgrade applies the model as it is when the upgrade ends: the
    # fake's original behaviour) or "call" (it applies the model as it was at the manualupgrade call,
    # like the ARM emulator; a reimage then re-runs the instance's own applied model).
    apply_model_at: str = "finish"
    # With a clock, a 429 with Retry-After throttles every write until then (ARM keeps answering 429
    # inside the window); without one, only the ``throttle_next`` calls are refused.
    clock: object | None = None
    throttled_until: datetime | None = None
    fail_next_writes: list[Exception] = field(default_factory=list)  # raised by the next write calls, in order
    fail_next_observe: int = 0  # the next N observe() calls raise TransientError
    model_version: int = 0
    # Flexible orchestration (``orchestration_mode="Flexible"``), as the ARM emulator has it: instance
    # ids are VM names ("vmss_<8 hex>", not in numeric order), and ``flexible_model_applied`` says
    # whether the VM list reports latestModelApplied ("in_vm_list") or not ("absent", the REST spec's
    # VirtualMachine shape: the adapter then reports ``model_applied_reported=False``).
    flexible_model_applied: str = "absent"
    vm_name_prefix: str = "vmss"
    created: int = 0  # instances ever created: the next VM name's sequence number

    def __post_init__(self) -> None:
        for _ in range(self.size):
            iid = self._new_id()
            self.instances[iid] = FakeInstance(iid, applied=self.model)
        if self.model.image_id:
            self.images.add(self.model.image_id)

    # Compute protocol ----------------------------------------------------------------------------
    def observe(self) -> FleetView:
        if self.fail_next_observe > 0:
            self.fail_next_observe -= 1
            self.calls.append(("observe:failed", None))
            raise TransientError("503 ServiceUnavailable (fake)")
        self.calls.append(("observe", None))
        if self.upgrade_seconds is not None:
            now = self.clock.now()  # type: ignore[attr-defined]
            for inst in self.instances.values():
                if inst.busy_until is not None and now >= inst.busy_until:
                    inst.busy_until = None
                    self._finish_upgrade(inst)
            return self._view()
        for inst in self.instances.values():
            if inst.remaining_observations > 0:
                inst.remaining_observations -= 1
                if inst.remaining_observations == 0:
                    self._finish_upgrade(inst)
        return self._view()

    def read_model(self) -> FleetView:
        self.calls.append(("read_model", None))
        return dataclasses.replace(self._view(), instances=())

    def read_image(self, image_id: str) -> None:
        """As ARM: 403 AuthorizationFailed outside the readable scopes (whether it exists or not),
        else 404 when it does not exist."""
        self.calls.append(("read_image", image_id))
        if not self.can_read(image_id):
            raise AccessDeniedError(f"GET image {image_id}: HTTP 403 AuthorizationFailed (fake)", "AuthorizationFailed")
        if image_id.lower() not in {i.lower() for i in self.images}:
            raise NotFoundError(f"GET image {image_id}: HTTP 404 ResourceNotFound (fake)")

    def can_read(self, resource_id: str) -> bool:
        if self.readable_scopes is None:
            return True
        rid = resource_id.lower()
        return any(rid == s.lower() or rid.startswith(s.lower().rstrip("/") + "/") for s in self.readable_scopes)

    def update_model(self, spec: ModelSpec) -> None:
        self._maybe_throttle("update_model")
        if spec.image_id is not None and not self.can_read(spec.image_id):
            # ARM's linked authorization: the write is refused and nothing changes.
            self.calls.append(("update_model:denied", spec))
            reason = image_unreadable_reason(spec.image_id, "403 LinkedAuthorizationFailed on the model write")
            raise AccessDeniedError(reason, "LinkedAuthorizationFailed")
        self.calls.append(("update_model", spec))
        self.set_model(
            ModelSpec(
                extension=spec.extension if spec.extension is not None else self.model.extension,
                image_id=spec.image_id if spec.image_id is not None else self.model.image_id,
            )
        )

    def set_model(self, model: ModelSpec) -> None:
        """The scale set model changes (our write, or somebody's edit): a new model version."""
        self.model = model
        self.model_version += 1

    def upgrade_instances(self, instance_ids: Sequence[str]) -> None:
        self._maybe_throttle("upgrade_instances")
        self._check_exist("manualupgrade", instance_ids)
        self.calls.append(("upgrade_instances", tuple(instance_ids)))
        for iid in instance_ids:
            inst = self.instances[iid]
            inst.upgrades += 1
            inst.provisioning_state = "Updating"
            inst.remaining_observations = self.upgrade_observations
            inst.pending = self.model if self.apply_model_at == "call" else None
            if self.upgrade_seconds is not None:
                inst.remaining_observations = 0
                inst.busy_until = self.clock.now() + timedelta(seconds=self.upgrade_seconds)  # type: ignore[attr-defined]
            elif self.upgrade_observations == 0:
                self._finish_upgrade(inst)

    def reimage_instances(self, instance_ids: Sequence[str]) -> None:
        """A fresh disk from the image, then the instance's model: whatever a release broke is gone."""
        if self.throttle_reimages > 0:
            self.throttle_reimages -= 1
            self.calls.append(("reimage_instances:throttled", None))
            raise TransientError("429 TooManyRequests (fake)", retry_after=self.throttle_retry_after)
        self._maybe_throttle("reimage_instances")
        self._check_exist("reimage", instance_ids)
        self.calls.append(("reimage_instances", tuple(instance_ids)))
        for iid in instance_ids:
            inst = self.instances[iid]
            inst.reimages += 1
            inst.reimaging = True
            inst.forced_unhealthy = False
            inst.provisioning_state = "Updating"
            inst.remaining_observations = max(1, self.upgrade_observations)
            # "call" mode: like the emulator, a reimage re-runs the instance's own applied model.
            inst.pending = inst.applied if self.apply_model_at == "call" else None

    # fleet changes from outside the rollout ----------------------------------------------------------
    @property
    def flexible(self) -> bool:
        return self.orchestration_mode.lower() == "flexible"

    def _new_id(self) -> str:
        """The next instance id: "0", "1", ... (Uniform) or a VM name (Flexible), never reused."""
        seq = self.created
        self.created += 1
        if self.flexible:
            # A name like Azure's "<prefix>_<8 hex>", scrambled so name order is not creation order.
            return f"{self.vm_name_prefix}_{(seq * 2654435761 + 0x1F2E3D) % 2**32:08x}"
        return str(seq)

    def scale_out(self, count: int = 1) -> list[str]:
        """New instances, created from the model as it is now (they take it whatever a rollout does)."""
        if not self.flexible:
            self.created = max([self.created, *(int(i) + 1 for i in self.instances)])
        added = []
        for _ in range(count):
            iid = self._new_id()
            inst = FakeInstance(iid, applied=self.model, provisioning_state="Creating", model_version=-1)
            inst.remaining_observations = max(1, self.upgrade_observations)
            inst.pending = self.model
            self.instances[iid] = inst
            added.append(iid)
        self.calls.append(("scale_out", tuple(added)))
        return added

    def scale_in(self, *instance_ids: str | Sequence[str]) -> None:
        """Instances removed (an autoscaler, an operator): ids, or one sequence of ids."""
        ids = [i for arg in instance_ids for i in ([arg] if isinstance(arg, str) else arg)]
        for iid in ids:
            self.instances.pop(iid, None)
        self.calls.append(("scale_in", tuple(ids)))

    # test helpers --------------------------------------------------------------------------------
    def edit_model(self, *, image_id: str | None = None, extension: ExtensionSpec | None = None) -> None:
        """Someone else writes the model (the portal, a pipeline): nothing is upgraded."""
        self.model = ModelSpec(
            extension=extension if extension is not None else self.model.extension,
            image_id=image_id if image_id is not None else self.model.image_id,
        )
        self.calls.append(("edit_model", self.model))

    def unavailable(self) -> list[str]:
        """Instances not serving now: updating or unhealthy."""
        return [iid for iid in self.instances if not self.healthy(iid)]

    def calls_of(self, name: str) -> list[object]:
        return [arg for call, arg in self.calls if call == name]

    def releases(self) -> dict[str, str]:
        return {iid: release_of(inst.applied) for iid, inst in self.instances.items()}

    def healthy(self, iid: str) -> bool:
        inst = self.instances[iid]
        return (
            not inst.forced_unhealthy
            and inst.provisioning_state == "Succeeded"
            and release_of(inst.applied) not in self.broken_releases
            and (inst.applied.image_id or "") not in self.broken_releases
        )

    def _maybe_throttle(self, what: str) -> None:
        now = self.clock.now() if self.clock is not None else None  # type: ignore[attr-defined]
        if now is not None and self.throttled_until is not None and now < self.throttled_until:
            self.calls.append((f"{what}:throttled", None))
            left = (self.throttled_until - now).total_seconds()
            raise TransientError("429 TooManyRequests: still throttled (fake)", retry_after=left)
        if self.throttle_next > 0:
            self.throttle_next -= 1
            self.calls.append((f"{what}:throttled", None))
            if now is not None and self.throttle_retry_after:
                self.throttled_until = now + timedelta(seconds=self.throttle_retry_after)
            raise TransientError("429 TooManyRequests: throttled (fake)", retry_after=self.throttle_retry_after)
        if self.fail_next_writes:
            error = self.fail_next_writes.pop(0)
            self.calls.append((f"{what}:failed", None))
            raise error

    def _check_exist(self, what: str, instance_ids: Sequence[str]) -> None:
        missing = [i for i in instance_ids if i not in self.instances]
        if missing:
            # As the ARM emulator: an unknown instance id is a 404 for the whole call.
            self.calls.append((f"{what}:notfound", tuple(missing)))
            raise NotFoundError(f"{what}: instance(s) {', '.join(missing)} not found (fake)")

    def _finish_upgrade(self, inst: FakeInstance) -> None:
        model = inst.pending if inst.pending is not None else self.model
        inst.pending = None
        inst.applied = model
        if inst.reimaging:
            inst.leftovers.clear()
        inst.reimaging = False
        if model.extension is not None:
            inst.leftovers.add(release_of(ModelSpec(extension=model.extension)))
        inst.model_version = self.model_version if model is self.model else -1
        name = release_of(model)
        if name in self.failing_releases or (model.image_id or "") in self.failing_releases:
            inst.provisioning_state = "Failed"
            inst.extension_status = "Failed"
            inst.extension_message = f"Enable failed: {name} exited with status 1{self.failure_output}"
        else:
            inst.provisioning_state = "Succeeded"
            inst.extension_status = "Succeeded"
            inst.extension_message = "Enable succeeded"

    def _latest(self, inst: FakeInstance) -> bool:
        if self.model_applied == "version":
            return inst.model_version == self.model_version
        return _public(inst.applied) == _public(self.model)

    def _view(self) -> FleetView:
        # Flexible VMs carry no latestModelApplied unless the switch says the list reports it; the
        # adapter then reads them as latest and says it did not read it (AzureCompute._observe_flexible).
        reported = not self.flexible or self.flexible_model_applied == "in_vm_list"
        views = tuple(
            InstanceView(
                instance_id=inst.instance_id,
                latest_model_applied=self._latest(inst) if reported else True,
                provisioning_state=inst.provisioning_state,
                power_state="running",
                extension_status="Transitioning" if inst.provisioning_state == "Updating" else inst.extension_status,
                extension_message=inst.extension_message,
                private_ip=f"10.0.1.{n + 4}" if self.flexible else f"10.0.0.{int(inst.instance_id) + 4}",
            )
            for n, inst in enumerate(self.instances.values())
        )
        ext = self.model.extension
        if ext is not None:
            # Protected settings are never read back; the Key Vault reference is, unless switched off.
            ext = dataclasses.replace(ext, protected_settings=None)
            if not self.key_vault_reference_visible:
                ext = dataclasses.replace(ext, protected_settings_from_key_vault=None)
        readback = ModelSpec(extension=ext, image_id=self.model.image_id)
        return FleetView(
            model=readback,
            provisioning_state="Succeeded",
            instances=views,
            orchestration_mode=self.orchestration_mode,
            upgrade_mode=self.upgrade_mode,
            model_applied_reported=reported,
        )


def _public(model: ModelSpec) -> tuple[object, ...]:
    ext = model.extension
    return (
        model.image_id,
        None
        if ext is None
        else (
            ext.publisher,
            ext.type,
            ext.type_handler_version,
            repr(sorted(ext.settings.items())),
            ext.force_update_tag,
            ext.enable_automatic_upgrade,
            ext.provision_after_extensions,
            ext.suppress_failures,
        ),
    )


@dataclass
class FakeProber:
    """Implements ``rollout.ports.Prober`` from the fake scale set's idea of each instance's page."""

    scale_set: FakeScaleSet
    probed: list[tuple[str, ...]] = field(default_factory=list)

    def probe(self, targets: Sequence[ProbeTarget]) -> dict[str, ProbeResult]:
        self.probed.append(tuple(t.instance_id for t in targets))
        return {
            t.instance_id: ProbeResult(True, "200 in 3 ms")
            if self.scale_set.healthy(t.instance_id)
            else ProbeResult(False, "500 Internal Server Error")
            for t in targets
        }


def _keys(target: str, rollout_id: str | None = None, *, events: bool = False) -> None:
    """The Tables adapter's key rules (same checks, same ``InvalidKeyError``), before anything is touched."""
    check_key(target, "target")
    if rollout_id is not None:
        check_key(rollout_id, "rollout id")
        if events and EVENT_KEY_SEPARATOR in rollout_id:  # event row keys start with the rollout id
            raise EntityKeyError(f"rollout id {rollout_id[:60]!r} must not contain {EVENT_KEY_SEPARATOR!r}")


class FakeStore:
    """Implements ``rollout.ports.StateStore`` with ETags as counters, like the Tables adapter.

    Every write is first encoded with the Tables adapter's own (pure) entity encoders, so the fake
    refuses exactly what Azure Tables would: keys, naive datetimes, and sizes (``EntityTooLargeError``,
    a ``RecordTooLargeError``: 64 KiB per string property, 1 MiB per entity). ``commit`` is an entity
    group transaction as the adapter sends it: the same checks before anything is touched (one
    partition, each row once, at most 100 rows, 4 MiB), every ETag checked, then all rows written or
    none. ``legacy_targets`` holds claim rows of the previous layout (the ``targets`` table), read
    when a target has no claim row, as the adapter does."""

    def __init__(self) -> None:
        self.targets: dict[str, TargetRecord] = {}
        self.legacy_targets: dict[str, TargetRecord] = {}
        self.rollouts: dict[tuple[str, str], Rollout] = {}
        self.events: list[RolloutEvent] = []
        self.group_releases: dict[tuple[str, str], GroupRelease] = {}
        self.commits: list[tuple[str, ...]] = []  # the rows of each commit that landed: "target", rollout ids
        self._etags = itertools.count(1)

    def _tag(self) -> str:
        return f'W/"{next(self._etags)}"'

    def get_target(self, key: str) -> TargetRecord | None:
        _keys(key)
        found = self.targets.get(key)
        if found is None and key in self.legacy_targets:
            return dataclasses.replace(self.legacy_targets[key], etag=None)  # inserted by the first commit
        return found

    def check_fits(self, record: Rollout | TargetRecord) -> None:
        if isinstance(record, Rollout):
            rollout_to_entity(record)
        else:
            target_to_entity(record)

    def save_target(self, record: TargetRecord) -> TargetRecord:
        saved, _ = self.commit(record, [])
        assert saved is not None
        return saved

    def load(self, target: str) -> tuple[TargetRecord | None, list[Rollout]]:
        return self.get_target(target), self.list_rollouts(target)

    def commit(
        self, target: TargetRecord | None, rollouts: Sequence[Rollout]
    ) -> tuple[TargetRecord | None, list[Rollout]]:
        records: list[Rollout | TargetRecord] = ([target] if target is not None else []) + list(rollouts)
        if not records:
            return None, []
        for record in records:
            if isinstance(record, TargetRecord):
                _keys(record.key)
            else:
                _keys(record.target, record.id)
        check_transaction(
            [target_to_entity(r) if isinstance(r, TargetRecord) else rollout_to_entity(r) for r in records]
        )
        for record in records:  # every condition first: all or nothing
            if isinstance(record, TargetRecord):
                current_etag = self.targets[record.key].etag if record.key in self.targets else None
                if record.etag != current_etag:
                    raise ConcurrencyError(f"target {record.key} changed; nothing was written")
            else:
                stored = self.rollouts.get((record.target, record.id))
                if (stored.etag if stored else None) != record.etag:
                    raise ConcurrencyError(f"rollout {record.id} changed; nothing was written")
        saved_target: TargetRecord | None = None
        saved: list[Rollout] = []
        for record in records:
            if isinstance(record, TargetRecord):
                saved_target = dataclasses.replace(record, etag=self._tag())
                self.targets[record.key] = saved_target
            else:
                row = record.evolve(etag=self._tag())
                self.rollouts[(record.target, record.id)] = row
                saved.append(row)
        self.commits.append(tuple("target" if isinstance(r, TargetRecord) else r.id for r in records))
        return saved_target, saved

    def get_rollout(self, target: str, rollout_id: str) -> Rollout | None:
        _keys(target, rollout_id)
        return self.rollouts.get((target, rollout_id))

    def insert_rollout(self, rollout: Rollout) -> Rollout:
        _keys(rollout.target, rollout.id)
        rollout_to_entity(rollout)
        if (rollout.target, rollout.id) in self.rollouts:
            raise AlreadyExistsError(rollout.id)
        saved = rollout.evolve(etag=self._tag())
        self.rollouts[(rollout.target, rollout.id)] = saved
        return saved

    def update_rollout(self, rollout: Rollout) -> Rollout:
        _keys(rollout.target, rollout.id)
        rollout_to_entity(rollout)
        current = self.rollouts.get((rollout.target, rollout.id))
        if current is None or current.etag != rollout.etag:
            raise ConcurrencyError(rollout.id)
        saved = rollout.evolve(etag=self._tag())
        self.rollouts[(rollout.target, rollout.id)] = saved
        return saved

    def list_rollouts(self, target: str) -> list[Rollout]:
        _keys(target)
        found = [r for (t, _), r in self.rollouts.items() if t == target]
        return sorted(found, key=lambda r: (r.created_at, r.id), reverse=True)

    def get_group_release(self, group: str, release_id: str) -> GroupRelease | None:
        check_key(group, "group")
        check_key(release_id, "group release id")
        return self.group_releases.get((group, release_id))

    def insert_group_release(self, record: GroupRelease) -> GroupRelease:
        group_release_to_entity(record)
        if (record.group, record.id) in self.group_releases:
            raise AlreadyExistsError(record.id)
        saved = record.evolve(etag=self._tag())
        self.group_releases[(record.group, record.id)] = saved
        return saved

    def update_group_release(self, record: GroupRelease) -> GroupRelease:
        group_release_to_entity(record)
        current = self.group_releases.get((record.group, record.id))
        if current is None or record.etag is None or current.etag != record.etag:
            raise ConcurrencyError(record.id)
        saved = record.evolve(etag=self._tag())
        self.group_releases[(record.group, record.id)] = saved
        return saved

    def list_group_releases(self, group: str) -> list[GroupRelease]:
        check_key(group, "group")
        found = [r for (g, _), r in self.group_releases.items() if g == group]
        return sorted(found, key=lambda r: (r.created_at, r.id), reverse=True)

    def append_event(self, event: RolloutEvent) -> None:
        _keys(event.target, event.rollout_id, events=True)
        event_to_entity(event)
        self.events.append(event)

    def list_events(self, target: str, rollout_id: str) -> list[RolloutEvent]:
        _keys(target, rollout_id, events=True)
        found = [e for e in self.events if e.target == target and e.rollout_id == rollout_id]
        return sorted(found, key=lambda e: e.at)  # time order, as the Tables adapter returns them


@dataclass
class FakeNotifier:
    messages: list[str] = field(default_factory=list)

    def notify(self, rollout: Rollout, message: str) -> None:
        self.messages.append(message)


@dataclass
class FakeClock:
    current: datetime = field(default_factory=lambda: datetime(2026, 11, 25, 12, 0, tzinfo=UTC))

    def now(self) -> datetime:
        return self.current

    def advance(self, seconds: float) -> None:
        self.current += timedelta(seconds=seconds)


class FakeReleaseBlob:
    """``ReleaseBlob`` like ``rollout.adapters.blobs.TriggeredBlob``: properties without content, a
    read conditional on the ETag and bounded by the size checked. ``size`` may be given without
    content (a huge blob nobody holds in memory); reading such a blob is a test failure."""

    def __init__(
        self, name: str, content: bytes | None = b"", *, size: int | None = None, container: str = "init"
    ) -> None:
        self.container = container
        self.name = name
        self.url = f"{BASE_URL.rsplit('/', 1)[0]}/{container}/{name}"
        self.content = content
        self.size = len(content) if content is not None else int(size or 0)
        self.etag = '"0x1"'
        self.exists = True
        self.properties_requests = 0
        self.bytes_read = 0
        self.after_properties: list[object] = []  # callables run once after the next properties request

    def replace(self, content: bytes) -> None:
        """A new upload under the same name: new content, new ETag."""
        self.content, self.size = content, len(content)
        self.etag = f'"0x{int(self.etag.strip(chr(34))[2:], 16) + 1:X}"'

    def version(self) -> BlobVersion:
        self.properties_requests += 1
        if not self.exists:
            raise NotFoundError(f"{self.name}: not found")
        version = BlobVersion(size=self.size, etag=self.etag)
        while self.after_properties:
            self.after_properties.pop(0)()  # type: ignore[operator]
        return version

    def read(self, version: BlobVersion) -> bytes:
        if not self.exists:
            raise NotFoundError(f"{self.name}: not found")
        if version.etag != self.etag:
            raise ConcurrencyError(f"{self.name}: changed since it was read (ETag mismatch)")
        assert self.content is not None, "this blob must never be downloaded"
        data = self.content[: version.size]
        self.bytes_read += len(data)
        return data


class FakeReleaseContainer:
    """``ReleaseSource`` like ``rollout.adapters.blobs.ReleaseBlobs``: blobs by name under ``BASE_URL``,
    ``NotFoundError`` for a name not there, ``ValueError`` beyond ``max_bytes`` (nothing returned),
    ``unreadable`` names failing as Storage does on a 403 (``map_storage_errors``: a ``PortError``, not
    transient) and ``busy`` reads as on a 503 (``TransientError``). It records every read; no writes."""

    def __init__(self, blobs: dict[str, bytes] | None = None) -> None:
        self.container_url = BASE_URL
        self.blobs: dict[str, bytes] = dict(blobs or {})
        self.unreadable: set[str] = set()
        self.reads: list[str] = []
        self.busy = 0  # the next N reads fail as a throttled or unavailable Storage does (TransientError)

    def read(self, name: str, max_bytes: int = 64 * 1024 * 1024) -> tuple[str, bytes]:
        self.reads.append(name)
        if self.busy > 0:
            self.busy -= 1
            raise TransientError(f"read {name}: HTTP 503: Server Busy (fake)")
        if name in self.unreadable:
            raise PortError(f"read {name}: HTTP 403: AuthorizationPermissionMismatch (fake)")
        if name not in self.blobs:
            raise NotFoundError(f"read {name}: HTTP 404 BlobNotFound (fake)")
        content = self.blobs[name]
        if len(content) > max_bytes:
            raise ValueError(f"blob {name!r} is {len(content)} bytes; more than the {max_bytes} allowed for a release")
        return f"{BASE_URL}/{name}", content
