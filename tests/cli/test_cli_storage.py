"""``vmss-canary release`` uploads through the real Storage SDK: to Azurite with a connection string, and
over HTTPS with a bearer token from ``DefaultAzureCredential`` (here Azurite's OAuth mode and a credential
minting tokens it accepts, as tests/integration/test_blobs.py does for the app's own identity)."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
from azure.storage.blob import BlobServiceClient
from typer.testing import CliRunner

import vmss_canary_cli.app as cli
from tests.fixtures.azurite import AzuriteNames, AzuriteService, FakeAzureAdCredential
from vmss_canary_cli.exits import ExitCode

pytestmark = pytest.mark.integration
runner = CliRunner()


def release(*args: str, env: dict[str, str] | None = None) -> Any:
    result = runner.invoke(cli.app, ["release", *args], env=env)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exc_info
    return result


def script(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / name
    path.write_text(f"#!/bin/bash\n{body}\n")
    return path


@pytest.fixture
def container(azurite: AzuriteService, azurite_names: AzuriteNames) -> str:
    with BlobServiceClient.from_connection_string(azurite.connection_string) as service:
        service.create_container(azurite_names.container)
    return azurite_names.container


def blob(azurite: AzuriteService, container: str, name: str) -> bytes:
    with BlobServiceClient.from_connection_string(azurite.connection_string) as service:
        return bytes(service.get_blob_client(container, name).download_blob().readall())


def test_upload_with_a_connection_string_never_replaces_a_release(
    azurite: AzuriteService, container: str, tmp_path: Path
) -> None:
    env = {"VMSS_CANARY_STORAGE_CONNECTION_STRING": azurite.connection_string, "VMSS_CANARY_CONTAINER": container}
    first = script(tmp_path, "install_nginx.v1.sh", "echo one")
    result = release(str(first), "-o", "json", env=env)
    assert result.exit_code == 0, result.output
    assert '"upload": "uploaded"' in result.stdout
    assert blob(azurite, container, "install_nginx.v1.sh") == first.read_bytes()

    again = release(str(first), env=env)
    assert again.exit_code == 0 and "already uploaded" in again.stdout

    other = tmp_path / "other"
    other.mkdir()
    changed = script(other, "install_nginx.v1.sh", "echo changed")
    refused = release(str(changed), env=env)
    assert refused.exit_code == ExitCode.BAD_INPUT
    assert "already exists with other content" in refused.stderr and "(v2)" in refused.stderr
    assert blob(azurite, container, "install_nginx.v1.sh") == first.read_bytes()

    grouped = release(str(first), "--group", "web", env=env)
    assert grouped.exit_code == 0 and blob(azurite, container, "web/install_nginx.v1.sh") == first.read_bytes()


def test_a_missing_container_and_unreachable_storage_are_told_apart(azurite: AzuriteService, tmp_path: Path) -> None:
    path = script(tmp_path, "install_nginx.v1.sh", "echo one")
    missing = release(
        str(path), "--container", "nosuchcontainer", "--storage-connection-string", azurite.connection_string
    )
    assert missing.exit_code == ExitCode.BAD_INPUT and "container 'nosuchcontainer' not found" in missing.stderr
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    down = azurite.connection_string.replace(str(azurite.blob_endpoint.split(":")[2].split("/")[0]), str(port))
    assert str(port) in down
    unreachable = release(str(path), "--storage-connection-string", down)
    assert unreachable.exit_code == ExitCode.UNREACHABLE and "cannot reach the storage account" in unreachable.stderr
    bad = release(str(path), "--storage-connection-string", "not a connection string")
    assert bad.exit_code == ExitCode.BAD_INPUT and "storage settings are not usable" in bad.stderr
    both = release(str(path), "--storage-connection-string", "x", "--storage-account-url", "https://a")
    assert both.exit_code == ExitCode.BAD_INPUT and "exactly one" in both.stderr


class _Credential(FakeAzureAdCredential):
    made: list[_Credential] = []

    def __init__(self, expired: bool = False) -> None:
        super().__init__(expired=expired)
        _Credential.made.append(self)

    def close(self) -> None:
        pass


def test_upload_with_an_account_url_uses_default_azure_credential_over_https(
    azurite_oauth: AzuriteService, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import azure.identity

    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(azurite_oauth.ca_file))  # trust the local Azurite's certificate
    monkeypatch.setattr(azure.identity, "DefaultAzureCredential", _Credential)
    _Credential.made.clear()
    with BlobServiceClient(azurite_oauth.blob_endpoint, credential=FakeAzureAdCredential()) as service:
        service.create_container("clireleases")
    path = script(tmp_path, "install_nginx.v3.sh", "echo three")
    args = [str(path), "--container", "clireleases", "--storage-account-url", azurite_oauth.blob_endpoint]
    result = release(*args)
    assert result.exit_code == 0, result.output
    assert _Credential.made and _Credential.made[0].scopes_seen[0] == ("https://storage.azure.com/.default",)

    monkeypatch.setattr(azure.identity, "DefaultAzureCredential", lambda: _Credential(expired=True))
    other = tmp_path / "x"
    other.mkdir()
    refused = release(str(script(other, "install_nginx.v4.sh", "echo four")), *args[1:])
    assert refused.exit_code == ExitCode.AUTH and "storage account" in refused.stderr, refused.output
