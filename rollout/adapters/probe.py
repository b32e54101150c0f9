"""HTTP probes of each instance's private IP, concurrently, with a time bound per probe.

The load balancer hides individual instances (the walkthrough's point: "you do not know the service
status for an individual node through the public access point"), so the controller probes every
instance directly over the virtual network, the way the LB probe would: path, port, expected status
and an optional body pattern. A tick probes the whole fleet at once, at most ``max_in_flight`` probes
at a time, so its duration is about one probe timeout whatever the fleet size.

One thread runs them all: an asyncio event loop, each probe a plain HTTP/1.1 GET on a fresh connection
(``Connection: close``; a probe must see what a new client sees), redirects not followed. The HTTP/1.1 is
h11's (python-hyper's sans-I/O library): it writes the request, parses the response's head and frames the
body (Content-Length, chunked, or until the close), and names what a server got wrong; this module moves the
bytes between it and the socket and undoes a gzip or deflate content coding with zlib. h11 is imported by
the first probe, not with this module: the function app's read paths import this module and never probe
(tests/integration/test_cold_start.py). At 1,000 instances this costs the controller about a fifth of a
millisecond of CPU per probe, where ``requests`` on a pool of threads cost about three quarters
(docs/performance.md, "Tick cost"), and no thread per probe. Each step is bounded by the timeout: the
connection, the response's head, and the body when a pattern is to be matched (at most ``MAX_BODY_BYTES``
of it, decoded); a body cut short fails the probe.
"""

from __future__ import annotations

import asyncio
import errno
import re
import socket
import time
import zlib
from collections.abc import Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

from rollout.model import ProbeResult
from rollout.ports import ProbeTarget
from rollout.settings import ProbeSettings

if TYPE_CHECKING:
    import h11  # imported where a probe runs (``_probe_one``): the app's read paths import this module, never probe

MAX_BODY_BYTES = 64 * 1024
MAX_HEAD_BYTES = 64 * 1024  # status line and headers: more than this buffered without the head's end is refused
READ_BYTES = 64 * 1024  # at most this much taken from the socket at a time
USER_AGENT = "vmss-canary-probe"

T = TypeVar("T")


class HttpProber:
    """Implements ``rollout.ports.Prober`` with asyncio streams and h11 (HTTP/1.1 framing, sans I/O)."""

    def __init__(self, spec: ProbeSettings | None = None, *, max_in_flight: int = 64) -> None:
        """``spec``: what to probe (``PROBE_*``, ``rollout.settings.ProbeSettings``; its defaults when None).
        ``max_in_flight``: probes (open connections) at once; more targets wait for a free slot."""
        spec = spec or ProbeSettings()
        self.path = spec.path
        self.port = spec.port
        self.expect_status = spec.expect_status
        self.pattern = re.compile(spec.body_pattern) if spec.body_pattern else None
        self.timeout = spec.timeout_seconds
        self.max_in_flight = max(1, max_in_flight)

    def probe(self, targets: Sequence[ProbeTarget]) -> dict[str, ProbeResult]:
        if not targets:
            return {}
        results = _run(self._probe_all(targets))
        return {t.instance_id: r for t, r in zip(targets, results, strict=True)}

    def url_for(self, address: str) -> str:
        return f"http://{_host(address)}:{self.port}{self.path}"

    async def _probe_all(self, targets: Sequence[ProbeTarget]) -> list[ProbeResult]:
        results: list[ProbeResult | None] = [None] * len(targets)
        pending = iter(enumerate(targets))  # shared by the workers: one event loop, no lock needed

        async def worker() -> None:
            for i, target in pending:
                results[i] = await self._probe_one(target)

        await asyncio.gather(*(worker() for _ in range(min(self.max_in_flight, len(targets)))))
        return [r if r is not None else ProbeResult(False, "probe error: not probed") for r in results]

    async def _probe_one(self, target: ProbeTarget) -> ProbeResult:
        import h11

        started = time.monotonic()
        loop = asyncio.get_running_loop()
        writer: asyncio.StreamWriter | None = None
        response: h11.Response | None = None
        wire: _Wire | None = None
        try:
            # One timeout per step: the connection, the response's head, the body (moved on at each step).
            async with asyncio.timeout(self.timeout) as step:
                http = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD_BYTES)
                request = h11.Request(method="GET", target=self.path, headers=self._headers(target.address))
                request_bytes = http.send(request) + http.send(h11.EndOfMessage())
                reader, writer = await asyncio.open_connection(target.address, self.port)
                wire = _Wire(http, reader, h11.NEED_DATA)
                writer.write(request_bytes)
                step.reschedule(loop.time() + self.timeout)
                while isinstance(event := await wire.next_event(), h11.InformationalResponse):
                    pass  # a 1xx: the response is still to come
                response = event
                status = response.status_code
                if status != self.expect_status:
                    reason = response.reason.decode("iso-8859-1")
                    return ProbeResult(False, f"{status} {reason} (expected {self.expect_status})")
                if self.pattern is not None:
                    step.reschedule(loop.time() + self.timeout)
                    body = bytearray()  # h11 undoes the framing: Content-Length, chunked, or until the close
                    while len(body) < MAX_BODY_BYTES and isinstance(part := await wire.next_event(), h11.Data):
                        body += part.data
                    coding = b", ".join(v for k, v in response.headers if k == b"content-encoding").decode("latin-1")
                    text = _decoded(bytes(body[:MAX_BODY_BYTES]), coding).decode("utf-8", "replace")
                    if not self.pattern.search(text):
                        return ProbeResult(False, f"body did not match {self.pattern.pattern!r}")
            elapsed_ms = (time.monotonic() - started) * 1000
            return ProbeResult(True, f"{status} in {elapsed_ms:.0f} ms", elapsed_ms)
        except TimeoutError:
            return ProbeResult(False, f"timed out after {self.timeout:g} s")
        except OSError as exc:
            return ProbeResult(False, f"connection failed: {_root_cause(exc)}")
        except h11.RemoteProtocolError as exc:
            if response is None and wire is not None and wire.closed:  # the server hung up within the head
                if not wire.received:
                    return ProbeResult(False, "connection failed: closed without a response")
                return ProbeResult(False, "connection failed: the response was cut short")
            what = f"not an HTTP response: {exc}" if response is None else str(exc)
            return ProbeResult(False, f"probe error: {what[:200]}")
        except (h11.LocalProtocolError, zlib.error) as exc:  # a path h11 will not send; a body that does not decode
            return ProbeResult(False, f"probe error: {str(exc)[:200] or type(exc).__name__}")
        finally:
            if writer is not None:
                writer.close()  # the loop closes the socket at its next turn; nothing to wait for

    def _headers(self, address: str) -> list[tuple[str, str]]:
        return [
            ("Host", f"{_host(address)}:{self.port}"),
            ("User-Agent", USER_AGENT),
            ("Accept", "*/*"),
            ("Accept-Encoding", "gzip, deflate"),
            ("Connection", "close"),
        ]


class _Wire:
    """Feeds what the server sends to ``http`` (an ``h11.Connection``) until it has an event to give."""

    def __init__(self, http: h11.Connection, reader: asyncio.StreamReader, need_data: object) -> None:
        self.http, self.reader, self.need_data = http, reader, need_data
        self.received = 0  # bytes so far
        self.closed = False  # the server has closed its side

    async def next_event(self) -> Any:
        while (event := self.http.next_event()) is self.need_data:
            data = await self.reader.read(READ_BYTES)
            self.received += len(data)
            self.closed = not data
            self.http.receive_data(data)  # b"": the server closed; h11 ends a close-delimited body or objects
        return event


def _run(work: Coroutine[Any, Any, T]) -> T:
    """Run ``work`` on an event loop of its own: in this thread, or, when this thread already runs one (an
    async caller), in one other thread for the call."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(work)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="probe") as one:
        return one.submit(asyncio.run, work).result()


def _host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def _decoded(body: bytes, coding: str) -> bytes:
    """The body with its gzip or deflate content coding undone (what the probe asked to accept)."""
    coding = coding.strip().lower()
    if coding == "gzip":
        return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(body, MAX_BODY_BYTES)
    if coding == "deflate":  # zlib-wrapped as the RFC says, or raw deflate as some servers send it
        try:
            return zlib.decompressobj().decompress(body, MAX_BODY_BYTES)
        except zlib.error:
            return zlib.decompressobj(-zlib.MAX_WBITS).decompress(body, MAX_BODY_BYTES)
    return body


def _root_cause(exc: OSError) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return "name or service not known"
    if exc.errno == errno.EHOSTUNREACH:
        return "no route to host"
    if exc.errno == errno.ETIMEDOUT:
        return "timed out"
    return (str(exc) or type(exc).__name__)[:200]
