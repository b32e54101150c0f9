"""TableStateStore against a real Azurite through the real azure-data-tables SDK.

Concurrency is tested the way it happens in production: separate store instances (separate
HTTP clients, like two Function hosts) and real threads released together by a barrier.
"""

from __future__ import annotations

import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, timedelta

import pytest
from azure.data.tables import TableServiceClient

from rollout.adapters.tables import TableStateStore, target_from_entity, target_to_entity
from rollout.model import EventKind, Phase, TargetRecord
from rollout.ports import (
    MAX_COMMIT_RECORDS,
    AlreadyExistsError,
    ConcurrencyError,
    InvalidRecordError,
    PortError,
    StateStore,
    TransientError,
)
from tests.fakes import FakeStore
from tests.fixtures.azurite import AzuriteNames, AzuriteService, FakeAzureAdCredential
from tests.unit.test_entities import T0, TARGET, make_event, make_rollout, make_target

pytestmark = pytest.mark.integration

StoreFactory = Callable[[], TableStateStore]


@pytest.fixture
def new_store(azurite: AzuriteService, azurite_names: AzuriteNames) -> Iterator[StoreFactory]:
    """Makes stores on this test's tables; each call is a separate client (a separate 'host')."""
    made: list[TableStateStore] = []

    def make() -> TableStateStore:
        store = TableStateStore.from_connection_string(azurite.connection_string, prefix=azurite_names.table_prefix)
        made.append(store)
        return store

    yield make
    for store in made:
        store.close()


@pytest.fixture
def store(new_store: StoreFactory) -> TableStateStore:
    return new_store()


def race(n: int, action: Callable[[int], object]) -> tuple[list[object], list[BaseException]]:
    """Run ``action(i)`` on n threads released at the same instant; return (results, errors)."""
    barrier = threading.Barrier(n)
    results: list[object] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def run(i: int) -> None:
        barrier.wait(timeout=10)
        try:
            outcome = action(i)
        except BaseException as exc:  # collected and asserted on by the caller
            with lock:
                errors.append(exc)
        else:
            with lock:
                results.append(outcome)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads), "a racing thread hung"
    return results, errors


# -- rollouts --------------------------------------------------------------------------------


def test_rollout_round_trips_through_azurite(store: TableStateStore) -> None:
    rollout = make_rollout()

    inserted = store.insert_rollout(rollout)
    read = store.get_rollout(TARGET, rollout.id)

    assert inserted.etag
    assert read == rollout  # every field; etag is excluded from ==
    assert read is not None and read.etag == inserted.etag
    assert read.created_at == T0 and read.created_at.microsecond == 123456
    assert read.created_at.tzinfo is UTC
    assert read.baseline is not None and read.baseline.extension is not None
    assert read.baseline.extension.protected_settings is None
    assert read.desired.extension is not None
    assert read.desired.extension.protected_settings == {"managedIdentity": {"clientId": "1234-abcd"}}


def test_missing_records_read_as_none(store: TableStateStore) -> None:
    assert store.get_rollout(TARGET, "nope") is None
    assert store.get_target("rg:nope") is None
    assert store.list_rollouts(TARGET) == []
    assert store.list_events(TARGET, "nope") == []


def test_inserting_a_rollout_twice_raises_already_exists(store: TableStateStore) -> None:
    store.insert_rollout(make_rollout())
    with pytest.raises(AlreadyExistsError):
        store.insert_rollout(make_rollout(phase=Phase.CANARY))
    stored = store.get_rollout(TARGET, make_rollout().id)
    assert stored is not None and stored.phase is Phase.PAUSED  # the first write survived


def test_updates_chain_on_the_etag_each_write_returns(store: TableStateStore) -> None:
    current = store.insert_rollout(make_rollout(phase=Phase.CANARY))
    seen = {current.etag}
    for phase in (Phase.BAKING, Phase.PROMOTING, Phase.SUCCEEDED):
        current = store.update_rollout(current.evolve(phase=phase, resume_to=None, batch_started_at=None))
        seen.add(current.etag)

    read = store.get_rollout(TARGET, current.id)
    assert read is not None and read.phase is Phase.SUCCEEDED and read.etag == current.etag
    # REPLACE, not MERGE: properties set to None are gone, not left over from older writes.
    assert read.resume_to is None and read.batch_started_at is None
    assert len(seen) == 4


def test_two_hosts_with_the_same_etag_exactly_one_update_wins(new_store: StoreFactory) -> None:
    host_a, host_b = new_store(), new_store()
    host_a.insert_rollout(make_rollout(phase=Phase.BAKING))
    seen_by_a = host_a.get_rollout(TARGET, make_rollout().id)
    seen_by_b = host_b.get_rollout(TARGET, make_rollout().id)
    assert seen_by_a is not None and seen_by_b is not None and seen_by_a.etag == seen_by_b.etag

    host_a.update_rollout(seen_by_a.evolve(phase=Phase.PROMOTING, reason="A promoted"))
    with pytest.raises(ConcurrencyError):
        host_b.update_rollout(seen_by_b.evolve(phase=Phase.ROLLING_BACK, reason="B rolled back"))

    final = host_b.get_rollout(TARGET, make_rollout().id)
    assert final is not None and final.phase is Phase.PROMOTING and final.reason == "A promoted"


def test_racing_threads_on_one_etag_exactly_one_update_wins(new_store: StoreFactory) -> None:
    hosts = [new_store() for _ in range(6)]
    current = hosts[0].insert_rollout(make_rollout(phase=Phase.BAKING, unhealthy_streak=0))
    for round_number in range(1, 4):
        results, errors = race(
            len(hosts),
            lambda i, base=current, rn=round_number: hosts[i].update_rollout(
                base.evolve(unhealthy_streak=rn, reason=f"host {i}")
            ),
        )
        assert len(results) == 1, f"round {round_number}: {len(results)} writers won"
        assert len(errors) == len(hosts) - 1
        assert all(isinstance(e, ConcurrencyError) for e in errors), errors
        read = hosts[0].get_rollout(TARGET, current.id)
        winner = results[0]
        assert read is not None and read.etag == winner.etag and read.reason == winner.reason  # type: ignore[attr-defined]
        current = read


def test_update_without_etag_is_refused_and_a_vanished_row_is_a_lost_race(store: TableStateStore) -> None:
    with pytest.raises(ConcurrencyError, match="no etag"):
        store.update_rollout(make_rollout())
    with pytest.raises(ConcurrencyError, match="gone"):
        store.update_rollout(make_rollout(etag="W/\"datetime'2026-04-01T12%3A00%3A00.0000000Z'\""))


def test_list_rollouts_returns_the_targets_rollouts_newest_first(store: TableStateStore) -> None:
    offsets = [3, 0, 5, 1, 4, 2]
    for n in offsets:
        store.insert_rollout(make_rollout(rollout_id=f"r-{n}", created_at=T0 + timedelta(hours=n)))
    store.insert_rollout(make_rollout(rollout_id="r-other", target="rg:other", created_at=T0 + timedelta(days=9)))

    listed = store.list_rollouts(TARGET)

    assert [r.id for r in listed] == ["r-5", "r-4", "r-3", "r-2", "r-1", "r-0"]
    assert all(r.etag for r in listed)
    assert listed[0] == make_rollout(rollout_id="r-5", created_at=T0 + timedelta(hours=5))


# -- targets ---------------------------------------------------------------------------------


def test_target_round_trips_and_updates_on_its_etag(store: TableStateStore) -> None:
    saved = store.save_target(make_target())
    read = store.get_target(TARGET)
    assert read == make_target() and read is not None and read.etag == saved.etag

    released = store.save_target(read.__class__(key=TARGET, stable_version=7, etag=read.etag))
    again = store.get_target(TARGET)
    assert again is not None and again.active_rollout_id is None and again.stable_release is None
    assert again.stable_version == 7 and again.etag == released.etag != saved.etag


def test_target_claim_race_has_exactly_one_winner(new_store: StoreFactory) -> None:
    hosts = [new_store() for _ in range(6)]

    # First claim: nobody has a row yet, every host inserts.
    results, errors = race(
        len(hosts), lambda i: hosts[i].save_target(TargetRecord(key=TARGET, active_rollout_id=f"r-host{i}"))
    )
    assert len(results) == 1 and len(errors) == len(hosts) - 1
    assert all(isinstance(e, ConcurrencyError) for e in errors), errors
    winner = results[0]
    assert isinstance(winner, TargetRecord)
    assert hosts[0].get_target(TARGET) == winner

    # Next claim on the existing row: every host read the same etag, one conditional replace wins.
    released = hosts[0].save_target(TargetRecord(key=TARGET, stable_version=7, etag=winner.etag))
    results, errors = race(
        len(hosts),
        lambda i: hosts[i].save_target(
            TargetRecord(key=TARGET, active_rollout_id=f"r2-host{i}", stable_version=7, etag=released.etag)
        ),
    )
    assert len(results) == 1 and all(isinstance(e, ConcurrencyError) for e in errors)
    stored = hosts[0].get_target(TARGET)
    assert stored is not None and stored.active_rollout_id == results[0].active_rollout_id  # type: ignore[attr-defined]


# -- events ----------------------------------------------------------------------------------


def test_events_come_back_in_time_order_whatever_the_append_order(store: TableStateStore) -> None:
    ats = [T0 + timedelta(seconds=s, microseconds=us) for s, us in [(0, 0), (0, 1), (1, 0), (60, 5), (3600, 0)]]
    shuffled = ats[:]
    random.Random(7).shuffle(shuffled)
    for at in shuffled:
        store.append_event(make_event(at=at, message=f"k{ats.index(at)}"))
    # Same instant: the order they were appended in.
    same = T0 + timedelta(days=1)
    for n in range(3):
        store.append_event(make_event(at=same, message=f"same{n}"))
    # Neighbours that must not leak into the range query.
    store.append_event(make_event(rollout_id="r-20260401-00070", message="other-rollout"))
    store.append_event(make_event(target="rg:other", message="other-target"))

    messages = [e.message for e in store.list_events(TARGET, "r-20260401-0007")]

    assert messages == ["k0", "k1", "k2", "k3", "k4", "same0", "same1", "same2"]


def test_appending_the_same_event_twice_keeps_both(store: TableStateStore) -> None:
    event = make_event()
    store.append_event(event)
    store.append_event(event)
    assert store.list_events(TARGET, event.rollout_id) == [event, event]


def test_fifty_events_read_back_intact(store: TableStateStore) -> None:
    events = [
        make_event(
            at=T0 + timedelta(seconds=n),
            kind=list(EventKind)[n % len(EventKind)],
            message=f"event {n:02d}",
            phase=None if n % 3 else Phase.BAKING,
            data={"n": n, "ids": [str(i) for i in range(n % 5)]},
        )
        for n in range(50)
    ]
    started = time.perf_counter()
    for event in events:
        store.append_event(event)
    appended = time.perf_counter()
    back = store.list_events(TARGET, events[0].rollout_id)
    listed = time.perf_counter()

    assert back == events
    print(f"50 appends {1000 * (appended - started):.0f} ms, list {1000 * (listed - appended):.0f} ms")


# -- isolation and errors --------------------------------------------------------------------


def test_prefixes_isolate_stores(azurite: AzuriteService, store: TableStateStore) -> None:
    store.insert_rollout(make_rollout())
    with TableStateStore.from_connection_string(azurite.connection_string, prefix="isolated") as other:
        assert other.get_rollout(TARGET, make_rollout().id) is None
        assert other.rollouts_table == "isolatedrollouts"


def test_unreachable_service_is_a_transient_error() -> None:
    # A loopback port that was free a moment ago: connection refused, no retries, fast.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cs = (
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
        "AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;"
        f"TableEndpoint=http://127.0.0.1:{port}/devstoreaccount1;"
    )
    with TableStateStore.from_connection_string(cs, prefix="unreachable", retry_total=0) as dead:
        started = time.perf_counter()
        with pytest.raises(TransientError):
            dead.get_rollout(TARGET, "r-1")
        assert time.perf_counter() - started < 5


def test_managed_identity_constructor_uses_bearer_tokens_over_https(azurite_oauth: AzuriteService) -> None:
    credential = FakeAzureAdCredential()
    with TableStateStore.from_service_uri(
        azurite_oauth.table_endpoint, credential, prefix="identity", connection_verify=str(azurite_oauth.ca_file)
    ) as store:
        inserted = store.insert_rollout(make_rollout())
        assert store.get_rollout(TARGET, inserted.id) == make_rollout()

    assert credential.scopes_seen and all(s == ("https://storage.azure.com/.default",) for s in credential.scopes_seen)


def test_a_refused_token_is_a_port_error_not_a_transient_one(azurite_oauth: AzuriteService) -> None:
    with (
        TableStateStore.from_service_uri(
            azurite_oauth.table_endpoint,
            FakeAzureAdCredential(expired=True),
            prefix="expired",
            connection_verify=str(azurite_oauth.ca_file),
        ) as store,
        pytest.raises(PortError) as raised,
    ):
        store.get_rollout(TARGET, "r-1")
    assert not isinstance(raised.value, TransientError)
    assert "401" in str(raised.value) or "403" in str(raised.value)


def test_a_listed_rollout_is_written_conditionally_on_the_version_listed(store: TableStateStore) -> None:
    """The claim protocol judges rows from a listing and writes them conditionally on the listed
    version (admission, orphan stops): the listing's ETag must be the one If-Match checks."""
    store.insert_rollout(make_rollout(rollout_id="r-1", phase=Phase.QUEUED))
    (listed,) = store.list_rollouts(TARGET)
    fresh = store.get_rollout(TARGET, "r-1")
    assert fresh is not None and listed.etag == fresh.etag
    started = store.update_rollout(fresh.evolve(phase=Phase.CANARY))  # another host starts it
    with pytest.raises(ConcurrencyError):
        store.update_rollout(listed.evolve(phase=Phase.REJECTED))  # the stale listed version loses
    (again,) = store.list_rollouts(TARGET)
    assert again.etag == started.etag and again.phase is Phase.CANARY
    store.update_rollout(again.evolve(reason="touched"))  # the current listed version wins


# -- one partition, one transaction: the claim row and the rollouts (issue 10) ------------------------
#
# The same contract runs against Azurite through the real SDK and against tests/fakes.py's FakeStore:
# the fake must commit exactly as the adapter does.


@pytest.fixture(params=["tables", "fake"])
def any_store(request: pytest.FixtureRequest) -> StateStore:
    if request.param == "fake":
        return FakeStore()
    factory: StoreFactory = request.getfixturevalue("new_store")
    return factory()


def test_commit_writes_the_claim_and_a_rollout_together(any_store: StateStore) -> None:
    queued = any_store.insert_rollout(make_rollout(rollout_id="r-1", phase=Phase.QUEUED))
    claim, (started,) = any_store.commit(make_target(active_rollout_id="r-1"), [queued.evolve(phase=Phase.CANARY)])
    assert claim is not None and claim.etag and started.etag and started.etag != queued.etag
    target, rollouts = any_store.load(TARGET)
    assert target == claim and target is not None and target.etag == claim.etag
    assert [(r.id, r.phase, r.etag) for r in rollouts] == [("r-1", Phase.CANARY, started.etag)]
    assert any_store.get_target(TARGET) == claim and any_store.list_rollouts(TARGET) == rollouts


def test_one_stale_etag_fails_the_whole_commit_and_writes_nothing(any_store: StateStore) -> None:
    """Hand-over: R1 ends and the claim is cleared; R2's row changed since it was read. Before issue
    10 the claim and a rollout were two writes, and the first landed whatever became of the second."""
    r1 = any_store.insert_rollout(make_rollout(rollout_id="r-1", phase=Phase.PROMOTING))
    r2 = any_store.insert_rollout(make_rollout(rollout_id="r-2", phase=Phase.QUEUED))
    claim, _ = any_store.commit(make_target(active_rollout_id="r-1"), [])
    assert claim is not None
    moved = any_store.update_rollout(r2.evolve(reason="another host wrote it"))  # r2 read above is stale now

    with pytest.raises(ConcurrencyError):
        any_store.commit(
            replace(claim, active_rollout_id=None),
            [r1.evolve(phase=Phase.SUCCEEDED), r2.evolve(phase=Phase.REJECTED)],
        )
    target, rollouts = any_store.load(TARGET)
    assert target is not None and target.active_rollout_id == "r-1" and target.etag == claim.etag
    assert {r.id: (r.phase, r.etag) for r in rollouts} == {
        "r-1": (Phase.PROMOTING, r1.etag),
        "r-2": (Phase.QUEUED, moved.etag),
    }


def test_a_stale_claim_fails_the_commit_of_a_fresh_rollout(any_store: StateStore) -> None:
    queued = any_store.insert_rollout(make_rollout(rollout_id="r-1", phase=Phase.QUEUED))
    claim = any_store.save_target(make_target(active_rollout_id=None))
    any_store.save_target(replace(claim, stable_version=9))  # another host changed the claim row
    with pytest.raises(ConcurrencyError):
        any_store.commit(replace(claim, active_rollout_id="r-1"), [queued.evolve(phase=Phase.CANARY)])
    stored = any_store.get_rollout(TARGET, "r-1")
    assert stored is not None and stored.phase is Phase.QUEUED and stored.etag == queued.etag


def test_an_insert_in_a_commit_loses_to_a_row_already_there(any_store: StateStore) -> None:
    any_store.insert_rollout(make_rollout(rollout_id="r-1"))
    with pytest.raises(ConcurrencyError):  # "insert when new": another writer created it first
        any_store.commit(make_target(), [make_rollout(rollout_id="r-1", reason="mine")])
    assert any_store.get_target(TARGET) is None
    stored = any_store.get_rollout(TARGET, "r-1")
    assert stored is not None and stored.reason != "mine"


def test_commits_refuse_what_a_transaction_cannot_hold_before_any_request(any_store: StateStore) -> None:
    other = make_rollout(rollout_id="r-x", target="rg:other")
    with pytest.raises(InvalidRecordError, match="one partition"):
        any_store.commit(make_target(), [other])
    with pytest.raises(InvalidRecordError, match="at most once"):
        any_store.commit(None, [make_rollout(rollout_id="r-1"), make_rollout(rollout_id="r-1")])
    many = [make_rollout(rollout_id=f"r-{n}") for n in range(MAX_COMMIT_RECORDS)]
    with pytest.raises(InvalidRecordError, match="at most 100"):
        any_store.commit(make_target(), many)
    assert any_store.load(TARGET) == (None, [])
    saved, written = any_store.commit(None, many)  # exactly 100 fit
    assert saved is None and len(written) == MAX_COMMIT_RECORDS and len(any_store.list_rollouts(TARGET)) == 100


def test_commit_race_from_the_same_reads_has_exactly_one_winner(new_store: StoreFactory) -> None:
    """Six hosts read the same partition and each starts a different queued rollout with the claim:
    one transaction lands whole, the others fail whole."""
    hosts = [new_store() for _ in range(6)]
    for i in range(len(hosts)):
        hosts[0].insert_rollout(make_rollout(rollout_id=f"r-{i}", phase=Phase.QUEUED))
    read = [h.load(TARGET) for h in hosts]

    def start(i: int) -> object:
        target, rollouts = read[i]
        assert target is None
        mine = next(r for r in rollouts if r.id == f"r-{i}")
        return hosts[i].commit(make_target(active_rollout_id=mine.id), [mine.evolve(phase=Phase.CANARY)])

    results, errors = race(len(hosts), start)
    assert len(results) == 1 and all(isinstance(e, ConcurrencyError) for e in errors), errors
    target, rollouts = hosts[0].load(TARGET)
    started = [r.id for r in rollouts if r.phase is Phase.CANARY]
    assert target is not None and started == [target.active_rollout_id]


def test_a_claim_row_of_the_previous_layout_is_read_and_moved_by_the_first_commit(
    azurite: AzuriteService, new_store: StoreFactory
) -> None:
    """Rows written by the previous version (the claim in the ``targets`` table) are not lost: read
    with no ETag, so the first commit inserts the claim row in the partition, and a second host moving
    the same row over at the same time loses. The old row is left as it was."""
    store, other = new_store(), new_store()
    old = make_target(active_rollout_id=None, stable_version=6)
    with TableServiceClient.from_connection_string(azurite.connection_string) as service:
        legacy = service.create_table_if_not_exists(store.targets_table)
        legacy.create_entity(target_to_entity(old, legacy=True))

        read = store.get_target(TARGET)
        assert read == old and read is not None and read.etag is None
        assert store.load(TARGET) == (old, [])
        from_other = other.get_target(TARGET)
        assert from_other is not None

        queued = store.insert_rollout(make_rollout(rollout_id="r-7", phase=Phase.QUEUED))
        moved, _ = store.commit(replace(read, active_rollout_id="r-7"), [queued.evolve(phase=Phase.CANARY)])
        assert moved is not None and moved.etag and moved.stable_version == 6
        with pytest.raises(ConcurrencyError):
            other.commit(replace(from_other, stable_version=5), [])
        assert store.get_target(TARGET) == moved and store.get_target(TARGET).etag == moved.etag  # type: ignore[union-attr]
        assert target_from_entity(legacy.get_entity("target", TARGET)) == old  # untouched


def test_the_fake_store_reads_a_claim_row_of_the_previous_layout_like_the_adapter() -> None:
    fake = FakeStore()
    old = make_target(active_rollout_id=None, stable_version=6)
    fake.legacy_targets[TARGET] = old
    read = fake.get_target(TARGET)
    assert read == old and read is not None and read.etag is None
    moved, _ = fake.commit(replace(read, active_rollout_id=None), [])
    assert moved is not None and moved.etag and fake.get_target(TARGET) == moved
    with pytest.raises(ConcurrencyError):
        fake.commit(read, [])


def test_a_commit_updating_a_row_deleted_since_it_was_read_loses_whole(
    azurite: AzuriteService, new_store: StoreFactory
) -> None:
    """404 inside the transaction (the row is gone) is a lost race like 412: ConcurrencyError, and the
    claim row beside it is not written."""
    store = new_store()
    gone = store.insert_rollout(make_rollout(rollout_id="r-1", phase=Phase.PROMOTING))
    with TableServiceClient.from_connection_string(azurite.connection_string) as service:
        service.get_table_client(store.rollouts_table).delete_entity(TARGET, "r-1")
    with pytest.raises(ConcurrencyError, match="nothing was written"):
        store.commit(make_target(active_rollout_id=None), [gone.evolve(phase=Phase.SUCCEEDED)])
    assert store.load(TARGET) == (None, [])


def test_reading_a_target_never_creates_the_previous_layout_s_table(
    azurite: AzuriteService, store: TableStateStore
) -> None:
    assert store.get_target(TARGET) is None and store.load(TARGET) == (None, [])
    store.save_target(make_target())
    with TableServiceClient.from_connection_string(azurite.connection_string) as service:
        names = {t.name for t in service.list_tables()}
    assert store.rollouts_table in names and store.targets_table not in names
