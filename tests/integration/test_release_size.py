"""A release blob far larger than any release, through the function app on the local Functions host.

The product's blob trigger binds to a ``BlobClient`` (the SDK-type binding), so neither the host nor
the function downloads a blob before its size is known. This test uploads a huge blob (in 4 MiB
blocks, never held in memory) to an Azurite that keeps its data on disk, lets the local host fire
``release_uploaded`` for it, and checks that the release is ``Rejected`` with the recorded reason
while this process (the local host runs the worker in-process) stays flat in memory; then a normal
release still starts.

CI runs it at ``BIG_RELEASE_MB`` = 64 (still 256 times the script limit): about 5 s. The 1 GB case is
``BIG_RELEASE_MB=1024 .venv/bin/python -m pytest tests/integration/test_release_size.py -s`` (about
30 s, most of it the upload; docs/design.md has the figures). With the former ``func.InputStream``
binding the host read the whole blob first, and this process grew by more than the blob's size.
"""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.storage.blob import BlobServiceClient, ContainerClient

import function_app
from emulator.azurite import AzuriteService, run_azurite
from emulator.funchost import LocalFunctionsHost
from rollout.adapters.tables import TableStateStore
from rollout.releases import MAX_SCRIPT_BYTES
from tests.fixtures.appenv import function_app_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MIB = 1024 * 1024
BIG_RELEASE_BYTES = int(os.environ.get("BIG_RELEASE_MB", "64")) * MIB
BLOCK = bytes(4 * MIB)  # one buffer of zeros, staged again and again
# The worker may grow a little (clients, table writes) but never by the blob: half the CI size.
MAX_GROWTH_BYTES = 32 * MIB


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"/proc/self/status has no {field}")


def _reset_peak_rss() -> None:
    """Linux: writing 5 to clear_refs resets VmHWM (the peak resident set) to the current RSS."""
    Path("/proc/self/clear_refs").write_text("5")


@pytest.fixture(scope="module")
def disk_azurite() -> Iterator[AzuriteService]:
    with run_azurite(on_disk=True) as service:  # its workspace (and the big blob) is deleted on exit
        yield service


def _upload_in_blocks(container: ContainerClient, name: str, size: int) -> float:
    """Stage ``size`` bytes of zeros as 4 MiB blocks and commit them; returns the seconds it took."""
    began = time.monotonic()
    blob = container.get_blob_client(name)
    ids = []
    for index in range(size // len(BLOCK)):
        block_id = base64.b64encode(f"{index:08d}".encode()).decode()
        blob.stage_block(block_id, BLOCK, length=len(BLOCK))
        ids.append(block_id)
    blob.commit_block_list(ids)
    return time.monotonic() - began


def test_a_huge_release_is_rejected_from_its_size_and_the_worker_stays_flat(
    disk_azurite: AzuriteService, azurite_names: Any, make_scale_set: Any, arm_emulator: Any, tmp_path: Path
) -> None:
    assert BIG_RELEASE_BYTES > 4 * MAX_SCRIPT_BYTES and BIG_RELEASE_BYTES % len(BLOCK) == 0
    conn = disk_azurite.connection_string
    handle = make_scale_set(
        3,
        extension_settings={
            "fileUris": ["https://x/init/install_nginx.sh"],
            "commandToExecute": "bash install_nginx.sh",
        },
    )
    env = function_app_env(
        handle,
        arm_emulator,
        conn,
        azurite_names.container,
        azurite_names.table_prefix,
        ROLLOUT_TICK_SCHEDULE="0 0 0 1 1 *",
    )
    service = BlobServiceClient.from_connection_string(conn)
    container = service.create_container(azurite_names.container)
    store = TableStateStore.from_connection_string(conn, azurite_names.table_prefix)
    target = f"{handle.resource_group}:{handle.name}"
    # Warm-up: a first (rejected) release loads every module and client the trigger uses, so the
    # measurement below sees what the big blob costs, not what the first invocation imports.
    container.upload_blob("warmup.v1.sh", b"")
    with LocalFunctionsHost(
        function_app.app,
        env=env,
        http_port=0,
        blob_poll_seconds=0.2,
        state_dir=tmp_path,
        functions=["release_uploaded"],
    ) as host:
        host.wait_for_invocations("release_uploaded", 1, timeout=30, outcome="succeeded")

        _reset_peak_rss()
        before_kib = _status_kib("VmRSS")
        upload_s = _upload_in_blocks(container, "install_nginx.v3.sh", BIG_RELEASE_BYTES)
        began = time.monotonic()
        invocations = host.wait_for_invocations("release_uploaded", 2, timeout=60)
        trigger_s = time.monotonic() - began
        growth = (_status_kib("VmHWM") - before_kib) * 1024
        assert invocations[-1].outcome == "succeeded", invocations[-1].error

        container.upload_blob("install_nginx.v4.sh", b"#!/bin/bash\necho v4\n")
        host.wait_for_invocations("release_uploaded", 3, timeout=60, outcome="succeeded")
        rollouts = {r.release.version: r for r in store.list_rollouts(target) if r.release.app == "install_nginx"}
    print(
        f"\n{BIG_RELEASE_BYTES // MIB} MiB release: upload {upload_s:.1f} s, trigger {trigger_s:.2f} s, "
        f"peak RSS growth {growth / MIB:.1f} MiB"
    )

    big = rollouts[3]
    assert big.phase.value == "Rejected"
    assert big.reason == (
        f"release is {BIG_RELEASE_BYTES} bytes; at most {MAX_SCRIPT_BYTES} are accepted for a script "
        "(it was not downloaded)"
    )
    assert big.release.sha256 == ""
    assert [e.kind for e in store.list_events(target, big.id)] == ["Rejected"]
    assert growth < MAX_GROWTH_BYTES, f"the worker grew by {growth / MIB:.1f} MiB for a blob it never needed"
    assert len(arm_emulator.requests("PUT", f"/{handle.name}/extensions/")) == 1  # only v4's, none for v3
    assert rollouts[4].phase.value == "Canary"  # a normal release still starts
    store.close()
    container.delete_container()
    service.close()
