"""The fan-out through the function app: the local Functions host runs ``function_app.py``'s timer and
queue trigger against Azurite (state tables and the tick queue) and the ARM emulator. The timer puts one
message per target with work on the queue and makes no ARM call itself; the queue trigger advances
exactly that target; a message delivered twice does no harm.

Several targets come from a targets document (``TARGETS_CONFIG``) in the release container, as an
operator would declare them."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from azure.storage.queue import QueueClient, TextBase64DecodePolicy, TextBase64EncodePolicy

import function_app
from emulator.funchost import LocalFunctionsHost, QueueOptions
from rollout import bootstrap
from rollout.fanout import TickMessage, decode_tick
from rollout.model import EventKind, Phase
from rollout.releases import build_release, parse_release_name
from rollout.settings import ProbeSettings
from rollout.targets import Target, TargetRef
from tests.fixtures.appenv import app_under_test
from tests.fixtures.emulator import SUBSCRIPTION_ID

pytestmark = pytest.mark.integration
NEVER = "0 0 0 1 1 *"
V1 = b"#!/bin/bash\necho v1\n"


@dataclass
class Fleet:
    env: dict[str, str]
    handles: list[Any]
    targets: list[Target]
    release_url: str

    def service(self, index: int) -> Any:
        return bootstrap.fleet_from_environment().service(self.targets[index].key)

    def start(self, index: int) -> str:
        name = parse_release_name("install_nginx.v1.sh")
        assert not isinstance(name, str)
        outcome = self.service(index).start_release(build_release(name, self.release_url, V1))
        assert outcome.rollout_id, outcome
        return str(outcome.rollout_id)

    def queued(self) -> list[TickMessage]:
        with QueueClient.from_connection_string(
            self.env["TickQueue"], self.env["TICK_QUEUE"], message_decode_policy=TextBase64DecodePolicy()
        ) as client:
            return [decode_tick(str(m.content)) for m in client.peek_messages(max_messages=32)]


@pytest.fixture
def fleet(
    azurite: Any,
    azurite_names: Any,
    make_scale_set: Any,
    arm_emulator: Any,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> Iterator[Fleet]:
    count, overrides = getattr(request, "param", (3, {"BAKE_SECONDS": "1"}))
    # The engine's own earlier looks are off unless a test turns them on: these tests count the ticks.
    overrides = {"LOOK_INTERVAL_SECONDS": "0", **overrides}
    setup = app_under_test(azurite, azurite_names, make_scale_set, arm_emulator, monkeypatch, size=2, **overrides)
    env = {**setup.env, "ROLLOUT_TICK_SCHEDULE": NEVER}
    # The other scale sets run v0 as the first one does (app_under_test uploaded it).
    extension = {
        "fileUris": [f"{setup.blobs.container_url}/install_nginx.sh"],
        "commandToExecute": "bash install_nginx.sh",
    }
    handles = [setup.handle] + [make_scale_set(2, extension_settings=extension) for _ in range(count - 1)]
    probe = ProbeSettings(port=setup.handle.port, timeout_seconds=1)
    targets = [Target(TargetRef(SUBSCRIPTION_ID, h.resource_group, h.name), probe=probe) for h in handles]
    probe_settings = {"PROBE_PORT": setup.handle.port, "PROBE_TIMEOUT_SECONDS": 1}
    document = {
        "groups": [
            {
                "name": "default",
                "waves": [
                    {"targets": [{"resourceGroup": h.resource_group, "name": h.name, "probe": probe_settings}]}
                    for h in handles
                ],
            }
        ]
    }
    setup.blobs.upload("targets.json", json.dumps(document).encode())
    env["TARGETS_CONFIG"] = "targets.json"
    monkeypatch.setenv("TARGETS_CONFIG", "targets.json")
    assert [t.key for t in bootstrap.fleet_from_environment().config.targets()] == [t.key for t in targets]
    release_url = setup.blobs.upload("install_nginx.v1.sh", V1)
    yield Fleet(env, handles, targets, release_url)
    setup.blobs.close()


def _host(fleet: Fleet, tmp_path: Path) -> LocalFunctionsHost:
    return LocalFunctionsHost(
        function_app.app,
        env=fleet.env,
        http_port=0,
        state_dir=tmp_path,
        functions=["advance_rollouts", "advance_target"],
        queue_options=QueueOptions.from_host_json(Path(function_app.__file__).parent, max_polling_interval_seconds=0.3),
    )


def _arm_paths(arm_emulator: Any) -> list[str]:
    return [r.path for r in arm_emulator.requests(include_polls=True)]


def test_the_timer_enqueues_one_message_per_target_with_work_and_each_advances_only_its_target(
    fleet: Fleet, arm_emulator: Any, tmp_path: Path
) -> None:
    first, third = fleet.start(0), fleet.start(2)  # the second scale set has no release: no work
    arm_emulator.wait_idle(timeout=30)
    arm_emulator.clear_requests()
    with _host(fleet, tmp_path) as host:
        host.trigger("advance_rollouts")
        # The timer read only the state store: not one ARM request.
        assert _arm_paths(arm_emulator) == []
        ticks = host.wait_for_invocations("advance_target", 2, timeout=30, outcome="succeeded")
        host.wait_for_queue_polls("advance_target", 3)
        assert len([i for i in host.invocations if i.function == "advance_target"]) == 2
        assert len(ticks) == 2
    paths = _arm_paths(arm_emulator)
    names = [h.name for h in fleet.handles]
    assert any(f"/virtualMachineScaleSets/{names[0]}" in p for p in paths)
    assert any(f"/virtualMachineScaleSets/{names[2]}" in p for p in paths)
    assert not any(f"/virtualMachineScaleSets/{names[1]}" in p for p in paths)
    # Each tick advanced its own rollout (its audit trail gained a step after the start).
    for index, rollout_id in ((0, first), (2, third)):
        rollout, _events = fleet.service(index).get(rollout_id)
        assert rollout.phase in (Phase.CANARY, Phase.BAKING, Phase.PROMOTING)
    assert fleet.queued() == []


def test_no_work_no_message(fleet: Fleet, arm_emulator: Any, tmp_path: Path) -> None:
    with _host(fleet, tmp_path) as host:
        host.trigger("advance_rollouts")
        host.wait_for_queue_polls("advance_target", 3)
        assert [i.function for i in host.invocations] == ["advance_rollouts"]
    assert _arm_paths(arm_emulator) == []


def test_a_message_delivered_twice_is_harmless(fleet: Fleet, arm_emulator: Any, tmp_path: Path) -> None:
    rollout_id = fleet.start(0)
    service = fleet.service(0)
    # Tick until the canary has baked, so the next tick has a write to make (start the first batch).
    deadline = time.monotonic() + 60
    while service.get(rollout_id)[0].phase is not Phase.BAKING and time.monotonic() < deadline:
        arm_emulator.wait_idle(timeout=30)
        service.tick()
        time.sleep(0.2)
    assert service.get(rollout_id)[0].phase is Phase.BAKING
    time.sleep(1.5)  # BAKE_SECONDS=1 has passed
    arm_emulator.clear_requests()
    fanout = bootstrap.fanout_from_environment()
    now = fanout.now()
    duplicate = TickMessage(fleet.targets[0].key, now, now)
    fanout.sender.send(duplicate, 0)
    fanout.sender.send(duplicate, 0)  # the same message again: at-least-once delivery
    with _host(fleet, tmp_path) as host:  # batchSize 16: both are fetched in one batch and run at once
        host.wait_for_invocations("advance_target", 2, timeout=30)
        host.wait_for_queue_polls("advance_target", 3)
        assert {i.outcome for i in host.invocations} == {"succeeded"}
    arm_emulator.wait_idle(timeout=30)
    upgrades = arm_emulator.requests("POST", "/manualupgrade")
    assert [r.body["instanceIds"] for r in upgrades] == [["1"]]  # the batch, once
    rollout, events = service.get(rollout_id)
    assert [e.kind for e in events].count(EventKind.BATCH_STARTED) == 1
    assert rollout.phase in (Phase.PROMOTING, Phase.SUCCEEDED)


# ---- the engine's own earlier looks (rollout.cadence) ---------------------------------------------------


@pytest.mark.parametrize("fleet", [(1, {"BAKE_SECONDS": "2", "LOOK_INTERVAL_SECONDS": "1"})], indirect=True)
def test_with_the_timer_never_firing_the_engines_own_looks_carry_a_rollout_to_the_end(
    fleet: Fleet, arm_emulator: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The start asks for a look while its canary upgrades: a tick message for the target, invisible for
    LOOK_INTERVAL_SECONDS, on the real queue. From there each look asks for the next (the bake's end, the
    batch), so the queue trigger alone, with the timer never firing, takes the rollout to Succeeded."""
    for name, value in fleet.env.items():
        monkeypatch.setenv(name, value)
    rollout_id = fleet.start(0)
    assert fleet.queued() == []  # invisible for now
    time.sleep(1.5)
    (look,) = fleet.queued()
    assert look.target == fleet.targets[0].key and look.look is not None and look.look.startswith(f"{rollout_id}|")
    assert (look.not_before - look.enqueued_at).total_seconds() == 1
    with _host(fleet, tmp_path) as host:
        deadline = time.monotonic() + 90
        while fleet.service(0).get(rollout_id)[0].phase is not Phase.SUCCEEDED and time.monotonic() < deadline:
            time.sleep(0.5)
        assert fleet.service(0).get(rollout_id)[0].phase is Phase.SUCCEEDED
        ticks = [i for i in host.invocations if i.function == "advance_target"]
        assert not [i for i in host.invocations if i.function == "advance_rollouts"]
        assert {i.outcome for i in ticks} == {"succeeded"}
        assert len(ticks) >= 3  # at least: the canary done, the bake's end, the batch done
    upgrades = arm_emulator.requests("POST", "/manualupgrade")
    assert sorted(i for r in upgrades for i in r.body["instanceIds"]) == ["0", "1"]  # each instance once


# ---- ARM's subscription read bucket -------------------------------------------------------------------

# Under the emulator's bucket below (12, 4 a second) with a margin, as the defaults stay under ARM's
# (100 and 20 against 250 and 25): a budget equal to the bucket drew a 429 whenever a tick fired early.
SPREAD = {"TICK_READ_BURST": "9", "TICK_READ_RATE": "3"}
NO_SPREAD = {"TICK_READ_BURST": "100000", "TICK_READ_RATE": "1000"}  # every message visible at once


def _tick_every_target_once(
    fleet: Fleet, arm_emulator: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[int, float]:
    """Start a rollout on every target, then shrink the emulator's read bucket to 12 reads refilled 4 a
    second (ARM's is 250 and 25: the same shape, a smaller fleet) and let one timer run tick them all
    through the queue. Returns the reads ARM answered 429, and the seconds between the first and last tick."""
    for index in range(len(fleet.targets)):
        fleet.start(index)
    arm_emulator.wait_idle(timeout=60)
    for name, value in fleet.env.items():
        monkeypatch.setenv(name, value)
    arm_emulator.set_read_limit(12, 4)
    with _host(fleet, tmp_path) as host:
        host.trigger("advance_rollouts")
        ticks = host.wait_for_invocations("advance_target", len(fleet.targets), timeout=60)
        host.wait_for_queue_polls("advance_target", 2)
        assert {i.outcome for i in host.invocations} == {"succeeded"}
    assert len(ticks) == len(fleet.targets) == len(host.invocations) - 1  # one message per target
    starts = sorted(i.started_at for i in ticks)
    return int(arm_emulator.reads_throttled), (starts[-1] - starts[0]).total_seconds()


@pytest.mark.parametrize("fleet", [(12, {**SPREAD, "BAKE_SECONDS": "3600"})], indirect=True)
def test_with_the_spread_a_fleet_draws_no_429_from_the_subscription_read_bucket(
    fleet: Fleet, arm_emulator: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    throttled, spread_over = _tick_every_target_once(fleet, arm_emulator, tmp_path, monkeypatch)
    assert throttled == 0
    assert spread_over >= 5  # 36 reads, 9 at once, then 3 a second: the last tick at 9 s
    reads = arm_emulator.requests("GET")
    assert len(reads) >= 3 * 12  # every target observed: scale set, VMs, NICs


@pytest.mark.parametrize("fleet", [(12, {**NO_SPREAD, "BAKE_SECONDS": "3600"})], indirect=True)
def test_without_the_spread_the_same_fleet_draws_429s(
    fleet: Fleet, arm_emulator: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    throttled, spread_over = _tick_every_target_once(fleet, arm_emulator, tmp_path, monkeypatch)
    assert throttled > 0
    assert spread_over < 5


def test_malformed_and_unknown_messages_are_logged_and_dropped_never_crash(
    fleet: Fleet, arm_emulator: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fanout = bootstrap.fanout_from_environment()
    now = fanout.now()
    fanout.sender.send(TickMessage("rg:no-such-vmss", now, now), 0)  # no such target
    with QueueClient.from_connection_string(
        fleet.env["TickQueue"], fleet.env["TICK_QUEUE"], message_encode_policy=TextBase64EncodePolicy()
    ) as client:
        client.send_message('{"v": 1, "target": 5}')  # JSON, not a tick message
        client.send_message("[" * 3000)  # not even JSON
    with QueueClient.from_connection_string(fleet.env["TickQueue"], fleet.env["TICK_QUEUE"]) as plain:
        plain.send_message("not base64 {}")  # the host poisons it without running the function
    arm_emulator.clear_requests()
    with caplog.at_level("ERROR", logger="function_app"), _host(fleet, tmp_path) as host:
        host.wait_for_invocations("advance_target", 4, timeout=30)
        host.wait_for_queue_polls("advance_target", 3)
        outcomes = sorted(i.outcome for i in host.invocations)
    assert outcomes == ["failed", "succeeded", "succeeded", "succeeded"]  # the failed one: decoding, by the host
    dropped = [r.getMessage() for r in caplog.records if "dropping message" in r.getMessage()]
    assert len(dropped) == 3 and any("no target 'rg:no-such-vmss'" in m for m in dropped)
    assert _arm_paths(arm_emulator) == []  # nothing was ticked
    assert fleet.queued() == []
    with QueueClient.from_connection_string(fleet.env["TickQueue"], f"{fleet.env['TICK_QUEUE']}-poison") as poison:
        assert [str(m.content) for m in poison.peek_messages(max_messages=32)] == ["not base64 {}"]
