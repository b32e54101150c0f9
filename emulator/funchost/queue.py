"""The Storage queue trigger: the queue polled through the real ``azure-storage-queue`` client, as the
Functions host's queue listener does (MicrosoftDocs/azure-docs,
articles/azure-functions/functions-bindings-storage-queue-trigger.md, "Poison messages", "Peek lock",
"Polling algorithm", "Concurrency"; host.json ``extensions.queues``):

* **Polling with back-off.** After a poll that found messages the next one is 100 ms later; after an
  empty poll the wait starts at about 200 ms and grows (doubling, randomised) up to
  ``maxPollingInterval`` (one minute in Azure; "for local development the maximum polling interval
  defaults to two seconds", which is this host's default too).
* **Batches.** Up to ``batchSize`` messages (default 16, at most 32) are fetched at once and run
  concurrently, one thread each; the next batch is fetched when at most ``newBatchThreshold``
  (default ``batchSize / 2``) are still running.
* **Peek lock.** A fetched message is invisible while its function runs (``LEASE_SECONDS``; the real
  host takes 10 minutes and renews it, here the lease simply outlasts ``functionTimeout``). Success
  deletes it; a failure makes it visible again after ``visibilityTimeout`` (default 0); the attempt
  that reaches ``maxDequeueCount`` (default 5) moves it to ``<queue>-poison`` instead (created if
  missing) and deletes it.
* **Message encoding.** ``messageEncoding`` ``base64`` (the default) or ``none``: with base64 the
  function gets the decoded bytes, and a message that is not valid base64 goes to the poison queue at
  once, without running the function (azure-sdk-for-net PR 18326, "Queues extension moves message to
  poison queue immediately as retrying it doesn't make much sense").

The function gets an ``azure.functions.QueueMessage`` with the metadata the worker fills from the
trigger metadata (id, dequeue count, insertion, expiration and next-visible times, pop receipt). The
Python worker never sees base64: its converter takes the payload as the host passes it, ``string`` or
``bytes`` (Azure/azure-functions-python-library, azure/functions/queue.py,
``QueueMessageInConverter.decode``); the host has decoded it per ``messageEncoding`` before.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import random
import re
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from azure.core.exceptions import AzureError, ResourceExistsError, ResourceNotFoundError
from azure.functions.decorators.function_app import Function
from azure.functions.queue import QueueMessage
from azure.storage.queue import QueueClient
from azure.storage.queue import QueueMessage as StoredMessage

from emulator.funchost.core import HostedFunction, HostStartupError, Invocation, Runtime, log
from emulator.funchost.environment import connection_string, resolve_placeholders

LEASE_SECONDS = 600
FOUND_WAIT_SECONDS = 0.1
FIRST_EMPTY_WAIT_SECONDS = 0.2
# How long stopping waits for running invocations to settle their messages (within stop()'s own 10 s join).
DRAIN_SECONDS = 9.0
_QUEUE_NAME_RE = re.compile(r"^(?!.*--)[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
_TIMESPAN_RE = re.compile(r"^(?:(\d+)\.)?(\d{1,2}):(\d{2}):(\d{2})(?:\.(\d+))?$")


@dataclass(frozen=True)
class QueueOptions:
    """host.json ``extensions.queues`` (the settings this host emulates), with the documented defaults."""

    batch_size: int = 16
    new_batch_threshold: int | None = None  # None: batch_size // 2
    max_dequeue_count: int = 5
    visibility_timeout_seconds: float = 0.0
    max_polling_interval_seconds: float = 2.0  # local development's default (Azure: one minute)
    message_encoding: str = "base64"  # or "none"

    def __post_init__(self) -> None:
        problems = []
        if not 1 <= self.batch_size <= 32:
            problems.append(f"batchSize {self.batch_size} must be 1 to 32")
        if self.new_batch_threshold is not None and self.new_batch_threshold < 0:
            problems.append(f"newBatchThreshold {self.new_batch_threshold} must be at least 0")
        if self.max_dequeue_count < 1:
            problems.append(f"maxDequeueCount {self.max_dequeue_count} must be at least 1")
        if self.visibility_timeout_seconds < 0 or self.max_polling_interval_seconds <= 0:
            problems.append("visibilityTimeout must be at least 0 and maxPollingInterval more than 0")
        if self.message_encoding not in ("base64", "none"):
            problems.append(f"messageEncoding {self.message_encoding!r} must be 'base64' or 'none'")
        if problems:
            raise HostStartupError("host.json extensions.queues: " + "; ".join(problems))

    @property
    def threshold(self) -> int:
        return self.batch_size // 2 if self.new_batch_threshold is None else self.new_batch_threshold

    @classmethod
    def from_host_json(cls, script_root: Path, **overrides: Any) -> QueueOptions:
        """``extensions.queues`` of ``<script_root>/host.json`` (defaults without one), then ``overrides``."""
        path = script_root / "host.json"
        queues: Mapping[str, Any] = {}
        if path.exists():
            queues = json.loads(path.read_text()).get("extensions", {}).get("queues", {}) or {}
        values: dict[str, Any] = {}
        for key, name in (
            ("batchSize", "batch_size"),
            ("newBatchThreshold", "new_batch_threshold"),
            ("maxDequeueCount", "max_dequeue_count"),
        ):
            if key in queues:
                values[name] = int(queues[key])
        if "visibilityTimeout" in queues:
            values["visibility_timeout_seconds"] = timespan_seconds(str(queues["visibilityTimeout"]))
        if "maxPollingInterval" in queues:
            raw = queues["maxPollingInterval"]
            # A number is milliseconds (host.json reference: "maxPollingInterval": 2000 or "00:00:02").
            values["max_polling_interval_seconds"] = (
                float(raw) / 1000 if isinstance(raw, int | float) else timespan_seconds(str(raw))
            )
        if "messageEncoding" in queues:
            values["message_encoding"] = str(queues["messageEncoding"]).lower()
        values.update(overrides)
        return cls(**values)


def timespan_seconds(text: str) -> float:
    """A .NET TimeSpan as host.json writes it (``[d.]hh:mm:ss[.fff]``) -> seconds."""
    match = _TIMESPAN_RE.match(text.strip())
    if match is None:
        raise HostStartupError(f"host.json: {text!r} is not a time span like 00:00:30")
    days, hours, minutes, seconds, fraction = match.groups()
    total = int(days or 0) * 86400 + int(hours) * 3600 + int(minutes) * 60 + int(seconds)
    return total + (float(f"0.{fraction}") if fraction else 0.0)


@dataclass
class QueueFunction(HostedFunction):
    queue: str = ""
    connection_string: str = ""
    running: int = 0
    changed: threading.Condition = field(default_factory=threading.Condition)


class QueueTrigger:
    """Every ``queueTrigger`` function of the app: one poller thread each, one worker per message."""

    binding_type = "queueTrigger"
    input_hint: str | None = "<message text>"

    def __init__(self, runtime: Runtime, options: QueueOptions) -> None:
        self._runtime = runtime
        self.options = options
        self._functions: dict[str, QueueFunction] = {}

    def add(self, function: Function, name: str, trigger: Any, env: Mapping[str, str]) -> None:
        queue = resolve_placeholders(trigger.queue_name, env, f"function {name} queue name").lower()
        if not _QUEUE_NAME_RE.match(queue):
            raise HostStartupError(f"function {name}: {queue!r} is not a valid queue name")
        connection_name = resolve_placeholders(trigger.connection or "", env, f"function {name} connection")
        connection = connection_string(name, connection_name, env, "the queue trigger")
        self._functions[name] = QueueFunction(function, name, "queue", trigger.name, queue, connection)

    def names(self) -> list[str]:
        return list(self._functions)

    def clear(self) -> None:
        self._functions.clear()

    def start(self) -> None:
        for hosted in self._functions.values():
            self._runtime.spawn(f"queue:{hosted.name}", self._run_poller, hosted)

    def queue_of(self, name: str) -> str:
        return self._functions[name].queue

    def wait_for_polls(self, name: str, count: int, timeout: float) -> None:
        self._runtime.wait_for_count(f"poll:{name}", count, timeout, f"{name}: queue polls")

    def fire(self, name: str, input: str | None) -> Invocation:  # noqa: A002 - the admin API's name
        """Run ``name`` on a message with text ``input`` now, outside the queue (nothing is enqueued)."""
        hosted = self._functions[name]
        now = datetime.now(UTC)
        message = QueueMessage(  # type: ignore[no-untyped-call]
            id=f"manual-{uuid.uuid4()}",
            body=(input or "").encode(),
            dequeue_count=1,
            insertion_time=now,
            expiration_time=now + timedelta(days=7),
            time_next_visible=now,
            pop_receipt="",
        )
        invocation, _ = self._runtime.invoke(hosted, message, {"queue": hosted.queue, "manual": True})
        return invocation

    # ---- polling ----------------------------------------------------------------------------------

    def _client(self, hosted: QueueFunction, queue: str) -> QueueClient:
        return QueueClient.from_connection_string(hosted.connection_string, queue)

    def _run_poller(self, hosted: QueueFunction) -> None:
        client = self._client(hosted, hosted.queue)
        poison = self._client(hosted, f"{hosted.queue}-poison")
        stop = self._runtime.stop
        wait = FIRST_EMPTY_WAIT_SECONDS
        unreachable_logged = False
        try:
            while not stop.is_set():
                with hosted.changed:  # fetch when the running batch is down to the threshold
                    while hosted.running > self.options.threshold and not stop.is_set():
                        hosted.changed.wait(0.1)
                if stop.is_set():
                    break
                try:
                    batch = list(
                        client.receive_messages(
                            max_messages=self.options.batch_size,
                            messages_per_page=self.options.batch_size,
                            visibility_timeout=LEASE_SECONDS,
                        )
                    )
                    unreachable_logged = False
                except ResourceNotFoundError:
                    batch = []  # the queue does not exist yet: the real listener waits for it too
                except AzureError as error:
                    if not unreachable_logged:
                        log.warning("function %s: cannot read queue %s: %s", hosted.name, hosted.queue, error)
                        unreachable_logged = True
                    batch = []
                self._runtime.count(f"poll:{hosted.name}")
                for message in batch:
                    with hosted.changed:
                        hosted.running += 1
                    self._runtime.spawn_worker(f"run:{hosted.name}", self._process, hosted, client, poison, message)
                if batch:
                    wait = FIRST_EMPTY_WAIT_SECONDS
                    delay = FOUND_WAIT_SECONDS
                else:
                    # Random exponential back-off up to maxPollingInterval.
                    delay = min(self.options.max_polling_interval_seconds, wait * random.uniform(0.8, 1.2))
                    wait = min(self.options.max_polling_interval_seconds, wait * 2)
                if stop.wait(delay):
                    break
        finally:
            # Stopping drains the invocations already running (their messages are settled with these
            # clients) before closing the clients, as the host's graceful shutdown lets them finish.
            deadline = time.monotonic() + DRAIN_SECONDS
            with hosted.changed:
                while hosted.running > 0 and time.monotonic() < deadline:
                    hosted.changed.wait(0.1)
            client.close()
            poison.close()

    # ---- one message ------------------------------------------------------------------------------

    def _process(self, hosted: QueueFunction, client: QueueClient, poison: QueueClient, stored: StoredMessage) -> None:
        try:
            self._settle_one(hosted, client, poison, stored)
        finally:
            with hosted.changed:
                hosted.running -= 1
                hosted.changed.notify_all()

    def _settle_one(
        self, hosted: QueueFunction, client: QueueClient, poison: QueueClient, stored: StoredMessage
    ) -> None:
        text = str(stored.content or "")
        detail = {"queue": hosted.queue, "message_id": stored.id, "dequeue_count": stored.dequeue_count}
        try:
            body = self._decode(text)
        except ValueError as error:
            log.error(
                "function %s: message %s of queue %s is not %s-encoded (%s): moved to %s-poison",
                *(hosted.name, stored.id, hosted.queue, self.options.message_encoding, error, hosted.queue),
            )
            self._poison(hosted, client, poison, stored, text)
            failed = Invocation(
                hosted.name, "queue", datetime.now(UTC), 0.0, "failed", f"message decoding failed: {error}", detail
            )
            self._runtime.record(failed, quiet=True)
            return
        message = QueueMessage(  # type: ignore[no-untyped-call]
            id=stored.id,
            body=body,
            dequeue_count=stored.dequeue_count,
            insertion_time=stored.inserted_on,
            expiration_time=stored.expires_on,
            time_next_visible=stored.next_visible_on,
            pop_receipt=stored.pop_receipt,
        )
        count = int(stored.dequeue_count or 1)
        invocation, _ = self._runtime.invoke(
            hosted, message, detail, retry=(count - 1, self.options.max_dequeue_count - 1)
        )
        try:
            if invocation.outcome == "succeeded":
                client.delete_message(stored.id, stored.pop_receipt)
            elif count >= self.options.max_dequeue_count:
                log.error(
                    "function %s: message %s reached maxDequeueCount %d: moved to %s-poison",
                    *(hosted.name, stored.id, self.options.max_dequeue_count, hosted.queue),
                )
                self._poison(hosted, client, poison, stored, text)
            else:
                # Visible again after visibilityTimeout: the next poll (here or on another host) retries it.
                client.update_message(
                    stored.id, stored.pop_receipt, visibility_timeout=int(self.options.visibility_timeout_seconds)
                )
        except AzureError as error:
            # The lease ran out (another poller took it) or storage is down: the message comes back by itself.
            log.warning("function %s: could not settle message %s: %s", hosted.name, stored.id, error)

    def _decode(self, text: str) -> bytes:
        if self.options.message_encoding == "none":
            return text.encode("utf-8")
        try:
            return base64.b64decode(text.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError) as error:
            raise ValueError(str(error)) from None

    @staticmethod
    def _poison(
        hosted: QueueFunction, client: QueueClient, poison: QueueClient, stored: StoredMessage, text: str
    ) -> None:
        """Copy the message as it was stored to ``<queue>-poison`` (created if missing), then delete it."""
        with contextlib.suppress(ResourceExistsError):
            poison.create_queue()
        poison.send_message(text)
        client.delete_message(stored.id, stored.pop_receipt)
