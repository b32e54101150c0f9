"""Deterministic interleaving of two hosts over one store and one scale set.

Each host is a ``RolloutService`` whose store and compute are wrapped so that every port call first
waits at a gate. Each host runs in its own thread, but only one moves at a time: the test (the
scheduler, in the main thread) lets a host make exactly one port call, or run until a predicate on
its next call holds, or run to the end. So a schedule like "A until it is about to save v1 as Canary,
then B until it has read v1 as Queued, then A one call, then B to the end" replays exactly, every time.

Events (``append_event``) and ``check_fits`` are not gated: they change no state another host decides on.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rollout.policy import RolloutPolicy
from rollout.releases import ExtensionDefaults
from rollout.service import RolloutService
from tests.fakes import BASE_URL, FakeClock, FakeNotifier, FakeProber, FakeScaleSet, FakeStore

TARGET = "rg:vmss"
WAIT_SECONDS = 10.0

_STORE_CALLS = (
    "load",
    "commit",
    "get_target",
    "save_target",
    "get_rollout",
    "insert_rollout",
    "update_rollout",
    "list_rollouts",
)
_COMPUTE_CALLS = ("observe", "read_model", "read_image", "update_model", "upgrade_instances", "reimage_instances")


@dataclass
class Call:
    """One port call of one host: its name, arguments and (once made) result or error."""

    host: str
    name: str
    args: tuple[Any, ...]
    result: Any = None
    error: BaseException | None = None


class Gate:
    """Lets one host thread make one port call at a time, when the scheduler says so."""

    def __init__(self) -> None:
        self.cv = threading.Condition()
        self.waiting: dict[str, Call] = {}  # host -> the call it is about to make
        self.permit: str | None = None
        self.done: set[str] = set()
        self.arrivals: dict[str, int] = {}  # calls each host has arrived at so far

    def enter(self, call: Call) -> None:
        with self.cv:
            self.waiting[call.host] = call
            self.arrivals[call.host] = self.arrivals.get(call.host, 0) + 1
            self.cv.notify_all()
            if not self.cv.wait_for(lambda: self.permit == call.host, WAIT_SECONDS):
                raise TimeoutError(f"host {call.host} was never let through for {call.name}")
            self.permit = None
            del self.waiting[call.host]
            self.cv.notify_all()

    def finish(self, host: str) -> None:
        with self.cv:
            self.done.add(host)
            self.cv.notify_all()

    def next_call(self, host: str) -> Call | None:
        """The call ``host`` waits to make, or None when it has finished."""
        with self.cv:
            if not self.cv.wait_for(lambda: host in self.waiting or host in self.done, WAIT_SECONDS):
                raise TimeoutError(f"host {host} neither reached a port call nor finished")
            return self.waiting.get(host)

    def release(self, host: str) -> None:
        """Let ``host`` make its pending call, and wait until it is at its next one (or done)."""
        with self.cv:
            assert host in self.waiting, f"host {host} is not waiting"
            before = self.arrivals[host]
            self.permit = host
            self.cv.notify_all()
            if not self.cv.wait_for(lambda: self.arrivals[host] > before or host in self.done, WAIT_SECONDS):
                raise TimeoutError(f"host {host} did not take its turn")


class _Gated:
    def __init__(self, inner: Any, gate: Gate, host: str, names: tuple[str, ...], log: list[Call]) -> None:
        self._inner, self._gate, self._host, self._names, self._log = inner, gate, host, names, log

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if name not in self._names:
            return attr

        def gated(*args: Any) -> Any:
            call = Call(self._host, name, args)
            self._gate.enter(call)
            self._log.append(call)
            try:
                call.result = attr(*args)
            except BaseException as exc:
                call.error = exc
                raise
            return call.result

        return gated


@dataclass
class Host:
    name: str
    service: RolloutService
    thread: threading.Thread | None = None
    outcome: Any = None
    error: BaseException | None = None


@dataclass
class TwoHosts:
    """Two hosts (A and B) sharing one store, one scale set and one clock."""

    scale_set: FakeScaleSet
    store: FakeStore
    clock: FakeClock
    policy: RolloutPolicy
    gate: Gate = field(default_factory=Gate)
    log: list[Call] = field(default_factory=list)
    hosts: dict[str, Host] = field(default_factory=dict)
    checks: list[Callable[[], None]] = field(default_factory=list)  # run after every released call

    def service(self, name: str, *, gated: bool = True) -> RolloutService:
        store: Any = _Gated(self.store, self.gate, name, _STORE_CALLS, self.log) if gated else self.store
        compute: Any = _Gated(self.scale_set, self.gate, name, _COMPUTE_CALLS, self.log) if gated else self.scale_set
        return RolloutService(
            target_key=TARGET,
            compute=compute,
            prober=FakeProber(self.scale_set),
            store=store,
            notifier=FakeNotifier(),
            clock=self.clock,
            policy=self.policy,
            extension=ExtensionDefaults(),
            release_container_url=BASE_URL,
        )

    def start(self, name: str, work: Callable[[RolloutService], Any]) -> None:
        """Start host ``name`` on ``work``; it stops before its first port call."""
        host = Host(name, self.service(name))
        self.hosts[name] = host
        self.gate.done.discard(name)

        def run() -> None:
            try:
                host.outcome = work(host.service)
            except BaseException as exc:  # reported by the scheduler
                host.error = exc
            finally:
                self.gate.finish(name)

        host.thread = threading.Thread(target=run, name=f"host-{name}", daemon=True)
        host.thread.start()
        self.gate.next_call(name)

    def step(self, name: str) -> Call | None:
        """Let host ``name`` make one port call. Returns that call (None if it had finished)."""
        call = self.gate.next_call(name)
        if call is None:
            return None
        self.gate.release(name)
        self.gate.next_call(name)
        for check in self.checks:
            check()
        return call

    def run_until(self, name: str, stop: Callable[[Call], bool], *, after: bool = False) -> Call:
        """Run host ``name`` until its next call matches ``stop`` (it is then not made, unless
        ``after``, when it is made and the host stops right after it). Fails if the host finishes first."""
        while True:
            call = self.gate.next_call(name)
            if call is None:
                raise AssertionError(f"host {name} finished without reaching the expected call")
            if stop(call):
                if after:
                    self.step(name)
                return call
            self.step(name)

    def run_past(self, name: str, made: Callable[[Call], bool]) -> Call:
        """Run host ``name`` until it has made a call (result known) matching ``made``."""
        while True:
            call = self.step(name)
            if call is None:
                raise AssertionError(f"host {name} finished without making the expected call")
            if made(call):
                return call

    def run(self, name: str, steps: int | None = None) -> bool:
        """Run host ``name`` for ``steps`` calls (None: to the end). True when it has finished."""
        taken = 0
        while steps is None or taken < steps:
            if self.step(name) is None:
                break
            taken += 1
        return self.finished(name)

    def finished(self, name: str) -> bool:
        return self.gate.next_call(name) is None

    def join(self) -> None:
        for host in self.hosts.values():
            self.run(host.name)
            assert host.thread is not None
            host.thread.join(WAIT_SECONDS)
            if host.error is not None:
                raise host.error


def two_hosts(size: int = 5, policy: RolloutPolicy | None = None, **scale_set: Any) -> TwoHosts:
    return TwoHosts(
        scale_set=FakeScaleSet(size=size, **scale_set),
        store=FakeStore(),
        clock=FakeClock(),
        policy=policy or RolloutPolicy(bake_seconds=60, failure_threshold=2),
    )
