"""The state store on Azure Tables (azure-data-tables 12.7), with ETag optimistic concurrency.

Layout (every table name carries the optional ``STATE_TABLE_PREFIX``):

=====================  =====================  ==================================================
table                  PartitionKey           RowKey
=====================  =====================  ==================================================
``{p}rollouts``        target key             rollout id, and ``~target`` for the target's claim row
``{p}rolloutevents``   target key             ``<rollout id>~<yyyymmddHHMMSSffffff>~<sequence>``
``{p}targets``         ``"target"``           target key (the previous layout's claim rows: read only)
``{p}groupreleases``   group name             group release id (its release's rollout id)
=====================  =====================  ==================================================

Why this layout:

- A target's claim row (``TargetRecord``: who holds the scale set, what is stable on it) and its
  rollouts share ONE partition of ONE table, so a claim and a rollout change together in one entity
  group transaction (``commit``): a rollout starts in the same write that names it in the claim, and
  hands the scale set back in the same write that ends it. ``load`` is one partition query.
- An event's RowKey starts with the rollout id and then a fixed-width UTC timestamp, so a rollout's
  events are ONE range query inside one partition (``RowKey gt 'id~' and lt 'id~~'``: the timestamp
  starts with a digit, which sorts below ``~``), returned by the service already in time order. The
  tail is a per-process strictly increasing sequence (nanoseconds) plus random hex: events of one
  tick usually share the same ``at`` (the tick's ``now``), and the sequence keeps them in the order
  this host appended them, while the random part keeps two hosts from ever colliding. Appending is
  an insert, never an upsert, so the audit trail is never overwritten. Events are not part of the
  transactions: they are recorded after the state they describe is committed.
- The previous layout kept claim rows in a ``{p}targets`` table of their own. A target with no claim
  row in its partition reads that row (with no ETag); the first commit then inserts it in the
  partition, an insert that fails if another host moved it first. The old row is never written again.
- A group's releases (``rollout.waves``) share a partition of a table of their own: "the group's
  releases" is one partition query, and no query of the rollouts table ever meets one. Their audit
  trail is in ``rolloutevents`` under the partition ``group~<name>`` (``rollout.waves.group_partition``:
  ``~`` never occurs in a target key).

Entities: queryable scalars (``phase``, ``app``, ``version``, ``kind``, ``created_at``...) are their
own typed properties; nested structures (Release, ModelSpec with its ExtensionSpec, id tuples, event
data) are compact JSON strings. Datetimes are ``Edm.DateTime`` (tz-aware UTC in and out; naive ones
are refused rather than guessed). ``None`` is stored as an absent property for scalars and as JSON
``null`` for structures, so ``None`` and ``{}`` stay different (``protected_settings`` relies on it:
``None`` = unknown, ``{}`` = known to be empty). Every entity carries ``schema`` so a later layout
change can be recognised. Table limits are checked before the request, with the property named:
a string property holds at most 32 K UTF-16 code units (64 KiB) and an entity at most 1 MiB; nothing is
truncated silently.

``protected_settings`` of the baseline are stored because rollback has to write them back and Azure
never returns them. Table storage is encrypted at rest and only the function's identity can read it;
do not point STATE_TABLE_PREFIX at a shared account you would not trust with the extension's secrets.

Errors: the service only ever sees ``rollout.ports`` errors. ResourceNotFound -> ``None`` on reads
(``ConcurrencyError`` on conditional updates: the row was deleted under us), ResourceExists ->
``AlreadyExistsError``, HTTP 412 -> ``ConcurrencyError``, 408/429/5xx and connection failures ->
``TransientError``, anything else -> ``PortError`` with the service's message. A key that breaks
the key rules (``EntityKeyError``, a ``rollout.ports.InvalidKeyError``) and a record that cannot be
encoded or is too large (``EntityEncodingError``, a ``rollout.ports.InvalidRecordError``) are refused
before any request; text the client cannot encode (``UnicodeError``) is an ``InvalidRecordError``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import secrets
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, is_dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import Any, Final, TypeVar

from azure.core import MatchConditions
from azure.core.credentials import TokenCredential
from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.data.tables import (
    RequestTooLargeError,
    TableClient,
    TableEntity,
    TableServiceClient,
    TableTransactionError,
    TransactionOperation,
    UpdateMode,
)

from rollout import model
from rollout.judge import JudgeState
from rollout.model import (
    EventKind,
    ExtensionSpec,
    ModelSpec,
    Phase,
    Release,
    Rollout,
    RolloutEvent,
    TargetRecord,
)
from rollout.ports import (
    TABLE_PREFIX_PATTERN,
    AlreadyExistsError,
    ConcurrencyError,
    InvalidKeyError,
    InvalidRecordError,
    NotFoundError,
    PortError,
    RecordTooLargeError,
    TransientError,
)
from rollout.targets import OnFailure
from rollout.waves import GroupPhase, GroupRelease, GroupTarget

SCHEMA_VERSION: Final = 1
# The claim row of a target: in the rollouts table, in the target's own partition, beside its rollouts
# (so the claim and a rollout change in ONE entity group transaction). ``~`` sorts after every rollout
# id and no rollout id can start with it (``rollout.releases.ROLLOUT_ID_RE``).
CLAIM_ROW_KEY: Final = "~target"
# The layout before: one ``{p}targets`` table, every target in partition "target", RowKey the target
# key. Still read when a target has no claim row yet (docs/design.md, "Who holds the scale set").
TARGETS_PARTITION: Final = "target"
# Entity group transactions ("Performing entity group transactions",
# https://learn.microsoft.com/rest/api/storageservices/performing-entity-group-transactions): one
# PartitionKey, each entity at most once, at most 100 entities and 4 MiB of payload, all or nothing.
MAX_TRANSACTION_OPERATIONS: Final = 100
MAX_TRANSACTION_BYTES: Final = 4 * 1024 * 1024
# What a change set adds per operation around the entity's JSON (MIME part headers, the request line
# with the entity's URL, an If-Match header): generously bounded rather than computed.
_TRANSACTION_PART_OVERHEAD: Final = 2048
EVENT_KEY_SEPARATOR: Final = "~"

# Azure Table limits (https://learn.microsoft.com/rest/api/storageservices/understanding-the-table-service-data-model)
MAX_STRING_PROPERTY_BYTES: Final = 64 * 1024  # UTF-16: 32 K code units
MAX_ENTITY_BYTES: Final = 1024 * 1024
MAX_KEY_BYTES: Final = 1024  # keys hold at most 1 KiB of UTF-16: 512 BMP characters, fewer outside the BMP
# "Characters Disallowed in Key Fields" (same page): '/', '\\', '#', '?', U+0000-U+001F, U+007F-U+009F.
_FORBIDDEN_KEY_CHARS = re.compile(r"[/\\#?\x00-\x1f\x7f-\x9f]")

# A tick must finish in seconds: fail over to the next tick instead of the SDK's default
# of ten retries with exponential back-off. Callers may override any of these.
DEFAULT_CLIENT_OPTIONS: Final[Mapping[str, Any]] = {
    "retry_total": 2,
    "retry_backoff_factor": 0.4,
    "connection_timeout": 5,
    "read_timeout": 20,
}


class EntityEncodingError(InvalidRecordError, ValueError):
    """A record cannot be stored as a Table entity (bad key, naive datetime, unknown JSON value).

    A ``rollout.ports.InvalidRecordError``: callers that only know the ports see "the store cannot
    hold this", never an adapter-specific exception (and it stays a ValueError for older callers)."""


class EntityKeyError(EntityEncodingError, InvalidKeyError):
    """A PartitionKey or RowKey that Azure Tables' key rules refuse (checked before any request)."""


class EntityTooLargeError(EntityEncodingError, RecordTooLargeError):
    """A property or the whole entity exceeds what Azure Tables accepts. A ``RecordTooLargeError``
    too, so the service (which sees only port errors) can record why instead of failing."""


# --------------------------------------------------------------------------------------------
# Pure conversions: records <-> entities (no I/O; unit-tested in tests/unit/test_entities.py)
# --------------------------------------------------------------------------------------------


def _check_key(value: str, what: str) -> str:
    """``value`` if Azure Tables accepts it as a PartitionKey/RowKey, else ``EntityKeyError`` (a PortError).

    Checked before any request, so a hostile key never reaches the wire (and the message never echoes
    more than the start of it)."""
    if not isinstance(value, str) or not value:
        raise EntityKeyError(f"{what} must be a non-empty string")
    shown = _shorten(value)
    # A lone surrogate cannot be encoded at all (not as UTF-16, not as UTF-8 for the request URL).
    _checked_utf16_bytes(
        value,
        f"{what}={shown}",
        f"{what} is {len(value)} characters (<size> bytes as UTF-16)",
        MAX_KEY_BYTES,
        "Azure Tables keys hold at most 1 KiB",
        EntityKeyError,
        EntityKeyError,
    )
    if _FORBIDDEN_KEY_CHARS.search(value):
        raise EntityKeyError(
            f"{what}={shown} contains a character Azure Tables forbids in keys ('/', '\\', '#', '?', control)"
        )
    return value


def _unpaired_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _shorten(text: str, limit: int = 60) -> str:
    """``repr`` of at most ``limit`` characters of ``text``: error messages never echo a huge input."""
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}... ({len(text)} characters)"


def _encode_dt(value: datetime, what: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise EntityEncodingError(f"{what} is a naive datetime; the state store takes tz-aware UTC only")
    return value.astimezone(UTC)


def _decode_dt(value: Any) -> datetime:
    """Plain tz-aware UTC datetime from whatever the SDK or a test hands us."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if not isinstance(value, datetime):
        raise EntityEncodingError(f"expected a datetime, got {type(value).__name__}")
    if value.tzinfo is None:
        # The service stores UTC; the SDK marks it so, but a raw mapping might not.
        value = value.replace(tzinfo=UTC)
    value = value.astimezone(UTC)
    # Drop the SDK's TablesEntityDatetime subclass: records hold plain datetimes.
    return datetime(value.year, value.month, value.day, value.hour, value.minute, value.second, value.microsecond, UTC)


def _opt_dt(value: Any) -> datetime | None:
    return None if value is None else _decode_dt(value)


def _opt_encode_dt(value: datetime | None, what: str) -> datetime | None:
    return None if value is None else _encode_dt(value, what)


def _present(**properties: Any) -> dict[str, Any]:
    """The optional properties that have a value: an absent property reads back as None."""
    return {name: value for name, value in properties.items() if value is not None}


def _json_default(value: Any) -> Any:
    """Event evidence may carry datetimes, enums, sets or dataclasses; they come back as JSON types."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, set | frozenset):
        return sorted(value, key=str)
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    raise EntityEncodingError(f"cannot store a {type(value).__name__} as JSON")


def _dumps(value: Any) -> str:
    return json.dumps(
        value, separators=(",", ":"), sort_keys=True, ensure_ascii=False, allow_nan=False, default=_json_default
    )


def release_to_dict(release: Release) -> dict[str, Any]:
    return {
        "kind": release.kind.value,
        "app": release.app,
        "version": release.version,
        "blob_name": release.blob_name,
        "blob_url": release.blob_url,
        "sha256": release.sha256,
        "image_id": release.image_id,
        # Only when set: rows of releases to the default group stay as they were.
        **({"group": release.group} if release.group is not None else {}),
    }


def release_from_dict(data: Mapping[str, Any]) -> Release:
    return Release(
        kind=model.ReleaseKind(data["kind"]),
        app=data["app"],
        version=int(data["version"]),
        blob_name=data["blob_name"],
        blob_url=data["blob_url"],
        sha256=data["sha256"],
        image_id=data.get("image_id"),
        group=data.get("group"),
    )


def extension_to_dict(ext: ExtensionSpec) -> dict[str, Any]:
    return {
        "name": ext.name,
        "publisher": ext.publisher,
        "type": ext.type,
        "type_handler_version": ext.type_handler_version,
        "settings": dict(ext.settings),
        # null (unknown) and {} (known empty) must stay distinct: see ExtensionSpec.
        "protected_settings": None if ext.protected_settings is None else dict(ext.protected_settings),
        "auto_upgrade_minor_version": ext.auto_upgrade_minor_version,
        "force_update_tag": ext.force_update_tag,
        # null = absent on the scale set (not sent back); rows written before these existed read as null.
        "enable_automatic_upgrade": ext.enable_automatic_upgrade,
        "provision_after_extensions": ext.provision_after_list,
        "suppress_failures": ext.suppress_failures,
        "protected_settings_from_key_vault": None
        if ext.protected_settings_from_key_vault is None
        else dict(ext.protected_settings_from_key_vault),
    }


def extension_from_dict(data: Mapping[str, Any]) -> ExtensionSpec:
    after = data.get("provision_after_extensions")
    return ExtensionSpec(
        name=data["name"],
        publisher=data["publisher"],
        type=data["type"],
        type_handler_version=data["type_handler_version"],
        settings=data["settings"],
        protected_settings=data.get("protected_settings"),
        auto_upgrade_minor_version=bool(data.get("auto_upgrade_minor_version", True)),
        force_update_tag=data.get("force_update_tag"),
        enable_automatic_upgrade=data.get("enable_automatic_upgrade"),
        provision_after_extensions=None if after is None else tuple(after),
        suppress_failures=data.get("suppress_failures"),
        protected_settings_from_key_vault=data.get("protected_settings_from_key_vault"),
    )


def model_to_dict(spec: ModelSpec) -> dict[str, Any]:
    return {
        "extension": None if spec.extension is None else extension_to_dict(spec.extension),
        "image_id": spec.image_id,
    }


def model_from_dict(data: Mapping[str, Any]) -> ModelSpec:
    ext = data.get("extension")
    return ModelSpec(extension=None if ext is None else extension_from_dict(ext), image_id=data.get("image_id"))


def _opt_json(value: Any) -> Any:
    """JSON property -> Python; a missing property reads as None (the ``null`` we would have written)."""
    return None if value is None else json.loads(value)


def rollout_to_entity(rollout: Rollout) -> dict[str, Any]:
    entity: dict[str, Any] = {
        "PartitionKey": _check_key(rollout.target, "rollout.target"),
        "RowKey": _check_key(rollout.id, "rollout.id"),
        "schema": SCHEMA_VERSION,
        "phase": rollout.phase.value,
        "kind": rollout.release.kind.value,
        "app": rollout.release.app,
        "version": rollout.release.version,
        "release": _dumps(release_to_dict(rollout.release)),
        "desired": _dumps(model_to_dict(rollout.desired)),
        "baseline": _dumps(None if rollout.baseline is None else model_to_dict(rollout.baseline)),
        "created_at": _encode_dt(rollout.created_at, "created_at"),
        "updated_at": _encode_dt(rollout.updated_at, "updated_at"),
        "phase_since": _encode_dt(rollout.phase_since, "phase_since"),
        "last_progress_at": _encode_dt(rollout.last_progress_at, "last_progress_at"),
        "canary_ids": _dumps(list(rollout.canary_ids)),
        "batch_ids": _dumps(list(rollout.batch_ids)),
        "batch_number": rollout.batch_number,
        "upgraded_ids": _dumps(list(rollout.upgraded_ids)),
        "rollback_ids": _dumps(list(rollout.rollback_ids)),
        "reimaged_ids": _dumps(list(rollout.reimaged_ids)),
        "foreign_model": rollout.foreign_model,
        "known_ids": _dumps(list(rollout.known_ids)),
        "unsent_ids": _dumps(list(rollout.unsent_ids)),
        "reimage_pending": _dumps(list(rollout.reimage_pending)),
        "unhealthy_streak": rollout.unhealthy_streak,
        "skip_bake": rollout.skip_bake,
        "promote_full": rollout.promote_full,
        "reason": rollout.reason,
        "rollback_reason": rollout.rollback_reason,
    }
    if EVENT_KEY_SEPARATOR in rollout.id:
        # The events range query relies on the id not containing the separator.
        raise EntityKeyError(f"rollout.id={_shorten(rollout.id)} must not contain {EVENT_KEY_SEPARATOR!r}")
    # ``resume_to`` (Paused) and ``failed_from`` (Failed) are at most one at a time; both are written to
    # ``paused_from``, the one property rows held before they were split, so that rows stay readable both
    # ways. ``failed_from`` is written again under its own name to tell the two apart on reading.
    stopped_at = rollout.resume_to or rollout.failed_from
    entity.update(
        _present(
            batch_started_at=_opt_encode_dt(rollout.batch_started_at, "batch_started_at"),
            paused_from=None if stopped_at is None else stopped_at.value,
            failed_from=None if rollout.failed_from is None else rollout.failed_from.value,
            hold_until=_opt_encode_dt(rollout.hold_until, "hold_until"),
            reimage_requested_at=_opt_encode_dt(rollout.reimage_requested_at, "reimage_requested_at"),
            revert=True if rollout.revert else None,  # absent on every other row
            # The judge's sufficient statistics (a few hundred bytes: rollout.judge), during and after a bake.
            judge=None if rollout.judge is None else _dumps(rollout.judge.to_json()),
            unhealthy_before=_dumps(list(rollout.unhealthy_before)) if rollout.unhealthy_before else None,
        )
    )
    check_entity_size(entity, f"rollout {rollout.target}/{rollout.id}")
    return entity


def rollout_from_entity(entity: Mapping[str, Any], etag: str | None = None) -> Rollout:
    baseline = _opt_json(entity.get("baseline"))
    phase = Phase(entity["phase"])
    resume_to, failed_from = _stopped_at(phase, entity.get("paused_from"), entity.get("failed_from"))
    return Rollout(
        id=entity["RowKey"],
        target=entity["PartitionKey"],
        release=release_from_dict(json.loads(entity["release"])),
        phase=phase,
        desired=model_from_dict(json.loads(entity["desired"])),
        baseline=None if baseline is None else model_from_dict(baseline),
        created_at=_decode_dt(entity["created_at"]),
        updated_at=_decode_dt(entity["updated_at"]),
        phase_since=_decode_dt(entity["phase_since"]),
        last_progress_at=_decode_dt(entity["last_progress_at"]),
        canary_ids=tuple(json.loads(entity.get("canary_ids") or "[]")),
        batch_ids=tuple(json.loads(entity.get("batch_ids") or "[]")),
        batch_started_at=_opt_dt(entity.get("batch_started_at")),
        batch_number=int(entity.get("batch_number", 0)),
        upgraded_ids=tuple(json.loads(entity.get("upgraded_ids") or "[]")),
        rollback_ids=tuple(json.loads(entity.get("rollback_ids") or "[]")),
        reimaged_ids=tuple(json.loads(entity.get("reimaged_ids") or "[]")),
        foreign_model=entity.get("foreign_model", "") or "",
        known_ids=tuple(json.loads(entity.get("known_ids") or "[]")),
        unsent_ids=tuple(json.loads(entity.get("unsent_ids") or "[]")),
        reimage_pending=tuple(json.loads(entity.get("reimage_pending") or "[]")),
        reimage_requested_at=_opt_dt(entity.get("reimage_requested_at")),
        unhealthy_streak=int(entity.get("unhealthy_streak", 0)),
        resume_to=resume_to,
        failed_from=failed_from,
        hold_until=_opt_dt(entity.get("hold_until")),
        skip_bake=bool(entity.get("skip_bake", False)),
        promote_full=bool(entity.get("promote_full", False)),
        reason=entity.get("reason", ""),
        rollback_reason=entity.get("rollback_reason", ""),
        revert=bool(entity.get("revert", False)),
        judge=None if not entity.get("judge") else JudgeState.from_json(json.loads(entity["judge"])),
        unhealthy_before=tuple(json.loads(entity.get("unhealthy_before") or "[]")),
        etag=etag,
    )


def _stopped_at(phase: Phase, paused_from: str | None, failed_from: str | None) -> tuple[Phase | None, Phase | None]:
    """``(resume_to, failed_from)`` from a row. A row without ``failed_from`` was written before the split
    (or is not Failed): its ``paused_from`` meant "failed from" when the rollout is Failed, "resume to" otherwise."""
    if failed_from is not None:
        return None, Phase(failed_from)
    if paused_from is None:
        return None, None
    if phase is Phase.FAILED:
        return None, Phase(paused_from)
    return Phase(paused_from), None


def target_to_entity(record: TargetRecord, *, legacy: bool = False) -> dict[str, Any]:
    """The target's claim row (``legacy``: as the previous layout stored it in ``{p}targets``)."""
    key = _check_key(record.key, "target.key")
    entity: dict[str, Any] = {
        "PartitionKey": TARGETS_PARTITION if legacy else key,
        "RowKey": key if legacy else CLAIM_ROW_KEY,
        "schema": SCHEMA_VERSION,
        "stable_release": _dumps(None if record.stable_release is None else release_to_dict(record.stable_release)),
        "stable_model": _dumps(None if record.stable_model is None else model_to_dict(record.stable_model)),
    }
    entity.update(
        _present(
            active_rollout_id=record.active_rollout_id,
            stable_version=record.stable_version,
            updated_at=_opt_encode_dt(record.updated_at, "updated_at"),
        )
    )
    check_entity_size(entity, f"target {record.key}")
    return entity


def target_from_entity(entity: Mapping[str, Any], etag: str | None = None) -> TargetRecord:
    stable_release = _opt_json(entity.get("stable_release"))
    stable_model = _opt_json(entity.get("stable_model"))
    stable_version = entity.get("stable_version")
    claim_row = entity["RowKey"] == CLAIM_ROW_KEY  # else a row of the previous layout
    return TargetRecord(
        key=entity["PartitionKey"] if claim_row else entity["RowKey"],
        active_rollout_id=entity.get("active_rollout_id"),
        stable_version=None if stable_version is None else int(stable_version),
        stable_release=None if stable_release is None else release_from_dict(stable_release),
        stable_model=None if stable_model is None else model_from_dict(stable_model),
        updated_at=_opt_dt(entity.get("updated_at")),
        etag=etag,
    )


# A group release's targets are one JSON list, kept small (a group may have hundreds of targets): the
# previous releases once each (``previous``, targets point at them by index), the flags only when set,
# the rollout id only when it is not the group release's own; cut into string properties of at most
# this many characters (``targets``, ``targets_1``, ...).
GROUP_TARGETS_CHUNK_CHARS: Final = 15_000  # 32 K UTF-16 code units even if every character took two


def _group_targets_json(record: GroupRelease) -> tuple[str, str]:
    previous: list[Release] = []
    targets: list[dict[str, Any]] = []
    for t in record.targets:
        item: dict[str, Any] = {"k": t.key, "w": t.wave}
        if t.rollout_id:
            item["s"] = 1 if t.rollout_id == record.id else t.rollout_id
        if t.previous is not None:
            if t.previous not in previous:
                previous.append(t.previous)
            item["p"] = previous.index(t.previous)
        if t.revert_id:
            item["r"] = t.revert_id
        if t.excluded:
            item["x"] = 1
        if t.revert_skipped:
            item["n"] = 1
        targets.append(item)
    return _dumps(targets), _dumps([release_to_dict(r) for r in previous])


def _group_targets(record_id: str, targets_json: str, previous_json: str) -> tuple[GroupTarget, ...]:
    previous = [release_from_dict(r) for r in json.loads(previous_json or "[]")]
    out = []
    for item in json.loads(targets_json or "[]"):
        started = item.get("s")
        out.append(
            GroupTarget(
                key=item["k"],
                wave=int(item["w"]),
                rollout_id=record_id if started == 1 else (started or ""),
                previous=None if item.get("p") is None else previous[int(item["p"])],
                revert_id=item.get("r") or "",
                excluded=bool(item.get("x")),
                revert_skipped=bool(item.get("n")),
            )
        )
    return tuple(out)


def group_release_to_entity(record: GroupRelease) -> dict[str, Any]:
    targets, previous = _group_targets_json(record)
    chunks = [targets[i : i + GROUP_TARGETS_CHUNK_CHARS] for i in range(0, len(targets), GROUP_TARGETS_CHUNK_CHARS)]
    entity: dict[str, Any] = {
        "PartitionKey": _check_key(record.group, "group release.group"),
        "RowKey": _check_key(record.id, "group release.id"),
        "schema": SCHEMA_VERSION,
        "phase": record.phase.value,
        "app": record.release.app,
        "version": record.release.version,
        "release": _dumps(release_to_dict(record.release)),
        "targets": chunks[0],
        **{f"targets_{n}": chunk for n, chunk in enumerate(chunks[1:], start=1)},
        "previous": previous,
        "wave_count": record.wave_count,
        "wave": record.wave,
        "wave_bake_seconds": record.wave_bake_seconds,
        "on_failure": record.on_failure.value,
        "skip_wave_bake": record.skip_wave_bake,
        "halt_rollback": record.halt_rollback,
        "created_at": _encode_dt(record.created_at, "created_at"),
        "updated_at": _encode_dt(record.updated_at, "updated_at"),
        "phase_since": _encode_dt(record.phase_since, "phase_since"),
        "reason": record.reason,
    }
    entity.update(
        _present(
            wave_completed_at=_opt_encode_dt(record.wave_completed_at, "wave_completed_at"),
            resume_to=None if record.resume_to is None else record.resume_to.value,
            ending=None if record.ending is None else record.ending.value,
            failed_wave=record.failed_wave,
        )
    )
    check_entity_size(entity, f"group release {record.group}/{record.id}")
    return entity


def group_release_from_entity(entity: Mapping[str, Any], etag: str | None = None) -> GroupRelease:
    chunks = [entity.get("targets") or ""]
    while f"targets_{len(chunks)}" in entity:
        chunks.append(entity[f"targets_{len(chunks)}"])
    targets = _group_targets(entity["RowKey"], "".join(chunks), entity.get("previous") or "[]")
    resume_to, ending, failed_wave = entity.get("resume_to"), entity.get("ending"), entity.get("failed_wave")
    return GroupRelease(
        id=entity["RowKey"],
        group=entity["PartitionKey"],
        release=release_from_dict(json.loads(entity["release"])),
        phase=GroupPhase(entity["phase"]),
        targets=targets,
        wave_count=int(entity.get("wave_count", 0)),
        created_at=_decode_dt(entity["created_at"]),
        updated_at=_decode_dt(entity["updated_at"]),
        phase_since=_decode_dt(entity["phase_since"]),
        wave_bake_seconds=int(entity.get("wave_bake_seconds", 0)),
        on_failure=OnFailure(entity.get("on_failure", OnFailure.HALT.value)),
        wave=int(entity.get("wave", 0)),
        wave_completed_at=_opt_dt(entity.get("wave_completed_at")),
        skip_wave_bake=bool(entity.get("skip_wave_bake", False)),
        resume_to=None if resume_to is None else GroupPhase(resume_to),
        ending=None if ending is None else GroupPhase(ending),
        halt_rollback=bool(entity.get("halt_rollback", True)),
        failed_wave=None if failed_wave is None else int(failed_wave),
        reason=entity.get("reason", ""),
        etag=etag,
    )


_sequence_lock = threading.Lock()
_last_sequence = 0


def _next_sequence() -> int:
    """Strictly increasing in this process (wall-clock nanoseconds, bumped on ties)."""
    global _last_sequence
    with _sequence_lock:
        _last_sequence = max(_last_sequence + 1, time.time_ns())
        return _last_sequence


def event_row_key(rollout_id: str, at: datetime, sequence: int, salt: str) -> str:
    """``<rollout id>~<20-digit UTC timestamp>~<20-digit sequence><salt>``: sorts by time, then append order."""
    stamp = _encode_dt(at, "event.at").strftime("%Y%m%d%H%M%S%f")
    return f"{rollout_id}{EVENT_KEY_SEPARATOR}{stamp}{EVENT_KEY_SEPARATOR}{sequence:020d}{salt}"


def event_range(rollout_id: str) -> tuple[str, str]:
    """The exclusive RowKey bounds holding every event of ``rollout_id`` (see the module docstring)."""
    return f"{rollout_id}{EVENT_KEY_SEPARATOR}", f"{rollout_id}{EVENT_KEY_SEPARATOR}{EVENT_KEY_SEPARATOR}"


def event_to_entity(event: RolloutEvent, row_key: str | None = None) -> dict[str, Any]:
    """``row_key`` defaults to a fresh unique key: two appends of the same event are two rows."""
    if EVENT_KEY_SEPARATOR in event.rollout_id:
        raise EntityKeyError(f"event.rollout_id={_shorten(event.rollout_id)} must not contain {EVENT_KEY_SEPARATOR!r}")
    if row_key is None:
        row_key = event_row_key(event.rollout_id, event.at, _next_sequence(), secrets.token_hex(4))
    entity: dict[str, Any] = {
        "PartitionKey": _check_key(event.target, "event.target"),
        "RowKey": _check_key(row_key, "event row key"),
        "schema": SCHEMA_VERSION,
        "rollout_id": event.rollout_id,
        "at": _encode_dt(event.at, "event.at"),
        "kind": event.kind.value,
        "message": event.message,
        "actor": event.actor,
        "data": _dumps(dict(event.data)),
    }
    if event.phase is not None:
        entity["phase"] = event.phase.value
    check_entity_size(entity, f"event {event.kind} of {event.target}/{event.rollout_id}")
    return entity


def event_from_entity(entity: Mapping[str, Any]) -> RolloutEvent:
    phase = entity.get("phase")
    return RolloutEvent(
        rollout_id=entity["rollout_id"],
        target=entity["PartitionKey"],
        at=_decode_dt(entity["at"]),
        kind=EventKind(entity["kind"]),
        message=entity.get("message", ""),
        actor=entity.get("actor", "controller"),
        phase=None if phase is None else Phase(phase),
        data=json.loads(entity.get("data") or "{}"),
    )


def _utf16_bytes(text: str) -> int:
    return len(text.encode("utf-16-le", "surrogatepass"))


def _checked_utf16_bytes(
    value: str,
    label: str,
    sized_label: str,
    limit: int,
    limit_text: str,
    not_text: type[Exception],
    too_large: type[Exception],
) -> int:
    """``value``'s size as UTF-16 (how Azure Tables counts it), or ``not_text`` for an unpaired
    surrogate, ``too_large`` past ``limit`` bytes; the messages start with ``label``/``sized_label`` (in
    which ``<size>`` stands for the size)."""
    if _unpaired_surrogate(value):
        raise not_text(f"{label} is not valid Unicode text (an unpaired surrogate)")
    size = _utf16_bytes(value)
    if size > limit:
        raise too_large(f"{sized_label.replace('<size>', str(size))}; {limit_text}")
    return size


def check_entity_size(entity: Mapping[str, Any], what: str) -> int:
    """Raise ``EntityTooLargeError`` naming the property when Azure would refuse the entity.

    Sizes follow the documented formula: 4 bytes + keys as UTF-16 + per property 8 bytes +
    the name as UTF-16 + the value (strings: UTF-16 + 4; DateTime/Int64/Double 8; Int32 4; bool 1).
    Returns the estimate (handy for tests and benchmarks).
    """
    total = 4
    for name, value in entity.items():
        if name in ("PartitionKey", "RowKey"):
            total += _utf16_bytes(str(value))
            continue
        if isinstance(value, str):
            label = f"{what}: property {name!r}"
            limit = f"Azure Tables stores at most {MAX_STRING_PROPERTY_BYTES} (32 K characters) per string property"
            sized = f"{label} is <size> bytes as UTF-16"
            size = _checked_utf16_bytes(
                value, label, sized, MAX_STRING_PROPERTY_BYTES, limit, EntityEncodingError, EntityTooLargeError
            )
            value_size = size + 4
        elif isinstance(value, bool):
            value_size = 1
        elif isinstance(value, int):
            value_size = 4 if -(2**31) <= value < 2**31 else 8
        else:
            value_size = 8
        total += 8 + _utf16_bytes(name) + value_size
    if total > MAX_ENTITY_BYTES:
        raise EntityTooLargeError(f"{what}: the entity is about {total} bytes; Azure Tables stores at most 1 MiB")
    return total


def check_transaction(entities: Sequence[Mapping[str, Any]]) -> None:
    """Refuse, before any request, what an entity group transaction may not hold: more than one
    PartitionKey, an entity twice, more than 100 entities (``InvalidRecordError``), or more than
    4 MiB of payload (``EntityTooLargeError``, a ``RecordTooLargeError``)."""
    partitions = {e["PartitionKey"] for e in entities}
    if len(partitions) > 1:
        shown = ", ".join(sorted(_shorten(str(p), 40) for p in partitions))
        raise InvalidRecordError(f"a transaction spans one partition; these entities are in {shown}")
    keys = [e["RowKey"] for e in entities]
    twice = sorted({k for k in keys if keys.count(k) > 1})
    if twice:
        raise InvalidRecordError(f"a transaction writes an entity at most once; {_shorten(', '.join(twice))} twice")
    if len(entities) > MAX_TRANSACTION_OPERATIONS:
        raise InvalidRecordError(
            f"a transaction holds at most {MAX_TRANSACTION_OPERATIONS} entities; this one has {len(entities)}"
        )
    payload = sum(len(json.dumps(e, default=str).encode()) + _TRANSACTION_PART_OVERHEAD for e in entities)
    if payload > MAX_TRANSACTION_BYTES:
        raise EntityTooLargeError(
            f"the transaction is about {payload} bytes; Azure Tables accepts at most 4 MiB per transaction"
        )


# --------------------------------------------------------------------------------------------
# The adapter
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def map_storage_errors(what: str) -> Iterator[None]:
    """Translate azure-core errors into rollout.ports errors (the service never sees azure.*)."""
    try:
        yield
    except PortError:
        raise  # our own checks (EntityKeyError...) inside the block are ports errors already
    except ResourceExistsError as exc:
        raise AlreadyExistsError(f"{what}: already exists") from exc
    except ResourceNotFoundError as exc:
        raise NotFoundError(f"{what}: not found") from exc
    except HttpResponseError as exc:
        status = exc.status_code
        if status == 412:
            raise ConcurrencyError(f"{what}: the row changed since it was read (ETag mismatch)") from exc
        if status is None or status in (408, 429) or status >= 500:
            raise TransientError(f"{what}: HTTP {status}: {exc.reason or exc.message}") from exc
        raise PortError(f"{what}: HTTP {status}: {exc.message}") from exc
    except (ServiceRequestError, ServiceResponseError) as exc:
        raise TransientError(f"{what}: {exc}") from exc
    except UnicodeError as exc:
        # Text the client cannot encode for the wire: the request never left, and would fail the same
        # way again. (Only UnicodeError: callers such as the blobs adapter raise their own ValueErrors
        # inside this block and expect them to pass through.)
        raise InvalidRecordError(f"{what}: the request cannot be encoded: {exc}") from exc


# (account url, table name) pairs this process has already created: creating is one round trip
# per table per process, not one per call.
_ensured_tables: set[tuple[str, str]] = set()
_ensured_lock = threading.Lock()


class TableStateStore:
    """``StateStore`` on Azure Tables. Thread-safe as far as the SDK clients are (they are)."""

    def __init__(self, service: TableServiceClient, prefix: str = "") -> None:
        if not TABLE_PREFIX_PATTERN.match(prefix):
            raise ValueError(f"table prefix {prefix!r} must be letters and digits, starting with a letter")
        self._service = service
        self.prefix = prefix
        self.rollouts_table = f"{prefix}rollouts"
        self.events_table = f"{prefix}rolloutevents"
        self.targets_table = f"{prefix}targets"
        self.group_releases_table = f"{prefix}groupreleases"
        self._clients: dict[str, TableClient] = {}
        self._clients_lock = threading.Lock()
        self._legacy_client: TableClient | None = None

    @classmethod
    def from_connection_string(cls, connection_string: str, prefix: str = "", **client_options: Any) -> TableStateStore:
        options = {**DEFAULT_CLIENT_OPTIONS, **client_options}
        return cls(TableServiceClient.from_connection_string(connection_string, **options), prefix)

    @classmethod
    def from_service_uri(
        cls, uri: str, credential: TokenCredential, prefix: str = "", **client_options: Any
    ) -> TableStateStore:
        """Managed identity: ``uri`` is e.g. ``https://<account>.table.core.windows.net``."""
        options = {**DEFAULT_CLIENT_OPTIONS, **client_options}
        return cls(TableServiceClient(endpoint=uri, credential=credential, **options), prefix)

    def close(self) -> None:
        for client in [*self._clients.values(), *([self._legacy_client] if self._legacy_client else [])]:
            client.close()
        self._service.close()

    def __enter__(self) -> TableStateStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _table(self, name: str) -> TableClient:
        client = self._clients.get(name)
        if client is not None:
            return client
        with self._clients_lock:
            client = self._clients.get(name)
            if client is None:
                key = (self._service.url, name)
                with _ensured_lock:
                    if key not in _ensured_tables:
                        with map_storage_errors(f"create table {name}"):
                            # Tolerates "already exists", including a concurrent creator on another host.
                            self._service.create_table_if_not_exists(name)
                        _ensured_tables.add(key)
                client = self._service.get_table_client(name)
                self._clients[name] = client
        return client

    def _read(self, table_name: str, partition: str, row: str, what: str) -> TableEntity | None:
        """One entity by its keys, or None when there is none."""
        table = self._table(table_name)
        with map_storage_errors(what):
            try:
                return table.get_entity(partition, row)
            except ResourceNotFoundError:
                return None

    # -- targets ------------------------------------------------------------------------------

    def get_target(self, key: str) -> TargetRecord | None:
        """The target's claim row; if it has none yet, its row of the previous layout (``{p}targets``)
        with no ETag, so that the first ``commit`` inserts it in its new place (and fails if another
        host moved it over first)."""
        _check_key(key, "target key")  # keys are checked before any request, table creation included
        entity = self._read(self.rollouts_table, key, CLAIM_ROW_KEY, f"read target {key}")
        if entity is not None:
            return target_from_entity(entity, entity.metadata.get("etag"))
        return self._legacy_target(key)

    def _legacy_target(self, key: str) -> TargetRecord | None:
        """The previous layout's row, if that table and row exist. The table is never created: a
        deployment that never ran the previous version has none (a missing table reads as 404)."""
        with self._clients_lock:
            table = self._legacy_client or self._service.get_table_client(self.targets_table)
            self._legacy_client = table
        with map_storage_errors(f"read target {key} (previous layout)"):
            try:
                entity = table.get_entity(TARGETS_PARTITION, key)
            except ResourceNotFoundError:
                return None
        return target_from_entity(entity, None)

    def save_target(self, record: TargetRecord) -> TargetRecord:
        """Insert (etag None) or conditionally replace the claim row alone: ``commit(record, [])``.

        The race it prevents (two timer ticks, e.g. after a scale-out, on two hosts)::

            host A                              host B
            get_target -> etag "1", no rollout  get_target -> etag "1", no rollout
            save_target(active=R1, etag "1")    save_target(active=R2, etag "1")
              -> 204, etag "2"  (A holds it)      -> 412 -> ConcurrencyError: B exits cleanly

        The first claim (no row yet) races the same way on insert: the loser gets 409, reported
        as ConcurrencyError too, because for the caller it is the same lost race.
        """
        saved, _ = self.commit(record, [])
        assert saved is not None
        return saved

    def load(self, target: str) -> tuple[TargetRecord | None, list[Rollout]]:
        """The target's claim row and its rollouts (newest first): ONE partition query. Like
        ``get_target``, a target without a claim row reads its row of the previous layout."""
        _check_key(target, "target")
        table = self._table(self.rollouts_table)
        with map_storage_errors(f"load partition {target}"):
            entities = list(table.query_entities("PartitionKey eq @pk", parameters={"pk": target}))
        claim = next((e for e in entities if e["RowKey"] == CLAIM_ROW_KEY), None)
        record = target_from_entity(claim, claim.metadata.get("etag")) if claim is not None else None
        rollouts = [rollout_from_entity(e, e.metadata.get("etag")) for e in entities if e["RowKey"] != CLAIM_ROW_KEY]
        rollouts.sort(key=lambda r: (r.created_at, r.id), reverse=True)
        return (record if claim is not None else self._legacy_target(target)), rollouts

    def commit(
        self, target: TargetRecord | None, rollouts: Sequence[Rollout]
    ) -> tuple[TargetRecord | None, list[Rollout]]:
        """Write the claim row and ``rollouts`` in ONE entity group transaction: all or nothing.

        Each record with an ``etag`` is a REPLACE conditional on it (If-Match), each without one an
        insert. ``TableClient.submit_transaction`` (azure-data-tables 12.7,
        ``azure/data/tables/_table_client.py``: "If any one of these operations fails, the entire
        transaction will be rejected") sends them as one change set; the service applies all of them
        or none ("Performing entity group transactions",
        https://learn.microsoft.com/rest/api/storageservices/performing-entity-group-transactions:
        one PartitionKey, each entity once, at most 100 entities and 4 MiB). Those limits are checked
        here before any request (``check_transaction``). A lost race (412 on a changed row, 409 on an
        insert another writer made first, 404 on a row deleted since) raises ``ConcurrencyError``,
        and then nothing was written. Returns the records as written, with their new ETags."""
        records: list[Rollout | TargetRecord] = ([target] if target is not None else []) + list(rollouts)
        if not records:
            return None, []
        entities = [target_to_entity(r) if isinstance(r, TargetRecord) else rollout_to_entity(r) for r in records]
        check_transaction(entities)
        partition = entities[0]["PartitionKey"]
        operations: list[Any] = []
        for record, entity in zip(records, entities, strict=True):
            if record.etag is None:
                operations.append((TransactionOperation.CREATE, entity))
            else:
                conditional = {
                    "mode": UpdateMode.REPLACE,
                    "etag": record.etag,
                    "match_condition": MatchConditions.IfNotModified,
                }
                operations.append((TransactionOperation.UPDATE, entity, conditional))
        what = f"commit {len(records)} row(s) of {partition}"
        table = self._table(self.rollouts_table)
        with map_storage_errors(what):
            try:
                metas = table.submit_transaction(operations)
            except RequestTooLargeError as exc:  # 413: our size estimate fell short
                raise EntityTooLargeError(f"{what}: the transaction is too large (HTTP 413)") from exc
            except TableTransactionError as exc:
                # The failing operation's status ("<index>:<message>"): 412 a changed row, 409 an
                # insert of a row that exists, 404 an update of a row deleted since.
                if exc.status_code in (404, 409, 412):
                    lost = f"operation {exc.index}: {getattr(exc, 'error_code', None) or exc.status_code}"
                    raise ConcurrencyError(
                        f"{what}: a row changed since it was read ({lost}); nothing was written"
                    ) from exc
                raise
        written = [_with_etag(record, meta) for record, meta in zip(records, metas, strict=True)]
        saved_target = written[0] if target is not None else None
        assert saved_target is None or isinstance(saved_target, TargetRecord)
        return saved_target, [r for r in written if isinstance(r, Rollout)]

    # -- rollouts -----------------------------------------------------------------------------

    def get_rollout(self, target: str, rollout_id: str) -> Rollout | None:
        _check_key(target, "target")
        _check_key(rollout_id, "rollout id")
        entity = self._read(self.rollouts_table, target, rollout_id, f"read rollout {target}/{_shorten(rollout_id)}")
        return None if entity is None else rollout_from_entity(entity, entity.metadata.get("etag"))

    def insert_rollout(self, rollout: Rollout) -> Rollout:
        entity = rollout_to_entity(rollout)
        table = self._table(self.rollouts_table)
        with map_storage_errors(f"insert rollout {rollout.target}/{rollout.id}"):
            meta = table.create_entity(entity)
        return _with_etag(rollout, meta)

    def update_rollout(self, rollout: Rollout) -> Rollout:
        """Conditional replace on ``rollout.etag`` (the same race as ``save_target``: two ticks that
        read the same row must not both write their decision; the second gets ConcurrencyError).
        An update without an etag would be a blind overwrite, so it is refused."""
        if rollout.etag is None:
            raise ConcurrencyError(
                f"update rollout {rollout.target}/{rollout.id}: no etag (read it first, or insert_rollout)"
            )
        entity = rollout_to_entity(rollout)
        table = self._table(self.rollouts_table)
        meta = _replace_if_unchanged(table, entity, rollout.etag, f"update rollout {rollout.target}/{rollout.id}")
        return _with_etag(rollout, meta)

    def list_rollouts(self, target: str) -> list[Rollout]:
        """Every rollout of ``target``, newest first (created_at, then id, both descending)."""
        _check_key(target, "target")
        table = self._table(self.rollouts_table)
        with map_storage_errors(f"list rollouts of {target}"):
            entities = list(table.query_entities("PartitionKey eq @pk", parameters={"pk": target}))
        rollouts = [rollout_from_entity(e, e.metadata.get("etag")) for e in entities if e["RowKey"] != CLAIM_ROW_KEY]
        rollouts.sort(key=lambda r: (r.created_at, r.id), reverse=True)
        return rollouts

    def check_fits(self, record: Rollout | TargetRecord) -> None:
        """Encode ``record`` as its entity without writing it: raises ``EntityTooLargeError``."""
        if isinstance(record, Rollout):
            rollout_to_entity(record)
        else:
            target_to_entity(record)

    # -- group releases (rollout.waves) --------------------------------------------------------

    def get_group_release(self, group: str, release_id: str) -> GroupRelease | None:
        _check_key(group, "group")
        _check_key(release_id, "group release id")
        entity = self._read(
            self.group_releases_table, group, release_id, f"read group release {group}/{_shorten(release_id)}"
        )
        return None if entity is None else group_release_from_entity(entity, entity.metadata.get("etag"))

    def insert_group_release(self, record: GroupRelease) -> GroupRelease:
        """Insert; ``AlreadyExistsError`` when the row is there (the same release received twice)."""
        entity = group_release_to_entity(record)
        table = self._table(self.group_releases_table)
        with map_storage_errors(f"insert group release {record.group}/{record.id}"):
            meta = table.create_entity(entity)
        return _with_etag(record, meta)

    def update_group_release(self, record: GroupRelease) -> GroupRelease:
        """Conditional replace on ``record.etag``: of two hosts that decided on the same version, one
        writes and the other gets ``ConcurrencyError`` (and does not act)."""
        what = f"update group release {record.group}/{record.id}"
        if record.etag is None:
            raise ConcurrencyError(f"{what}: no etag (read it first, or insert_group_release)")
        entity = group_release_to_entity(record)
        meta = _replace_if_unchanged(self._table(self.group_releases_table), entity, record.etag, what)
        return _with_etag(record, meta)

    def list_group_releases(self, group: str) -> list[GroupRelease]:
        """Every release of ``group``, newest first (created_at, then id, both descending)."""
        _check_key(group, "group")
        table = self._table(self.group_releases_table)
        with map_storage_errors(f"list group releases of {group}"):
            entities = list(table.query_entities("PartitionKey eq @pk", parameters={"pk": group}))
        records = [group_release_from_entity(e, e.metadata.get("etag")) for e in entities]
        records.sort(key=lambda r: (r.created_at, r.id), reverse=True)
        return records

    # -- events -------------------------------------------------------------------------------

    def append_event(self, event: RolloutEvent) -> None:
        # An insert with a fresh unique RowKey: never an upsert, the trail is never overwritten.
        entity = event_to_entity(event)
        table = self._table(self.events_table)
        with map_storage_errors(f"append event {event.kind} to {event.target}/{event.rollout_id}"):
            table.create_entity(entity)

    def list_events(self, target: str, rollout_id: str) -> list[RolloutEvent]:
        """The events of one rollout in time order (then append order): one partition range query."""
        _check_key(target, "target")
        _check_key(rollout_id, "rollout id")
        if EVENT_KEY_SEPARATOR in rollout_id:
            raise EntityKeyError(f"rollout id {_shorten(rollout_id)} must not contain {EVENT_KEY_SEPARATOR!r}")
        low, high = event_range(rollout_id)
        table = self._table(self.events_table)
        with map_storage_errors(f"list events of {target}/{_shorten(rollout_id)}"):
            entities = list(
                table.query_entities(
                    "PartitionKey eq @pk and RowKey gt @low and RowKey lt @high",
                    parameters={"pk": target, "low": low, "high": high},
                )
            )
        return [event_from_entity(e) for e in entities]


def _replace_if_unchanged(table: TableClient, entity: Mapping[str, Any], etag: str, what: str) -> Mapping[str, Any]:
    """REPLACE the entity only if its ETag is still ``etag``; return the write's metadata.

    REPLACE, not MERGE: a property the record no longer sets must disappear from the row. A row
    that is gone (404) lost the race to whoever deleted it, so that is a ConcurrencyError too:
    the caller re-reads on its next tick either way.
    """
    try:
        with map_storage_errors(what):
            return table.update_entity(
                entity, mode=UpdateMode.REPLACE, etag=etag, match_condition=MatchConditions.IfNotModified
            )
    except NotFoundError as exc:
        raise ConcurrencyError(f"{what}: the row is gone (deleted since it was read)") from exc


def check_key(value: str, what: str) -> str:
    """The key rules this adapter enforces, for callers that must behave the same (tests/fakes.py)."""
    return _check_key(value, what)


_R = TypeVar("_R", Rollout, TargetRecord, Rollout | TargetRecord, GroupRelease)


def _with_etag(record: _R, meta: Mapping[str, Any]) -> _R:
    """The record as written, carrying the ETag the service returned for the write."""
    etag = meta.get("etag")
    if not etag:
        raise PortError("the table service returned no ETag for a write")
    return dataclasses.replace(record, etag=etag)


__all__ = [
    "DEFAULT_CLIENT_OPTIONS",
    "EntityEncodingError",
    "EntityKeyError",
    "EntityTooLargeError",
    "TableStateStore",
    "CLAIM_ROW_KEY",
    "check_entity_size",
    "check_key",
    "check_transaction",
    "event_from_entity",
    "event_row_key",
    "event_to_entity",
    "group_release_from_entity",
    "group_release_to_entity",
    "map_storage_errors",
    "rollout_from_entity",
    "rollout_to_entity",
    "target_from_entity",
    "target_to_entity",
]
