"""A whole rollout through the function app with every notification channel failing: Azurite (blobs, tables,
both queues), the ARM emulator over HTTPS, real probes, the real SDK clients. The rollout reaches Succeeded
exactly as it does with no notifications configured (the same ARM calls), its trail records no failure, each
phase change is on the notification queue, and the local Functions host's ``deliver_notification`` retries
each one and dead-letters it: nothing a channel does reaches the rollout."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.functions.timer import TimerRequest

import function_app
from emulator import appindex
from emulator.funchost import LocalFunctionsHost, QueueOptions
from rollout import bootstrap
from rollout.model import EventKind, Phase
from rollout.notifications import Envelope, NotificationKind
from tests.fixtures.appenv import app_under_test, drain_tick_queue, fire_release_uploaded, queued_notifications
from tests.fixtures.receiver import Receiver, run_receiver

pytestmark = pytest.mark.integration

CHANNEL_PATHS = {"webhook": "/hook", "teams": "/teams", "slack": "/slack"}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with run_receiver(slow_seconds=2) as r:
        yield r


def _rollout(
    azurite: Any,
    azurite_names: Any,
    make_scale_set: Any,
    arm_emulator: Any,
    monkeypatch: pytest.MonkeyPatch,
    notify: dict[str, str],
) -> tuple[dict[str, str], str, list[list[str]]]:
    """Upload v1 to a fresh scale set of 3 and tick it to its end; the env, the rollout id and its upgrade calls."""
    setup = app_under_test(
        azurite, azurite_names, make_scale_set, arm_emulator, monkeypatch, size=3, BAKE_SECONDS="1", **notify
    )
    for name in ("NOTIFY_WEBHOOK_URL", "NOTIFY_TEAMS_WEBHOOK_URL", "NOTIFY_SLACK_WEBHOOK_URL"):
        if name not in notify:
            monkeypatch.delenv(name, raising=False)
    arm_emulator.clear_requests()
    setup.blobs.upload("install_nginx.v1.sh", b"#!/bin/bash\necho v1\n")
    fire_release_uploaded(function_app.app, setup.container, "install_nginx.v1.sh")
    service = bootstrap.fleet_from_environment().service(
        setup.handle.resource_group.lower() + ":" + setup.handle.name.lower()
    )
    (rollout,) = service.list()[1]
    deadline = time.monotonic() + 90
    while service.get(rollout.id)[0].phase is not Phase.SUCCEEDED and time.monotonic() < deadline:
        appindex.user_function(function_app.app, "advance_rollouts")(timer=TimerRequest(past_due=False))
        drain_tick_queue(function_app.app, setup.env)
        time.sleep(0.15)
    assert service.get(rollout.id)[0].phase is Phase.SUCCEEDED
    calls = [r.body["instanceIds"] for r in arm_emulator.requests("POST", "/manualupgrade")]
    setup.blobs.close()
    return setup.env, rollout.id, calls


def _queued(env: dict[str, str], queue: str) -> list[Envelope]:
    return queued_notifications(env["TickQueue"], queue)


def test_a_rollout_completes_the_same_when_every_channel_fails(
    azurite: Any,
    azurite_names: Any,
    make_scale_set: Any,
    arm_emulator: Any,
    monkeypatch: pytest.MonkeyPatch,
    receiver: Receiver,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    for path in CHANNEL_PATHS.values():
        receiver.on(path, *(["500", "slow", "503"] * 20))  # never takes one
    queue = f"notify-{azurite_names.token}"
    notify = {
        "NOTIFY_QUEUE": queue,
        "NOTIFY_WEBHOOK_URL": receiver.url + CHANNEL_PATHS["webhook"],
        "NOTIFY_TEAMS_WEBHOOK_URL": receiver.url + CHANNEL_PATHS["teams"],
        "NOTIFY_SLACK_WEBHOOK_URL": receiver.url + CHANNEL_PATHS["slack"],
        "NOTIFY_MAX_ATTEMPTS": "2",
        "NOTIFY_RETRY_BASE_SECONDS": "0",
        "NOTIFY_TIMEOUT_SECONDS": "1",
    }
    with caplog.at_level(logging.INFO, logger="function_app"):
        env, rid, calls = _rollout(azurite, azurite_names, make_scale_set, arm_emulator, monkeypatch, notify)

    # The same ARM calls as a rollout of 3 with no notifications: the canary, then one batch per instance.
    assert calls == [["0"], ["1"], ["2"]]
    service = bootstrap.fleet_from_environment().service(
        next(iter(bootstrap.fleet_from_environment().config.targets())).key
    )
    rollout, events = service.get(rid)
    assert rollout.phase is Phase.SUCCEEDED
    assert not [e for e in events if e.kind is EventKind.ACTION_FAILED]
    # Each phase change waits on the queue; no channel has been called by the rollout itself.
    waiting = _queued(env, queue)
    assert [e.notification.kind for e in waiting] == [
        NotificationKind.CANARY_STARTED,
        NotificationKind.CANARY_PASSED,
        NotificationKind.BAKE_PASSED,
        NotificationKind.SUCCEEDED,
    ]
    assert receiver.received == []
    # advance_target's lines name the target, the rollout and the phase it left the rollout in.
    ticks = [r for r in caplog.records if r.name == "function_app" and r.getMessage().startswith("advance_target ")]
    assert ticks and {getattr(r, "target", "") for r in ticks} == {service.target_key}
    assert {getattr(r, "rollout_id", "") for r in ticks} == {rid}
    assert getattr(ticks[-1], "phase", "") == "Succeeded"
    assert all(f"target={service.target_key}" in r.getMessage() for r in ticks)

    host = LocalFunctionsHost(
        function_app.app,
        env=env,
        http_port=0,
        state_dir=tmp_path,
        functions=["deliver_notification"],
        queue_options=QueueOptions.from_host_json(Path(function_app.__file__).parent, max_polling_interval_seconds=0.3),
    )
    with host:
        deadline = time.monotonic() + 60
        while len(_queued(env, f"{queue}-poison")) < 4 and time.monotonic() < deadline:
            time.sleep(0.3)
    dead = _queued(env, f"{queue}-poison")
    assert sorted(d.notification.kind for d in dead) == sorted(e.notification.kind for e in waiting)
    assert all(d.pending == ("slack", "teams", "webhook") and d.attempt == 2 for d in dead)
    for path in CHANNEL_PATHS.values():
        assert len(receiver.at(path)) == 4 * 2  # two attempts of each of the four notifications
    assert _queued(env, queue) == []
    # And the rollout is as it was.
    assert service.get(rid)[0].phase is Phase.SUCCEEDED
