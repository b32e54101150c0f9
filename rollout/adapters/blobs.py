"""The release container on Azure Blob Storage (azure-storage-blob 12.31).

The release container holds the scripts the scale set's CustomScript extension downloads. Three
decisions follow from that:

- **Private, always.** The VMs fetch the script with the managed identity (or a SAS); nobody needs
  anonymous read. ``ensure_container`` creates the container with no public access and, when the
  container already exists, refuses to work with it if anonymous access is on: a public release
  container publishes whatever the scripts embed. It does not silently switch access off either:
  somebody turned it on, and an operator should decide (the error names the container and the fix).
- **Strict names.** Release names come from operators and end up in URLs the VMs fetch and in
  Table keys, so only a conservative subset is accepted (ASCII letters, digits, ``.``, ``_``, ``-``
  in ``/``-separated segments that start with a letter or digit). That excludes path traversal
  (``..``), a leading ``/``, backslashes, percent-escapes, control characters and names Azure
  treats specially (trailing ``.`` or ``/``). Limits: 1024 characters, 254 per segment.
- **No overwrite by default.** A release is identified by its content hash; replacing the bytes
  under a name that a rollout already recorded would make that record lie. ``upload`` refuses
  unless ``overwrite=True`` is asked for explicitly.

Errors are ``rollout.ports`` errors (via ``map_storage_errors``), plus ``InvalidBlobNameError`` and
``ReleaseTooLargeError`` (both ``ValueError``) for input the caller must fix.
"""

from __future__ import annotations

import re
from typing import IO, Any, Final

from azure.core import MatchConditions
from azure.core.credentials import TokenCredential
from azure.storage.blob import BlobClient, BlobServiceClient, ContainerClient, ContentSettings

from rollout.adapters.tables import DEFAULT_CLIENT_OPTIONS, map_storage_errors
from rollout.ports import AlreadyExistsError, BlobVersion, PortError
from rollout.settings import DEFAULT_RELEASE_CONTAINER

MAX_NAME_CHARS: Final = 1024
MAX_SEGMENT_CHARS: Final = 254
DEFAULT_MAX_READ_BYTES: Final = 64 * 1024 * 1024  # release scripts are kilobytes; this is a sanity bound
_SEGMENT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_CONTAINER_RE = re.compile(r"^(?!.*--)[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
_CONTENT_TYPES: Final = {".sh": "text/x-shellscript", ".json": "application/json", ".ps1": "text/plain"}


class InvalidBlobNameError(ValueError):
    """A release blob name outside the accepted subset; the message says which rule it breaks."""


class ReleaseTooLargeError(ValueError):
    """A release blob larger than the caller allows to be read into memory."""


class PublicContainerError(PortError):
    """The release container allows anonymous access; the adapter refuses to use it."""


class BlobExistsError(AlreadyExistsError):
    """An upload without ``overwrite`` found a blob of that name."""


def validate_blob_name(name: str) -> str:
    """Return ``name`` if it is an acceptable release blob name, else raise ``InvalidBlobNameError``."""
    if not isinstance(name, str) or not name:
        raise InvalidBlobNameError("blob name must be a non-empty string")
    if len(name) > MAX_NAME_CHARS:
        raise InvalidBlobNameError(f"blob name is {len(name)} characters; at most {MAX_NAME_CHARS} are allowed")
    if name.startswith("/"):
        raise InvalidBlobNameError(f"blob name {name!r} must not start with '/'")
    for segment in name.split("/"):
        if segment in ("", ".", ".."):
            raise InvalidBlobNameError(f"blob name {name!r} has an empty, '.' or '..' path segment")
        if len(segment) > MAX_SEGMENT_CHARS:
            raise InvalidBlobNameError(f"blob name {name!r} has a segment longer than {MAX_SEGMENT_CHARS} characters")
        if not _SEGMENT_RE.match(segment):
            raise InvalidBlobNameError(
                f"blob name {name!r}: segment {segment!r} may only hold ASCII letters, digits, '.', '_' and '-', "
                "and must start with a letter or digit"
            )
        if segment.endswith("."):
            raise InvalidBlobNameError(f"blob name {name!r} must not end a segment with '.'")
    return name


def _content_type(name: str) -> str:
    for suffix, content_type in _CONTENT_TYPES.items():
        if name.endswith(suffix):
            return content_type
    return "application/octet-stream"


class ReleaseBlobs:
    """The release container: create it private, upload, read (for the SHA-256), list, build URLs."""

    def __init__(self, service: BlobServiceClient, container: str = DEFAULT_RELEASE_CONTAINER) -> None:
        if not _CONTAINER_RE.match(container):
            raise ValueError(f"{container!r} is not a valid blob container name")
        self._service = service
        self.container_name = container
        self._container: ContainerClient = service.get_container_client(container)

    @classmethod
    def from_connection_string(
        cls, connection_string: str, container: str = DEFAULT_RELEASE_CONTAINER, **options: Any
    ) -> ReleaseBlobs:
        return cls(
            BlobServiceClient.from_connection_string(connection_string, **{**DEFAULT_CLIENT_OPTIONS, **options}),
            container,
        )

    @classmethod
    def from_service_uri(
        cls, uri: str, credential: TokenCredential, container: str = DEFAULT_RELEASE_CONTAINER, **options: Any
    ) -> ReleaseBlobs:
        """Managed identity: ``uri`` is e.g. ``https://<account>.blob.core.windows.net``."""
        return cls(BlobServiceClient(uri, credential=credential, **{**DEFAULT_CLIENT_OPTIONS, **options}), container)

    def close(self) -> None:
        self._container.close()
        self._service.close()

    def __enter__(self) -> ReleaseBlobs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def container_url(self) -> str:
        return str(self._container.url)

    def ensure_container(self) -> None:
        """Create the container with no public access; refuse an existing one that has public access."""
        what = f"container {self.container_name}"
        try:
            with map_storage_errors(f"create {what}"):
                self._container.create_container(public_access=None)
            return
        except AlreadyExistsError:
            pass  # created earlier (or by a concurrent caller): check how it is configured
        with map_storage_errors(f"read {what}"):
            access = self._container.get_container_properties().public_access
        if access:
            raise PublicContainerError(
                f"release container {self.container_name!r} allows anonymous '{access}' access; "
                "release scripts must stay private. Turn public access off "
                f"(az storage container set-permission --name {self.container_name} --public-access off) "
                "or use another container."
            )

    def url_for(self, name: str) -> str:
        """The blob's URL (what the CustomScript extension's fileUris get); no request is made."""
        return str(self._container.get_blob_client(validate_blob_name(name)).url)

    def upload(self, name: str, data: bytes | IO[bytes], overwrite: bool = False) -> str:
        """Upload ``data`` as ``name`` and return its URL. Refuses to replace a blob unless ``overwrite``."""
        blob = self._container.get_blob_client(validate_blob_name(name))
        try:
            with map_storage_errors(f"upload {name} to {self.container_name}"):
                blob.upload_blob(
                    data, overwrite=overwrite, content_settings=ContentSettings(content_type=_content_type(name))
                )
        except AlreadyExistsError as exc:
            raise BlobExistsError(
                f"blob {name!r} already exists in container {self.container_name!r}; "
                "releases are immutable: upload a new version, or pass overwrite=True deliberately"
            ) from exc
        return str(blob.url)

    def read(self, name: str, max_bytes: int = DEFAULT_MAX_READ_BYTES) -> tuple[str, bytes]:
        """``(url, content)``: the content is what the release's SHA-256 is computed over.

        Raises ``NotFoundError`` if the blob does not exist (an Event Grid event can outlive its blob).
        """
        blob = self._container.get_blob_client(validate_blob_name(name))
        with map_storage_errors(f"read {name} from {self.container_name}"):
            downloader = blob.download_blob()
            if downloader.size > max_bytes:
                raise ReleaseTooLargeError(
                    f"blob {name!r} is {downloader.size} bytes; more than the {max_bytes} allowed for a release"
                )
            content = downloader.readall()
        return str(blob.url), content

    def read_if_changed(self, name: str, etag: str | None, max_bytes: int) -> tuple[str, bytes] | None:
        """``(etag, content)`` of blob ``name`` unless its ETag is still ``etag`` (None: unchanged, nothing read).

        One properties request when unchanged; otherwise a download of exactly that version (``If-Match``),
        so a replacement between the two reads is ``ConcurrencyError``, never a mix. ``ReleaseTooLargeError``
        beyond ``max_bytes`` (nothing downloaded); ``NotFoundError`` when the blob does not exist."""
        blob = self._container.get_blob_client(validate_blob_name(name))
        with map_storage_errors(f"read the properties of {name} in {self.container_name}"):
            props = blob.get_blob_properties()
        current = str(props.etag)
        if etag is not None and current == etag:
            return None
        if int(props.size) > max_bytes:
            raise ReleaseTooLargeError(f"blob {name!r} is {props.size} bytes; at most {max_bytes} are read")
        if int(props.size) == 0:
            return current, b""
        with map_storage_errors(f"read {name} from {self.container_name}"):
            downloader = blob.download_blob(
                offset=0, length=int(props.size), etag=current, match_condition=MatchConditions.IfNotModified
            )
            return current, bytes(downloader.readall())

    def list_names(self, prefix: str | None = None) -> list[str]:
        """Every blob name in the container (optionally under ``prefix``), in the service's (sorted) order."""
        with map_storage_errors(f"list {self.container_name}"):
            return [b.name for b in self._container.list_blobs(name_starts_with=prefix)]


class TriggeredBlob:
    """``rollout.ports.ReleaseBlob`` over the ``azure.storage.blob.BlobClient`` the blob trigger hands
    the function (the SDK-type binding of ``azurefunctions-extensions-bindings-blob``).

    Nothing is downloaded until ``read``, and ``read`` asks for exactly the version whose size was
    checked: a conditional (``If-Match`` ETag) ranged download of ``version.size`` bytes, so an
    upload that replaces the blob between the size check and the read cannot slip a larger blob in.
    """

    def __init__(self, client: BlobClient) -> None:
        self._client = client

    @property
    def container(self) -> str:
        return str(self._client.container_name)

    @property
    def name(self) -> str:
        return str(self._client.blob_name)

    @property
    def url(self) -> str:
        return str(self._client.url)

    def version(self) -> BlobVersion:
        with map_storage_errors(f"read the properties of {self.container}/{self.name}"):
            props = self._client.get_blob_properties()
        return BlobVersion(size=int(props.size), etag=str(props.etag))

    def read(self, version: BlobVersion) -> bytes:
        if version.size == 0:
            return b""  # a zero-length range is not a valid request; there is nothing to read anyway
        with map_storage_errors(f"read {self.container}/{self.name}"):
            downloader = self._client.download_blob(
                offset=0,
                length=version.size,
                etag=version.etag,
                match_condition=MatchConditions.IfNotModified,
                max_concurrency=1,
            )
            return bytes(downloader.readall())


__all__ = [
    "BlobExistsError",
    "InvalidBlobNameError",
    "PublicContainerError",
    "ReleaseBlobs",
    "ReleaseTooLargeError",
    "TriggeredBlob",
    "validate_blob_name",
]
