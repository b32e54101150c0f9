"""A release crossing the waves of a large fleet through the function app (``make bench-waves``).

N synthetic scale sets (``emulator/synthetic.py``: each instance a tiny HTTP server, no nginx) in W waves of
one group, declared in a targets document (``TARGETS_CONFIG``), driven through the product's own code path:

* the ARM emulator over HTTPS in **its own process** (``python -m emulator serve``), with its subscription
  read bucket (``--read-limit``, ARM's 250 reads refilled 25 a second) and its per-scale-set write budget
  (12 model/upgrade writes, 4 a minute) on;
* Azurite for the state tables, the release container and the tick queue;
* the local Functions host (``emulator.funchost``) running ``function_app.py``: the blob trigger receives the
  release (the group starts wave 1), the timer ``advance_rollouts`` on its real NCRONTAB schedule fans out
  (``fanout_from_environment().fan_out()``) and moves the waves, and the queue trigger ``advance_target``
  ticks one target per message, with the host's concurrent queue consumers (host.json: batchSize 16,
  newBatchThreshold 8: up to 24 at once in one host instance).

The product runs on the wall clock; the benchmark makes its times short instead (upgrade seconds, bakes).

What it measures, without changing what runs (it only observes): per timer run, the targets with work and
how many were ticked within one tick interval of the timer firing (the queue trigger's own log line at the
end of each tick, matched to the message it decoded), the latency from timer to tick end; ARM requests by
operation with their 429s (from the emulator's request log); the time to cross each wave (from the
targets' rollouts); the state-store requests (Azure Tables over HTTP) each tick made.

``tests/integration/test_fleet_waves.py`` runs a small fleet through the same function and asserts the
properties; ``make bench-waves`` runs the large one and writes docs/fleet-benchmark.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import platform
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.armprocess import ArmProcess, arm_process

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs" / "fleet-benchmark.md"
TOKEN = "bench-waves-token"
GROUP = "fleet"
V0 = b"#!/bin/bash\necho v0\n"
V1 = b"#!/bin/bash\necho v1\n"
FINDINGS = "## Findings"


@dataclass(frozen=True)
class WavesConfig:
    scale_sets: int = 200
    instances: int = 20
    waves: int = 4
    tick_seconds: int = 30  # ROLLOUT_TICK_SCHEDULE "*/<tick> * * * * *" (the default is every 30 s)
    read_burst: int = 100  # TICK_READ_BURST (the app's default)
    read_rate: float = 20.0  # TICK_READ_RATE (the app's default)
    arm_read_limit: tuple[float, float] = (250.0, 25.0)  # the emulator's subscription read bucket (ARM's)
    write_throttle: bool = True  # the emulator's per-scale-set write bucket (12, 4 a minute)
    upgrade_seconds: float = 2.0  # how long an instance takes to apply a model in the emulator
    bake_seconds: int = 0  # BAKE_SECONDS: the canary's bake
    wave_bake_seconds: int = 0  # the group's waveBakeSeconds
    batch_percent: int = 50  # BATCH_PERCENT
    max_unavailable: str = "50%"  # MAX_UNAVAILABLE
    address_base: str = "127.0.64.1"  # the instances' loopback addresses start here
    timeout_s: float = 3600.0  # give up on the release after this long
    max_polling_interval_s: float = 2.0  # the host's queue polling backoff cap (local development's default)


# --------------------------------------------------------------------------------------------------
# What the run observed


@dataclass
class TimerRun:
    fired_at: datetime  # the timer invocation's start
    ended_at: datetime
    enqueued: list[tuple[str, int]]  # (target key, visibility delay) of the fan-out
    idle: int
    fanout_started: datetime
    fanout_ended: datetime


@dataclass(frozen=True)
class Tick:
    target: str
    enqueued_at: datetime
    started_at: datetime
    ended_at: datetime
    status: str  # the outcome's status, or "error" (a PortError, logged by advance_target)
    table_requests: int
    table_writes: int
    look: bool = False  # the engine's own next look (rollout.cadence), not a message of a timer run


@dataclass
class PeriodFigures:
    fired_at: datetime
    with_work: int
    ticked: int
    in_time: int
    latencies: list[float]  # seconds from the timer firing to the end of each tick of this run
    spread_s: int
    timer_seconds: float = math.nan  # how long the timer invocation ran (fan-out, then the groups' advance)

    @property
    def missing(self) -> int:
        return self.with_work - self.ticked


@dataclass
class WavesReport:
    config: WavesConfig
    phase: str
    started_at: datetime  # the release blob uploaded
    ended_at: datetime | None
    wave_seconds: list[tuple[float, float]]  # per wave: (start, end) seconds since the upload
    periods: list[PeriodFigures]
    ticks: list[Tick]
    arm_by_operation: Counter[str]
    arm_429_by_operation: Counter[str]
    reads_throttled: int
    timer_skipped: int
    setup_seconds: float
    wall_seconds: float
    unmatched_ticks: int = 0
    look_ticks: int = 0  # ticks of the engine's own next looks (delayed messages, not of a timer run)
    blob_seconds: float = math.nan  # the blob trigger's run: receiving the release and starting wave 1
    notes: list[str] = field(default_factory=list)

    @property
    def total_seconds(self) -> float | None:
        return None if self.ended_at is None else (self.ended_at - self.started_at).total_seconds()

    @property
    def read_429s(self) -> int:
        return sum(n for op, n in self.arm_429_by_operation.items() if op.startswith("GET"))

    @property
    def write_429s(self) -> int:
        return sum(n for op, n in self.arm_429_by_operation.items() if not op.startswith("GET"))

    @property
    def late_periods(self) -> list[PeriodFigures]:
        """Timer runs where a target with work was not ticked within one interval."""
        return [p for p in self.periods if p.in_time < p.with_work]

    @property
    def all_in_time(self) -> bool:
        """Every target with work ticked within one interval of every firing: no run late, and no firing
        skipped (a skipped firing enqueues nothing: the targets with work then wait a whole period more)."""
        return not self.late_periods and self.timer_skipped == 0


# --------------------------------------------------------------------------------------------------
# Observation hooks: they wrap, never replace, what the app does


class _Observer:
    """Records fan-outs, ticks (the queue trigger's log line, matched to the message it decoded on the same
    thread) and the Azure Tables requests each tick made (counted in the HTTP transport per thread)."""

    def __init__(self, table_endpoint: str) -> None:
        self.table_endpoint = table_endpoint
        self.lock = threading.Lock()
        self.fanouts: list[tuple[datetime, datetime, Any]] = []
        self.ticks: list[Tick] = []
        self.local = threading.local()

    # the Tables requests of the current thread
    def on_request(self, method: str, url: str) -> None:
        if url.startswith(self.table_endpoint):
            self.local.requests = getattr(self.local, "requests", 0) + 1
            if method in ("POST", "PUT", "PATCH", "MERGE", "DELETE"):
                self.local.writes = getattr(self.local, "writes", 0) + 1

    def on_decoded(self, message: Any) -> None:
        self.local.message = message
        self.local.started = datetime.now(UTC)
        self.local.requests = 0
        self.local.writes = 0

    def on_log(self, record: logging.LogRecord) -> None:
        if not isinstance(record.msg, str) or not record.msg.startswith("advance_target %s:"):
            return
        message = getattr(self.local, "message", None)
        if message is None:
            return
        # "advance_target %s: %s %s%s": target, status, message, and the next look it asked for (or "").
        status = str(record.args[1]) if isinstance(record.args, tuple) and len(record.args) >= 3 else "error"
        tick = Tick(
            target=message.target,
            enqueued_at=message.enqueued_at,
            started_at=self.local.started,
            ended_at=datetime.fromtimestamp(record.created, UTC),
            status=status,
            table_requests=self.local.requests,
            table_writes=self.local.writes,
            look=getattr(message, "look", None) is not None,
        )
        self.local.message = None
        with self.lock:
            self.ticks.append(tick)


class _LogTap(logging.Handler):
    def __init__(self, observer: _Observer) -> None:
        super().__init__(logging.INFO)
        self.observer = observer

    def emit(self, record: logging.LogRecord) -> None:
        self.observer.on_log(record)


@contextlib.contextmanager
def _observing(observer: _Observer) -> Iterator[None]:
    from azure.core.pipeline.transport import RequestsTransport

    import function_app
    from rollout.fanout import Fanout

    original_send = RequestsTransport.send
    original_fan_out = Fanout.fan_out
    original_decode = getattr(function_app, "decode_tick")  # noqa: B009 - imported there, not exported

    def send(self: Any, request: Any, **kwargs: Any) -> Any:
        observer.on_request(str(request.method).upper(), str(request.url))
        return original_send(self, request, **kwargs)

    def fan_out(self: Fanout) -> Any:
        started = datetime.now(UTC)
        result = original_fan_out(self)
        with observer.lock:
            observer.fanouts.append((started, datetime.now(UTC), result))
        return result

    def decode(body: bytes | str) -> Any:
        message = original_decode(body)
        observer.on_decoded(message)
        return message

    logger = logging.getLogger("function_app")
    tap = _LogTap(observer)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(tap)
    setattr(RequestsTransport, "send", send)  # noqa: B010 - wrapped for the count, restored below
    setattr(Fanout, "fan_out", fan_out)  # noqa: B010
    setattr(function_app, "decode_tick", decode)  # noqa: B010
    try:
        yield
    finally:
        setattr(RequestsTransport, "send", original_send)  # noqa: B010
        setattr(Fanout, "fan_out", original_fan_out)  # noqa: B010
        setattr(function_app, "decode_tick", original_decode)  # noqa: B010
        logger.removeHandler(tap)
        logger.setLevel(old_level)


# --------------------------------------------------------------------------------------------------
# The parts: the emulator process, scale sets, the targets document, the app's settings


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def _emulator_process(config: WavesConfig, state_dir: Path, instance_port: int) -> Iterator[ArmProcess]:
    size, rate = config.arm_read_limit
    args = [
        *("--address-base", config.address_base, "--instance-port", str(instance_port)),
        *("--upgrade-seconds", str(config.upgrade_seconds), "--retry-after", "0.5"),
        *("--read-limit", f"{size:g}/{rate:g}"),
        *(() if config.write_throttle else ("--no-throttle",)),
    ]
    # ``python -m emulator serve`` itself, started under the benchmark's name (``serve-arm`` below).
    with arm_process(("bench.waves", "serve-arm"), args, state_dir, TOKEN) as (process, info):
        yield ArmProcess(process, info["url"], info["ca_bundle"], info["subscription_id"], TOKEN)


def _targets_document(names: list[tuple[str, str]], waves: int, wave_bake_seconds: int) -> dict[str, Any]:
    """One group, ``waves`` waves of (nearly) equal size, in the order given."""
    per_wave = math.ceil(len(names) / waves)
    return {
        "groups": [
            {
                "name": GROUP,
                "waveBakeSeconds": wave_bake_seconds,
                "waves": [
                    {"targets": [{"resourceGroup": rg, "name": name} for rg, name in names[i : i + per_wave]]}
                    for i in range(0, len(names), per_wave)
                ],
            }
        ]
    }


def _app_env(config: WavesConfig, emu: ArmProcess, storage: str, first: tuple[str, str], port: int) -> dict[str, str]:
    return {
        "AZURE_SUBSCRIPTION_ID": emu.subscription_id,
        "VMSS_RESOURCE_GROUP": first[0],
        "VMSS_NAME": first[1],
        "ARM_ENDPOINT": emu.url,
        "ARM_CA_BUNDLE": emu.ca_bundle,
        "ARM_TOKEN": TOKEN,
        "ReleaseStorage": storage,
        "StateStorage": storage,
        "RELEASE_CONTAINER": "releases",
        "STATE_TABLE_PREFIX": "waves",
        "TickQueue": storage,
        "TICK_QUEUE": "ticks",
        "TARGETS_CONFIG": "targets.json",
        "ROLLOUT_TICK_SCHEDULE": f"*/{config.tick_seconds} * * * * *",
        "TICK_READ_BURST": str(config.read_burst),
        "TICK_READ_RATE": f"{config.read_rate:g}",
        "PROBE_PORT": str(port),
        "PROBE_TIMEOUT_SECONDS": "2",
        "BAKE_SECONDS": str(config.bake_seconds),
        "BATCH_PERCENT": str(config.batch_percent),
        "MAX_UNAVAILABLE": config.max_unavailable,
        "HTTP_AUTH": "function-key",
    }


@contextlib.contextmanager
def _environment(env: dict[str, str]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


# --------------------------------------------------------------------------------------------------
# The run


def run_waves(config: WavesConfig, progress: Callable[[str], None] = lambda text: None) -> WavesReport:
    """Create the fleet, release v1 to its group through the function app and wait until the release ends."""
    from emulator.azurite import run_azurite

    wall = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-waves-") as tmp, run_azurite() as azurite:
        port = _free_port(config.address_base)
        with _emulator_process(config, Path(tmp) / "arm", port) as emu:
            return _run(config, emu, azurite, port, Path(tmp), wall, progress)


def _run(
    config: WavesConfig, emu: ArmProcess, azurite: Any, port: int, tmp: Path, wall: float, say: Callable[[str], None]
) -> WavesReport:
    import function_app
    from emulator.funchost import LocalFunctionsHost, QueueOptions
    from rollout.adapters.blobs import ReleaseBlobs
    from rollout.bootstrap import fleet_from_environment
    from rollout.model import Phase

    storage = azurite.connection_string
    blobs = ReleaseBlobs.from_connection_string(storage, container="releases")
    blobs.ensure_container()
    v0_url = blobs.upload("install_nginx.sh", V0)
    extension = {"settings": {"fileUris": [v0_url], "commandToExecute": "bash install_nginx.sh"}}
    names = [(f"bench-rg-{i // 50:02d}", f"vmss-{i:03d}") for i in range(config.scale_sets)]
    say(f"creating {config.scale_sets} scale sets of {config.instances} synthetic instances")
    for rg, name in names:
        emu.admin(
            "POST",
            "scalesets",
            {"resource_group": rg, "name": name, "instances": config.instances, "extension": extension},
        )
    document = _targets_document(names, config.waves, config.wave_bake_seconds)
    blobs.upload("targets.json", json.dumps(document).encode())
    env = _app_env(config, emu, storage, names[0], port)
    observer = _Observer(azurite.table_endpoint)
    functions = ["release_uploaded", "advance_rollouts", "advance_target"]
    queue_options = QueueOptions.from_host_json(REPO, max_polling_interval_seconds=config.max_polling_interval_s)
    with _environment(env), _observing(observer):
        fleet = fleet_from_environment()
        if fleet.problems:
            raise RuntimeError(f"the targets document does not load: {fleet.problems}")
        wave_of = {t.key: w for w, wave in enumerate(document["groups"][0]["waves"]) for t in _keys(wave, fleet)}
        emu.admin("DELETE", "requests")
        setup_seconds = time.monotonic() - wall
        with LocalFunctionsHost(
            function_app.app, env=env, http_port=0, state_dir=tmp / "host", functions=functions,
            queue_options=queue_options,
        ) as host:  # fmt: skip
            started_at = datetime.now(UTC)
            blobs.upload(f"{GROUP}/install_nginx.v1.sh", V1)
            say(f"released v1 to group {GROUP!r} at {started_at:%H:%M:%S}; waiting for the waves")
            phase, ended_at = "none", None
            deadline = time.monotonic() + config.timeout_s
            last = ""
            while time.monotonic() < deadline:
                if emu.process.poll() is not None:
                    raise RuntimeError(f"the ARM emulator process ended (exit code {emu.process.returncode})")
                releases = fleet_from_environment().groups.list()
                if releases:
                    record = releases[0]
                    phase = record.phase.value
                    status = f"{phase}, wave {record.wave + 1} of {record.wave_count}"
                    if status != last:
                        say(f"  {datetime.now(UTC):%H:%M:%S} {status}")
                        last = status
                    if record.phase.is_terminal:
                        ended_at = datetime.now(UTC)
                        break
                time.sleep(1.0)
            invocations = host.invocations
        blobs.close()
        # The waves' times, from each target's rollout of the release.
        waves: dict[int, list[tuple[datetime, datetime | None]]] = {}
        for key, wave in wave_of.items():
            _claim, rollouts = fleet.service(key).list()
            mine = [r for r in rollouts if r.release.version == 1]
            if mine:
                r = mine[0]
                waves.setdefault(wave, []).append((r.created_at, r.phase_since if r.phase is Phase.SUCCEEDED else None))
        if ended_at is not None:
            final = [r for r in fleet_from_environment().groups.list() if r.phase.is_terminal]
            if final:
                ended_at = final[0].updated_at
    wave_seconds = []
    for wave in sorted(waves):
        begun = min(s for s, _ in waves[wave])
        ends = [e for _, e in waves[wave]]
        end = max(e for e in ends if e is not None) if all(e is not None for e in ends) else None
        wave_seconds.append(
            ((begun - started_at).total_seconds(), math.nan if end is None else (end - started_at).total_seconds())
        )
    by_op, throttled = emu.requests_by_operation()
    settings = emu.admin("GET", "settings")
    timers = sorted(
        (i for i in invocations if i.function == "advance_rollouts" and i.outcome != "skipped"),
        key=lambda i: i.started_at,
    )
    skipped = sum(1 for i in invocations if i.function == "advance_rollouts" and i.outcome == "skipped")
    periods, unmatched = _periods(config, timers, observer)
    return WavesReport(
        config=config,
        phase=phase,
        started_at=started_at,
        ended_at=ended_at,
        wave_seconds=wave_seconds,
        periods=periods,
        ticks=list(observer.ticks),
        arm_by_operation=by_op,
        arm_429_by_operation=throttled,
        reads_throttled=int(settings.get("reads_throttled", 0)),
        timer_skipped=skipped,
        setup_seconds=setup_seconds,
        wall_seconds=time.monotonic() - wall,
        unmatched_ticks=unmatched,
        look_ticks=sum(1 for t in observer.ticks if t.look),
        blob_seconds=max((i.duration_s for i in invocations if i.function == "release_uploaded"), default=math.nan),
    )


def _keys(wave: dict[str, Any], fleet: Any) -> list[Any]:
    wanted = {(t["resourceGroup"], t["name"]) for t in wave["targets"]}
    return [t for t in fleet.config.targets() if (t.ref.resource_group, t.ref.name) in wanted]


def _periods(config: WavesConfig, timers: list[Any], observer: _Observer) -> tuple[list[PeriodFigures], int]:
    """Per timer run with a fan-out: its targets with work, and the ticks of its messages (matched by the
    message's ``enqueuedAt``, which the fan-out stamps once per run)."""
    interval = timedelta(seconds=config.tick_seconds)
    runs: list[TimerRun] = []
    durations: dict[datetime, float] = {t.started_at: t.duration_s for t in timers}
    for started, ended, result in sorted(observer.fanouts, key=lambda f: f[0]):
        fired = max((t.started_at for t in timers if t.started_at <= started), default=started)
        runs.append(TimerRun(fired, ended, list(result.enqueued), result.idle, started, ended))
    ticks_by_run: dict[int, list[Tick]] = {i: [] for i in range(len(runs))}
    unmatched = 0
    for tick in observer.ticks:
        if tick.look:
            continue  # the engine's own next look: counted apart (look_ticks)
        index = next(
            (i for i, run in enumerate(runs) if run.fanout_started <= tick.enqueued_at <= run.fanout_ended), None
        )
        if index is None:
            unmatched += 1
        else:
            ticks_by_run[index].append(tick)
    periods = []
    for index, run in enumerate(runs):
        ticks = ticks_by_run[index]
        advanced = {t.target: t for t in ticks if t.status != "error"}
        latencies = [(t.ended_at - run.fired_at).total_seconds() for t in advanced.values()]
        in_time = sum(1 for t in advanced.values() if t.ended_at - run.fired_at <= interval)
        periods.append(
            PeriodFigures(
                fired_at=run.fired_at,
                with_work=len(run.enqueued),
                ticked=len(advanced),
                in_time=in_time,
                latencies=latencies,
                spread_s=max((d for _, d in run.enqueued), default=0),
                timer_seconds=durations.get(run.fired_at, math.nan),
            )
        )
    return periods, unmatched


# --------------------------------------------------------------------------------------------------
# The report


def _pct(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def report_lines(report: WavesReport, command: str) -> list[str]:
    c = report.config
    now = datetime.now(UTC)
    active = [p for p in report.periods if p.with_work]
    all_latencies = [x for p in active for x in p.latencies]
    total = report.total_seconds
    lines = [
        "# Fleet benchmark: one release across the waves of a large fleet",
        "",
        f"Written by `{command}` on {now:%Y-%m-%d %H:%M} UTC; {platform.machine()}, Python "
        f"{platform.python_version()}, {os.cpu_count()} cores (the 2-core machine of this project, shared with "
        "other work). Figures from one run.",
        "",
        "## Set-up",
        "",
        f"- {c.scale_sets} scale sets of {c.instances} synthetic instances (`emulator/synthetic.py`, no nginx) in "
        f"{c.waves} waves of one group (`{GROUP}`), declared in a targets document (`TARGETS_CONFIG`); "
        f"wave bake {c.wave_bake_seconds} s; per target: canary 1, bake {c.bake_seconds} s, batches of "
        f"{c.batch_percent}%, max unavailable {c.max_unavailable}; an upgrade takes {c.upgrade_seconds:g} s in the "
        "emulator.",
        "- The ARM emulator over HTTPS in its own process (`python -m emulator serve`), with its subscription "
        f"read bucket {c.arm_read_limit[0]:g} reads refilled {c.arm_read_limit[1]:g}/s (ARM's figures) and "
        + ("its per-scale-set write bucket (12 writes, 4 a minute) on." if c.write_throttle else "no write bucket.")
        + " Azurite for the state tables, the release container and the tick queue.",
        "- The local Functions host (`emulator.funchost`) runs `function_app.py`: the blob trigger receives the "
        "release, the timer `advance_rollouts` fires on its NCRONTAB schedule "
        f"(`*/{c.tick_seconds} * * * * *`: every {c.tick_seconds} s) and fans out "
        "(`fanout_from_environment().fan_out()`), the queue trigger `advance_target` ticks one target per "
        "message with the host's concurrent queue consumers (host.json batchSize 16: up to 24 at once, one "
        f"host instance; polling backoff at most {c.max_polling_interval_s:g} s). "
        f"`TICK_READ_BURST={c.read_burst}`, `TICK_READ_RATE={c.read_rate:g}`. The product runs on the wall clock.",
        "",
        "## Result",
        "",
        f"- The group release ended **{report.phase}**"
        + (f" in **{total:.0f} s** after the release blob was uploaded." if total is not None else "."),
        f"- Timer runs with work: {len(active)}; targets with work per run: "
        f"{min((p.with_work for p in active), default=0)} to {max((p.with_work for p in active), default=0)}. "
        f"Every target with work ticked within one tick interval ({c.tick_seconds} s) of its timer run: "
        f"**{'yes' if report.all_in_time else 'no'}** "
        f"({sum(p.in_time for p in active)} of {sum(p.with_work for p in active)} target ticks of the runs that "
        f"fanned out; {report.timer_skipped} firing(s) skipped).",
        f"- Timer to end of tick, all runs: median {_fmt(_median(all_latencies))}, "
        f"p95 {_fmt(_pct(all_latencies, 0.95))}, max {_fmt(max(all_latencies, default=math.nan))}.",
        f"- Ticks of the engine's own next looks (delayed messages while an upgrade runs or a bake ends, "
        f"`LOOK_INTERVAL_SECONDS`), besides the timer runs' ticks: {report.look_ticks}.",
        f"- ARM 429s: **{report.read_429s}** on subscription reads, **{report.write_429s}** on scale-set writes "
        f"(the emulator's read bucket counted {report.reads_throttled} refused reads).",
        f"- Timer firings skipped because the previous run was still going (the singleton): {report.timer_skipped}. "
        f"The blob trigger (receiving the release and starting wave 1's targets, one after the other) ran "
        f"{_fmt(report.blob_seconds)}.",
        "",
        "### Per wave",
        "",
        "| wave | targets | started (s after upload) | all succeeded (s after upload) | wave took |",
        "|---:|---:|---:|---:|---:|",
    ]
    per_wave = math.ceil(c.scale_sets / c.waves)
    for index, (begun, end) in enumerate(report.wave_seconds):
        count = min(per_wave, c.scale_sets - index * per_wave)
        lines.append(f"| {index + 1} | {count} | {begun:.0f} | {end:.0f} | {end - begun:.0f} s |")
    lines += [
        "",
        "### Per timer run",
        "",
        "Targets with work = the messages the fan-out enqueued (a rollout holds the scale set or waits for it). "
        "Ticked in time = its tick ended within one interval of the timer firing. Latency: timer firing to the "
        "end of the tick (the queue trigger's log line).",
        "",
        "| timer fired (UTC) | timer ran | targets with work | spread | ticked | ticked in time "
        "| latency median | p95 | max |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in active:
        lines.append(
            f"| {p.fired_at:%H:%M:%S} | {_fmt(p.timer_seconds)} | {p.with_work} | {p.spread_s} s | {p.ticked} "
            f"| {p.in_time} "
            f"| {_fmt(_median(p.latencies))} | {_fmt(_pct(p.latencies, 0.95))} "
            f"| {_fmt(max(p.latencies, default=math.nan))} |"
        )
    lines += ["", "### ARM requests by operation", "", "| operation | requests | 429 |", "|---|---:|---:|"]
    for op, count in sorted(report.arm_by_operation.items(), key=lambda kv: (-kv[1], kv[0])):
        lines.append(f"| {op} | {count} | {report.arm_429_by_operation.get(op, 0)} |")
    ticks = [t for t in report.ticks if t.status != "error"]
    requests_per_tick = [t.table_requests for t in ticks]
    writes_per_tick = [t.table_writes for t in ticks]
    statuses = Counter(t.status for t in report.ticks)
    lines += [
        "",
        "### State-store operations per tick",
        "",
        f"Azure Tables requests (HTTP) made by one `advance_target` invocation, over {len(ticks)} ticks "
        f"(outcomes: {', '.join(f'{s} {n}' for s, n in sorted(statuses.items()))}):",
        "",
        "| | median | mean | max |",
        "|---|---:|---:|---:|",
        f"| all requests | {_num(statistics.median(requests_per_tick) if ticks else 0)} "
        f"| {_num(statistics.mean(requests_per_tick) if ticks else 0)} | {max(requests_per_tick, default=0)} |",
        f"| of which writes (transactions, inserts, updates) | "
        f"{_num(statistics.median(writes_per_tick) if ticks else 0)} "
        f"| {_num(statistics.mean(writes_per_tick) if ticks else 0)} | {max(writes_per_tick, default=0)} |",
        "",
        f"Set-up (Azurite, the emulator, {c.scale_sets} scale sets) took {report.setup_seconds:.0f} s; the whole "
        f"run {report.wall_seconds:.0f} s.",
    ]
    lines += [*(f"- {n}" for n in report.notes)]
    return lines


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else math.nan


def _fmt(seconds: float) -> str:
    return "n/a" if math.isnan(seconds) else f"{seconds:.1f} s"


def _num(value: float) -> str:
    return f"{value:g}" if float(value).is_integer() else f"{value:.1f}"


def _shown_args(args: list[str]) -> list[str]:
    """The arguments that change the run (not where its figures are written)."""
    shown: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg == "--output":
            skip = True
        elif not arg.startswith("--output=") and arg not in ("--append", "--no-write"):
            shown.append(arg)
    return shown


def main(argv: list[str] | None = None) -> int:
    given = list(sys.argv[1:] if argv is None else argv)
    if given[:1] == ["serve-arm"]:  # the benchmark's emulator process: ``python -m emulator serve``
        from emulator.__main__ import main as emulator_main

        return emulator_main(["serve", *given[1:]])
    parser = argparse.ArgumentParser(prog="make bench-waves")
    defaults = WavesConfig()
    parser.add_argument("--scale-sets", type=int, default=defaults.scale_sets)
    parser.add_argument("--instances", type=int, default=defaults.instances)
    parser.add_argument("--waves", type=int, default=defaults.waves)
    parser.add_argument("--tick-seconds", type=int, default=defaults.tick_seconds, help="a divisor of 60")
    parser.add_argument("--read-burst", type=int, default=defaults.read_burst, help="TICK_READ_BURST")
    parser.add_argument("--read-rate", type=float, default=defaults.read_rate, help="TICK_READ_RATE")
    parser.add_argument("--upgrade-seconds", type=float, default=defaults.upgrade_seconds)
    parser.add_argument("--bake-seconds", type=int, default=defaults.bake_seconds)
    parser.add_argument("--wave-bake-seconds", type=int, default=defaults.wave_bake_seconds)
    parser.add_argument("--output", type=Path, default=DOCS, help="where the figures go (markdown)")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--append", action="store_true", help="add the figures to --output as a section of their own")
    args = parser.parse_args(argv)
    if 60 % args.tick_seconds:
        parser.error("--tick-seconds must divide 60 (an NCRONTAB */N seconds field)")
    config = WavesConfig(
        scale_sets=args.scale_sets,
        instances=args.instances,
        waves=args.waves,
        tick_seconds=args.tick_seconds,
        read_burst=args.read_burst,
        read_rate=args.read_rate,
        upgrade_seconds=args.upgrade_seconds,
        bake_seconds=args.bake_seconds,
        wave_bake_seconds=args.wave_bake_seconds,
    )
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.setLevel(logging.WARNING)  # the app's INFO lines (one per tick) are observed, not printed
    report = run_waves(config, progress=lambda text: print(text, flush=True))
    shown = _shown_args(list(sys.argv[1:] if argv is None else argv))
    command = "make bench-waves" + (f' ARGS="{" ".join(shown)}"' if shown else "")
    lines = report_lines(report, command)
    print("\n".join(lines))
    # A hand-written "## Findings" section at the end of the file is kept when the figures are written again.
    old = args.output.read_text() if args.output.exists() else ""
    head, marker, findings = old.partition(FINDINGS)
    kept = marker + findings if marker else ""
    if not args.no_write and args.append:
        section = [f"## Variant: `{command}`", *(("#" + line) if line.startswith("##") else line for line in lines[1:])]
        args.output.write_text(head.rstrip("\n") + "\n\n" + "\n".join(section) + "\n" + ("\n" + kept if kept else ""))
        print(f"added to {args.output}")
    elif not args.no_write:
        args.output.write_text("\n".join(lines) + "\n" + ("\n" + kept if kept else ""))
        print(f"written to {args.output}")
    return 0 if report.phase == "Succeeded" and report.all_in_time and not report.arm_429_by_operation else 1


if __name__ == "__main__":
    sys.exit(main())
