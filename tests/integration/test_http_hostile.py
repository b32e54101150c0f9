"""Hostile input never reaches a 500: a property test over the function app's own HTTP handlers.

Every generated request (route, rollout id, verb, body, headers, query string) is built as the Functions
host builds it (``func.HttpRequest``) and handed to the decorated function's user code, with the real
backing store (Azurite through the real ``azure-data-tables`` client) and the HTTPS ARM emulator behind
it. Every answer must be JSON with a status the API documents, and the app's last-resort handler must
never have been needed. At least 2,000 requests per run, derandomized (the same examples every run, so
a failure in CI fails the same way locally).
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlencode

import azure.functions as func
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import function_app
from emulator import appindex
from rollout.access import OPERATE_ROLE, READ_ROLE
from rollout.machine import Verb
from rollout.releases import ROLLOUT_ID_RE
from tests.fixtures.appenv import app_under_test
from tests.integration.test_function_app_rollout import App, user_function

# The verbs as plain strings, under the name the examples' seed was derived with (derandomize hashes the test's source).
COMMANDS = tuple(v.value for v in Verb)

pytestmark = pytest.mark.integration

ALLOWED = {200, 400, 401, 403, 404, 409, 503}
ROLE_URI = "http://schemas.microsoft.com/ws/2008/06/identity/claims/role"
EXAMPLES = 2000
ROUTES = {
    "list": ("list_rollouts", "GET"),
    "get": ("get_rollout", "GET"),
    "steer": ("steer_rollout", "POST"),
    "fleet": ("fleet_status", "GET"),
    "targets": ("list_targets", "GET"),
}

# Text of every kind: any code point including unpaired surrogates and controls, and the characters
# Azure Tables forbids in keys or that mean something in a URL.
any_text = st.text(st.characters(exclude_categories=()), max_size=80)
nasty_text = st.text(st.sampled_from(list("/\\#?%~'\"&=+ .\t\n\r\x00\x1f\x7f\x85\x9f\u2028\ud800\udfff-_vV09af")))
huge_text = st.builds(lambda n, c: c * n, st.integers(513, 20_000), st.sampled_from(["x", "é", "\U0001f600", "/"]))
valid_shape = st.from_regex(ROLLOUT_ID_RE, fullmatch=True)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | any_text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(any_text, children, max_size=4),
    max_leaves=12,
)
command_fields = st.fixed_dictionaries(
    {},
    optional={
        "reason": st.one_of(any_text, json_values, st.text(min_size=490, max_size=520)),
        "rollback": st.one_of(st.booleans(), json_values),
        "force": json_values,
    },
)


def _dump(value: Any) -> bytes:
    return json.dumps(value).encode()


bodies = st.one_of(
    st.just(b""),
    st.binary(max_size=300),
    json_values.map(_dump),
    command_fields.map(_dump),
    command_fields.map(lambda d: json.dumps(d, ensure_ascii=False).encode("utf-8", "surrogatepass")),
    st.integers(1, 6000).map(lambda n: b"[" * n + b"]" * n),  # nested deeper than the recursion limit
    st.integers(4000, 200_000).map(lambda n: b'{"reason": "' + b"a" * n + b'"}'),
)
headers = st.dictionaries(
    st.sampled_from(
        ["x-ms-client-principal-name", "x-ms-client-principal", "x-ms-client-principal-id", "content-type", "x-x"]
    ),
    st.one_of(st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=100), st.just("e30=")),
    max_size=4,
)
queries = st.dictionaries(any_text, any_text, max_size=3)


def request_for(route: str, rollout_id: str, verb: str, body: bytes, hdrs: dict[str, str], query: dict[str, str]):
    function, method = ROUTES[route]
    path = {
        "list": "rollouts",
        "get": f"rollouts/{rollout_id}",
        "steer": f"rollouts/{rollout_id}/{verb}",
        "fleet": "fleet",
        "targets": "targets",
    }[route]
    route_params = {"get": {"id": rollout_id}, "steer": {"id": rollout_id, "verb": verb}}.get(route, {})
    url = "http://localhost/api/" + quote(path.encode("utf-8", "surrogatepass"), safe="/")
    encoded_query = urlencode(
        {k.encode("utf-8", "surrogatepass"): v.encode("utf-8", "surrogatepass") for k, v in query.items()}
    )
    request = func.HttpRequest(
        method,
        f"{url}?{encoded_query}" if encoded_query else url,
        headers=hdrs,
        params=query,
        route_params=route_params,
        body=body,
    )
    return function, request


@pytest.fixture
def live(
    azurite: Any, azurite_names: Any, make_scale_set: Any, arm_emulator: Any, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[App, str]]:
    setup = app_under_test(azurite, azurite_names, make_scale_set, arm_emulator, monkeypatch, BAKE_SECONDS="3600")
    blobs, container = setup.blobs, setup.container
    application = App(blobs, container)
    application.upload("install_nginx.v1.sh", b"#!/bin/bash\necho v1\n")
    [rollout] = application.rollouts()
    yield application, rollout["id"]
    blobs.close()


def test_no_generated_request_gets_a_500_or_anything_but_json(
    live: tuple[App, str], caplog: pytest.LogCaptureFixture
) -> None:
    application, existing = live
    ids = st.one_of(
        any_text,
        nasty_text,
        huge_text,
        valid_shape,  # the right shape, no such rollout: reaches the table read, 404
        st.just(existing),  # the real one: 200, or 409 once the verbs have moved it on
        st.sampled_from([existing.upper(), existing + "\n", existing + "/pause", existing + "~", " " + existing]),
        st.just("x" * 5000),  # the issue's reproduction
    )
    verbs = st.one_of(st.sampled_from(COMMANDS), any_text, nasty_text, huge_text)
    seen: list[int] = []

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
    )
    @given(
        route=st.sampled_from(sorted(ROUTES)),
        rollout_id=ids,
        verb=verbs,
        body=bodies,
        hdrs=headers,
        query=queries,
    )
    def one_request(
        route: str, rollout_id: str, verb: str, body: bytes, hdrs: dict[str, str], query: dict[str, str]
    ) -> None:
        function, request = request_for(route, rollout_id, verb, body, hdrs, query)
        response = user_function(function)(request)
        seen.append(response.status_code)
        assert response.mimetype == "application/json"
        payload = json.loads(response.get_body())
        assert response.status_code in ALLOWED, (route, rollout_id[:80], verb[:80], payload)
        if response.status_code >= 400:
            assert isinstance(payload.get("error"), str) and len(payload["error"]) < 2000

    with caplog.at_level(logging.ERROR, logger="function_app"):
        one_request()
    assert len(seen) >= EXAMPLES
    assert [r.getMessage() for r in caplog.records if r.name == "function_app"] == []
    # The run reached every layer: refused up front, read from the store, served, steered.
    assert {200, 400, 404} <= set(seen)
    assert function_app.HTTP_AUTH == "function-key"


def call(function: str, method: str, route: dict[str, str], body: bytes = b"", **headers: str) -> tuple[int, Any]:
    request = func.HttpRequest(method, "http://localhost/api/x", headers=headers, route_params=route, body=body)
    response = user_function(function)(request)
    assert response.mimetype == "application/json"
    return response.status_code, json.loads(response.get_body())


def test_the_issue_reproduction_is_a_json_404_before_any_storage_call(live: tuple[App, str]) -> None:
    status, payload = call("steer_rollout", "POST", {"id": "x" * 5000, "verb": "pause"})
    assert status == 404 and "5000 characters" in payload["error"] and len(payload["error"]) < 200
    status, payload = call("get_rollout", "GET", {"id": "a/b#c?d"})
    assert status == 404 and "not a rollout id" in payload["error"]


def test_a_body_nested_deeper_than_the_recursion_limit_is_a_400(live: tuple[App, str]) -> None:
    _, existing = live
    status, payload = call("steer_rollout", "POST", {"id": existing, "verb": "pause"}, b"[" * 2000 + b"]" * 2000)
    assert status == 400 and "not valid JSON" in payload["error"]
    status, payload = call("steer_rollout", "POST", {"id": existing, "verb": "pause"}, b'{"reason": "\\ud800"}')
    assert status == 400 and '"reason"' in payload["error"]


def test_the_function_key_actor_is_recorded_whatever_header_a_client_sends(live: tuple[App, str]) -> None:
    application, existing = live
    status, _ = call(
        "steer_rollout", "POST", {"id": existing, "verb": "pause"}, **{"x-ms-client-principal-name": "the CEO"}
    )
    assert status == 200
    actors = {e["actor"] for e in application.rollout(existing)["events"] if "pause" in e["message"].lower()}
    assert actors == {"function key"}


def test_anything_unforeseen_is_logged_and_answered_as_json_without_a_traceback(
    live: tuple[App, str], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    _, existing = live
    from rollout.service import RolloutService

    def explode(self: Any, rollout_id: str) -> Any:
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(RolloutService, "get", explode)
    with caplog.at_level(logging.ERROR, logger="function_app"):
        status, payload = call("get_rollout", "GET", {"id": existing})
    assert status == 500 and "incident" in payload["error"]
    assert "secret internal detail" not in payload["error"] and "Traceback" not in json.dumps(payload)
    assert "secret internal detail" in caplog.text


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"HTTP_AUTH": "aad"}, "HTTP_AUTH='aad'"),
        ({"HTTP_AUTH": "entra", "WEBSITE_AUTH_ENABLED": "True"}, "restart the function app"),
    ],
)
def test_a_misconfigured_app_is_the_only_500(
    live: tuple[App, str], monkeypatch: pytest.MonkeyPatch, env: dict[str, str], message: str
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    for function, method, route in [
        ("list_rollouts", "GET", {}),
        ("steer_rollout", "POST", {"id": "x", "verb": "pause"}),
    ]:
        status, payload = call(function, method, route)
        assert status == 500 and message in payload["error"]


def _principal_header(claims: list[tuple[str, str]], extra: dict[str, Any]) -> str:
    body = {"auth_typ": "aad", "claims": [{"typ": t, "val": v} for t, v in claims], **extra}
    return base64.b64encode(json.dumps(body).encode()).decode()


principal_headers = st.one_of(
    st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=200),  # not Base64 JSON at all
    json_values.map(lambda v: base64.b64encode(json.dumps(v).encode()).decode()),  # Base64 JSON of any shape
    st.builds(
        _principal_header,
        st.lists(
            st.tuples(
                st.sampled_from(["roles", ROLE_URI, "name", "preferred_username", "oid", "upn", "azp", "x"]),
                st.one_of(st.sampled_from([READ_ROLE, OPERATE_ROLE, "rollouts.operate", ""]), any_text),
            ),
            max_size=6,
        ),
        st.fixed_dictionaries({}, optional={"role_typ": any_text, "name_typ": any_text, "claims_extra": json_values}),
    ),
)


def test_entra_mode_hostile_principals_are_401_or_403_never_a_500(
    live: tuple[App, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same property with HTTP_AUTH=entra behind platform authentication: whatever principal header
    arrives (garbage, any JSON, principals with any claims), the answer is JSON and never a 500."""
    from tests.integration.test_funchost_auth import load_function_app

    _, existing = live
    module = load_function_app("entra", monkeypatch)
    monkeypatch.setenv("WEBSITE_AUTH_ENABLED", "True")
    seen: list[int] = []

    @settings(
        max_examples=500,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(
        route=st.sampled_from(sorted(ROUTES)),
        rollout_id=st.one_of(any_text, st.just(existing), valid_shape),
        verb=st.one_of(st.sampled_from(COMMANDS), any_text),
        body=bodies,
        principal=st.one_of(st.none(), principal_headers),
    )
    def one_request(route: str, rollout_id: str, verb: str, body: bytes, principal: str | None) -> None:
        hdrs = {} if principal is None else {"X-MS-CLIENT-PRINCIPAL": principal}
        function, request = request_for(route, rollout_id, verb, body, hdrs, {})
        response = appindex.user_function(module.app, function)(request)
        seen.append(response.status_code)
        assert response.mimetype == "application/json"
        payload = json.loads(response.get_body())
        assert response.status_code in ALLOWED, (route, principal, payload)

    one_request()
    assert len(seen) >= 500 and {200, 401, 403} <= set(seen)
