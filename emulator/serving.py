"""What the twin's HTTP servers (the ARM emulator, the load balancer) share: a context-managed
start/stop lifecycle, a server serving on its own daemon thread, and a quiet keep-alive handler."""

from __future__ import annotations

import socketserver
import threading
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler
from typing import Any, Self


class Lifecycle:
    """``with thing: ...`` starts and stops it."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_in_background(server: socketserver.BaseServer, name: str, poll_interval: float) -> threading.Thread:
    """Start ``server.serve_forever`` on a daemon thread named ``name``."""
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": poll_interval}, name=name, daemon=True
    )
    thread.start()
    return thread


def shut_down(
    server: socketserver.BaseServer,
    threads: Iterable[threading.Thread],
    *,
    timeout: float,
    before_close: Callable[[], None] | None = None,
) -> None:
    """Stop accepting, run ``before_close`` (e.g. drop keep-alive connections), close the socket and
    join ``threads`` (each at most ``timeout`` seconds)."""
    server.shutdown()
    if before_close is not None:
        before_close()
    server.server_close()
    for thread in threads:
        thread.join(timeout=timeout)


class QuietHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 keep-alive (clients' connection pools reuse connections), no access log (the servers
    keep their own records), and one way to send a whole answer."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib signature)
        return

    def reply(self, status: int, data: bytes, headers: dict[str, str], length: int | None = None) -> None:
        """Send status, ``headers``, Content-Length (``length``, default ``len(data)``) and ``data``."""
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data) if length is None else length))
        self.end_headers()
        self.wfile.write(data)
