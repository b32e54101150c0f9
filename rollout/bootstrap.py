"""Composition root: Settings -> a wired ``RolloutService``. The only place that picks adapters.

The same code path serves Azure and the local twin: only endpoints and credentials differ
(``ARM_ENDPOINT``/``ARM_CA_BUNDLE``/``ARM_TOKEN`` for the ARM emulator, connection strings for
Azurite). In Azure every credential is the function app's managed identity.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

from rollout.adapters.blobs import ReleaseBlobs
from rollout.adapters.compute import AzureCompute, credential_for
from rollout.adapters.discovery import ArmDiscovery
from rollout.adapters.identity import storage_credential
from rollout.adapters.notify import Channel, EventGridChannel, LogNotifier, NotificationQueue, WebhookChannel
from rollout.adapters.probe import HttpProber
from rollout.adapters.queue import TickQueue
from rollout.adapters.scriptcheck import BashSyntaxChecker
from rollout.adapters.signals import signal_source_from_settings
from rollout.adapters.tables import TableStateStore
from rollout.fanout import Fanout, QueuedLooks, ReadBudget
from rollout.fleet import UNROUTED_KEY, Fleet, TargetsLoader, implicit_config
from rollout.groups import GroupService
from rollout.model import FleetView
from rollout.ports import Clock, Compute, SignalSource
from rollout.releases import ExtensionDefaults
from rollout.service import RolloutService
from rollout.settings import (
    SETTINGS_READ,
    FanoutSettings,
    NotifySettings,
    Settings,
    SettingsError,
    StorageConnection,
    load_fanout_settings,
    load_notify_settings,
    load_settings,
    load_signal_settings,
)
from rollout.targets import Target, TargetRef

T = TypeVar("T")
log = logging.getLogger("rollout.bootstrap")


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


def _connect(
    conn: StorageConnection,
    from_service_uri: Callable[[str], T],
    from_connection_string: Callable[[str], T],
) -> T:
    """A client from a Functions-style connection: its endpoint (used with the managed identity,
    ``storage_credential``), or a connection string. One the storage client refuses ("Connection string is
    either blank or malformed.") is a ``SettingsError`` naming the setting, never echoing its value (a
    connection string holds the account key)."""
    try:
        if conn.service_uri:
            return from_service_uri(conn.service_uri)
        assert conn.connection_string is not None
        return from_connection_string(conn.connection_string)
    except ValueError as exc:
        what = "endpoint" if conn.service_uri else "storage connection string"
        value = conn.service_uri or conn.connection_string or ""
        detail = str(exc)
        if any(len(part) >= 8 and part in detail for part in value.split(";")):
            detail = "the storage client refused it (its message quotes the value, so it is not shown)"
        raise SettingsError(
            f"invalid settings: {conn.setting or 'a storage connection'} is not a valid {what}: {detail}"
        ) from None


def build_store(settings: Settings) -> TableStateStore:
    prefix = settings.state_table_prefix
    return _connect(
        settings.state_storage,
        lambda uri: TableStateStore.from_service_uri(uri, storage_credential(), prefix=prefix),
        lambda conn: TableStateStore.from_connection_string(conn, prefix=prefix),
    )


def build_release_blobs(settings: Settings) -> ReleaseBlobs | None:
    if settings.release_storage is None:
        return None
    container = settings.release_container
    return _connect(
        settings.release_storage,
        lambda uri: ReleaseBlobs.from_service_uri(uri, storage_credential(), container=container),
        lambda conn: ReleaseBlobs.from_connection_string(conn, container=container),
    )


def build_compute(settings: Settings, ref: TargetRef | None = None, **tuning: Any) -> AzureCompute:
    """The ARM adapter for the scale set ``ref`` (default: the ``VMSS_*`` one); ``tuning``: AzureCompute's
    timing keywords (benchmarks)."""
    ref = ref or TargetRef(settings.subscription_id, settings.resource_group, settings.vmss_name)
    if settings.arm_ca_bundle and not os.path.isfile(settings.arm_ca_bundle):
        # Else every ARM call fails with requests' OSError ("Could not find a suitable TLS CA certificate bundle").
        raise SettingsError(f"invalid settings: ARM_CA_BUNDLE={settings.arm_ca_bundle[:200]!r} is not a file")
    return AzureCompute(
        subscription_id=ref.subscription_id,
        resource_group=ref.resource_group,
        vmss_name=ref.name,
        extension_name=settings.extension_name,
        arm_endpoint=settings.arm_endpoint,
        credential=credential_for(settings.arm_token),
        ca_bundle=settings.arm_ca_bundle,
        **tuning,
    )


def build_service(
    settings: Settings,
    *,
    compute: AzureCompute | None = None,
    store: TableStateStore | None = None,
    prober: HttpProber | None = None,
    clock: Clock | None = None,
) -> RolloutService:
    """The service of the ``VMSS_*`` scale set. An adapter passed in replaces the one built from settings
    (the benchmarks tune timings and keep the adapters to close them; the makespan benchmark gives its clock)."""
    return build_target_service(
        settings,
        implicit_config(settings).targets()[0],
        store=store or build_store(settings),
        blobs=build_release_blobs(settings),
        compute=compute,
        prober=prober,
        clock=clock,
    )


_lock = threading.Lock()
_cache: dict[tuple[str | None, ...], tuple[Settings, RolloutService]] = {}


def service_from_environment(env: Mapping[str, str] | None = None) -> tuple[Settings, RolloutService]:
    """One wired service per process and configuration (clients keep their connection pools).

    Raises ``rollout.settings.SettingsError`` naming every bad setting.
    """
    env = os.environ if env is None else env
    key = tuple(env.get(name) for name in SETTINGS_READ)
    with _lock:
        cached = _cache.get(key)
        if cached is None:
            settings = load_settings(env)
            cached = (settings, build_service(settings))
            _cache.clear()  # a changed configuration replaces the old wiring
            _cache[key] = cached
        return cached


# --- many scale sets: one RolloutService per target (README "Targets, groups and waves") ---------------


def build_target_service(
    settings: Settings,
    target: Target,
    *,
    store: TableStateStore,
    blobs: ReleaseBlobs | None,
    target_key: str | None = None,
    compute: AzureCompute | None = None,
    prober: HttpProber | None = None,
    clock: Clock | None = None,
) -> RolloutService:
    """The service of one target: its scale set, policy and probe; the store and blobs are shared.
    ``target_key`` replaces the target's own key (the unrouted partition only); ``compute`` and
    ``prober`` replace the adapters built for the target; ``clock`` the system clock (benchmarks on a
    shared virtual clock)."""
    compute = compute or build_compute(settings, target.ref)
    return RolloutService(
        target_key=target_key or target.key,
        compute=compute,
        prober=prober or HttpProber(target.probe),
        store=store,
        notifier=LogNotifier(),
        clock=clock or SystemClock(),
        policy=target.policy,
        extension=ExtensionDefaults(
            extension_name=settings.extension_name,
            file_auth=settings.extension_file_auth,
            identity_client_id=settings.extension_identity_client_id,
        ),
        release_container_url=blobs.container_url if blobs is not None else None,
        script_checker=BashSyntaxChecker(),
        notifications=notifications_from_environment()[1],
        releases=blobs,
        signals=build_signals(settings, target.ref, compute),
        looks=QueuedLooks(tick_queue_from_environment, SystemClock().now),
    )


def build_signals(settings: Settings, ref: TargetRef, compute: Compute) -> SignalSource | None:
    """The canary judge's signal sources for the scale set ``ref`` (``SIGNALS_*``; None when none is on).
    ``SIGNALS_LOAD_BALANCER_ID`` names the balancer of the ``VMSS_*`` scale set: other targets do not read it.
    The balancer source maps backend addresses, the logs source computer names, to instances with one
    observation of the scale set, made only when they read (a bake tick)."""
    signals = load_signal_settings(os.environ)
    if not signals.any:
        return None
    own = dataclasses.replace(
        settings, subscription_id=ref.subscription_id, resource_group=ref.resource_group, vmss_name=ref.name
    )
    if ref.key != settings.target_key:
        signals = dataclasses.replace(signals, load_balancer_id=None)

    seen: list[tuple[float, FleetView]] = []

    def observed() -> FleetView:  # one observation serves both sources of a read (a few seconds)
        now = time.monotonic()
        if not seen or now - seen[0][0] > 5:
            seen[:] = [(now, compute.observe())]
        return seen[0][1]

    def addresses() -> dict[str, str]:
        return {v.instance_id: v.private_ip for v in observed().instances if v.private_ip}

    def computer_names() -> dict[str, str]:
        return {v.computer_name: v.instance_id for v in observed().instances if v.computer_name}

    return signal_source_from_settings(own, signals, addresses=addresses, computer_names=computer_names)


class _FleetWiring:
    """What a configuration's fleets share: the loader (its caches), the store, the blobs, and the services
    built so far (by target value: a target whose policy or probe changes gets a new service)."""

    def __init__(self, settings: Settings, default: RolloutService) -> None:
        self.settings = settings
        self.default = default
        self.default_target = implicit_config(settings).targets()[0]
        self.store = build_store(settings)
        self.blobs = build_release_blobs(settings)
        discovery = None
        if settings.targets_discovery_subscriptions:
            discovery = ArmDiscovery(
                arm_endpoint=settings.arm_endpoint,
                credential=credential_for(settings.arm_token),
                ca_bundle=settings.arm_ca_bundle,
            )
        self.loader = TargetsLoader(settings, self.blobs, discovery)
        # Only reject_release, get and list are ever called on it: it never reaches ARM.
        self.unrouted = build_target_service(
            settings,
            dataclasses.replace(self.default_target, ref=_UNROUTED_REF),
            store=self.store,
            blobs=self.blobs,
            target_key=UNROUTED_KEY,
        )
        self.services: dict[Target, RolloutService] = {}
        self.lock = threading.Lock()

    def service_for(self, target: Target) -> RolloutService:
        if target == self.default_target:
            return self.default  # the VMSS_* target: the very service service_from_environment() returns
        with self.lock:
            service = self.services.get(target)
            if service is None:
                service = build_target_service(self.settings, target, store=self.store, blobs=self.blobs)
                self.services[target] = service
            return service


# A placeholder scale set for the unrouted partition's service (it never calls ARM).
_UNROUTED_REF = TargetRef("00000000-0000-0000-0000-000000000000", "unrouted", "unrouted")
_fleet_lock = threading.Lock()
_fleet_cache: dict[tuple[str | None, ...], _FleetWiring] = {}


def _fleet_wiring(env: Mapping[str, str]) -> _FleetWiring:
    settings, default = service_from_environment(env)
    key = tuple(env.get(name) for name in SETTINGS_READ)
    with _fleet_lock:
        wiring = _fleet_cache.get(key)
        if wiring is None or wiring.default is not default:
            wiring = _FleetWiring(settings, default)
            _fleet_cache.clear()
            _fleet_cache[key] = wiring
        return wiring


def fleet_from_environment(env: Mapping[str, str] | None = None) -> Fleet:
    """The targets in force and their services (``rollout.fleet.Fleet``): ``fleet.service(target_key)`` is the
    per-target accessor. The VMSS_* target's service is the one ``service_from_environment`` returns.

    Each call checks the targets document's ETag (one properties request; the document is read again only
    when it changed) and, every ``DISCOVERY_REFRESH_SECONDS``, lists tagged scale sets. A document that
    cannot be used never raises here: the fleet then has no groups and says why (``fleet.problems``).
    Raises ``SettingsError`` for bad settings, as ``service_from_environment`` does."""
    wiring = _fleet_wiring(os.environ if env is None else env)
    load = wiring.loader.load()
    groups = GroupService(
        config=load.config,
        store=wiring.store,
        services=wiring.service_for,
        clock=SystemClock(),
        notifications=notifications_from_environment(env)[1],
    )
    return Fleet(load, wiring.service_for, wiring.unrouted, groups, script_checker=BashSyntaxChecker())


def group_service_from_environment(env: Mapping[str, str] | None = None) -> tuple[Settings, GroupService]:
    """The group service of the targets in force (``fleet_from_environment().groups``): releases to a
    group go out wave by wave through the per-target services (docs/design.md, "Waves")."""
    env = os.environ if env is None else env
    settings, _ = service_from_environment(env)
    return settings, fleet_from_environment(env).groups


# --- the fan-out (rollout.fanout): the timer's selection and queue -------------------------------------


def build_tick_queue(fanout: FanoutSettings) -> TickQueue:
    name = fanout.queue_name
    return _connect(
        fanout.queue,
        lambda uri: TickQueue.from_service_uri(uri, storage_credential(), name),
        lambda conn: TickQueue.from_connection_string(conn, name),
    )


_queue_lock = threading.Lock()
_queue_cache: dict[tuple[str | None, ...], tuple[FanoutSettings, TickQueue]] = {}


def _tick_queue(env: Mapping[str, str]) -> tuple[FanoutSettings, TickQueue]:
    """The fan-out's settings and the tick queue (one client per process and configuration)."""
    key = tuple(env.get(name) for name in SETTINGS_READ)
    with _queue_lock:
        cached = _queue_cache.get(key)
        if cached is None:
            fanout_settings = load_fanout_settings(env)
            cached = (fanout_settings, build_tick_queue(fanout_settings))
            _queue_cache.clear()
            _queue_cache[key] = cached
    return cached


def tick_queue_from_environment(env: Mapping[str, str] | None = None) -> TickQueue:
    """The tick queue, which also carries the engine's own earlier looks (``rollout.cadence``)."""
    return _tick_queue(os.environ if env is None else env)[1]


def fanout_from_environment(env: Mapping[str, str] | None = None) -> Fanout:
    """The timer's fan-out over the targets in force (``fleet_from_environment().config``, read again on
    each call: the targets document may have changed), their shared state store, and the tick queue
    (one client per process and configuration). Raises ``SettingsError`` naming every bad setting."""
    env = os.environ if env is None else env
    wiring = _fleet_wiring(env)
    fanout_settings, queue = _tick_queue(env)
    return Fanout(
        config=wiring.loader.load().config,
        store=wiring.store,
        sender=queue,
        now=SystemClock().now,
        budget=ReadBudget(burst=fanout_settings.read_burst, rate=fanout_settings.read_rate),
    )


# --- notifications (rollout.notifications): the queue the services put phase changes on, the channels ---------

_notify_lock = threading.Lock()
_notify_cache: dict[tuple[str | None, ...], tuple[NotifySettings | None, NotificationQueue | None]] = {}


def build_notification_queue(notify: NotifySettings) -> NotificationQueue | None:
    if notify.queue is None:
        return None
    name = notify.queue_name
    return _connect(
        notify.queue,
        lambda uri: NotificationQueue.from_service_uri(uri, storage_credential(), name),
        lambda conn: NotificationQueue.from_connection_string(conn, name),
    )


def notifications_from_environment(
    env: Mapping[str, str] | None = None,
) -> tuple[NotifySettings | None, NotificationQueue | None]:
    """The notification settings and the queue the services publish to: the queue is None when no channel
    is configured. Bad notification settings never stop rollouts: they are logged here (and raised by the
    delivery trigger, ``notify_settings_from_environment``), and nothing is enqueued."""
    env = os.environ if env is None else env
    key = tuple(env.get(name) for name in SETTINGS_READ)
    with _notify_lock:
        cached = _notify_cache.get(key)
        if cached is None:
            try:
                notify: NotifySettings | None = load_notify_settings(env)
            except SettingsError as exc:
                log.error("notifications are off: %s", exc)
                notify = None
            queue = build_notification_queue(notify) if notify is not None and notify.enabled else None
            cached = (notify, queue)
            _notify_cache.clear()
            _notify_cache[key] = cached
        return cached


def notify_settings_from_environment(env: Mapping[str, str] | None = None) -> NotifySettings:
    """For the delivery trigger: raises ``SettingsError`` naming every bad setting."""
    return load_notify_settings(os.environ if env is None else env)


def build_channels(notify: NotifySettings) -> dict[str, Channel]:
    """One channel per configured URL. Event Grid uses the topic key if one is set, else the managed identity."""
    channels: dict[str, Channel] = {}
    for name, url in notify.channels.items():
        if name == "eventgrid":
            credential = None if notify.eventgrid_key else storage_credential()
            channels[name] = EventGridChannel(
                url, credential=credential, key=notify.eventgrid_key, timeout=notify.timeout_seconds
            )
        else:
            channels[name] = WebhookChannel(name, url, timeout=notify.timeout_seconds)
    return channels
