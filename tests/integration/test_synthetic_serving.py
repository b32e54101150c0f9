"""Synthetic instances serve from one accept thread: a fleet of thousands (bench/waves.py's 4,000) must not
cost a polling thread per instance."""

from __future__ import annotations

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
