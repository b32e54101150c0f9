"""Targets and groups through the function app: the targets document in the release container on Azurite
(TARGETS_CONFIG), read with the app's own blob client and re-read when its ETag changes; releases routed by
folder to their group's first wave on the HTTPS ARM emulator; GET /api/targets; a bad document or an unknown
group refused and recorded, never a 500."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import azure.functions as func
import pytest

import function_app
from tests.fixtures.appenv import app_under_test, fire_release_uploaded
from tests.fixtures.emulator import SUBSCRIPTION_ID
from tests.integration.test_function_app_rollout import user_function

pytestmark = pytest.mark.integration


class Targets:
    def __init__(self, setup: Any, extra: list[Any]) -> None:
        self.blobs, self.container, self.handle = setup.blobs, setup.container, setup.handle
        self.extra = extra

    def upload(self, name: str, content: bytes, *, overwrite: bool = False) -> None:
        self.blobs.upload(name, content, overwrite=overwrite)
        fire_release_uploaded(function_app.app, self.container, name)

    def get(self, function: str, **route: str) -> tuple[int, Any]:
        req = func.HttpRequest("GET", "http://localhost/api/targets", route_params=route, body=b"")
        response = user_function(function)(req)
        assert response.mimetype == "application/json"
        return response.status_code, json.loads(response.get_body())

    def targets(self) -> dict[str, Any]:
        status, payload = self.get("list_targets")
        assert status == 200, payload
        return payload  # type: ignore[no-any-return]


def document(*wave_sets: list[Any], default: str = "web") -> bytes:
    waves = [{"targets": [{"resourceGroup": h.resource_group, "name": h.name} for h in wave]} for wave in wave_sets]
    return json.dumps(
        {"defaultGroup": default, "groups": [{"name": "web", "waveBakeSeconds": 30, "waves": waves}]}
    ).encode()


@pytest.fixture
def app(
    azurite: Any, azurite_names: Any, make_scale_set: Any, arm_emulator: Any, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Targets]:
    # 3 instances: the default MAX_UNAVAILABLE (20%, shown below) is refused by pre-flight on 2.
    setup = app_under_test(
        azurite, azurite_names, make_scale_set, arm_emulator, monkeypatch, size=3, BAKE_SECONDS="3600"
    )
    v0 = setup.blobs.url_for("install_nginx.sh")
    extra = [
        make_scale_set(3, extension_settings={"fileUris": [v0], "commandToExecute": "bash install_nginx.sh"})
        for _ in range(2)
    ]
    yield Targets(setup, extra)
    setup.blobs.close()


def test_without_a_document_the_vmss_target_is_the_default_group(app: Targets) -> None:
    payload = app.targets()
    assert payload["ok"] is True and payload["errors"] == [] and payload["defaultGroup"] == "default"
    assert payload["source"] == "settings"
    [group] = payload["groups"]
    [wave] = group["waves"]
    [target] = wave["targets"]
    assert target["key"] == f"{app.handle.resource_group}:{app.handle.name}".lower()
    assert target["subscription"] == SUBSCRIPTION_ID and target["policy"]["BAKE_SECONDS"] == 3600
    assert target["policy"]["MAX_UNAVAILABLE"] == "20%" and target["probe"]["PROBE_PORT"] == app.handle.port
    empty = {"activeRolloutId": None, "activePhase": None, "stableVersion": None, "stableRelease": None}
    assert target["state"] == empty
    app.upload("install_nginx.v1.sh", b"#!/bin/bash\necho v1\n")
    state = app.targets()["groups"][0]["waves"][0]["targets"][0]["state"]
    assert state["activePhase"] == "Canary" and state["activeRolloutId"].startswith("install_nginx-v1-")


def test_the_document_routes_releases_by_folder_to_the_first_wave(
    app: Targets, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = app.extra
    app.blobs.upload("targets.json", document([app.handle, first], [second]))
    monkeypatch.setenv("TARGETS_CONFIG", "targets.json")
    payload = app.targets()
    assert payload["ok"] is True and payload["source"] == f"blob {app.container}/targets.json"
    [web] = payload["groups"]
    assert web["waveBakeSeconds"] == 30 and web["onFailure"] == "halt"
    assert [[t["name"] for t in w["targets"]] for w in web["waves"]] == [[app.handle.name, first.name], [second.name]]

    app.upload("web/install_nginx.v2.sh", b"#!/bin/bash\necho v2\n")
    wave1, wave2 = app.targets()["groups"][0]["waves"]
    assert [t["state"]["activePhase"] for t in wave1["targets"]] == ["Canary", "Canary"]
    assert wave2["targets"][0]["state"]["activePhase"] is None  # the next wave is the wave engine's
    # A rollout of another target than VMSS_* is found by id all the same.
    rid = wave1["targets"][1]["state"]["activeRolloutId"]
    status, detail = app.get("get_rollout", id=rid)
    assert status == 200 and detail["release"]["group"] == "web" and detail["release"]["name"] == "install_nginx.v2.sh"
    assert detail["release"]["url"].endswith(f"/{app.container}/web/install_nginx.v2.sh")

    # The default group is named by the document: a release at the top level goes to "web" too.
    app.upload("other.v1.sh", b"#!/bin/bash\necho other\n")
    status, rollouts = app.get("list_rollouts")
    assert status == 200 and {r["release"] for r in rollouts["rollouts"]} >= {"other.v1.sh", "install_nginx.v2.sh"}


def test_an_unknown_group_or_a_bad_document_is_refused_recorded_and_shown(
    app: Targets, monkeypatch: pytest.MonkeyPatch
) -> None:
    app.blobs.upload("targets.yaml", b"groups:\n  - name: Web\n    waves: [{targets: []}]\n")
    monkeypatch.setenv("TARGETS_CONFIG", "targets.yaml")
    payload = app.targets()
    assert payload["ok"] is False and payload["groups"] == []
    assert any("groups[0].name: 'Web' is not a group name" in e for e in payload["errors"])
    assert any("groups[0].waves[0].targets: must list at least one target" in e for e in payload["errors"])

    app.upload("install_nginx.v5.sh", b"#!/bin/bash\necho v5\n")
    [unrouted] = app.targets()["unrouted"]
    assert unrouted["phase"] == "Rejected" and "cannot be used" in unrouted["reason"]
    status, detail = app.get("get_rollout", id=unrouted["id"])
    assert status == 200 and "'Web' is not a group name" in detail["reason"]
    # Nothing reached the scale set.
    status, rollouts = app.get("list_rollouts")
    assert status == 200 and rollouts["rollouts"] == []

    # Fixed in place (a new ETag): read again, and a release to a group that does not exist is refused too.
    app.blobs.upload("targets.yaml", document([app.handle]), overwrite=True)
    assert app.targets()["ok"] is True
    app.upload("payments/install_nginx.v6.sh", b"#!/bin/bash\necho v6\n")
    reasons = [r["reason"] for r in app.targets()["unrouted"]]
    assert "no group 'payments' is configured (groups: web)" in reasons[0]
    assert [r["group"] for r in app.targets()["unrouted"]] == ["payments", None]


def test_a_document_that_does_not_exist_is_an_error_not_a_500(app: Targets, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TARGETS_CONFIG", "missing.yaml")
    payload = app.targets()
    assert payload["ok"] is False
    assert payload["errors"] == [f"the targets document {app.container}/missing.yaml (TARGETS_CONFIG) does not exist"]


def test_tagged_scale_sets_form_a_group_releases_can_go_to(
    app: Targets, make_scale_set: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    v0 = app.blobs.url_for("install_nginx.sh")
    extension = {"fileUris": [v0], "commandToExecute": "bash install_nginx.sh"}
    canary = make_scale_set(3, extension_settings=extension, tags={"canary-group": "shop", "canary-wave": "1"})
    rest = make_scale_set(3, extension_settings=extension, tags={"canary-group": "shop", "canary-wave": "2"})
    monkeypatch.setenv("TARGETS_DISCOVERY_SUBSCRIPTIONS", SUBSCRIPTION_ID)
    payload = app.targets()
    assert payload["ok"] is True, payload["errors"]
    assert payload["source"] == f"tags canary-group/canary-wave in subscription(s) {SUBSCRIPTION_ID}"
    [shop] = payload["groups"]
    assert shop["name"] == "shop"
    assert [[t["name"] for t in w["targets"]] for w in shop["waves"]] == [[canary.name], [rest.name]]
    app.upload("shop/install_nginx.v1.sh", b"#!/bin/bash\necho shop\n")
    wave1, wave2 = app.targets()["groups"][0]["waves"]
    assert (
        wave1["targets"][0]["state"]["activePhase"] == "Canary" and wave2["targets"][0]["state"]["activePhase"] is None
    )
    # The VMSS_* scale set is untagged: with discovery alone it is no target, and the default group does not exist.
    app.upload("install_nginx.v1.sh", b"#!/bin/bash\necho top\n")
    [refused] = app.targets()["unrouted"]
    assert "default group 'default', which is not configured (groups: shop)" in refused["reason"]
