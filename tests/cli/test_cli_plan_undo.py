"""``vmss-canary plan`` and ``vmss-canary undo`` against the function app's real HTTP functions (served by
the local Functions host over fakes): JSON and human output, exit codes, and that a plan writes nothing."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

import vmss_canary_cli.app as cli
from emulator.easyauth import LocalTokenIssuer
from rollout.access import OPERATE_ROLE, READ_ROLE
from rollout.policy import RolloutPolicy
from tests.cli.apiserver import HTTP_FUNCTIONS, FakeWorld, load_function_app, serve
from tests.cli.test_cli import Api, ended, runner
from vmss_canary_cli import render
from vmss_canary_cli.exits import ExitCode

WRITES = ("update_model", "upgrade_instances", "reimage_instances")


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Callable[..., Api]]:
    """``make_api`` of tests/cli/test_cli.py: the API over a world of fakes built with these options."""
    hosts: list[Any] = []

    def make(**world_options: Any) -> Api:
        world = FakeWorld(**world_options)
        context = serve(world, monkeypatch, tmp_path, functions=HTTP_FUNCTIONS)
        host = context.__enter__()
        hosts.append(context)
        return Api(world, host.url, host.function_key)

    yield make
    for context in hosts:
        context.__exit__(None, None, None)


def succeed(api: Api, version: int) -> str:
    rid = api.world.release(f"install_nginx.v{version}.sh")
    assert ended(api.world, rid) == "Succeeded"
    return rid


def test_plan_json_is_the_apis_answer_and_nothing_is_written(served: Callable[..., Api], tmp_path: Path) -> None:
    api = served()
    file = tmp_path / "install_nginx.v1.sh"
    file.write_text("#!/bin/bash\necho v1\n")
    store = api.world.store
    before = copy.deepcopy((store.targets, store.rollouts, store.events, store.commits))

    result = api.cli("plan", str(file), "-o", "json")

    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["release"] == "install_nginx.v1.sh" and payload["written"] is False
    [wave] = payload["waves"]
    [target] = wave["targets"]
    assert target["target"] == "rg:vmss"
    assert [s["instances"] for s in target["steps"]] == [["0"], ["1"], ["2"], ["3"], ["4"]]
    assert target["armWrites"]["promotion"]["total"] == 6
    assert copy.deepcopy((store.targets, store.rollouts, store.events, store.commits)) == before
    assert [c for c in api.world.scale_set.calls if c[0] in WRITES] == []


def test_plan_human_output_shows_steps_capacity_times_writes_and_findings(served: Callable[..., Api]) -> None:
    api = served(size=2)  # 20% of 2 instances: pre-flight refuses
    result = api.cli("plan", "install_nginx.v1.sh")
    assert result.exit_code == ExitCode.REJECTED, result.output
    out = result.stdout
    assert "what-if install_nginx.v1.sh to group 'default': refused - nothing was written" in out
    assert "canary" in out and "batch 1" in out
    assert "at most 1 instance(s) down at once (50.0%), 1 always serving" in out
    assert "times from" in out and "PROGRESS_DEADLINE_SECONDS" in out
    assert "refuse [policy] MAX_UNAVAILABLE 20% of 2 instance(s) rounds up to 1 instance(s)" in " ".join(out.split())


def test_plan_of_a_version_after_releases_uses_their_times(served: Callable[..., Api]) -> None:
    api = served()
    succeed(api, 1)
    succeed(api, 2)
    result = api.cli("plan", "v1", "-o", "json")
    assert result.exit_code == 0, result.output
    [target] = json.loads(result.stdout)["waves"][0]["targets"]
    assert target["release"] == "install_nginx v1"
    assert target["estimate"]["source"].startswith("observed: the median of 8 batch(es)")
    # v1 is older than the stable v2: planned as the undo would start it (a revert), not refused.
    assert all(f["check"] != "version" for f in target["findings"])


def test_plan_bad_input_is_refused_with_the_reason(served: Callable[..., Api]) -> None:
    api = served()
    result = api.cli("plan", "nginx.sh")
    assert result.exit_code == ExitCode.REFUSED and "error: 400" in result.stderr
    assert "does not match <app>.v<N>.sh" in result.stderr
    assert api.cli("plan", "v9").exit_code == ExitCode.REFUSED
    result = api.cli("plan", "install_nginx.v1.sh", "--group", "nope")
    assert result.exit_code == ExitCode.REFUSED and "no group 'nope' is configured" in result.stderr


def test_undo_wait_goes_back_and_exits_0(served: Callable[..., Api]) -> None:
    api = served(auto_tick=True)
    api.world.auto_tick = False
    succeed(api, 1)
    succeed(api, 2)
    api.world.auto_tick = True
    result = api.cli("undo", "--wait", "--interval", "0.2", "--reason", "v2 is slow", "-o", "json")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["phase"] == "Succeeded" and payload["rolloutId"].startswith("undo-install_nginx-v1-")
    target = api.raw("rollouts")["target"]
    assert target["stableVersion"] == 1
    events = api.raw(f"rollouts/{payload['rolloutId']}")["events"]
    assert (
        events[0]["actor"] == "function key"
        and "undo of install_nginx v2 by function key (v2 is slow)" in (events[0]["message"])
    )


def test_undo_human_output_and_its_refusals(served: Callable[..., Api]) -> None:
    api = served()
    nothing = api.cli("undo")
    assert nothing.exit_code == ExitCode.REFUSED
    assert "error: 409" in nothing.stderr and "nothing to undo" in nothing.stderr
    succeed(api, 1)
    succeed(api, 2)
    unknown = api.cli("undo", "--to", "v7")
    assert unknown.exit_code == ExitCode.REFUSED and "unknown version v7" in unknown.stderr
    bad = api.cli("undo", "--to", "seven")
    assert bad.exit_code == ExitCode.REFUSED and "error: 400" in bad.stderr
    started = api.cli("undo", "--to", "v1")
    assert started.exit_code == 0 and "undo: Advanced" in started.stdout and "Canary" in started.stdout
    active = api.cli("undo", "--to", "v1")
    assert active.exit_code == ExitCode.REFUSED and "is Canary on this scale set" in active.stderr
    missing = api.cli("undo", "--target", "rg:other")
    assert missing.exit_code == ExitCode.NOT_FOUND and "no target 'rg:other' is configured" in missing.stderr


def test_undo_that_rolls_back_exits_with_the_rolled_back_code(served: Callable[..., Api]) -> None:
    api = served(policy=RolloutPolicy(bake_seconds=60, failure_threshold=2))
    succeed(api, 1)
    succeed(api, 2)
    api.world.scale_set.failing_releases.add("install_nginx.v1.sh")  # v1 no longer works on these VMs
    api.world.auto_tick = True
    result = api.cli("undo", "--wait", "--interval", "0.2")
    assert result.exit_code == ExitCode.ROLLED_BACK, result.output


def test_a_group_plan_shows_each_wave_and_a_target_the_release_names_nothing_on() -> None:
    payload = {
        "release": "v3",
        "group": "web",
        "verdict": "refused",
        "promotionSeconds": 3725,
        "waveBakeSeconds": 30,
        "waves": [
            {"wave": 1, "targets": [{"target": "rg:a", "verdict": "refused", "error": "no release v3 is recorded"}]},
            {"wave": 2, "targets": [{"target": "rg:b", "verdict": "ok", "release": "app v3", "steps": []}]},
        ],
    }
    console = Console(width=120, record=True)
    console.print(render.plan_view(payload))
    text = console.export_text()
    assert "what-if v3 to group 'web': refused - nothing was written" in text
    assert "wave 1" in text and "wave 2" in text
    assert "rg:a: refused - no release v3 is recorded" in text
    assert "rg:b: app v3 on" in text
    assert "whole group: ~1h02m05s (with 30 s of bake between waves)" in text


def test_with_entra_the_plan_needs_the_read_role_and_undo_the_operate_role(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    world = FakeWorld(http_auth="entra")
    issuer = LocalTokenIssuer()
    module = load_function_app("entra", monkeypatch)
    with serve(world, monkeypatch, tmp_path, app_module=module, easy_auth=issuer.settings()) as host:
        for version in (1, 2):
            rid = world.release(f"install_nginx.v{version}.sh")
            assert ended(world, rid) == "Succeeded"
        env = {"VMSS_CANARY_URL": host.url, "VMSS_CANARY_KEY": ""}

        def run(*args: str, token: str) -> Any:
            return runner.invoke(cli.app, list(args), env={**env, "VMSS_CANARY_TOKEN": token})

        reader = issuer.token(roles=[READ_ROLE], preferred_username="rita@contoso.com")
        assert run("plan", "v1", token=reader).exit_code == 0
        denied = run("undo", token=reader)
        assert denied.exit_code == ExitCode.AUTH and "403 Forbidden" in denied.stderr and OPERATE_ROLE in denied.stderr
        assert world.store.get_target("rg:vmss").active_rollout_id is None  # type: ignore[union-attr]
        operator = issuer.token(roles=[OPERATE_ROLE], preferred_username="ada@contoso.com")
        started = run("undo", "--reason", "v2 is slow", "-o", "json", token=operator)
        assert started.exit_code == 0, started.output
        rid = json.loads(started.stdout)["rolloutId"]
        [received] = [e for e in world.store.list_events("rg:vmss", rid) if e.kind == "Received"]
        assert received.actor.startswith("ada@contoso.com") and "by ada@contoso.com" in received.message
