"""The group release routes over real HTTP through the local Functions host: function keys, and entra mode
behind the emulated App Service authentication (a reader reads, only an operator steers, and the group's
trail records who), with the real function app on Azurite and the HTTPS ARM emulator."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests

from emulator.easyauth import LocalTokenIssuer
from emulator.funchost import LocalFunctionsHost
from rollout.access import OPERATE_ROLE, READ_ROLE
from rollout.releases import build_release, parse_release_name
from rollout.targets import DEFAULT_GROUP
from tests.integration.test_funchost_auth import ADA, RITA, bearer, load_function_app, settings_env

pytestmark = pytest.mark.integration
__all__ = ["settings_env"]  # the fixture, shared with tests/integration/test_funchost_auth.py

GROUP_FUNCTIONS = ["list_group_releases", "get_group_release", "steer_group_release", "steer_group_target"]


def receive(module: Any, ctx: dict[str, Any]) -> tuple[str, str]:
    """A release for the default group (the blob is in the container); its id and the group's one target."""
    name = parse_release_name("install_nginx.v1.sh")
    assert not isinstance(name, str)
    content = b"#!/bin/bash\necho v1\n"
    url = ctx["blobs"].upload(name.blob_name, content)
    groups = module._groups()
    outcome = groups.receive_release(DEFAULT_GROUP, build_release(name, url, content))
    assert outcome.release_id is not None, outcome
    return outcome.release_id, groups.config.targets()[0].key


def test_function_keys_guard_the_group_routes(
    settings_env: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    module = load_function_app("function-key", monkeypatch)
    release_id, target = receive(module, settings_env)
    env = {**settings_env["env"], "HTTP_AUTH": "function-key"}
    with LocalFunctionsHost(module.app, env=env, http_port=0, state_dir=tmp_path, functions=GROUP_FUNCTIONS) as host:
        assert requests.get(f"{host.api_url}/releases", timeout=10).status_code == 401
        key = {"x-functions-key": host.function_key}
        listing = requests.get(f"{host.api_url}/releases", headers=key, timeout=10).json()
        assert [r["id"] for r in listing["releases"]] == [release_id]
        url = f"{host.api_url}/releases/{release_id}/targets/{quote(target)}/pause"
        response = requests.post(url, headers=key, json={"reason": "lunch"}, timeout=30)
        assert response.status_code == 200, response.text
        detail = requests.get(f"{host.api_url}/releases/{release_id}", headers=key, timeout=10).json()
    assert detail["targets"][0]["rollout"]["phase"] == "Paused"
    assert [(e["actor"], e["target"]) for e in detail["events"] if e["kind"] == "TargetSteered"] == [
        ("function key", target)
    ]


def test_entra_a_reader_reads_group_releases_and_only_an_operator_steers_them(
    settings_env: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    module = load_function_app("entra", monkeypatch)
    release_id, target = receive(module, settings_env)
    issuer = LocalTokenIssuer()
    env = {**settings_env["env"], "HTTP_AUTH": "entra"}
    with LocalFunctionsHost(
        module.app, env=env, http_port=0, state_dir=tmp_path, functions=GROUP_FUNCTIONS, easy_auth=issuer.settings()
    ) as host:
        reader = bearer(issuer.token(roles=[READ_ROLE], preferred_username=RITA))
        for path in ("releases", f"releases/{release_id}"):
            assert requests.get(f"{host.api_url}/{path}", headers=reader, timeout=30).status_code == 200, path
        for path in (f"releases/{release_id}/pause", f"releases/{release_id}/targets/{quote(target)}/pause"):
            response = requests.post(f"{host.api_url}/{path}", headers=reader, timeout=30)
            assert response.status_code == 403 and OPERATE_ROLE in response.json()["error"], path
        operator = bearer(issuer.token(roles=[OPERATE_ROLE], preferred_username=ADA))
        response = requests.post(f"{host.api_url}/releases/{release_id}/pause", headers=operator, timeout=30)
        assert response.status_code == 200 and response.json()["phase"] == "Paused", response.text
        detail = requests.get(f"{host.api_url}/releases/{release_id}", headers=reader, timeout=10).json()
    paused = [e for e in detail["events"] if e["kind"] == "PhaseChanged" and "paused by" in e["message"]]
    assert len(paused) == 1 and ADA in paused[0]["actor"]
