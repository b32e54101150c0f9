"""``make demo``: the walkthrough's canary story, automated, on the local twin.

Everything runs on this machine and is stopped on exit (also on Ctrl-C or SIGTERM):

* Azurite: the release container ``init`` and the state tables;
* the ARM emulator over HTTPS, with a scale set of real nginx instances (each on its own loopback
  address, port 80) initialised by the walkthrough's ``install_nginx.sh``;
* a round-robin load balancer on 127.0.9.1:80 probing ``GET /`` like the walkthrough's LB rule;
* the local Functions host running ``function_app.py`` unchanged: the blob trigger, a fast timer and
  the HTTP API with a function key.

The story: the balancer serves "Welcome to nginx!"; v1 (the walkthrough's script) goes canary ->
bake -> batches; a broken v2 is rolled back automatically; v3 is aborted over HTTP by "an operator".
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import logging
import re
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from emulator.arm import ArmEmulator
from emulator.azurite import run_azurite
from emulator.customscript import azure_blob_fetcher
from emulator.funchost import LocalFunctionsHost
from emulator.lb import RoundRobinBalancer
from emulator.nginx import nginx_runtime_factory
from rollout.adapters.blobs import ReleaseBlobs

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
SUBSCRIPTION = "00000000-0000-0000-0000-0000000000de"
RESOURCE_GROUP, VMSS = "canary-rg", "canary-vmss"
TOKEN = "local-demo-token"
BASE_IMAGE = (
    f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}/providers/Microsoft.Compute/images/ubuntu-lts"
)
TITLE_RE = re.compile(r"<title>(.*?)</title>", re.S)


class DemoError(RuntimeError):
    pass


@dataclass
class Twin:
    """The running local twin, as the demo (and the e2e tests) drive it."""

    emulator: ArmEmulator
    balancer: RoundRobinBalancer
    host: LocalFunctionsHost
    blobs: ReleaseBlobs
    started: float

    # -- what a user sees ------------------------------------------------------------------------
    def sample_titles(self, n: int = 12) -> collections.Counter[str]:
        """``curl`` the balancer n times; count the page titles (the walkthrough's check)."""
        seen: collections.Counter[str] = collections.Counter()
        for _ in range(n):
            try:
                r = requests.get(self.balancer.url, timeout=3)
                m = TITLE_RE.search(r.text)
                seen[m.group(1).strip() if m and r.status_code == 200 else f"HTTP {r.status_code}"] += 1
            except requests.RequestException as exc:
                seen[f"error: {type(exc).__name__}"] += 1
        return seen

    def instance_titles(self) -> dict[str, str]:
        """Each instance's own page, bypassing the balancer (what the SSH tunnel showed)."""
        out = {}
        scale_set = self.emulator.scale_set(RESOURCE_GROUP, VMSS)
        for iid, inst in sorted(scale_set.instances.items(), key=lambda kv: int(kv[0])):
            try:
                r = requests.get(f"http://{inst.address}/", timeout=2)
                m = TITLE_RE.search(r.text)
                out[iid] = m.group(1).strip() if m and r.status_code == 200 else f"HTTP {r.status_code}"
            except requests.RequestException:
                out[iid] = "down (connection refused)"
        return out

    # -- the operator's side -----------------------------------------------------------------------
    def api(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        r = requests.request(
            method,
            f"{self.host.url}/api/{path}",
            headers={"x-functions-key": self.host.function_key},
            json=body,
            timeout=30,
        )
        return r.status_code, (r.json() if r.content else None)

    def upload(self, name: str, source: Path) -> None:
        self.blobs.upload(name, source.read_bytes(), overwrite=True)

    def rollout_for(self, version: int, timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status, payload = self.api("GET", "rollouts")
            if status == 200:
                for r in payload["rollouts"]:
                    if r["version"] == version:
                        return r  # type: ignore[no-any-return]
            time.sleep(0.3)
        raise DemoError(f"the blob trigger did not record v{version} within {timeout:.0f} s")


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
                raise DemoError(f"GET rollouts/{rollout_id} answered {status}: {detail}")
            events = detail["events"]
            for event in events[self.seen_events.get(rollout_id, 0) :]:
                self.say(f"{event['kind']:<22} {event['message']}")
            self.seen_events[rollout_id] = len(events)
            self.show_mix(twin)
            if until(detail):
                return detail  # type: ignore[no-any-return]
            if time.monotonic() > deadline:
                raise DemoError(f"{rollout_id} is still {detail['phase']} after {timeout:.0f} s: {detail['reason']}")
            time.sleep(0.5)

    def show_mix(self, twin: Twin) -> None:
        mix = twin.sample_titles(8)
        text = ", ".join(f"{n} x {title!r}" for title, n in sorted(mix.items()))
        if text != self.last_mix:
            self.say(f"{'balancer serves':<22} {text}")
            self.last_mix = text


def _check_port_80(address: str) -> None:
    """Fail early and clearly when port 80 is taken (a system nginx on *:80 takes it everywhere)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((address, 80))
        except OSError as exc:
            raise DemoError(
                f"cannot listen on {address}:80 ({exc.strerror}): is a system nginx, or another demo, "
                "holding port 80? Stop it (for example `service nginx stop`) and try again"
            ) from None


@contextlib.contextmanager
def local_twin(
    *,
    instances: int,
    bake_seconds: int,
    tick_seconds: float,
    upgrade_seconds: float,
    failure_threshold: int,
    lb_address: str = "127.0.9.1",
    address_base: str = "127.0.40.1",
    say: Callable[[str], None] = print,
) -> Iterator[Twin]:
    """Start the whole twin; stop every part of it on exit, whatever happened."""
    started = time.monotonic()
    _check_port_80(lb_address)
    _check_port_80(address_base)
    with contextlib.ExitStack() as stack:
        state = Path(tempfile.mkdtemp(prefix="vmss-canary-demo-"))
        stack.callback(shutil.rmtree, state, ignore_errors=True)

        azurite = stack.enter_context(run_azurite())
        say(f"azurite        blobs and tables on {azurite.blob_endpoint.rsplit('/', 1)[0]}")
        blobs = ReleaseBlobs.from_connection_string(azurite.connection_string, container="init")
        stack.callback(blobs.close)
        blobs.ensure_container()
        v0_url = blobs.upload("install_nginx.sh", (EXAMPLES / "install_nginx.sh").read_bytes(), overwrite=True)

        emulator = ArmEmulator(
            host="127.0.0.1",
            port=0,
            token=TOKEN,
            state_dir=state / "arm",
            subscription_id=SUBSCRIPTION,
            address_base=address_base,
            instance_port=80,
            upgrade_seconds=upgrade_seconds,
            retry_after=0.2,
        )
        emulator.start()
        stack.callback(emulator.stop)
        factory = nginx_runtime_factory(state / "vms", azure_blob_fetcher(azurite.connection_string), port=80)
        emulator.create_scale_set(
            RESOURCE_GROUP,
            VMSS,
            0,
            image_id=BASE_IMAGE,
            extension_settings={"fileUris": [v0_url], "commandToExecute": "bash install_nginx.sh"},
            extension_protected_settings={"managedIdentity": {}},
            runtime_factory=factory,
        )
        # Like `az vmss create` + the extension: the instances run install_nginx.sh as they provision.
        emulator.scale_out(RESOURCE_GROUP, VMSS, instances)
        emulator.wait_idle(timeout=120)
        say(f"arm emulator   {emulator.url} (HTTPS): scale set {VMSS}, {instances} nginx instances, v0 installed")

        def backends() -> list[str]:
            return [i.address for i in emulator.scale_set(RESOURCE_GROUP, VMSS).instances.values()]

        balancer = RoundRobinBalancer(lb_address, 80, backends=backends, probe_interval_s=0.5, unhealthy_threshold=2)
        balancer.start()
        stack.callback(balancer.stop)
        balancer.wait_until(lambda s: len(s.up) == instances, timeout_s=15)
        say(f"load balancer  {balancer.url} (probe GET / on port 80, round robin)")

        env = {
            "FUNCTIONS_WORKER_RUNTIME": "python",
            "AZURE_SUBSCRIPTION_ID": SUBSCRIPTION,
            "VMSS_RESOURCE_GROUP": RESOURCE_GROUP,
            "VMSS_NAME": VMSS,
            "ARM_ENDPOINT": emulator.url,
            "ARM_CA_BUNDLE": str(emulator.ca_bundle),
            "ARM_TOKEN": TOKEN,
            "AzureWebJobsStorage": azurite.connection_string,
            "ReleaseStorage": azurite.connection_string,
            "StateStorage": azurite.connection_string,
            "RELEASE_CONTAINER": "init",
            "ROLLOUT_TICK_SCHEDULE": "*/30 * * * * *",
            "BAKE_SECONDS": str(bake_seconds),
            "FAILURE_THRESHOLD": str(failure_threshold),
            "PROGRESS_DEADLINE_SECONDS": "120",
            "UPGRADE_RETRY_SECONDS": "20",
            "PROBE_TIMEOUT_SECONDS": "1",
        }
        host = LocalFunctionsHost(
            "function_app:app",
            env=env,
            http_port=0,
            timer_period_seconds=tick_seconds,
            blob_poll_seconds=0.5,
            state_dir=state / "host",
        )
        host.start()
        stack.callback(host.stop)
        say(f"functions host {host.url}/api (function key required), timer every {tick_seconds:g} s")
        yield Twin(emulator, balancer, host, blobs, started)


def run_story(twin: Twin, narrator: Narrator, bake_seconds: int) -> list[dict[str, Any]]:
    say = narrator.say
    ended = ("Succeeded", "RolledBack", "Aborted", "Failed", "Rejected")

    narrator.heading("1. The fleet before any release (walkthrough: curl the load balancer)")
    mix = twin.sample_titles(9)
    say("balancer serves " + ", ".join(f"{n} x {t!r}" for t, n in mix.items()))
    if set(mix) != {"Welcome to nginx!"}:
        raise DemoError(f"expected only 'Welcome to nginx!' before the first release, got {dict(mix)}")

    narrator.heading("2. Upload the walkthrough's install_nginx.v1.sh: canary, bake, batches")
    twin.upload("install_nginx.v1.sh", EXAMPLES / "install_nginx.v1.sh")
    v1 = twin.rollout_for(1)
    detail = narrator.follow(twin, v1["id"], lambda d: d["phase"] in ended, timeout=120 + bake_seconds)
    if detail["phase"] != "Succeeded":
        raise DemoError(f"v1 ended {detail['phase']}: {detail['reason']}")
    titles = twin.instance_titles()
    say("instances now serve: " + ", ".join(f"{i}: {t!r}" for i, t in titles.items()))

    narrator.heading("3. Upload a broken v2 (its script breaks the nginx config): automatic rollback")
    twin.upload("install_nginx.v2.sh", EXAMPLES / "install_nginx.v2.sh")
    v2 = twin.rollout_for(2)
    detail = narrator.follow(twin, v2["id"], lambda d: d["phase"] in ended, timeout=180)
    if detail["phase"] != "RolledBack":
        raise DemoError(f"v2 ended {detail['phase']}: {detail['reason']}")
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
        raise DemoError(f"abort answered {status}: {outcome}")
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
    narrator.out(f"  took {time.monotonic() - twin.started:.0f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__.split("\n")[0])
    parser.add_argument("--instances", type=int, default=3, help="fleet size (default 3, as the walkthrough)")
    parser.add_argument("--bake", type=int, default=8, help="BAKE_SECONDS for the demo (default 8)")
    parser.add_argument("--tick", type=float, default=1.0, help="seconds between timer ticks (default 1)")
    parser.add_argument("--upgrade-seconds", type=float, default=1.0, help="emulated time per upgrade (default 1)")
    parser.add_argument("--failure-threshold", type=int, default=2, help="FAILURE_THRESHOLD (default 2)")
    args = parser.parse_args(argv)
    if not 1 <= args.instances <= 50:
        parser.error("--instances must be between 1 and 50 for nginx instances")

    def on_signal(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, on_signal)
    # The audit events tell the story; the controller's own log lines would repeat them.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("rollout").setLevel(logging.ERROR)
    logging.getLogger("function_app").setLevel(logging.ERROR)
    started = time.monotonic()
    narrator = Narrator(started, lambda line: print(line, flush=True))
    print("Canary releases for VM Scale Sets: the walkthrough, automated, on the local twin.", flush=True)
    try:
        with local_twin(
            instances=args.instances,
            bake_seconds=args.bake,
            tick_seconds=args.tick,
            upgrade_seconds=args.upgrade_seconds,
            failure_threshold=args.failure_threshold,
            say=narrator.say,
        ) as twin:
            rollouts = run_story(twin, narrator, args.bake)
            summary(twin, rollouts, narrator)
        print("everything stopped: Azurite, the ARM emulator, nginx instances, balancer, functions host.")
        return 0
    except KeyboardInterrupt:
        print("\ninterrupted: everything stopped.", file=sys.stderr)
        return 130
    except DemoError as exc:
        print(f"\ndemo failed: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
