"""Synthetic instances serve from one accept thread: a fleet of thousands (bench/waves.py's 4,000) must not
cost a polling thread per instance."""

from __future__ import annotations

import socket
import threading

import pytest
import requests

from emulator.runtime import InstanceModel
from emulator.synthetic import SyntheticRuntime
from tests.fixtures.emulator import free_port

pytestmark = pytest.mark.integration

BASE = "127.0.93."


def _model() -> InstanceModel:
    return InstanceModel(None, settings={"fileUris": ["https://r.example/init/install_nginx.v1.sh"]})


def test_two_hundred_instances_serve_their_pages_from_one_thread_and_stop_cleanly() -> None:
    port = free_port(f"{BASE}1")
    before = threading.active_count()
    runtimes = [SyntheticRuntime(f"{BASE}{i + 1}", _model(), port=port) for i in range(200)]
    try:
        for runtime in runtimes:
            runtime.start()
        # One accept thread for all of them (a serve_forever thread each was 200 more).
        assert threading.active_count() - before <= 1
        for runtime in runtimes[:: 199 // 9]:
            runtime.apply(_model())
            page = requests.get(f"http://{runtime.address}:{port}/", timeout=5)
            assert page.status_code == 200 and f"instance {runtime.address}" in page.text
            assert "release=install_nginx.v1.sh" in page.text
        runtimes[1].set_healthy(False)
        assert requests.get(f"http://{runtimes[1].address}:{port}/", timeout=5).status_code == 500
    finally:
        for runtime in runtimes:
            runtime.stop()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://{runtimes[0].address}:{port}/", timeout=2)
    # Started again after every instance stopped: the accept loop comes back.
    again = SyntheticRuntime(f"{BASE}250", _model(), port=port)
    again.start()
    try:
        assert requests.get(f"http://{again.address}:{port}/", timeout=5).status_code == 200
    finally:
        again.stop()


def test_requests_one_after_another_reuse_one_answering_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """The page handler's threads are kept for the next request: 100 requests one after the other are answered
    by a thread or two, not by 100 threads started one per request."""
    port = free_port(f"{BASE}201")
    runtime = SyntheticRuntime(f"{BASE}201", _model(), port=port)
    runtime.start()
    started: list[str] = []
    start = threading.Thread.start

    def counted(self: threading.Thread) -> None:
        if "synthetic-page" in self.name or "process_request_thread" in self.name:  # answering threads only
            started.append(self.name)
        start(self)

    monkeypatch.setattr(threading.Thread, "start", counted)
    try:
        with requests.Session() as session:
            for _ in range(100):
                answer = session.get(f"http://{runtime.address}:{port}/", timeout=5)
                assert answer.status_code == 200 and "Welcome to nginx!" in answer.text
    finally:
        monkeypatch.undo()
        runtime.stop()
    assert len(started) <= 2, started
    assert len(runtime.requests_between(0, float("inf"))) == 100


def test_connections_that_never_send_do_not_hold_up_the_others() -> None:
    """Twenty clients connect and say nothing: each holds a thread (as a thread per request did), and a
    twenty-first client still gets its page at once."""
    port = free_port(f"{BASE}202")
    runtime = SyntheticRuntime(f"{BASE}202", _model(), port=port)
    runtime.start()
    silent = [socket.create_connection((runtime.address, port), timeout=5) for _ in range(20)]
    try:
        answer = requests.get(f"http://{runtime.address}:{port}/", timeout=5)
        assert answer.status_code == 200 and f"instance {runtime.address}" in answer.text
    finally:
        for conn in silent:
            conn.close()
        runtime.stop()
