"""A whole rollout over a large synthetic fleet, through the real adapters: the ARM emulator over
HTTPS (azure-mgmt-compute/network), Azurite tables (azure-data-tables) and real HTTP probes of every
instance. Shared by the slow scale test (small N in CI) and ``bench/run.py`` (large N)."""

from __future__ import annotations

import math
import resource
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from emulator.arm import ArmEmulator
from rollout.adapters.compute import AzureCompute, credential_for
from rollout.adapters.notify import LogNotifier
from rollout.adapters.probe import HttpProber
from rollout.adapters.tables import TableStateStore
from rollout.model import Phase, Release, ReleaseKind
from rollout.policy import RolloutPolicy
from rollout.releases import ExtensionDefaults
from rollout.service import OutcomeStatus, RolloutService

SUBSCRIPTION = "00000000-0000-0000-0000-00000000bead"
TOKEN = "bench-token"
URL = "https://bench.blob.core.windows.net/init"


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


@dataclass
class RolloutRun:
    instances: int
    phase: Phase
    ticks: int
    seconds: float
    tick_seconds: list[float] = field(default_factory=list)
    manualupgrade_calls: int = 0
    upgraded_instances: int = 0
    max_instances_per_call: int = 0
    extension_writes: int = 0
    vm_list_pages_per_tick: float = 0.0
    peak_rss_mib: float = 0.0  # the whole process: controller, emulator and its served instances

    @property
    def slowest_tick(self) -> float:
        return max(self.tick_seconds, default=0.0)

    @property
    def median_tick(self) -> float:
        s = sorted(self.tick_seconds)
        return s[len(s) // 2] if s else 0.0


def run_rollout(
    emulator: ArmEmulator,
    connection_string: str,
    table_prefix: str,
    instances: int,
    *,
    resource_group: str = "bench-rg",
    name: str = "bench-vmss",
    policy: RolloutPolicy | None = None,
    max_ticks: int = 400,
    token: str = TOKEN,
) -> RolloutRun:
    """Create an ``instances``-strong served synthetic scale set and run one release to the end."""
    policy = policy or RolloutPolicy(bake_seconds=0, batch_percent=20, max_unavailable_percent=20)
    v0 = {"fileUris": [f"{URL}/install_nginx.sh"], "commandToExecute": "bash install_nginx.sh"}
    emulator.create_scale_set(resource_group, name, instances, extension_settings=v0)
    compute = AzureCompute(
        subscription_id=emulator.subscription_id,
        resource_group=resource_group,
        vmss_name=name,
        extension_name="CustomScript",
        arm_endpoint=emulator.url,
        credential=credential_for(token),
        ca_bundle=str(emulator.ca_bundle),
        lro_poll_interval_s=0.05,
    )
    store = TableStateStore.from_connection_string(connection_string, prefix=table_prefix)
    service = RolloutService(
        target_key=f"{resource_group}:{name}",
        compute=compute,
        prober=HttpProber(port=emulator.instance_port, timeout_seconds=2, max_workers=64),
        store=store,
        notifier=LogNotifier(),
        clock=SystemClock(),
        policy=policy,
        extension=ExtensionDefaults(),
        release_container_url=URL,
    )
    release = Release(
        ReleaseKind.SCRIPT, "install_nginx", 1, "install_nginx.v1.sh", f"{URL}/install_nginx.v1.sh", "b" * 64
    )
    emulator.clear_requests()
    started = time.monotonic()
    try:
        outcome = service.start_release(release)
        if outcome.status is not OutcomeStatus.ADVANCED:
            raise RuntimeError(f"the release did not start: {outcome.status}: {outcome.message}")
        rollout_id = outcome.rollout_id or ""
        tick_seconds: list[float] = []
        phase = outcome.phase or Phase.QUEUED
        for _ in range(max_ticks):
            current = store.get_rollout(service.target_key, rollout_id)
            assert current is not None
            phase = current.phase
            if phase.is_terminal or phase is Phase.FAILED:
                break
            t0 = time.monotonic()
            service.tick()
            tick_seconds.append(time.monotonic() - t0)
            time.sleep(0.05)
        seconds = time.monotonic() - started
    finally:
        emulator.wait_idle(timeout=60)
        compute.close()
        store.close()
        emulator.delete_scale_set(resource_group, name)
    calls: list[Any] = [r.body["instanceIds"] for r in emulator.requests("POST", "/manualupgrade")]
    pages = len(emulator.requests("GET", "/virtualMachines"))
    return RolloutRun(
        instances=instances,
        phase=phase,
        ticks=len(tick_seconds),
        seconds=seconds,
        tick_seconds=tick_seconds,
        manualupgrade_calls=len(calls),
        upgraded_instances=sum(len(c) for c in calls),
        max_instances_per_call=max((len(c) for c in calls), default=0),
        extension_writes=len(emulator.requests("PUT", "/extensions/")),
        vm_list_pages_per_tick=pages / max(1, len(tick_seconds) + 2),
        peak_rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    )


def expected_batches(instances: int, policy: RolloutPolicy, canaries: int = 1) -> int:
    """Upgrade calls a clean rollout makes: the canary, then ceil(rest / batch size)."""
    size = min(policy.calculate_batch_size(instances), policy.calculate_max_unavailable(instances))
    return canaries + math.ceil((instances - canaries) / size)


__all__ = ["Path", "RolloutRun", "expected_batches", "run_rollout"]
