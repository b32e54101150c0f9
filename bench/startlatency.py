"""Start latency (issue 13), part of ``bench/perf.py``: from a release blob's upload to the canary's
``manualupgrade`` request.

The function app (``function_app.py``) is hosted by the local Functions host (``emulator/funchost``) with only its
blob trigger, ``release_uploaded`` (declared ``source=EventGrid``, bound to a ``BlobClient``). There is no Event
Grid locally: the host lists the container every ``BLOB_POLL_S`` and fires on a new (name, ETag), which stands in
for the event's delivery (docs/funchost.md). So the figure is the app's own part (the trigger fired -> the canary's
``manualupgrade``) plus a local delivery delay of at most one poll; Event Grid's own delivery time in Azure is not
part of it. The ARM emulator runs in its own process (``bench.perf.emulator_process``), Azurite holds the blobs and
the state. Each run: a fresh scale set of synthetic instances, a fresh container and tables, a fresh host; the
upload is timed from just before ``upload_blob`` is called, the ``manualupgrade`` by the emulator's request log,
the invocation's start by the host.
"""

from __future__ import annotations

import statistics
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from bench.perf import RG, TOKEN, Emulator

BLOB_POLL_S = 0.2
V1 = b"#!/bin/bash\nset -e\napt-get install -y nginx\n"


@dataclass
class StartRun:
    to_trigger_s: float  # upload -> the host started release_uploaded (the local stand-in for Event Grid delivery)
    to_upgrade_s: float  # upload -> the canary's manualupgrade reached ARM
    canary_upgrades: int  # manualupgrade requests accepted (1: the canary's)


@dataclass
class StartLatency:
    instances: int
    runs: list[StartRun]

    @property
    def median_s(self) -> float:
        return statistics.median(r.to_upgrade_s for r in self.runs)

    @property
    def median_trigger_s(self) -> float:
        return statistics.median(r.to_trigger_s for r in self.runs)


def measure_start(emu: Emulator, storage: str, instances: int, runs: int, prefix: str = "") -> StartLatency:
    import function_app
    from emulator.funchost import LocalFunctionsHost
    from rollout.adapters.blobs import ReleaseBlobs

    results: list[StartRun] = []
    for n in range(runs):
        tag = f"{prefix}s{uuid.uuid4().hex[:8]}"
        name = f"start-{tag}"
        container = f"rel-{tag}".lower()
        blobs = ReleaseBlobs.from_connection_string(storage, container=container)
        blobs.ensure_container()
        v0_url = blobs.upload("install_nginx.sh", b"#!/bin/bash\necho v0\n")
        emu.create(name, instances, v0_url)
        env = {
            "AZURE_SUBSCRIPTION_ID": emu.subscription_id,
            "VMSS_RESOURCE_GROUP": RG,
            "VMSS_NAME": name,
            "ARM_ENDPOINT": emu.url,
            "ARM_CA_BUNDLE": emu.ca_bundle,
            "ARM_TOKEN": TOKEN,
            "ReleaseStorage": storage,
            "StateStorage": storage,
            "RELEASE_CONTAINER": container,
            "STATE_TABLE_PREFIX": f"st{tag}".replace("-", ""),
            "PROBE_PORT": str(emu.instance_port),
            "PROBE_TIMEOUT_SECONDS": "2",
            "TickQueue": storage,
            "TICK_QUEUE": f"ticks-{tag}".lower(),
        }
        with tempfile.TemporaryDirectory(prefix="bench-start-") as state:
            host = LocalFunctionsHost(
                function_app.app,
                env=env,
                http_port=0,
                blob_poll_seconds=BLOB_POLL_S,
                state_dir=Path(state),
                functions=["release_uploaded"],
            )
            with host:
                host.wait_for_invocations("release_uploaded", 1, timeout=30)  # the baseline's blob (v0) first
                emu.admin("DELETE", "requests")
                uploaded = time.time()
                blobs.upload("install_nginx.v1.sh", V1)
                host.wait_for_invocations("release_uploaded", 2, timeout=60)
                invocation = [i for i in host.invocations if i.function == "release_uploaded"][-1]
            upgrades = emu.admin("GET", "requests?method=POST&path_contains=manualupgrade")["requests"]
            accepted = [datetime.fromisoformat(r["time"]).timestamp() for r in upgrades if r["status"] < 300]
        emu.delete(name)
        blobs.close()
        if not accepted:
            raise RuntimeError(f"run {n}: the canary's manualupgrade never came: {invocation}")
        results.append(StartRun(invocation.started_at.timestamp() - uploaded, accepted[0] - uploaded, len(accepted)))
    return StartLatency(instances, results)


def report_lines(start: StartLatency) -> list[str]:
    return [
        "## Start latency",
        "",
        f"From a release blob's upload to the canary's `manualupgrade` reaching ARM, through the local Functions "
        f"host and the app's blob trigger (`release_uploaded`, `source=EventGrid`); {start.instances:,} synthetic "
        f"instances, median of {len(start.runs)} (a fresh scale set, container, tables and host each). There is no "
        f"Event Grid locally: the host lists the container every {BLOB_POLL_S:g} s instead (docs/funchost.md), so "
        "the delivery part below is that poll, not Event Grid's delivery time in Azure (bench/startlatency.py).",
        "",
        "| figure | median | slowest |",
        "|---|---:|---:|",
        f"| upload -> `release_uploaded` started (local delivery: the poll) | {start.median_trigger_s:.2f} s "
        f"| {max(r.to_trigger_s for r in start.runs):.2f} s |",
        f"| upload -> the canary's `manualupgrade` | {start.median_s:.2f} s "
        f"| {max(r.to_upgrade_s for r in start.runs):.2f} s |",
        f"| of which the app (trigger started -> `manualupgrade`) | "
        f"{statistics.median(r.to_upgrade_s - r.to_trigger_s for r in start.runs):.2f} s | |",
        "",
    ]
