"""Notifications: the log line, the queue they wait on, and the channels that deliver them.

* ``LogNotifier``: the decider's ``Notify`` actions as one structured log line each (in Azure it lands
  in Application Insights, where alert rules fire on it).
* ``NotificationQueue``: ``rollout.ports.NotificationSink`` on a Storage queue (``NOTIFY_QUEUE``). The
  service only enqueues (one short request, bounded retries and timeouts); the queue trigger
  ``deliver_notification`` (function_app.py) delivers, so a slow or broken channel never holds a tick.
  Messages are base64, as the queue trigger expects (see ``rollout.adapters.queue``).
* ``WebhookChannel`` (the generic JSON webhook, Teams, Slack) and ``EventGridChannel`` (a custom topic,
  CloudEvents 1.0): one POST each, with a timeout. A failure is a ``DeliveryError`` whose text is the
  channel's name and what went wrong (HTTP status, timeout, refused): never the URL (a webhook URL is
  its own secret: Teams and Slack put the credential in the path) and never a key.
* ``deliver``: one delivery attempt of one queue message to every pending channel, then what follows
  (``rollout.notifications.after_delivery``): done, a new message for the failed channels only,
  delayed by the backoff, or the dead-letter queue ``<NOTIFY_QUEUE>-poison`` after ``NOTIFY_MAX_ATTEMPTS``.
  The Functions host's own ``maxDequeueCount`` and poison queue (host.json) stay the backstop for an
  invocation that fails outright (MicrosoftDocs/azure-docs
  articles/azure-functions/functions-bindings-storage-queue-trigger.md, "Poison messages": "When a queue
  trigger function fails, Azure Functions retries the function up to five times for a given queue
  message, including the first try. If all five attempts fail, the functions runtime adds a message to
  a queue named <originalqueuename>-poison"; host.json sets ``maxDequeueCount`` 3 here).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol

import requests
from azure.core.credentials import TokenCredential
from azure.core.exceptions import ResourceExistsError
from azure.storage.queue import QueueClient, TextBase64DecodePolicy, TextBase64EncodePolicy

from rollout.adapters.tables import map_storage_errors
from rollout.logcontext import log_context
from rollout.model import Phase, Rollout
from rollout.notifications import (
    DeadLetter,
    Delivered,
    Envelope,
    Notification,
    Retry,
    after_delivery,
    render,
)

log = logging.getLogger("rollout.notify")

# The enqueue runs inside a tick: a few seconds at most, one retry (a failed enqueue is logged and
# recorded, never retried by the rollout).
ENQUEUE_CLIENT_OPTIONS: Final[Mapping[str, Any]] = {
    "retry_total": 1,
    "retry_backoff_factor": 0.2,
    "connection_timeout": 3,
    "read_timeout": 5,
}
# Event Grid's Microsoft Entra audience: "the audience (the intended recipient of the token) is confirmed
# to be Event Grid (`https://eventgrid.azure.net`)" (MicrosoftDocs/azure-docs
# articles/event-grid/authenticate-with-microsoft-entra-id.md); the scope is that audience + /.default.
EVENTGRID_SCOPE: Final = "https://eventgrid.azure.net/.default"
# A custom topic takes CloudEvents 1.0 in its JSON format; several events go as a JSON array with the
# batch media type (cloudevents/spec v1.0 json-format.md, "Envelope" and "JSON Batch Format";
# MicrosoftDocs/azure-docs articles/event-grid/cloudevents-schema.md: Event Grid "natively supports events
# in the JSON implementation of CloudEvents v1.0 and HTTP protocol binding"). Key auth sends the topic key
# in the ``aeg-sas-key`` header (articles/event-grid/post-to-custom-topic.md, "Header").
CLOUDEVENTS_BATCH: Final = "application/cloudevents-batch+json; charset=utf-8"
# "To publish events to a custom topic, send an HTTP POST request using the following URI format:
# https://<topic-endpoint>?api-version=2018-01-01" (articles/event-grid/post-to-custom-topic.md, "Endpoint");
# "The api version that first provided support for Microsoft Entra authentication is 2018-01-01"
# (articles/event-grid/authenticate-with-microsoft-entra-id.md).
EVENTGRID_API_VERSION: Final = "2018-01-01"


class LogNotifier:
    """Implements ``rollout.ports.Notifier``: one structured log line per notification."""

    def notify(self, rollout: Rollout, message: str) -> None:
        bad = rollout.phase in (Phase.ROLLING_BACK, Phase.ROLLED_BACK, Phase.FAILED, Phase.ABORTED)
        with log_context(rollout_id=rollout.id, target=rollout.target, phase=rollout.phase):
            log.log(
                logging.WARNING if bad else logging.INFO,
                "rollout %s (%s) %s: %s",
                rollout.id,
                rollout.release.label,
                rollout.phase.value,
                message,
            )


# --- the queue --------------------------------------------------------------------------------------------

_ensured: set[tuple[str, str]] = set()
_ensured_lock = threading.Lock()


class NotificationQueue:
    """``rollout.ports.NotificationSink`` on a Storage queue, and the dead-letter queue beside it."""

    def __init__(self, client: QueueClient, poison: QueueClient) -> None:
        self._client = client
        self._poison = poison
        self.name = client.queue_name

    @staticmethod
    def _options(client_options: Mapping[str, Any]) -> dict[str, Any]:
        return {
            **ENQUEUE_CLIENT_OPTIONS,
            "message_encode_policy": TextBase64EncodePolicy(),
            "message_decode_policy": TextBase64DecodePolicy(),
            **client_options,
        }

    @classmethod
    def from_connection_string(cls, connection_string: str, queue: str, **client_options: Any) -> NotificationQueue:
        options = cls._options(client_options)
        return cls(
            QueueClient.from_connection_string(connection_string, queue, **options),
            QueueClient.from_connection_string(connection_string, f"{queue}-poison", **options),
        )

    @classmethod
    def from_service_uri(
        cls, uri: str, credential: TokenCredential, queue: str, **client_options: Any
    ) -> NotificationQueue:
        options = cls._options(client_options)
        return cls(
            QueueClient(uri, queue, credential=credential, **options),
            QueueClient(uri, f"{queue}-poison", credential=credential, **options),
        )

    def close(self) -> None:
        self._client.close()
        self._poison.close()

    def _ensure(self, client: QueueClient) -> None:
        key = (client.url, client.queue_name)
        with _ensured_lock:
            if key in _ensured:
                return
        with map_storage_errors(f"create queue {client.queue_name}"), contextlib.suppress(ResourceExistsError):
            client.create_queue()
        with _ensured_lock:
            _ensured.add(key)

    def publish(self, notification: Notification) -> None:
        self.send(Envelope(notification), 0)

    def send(self, envelope: Envelope, delay_seconds: int) -> None:
        self._ensure(self._client)
        with map_storage_errors(f"enqueue notification {envelope.notification.id} on {self.name}"):
            self._client.send_message(envelope.encode(), visibility_timeout=max(0, delay_seconds) or None)

    def dead_letter(self, envelope: Envelope) -> None:
        self._ensure(self._poison)
        with map_storage_errors(f"dead-letter notification {envelope.notification.id}"):
            self._poison.send_message(envelope.encode())


# --- the channels -----------------------------------------------------------------------------------------


class DeliveryError(Exception):
    """A channel did not take a notification. The text names the channel and the failure only."""


class Channel(Protocol):
    name: str

    def deliver(self, notification: Notification) -> None: ...


Post = Callable[..., requests.Response]


def _post(
    name: str,
    url: str,
    body: Any,
    headers: Mapping[str, str],
    timeout: float,
    post: Post,
    params: Mapping[str, str] | None = None,
) -> requests.Response:
    try:
        response = post(
            url, json=body, headers=dict(headers), timeout=timeout, allow_redirects=False, params=dict(params or {})
        )
    except requests.Timeout:
        raise DeliveryError(f"{name}: timed out after {timeout:g}s") from None
    except requests.ConnectionError:
        raise DeliveryError(f"{name}: connection failed") from None
    except requests.RequestException as exc:  # the exception's text may hold the URL: only its type leaves
        raise DeliveryError(f"{name}: request failed ({type(exc).__name__})") from None
    if not 200 <= response.status_code < 300:
        raise DeliveryError(f"{name}: HTTP {response.status_code}")
    return response


@dataclass
class WebhookChannel:
    """A JSON POST to a webhook URL: ``render(kind, ...)`` makes the body (the generic webhook, Teams, Slack)."""

    name: str
    url: str
    timeout: float = 10.0
    post: Post = requests.post

    def deliver(self, notification: Notification) -> None:
        response = _post(
            self.name,
            self.url,
            render(self.name, notification),
            {"Content-Type": "application/json; charset=utf-8", "User-Agent": "vmss-canary"},
            self.timeout,
            self.post,
        )
        # Teams webhooks answer throttling in the body, not with a status: "response body needs to be
        # extracted and read as Connectors do not throw 429s" (MicrosoftDocs/msteams-docs
        # msteams-platform/webhooks-and-connectors/how-to/connectors-using.md, "Rate limiting for connectors").
        if self.name == "teams" and "HTTP error 429" in response.text[:2000]:
            raise DeliveryError(f"{self.name}: throttled (HTTP error 429 in the answer)")


@dataclass
class EventGridChannel:
    """A custom topic: one CloudEvent per POST (as a batch of one), with the topic key or the managed identity."""

    endpoint: str
    credential: TokenCredential | None = None
    key: str | None = None
    source: str = "/vmss-canary"
    timeout: float = 10.0
    post: Post = requests.post
    name: str = "eventgrid"

    def deliver(self, notification: Notification) -> None:
        headers = {"Content-Type": CLOUDEVENTS_BATCH, "User-Agent": "vmss-canary"}
        if self.key:
            headers["aeg-sas-key"] = self.key
        elif self.credential is not None:
            try:
                headers["Authorization"] = f"Bearer {self.credential.get_token(EVENTGRID_SCOPE).token}"
            except Exception as exc:  # noqa: BLE001 - any identity failure is this channel's failure
                raise DeliveryError(f"{self.name}: no token for Event Grid ({type(exc).__name__})") from None
        params = {} if "api-version=" in self.endpoint else {"api-version": EVENTGRID_API_VERSION}
        _post(
            self.name,
            self.endpoint,
            [render("eventgrid", notification, source=self.source)],
            headers,
            self.timeout,
            self.post,
            params,
        )


# --- one delivery attempt ---------------------------------------------------------------------------------


class DeliveryQueue(Protocol):
    def send(self, envelope: Envelope, delay_seconds: int) -> None: ...

    def dead_letter(self, envelope: Envelope) -> None: ...


@dataclass(frozen=True)
class DeliveryReport:
    delivered: tuple[str, ...]
    failed: Mapping[str, str]
    outcome: str  # "delivered" | "retry" | "dead-lettered" | "nothing to do"
    delay_seconds: int = 0


def deliver(
    envelope: Envelope,
    channels: Mapping[str, Channel],
    queue: DeliveryQueue,
    *,
    max_attempts: int,
    base_seconds: float,
    monotonic: Callable[[], float] = time.monotonic,
) -> DeliveryReport:
    """Deliver ``envelope`` to each of its pending channels that is configured, then retry the failed
    ones in a new delayed message or dead-letter them. Raises only when that last enqueue fails (a
    ``rollout.ports.PortError``): the host then retries this message (maxDequeueCount) and finally moves
    it to its poison queue."""
    pending = envelope.pending if envelope.pending is not None else tuple(channels)
    targets = [name for name in pending if name in channels]
    delivered: list[str] = []
    failed: dict[str, str] = {}
    n = envelope.notification
    for name in targets:
        started = monotonic()
        try:
            channels[name].deliver(n)
        except DeliveryError as exc:
            failed[name] = str(exc)
            log.warning(
                "notification %s (%s of %s) to %s failed on attempt %d: %s",
                n.id,
                n.kind.value,
                n.rollout_id,
                name,
                envelope.attempt,
                exc,
                extra={"channel": name, "notification_id": n.id, "attempt": envelope.attempt, "delivery": "failed"},
            )
            continue
        delivered.append(name)
        log.info(
            "notification %s (%s of %s) delivered to %s on attempt %d in %.2fs",
            n.id,
            n.kind.value,
            n.rollout_id,
            name,
            envelope.attempt,
            monotonic() - started,
            extra={"channel": name, "notification_id": n.id, "attempt": envelope.attempt, "delivery": "delivered"},
        )
    if not targets:
        return DeliveryReport((), {}, "nothing to do")
    step = after_delivery(envelope, failed, max_attempts=max_attempts, base_seconds=base_seconds)
    if isinstance(step, Delivered):
        return DeliveryReport(tuple(delivered), {}, "delivered")
    if isinstance(step, Retry):
        queue.send(step.envelope, step.delay_seconds)
        return DeliveryReport(tuple(delivered), failed, "retry", step.delay_seconds)
    assert isinstance(step, DeadLetter)
    queue.dead_letter(step.envelope)
    log.error(
        "notification %s (%s of %s) dead-lettered after %d attempts: %s",
        n.id,
        n.kind.value,
        n.rollout_id,
        envelope.attempt,
        "; ".join(f"{k}: {v}" for k, v in sorted(step.envelope.failures.items())),
        extra={"notification_id": n.id, "attempt": envelope.attempt, "delivery": "dead-lettered"},
    )
    return DeliveryReport(tuple(delivered), failed, "dead-lettered")


__all__ = [
    "CLOUDEVENTS_BATCH",
    "Channel",
    "DeliveryError",
    "DeliveryReport",
    "EVENTGRID_SCOPE",
    "EventGridChannel",
    "LogNotifier",
    "NotificationQueue",
    "WebhookChannel",
    "deliver",
]
