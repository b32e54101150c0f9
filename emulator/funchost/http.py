"""The HTTP trigger: a threaded HTTP server serving ``/<routePrefix>/<route>`` (``api`` by default).

Routes are matched by ``routes.RouteTemplate`` (literal segments and ``{name}`` parameters, literals
first). Methods are checked (405 with ``Allow``), and auth levels enforced (``keys.HostKeys``): the key
is read from the ``x-functions-key`` header or the ``code`` query parameter (401 otherwise). An
exception in the function is a 500 with a generic body; the traceback goes to the log, never to the
client. In front of the host: the request limits (a bad ``Content-Length`` 400, over 100 MB 413, a body
that never arrives 408, optionally a URL over 4 KB 414), the admin API (``/admin/...``, ``admin.py``)
and, when configured, the App Service authentication emulation (``emulator/easyauth.py``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import azure.functions as func
from azure.functions.decorators.function_app import Function

from emulator.easyauth import EasyAuth
from emulator.funchost.core import HostedFunction, Runtime, enum_value, log
from emulator.funchost.keys import HostKeys
from emulator.funchost.routes import RouteTemplate

Response = tuple[int, list[tuple[str, str]], bytes]
# (method, path, presented key, body) -> the admin API's answer
AdminHandler = Callable[[str, str, str | None, bytes], Response]

GENERIC_500 = b"Internal Server Error. The function failed; see the host log for the details."
# "The HTTP request length is limited to 100 MB (104,857,600 bytes), and the URL length is limited to
# 4 KB (4,096 bytes). These limits are specified by the httpRuntime element of the runtime's Web.config
# file." (learn.microsoft.com/azure/azure-functions/functions-bindings-http-webhook-trigger, "Limits").
# The URL limit comes from a Web.config, i.e. the Windows host; whether a Linux host has the same is not
# documented, so it is a switch (max_url_bytes: None = no limit, the default; 4096 = that limit).
MAX_REQUEST_BYTES = 104_857_600
WEB_CONFIG_MAX_URL_BYTES = 4096


def json_response(status: int, body: Any) -> Response:
    return status, [("Content-Type", "application/json; charset=utf-8")], json.dumps(body).encode()


def text_response(status: int, text: bytes | str) -> Response:
    payload = text.encode() if isinstance(text, str) else text
    return status, [("Content-Type", "text/plain; charset=utf-8")], payload


def header(headers: Mapping[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None


def convert_http_result(result: Any) -> Response:
    """The function's return value -> (status, headers, body), as the worker's HTTP converter does."""
    if isinstance(result, func.HttpResponse):
        headers = [(k, v) for k, v in result.headers.items() if k.lower() not in ("content-length",)]
        if not any(k.lower() == "content-type" for k, _ in headers):
            headers.append(("Content-Type", f"{result.mimetype}; charset={result.charset}"))
        return int(result.status_code), headers, result.get_body()
    if result is None:
        return 204, [], b""
    if isinstance(result, str | bytes | bytearray):
        return text_response(200, bytes(result) if not isinstance(result, str) else result)
    raise TypeError(f"unsupported HTTP function result {type(result).__name__}")


@dataclass
class HttpFunction(HostedFunction):
    route: RouteTemplate = field(default_factory=lambda: RouteTemplate("", (), ()))
    methods: frozenset[str] | None = None  # None: every method
    auth_level: str = "function"


class HttpTrigger:
    """Every ``httpTrigger`` function of the app, and the server in front of them."""

    binding_type = "httpTrigger"

    def __init__(
        self,
        runtime: Runtime,
        keys: Callable[[], HostKeys],
        *,
        route_prefix: str,
        easy_auth: EasyAuth | None,
        max_url_bytes: int | None,
    ) -> None:
        self._runtime = runtime
        self._keys = keys
        self.route_prefix = route_prefix.strip("/")
        self._easy_auth = easy_auth
        self.max_url_bytes = max_url_bytes
        self.functions: list[HttpFunction] = []
        self.server: _Server | None = None
        self._admin: AdminHandler | None = None

    def add(self, function: Function, name: str, trigger: Any, env: Mapping[str, str]) -> None:
        methods = getattr(trigger, "methods", None)
        route = RouteTemplate.parse(getattr(trigger, "route", None) or name)
        allowed = frozenset(enum_value(m).upper() for m in methods) if methods else None
        auth_level = enum_value(getattr(trigger, "auth_level", None) or "function").lower()
        self.functions.append(HttpFunction(function, name, "http", trigger.name, route, allowed, auth_level))
        # Most specific routes first (literals before parameters), then by template text for a stable order.
        self.functions.sort(key=lambda f: (f.route.precedence(), f.route.template))

    def names(self) -> list[str]:
        return [f.name for f in self.functions]

    def clear(self) -> None:
        self.functions.clear()

    def start(self) -> None:
        """Nothing to schedule: requests arrive through ``serve``."""

    def serve(self, host: str, port: int, admin: AdminHandler) -> None:
        self._admin = admin
        server = _Server((host, port), _Handler)
        server.trigger = self
        self.server = server
        self._runtime.spawn("http", server.serve_forever, 0.1)

    def shutdown(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    @property
    def url(self) -> str:
        if self.server is None:
            raise RuntimeError("host not started")
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def refuse(self, raw_path: str, length: int) -> Response | None:
        """The front end's own answers, before the host: a bad Content-Length, a request or URL too long."""
        if length < 0:
            return text_response(400, "Bad Request: invalid Content-Length")
        if length > MAX_REQUEST_BYTES:
            return text_response(413, f"Request Entity Too Large: at most {MAX_REQUEST_BYTES} bytes")
        if self.max_url_bytes is not None and len(raw_path) > self.max_url_bytes:
            return text_response(414, f"URI Too Long: at most {self.max_url_bytes} bytes")
        return None

    def handle(self, method: str, raw_path: str, headers: dict[str, str], body: bytes) -> Response:
        split = urlsplit(raw_path)
        query = dict(parse_qsl(split.query, keep_blank_values=True))
        presented = header(headers, "x-functions-key") or query.get("code")
        path = split.path
        if path.rstrip("/") == "/admin" or path.startswith("/admin/"):
            assert self._admin is not None
            return self._admin(method, path, presented, body)
        if self._easy_auth is not None:
            # Before the Functions host sees anything, as App Service authentication does.
            verdict = self._easy_auth.apply(headers)
            if verdict.status is not None:
                log.info("App Service authentication refused %s %s: %s", method, path, verdict.reason)
                return text_response(verdict.status, "Unauthorized")
            headers = verdict.headers
        prefix = f"/{self.route_prefix}" if self.route_prefix else ""
        if prefix and not (path == prefix or path.startswith(prefix + "/")):
            return text_response(404, "Not Found")
        matched = [(f, v) for f in self.functions if (v := f.route.match(path[len(prefix) :])) is not None]
        if not matched:
            return text_response(404, "Not Found")
        allowed = [(f, v) for f, v in matched if f.methods is None or method.upper() in f.methods]
        if not allowed:
            status, response_headers, payload = text_response(405, "Method Not Allowed")
            methods = sorted({m for f, _ in matched for m in (f.methods or ())})
            return status, [*response_headers, ("Allow", ", ".join(methods))], payload
        hosted, route_values = allowed[0]
        if not self._keys().authorize(hosted.auth_level, presented):
            return text_response(401, "Unauthorized")
        host_header = header(headers, "host") or self.url.removeprefix("http://")
        request = func.HttpRequest(
            method=method.upper(),
            url=f"http://{host_header}{raw_path}",
            headers=headers,
            params=query,
            route_params=route_values,
            body=body,
        )
        detail = {"method": method.upper(), "path": path, "route_params": route_values}
        invocation, result = self._runtime.invoke(hosted, request, detail)
        if invocation.outcome == "failed":
            return text_response(500, GENERIC_500)
        try:
            return convert_http_result(result)
        except TypeError:
            log.exception("function %s returned a value that is not an HTTP response", hosted.name)
            return text_response(500, GENERIC_500)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    trigger: HttpTrigger


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    # HTTP/1.0 (the default): one request per connection, so no idle keep-alive thread outlives stop().
    # The socket timeout bounds a client that connects and never sends.
    timeout = 30

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("http %s - %s", self.address_string(), format % args)

    def _dispatch(self) -> None:
        try:
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = -1
            refusal = self.server.trigger.refuse(self.path, length)
            if refusal is not None:
                # Answered in front of the host (the body is not read); the app never sees the request.
                self.close_connection = True
                self._send(*refusal)
                return
            try:
                body = self.rfile.read(length) if length > 0 else b""
            except TimeoutError:
                self.close_connection = True
                self._send(*text_response(408, "Request Timeout: the body was shorter than its Content-Length"))
                return
            response = self.server.trigger.handle(self.command, self.path, dict(self.headers.items()), body)
        except Exception:
            log.exception("host error serving %s %s", self.command, self.path)
            response = text_response(500, GENERIC_500)
        self._send(*response)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _dispatch

    def _send(self, status: int, headers: list[tuple[str, str]], payload: bytes) -> None:
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)


Handler = _Handler  # the request handler class (its ``timeout`` bounds a client that never sends)
