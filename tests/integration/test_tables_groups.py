"""The group release rows (rollout.waves) in TableStateStore against a real Azurite: their own table, one
partition per group, conditional writes on the ETag, two separate clients racing like two hosts."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta

import pytest

from rollout.adapters.tables import TableStateStore
from rollout.model import EventKind, RolloutEvent
from rollout.ports import AlreadyExistsError, ConcurrencyError
from rollout.targets import OnFailure
from rollout.waves import GroupPhase, group_partition
from tests.fixtures.azurite import AzuriteNames, AzuriteService
from tests.unit.test_waves import GR_ID, T0, running, started

pytestmark = pytest.mark.integration


@pytest.fixture
def stores(azurite: AzuriteService, azurite_names: AzuriteNames) -> Iterator[tuple[TableStateStore, TableStateStore]]:
    """Two clients on this test's tables: two hosts."""
    a = TableStateStore.from_connection_string(azurite.connection_string, prefix=azurite_names.table_prefix)
    b = TableStateStore.from_connection_string(azurite.connection_string, prefix=azurite_names.table_prefix)
    yield a, b
    a.close()
    b.close()


def test_a_group_release_round_trips_and_only_one_of_two_hosts_writes_a_version(
    stores: tuple[TableStateStore, TableStateStore],
) -> None:
    a, b = stores
    record = started(running(OnFailure.ROLLBACK_ALL), "canary").evolve(wave_completed_at=T0, reason="\u00e9" * 10)
    saved = a.insert_group_release(record)
    assert saved.etag
    with pytest.raises(AlreadyExistsError):
        b.insert_group_release(record)
    read = b.get_group_release("web", GR_ID)
    assert read == record and read is not None and read.etag == saved.etag
    # Both hosts decided on the same version: one writes, the other loses.
    first = a.update_group_release(saved.evolve(phase=GroupPhase.WAVE_BAKING))
    with pytest.raises(ConcurrencyError):
        b.update_group_release(read.evolve(phase=GroupPhase.HALTING))
    assert b.get_group_release("web", GR_ID) == first
    with pytest.raises(ConcurrencyError):
        b.update_group_release(replace(read, etag=None))  # a blind overwrite is refused
    assert a.get_group_release("web", "install_nginx-v9-0000000000") is None


def test_group_releases_list_per_group_newest_first_and_their_trail_is_apart_from_targets(
    stores: tuple[TableStateStore, TableStateStore],
) -> None:
    a, _ = stores
    older = running()
    newer = older.evolve(id="install_nginx-v3-0303030303", created_at=T0 + timedelta(minutes=5))
    other_group = older.evolve(group="api")
    for record in (older, newer, other_group):
        a.insert_group_release(record)
    assert [r.id for r in a.list_group_releases("web")] == [newer.id, older.id]
    assert [r.group for r in a.list_group_releases("api")] == ["api"]
    event = RolloutEvent(
        GR_ID, group_partition("web"), T0, EventKind.WAVE_STARTED, "wave 2 of 3 started", data={"wave": 2}
    )
    a.append_event(event)
    assert [e.message for e in a.list_events(group_partition("web"), GR_ID)] == ["wave 2 of 3 started"]
    assert a.list_events("rg:canary", GR_ID) == []
