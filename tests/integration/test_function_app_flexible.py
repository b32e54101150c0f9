"""Rollouts of a Flexible scale set through the function app's own triggers, the real adapters and SDKs,
Azurite and the ARM emulator over HTTPS, under both alternatives of the emulator's
``flexible_model_applied`` switch (a Flexible VM's REST shape has no latestModelApplied; "in_vm_list"
is the alternative where the VM list carries one anyway). What the instances run is checked on what
each applied (the emulator's record and the page it serves), not on any latest-model reading.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from rollout.adapters.blobs import ReleaseBlobs
from tests.fixtures.appenv import function_app_env
from tests.integration.test_function_app_rollout import App, upgrade_calls
from tests.integration.test_undocumented_arm import assert_on_baseline_and_healthy, on_release

pytestmark = pytest.mark.integration

V0 = b"#!/bin/bash\napt-get update\napt-get install -y nginx\n"
SWITCHES = ("absent", "in_vm_list")


@pytest.fixture(params=SWITCHES)
def flexible_app(
    request: pytest.FixtureRequest,
    azurite: Any,
    azurite_names: Any,
    make_scale_set: Any,
    arm_emulator: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[App]:
    """The function app on Azurite and the emulator, steering a 5-VM Flexible scale set."""
    arm_emulator.set_semantics(flexible_model_applied=request.param)  # make_scale_set restores it
    container = azurite_names.container
    blobs = ReleaseBlobs.from_connection_string(azurite.connection_string, container=container)
    blobs.ensure_container()
    v0_url = blobs.upload("install_nginx.sh", V0)
    handle = make_scale_set(
        5,
        orchestration_mode="Flexible",
        extension_settings={"fileUris": [v0_url], "commandToExecute": "bash install_nginx.sh"},
    )
    env = function_app_env(
        handle,
        arm_emulator,
        azurite.connection_string,
        container,
        azurite_names.table_prefix,
        BAKE_SECONDS="1",
        FAILURE_THRESHOLD="2",
        PROBE_BODY_PATTERN="Welcome to nginx",
    )
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    for key in ("HTTP_AUTH", "WEBSITE_AUTH_ENABLED"):
        monkeypatch.delenv(key, raising=False)
    application = App(blobs, container, env)
    application.handle = handle  # type: ignore[attr-defined]
    yield application
    blobs.close()


def names(handle: Any) -> list[str]:
    return [i.instance_id for i in handle.state.instances_in_order()]


def test_a_good_release_reaches_every_vm_once_by_name(flexible_app: App, arm_emulator: Any) -> None:
    handle = flexible_app.handle  # type: ignore[attr-defined]
    flexible_app.upload("install_nginx.v1.sh", b"#!/bin/bash\necho v1\n")
    [summary] = flexible_app.rollouts()
    detail = flexible_app.tick_until(summary["id"], "Succeeded", "RolledBack", "Failed")
    assert detail["phase"] == "Succeeded", detail["reason"]
    assert all(on_release(arm_emulator, handle, "install_nginx.v1.sh").values())
    assert Counter(i for call in upgrade_calls(arm_emulator) for i in call) == Counter(names(handle))
    assert [i.upgrades for i in handle.state.instances_in_order()] == [1] * 5
    status, fleet = flexible_app.http("fleet_status", "GET", {})
    assert status == 200 and fleet["orchestrationMode"] == "Flexible"
    assert [i["instanceId"] for i in fleet["instances"]] == names(handle)
    reported = arm_emulator.flexible_model_applied == "in_vm_list"
    assert fleet["summary"]["onLatestModel"] == (5 if reported else None)


def test_a_failing_canary_is_moved_back_and_reimaged_through_the_vm(flexible_app: App, arm_emulator: Any) -> None:
    handle = flexible_app.handle  # type: ignore[attr-defined]
    arm_emulator.fail_release(handle.resource_group, handle.name, r"install_nginx\.v2\.sh", mode="extension")
    flexible_app.upload("install_nginx.v2.sh", b"#!/bin/bash\nexit 1\n")
    [summary] = flexible_app.rollouts()
    detail = flexible_app.tick_until(summary["id"], "RolledBack", "Failed", "Succeeded")
    assert detail["phase"] == "RolledBack", detail["reason"]
    [canary] = detail["canary"]
    assert upgrade_calls(arm_emulator) == [[canary], [canary]]
    reimages = [r.path for r in arm_emulator.requests("POST") if r.path.lower().endswith("/reimage")]
    assert [p.rsplit("/", 2)[-2] for p in reimages] == [canary]
    assert "/virtualMachineScaleSets/" not in reimages[0]
    assert_on_baseline_and_healthy(arm_emulator, handle)


def test_a_throttled_batch_is_sent_again_and_no_vm_is_left_behind(flexible_app: App, arm_emulator: Any) -> None:
    handle = flexible_app.handle  # type: ignore[attr-defined]
    flexible_app.upload("install_nginx.v3.sh", b"#!/bin/bash\necho v3\n")
    [summary] = flexible_app.rollouts()
    rid = summary["id"]
    flexible_app.tick_until(rid, "Promoting")
    # The next manualupgrade answers 429 to the first try and the adapter's 3 retries: the call fails.
    arm_emulator.inject_fault("POST", "/manualupgrade$", 429, count=4, headers={"Retry-After": "1"})
    detail = flexible_app.tick_until(rid, "Succeeded", "RolledBack", "Failed", timeout=90)
    assert detail["phase"] == "Succeeded", detail["reason"]
    statuses = [r.status for r in arm_emulator.requests("POST", "/manualupgrade")]
    assert statuses.count(429) == 4
    assert all(on_release(arm_emulator, handle, "install_nginx.v3.sh").values())
