"""A whole rollout over a large synthetic fleet, through the real adapters: the ARM emulator over
HTTPS (azure-mgmt-compute/network), Azurite tables (azure-data-tables) and real HTTP probes of every
instance. Shared by the slow scale test (small N in CI) and ``bench/run.py`` (large N)."""

from __future__ import annotations

import contextlib
import math
import resource
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from emulator.arm import ArmEmulator
from rollout.adapters.probe import HttpProber
from rollout.bootstrap import build_compute, build_release_blobs, build_service, build_store
from rollout.model import Phase, Release, ReleaseKind
from rollout.policy import RolloutPolicy
from rollout.service import OutcomeStatus
from rollout.settings import load_settings

SUBSCRIPTION = "00000000-0000-0000-0000-00000000bead"
TOKEN = "bench-token"


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
    """Create an ``instances``-strong served synthetic scale set and run one release to the end.

    The service is wired by the composition root (``rollout.bootstrap``) from settings, as in the
    function app; only the adapters' timings are tuned for a fast benchmark."""
    policy = policy or RolloutPolicy(bake_seconds=0, batch_percent=20, max_unavailable_percent=20)
    settings = replace(
        load_settings(
            {
                "AZURE_SUBSCRIPTION_ID": emulator.subscription_id,
                "VMSS_RESOURCE_GROUP": resource_group,
                "VMSS_NAME": name,
                "ARM_ENDPOINT": emulator.url,
                "ARM_CA_BUNDLE": str(emulator.ca_bundle),
                "ARM_TOKEN": token,
                "StateStorage": connection_string,
                "ReleaseStorage": connection_string,
                "STATE_TABLE_PREFIX": table_prefix,
                "PROBE_PORT": str(emulator.instance_port),
                "PROBE_TIMEOUT_SECONDS": "2",
            }
        ),
        policy=policy,
    )
    compute = build_compute(settings, lro_poll_interval_s=0.05)
    store = build_store(settings)
    service = build_service(settings, compute=compute, store=store, prober=HttpProber(settings.probe, max_in_flight=64))
    url = service.release_container_url or ""
    # The script the scale set runs now must exist in the release container: pre-flight refuses a release
    # whose rollback could not restore it (rollout/preflight.py).
    blobs = build_release_blobs(settings)
    assert blobs is not None
    with contextlib.closing(blobs):
        blobs.ensure_container()
        blobs.upload("install_nginx.sh", b"#!/bin/bash\necho v0\n", overwrite=True)
    v0 = {"fileUris": [f"{url}/install_nginx.sh"], "commandToExecute": "bash install_nginx.sh"}
    emulator.create_scale_set(resource_group, name, instances, extension_settings=v0)
    release = Release(
        ReleaseKind.SCRIPT, "install_nginx", 1, "install_nginx.v1.sh", f"{url}/install_nginx.v1.sh", "b" * 64
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
