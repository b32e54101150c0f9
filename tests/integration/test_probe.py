"""The HTTP prober against real servers on loopback addresses: what each failure looks like."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from rollout.adapters.probe import MAX_BODY_BYTES, HttpProber
from rollout.model import ProbeResult
from rollout.ports import ProbeTarget
from rollout.settings import ProbeSettings

pytestmark = pytest.mark.integration

ADDRESSES = ["127.0.31.1", "127.0.31.2", "127.0.31.3", "127.0.31.4"]


class Handler(BaseHTTPRequestHandler):
    behaviours: dict[str, str] = {}

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        behaviour = self.behaviours.get(self.server.server_address[0], "ok")  # type: ignore[index]
        if behaviour == "slow":
            time.sleep(1.5)
        status = 500 if behaviour == "500" else 200
        body = b"<title>Welcome to nginx!</title>" if behaviour != "other" else b"<title>It works</title>"
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True  # do not wait for the slow handler at teardown

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # the prober hangs up on the slow handler (its timeout): a broken pipe is expected


@pytest.fixture
def servers() -> Iterator[int]:
    with socket.socket() as s:
        s.bind((ADDRESSES[0], 0))
        port = int(s.getsockname()[1])
    running = []
    for address in ADDRESSES[:3]:  # the fourth address has nothing listening
        server = QuietServer((address, port), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        running.append(server)
    Handler.behaviours = {ADDRESSES[0]: "ok", ADDRESSES[1]: "500", ADDRESSES[2]: "slow"}
    yield port
    for server in running:
        server.shutdown()
        server.server_close()


def targets() -> list[ProbeTarget]:
    return [ProbeTarget(str(i), a) for i, a in enumerate(ADDRESSES)]


def test_each_failure_is_named_and_probes_run_concurrently(servers: int) -> None:
    prober = HttpProber(ProbeSettings(port=servers, timeout_seconds=0.5))
    started = time.monotonic()
    results = prober.probe(targets())
    elapsed = time.monotonic() - started
    assert results["0"].ok and results["0"].detail.startswith("200 in")
    assert not results["1"].ok and results["1"].detail.startswith("500")
    assert not results["2"].ok and results["2"].detail == "timed out after 0.5 s"
    assert not results["3"].ok and results["3"].detail == "connection failed: connection refused"
    assert elapsed < 1.4  # one timeout, not the sum of them


def test_a_body_pattern_must_match(servers: int) -> None:
    Handler.behaviours[ADDRESSES[2]] = "other"
    prober = HttpProber(ProbeSettings(port=servers, body_pattern=r"Welcome to nginx", timeout_seconds=1))
    results = prober.probe(targets()[:3:2])
    assert results["0"].ok
    assert not results["2"].ok and results["2"].detail == "body did not match 'Welcome to nginx'"


def test_an_expected_status_other_than_200(servers: int) -> None:
    results = HttpProber(ProbeSettings(port=servers, expect_status=500, timeout_seconds=1)).probe(targets()[:2])
    assert results["1"].ok and not results["0"].ok
    assert results["0"].detail == "200 OK (expected 500)"


def test_nothing_to_probe_is_no_work() -> None:
    assert HttpProber().probe([]) == {}


# --------------------------------------------------------------------------------------------------
# What a probe reads, answer by answer: the HTTP server below says exactly what goes on the wire.

RAW_ADDRESS = "127.0.31.9"
WELCOME = b"<title>Welcome to nginx!</title>"


def _raw_answer(kind: str) -> bytes:
    """The bytes a server sends back for ``kind``."""
    if kind == "chunked":
        parts = [b"<html><title>Welcome ", b"to nginx!</title>", b"</html>"]
        chunks = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(p), p) for p in parts)
        return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n"
    if kind in ("gzip", "deflate", "raw-deflate"):
        wbits = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS, "raw-deflate": -zlib.MAX_WBITS}[kind]
        packer = zlib.compressobj(wbits=wbits)
        body = packer.compress(WELCOME) + packer.flush()
        coding = "gzip" if kind == "gzip" else "deflate"
        return b"HTTP/1.1 200 OK\r\nContent-Encoding: %s\r\nContent-Length: %d\r\n\r\n%s" % (
            coding.encode(),
            len(body),
            body,
        )
    if kind == "until-close":  # HTTP/1.0 style: no length, the body ends with the connection
        return b"HTTP/1.0 200 OK\r\n\r\n" + WELCOME
    if kind == "short":  # fewer bytes than Content-Length says, then the connection closes
        return b"HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n" + WELCOME
    if kind == "chunk-short":  # a chunk of 0x40 bytes announced, 32 sent, then the connection closes
        return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n40\r\n" + WELCOME
    if kind == "not-gzip":  # says gzip, is not
        return b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s" % (len(WELCOME), WELCOME)
    if kind == "continue":  # an interim 1xx answer before the response
        return b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(WELCOME), WELCOME)
    if kind == "long-head":  # 1 MiB of headers: far past what the probe buffers of a head (MAX_HEAD_BYTES)
        return b"HTTP/1.1 200 OK\r\nX-Filler: " + b"x" * 1024 * 1024 + b"\r\n\r\n"
    if kind == "redirect":
        return b"HTTP/1.1 301 Moved Permanently\r\nLocation: http://elsewhere/\r\nContent-Length: 0\r\n\r\n"
    if kind == "late-match":  # the pattern only after the first MAX_BODY_BYTES
        body = b"x" * MAX_BODY_BYTES + WELCOME
        return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    if kind == "garbage":
        return b"SSH-2.0-OpenSSH_9.6\r\n\r\n"
    if kind == "nothing":
        return b""
    raise AssertionError(kind)


SLOW_HEAD = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"


def _raw_pieces(kind: str) -> list[tuple[float, bytes]]:
    """(pause, bytes) pieces a server sends back for ``kind``, the pause before each."""
    if kind == "stall":  # the head and the body's first bytes at once, then nothing for 5 s
        return [(0.0, SLOW_HEAD + b"<title>"), (5.0, b"")]
    if kind == "trickle":  # the head at once, then a byte of the body every 20 ms (1,000 bytes: 20 s)
        return [(0.0, SLOW_HEAD)] + [(0.02, b"x")] * 1000
    return [(0.0, _raw_answer(kind))]


class _RawServer:
    """Answers every connection with ``kind``'s bytes, then closes it; counts the requests it holds at once
    (read, not yet answered: each is a probe in flight)."""

    def __init__(self, kind: str, delay: float = 0.0) -> None:
        self.kind, self.delay = kind, delay
        self.listener = socket.create_server((RAW_ADDRESS, 0), backlog=512)
        self.port = int(self.listener.getsockname()[1])
        self.held = self.most_held = self.requests = self.sent = 0
        self.seen: list[bytes] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, name="raw-server", daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), name="raw-server", daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            head = b""
            while b"\r\n\r\n" not in head and (chunk := conn.recv(4096)):
                head += chunk
            with self._lock:
                self.requests += 1
                self.seen.append(head)
                self.held += 1
                self.most_held = max(self.most_held, self.held)
            time.sleep(self.delay)
            with self._lock:
                self.held -= 1
            for pause, piece in _raw_pieces(self.kind):
                time.sleep(pause)
                conn.sendall(piece)
                self.sent += len(piece)

    def close(self) -> None:
        self.listener.close()


@pytest.mark.parametrize(
    ("kind", "pattern", "ok", "detail"),
    [
        ("chunked", "Welcome to nginx", True, "200 in"),
        ("gzip", "Welcome to nginx", True, "200 in"),
        ("deflate", "Welcome to nginx", True, "200 in"),
        ("raw-deflate", "Welcome to nginx", True, "200 in"),
        ("until-close", "Welcome to nginx", True, "200 in"),
        # A body cut short fails the probe, whatever part of it came (as curl and urllib3 treat it).
        ("short", "Welcome to nginx", False, "probe error: peer closed connection without sending complete message"),
        ("chunk-short", "Welcome to nginx", False, "probe error: peer closed connection without sending complete"),
        ("not-gzip", "Welcome to nginx", False, "probe error: Error -3 while decompressing data: incorrect header"),
        ("continue", "Welcome to nginx", True, "200 in"),
        ("long-head", None, False, "probe error: not an HTTP response"),
        ("late-match", "Welcome to nginx", False, "body did not match 'Welcome to nginx'"),
        ("redirect", None, False, "301 Moved Permanently (expected 200)"),
        ("garbage", None, False, "probe error: not an HTTP response"),
        ("nothing", None, False, "connection failed: closed without a response"),
    ],
)
def test_what_a_probe_reads_from_each_kind_of_answer(kind: str, pattern: str | None, ok: bool, detail: str) -> None:
    server = _RawServer(kind)
    try:
        prober = HttpProber(
            ProbeSettings(port=server.port, path="/health?x=1", body_pattern=pattern, timeout_seconds=2)
        )
        [(instance, result)] = prober.probe([ProbeTarget("7", RAW_ADDRESS)]).items()
    finally:
        server.close()
    assert instance == "7" and result.ok is ok and result.detail.startswith(detail), result
    assert (result.latency_ms is not None) is ok
    # One GET of the path, on a connection of its own that asks to be closed; redirects are not followed.
    [request] = server.seen
    lines = request.decode().split("\r\n")
    assert lines[0] == "GET /health?x=1 HTTP/1.1"
    assert f"Host: {RAW_ADDRESS}:{server.port}" in lines and "Connection: close" in lines


@pytest.mark.parametrize("kind", ["stall", "trickle"])
def test_the_body_step_is_bounded_by_the_timeout(kind: str) -> None:
    """A body that stops coming, and one that keeps coming a byte at a time: either way the body step ends at the
    timeout (one bound for the whole body, not one per read)."""
    server = _RawServer(kind)
    try:
        prober = HttpProber(ProbeSettings(port=server.port, body_pattern="Welcome to nginx", timeout_seconds=0.5))
        started = time.monotonic()
        [result] = prober.probe([ProbeTarget("7", RAW_ADDRESS)]).values()
        elapsed = time.monotonic() - started
        sent_by_then = server.sent
    finally:
        server.close()
    assert result == ProbeResult(False, "timed out after 0.5 s")
    assert 0.5 <= elapsed < 1.5  # the head came at once: the body step's 0.5 s, not the server's 5 s or 20 s
    assert sent_by_then > len(SLOW_HEAD) + (5 if kind == "trickle" else 0)  # the trickle was still trickling


def test_a_path_that_is_not_a_request_target_is_named() -> None:
    """A space in PROBE_PATH: the probe says so and does not connect, rather than send a request line a server
    misreads."""
    server = _RawServer("chunked")
    try:
        prober = HttpProber(ProbeSettings(port=server.port, path="/a b", timeout_seconds=2))
        [result] = prober.probe([ProbeTarget("7", RAW_ADDRESS)]).values()
        time.sleep(0.2)  # time for a connection, had there been one, to reach the server
    finally:
        server.close()
    assert not result.ok and result.detail.startswith("probe error: Illegal target characters"), result
    assert server.seen == []


def test_probes_share_one_thread_and_a_bounded_number_of_connections() -> None:
    """300 probes of a server that takes 50 ms to answer: at most ``max_in_flight`` in flight at once, several
    at once (not one after the other), and no thread made for them."""
    server = _RawServer("chunked", delay=0.05)
    before = {t.ident for t in threading.enumerate()}
    made: set[str] = set()
    probing = threading.Event()

    def watch() -> None:
        while not probing.wait(0.002):
            made.update(t.name for t in threading.enumerate() if t.ident not in before and t.name != "raw-server")

    watcher = threading.Thread(target=watch, name="raw-server", daemon=True)  # not counted either
    watcher.start()
    try:
        prober = HttpProber(ProbeSettings(port=server.port, timeout_seconds=5), max_in_flight=16)
        started = time.monotonic()
        results = prober.probe([ProbeTarget(str(i), RAW_ADDRESS) for i in range(300)])
        elapsed = time.monotonic() - started
    finally:
        probing.set()
        watcher.join()
        server.close()
    assert len(results) == 300 and all(r.ok for r in results.values())
    assert server.requests == 300
    assert 2 <= server.most_held <= 16
    assert elapsed < 300 * 0.05 / 2  # concurrent: well under the 15 s one after the other would take
    assert made == set()  # the event loop runs in the calling thread


def test_a_caller_inside_an_event_loop_gets_its_probes(servers: int) -> None:
    async def caller() -> dict[str, Any]:
        return HttpProber(ProbeSettings(port=servers, timeout_seconds=1)).probe(targets()[:2])

    results = asyncio.run(caller())
    assert results["0"].ok and not results["1"].ok
