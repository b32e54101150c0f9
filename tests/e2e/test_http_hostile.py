"""Hostile requests over real HTTP through the local Functions host: no 500, ever.

The same kind of generated requests as tests/integration/test_http_hostile.py, but as raw HTTP on a
socket (``http.client``, so the path is sent exactly as generated: percent-encoded UTF-8 of any text,
long URLs, query strings, odd headers) to the local host running the real function_app.py on Azurite
and the HTTPS ARM emulator. The host's routing must pass such ids to the app without failing, and the
app must answer them. An answer from the host itself (401 without a key, 404 for a path no route
matches, 405) is text, as the real host's; every answer from the app is JSON; nothing is a 500, and no
invocation failed.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import function_app
from emulator.funchost import LocalFunctionsHost
from rollout.machine import Verb
from rollout.releases import ROLLOUT_ID_RE
from tests.fixtures.appenv import app_under_test, fire_release_uploaded

# The verbs as plain strings, under the name the examples' seed was derived with (derandomize hashes the test's source).
COMMANDS = tuple(v.value for v in Verb)

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

FROM_APP = {200, 400, 401, 403, 404, 409, 503}
FROM_HOST = {401, 404, 405}
EXAMPLES = 300

any_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=60)
nasty_text = st.text(st.sampled_from(list("/\\#?%~'\"&=+ .\t\n\x00\x7f\x85\u2028-_v09af")), max_size=40)
long_text = st.builds(lambda n, c: c * n, st.integers(513, 5000), st.sampled_from(["x", "é", "%", "/"]))
ids = st.one_of(any_text, nasty_text, long_text, st.from_regex(ROLLOUT_ID_RE, fullmatch=True), st.just("x" * 5000))
bodies = st.one_of(
    st.just(b""),
    st.binary(max_size=200),
    st.recursive(
        st.none() | st.booleans() | st.integers() | any_text,
        lambda c: st.lists(c, max_size=3) | st.dictionaries(any_text, c, max_size=3),
        max_leaves=8,
    ).map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries({}, optional={"reason": any_text, "rollback": st.booleans() | any_text}).map(
        lambda d: json.dumps(d).encode()
    ),
    st.integers(1, 3000).map(lambda n: b"[" * n + b"]" * n),
)
header_values = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=80)


@pytest.fixture
def host(
    azurite: Any,
    azurite_names: Any,
    make_scale_set: Any,
    arm_emulator: Any,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Any,
) -> Iterator[tuple[LocalFunctionsHost, str]]:
    setup = app_under_test(azurite, azurite_names, make_scale_set, arm_emulator, monkeypatch, BAKE_SECONDS="3600")
    blobs, container, env = setup.blobs, setup.container, setup.env
    blobs.upload("install_nginx.v1.sh", b"#!/bin/bash\necho v1\n")
    fire_release_uploaded(function_app.app, container, "install_nginx.v1.sh")
    functions = ["list_rollouts", "get_rollout", "steer_rollout", "fleet_status", "list_targets"]
    with LocalFunctionsHost(function_app.app, env=env, http_port=0, state_dir=tmp_path, functions=functions) as running:
        status, payload = send(running, "GET", "/api/rollouts", {"x-functions-key": running.function_key})
        assert status == 200
        running.test_env = env  # type: ignore[attr-defined]  # for a second host on the same state
        yield running, payload["rollouts"][0]["id"]
    blobs.close()


def send(
    host: LocalFunctionsHost, method: str, path: str, headers: dict[str, str], body: bytes = b""
) -> tuple[int, Any]:
    address = urlsplit(host.url)
    conn = http.client.HTTPConnection(address.hostname or "127.0.0.1", address.port, timeout=60)
    try:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        raw = response.read()
        kind = response.getheader("Content-Type") or ""
    finally:
        conn.close()
    if kind.startswith("application/json"):
        return response.status, json.loads(raw)
    return response.status, raw.decode("utf-8", "replace")


def test_hostile_requests_over_http_never_get_a_500(host: tuple[LocalFunctionsHost, str]) -> None:
    running, existing = host
    key = running.function_key
    seen: list[int] = []

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(
        route=st.sampled_from(["list", "get", "steer", "fleet", "targets"]),
        rollout_id=st.one_of(ids, st.just(existing)),
        verb=st.one_of(st.sampled_from(COMMANDS), any_text, nasty_text),
        body=bodies,
        query=st.dictionaries(any_text, any_text, max_size=3),
        extra=st.dictionaries(
            st.sampled_from(["x-ms-client-principal-name", "x-ms-client-principal", "x-a"]), header_values, max_size=2
        ),
    )
    # The three answers the last check needs, whatever the generated sample holds (it shifts with the
    # routes and strategies): a list (200), a verb whose body is not JSON (400), an unknown rollout (404).
    @example(route="list", rollout_id="x", verb="abort", body=b"", query={}, extra={})
    @example(
        route="steer", rollout_id="install_nginx-v9-0123456789", verb="abort", body=b"{not json", query={}, extra={}
    )
    @example(route="steer", rollout_id="install_nginx-v9-0123456789", verb="abort", body=b"", query={}, extra={})
    def one_request(
        route: str, rollout_id: str, verb: str, body: bytes, query: dict[str, str], extra: dict[str, str]
    ) -> None:
        segment = quote(rollout_id.encode("utf-8"), safe="")
        path = {
            "list": "/api/rollouts",
            "get": f"/api/rollouts/{segment}",
            "steer": f"/api/rollouts/{segment}/{quote(verb.encode('utf-8'), safe='')}",
            "fleet": "/api/fleet",
            "targets": "/api/targets",
        }[route]
        if query:
            path += "?" + urlencode(query)
        method = "POST" if route == "steer" else "GET"
        status, payload = send(running, method, path, {**extra, "x-functions-key": key}, body)
        seen.append(status)
        assert status != 500, (route, rollout_id[:80], payload)
        if isinstance(payload, dict):
            assert status in FROM_APP, (route, rollout_id[:80], payload)
        else:
            assert status in FROM_HOST, (route, rollout_id[:80], status, payload[:200])

    one_request()
    assert len(seen) >= EXAMPLES
    failed = [i for i in running.invocations if i.outcome == "failed"]
    assert failed == []
    assert {200, 400, 404} <= set(seen)


def test_the_issue_reproduction_over_http(host: tuple[LocalFunctionsHost, str]) -> None:
    running, _ = host
    status, payload = send(
        running, "POST", "/api/rollouts/" + "x" * 5000 + "/pause", {"x-functions-key": running.function_key}
    )
    assert status == 404 and isinstance(payload, dict) and "5000 characters" in payload["error"]
    status, payload = send(
        running, "GET", "/api/rollouts/%2F%23%3F%00%F0%9F%98%80", {"x-functions-key": running.function_key}
    )
    assert status == 404 and isinstance(payload, dict) and "not a rollout id" in payload["error"]
    status, _ = send(
        running, "POST", "/api/rollouts/x/pause", {"x-functions-key": running.function_key, "Content-Length": "nope"}
    )
    assert status == 400


def test_under_the_windows_hosts_4kb_url_limit_a_long_id_is_a_414_from_the_front(
    host: tuple[LocalFunctionsHost, str], tmp_path: Any
) -> None:
    """The documented 4 KB URL limit (a switch: the Linux host's limit is not documented): the long id
    never reaches the app, and nothing is a 500; a short hostile id still reaches it and is a JSON 404."""
    running, _ = host
    functions = ["list_rollouts", "get_rollout", "steer_rollout", "fleet_status", "list_targets"]
    with LocalFunctionsHost(
        function_app.app,
        env=running.test_env,  # type: ignore[attr-defined]
        http_port=0,
        state_dir=tmp_path / "limited",
        functions=functions,
        max_url_bytes=4096,
    ) as limited:
        key = {"x-functions-key": limited.function_key}
        status, _ = send(limited, "POST", "/api/rollouts/" + "x" * 5000 + "/pause", key)
        assert status == 414
        status, payload = send(limited, "POST", "/api/rollouts/" + "x" * 3000 + "/pause", key)
        assert status == 404 and isinstance(payload, dict)
        assert [i for i in limited.invocations if i.outcome == "failed"] == []
