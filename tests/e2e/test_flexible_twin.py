"""End to end on the local twin with a Flexible scale set: the function app under the local Functions
host, real nginx instances (release scripts in bubblewrap) that are standalone VMs named
``<scale set>_<hex>``, the balancer in front. A release goes out canary first and reaches every VM,
upgraded by name, with the "latest model" reading taken from the rollout's records (the emulator's
default: the VM list does not report it, as the REST shape of a VM has no latestModelApplied)."""

from __future__ import annotations

import shutil
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from emulator.twin import EXAMPLES, RESOURCE_GROUP, VMSS, Twin, TwinOptions, local_twin

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

OLD, V1 = "Welcome to nginx!", "Welcome to nginx on Azure VMSS!"
ENDED = ("Succeeded", "RolledBack", "Aborted", "Failed", "Rejected")


@pytest.fixture
def twin() -> Iterator[Twin]:
    if shutil.which("nginx") is None or shutil.which("bwrap") is None:
        pytest.fail("nginx and bubblewrap are needed: run `make setup`", pytrace=False)
    options = TwinOptions(
        instances=3,
        bake_seconds=4,
        tick_seconds=0.5,
        upgrade_seconds=0.3,
        failure_threshold=2,
        lb_address="127.0.9.8",  # addresses no other e2e test uses: a twin stopping late holds nothing of another
        address_base="127.0.61.1",
        orchestration="Flexible",
    )
    with local_twin(options, say=lambda line: None) as running:
        yield running


def wait_for(twin: Twin, version: int, phases: tuple[str, ...], timeout: float = 90) -> dict[str, Any]:
    rollout = twin.rollout_for(version)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, detail = twin.api("GET", f"rollouts/{rollout['id']}")
        assert status == 200
        if detail["phase"] in phases:
            return detail  # type: ignore[no-any-return]
        time.sleep(0.25)
    raise AssertionError(f"v{version} not in {phases} after {timeout} s: {detail['phase']} {detail['reason']}")


def titles_until(twin: Twin, expected: set[str], timeout: float = 15) -> set[str]:
    deadline = time.monotonic() + timeout
    seen: set[str] = set()
    while time.monotonic() < deadline:
        seen = set(twin.sample_titles(9))
        if seen == expected:
            return seen
        time.sleep(0.3)
    return seen


def test_a_release_reaches_every_vm_of_a_flexible_scale_set_canary_first(twin: Twin) -> None:
    scale_set = twin.emulator.scale_set(RESOURCE_GROUP, VMSS)
    names = [i.instance_id for i in scale_set.instances_in_order()]
    assert scale_set.orchestration_mode == "Flexible" and all(n.startswith(VMSS + "_") for n in names)
    assert titles_until(twin, {OLD}) == {OLD}

    twin.upload("install_nginx.v1.sh", EXAMPLES / "install_nginx.v1.sh")
    baking = wait_for(twin, 1, ("Baking",))
    assert len(baking["canary"]) == 1 and baking["canary"][0] in names
    assert titles_until(twin, {OLD, V1}) == {OLD, V1}  # the canary serves v1 among the old pages
    assert Counter(twin.instance_titles().values()) == Counter({OLD: 2, V1: 1})

    detail = wait_for(twin, 1, ENDED)
    assert detail["phase"] == "Succeeded", detail["reason"]
    assert titles_until(twin, {V1}) == {V1}
    assert set(twin.instance_titles().values()) == {V1}
    calls = [r.body["instanceIds"] for r in twin.emulator.requests("POST", "/manualupgrade")]
    assert calls[0] == baking["canary"] and sorted(n for call in calls for n in call) == sorted(names)
    assert [i.upgrades for i in scale_set.instances_in_order()] == [1, 1, 1]  # each VM once
    # Read through the Flexible APIs only: the filtered VM list, never the Uniform scale set VM list.
    reads = twin.emulator.requests("GET")
    assert any("$filter" in r.query and r.path.lower().endswith("/microsoft.compute/virtualmachines") for r in reads)
    assert not [
        r
        for r in reads
        if "/virtualmachinescalesets/" in r.path.lower()
        and "/virtualmachines" in r.path.lower().split("/virtualmachinescalesets/")[1]
    ]
