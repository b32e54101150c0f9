"""A release file on the operator's disk: its name and content checked as the app will check them, its
rollout id computed, and its upload to the release container through the Storage SDK.

The rules mirror ``rollout/releases.py`` (which this package does not import: the function app's code is
not installed with the CLI); ``tests/unit/test_cli_release.py`` checks both agree on generated names
and contents:

* the name is ``<app>.v<N>.sh`` or ``<app>.v<N>.image.json`` (``app``: letters, digits, ``_``, ``-``);
* a group release goes to ``<container>/<group>/<name>`` (the group: the same characters);
* a script is at most 256 KiB, a manifest 16 KiB;
* the rollout id is ``<app lowercased>-v<N>-<first 10 hex digits of the content's SHA-256>``
  (``rollout.releases.rollout_id_for``): deterministic, so the CLI knows it before the app records it.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vmss_canary_cli.exits import CliError, ExitCode

NAME_RE = re.compile(r"^(?P<app>[A-Za-z0-9][A-Za-z0-9_-]{0,62})\.v(?P<version>[0-9]{1,12})\.(?P<ext>sh|image\.json)$")
GROUP_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}")
MAX_VERSION = 999_999_999
MAX_SCRIPT_BYTES = 256 * 1024
MAX_MANIFEST_BYTES = 16 * 1024
DEFAULT_CONTAINER = "init"
# Azure container names: 3-63 lower-case letters, digits and single hyphens, starting with a letter or
# digit (learn.microsoft.com/rest/api/storageservices/naming-and-referencing-containers--blobs--and-metadata).
CONTAINER_RE = re.compile(r"[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}")


@dataclass(frozen=True)
class ReleaseFile:
    path: Path
    name: str  # the file's name: <app>.v<N>.sh
    app: str
    version: int
    kind: str  # "script" or "image"
    content: bytes
    group: str | None = None

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()

    @property
    def blob_name(self) -> str:
        """Its name in the release container: ``<group>/<name>`` or ``<name>``."""
        return self.name if self.group is None else f"{self.group}/{self.name}"

    @property
    def rollout_id(self) -> str:
        """The id the app gives its rollout (and a group release): ``rollout.releases.rollout_id_for``."""
        return f"{self.app.lower()}-v{self.version}-{self.sha256[:10]}"


def name_problem(name: str) -> str | None:
    """Why ``name`` is not a release file name, or None."""
    match = NAME_RE.match(name)
    if match is None:
        return f"{name!r} is not a release name: <app>.v<N>.sh or <app>.v<N>.image.json (e.g. install_nginx.v7.sh)"
    if int(match["version"]) > MAX_VERSION:
        return f"version {match['version']} is out of range (at most {MAX_VERSION})"
    return None


def read_release_file(path: Path, group: str | None = None) -> ReleaseFile:
    """The release at ``path``, checked; ``CliError(BAD_INPUT)`` saying why it cannot be released."""
    if group is not None and not GROUP_RE.fullmatch(group):
        raise CliError(
            f"--group {group!r}: a group is 1-63 letters, digits, '_' or '-', starting with a letter or digit",
            ExitCode.BAD_INPUT,
        )
    problem = name_problem(path.name)
    if problem is not None:
        raise CliError(problem, ExitCode.BAD_INPUT)
    match = NAME_RE.match(path.name)
    assert match is not None
    kind = "script" if match["ext"] == "sh" else "image"
    limit = MAX_SCRIPT_BYTES if kind == "script" else MAX_MANIFEST_BYTES
    try:
        if not path.is_file():
            raise CliError(f"{path}: no such file", ExitCode.BAD_INPUT)
        size = path.stat().st_size
        if size > limit:
            raise CliError(f"{path} is {size} bytes; the app accepts at most {limit} for {kind}s", ExitCode.BAD_INPUT)
        content = path.read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}", ExitCode.BAD_INPUT) from None
    if kind == "script" and not content.strip():
        raise CliError(f"{path} is empty", ExitCode.BAD_INPUT)
    return ReleaseFile(
        path=path,
        name=path.name,
        app=match["app"],
        version=int(match["version"]),
        kind=kind,
        content=content,
        group=group,
    )


def check_container(container: str) -> str:
    if not CONTAINER_RE.fullmatch(container):
        raise CliError(f"--container {container!r} is not a valid blob container name", ExitCode.BAD_INPUT)
    return container


def upload(
    release: ReleaseFile,
    *,
    container: str,
    connection_string: str | None = None,
    account_url: str | None = None,
) -> str:
    """Put the release in the container; returns what happened ("uploaded" or "already uploaded").

    A release is never replaced: a blob of that name with other content is refused (upload it as a new
    version); one with the same content is left as it is (a pipeline run again finds the same rollout).
    Storage errors are ``CliError``s: 401/403 -> AUTH, unreachable -> UNREACHABLE, the rest BAD_INPUT."""
    from azure.core.exceptions import (
        ClientAuthenticationError,
        HttpResponseError,
        ResourceExistsError,
        ResourceNotFoundError,
        ServiceRequestError,
    )
    from azure.storage.blob import BlobServiceClient

    check_container(container)
    if bool(connection_string) == bool(account_url):
        raise CliError(
            "the release container: give --storage-connection-string (VMSS_CANARY_STORAGE_CONNECTION_STRING) "
            "or --storage-account-url (VMSS_CANARY_STORAGE_ACCOUNT_URL, signed in with DefaultAzureCredential), "
            "exactly one",
            ExitCode.BAD_INPUT,
        )
    if account_url and not account_url.lower().startswith(("https://", "http://")):
        raise CliError("--storage-account-url must be https://<account>.blob.core.windows.net", ExitCode.BAD_INPUT)
    credential: Any = None
    # A few quick retries (about 1 + 3 + 5 s): the SDK's default ExponentialRetry (initial_backoff 15 s, increment_base
    # 3: azure-sdk-for-python, azure/storage/blob/_shared/policies.py) would keep an operator
    # waiting over a minute before saying the account cannot be reached.
    retry: dict[str, Any] = {"retry_total": 3, "initial_backoff": 1, "increment_base": 2}
    try:
        if connection_string:
            service = BlobServiceClient.from_connection_string(connection_string, **retry)
        else:
            assert account_url is not None
            from azure.identity import DefaultAzureCredential

            # The identity needs a data role on the container, e.g. "Storage Blob Data Contributor".
            credential = DefaultAzureCredential()
            service = BlobServiceClient(account_url, credential=credential, **retry)
    except (ValueError, ImportError) as exc:
        raise CliError(f"the storage settings are not usable: {_first_line(exc)}", ExitCode.BAD_INPUT) from None
    try:
        with service:
            blob = service.get_blob_client(container, release.blob_name)
            try:
                blob.upload_blob(release.content, overwrite=False)
                return "uploaded"
            except ResourceExistsError:
                existing = blob.download_blob(max_concurrency=1).readall()
                if existing == release.content:
                    return "already uploaded"
                raise CliError(
                    f"{container}/{release.blob_name} already exists with other content; a release is never "
                    f"replaced: give the new content a new version (v{release.version + 1})",
                    ExitCode.BAD_INPUT,
                ) from None
    except CliError:
        raise
    except ClientAuthenticationError as exc:
        raise CliError(f"the storage account refused the credential: {_first_line(exc)}", ExitCode.AUTH) from None
    except ResourceNotFoundError as exc:
        raise CliError(f"container {container!r} not found: {_first_line(exc)}", ExitCode.BAD_INPUT) from None
    except ServiceRequestError as exc:
        raise CliError(f"cannot reach the storage account: {_first_line(exc)}", ExitCode.UNREACHABLE) from None
    except HttpResponseError as exc:
        code = ExitCode.AUTH if exc.status_code in (401, 403) else ExitCode.API_ERROR
        raise CliError(f"the storage account answered {exc.status_code}: {_first_line(exc)}", code) from None
    finally:
        if credential is not None:
            credential.close()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return line if len(line) <= 300 else line[:300] + "..."
