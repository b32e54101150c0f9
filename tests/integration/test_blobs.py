"""ReleaseBlobs against a real Azurite through the real azure-storage-blob SDK."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator

import pytest
from azure.storage.blob import BlobServiceClient

from rollout.adapters.blobs import (
    BlobExistsError,
    InvalidBlobNameError,
    PublicContainerError,
    ReleaseBlobs,
    ReleaseTooLargeError,
    validate_blob_name,
)
from rollout.ports import AlreadyExistsError, NotFoundError
from tests.fixtures.azurite import AzuriteNames, AzuriteService, FakeAzureAdCredential

pytestmark = pytest.mark.integration

SCRIPT = b"#!/bin/bash\nset -euo pipefail\napt-get install -y nginx\necho 'v7' > /var/www/html/index.html\n"


@pytest.fixture
def sdk(azurite: AzuriteService) -> Iterator[BlobServiceClient]:
    """A plain SDK client, to check what the adapter did independently of the adapter."""
    with BlobServiceClient.from_connection_string(azurite.connection_string) as client:
        yield client


@pytest.fixture
def blobs(azurite: AzuriteService, azurite_names: AzuriteNames) -> Iterator[ReleaseBlobs]:
    with ReleaseBlobs.from_connection_string(azurite.connection_string, azurite_names.container) as adapter:
        adapter.ensure_container()
        yield adapter


def test_container_is_created_private(blobs: ReleaseBlobs, sdk: BlobServiceClient) -> None:
    props = sdk.get_container_client(blobs.container_name).get_container_properties()
    assert props.name == blobs.container_name
    assert props.public_access is None


def test_ensure_container_twice_is_fine(blobs: ReleaseBlobs, sdk: BlobServiceClient) -> None:
    blobs.ensure_container()
    assert sdk.get_container_client(blobs.container_name).get_container_properties().public_access is None


@pytest.mark.parametrize("access", ["blob", "container"])
def test_existing_public_container_is_refused_by_name(
    azurite: AzuriteService, azurite_names: AzuriteNames, sdk: BlobServiceClient, access: str
) -> None:
    name = f"{azurite_names.container}-{access}"
    sdk.create_container(name, public_access=access)

    with (
        ReleaseBlobs.from_connection_string(azurite.connection_string, name) as adapter,
        pytest.raises(PublicContainerError, match=name) as raised,
    ):
        adapter.ensure_container()
    assert access in str(raised.value)
    # The adapter refused; it did not quietly change the operator's setting either.
    assert sdk.get_container_client(name).get_container_properties().public_access == access


def test_upload_then_read_returns_the_same_bytes_and_url(blobs: ReleaseBlobs, sdk: BlobServiceClient) -> None:
    url = blobs.upload("install_nginx.v7.sh", SCRIPT)
    read_url, content = blobs.read("install_nginx.v7.sh")

    assert url == read_url == blobs.url_for("install_nginx.v7.sh")
    assert url == f"{blobs.container_url}/install_nginx.v7.sh"
    assert content == SCRIPT
    assert hashlib.sha256(content).hexdigest() == hashlib.sha256(SCRIPT).hexdigest()
    props = sdk.get_blob_client(blobs.container_name, "install_nginx.v7.sh").get_blob_properties()
    assert props.size == len(SCRIPT)
    assert props.content_settings.content_type == "text/x-shellscript"


def test_upload_accepts_a_stream_and_nested_names(blobs: ReleaseBlobs) -> None:
    blobs.upload("apps/web/install_nginx.v8.sh", io.BytesIO(SCRIPT + b"# v8\n"))
    assert blobs.read("apps/web/install_nginx.v8.sh")[1] == SCRIPT + b"# v8\n"


def test_duplicate_upload_without_overwrite_is_a_clear_error(blobs: ReleaseBlobs) -> None:
    blobs.upload("install_nginx.v7.sh", SCRIPT)

    with pytest.raises(BlobExistsError, match=r"'install_nginx\.v7\.sh' already exists") as raised:
        blobs.upload("install_nginx.v7.sh", b"something else")
    assert isinstance(raised.value, AlreadyExistsError)
    assert blobs.read("install_nginx.v7.sh")[1] == SCRIPT  # untouched

    blobs.upload("install_nginx.v7.sh", b"replaced on purpose", overwrite=True)
    assert blobs.read("install_nginx.v7.sh")[1] == b"replaced on purpose"


def test_list_names_lists_what_was_uploaded(blobs: ReleaseBlobs) -> None:
    for name in ("install_nginx.v9.sh", "install_nginx.v10.sh", "other/readme.txt"):
        blobs.upload(name, b"x")

    assert blobs.list_names() == ["install_nginx.v10.sh", "install_nginx.v9.sh", "other/readme.txt"]
    assert blobs.list_names(prefix="other/") == ["other/readme.txt"]


def test_reading_a_missing_blob_is_not_found(blobs: ReleaseBlobs) -> None:
    with pytest.raises(NotFoundError):
        blobs.read("install_nginx.v99.sh")


def test_reading_more_than_allowed_is_refused(blobs: ReleaseBlobs) -> None:
    blobs.upload("big.bin", b"z" * 4096)
    with pytest.raises(ReleaseTooLargeError, match="4096 bytes"):
        blobs.read("big.bin", max_bytes=1024)


HOSTILE_NAMES = [
    "",
    "/etc/passwd",
    "../init2/install_nginx.v7.sh",
    "apps/../../secret.sh",
    "apps/./x.sh",
    "apps//x.sh",
    "apps/",
    "install_nginx.v7.sh.",
    "..\\..\\windows.sh",
    "%2e%2e/x.sh",
    "install nginx.sh",
    "tab\tname.sh",
    "nul\x00.sh",
    "ünïcode.sh",
    ".hidden.sh",
    "x" * 1025,
    "a/" + "y" * 255,
]


@pytest.mark.parametrize("name", HOSTILE_NAMES, ids=range(len(HOSTILE_NAMES)))
def test_hostile_names_are_rejected_before_any_request(blobs: ReleaseBlobs, name: str) -> None:
    with pytest.raises(InvalidBlobNameError) as raised:
        blobs.upload(name, b"x")
    assert isinstance(raised.value, ValueError)
    with pytest.raises(InvalidBlobNameError):
        blobs.url_for(name)
    with pytest.raises(InvalidBlobNameError):
        blobs.read(name)
    assert blobs.list_names() == []  # nothing reached the container


@pytest.mark.parametrize("name", ["install_nginx.v7.sh", "a/b/c-1_2.json", "x" * 254, "/".join(["s"] * 400)])
def test_acceptable_names_pass_validation(name: str) -> None:
    assert validate_blob_name(name) == name


def test_invalid_container_name_is_refused(azurite: AzuriteService) -> None:
    with pytest.raises(ValueError, match="container"):
        ReleaseBlobs.from_connection_string(azurite.connection_string, "Bad_Container")


def test_managed_identity_constructor_uses_bearer_tokens_over_https(azurite_oauth: AzuriteService) -> None:
    credential = FakeAzureAdCredential()
    with ReleaseBlobs.from_service_uri(
        azurite_oauth.blob_endpoint, credential, "init", connection_verify=str(azurite_oauth.ca_file)
    ) as adapter:
        adapter.ensure_container()
        url = adapter.upload("install_nginx.v7.sh", SCRIPT)
        assert adapter.read("install_nginx.v7.sh") == (url, SCRIPT)
        assert url.startswith("https://127.0.0.1:")

    assert credential.scopes_seen and all(s == ("https://storage.azure.com/.default",) for s in credential.scopes_seen)


def test_read_if_changed_reads_a_version_once_and_again_when_it_changes(blobs: ReleaseBlobs) -> None:
    """The targets document's cache: the ETag decides whether anything is downloaded."""
    with pytest.raises(NotFoundError):
        blobs.read_if_changed("targets.yaml", None, 1024)
    blobs.upload("targets.yaml", b"groups: []\n")
    read = blobs.read_if_changed("targets.yaml", None, 1024)
    assert read is not None and read[1] == b"groups: []\n"
    etag = read[0]
    assert blobs.read_if_changed("targets.yaml", etag, 1024) is None
    blobs.upload("targets.yaml", b"groups: [x]\n", overwrite=True)
    again = blobs.read_if_changed("targets.yaml", etag, 1024)
    assert again is not None and again[0] != etag and again[1] == b"groups: [x]\n"
    with pytest.raises(ReleaseTooLargeError):
        blobs.read_if_changed("targets.yaml", None, 4)
    blobs.upload("empty.yaml", b"")
    empty = blobs.read_if_changed("empty.yaml", None, 1024)
    assert empty is not None and empty[1] == b""
