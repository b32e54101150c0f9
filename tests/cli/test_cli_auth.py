"""``vmss-canary`` against an app with ``HTTP_AUTH=entra`` behind App Service authentication (emulated by
emulator/easyauth.py in the local host): a token from ``--token`` or, for ``--scope``, from
``DefaultAzureCredential``; 401 without one, 403 naming the app role that is missing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError
from typer.testing import CliRunner

import vmss_canary_cli.app as cli
from emulator.easyauth import LocalTokenIssuer
from rollout.access import OPERATE_ROLE, READ_ROLE
from tests.cli.apiserver import FakeWorld, load_function_app, serve
from vmss_canary_cli.exits import ExitCode

runner = CliRunner()


@pytest.fixture
def entra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[tuple[FakeWorld, str, LocalTokenIssuer]]:
    world = FakeWorld(http_auth="entra")
    issuer = LocalTokenIssuer()
    module = load_function_app("entra", monkeypatch)
    with serve(world, monkeypatch, tmp_path, app_module=module, easy_auth=issuer.settings()) as host:
        yield world, host.url, issuer


def invoke(url: str, *args: str, **env: str) -> Any:
    result = runner.invoke(cli.app, list(args), env={"VMSS_CANARY_URL": url, "VMSS_CANARY_KEY": "", **env})
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exc_info
    return result


def test_a_token_reads_and_steers_by_its_app_roles(entra: tuple[FakeWorld, str, LocalTokenIssuer]) -> None:
    world, url, issuer = entra
    rid = world.release("install_nginx.v1.sh")
    nobody = invoke(url, "status")
    assert nobody.exit_code == ExitCode.AUTH and "401 Unauthorized" in nobody.stderr and "--token" in nobody.stderr
    reader = issuer.token(roles=[READ_ROLE], preferred_username="rita@contoso.com")
    assert invoke(url, "status", "--token", reader).exit_code == 0
    denied = invoke(url, "pause", rid, VMSS_CANARY_TOKEN=reader)
    assert denied.exit_code == ExitCode.AUTH and "403 Forbidden" in denied.stderr and OPERATE_ROLE in denied.stderr
    operator = issuer.token(roles=[OPERATE_ROLE], preferred_username="ada@contoso.com")
    paused = invoke(url, "pause", rid, "--reason", "by hand", VMSS_CANARY_TOKEN=operator)
    assert paused.exit_code == 0, paused.output
    events = world.store.list_events("rg:vmss", rid)
    assert any(e.actor.startswith("ada@contoso.com") and "by hand" in e.message for e in events)
    expired = issuer.token(roles=[OPERATE_ROLE], lifetime_seconds=-60)
    assert invoke(url, "status", "--token", expired).exit_code == ExitCode.AUTH


def test_scope_gets_the_token_from_default_azure_credential(
    entra: tuple[FakeWorld, str, LocalTokenIssuer], monkeypatch: pytest.MonkeyPatch
) -> None:
    import azure.identity

    world, url, issuer = entra
    asked: list[tuple[str, ...]] = []

    class Credential:
        def get_token(self, *scopes: str, **kwargs: object) -> AccessToken:
            asked.append(scopes)
            return AccessToken(issuer.token(roles=[READ_ROLE]), 0)

        def close(self) -> None:
            pass

    monkeypatch.setattr(azure.identity, "DefaultAzureCredential", Credential)
    result = invoke(url, "fleet", "--scope", "api://vmss-canary/.default")
    assert result.exit_code == 0, result.output
    assert asked == [("api://vmss-canary/.default",)]

    class NoSignIn(Credential):
        def get_token(self, *scopes: str, **kwargs: object) -> AccessToken:
            raise ClientAuthenticationError(
                "DefaultAzureCredential failed to retrieve a token from the included credentials."
                "\nAttempted credentials: ..."
            )

    monkeypatch.setattr(azure.identity, "DefaultAzureCredential", NoSignIn)
    failed = invoke(url, "fleet", "--scope", "api://vmss-canary/.default")
    assert failed.exit_code == ExitCode.AUTH
    assert failed.stderr.startswith("error: cannot get an Entra token for 'api://vmss-canary/.default'")
    assert "Traceback" not in failed.output and len(failed.stderr.splitlines()) == 1
