"""The image registry and linked authorization.

A model write whose ``imageReference.id`` lies outside ``readable_scopes`` answers 403
LinkedAuthorizationFailed, and the image GETs (managed image, gallery image, gallery image version)
answer 403 AuthorizationFailed there, as ARM checks the caller's read permission on resources a
request body references. ``None`` (default) = all readable. The shapes of both errors are cited in
docs/emulator.md (MicrosoftDocs/azure-docs articles/role-based-access-control/troubleshooting.md).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence

from emulator.arm.model import IMAGE_ID, JSON, ArmError
from emulator.arm.render import image_json


def image_read_action(m: re.Match[str]) -> str:
    """The RBAC action reading the image ``m`` (an ``IMAGE_ID`` match) needs."""
    if m["image"]:
        return "Microsoft.Compute/images/read"
    if m["version"]:
        return "Microsoft.Compute/galleries/images/versions/read"
    return "Microsoft.Compute/galleries/images/read"


class ImageAccess:
    """Registered images and the scopes the caller may read; shares the fleet's lock."""

    def __init__(self, lock: threading.RLock, readable_scopes: Sequence[str] | None = None) -> None:
        self._lock = lock
        self.caller_id = "11111111-0000-0000-0000-00000000ca11"  # the caller's object id in 403 messages
        self.readable_scopes: tuple[str, ...] | None = None
        self._images: dict[str, str] = {}  # lower-case image resource id -> its id as registered
        self.set_readable_scopes(readable_scopes)

    def set_readable_scopes(self, scopes: Sequence[str] | None) -> None:
        if scopes is None:
            self.readable_scopes = None
            return
        if isinstance(scopes, str) or not all(isinstance(x, str) and x.startswith("/") for x in scopes):
            raise ValueError("readable_scopes must be a list of resource ids starting with '/'")
        self.readable_scopes = tuple(x.rstrip("/").lower() or "/" for x in scopes)

    def can_read(self, resource_id: str) -> bool:
        """Whether the caller may read ``resource_id`` (a role at the id or any scope above it)."""
        if self.readable_scopes is None:
            return True
        rid = resource_id.rstrip("/").lower()
        return any(s == "/" or rid == s or rid.startswith(s + "/") for s in self.readable_scopes)

    def add(self, image_id: str) -> None:
        if IMAGE_ID.match(image_id) is None:
            raise ValueError(f"not a managed image or gallery image (version) id: {image_id!r}")
        with self._lock:
            self._images[image_id.lower()] = image_id
            parent = re.sub(r"/versions/[^/]+$", "", image_id, flags=re.IGNORECASE)
            self._images.setdefault(parent.lower(), parent)

    def all(self) -> list[str]:
        with self._lock:
            return sorted(self._images.values())

    def clear(self) -> None:
        with self._lock:
            self._images.clear()

    def get(self, image_id: str, m: re.Match[str]) -> JSON:
        """Images_Get, GalleryImages_Get, GalleryImageVersions_Get. RBAC comes first, as at the ARM
        gateway: an unreadable image answers 403 whether it exists or not."""
        if not self.can_read(image_id):
            # Shape: MicrosoftDocs/azure-docs articles/role-based-access-control/troubleshooting.md
            raise ArmError(
                403,
                "AuthorizationFailed",
                f"The client '{self.caller_id}' with object id '{self.caller_id}' does not have authorization "
                f"to perform action '{image_read_action(m)}' over scope '{image_id}' or the scope is "
                "invalid. If access was recently granted, please refresh your credentials.",
            )
        with self._lock:
            known = self._images.get(image_id.lower())
        if known is None:
            kind = image_read_action(m).rsplit("/", 1)[0]
            raise ArmError(
                404,
                "ResourceNotFound",
                f"The Resource '{kind}/{image_id.rsplit('/', 1)[-1]}' under resource group '{m['rg']}' was not "
                "found. For more details please go to https://aka.ms/ARMResourceNotFoundFix",
            )
        return image_json(known, m)

    def check_linked_image(self, scale_set_id: str, body: JSON) -> None:
        """ARM's linked authorization: a model write referencing an image the caller cannot read is
        refused before it reaches Compute (403 LinkedAuthorizationFailed; shape: see docs/emulator.md)."""
        vmp = (body.get("properties") or {}).get("virtualMachineProfile") or {}
        image_id = ((vmp.get("storageProfile") or {}).get("imageReference") or {}).get("id")
        if not image_id or self.can_read(str(image_id)):
            return
        m = IMAGE_ID.match(str(image_id))
        action = image_read_action(m) if m else "Microsoft.Compute/images/read"
        raise ArmError(
            403,
            "LinkedAuthorizationFailed",
            f"The client '{self.caller_id}' with object id '{self.caller_id}' has permission to perform action "
            f"'Microsoft.Compute/virtualMachineScaleSets/write' on scope '{scale_set_id}'; however, it does not "
            f"have permission to perform action '{action}' on the linked scope(s) '{image_id}' or the linked "
            "scope(s) are invalid.",
        )
