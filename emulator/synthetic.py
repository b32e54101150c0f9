"""``SyntheticRuntime``: an emulated VM that is only a tiny HTTP server naming its release.

It stands in for "nginx + the CustomScript handler" when a test needs many instances or fast
turnaround: thousands fit on one machine (one listening socket each; one thread of the process accepts
for all of them, ``_AcceptLoop``, and each request is answered on a thread of a pool, ``_HandlerPool``).
The page imitates the nginx welcome page, so probes written for the real fleet (``<title>Welcome to nginx!</title>``)
work unchanged; after a model is applied it also names the release, so a test can see *which* release
an instance serves without asking ARM:

    <title>Welcome to nginx!</title> ... release=install_nginx.v7.sh

Failure injection lives in ``FailureRules``, shared by all runtimes of one scale set (the emulator
owns it), so "release v8 is broken" is one rule, not one flag per instance:

* ``mode="extension"``: applying a matching release fails like a script with ``exit 1`` (the
  instance view then shows the extension failed with the given stderr); the old page stays up.
* ``mode="http500"``: the script "succeeds" but the page answers HTTP 500 afterwards. With ``spare_path``
  (say ``/healthz``) that one path still answers 200: a release that breaks the application while its
  health endpoint stays up, which only the traffic's signals (the 5xx in the logs) show.

A rule matches a regex against the release label sources: every ``settings.fileUris`` entry and the
image id. ``serve=False`` makes a runtime that never binds a socket (paging/scale tests of 500
instances that never probe); everything else behaves the same.
"""

from __future__ import annotations

import contextlib
import queue
import re
import selectors
import socketserver
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlparse

from emulator.runtime import ExtensionResult, InstanceModel
from emulator.telemetry import RequestLog, RequestRecord


@dataclass(frozen=True)
class FailureRule:
    pattern: str  # regex searched in fileUris / image id
    mode: str = "extension"  # "extension" (script exits 1) or "http500" (serves 500 afterwards)
    stderr: str = "install failed: injected failure"
    spare_path: str = ""  # http500 only: this request path (query left out) still answers 200

    def matches(self, model: InstanceModel) -> bool:
        return any(re.search(self.pattern, source) for source in release_sources(model))


@dataclass
class FailureRules:
    """Thread-safe list of rules; the emulator mutates it while runtimes read it."""

    _rules: list[FailureRule] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, rule: FailureRule) -> None:
        if rule.mode not in ("extension", "http500"):
            raise ValueError(f"unknown failure mode {rule.mode!r} (extension | http500)")
        re.compile(rule.pattern)  # fail at registration, not inside a worker thread
        if rule.spare_path and (rule.mode != "http500" or not rule.spare_path.startswith("/")):
            raise ValueError(f"spare_path must be a path starting with '/' and needs mode http500: {rule!r}")
        with self._lock:
            self._rules.append(rule)

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def first_match(self, model: InstanceModel) -> FailureRule | None:
        with self._lock:
            rules = list(self._rules)
        return next((rule for rule in rules if rule.matches(model)), None)

    def as_list(self) -> list[dict[str, str]]:
        with self._lock:
            return [
                {
                    "pattern": r.pattern,
                    "mode": r.mode,
                    "stderr": r.stderr,
                    **({"spare_path": r.spare_path} if r.spare_path else {}),
                }
                for r in self._rules
            ]


def release_sources(model: InstanceModel) -> list[str]:
    uris = model.settings.get("fileUris") or []
    sources = [str(u) for u in uris] if isinstance(uris, list) else []
    if model.image_id:
        sources.append(model.image_id)
    return sources


def release_label(model: InstanceModel) -> str:
    """What the page names: the script's file name (and the image's, when there is one), else the
    image's name, else "base"."""
    uris = model.settings.get("fileUris") or []
    image = model.image_id.rstrip("/").rsplit("/", 1)[-1] if model.image_id else None
    if isinstance(uris, list) and uris:
        path = urlparse(str(uris[0])).path
        script = path.rsplit("/", 1)[-1] or str(uris[0])
        return f"{script} image={image}" if image else script
    return image or "base"


def welcome_page(address: str, release: str | None) -> bytes:
    line = f" release={release}" if release else ""
    return (
        "<!DOCTYPE html>\n<html>\n<head>\n"
        f"<title>Welcome to nginx!</title>{line}\n"
        "</head>\n<body>\n<h1>Welcome to nginx!</h1>\n"
        f"<p>instance {address}{line}</p>\n</body>\n</html>\n"
    ).encode()


class _CountingWriter:
    """The handler's ``wfile``, counting the bytes written (for the instance's request records)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.count = 0

    def write(self, data: bytes) -> int:
        self.count += len(data)
        return int(self.inner.write(data) or len(data))

    def flush(self) -> None:
        self.inner.flush()


class _PageHandler(BaseHTTPRequestHandler):
    server: _PageServer

    def _answer(self, with_body: bool) -> None:
        started, cpu_started = time.monotonic(), time.thread_time()
        counting = _CountingWriter(self.wfile)
        self.wfile = counting  # type: ignore[assignment]
        try:
            status, body = self.server.runtime.page(urlparse(self.path).path)
            self.send_response(status)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Server", "nginx (synthetic)")
            self.end_headers()
            if with_body:
                self.wfile.write(body)
        finally:
            self.wfile = counting.inner
        bytes_in = len(getattr(self, "raw_requestline", b"")) + len(self.headers.as_bytes())
        self.server.runtime.record(
            RequestRecord(self.server.runtime.clock(), status, time.monotonic() - started, bytes_in, counting.count),
            time.thread_time() - cpu_started,
        )

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._answer(with_body=True)

    def do_HEAD(self) -> None:  # noqa: N802
        self._answer(with_body=False)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - keep test output quiet
        pass


class _PageServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], runtime: SyntheticRuntime) -> None:
        self.runtime = runtime
        super().__init__(address, _PageHandler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup (socket.getfqdn) of the address: ~90 ms
        # per instance here, i.e. 45 s for a fleet of 500. The name is never used, so skip it.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def process_request(self, request: Any, client_address: Any) -> None:
        """Answer on a pooled thread (``ThreadingMixIn`` would start a thread for each request)."""
        _HANDLERS.submit(self.process_request_thread, request, client_address)

    def handle_ready(self) -> None:
        """Accept one connection the accept loop saw and answer it on a thread of its own (what one
        round of ``serve_forever`` does)."""
        self._handle_request_noblock()  # type: ignore[attr-defined]


class _AcceptLoop:
    """One thread that accepts connections for every synthetic instance of the process.

    A ``serve_forever`` thread per instance wakes every poll interval to check for shutdown: 4,000
    instances made 20,000 wake-ups a second, two cores' worth of work before a single request. Here the
    listening sockets share one selector; a readable one is accepted and its request handed to the
    instance's server (a thread per request at a time, ``_HandlerPool``). Registering and
    unregistering while the loop waits is safe: the selector is epoll (or poll) where it runs, and a
    socket unregistered while ready is skipped."""

    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def add(self, server: _PageServer) -> None:
        with self._lock:
            self._selector.register(server.socket, selectors.EVENT_READ, server)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="synthetic-accept", daemon=True)
                self._thread.start()

    def remove(self, server: _PageServer) -> None:
        with self._lock, contextlib.suppress(KeyError, ValueError):  # never registered, or already closed
            self._selector.unregister(server.socket)

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._selector.get_map():
                    self._thread = None
                    return  # the last instance stopped; the next start starts a new loop
            for key, _events in self._selector.select(timeout=0.5):
                server: _PageServer = key.data
                with self._lock:
                    registered = server.socket.fileno() in self._selector.get_map()
                if registered:
                    server.handle_ready()


class _HandlerPool:
    """Daemon threads that answer the accepted connections of every synthetic instance: made when no thread is
    idle (up to ``limit``), then kept for the next requests.

    A thread started per request (``ThreadingMixIn``) made the accept loop wait for each new thread to start,
    and a fleet of 1,000 instances probed once cost the emulator process about 0.35 s of CPU, 0.23 s with
    threads kept (bench/perf.py's tick cost). Daemon threads, as ``daemon_threads`` made them: a client that
    never sends its request does not hold the process open at exit. The idle count follows
    ``concurrent.futures.ThreadPoolExecutor``'s: a semaphore released by each thread that finishes a request."""

    def __init__(self, limit: int = 512) -> None:
        self._limit = limit
        self._jobs: queue.SimpleQueue[tuple[Callable[..., object], tuple[Any, ...]]] = queue.SimpleQueue()
        self._idle = threading.Semaphore(0)
        self._lock = threading.Lock()
        self._threads = 0

    def submit(self, fn: Callable[..., object], *args: Any) -> None:
        self._jobs.put((fn, args))
        if self._idle.acquire(blocking=False):
            return  # a thread waiting for work takes it
        with self._lock:
            if self._threads >= self._limit:
                return  # the next thread that finishes takes it
            self._threads += 1
        threading.Thread(target=self._work, name="synthetic-page", daemon=True).start()

    def _work(self) -> None:
        while True:
            fn, args = self._jobs.get()
            with contextlib.suppress(Exception):  # process_request_thread reports its own errors
                fn(*args)
            self._idle.release()


_ACCEPT = _AcceptLoop()
_HANDLERS = _HandlerPool()


class SyntheticRuntime:
    """An ``InstanceRuntime`` serving a fake nginx page on ``(address, port)``."""

    def __init__(
        self,
        address: str,
        initial: InstanceModel,
        *,
        port: int = 80,
        rules: FailureRules | None = None,
        serve: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.address = address
        self.clock = clock  # epoch seconds the request records carry: real time, or the emulator's clock
        self.port = port
        self.serve = serve
        self.rules = rules if rules is not None else FailureRules()
        self._lock = threading.Lock()
        self._model = initial
        self._release: str | None = None  # None until a model is applied: the image's stock page
        self._broken = False  # set by an http500 rule
        self._spare_path = ""  # the path an http500 rule leaves answering
        self._healthy = True  # set_healthy() test hook
        self.applied_count = 0  # how many times apply() ran: tests assert "no double apply"
        self._server: _PageServer | None = None
        self._requests = RequestLog()  # what it answered (emulator.telemetry)
        self._cpu_seconds = 0.0  # thread CPU time its page handler used

    # -- InstanceRuntime -------------------------------------------------------------------------
    def start(self) -> None:
        if not self.serve or self._server is not None:
            return
        # Binding may raise OSError (address in use): the emulator then tries another address.
        self._server = _PageServer((self.address, self.port), self)
        _ACCEPT.add(self._server)

    def apply(self, model: InstanceModel) -> ExtensionResult:
        rule = self.rules.first_match(model)
        label = release_label(model)
        with self._lock:
            self.applied_count += 1
            if rule is not None and rule.mode == "extension":
                # A failing script leaves the previous content in place, as a half-run script would
                # on a real VM; the extension status is what reports the failure.
                return ExtensionResult(
                    succeeded=False,
                    exit_code=1,
                    stdout=f"installing {label}\n",
                    stderr=rule.stderr,
                    message=f"{label}: exit code 1",
                )
            self._model = model
            self._release = label
            self._broken = rule is not None and rule.mode == "http500"
            self._spare_path = rule.spare_path if rule is not None and self._broken else ""
        return ExtensionResult(
            succeeded=True,
            exit_code=0,
            stdout=f"installing {label}\ninstalled {label}\n",
            message=f"{label}: installed",
        )

    def reimage(self, model: InstanceModel) -> ExtensionResult:
        with self._lock:
            self._release = None
            self._broken = False
        return self.apply(model)

    def set_healthy(self, healthy: bool) -> None:
        with self._lock:
            self._healthy = healthy

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            _ACCEPT.remove(server)
            server.server_close()

    # -- telemetry (emulator.telemetry.ObservableRuntime) -----------------------------------------
    def record(self, request: RequestRecord, cpu_seconds: float) -> None:
        self._requests.add(request)
        with self._lock:
            self._cpu_seconds += cpu_seconds

    def requests_between(self, start: float, end: float) -> list[RequestRecord]:
        return self._requests.between(start, end)

    def cpu_seconds(self) -> float | None:
        with self._lock:
            return self._cpu_seconds if self.serve else None

    # -- for the page handler and tests ----------------------------------------------------------
    @property
    def release(self) -> str | None:
        with self._lock:
            return self._release

    def page(self, path: str = "/") -> tuple[int, bytes]:
        with self._lock:
            if not self._healthy or (self._broken and not (self._spare_path and path == self._spare_path)):
                return 500, b"<html><body><h1>500 Internal Server Error</h1></body></html>\n"
            return 200, welcome_page(self.address, self._release)
