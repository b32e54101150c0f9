"""Azure Tables key rules in the state store adapter: hostile keys end as a ports error, never a crash.

The rules (learn.microsoft.com/rest/api/storageservices/understanding-the-table-service-data-model,
"Characters Disallowed in Key Fields" and the 1 KiB key size) are checked by the adapter before any
request. Against Azurite, through the real SDK: every key the rules accept is a plain read (None),
every key they refuse is an ``InvalidKeyError`` (a ``PortError``, so callers that know only the ports
handle it), and a store whose endpoint is dead shows the refused keys never reached the wire.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rollout.adapters.tables import EntityEncodingError, EntityKeyError, TableStateStore
from rollout.ports import InvalidKeyError, InvalidRecordError, PortError, TransientError
from tests.fixtures.azurite import AzuriteNames, AzuriteService
from tests.unit.test_entities import TARGET, make_event, make_rollout

pytestmark = pytest.mark.integration

REFUSED = [
    "",
    "a/b",
    "a\\b",
    "a#b",
    "a?b",
    "tab\there",
    "nul\x00",
    "del\x7f",
    "c1\x85",
    "c1\x9f",
    "x" * 513,  # 1026 bytes as UTF-16
    "\U0001f600" * 257,  # 257 characters, but 1028 bytes as UTF-16: over 1 KiB
    "lone \ud800 surrogate",
    "x" * 5000,
]
ACCEPTED = ["x" * 512, "\U0001f600" * 256, 'quote\'s "double"', "per%cent&amp=", "ünïcødé ✓", "a~b", " spaced "]


@pytest.fixture
def store(azurite: AzuriteService, azurite_names: AzuriteNames) -> Iterator[TableStateStore]:
    with TableStateStore.from_connection_string(azurite.connection_string, prefix=azurite_names.table_prefix) as s:
        yield s


@pytest.fixture
def dead_store(azurite_names: AzuriteNames) -> Iterator[TableStateStore]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again at once: nothing listens there
    conn = (
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
        "AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;"
        f"TableEndpoint=http://127.0.0.1:{port}/devstoreaccount1;"
    )
    with TableStateStore.from_connection_string(conn, prefix=azurite_names.table_prefix, retry_total=0) as s:
        yield s


@pytest.mark.parametrize("key", REFUSED, ids=lambda k: repr(k[:12]) + f"~{len(k)}")
def test_refused_keys_are_a_ports_error_and_never_reach_the_wire(dead_store: TableStateStore, key: str) -> None:
    for call in (
        lambda: dead_store.get_rollout(TARGET, key),
        lambda: dead_store.get_rollout(key, "app-v1-0123456789"),
        lambda: dead_store.list_events(TARGET, key),
        lambda: dead_store.list_events(key, "app-v1-0123456789"),
        lambda: dead_store.list_rollouts(key),
        lambda: dead_store.get_target(key),
    ):
        with pytest.raises(InvalidKeyError) as info:
            call()
        assert isinstance(info.value, PortError) and isinstance(info.value, EntityKeyError)
        assert len(str(info.value)) < 300  # a 5000-character key is not echoed whole
    # The same store does reach the (dead) wire for a valid key: the refusal above was not luck.
    with pytest.raises(TransientError):
        dead_store.get_rollout(TARGET, "app-v1-0123456789")


def test_writes_with_refused_keys_are_ports_errors_too(store: TableStateStore) -> None:
    with pytest.raises(InvalidKeyError):
        store.insert_rollout(make_rollout(id="a/b"))
    with pytest.raises(InvalidKeyError):
        store.insert_rollout(make_rollout(id="x" * 600))
    with pytest.raises(InvalidKeyError):
        store.append_event(make_event(rollout_id="a~b"))
    with pytest.raises(InvalidRecordError) as info:
        store.append_event(make_event(message="lone \udc00"))
    assert isinstance(info.value, EntityEncodingError)


@pytest.mark.parametrize("key", ACCEPTED, ids=lambda k: repr(k[:12]) + f"~{len(k)}")
def test_keys_the_rules_accept_are_plain_reads_on_azurite(store: TableStateStore, key: str) -> None:
    assert store.get_rollout(TARGET, key) is None
    assert store.get_rollout(key, "app-v1-0123456789") is None
    assert store.list_rollouts(key) == []
    assert store.get_target(key) is None
    if "~" not in key:
        assert store.list_events(TARGET, key) == []


def test_any_text_is_either_a_plain_read_or_an_invalid_key_on_azurite(store: TableStateStore) -> None:
    answers: list[str] = []

    @settings(
        max_examples=300, derandomize=True, database=None, deadline=None, suppress_health_check=[HealthCheck.too_slow]
    )
    @given(st.text(st.characters(exclude_categories=()), max_size=600))
    def read(key: str) -> None:
        try:
            assert store.get_rollout(TARGET, key) is None
            answers.append("read")
        except InvalidKeyError:
            answers.append("refused")

    read()
    assert {"read", "refused"} <= set(answers)


@pytest.mark.parametrize("key", REFUSED + ACCEPTED, ids=lambda k: repr(k[:12]) + f"~{len(k)}")
def test_the_fake_store_keeps_the_same_key_rules(key: str) -> None:
    from tests.fakes import FakeStore

    fake = FakeStore()
    if key in REFUSED:
        for call in (
            lambda: fake.get_rollout(TARGET, key),
            lambda: fake.list_rollouts(key),
            lambda: fake.get_target(key),
        ):
            with pytest.raises(InvalidKeyError):
                call()
    else:
        assert fake.get_rollout(TARGET, key) is None and fake.list_rollouts(key) == [] and fake.get_target(key) is None


def test_text_the_client_cannot_encode_is_an_invalid_record_and_other_value_errors_pass_through() -> None:
    from rollout.adapters.tables import map_storage_errors

    with pytest.raises(InvalidRecordError, match="cannot be encoded"), map_storage_errors("write x"):
        "lone \ud800".encode("utf-8")
    # The blobs adapter raises its own ValueErrors inside the same block; they are not swallowed.
    with pytest.raises(ValueError, match="mine") as info, map_storage_errors("read x"):
        raise ValueError("mine")
    assert not isinstance(info.value, PortError)
