"""A small local Azure Functions host: a stand-in for ``func start`` where Core Tools cannot be installed.

It loads a Python v2 programming model app (``module:attr``, default ``function_app:app``), reads every
function's bindings *from the app itself* (``FunctionApp.get_functions()``, the same indexing the
Python worker does) and fires the triggers the product uses the way Azure would:

* **HTTP** (``httpTrigger``): a threaded HTTP server serving ``/<routePrefix>/<route>`` (``api`` by
  default) with ASP.NET-style route templates (``rollouts/{id}/{verb}``, optional ``{x?}``, catch-all
  ``{*rest}``, constraints such as ``{id:int}`` or ``{name:regex(^v\\d+$)}``). Literal segments win over
  parameters, as in ASP.NET routing. Methods are checked (405), and auth levels enforced: ANONYMOUS
  is open, FUNCTION accepts the function key or the master key, ADMIN only the master key, read from
  the ``x-functions-key`` header or the ``code`` query parameter (401 otherwise). An exception in the
  function is a 500 with a generic body; the traceback goes to the log, never to the client.
* **Timer** (``timerTrigger``): NCRONTAB schedules with seconds (``emulator.ncrontab``), in UTC.
  ``timer_period_seconds`` overrides every schedule with a fixed period (demos, tests). A timer never
  runs concurrently with itself: when a firing comes while the previous invocation still runs, the
  firing is skipped and logged (the real host holds a singleton lock per timer function), and the
  next invocation gets ``past_due=True`` because an occurrence was missed.
* **Blob** (``blobTrigger``): the container named by the path (``<container>/{name}``, with an
  optional name pattern like ``{name}.sh``) is polled every ``blob_poll_seconds`` through the real
  ``azure-storage-blob`` client, using the connection string in the setting named by ``connection``.
  The product declares ``source=EventGrid``; there is no Event Grid locally, so polling stands in for
  the event delivery. The function fires once per blob *version*, i.e. per (name, ETag): a re-upload
  fires again, an unchanged blob never does. **Receipts** are kept as the real host does, but in a JSON
  file (``<state_dir>/blob_receipts.json``) rather than in the ``azure-webjobs-hosts`` container, so a
  restarted host with the same state dir does not fire again. Receipts are written *after* a
  successful invocation (at-least-once, like the real host: a crash mid-invocation means it runs
  again). A function that raises is retried on the following polls, up to ``blob_max_dequeue_count``
  attempts (5, the ``maxDequeueCount`` default); then the blob is recorded as poisoned with the error
  (the real host writes to the ``webjobs-blobtrigger-poison`` queue) and logged. Blobs of one function
  are processed one at a time, in listing order. A trigger parameter annotated with an SDK type of
  ``azurefunctions-extensions-bindings-blob`` (``BlobClient`` ...) gets that client, built by the
  extension's converter from the ``ModelBindingData`` the real host sends; the blob is not downloaded.
  Otherwise the function gets a ``func.InputStream`` over the downloaded content, as in Azure.

``%SETTING%`` placeholders in schedules, paths and connections resolve from the app settings (the
environment), as in the real host; a missing one is a ``HostStartupError`` naming the setting,
raised by ``start()`` before any thread or socket exists.

Keys: at start the host loads ``<state_dir>/host_keys.json`` or creates it (random function and master
keys, mode 0600), unless ``keys=HostKeys(...)`` is given. Reusing the file keeps keys stable across
restarts, like the real host's key storage.

App settings: the real host makes app settings environment variables of the worker process. Here the
app runs in-process, so ``env=`` is exported into ``os.environ`` from ``start()`` to ``stop()`` and
the previous values are restored afterwards (``export_env=False`` turns that off).

App Service authentication: ``easy_auth=EasyAuthSettings(...)`` (CLI ``--easy-auth-key``) puts the
emulation of ``emulator/easyauth.py`` in front of the HTTP routes: bearer tokens validated, 401 when
required, client-sent ``X-MS-CLIENT-PRINCIPAL*`` headers always stripped, the validated principal
injected, ``WEBSITE_AUTH_ENABLED=True`` set for the app. See docs/funchost.md.

Admin API (master key), as the real host offers it: ``POST /admin/functions/<name>`` with
``{"input": "..."}`` fires a non-HTTP function now (timer: input ignored; blob: input is
``<container>/<blob name>``) and returns 202; ``GET /admin/host/status``.

Python API::

    host = LocalFunctionsHost(app, env={...}, http_port=0, timer_period_seconds=1, state_dir=tmp)
    host.start(); host.url; host.function_key; host.invocations; host.trigger("advance_rollouts")
    host.stop()

CLI: ``python -m emulator.funchost --app function_app:app --port 7071 [--settings local.settings.json]``.

Not emulated: other trigger types (logged and not hosted), input/output bindings other than the
HTTP ``$return``, host.json options other than ``extensions.http.routePrefix``, durable functions,
schedule monitoring across restarts (``use_monitor``), the blob trigger's identity connections
(``<conn>__blobServiceUri``: there is no managed identity locally).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import inspect
import itertools
import json
import logging
import os
import re
import secrets
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback
import typing
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import Enum
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import azure.functions as func
from azure.core import MatchConditions
from azure.core.exceptions import AzureError, ResourceModifiedError, ResourceNotFoundError
from azure.functions._abc import RetryContext, TraceContext
from azure.functions.blob import InputStream
from azure.functions.decorators.function_app import Function
from azure.functions.timer import TimerRequest
from azure.storage.blob import BlobServiceClient, ContainerClient
from azurefunctions.extensions.base import Datum, get_binding_registry

from emulator import appindex
from emulator.easyauth import CLAIM_NAMES, DEFAULT_AUDIENCE, DEFAULT_ISSUER, PLATFORM_ENV, EasyAuth, EasyAuthSettings
from emulator.ncrontab import NCrontabError, parse_schedule

__all__ = [
    "HostKeys",
    "HostStartupError",
    "Invocation",
    "LocalFunctionsHost",
    "ModelBindingData",
    "blob_model_binding_data",
    "decode_sdk_binding",
    "RouteTemplate",
    "load_app",
    "resolve_placeholders",
]

log = logging.getLogger("emulator.funchost")

_HOST_SERIAL = itertools.count(1)
KEYS_FILE = "host_keys.json"
RECEIPTS_FILE = "blob_receipts.json"
DEFAULT_MAX_DEQUEUE_COUNT = 5
_GENERIC_500 = b"Internal Server Error. The function failed; see the host log for the details."
# "The HTTP request length is limited to 100 MB (104,857,600 bytes), and the URL length is limited to
# 4 KB (4,096 bytes). These limits are specified by the httpRuntime element of the runtime's Web.config
# file." (learn.microsoft.com/azure/azure-functions/functions-bindings-http-webhook-trigger, "Limits").
# The URL limit comes from a Web.config, i.e. the Windows host; whether a Linux host has the same is not
# documented, so it is a switch (max_url_bytes: None = no limit, the default; 4096 = that limit).
MAX_REQUEST_BYTES = 104_857_600
WEB_CONFIG_MAX_URL_BYTES = 4096


class HostStartupError(RuntimeError):
    """The app cannot be hosted as configured (missing setting, bad schedule, unknown constraint...)."""


# --------------------------------------------------------------------------------------------------
# App settings and indexing


_PLACEHOLDER_RE = re.compile(r"%([^%\s]+)%")


def resolve_placeholders(text: str, env: Mapping[str, str], where: str) -> str:
    """Replace ``%NAME%`` with the app setting ``NAME``; a missing one names itself and ``where``."""

    def lookup(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in env:
            raise HostStartupError(f"{where}: app setting {name!r} (used as %{name}%) is not set")
        return env[name]

    return _PLACEHOLDER_RE.sub(lookup, text)


def index_app(app: Any) -> list[Function]:
    """The app's functions, as the Python worker indexes them (FunctionApp or a lone Blueprint).

    Indexed once per process through ``emulator.appindex``: ``get_functions()`` fails when called
    twice on one app object, and tests, the demo and a restarted host all index the same app."""
    if not isinstance(app, func.Blueprint) and not hasattr(app, "get_functions"):
        raise HostStartupError(f"{app!r} is not an azure.functions FunctionApp or Blueprint")
    return appindex.functions_of(app)


def load_app(spec: str) -> Any:
    """``module:attr`` (default attribute ``app``) -> the app object."""
    module_name, _, attr = spec.partition(":")
    module = importlib.import_module(module_name)
    try:
        return getattr(module, attr or "app")
    except AttributeError:
        raise HostStartupError(f"module {module_name!r} has no attribute {attr or 'app'!r}") from None


def _enum_value(value: Any) -> str:
    return str(value.value if isinstance(value, Enum) else value)


# --------------------------------------------------------------------------------------------------
# Route templates


def _is_guid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


_SIMPLE_CONSTRAINTS: dict[str, Callable[[str], bool]] = {
    "int": lambda v: re.fullmatch(r"-?\d+", v) is not None and -(2**31) <= int(v) < 2**31,
    "long": lambda v: re.fullmatch(r"-?\d+", v) is not None and -(2**63) <= int(v) < 2**63,
    "bool": lambda v: v.lower() in ("true", "false"),
    "guid": _is_guid,
    "alpha": lambda v: re.fullmatch(r"[A-Za-z]+", v) is not None,
    "double": _is_number,
    "float": _is_number,
    "decimal": _is_number,
    "datetime": lambda v: _parses_as_datetime(v),
}


def _parses_as_datetime(text: str) -> bool:
    try:
        datetime.fromisoformat(text)
    except ValueError:
        return False
    return True


_CONSTRAINT_RE = re.compile(r"^(?P<name>[a-zA-Z]+)(?:\((?P<arg>.*)\))?$")


def _compile_constraint(text: str, template: str) -> Callable[[str], bool]:
    match = _CONSTRAINT_RE.match(text)
    if not match:
        raise HostStartupError(f"route {template!r}: cannot parse constraint {text!r}")
    name, arg = match["name"].lower(), match["arg"]
    if arg is None and name in _SIMPLE_CONSTRAINTS:
        return _SIMPLE_CONSTRAINTS[name]
    try:
        if name == "regex" and arg is not None:
            pattern = re.compile(arg, re.IGNORECASE)  # ASP.NET route regexes are case-insensitive
            return lambda v: pattern.search(v) is not None
        numbers = [int(a) for a in arg.split(",")] if arg is not None else []
    except (re.error, ValueError) as error:
        raise HostStartupError(f"route {template!r}: bad constraint {text!r}: {error}") from None
    if name == "min" and len(numbers) == 1:
        return lambda v: re.fullmatch(r"-?\d+", v) is not None and int(v) >= numbers[0]
    if name == "max" and len(numbers) == 1:
        return lambda v: re.fullmatch(r"-?\d+", v) is not None and int(v) <= numbers[0]
    if name == "range" and len(numbers) == 2:
        return lambda v: re.fullmatch(r"-?\d+", v) is not None and numbers[0] <= int(v) <= numbers[1]
    if name == "minlength" and len(numbers) == 1:
        return lambda v: len(v) >= numbers[0]
    if name == "maxlength" and len(numbers) == 1:
        return lambda v: len(v) <= numbers[0]
    if name == "length" and len(numbers) in (1, 2):
        low, high = numbers[0], numbers[-1]
        return lambda v: low <= len(v) <= high
    raise HostStartupError(f"route {template!r}: unknown route constraint {text!r}")


@dataclass(frozen=True)
class _Segment:
    literal: str | None  # a fixed segment, compared case-insensitively
    name: str = ""
    optional: bool = False
    catch_all: bool = False
    constraints: tuple[Callable[[str], bool], ...] = ()

    def precedence(self) -> int:
        """ASP.NET order: literal < constrained parameter < parameter < optional < catch-all."""
        if self.literal is not None:
            return 0
        if self.catch_all:
            return 4
        if self.optional:
            return 3
        return 1 if self.constraints else 2


_PARAM_RE = re.compile(r"^\{(?P<star>\*{1,2})?(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<rest>(?::[^{}]*)?)(?P<opt>\?)?\}$")


@dataclass(frozen=True)
class RouteTemplate:
    """A parsed route template. Parameters are whole segments (``{id}``), as the routes here use."""

    template: str
    segments: tuple[_Segment, ...]

    @classmethod
    def parse(cls, template: str) -> RouteTemplate:
        segments: list[_Segment] = []
        parts = [p for p in template.strip("/").split("/")] if template.strip("/") else []
        for index, part in enumerate(parts):
            if "{" not in part and "}" not in part:
                if not part:
                    raise HostStartupError(f"route {template!r}: empty segment")
                segments.append(_Segment(literal=part))
                continue
            match = _PARAM_RE.match(part)
            if not match:
                raise HostStartupError(f"route {template!r}: segment {part!r} must be a literal or one {{parameter}}")
            constraint_texts = _split_constraints(match["rest"][1:]) if match["rest"] else []
            segment = _Segment(
                literal=None,
                name=match["name"],
                optional=bool(match["opt"]),
                catch_all=bool(match["star"]),
                constraints=tuple(_compile_constraint(c, template) for c in constraint_texts),
            )
            if segment.catch_all and index != len(parts) - 1:
                raise HostStartupError(f"route {template!r}: a catch-all parameter must be last")
            segments.append(segment)
        # Only trailing parameters may be optional: "a/{x?}/b" could never be matched without x.
        seen_optional = False
        for segment in segments:
            if seen_optional and not (segment.optional or segment.catch_all):
                raise HostStartupError(f"route {template!r}: an optional parameter must be at the end")
            seen_optional = seen_optional or segment.optional
        names = [s.name for s in segments if s.literal is None]
        if len(names) != len(set(names)):
            raise HostStartupError(f"route {template!r}: a parameter name is used twice")
        return cls(template, tuple(segments))

    def precedence(self) -> tuple[int, ...]:
        return tuple(s.precedence() for s in self.segments)

    def match(self, path: str) -> dict[str, str] | None:
        """Route values for ``path`` (below the route prefix, not URL-decoded yet), or None."""
        parts = [unquote(p) for p in path.strip("/").split("/")] if path.strip("/") else []
        values: dict[str, str] = {}
        for index, segment in enumerate(self.segments):
            if segment.catch_all:
                # A catch-all takes the rest of the path, possibly nothing (ASP.NET: implicitly optional).
                rest = "/".join(parts[index:])
                if not rest:
                    return values
                if not all(check(rest) for check in segment.constraints):
                    return None
                values[segment.name] = rest
                return values
            if index >= len(parts):
                return values if segment.optional else None
            part = parts[index]
            if segment.literal is not None:
                if part.lower() != segment.literal.lower():
                    return None
                continue
            if not all(check(part) for check in segment.constraints):
                return None
            values[segment.name] = part
        return values if len(parts) == len(self.segments) else None


def _split_constraints(text: str) -> list[str]:
    """``int:min(1)`` -> [``int``, ``min(1)``]; colons inside ``regex(...)`` stay put."""
    parts: list[str] = []
    depth, current = 0, ""
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == ":" and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [p for p in parts if p]


# --------------------------------------------------------------------------------------------------
# Keys, invocation records, calling user code


@dataclass(frozen=True)
class HostKeys:
    """The host's keys: the default function key (valid for every function) and the master key."""

    function_key: str
    master_key: str

    @staticmethod
    def generate() -> HostKeys:
        return HostKeys(function_key=secrets.token_urlsafe(32), master_key=secrets.token_urlsafe(32))

    @staticmethod
    def load_or_create(path: Path) -> HostKeys:
        if path.exists():
            data = json.loads(path.read_text())
            return HostKeys(function_key=data["functionKeys"]["default"], master_key=data["masterKey"])
        keys = HostKeys.generate()
        path.parent.mkdir(parents=True, exist_ok=True)
        # Created with 0600 from the start (not chmod after writing): the keys are never world-readable.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump({"masterKey": keys.master_key, "functionKeys": {"default": keys.function_key}}, handle)
        return keys


@dataclass(frozen=True)
class Invocation:
    """One firing of a function as the host saw it (also logged)."""

    function: str
    trigger: str  # "http" | "timer" | "blob"
    started_at: datetime
    duration_s: float
    outcome: str  # "succeeded" | "failed" | "skipped"
    error: str | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)


class _RetryContext(RetryContext):
    def __init__(self, retry_count: int, max_retry_count: int) -> None:
        self._retry_count = retry_count
        self._max_retry_count = max_retry_count

    @property
    def retry_count(self) -> int:
        return self._retry_count

    @property
    def max_retry_count(self) -> int:
        return self._max_retry_count

    @property
    def exception(self) -> Any:
        return None


class _TraceContext(TraceContext):
    def __init__(self) -> None:
        self._parent = f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"

    @property
    def trace_state(self) -> str:
        return ""

    @property
    def trace_parent(self) -> str:
        return self._parent

    @property
    def attributes(self) -> dict[str, str]:
        return {}


class _Context(func.Context):
    """What a function declaring a ``context`` parameter receives."""

    _thread_local = threading.local()

    def __init__(self, function_name: str, directory: str, retry_count: int = 0, max_retry: int = 0) -> None:
        self._invocation_id = str(uuid.uuid4())
        self._function_name = function_name
        self._directory = directory
        self._trace = _TraceContext()
        self._retry = _RetryContext(retry_count, max_retry)

    @property
    def invocation_id(self) -> str:
        return self._invocation_id

    @property
    def thread_local_storage(self) -> Any:
        return self._thread_local

    @property
    def function_name(self) -> str:
        return self._function_name

    @property
    def function_directory(self) -> str:
        return self._directory

    @property
    def trace_context(self) -> TraceContext:
        return self._trace

    @property
    def retry_context(self) -> RetryContext:
        return self._retry


def _call_user_function(function: Function, trigger_arg: str, value: Any, context: _Context) -> Any:
    user_function = function.get_user_function()
    kwargs: dict[str, Any] = {trigger_arg: value}
    if "context" in inspect.signature(user_function).parameters and trigger_arg != "context":
        kwargs["context"] = context
    result = user_function(**kwargs)
    if inspect.iscoroutine(result):
        # The Python worker runs async functions on its event loop; one loop per call is enough here.
        result = asyncio.run(result)
    return result


# --------------------------------------------------------------------------------------------------
# The hosted functions


@dataclass
class _HostedFunction:
    function: Function
    name: str
    kind: str  # http | timer | blob
    trigger_arg: str


@dataclass
class _HttpFunction(_HostedFunction):
    route: RouteTemplate = field(default_factory=lambda: RouteTemplate("", ()))
    methods: frozenset[str] | None = None  # None: every method
    auth_level: str = "function"


@dataclass
class _TimerFunction(_HostedFunction):
    schedule_text: str = ""
    run_on_startup: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)  # the singleton lock


@dataclass
class _BlobFunction(_HostedFunction):
    container: str = ""
    name_pattern: re.Pattern[str] = field(default_factory=lambda: re.compile(".*"))
    prefix: str = ""
    connection_string: str = ""
    connection_name: str = ""  # as the binding names it, %SETTING% resolved
    sdk_type: type | None = None  # an SDK type (BlobClient, ...): the function gets a client, not the content


# --------------------------------------------------------------------------------------------------
# SDK-type bindings (azurefunctions-extensions-bindings-blob)
#
# For a binding parameter annotated with an SDK type, the Python worker marks the binding
# "SupportsDeferredBinding" in the function metadata (azurefunctions-extensions-base utils.py,
# Binding.get_dict_repr) and the host then sends, instead of the blob's bytes, a ModelBindingData
# message built by the storage extension (Azure/azure-sdk-for-net,
# sdk/storage/Microsoft.Azure.WebJobs.Extensions.Storage.Blobs/src/Config/BlobsExtensionConfigProvider.cs,
# CreateParameterBindingData: version "1.0", source "AzureStorageBlobs", content type
# "application/json", content {"Connection", "ContainerName", "BlobName"}; since azure-sdk-for-net
# PR 38284 "Connection" is the connection *name* of the binding). The worker decodes it with the
# extension's converter (azure-functions-python-worker azure_functions_worker/bindings/meta.py,
# deferred_bindings_decode), which builds the client from that app setting by itself
# (azurefunctions/extensions/bindings/blob/utils.py, service_client_factory). The host never
# downloads the blob for such a binding, and neither does this one.


@dataclass(frozen=True)
class ModelBindingData:
    """The gRPC ``ModelBindingData`` message the host sends for an SDK-type binding (same fields)."""

    version: str
    source: str
    content_type: str
    content: bytes


def blob_model_binding_data(connection: str, container: str, blob: str) -> ModelBindingData:
    """What the storage extension sends for a blob trigger bound to an SDK type."""
    content = json.dumps({"Connection": connection, "ContainerName": container, "BlobName": blob})
    return ModelBindingData("1.0", "AzureStorageBlobs", "application/json", content.encode())


def _sdk_binding_type(binding_type: str, pytype: Any) -> type | None:
    """The worker's test (bindings/meta.py, check_deferred_bindings_enabled): an annotation the
    extension registry supports, for a binding it has a converter for, is an SDK-type binding."""
    registry = get_binding_registry()
    if registry.get(binding_type) is None or not registry.check_supported_type(pytype):
        return None
    return pytype  # type: ignore[no-any-return]


def decode_sdk_binding(binding_type: str, pytype: type, data: ModelBindingData) -> Any:
    """The SDK object for ``data``, through the extension's own converter, as the worker decodes it."""
    converter = get_binding_registry().get(binding_type)
    if converter is None:
        raise HostStartupError(f"no SDK-type converter is registered for {binding_type!r} bindings")
    # The worker passes the trigger metadata too; the blob converter does not use it.
    return converter.decode(Datum(value=data, type="model_binding_data"), trigger_metadata={}, pytype=pytype)


def _blob_name_pattern(pattern: str) -> tuple[re.Pattern[str], str]:
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


# --------------------------------------------------------------------------------------------------
# HTTP server


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    host: LocalFunctionsHost


class _Handler(BaseHTTPRequestHandler):
    server: _HttpServer
    # HTTP/1.0 (the default): one request per connection, so no idle keep-alive thread outlives stop().
    # The socket timeout bounds a client that connects and never sends.
    timeout = 30

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("http %s - %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_OPTIONS(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        try:
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = -1
            refusal = self.server.host._refuse_request(self.path, length)
            if refusal is not None:
                # Answered in front of the host (the body is not read); the app never sees the request.
                self.close_connection = True
                self._send(*refusal)
                return
            try:
                body = self.rfile.read(length) if length > 0 else b""
            except TimeoutError:
                self.close_connection = True
                self._send(*_text_response(408, "Request Timeout: the body was shorter than its Content-Length"))
                return
            status, headers, payload = self.server.host._handle_http(
                self.command, self.path, dict(self.headers.items()), body
            )
        except Exception:
            log.exception("host error serving %s %s", self.command, self.path)
            status, headers, payload = _text_response(500, _GENERIC_500)
        self._send(status, headers, payload)

    def _send(self, status: int, headers: list[tuple[str, str]], payload: bytes) -> None:
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)


def _json_response(status: int, body: Any) -> tuple[int, list[tuple[str, str]], bytes]:
    return status, [("Content-Type", "application/json; charset=utf-8")], json.dumps(body).encode()


def _text_response(status: int, text: bytes | str) -> tuple[int, list[tuple[str, str]], bytes]:
    payload = text.encode() if isinstance(text, str) else text
    return status, [("Content-Type", "text/plain; charset=utf-8")], payload


# --------------------------------------------------------------------------------------------------
# Blob receipts


class _ReceiptStore:
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


# --------------------------------------------------------------------------------------------------
# The host


class LocalFunctionsHost:
    """Hosts one app in-process: HTTP server, timer threads, blob pollers. See the module docstring."""

    def __init__(
        self,
        app: Any,
        *,
        env: Mapping[str, str] | None = None,
        http_host: str = "127.0.0.1",
        http_port: int = 7071,
        route_prefix: str = "api",
        timer_period_seconds: float | None = None,
        blob_poll_seconds: float = 1.0,
        blob_max_dequeue_count: int = DEFAULT_MAX_DEQUEUE_COUNT,
        state_dir: str | Path | None = None,
        keys: HostKeys | None = None,
        export_env: bool = True,
        functions: Iterable[str] | None = None,
        easy_auth: EasyAuthSettings | None = None,
        max_url_bytes: int | None = None,
    ) -> None:
        self.app = load_app(app) if isinstance(app, str) else app
        self._env_overrides = dict(env or {})
        # App Service authentication in front of the HTTP routes (emulator/easyauth.py); the platform
        # then also tells the app so (WEBSITE_AUTH_ENABLED), which a caller's env cannot override.
        self._easy_auth = EasyAuth(easy_auth) if easy_auth is not None else None
        self._max_url_bytes = max_url_bytes
        if easy_auth is not None:
            self._env_overrides.update(PLATFORM_ENV)
        self._http_host = http_host
        self._http_port = http_port
        self._route_prefix = route_prefix.strip("/")
        self._timer_period = timer_period_seconds
        self._blob_poll = blob_poll_seconds
        self._max_dequeue = blob_max_dequeue_count
        self._given_state_dir = Path(state_dir) if state_dir is not None else None
        self._given_keys = keys
        self._export_env = export_env
        self._only = set(functions) if functions is not None else None

        self._lock = threading.Lock()
        self._invocations: list[Invocation] = []
        self._invocation_added = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._workers: set[threading.Thread] = set()
        self._server: _HttpServer | None = None
        self._keys: HostKeys | None = None
        self._state_dir: Path | None = None
        self._owns_state_dir = False
        self._saved_env: dict[str, str | None] = {}
        self._http: list[_HttpFunction] = []
        self._timers: dict[str, _TimerFunction] = {}
        self._blobs: dict[str, _BlobFunction] = {}
        self._missed: dict[str, bool] = {}
        self._scans: dict[str, int] = {}
        self._receipts: _ReceiptStore | None = None
        self._sdk_cache: dict[tuple[str, type, bytes, str], Any] = {}
        self._started = False
        # Thread names carry a per-host prefix, so leaks can be attributed (and tested) per host.
        self.thread_prefix = f"funchost{next(_HOST_SERIAL)}-"

    # ---- public API -------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("host not started")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def api_url(self) -> str:
        return f"{self.url}/{self._route_prefix}" if self._route_prefix else self.url

    @property
    def keys(self) -> HostKeys:
        if self._keys is None:
            raise RuntimeError("host not started")
        return self._keys

    @property
    def function_key(self) -> str:
        return self.keys.function_key

    @property
    def master_key(self) -> str:
        return self.keys.master_key

    @property
    def state_dir(self) -> Path:
        if self._state_dir is None:
            raise RuntimeError("host not started")
        return self._state_dir

    @property
    def invocations(self) -> list[Invocation]:
        """A snapshot of every invocation so far, in completion order."""
        with self._lock:
            return list(self._invocations)

    @property
    def function_names(self) -> list[str]:
        return [f.name for f in self._http] + list(self._timers) + list(self._blobs)

    def blob_receipts(self) -> dict[str, dict[str, Any]]:
        return self._receipts.snapshot() if self._receipts else {}

    def wait_for_invocations(
        self, function: str, count: int, timeout: float = 10.0, outcome: str | None = None
    ) -> list[Invocation]:
        """Block until ``function`` has ``count`` invocations (with ``outcome`` if given); return them."""
        deadline = time.monotonic() + timeout
        with self._invocation_added:
            while True:
                found = [
                    i for i in self._invocations if i.function == function and (outcome is None or i.outcome == outcome)
                ]
                remaining = deadline - time.monotonic()
                if len(found) >= count or remaining <= 0:
                    if len(found) < count:
                        raise TimeoutError(f"{function}: {len(found)} of {count} invocations after {timeout}s")
                    return found
                self._invocation_added.wait(remaining)

    def wait_for_blob_scans(self, function: str, count: int, timeout: float = 10.0) -> None:
        """Block until ``count`` more full scans of ``function``'s container have completed.

        "Nothing fired after N scans" is a real negative assertion; "nothing fired after a sleep" is not.
        """
        deadline = time.monotonic() + timeout
        with self._invocation_added:
            target = self._scans.get(function, 0) + count
            while self._scans.get(function, 0) < target:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"{function}: container scans did not complete in {timeout}s")
                self._invocation_added.wait(remaining)

    def start(self) -> LocalFunctionsHost:
        if self._started:
            raise RuntimeError("host already started")
        env = {**os.environ, **self._env_overrides}
        # Index and validate everything before binding a socket or starting a thread, so a bad
        # setting fails start() cleanly with nothing to tear down.
        self._index(env)
        self._prepare_state()
        if self._export_env:
            for name, value in self._env_overrides.items():
                self._saved_env[name] = os.environ.get(name)
                os.environ[name] = value
        self._started = True
        try:
            self._start_http()
            for timer in self._timers.values():
                self._spawn(f"timer:{timer.name}", self._run_timer, timer)
            for blob in self._blobs.values():
                self._spawn(f"blob:{blob.name}", self._run_blob_poller, blob)
        except BaseException:
            self.stop()
            raise
        log.info("host started at %s: %s", self.url if self._server else "(no http)", ", ".join(self.function_names))
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server and every thread; wait for running invocations up to ``timeout``."""
        if not self._started:
            return
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        deadline = time.monotonic() + timeout
        with self._lock:
            workers = list(self._workers)
        for thread in [*self._threads, *workers]:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                log.warning("thread %s still running after stop(); it is a daemon and dies with us", thread.name)
        for name, previous in self._saved_env.items():
            if previous is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = previous
        self._saved_env.clear()
        if self._owns_state_dir and self._state_dir is not None:
            shutil.rmtree(self._state_dir, ignore_errors=True)
        self._started = False
        log.info("host stopped")

    def __enter__(self) -> LocalFunctionsHost:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def trigger(self, name: str, input: str | None = None) -> Invocation:  # noqa: A002 - admin API name
        """Fire a non-HTTP function now and wait for it (the admin API does the same, asynchronously).

        A timer that is already running is skipped (the singleton lock), as a scheduled firing would be.
        """
        if name in self._timers:
            invocation = self._fire_timer(self._timers[name], datetime.now(UTC), wait=True)
            assert invocation is not None  # wait=True always reports the invocation
            return invocation
        if name in self._blobs:
            if not input:
                raise ValueError(f"{name} is a blob trigger: input must be '<container>/<blob name>'")
            return self._fire_blob_by_path(self._blobs[name], input)
        raise KeyError(f"no timer or blob function named {name!r}")

    # ---- indexing ---------------------------------------------------------------------------------

    def _index(self, env: Mapping[str, str]) -> None:
        problems: list[str] = []
        for function in index_app(self.app):
            name = function.get_function_name() or function.get_user_function().__name__
            if self._only is not None and name not in self._only:
                continue
            trigger = function.get_trigger()
            kind = trigger.type if trigger is not None else None
            try:
                if kind == "httpTrigger":
                    self._http.append(self._index_http(function, name, trigger))
                elif kind == "timerTrigger":
                    self._timers[name] = self._index_timer(function, name, trigger, env)
                elif kind == "blobTrigger":
                    self._blobs[name] = self._index_blob(function, name, trigger, env)
                else:
                    log.warning("function %s: trigger %s is not emulated; not hosted", name, kind)
            except HostStartupError as error:
                problems.append(str(error))
        if problems:
            self._http, self._timers, self._blobs = [], {}, {}
            raise HostStartupError("cannot host the app:\n  " + "\n  ".join(problems))
        # Most specific routes first (ASP.NET precedence), then by template text for a stable order.
        self._http.sort(key=lambda f: (f.route.precedence(), f.route.template))

    def _index_http(self, function: Function, name: str, trigger: Any) -> _HttpFunction:
        methods = getattr(trigger, "methods", None)
        return _HttpFunction(
            function=function,
            name=name,
            kind="http",
            trigger_arg=trigger.name,
            route=RouteTemplate.parse(getattr(trigger, "route", None) or name),
            methods=frozenset(_enum_value(m).upper() for m in methods) if methods else None,
            auth_level=_enum_value(getattr(trigger, "auth_level", None) or "function").lower(),
        )

    def _index_timer(self, function: Function, name: str, trigger: Any, env: Mapping[str, str]) -> _TimerFunction:
        schedule_text = resolve_placeholders(trigger.schedule, env, f"function {name} schedule")
        try:
            parse_schedule(schedule_text)
        except NCrontabError as error:
            raise HostStartupError(f"function {name}: {error}") from None
        return _TimerFunction(
            function=function,
            name=name,
            kind="timer",
            trigger_arg=trigger.name,
            schedule_text=schedule_text,
            run_on_startup=bool(getattr(trigger, "run_on_startup", False)),
        )

    def _index_blob(self, function: Function, name: str, trigger: Any, env: Mapping[str, str]) -> _BlobFunction:
        path = resolve_placeholders(trigger.path, env, f"function {name} path")
        container, slash, pattern = path.partition("/")
        if not slash or not container or "{" in container:
            raise HostStartupError(f"function {name}: blob path {path!r} must be '<container>/<pattern>'")
        connection_name = resolve_placeholders(trigger.connection or "", env, f"function {name} connection")
        connection_string = self._connection_string(name, connection_name, env)
        regex, prefix = _blob_name_pattern(pattern or "{name}")
        try:
            # The worker resolves annotations the same way (functions.py, typing.get_type_hints).
            pytype = typing.get_type_hints(function.get_user_function()).get(trigger.name)
        except Exception as error:  # noqa: BLE001 - any failure to resolve fails the function's load
            raise HostStartupError(f"function {name}: cannot resolve its type annotations: {error}") from None
        sdk_type = _sdk_binding_type(trigger.type, pytype)
        if sdk_type is not None:
            converter = get_binding_registry().get(trigger.type)
            if not converter.check_input_type_annotation(sdk_type):
                raise HostStartupError(f"function {name}: {sdk_type!r} is not a type the blob trigger can bind to")
            # The extension picks a managed identity as soon as one of these settings EXISTS, even
            # empty (azurefunctions/extensions/bindings/blob/utils.py, using_system_managed_identity /
            # using_user_managed_identity), whatever the connection string says. There is no managed
            # identity here (and its token endpoint is not on this machine): refuse to start.
            conn = connection_name or "AzureWebJobsStorage"
            present = sorted(
                k for k in env if k in (f"{conn}__serviceUri", f"{conn}__blobServiceUri", f"{conn}__credential")
            )
            if present:
                raise HostStartupError(
                    f"function {name}: app setting(s) {', '.join(present)} make the blob SDK binding use a managed "
                    f"identity (even when empty), and the local host has none: remove them and set {conn} to a "
                    "connection string"
                )
        return _BlobFunction(
            function=function,
            name=name,
            kind="blob",
            trigger_arg=trigger.name,
            container=container,
            name_pattern=regex,
            prefix=prefix,
            connection_string=connection_string,
            connection_name=connection_name or "AzureWebJobsStorage",
            sdk_type=sdk_type,
        )

    @staticmethod
    def _connection_string(function: str, connection: str, env: Mapping[str, str]) -> str:
        # The real host looks the connection up as given, then with the AzureWebJobs prefix; no
        # connection at all means the host's own storage (AzureWebJobsStorage).
        candidates = [connection, f"AzureWebJobs{connection}"] if connection else ["AzureWebJobsStorage"]
        for candidate in candidates:
            if env.get(candidate):
                return env[candidate]
        if connection and any(k.startswith(f"{connection}__") and v for k, v in env.items()):
            raise HostStartupError(
                f"function {function}: connection {connection!r} is identity-based ({connection}__...); "
                "the local host has no managed identity: set {connection} to a connection string"
            )
        raise HostStartupError(
            f"function {function}: app setting {candidates[0]!r} (the blob trigger's connection) is not set"
        )

    def _prepare_state(self) -> None:
        if self._given_state_dir is not None:
            self._state_dir = self._given_state_dir
            self._state_dir.mkdir(parents=True, exist_ok=True)
        else:
            self._state_dir = Path(tempfile.mkdtemp(prefix="funchost-"))
            self._owns_state_dir = True
        self._keys = self._given_keys or HostKeys.load_or_create(self._state_dir / KEYS_FILE)
        self._receipts = _ReceiptStore(self._state_dir / RECEIPTS_FILE)

    # ---- threads ----------------------------------------------------------------------------------

    def _spawn(self, name: str, target: Callable[..., None], *args: Any) -> None:
        # Daemon threads as a last resort only: stop() joins them; daemon just means a hung user
        # function cannot keep the interpreter alive after a failed test.
        thread = threading.Thread(target=target, args=args, name=f"{self.thread_prefix}{name}", daemon=True)
        self._threads.append(thread)
        thread.start()

    def _record(self, invocation: Invocation) -> None:
        with self._invocation_added:
            self._invocations.append(invocation)
            self._invocation_added.notify_all()
        level = logging.INFO if invocation.outcome != "failed" else logging.ERROR
        log.log(
            level,
            "function %s (%s) %s in %.3fs%s",
            invocation.function,
            invocation.trigger,
            invocation.outcome,
            invocation.duration_s,
            f": {invocation.error}" if invocation.error else "",
        )

    def _invoke(
        self, hosted: _HostedFunction, value: Any, detail: Mapping[str, Any], retry: tuple[int, int] = (0, 0)
    ) -> tuple[Invocation, Any]:
        started_at = datetime.now(UTC)
        began = time.monotonic()
        context = _Context(hosted.name, str(Path(hosted.function.function_script_file).parent), *retry)
        try:
            result = _call_user_function(hosted.function, hosted.trigger_arg, value, context)
        except Exception as error:  # noqa: BLE001 - a function failure is data for the host
            log.error(
                "function %s raised (invocation %s):\n%s",
                hosted.name,
                context.invocation_id,
                traceback.format_exc(),
            )
            invocation = Invocation(
                hosted.name,
                hosted.kind,
                started_at,
                time.monotonic() - began,
                "failed",
                f"{type(error).__name__}: {error}",
                dict(detail),
            )
            self._record(invocation)
            return invocation, None
        invocation = Invocation(
            hosted.name, hosted.kind, started_at, time.monotonic() - began, "succeeded", None, dict(detail)
        )
        self._record(invocation)
        return invocation, result

    # ---- HTTP -------------------------------------------------------------------------------------

    def _start_http(self) -> None:
        server = _HttpServer((self._http_host, self._http_port), _Handler)
        server.host = self
        self._server = server
        self._spawn("http", server.serve_forever, 0.1)

    def _refuse_request(self, raw_path: str, length: int) -> tuple[int, list[tuple[str, str]], bytes] | None:
        """The front end's own answers, before the host: a bad Content-Length, a request or URL too long."""
        if length < 0:
            return _text_response(400, "Bad Request: invalid Content-Length")
        if length > MAX_REQUEST_BYTES:
            return _text_response(413, f"Request Entity Too Large: at most {MAX_REQUEST_BYTES} bytes")
        if self._max_url_bytes is not None and len(raw_path) > self._max_url_bytes:
            return _text_response(414, f"URI Too Long: at most {self._max_url_bytes} bytes")
        return None

    def _handle_http(
        self, method: str, raw_path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        split = urlsplit(raw_path)
        query = dict(parse_qsl(split.query, keep_blank_values=True))
        presented = _header(headers, "x-functions-key") or query.get("code")
        path = split.path
        if path.rstrip("/") == "/admin" or path.startswith("/admin/"):
            return self._handle_admin(method, path, presented, body)
        if self._easy_auth is not None:
            # Before the Functions host sees anything, as App Service authentication does.
            verdict = self._easy_auth.apply(headers)
            if verdict.status is not None:
                log.info("App Service authentication refused %s %s: %s", method, path, verdict.reason)
                return _text_response(verdict.status, "Unauthorized")
            headers = verdict.headers
        prefix = f"/{self._route_prefix}" if self._route_prefix else ""
        if prefix and not (path == prefix or path.startswith(prefix + "/")):
            return _text_response(404, "Not Found")
        relative = path[len(prefix) :]

        matched: list[tuple[_HttpFunction, dict[str, str]]] = []
        for hosted in self._http:
            values = hosted.route.match(relative)
            if values is not None:
                matched.append((hosted, values))
        if not matched:
            return _text_response(404, "Not Found")
        allowed = [(h, v) for h, v in matched if h.methods is None or method.upper() in h.methods]
        if not allowed:
            methods = sorted({m for h, _ in matched for m in (h.methods or ())})
            status, response_headers, payload = _text_response(405, "Method Not Allowed")
            return status, [*response_headers, ("Allow", ", ".join(methods))], payload
        hosted, route_values = allowed[0]
        if not self._authorized(hosted.auth_level, presented):
            return _text_response(401, "Unauthorized")

        host_header = _header(headers, "host") or f"{self._http_host}:{self._http_port}"
        request = func.HttpRequest(
            method=method.upper(),
            url=f"http://{host_header}{raw_path}",
            headers=headers,
            params=query,
            route_params=route_values,
            body=body,
        )
        invocation, result = self._invoke(
            hosted, request, {"method": method.upper(), "path": path, "route_params": route_values}
        )
        if invocation.outcome == "failed":
            return _text_response(500, _GENERIC_500)
        try:
            return _convert_http_result(result)
        except TypeError:
            log.exception("function %s returned a value that is not an HTTP response", hosted.name)
            return _text_response(500, _GENERIC_500)

    def _authorized(self, auth_level: str, presented: str | None) -> bool:
        if auth_level == "anonymous":
            return True
        if presented is None:
            return False
        keys = self.keys
        # Constant-time comparisons: the key is a secret and the comparison is reachable remotely.
        is_master = secrets.compare_digest(presented, keys.master_key)
        if auth_level == "admin":
            return is_master
        return is_master or secrets.compare_digest(presented, keys.function_key)

    def _handle_admin(
        self, method: str, path: str, presented: str | None, body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        if not self._authorized("admin", presented):
            return _text_response(401, "Unauthorized")
        if path.rstrip("/") == "/admin/host/status" and method == "GET":
            return _json_response(200, {"state": "Running", "functions": self.function_names})
        match = re.fullmatch(r"/admin/functions/([^/]+)/?", path)
        if not match:
            return _text_response(404, "Not Found")
        name = unquote(match.group(1))
        if method != "POST":
            return _text_response(405, "Method Not Allowed")
        if name not in self._timers and name not in self._blobs:
            return _text_response(404, f"no timer or blob function named {name}")
        try:
            payload = json.loads(body or b"{}")
            text = payload.get("input") if isinstance(payload, dict) else None
        except ValueError:
            return _text_response(400, 'body must be JSON: {"input": "..."}')
        if name in self._blobs and not text:
            return _text_response(400, 'a blob trigger needs {"input": "<container>/<blob name>"}')
        # 202 and run in the background, as the real admin API does.
        self._spawn_worker(f"admin:{name}", self.trigger, name, text)
        return _text_response(202, "")

    def _spawn_worker(self, name: str, target: Callable[..., Any], *args: Any) -> threading.Thread:
        def run() -> None:
            try:
                target(*args)
            finally:
                with self._lock:
                    self._workers.discard(threading.current_thread())

        thread = threading.Thread(target=run, name=f"{self.thread_prefix}{name}", daemon=True)
        with self._lock:
            self._workers.add(thread)
        thread.start()
        return thread

    # ---- timers -----------------------------------------------------------------------------------

    def _run_timer(self, timer: _TimerFunction) -> None:
        schedule = parse_schedule(timer.schedule_text)
        period = self._timer_period
        if timer.run_on_startup:
            self._fire_timer(timer, datetime.now(UTC), wait=False)
        began_wall, began_mono, firings = datetime.now(UTC), time.monotonic(), 0
        last = began_wall
        while not self._stop.is_set():
            if period is not None:
                # Fixed period on the monotonic clock: firing k is at start + k * period, so a slow
                # invocation does not shift every later firing.
                firings += 1
                due_mono = began_mono + firings * period
                if self._stop.wait(max(0.0, due_mono - time.monotonic())):
                    return
                scheduled = began_wall + timedelta(seconds=firings * period)
            else:
                scheduled = schedule.next_after(last)
                # After a stall (suspended machine, long GC) fire once for the latest missed occurrence,
                # flagged past due, instead of replaying every one of them back to back.
                now = datetime.now(UTC)
                while (following := schedule.next_after(scheduled)) <= now:
                    scheduled = following
                    self._missed[timer.name] = True
                last = scheduled
                if self._stop.wait(max(0.0, (scheduled - datetime.now(UTC)).total_seconds())):
                    return
            self._fire_timer(timer, scheduled, wait=False)

    def _fire_timer(self, timer: _TimerFunction, scheduled: datetime, *, wait: bool) -> Invocation | None:
        if not timer.lock.acquire(blocking=False):
            # The singleton lock: the previous invocation still runs, so this occurrence is missed.
            self._missed[timer.name] = True
            skipped = Invocation(
                timer.name,
                "timer",
                datetime.now(UTC),
                0.0,
                "skipped",
                "previous invocation still running",
                {"scheduled": scheduled.isoformat()},
            )
            with self._invocation_added:
                self._invocations.append(skipped)
                self._invocation_added.notify_all()
            log.warning(
                "function %s: skipped the %s firing, the previous run is still going", timer.name, scheduled.isoformat()
            )
            return skipped
        past_due = self._missed.pop(timer.name, False)
        schedule_status = {
            "Last": scheduled.isoformat(),
            "Next": self._next_timer_time(timer, scheduled).isoformat(),
            "LastUpdated": datetime.now(UTC).isoformat(),
        }
        request = TimerRequest(past_due=past_due, schedule_status=schedule_status, schedule={"AdjustForDST": True})
        outcome: list[Invocation] = []

        def run() -> None:
            try:
                invocation, _ = self._invoke(timer, request, {"scheduled": scheduled.isoformat(), "past_due": past_due})
                outcome.append(invocation)
            finally:
                timer.lock.release()

        if wait:
            run()
            return outcome[0]
        # The invocation runs on its own thread so the scheduler keeps time (and can see the lock).
        self._spawn_worker(f"run:{timer.name}", run)
        return None

    def _next_timer_time(self, timer: _TimerFunction, after: datetime) -> datetime:
        if self._timer_period is not None:
            return after + timedelta(seconds=self._timer_period)
        return parse_schedule(timer.schedule_text).next_after(after)

    # ---- blobs ------------------------------------------------------------------------------------

    def _container_client(self, blob: _BlobFunction) -> ContainerClient:
        service = BlobServiceClient.from_connection_string(blob.connection_string)
        return service.get_container_client(blob.container)

    def _run_blob_poller(self, blob: _BlobFunction) -> None:
        container = self._container_client(blob)
        unreachable_logged = False
        while not self._stop.is_set():
            try:
                self._scan_container(blob, container)
                unreachable_logged = False
                with self._invocation_added:
                    self._scans[blob.name] = self._scans.get(blob.name, 0) + 1
                    self._invocation_added.notify_all()
            except ResourceNotFoundError:
                pass  # the container does not exist yet: the real host waits for it too
            except AzureError as error:
                # Storage down or unreachable: keep polling, but say so once rather than every poll.
                if not unreachable_logged:
                    log.warning("function %s: cannot list container %s: %s", blob.name, blob.container, error)
                    unreachable_logged = True
            if self._stop.wait(self._blob_poll):
                break
        container.close()

    def _scan_container(self, blob: _BlobFunction, container: ContainerClient) -> None:
        assert self._receipts is not None
        for item in container.list_blobs(name_starts_with=blob.prefix or None, include=["metadata"]):
            if self._stop.is_set():
                return
            if not blob.name_pattern.match(item.name):
                continue
            key = _ReceiptStore.key(blob.name, blob.container, item.name, str(item.etag))
            entry = self._receipts.get(key)
            if entry is not None and entry["status"] in ("done", "poisoned"):
                continue
            self._process_blob(blob, container, item.name, str(item.etag), key, entry)

    def _process_blob(
        self,
        blob: _BlobFunction,
        container: ContainerClient,
        name: str,
        etag: str | None,
        key: str | None,
        entry: dict[str, Any] | None,
    ) -> Invocation | None:
        assert self._receipts is not None
        client = container.get_blob_client(name)
        if blob.sdk_type is not None:
            return self._process_blob_sdk(blob, name, etag, key, entry)
        try:
            if etag:
                # Read exactly the version that was listed; a newer one is picked up by the next scan.
                downloader = client.download_blob(etag=etag, match_condition=MatchConditions.IfNotModified)
            else:
                downloader = client.download_blob()
            content = downloader.readall()
        except (ResourceModifiedError, ResourceNotFoundError):
            return None
        props = downloader.properties
        etag = str(props.etag)
        key = key or _ReceiptStore.key(blob.name, blob.container, name, etag)
        attempts = int(entry["attempts"]) if entry else 0
        stream = InputStream(
            data=content,
            name=f"{blob.container}/{name}",
            uri=client.url,
            length=len(content),
            blob_properties={
                "ETag": etag,
                "Length": props.size,
                "ContentType": props.content_settings.content_type,
                "ContentMD5": (props.content_settings.content_md5 or b"").hex() or None,
                "LastModified": props.last_modified.isoformat() if props.last_modified else None,
                "CreatedOn": props.creation_time.isoformat() if props.creation_time else None,
                "BlobType": _enum_value(props.blob_type),
            },
            metadata=dict(props.metadata or {}),
        )
        invocation, _ = self._invoke(
            blob,
            stream,
            {"blob": f"{blob.container}/{name}", "etag": etag, "attempt": attempts + 1},
            retry=(attempts, self._max_dequeue - 1),
        )
        self._settle_receipt(blob, name, etag, key, attempts, invocation)
        return invocation

    def _settle_receipt(
        self, blob: _BlobFunction, name: str, etag: str, key: str, attempts: int, invocation: Invocation
    ) -> None:
        assert self._receipts is not None
        if invocation.outcome == "succeeded":
            self._receipts.put(key, {"status": "done", "attempts": attempts + 1})
        elif attempts + 1 >= self._max_dequeue:
            self._receipts.put(key, {"status": "poisoned", "attempts": attempts + 1, "error": invocation.error})
            log.error(
                "function %s: blob %s/%s (etag %s) poisoned after %d attempts: %s",
                blob.name,
                blob.container,
                name,
                etag,
                attempts + 1,
                invocation.error,
            )
        else:
            self._receipts.put(key, {"status": "failed", "attempts": attempts + 1, "error": invocation.error})

    def _process_blob_sdk(
        self, blob: _BlobFunction, name: str, etag: str | None, key: str | None, entry: dict[str, Any] | None
    ) -> Invocation:
        """An SDK-type binding: the function gets a client for the blob; nothing is downloaded here."""
        assert self._receipts is not None and etag is not None
        key = key or _ReceiptStore.key(blob.name, blob.container, name, etag)
        attempts = int(entry["attempts"]) if entry else 0
        detail = {"blob": f"{blob.container}/{name}", "etag": etag, "attempt": attempts + 1, "binding": "sdk"}
        try:
            assert blob.sdk_type is not None
            data = blob_model_binding_data(blob.connection_name, blob.container, name)
            # The worker reuses a decoded client for the same parameter, type, content and function
            # (bindings/meta.py, deferred_bindings_cache): a function that closed it would see that here too.
            cache_key = (blob.trigger_arg, blob.sdk_type, data.content, blob.name)
            value = self._sdk_cache.get(cache_key)
            if value is None:
                value = self._sdk_cache[cache_key] = decode_sdk_binding("blobTrigger", blob.sdk_type, data)
        except Exception as error:  # noqa: BLE001 - a failed binding fails the invocation, as in the worker
            log.error("function %s: binding %s failed: %s", blob.name, blob.trigger_arg, error)
            invocation = Invocation(
                blob.name, "blob", datetime.now(UTC), 0.0, "failed", f"{type(error).__name__}: {error}", detail
            )
            self._record(invocation)
        else:
            invocation, _ = self._invoke(blob, value, detail, retry=(attempts, self._max_dequeue - 1))
        self._settle_receipt(blob, name, etag, key, attempts, invocation)
        return invocation

    def _fire_blob_by_path(self, blob: _BlobFunction, path: str) -> Invocation:
        container_name, _, name = path.partition("/")
        if container_name != blob.container or not name:
            raise ValueError(f"{blob.name} watches container {blob.container!r}; got {path!r}")
        with self._container_client(blob) as container:
            # A manual run is outside the receipt bookkeeping, like the real admin API.
            client = container.get_blob_client(name)
            etag = str(client.get_blob_properties().etag)
            invocation = self._process_blob(blob, container, name, etag, f"manual|{uuid.uuid4()}", None)
        if invocation is None:
            raise RuntimeError(f"blob {path} changed or vanished while it was read")
        return invocation


def _header(headers: Mapping[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None


def _convert_http_result(result: Any) -> tuple[int, list[tuple[str, str]], bytes]:
    """The function's return value -> (status, headers, body), as the worker's HTTP converter does."""
    if isinstance(result, func.HttpResponse):
        headers = [(k, v) for k, v in result.headers.items() if k.lower() not in ("content-length",)]
        if not any(k.lower() == "content-type" for k, _ in headers):
            headers.append(("Content-Type", f"{result.mimetype}; charset={result.charset}"))
        return int(result.status_code), headers, result.get_body()
    if result is None:
        return 204, [], b""
    if isinstance(result, str | bytes | bytearray):
        return _text_response(200, bytes(result) if not isinstance(result, str) else result)
    raise TypeError(f"unsupported HTTP function result {type(result).__name__}")


# --------------------------------------------------------------------------------------------------
# CLI


def _load_settings_file(path: Path) -> dict[str, str]:
    """``local.settings.json`` -> its ``Values`` (the format Core Tools reads)."""
    data = json.loads(path.read_text())
    return {str(k): str(v) for k, v in (data.get("Values") or {}).items()}


def _route_prefix_from_host_json(script_root: Path) -> str:
    host_json = script_root / "host.json"
    if not host_json.exists():
        return "api"
    data = json.loads(host_json.read_text())
    prefix = data.get("extensions", {}).get("http", {}).get("routePrefix")
    return "api" if prefix is None else str(prefix)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m emulator.funchost", description=__doc__.split("\n")[0])
    parser.add_argument("--app", default="function_app:app", help="module:attribute of the FunctionApp")
    parser.add_argument("--script-root", default=".", help="directory with the app, host.json, settings")
    parser.add_argument("--settings", help="local.settings.json (default: <script-root>/local.settings.json)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7071)
    parser.add_argument("--state-dir", help="keys and blob receipts (default: <script-root>/.funchost)")
    parser.add_argument("--timer-period", type=float, help="fire every timer every N seconds (demos)")
    parser.add_argument("--blob-poll", type=float, default=1.0, help="blob container poll interval, s")
    parser.add_argument("--max-dequeue", type=int, default=DEFAULT_MAX_DEQUEUE_COUNT)
    parser.add_argument("--functions", nargs="*", help="host only these functions")
    parser.add_argument("--verbose", "-v", action="store_true")
    parser.add_argument(
        "--max-url-bytes", type=int, help=f"answer 414 to longer URLs ({WEB_CONFIG_MAX_URL_BYTES}: the Windows host's)"
    )
    auth = parser.add_argument_group("App Service authentication (emulator/easyauth.py); on with --easy-auth-key")
    auth.add_argument("--easy-auth-key", help="PEM public key tokens must be signed with (easyauth keygen)")
    auth.add_argument("--easy-auth-issuer", default=DEFAULT_ISSUER)
    auth.add_argument("--easy-auth-audience", action="append", help=f"allowed audience (default {DEFAULT_AUDIENCE})")
    auth.add_argument("--easy-auth-allow-anonymous", action="store_true", help="requireAuthentication off")
    auth.add_argument("--easy-auth-claims", choices=CLAIM_NAMES, default="token", help="principal claim names")
    args = parser.parse_args(argv)
    easy_auth = None
    if args.easy_auth_key:
        easy_auth = EasyAuthSettings(
            issuer=args.easy_auth_issuer,
            audiences=tuple(args.easy_auth_audience or [DEFAULT_AUDIENCE]),
            public_key_pem=Path(args.easy_auth_key).read_bytes(),
            require_authentication=not args.easy_auth_allow_anonymous,
            claim_names=args.easy_auth_claims,
        )

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    script_root = Path(args.script_root).resolve()
    sys.path.insert(0, str(script_root))
    settings_path = Path(args.settings) if args.settings else script_root / "local.settings.json"
    env = _load_settings_file(settings_path) if settings_path.exists() else {}
    # Settings must be in the environment before the app module is imported: apps read them at import.
    os.environ.update(env)
    try:
        host = LocalFunctionsHost(
            load_app(args.app),
            env=env,
            http_host=args.host,
            http_port=args.port,
            route_prefix=_route_prefix_from_host_json(script_root),
            timer_period_seconds=args.timer_period,
            blob_poll_seconds=args.blob_poll,
            blob_max_dequeue_count=args.max_dequeue,
            state_dir=args.state_dir or script_root / ".funchost",
            functions=args.functions,
            easy_auth=easy_auth,
            max_url_bytes=args.max_url_bytes,
        )
        host.start()
    except HostStartupError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    stopped = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopped.set())
    print(f"Functions host listening on {host.api_url}")
    for hosted in host._http:
        methods = ",".join(sorted(hosted.methods)) if hosted.methods else "ALL"
        print(f"  {hosted.name}: [{methods}] {host.api_url}/{hosted.route.template} ({hosted.auth_level})")
    for name in [*host._timers, *host._blobs]:
        print(f"  {name}: {'timer' if name in host._timers else 'blob'} trigger")
    print(f"Function key: {host.function_key}\nMaster key: {host.master_key}  (in {host.state_dir / KEYS_FILE})")
    if easy_auth is not None:
        print(f"App Service authentication: issuer {easy_auth.issuer}, audiences {', '.join(easy_auth.audiences)}")
    with contextlib.suppress(KeyboardInterrupt):
        stopped.wait()
    host.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
