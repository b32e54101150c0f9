"""Who did it, through the local Functions host: function-key mode and entra mode (App Service
authentication emulated by emulator/easyauth.py in front of the host), over real HTTP, with the real
function app on Azurite and the HTTPS ARM emulator. The audit trail is read back over the API.
"""

from __future__ import annotations

import base64
import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import requests

from emulator.easyauth import LocalTokenIssuer
from emulator.funchost import LocalFunctionsHost
from rollout.access import OPERATE_ROLE, READ_ROLE
from tests.fixtures.appenv import app_under_test, fire_release_uploaded

pytestmark = pytest.mark.integration

ROOT = Path(__file__).parents[2]
HTTP_FUNCTIONS = ["list_rollouts", "get_rollout", "steer_rollout", "fleet_status", "list_targets"]
ADA = "ada@contoso.com"
RITA = "rita@contoso.com"


def load_function_app(http_auth: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """function_app.py imported afresh with HTTP_AUTH set, as a worker process starting with it would."""
    monkeypatch.setenv("HTTP_AUTH", http_auth)
    spec = importlib.util.spec_from_file_location(
        f"function_app_{http_auth.replace('-', '_')}", ROOT / "function_app.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def forged_principal(name: str, roles: list[str]) -> str:
    claims = [{"typ": "roles", "val": r} for r in roles] + [{"typ": "preferred_username", "val": name}]
    return base64.b64encode(json.dumps({"auth_typ": "aad", "claims": claims}).encode()).decode()


@pytest.fixture
def settings_env(
    azurite: Any, azurite_names: Any, make_scale_set: Any, arm_emulator: Any, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, Any]]:
    setup = app_under_test(
        azurite,
        azurite_names,
        make_scale_set,
        arm_emulator,
        monkeypatch,
        BAKE_SECONDS="3600",
        ROLLOUT_TICK_SCHEDULE="0 0 0 1 1 *",
    )
    yield {"env": setup.env, "blobs": setup.blobs, "container": setup.container}
    setup.blobs.close()


def start_release(module: ModuleType, ctx: dict[str, Any]) -> None:
    """The blob trigger of the same app, called as the host calls it: a rollout to look at and steer."""
    ctx["blobs"].upload("install_nginx.v1.sh", b"#!/bin/bash\necho v1\n")
    fire_release_uploaded(module.app, ctx["container"], "install_nginx.v1.sh")


def host_for(module: ModuleType, env: dict[str, str], tmp_path: Path, **kwargs: Any) -> LocalFunctionsHost:
    return LocalFunctionsHost(module.app, env=env, http_port=0, state_dir=tmp_path, functions=HTTP_FUNCTIONS, **kwargs)


def test_function_key_mode_records_function_key_whatever_a_client_claims(
    settings_env: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    module = load_function_app("function-key", monkeypatch)
    start_release(module, settings_env)
    with host_for(module, {**settings_env["env"], "HTTP_AUTH": "function-key"}, tmp_path) as host:
        key = {"x-functions-key": host.function_key}
        assert requests.get(f"{host.api_url}/rollouts", timeout=10).status_code == 401  # no key
        [rollout] = requests.get(f"{host.api_url}/rollouts", headers=key, timeout=10).json()["rollouts"]
        forged = {
            **key,
            "x-ms-client-principal-name": "the CEO",
            "X-MS-CLIENT-PRINCIPAL": forged_principal("the CEO", [OPERATE_ROLE]),
        }
        response = requests.post(f"{host.api_url}/rollouts/{rollout['id']}/pause", headers=forged, timeout=30)
        assert response.status_code == 200, response.text
        detail = requests.get(f"{host.api_url}/rollouts/{rollout['id']}", headers=key, timeout=10).json()
    actors = [e["actor"] for e in detail["events"] if "paused" in e["message"]]
    assert actors == ["function key"]


@pytest.fixture(params=["token", "mapped"])
def entra_host(
    request: pytest.FixtureRequest, settings_env: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[tuple[LocalFunctionsHost, LocalTokenIssuer, str]]:
    """The app in entra mode behind emulated App Service authentication, under each claim-name behaviour."""
    module = load_function_app("entra", monkeypatch)
    start_release(module, settings_env)
    issuer = LocalTokenIssuer()
    env = {**settings_env["env"], "HTTP_AUTH": "entra"}
    with host_for(module, env, tmp_path, easy_auth=issuer.settings(claim_names=request.param)) as host:
        operator = {"Authorization": f"Bearer {issuer.token(roles=[OPERATE_ROLE], preferred_username=ADA)}"}
        [rollout] = requests.get(f"{host.api_url}/rollouts", headers=operator, timeout=10).json()["rollouts"]
        yield host, issuer, rollout["id"]


def bearer(token: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **extra}


def test_entra_a_reader_reads_and_gets_a_403_naming_the_role_when_steering(
    entra_host: tuple[LocalFunctionsHost, LocalTokenIssuer, str],
) -> None:
    host, issuer, rid = entra_host
    reader = bearer(issuer.token(roles=[READ_ROLE], preferred_username=RITA))
    for path in ("rollouts", f"rollouts/{rid}", "fleet", "targets"):
        assert requests.get(f"{host.api_url}/{path}", headers=reader, timeout=30).status_code == 200, path
    response = requests.post(f"{host.api_url}/rollouts/{rid}/pause", headers=reader, timeout=30)
    assert response.status_code == 403
    assert response.headers["Content-Type"].startswith("application/json")
    assert RITA in response.json()["error"] and OPERATE_ROLE in response.json()["error"]
    # No role at all: not even reading.
    nobody = bearer(issuer.token(preferred_username="nobody@contoso.com"))
    response = requests.get(f"{host.api_url}/rollouts", headers=nobody, timeout=10)
    assert response.status_code == 403 and READ_ROLE in response.json()["error"]


def test_entra_an_operator_steers_and_is_recorded_by_name_no_function_key_needed(
    entra_host: tuple[LocalFunctionsHost, LocalTokenIssuer, str],
) -> None:
    host, issuer, rid = entra_host
    oid = "0c1e0000-0000-4000-8000-00000000ada0"
    operator = bearer(issuer.token(roles=[OPERATE_ROLE], preferred_username=ADA, oid=oid))
    response = requests.post(
        f"{host.api_url}/rollouts/{rid}/pause", headers=operator, json={"reason": "lunch"}, timeout=30
    )
    assert response.status_code == 200, response.text
    detail = requests.get(f"{host.api_url}/rollouts/{rid}", headers=operator, timeout=10).json()
    assert [e["actor"] for e in detail["events"] if "paused" in e["message"]] == [f"{ADA} (oid {oid})"]


def test_entra_forged_identity_headers_are_stripped(
    entra_host: tuple[LocalFunctionsHost, LocalTokenIssuer, str],
) -> None:
    host, issuer, rid = entra_host
    forged = {
        "X-MS-CLIENT-PRINCIPAL": forged_principal("the CEO", [OPERATE_ROLE]),
        "x-ms-client-principal-name": "the CEO",
        "X-MS-CLIENT-PRINCIPAL-ID": "ceo",
    }
    # A reader's valid token plus forged operator headers: still a reader.
    reader = bearer(issuer.token(roles=[READ_ROLE], preferred_username=RITA), **forged)
    response = requests.post(f"{host.api_url}/rollouts/{rid}/pause", headers=reader, timeout=30)
    assert response.status_code == 403 and RITA in response.json()["error"]
    # Forged headers alone: no token, so App Service authentication answers 401 before the app runs.
    assert requests.post(f"{host.api_url}/rollouts/{rid}/pause", headers=forged, timeout=30).status_code == 401


@pytest.mark.parametrize("problem", ["none", "garbage", "other key", "expired", "wrong audience", "wrong issuer"])
def test_entra_no_or_an_invalid_token_is_a_401(
    entra_host: tuple[LocalFunctionsHost, LocalTokenIssuer, str], problem: str
) -> None:
    host, issuer, _ = entra_host
    tokens = {
        "none": None,
        "garbage": "not.a.jwt",
        "other key": LocalTokenIssuer(audience=issuer.audience, issuer=issuer.issuer).token(roles=[OPERATE_ROLE]),
        "expired": issuer.token(roles=[OPERATE_ROLE], lifetime_seconds=-60),
        "wrong audience": issuer.token(roles=[OPERATE_ROLE], audience="api://someone-else"),
        "wrong issuer": issuer.token(roles=[OPERATE_ROLE], issuer="https://login.example/other/v2.0"),
    }
    token = tokens[problem]
    headers = bearer(token) if token else {}
    assert requests.get(f"{host.api_url}/rollouts", headers=headers, timeout=10).status_code == 401


def test_entra_with_anonymous_calls_allowed_the_app_itself_answers_401(
    settings_env: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    module = load_function_app("entra", monkeypatch)
    issuer = LocalTokenIssuer()
    env = {**settings_env["env"], "HTTP_AUTH": "entra"}
    with host_for(module, env, tmp_path, easy_auth=issuer.settings(require_authentication=False)) as host:
        forged = {"X-MS-CLIENT-PRINCIPAL": forged_principal("the CEO", [OPERATE_ROLE])}
        response = requests.get(f"{host.api_url}/rollouts", headers=forged, timeout=10)
    assert response.status_code == 401
    assert "not signed in" in response.json()["error"]


def test_entra_without_platform_authentication_fails_closed_instead_of_trusting_headers(
    settings_env: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    module = load_function_app("entra", monkeypatch)
    env = {**settings_env["env"], "HTTP_AUTH": "entra"}
    with host_for(module, env, tmp_path) as host:  # no App Service authentication in front
        forged = {"X-MS-CLIENT-PRINCIPAL": forged_principal("the CEO", [OPERATE_ROLE])}
        response = requests.get(f"{host.api_url}/rollouts", headers=forged, timeout=10)
    assert response.status_code == 500
    assert "misconfigured" in response.json()["error"] and "WEBSITE_AUTH_ENABLED" in response.json()["error"]


def test_the_easyauth_cli_mints_tokens_the_emulation_accepts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from emulator.easyauth import EasyAuth, EasyAuthSettings, main

    assert main(["keygen", str(tmp_path)]) == 0
    assert (tmp_path / "key.pem").stat().st_mode & 0o777 == 0o600
    capsys.readouterr()
    assert main(["token", "--key", str(tmp_path / "key.pem"), "--role", READ_ROLE, "--name", ADA]) == 0
    token = capsys.readouterr().out.strip()
    auth = EasyAuth(
        EasyAuthSettings(
            issuer=LocalTokenIssuer().issuer,
            audiences=(LocalTokenIssuer().audience,),
            public_key_pem=(tmp_path / "key.pub.pem").read_bytes(),
        )
    )
    verdict = auth.apply({"Authorization": f"Bearer {token}", "X-MS-CLIENT-PRINCIPAL-NAME": "forged"})
    assert verdict.status is None
    assert verdict.headers["X-MS-CLIENT-PRINCIPAL-NAME"] == ADA
    principal = json.loads(base64.b64decode(verdict.headers["X-MS-CLIENT-PRINCIPAL"]))
    assert {"typ": "roles", "val": READ_ROLE} in principal["claims"]
    assert set(principal) == {"auth_typ", "claims", "name_typ", "role_typ"}
