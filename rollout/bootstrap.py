"""Composition root: Settings -> a wired ``RolloutService``. The only place that picks adapters.

The same code path serves Azure and the local twin: only endpoints and credentials differ
(``ARM_ENDPOINT``/``ARM_CA_BUNDLE``/``ARM_TOKEN`` for the ARM emulator, connection strings for
Azurite). In Azure every credential is the function app's managed identity.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, TypeVar

from rollout.adapters.blobs import ReleaseBlobs
from rollout.adapters.compute import AzureCompute, credential_for
from rollout.adapters.identity import storage_credential
from rollout.adapters.notify import LogNotifier
from rollout.adapters.probe import HttpProber
from rollout.adapters.queue import TickQueue
from rollout.adapters.scriptcheck import BashSyntaxChecker
from rollout.adapters.tables import TableStateStore
from rollout.fanout import Fanout, ReadBudget
from rollout.releases import ExtensionDefaults
from rollout.service import RolloutService
from rollout.settings import (
    SETTINGS_READ,
    FanoutSettings,
    Settings,
    StorageConnection,
    load_fanout_settings,
    load_settings,
)
from rollout.targets import Target, TargetRef, TargetsConfig, single_target_config

T = TypeVar("T")


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


def _connect(
    conn: StorageConnection,
    from_service_uri: Callable[[str], T],
    from_connection_string: Callable[[str], T],
) -> T:
    """A client from a Functions-style connection: its endpoint (used with the managed identity,
    ``storage_credential``), or a connection string."""
    if conn.service_uri:
        return from_service_uri(conn.service_uri)
    assert conn.connection_string is not None
    return from_connection_string(conn.connection_string)


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


def build_compute(settings: Settings, **tuning: Any) -> AzureCompute:
    """The ARM adapter for the target scale set; ``tuning``: AzureCompute's timing keywords (benchmarks)."""
    return AzureCompute(
        subscription_id=settings.subscription_id,
        resource_group=settings.resource_group,
        vmss_name=settings.vmss_name,
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
) -> RolloutService:
    """The service wired from ``settings``. An adapter passed in replaces the one built from settings
    (the benchmarks tune timings and keep the adapters to close them)."""
    blobs = build_release_blobs(settings)
    return RolloutService(
        target_key=settings.target_key,
        compute=compute or build_compute(settings),
        prober=prober or HttpProber(settings.probe),
        store=store or build_store(settings),
        notifier=LogNotifier(),
        clock=SystemClock(),
        policy=settings.policy,
        extension=ExtensionDefaults(
            extension_name=settings.extension_name,
            file_auth=settings.extension_file_auth,
            identity_client_id=settings.extension_identity_client_id,
        ),
        release_container_url=blobs.container_url if blobs is not None else None,
        script_checker=BashSyntaxChecker(),
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


# --------------------------------------------------------------------------------------------------
# The fan-out (rollout.fanout): the timer's selection and queue, the queue function's per-target services


def build_tick_queue(fanout: FanoutSettings) -> TickQueue:
    name = fanout.queue_name
    return _connect(
        fanout.queue,
        lambda uri: TickQueue.from_service_uri(uri, storage_credential(), name),
        lambda conn: TickQueue.from_connection_string(conn, name),
    )


def targets_from_settings(settings: Settings) -> TargetsConfig:
    """Today's targets: the ``VMSS_*`` settings as the default group of one target. (A targets document
    replaces this; the fan-out takes any ``TargetsConfig``.)"""
    ref = TargetRef(settings.subscription_id, settings.resource_group, settings.vmss_name)
    return single_target_config(ref, settings.policy, settings.probe)


class TargetServices:
    """The per-target service accessor: one wired ``RolloutService`` per target, built on first use and
    kept (clients keep their pools). The target of the ``VMSS_*`` settings gets the app's own service;
    any other target the same settings with its scale set, policy and probe, and the one state store."""

    def __init__(self, settings: Settings, default: RolloutService) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        self._services: dict[str, RolloutService] = {settings.target_key: default}

    def __call__(self, target: Target) -> RolloutService:
        with self._lock:
            service = self._services.get(target.key)
            if service is None:
                settings = replace(
                    self._settings,
                    subscription_id=target.ref.subscription_id,
                    resource_group=target.ref.resource_group,
                    vmss_name=target.ref.name,
                    policy=target.policy,
                    probe=target.probe,
                )
                default = self._services[self._settings.target_key]
                assert isinstance(default.store, TableStateStore)
                service = build_service(settings, store=default.store)
                self._services[target.key] = service
            return service


@dataclass(frozen=True)
class FanoutWiring:
    """What the timer and the queue function need: the fan-out and the per-target service accessor."""

    fanout: Fanout
    service_for: Callable[[Target], RolloutService]
    queue: TickQueue


_fanout_cache: dict[tuple[str | None, ...], FanoutWiring] = {}


def fanout_from_environment(env: Mapping[str, str] | None = None) -> FanoutWiring:
    """One wiring per process and configuration, like ``service_from_environment`` (whose service and
    store it shares). Raises ``rollout.settings.SettingsError`` naming every bad setting."""
    env = os.environ if env is None else env
    settings, service = service_from_environment(env)
    key = tuple(env.get(name) for name in SETTINGS_READ)
    with _lock:
        cached = _fanout_cache.get(key)
        if cached is None:
            fanout_settings = load_fanout_settings(env)
            queue = build_tick_queue(fanout_settings)
            fanout = Fanout(
                config=targets_from_settings(settings),
                store=service.store,
                sender=queue,
                now=SystemClock().now,
                budget=ReadBudget(burst=fanout_settings.read_burst, rate=fanout_settings.read_rate),
            )
            cached = FanoutWiring(fanout, TargetServices(settings, service), queue)
            _fanout_cache.clear()
            _fanout_cache[key] = cached
        return cached
