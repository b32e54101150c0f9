"""``make demo``: the walkthrough's canary story, automated, on the local twin (``emulator/twin.py``).

The twin runs everything on this machine and stops it on exit (also on Ctrl-C or SIGTERM): Azurite,
the ARM emulator over HTTPS with a scale set of real nginx instances initialised by the walkthrough's
``install_nginx.sh``, a round-robin load balancer on 127.0.9.1:80 and the local Functions host running
``function_app.py`` unchanged.

The story: the balancer serves "Welcome to nginx!"; v1 (the walkthrough's script) goes canary ->
bake -> batches; a broken v2 is rolled back automatically; v3 is aborted over HTTP by "an operator".

With ``--scale-sets N`` (2 or more) the twin has N scale sets, each behind its own balancer, in a group of
two waves (the canary scale set, then the others; ``emulator.twin.targets_document``), and the story is the
waves': v1 crosses wave 1, the wave bake and wave 2; a broken v2 halts at wave 1 and is rolled back only
there, while the other scale sets keep v1.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any

from emulator.twin import (
    EXAMPLES,
    GROUP,
    Twin,
    TwinError,
    add_twin_arguments,
    local_twin,
    options_from_arguments,
    run_until_interrupted,
)


class Narrator:
    """Live progress: one line per audit event, and the balancer's mix whenever it changes."""

    def __init__(self, started: float, out: Callable[[str], None]) -> None:
        self.started = started
        self.out = out
        self.seen_events: dict[str, int] = {}
        self.last_mix = ""

    def say(self, text: str) -> None:
        self.out(f"[{time.monotonic() - self.started:6.1f}s] {text}")

    def heading(self, text: str) -> None:
        self.out("")
        self.out(f"=== {text}")

    def follow(
        self, twin: Twin, rollout_id: str, until: Callable[[dict[str, Any]], bool], timeout: float
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            status, detail = twin.api("GET", f"rollouts/{rollout_id}")
            if status != 200:
                raise TwinError(f"GET rollouts/{rollout_id} answered {status}: {detail}")
            events = detail["events"]
            for event in events[self.seen_events.get(rollout_id, 0) :]:
                self.say(f"{event['kind']:<22} {event['message']}")
            self.seen_events[rollout_id] = len(events)
            self.show_mix(twin)
            if until(detail):
                return detail  # type: ignore[no-any-return]
            if time.monotonic() > deadline:
                raise TwinError(f"{rollout_id} is still {detail['phase']} after {timeout:.0f} s: {detail['reason']}")
            time.sleep(0.5)

    def show_mix(self, twin: Twin) -> None:
        mix = twin.sample_titles(8)
        text = ", ".join(f"{n} x {title!r}" for title, n in sorted(mix.items()))
        if text != self.last_mix:
            self.say(f"{'balancer serves':<22} {text}")
            self.last_mix = text


def run_story(twin: Twin, narrator: Narrator, bake_seconds: int) -> list[dict[str, Any]]:
    say = narrator.say
    ended = ("Succeeded", "RolledBack", "Aborted", "Failed", "Rejected")

    narrator.heading("1. The fleet before any release (walkthrough: curl the load balancer)")
    mix = twin.sample_titles(9)
    say("balancer serves " + ", ".join(f"{n} x {t!r}" for t, n in mix.items()))
    if set(mix) != {"Welcome to nginx!"}:
        raise TwinError(f"expected only 'Welcome to nginx!' before the first release, got {dict(mix)}")

    narrator.heading("2. Upload the walkthrough's install_nginx.v1.sh: canary, bake, batches")
    twin.upload("install_nginx.v1.sh", EXAMPLES / "install_nginx.v1.sh")
    v1 = twin.rollout_for(1)
    detail = narrator.follow(twin, v1["id"], lambda d: d["phase"] in ended, timeout=120 + bake_seconds)
    if detail["phase"] != "Succeeded":
        raise TwinError(f"v1 ended {detail['phase']}: {detail['reason']}")
    say(judgement_line(detail))
    titles = twin.instance_titles()
    say("instances now serve: " + ", ".join(f"{i}: {t!r}" for i, t in titles.items()))

    narrator.heading("3. Upload a broken v2 (its script breaks the nginx config): automatic rollback")
    twin.upload("install_nginx.v2.sh", EXAMPLES / "install_nginx.v2.sh")
    v2 = twin.rollout_for(2)
    detail = narrator.follow(twin, v2["id"], lambda d: d["phase"] in ended, timeout=180)
    if detail["phase"] != "RolledBack":
        raise TwinError(f"v2 ended {detail['phase']}: {detail['reason']}")
    say(f"why: {detail['rollbackReason']}")
    say(judgement_line(detail))
    titles = twin.instance_titles()
    say("instances now serve: " + ", ".join(f"{i}: {t!r}" for i, t in titles.items()))

    narrator.heading("4. Upload v3, then an operator aborts it over HTTP (with rollback)")
    twin.upload("install_nginx.v3.sh", EXAMPLES / "install_nginx.v3.sh")
    v3 = twin.rollout_for(3)
    narrator.follow(twin, v3["id"], lambda d: d["phase"] in ("Baking", *ended), timeout=60)
    say(f'operator: POST /api/rollouts/{v3["id"]}/abort {{"rollback": true, "reason": "abort drill"}}')
    status, outcome = twin.api("POST", f"rollouts/{v3['id']}/abort", {"rollback": True, "reason": "abort drill"})
    say(f"HTTP {status}: {json.dumps(outcome)}")
    if status != 200:
        raise TwinError(f"abort answered {status}: {outcome}")
    detail = narrator.follow(twin, v3["id"], lambda d: d["phase"] in ended, timeout=120)
    titles = twin.instance_titles()
    say("instances now serve: " + ", ".join(f"{i}: {t!r}" for i, t in titles.items()))
    status, listing = twin.api("GET", "rollouts")
    return listing["rollouts"]  # type: ignore[no-any-return]


def judgement_line(detail: dict[str, Any]) -> str:
    """The canary judge's verdict with its figures, as ``GET /api/rollouts/{id}`` shows them."""
    judgement = detail.get("judgement")
    if not judgement:
        return "canary judge: no bake was judged"
    figures = judgement["figures"]
    canary, baseline = judgement["canary"], judgement["baseline"]
    parts = [
        f"canary judge: {judgement['verdict']} ({figures.get('why', '')}) after {judgement['looks']} look(s)",
        f"canary {', '.join(judgement['canaryInstances'])} vs baseline {', '.join(judgement['baselineInstances'])}",
        f"errors {canary['errors']}/{canary['requests']} vs {baseline['errors']}/{baseline['requests']}",
    ]
    errors = figures.get("errorRate")
    if errors:
        parts.append(f"error-rate z={errors['z']} p={errors['pFail']}")
    latency = figures.get("latency")
    if latency:
        parts.append(
            f"median latency {latency['canaryMedianMs']} vs {latency['baselineMedianMs']} ms "
            f"(Mann-Whitney U={latency['u']}, p={latency['pFail']})"
        )
    return "; ".join(parts)


def summary(twin: Twin, rollouts: list[dict[str, Any]], narrator: Narrator) -> None:
    narrator.heading("Summary")
    for r in sorted(rollouts, key=lambda r: r["version"]):
        narrator.out(f"  {r['release']:<22} {r['phase']:<11} {r['reason']}")
    status, listing = twin.api("GET", "rollouts")
    target = listing["target"]
    narrator.out(f"  stable release: {target['stableRelease']} (v{target['stableVersion']})")
    mix = twin.sample_titles(9)
    narrator.out("  balancer serves: " + ", ".join(f"{n} x {t!r}" for t, n in mix.items()))
    _arm_figures(twin, narrator)


def _arm_figures(twin: Twin, narrator: Narrator) -> None:
    calls = [
        *twin.emulator.requests("PUT", "/extensions/"),
        *twin.emulator.requests("POST", "/manualupgrade"),
        *twin.emulator.requests("POST", "/reimage"),
    ]
    accepted = [r for r in calls if r.status < 300]

    def count(kind: str) -> int:
        return sum(1 for r in accepted if kind in r.path)

    throttled = sum(1 for r in calls if r.status == 429)
    narrator.out(
        f"  ARM calls accepted: {count('/extensions/')} extension writes, {count('/manualupgrade')} manualupgrade "
        f"calls, {count('/reimage')} reimage calls; {throttled} answered 429 (throttled) and retried later"
    )
    reads = len(twin.emulator.requests("GET", include_polls=True))
    narrator.out(
        f"  ARM reads: {reads}, {twin.emulator.reads_throttled} answered 429 by the subscription read bucket "
        f"(250, 25 a second)"
    )
    narrator.out(f"  took {time.monotonic() - twin.started:.0f} s")


# ---- more than one scale set: a release crossing the waves of a group ---------------------------------

GROUP_ENDED = ("Succeeded", "Halted", "RolledBack", "Aborted", "Rejected")
ROLLOUT_ACTIVE = ("Queued", "Canary", "Baking", "Promoting", "RollingBack", "Paused")


class WaveNarrator(Narrator):
    """Live progress of a group release: the group's trail, each target's wave and phase when it changes,
    and each scale set's balancer mix when it changes."""

    def __init__(self, started: float, out: Callable[[str], None]) -> None:
        super().__init__(started, out)
        self.target_phases: dict[tuple[str, str], str] = {}
        self.mixes: dict[str, str] = {}

    def follow_release(self, twin: Twin, release_id: str, timeout: float) -> dict[str, Any]:
        """Until the release has ended and every rollout it started has settled."""
        deadline = time.monotonic() + timeout
        ended_by: float | None = None  # when the release was first seen ended
        while True:
            status, detail = twin.api("GET", f"releases/{release_id}")
            if status != 200:
                raise TwinError(f"GET releases/{release_id} answered {status}: {detail}")
            events = detail["events"]
            for event in events[self.seen_events.get(release_id, 0) :]:
                self.say(f"{event['kind']:<22} {event['message']}")
            self.seen_events[release_id] = len(events)
            settled = True
            for t in detail["targets"]:
                rollout = (t["revert"] or {}).get("rollout") or t["rollout"]
                phase = rollout["phase"] if rollout else "not started"
                settled = settled and phase not in ROLLOUT_ACTIVE
                if self.target_phases.get((release_id, t["target"])) != phase and rollout is not None:
                    self.target_phases[(release_id, t["target"])] = phase
                    what = "revert" if rollout.get("revert") else f"v{rollout['version']}"
                    self.say(f"{'target':<22} wave {t['wave']} {t['target']}: {what} {phase}")
            self.show_mixes(twin)
            # The trail is appended after the row that ends the release: wait (briefly) for its last line.
            told = any(f"-> {detail['phase']}:" in str(e.get("message")) for e in events)
            if detail["phase"] in GROUP_ENDED and settled:
                ended_by = ended_by or time.monotonic() + 5
                if told or time.monotonic() > ended_by:
                    return detail  # type: ignore[no-any-return]
            else:
                ended_by = None
            if time.monotonic() > deadline:
                raise TwinError(f"{release_id} is still {detail['phase']} after {timeout:.0f} s: {detail['reason']}")
            time.sleep(0.5)

    def show_mixes(self, twin: Twin) -> None:
        for name in twin.scale_sets:
            mix = twin.sample_titles(6, name)
            text = ", ".join(f"{n} x {title!r}" for title, n in sorted(mix.items()))
            if text != self.mixes.get(name):
                self.say(f"{'balancer ' + name:<22} {text}")
                self.mixes[name] = text


def release_for(twin: Twin, version: int, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, payload = twin.api("GET", "releases")
        if status == 200:
            for r in payload["releases"]:
                if r["group"] == GROUP and r["version"] == version:
                    return r  # type: ignore[no-any-return]
        time.sleep(0.3)
    raise TwinError(f"the blob trigger did not record v{version} for group {GROUP} within {timeout:.0f} s")


def run_waves_story(twin: Twin, narrator: WaveNarrator, bake_seconds: int, wave_bake: int) -> list[dict[str, Any]]:
    say = narrator.say
    first, rest = twin.scale_sets[0], ", ".join(twin.scale_sets[1:])
    status, targets = twin.api("GET", "targets")
    if status != 200 or not targets["ok"]:
        raise TwinError(f"GET targets answered {status}: {targets}")

    narrator.heading(f"1. {len(twin.scale_sets)} scale sets, each behind its own balancer, before any release")
    for group in targets["groups"]:
        for wave in group["waves"]:
            say(f"group {group['name']} wave {wave['wave']}: {', '.join(t['key'] for t in wave['targets'])}")
    for name in twin.scale_sets:
        mix = twin.sample_titles(6, name)
        say(
            f"balancer of {name} ({twin.balancer_of(name).url}) serves "
            + ", ".join(f"{n} x {t!r}" for t, n in mix.items())
        )
        if set(mix) != {"Welcome to nginx!"}:
            raise TwinError(f"expected only 'Welcome to nginx!' before the first release at {name}, got {dict(mix)}")

    narrator.heading(f"2. Upload install_nginx.v1.sh: wave 1 ({first}), a {wave_bake} s wave bake, wave 2 ({rest})")
    twin.upload("install_nginx.v1.sh", EXAMPLES / "install_nginx.v1.sh")
    v1 = release_for(twin, 1)
    detail = narrator.follow_release(twin, v1["id"], timeout=240 + 2 * bake_seconds + wave_bake)
    if detail["phase"] != "Succeeded":
        raise TwinError(f"v1 ended {detail['phase']}: {detail['reason']}")
    for name in twin.scale_sets:
        say(f"{name} now serves: " + ", ".join(f"{i}: {t!r}" for i, t in twin.instance_titles(name).items()))

    narrator.heading(f"3. Upload a broken v2: it fails at wave 1 ({first}), is rolled back there, wave 2 never starts")
    twin.upload("install_nginx.v2.sh", EXAMPLES / "install_nginx.v2.sh")
    v2 = release_for(twin, 2)
    detail = narrator.follow_release(twin, v2["id"], timeout=240)
    if detail["phase"] != "Halted":
        raise TwinError(f"v2 ended {detail['phase']}: {detail['reason']}")
    for t in detail["targets"]:
        if t["rollout"] is not None and t["rollout"]["phase"] != "Succeeded":
            say(f"why: {t['target']} {t['rollout']['phase']}: {t['rollout']['reason']}")
    started = [t["target"] for t in detail["targets"] if t["rollout"] is not None]
    never = [t["target"] for t in detail["targets"] if t["rollout"] is None]
    say(f"v2 was started on: {', '.join(started)}; never on: {', '.join(never)}")
    for name in twin.scale_sets:
        say(f"{name} now serves: " + ", ".join(f"{i}: {t!r}" for i, t in twin.instance_titles(name).items()))
    status, listing = twin.api("GET", "releases")
    return listing["releases"]  # type: ignore[no-any-return]


def waves_summary(twin: Twin, releases: list[dict[str, Any]], narrator: Narrator) -> None:
    narrator.heading("Summary")
    for r in sorted(releases, key=lambda r: r["version"]):
        narrator.out(f"  group {r['group']} {r['release']:<22} {r['phase']:<10} {r['reason']}")
    status, targets = twin.api("GET", "targets")
    for group in targets["groups"]:
        for wave in group["waves"]:
            for t in wave["targets"]:
                state = t["state"] or {}
                mix = twin.sample_titles(6, t["name"])
                narrator.out(
                    f"  wave {wave['wave']} {t['key']:<22} stable release: {state.get('stableRelease')}; balancer "
                    f"serves " + ", ".join(f"{n} x {title!r}" for title, n in mix.items())
                )
    _arm_figures(twin, narrator)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__.split("\n")[0])
    add_twin_arguments(parser)
    args = parser.parse_args(argv)

    def body() -> int:
        narrator = Narrator(time.monotonic(), lambda line: print(line, flush=True))
        options = options_from_arguments(parser, args)
        if options.scale_sets > 1:
            waves = WaveNarrator(time.monotonic(), lambda line: print(line, flush=True))
            print(f"Canary releases across {options.scale_sets} scale sets, in waves, on the local twin.", flush=True)
            with local_twin(options, waves.say) as twin:
                releases = run_waves_story(twin, waves, options.bake_seconds, options.wave_bake_seconds)
                waves_summary(twin, releases, waves)
        else:
            print("Canary releases for VM Scale Sets: the walkthrough, automated, on the local twin.", flush=True)
            with local_twin(options, narrator.say) as twin:
                rollouts = run_story(twin, narrator, args.bake_seconds)
                summary(twin, rollouts, narrator)
        print("everything stopped: Azurite, the ARM emulator, nginx instances, balancer, functions host.")
        return 0

    return run_until_interrupted(body)


if __name__ == "__main__":
    sys.exit(main())
