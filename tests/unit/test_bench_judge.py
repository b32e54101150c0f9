"""bench/judge.py's pure parts (the verdict read from a rollout's detail, the release scripts, the generated
section of docs/safety.md) and the synthetic instances' failure that spares a health path."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from bench.judge import END_MARKER, LABELS, START_MARKER, RunResult, site_script, table, verdict_of, write_section
from emulator.runtime import InstanceModel
from emulator.synthetic import FailureRule, FailureRules, SyntheticRuntime


def _event(kind: str, at: str, message: str) -> dict[str, Any]:
    return {"kind": kind, "at": at, "message": message}


def test_the_verdict_of_a_judged_fail_is_timed_from_the_bake_start_to_the_judged_event() -> None:
    detail = {
        "phase": "RolledBack",
        "judgement": {"verdict": "Fail"},
        "events": [
            _event("PhaseChanged", "2026-01-01T00:00:01Z", "Canary -> Baking: canary healthy; baking for 15 s"),
            _event("Judged", "2026-01-01T00:00:03.500000Z", "canary judged Fail: Fail: error rate 9% vs 0%"),
            _event("PhaseChanged", "2026-01-01T00:00:03.500000Z", "Baking -> RollingBack: canary judged worse"),
        ],
    }
    assert verdict_of(detail) == ("Fail", 2.5, "canary judged Fail: Fail: error rate 9% vs 0%")


def test_a_pass_at_the_end_of_the_bake_is_timed_to_the_promotion_and_no_bake_means_no_verdict() -> None:
    bake = _event("PhaseChanged", "2026-01-01T00:00:00Z", "Canary -> Baking: canary healthy")
    promoted = _event("PhaseChanged", "2026-01-01T00:00:15Z", "Baking -> Promoting: canary healthy for 15 s")
    judgement = {
        "verdict": "Pass",
        "canary": {"requests": 240, "errors": 5},
        "baseline": {"requests": 238, "errors": 0},
        "figures": {"why": "no evidence of a degradation beyond the allowed effect"},
    }
    detail = {"phase": "Succeeded", "judgement": judgement, "events": [bake, promoted]}
    assert verdict_of(detail) == (
        "Pass",
        15.0,
        "no evidence of a degradation beyond the allowed effect; errors 5/240 vs 0/238",
    )
    # Rolled back by the probes before any bake: the judge gave no verdict.
    probe = {"phase": "RolledBack", "judgement": None, "rollbackReason": "canary unhealthy", "events": []}
    assert verdict_of(probe) == ("none", None, "canary unhealthy")


def test_the_table_counts_each_verdict_and_what_was_expected() -> None:
    results = [
        RunResult("good", 1, "Succeeded", "Pass", 15.0, ""),
        RunResult("good", 2, "Paused", "Marginal", 15.2, ""),
        RunResult("broken", 3, "RolledBack", "Fail", 1.0, ""),
    ]
    lines = table(results).splitlines()
    assert lines[2].startswith("| good ") and "| 2 | 1 | 1 | 0 | 0 | 1/2 | 15.1 / 15.1 |" in lines[2]
    assert lines[3].startswith("| broken ") and "| 1 | 0 | 0 | 1 | 0 | 1/1 | 1.0 / 1.0 |" in lines[3]


def test_the_generated_section_replaces_only_what_is_between_its_markers(tmp_path: Path) -> None:
    doc = tmp_path / "safety.md"
    doc.write_text(f"before\n{START_MARKER}\nold table\n{END_MARKER}\nafter\n")
    write_section("new table", doc)
    write_section("newer table", doc)
    assert doc.read_text() == f"before\n{START_MARKER}\nnewer table\n{END_MARKER}\nafter\n"
    doc.write_text("no markers")
    with pytest.raises(SystemExit):
        write_section("x", doc)


def test_every_release_script_is_valid_bash_and_keeps_the_health_path() -> None:
    for label in LABELS.values():
        script = site_script(label, "http://127.0.95.250:8080").decode()
        subprocess.run(["bash", "-n"], input=script, text=True, check=True)
        assert 'location = /healthz { return 200 "ok\\n"; }' in script
    assert "5% 1;" in site_script(LABELS["errors-5%"], "http://u").decode()
    assert "return 500;" in site_script(LABELS["broken"], "http://u").decode()
    assert "/delay/200;" in site_script(LABELS["slow-2x"], "http://u").decode()


def test_an_http500_failure_can_spare_the_health_path() -> None:
    rules = FailureRules()
    rules.add(FailureRule(r"v2\.sh", "http500", spare_path="/healthz"))
    runtime = SyntheticRuntime("127.0.0.1", InstanceModel(image_id="img"), rules=rules, serve=False)
    runtime.apply(InstanceModel(image_id="img", settings={"fileUris": ["https://x/init/app.v2.sh"]}))
    assert runtime.page("/")[0] == 500 and runtime.page("/api")[0] == 500
    assert runtime.page("/healthz")[0] == 200
    runtime.reimage(InstanceModel(image_id="img", settings={"fileUris": ["https://x/init/app.v1.sh"]}))
    assert runtime.page("/")[0] == 200
    for bad in (FailureRule("x", "extension", spare_path="/healthz"), FailureRule("x", "http500", spare_path="hz")):
        with pytest.raises(ValueError, match="spare_path"):
            rules.add(bad)
