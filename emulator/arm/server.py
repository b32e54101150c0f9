"""The HTTPS server: TLS on each connection's own thread, keep-alive, and every request handed to the
emulator's ``handle`` (``gateway.Gateway``)."""

from __future__ import annotations

import contextlib
import json
import socket
import socketserver
import ssl
import threading
import uuid
from collections.abc import Callable
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

from emulator.arm.routes import Answer
from emulator.serving import QuietHandler

Handle = Callable[[str, str, dict[str, str], bytes], Answer]


class ArmHandler(QuietHandler):
    server: ArmServer
    # TCP_NODELAY on each connection (socketserver.StreamRequestHandler.setup). An answer goes out in two
    # writes, the headers then the body; with Nagle's algorithm on, the body's last segment waits for the
    # client's ACK of what went before, which a keep-alive client delays (about 40 ms on Linux loopback).
    disable_nagle_algorithm = True

    def _dispatch(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        status, out_headers, payload = self.server.answer(self.command, self.path, headers, body)
        data = b"" if payload is None else json.dumps(payload).encode()
        base = {"Content-Type": "application/json; charset=utf-8", "x-ms-request-id": str(uuid.uuid4())}
        self.reply(status, data, {**base, **out_headers})

    do_GET = do_PUT = do_PATCH = do_POST = do_DELETE = _dispatch  # noqa: N815


class ArmServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handle: Handle, ctx: ssl.SSLContext) -> None:
        self.answer = handle
        self._ctx = ctx
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        super().__init__(address, ArmHandler)

    def server_bind(self) -> None:
        socketserver.TCPServer.server_bind(self)  # skip HTTPServer's reverse DNS lookup (slow, unused)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def finish_request(self, request: Any, client_address: Any) -> None:
        # The TLS handshake runs here, in the connection's own thread, not in the accept loop: one slow
        # or broken client cannot stall everyone else.
        try:
            request.settimeout(60)  # an idle keep-alive connection is dropped after a minute
            tls = self._ctx.wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError):
            return
        with self._conns_lock:
            self._conns.add(tls)
        try:
            ArmHandler(tls, client_address, self)
        except (OSError, ssl.SSLError):
            pass  # the client went away, or stop() shut the connection
        finally:
            with self._conns_lock:
                self._conns.discard(tls)
            with contextlib.suppress(OSError):
                tls.close()

    def close_connections(self) -> None:
        """Unblock keep-alive handler threads waiting for a next request, so none outlive stop()."""
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


def tls_context(cert_chain: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert_chain, key)
    return ctx
