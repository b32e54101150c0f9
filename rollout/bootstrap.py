"""Composition root: Settings -> a wired ``RolloutService``. The only place that picks adapters.

The same code path serves Azure and the local twin: only endpoints and credentials differ
(``ARM_ENDPOINT``/``ARM_CA_BUNDLE``/``ARM_TOKEN`` for the ARM emulator, connection strings for
Azurite). In Azure every credential is the function app's managed identity.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from datetime import UTC, datetime

from rollout.adapters.blobs import ReleaseBlobs
from rollout.adapters.compute import AzureCompute, credential_for
from rollout.adapters.identity import storage_credential
from rollout.adapters.notify import LogNotifier
from rollout.adapters.probe import HttpProber
from rollout.adapters.scriptcheck import BashSyntaxChecker
from rollout.adapters.tables import TableStateStore
from rollout.releases import ExtensionDefaults
from rollout.service import RolloutService
from rollout.settings import SETTINGS_READ, Settings, StorageConnection, load_settings


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


def build_store(settings: Settings) -> TableStateStore:
    conn: StorageConnection = settings.state_storage
    if conn.service_uri:
        return TableStateStore.from_service_uri(
            conn.service_uri,
            storage_credential(),
            prefix=settings.state_table_prefix,
        )
    assert conn.connection_string is not None
    return TableStateStore.from_connection_string(conn.connection_string, prefix=settings.state_table_prefix)


def build_release_blobs(settings: Settings) -> ReleaseBlobs | None:
    conn = settings.release_storage
    if conn is None:
        return None
    if conn.service_uri:
        return ReleaseBlobs.from_service_uri(
            conn.service_uri,
            storage_credential(),
            container=settings.release_container,
        )
    assert conn.connection_string is not None
    return ReleaseBlobs.from_connection_string(conn.connection_string, container=settings.release_container)


def build_service(settings: Settings) -> RolloutService:
    compute = AzureCompute(
        subscription_id=settings.subscription_id,
        resource_group=settings.resource_group,
        vmss_name=settings.vmss_name,
        extension_name=settings.extension_name,
        arm_endpoint=settings.arm_endpoint,
        credential=credential_for(settings.arm_token),
        ca_bundle=settings.arm_ca_bundle,
    )
    probe = settings.probe
    blobs = build_release_blobs(settings)
    return RolloutService(
        target_key=settings.target_key,
        compute=compute,
        prober=HttpProber(
            path=probe.path,
            port=probe.port,
            expect_status=probe.expect_status,
            body_pattern=probe.body_pattern,
            timeout_seconds=probe.timeout_seconds,
        ),
        store=build_store(settings),
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
