"""Group releases over waves, end to end through the function app on the local Functions host: the blob
trigger receives ``<container>/web/install_nginx.vN.sh``, the timer puts one message per target with work on
the tick queue (Azurite) and advances the groups, the queue trigger ticks each target against the ARM
emulator over HTTPS, and an operator steers over HTTP with the function key. Nothing is called directly:
every step is the host firing the app's own triggers.

The fleet is declared in a targets document (``TARGETS_CONFIG``, a blob in the release container): a group
``web`` of 3 waves over 5 scale sets of 2 synthetic instances each, one of them Flexible, and a group ``api``
of one scale set. Each test asserts the end state: the group release's phase, each target's rollout phase,
what each scale set's instances run (the model each applied and the page it serves), and the group's trail.
The last one delivers every tick message twice.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests

import function_app
from emulator.funchost import LocalFunctionsHost, QueueOptions
from rollout.adapters.queue import TickQueue
from tests.fixtures.appenv import app_under_test
from tests.integration.test_function_app_rollout import pages

pytestmark = pytest.mark.integration

WAVE_BAKE = 2  # seconds between waves
GROUP_FUNCTIONS = [
    "release_uploaded",
    "advance_rollouts",
    "advance_target",
    "list_group_releases",
    "get_group_release",
    "steer_group_release",
    "steer_group_target",
    "get_rollout",
]
ENDED = ("Succeeded", "Halted", "RolledBack", "Aborted", "Rejected")
ACTIVE = ("Queued", "Canary", "Baking", "Promoting")  # a rollout an abort with rollback takes back


@dataclass
class Waves:
    """The running host and the fleet: ``handles['a'..'e']`` are group web's (waves [a], [b, c], [d, e]; c is
    Flexible), ``handles['f']`` group api's."""

    host: LocalFunctionsHost
    blobs: Any
    handles: dict[str, Any]
    emulator: Any

    def key(self, name: str) -> str:
        handle = self.handles[name]
        return f"{handle.resource_group}:{handle.name}"

    def api(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        response = requests.request(
            method,
            f"{self.host.api_url}/{path}",
            headers={"x-functions-key": self.host.function_key},
            json=body,
            timeout=30,
        )
        return response.status_code, response.json()

    def release(self, group: str, version: int, script: bytes | None = None) -> str:
        """Upload ``<group>/install_nginx.v<version>.sh``; the id of the group release the blob trigger records."""
        content = script or f"#!/bin/bash\necho v{version}\n".encode()
        self.blobs.upload(f"{group}/install_nginx.v{version}.sh", content)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            status, listing = self.api("GET", "releases")
            assert status == 200, listing
            for r in listing["releases"]:
                if r["group"] == group and r["version"] == version:
                    return str(r["id"])
            time.sleep(0.2)
        raise AssertionError(f"the blob trigger did not record {group} v{version}")

    def detail(self, release_id: str, group: str = "web") -> dict[str, Any]:
        status, detail = self.api("GET", f"releases/{release_id}?group={group}")
        assert status == 200, detail
        return detail  # type: ignore[no-any-return]

    def rollout(self, rollout_id: str) -> dict[str, Any]:
        status, detail = self.api("GET", f"rollouts/{rollout_id}")
        assert status == 200, detail
        return detail  # type: ignore[no-any-return]

    def wait(
        self, release_id: str, until: Callable[[dict[str, Any]], bool], timeout: float = 90, group: str = "web"
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            detail = self.detail(release_id, group)
            if until(detail):
                return detail
            time.sleep(0.2)
        raise AssertionError(f"{release_id} not there within {timeout} s: {self.detail(release_id, group)}")

    def ended(self, release_id: str, timeout: float = 90, group: str = "web") -> dict[str, Any]:
        """Wait for the release to end and for every target's rollouts (and reverts) to settle."""

        def settled(d: dict[str, Any]) -> bool:
            rollouts = [t["rollout"] for t in d["targets"] if t["rollout"]]
            rollouts += [t["revert"]["rollout"] for t in d["targets"] if t["revert"] and t["revert"]["rollout"]]
            return d["phase"] in ENDED and all(r["phase"] in ("Succeeded", "RolledBack", "Aborted") for r in rollouts)

        detail = self.wait(release_id, settled, timeout, group)
        self.emulator.wait_idle(timeout=30)
        return detail

    def runs(self, name: str) -> str:
        """What every instance of a scale set runs: the one script all of them applied and serve, or 'mixed'.
        An instance still on what it was created with serves no release line; one reimaged serves its label."""
        handle = self.handles[name]
        served = pages(handle)
        seen: set[str] = set()
        for iid, instance in handle.state.instances.items():
            uris = {u for e in instance.applied.extensions for u in e.settings.get("fileUris", [])}
            scripts = {u.rsplit("/", 1)[-1] for u in uris}
            label = served[iid].split("release=", 1)[1].split()[0] if "release=" in served[iid] else None
            if len(scripts) != 1 or (label is not None and label not in scripts):
                return "mixed"
            if label is None and scripts != {"install_nginx.sh"}:
                return "mixed"
            seen |= scripts
        return seen.pop() if len(seen) == 1 else "mixed"


def targets(detail: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["target"]: t for t in detail["targets"]}


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def events(detail: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [e for e in detail["events"] if e["kind"] == kind]


@pytest.fixture(params=["halt"])
def waves(
    request: pytest.FixtureRequest,
    azurite: Any,
    azurite_names: Any,
    make_scale_set: Any,
    arm_emulator: Any,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> Iterator[Waves]:
    setup = app_under_test(azurite, azurite_names, make_scale_set, arm_emulator, monkeypatch, size=2, BAKE_SECONDS="1")
    extension = {
        "fileUris": [f"{setup.blobs.container_url}/install_nginx.sh"],
        "commandToExecute": "bash install_nginx.sh",
    }
    handles = {"a": setup.handle}
    for name in "bcdef":
        mode = "Flexible" if name == "c" else "Uniform"
        handles[name] = make_scale_set(2, extension_settings=extension, orchestration_mode=mode)

    def ref(name: str) -> dict[str, str]:
        return {"resourceGroup": handles[name].resource_group, "name": handles[name].name}

    document = {
        "defaultGroup": "web",
        "groups": [
            {
                "name": "web",
                "waveBakeSeconds": WAVE_BAKE,
                "onFailure": request.param,
                "waves": [
                    {"targets": [ref("a")]},
                    {"targets": [ref("b"), ref("c")]},
                    {"targets": [ref("d"), ref("e")]},
                ],
            },
            {"name": "api", "waves": [{"targets": [ref("f")]}]},
        ],
    }
    setup.blobs.upload("targets.json", json.dumps(document).encode())
    env = {**setup.env, "TARGETS_CONFIG": "targets.json", "ROLLOUT_TICK_SCHEDULE": "*/1 * * * * *"}
    monkeypatch.setenv("TARGETS_CONFIG", "targets.json")
    host = LocalFunctionsHost(
        function_app.app,
        env=env,
        http_port=0,
        timer_period_seconds=0.5,
        blob_poll_seconds=0.2,
        state_dir=tmp_path,
        functions=GROUP_FUNCTIONS,
        queue_options=QueueOptions.from_host_json(Path(function_app.__file__).parent, max_polling_interval_seconds=0.3),
    )
    with host:
        yield Waves(host, setup.blobs, handles, arm_emulator)
    setup.blobs.close()


def test_a_good_release_goes_out_wave_by_wave_with_the_wave_bake_between(waves: Waves) -> None:
    release_id = waves.release("web", 1)
    detail = waves.ended(release_id)
    assert detail["phase"] == "Succeeded", detail
    by_target = targets(detail)
    assert [by_target[waves.key(n)]["wave"] for n in "abcde"] == [1, 2, 2, 3, 3]
    assert {k: t["rollout"]["phase"] for k, t in by_target.items()} == {waves.key(n): "Succeeded" for n in "abcde"}
    assert [waves.runs(n) for n in "abcdef"] == ["install_nginx.v1.sh"] * 5 + ["install_nginx.sh"]  # not group api
    # The trail: wave n+1 started only after every target of wave n succeeded and the wave bake passed.
    started = {e["target"]: at(e["at"]) for e in events(detail, "TargetStarted")}
    assert set(started) == {waves.key(n) for n in "abcde"}
    completed = [at(e["at"]) for e in events(detail, "WaveSucceeded")]
    next_started = [at(e["at"]) for e in events(detail, "WaveStarted")]
    assert len(completed) == 3 and len(next_started) == 2, detail["events"]
    for wave, names in ((1, "a"), (2, "bc")):
        # The wave bake runs from the moment the wave's last target succeeded (its rollout's phaseSince).
        succeeded_at = max(at(waves.rollout(by_target[waves.key(n)]["rolloutId"])["phaseSince"]) for n in names)
        assert succeeded_at <= completed[wave - 1]
        assert (next_started[wave - 1] - succeeded_at).total_seconds() >= WAVE_BAKE
        later = "bc" if wave == 1 else "de"
        assert all(started[waves.key(n)] >= next_started[wave - 1] for n in later)
    # The Flexible scale set was upgraded VM by VM, by name.
    flexible = waves.handles["c"]
    assert [i.upgrades for i in flexible.state.instances_in_order()] == [1, 1]


def test_a_bad_release_halts_at_wave_1_and_rolls_back_only_there(waves: Waves) -> None:
    for name in "abcde":  # the script fails on every VM it reaches
        handle = waves.handles[name]
        waves.emulator.fail_release(handle.resource_group, handle.name, r"install_nginx\.v1\.sh", mode="extension")
    release_id = waves.release("web", 1, b"#!/bin/bash\nexit 1\n")
    detail = waves.ended(release_id)
    assert detail["phase"] == "Halted", detail
    by_target = targets(detail)
    assert by_target[waves.key("a")]["rollout"]["phase"] == "RolledBack"
    assert all(by_target[waves.key(n)]["rollout"] is None for n in "bcde")  # later waves never started
    assert [e["target"] for e in events(detail, "TargetStarted")] == [waves.key("a")]
    assert events(detail, "WaveStarted") == []
    assert [waves.runs(n) for n in "abcdef"] == ["install_nginx.sh"] * 6
    requests_to = {n: waves.emulator.requests(path_contains=waves.handles[n].name) for n in "bcde"}
    upgrades = [r for n in "bcde" for r in requests_to[n] if r.method != "GET"]
    assert upgrades == []  # not one write to a scale set of a later wave
    assert any(waves.key("a") == e["target"] for e in detail["events"] if e["kind"] != "TargetStarted")


@pytest.mark.parametrize("waves", ["rollback-all"], indirect=True)
def test_with_rollback_all_a_failure_in_wave_2_undoes_wave_1(waves: Waves) -> None:
    first = waves.ended(waves.release("web", 1))
    assert first["phase"] == "Succeeded", first
    handle = waves.handles["c"]  # the Flexible scale set of wave 2 fails v2
    waves.emulator.fail_release(handle.resource_group, handle.name, r"install_nginx\.v2\.sh", mode="extension")
    detail = waves.ended(waves.release("web", 2))
    assert detail["phase"] == "RolledBack", detail
    assert detail["onFailure"] == "rollback-all"
    by_target = targets(detail)
    a, b, c = (by_target[waves.key(n)] for n in "abc")
    assert c["rollout"]["phase"] == "RolledBack"
    # Wave 1 had succeeded: reverted to the release it had before (v1), by a revert rollout.
    assert a["rollout"]["phase"] == "Succeeded" and a["previousRelease"] == "install_nginx.v1.sh"
    assert a["revert"]["rollout"]["phase"] == "Succeeded" and a["revert"]["rollout"]["revert"] is True
    assert a["revert"]["rollout"]["release"] == "install_nginx.v1.sh"
    # b, in c's wave, went back too (aborted with rollback, or reverted if it had already succeeded).
    assert b["rollout"]["phase"] in ("Aborted", "RolledBack", "Succeeded")
    if b["rollout"]["phase"] == "Succeeded":
        assert b["revert"]["rollout"]["phase"] == "Succeeded"
    assert all(by_target[waves.key(n)]["rollout"] is None for n in "de")
    assert [waves.runs(n) for n in "abcde"] == ["install_nginx.v1.sh"] * 5
    reverted = [e["target"] for e in detail["events"] if "revert" in e["message"].lower()]
    assert waves.key("a") in reverted


def test_abort_of_one_target_versus_abort_of_the_whole_release(waves: Waves) -> None:
    # One target: c is taken out of the release and rolled back there; the waves go on without it.
    release_id = waves.release("web", 1)
    waves.wait(release_id, lambda d: (targets(d)[waves.key("c")]["rollout"] or {}).get("phase") in ACTIVE)
    target = quote(waves.key("c"), safe="")
    status, answer = waves.api("POST", f"releases/{release_id}/targets/{target}/abort", {"rollback": True})
    assert status == 200, answer
    detail = waves.ended(release_id)
    assert detail["phase"] == "Succeeded", detail
    by_target = targets(detail)
    assert by_target[waves.key("c")]["takenOut"] is True
    aborted = by_target[waves.key("c")]["rollout"]
    # with rollback: RolledBack, or Aborted when nothing had changed there yet
    assert aborted["phase"] in ("RolledBack", "Aborted") and "abort" in aborted["reason"].lower(), aborted
    assert [by_target[waves.key(n)]["rollout"]["phase"] for n in "abde"] == ["Succeeded"] * 4
    assert [waves.runs(n) for n in "abcde"] == ["install_nginx.v1.sh"] * 2 + ["install_nginx.sh"] + [
        "install_nginx.v1.sh"
    ] * 2
    steered = events(detail, "TargetSteered")
    assert [(e["target"], e["actor"]) for e in steered] == [(waves.key("c"), "function key")]

    # The whole release: every active target aborted, no later wave starts, nothing succeeded is reverted.
    release_id = waves.release("web", 2)
    waves.wait(release_id, lambda d: (targets(d)[waves.key("a")]["rollout"] or {}).get("phase") in ACTIVE)
    status, answer = waves.api("POST", f"releases/{release_id}/abort", {"rollback": True, "reason": "drill"})
    assert status == 200, answer
    detail = waves.ended(release_id)
    assert detail["phase"] == "Aborted", detail
    by_target = targets(detail)
    aborted = by_target[waves.key("a")]["rollout"]
    assert aborted["phase"] in ("RolledBack", "Aborted") and "abort" in aborted["reason"].lower(), aborted
    assert all(by_target[waves.key(n)]["rollout"] is None for n in "bcde")
    v1, v0 = "install_nginx.v1.sh", "install_nginx.sh"
    assert [waves.runs(n) for n in "abcde"] == [v1, v1, v0, v1, v1]  # a is back on v1


def test_a_release_to_one_group_while_another_is_mid_rollout(waves: Waves) -> None:
    web = waves.release("web", 1)
    waves.wait(web, lambda d: d["wave"] == 2)  # web is mid-rollout
    api = waves.release("api", 1)
    assert api == web  # the same script and content: the same id in both groups
    status, answer = waves.api("GET", f"releases/{api}")
    assert status == 409 and "?group=" in answer["error"], answer  # never one of them picked
    status, answer = waves.api("POST", f"releases/{api}/pause")
    assert status == 409, answer
    assert waves.detail(api, "api")["phase"] == "Running"  # not queued behind web: another group
    api_done = waves.ended(api, group="api")
    assert api_done["phase"] == "Succeeded", api_done
    web_then = waves.detail(web)
    web_done = waves.ended(web)
    assert web_done["phase"] == "Succeeded", web_done
    assert web_then["phase"] in ("Running", "WaveBaking")  # api was done while web was still going
    assert [waves.runs(n) for n in "abcdef"] == ["install_nginx.v1.sh"] * 6
    # Each group's trail names only its own targets.
    assert {e["target"] for e in api_done["events"] if e["target"]} == {waves.key("f")}
    assert {e["target"] for e in web_done["events"] if e["target"]} == {waves.key(n) for n in "abcde"}


def test_every_tick_message_delivered_twice_does_no_harm_to_a_group_release(
    waves: Waves, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At-least-once delivery, at its worst: every message the timer puts on the tick queue is there twice
    (two real messages in Azurite's queue), for the whole release across the 3 waves."""
    sent = []
    original = TickQueue.send

    def twice(self: TickQueue, message: Any, delay_seconds: int) -> None:
        sent.append(message.target)
        original(self, message, delay_seconds)
        original(self, message, delay_seconds)

    monkeypatch.setattr(TickQueue, "send", twice)
    detail = waves.ended(waves.release("web", 1))
    assert detail["phase"] == "Succeeded", detail
    assert len(sent) >= 10  # ticks of every target were doubled
    assert [waves.runs(n) for n in "abcde"] == ["install_nginx.v1.sh"] * 5
    for name in "abcde":
        handle = waves.handles[name]
        upgraded = [
            i for r in waves.emulator.requests("POST", f"/{handle.name}/manualupgrade") for i in r.body["instanceIds"]
        ]
        names = [i.instance_id for i in handle.state.instances_in_order()]
        assert sorted(upgraded) == sorted(names), (name, upgraded)  # each instance upgraded once
        rollout = waves.rollout(targets(detail)[waves.key(name)]["rolloutId"])
        kinds = [e["kind"] for e in rollout["events"]]
        assert kinds.count("CanaryStarted") == 1 and kinds.count("BatchStarted") == 1, (name, kinds)
    assert len(events(detail, "TargetStarted")) == 5 and len(events(detail, "WaveStarted")) == 2
