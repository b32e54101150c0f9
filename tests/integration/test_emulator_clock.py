"""The ARM emulator on a clock that skips idle time (``ArmEmulator(clock=SkipClock())``, ``python -m emulator serve
--skip-clock``), driven over HTTPS through its admin API as the makespan benchmark drives it: an upgrade of
120 s ends when the clock is jumped to its due time, not before, and not after 120 real seconds; the admin API
reports the next pending event and the work in flight; the timestamps it renders and logs are virtual. On real
time (the default) the clock cannot be jumped."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from emulator.arm import ArmEmulator
from emulator.clock import SkipClock
from tests.fixtures.emulator import EMULATOR_TOKEN, SUBSCRIPTION_ID

pytestmark = pytest.mark.integration

RG, NAME = "rg-clock", "vmss-clock"


@pytest.fixture
def skipping(tmp_path: Path) -> Iterator[ArmEmulator]:
    emu = ArmEmulator(
        token=EMULATOR_TOKEN,
        state_dir=tmp_path,
        subscription_id=SUBSCRIPTION_ID,
        address_base="127.0.18.1",
        retry_after=0.05,
        clock=SkipClock(),
    )
    emu.start()
    try:
        emu.create_scale_set(RG, NAME, 3, upgrade_seconds=120, serve=False)
        yield emu
    finally:
        emu.stop()


def call(emu: ArmEmulator, method: str, path: str, body: Any = None) -> requests.Response:
    return requests.request(
        method,
        f"{emu.url}{path}",
        headers={"Authorization": f"Bearer {EMULATOR_TOKEN}"},
        json=body,
        verify=emu.ca_bundle,
        timeout=30,
    )


def clock(emu: ArmEmulator) -> dict[str, Any]:
    answer = call(emu, "GET", "/_admin/clock")
    assert answer.status_code == 200
    body: dict[str, Any] = answer.json()
    return body


def advance(emu: ArmEmulator, seconds: float) -> dict[str, Any]:
    answer = call(emu, "POST", "/_admin/clock", {"advance": seconds})
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def settled(emu: ArmEmulator) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    state = clock(emu)
    while state["in_flight"] and time.monotonic() < deadline:
        time.sleep(0.01)
        state = clock(emu)
    return state


def test_a_jump_ends_an_upgrade_at_its_virtual_due_time(skipping: ArmEmulator) -> None:
    emu = skipping
    start = clock(emu)
    assert start["skips"] is True and start["offset"] == 0 and start["next_event_in"] is None
    assert start["in_flight"] == 0
    sub = f"/subscriptions/{SUBSCRIPTION_ID}/resourceGroups/{RG}/providers/Microsoft.Compute"
    answer = call(
        emu, "POST", f"{sub}/virtualMachineScaleSets/{NAME}/reimage?api-version=2024-07-01", {"instanceIds": ["0"]}
    )
    assert answer.status_code == 202, answer.text
    scale_set = emu.scale_set(RG, NAME)
    canary = scale_set.instances["0"]
    pending = clock(emu)
    assert pending["next_event_in"] == pytest.approx(120, abs=2) and pending["in_flight"] == 0
    assert canary.updating

    state = advance(emu, 100)  # not yet due
    assert state["offset"] == 100 and state["next_event_in"] == pytest.approx(20, abs=2)
    time.sleep(0.2)
    assert canary.updating  # 100 s of virtual time, 0.2 s of real: still upgrading

    advance(emu, state["next_event_in"])  # exactly to its due time: the driver's jump to the next event
    state = settled(emu)
    assert state["in_flight"] == 0 and state["next_event_in"] is None
    assert not canary.updating and canary.provisioning_state == "Succeeded"
    # Rendered and logged on the virtual clock: the instance changed 120 s after the request was logged.
    logged = next(r for r in emu.requests("POST", "reimage", path_regex=None, include_polls=False))
    assert (canary.changed - logged.time).total_seconds() >= 119
    assert canary.changed.timestamp() == pytest.approx(time.time() + state["offset"], abs=5)
    status = call(
        emu, "GET", f"{sub}/virtualMachineScaleSets/{NAME}/virtualMachines/0/instanceView?api-version=2024-07-01"
    )
    assert status.status_code == 200
    times = [datetime.fromisoformat(s["time"]) for s in status.json().get("statuses", []) if "time" in s]
    assert times and max(t.timestamp() for t in times) > time.time() + 100  # virtual, not real


def test_a_real_time_emulator_refuses_a_jump_and_says_it_does_not_skip(tmp_path: Path) -> None:
    emu = ArmEmulator(token=EMULATOR_TOKEN, state_dir=tmp_path, address_base="127.0.18.101")
    emu.start()
    try:
        state = clock(emu)
        assert state["skips"] is False and state["offset"] == 0
        refused = call(emu, "POST", "/_admin/clock", {"advance": 60})
        assert refused.status_code == 400 and "real time" in refused.text
    finally:
        emu.stop()


def test_a_bad_jump_is_refused(skipping: ArmEmulator) -> None:
    for bad in (-5, "ten", True, None):
        answer = call(skipping, "POST", "/_admin/clock", {"advance": bad})
        assert answer.status_code == 400, bad
    assert clock(skipping)["offset"] == 0
