"""The function app's own trigger functions, end to end over real sockets: Azurite for blobs and
tables, the ARM emulator over HTTPS for compute and network, the real Azure SDK clients, and real
HTTP probes of every emulated instance. The functions are called as the host would call them.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import azure.functions as func
import pytest
import requests
from azure.functions.timer import TimerRequest

import function_app
from emulator import appindex
from rollout.adapters.blobs import ReleaseBlobs
from tests.fixtures.appenv import app_under_test, drain_tick_queue, fire_release_uploaded
from tests.fixtures.emulator import SUBSCRIPTION_ID

pytestmark = pytest.mark.integration

V0 = b"#!/bin/bash\napt-get update\napt-get install -y nginx\n"


def user_function(name: str) -> Callable[..., Any]:
    return appindex.user_function(function_app.app, name)  # type: ignore[no-any-return]


class App:
    """Calls the trigger functions the way the Functions host does."""

    def __init__(self, blobs: ReleaseBlobs, container: str, env: dict[str, str]) -> None:
        self.blobs = blobs
        self.container = container
        self.env = env

    def upload(self, name: str, content: bytes) -> None:
        self.blobs.upload(name, content)
        # What the worker hands the function: a BlobClient built by the blob extension's own converter
        # from the host's binding data (connection name, container, blob name); nothing downloaded.
        fire_release_uploaded(function_app.app, self.container, name)

    def tick(self) -> None:
        """The timer puts a message per target with work on the tick queue; the queue trigger runs each."""
        user_function("advance_rollouts")(timer=TimerRequest(past_due=False))
        drain_tick_queue(function_app.app, self.env)

    def http(self, function: str, method: str, route: dict[str, str], body: Any = None) -> tuple[int, Any]:
        raw = json.dumps(body).encode() if body is not None else b""
        req = func.HttpRequest(method, "http://localhost/api/rollouts", route_params=route, body=raw)
        response = user_function(function)(req)
        return response.status_code, json.loads(response.get_body())

    def rollouts(self) -> list[dict[str, Any]]:
        status, payload = self.http("list_rollouts", "GET", {})
        assert status == 200
        return payload["rollouts"]  # type: ignore[no-any-return]

    def rollout(self, rollout_id: str) -> dict[str, Any]:
        status, payload = self.http("get_rollout", "GET", {"id": rollout_id})
        assert status == 200, payload
        return payload  # type: ignore[no-any-return]

    def tick_until(self, rollout_id: str, *phases: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            detail = self.rollout(rollout_id)
            if detail["phase"] in phases:
                return detail
            self.tick()
            time.sleep(0.15)
        raise AssertionError(f"not {phases} within {timeout} s: {self.rollout(rollout_id)}")


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
        size=5,
        v0=V0,
        BAKE_SECONDS="1",
        FAILURE_THRESHOLD="2",
        PROBE_BODY_PATTERN="Welcome to nginx",
    )
    blobs, container, handle = setup.blobs, setup.container, setup.handle
    application = App(blobs, container, setup.env)
    application.handle = handle  # type: ignore[attr-defined]
    yield application
    blobs.close()


def pages(handle: Any) -> dict[str, str]:
    return {
        iid: requests.get(f"http://{address}:{handle.port}/", timeout=2).text
        for iid, address in sorted(handle.addresses().items())
    }


def upgrade_calls(emulator: Any) -> list[list[str]]:
    return [r.body["instanceIds"] for r in emulator.requests("POST", "/manualupgrade")]


def test_a_release_blob_rolls_out_to_succeeded_with_one_extension_write_and_one_call_per_batch(
    app: App, arm_emulator: Any
) -> None:
    handle = app.handle  # type: ignore[attr-defined]
    arm_emulator.clear_requests()
    app.upload("install_nginx.v1.sh", b"#!/bin/bash\necho v1\n")

    [summary] = app.rollouts()
    assert summary["phase"] == "Canary" and summary["version"] == 1
    # The blob trigger itself wrote the extension and upgraded exactly one instance: the canary.
    assert len(arm_emulator.requests("PUT", "/extensions/CustomScript")) == 1
    assert upgrade_calls(arm_emulator) == [["0"]]

    detail = app.tick_until(summary["id"], "Succeeded")

    calls = upgrade_calls(arm_emulator)
    assert calls[0] == ["0"] and len(calls) == 5  # canary + 4 batches of 20% of 5
    assert Counter(i for call in calls for i in call) == Counter({"0": 1, "1": 1, "2": 1, "3": 1, "4": 1})
    assert len(arm_emulator.requests("PUT", "/extensions/")) == 1
    assert arm_emulator.requests("PATCH") == []  # no other model write
    # What the instances really serve now.
    assert all("install_nginx.v1.sh" in page for page in pages(handle).values())
    assert [e["kind"] for e in detail["events"]].count("BatchSucceeded") == 4
    assert detail["baseline"]["extension"]["settings"]["commandToExecute"] == "bash install_nginx.sh"
    listing = app.http("list_rollouts", "GET", {})[1]
    assert listing["target"]["stableVersion"] == 1 and listing["target"]["activeRolloutId"] is None
    status, fleet = app.http("fleet_status", "GET", {})
    assert status == 200
    assert fleet["summary"] == {
        "instances": 5,
        "onLatestModel": 5,
        "healthy": 5,
        "unhealthy": 0,
        "updating": 0,
        "failed": 0,
    }
    assert fleet["model"]["extension"]["settings"]["fileUris"][0].endswith("/install_nginx.v1.sh")
    assert {i["privateIp"] for i in fleet["instances"]} == set(handle.addresses().values())
    # Protected settings went to ARM but are never echoed back by the API.
    put = arm_emulator.requests("PUT", "/extensions/")[0]
    assert "protectedSettings" in json.dumps(put.body)
    assert "managedIdentity" not in json.dumps(detail)


def test_a_failing_release_is_rolled_back_through_the_timer(app: App, arm_emulator: Any) -> None:
    handle = app.handle  # type: ignore[attr-defined]
    arm_emulator.fail_release(handle.resource_group, handle.name, r"install_nginx\.v2\.sh", mode="extension")
    app.upload("install_nginx.v2.sh", b"#!/bin/bash\nexit 1\n")
    [summary] = app.rollouts()
    detail = app.tick_until(summary["id"], "RolledBack")
    assert "extension failed" in detail["rollbackReason"]
    # Only the canary took v2, so only the canary was moved back, in one call.
    assert upgrade_calls(arm_emulator) == [["0"], ["0"]]
    assert all("install_nginx.v2.sh" not in page for page in pages(handle).values())
    model = arm_emulator.describe(handle.resource_group, handle.name)
    assert "install_nginx.sh" in json.dumps(model) and "install_nginx.v2.sh" not in json.dumps(model)


def test_an_operator_aborts_over_http_and_bad_requests_get_clear_errors(app: App, arm_emulator: Any) -> None:
    app.upload("install_nginx.v3.sh", b"#!/bin/bash\necho v3\n")
    [summary] = app.rollouts()
    rid = summary["id"]

    assert app.http("steer_rollout", "POST", {"id": rid, "verb": "abort"}, {"rollback": "yes"})[0] == 400
    status, payload = app.http("steer_rollout", "POST", {"id": rid, "verb": "abort"}, {"force": True})
    assert status == 400 and "unknown field(s) force" in payload["error"]
    assert app.http("steer_rollout", "POST", {"id": rid, "verb": "explode"})[0] == 404
    assert app.http("steer_rollout", "POST", {"id": "nope", "verb": "abort"})[0] == 404
    assert app.http("get_rollout", "GET", {"id": "nope"})[0] == 404

    status, payload = app.http(
        "steer_rollout", "POST", {"id": rid, "verb": "abort"}, {"rollback": True, "reason": "smoke test"}
    )
    assert status == 200 and payload["phase"] in ("RollingBack", "RolledBack")
    detail = app.tick_until(rid, "RolledBack")
    assert "smoke test" in detail["rollbackReason"]
    status, payload = app.http("steer_rollout", "POST", {"id": rid, "verb": "abort"})
    assert status == 409 and "already RolledBack" in payload["error"]


def test_names_that_are_not_releases_are_ignored_and_bad_content_is_rejected(app: App, arm_emulator: Any) -> None:
    app.upload("README.md", b"# notes\n")
    assert app.rollouts() == []
    app.upload("install_nginx.v4.sh", b"")
    [rejected] = app.rollouts()
    assert rejected["phase"] == "Rejected" and rejected["reason"] == "the script is empty"
    calls = len(arm_emulator.requests())
    app.upload("install_nginx.v5.sh", b"#!/bin/bash\nif true; then\n  apt-get install -y nginx\n")
    broken = next(r for r in app.rollouts() if r["version"] == 5)
    assert broken["phase"] == "Rejected"
    assert broken["reason"].startswith("syntax error (bash -n): install_nginx.v5.sh: line 4")
    assert len(arm_emulator.requests()) == calls  # nothing reached the scale set


def test_an_image_release_changes_the_image_reference_and_rolls_out_the_same_way(
    app: App, arm_emulator: Any, make_scale_set: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = (
        f"/subscriptions/{SUBSCRIPTION_ID}/resourceGroups/rg-canary/providers/Microsoft.Compute/images/nginx-base-image"
    )
    handle = make_scale_set(
        3,
        image_id=base,
        extension_settings={
            "fileUris": ["https://x/init/install_nginx.sh"],
            "commandToExecute": "bash install_nginx.sh",
        },
    )
    monkeypatch.setenv("VMSS_NAME", handle.name)
    updated = base.replace("nginx-base-image", "nginx-updated-image")
    arm_emulator.add_image(updated)  # it exists: pre-flight reads it (tests/integration/test_image_access.py)
    arm_emulator.clear_requests()
    app.upload("install_nginx.v5.image.json", json.dumps({"imageId": updated}).encode())
    [summary] = app.rollouts()
    assert summary["kind"] == "image"
    detail = app.tick_until(summary["id"], "Succeeded")
    assert detail["baseline"] == {"imageId": base}
    patches = arm_emulator.requests("PATCH")
    assert len(patches) == 1 and updated in json.dumps(patches[0].body)
    assert arm_emulator.requests("PUT", "/extensions/") == []  # the script stays as it was
    assert all("nginx-updated-image" in page for page in pages(handle).values())


def test_pause_holds_the_rollout_and_resume_finishes_it(app: App, arm_emulator: Any) -> None:
    app.upload("install_nginx.v6.sh", b"#!/bin/bash\necho v6\n")
    [summary] = app.rollouts()
    rid = summary["id"]
    app.tick_until(rid, "Baking", "Promoting")
    status, payload = app.http("steer_rollout", "POST", {"id": rid, "verb": "pause"}, {"reason": "lunch"})
    assert status == 200 and payload["phase"] == "Paused"
    calls = len(upgrade_calls(arm_emulator))
    for _ in range(5):
        app.tick()
        time.sleep(0.3)
    assert app.rollout(rid)["phase"] == "Paused" and len(upgrade_calls(arm_emulator)) == calls
    assert app.http("steer_rollout", "POST", {"id": rid, "verb": "pause"})[0] == 409
    assert app.http("steer_rollout", "POST", {"id": rid, "verb": "resume"})[0] == 200
    detail = app.tick_until(rid, "Succeeded")
    assert [e["actor"] for e in detail["events"] if "paused" in e["message"]] == ["function key"]
