"""Performance you can quote (issue 13), part of ``make bench``: cold start, ARM requests per rollout, tick cost,
makespan against its lower bound and rollback latency (``bench/makespan.py``), start latency
(``bench/startlatency.py``).

Written to docs/performance.md, the raw figures to docs/performance.json and the plots (docs/perf-*.png) rendered
from that JSON by ``bench/plots.py`` (its docstring lists the JSON's keys and what each plot shows). Each part
runs the product's own code in the shape it runs in Azure:

* **Cold start** (``bench/coldstart.py``): fresh interpreters importing ``azure.functions``, then
  ``azure.functions`` + ``azure.data.tables``, then those and the blob trigger's SDK-type binding extension,
  then ``function_app`` and serving its first ``GET /api/rollouts`` through the function object (Azurite for
  the state, ARM unreachable). Median of 7 each.
* **ARM requests per rollout** at each size: the ARM emulator in **its own process** (``python -m emulator
  serve``) with its budgets on (the subscription read bucket, 250 reads refilled 25 a second, and the
  per-scale-set write bucket, 12 writes refilled 4 a minute), synthetic instances (``emulator/synthetic.py``:
  one listening socket each on their own loopback address, served by the emulator process), Azurite for the
  state. The controller is a **process of its own** too (``python -m bench.perf controller``), wired by the
  composition root (``rollout.bootstrap``) from settings as the function app is, ticking one rollout to its
  end. The requests are counted by operation from the emulator's request log (``emulator/arm/requestlog.py``).
  Against it, a **naive controller** written here: the walkthrough's manual steps (docs of the project:
  ``az vmss list-instances`` then ``az vmss update-instances --instance-ids <one>``, waiting for each) made
  into a loop over the REST API, one ``instanceView`` GET and one ``manualupgrade`` per instance, batches of
  the same size. It runs without budgets (it could not finish under them), and once more, one pass only,
  with the budgets on, to count the 429s it draws.
* **Makespan and rollback latency** (``bench/makespan.py``): on a second emulator process whose clock skips idle
  time (``--skip-clock``), shared with the controller process (``bench/clockdriver.py``), at the issue's real
  timings; the parts above run on real time.
* **Tick cost** at the largest size: each tick's wall time and CPU time (``time.process_time``, every thread
  of the controller process), the controller process's peak resident memory (``VmHWM``) and its peak thread
  count (sampled every 5 ms), over loopback. ``--tick-cost-only`` runs this rollout alone and prints its table
  (with each tick's figures) without writing docs/performance.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import requests

from bench.armprocess import ArmProcess, arm_process
from bench.clockdriver import AdminClockApi, Driver, next_tick_at
from bench.coldstart import ColdStart, app_env, median_of
from emulator.clock import SkipClock

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs" / "performance.md"
TOKEN = "bench-perf-token"
API_VERSION = "2024-07-01"
RG = "perf-rg"
READ_LIMIT = (250, 25)  # ARM's subscription read bucket: 250, refilled 25 a second (emulator/arm/budgets.py)
WRITE_LIMIT = (12, 4)  # the emulator's per-scale-set write bucket: 12, refilled 4 a minute
BATCH_PERCENT = 20
UPGRADE_SECONDS = 0.5
TICK_GAP_S = 0.5  # between the end of one tick and the start of the next (Azure: the 30-60 s timer)

WRITES = ("PUT extension", "PATCH scale set", "PUT scale set", "POST manualupgrade", "POST reimage")


def peak_rss_mib() -> float:
    """This process's peak resident memory (VmHWM; ``ru_maxrss`` would carry a parent's peak across exec)."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024


# --------------------------------------------------------------------------------------------------
# The emulator in its own process


def count_writes(by_operation: dict[str, int]) -> int:
    """The ARM writes among requests counted by operation (model writes and upgrades: ``WRITES``)."""
    return sum(n for op, n in by_operation.items() if op in WRITES)


def count_reads(by_operation: dict[str, int]) -> int:
    """The ARM reads among requests counted by operation."""
    return sum(n for op, n in by_operation.items() if op.startswith("GET "))


@dataclass
class Emulator(ArmProcess):
    ADMIN_TIMEOUT: ClassVar[float] = 300.0  # creating or listing 1,000 instances takes a while

    instance_port: int

    def budgets(self, on: bool) -> None:
        self.admin(
            "POST",
            "settings",
            {
                "throttle": {"capacity": WRITE_LIMIT[0], "per_minute": WRITE_LIMIT[1]} if on else None,
                "read_limit": {"capacity": READ_LIMIT[0], "per_second": READ_LIMIT[1]} if on else None,
            },
        )

    def create(self, name: str, instances: int, script_url: str, **more: Any) -> None:
        extension = {"settings": {"fileUris": [script_url], "commandToExecute": "bash install_nginx.sh"}}
        body = {"resource_group": RG, "name": name, "instances": instances, "extension": extension, **more}
        self.admin("POST", "scalesets", body)

    def delete(self, name: str) -> None:
        self.admin("DELETE", f"scalesets/{RG}/{name}")


@contextlib.contextmanager
def emulator_process(
    state_dir: Path, *, address_base: str, instance_port: int, skip_clock: bool = False
) -> Iterator[Emulator]:
    """``skip_clock``: on a clock that skips idle time (the makespan benchmark's shared clock)."""
    args = [
        *("--address-base", address_base, "--instance-port", str(instance_port)),
        *("--upgrade-seconds", str(UPGRADE_SECONDS), "--retry-after", "0.2"),
        *("--read-limit", f"{READ_LIMIT[0]}/{READ_LIMIT[1]}"),
        *(("--skip-clock",) if skip_clock else ()),
    ]
    with arm_process(("emulator", "serve"), args, state_dir, TOKEN) as (process, info):
        yield Emulator(process, info["url"], info["ca_bundle"], info["subscription_id"], TOKEN, instance_port)


# --------------------------------------------------------------------------------------------------
# The product's controller, in a process of its own


@dataclass
class ControllerRun:
    instances: int
    phase: str
    seconds: float
    tick_wall_s: list[float]
    tick_cpu_s: list[float]
    peak_rss_mib: float
    peak_threads: int
    tick_observe_s: list[float] = field(default_factory=list)
    tick_probe_s: list[float] = field(default_factory=list)
    batches: int = 0
    by_operation: dict[str, int] = field(default_factory=dict)
    throttled: dict[str, int] = field(default_factory=dict)
    release_started_at: float = 0.0  # epoch seconds: ``start_release`` called
    tick_log: list[tuple[float, float]] = field(default_factory=list)  # each tick's (start, end), epoch seconds
    events: list[tuple[str, float, str]] = field(default_factory=list)  # the rollout's events: (kind, at, message)
    # Every manualupgrade the emulator answered: (epoch seconds, status, instance ids).
    upgrades: list[tuple[float, int, list[str]]] = field(default_factory=list)
    final_view: dict[str, Any] = field(default_factory=dict)  # the emulator's admin view of the scale set at the end
    # On the shared clock (``skip_clock``): why each tick ran ("timer", "next look"), the next look each outcome
    # asked for (epoch seconds or None; ``start_release``'s first), whether the product's outcomes have
    # ``next_look`` at all, and the driver's jumps (bench.clockdriver.DriverStats as a dict).
    tick_why: list[str] = field(default_factory=list)
    next_looks: list[float | None] = field(default_factory=list)
    next_look_supported: bool = False
    clock: dict[str, Any] | None = None

    @property
    def ticks(self) -> int:
        return len(self.tick_wall_s)

    @property
    def writes(self) -> int:
        return count_writes(self.by_operation)

    @property
    def reads(self) -> int:
        return count_reads(self.by_operation)

    @property
    def observations(self) -> int:
        """Looks at the fleet (ticks, and those of ``start_release``): one scale set GET each."""
        return self.by_operation.get("GET scale set", 0)

    @property
    def reads_per_observation(self) -> float:
        lists = sum(
            self.by_operation.get(f"GET {op}", 0) for op in ("scale set", "list VMs (instance view)", "list NICs")
        )
        return lists / max(1, self.observations)


def _controller_child(config: dict[str, Any]) -> dict[str, Any]:
    """The controller process: ``start_release`` then ``tick`` until the rollout ends; figures as JSON."""
    from dataclasses import replace

    from rollout.bootstrap import build_compute, build_service, build_store
    from rollout.model import Release, ReleaseKind
    from rollout.policy import RolloutPolicy
    from rollout.service import OutcomeStatus
    from rollout.settings import load_settings

    settings = replace(
        load_settings(
            {
                "AZURE_SUBSCRIPTION_ID": config["subscription_id"],
                "VMSS_RESOURCE_GROUP": RG,
                "VMSS_NAME": config["name"],
                "ARM_ENDPOINT": config["url"],
                "ARM_CA_BUNDLE": config["ca_bundle"],
                "ARM_TOKEN": TOKEN,
                "StateStorage": config["storage"],
                "ReleaseStorage": config["storage"],
                "STATE_TABLE_PREFIX": config["table_prefix"],
                "PROBE_PORT": str(config["instance_port"]),
                "PROBE_TIMEOUT_SECONDS": "2",
            }
        ),
        policy=RolloutPolicy(
            bake_seconds=int(config.get("bake_seconds", 0)),
            batch_percent=BATCH_PERCENT,
            max_unavailable_percent=BATCH_PERCENT,
        ),
    )
    from rollout.adapters.compute import AzureCompute
    from rollout.adapters.probe import HttpProber

    phases: dict[str, float] = {"observe": 0.0, "probe": 0.0}

    class TimedCompute(AzureCompute):
        """The adapter as built, timing its fleet reads (it only observes)."""

        def observe(self) -> Any:
            t0 = time.monotonic()
            try:
                return super().observe()
            finally:
                phases["observe"] += time.monotonic() - t0

    class TimedProber(HttpProber):
        def probe(self, targets: Any) -> Any:
            t0 = time.monotonic()
            try:
                return super().probe(targets)
            finally:
                phases["probe"] += time.monotonic() - t0

    # ``skip_clock``: the emulator runs on a clock that skips idle time (``--skip-clock``); this process keeps
    # the same virtual time (bench/clockdriver.py) and the service reads it, so the real timings run
    # in seconds of wall time. The offset starts at the emulator's (earlier runs moved it).
    vclock: SkipClock | None = None
    driver: Driver | None = None
    if config.get("skip_clock"):
        vclock = SkipClock()
        driver = Driver(vclock, AdminClockApi(_admin_client(config)))
        vclock.advance(driver.emulator.state().offset)
    clock_time = vclock.time if vclock is not None else time.time
    built = build_compute(settings)
    # The adapter exactly as the composition root made it, with the timing subclass on top.
    compute = TimedCompute.__new__(TimedCompute)
    compute.__dict__.update(built.__dict__)
    store = build_store(settings)
    # The prober as the app builds it (rollout.bootstrap.build_target_service: HttpProber(target.probe)).
    service = build_service(
        settings,
        compute=compute,
        store=store,
        prober=TimedProber(settings.probe),
        clock=vclock,  # the service's Clock port (its ``now()``) on the shared clock; None: the system clock
    )
    # The engine's own next looks are delivered by the driver below (a tick at their time, with their stamp),
    # not through the tick queue as advance_target does.
    service.looks = None
    url = service.release_container_url or ""
    release = Release(
        ReleaseKind.SCRIPT, "install_nginx", 1, "install_nginx.v1.sh", f"{url}/install_nginx.v1.sh", "b" * 64
    )
    peak_threads = threading.active_count()
    sampling = threading.Event()

    def sample_threads() -> None:
        nonlocal peak_threads
        while not sampling.wait(0.005):
            peak_threads = max(peak_threads, threading.active_count() - 1)  # less this sampler

    sampler = threading.Thread(target=sample_threads, daemon=True)
    sampler.start()
    started = time.monotonic()
    walls: list[float] = []
    cpus: list[float] = []
    observe_s: list[float] = []
    probe_s: list[float] = []
    phase = "none"
    # ``tick_period``: ticks start on a fixed schedule (multiples of the period, as the timer's schedule fires;
    # a tick that overruns skips the starts it covered, as the timer's singleton lock does). Otherwise the
    # next tick starts ``TICK_GAP_S`` after the end of one.
    # On the shared clock the driver jumps to each tick's start: the timer's, or (``honour_next_look``) the
    # engine's own earlier next look delivered ``look_delay`` seconds late (bench/clockdriver.py).
    period = float(config.get("tick_period", 0))
    honour = bool(config.get("honour_next_look"))
    look_delay = float(config.get("look_delay", 0.0))
    tick_log: list[tuple[float, float]] = []  # (start, end), epoch seconds (virtual on the shared clock)
    tick_why: list[str] = []  # each tick: "timer" or "next look"
    looks: list[float | None] = []  # the next look each outcome asked for (epoch seconds), start_release's first
    rollout_id = ""
    release_started_at = clock_time()
    pending: tuple[float, str] | None = None  # the look the engine asked for and has not had: (when, stamp)
    try:
        outcome = service.start_release(release)
        looks.append(_next_look(outcome))
        pending = _asked(outcome)
        if outcome.status is not OutcomeStatus.ADVANCED:
            raise RuntimeError(f"the release did not start: {outcome.status}: {outcome.message}")
        rollout_id = outcome.rollout_id or ""
        for _ in range(config.get("max_ticks", 400)):
            current = store.get_rollout(service.target_key, rollout_id)
            assert current is not None
            phase = current.phase.value
            if current.phase.is_terminal:
                break
            why = "timer"
            if driver is not None:
                at, why = next_tick_at(clock_time(), period, pending[0] if honour and pending else None, look_delay)
                driver.sleep_until(at)
                tick_why.append(why)
            elif period > 0:
                now = time.time()
                time.sleep(period - now % period)
            w0, c0, e0 = time.monotonic(), time.process_time(), clock_time()
            phases.update(observe=0.0, probe=0.0)
            # A look is delivered with its stamp, as advance_target passes the message's; a look whose rollout
            # changed since is superseded by the service without a read. The latest ask replaces the pending
            # look (an older one would be superseded); a look that asked for no other ends the chain, a timer
            # tick that asked for none leaves it (rollout.cadence).
            look = pending[1] if why == "next look" and pending else None
            outcome = service.tick(look=look)
            looks.append(_next_look(outcome))
            asked = _asked(outcome)
            if asked is not None:
                pending = asked
            elif look is not None:
                pending = None
            walls.append(time.monotonic() - w0)
            cpus.append(time.process_time() - c0)
            tick_log.append((e0, clock_time()))
            observe_s.append(phases["observe"])
            probe_s.append(phases["probe"])
            if period <= 0:
                time.sleep(TICK_GAP_S)
        events = [
            (e.kind.value, e.at.timestamp(), e.message) for e in store.list_events(service.target_key, rollout_id)
        ]
    finally:
        sampling.set()
        sampler.join()
        compute.close()
        store.close()
    return {
        "instances": config["instances"],
        "phase": phase,
        "seconds": time.monotonic() - started,
        "tick_wall_s": walls,
        "tick_cpu_s": cpus,
        "tick_observe_s": observe_s,
        "tick_probe_s": probe_s,
        "peak_rss_mib": peak_rss_mib(),
        "peak_threads": peak_threads,
        "release_started_at": release_started_at,
        "tick_log": tick_log,
        "events": events,
        "tick_why": tick_why,
        "next_looks": looks,
        "next_look_supported": hasattr(outcome, "next_look") if rollout_id else False,
        "clock": None if driver is None else asdict(driver.stats),
    }


def _asked(outcome: object) -> tuple[float, str] | None:
    """The look ``outcome`` asks for, as (epoch seconds, the rollout's stamp), or None."""
    at, stamp = _next_look(outcome), getattr(outcome, "look_stamp", None)
    return (at, stamp) if at is not None and isinstance(stamp, str) else None


def _next_look(outcome: object) -> float | None:
    """The engine's own next look (``Outcome.next_look``, a service-clock datetime; absent on products that do
    not ask for one), as epoch seconds."""
    look = getattr(outcome, "next_look", None)
    return look.timestamp() if isinstance(look, datetime) else None


def _admin_client(config: dict[str, Any]) -> Callable[[str, str, Any], Any]:
    """The emulator's admin API from the controller process (its url, CA bundle and the benchmark's token)."""
    session = requests.Session()

    def admin(method: str, path: str, body: Any) -> Any:
        response = session.request(
            method,
            f"{config['url']}/_admin/{path}",
            headers={"Authorization": f"Bearer {TOKEN}"},
            json=body,
            verify=config["ca_bundle"],
            timeout=60,
        )
        response.raise_for_status()
        return response.json()

    return admin


def run_controller(
    emu: Emulator,
    storage: str,
    instances: int,
    name: str,
    table_prefix: str | None = None,
    *,
    upgrade_seconds: float | None = None,
    bake_seconds: int = 0,
    tick_period: float = 0.0,
    fail_pattern: str | None = None,
    fail_mode: str = "extension",
    skip_clock: bool = False,
    honour_next_look: bool = False,
    look_delay: float = 0.0,
) -> ControllerRun:
    """The product's rollout of ``instances`` synthetic instances; the controller in its own process.
    ``upgrade_seconds``: this scale set's upgrade time (else the emulator's); ``tick_period``: ticks on a fixed
    schedule (else ``TICK_GAP_S`` after each tick); ``fail_pattern``: releases matching it fail to install.
    ``skip_clock``: on the shared clock (the emulator started with it, bench/clockdriver.py), the ticks on the
    timer's schedule and, with ``honour_next_look``, at the engine's next looks ``look_delay`` seconds late."""
    body: dict[str, Any] = {}
    if upgrade_seconds is not None:
        body["upgrade_seconds"] = upgrade_seconds
    emu.create(name, instances, "https://releases.invalid/install_nginx.sh", **body)
    if fail_pattern is not None:
        emu.admin("POST", f"scalesets/{RG}/{name}/release-failures", {"pattern": fail_pattern, "mode": fail_mode})
    emu.admin("DELETE", "requests")
    config = {
        "subscription_id": emu.subscription_id,
        "url": emu.url,
        "ca_bundle": emu.ca_bundle,
        "storage": storage,
        "table_prefix": table_prefix or f"perf{instances}p{os.getpid()}",
        "instance_port": emu.instance_port,
        "name": name,
        "instances": instances,
        "bake_seconds": bake_seconds,
        "tick_period": tick_period,
        "skip_clock": skip_clock,
        "honour_next_look": honour_next_look,
        "look_delay": look_delay,
    }
    try:
        out = subprocess.run(
            [sys.executable, "-m", "bench.perf", "controller", json.dumps(config)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        if out.returncode != 0:
            raise RuntimeError(f"the controller process failed: {out.stderr[-3000:]}")
        result = json.loads(out.stdout.strip().splitlines()[-1])
        if skip_clock:  # nobody ticks any more: jump over what the emulator still has pending
            drain(emu)
        emu.admin("POST", "idle", {"timeout": 60})
        by_op, throttled = emu.requests_by_operation()
        upgrades = [
            (
                datetime.fromisoformat(r["time"]).timestamp(),
                int(r["status"]),
                list((r["body"] or {}).get("instanceIds", [])),
            )
            for r in emu.admin("GET", "requests?method=POST&path_contains=manualupgrade")["requests"]
        ]
        final_view = emu.admin("GET", f"scalesets/{RG}/{name}")
    finally:
        emu.delete(name)
    run = ControllerRun(
        **result, by_operation=dict(by_op), throttled=dict(throttled), upgrades=upgrades, final_view=final_view
    )
    run.tick_log = [(a, b) for a, b in run.tick_log]
    run.events = [(k, at, m) for k, at, m in run.events]
    # The batches after the canary: every accepted manualupgrade but the canary's.
    run.batches = by_op.get("POST manualupgrade", 0) - throttled.get("POST manualupgrade", 0) - 1
    return run


def drain(emu: Emulator) -> None:
    """Jump the emulator's clock over every operation it still has waiting, letting each finish."""
    api = AdminClockApi(lambda method, path, body: emu.admin(method, path, body))
    clock = SkipClock()
    clock.advance(api.state().offset)
    driver = Driver(clock, api)
    state = driver.settle()
    while state.next_event is not None:
        driver.sleep_until(state.next_event)
        state = driver.settle()


# --------------------------------------------------------------------------------------------------
# The naive controller: the walkthrough's manual steps in a loop


@dataclass
class NaiveRun:
    instances: int
    rounds: int
    seconds: float
    by_operation: dict[str, int]
    throttled: dict[str, int]
    finished: bool
    upgraded: int = 0

    @property
    def writes(self) -> int:
        return count_writes(self.by_operation)

    @property
    def reads(self) -> int:
        return count_reads(self.by_operation)


class NaiveController:
    """Per instance: ``GET .../virtualMachines/{id}/instanceView`` to see whether it is up, and
    ``POST .../manualupgrade`` naming that one instance (``az vmss update-instances --instance-ids <id>``).
    The model write first (``az vmss extension set``), then the canary, then batches of the product's size,
    each batch waited for with rounds of instance-view reads of its instances, 0.2 s apart. A refused
    (429) upgrade is sent again in the next round."""

    def __init__(self, emu: Emulator, name: str) -> None:
        self.emu = emu
        self.base = (
            f"{emu.url}/subscriptions/{emu.subscription_id}/resourceGroups/{RG}"
            f"/providers/Microsoft.Compute/virtualMachineScaleSets/{name}"
        )
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {TOKEN}"

    def _call(self, method: str, path: str, body: Any = None) -> requests.Response:
        url = f"{self.base}{path}?api-version={API_VERSION}"
        # verify per request: a session's own ``verify`` loses to REQUESTS_CA_BUNDLE from the environment.
        return self.session.request(method, url, json=body, timeout=60, verify=self.emu.ca_bundle)

    def instance_ids(self) -> list[str]:
        ids: list[str] = []
        url: str | None = f"{self.base}/virtualMachines?api-version={API_VERSION}"
        while url:
            page = self.session.get(url, timeout=60, verify=self.emu.ca_bundle).json()
            ids += [str(vm["instanceId"]) for vm in page["value"]]
            url = page.get("nextLink")
        return ids

    def write_model(self) -> None:
        ext = self._call("GET", "/extensions/CustomScript").json()
        ext["properties"]["settings"]["fileUris"] = ["https://releases.invalid/install_nginx.v1.sh"]
        self._call("PUT", "/extensions/CustomScript", {"properties": ext["properties"]})

    def up_to_date(self, instance_id: str) -> bool | None:
        """Whether the instance is up: provisioning and the extension succeeded (the emulator marks an
        instance Updating when its upgrade is accepted). None: throttled, not known."""
        answer = self._call("GET", f"/virtualMachines/{instance_id}/instanceView")
        if answer.status_code == 429:
            return None
        view = answer.json()
        codes = [str(s.get("code", "")) for s in view.get("statuses", [])]
        ext: dict[str, Any] = next((e for e in view.get("extensions", []) if e.get("name") == "CustomScript"), {})
        ext_codes = [str(s.get("code", "")) for s in ext.get("statuses", [])]
        return "ProvisioningState/succeeded" in codes and any(c.endswith("/succeeded") for c in ext_codes)

    def upgrade(self, instance_id: str) -> bool:
        return self._call("POST", "/manualupgrade", {"instanceIds": [instance_id]}).status_code != 429

    def run(self, *, max_seconds: float = 900.0) -> tuple[int, bool, int]:
        """The rollout, for at most ``max_seconds``: (read rounds, finished, instances upgraded)."""
        deadline = time.monotonic() + max_seconds
        ids = self.instance_ids()
        size = max(1, math.ceil(len(ids) * BATCH_PERCENT / 100))
        batches = [ids[:1]] + [ids[i : i + size] for i in range(1, len(ids), size)]
        self.write_model()
        rounds = upgraded = 0
        for batch in batches:
            pending = list(batch)
            unsent = list(batch)
            while pending:
                if time.monotonic() > deadline:
                    return rounds, False, upgraded
                sent = [i for i in unsent if self.upgrade(i)]
                upgraded += len(sent)
                unsent = [i for i in unsent if i not in sent]
                time.sleep(0.2)
                rounds += 1
                pending = [i for i in pending if i in unsent or not self.up_to_date(i)]
        return rounds, True, upgraded


def run_naive(emu: Emulator, instances: int, name: str, *, budgets: bool, max_seconds: float = 900.0) -> NaiveRun:
    emu.budgets(budgets)
    emu.create(name, instances, "https://releases.invalid/install_nginx.sh")
    emu.admin("DELETE", "requests")
    started = time.monotonic()
    try:
        rounds, finished, upgraded = NaiveController(emu, name).run(max_seconds=max_seconds)
        seconds = time.monotonic() - started
        emu.admin("POST", "idle", {"timeout": 60})
        by_op, throttled = emu.requests_by_operation()
    finally:
        emu.delete(name)
        emu.budgets(True)
    return NaiveRun(instances, rounds, seconds, dict(by_op), dict(throttled), finished, upgraded)


# --------------------------------------------------------------------------------------------------
# The report


@dataclass
class Figures:
    cold: list[ColdStart]
    runs: list[ControllerRun]
    naive: list[NaiveRun]
    naive_budgeted: NaiveRun | None
    naive_budget_seconds: float
    cold_runs: int
    page_size: int
    load: tuple[float, float, float]
    seconds: float = 0.0
    makespans: list[Any] = field(default_factory=list)  # bench.makespan.Makespan, per size
    rollbacks: list[Any] = field(default_factory=list)  # bench.makespan.Rollback, per failure mode
    start: Any = None  # bench.startlatency.StartLatency


def measure_all(
    sizes: list[int],
    cold_runs: int,
    naive_budget_seconds: float = 60.0,
    say: Callable[[str], None] = print,
    *,
    makespan_sizes: list[int] | None = None,
    start_runs: int = 20,
    look_delay: float | None = None,
) -> Figures:
    from bench.makespan import measure_makespan, measure_rollback
    from bench.startlatency import measure_start
    from emulator.azurite import run_azurite

    load = os.getloadavg()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-perf-") as tmp, run_azurite() as azurite:
        storage = azurite.connection_string
        say(f"cold start: {cold_runs} fresh interpreters each")
        cold = [
            median_of("azure.functions", ("azure.functions",), cold_runs),
            median_of("azure.functions + azure.data.tables", ("azure.functions", "azure.data.tables"), cold_runs),
            median_of(
                "azure.functions + azure.data.tables + the blob SDK-type binding extension",
                ("azure.functions", "azure.data.tables", "azurefunctions.extensions.bindings.blob"),
                cold_runs,
            ),
            median_of("function_app", ("function_app",), cold_runs, serve=True, env=app_env(storage)),
        ]
        for c in cold:
            say(f"  {c.label}: {c.import_s * 1000:.0f} ms, {c.rss_mib:.0f} MiB")
        with emulator_process(Path(tmp) / "arm", address_base="127.0.70.1", instance_port=8080) as emu:
            page_size = int(emu.admin("GET", "settings")["page_size"])
            runs: list[ControllerRun] = []
            naive: list[NaiveRun] = []
            for size in sizes:
                say(f"{size} instances: the product's controller")
                run = run_controller(emu, storage, size, f"product-{size}")
                say(f"  {run.phase}, {run.ticks} ticks, ARM {dict(sorted(run.by_operation.items()))}")
                runs.append(run)
                say(f"{size} instances: the naive controller (no budgets)")
                naive.append(run_naive(emu, size, f"naive-{size}", budgets=False))
                say(f"  {naive[-1].rounds} rounds, ARM {dict(sorted(naive[-1].by_operation.items()))}")
            say(f"{sizes[-1]} instances: the naive controller under the budgets, {naive_budget_seconds:g} s at most")
            budgeted = run_naive(
                emu, sizes[-1], f"naive-budgets-{sizes[-1]}", budgets=True, max_seconds=naive_budget_seconds
            )
            small = min(sizes)
            say(f"{small} instances: start latency, {start_runs} uploads")
            start = measure_start(emu, storage, small, start_runs)
            say(f"  median {start.median_s:.2f} s")
        # The makespan and the rollback on the shared clock (bench/clockdriver.py): an emulator of their own,
        # whose clock skips idle time (the benchmarks above run on real time).
        makespans: list[Any] = []
        rollbacks: list[Any] = []
        with emulator_process(
            Path(tmp) / "arm-clock", address_base="127.0.80.1", instance_port=8080, skip_clock=True
        ) as emu:
            for size in sizes if makespan_sizes is None else makespan_sizes:
                say(f"{size} instances: makespan against its lower bound, timer only (shared clock)")
                makespans.append(measure_makespan(emu, storage, size, look_delay=look_delay))
                m = makespans[-1]
                say(f"  {m.makespan_s:.1f} s, {m.ratio:.3f} × the lower bound, {m.wall_s:.1f} s of wall time")
                if m.next_look_supported:
                    say(f"{size} instances: makespan, next looks honoured")
                    makespans.append(measure_makespan(emu, storage, size, honour_next_look=True, look_delay=look_delay))
                    m = makespans[-1]
                    say(f"  {m.makespan_s:.1f} s, {m.ratio:.3f} × the lower bound, {m.next_look_ticks} next looks")
            honour = any(m.next_look_supported for m in makespans)
            for mode in ("extension", "http500"):
                say(f"{small} instances: rollback latency, the release fails by {mode}")
                rollbacks.append(
                    measure_rollback(emu, storage, small, mode=mode, honour_next_look=honour, look_delay=look_delay)
                )
                say(f"  {rollbacks[-1].phase}, {rollbacks[-1].to_baseline_s} s to the baseline")
    return Figures(
        cold,
        runs,
        naive,
        budgeted,
        naive_budget_seconds,
        cold_runs,
        page_size,
        load,
        time.monotonic() - started,
        makespans,
        rollbacks,
        start,
    )


def measure_tick_cost(size: int, say: Callable[[str], None] = print) -> ControllerRun:
    """The tick cost alone: the product's rollout of ``size`` instances, as ``measure_all`` runs it at its
    largest size (Azurite, the emulator in its own process with its budgets, the controller in another)."""
    from emulator.azurite import run_azurite

    with (
        tempfile.TemporaryDirectory(prefix="bench-perf-") as tmp,
        run_azurite() as azurite,
        emulator_process(Path(tmp) / "arm", address_base="127.0.70.1", instance_port=8080) as emu,
    ):
        say(f"{size} instances: the product's controller")
        run = run_controller(emu, azurite.connection_string, size, f"product-{size}")
        say(f"  {run.phase}, {run.ticks} ticks, ARM {dict(sorted(run.by_operation.items()))}")
        return run


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def report_lines(f: Figures, command: str) -> list[str]:
    base = f.cold[1]
    app = f.cold[-1]
    blob = f.cold[2]
    lines = [
        "# Performance",
        "",
        f"Written by `{command}` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC in {f.seconds:.0f} s; {platform.machine()}, "
        f"Python {platform.python_version()}, {os.cpu_count()} cores. Load average when it started: "
        f"{f.load[0]:.1f} / {f.load[1]:.1f} / {f.load[2]:.1f}"
        + (" (the machine was shared with other work: figures were taken under load)." if f.load[0] > 1 else "."),
        "How it measures: bench/perf.py (its docstring). The raw figures: [performance.json](performance.json) "
        "(its keys: bench/plots.py); the plots (at the end) are rendered from it by bench/plots.py "
        "(`python -m bench.plots` renders them again without measuring).",
        "",
        "## Cold start",
        "",
        f"Fresh interpreters, median of {f.cold_runs} each: wall time of the import and the "
        "process's peak resident memory (VmHWM) after it. The function app's row also serves its first "
        "`GET /api/rollouts` through the function object (Azurite; ARM unreachable).",
        "",
        "| import | time | × functions + tables | peak memory | × functions + tables |",
        "|---|---:|---:|---:|---:|",
    ]
    for c in f.cold:
        lines.append(
            f"| {c.label} | {_ms(c.import_s)} | {c.import_s / base.import_s:.2f} | {c.rss_mib:.0f} MiB "
            f"| {c.rss_mib / base.rss_mib:.2f} |"
        )
    if app.serve_s is not None and app.serve_rss_mib is not None:
        lines.append(
            f"| function_app, then the first GET /api/rollouts | {_ms(app.import_s + app.serve_s)} "
            f"({_ms(app.serve_s)} serving) | {(app.import_s + app.serve_s) / base.import_s:.2f} "
            f"| {app.serve_rss_mib:.0f} MiB | {app.serve_rss_mib / base.rss_mib:.2f} |"
        )
    ratio = app.import_s / base.import_s
    blob_share = blob.import_s - base.import_s
    lines += [
        "",
        f"Target: at most 1.3 × `azure.functions` + `azure.data.tables`. Measured: {ratio:.2f} × in time, "
        f"{app.rss_mib / base.rss_mib:.2f} × in memory: **{'met' if ratio <= 1.3 else 'missed'}**. "
        f"Loaded by the function app on this path: {', '.join(app.loaded)}; not loaded: the compute, network and "
        "monitor SDKs and scipy (the test tests/integration/test_cold_start.py checks it).",
        "",
        f"The blob trigger's SDK-type binding (`import azurefunctions.extensions.bindings.blob`) costs "
        f"{_ms(blob_share)} and {blob.rss_mib - base.rss_mib:.0f} MiB of that on its own: it imports "
        "`azure.storage.blob` and `azure.identity` when imported. It cannot be deferred while the trigger binds "
        "to `blob.BlobClient`: the Functions Python guide has the extension imported in `function_app.py` so "
        "that the worker recognizes the SDK type of the trigger's parameter at indexing (MicrosoftDocs/azure-docs "
        'articles/azure-functions/functions-reference-python.md, "SDK type bindings (Preview)": "Import the '
        'library"). Avoiding it means binding the trigger to `func.InputStream` (the worker downloads the blob '
        "before the function runs) and building the BlobClient in the app; the remaining gap after the "
        f"extension is {_ms(app.import_s - blob.import_s)} (the app's own modules, `azure.storage.queue`, PyYAML).",
        "",
        "## ARM requests per rollout",
        "",
        f"Policy: no bake, batches of {BATCH_PERCENT}% (canary first), at most {BATCH_PERCENT}% unavailable; "
        f"upgrades take {UPGRADE_SECONDS:g} s in the emulator; VM and NIC lists come {f.page_size} to a page; "
        f"the controller ticks again {TICK_GAP_S:g} s after a tick ends. The emulator's budgets are on for the "
        f"product: reads {READ_LIMIT[0]} refilled {READ_LIMIT[1]} a second per subscription, writes "
        f"{WRITE_LIMIT[0]} refilled {WRITE_LIMIT[1]} a minute per scale set.",
        "",
        "Reads per look: the scale set GET and the list pages of one look at the fleet (each tick looks once, "
        "`start_release` twice). Batches: after the canary. Writes: model writes and upgrades (manualupgrade).",
        "",
        "| instances | controller | result | ticks / rounds | looks | reads per look (1 + 2 × pages) | reads "
        "| writes | batches | 2 + batches | 429s | requests by operation |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for run, naive in zip(f.runs, f.naive, strict=True):
        pages = math.ceil(run.instances / f.page_size)
        ops = ", ".join(f"{op} {n}" for op, n in sorted(run.by_operation.items()))
        lines.append(
            f"| {run.instances:,} | product | {run.phase} | {run.ticks} | {run.observations} "
            f"| {run.reads_per_observation:.1f} ({1 + 2 * pages}) | {run.reads} | {run.writes} | {run.batches} "
            f"| {2 + run.batches} | {sum(run.throttled.values())} | {ops} |"
        )
        nops = ", ".join(f"{op} {n}" for op, n in sorted(naive.by_operation.items()))
        lines.append(
            f"| {naive.instances:,} | naive, no budgets | {'done' if naive.finished else 'unfinished'} "
            f"| {naive.rounds} | - | {naive.reads / max(1, naive.rounds):.1f} per round | {naive.reads} "
            f"| {naive.writes} | - | - | {sum(naive.throttled.values())} | {nops} |"
        )
    if f.naive_budgeted is not None:
        nb = f.naive_budgeted
        lines += [
            "",
            f"The naive controller at {nb.instances:,} instances under the product's budgets, stopped after "
            f"{f.naive_budget_seconds:g} s: {'finished' if nb.finished else 'unfinished'}, {nb.upgraded:,} of "
            f"{nb.instances:,} upgrades accepted, {sum(nb.throttled.values()):,} of {sum(nb.by_operation.values()):,} "
            f"requests answered 429 ({', '.join(f'{op} {n:,}' for op, n in sorted(nb.throttled.items())) or 'none'}).",
        ]
        if nb.instances + 1 > WRITE_LIMIT[0]:
            lines[-1] += (
                f" With {WRITE_LIMIT[1]} writes a minute after the first {WRITE_LIMIT[0]}, one upgrade call per "
                f"instance needs about {(nb.instances + 1 - WRITE_LIMIT[0]) / WRITE_LIMIT[1]:.0f} minutes at this size."
            )
    big = f.runs[-1]
    zero_429 = sum(big.throttled.values()) == 0
    lines += [
        "",
        "Targets: reads per tick grow with the list pages, not with the instances; writes per rollout = 2 + "
        f"batches; zero 429s at {big.instances:,} instances. Measured: "
        + "; ".join(
            f"{r.instances:,} instances: {r.reads_per_observation:.1f} reads per look "
            f"({1 + 2 * math.ceil(r.instances / f.page_size)} = 1 + 2 × pages), {r.writes} writes for {r.batches} "
            f"batches ({'= 2 + batches' if r.writes == 2 + r.batches else 'not 2 + batches'}), "
            f"{sum(r.throttled.values())} 429s"
            for r in f.runs
        )
        + f" ({'zero 429s: met' if zero_429 else '429s: missed'}).",
        "",
    ]
    lines += tick_cost_lines(big)
    from bench import makespan, startlatency

    if f.makespans or f.rollbacks:
        lines += makespan.report_lines(f.makespans, f.rollbacks)
    if f.start is not None:
        lines += startlatency.report_lines(f.start)
    return lines


def tick_cost_lines(big: ControllerRun) -> list[str]:
    """The "Tick cost" section, from the largest size's controller run."""
    return [
        f"## Tick cost at {big.instances:,} instances",
        "",
        "The controller process alone (the emulator, its instances and Azurite are other processes), over "
        f"loopback, the {big.ticks} ticks of the rollout above; the probes are HTTP GETs to every instance.",
        "",
        "| figure | median | slowest | target |",
        "|---|---:|---:|---|",
        f"| wall time of a tick | {_ms(statistics.median(big.tick_wall_s))} | {_ms(max(big.tick_wall_s))} "
        "| under 1 s |",
        f"| CPU time of a tick (all threads) | {_ms(statistics.median(big.tick_cpu_s))} "
        f"| {_ms(max(big.tick_cpu_s))} | - |",
        f"| of the wall time: the fleet read (scale set GET, VM and NIC list pages) | "
        f"{_ms(statistics.median(big.tick_observe_s))} | {_ms(max(big.tick_observe_s))} | - |",
        f"| of the wall time: the probes of every instance | {_ms(statistics.median(big.tick_probe_s))} "
        f"| {_ms(max(big.tick_probe_s))} | - |",
        f"| peak resident memory of the controller process | {big.peak_rss_mib:.0f} MiB | | under 150 MB |",
        f"| peak thread count of the controller process | {big.peak_threads} | | not one per instance |",
        "",
    ]


COLD_RUNS_DEFAULT = 7
KEPT = "## Notes (written by hand"  # this section and what follows it are kept when the figures are written again


def main(argv: list[str] | None = None) -> int:
    given = list(sys.argv[1:] if argv is None else argv)
    if given[:1] == ["controller"]:
        print(json.dumps(_controller_child(json.loads(given[1]))))
        return 0
    parser = argparse.ArgumentParser(prog="python -m bench.perf")
    parser.add_argument("--sizes", default="10,100,1000", help="fleet sizes (the last one: the tick cost)")
    parser.add_argument("--cold-runs", type=int, default=COLD_RUNS_DEFAULT)
    parser.add_argument("--naive-budget-seconds", type=float, default=60.0)
    parser.add_argument("--makespan-sizes", default=None, help="fleet sizes of the makespan runs (default: --sizes)")
    parser.add_argument("--start-runs", type=int, default=20, help="uploads timed for the start latency (median)")
    parser.add_argument(
        "--look-delay",
        type=float,
        default=None,
        help="seconds a next look's queue message is picked up late (default: host.json's maxPollingInterval, else 0)",
    )
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/performance.md alone")
    parser.add_argument(
        "--tick-cost-only",
        action="store_true",
        help="only the tick cost at the last of --sizes (one rollout of the product's controller); print only",
    )
    args = parser.parse_args(given)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    if args.tick_cost_only:
        run = measure_tick_cost(sizes[-1])
        print("\n".join(tick_cost_lines(run)))
        print(
            "per tick (wall / CPU / fleet read / probes, ms): "
            + ", ".join(
                f"{w * 1000:.0f}/{c * 1000:.0f}/{o * 1000:.0f}/{p * 1000:.0f}"
                for w, c, o, p in zip(
                    run.tick_wall_s, run.tick_cpu_s, run.tick_observe_s, run.tick_probe_s, strict=True
                )
            )
        )
        return 0
    makespan_sizes = None if args.makespan_sizes is None else [int(s) for s in args.makespan_sizes.split(",") if s]
    figures = measure_all(
        sizes,
        args.cold_runs,
        args.naive_budget_seconds,
        makespan_sizes=makespan_sizes,
        start_runs=args.start_runs,
        look_delay=args.look_delay,
    )
    from bench import plots

    lines = report_lines(figures, "make bench") + plots.report_lines()
    print("\n".join(lines))
    if not args.no_write:
        kept = ""
        if DOCS.exists():  # the hand-written notes at the end survive a new run
            text = DOCS.read_text()
            kept = text[text.index(KEPT) :] if KEPT in text else ""
        DOCS.write_text("\n".join(lines) + ("\n" + kept if kept else ""))
        print(f"written to {DOCS}")
        for path in plots.write_all(figures, DOCS.parent, "make bench"):
            print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
