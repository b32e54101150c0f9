"""``make demo``: the walkthrough's canary story, automated, on the local twin (``emulator/twin.py``).

The twin runs everything on this machine and stops it on exit (also on Ctrl-C or SIGTERM): Azurite,
the ARM emulator over HTTPS with a scale set of real nginx instances initialised by the walkthrough's
``install_nginx.sh``, a round-robin load balancer on 127.0.9.1:80 and the local Functions host running
``function_app.py`` unchanged.

The story: the balancer serves "Welcome to nginx!"; v1 (the walkthrough's script) goes canary ->
bake -> batches; a broken v2 is rolled back automatically; v3 is aborted over HTTP by "an operator".
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
    titles = twin.instance_titles()
    say("instances now serve: " + ", ".join(f"{i}: {t!r}" for i, t in titles.items()))

    narrator.heading("3. Upload a broken v2 (its script breaks the nginx config): automatic rollback")
    twin.upload("install_nginx.v2.sh", EXAMPLES / "install_nginx.v2.sh")
    v2 = twin.rollout_for(2)
    detail = narrator.follow(twin, v2["id"], lambda d: d["phase"] in ended, timeout=180)
    if detail["phase"] != "RolledBack":
        raise TwinError(f"v2 ended {detail['phase']}: {detail['reason']}")
    say(f"why: {detail['rollbackReason']}")
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


def summary(twin: Twin, rollouts: list[dict[str, Any]], narrator: Narrator) -> None:
    narrator.heading("Summary")
    for r in sorted(rollouts, key=lambda r: r["version"]):
        narrator.out(f"  {r['release']:<22} {r['phase']:<11} {r['reason']}")
    status, listing = twin.api("GET", "rollouts")
    target = listing["target"]
    narrator.out(f"  stable release: {target['stableRelease']} (v{target['stableVersion']})")
    mix = twin.sample_titles(9)
    narrator.out("  balancer serves: " + ", ".join(f"{n} x {t!r}" for t, n in mix.items()))
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__.split("\n")[0])
    add_twin_arguments(parser)
    args = parser.parse_args(argv)

    def body() -> int:
        narrator = Narrator(time.monotonic(), lambda line: print(line, flush=True))
        print("Canary releases for VM Scale Sets: the walkthrough, automated, on the local twin.", flush=True)
        with local_twin(options_from_arguments(parser, args), narrator.say) as twin:
            rollouts = run_story(twin, narrator, args.bake_seconds)
            summary(twin, rollouts, narrator)
        print("everything stopped: Azurite, the ARM emulator, nginx instances, balancer, functions host.")
        return 0

    return run_until_interrupted(body)


if __name__ == "__main__":
    sys.exit(main())
