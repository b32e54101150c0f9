"""The tick queue on Azure Queue Storage (azure-storage-queue 12.18): where the timer puts one message per
target with work and the queue trigger takes them from (``rollout.fanout``).

- **Base64, as the trigger expects.** The Functions queue trigger decodes message text from base64 by
  default (host.json ``extensions.queues.messageEncoding``, default ``base64``: azure-sdk-for-net,
  Microsoft.Azure.WebJobs.Extensions.Storage.Queues 5.0.0-beta.2 release notes, "This version
  Base64-encodes/decodes queue messages by default"), and moves a message that is not valid base64
  straight to the poison queue (azure-sdk-for-net PR 18326). azure-storage-queue sends text as is
  unless told otherwise, so the client is built with ``TextBase64EncodePolicy``.
- **Created if missing**, once per process and queue (``create_queue``; "already exists" is fine,
  including a concurrent creator on another instance).
- **A visibility delay per message** (``send_message(visibility_timeout=...)``): the message stays
  invisible that many seconds (Put Message, ``visibilitytimeout``: "must be larger than or equal to 0,
  and cannot be larger than 7 days", learn.microsoft.com/rest/api/storageservices/put-message).

Errors are ``rollout.ports`` errors (``map_storage_errors``).
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any, Final

from azure.core.credentials import TokenCredential
from azure.core.exceptions import ResourceExistsError
from azure.storage.queue import QueueClient, TextBase64DecodePolicy, TextBase64EncodePolicy

from rollout.adapters.tables import DEFAULT_CLIENT_OPTIONS, map_storage_errors
from rollout.fanout import TickMessage

MAX_DELAY_SECONDS: Final = 7 * 24 * 3600
# (account url, queue name) pairs this process has already created.
_ensured: set[tuple[str, str]] = set()
_ensured_lock = threading.Lock()


class TickQueue:
    """``rollout.fanout.TickSender`` on one Storage queue."""

    def __init__(self, client: QueueClient) -> None:
        self._client = client
        self.name = client.queue_name

    @staticmethod
    def _options(client_options: dict[str, Any]) -> dict[str, Any]:
        return {
            **DEFAULT_CLIENT_OPTIONS,
            "message_encode_policy": TextBase64EncodePolicy(),
            "message_decode_policy": TextBase64DecodePolicy(),
            **client_options,
        }

    @classmethod
    def from_connection_string(cls, connection_string: str, queue: str, **client_options: Any) -> TickQueue:
        return cls(QueueClient.from_connection_string(connection_string, queue, **cls._options(client_options)))

    @classmethod
    def from_service_uri(cls, uri: str, credential: TokenCredential, queue: str, **client_options: Any) -> TickQueue:
        """Managed identity: ``uri`` is e.g. ``https://<account>.queue.core.windows.net``."""
        return cls(QueueClient(uri, queue, credential=credential, **cls._options(client_options)))

    def close(self) -> None:
        self._client.close()

    def ensure_queue(self) -> None:
        key = (self._client.url, self.name)
        with _ensured_lock:
            if key in _ensured:
                return
            with map_storage_errors(f"create queue {self.name}"), contextlib.suppress(ResourceExistsError):
                self._client.create_queue()
            _ensured.add(key)

    def send(self, message: TickMessage, delay_seconds: int) -> None:
        self.ensure_queue()
        delay = max(0, min(int(delay_seconds), MAX_DELAY_SECONDS))
        with map_storage_errors(f"send a tick of {message.target} to queue {self.name}"):
            self._client.send_message(message.encode(), visibility_timeout=delay or None)
