"""The blob trigger: the container polled through the real ``azure-storage-blob`` client, receipts, poison.

The product declares ``source=EventGrid``; there is no Event Grid locally, so polling stands in for the
event delivery. The container named by the path (``<container>/{name}``, with an optional name pattern
like ``{name}.sh``) is listed every ``poll_seconds``. The function fires once per blob *version*, i.e.
per (name, ETag): a re-upload fires again, an unchanged blob never does. **Receipts** are kept as the
real host does, but in a JSON file (``<state_dir>/blob_receipts.json``) rather than in the
``azure-webjobs-hosts`` container, so a restarted host with the same state dir does not fire again.
Receipts are written *after* a successful invocation (at-least-once, like the real host). A function
that raises is retried on the following polls, up to ``max_dequeue_count`` attempts (5, the
``maxDequeueCount`` default); then the blob is recorded as poisoned with the error (the real host
writes to the ``webjobs-blobtrigger-poison`` queue) and logged. Blobs of one function are processed
one at a time, in listing order.

A trigger parameter annotated with an SDK type (``sdkbinding.py``) gets that client, and the blob is
not downloaded; otherwise the function gets a ``func.InputStream`` over the downloaded content.
"""

from __future__ import annotations

import json
import os
import re
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import AzureError, ResourceModifiedError, ResourceNotFoundError
from azure.functions.blob import InputStream
from azure.functions.decorators.function_app import Function
from azure.storage.blob import BlobServiceClient, ContainerClient

from emulator.funchost.core import HostedFunction, HostStartupError, Invocation, Runtime, enum_value, log
from emulator.funchost.environment import connection_string, resolve_placeholders
from emulator.funchost.sdkbinding import SdkBindingCache, blob_model_binding_data, sdk_binding_type

RECEIPTS_FILE = "blob_receipts.json"
DEFAULT_MAX_DEQUEUE_COUNT = 5


class ReceiptStore:
    """Blob receipts and retry counts, one JSON file, rewritten atomically (write + rename).

    Key: ``<function>|<container>/<blob>|<etag>``; value: ``{"status": "done"|"failed"|"poisoned",
    "attempts": n, "error": ..., "updated": iso}``. Keyed by ETag, so a new version is new work.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._data: dict[str, dict[str, Any]] = json.loads(path.read_text()) if path.exists() else {}

    @staticmethod
    def key(function: str, container: str, blob: str, etag: str) -> str:
        return f"{function}|{container}/{blob}|{etag}"

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            entry = self._data.get(key)
            return dict(entry) if entry else None

    def put(self, key: str, entry: dict[str, Any]) -> None:
        with self._lock:
            self._data[key] = {**entry, "updated": datetime.now(UTC).isoformat()}
            tmp = self._path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self._data, indent=1, sort_keys=True))
            os.replace(tmp, self._path)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {k: dict(v) for k, v in self._data.items()}


@dataclass
class BlobFunction(HostedFunction):
    container: str = ""
    name_pattern: re.Pattern[str] = field(default_factory=lambda: re.compile(".*"))
    prefix: str = ""
    connection_string: str = ""
    connection_name: str = ""  # as the binding names it, %SETTING% resolved
    sdk_type: type | None = None  # an SDK type (BlobClient, ...): the function gets a client, not the content


def blob_name_pattern(pattern: str) -> tuple[re.Pattern[str], str]:
    """``{name}.sh`` -> regex over blob names, and the literal prefix to list with."""
    regex, prefix, literal_only = "", "", True
    for token in re.split(r"(\{[^{}]+\})", pattern):
        if token.startswith("{") and token.endswith("}"):
            regex += f"(?P<{token[1:-1]}>.+)" if token[1:-1].isidentifier() else ".+"
            literal_only = False
        elif token:
            regex += re.escape(token)
            if literal_only:
                prefix += token
    return re.compile(f"^{regex}$"), prefix


@dataclass(frozen=True)
class _Work:
    """One blob version to run a function on: its receipt key and the attempts so far."""

    name: str
    etag: str | None
    key: str | None
    attempts: int


class BlobTrigger:
    """Every ``blobTrigger`` function of the app: one poller thread each."""

    binding_type = "blobTrigger"
    input_hint: str | None = "<container>/<blob name>"

    def __init__(self, runtime: Runtime, poll_seconds: float, max_dequeue_count: int) -> None:
        self._runtime = runtime
        self._poll = poll_seconds
        self._max_dequeue = max_dequeue_count
        self._functions: dict[str, BlobFunction] = {}
        self._receipts: ReceiptStore | None = None
        self._sdk_cache = SdkBindingCache()

    def add(self, function: Function, name: str, trigger: Any, env: Mapping[str, str]) -> None:
        path = resolve_placeholders(trigger.path, env, f"function {name} path")
        container, slash, pattern = path.partition("/")
        if not slash or not container or "{" in container:
            raise HostStartupError(f"function {name}: blob path {path!r} must be '<container>/<pattern>'")
        connection_name = resolve_placeholders(trigger.connection or "", env, f"function {name} connection")
        connection = connection_string(name, connection_name, env, "the blob trigger")
        regex, prefix = blob_name_pattern(pattern or "{name}")
        connection_name = connection_name or "AzureWebJobsStorage"
        sdk_type = sdk_binding_type(function, name, trigger, env, connection_name)
        self._functions[name] = BlobFunction(
            function, name, "blob", trigger.name, container, regex, prefix, connection, connection_name, sdk_type
        )

    def names(self) -> list[str]:
        return list(self._functions)

    def clear(self) -> None:
        self._functions.clear()

    def use_receipts(self, state_dir: Path) -> None:
        self._receipts = ReceiptStore(state_dir / RECEIPTS_FILE)

    def receipts(self) -> dict[str, dict[str, Any]]:
        return self._receipts.snapshot() if self._receipts else {}

    def start(self) -> None:
        for blob in self._functions.values():
            self._runtime.spawn(f"blob:{blob.name}", self._run_poller, blob)

    def wait_for_scans(self, name: str, count: int, timeout: float) -> None:
        self._runtime.wait_for_count(f"scan:{name}", count, timeout, f"{name}: container scans")

    def fire(self, name: str, input: str | None) -> Invocation:  # noqa: A002 - the admin API's name
        """Run ``name`` on the blob ``<container>/<blob name>`` now, outside the receipt bookkeeping."""
        blob = self._functions[name]
        if not input:
            raise ValueError(f"{name} is a blob trigger: input must be '<container>/<blob name>'")
        container_name, _, blob_name = input.partition("/")
        if container_name != blob.container or not blob_name:
            raise ValueError(f"{blob.name} watches container {blob.container!r}; got {input!r}")
        with self._container_client(blob) as container:
            etag = str(container.get_blob_client(blob_name).get_blob_properties().etag)
            invocation = self._process(blob, container, _Work(blob_name, etag, f"manual|{uuid.uuid4()}", 0))
        if invocation is None:
            raise RuntimeError(f"blob {input} changed or vanished while it was read")
        return invocation

    # ---- polling ----------------------------------------------------------------------------------

    @staticmethod
    def _container_client(blob: BlobFunction) -> ContainerClient:
        return BlobServiceClient.from_connection_string(blob.connection_string).get_container_client(blob.container)

    def _run_poller(self, blob: BlobFunction) -> None:
        container = self._container_client(blob)
        unreachable_logged = False
        while not self._runtime.stop.is_set():
            try:
                self._scan(blob, container)
                unreachable_logged = False
                self._runtime.count(f"scan:{blob.name}")
            except ResourceNotFoundError:
                pass  # the container does not exist yet: the real host waits for it too
            except AzureError as error:
                # Storage down or unreachable: keep polling, but say so once rather than every poll.
                if not unreachable_logged:
                    log.warning("function %s: cannot list container %s: %s", blob.name, blob.container, error)
                    unreachable_logged = True
            if self._runtime.stop.wait(self._poll):
                break
        container.close()

    def _scan(self, blob: BlobFunction, container: ContainerClient) -> None:
        assert self._receipts is not None
        for item in container.list_blobs(name_starts_with=blob.prefix or None, include=["metadata"]):
            if self._runtime.stop.is_set():
                return
            if not blob.name_pattern.match(item.name):
                continue
            key = ReceiptStore.key(blob.name, blob.container, item.name, str(item.etag))
            entry = self._receipts.get(key)
            if entry is not None and entry["status"] in ("done", "poisoned"):
                continue
            attempts = int(entry["attempts"]) if entry else 0
            self._process(blob, container, _Work(item.name, str(item.etag), key, attempts))

    # ---- one blob version -------------------------------------------------------------------------

    def _process(self, blob: BlobFunction, container: ContainerClient, work: _Work) -> Invocation | None:
        if blob.sdk_type is not None:
            return self._process_sdk(blob, work)
        client = container.get_blob_client(work.name)
        try:
            if work.etag:
                # Read exactly the version that was listed; a newer one is picked up by the next scan.
                downloader = client.download_blob(etag=work.etag, match_condition=MatchConditions.IfNotModified)
            else:
                downloader = client.download_blob()
            content = downloader.readall()
        except (ResourceModifiedError, ResourceNotFoundError):
            return None
        props = downloader.properties
        etag = str(props.etag)
        key = work.key or ReceiptStore.key(blob.name, blob.container, work.name, etag)
        stream = InputStream(
            data=content,
            name=f"{blob.container}/{work.name}",
            uri=client.url,
            length=len(content),
            blob_properties={
                "ETag": etag,
                "Length": props.size,
                "ContentType": props.content_settings.content_type,
                "ContentMD5": (props.content_settings.content_md5 or b"").hex() or None,
                "LastModified": props.last_modified.isoformat() if props.last_modified else None,
                "CreatedOn": props.creation_time.isoformat() if props.creation_time else None,
                "BlobType": enum_value(props.blob_type),
            },
            metadata=dict(props.metadata or {}),
        )
        invocation, _ = self._runtime.invoke(
            blob,
            stream,
            {"blob": f"{blob.container}/{work.name}", "etag": etag, "attempt": work.attempts + 1},
            retry=(work.attempts, self._max_dequeue - 1),
        )
        self._settle(blob, work.name, etag, key, work.attempts, invocation)
        return invocation

    def _process_sdk(self, blob: BlobFunction, work: _Work) -> Invocation:
        """An SDK-type binding: the function gets a client for the blob; nothing is downloaded here."""
        assert work.etag is not None and blob.sdk_type is not None
        key = work.key or ReceiptStore.key(blob.name, blob.container, work.name, work.etag)
        detail = {"blob": f"{blob.container}/{work.name}", "etag": work.etag, "attempt": work.attempts + 1}
        detail["binding"] = "sdk"
        try:
            data = blob_model_binding_data(blob.connection_name, blob.container, work.name)
            value = self._sdk_cache.decode(self.binding_type, blob.trigger_arg, blob.sdk_type, data, blob.name)
        except Exception as error:  # noqa: BLE001 - a failed binding fails the invocation, as in the worker
            log.error("function %s: binding %s failed: %s", blob.name, blob.trigger_arg, error)
            invocation = Invocation(
                blob.name, "blob", datetime.now(UTC), 0.0, "failed", f"{type(error).__name__}: {error}", detail
            )
            self._runtime.record(invocation)
        else:
            invocation, _ = self._runtime.invoke(blob, value, detail, retry=(work.attempts, self._max_dequeue - 1))
        self._settle(blob, work.name, work.etag, key, work.attempts, invocation)
        return invocation

    def _settle(
        self, blob: BlobFunction, name: str, etag: str, key: str, attempts: int, invocation: Invocation
    ) -> None:
        """The receipt after an attempt: done, failed (retried on a later poll) or poisoned."""
        assert self._receipts is not None
        if invocation.outcome == "succeeded":
            self._receipts.put(key, {"status": "done", "attempts": attempts + 1})
        elif attempts + 1 >= self._max_dequeue:
            self._receipts.put(key, {"status": "poisoned", "attempts": attempts + 1, "error": invocation.error})
            log.error(
                "function %s: blob %s/%s (etag %s) poisoned after %d attempts: %s",
                *(blob.name, blob.container, name, etag, attempts + 1, invocation.error),
            )
        else:
            self._receipts.put(key, {"status": "failed", "attempts": attempts + 1, "error": invocation.error})
