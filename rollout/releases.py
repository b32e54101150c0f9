"""Blob name + content -> Release, and Release -> the scale set model it asks for. Pure.

Two kinds of release blob land in the release container:

* ``<app>.v<N>.sh``: a CustomScript release (the walkthrough's ``install_nginx.v1.sh``). The VMs
  fetch the script from its blob URL, with their managed identity by default.
* ``<app>.v<N>.image.json``: an image release (the walkthrough's Packer path): a small manifest
  ``{"imageId": "/subscriptions/.../images/nginx-updated-image"}``.

N is a whole number compared numerically (``v10`` is newer than ``v9``). Anything else is not a
release: ``parse_release_name`` says why, and the trigger logs it and ignores the blob.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass

from rollout.model import ExtensionSpec, ModelSpec, Release, ReleaseKind

MAX_SCRIPT_BYTES = 256 * 1024  # a release script, not a payload: big binaries belong in an image
MAX_MANIFEST_BYTES = 16 * 1024
MAX_VERSION = 999_999_999

CUSTOM_SCRIPT_PUBLISHER = "Microsoft.Azure.Extensions"
CUSTOM_SCRIPT_TYPE = "CustomScript"
CUSTOM_SCRIPT_VERSION = "2.1"
# The extension's name on the scale set when settings do not say otherwise (EXTENSION_NAME): its type.
DEFAULT_EXTENSION_NAME = CUSTOM_SCRIPT_TYPE
# How VMs fetch release scripts (EXTENSION_FILE_AUTH); the first is the default.
FILE_AUTH_MANAGED_IDENTITY = "managedIdentity"
FILE_AUTH_MODES: tuple[str, ...] = (FILE_AUTH_MANAGED_IDENTITY, "none")

# The app part is deliberately narrow: it ends up in a shell command (commandToExecute), a table
# key (the rollout id) and URLs, so anything beyond letters, digits, '_' and '-' is refused.
_NAME_RE = re.compile(r"^(?P<app>[A-Za-z0-9][A-Za-z0-9_-]{0,62})\.v(?P<version>[0-9]{1,12})\.(?P<ext>sh|image\.json)$")
# A virtual folder that may be a group's: a plain blob name segment (as rollout.adapters.blobs accepts),
# never "." or "..". Anything else is not a release at all; a plain folder that names no group is refused
# and recorded when the release is routed.
_FOLDER_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}")
_IMAGE_ID_RE = re.compile(
    r"^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\.Compute/"
    r"(images/[^/]+|galleries/[^/]+/images/[^/]+(/versions/[^/]+)?)$",
    re.IGNORECASE,
)


class ReleaseError(ValueError):
    """The blob is a release by name but its content cannot be released (recorded as Rejected)."""


@dataclass(frozen=True)
class ReleaseName:
    kind: ReleaseKind
    app: str
    version: int
    blob_name: str  # the file name, without the group's folder: what the VMs run (``bash <blob_name>``)
    # The group's folder (``<container>/<group>/<blob_name>``) as written, checked when the release is
    # routed (``rollout.targets_doc.route``); None: at the container's top level, the default group.
    group: str | None = None

    @property
    def path(self) -> str:
        """The blob's name in the container: ``<group>/<blob_name>`` or ``<blob_name>``."""
        return self.blob_name if self.group is None else f"{self.group}/{self.blob_name}"


def parse_release_name(blob_name: str) -> ReleaseName | str:
    """Return the parsed name, or a sentence saying why this blob is not a release.

    ``<app>.v<N>.sh`` is a release to the default group, ``<group>/<app>.v<N>.sh`` one to that group
    (README, "Targets, groups and waves"). The folder must look like a folder name (``_FOLDER_RE``);
    whether it names a group is decided when the release is routed, which records a refusal."""
    if not blob_name:
        return "empty blob name"
    if len(blob_name) > 200:
        return f"blob name is {len(blob_name)} characters long; release names are short"
    if any(ord(c) < 32 or ord(c) == 127 for c in blob_name):
        return "blob name contains control characters"
    group: str | None = None
    if "/" in blob_name or "\\" in blob_name:
        folder, _, rest = blob_name.partition("/")
        if "\\" in blob_name or "/" in rest or not _FOLDER_RE.fullmatch(folder):
            return (
                f"{blob_name!r} is in a virtual folder that cannot be a group; releases live at "
                "<container>/<app>.v<N>.sh or <container>/<group>/<app>.v<N>.sh"
            )
        group, blob_name = folder, rest
    match = _NAME_RE.match(blob_name)
    if match is None:
        return f"{blob_name!r} does not match <app>.v<N>.sh or <app>.v<N>.image.json (for example install_nginx.v7.sh)"
    version = int(match["version"])
    if version > MAX_VERSION:
        return f"version {match['version']} is out of range (at most {MAX_VERSION})"
    kind = ReleaseKind.SCRIPT if match["ext"] == "sh" else ReleaseKind.IMAGE
    return ReleaseName(kind=kind, app=match["app"], version=version, blob_name=blob_name, group=group)


def build_release(name: ReleaseName, blob_url: str, content: bytes) -> Release:
    """Check the content and make the Release. Raises ReleaseError with the reason."""
    release = rejected_release(name, blob_url, content)
    if not blob_url.lower().startswith(("https://", "http://")):
        raise ReleaseError(f"blob URL {blob_url!r} is not an http(s) URL")
    if name.kind is ReleaseKind.SCRIPT:
        _check_script(content)
        return release
    image_id = _read_manifest(content)
    return dataclasses.replace(release, image_id=image_id)


def rejected_release(name: ReleaseName, blob_url: str, content: bytes) -> Release:
    """The Release as far as it could be read, for recording a rejection."""
    return Release(
        kind=name.kind,
        app=name.app,
        version=name.version,
        blob_name=name.blob_name,
        blob_url=blob_url,
        sha256=hashlib.sha256(content).hexdigest(),
        group=name.group,
    )


def max_release_bytes(kind: ReleaseKind) -> int:
    """The largest blob of this kind that is read at all."""
    return MAX_SCRIPT_BYTES if kind is ReleaseKind.SCRIPT else MAX_MANIFEST_BYTES


def size_problem(name: ReleaseName, size: int) -> str | None:
    """Why a blob of ``size`` bytes is refused before anything of it is downloaded, or None."""
    limit = max_release_bytes(name.kind)
    if size <= limit:
        return None
    what = "a script" if name.kind is ReleaseKind.SCRIPT else "an image manifest"
    return f"release is {size} bytes; at most {limit} are accepted for {what} (it was not downloaded)"


def unread_release(name: ReleaseName, blob_url: str) -> Release:
    """The Release of a blob refused without reading it: its content hash is unknown (``sha256`` empty)."""
    return Release(
        kind=name.kind,
        app=name.app,
        version=name.version,
        blob_name=name.blob_name,
        blob_url=blob_url,
        sha256="",
        group=name.group,
    )


def unread_rollout_id(name: ReleaseName, etag: str) -> str:
    """The rollout id of a blob refused without reading it (too large).

    Same shape as ``rollout_id_for`` (``<app>-v<N>-<10 hex digits>``), but the digits are the SHA-256
    of the blob name and its ETag, because the content was never read. A blob version keeps its
    ETag, so a second event for the same upload finds the same row (a Duplicate); a new upload under
    the same name has a new ETag and is recorded again."""
    digest = hashlib.sha256(f"unread\n{name.path}\n{etag}".encode()).hexdigest()
    return f"{name.app.lower()}-v{name.version}-{digest[:10]}"


def _check_script(content: bytes) -> None:
    if not content.strip():
        raise ReleaseError("the script is empty")
    if len(content) > MAX_SCRIPT_BYTES:
        raise ReleaseError(f"the script is {len(content)} bytes; at most {MAX_SCRIPT_BYTES} are accepted")
    if b"\x00" in content:
        raise ReleaseError("the script contains NUL bytes: it is not a text script")
    try:
        content.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ReleaseError(f"the script is not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def _read_manifest(content: bytes) -> str:
    if len(content) > MAX_MANIFEST_BYTES:
        raise ReleaseError(f"the image manifest is {len(content)} bytes; at most {MAX_MANIFEST_BYTES}")
    try:
        data = json.loads(content.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReleaseError(f"the image manifest is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("imageId"), str):
        raise ReleaseError('the image manifest must be a JSON object with a string "imageId"')
    image_id = str(data["imageId"]).strip()
    if not _IMAGE_ID_RE.match(image_id):
        raise ReleaseError(
            f"imageId {image_id!r} is not a managed image or gallery image resource id "
            "(/subscriptions/<sub>/resourceGroups/<rg>/providers/Microsoft.Compute/images/<name>)"
        )
    return image_id


# The infra parameter that grants the function app's identity Reader on the images' scope.
IMAGE_READER_PARAMETER = "imageReaderScope"


def image_unreadable_reason(image_id: str, answer: str) -> str:
    """Why an image release cannot go on: the identity cannot read the image (``answer`` is what ARM
    said, e.g. "403 AuthorizationFailed"). ARM checks read access on an image a model write names
    (LinkedAuthorizationFailed), so without it every write of the release would be refused."""
    return (
        f"the function app's identity cannot read image {image_id} ({answer}): grant it Reader on the image's "
        f"gallery or resource group, e.g. with the infra parameter {IMAGE_READER_PARAMETER}"
    )


def image_missing_reason(image_id: str) -> str:
    return f"image {image_id} does not exist"


@dataclass(frozen=True)
class ExtensionDefaults:
    """How release scripts are wired into the CustomScript extension (from settings)."""

    extension_name: str = DEFAULT_EXTENSION_NAME
    file_auth: str = FILE_AUTH_MODES[0]  # one of FILE_AUTH_MODES
    identity_client_id: str | None = None


# Public settings a release sets (the script to fetch and the command), and those it must drop from
# the observed extension. From "Use the Azure Custom Script Extension Version 2 with Linux virtual
# machines" (https://learn.microsoft.com/azure/virtual-machines/extensions/custom-script-linux):
# ``script`` "can replace commandToExecute and fileUris" (if kept, it could run instead of the release),
# and ``managedIdentity`` "must not be used in conjunction with the storageAccountName or
# storageAccountKey property". managedIdentity needs handler version 2.1 or later (same page).
_DROPPED_BY_EVERY_RELEASE = frozenset({"script"})
_DROPPED_WITH_MANAGED_IDENTITY = frozenset({"storageAccountName", "storageAccountKey"})
_MANAGED_IDENTITY_MIN_VERSION = (2, 1)


def _version(text: str) -> tuple[int, ...]:
    parts: list[int] = []
    for part in text.split("."):
        if not part.isdigit():
            break
        parts.append(int(part))
    return tuple(parts)


def desired_model(release: Release, defaults: ExtensionDefaults, observed: ExtensionSpec | None = None) -> ModelSpec:
    """The scale set model a release asks for.

    ``observed`` is the extension as ARM returned it in the scale set model. A script release starts
    from it and changes only what the release changes: ``settings.fileUris`` and
    ``settings.commandToExecute`` (dropping ``script``, and with managed identity the storage account
    keys, which would conflict), and ``protectedSettings``. Every other property (handler version,
    ``provisionAfterExtensions``, ``suppressFailures``, ``enableAutomaticUpgrade``,
    ``autoUpgradeMinorVersion``, ``forceUpdateTag``, other settings) stays as observed: the
    child-resource PUT replaces the whole extension, so what is not sent is lost. Without ``observed``
    (a release not started yet) the result is the release's own extension, as a preview.
    """
    if release.kind is ReleaseKind.IMAGE:
        # A rejected manifest (unparsable, or too large to read) has no image id: it asks for nothing,
        # and it is only ever recorded, never started.
        return ModelSpec(image_id=release.image_id)
    own = _release_extension(release, defaults)
    if observed is None:
        return ModelSpec(extension=own)
    dropped = _DROPPED_BY_EVERY_RELEASE
    version = observed.type_handler_version
    assert own.protected_settings is not None
    if "managedIdentity" in own.protected_settings:
        dropped = dropped | _DROPPED_WITH_MANAGED_IDENTITY
        if _version(version) < _MANAGED_IDENTITY_MIN_VERSION:
            version = own.type_handler_version
    settings = {k: v for k, v in observed.settings.items() if k not in dropped}
    settings.update(own.settings)
    return ModelSpec(
        extension=dataclasses.replace(
            observed,
            type_handler_version=version,
            settings=settings,
            protected_settings=own.protected_settings,
            # Refused at pre-flight; never carried into a write next to our protectedSettings.
            protected_settings_from_key_vault=None,
        )
    )


def _release_extension(release: Release, defaults: ExtensionDefaults) -> ExtensionSpec:
    protected: dict[str, object] = {}
    if defaults.file_auth == FILE_AUTH_MANAGED_IDENTITY:
        # The VMs fetch the script with their own identity: no public container, no SAS in settings.
        identity = {"clientId": defaults.identity_client_id} if defaults.identity_client_id else {}
        protected["managedIdentity"] = identity
    return ExtensionSpec(
        name=defaults.extension_name,
        publisher=CUSTOM_SCRIPT_PUBLISHER,
        type=CUSTOM_SCRIPT_TYPE,
        type_handler_version=CUSTOM_SCRIPT_VERSION,
        settings={
            "fileUris": [release.blob_url],
            # The name was validated by _NAME_RE: safe to put in a shell command as it is.
            "commandToExecute": f"bash {release.blob_name}",
        },
        protected_settings=protected,
    )


def rollout_id_for(release: Release) -> str:
    """Deterministic, so a duplicate event for the same content finds the same row."""
    return f"{release.app.lower()}-v{release.version}-{release.sha256[:10]}"


# Every id ``rollout_id_for`` can make, and nothing else: the app part of _NAME_RE lowercased, the
# version as ``int`` prints it (at most MAX_VERSION: 9 digits, no leading zero), 10 hex digits of the
# content hash. ASCII only, so it is also a valid Azure Tables RowKey (no '/', '\\', '#', '?',
# control characters; far below 1 KiB) and safe in a URL path segment.
# Use fullmatch: "$" would also accept a trailing newline.
ROLLOUT_ID_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}-v(?:0|[1-9][0-9]{0,8})-[0-9a-f]{10}")
MAX_ROLLOUT_ID_CHARS = 63 + 2 + 9 + 1 + 10


def rollout_id_problem(text: str) -> str | None:
    """Why ``text`` cannot be a rollout id (a sentence that never echoes more than 40 characters of it), or None."""
    if not text:
        return "the rollout id is empty"
    if len(text) > MAX_ROLLOUT_ID_CHARS:
        return f"the rollout id is {len(text)} characters long; rollout ids have at most {MAX_ROLLOUT_ID_CHARS}"
    if ROLLOUT_ID_RE.fullmatch(text) is None:
        shown = text if len(text) <= 40 else text[:40] + "..."
        return f"{shown!r} is not a rollout id (<app>-v<N>-<10 hex digits>, for example install_nginx-v7-0123456789)"
    return None
