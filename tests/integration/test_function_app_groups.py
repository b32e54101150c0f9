"""The group release routes of the function app, end to end: Azurite for blobs and tables (the group
release rows in their own table, read and written through the real ``azure-data-tables`` client), the
ARM emulator over HTTPS, real probes. Today's settings are the default group of one target."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import azure.functions as func
import pytest
from azure.functions.timer import TimerRequest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import function_app
from rollout.machine import Verb
from rollout.releases import build_release, parse_release_name
from rollout.targets import DEFAULT_GROUP
from rollout.waves import GroupPhase
from tests.fixtures.appenv import app_under_test
from tests.integration.test_function_app_rollout import App, user_function
from tests.integration.test_http_hostile import ALLOWED, any_text, bodies, huge_text, nasty_text, valid_shape

pytestmark = pytest.mark.integration


@pytest.fixture
def app(
    azurite: Any, azurite_names: Any, make_scale_set: Any, arm_emulator: Any, monkeypatch: pytest.MonkeyPatch
) -> Iterator[App]:
    setup = app_under_test(
        azurite,
        azurite_names,
        make_scale_set,
        arm_emulator,
        monkeypatch,
        size=3,
        BAKE_SECONDS="1",
        FAILURE_THRESHOLD="2",
        PROBE_BODY_PATTERN="Welcome to nginx",
    )
    application = App(setup.blobs, setup.container, setup.env)
    application.handle = setup.handle  # type: ignore[attr-defined]
    yield application
    setup.blobs.close()


def receive(app: App, version: int) -> str:
    """A release for the default group, as the blob routing hands it over (the blob is in the container)."""
    name = parse_release_name(f"install_nginx.v{version}.sh")
    assert not isinstance(name, str)
    content = f"#!/bin/bash\napt-get install -y nginx # v{version}\n".encode()
    url = app.blobs.upload(name.blob_name, content)
    outcome = function_app._groups().receive_release(DEFAULT_GROUP, build_release(name, url, content))
    assert outcome.release_id is not None, outcome
    return outcome.release_id


def test_a_group_release_is_listed_shown_and_steered_over_http(app: App) -> None:
    release_id = receive(app, 1)
    target = function_app._groups().config.targets()[0].key

    status, listing = app.http("list_group_releases", "GET", {})
    assert status == 200 and [r["id"] for r in listing["releases"]] == [release_id]
    assert listing["releases"][0]["phase"] == GroupPhase.RUNNING.value and listing["releases"][0]["group"] == "default"
    status, detail = app.http("get_group_release", "GET", {"id": release_id})
    assert status == 200, detail
    [entry] = detail["targets"]
    assert entry["target"] == target and entry["wave"] == 1 and entry["rollout"]["phase"] == "Canary"
    assert [e["kind"] for e in detail["events"]][:3] == ["Received", "PhaseChanged", "TargetStarted"]
    assert detail["events"][2]["target"] == target

    # Pause the whole release: the group and its target's rollout.
    status, paused = app.http("steer_group_release", "POST", {"id": release_id, "verb": "pause"}, {"reason": "lunch"})
    assert status == 200 and paused["phase"] == "Paused", paused
    assert app.rollout(release_id)["phase"] == "Paused"
    # Resume one target only: the group stays paused.
    route = {"id": release_id, "target": target, "verb": "resume"}
    status, one = app.http("steer_group_target", "POST", route)
    assert status == 200, one
    assert app.rollout(release_id)["phase"] != "Paused"
    assert app.http("get_group_release", "GET", {"id": release_id})[1]["phase"] == "Paused"
    status, resumed = app.http("steer_group_release", "POST", {"id": release_id, "verb": "resume"})
    assert status == 200 and resumed["phase"] == "Running", resumed

    app.tick_until(release_id, "Succeeded", timeout=90)
    user_function("advance_rollouts")(timer=TimerRequest(past_due=False))  # targets, then the group
    status, done = app.http("get_group_release", "GET", {"id": release_id})
    assert done["phase"] == "Succeeded" and done["targets"][0]["rollout"]["phase"] == "Succeeded", done
    steered = [e for e in done["events"] if e["kind"] == "TargetSteered"]
    assert [e["actor"] for e in steered] == ["function key"] and steered[0]["target"] == target


def test_what_a_caller_sends_to_the_group_routes_is_answered_never_500(app: App) -> None:
    release_id = receive(app, 1)
    target = function_app._groups().config.targets()[0].key
    cases: list[tuple[str, dict[str, str], Any, int]] = [
        ("get_group_release", {"id": "nope"}, None, 404),
        ("get_group_release", {"id": "install_nginx-v9-0123456789"}, None, 404),
        ("get_group_release", {"id": "x" * 5000}, None, 404),
        ("steer_group_release", {"id": release_id, "verb": "explode"}, None, 404),
        ("steer_group_release", {"id": release_id, "verb": "retry"}, None, 409),  # per target only
        ("steer_group_release", {"id": release_id, "verb": "resume"}, None, 409),  # not paused
        ("steer_group_release", {"id": release_id, "verb": "abort"}, {"rollback": "yes"}, 400),
        ("steer_group_release", {"id": release_id, "verb": "pause"}, {"force": True}, 400),
        ("steer_group_target", {"id": release_id, "target": "rg:elsewhere", "verb": "abort"}, None, 404),
        ("steer_group_target", {"id": release_id, "target": "a\x00b", "verb": "abort"}, None, 404),
        ("steer_group_target", {"id": release_id, "target": "\ud800" * 3, "verb": "abort"}, None, 404),
        ("steer_group_target", {"id": release_id, "target": quote("/#?") * 100, "verb": "abort"}, None, 404),
        ("steer_group_target", {"id": release_id, "target": target, "verb": "resume"}, None, 409),  # not paused
        ("steer_group_target", {"id": release_id, "target": target, "verb": "explode"}, None, 404),
    ]
    for function, route, body, expected in cases:
        status, payload = app.http(function, "POST" if function.startswith("steer") else "GET", route, body)
        assert status == expected, (function, route, body, payload)
        assert isinstance(payload.get("error"), str)
    # Abort of one target: taken out of the release, rolled back there.
    route = {"id": release_id, "target": target, "verb": "abort"}
    status, aborted = app.http("steer_group_target", "POST", route, {"rollback": True, "reason": "smoke"})
    assert status == 200, aborted
    assert app.http("steer_group_target", "POST", route)[0] == 409  # already taken out


def test_no_generated_request_to_the_group_routes_gets_a_500(app: App, caplog: pytest.LogCaptureFixture) -> None:
    """A property test like tests/integration/test_http_hostile.py, over the group routes: any id, target,
    verb and body is answered JSON with a documented status; the last-resort handler is never needed."""
    release_id = receive(app, 1)
    target = function_app._groups().config.targets()[0].key
    ids = st.one_of(any_text, nasty_text, huge_text, valid_shape, st.just(release_id))
    targets = st.one_of(any_text, nasty_text, huge_text, st.just(target), st.just(target.upper()))
    verbs = st.one_of(st.sampled_from([v.value for v in Verb]), any_text, nasty_text)
    functions = ["list_group_releases", "get_group_release", "steer_group_release", "steer_group_target"]
    seen: list[int] = []

    @settings(
        max_examples=300,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
    )
    @given(function=st.sampled_from(functions), rid=ids, tgt=targets, verb=verbs, body=bodies)
    def one_request(function: str, rid: str, tgt: str, verb: str, body: bytes) -> None:
        route = {"id": rid, "target": tgt, "verb": verb}
        method = "POST" if function.startswith("steer") else "GET"
        request = func.HttpRequest(method, "http://localhost/api/releases", route_params=route, body=body)
        response = user_function(function)(request)
        seen.append(response.status_code)
        assert response.mimetype == "application/json"
        payload = json.loads(response.get_body())
        assert response.status_code in ALLOWED, (function, rid[:80], tgt[:80], verb[:80], payload)

    with caplog.at_level(logging.ERROR, logger="function_app"):
        one_request()
    assert not [r for r in caplog.records if "unexpected error" in r.getMessage()]
    assert len(seen) >= 300
