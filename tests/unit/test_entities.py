"""Records <-> Table entities: the pure half of rollout.adapters.tables (no I/O).

The builders at the top make fully populated, realistic records; the Azurite integration tests
import them too, so both levels check the same data.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from rollout.adapters.tables import (
    MAX_ENTITY_BYTES,
    EntityEncodingError,
    EntityTooLargeError,
    check_entity_size,
    event_from_entity,
    event_range,
    event_row_key,
    event_to_entity,
    rollout_from_entity,
    rollout_to_entity,
    target_from_entity,
    target_to_entity,
)
from rollout.model import (
    EventKind,
    ExtensionSpec,
    ModelSpec,
    Phase,
    Release,
    ReleaseKind,
    Rollout,
    RolloutEvent,
    TargetRecord,
)

T0 = datetime(2026, 4, 1, 12, 0, 0, 123456, tzinfo=UTC)
TARGET = "rg-canary:vmss-web"
BLOB_BASE = "https://relstore.blob.core.windows.net/init"


def make_release(version: int = 7, **changes: Any) -> Release:
    release = Release(
        kind=ReleaseKind.SCRIPT,
        app="install_nginx",
        version=version,
        blob_name=f"install_nginx.v{version}.sh",
        blob_url=f"{BLOB_BASE}/install_nginx.v{version}.sh",
        sha256=f"{version:02d}" + "ab" * 31,
    )
    return dataclasses.replace(release, **changes)


def make_extension(version: int, protected: dict[str, Any] | None) -> ExtensionSpec:
    return ExtensionSpec(
        name="CustomScript",
        publisher="Microsoft.Azure.Extensions",
        type="CustomScript",
        type_handler_version="2.1",
        settings={
            "fileUris": [f"{BLOB_BASE}/install_nginx.v{version}.sh"],
            "commandToExecute": f"bash install_nginx.v{version}.sh",
            "nested": {"retries": 3, "verbose": True, "note": "déjà vu ✓"},
        },
        protected_settings=protected,
        auto_upgrade_minor_version=False,
        force_update_tag=f"v{version}",
    )


def make_rollout(rollout_id: str = "r-20260401-0007", created_at: datetime = T0, **changes: Any) -> Rollout:
    """A rollout in the middle of its life: every field set to something other than its default."""
    rollout = Rollout(
        id=rollout_id,
        target=TARGET,
        release=make_release(7),
        phase=Phase.PAUSED,
        desired=ModelSpec(
            extension=make_extension(7, {"managedIdentity": {"clientId": "1234-abcd"}}),
            image_id=None,
        ),
        baseline=ModelSpec(extension=make_extension(6, None), image_id="/subscriptions/s/images/base-v6"),
        created_at=created_at,
        updated_at=created_at + timedelta(minutes=9),
        phase_since=created_at + timedelta(minutes=8),
        last_progress_at=created_at + timedelta(minutes=7, microseconds=1),
        canary_ids=("0",),
        batch_ids=("3", "4"),
        batch_started_at=created_at + timedelta(minutes=6),
        batch_number=2,
        upgraded_ids=("0", "1", "2", "3", "4"),
        rollback_ids=("9",),
        unhealthy_streak=1,
        resume_to=Phase.PROMOTING,
        hold_until=created_at + timedelta(minutes=8, seconds=14),
        reimaged_ids=("9",),
        reimage_pending=("8",),
        reimage_requested_at=created_at + timedelta(minutes=8, seconds=20),
        skip_bake=True,
        promote_full=True,
        reason="paused by operator alice: 'looks odd'",
        rollback_reason="instance 9 probe failed 3 times",
        etag=None,
    )
    return rollout.evolve(**changes)


def make_target(**changes: Any) -> TargetRecord:
    target = TargetRecord(
        key=TARGET,
        active_rollout_id="r-20260401-0007",
        stable_version=6,
        stable_release=make_release(6),
        stable_model=ModelSpec(extension=make_extension(6, {}), image_id=None),
        updated_at=T0,
    )
    return dataclasses.replace(target, **changes)


def make_event(at: datetime = T0, kind: EventKind = EventKind.PHASE_CHANGED, **changes: Any) -> RolloutEvent:
    event = RolloutEvent(
        rollout_id="r-20260401-0007",
        target=TARGET,
        at=at,
        kind=kind,
        message="Baking -> Promoting: canary healthy for 300 s",
        actor="operator:alice",
        phase=Phase.PROMOTING,
        data={"healthy": ["0"], "probe": {"0": {"ok": True, "detail": "200 in 12 ms"}}, "ratio": 0.5},
    )
    return dataclasses.replace(event, **changes)


# -- rollouts --------------------------------------------------------------------------------


def test_rollout_round_trip_keeps_every_field() -> None:
    rollout = make_rollout()
    back = rollout_from_entity(rollout_to_entity(rollout), etag='W/"1"')

    # Field by field (not just ==) so a failure names the field that did not survive.
    for f in dataclasses.fields(Rollout):
        if f.name != "etag":
            assert getattr(back, f.name) == getattr(rollout, f.name), f.name
    assert back.etag == 'W/"1"'
    assert isinstance(back.phase, Phase) and isinstance(back.resume_to, Phase)
    assert isinstance(back.canary_ids, tuple) and isinstance(back.upgraded_ids, tuple)
    for name in ("created_at", "updated_at", "phase_since", "last_progress_at", "batch_started_at"):
        value = getattr(back, name)
        assert type(value) is datetime and value.utcoffset() == timedelta(0), name


def test_rollout_entity_keeps_queryable_scalars_as_their_own_properties() -> None:
    entity = rollout_to_entity(make_rollout())

    assert entity["PartitionKey"] == TARGET
    assert entity["RowKey"] == "r-20260401-0007"
    assert entity["phase"] == "Paused"
    assert entity["app"] == "install_nginx"
    assert entity["version"] == 7
    assert entity["created_at"] == T0
    # Nested structures are JSON strings, parseable on their own (e.g. by an operator's query tool).
    assert json.loads(entity["desired"])["extension"]["force_update_tag"] == "v7"
    assert json.loads(entity["upgraded_ids"]) == ["0", "1", "2", "3", "4"]


def test_rollout_with_defaults_round_trips_and_omits_absent_scalars() -> None:
    rollout = make_rollout(
        baseline=None, batch_started_at=None, resume_to=None, canary_ids=(), reason="", skip_bake=False
    )
    entity = rollout_to_entity(rollout)

    assert "batch_started_at" not in entity and "paused_from" not in entity
    assert entity["baseline"] == "null"
    assert rollout_from_entity(entity) == rollout


@pytest.mark.parametrize(
    "protected",
    [None, {}, {"storageAccountKey": "k=="}],
    ids=["unknown", "known-empty", "secret"],
)
def test_protected_settings_none_and_empty_stay_distinct(protected: dict[str, Any] | None) -> None:
    rollout = make_rollout(baseline=ModelSpec(extension=make_extension(6, protected)))

    back = rollout_from_entity(rollout_to_entity(rollout))

    assert back.baseline is not None and back.baseline.extension is not None
    assert back.baseline.extension.protected_settings == protected
    assert (back.baseline.extension.protected_settings is None) is (protected is None)


def test_other_timezones_are_stored_as_the_same_instant_in_utc() -> None:
    cest = timezone(timedelta(hours=2))
    local = T0.astimezone(cest)
    back = rollout_from_entity(rollout_to_entity(make_rollout(created_at=local)))

    assert back.created_at == T0
    assert back.created_at.tzinfo is UTC


def test_from_entity_accepts_service_strings_for_datetimes() -> None:
    entity = rollout_to_entity(make_rollout())
    entity["created_at"] = "2026-04-01T12:00:00.123456+00:00"

    assert rollout_from_entity(entity).created_at == T0


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(EntityEncodingError, match="naive"):
        rollout_to_entity(make_rollout(created_at=datetime(2026, 4, 1, 12, 0)))


@pytest.mark.parametrize("bad_target", ["rg/vmss", "rg\\vmss", "rg#1", "what?", "tab\there", ""])
def test_keys_azure_forbids_are_refused(bad_target: str) -> None:
    with pytest.raises(EntityEncodingError):
        rollout_to_entity(make_rollout(target=bad_target))


def test_rollout_id_with_event_separator_is_refused() -> None:
    with pytest.raises(EntityEncodingError, match="~"):
        rollout_to_entity(make_rollout(rollout_id="r~1"))


# -- targets ---------------------------------------------------------------------------------


def test_target_round_trip_keeps_every_field() -> None:
    target = make_target()
    back = target_from_entity(target_to_entity(target), etag='W/"7"')

    assert back == target
    assert back.etag == 'W/"7"'
    assert back.stable_model is not None and back.stable_model.extension is not None
    assert back.stable_model.extension.protected_settings == {}


def test_empty_target_round_trips_with_nones() -> None:
    target = TargetRecord(key=TARGET)
    entity = target_to_entity(target)

    assert entity["PartitionKey"] == "target" and entity["RowKey"] == TARGET
    assert "active_rollout_id" not in entity and "stable_version" not in entity
    assert target_from_entity(entity) == target


# -- events ----------------------------------------------------------------------------------


def test_event_round_trip_keeps_every_field() -> None:
    event = make_event()
    back = event_from_entity(event_to_entity(event))

    assert back == event
    assert back.phase is Phase.PROMOTING


def test_event_without_phase_and_data_round_trips() -> None:
    event = make_event(phase=None, data={})
    assert event_from_entity(event_to_entity(event)) == event


def test_event_evidence_values_come_back_as_json_types() -> None:
    event = make_event(data={"seen_at": T0, "phase": Phase.BAKING, "ids": frozenset({"2", "1"})})
    back = event_from_entity(event_to_entity(event))

    assert back.data == {"seen_at": T0.isoformat(), "phase": "Baking", "ids": ["1", "2"]}


def test_event_data_that_is_not_json_is_refused_clearly() -> None:
    with pytest.raises(EntityEncodingError, match="object"):
        event_to_entity(make_event(data={"x": object()}))


def test_two_appends_of_the_same_event_get_different_row_keys() -> None:
    event = make_event()
    assert event_to_entity(event)["RowKey"] != event_to_entity(event)["RowKey"]


def test_event_row_keys_sort_by_time_then_by_append_order() -> None:
    keys = [
        event_row_key("r1", T0 + timedelta(microseconds=1), 5, "aa"),
        event_row_key("r1", T0, 9, "00"),
        event_row_key("r1", T0 + timedelta(days=400), 1, "ff"),
        event_row_key("r1", T0, 10, "00"),
        event_row_key("r1", T0.astimezone(timezone(timedelta(hours=-5))) + timedelta(seconds=1), 1, "00"),
    ]
    assert sorted(keys) == [keys[1], keys[3], keys[0], keys[4], keys[2]]


def test_event_range_holds_its_rollout_only() -> None:
    low, high = event_range("abc")
    mine = event_to_entity(make_event(rollout_id="abc"))["RowKey"]
    others = [event_to_entity(make_event(rollout_id=r))["RowKey"] for r in ("abc2", "ab", "abd", "abc-1")]

    assert low < mine < high
    assert [k for k in others if low < k < high] == []


# -- limits ----------------------------------------------------------------------------------


def test_a_string_property_over_64_kib_is_refused_naming_it() -> None:
    with pytest.raises(EntityTooLargeError, match="'reason'"):
        rollout_to_entity(make_rollout(reason="x" * 32_769))


def test_the_string_limit_counts_utf16_units_not_characters() -> None:
    # 20 000 characters outside the BMP are 40 000 UTF-16 code units: over the limit.
    with pytest.raises(EntityTooLargeError, match="'message'"):
        event_to_entity(make_event(message="\U0001f680" * 20_000))
    # Just under the limit in ASCII is fine.
    assert event_from_entity(event_to_entity(make_event(message="y" * 32_000))).message == "y" * 32_000


def test_an_entity_over_1_mib_is_refused() -> None:
    entity = {"PartitionKey": "p", "RowKey": "r"} | {f"p{i}": "z" * 30_000 for i in range(20)}
    with pytest.raises(EntityTooLargeError, match="1 MiB"):
        check_entity_size(entity, "test entity")
    smaller = {"PartitionKey": "p", "RowKey": "r"} | {f"p{i}": "z" * 30_000 for i in range(15)}
    assert check_entity_size(smaller, "test entity") < MAX_ENTITY_BYTES


def test_many_upgraded_ids_fit_in_one_rollout() -> None:
    ids = tuple(str(i) for i in range(1000))  # the Uniform scale set maximum
    back = rollout_from_entity(rollout_to_entity(make_rollout(upgraded_ids=ids)))
    assert back.upgraded_ids == ids


# -- resume_to / failed_from: one stored property, rows written before the split still load ---------


def test_a_row_written_before_the_split_loads_paused_from_by_phase() -> None:
    # Rows written before ``paused_from`` was split hold only ``paused_from``: where a Paused rollout
    # resumes, or where a Failed one stopped (what ``retry`` goes on from).
    paused = rollout_to_entity(make_rollout(phase=Phase.PAUSED, resume_to=None))
    paused["paused_from"] = "Baking"
    failed = rollout_to_entity(make_rollout(phase=Phase.FAILED, resume_to=None))
    failed["paused_from"] = "Promoting"

    back_paused, back_failed = rollout_from_entity(paused), rollout_from_entity(failed)

    assert (back_paused.resume_to, back_paused.failed_from) == (Phase.BAKING, None)
    assert (back_failed.resume_to, back_failed.failed_from) == (None, Phase.PROMOTING)


@pytest.mark.parametrize(
    ("phase", "changes", "stored"),
    [
        (Phase.PAUSED, {"resume_to": Phase.BAKING}, {"paused_from": "Baking"}),
        (Phase.FAILED, {"failed_from": Phase.PROMOTING}, {"paused_from": "Promoting", "failed_from": "Promoting"}),
        # Failed, then aborted: the row keeps where it failed from, as rows did before.
        (Phase.ABORTED, {"failed_from": Phase.CANARY}, {"paused_from": "Canary", "failed_from": "Canary"}),
        (Phase.CANARY, {}, {}),
    ],
)
def test_resume_to_and_failed_from_are_written_where_earlier_versions_read_them(
    phase: Phase, changes: dict[str, Any], stored: dict[str, str]
) -> None:
    rollout = make_rollout(**{"phase": phase, "resume_to": None, **changes})
    entity = rollout_to_entity(rollout)

    assert {k: entity[k] for k in ("paused_from", "failed_from") if k in entity} == stored
    assert rollout_from_entity(entity) == rollout


def test_event_kinds_come_back_as_the_enum_with_the_same_stored_value() -> None:
    for kind in EventKind:
        entity = event_to_entity(make_event(kind=kind))
        assert entity["kind"] == kind.value and type(entity["kind"]) is str
        back = event_from_entity(entity)
        assert back.kind is kind


def test_a_releases_group_round_trips_and_the_default_group_adds_no_field() -> None:
    from rollout.adapters.tables import release_from_dict, release_to_dict
    from rollout.model import Release, ReleaseKind

    top = Release(ReleaseKind.SCRIPT, "app", 1, "app.v1.sh", "https://a/init/app.v1.sh", "ab" * 32)
    assert "group" not in release_to_dict(top) and release_from_dict(release_to_dict(top)) == top
    grouped = dataclasses.replace(top, group="web", blob_url="https://a/init/web/app.v1.sh")
    assert release_to_dict(grouped)["group"] == "web" and release_from_dict(release_to_dict(grouped)) == grouped
