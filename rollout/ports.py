"""The abstractions the service depends on. Real adapters live in ``rollout.adapters``; in-memory
fakes that implement the same Protocols live in ``tests/fakes.py``.

Errors the adapters raise are the ones defined here, so the service never sees an ``azure.*``
exception type.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from rollout.model import (
    FleetView,
    InstanceView,
    ModelSpec,
    ProbeResult,
    Rollout,
    RolloutEvent,
    TargetRecord,
)
from rollout.notifications import Notification
from rollout.signals import InstanceSignals

# STATE_TABLE_PREFIX: empty, or letters and digits starting with a letter. Table names are 3-63
# alphanumeric characters not starting with a digit ("Understanding the Table service data model",
# https://learn.microsoft.com/rest/api/storageservices/understanding-the-table-service-data-model);
# 31 leaves room for the longest table name ("rolloutevents").
TABLE_PREFIX_PATTERN = re.compile(r"^(?:[A-Za-z][A-Za-z0-9]{0,30})?$")


# At most this many records in one ``StateStore.commit``: an Azure Tables entity group transaction
# holds at most 100 entities ("Performing entity group transactions",
# https://learn.microsoft.com/rest/api/storageservices/performing-entity-group-transactions).
MAX_COMMIT_RECORDS = 100


class PortError(Exception):
    """Base of the errors an adapter may raise."""


class NotFoundError(PortError):
    """The scale set (or a record) does not exist."""


class TransientError(PortError):
    """Throttled, timed out, 5xx: try again on a later tick.

    ``retry_after`` (seconds) is ARM's ``Retry-After`` when it sent one: the service does not issue
    another write to the scale set before then (hammering a throttled API keeps it throttled)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ConflictError(PortError):
    """ARM refused the operation because of the resource's state (409)."""


class AccessDeniedError(PortError):
    """ARM answered 403: the identity may not do this. ``code`` is ARM's error code, e.g.
    ``AuthorizationFailed`` (the request's own scope) or ``LinkedAuthorizationFailed`` (a resource
    the request body references, such as the image of a model write)."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code


class ConcurrencyError(PortError):
    """An optimistic-concurrency write lost: somebody else changed the row first."""


class AlreadyExistsError(PortError):
    """An insert found the row already there."""


class InvalidRecordError(PortError):
    """The store cannot hold this record or key (a key breaking the store's key rules, an entity too
    large or not encodable). Retrying does not help: the input or the record has to change."""


class InvalidKeyError(InvalidRecordError):
    """A key (for Azure Tables: PartitionKey or RowKey) the store's key rules refuse."""


class RecordTooLargeError(InvalidRecordError):
    """A record exceeds what the state store can hold (Azure Tables: 64 KiB per string property,
    1 MiB per entity). Not transient: the same record fails the same way on every attempt."""


@dataclass(frozen=True)
class ProbeTarget:
    instance_id: str
    address: str  # the private IP


class Compute(Protocol):
    """The target scale set, through ARM (azure-mgmt-compute + azure-mgmt-network)."""

    def observe(self) -> FleetView:
        """The scale set model and every instance in ONE paged VM list (expand=instanceView) plus ONE
        network-interface listing for the private IPs. ``InstanceView.probe`` is left ``None``."""
        ...

    def read_model(self) -> FleetView:
        """The scale set alone (GET), with ``instances`` empty: for pre-flight checks."""
        ...

    def update_model(self, spec: ModelSpec) -> None:
        """Write the parts ``spec`` sets (extension and/or image) to the scale set model.

        Starts the ARM operation and may wait a short bounded time for it; never raises because the
        operation is still running: the next observation shows where it got to."""
        ...

    def read_image(self, image_id: str) -> None:
        """GET the image a release names (a managed image, a gallery image or a gallery image
        version), to learn before any write whether the identity can read it: returns when it can,
        raises ``AccessDeniedError`` (403) when it cannot, ``NotFoundError`` when it does not exist."""
        ...

    def upgrade_instances(self, instance_ids: Sequence[str]) -> None:
        """ONE ``manualupgrade`` call for all of ``instance_ids``; does not wait for completion."""
        ...

    def reimage_instances(self, instance_ids: Sequence[str]) -> None:
        """ONE reimage call for all of ``instance_ids``; does not wait for completion."""
        ...


class Prober(Protocol):
    def probe(self, targets: Sequence[ProbeTarget]) -> dict[str, ProbeResult]:
        """Probe every target concurrently; the result maps instance id -> ProbeResult."""
        ...


class StateStore(Protocol):
    """Rollouts, targets and events in Azure Tables, with ETag-based optimistic concurrency.

    Every ``put``/``update`` takes the record's ``etag`` (``None`` = insert) and returns the record
    with its new ``etag``; a lost race raises ``ConcurrencyError``, an insert of an existing row
    raises ``AlreadyExistsError``. A target's claim row and its rollouts live in one partition and
    change together through ``commit``.
    """

    def get_target(self, key: str) -> TargetRecord | None: ...

    def save_target(self, record: TargetRecord) -> TargetRecord:
        """``commit(record, [])``: the claim row alone."""
        ...

    def load(self, target: str) -> tuple[TargetRecord | None, list[Rollout]]:
        """The target's claim row and its rollouts (newest first), in one read of its partition."""
        ...

    def commit(
        self, target: TargetRecord | None, rollouts: Sequence[Rollout]
    ) -> tuple[TargetRecord | None, list[Rollout]]:
        """Write the claim row (unless None) and ``rollouts`` atomically: all of them or none.

        Each record with an ``etag`` is written only if its row still has that ETag; one without is
        inserted (and must not exist yet). Any condition failing raises ``ConcurrencyError`` and writes
        nothing. All records belong to one target (one partition), each at most once, at most
        ``MAX_COMMIT_RECORDS`` of them (else ``InvalidRecordError``); a commit too large to store
        raises ``RecordTooLargeError``. Returns the records as written, with their new ETags."""
        ...

    def get_rollout(self, target: str, rollout_id: str) -> Rollout | None: ...

    def insert_rollout(self, rollout: Rollout) -> Rollout: ...

    def update_rollout(self, rollout: Rollout) -> Rollout: ...

    def list_rollouts(self, target: str) -> list[Rollout]: ...

    def append_event(self, event: RolloutEvent) -> None: ...

    def list_events(self, target: str, rollout_id: str) -> list[RolloutEvent]: ...

    def check_fits(self, record: Rollout | TargetRecord) -> None:
        """Raise ``RecordTooLargeError`` (naming the part) if ``record`` could not be stored. No I/O:
        lets the service refuse a rollout before it claims the scale set or writes to ARM."""
        ...


@dataclass(frozen=True)
class BlobVersion:
    """One version of a blob, as its properties describe it: nothing of the content is read."""

    size: int
    etag: str


class ReleaseBlob(Protocol):
    """The blob a trigger fired for, not downloaded yet (in Azure: the SDK-type binding's BlobClient).

    ``container`` and ``name`` come from the binding, without a request."""

    @property
    def container(self) -> str: ...

    @property
    def name(self) -> str: ...

    @property
    def url(self) -> str: ...

    def version(self) -> BlobVersion:
        """Size and ETag (one properties request). ``NotFoundError`` if the blob is gone."""
        ...

    def read(self, version: BlobVersion) -> bytes:
        """Exactly ``version`` (conditional on its ETag), never more than ``version.size`` bytes.
        ``ConcurrencyError`` if the blob changed since, ``NotFoundError`` if it is gone."""
        ...


class ReleaseSource(Protocol):
    """The release container, read by name (``rollout.adapters.blobs.ReleaseBlobs``): what pre-flight
    reads to learn that the scripts a rollback or a revert needs still exist, and the what-if reads to
    plan a release by its blob name."""

    @property
    def container_url(self) -> str: ...

    def read(self, name: str, max_bytes: int = ...) -> tuple[str, bytes]:
        """``(url, content)``; ``NotFoundError`` when the blob does not exist, ``ValueError`` for a name
        the container refuses or a blob larger than ``max_bytes``."""
        ...


class ScriptChecker(Protocol):
    def problems(self, name: str, content: bytes) -> str | None:
        """Why a release script cannot run (a syntax error), or None."""
        ...


class SignalSource(Protocol):
    """Per-instance signals over a window, from Azure Monitor (metrics, Log Analytics) and the load
    balancer. Reads only; a source that cannot answer raises ``TransientError`` (the judge then
    decides on what it has, and says so)."""

    def read(self, instance_ids: Sequence[str], start: datetime, end: datetime) -> dict[str, InstanceSignals]:
        """What each of ``instance_ids`` did in ``[start, end)``; an instance the source knows nothing
        about is missing from the result."""
        ...


class Notifier(Protocol):
    def notify(self, rollout: Rollout, message: str) -> None: ...


class NotificationSink(Protocol):
    """Where the service puts a phase change for the channels (``rollout.notifications``): a queue.
    Quick and bounded; may raise anything: the service logs and records it and carries on."""

    def publish(self, notification: Notification) -> None: ...


class LookScheduler(Protocol):
    """Delivers the engine's own earlier look at a target (``rollout.cadence``): a tick of ``target``
    ``delay_seconds`` from now, for the rollout with ``stamp``. Raises ``PortError`` if it cannot."""

    def ask(self, target: str, stamp: str, share: int, delay_seconds: int) -> None: ...


class Clock(Protocol):
    def now(self) -> datetime: ...


__all__ = [
    "AccessDeniedError",
    "AlreadyExistsError",
    "BlobVersion",
    "Clock",
    "Compute",
    "ConcurrencyError",
    "ConflictError",
    "InstanceView",
    "InvalidKeyError",
    "InvalidRecordError",
    "MAX_COMMIT_RECORDS",
    "NotFoundError",
    "NotificationSink",
    "Notifier",
    "PortError",
    "ProbeTarget",
    "RecordTooLargeError",
    "ReleaseBlob",
    "ReleaseSource",
    "ScriptChecker",
    "SignalSource",
    "Prober",
    "StateStore",
    "TransientError",
]
