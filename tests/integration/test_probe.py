"""The HTTP prober against real servers on loopback addresses: what each failure looks like."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from rollout.adapters.probe import HttpProber
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
