"""Notification delivery through the local twin: the real queue client puts notifications on Azurite's
queue, the local Functions host runs function_app.py's ``deliver_notification`` on them, and a local
receiver (tests/fixtures/receiver.py) records what each channel got, with failures injected: 5xx,
a server slower than the timeout, Teams' throttling answer. Retries back off, a channel that never
takes it is dead-lettered after NOTIFY_MAX_ATTEMPTS, the channels that took it are not sent it again,
and no URL or key appears in any payload or log line."""

from __future__ import annotations

import json
import logging
import typing
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import azure.functions as func
import pytest
from azure.storage.queue import QueueClient, QueueServiceClient

import function_app
from emulator import appindex
from emulator.funchost import LocalFunctionsHost, QueueOptions
from rollout.adapters.notify import DeliveryError, EventGridChannel, NotificationQueue, WebhookChannel
from rollout.model import EventKind, Phase, RolloutEvent
from rollout.notifications import Envelope, Notification, NotificationKind, notification_for
from tests.fixtures.appenv import queued_notifications
from tests.fixtures.azurite import AzuriteNames, AzuriteService
from tests.fixtures.receiver import Receiver, run_receiver

pytestmark = pytest.mark.integration

SECRET = "s3cr3t-Path-T0ken"  # part of every webhook URL, as Teams and Slack put their credential in the path
KEY = "topic-key-K3Y-value"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with run_receiver(slow_seconds=2.5) as r:
        yield r


@pytest.fixture
def queue_name(azurite: AzuriteService, azurite_names: AzuriteNames) -> Iterator[str]:
    name = f"n{azurite_names.token}"
    yield name
    with QueueServiceClient.from_connection_string(azurite.connection_string) as service:
        existing = {q.name for q in service.list_queues()}
        for leftover in {name, f"{name}-poison"} & existing:
            service.delete_queue(leftover)


def _env(azurite: AzuriteService, queue_name: str, receiver: Receiver) -> dict[str, str]:
    return {
        "TickQueue": azurite.connection_string,
        "NOTIFY_QUEUE": queue_name,
        "NOTIFY_WEBHOOK_URL": f"{receiver.url}/hook/{SECRET}",
        "NOTIFY_TEAMS_WEBHOOK_URL": f"{receiver.url}/teams/{SECRET}",
        "NOTIFY_SLACK_WEBHOOK_URL": f"{receiver.url}/slack/{SECRET}",
        "NOTIFY_EVENTGRID_ENDPOINT": f"{receiver.url}/api/events",
        "NOTIFY_EVENTGRID_KEY": KEY,
        "NOTIFY_MAX_ATTEMPTS": "3",
        "NOTIFY_RETRY_BASE_SECONDS": "1",
        "NOTIFY_TIMEOUT_SECONDS": "1",
    }


def _host(env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LocalFunctionsHost:
    for name, value in env.items():
        monkeypatch.setenv(name, value)  # the trigger reads its settings from the environment, as in Azure
    return LocalFunctionsHost(
        function_app.app,
        env=env,
        http_port=0,
        state_dir=tmp_path,
        functions=["deliver_notification"],
        queue_options=QueueOptions.from_host_json(Path(function_app.__file__).parent, max_polling_interval_seconds=0.3),
    )


def _note(kind: str = "RollingBack") -> Notification:
    event = RolloutEvent(
        "install_nginx-v7-abc",
        "rg:vmss",
        datetime(2026, 11, 30, 12, 0, tzinfo=UTC),
        EventKind.PHASE_CHANGED,
        f"Canary -> {kind}: 2 unhealthy observations of the canary",
        phase=Phase(kind),
    )
    n = notification_for(event, release="install_nginx v7")
    assert n is not None
    return n


def _poisoned(azurite: AzuriteService, queue_name: str) -> list[Envelope]:
    return queued_notifications(azurite.connection_string, f"{queue_name}-poison")


def test_each_channel_gets_its_payload_failures_retry_with_backoff_and_dead_letter_after_the_bound(
    azurite: AzuriteService,
    queue_name: str,
    receiver: Receiver,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    env = _env(azurite, queue_name, receiver)
    receiver.on(f"/hook/{SECRET}", "ok")
    receiver.on(f"/teams/{SECRET}", "500", "teams-429", "ok")  # two failures, then it takes it
    receiver.on(f"/slack/{SECRET}", "slow", "503", "slow")  # never takes it: dead-lettered after 3
    receiver.on("/api/events", "503", "ok")
    note = _note()
    publisher = NotificationQueue.from_connection_string(azurite.connection_string, queue_name)
    with caplog.at_level(logging.INFO), _host(env, tmp_path, monkeypatch) as host:
        publisher.publish(note)
        teams = receiver.wait_for(f"/teams/{SECRET}", 3, timeout=40)
        slack = receiver.wait_for(f"/slack/{SECRET}", 3, timeout=40)
        events = receiver.wait_for("/api/events", 2, timeout=40)
        host.wait_for_invocations("deliver_notification", 3, timeout=40, outcome="succeeded")
        deadline = datetime.now(UTC).timestamp() + 20
        while not _poisoned(azurite, queue_name) and datetime.now(UTC).timestamp() < deadline:
            host.wait_for_queue_polls("deliver_notification", 1)
    publisher.close()

    # The generic webhook took it the first time and never got it again (nor did any channel that took it).
    (hook,) = receiver.at(f"/hook/{SECRET}")
    assert hook.body == note.as_dict() and hook.headers["content-type"].startswith("application/json")
    assert [r.answered for r in teams] == ["500", "teams-429", "ok"]
    assert len(receiver.at(f"/teams/{SECRET}")) == 3 and len(receiver.at("/api/events")) == 2
    # Exponential backoff: 1 s, then 2 s between the attempts (NOTIFY_RETRY_BASE_SECONDS=1).
    gaps = [b.at - a.at for a, b in zip(teams, teams[1:], strict=False)]
    assert gaps[0] >= 0.9 and gaps[1] >= 1.9, gaps
    assert teams[0].body["attachments"][0]["contentType"] == "application/vnd.microsoft.card.adaptive"
    assert slack[0].body["blocks"] and "install_nginx v7" in slack[0].body["text"]
    # Event Grid: one CloudEvent in a batch, the key in its header.
    (cloud_event,) = events[-1].body
    assert events[-1].headers["content-type"] == "application/cloudevents-batch+json; charset=utf-8"
    assert events[-1].headers["aeg-sas-key"] == KEY
    assert events[-1].query == "api-version=2018-01-01"
    assert cloud_event["specversion"] == "1.0" and cloud_event["type"].endswith(NotificationKind.ROLLING_BACK)
    assert cloud_event["id"] == note.id
    # Slack never took it: after the third attempt it is in the dead-letter queue, for Slack alone, with why.
    (dead,) = _poisoned(azurite, queue_name)
    assert dead.pending == ("slack",) and dead.attempt == 3 and dead.notification == note
    assert dead.failures["slack"] in ("slack: timed out after 1s", "slack: HTTP 503")
    with QueueClient.from_connection_string(azurite.connection_string, queue_name) as main_queue:
        assert list(main_queue.peek_messages()) == []
    # No URL (its path is the secret) and no key in any payload, queue message or log line.
    payloads = [json.dumps(r.body) for r in receiver.received] + [dead.encode()]
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for text in [*payloads, logged]:
        assert SECRET not in text and KEY not in text and receiver.url not in text
    assert "dead-lettered after 3 attempts" in logged
    # The trigger's lines carry the invocation id and the rollout's fields (rollout.logcontext).
    own = [r for r in caplog.records if r.name == "rollout.notify" and "failed on attempt" in r.getMessage()]
    assert own and all(getattr(r, "invocation_id", "") for r in own)
    assert {getattr(r, "rollout_id", "") for r in own} == {note.rollout_id}
    assert {getattr(r, "target", "") for r in own} == {"rg:vmss"}


def test_a_message_that_is_not_a_notification_is_dropped_not_retried(
    azurite: AzuriteService,
    queue_name: str,
    receiver: Receiver,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    env = _env(azurite, queue_name, receiver)
    publisher = NotificationQueue.from_connection_string(azurite.connection_string, queue_name)
    publisher._ensure(publisher._client)
    with caplog.at_level(logging.ERROR, logger="function_app"), _host(env, tmp_path, monkeypatch) as host:
        publisher._client.send_message('{"notification": {"schema": "something else"}}')
        (invocation,) = host.wait_for_invocations("deliver_notification", 1, timeout=20)
        assert invocation.outcome == "succeeded"
        host.wait_for_queue_polls("deliver_notification", 2)
    publisher.close()
    assert receiver.received == []
    assert _poisoned(azurite, queue_name) == []
    assert any("dropping message" in r.getMessage() for r in caplog.records)


class _Context:
    """What the host passes as ``context`` (the attribute the triggers read)."""

    invocation_id = "3f1c6f7e-invocation"


def test_the_triggers_log_lines_carry_their_invocation_id(caplog: pytest.LogCaptureFixture) -> None:
    bad_tick = func.QueueMessage(id="m1", body=b"not a tick")
    bad_note = func.QueueMessage(id="m2", body=b'{"notification": 1}')
    with caplog.at_level(logging.ERROR, logger="function_app"):
        function_app.advance_target(bad_tick, _Context())  # type: ignore[arg-type]
        function_app.deliver_notification(bad_note, _Context())  # type: ignore[arg-type]
    dropped = [r for r in caplog.records if "dropping message" in r.getMessage()]
    assert len(dropped) == 2
    for record in dropped:
        assert record.invocation_id == _Context.invocation_id  # type: ignore[attr-defined]
        assert f"invocation_id={_Context.invocation_id}" in record.getMessage()


@pytest.mark.parametrize("name", ["release_uploaded", "advance_rollouts", "advance_target", "deliver_notification"])
def test_each_non_http_trigger_declares_the_context_the_worker_passes(name: str) -> None:
    """The Python worker passes the invocation's context to a parameter named ``context`` whose resolved annotation
    (``typing.get_type_hints``) is a type named ``Context``, and refuses to load the function otherwise
    (Azure/azure-functions-python-worker azure_functions_worker/functions.py, ``Registry.is_context_required``)."""

    hints = typing.get_type_hints(appindex.user_function(function_app.app, name))
    assert isinstance(hints["context"], type) and hints["context"].__name__ == "Context"


class _Credential:
    """A TokenCredential: records the scopes asked for; ``fail`` raises as an identity endpoint would."""

    def __init__(self, fail: bool = False) -> None:
        self.scopes: list[tuple[str, ...]] = []
        self.fail = fail

    def get_token(self, *scopes: str, **kwargs: object) -> object:
        self.scopes.append(scopes)
        if self.fail:
            raise RuntimeError(f"IMDS at http://169.254.169.254 refused {SECRET}")
        return type("Token", (), {"token": "entra-token-value", "expires_on": 2**31})()


def test_event_grid_with_the_managed_identity_sends_a_bearer_token_for_event_grid(receiver: Receiver) -> None:
    credential = _Credential()
    channel = EventGridChannel(f"{receiver.url}/api/events", credential=credential, timeout=2)  # type: ignore[arg-type]
    channel.deliver(_note())
    (got,) = receiver.at("/api/events")
    assert got.headers["authorization"] == "Bearer entra-token-value" and "aeg-sas-key" not in got.headers
    assert credential.scopes == [("https://eventgrid.azure.net/.default",)]
    failing = EventGridChannel(f"{receiver.url}/api/events", credential=_Credential(fail=True))  # type: ignore[arg-type]
    with pytest.raises(DeliveryError) as raised:
        failing.deliver(_note())
    assert str(raised.value) == "eventgrid: no token for Event Grid (RuntimeError)"  # nothing of the identity's text


def test_a_redirect_or_a_refused_connection_is_a_failure_that_names_no_url(receiver: Receiver) -> None:
    receiver.on(f"/hook/{SECRET}", "302")
    with pytest.raises(DeliveryError, match=r"^webhook: HTTP 302$"):
        WebhookChannel("webhook", f"{receiver.url}/hook/{SECRET}", timeout=2).deliver(_note())
    with pytest.raises(DeliveryError) as raised:
        WebhookChannel("slack", f"http://127.0.0.1:9/{SECRET}", timeout=2).deliver(_note())  # port 9: nothing listens
    assert str(raised.value) == "slack: connection failed"
