"""The local Functions host (emulator/funchost/) firing a toy v2 app's HTTP, timer and blob triggers.

Real parts throughout: a real HTTP server on a free loopback port spoken to with ``requests``, real
threads and clocks for the timers, Azurite (the shared session fixture) and the real
``azure-storage-blob`` client for the blob trigger. What the functions received is read back from the
toy app's recorder, so each test checks what the host actually delivered.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import azure.functions as func
import azurefunctions.extensions.bindings.blob as blob_sdk
import pytest
import requests
from azure.storage.blob import BlobClient, BlobServiceClient, ContainerClient

from emulator.funchost import (
    HostStartupError,
    LocalFunctionsHost,
    RouteTemplate,
    blob_model_binding_data,
    decode_sdk_binding,
)
from tests.fixtures import toy_function_app as toy
from tests.fixtures.azurite import AzuriteNames, AzuriteService

pytestmark = pytest.mark.integration

HTTP_FUNCTIONS = ["item", "one_item", "latest_thing", "named_thing", "ping", "restricted", "boom"]
NEVER = "0 0 0 1 1 *"  # once a year: a timer that must not fire during a test


@pytest.fixture(autouse=True)
def _fresh_recorder() -> None:
    toy.recorder.reset()


def _threads_of(host: LocalFunctionsHost) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(host.thread_prefix)]


# ---- HTTP ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def http_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFunctionsHost]:
    host = LocalFunctionsHost(
        toy.app,
        env={"TOY_TICK_SCHEDULE": NEVER},
        http_port=0,
        state_dir=tmp_path_factory.mktemp("funchost-http"),
        functions=HTTP_FUNCTIONS,
    )
    host.start()
    yield host
    host.stop()


def test_route_params_query_body_and_headers_reach_the_function(http_host: LocalFunctionsHost) -> None:
    response = requests.post(
        f"{http_host.api_url}/items/42/abort?reason=bad%20canary",
        headers={"x-functions-key": http_host.function_key, "x-toy": "hello"},
        data=b'{"rollback": true}',
        timeout=5,
    )
    assert response.status_code == 201
    assert response.headers["X-Toy-Reply"] == "yes"
    assert response.headers["Content-Type"].startswith("application/json")
    seen = response.json()
    assert seen["method"] == "POST"
    assert seen["route_params"] == {"id": "42", "verb": "abort"}
    assert seen["params"] == {"reason": "bad canary"}
    assert seen["body"] == '{"rollback": true}'
    assert seen["header"] == "hello"
    assert seen["url"].endswith("/api/items/42/abort?reason=bad%20canary")


def test_a_route_with_fewer_segments_is_another_function(http_host: LocalFunctionsHost) -> None:
    response = requests.get(f"{http_host.api_url}/items/7", params={"code": http_host.function_key}, timeout=5)
    assert response.status_code == 200
    assert response.json()["route_params"] == {"id": "7"}
    assert toy.recorder.http_calls == [{"function": "one_item", "route_params": {"id": "7"}}]


def test_route_values_are_url_decoded_and_literals_compare_case_insensitively(http_host: LocalFunctionsHost) -> None:
    response = requests.get(
        f"{http_host.api_url}/ITEMS/a%20b%2Fc/x", headers={"x-functions-key": http_host.function_key}, timeout=5
    )
    assert response.status_code == 200
    assert response.json()["route_params"] == {"id": "a b/c", "verb": "x"}


def test_master_key_is_accepted_where_a_function_key_is_required(http_host: LocalFunctionsHost) -> None:
    response = requests.get(
        f"{http_host.api_url}/items/7", headers={"x-functions-key": http_host.master_key}, timeout=5
    )
    assert response.status_code == 200


@pytest.mark.parametrize("key", [None, "", "not-the-key"])
def test_missing_or_wrong_key_is_401_and_the_function_does_not_run(
    http_host: LocalFunctionsHost, key: str | None
) -> None:
    headers = {} if key is None else {"x-functions-key": key}
    response = requests.get(f"{http_host.api_url}/items/42/abort", headers=headers, timeout=5)
    assert response.status_code == 401
    assert toy.recorder.http_calls == []


def test_admin_level_needs_the_master_key(http_host: LocalFunctionsHost) -> None:
    url = f"{http_host.api_url}/restricted"
    assert requests.get(url, headers={"x-functions-key": http_host.function_key}, timeout=5).status_code == 401
    response = requests.get(url, headers={"x-functions-key": http_host.master_key}, timeout=5)
    assert (response.status_code, response.text) == (200, "admin only")


def test_anonymous_function_needs_no_key_and_a_bare_str_becomes_a_200(http_host: LocalFunctionsHost) -> None:
    response = requests.get(f"{http_host.api_url}/ping", timeout=5)
    assert (response.status_code, response.text) == (200, "pong")


def test_literal_segment_wins_over_a_parameter(http_host: LocalFunctionsHost) -> None:
    assert requests.get(f"{http_host.api_url}/things/latest", timeout=5).text == "the latest thing"
    assert requests.get(f"{http_host.api_url}/things/other", timeout=5).text == "thing other"


@pytest.mark.parametrize("path", ["/api/nothing-here", "/items/42", "/api/items/42/abort/extra", "/api/items"])
def test_unknown_routes_are_404(http_host: LocalFunctionsHost, path: str) -> None:
    response = requests.get(f"{http_host.url}{path}", headers={"x-functions-key": http_host.function_key}, timeout=5)
    assert response.status_code == 404
    assert toy.recorder.http_calls == []


def test_wrong_method_is_405_with_the_allowed_methods(http_host: LocalFunctionsHost) -> None:
    response = requests.delete(
        f"{http_host.api_url}/items/42", headers={"x-functions-key": http_host.function_key}, timeout=5
    )
    assert response.status_code == 405
    assert response.headers["Allow"] == "GET, POST"


def test_exception_is_a_generic_500_and_the_traceback_is_only_logged(
    http_host: LocalFunctionsHost, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="emulator.funchost"):
        response = requests.get(f"{http_host.api_url}/boom", timeout=5)
    assert response.status_code == 500
    assert "secret internal detail" not in response.text
    assert "Traceback" not in response.text
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "Traceback" in logged and "secret internal detail" in logged
    failed = [i for i in http_host.invocations if i.function == "boom"]
    assert failed[-1].outcome == "failed"
    assert failed[-1].error == "RuntimeError: secret internal detail"


def test_keys_file_is_private_and_reused_by_a_restarted_host(http_host: LocalFunctionsHost) -> None:
    keys_file = http_host.state_dir / "host_keys.json"
    assert stat.S_IMODE(keys_file.stat().st_mode) == 0o600
    data = json.loads(keys_file.read_text())
    assert data == {"masterKey": http_host.master_key, "functionKeys": {"default": http_host.function_key}}
    assert http_host.function_key != http_host.master_key
    with LocalFunctionsHost(
        toy.app, env={"TOY_TICK_SCHEDULE": NEVER}, http_port=0, state_dir=http_host.state_dir, functions=["ping"]
    ) as second:
        assert (second.function_key, second.master_key) == (http_host.function_key, http_host.master_key)


def test_route_templates_are_literals_and_whole_segment_parameters() -> None:
    route = RouteTemplate.parse("rollouts/{id}/{verb}")
    assert route.match("rollouts/r1/abort") == {"id": "r1", "verb": "abort"}
    assert route.match("/Rollouts/r1/abort/") == {"id": "r1", "verb": "abort"}
    assert route.match("rollouts/r1") is None
    assert route.match("fleet/r1/abort") is None
    assert RouteTemplate.parse("fleet").match("fleet") == {}
    # Literals before parameters, segment by segment (the sort key of the host's routing table).
    assert RouteTemplate.parse("things/latest").precedence() < RouteTemplate.parse("things/{name}").precedence()


@pytest.mark.parametrize(
    "template",
    [
        "items/{id:int}",  # ASP.NET constraints: no route of the product uses them
        "items/{id:regex(^v\\d+$)}",
        "items/{id:guid}",
        "items/{id}/{verb?}",  # optional
        "items/{id=1}",  # default value
        "files/{*rest}",  # catch-all
        "a/b{x}",  # a parameter inside a segment
        "a//b",
    ],
)
def test_route_features_the_product_does_not_use_are_refused_by_name(template: str) -> None:
    with pytest.raises(HostStartupError, match="route") as raised:
        RouteTemplate.parse(template)
    assert repr(template) in str(raised.value)


def test_an_app_with_an_unsupported_route_fails_start_naming_it(tmp_path: Path) -> None:
    app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)

    @app.route(route="items/{id:int}", methods=["GET"])
    def constrained(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse("never")

    host = LocalFunctionsHost(app, http_port=0, state_dir=tmp_path)
    with pytest.raises(HostStartupError, match=r"route 'items/\{id:int\}': segment '\{id:int\}' is not supported"):
        host.start()
    assert _threads_of(host) == []


def test_a_parameter_name_used_twice_is_refused() -> None:
    with pytest.raises(HostStartupError, match="used twice"):
        RouteTemplate.parse("a/{x}/{x}")


# ---- Timer ---------------------------------------------------------------------------------------


def test_timer_fires_on_a_fast_period_with_a_timer_request(tmp_path: Path) -> None:
    with LocalFunctionsHost(
        toy.app,
        env={"TOY_TICK_SCHEDULE": NEVER},
        http_port=0,
        timer_period_seconds=0.2,
        state_dir=tmp_path,
        functions=["tick"],
    ) as host:
        host.wait_for_invocations("tick", 3, timeout=5, outcome="succeeded")
    ticks = toy.recorder.ticks
    assert len(ticks) >= 3
    assert all(t["type"] is func.TimerRequest or issubclass(t["type"], func.TimerRequest) for t in ticks)
    assert [t["past_due"] for t in ticks[:3]] == [False, False, False]
    gaps = [b["at"] - a["at"] for a, b in zip(ticks, ticks[1:], strict=False)]
    assert all(0.05 < gap < 1.0 for gap in gaps), gaps  # period 0.2 s; loose for a loaded machine


def test_timer_never_overlaps_itself_and_flags_the_next_run_past_due(tmp_path: Path) -> None:
    toy.recorder.tick_seconds = 0.5  # each run outlasts two periods
    with LocalFunctionsHost(
        toy.app,
        env={"TOY_TICK_SCHEDULE": NEVER},
        http_port=0,
        timer_period_seconds=0.2,
        state_dir=tmp_path,
        functions=["tick"],
    ) as host:
        host.wait_for_invocations("tick", 3, timeout=10, outcome="succeeded")
        skipped = [i for i in host.invocations if i.function == "tick" and i.outcome == "skipped"]
    assert toy.recorder.max_active_ticks == 1
    assert skipped, "a firing during a running invocation must be skipped"
    # Every run after the first follows a skipped occurrence, so it is past due.
    assert toy.recorder.ticks[0]["past_due"] is False
    assert all(t["past_due"] for t in toy.recorder.ticks[1:3])


def test_timer_follows_its_ncrontab_schedule_without_an_override(tmp_path: Path) -> None:
    with LocalFunctionsHost(
        toy.app, env={"TOY_TICK_SCHEDULE": "* * * * * *"}, http_port=0, state_dir=tmp_path, functions=["tick"]
    ) as host:
        runs = host.wait_for_invocations("tick", 2, timeout=5, outcome="succeeded")
    # Each firing is on a whole second: the schedule, not the host's start time, sets the pace.
    scheduled = [datetime.fromisoformat(r.detail["scheduled"]) for r in runs]
    assert [s.microsecond for s in scheduled] == [0, 0]
    assert (scheduled[1] - scheduled[0]).total_seconds() == 1.0
    assert all(r.started_at.microsecond < 500_000 for r in runs), [r.started_at for r in runs]
    gap = (runs[1].started_at - runs[0].started_at).total_seconds()
    assert 0.5 < gap < 1.5


def test_admin_api_fires_a_timer_now(tmp_path: Path) -> None:
    with LocalFunctionsHost(
        toy.app, env={"TOY_TICK_SCHEDULE": NEVER}, http_port=0, state_dir=tmp_path, functions=["tick"]
    ) as host:
        url = f"{host.url}/admin/functions/tick"
        assert requests.post(url, json={"input": ""}, timeout=5).status_code == 401
        response = requests.post(url, json={"input": ""}, headers={"x-functions-key": host.master_key}, timeout=5)
        assert response.status_code == 202
        host.wait_for_invocations("tick", 1, timeout=5, outcome="succeeded")
    assert len(toy.recorder.ticks) == 1


def test_stop_is_prompt_and_leaves_no_thread_behind(tmp_path: Path) -> None:
    host = LocalFunctionsHost(
        toy.app,
        env={"TOY_TICK_SCHEDULE": NEVER, "TOY_CONTAINER": "none", "ToyStorage": "UseDevelopmentStorage=true"},
        http_port=0,
        state_dir=tmp_path,
        functions=["tick", "ping"],
    )
    host.start()
    assert requests.get(f"{host.api_url}/ping", timeout=5).status_code == 200
    began = time.monotonic()
    host.stop()
    assert time.monotonic() - began < 1.0
    assert _threads_of(host) == []
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{host.api_url}/ping", timeout=2)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "app setting 'TOY_TICK_SCHEDULE' (used as %TOY_TICK_SCHEDULE%) is not set"),
        (
            {"TOY_TICK_SCHEDULE": "*/0 * * * * *"},
            "function tick: second field '*/0' of schedule '*/0 * * * * *': invalid step '0'",
        ),
    ],
)
def test_bad_timer_settings_fail_start_with_the_setting_named(
    tmp_path: Path, env: dict[str, str], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TOY_TICK_SCHEDULE", raising=False)
    host = LocalFunctionsHost(toy.app, env=env, http_port=0, state_dir=tmp_path, functions=["tick"])
    with pytest.raises(HostStartupError) as raised:
        host.start()
    assert message in str(raised.value)
    assert _threads_of(host) == []


# ---- Blob ----------------------------------------------------------------------------------------


@pytest.fixture
def container(azurite: AzuriteService, azurite_names: AzuriteNames) -> Iterator[ContainerClient]:
    with BlobServiceClient.from_connection_string(azurite.connection_string) as service:
        client = service.create_container(azurite_names.container)
        yield client
        client.delete_container()


def _blob_host(
    azurite: AzuriteService, container: ContainerClient, state_dir: Path, **options: object
) -> LocalFunctionsHost:
    env = {"TOY_CONTAINER": container.container_name, "ToyStorage": azurite.connection_string}
    return LocalFunctionsHost(
        toy.app, env=env, http_port=0, blob_poll_seconds=0.1, state_dir=state_dir, functions=["on_blob"], **options
    )  # type: ignore[arg-type]


def test_blob_fires_once_per_blob_and_once_more_per_new_version(
    azurite: AzuriteService, container: ContainerClient, tmp_path: Path
) -> None:
    container.upload_blob("install_nginx.v7.sh", b"#!/bin/sh\necho v7\n", metadata={"release": "7"})
    with _blob_host(azurite, container, tmp_path) as host:
        host.wait_for_invocations("on_blob", 1, timeout=10)
        host.wait_for_blob_scans("on_blob", 3)
        assert len(toy.recorder.blobs) == 1  # three more scans, no second firing
        first = toy.recorder.blobs[0]
        assert first["name"] == f"{container.container_name}/install_nginx.v7.sh"
        assert first["uri"] == container.get_blob_client("install_nginx.v7.sh").url
        assert first["length"] == len(b"#!/bin/sh\necho v7\n")
        assert first["content"] == b"#!/bin/sh\necho v7\n"
        assert first["metadata"] == {"release": "7"}
        assert issubclass(first["type"], func.InputStream)

        container.upload_blob("install_nginx.v7.sh", b"#!/bin/sh\necho v7 fixed\n", overwrite=True)
        host.wait_for_invocations("on_blob", 2, timeout=10)
        host.wait_for_blob_scans("on_blob", 3)
    assert [b["content"] for b in toy.recorder.blobs] == [b"#!/bin/sh\necho v7\n", b"#!/bin/sh\necho v7 fixed\n"]


def test_receipts_stop_a_restarted_host_from_firing_again(
    azurite: AzuriteService, container: ContainerClient, tmp_path: Path
) -> None:
    container.upload_blob("a.sh", b"a")
    with _blob_host(azurite, container, tmp_path) as host:
        host.wait_for_invocations("on_blob", 1, timeout=10)
    container.upload_blob("b.sh", b"b")  # arrives while no host runs
    with _blob_host(azurite, container, tmp_path) as restarted:
        restarted.wait_for_invocations("on_blob", 1, timeout=10)
        restarted.wait_for_blob_scans("on_blob", 3)
        receipts = restarted.blob_receipts()
    assert [b["name"] for b in toy.recorder.blobs] == [
        f"{container.container_name}/a.sh",
        f"{container.container_name}/b.sh",
    ]
    assert sorted(v["status"] for v in receipts.values()) == ["done", "done"]
    assert json.loads((tmp_path / "blob_receipts.json").read_text()) == receipts


def test_a_failing_blob_is_retried_then_poisoned(
    azurite: AzuriteService, container: ContainerClient, tmp_path: Path
) -> None:
    container.upload_blob("bad.sh", b"fail please")
    with _blob_host(azurite, container, tmp_path, blob_max_dequeue_count=3) as host:
        host.wait_for_invocations("on_blob", 3, timeout=10, outcome="failed")
        host.wait_for_blob_scans("on_blob", 3)
        attempts = [i for i in host.invocations if i.function == "on_blob"]
        receipts = host.blob_receipts()
    assert [i.detail["attempt"] for i in attempts] == [1, 2, 3]
    assert all(i.outcome == "failed" for i in attempts)
    (entry,) = receipts.values()
    assert entry["status"] == "poisoned"
    assert entry["attempts"] == 3
    assert entry["error"] == f"ValueError: cannot handle {container.container_name}/bad.sh"


def test_an_sdk_typed_blob_trigger_gets_a_blob_client_and_the_host_never_downloads(
    azurite: AzuriteService, container: ContainerClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    downloads: list[str] = []
    original = BlobClient.download_blob

    def recording_download(self: BlobClient, *args: object, **kwargs: object) -> object:
        downloads.append(self.blob_name)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(BlobClient, "download_blob", recording_download)
    container.upload_blob("install_nginx.v8.sh", b"#!/bin/sh\necho v8\n" * 1000)
    env = {"TOY_CONTAINER": container.container_name, "ToyStorage": azurite.connection_string}
    with LocalFunctionsHost(
        toy.app, env=env, http_port=0, blob_poll_seconds=0.1, state_dir=tmp_path, functions=["on_blob_client"]
    ) as host:
        [invocation] = host.wait_for_invocations("on_blob_client", 1, timeout=10)
        host.wait_for_blob_scans("on_blob_client", 3)
        container.upload_blob("install_nginx.v8.sh", b"#!/bin/sh\necho v8 again\n", overwrite=True)
        host.wait_for_invocations("on_blob_client", 2, timeout=10)
        receipts = host.blob_receipts()
    assert invocation.outcome == "succeeded" and invocation.detail["binding"] == "sdk"
    seen, again = toy.recorder.blobs
    assert again["size"] == 24 and again["client"] == seen["client"]  # the worker's cache: the same client
    # The extension's own converter built the client from the connection *setting name* the host sent.
    assert issubclass(seen["type"], BlobClient)
    assert (seen["container"], seen["name"], seen["size"]) == (container.container_name, "install_nginx.v8.sh", 18000)
    assert downloads == []  # neither the host nor the binding read the content
    assert [v["status"] for v in receipts.values()] == ["done", "done"]  # receipts as for InputStream


def test_the_model_binding_data_is_what_the_storage_extension_sends() -> None:
    data = blob_model_binding_data("ReleaseStorage", "init", "install_nginx.v1.sh")
    assert (data.version, data.source, data.content_type) == ("1.0", "AzureStorageBlobs", "application/json")
    assert json.loads(data.content) == {
        "Connection": "ReleaseStorage",
        "ContainerName": "init",
        "BlobName": "install_nginx.v1.sh",
    }


def test_the_sdk_binding_builds_identity_clients_from_the_connection_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    """What Azure does with the product's identity-based ``ReleaseStorage`` (infra/): the extension's
    converter makes a BlobServiceClient on ``__blobServiceUri`` with a ManagedIdentityCredential. Only
    the client is built here: no request, so no token is asked for."""
    monkeypatch.delenv("ReleaseStorage", raising=False)
    monkeypatch.setenv("ReleaseStorage__blobServiceUri", "https://acct.blob.core.windows.net")
    data = blob_model_binding_data("ReleaseStorage", "init", "install_nginx.v1.sh")
    client = decode_sdk_binding("blobTrigger", blob_sdk.BlobClient, data)
    assert client.url == "https://acct.blob.core.windows.net/init/install_nginx.v1.sh"
    assert type(client.credential).__name__ == "ManagedIdentityCredential"


def test_an_sdk_blob_trigger_with_identity_settings_fails_start_even_when_they_are_empty(tmp_path: Path) -> None:
    # An empty ToyStorage__blobServiceUri still makes the extension use a managed identity.
    env = {"TOY_CONTAINER": "x", "ToyStorage": "UseDevelopmentStorage=true", "ToyStorage__blobServiceUri": ""}
    host = LocalFunctionsHost(toy.app, env=env, http_port=0, state_dir=tmp_path, functions=["on_blob_client"])
    with pytest.raises(HostStartupError, match="ToyStorage__blobServiceUri make the blob SDK binding use a managed"):
        host.start()


def test_blob_trigger_without_its_connection_setting_fails_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("ToyStorage", "AzureWebJobsToyStorage"):
        monkeypatch.delenv(name, raising=False)
    host = LocalFunctionsHost(
        toy.app, env={"TOY_CONTAINER": "x"}, http_port=0, state_dir=tmp_path, functions=["on_blob"]
    )
    with pytest.raises(HostStartupError, match="app setting 'ToyStorage'"):
        host.start()


def test_env_is_exported_during_the_run_and_restored_after(tmp_path: Path) -> None:
    assert "TOY_ONLY_WHILE_RUNNING" not in os.environ
    with LocalFunctionsHost(
        toy.app, env={"TOY_ONLY_WHILE_RUNNING": "1"}, http_port=0, state_dir=tmp_path, functions=["ping"]
    ):
        assert os.environ["TOY_ONLY_WHILE_RUNNING"] == "1"
    assert "TOY_ONLY_WHILE_RUNNING" not in os.environ
