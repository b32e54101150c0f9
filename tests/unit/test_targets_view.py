"""GET /api/targets as JSON: policies and probes as the app settings that set them."""

from __future__ import annotations

from rollout.policy import RolloutPolicy
from rollout.settings import ProbeSettings
from rollout.targets import Group, OnFailure, Target, TargetRef, TargetsConfig, Wave
from rollout.views import knob_settings, targets_json


def test_knob_settings_use_the_app_setting_names_and_one_value_per_setting() -> None:
    assert knob_settings(RolloutPolicy())["MAX_UNAVAILABLE"] == "20%"
    policy = knob_settings(RolloutPolicy(max_unavailable=2, batch_size=3, rollback_reimage=False))
    assert policy["MAX_UNAVAILABLE"] == 2 and policy["BATCH_SIZE"] == 3 and policy["ROLLBACK_REIMAGE"] is False
    assert set(policy) == {
        "CANARY_COUNT",
        "BAKE_SECONDS",
        "BATCH_PERCENT",
        "BATCH_SIZE",
        "BATCH_MODE",
        "MAX_UNAVAILABLE",
        "FAILURE_THRESHOLD",
        "PROGRESS_DEADLINE_SECONDS",
        "UPGRADE_RETRY_SECONDS",
        "LOOK_INTERVAL_SECONDS",
        "MIN_HEALTHY_INSTANCES",
        "ROLLBACK_REIMAGE",
        "LATENCY_RATIO",
        "LATENCY_MIN_DELTA_MS",
        "JUDGE_ALPHA",
        "JUDGE_PASS_ALPHA",
        "JUDGE_ERROR_MARGIN_PERCENT",
        "JUDGE_LATENCY_RATIO",
        "JUDGE_MIN_SAMPLES",
        "JUDGE_MARGINAL_P",
        "ROLLBACK_MODE",
    }
    assert knob_settings(ProbeSettings(path="/h"))["PROBE_PATH"] == "/h"


def test_targets_json_lists_groups_waves_targets_and_state() -> None:
    a = Target(TargetRef("s", "rg", "a"), RolloutPolicy(canary_count=2))
    b = Target(TargetRef("s", "rg", "b"))
    config = TargetsConfig(
        groups=(Group("web", (Wave((a,)), Wave((b,))), wave_bake_seconds=60, on_failure=OnFailure.ROLLBACK_ALL),),
        source="blob init/t.yaml",
        default_group="web",
    )
    body = targets_json(config, (), {"rg:a": {"activePhase": "Canary"}}, [])
    assert body["ok"] is True and body["source"] == "blob init/t.yaml" and body["defaultGroup"] == "web"
    [web] = body["groups"]
    assert web["onFailure"] == "rollback-all" and web["waveBakeSeconds"] == 60
    assert [w["wave"] for w in web["waves"]] == [1, 2]
    first = web["waves"][0]["targets"][0]
    assert first["key"] == "rg:a" and first["policy"]["CANARY_COUNT"] == 2
    assert first["state"] == {"activePhase": "Canary"}
    assert web["waves"][1]["targets"][0]["state"] is None
    broken = targets_json(TargetsConfig(groups=()), ("bad",), {}, [])
    assert broken["ok"] is False and broken["errors"] == ["bad"] and broken["groups"] == []
