"""The canary judge on signals the emulator serves in Azure Monitor's shapes, through the function app.

The function app reads the scale set's Log Analytics workspace (``SIGNALS_LOGS_WORKSPACE_ID``, with
``SIGNALS_LOGS_ENDPOINT`` the ARM emulator's URL: the real ``LogsQueryClient`` over HTTPS, the emulator's
``POST /v1/workspaces/{id}/query`` answering the product's default query from what the instances
really served) while a load generator (``bench/traffic.py``) sends real traffic to every instance. The
health probe reads ``/healthz``: a release that breaks the application but keeps that endpoint up
passes every probe, so only the traffic's 5xx in the logs can tell. It is rolled back by the judge,
with the Log Analytics figures in its ``Judged`` event; a good release passes with the same figures.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from bench.traffic import LoadGenerator
from tests.fixtures.appenv import app_under_test
from tests.integration.test_function_app_rollout import V0, App

pytestmark = pytest.mark.integration

WORKSPACE = "00000000-0000-0000-0000-0000000b0b11"  # this test's workspace in the session's emulator
HEALTH = "/healthz"


@pytest.fixture
def app(
    azurite: Any, azurite_names: Any, make_scale_set: Any, arm_emulator: Any, monkeypatch: pytest.MonkeyPatch
) -> Iterator[App]:
    arm_emulator.monitor.add_workspace(WORKSPACE)
    setup = app_under_test(
        azurite,
        azurite_names,
        make_scale_set,
        arm_emulator,
        monkeypatch,
        size=3,
        v0=V0,
        BAKE_SECONDS="5",
        FAILURE_THRESHOLD="3",
        PROBE_PATH=HEALTH,
        SIGNALS_LOGS_WORKSPACE_ID=WORKSPACE,
        SIGNALS_LOGS_ENDPOINT=arm_emulator.url,
    )
    application = App(setup.blobs, setup.container, setup.env)
    application.handle = setup.handle  # type: ignore[attr-defined]
    yield application
    setup.blobs.close()


def _load(app: App) -> LoadGenerator:
    handle = app.handle  # type: ignore[attr-defined]
    return LoadGenerator(lambda: list(handle.addresses().values()), port=handle.port, workers=1, interval_s=0.05)


def _judged(detail: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for e in detail["events"] if e["kind"] == "Judged"]


def test_a_canary_answering_5xx_to_traffic_behind_a_healthy_probe_is_failed_by_the_judge_on_the_logs(
    app: App, arm_emulator: Any
) -> None:
    handle = app.handle  # type: ignore[attr-defined]
    arm_emulator.fail_release(handle.resource_group, handle.name, r"v1\.sh", mode="http500", spare_path=HEALTH)
    arm_emulator.clear_requests()
    with _load(app) as load:
        app.upload("install_nginx.v1.sh", b"#!/bin/bash\necho v1\n")
        [rid] = [r["id"] for r in app.rollouts() if r["version"] == 1]
        detail = app.tick_until(rid, "RollingBack", "RolledBack", "Promoting", "Succeeded", "Paused", timeout=90)
        assert "500" in load.counts(), load.counts()  # the traffic did meet the broken canary
    assert detail["phase"] in ("RollingBack", "RolledBack"), detail["reason"]
    # Every probe of the canary passed: it was the judge, during the bake, on the logs' figures.
    assert detail["rollbackReason"].startswith("canary judged worse than the baseline: Fail: error rate"), detail
    [judged] = _judged(detail)
    figures = judged["judgement"]
    assert figures["verdict"] == "Fail"
    canary, baseline = figures["canary"], figures["baseline"]
    # One probe per look, and the logs' requests: the same probes of /healthz (answered 200) and the load
    # (answered 500 by the canary).
    assert canary["requests"] > 3 * figures["look"] and canary["errors"] >= canary["requests"] - 2 * figures["look"]
    assert baseline["errors"] == 0 and baseline["requests"] > 3 * figures["look"]
    assert figures["errorRate"]["pFail"] <= figures["failBoundary"]
    # Those figures came through the Log Analytics query API of the emulator, in its official shape.
    queries = arm_emulator.requests("POST", f"/v1/workspaces/{WORKSPACE}/query")
    assert queries and all(q.body["query"].startswith("NginxAccess_CL") for q in queries)
    app.tick_until(rid, "RolledBack", timeout=90)


def test_a_good_canary_under_the_same_traffic_passes_the_judge(app: App, arm_emulator: Any) -> None:
    with _load(app) as load:
        app.upload("install_nginx.v2.sh", b"#!/bin/bash\necho v2\n")
        [rid] = [r["id"] for r in app.rollouts() if r["version"] == 2]
        detail = app.tick_until(rid, "Promoting", "Succeeded", "RollingBack", "RolledBack", "Paused", timeout=90)
        counts = load.counts()
    assert detail["phase"] in ("Promoting", "Succeeded"), detail["reason"]
    assert set(counts) == {"200"}, counts
    judgement = detail["judgement"]
    assert judgement["verdict"] == "Pass", judgement
    assert judgement["canary"]["errors"] == 0 and judgement["baseline"]["errors"] == 0
    # The logs' requests, not only one probe per look.
    assert judgement["canary"]["requests"] > 3 * judgement["looks"] < judgement["baseline"]["requests"]
    app.tick_until(rid, "Succeeded", timeout=90)
