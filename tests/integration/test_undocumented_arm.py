"""Rollouts, rollbacks and aborts end correctly whatever ARM does where it is undocumented.

Two ARM behaviours are not documented (docs/emulator.md, "Undocumented behaviours"), so every test
here runs under each combination of the emulator's switches:

* ``model_applied``: "content" (writing the baseline back makes untouched instances latest again) or
  "version" (they stay outdated, though they run the baseline, until upgraded);
* ``upgrade_while_updating``: "accept" or "conflict" (409 for a manualupgrade naming an instance that
  is already Updating).

Through the function app's own triggers, the real adapters and SDKs, Azurite and the emulator over
HTTPS, as in test_function_app_rollout.py. "On the baseline" is checked on what each instance
really applied (the emulator's record and the page it serves), not on ``latestModelApplied``.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from typing import Any

import pytest

from rollout.adapters.compute import AzureCompute
from tests.integration import test_function_app_rollout as twin
from tests.integration.test_function_app_rollout import App, pages, upgrade_calls

pytestmark = pytest.mark.integration

app = twin.app  # the same fixture: the function app on Azurite and the emulator, a 5-instance scale set

COMBINATIONS = list(itertools.product(("content", "version"), ("accept", "conflict")))


@pytest.fixture(params=COMBINATIONS, ids=[f"{m}-{u}" for m, u in COMBINATIONS])
def semantics(request: pytest.FixtureRequest, app: App, arm_emulator: Any) -> Iterator[tuple[str, str]]:
    """The switches for this run (``app`` first: its scale set fixture restores them at teardown)."""
    model_applied, upgrade_while_updating = request.param
    arm_emulator.set_semantics(model_applied=model_applied, upgrade_while_updating=upgrade_while_updating)
    yield model_applied, upgrade_while_updating


def on_release(arm_emulator: Any, handle: Any, script: str) -> dict[str, bool]:
    """instance id -> does it run ``script``: the model it applied, and the page it serves."""
    served = pages(handle)
    out = {}
    for iid, inst in handle.state.instances.items():
        uris = [u for e in inst.applied.extensions for u in e.settings.get("fileUris", [])]
        applied = bool(uris) and all(u.rsplit("/", 1)[-1] == script for u in uris)
        out[iid] = applied and f"release={script}" in served[iid]
    return out


def assert_on_baseline_and_healthy(arm_emulator: Any, handle: Any) -> None:
    """Every instance applied the baseline's script, serves it, and is healthy; the model is the baseline."""
    arm_emulator.wait_idle(timeout=30)
    model = handle.state.model
    assert [e.settings["fileUris"][0].rsplit("/", 1)[-1] for e in model.extensions] == ["install_nginx.sh"]
    served = pages(handle)
    public = [(e.name, e.settings) for e in model.extensions]  # protected settings: see docs/design.md
    for iid, inst in handle.state.instances.items():
        assert [(e.name, e.settings) for e in inst.applied.extensions] == public, f"{iid} is not on the baseline"
        assert inst.applied.image_id == model.image_id
        assert inst.provisioning_state == "Succeeded", (iid, inst.provisioning_state)
        assert "Welcome to nginx" in served[iid] and ".v" not in served[iid].split("release=")[-1], served[iid]


def test_a_good_release_ends_succeeded_with_every_instance_on_it(
    app: App, arm_emulator: Any, semantics: tuple[str, str]
) -> None:
    handle = app.handle  # type: ignore[attr-defined]
    app.upload("install_nginx.v1.sh", b"#!/bin/bash\necho v1\n")
    [summary] = app.rollouts()
    detail = app.tick_until(summary["id"], "Succeeded", "RolledBack", "Failed")
    assert detail["phase"] == "Succeeded", detail["reason"]
    assert all(on_release(arm_emulator, handle, "install_nginx.v1.sh").values())
    assert sorted(i for call in upgrade_calls(arm_emulator) for i in call) == ["0", "1", "2", "3", "4"]


def test_a_failing_canary_rolls_back_to_the_baseline_and_a_later_release_still_succeeds(
    app: App, arm_emulator: Any, semantics: tuple[str, str]
) -> None:
    handle = app.handle  # type: ignore[attr-defined]
    arm_emulator.fail_release(handle.resource_group, handle.name, r"install_nginx\.v2\.sh", mode="extension")
    app.upload("install_nginx.v2.sh", b"#!/bin/bash\nexit 1\n")
    [summary] = app.rollouts()
    detail = app.tick_until(summary["id"], "RolledBack", "Failed", "Succeeded")
    assert detail["phase"] == "RolledBack", detail["reason"]
    assert "extension failed" in detail["rollbackReason"]
    # Only the canary took v2, so only the canary was moved back.
    assert upgrade_calls(arm_emulator) == [["0"], ["0"]]
    assert_on_baseline_and_healthy(arm_emulator, handle)
    if semantics[0] == "version":
        # The instances that never left the baseline now read "outdated" though they run it.
        latest = arm_emulator.describe(handle.resource_group, handle.name)["instances"]
        assert [i["latestModelApplied"] for i in latest] == [True, False, False, False, False]

    # A later rollout is not fooled by those "outdated" instances: it upgrades all, once each.
    arm_emulator.clear_requests()
    app.upload("install_nginx.v3.sh", b"#!/bin/bash\necho v3\n")
    later = next(r for r in app.rollouts() if r["version"] == 3)
    detail = app.tick_until(later["id"], "Succeeded", "RolledBack", "Failed")
    assert detail["phase"] == "Succeeded", detail["reason"]
    assert all(on_release(arm_emulator, handle, "install_nginx.v3.sh").values())
    assert sorted(i for call in upgrade_calls(arm_emulator) for i in call) == ["0", "1", "2", "3", "4"]


def test_a_batch_that_fails_after_some_instances_were_upgraded_rolls_every_one_back(
    app: App, arm_emulator: Any, semantics: tuple[str, str]
) -> None:
    handle = app.handle  # type: ignore[attr-defined]
    arm_emulator.set_timings(handle.resource_group, handle.name, upgrade_seconds=0.4)
    app.upload("install_nginx.v4.sh", b"#!/bin/bash\necho v4\n")
    [summary] = app.rollouts()
    rid = summary["id"]
    deadline = time.monotonic() + 60
    while "BatchSucceeded" not in [e["kind"] for e in app.rollout(rid)["events"]]:
        assert time.monotonic() < deadline, app.rollout(rid)
        app.tick()
        time.sleep(0.15)
    # From now on v4 fails to install: the next batch fails, after the canary and batch 1 took it.
    arm_emulator.fail_release(handle.resource_group, handle.name, r"install_nginx\.v4\.sh", mode="extension")
    detail = app.tick_until(rid, "RolledBack", "Failed", "Succeeded", timeout=90)
    assert detail["phase"] == "RolledBack", detail["reason"]
    assert "failed" in detail["rollbackReason"]
    moved = sorted({i for call in upgrade_calls(arm_emulator)[:-1] for i in call})
    assert len(moved) >= 3  # the canary, batch 1 and the failed batch
    assert_on_baseline_and_healthy(arm_emulator, handle)


def test_an_abort_with_rollback_restores_the_baseline(app: App, arm_emulator: Any, semantics: tuple[str, str]) -> None:
    handle = app.handle  # type: ignore[attr-defined]
    app.upload("install_nginx.v5.sh", b"#!/bin/bash\necho v5\n")
    [summary] = app.rollouts()
    rid = summary["id"]
    app.tick_until(rid, "Promoting")
    status, payload = app.http("steer_rollout", "POST", {"id": rid, "verb": "abort"}, {"rollback": True})
    assert status == 200, payload
    detail = app.tick_until(rid, "RolledBack", "Failed")
    assert detail["phase"] == "RolledBack", detail["reason"]
    assert_on_baseline_and_healthy(arm_emulator, handle)


def test_an_instance_someone_else_is_upgrading_does_not_lose_the_batch(
    app: App,
    arm_emulator: Any,
    compute_client: Any,
    semantics: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Between a tick's observation and its batch call, another operator starts upgrading one of the
    batch's instances. Under "conflict" ARM refuses the whole call (409): the tick must record it,
    keep the batch and issue the rest again; under "accept" the call goes through."""
    handle = app.handle  # type: ignore[attr-defined]
    monkeypatch.setenv("BATCH_SIZE", "2")
    monkeypatch.setenv("MAX_UNAVAILABLE", "2")
    arm_emulator.set_timings(handle.resource_group, handle.name, upgrade_seconds=0.5)
    original = AzureCompute.upgrade_instances
    raced: list[str] = []

    def racing_upgrade(self: AzureCompute, instance_ids: Any) -> None:
        if not raced and len(instance_ids) == 2:
            raced.append(str(instance_ids[0]))
            compute_client.virtual_machine_scale_sets.begin_update_instances(
                handle.resource_group, handle.name, {"instanceIds": [str(instance_ids[0])]}
            )
        original(self, instance_ids)

    monkeypatch.setattr(AzureCompute, "upgrade_instances", racing_upgrade)
    app.upload("install_nginx.v6.sh", b"#!/bin/bash\necho v6\n")
    [summary] = app.rollouts()
    detail = app.tick_until(summary["id"], "Succeeded", "RolledBack", "Failed", timeout=90)
    assert detail["phase"] == "Succeeded", detail["reason"]
    assert raced, "the race was never staged"
    assert all(on_release(arm_emulator, handle, "install_nginx.v6.sh").values())
    statuses = [r.status for r in arm_emulator.requests("POST", "/manualupgrade")]
    failures = [e for e in detail["events"] if e["kind"] == "ActionFailed"]
    if semantics[1] == "conflict":
        assert 409 in statuses
        assert any("409" in e["message"] and "OperationNotAllowed" in e["message"] for e in failures)
    else:
        assert 409 not in statuses and not failures
    # Nobody applied twice: the raced instance's one apply served the batch.
    assert all(inst.upgrades == 1 for inst in handle.state.instances.values()), {
        i: inst.upgrades for i, inst in handle.state.instances.items()
    }
