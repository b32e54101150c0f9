"""HTTP probes of each instance's private IP, concurrently, with a time bound per probe.

The load balancer hides individual instances (the walkthrough's point: "you do not know the service
status for an individual node through the public access point"), so the controller probes every
instance directly over the virtual network, the way the LB probe would: path, port, expected status
and an optional body pattern. A tick probes the whole fleet at once, at most ``max_in_flight`` probes
at a time, so its duration is about one probe timeout whatever the fleet size.

One thread runs them all: an asyncio event loop, each probe a plain HTTP/1.1 GET on a fresh connection
(``Connection: close``; a probe must see what a new client sees), redirects not followed. At 1,000
instances this costs the controller about a fifth of a millisecond of CPU per probe, where ``requests`` on
a pool of threads cost about three quarters (docs/performance.md, "Tick cost"), and no thread per probe.
Each step is bounded by the timeout: the connection, the response's head, and the body when a pattern
is to be matched (at most ``MAX_BODY_BYTES`` of it, gzip or deflate content decoded).
"""

from __future__ import annotations

import asyncio
import errno
import re
import socket
import time
import zlib
from collections.abc import Coroutine, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from rollout.model import ProbeResult
from rollout.ports import ProbeTarget
from rollout.settings import ProbeSettings

MAX_BODY_BYTES = 64 * 1024
MAX_HEAD_BYTES = 64 * 1024  # status line and headers; a longer head is refused
USER_AGENT = "vmss-canary-probe"

T = TypeVar("T")


class _BadResponseError(Exception):
    """What came back is not an HTTP response the probe can read."""


class HttpProber:
    """Implements ``rollout.ports.Prober`` with the standard library's asyncio streams."""

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
        started = time.monotonic()
        loop = asyncio.get_running_loop()
        writer: asyncio.StreamWriter | None = None
        try:
            # One timeout per step: the connection, the response's head, the body (moved on at each step).
            async with asyncio.timeout(self.timeout) as step:
                reader, opened = await asyncio.open_connection(target.address, self.port, limit=MAX_HEAD_BYTES)
                writer = opened
                opened.write(self._request(target.address))
                step.reschedule(loop.time() + self.timeout)
                status, reason, headers = _parse_head(await reader.readuntil(b"\r\n\r\n"))
                if status != self.expect_status:
                    return ProbeResult(False, f"{status} {reason} (expected {self.expect_status})")
                if self.pattern is not None:
                    step.reschedule(loop.time() + self.timeout)
                    body = _decoded(await _read_body(reader, headers), headers)
                    if not self.pattern.search(body.decode("utf-8", "replace")):
                        return ProbeResult(False, f"body did not match {self.pattern.pattern!r}")
            elapsed_ms = (time.monotonic() - started) * 1000
            return ProbeResult(True, f"{status} in {elapsed_ms:.0f} ms", elapsed_ms)
        except TimeoutError:
            return ProbeResult(False, f"timed out after {self.timeout:g} s")
        except asyncio.IncompleteReadError as exc:
            if not exc.partial:
                return ProbeResult(False, "connection failed: closed without a response")
            return ProbeResult(False, "connection failed: the response was cut short")
        except OSError as exc:
            return ProbeResult(False, f"connection failed: {_root_cause(exc)}")
        except (asyncio.LimitOverrunError, _BadResponseError, ValueError, zlib.error) as exc:
            return ProbeResult(False, f"probe error: {str(exc)[:200] or type(exc).__name__}")
        finally:
            if writer is not None:
                writer.close()  # the loop closes the socket at its next turn; nothing to wait for

    def _request(self, address: str) -> bytes:
        return (
            f"GET {self.path} HTTP/1.1\r\nHost: {_host(address)}:{self.port}\r\nUser-Agent: {USER_AGENT}\r\n"
            "Accept: */*\r\nAccept-Encoding: gzip, deflate\r\nConnection: close\r\n\r\n"
        ).encode("ascii")


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


def _parse_head(head: bytes) -> tuple[int, str, dict[str, str]]:
    """``HTTP/1.1 200 OK\\r\\n`` + header lines -> (status, reason, {lower-case header name: value}); a header
    sent more than once has its values joined with ", " (RFC 9110, 5.3)."""
    lines = head.decode("iso-8859-1").split("\r\n")
    parts = lines[0].split(None, 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not (parts[1].isdigit() and len(parts[1]) == 3):
        raise _BadResponseError(f"not an HTTP response: {lines[0][:80]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if colon:
            key = name.strip().lower()
            headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    return int(parts[1]), parts[2].strip() if len(parts) > 2 else "", headers


async def _read_body(reader: asyncio.StreamReader, headers: Mapping[str, str]) -> bytes:
    """At most ``MAX_BODY_BYTES`` of the body as sent (chunked transfer coding undone)."""
    if "chunked" in (headers.get("transfer-encoding") or "").lower():
        body = bytearray()
        while len(body) < MAX_BODY_BYTES:
            size = int((await reader.readline()).split(b";", 1)[0].strip() or b"x", 16)
            if size == 0:
                break
            body += await reader.readexactly(min(size, MAX_BODY_BYTES - len(body)))
            if len(body) < MAX_BODY_BYTES:
                await reader.readexactly(2)  # the CRLF after the chunk
        return bytes(body)
    length = headers.get("content-length")
    if length is not None:
        try:
            return await reader.readexactly(min(int(length), MAX_BODY_BYTES))
        except asyncio.IncompleteReadError as exc:
            return exc.partial  # fewer bytes than announced: match what came
    body = bytearray()  # no length: the body ends when the server closes the connection
    while len(body) < MAX_BODY_BYTES and (chunk := await reader.read(MAX_BODY_BYTES - len(body))):
        body += chunk
    return bytes(body)


def _decoded(body: bytes, headers: Mapping[str, str]) -> bytes:
    """The body with its gzip or deflate content coding undone (what the probe asked to accept)."""
    coding = (headers.get("content-encoding") or "").strip().lower()
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
