"""Pre-flight refusals, the what-if (``GET /api/plan``) and undo (``POST /api/undo``) through the function
app's own functions: Azurite for blobs and tables, the ARM emulator over HTTPS, real probes of the
emulated instances, the real SDK clients."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import azure.functions as func
import pytest
from azure.data.tables import TableServiceClient
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fixtures.appenv import app_under_test
from tests.integration.test_function_app_rollout import App, pages, user_function
from tests.integration.test_http_hostile import ALLOWED, any_text, bodies, huge_text, json_values, nasty_text, queries

pytestmark = pytest.mark.integration

V0 = b"#!/bin/bash\necho v0\n"
WRITE_METHODS = ("PUT", "POST", "PATCH", "DELETE")


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
        v0=V0,
        BAKE_SECONDS="1",
        FAILURE_THRESHOLD="2",
    )
    application = App(setup.blobs, setup.container, setup.env)
    application.handle = setup.handle  # type: ignore[attr-defined]
    application.names = azurite_names  # type: ignore[attr-defined]
    application.connection_string = azurite.connection_string  # type: ignore[attr-defined]
    yield application
    setup.blobs.close()


def call(function: str, method: str, params: dict[str, str] | None = None, body: Any = None) -> tuple[int, Any]:
    raw = json.dumps(body).encode() if body is not None else b""
    req = func.HttpRequest(method, f"http://localhost/api/{function}", params=params or {}, body=raw)
    response = user_function(function)(req)
    return response.status_code, json.loads(response.get_body())


def table_rows(app: App) -> set[tuple[str, str, str, str]]:
    """Every row of the app's tables (its prefix), with its ETag: any write changes this set."""
    prefix = app.names.table_prefix  # type: ignore[attr-defined]
    with TableServiceClient.from_connection_string(app.connection_string) as service:  # type: ignore[attr-defined]
        rows = set()
        for table in service.list_tables():
            if not table.name.startswith(prefix):
                continue
            for entity in service.get_table_client(table.name).list_entities():
                rows.add((table.name, entity["PartitionKey"], entity["RowKey"], str(entity.metadata.get("etag"))))
        return rows


def arm_writes(arm_emulator: Any) -> list[Any]:
    return [r for r in arm_emulator.requests() if r.method in WRITE_METHODS]


def ship(app: App, version: int) -> str:
    app.upload(f"install_nginx.v{version}.sh", f"#!/bin/bash\necho v{version}\n".encode())
    rid = next(r["id"] for r in app.rollouts() if r["version"] == version)
    app.tick_until(rid, "Succeeded", timeout=90)
    return rid


def test_a_baseline_script_deleted_from_the_container_is_refused_before_any_arm_write(
    app: App, arm_emulator: Any
) -> None:
    app.blobs._container.delete_blob("install_nginx.sh")  # the script v0's extension runs (fileUris)
    arm_emulator.clear_requests()
    app.upload("install_nginx.v1.sh", b"#!/bin/bash\necho v1\n")
    [summary] = app.rollouts()
    assert summary["phase"] == "Rejected"
    assert summary["reason"] == (
        "blob install_nginx.sh (a script of the scale set's current extension, which a rollback restores) "
        "no longer exists in the release container"
    )
    assert arm_writes(arm_emulator) == []


def test_the_plan_reads_only_and_warns_and_a_bad_request_is_400(app: App, arm_emulator: Any) -> None:
    app.blobs.upload("install_nginx.v1.sh", b"#!/bin/bash\necho v1\n")  # uploaded; the trigger not fired
    before = table_rows(app)
    arm_emulator.clear_requests()

    status, plan = call("plan_release", "GET", {"release": "install_nginx.v1.sh"})

    assert status == 200, plan
    assert arm_writes(arm_emulator) == [] and table_rows(app) == before
    assert arm_emulator.requests("GET")  # it did observe the scale set
    [wave] = plan["waves"]
    [target] = wave["targets"]
    assert [s["instances"] for s in target["steps"]] == [["0"], ["1"], ["2"]]
    assert target["capacity"]["maxUnavailable"] == 1
    assert plan["verdict"] == "warnings"
    assert target["findings"] == [
        {
            "check": "policy",
            "severity": "warn",
            "reason": "MAX_UNAVAILABLE 20% of 3 instance(s) rounds up to 1 instance(s): 33% of the fleet may be "
            "down at once",
        }
    ]
    for params, message in (
        ({"release": "nginx.sh"}, "does not match"),
        ({"release": "v9"}, "no release v9 is recorded"),
        ({"release": "x" * 301}, "is not a release name or version"),
        ({"release": "install_nginx.v1.sh", "group": "nope"}, "no group 'nope' is configured"),
        ({}, "name the release to plan"),
    ):
        status, answer = call("plan_release", "GET", params)
        assert status == 400 and message in answer["error"], (params, answer)
    assert arm_writes(arm_emulator) == [] and table_rows(app) == before


def test_undo_goes_back_to_the_previous_release_through_the_canary(app: App, arm_emulator: Any) -> None:
    handle = app.handle  # type: ignore[attr-defined]
    status, answer = call("undo_release", "POST")
    assert status == 409 and answer["error"].startswith("nothing to undo")
    ship(app, 1)
    ship(app, 2)
    assert all("install_nginx.v2.sh" in page for page in pages(handle).values())
    for body, code, message in (
        ({"to": "v9"}, 409, "unknown version v9"),
        ({"to": "nine"}, 400, '"to" must be a version'),
        ({"to": True}, 400, '"to" must be a version'),
        ({"when": "now"}, 400, "unknown field(s) 'when'"),
    ):
        status, answer = call("undo_release", "POST", body=body)
        assert (status, message in answer["error"]) == (code, True), answer
    arm_emulator.clear_requests()

    status, outcome = call("undo_release", "POST", body={"reason": "v2 misbehaves"})

    assert status == 200 and outcome["phase"] == "Canary", outcome
    assert outcome["target"] == app.env["VMSS_RESOURCE_GROUP"].lower() + ":" + app.env["VMSS_NAME"].lower()
    rid = outcome["rolloutId"]
    status, answer = call("undo_release", "POST")
    assert status == 409 and "is Canary on this scale set" in answer["error"]
    detail = app.tick_until(rid, "Succeeded", timeout=90)
    assert detail["version"] == 1
    assert [r.body["instanceIds"] for r in arm_emulator.requests("POST", "/manualupgrade")] == [["0"], ["1"], ["2"]]
    assert all("install_nginx.v1.sh" in page for page in pages(handle).values())
    assert app.rollouts()[0]["id"] == rid
    status, listing = call("list_rollouts", "GET")
    assert listing["target"]["stableVersion"] == 1


def test_undo_to_a_release_whose_blob_is_gone_is_recorded_rejected(app: App, arm_emulator: Any) -> None:
    ship(app, 1)
    ship(app, 2)
    app.blobs._container.delete_blob("install_nginx.v1.sh")
    arm_emulator.clear_requests()
    status, outcome = call("undo_release", "POST", body={"to": 1})
    assert status == 200 and outcome["status"] == "Rejected"
    assert "blob install_nginx.v1.sh (the script of install_nginx v1" in outcome["message"]
    assert arm_writes(arm_emulator) == []
    status, plan = call("plan_release", "GET", {"release": "v1"})
    [target] = plan["waves"][0]["targets"]
    assert plan["verdict"] == "refused" and any(f["check"] == "blob" for f in target["findings"])


PLAN_UNDO_EXAMPLES = 300


def test_no_generated_plan_or_undo_request_gets_a_500(app: App, caplog: pytest.LogCaptureFixture) -> None:
    """Hostile query strings and bodies on both routes (the strategies of tests/integration/test_http_hostile.py):
    JSON answers with a short error, never a 500, and nothing logged as an error."""
    ship(app, 1)
    ship(app, 2)
    seen: list[int] = []
    values = st.one_of(
        any_text,
        nasty_text,
        huge_text,
        st.sampled_from(["v1", "1", "v2", "v0", "V1", "install_nginx.v3.sh", "default"]),
    )
    params = st.dictionaries(st.sampled_from(["release", "group", "target", "x"]), values, max_size=3) | queries
    undo_bodies = bodies | st.fixed_dictionaries({}, optional={"to": json_values | values, "reason": values}).map(
        lambda d: json.dumps(d).encode()
    )

    @settings(max_examples=PLAN_UNDO_EXAMPLES, derandomize=True, database=None, deadline=None)
    @given(undo=st.booleans(), query=params, body=undo_bodies)
    def one(undo: bool, query: dict[str, str], body: bytes) -> None:
        function, method = ("undo_release", "POST") if undo else ("plan_release", "GET")
        req = func.HttpRequest(method, f"http://localhost/api/{function}", params=query, body=body)
        response = user_function(function)(req)
        seen.append(response.status_code)
        assert response.mimetype == "application/json"
        payload = json.loads(response.get_body())
        assert response.status_code in ALLOWED, (function, query, body[:100], payload)
        if response.status_code >= 400:
            assert isinstance(payload.get("error"), str) and len(payload["error"]) < 2000
        if undo and response.status_code == 200 and payload["phase"] not in ("Rejected", None):
            # An undo started: let it finish (abort it) so the next example finds the scale set free.
            user_function("steer_rollout")(
                func.HttpRequest(
                    "POST",
                    "http://localhost/api/rollouts",
                    route_params={"id": payload["rolloutId"], "verb": "abort"},
                    body=b"",
                )
            )

    with caplog.at_level(logging.ERROR, logger="function_app"):
        one()
    assert [r.getMessage() for r in caplog.records if r.name == "function_app"] == []
    assert {200, 400} <= set(seen)


def test_the_plan_of_a_group_release_is_per_wave_and_target_and_warns_where_it_cannot_work(
    app: App, arm_emulator: Any, make_scale_set: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    handle = app.handle  # type: ignore[attr-defined]
    v0 = app.blobs.url_for("install_nginx.sh")
    small = make_scale_set(2, extension_settings={"fileUris": [v0], "commandToExecute": "bash install_nginx.sh"})
    gone = make_scale_set(
        3, extension_settings={"fileUris": [app.blobs.url_for("old.sh")], "commandToExecute": "bash old.sh"}
    )
    waves = [[handle], [small, gone]]
    document = {
        "defaultGroup": "web",
        "groups": [
            {
                "name": "web",
                "waveBakeSeconds": 30,
                "waves": [
                    {"targets": [{"resourceGroup": h.resource_group, "name": h.name} for h in wave]} for wave in waves
                ],
            }
        ],
    }
    app.blobs.upload("targets.json", json.dumps(document).encode())
    monkeypatch.setenv("TARGETS_CONFIG", "targets.json")
    monkeypatch.delenv("MAX_UNAVAILABLE", raising=False)
    before = table_rows(app)
    arm_emulator.clear_requests()

    status, plan = call("plan_release", "GET", {"release": "web/install_nginx.v1.sh"})

    assert status == 200, plan
    assert arm_writes(arm_emulator) == [] and table_rows(app) == before
    assert (plan["group"], plan["verdict"], plan["waveBakeSeconds"]) == ("web", "refused", 30)
    assert [[t["target"] for t in w["targets"]] for w in plan["waves"]] == [
        [f"{h.resource_group}:{h.name}".lower() for h in wave] for wave in waves
    ]
    first, (two, three) = plan["waves"][0]["targets"][0], plan["waves"][1]["targets"]
    assert first["verdict"] == "warnings" and [s["instances"] for s in first["steps"]] == [["0"], ["1"], ["2"]]
    assert two["verdict"] == "refused"
    [policy] = [f for f in two["findings"] if f["check"] == "policy"]
    assert policy["severity"] == "refuse"
    assert "MAX_UNAVAILABLE 20% of 2 instance(s) rounds up to 1 instance(s) (50% of the fleet)" in policy["reason"]
    assert three["verdict"] == "refused"
    assert any(f["check"] == "blob" and "blob old.sh" in f["reason"] for f in three["findings"])
    status, answer = call("plan_release", "GET", {"release": "v1"})
    assert status == 400 and answer["error"].startswith("no release v1 is recorded on this scale set")
    slowest = max(float(t["estimate"]["promotionSeconds"]) for t in (two, three))
    assert plan["promotionSeconds"] == round(float(first["estimate"]["promotionSeconds"]) + 30 + slowest)
