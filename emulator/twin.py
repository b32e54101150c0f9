"""The local twin: every part of the Azure setup the product runs against, on this machine.

``backends()`` starts the two services the product calls (Azurite for blobs and tables, the ARM
emulator over HTTPS) and stops them on exit; ``bench/`` uses it as it is. ``local_twin()`` adds the rest
of the walkthrough's setup on top, and is what ``make demo`` (``emulator/demo.py``), ``make twin``
(this module's CLI) and ``tests/e2e`` run:

* the release container ``init`` holding the walkthrough's ``install_nginx.sh`` (v0);
* a scale set of real nginx instances (each on its own loopback address, port 80) initialised by that
  script through the CustomScript handler (``emulator/nginx.py``, ``emulator/customscript.py``);
* a round-robin load balancer on ``lb_address:80`` probing ``GET /`` like the walkthrough's LB rule;
* the local Functions host running ``function_app.py`` unchanged: the blob trigger, a fast timer that
  puts one message per target with work on the ``rollout-ticks`` queue (Azurite), the queue trigger
  that advances that target, and the HTTP API with a function key;
* ARM's subscription read bucket (250 reads, 25 a second) on the emulator.

With ``scale_sets`` > 1 (``make demo ARGS="--scale-sets 3"``) there are that many scale sets, each with its
own nginx instances and its own balancer (``lb_address``, then the next addresses), and a targets document
``targets.json`` in the release container (``TARGETS_CONFIG``, ``targets_document()``): the group ``web``,
wave 1 the first scale set (the canary scale set), wave 2 the others, ``wave_bake_seconds`` between them.

Everything is stopped on exit, whatever happened, in the reverse order of its start.

``make twin`` (``python -m emulator.twin``) starts the twin, prints its endpoints and keys, and keeps it
running until Ctrl-C (or SIGTERM).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import faulthandler
import ipaddress
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
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import requests

from emulator.arm import ArmEmulator
from emulator.arm.budgets import ARM_SUBSCRIPTION_READS_BUCKET, ARM_SUBSCRIPTION_READS_PER_SECOND
from emulator.azurite import AzuriteService, run_azurite
from emulator.customscript import azure_blob_fetcher
from emulator.funchost import LocalFunctionsHost, QueueOptions
from emulator.lb import RoundRobinBalancer
from emulator.nginx import nginx_runtime_factory
from rollout.adapters.blobs import ReleaseBlobs

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
SUBSCRIPTION = "00000000-0000-0000-0000-0000000000de"
RESOURCE_GROUP, VMSS = "canary-rg", "canary-vmss"
RELEASE_CONTAINER = "init"
TICK_QUEUE = "rollout-ticks"
TARGETS_BLOB, GROUP = "targets.json", "web"  # with more than one scale set
TOKEN = "local-demo-token"
BASE_IMAGE = (
    f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}/providers/Microsoft.Compute/images/ubuntu-lts"
)
TITLE_RE = re.compile(r"<title>(.*?)</title>", re.S)
# The emulator's Azure Monitor (emulator/arm/monitor.py): the workspace holding the instances' nginx logs, and
# the resource id each scale set's balancer has there (its Health Probe Status).
WORKSPACE_ID = "00000000-0000-0000-0000-00000000a0a0"


def load_balancer_id(scale_set: str) -> str:
    group = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}"
    return f"{group}/providers/Microsoft.Network/loadBalancers/{scale_set}-lb"


class TwinError(RuntimeError):
    """The twin cannot start (a port taken) or did not do what was expected of it."""


@dataclass(frozen=True)
class TwinOptions:
    """How ``local_twin`` sets the twin up; ``make twin`` and ``make demo`` take each as an option."""

    instances: int = 3  # nginx instances in the scale set (the walkthrough's 3)
    bake_seconds: int = 8  # the app's BAKE_SECONDS
    tick_seconds: float = 1.0  # the timer's period (instead of its NCRONTAB schedule)
    upgrade_seconds: float = 1.0  # emulated time per upgrade
    failure_threshold: int = 2  # the app's FAILURE_THRESHOLD
    lb_address: str = "127.0.9.1"  # the balancer's address (port 80)
    address_base: str = "127.0.40.1"  # the first instance's address (port 80)
    orchestration: str = "Uniform"  # the scale set's orchestration mode: Uniform or Flexible
    scale_sets: int = 1  # scale sets, each behind its own balancer; more than one: a group of 2 waves
    wave_bake_seconds: int = 5  # the group's waveBakeSeconds (with more than one scale set)
    # Not command-line options (bench/judge.py sets them):
    v0_script: str = ""  # the instances' initial script (install_nginx.sh in the container); "": the walkthrough's
    signals: bool = False  # the app reads the twin's Log Analytics workspace (SIGNALS_LOGS_*, the emulator's)
    settings: tuple[tuple[str, str], ...] = ()  # app settings set over app_settings()'s


@dataclass(frozen=True)
class Backends:
    """The services the product calls: Azurite and the ARM emulator (HTTPS)."""

    azurite: AzuriteService
    emulator: ArmEmulator


@contextlib.contextmanager
def backends(**arm_options: Any) -> Iterator[Backends]:
    """Azurite and an ARM emulator started with ``arm_options`` (``ArmEmulator``'s); both stopped on exit."""
    with run_azurite() as azurite, ArmEmulator(**arm_options) as emulator:
        yield Backends(azurite, emulator)


@dataclass
class Twin:
    """The running local twin, as the demo, ``make twin`` and the e2e tests drive it."""

    azurite: AzuriteService
    emulator: ArmEmulator
    balancer: RoundRobinBalancer
    host: LocalFunctionsHost
    blobs: ReleaseBlobs
    started: float
    scale_sets: tuple[str, ...] = (VMSS,)  # their names, in resource group RESOURCE_GROUP
    balancers: tuple[RoundRobinBalancer, ...] = ()  # one per scale set, in the same order

    def balancer_of(self, scale_set: str) -> RoundRobinBalancer:
        return self.balancers[self.scale_sets.index(scale_set)] if self.balancers else self.balancer

    # -- what a user sees ------------------------------------------------------------------------
    def sample_titles(self, n: int = 12, scale_set: str = VMSS) -> collections.Counter[str]:
        """``curl`` the scale set's balancer n times; count the page titles (the walkthrough's check)."""
        url = self.balancer_of(scale_set).url
        seen: collections.Counter[str] = collections.Counter()
        for _ in range(n):
            seen[_title_of(url, 3, lambda exc: f"error: {type(exc).__name__}")] += 1
        return seen

    def instance_titles(self, name: str = VMSS) -> dict[str, str]:
        """Each instance's own page, bypassing the balancer (what the SSH tunnel showed)."""
        scale_set = self.emulator.scale_set(RESOURCE_GROUP, name)
        return {
            inst.instance_id: _title_of(f"http://{inst.address}/", 2, lambda _: "down (connection refused)")
            for inst in scale_set.instances_in_order()
        }

    # -- the operator's side -----------------------------------------------------------------------
    def api(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        r = requests.request(
            method,
            f"{self.host.api_url}/{path}",
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
        raise TwinError(f"the blob trigger did not record v{version} within {timeout:.0f} s")

    def endpoints(self) -> list[tuple[str, str]]:
        """What a person needs to talk to each part (``make twin`` prints these)."""
        parts: list[tuple[str, str]] = []
        for name in self.scale_sets:
            instances = self.emulator.scale_set(RESOURCE_GROUP, name).instances
            parts += [
                ("scale set", f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}/.../{name}"),
                *((f"instance {iid}", f"http://{inst.address}/") for iid, inst in sorted(instances.items())),
                ("load balancer", self.balancer_of(name).url),
            ]
        routes = "rollouts, rollouts/<id>, fleet" + (
            ", targets, releases, releases/<id>" if len(self.scale_sets) > 1 else ""
        )
        return [
            ("Azurite", self.azurite.connection_string),
            ("release container", f"{self.azurite.blob_endpoint}/{RELEASE_CONTAINER}"),
            ("ARM emulator", f"{self.emulator.url} (token {TOKEN}, CA bundle {self.emulator.ca_bundle})"),
            *parts,
            ("Functions host", f"{self.host.api_url} (routes: {routes})"),
            ("function key", self.host.function_key),
            # A browser cannot send the key as a header when it opens a page: ?code= (rollout/dashboard.py).
            ("dashboard", f"{self.host.api_url}/dashboard?code={self.host.function_key}"),
            ("master key", f"{self.host.master_key} (admin API: {self.host.url}/admin/functions/<name>)"),
        ]


def _title_of(url: str, timeout: float, failed: Callable[[requests.RequestException], str]) -> str:
    """The page title at ``url``; ``HTTP <status>`` for an error answer, ``failed(exc)`` for no answer."""
    try:
        r = requests.get(url, timeout=timeout)
    except requests.RequestException as exc:
        return failed(exc)
    m = TITLE_RE.search(r.text)
    return m.group(1).strip() if m and r.status_code == 200 else f"HTTP {r.status_code}"


def scale_set_names(count: int) -> list[str]:
    """The twin's scale sets: ``canary-vmss`` (the one of a single-scale-set twin; wave 1 of a group), then
    ``web-vmss-2`` ... ``web-vmss-<count>``."""
    return [VMSS, *(f"web-vmss-{n}" for n in range(2, count + 1))]


def balancer_addresses(first: str, count: int) -> list[str]:
    """One balancer per scale set: ``first``, then the next addresses (127.0.9.1, 127.0.9.2, ...)."""
    return [str(ipaddress.IPv4Address(first) + n) for n in range(count)]


def targets_document(names: list[str], wave_bake_seconds: int) -> dict[str, Any]:
    """The twin's targets document: the group ``web`` (the default group, so ``<container>/install_nginx.vN.sh``
    goes to it), wave 1 the first scale set, wave 2 the others."""
    target = [{"resourceGroup": RESOURCE_GROUP, "name": name} for name in names]
    return {
        "defaultGroup": GROUP,
        "groups": [
            {
                "name": GROUP,
                "waveBakeSeconds": wave_bake_seconds,
                "onFailure": "halt",
                "waves": [{"targets": target[:1]}, {"targets": target[1:]}],
            }
        ],
    }


def check_port_80(address: str) -> None:
    """Fail early and clearly when port 80 is taken (a system nginx on *:80 takes it everywhere)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((address, 80))
        except OSError as exc:
            raise TwinError(
                f"cannot listen on {address}:80 ({exc.strerror}): is a system nginx, or another twin, "
                "holding port 80? Stop it (for example `service nginx stop`) and try again"
            ) from None


def app_settings(
    azurite: AzuriteService, emulator: ArmEmulator, bake_seconds: int, failure_threshold: int
) -> dict[str, str]:
    """The function app's settings on the twin (local.settings.sample.json names them all)."""
    return {
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
        "RELEASE_CONTAINER": RELEASE_CONTAINER,
        "ROLLOUT_TICK_SCHEDULE": "*/30 * * * * *",
        "BAKE_SECONDS": str(bake_seconds),
        "FAILURE_THRESHOLD": str(failure_threshold),
        # The twin's bakes are seconds long (a probe a second): the canary judge tests a metric from 5 samples
        # a side instead of 10, so `make demo` shows its figures (p-values), not only its counts.
        "JUDGE_MIN_SAMPLES": "5",
        "PROGRESS_DEADLINE_SECONDS": "120",
        "UPGRADE_RETRY_SECONDS": "20",
        "PROBE_TIMEOUT_SECONDS": "1",
        # The timer puts one message per target with work on this queue; the queue trigger advances it.
        "TickQueue": azurite.connection_string,
        "TICK_QUEUE": TICK_QUEUE,
        "TICK_READ_BURST": "100",
        "TICK_READ_RATE": "20",
        # deliver_notification's queue (%NOTIFY_QUEUE%); no channel is set, so nothing is enqueued
        # (NOTIFY_*_URL turn notifications on: docs/operations.md).
        "NOTIFY_QUEUE": "rollout-notifications",
    }


@contextlib.contextmanager
def local_twin(options: TwinOptions = TwinOptions(), say: Callable[[str], None] = print) -> Iterator[Twin]:
    """Start the whole twin; stop every part of it on exit, whatever happened."""
    started = time.monotonic()
    instances, tick_seconds = options.instances, options.tick_seconds
    for address in balancer_addresses(options.lb_address, options.scale_sets):
        check_port_80(address)
    check_port_80(options.address_base)
    with contextlib.ExitStack() as stack:
        state = Path(tempfile.mkdtemp(prefix="vmss-canary-twin-"))
        stack.callback(shutil.rmtree, state, ignore_errors=True)
        arm_options = {"token": TOKEN, "state_dir": state / "arm", "subscription_id": SUBSCRIPTION}
        parts = stack.enter_context(
            backends(
                **arm_options,
                address_base=options.address_base,
                upgrade_seconds=options.upgrade_seconds,
                retry_after=0.2,
                # ARM's subscription read bucket, as in Azure (emulator/arm/budgets.py, ReadLimit).
                read_limit=(ARM_SUBSCRIPTION_READS_BUCKET, ARM_SUBSCRIPTION_READS_PER_SECOND),
            )
        )
        azurite, emulator = parts.azurite, parts.emulator
        say(f"azurite        blobs, queues and tables on {azurite.blob_endpoint.rsplit('/', 1)[0]}")
        blobs = ReleaseBlobs.from_connection_string(azurite.connection_string, container=RELEASE_CONTAINER)
        stack.callback(blobs.close)
        blobs.ensure_container()
        v0 = Path(options.v0_script) if options.v0_script else EXAMPLES / "install_nginx.sh"
        v0_url = blobs.upload("install_nginx.sh", v0.read_bytes(), overwrite=True)

        factory = nginx_runtime_factory(state / "vms", azure_blob_fetcher(azurite.connection_string), port=80)
        names = scale_set_names(options.scale_sets)
        for name in names:
            emulator.create_scale_set(
                RESOURCE_GROUP,
                name,
                0,
                image_id=BASE_IMAGE,
                extension_settings={"fileUris": [v0_url], "commandToExecute": "bash install_nginx.sh"},
                extension_protected_settings={"managedIdentity": {}},
                runtime_factory=factory,
                orchestration_mode=options.orchestration,
            )
            # Like `az vmss create` + the extension: the instances run install_nginx.sh as they provision.
            emulator.scale_out(RESOURCE_GROUP, name, instances)
        emulator.wait_idle(timeout=120)
        for name in names:
            say(
                f"arm emulator   {emulator.url} (HTTPS): scale set {name} ({options.orchestration}), "
                f"{instances} nginx instances, v0 installed"
            )

        def backend_addresses(name: str) -> Callable[[], list[str]]:
            return lambda: [i.address for i in emulator.scale_set(RESOURCE_GROUP, name).instances.values()]

        balancers = []
        for name, address in zip(names, balancer_addresses(options.lb_address, len(names)), strict=True):
            balancer = RoundRobinBalancer(
                address, 80, backends=backend_addresses(name), probe_interval_s=0.5, unhealthy_threshold=2
            )
            stack.enter_context(balancer)
            balancer.wait_until(lambda s: len(s.up) == instances, timeout_s=15)
            balancers.append(balancer)
            emulator.monitor.add_load_balancer(load_balancer_id(name), balancer)
            say(
                f"load balancer  {balancer.url} (probe GET / on port 80, round robin)"
                + (f" for {name}" if len(names) > 1 else "")
            )

        emulator.monitor.add_workspace(WORKSPACE_ID)
        settings = app_settings(azurite, emulator, options.bake_seconds, options.failure_threshold)
        if instances <= 2:
            # Pre-flight refuses the default MAX_UNAVAILABLE of 20% on 2 instances or fewer (it rounds up
            # to half the fleet or more: rollout.preflight.policy_findings); a count says it is accepted.
            settings["MAX_UNAVAILABLE"] = "1"
        if options.signals:
            # The canary judge reads what the instances served (nginx's access logs) through the Log Analytics
            # query API of the emulator, with the real LogsQueryClient (rollout/adapters/signals.py).
            settings["SIGNALS_LOGS_WORKSPACE_ID"] = WORKSPACE_ID
            settings["SIGNALS_LOGS_ENDPOINT"] = emulator.url
        settings.update(dict(options.settings))
        if len(names) > 1:
            document = targets_document(names, options.wave_bake_seconds)
            blobs.upload(TARGETS_BLOB, json.dumps(document, indent=2).encode(), overwrite=True)
            settings["TARGETS_CONFIG"] = TARGETS_BLOB
            waves = "; ".join(
                f"wave {n}: {', '.join(t['name'] for t in w['targets'])}"
                for n, w in enumerate(document["groups"][0]["waves"], start=1)
            )
            bake = options.wave_bake_seconds
            say(f"targets        {RELEASE_CONTAINER}/{TARGETS_BLOB}: group {GROUP} ({waves}), {bake} s between waves")

        host = LocalFunctionsHost(
            "function_app:app",
            env=settings,
            http_port=0,
            timer_period_seconds=tick_seconds,
            blob_poll_seconds=0.5,
            state_dir=state / "host",
            # host.json's extensions.queues, polled at most every half second (the timer ticks every second).
            queue_options=QueueOptions.from_host_json(REPO, max_polling_interval_seconds=0.5),
        )
        stack.enter_context(host)
        say(
            f"functions host {host.api_url} (function key required), timer every {tick_seconds:g} s "
            f"-> queue {TICK_QUEUE} -> advance_target"
        )
        yield Twin(azurite, emulator, balancers[0], host, blobs, started, tuple(names), tuple(balancers))


# The command-line flag and help of each TwinOptions field.
_FLAGS = {
    "instances": ("--instances", "nginx instances in the scale set"),
    "bake_seconds": ("--bake", "BAKE_SECONDS"),
    "tick_seconds": ("--tick", "seconds between timer ticks"),
    "upgrade_seconds": ("--upgrade-seconds", "emulated time per upgrade"),
    "failure_threshold": ("--failure-threshold", "FAILURE_THRESHOLD"),
    "lb_address": ("--lb-address", "the balancer's address, port 80"),
    "address_base": ("--address-base", "the first instance's address, port 80"),
    "orchestration": ("--orchestration", "the scale set's orchestration mode, Uniform or Flexible"),
    "scale_sets": ("--scale-sets", "scale sets, each behind its own balancer; 2 or more: a group of 2 waves"),
    "wave_bake_seconds": ("--wave-bake", "the group's waveBakeSeconds, with 2 or more scale sets"),
}


def add_twin_arguments(parser: argparse.ArgumentParser) -> None:
    """``TwinOptions`` as command-line options (defaults from it), shared by ``make twin`` and ``make demo``."""
    defaults = TwinOptions()
    for option in fields(TwinOptions):
        if option.name not in _FLAGS:
            continue
        flag, text = _FLAGS[option.name]
        default = getattr(defaults, option.name)
        parser.add_argument(flag, dest=option.name, type=type(default), default=default, help=f"{text} (%(default)s)")


def options_from_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> TwinOptions:
    """The ``TwinOptions`` of parsed ``add_twin_arguments`` options (each dest is the field's name)."""
    if not 1 <= args.instances <= 50:
        parser.error("--instances must be between 1 and 50 for nginx instances")
    if not 1 <= args.scale_sets <= 10:
        parser.error("--scale-sets must be between 1 and 10")
    if not 0 <= args.wave_bake_seconds <= 3600:
        parser.error("--wave-bake must be between 0 and 3600 seconds")
    if args.orchestration not in ("Uniform", "Flexible"):
        parser.error("--orchestration must be Uniform or Flexible")
    return TwinOptions(**{f.name: getattr(args, f.name) for f in fields(TwinOptions) if f.name in _FLAGS})


def run_until_interrupted(body: Callable[[], int]) -> int:
    """Run ``body`` with SIGTERM turned into Ctrl-C; 130 when interrupted, 1 when the twin failed."""

    def on_signal(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, on_signal)
    # Ctrl-C too, explicitly: a process started with SIGINT ignored (a background job of a
    # non-interactive shell, as CI runs it) inherits that, and Python then installs no handler of its
    # own, so the twin would never stop on Ctrl-C there.
    signal.signal(signal.SIGINT, on_signal)
    # SIGUSR1 prints every thread's stack (to stderr) without stopping: what a twin that does not stop
    # is waiting for (tests/e2e/test_twin_cli.py asks for it before it gives up).
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    # The audit events and the endpoints tell the story; the controller's own log lines would repeat them.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("rollout").setLevel(logging.ERROR)
    logging.getLogger("function_app").setLevel(logging.ERROR)
    try:
        return body()
    except KeyboardInterrupt:
        print("\ninterrupted: everything stopped.", file=sys.stderr)
        return 130
    except TwinError as exc:
        print(f"\nfailed: {exc}", file=sys.stderr)
        return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make twin", description="Start the local twin; Ctrl-C stops it.")
    add_twin_arguments(parser)
    args = parser.parse_args(argv)

    def body() -> int:
        with local_twin(options_from_arguments(parser, args), lambda line: print(line, flush=True)) as twin:
            print("\nThe local twin is running (Ctrl-C stops it):", flush=True)
            for name, value in twin.endpoints():
                print(f"  {name:<18} {value}", flush=True)
            print(f"\nRelease: upload <app>.v<N>.sh to the {RELEASE_CONTAINER!r} container.", flush=True)
            while True:
                time.sleep(3600)

    return run_until_interrupted(body)


if __name__ == "__main__":
    sys.exit(main())
