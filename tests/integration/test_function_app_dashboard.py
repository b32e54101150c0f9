"""``GET /api/dashboard`` through the function app on Azurite and the HTTPS ARM emulator: the data behind the
page (every scale set of a targets document with its fleet map, the group releases, the timeline), the page
itself (its CSP nonce on its one script, the data block inert and read back whole), the JSON form the page
fetches, a backend error shown for one scale set only, and the bound on fleet maps per refresh."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import function_app
from emulator import appindex
from emulator.easyauth import LocalTokenIssuer
from emulator.funchost import LocalFunctionsHost
from rollout import dashboard
from rollout.access import OPERATE_ROLE, READ_ROLE
from tests.fixtures.appenv import app_under_test, fire_release_uploaded
from tests.integration.test_funchost_auth import (  # noqa: F401 - settings_env is a fixture
    forged_principal,
    load_function_app,
    settings_env,
    start_release,
)
from tests.integration.test_function_app_rollout import user_function
from tests.integration.test_function_app_targets import document

pytestmark = pytest.mark.integration


class Page(HTMLParser):
    """The page's script elements: their attributes and text."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[tuple[dict[str, str | None], str]] = []
        self._open: dict[str, str | None] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "script":
            self._open = dict(attrs)
            self.scripts.append((self._open, ""))

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            attrs, text = self.scripts[-1]
            self.scripts[-1] = (attrs, text + data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._open = None


class Dashboard:
    def __init__(self, setup: Any, extra: list[Any]) -> None:
        self.setup, self.extra = setup, extra

    def upload(self, name: str, content: bytes) -> None:
        self.setup.blobs.upload(name, content)
        fire_release_uploaded(function_app.app, self.setup.container, name)

    def get(self, query: str = "", headers: dict[str, str] | None = None) -> func.HttpResponse:
        params = dict(p.split("=", 1) for p in query.split("&") if p)
        req = func.HttpRequest(
            "GET", f"http://localhost/api/dashboard?{query}", params=params, headers=headers or {}, body=b""
        )
        return user_function("dashboard")(req)  # type: ignore[no-any-return]

    def data(self) -> dict[str, Any]:
        response = self.get("format=json")
        assert response.status_code == 200 and response.mimetype == "application/json"
        return json.loads(response.get_body())  # type: ignore[no-any-return]


@pytest.fixture
def app(
    azurite: Any, azurite_names: Any, make_scale_set: Any, arm_emulator: Any, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Dashboard]:
    setup = app_under_test(azurite, azurite_names, make_scale_set, arm_emulator, monkeypatch, BAKE_SECONDS="3600")
    v0 = setup.blobs.url_for("install_nginx.sh")
    extra = [
        make_scale_set(2, extension_settings={"fileUris": [v0], "commandToExecute": "bash install_nginx.sh"})
        for _ in range(2)
    ]
    setup.blobs.upload("targets.json", document([setup.handle], extra))
    monkeypatch.setenv("TARGETS_CONFIG", "targets.json")
    yield Dashboard(setup, extra)
    setup.blobs.close()


def key(handle: Any) -> str:
    return f"{handle.resource_group}:{handle.name}".lower()


def test_the_data_has_every_scale_set_with_its_fleet_map_the_release_and_the_timeline(app: Dashboard) -> None:
    first = key(app.setup.handle)
    app.upload("install_nginx.v1.sh", b"#!/bin/bash\necho v1\n")  # wave 1 starts: the canary, then a long bake
    data = app.data()
    assert [t["key"] for t in data["targets"]] == [first, *(key(h) for h in app.extra)]
    assert [t["wave"] for t in data["targets"]] == [1, 2, 2] and data["groups"][0]["name"] == "web"
    [release] = data["releases"]
    assert release["release"] == "install_nginx.v1.sh" and release["phase"] == "Running"
    assert [(t["target"], t["wave"], t["rolloutId"] is not None) for t in release["targets"]] == [
        (first, 1, True),
        *((key(h), 2, False) for h in app.extra),
    ]
    canary_set = data["targets"][0]
    assert canary_set["current"]["release"] == "install_nginx.v1.sh" and canary_set["current"]["canary"] == ["0"]
    tiles = {i["instanceId"]: i for i in canary_set["fleet"]["instances"]}
    assert tiles["0"]["canary"] is True and tiles["1"]["canary"] is False
    assert tiles["1"]["release"] == "the model before any release" and tiles["1"]["inFlight"] is None
    # The canary is being upgraded or already runs v1: either way the map says so.
    assert tiles["0"]["inFlight"] == "canary: upgrading to install_nginx.v1.sh" or tiles["0"]["release"] == (
        "install_nginx.v1.sh"
    )
    for other in data["targets"][1:]:
        assert other["current"] is None and len(other["fleet"]["instances"]) == 2
        assert {i["release"] for i in other["fleet"]["instances"]} == {"the model before any release"}
    kinds = [(e["kind"], e["target"], e["group"]) for e in data["timeline"]]
    assert ("CanaryStarted", first, None) in kinds and ("TargetStarted", first, "web") in kinds
    assert data["timeline"] == sorted(data["timeline"], key=lambda e: (e["at"], e["kind"]), reverse=True)


def test_the_page_carries_its_data_inert_and_one_script_allowed_by_its_nonce(app: Dashboard) -> None:
    app.upload("install_nginx.v1.sh", b"#!/bin/bash\necho v1\n")
    response = app.get("refresh=2")
    assert response.status_code == 200 and response.mimetype == "text/html"
    csp = response.headers["Content-Security-Policy"]
    nonce = re.fullmatch(r".*script-src 'nonce-([A-Za-z0-9_-]+)'.*", csp)
    assert nonce is not None and "default-src 'none'" in csp and "connect-src 'self'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert response.headers["Referrer-Policy"] == "no-referrer" and response.headers["Cache-Control"] == "no-store"
    page = Page()
    page.feed(response.get_body().decode())
    [(data_attrs, data_text), (script_attrs, _)] = page.scripts
    assert data_attrs["type"] == "application/json" and data_attrs["data-refresh"] == "2"
    assert script_attrs == {"nonce": nonce.group(1)}
    data = json.loads(data_text)
    assert data["releases"][0]["release"] == "install_nginx.v1.sh" and len(data["targets"]) == 3
    # A fresh nonce per answer.
    assert app.get().headers["Content-Security-Policy"] != csp
    # The JSON form the page fetches: the same data, not cached.
    answer = app.get("format=json")
    assert answer.headers["Cache-Control"] == "no-store" and "Content-Security-Policy" not in answer.headers


def test_a_scale_set_that_cannot_be_read_is_shown_as_such_and_the_rest_is_there(
    app: Dashboard, arm_emulator: Any
) -> None:
    broken = app.extra[0]
    arm_emulator.inject_fault("GET", rf"/virtualMachineScaleSets/{broken.name}(/|$)", 503, count=50)
    data = app.data()
    by_key = {t["key"]: t for t in data["targets"]}
    assert "cannot be read just now" in by_key[key(broken)]["fleet"]["error"]
    assert len(by_key[key(app.setup.handle)]["fleet"]["instances"]) == 2
    assert len(by_key[key(app.extra[1])]["fleet"]["instances"]) == 2
    arm_emulator.clear_faults()


def test_fleet_maps_are_bounded_per_refresh_active_rollouts_first(
    app: Dashboard, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dashboard, "MAX_FLEET_MAPS", 1)
    app.upload("install_nginx.v1.sh", b"#!/bin/bash\necho v1\n")
    data = app.data()
    assert data["fleetMapsShown"] == 1
    shown = [t["key"] for t in data["targets"] if t["fleet"] is not None]
    assert shown == [key(app.setup.handle)]  # the one with the active rollout
    assert all("at most 1 scale sets" in t["fleetOmitted"] for t in data["targets"][1:])


def test_a_refusal_is_a_small_page_that_escapes_its_message(app: Dashboard, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BAKE_SECONDS", "<b>not a number</b>")
    response = app.get()
    assert response.status_code == 500 and response.mimetype == "text/html"
    body = response.get_body().decode()
    assert "&lt;b&gt;not a number&lt;/b&gt;" in body and "<b>" not in body
    assert "script-src 'nonce-" in response.headers["Content-Security-Policy"]
    assert app.get("format=json").status_code == 500


def test_entra_mode_needs_the_read_role_and_shows_a_refusal_as_a_page(
    app: Dashboard, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = load_function_app("entra", monkeypatch)
    monkeypatch.setenv("WEBSITE_AUTH_ENABLED", "True")

    def get(query: str, principal: str | None) -> func.HttpResponse:
        headers = {} if principal is None else {"X-MS-CLIENT-PRINCIPAL": principal}
        params = dict(p.split("=", 1) for p in query.split("&") if p)
        req = func.HttpRequest(
            "GET", f"http://localhost/api/dashboard?{query}", params=params, headers=headers, body=b""
        )
        return appindex.user_function(module.app, "dashboard")(req)  # type: ignore[no-any-return]

    nobody = get("", None)
    assert nobody.status_code == 401 and nobody.mimetype == "text/html" and b"not signed in" in nobody.get_body()
    hostile_name = forged_principal("<img src=x onerror=alert(1)>", ["Other.Role"])
    refused = get("", hostile_name)
    assert refused.status_code == 403 and READ_ROLE.encode() in refused.get_body()
    assert b"<img" not in refused.get_body() and b"&lt;img src=x" in refused.get_body()
    for role in (READ_ROLE, OPERATE_ROLE):
        page = get("", forged_principal("reader@example.com", [role]))
        assert page.status_code == 200 and page.mimetype == "text/html"
        data = get("format=json", forged_principal("reader@example.com", [role]))
        assert data.status_code == 200 and json.loads(data.get_body())["targets"]
    assert get("format=json", None).status_code == 401


@settings(max_examples=60, derandomize=True, database=None, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    query=st.dictionaries(
        st.sampled_from(["format", "refresh", "code", "x"]),
        st.text(st.characters(exclude_categories=("Cs",)), max_size=40) | st.sampled_from(["json", "5", "0", "-1"]),
        max_size=3,
    )
)
def test_no_query_string_makes_the_dashboard_fail(app: Dashboard, query: dict[str, str]) -> None:
    req = func.HttpRequest("GET", "http://localhost/api/dashboard", params=query, headers={}, body=b"")
    response = user_function("dashboard")(req)
    assert response.status_code == 200
    if query.get("format") == "json":
        assert response.mimetype == "application/json"
    else:
        assert response.mimetype == "text/html" and b'<script type="application/json"' in response.get_body()


# --- over HTTP through the local Functions host: the headers reach the browser, each auth mode holds ------


@pytest.mark.parametrize("mode", ["function-key", "entra"])
def test_over_http_the_page_needs_the_same_credential_as_the_api_and_keeps_its_headers(
    mode: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    ctx: dict[str, Any] = request.getfixturevalue("settings_env")
    module = load_function_app(mode, monkeypatch)
    start_release(module, ctx)
    issuer = LocalTokenIssuer()
    env = {**ctx["env"], "HTTP_AUTH": mode}
    extra: dict[str, Any] = {"easy_auth": issuer.settings()} if mode == "entra" else {}
    functions = ["dashboard", "list_rollouts"]
    with LocalFunctionsHost(module.app, env=env, http_port=0, state_dir=tmp_path, functions=functions, **extra) as host:
        url = f"{host.api_url}/dashboard"
        assert requests.get(url, timeout=30).status_code == 401
        if mode == "function-key":
            allowed = [({}, f"?code={host.function_key}"), ({"x-functions-key": host.function_key}, "")]
            refused = [({}, "?code=wrong")]
        else:
            reader = {"Authorization": f"Bearer {issuer.token(roles=[READ_ROLE], preferred_username='r@contoso.com')}"}
            nobody = {"Authorization": f"Bearer {issuer.token(preferred_username='n@contoso.com')}"}
            allowed, refused = [(reader, "")], [(nobody, "")]
        for headers, query in allowed:
            page = requests.get(url + query, headers=headers, timeout=30)
            assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
            assert "script-src 'nonce-" in page.headers["Content-Security-Policy"]
            assert (
                page.headers["Referrer-Policy"] == "no-referrer" and page.headers["X-Content-Type-Options"] == "nosniff"
            )
            sep = "&" if query else "?"
            data = requests.get(f"{url}{query}{sep}format=json", headers=headers, timeout=30)
            assert data.status_code == 200 and data.json()["releases"][0]["release"] == "install_nginx.v1.sh"
            # The key never comes back in what the app answers.
            assert host.function_key not in page.text and host.function_key not in data.text
        for headers, query in refused:
            status = requests.get(url + query, headers=headers, timeout=30).status_code
            assert status == (401 if mode == "function-key" else 403)
