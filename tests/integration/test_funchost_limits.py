"""The local host's front-end answers for requests no function should see: a bad or huge Content-Length,
a body that never arrives, and (a switch, see emulator/funchost/http.py) URLs over the Windows host's 4 KB."""

from __future__ import annotations

import http.client
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from emulator import funchost
from emulator.funchost import LocalFunctionsHost
from tests.fixtures import toy_function_app as toy

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _fresh_recorder() -> None:
    toy.recorder.reset()


def raw(host: LocalFunctionsHost, method: str, path: str, headers: dict[str, str], body: bytes = b"") -> int:
    address = urlsplit(host.url)
    conn = http.client.HTTPConnection(address.hostname or "127.0.0.1", address.port, timeout=20)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for name, value in headers.items():
            conn.putheader(name, value)
        conn.endheaders(body or None)
        return conn.getresponse().status
    finally:
        conn.close()


@pytest.fixture
def host(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[LocalFunctionsHost]:
    limit = getattr(request, "param", None)
    with LocalFunctionsHost(
        toy.app,
        env={"TOY_TICK_SCHEDULE": "0 0 0 1 1 *"},
        http_port=0,
        state_dir=tmp_path,
        functions=["item", "ping"],
        max_url_bytes=limit,
    ) as running:
        yield running


def test_a_bad_or_huge_content_length_is_answered_before_any_function(host: LocalFunctionsHost) -> None:
    key = {"x-functions-key": host.function_key}
    assert raw(host, "POST", "/api/items/1/abort", {**key, "Content-Length": "nope"}) == 400
    assert raw(host, "POST", "/api/items/1/abort", {**key, "Content-Length": "-5"}) == 400
    assert (
        raw(host, "POST", "/api/items/1/abort", {**key, "Content-Length": str(funchost.MAX_REQUEST_BYTES + 1)}) == 413
    )
    assert toy.recorder.http_calls == []
    assert raw(host, "POST", "/api/items/1/abort", {**key, "Content-Length": "2"}, b"{}") == 201


def test_a_body_that_never_arrives_is_a_408_not_a_500(
    host: LocalFunctionsHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(funchost.http.Handler, "timeout", 1)
    key = {"x-functions-key": host.function_key}
    assert raw(host, "POST", "/api/items/1/abort", {**key, "Content-Length": "100"}, b"{}") == 408
    assert toy.recorder.http_calls == []


@pytest.mark.parametrize("host", [None, funchost.WEB_CONFIG_MAX_URL_BYTES], indirect=True, ids=["no-limit", "4KB"])
def test_long_urls_reach_the_function_unless_the_4kb_switch_is_on(host: LocalFunctionsHost) -> None:
    path = "/api/ping?pad=" + "x" * 5000
    expected = 200 if host.max_url_bytes is None else 414
    assert raw(host, "GET", path, {}) == expected
    assert raw(host, "GET", "/api/ping?pad=" + "x" * 3000, {}) == 200
