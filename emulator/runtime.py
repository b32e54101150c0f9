"""What an emulated VM instance is: the seam between the ARM emulator and the thing that serves.

The ARM emulator (``emulator.arm``) keeps the ARM-visible state of each instance (latestModelApplied,
provisioning state, instance view) and delegates what happens *on the VM* to an ``InstanceRuntime``:

* ``SyntheticRuntime`` (``emulator.synthetic``): a small in-process HTTP server on the instance's
  loopback address whose page names the release it runs. Cheap: hundreds per machine.
* ``NginxRuntime`` (``emulator.nginx``): a real nginx process whose release script really runs in a
  bubblewrap sandbox (the CustomScript handler), for the local twin and the end-to-end tests.

The emulator calls these from worker threads, never concurrently for the same instance.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class InstanceModel:
    """The part of the scale set model an instance was last brought to."""

    image_id: str | None
    extension_name: str | None = None
    extension_publisher: str | None = None
    extension_type: str | None = None
    extension_version: str | None = None
    settings: Mapping[str, Any] = field(default_factory=dict)
    protected_settings: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ExtensionResult:
    """What the CustomScript handler reports, as the instance view shows it."""

    succeeded: bool
    exit_code: int | None = None
    stdout: str = ""
    stderr: str = ""
    message: str = ""  # one-line summary; the instance view's status message is built from all fields


class InstanceRuntime(Protocol):
    address: str  # the loopback address this instance serves on, e.g. "127.0.10.3"

    def start(self) -> None:
        """Boot the instance (serve with whatever it has: the image's default content)."""
        ...

    def apply(self, model: InstanceModel) -> ExtensionResult:
        """Bring the instance to ``model``: run the extension (download fileUris, run
        commandToExecute), then (re)start the service. Blocking; called on a worker thread."""
        ...

    def reimage(self, model: InstanceModel) -> ExtensionResult:
        """Reset the instance to its image (wiping what scripts did), then ``apply(model)``."""
        ...

    def set_healthy(self, healthy: bool) -> None:
        """Test hook: make the instance's page fail (or recover) whatever its release."""
        ...

    def stop(self) -> None:
        """Stop serving and release every resource (processes, sockets, temp dirs)."""
        ...
