"""The local Functions host's Storage queue trigger against Azurite's queue service (the real
``azure-storage-queue`` client on both sides): delivery and metadata, base64 decoding, retries with the
visibility timeout, the poison queue after maxDequeueCount, a badly encoded message poisoned at once,
batches, the polling back-off, and host.json's ``extensions.queues``."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from pathlib import Path

import azure.functions as func
import pytest
import requests
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.queue import QueueClient, QueueServiceClient

from emulator.funchost import HostStartupError, LocalFunctionsHost, QueueOptions
from emulator.funchost.queue import timespan_seconds
from tests.fixtures import toy_function_app as toy
from tests.fixtures.azurite import AzuriteNames, AzuriteService

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _fresh_recorder() -> None:
    toy.recorder.reset()


@pytest.fixture
def queue(azurite: AzuriteService, azurite_names: AzuriteNames) -> Iterator[QueueClient]:
    name = f"q{azurite_names.container[:40]}".replace("--", "-").rstrip("-")
    with QueueServiceClient.from_connection_string(azurite.connection_string) as service:
        client = service.create_queue(name)
        yield client
        existing = {q.name for q in service.list_queues()}
        for leftover in {name, f"{name}-poison"} & existing:
            service.delete_queue(leftover)


def _host(azurite: AzuriteService, queue: QueueClient, tmp_path: Path, **options: object) -> LocalFunctionsHost:
    env = {"TOY_QUEUE": queue.queue_name, "ToyStorage": azurite.connection_string}
    return LocalFunctionsHost(
        toy.app,
        env=env,
        http_port=0,
        state_dir=tmp_path,
        functions=["on_message"],
        queue_options=QueueOptions(max_polling_interval_seconds=0.3, **options),  # type: ignore[arg-type]
    )


def _b64(text: bytes) -> str:
    return base64.b64encode(text).decode()


def _poison(azurite: AzuriteService, queue: QueueClient) -> list[str]:
    with QueueClient.from_connection_string(azurite.connection_string, f"{queue.queue_name}-poison") as poison:
        try:
            return [str(m.content) for m in poison.peek_messages(max_messages=32)]
        except ResourceNotFoundError:
            return []  # the host creates the poison queue when it first moves a message there


def test_a_message_is_delivered_base64_decoded_with_its_metadata_and_then_deleted(
    azurite: AzuriteService, queue: QueueClient, tmp_path: Path
) -> None:
    sent = queue.send_message(_b64(b'{"target": "rg:vmss"}'))
    with _host(azurite, queue, tmp_path) as host:
        host.wait_for_invocations("on_message", 1, timeout=10, outcome="succeeded")
        host.wait_for_queue_polls("on_message", 2)
        assert list(queue.peek_messages()) == []  # deleted after success
        (seen,) = toy.recorder.messages
        assert seen["body"] == b'{"target": "rg:vmss"}'
        assert seen["id"] == sent.id and seen["dequeue_count"] == 1 and seen["pop_receipt"]
        assert seen["insertion_time"] is not None
        assert issubclass(seen["type"], func.QueueMessage)
        assert host.queue_of("on_message") == queue.queue_name


def test_a_failing_message_is_retried_after_the_visibility_timeout_then_poisoned(
    azurite: AzuriteService, queue: QueueClient, tmp_path: Path
) -> None:
    queue.send_message(_b64(b"fail please"))
    with _host(azurite, queue, tmp_path, max_dequeue_count=3, visibility_timeout_seconds=1) as host:
        host.wait_for_invocations("on_message", 3, timeout=20, outcome="failed")
        deadline = time.monotonic() + 5
        while not _poison(azurite, queue) and time.monotonic() < deadline:
            time.sleep(0.1)
        host.wait_for_queue_polls("on_message", 3)
        assert _poison(azurite, queue) == [_b64(b"fail please")]  # the message as it was stored
        assert list(queue.peek_messages()) == []
        assert len(host.invocations) == 3
    attempts = toy.recorder.messages
    assert [m["dequeue_count"] for m in attempts] == [1, 2, 3]
    gaps = [b["at"] - a["at"] for a, b in zip(attempts, attempts[1:], strict=False)]
    assert all(gap >= 0.9 for gap in gaps), gaps  # visible again only after visibilityTimeout


def test_a_message_that_is_not_base64_goes_to_the_poison_queue_at_once_without_running(
    azurite: AzuriteService, queue: QueueClient, tmp_path: Path
) -> None:
    queue.send_message("{not base64}")
    with _host(azurite, queue, tmp_path) as host:
        host.wait_for_invocations("on_message", 1, timeout=10, outcome="failed")
        host.wait_for_queue_polls("on_message", 2)
        (failed,) = host.invocations
        assert failed.error is not None and failed.error.startswith("message decoding failed")
    assert toy.recorder.messages == []
    assert _poison(azurite, queue) == ["{not base64}"]


def test_message_encoding_none_delivers_the_text_as_stored(
    azurite: AzuriteService, queue: QueueClient, tmp_path: Path
) -> None:
    queue.send_message("plain text")
    with _host(azurite, queue, tmp_path, message_encoding="none") as host:
        host.wait_for_invocations("on_message", 1, timeout=10, outcome="succeeded")
    assert [m["body"] for m in toy.recorder.messages] == [b"plain text"]


def test_a_batch_runs_concurrently_up_to_batch_size_plus_threshold(
    azurite: AzuriteService, queue: QueueClient, tmp_path: Path
) -> None:
    for i in range(8):
        queue.send_message(_b64(f"slow {i}".encode()))
    with _host(azurite, queue, tmp_path, batch_size=2, new_batch_threshold=1) as host:
        host.wait_for_invocations("on_message", 8, timeout=20, outcome="succeeded")
    assert 2 <= toy.recorder.max_active_messages <= 3
    assert sorted(m["body"] for m in toy.recorder.messages) == [f"slow {i}".encode() for i in range(8)]


def test_an_idle_queue_is_polled_less_and_less_often(
    azurite: AzuriteService, queue: QueueClient, tmp_path: Path
) -> None:
    with _host(azurite, queue, tmp_path) as host:  # max polling interval 0.3 s
        host.wait_for_queue_polls("on_message", 1)
        began = time.monotonic()
        host.wait_for_queue_polls("on_message", 6, timeout=10)
        six_polls = time.monotonic() - began
    # 0.2 + 0.3 * 5 s (jittered by 20%) at the least; without back-off six polls take 0.6 s.
    assert six_polls >= 1.3


def test_the_admin_api_fires_a_queue_function_with_a_message(
    azurite: AzuriteService, queue: QueueClient, tmp_path: Path
) -> None:
    with _host(azurite, queue, tmp_path) as host:
        answer = requests.post(
            f"{host.url}/admin/functions/on_message",
            json={"input": "by hand"},
            headers={"x-functions-key": host.master_key},
            timeout=5,
        )
        assert answer.status_code == 202
        host.wait_for_invocations("on_message", 1, timeout=5)
    assert [m["body"] for m in toy.recorder.messages] == [b"by hand"]


def test_host_json_queue_settings_are_read_and_bad_ones_refused(tmp_path: Path) -> None:
    product = QueueOptions.from_host_json(REPO)
    assert (product.message_encoding, product.max_dequeue_count) == ("base64", 3)
    assert product.visibility_timeout_seconds == 10 and product.batch_size == 16 and product.threshold == 8
    (tmp_path / "host.json").write_text(
        '{"extensions": {"queues": {"maxPollingInterval": 2000, "visibilityTimeout": "1.00:00:01.5",'
        ' "messageEncoding": "None"}}}'
    )
    custom = QueueOptions.from_host_json(tmp_path)
    assert custom.max_polling_interval_seconds == 2.0 and custom.message_encoding == "none"
    assert custom.visibility_timeout_seconds == 86401.5 == timespan_seconds("1.00:00:01.5")
    assert QueueOptions.from_host_json(tmp_path / "missing") == QueueOptions()
    for bad in ({"batch_size": 33}, {"max_dequeue_count": 0}, {"message_encoding": "utf8"}):
        with pytest.raises(HostStartupError, match="extensions.queues"):
            QueueOptions(**bad)  # type: ignore[arg-type]
    with pytest.raises(HostStartupError, match="time span"):
        timespan_seconds("30s")


def test_a_queue_trigger_without_its_settings_fails_start_naming_them(azurite: AzuriteService, tmp_path: Path) -> None:
    for env, named in (({"ToyStorage": azurite.connection_string}, "TOY_QUEUE"), ({"TOY_QUEUE": "q-x"}, "ToyStorage")):
        host = LocalFunctionsHost(toy.app, env=env, http_port=0, state_dir=tmp_path, functions=["on_message"])
        with pytest.raises(HostStartupError, match=named):
            host.start()
