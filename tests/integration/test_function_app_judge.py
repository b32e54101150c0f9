"""The canary judge through the function app over real sockets (Azurite, the ARM emulator over HTTPS,
real HTTP probes of the emulated instances): a bake that ends leaning worse pauses the rollout as
Marginal, with its figures on the API, and a human verb over HTTP resumes (promote) or rolls it back
(abort)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.fixtures.appenv import app_under_test
from tests.integration.test_function_app_rollout import V0, App

pytestmark = pytest.mark.integration


@pytest.fixture
def app(
    azurite: Any, azurite_names: Any, make_scale_set: Any, arm_emulator: Any, monkeypatch: pytest.MonkeyPatch
) -> Iterator[App]:
    # A short bake, and a judge that calls a single failed probe of the canary (none of the baseline's)
    # Marginal at the end of the bake: few samples, a high JUDGE_MARGINAL_P.
    setup = app_under_test(
        azurite,
        azurite_names,
        make_scale_set,
        arm_emulator,
        monkeypatch,
        size=3,
        v0=V0,
        BAKE_SECONDS="3",
        FAILURE_THRESHOLD="3",
        PROBE_BODY_PATTERN="Welcome to nginx",
        JUDGE_MIN_SAMPLES="1",
        JUDGE_MARGINAL_P="0.5",
    )
    application = App(setup.blobs, setup.container, setup.env)
    application.handle = setup.handle  # type: ignore[attr-defined]
    yield application
    setup.blobs.close()


def _marginal(app: App, arm_emulator: Any, version: int) -> str:
    handle = app.handle  # type: ignore[attr-defined]
    app.upload(f"install_nginx.v{version}.sh", f"#!/bin/bash\necho v{version}\n".encode())
    [summary] = [r for r in app.rollouts() if r["version"] == version]
    rid = summary["id"]
    detail = app.tick_until(rid, "Baking")
    [canary] = detail["canary"]
    arm_emulator.set_instance_health(handle.resource_group, handle.name, canary, False)
    try:
        app.tick()  # one failed probe of the canary during the bake
    finally:
        arm_emulator.set_instance_health(handle.resource_group, handle.name, canary, True)
    detail = app.tick_until(rid, "Paused", "Promoting", "RollingBack", timeout=90)
    assert detail["phase"] == "Paused", detail["reason"]
    return rid


def test_a_marginal_verdict_pauses_and_promote_over_http_finishes_the_rollout(app: App, arm_emulator: Any) -> None:
    rid = _marginal(app, arm_emulator, 1)
    detail = app.rollout(rid)
    assert detail["reason"].startswith("canary judged Marginal, a human decides (promote or abort)")
    assert detail["pausedFrom"] == "Baking"
    judgement = detail["judgement"]
    assert judgement["verdict"] == "Marginal" and judgement["canary"]["errors"] == 1
    assert judgement["baseline"]["errors"] == 0 and len(judgement["baselineInstances"]) == 1
    assert 0 < judgement["figures"]["errorRate"]["pFail"] < 0.5
    [judged] = [e for e in detail["events"] if e["kind"] == "Judged"]
    assert judged["judgement"]["verdict"] == "Marginal"
    for _ in range(3):  # paused: ticks leave it there
        app.tick()
        time.sleep(0.2)
    assert app.rollout(rid)["phase"] == "Paused"
    status, payload = app.http("steer_rollout", "POST", {"id": rid, "verb": "promote"}, {"reason": "accepted"})
    assert status == 200, payload
    detail = app.tick_until(rid, "Succeeded")
    assert any(e["kind"] == "Promoted" and e["actor"] == "function key" for e in detail["events"])


def test_a_marginal_verdict_is_rolled_back_by_abort_over_http(app: App, arm_emulator: Any) -> None:
    rid = _marginal(app, arm_emulator, 2)
    status, payload = app.http("steer_rollout", "POST", {"id": rid, "verb": "abort"}, {"reason": "too risky"})
    assert status == 200 and payload["phase"] == "RollingBack", payload
    detail = app.tick_until(rid, "RolledBack", timeout=90)
    assert detail["rollbackReason"] == "aborted by function key (too risky) after a Marginal verdict"
