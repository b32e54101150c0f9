"""Hosts that die and interleave, and the promises the engine must keep whatever they do.

The building blocks of ``tests/service/test_crash_harness.py`` and ``tests/service/test_chaos.py``:

* ``Host``: one ``RolloutService`` (one Functions host) whose store and compute ports are wrapped, so
  each port call is a *boundary* ("before"/"after" each state write and each ARM call; reads are
  interleaving points too). At a boundary the host can be stopped (``HostCrash``, a
  ``BaseException`` no handler in the product catches: the process is gone) or, when the use case
  runs as an ``Op``, suspended while another host runs.
* ``Op``: a use case (tick, blob event, operator verb) running on its own thread, one port call at a
  time: ``step()`` lets it make its next call and stops it before the one after. Only one thread
  runs at a time, so every interleaving is deterministic and replayable.
* ``Oracle``: ground truth from the fakes, checked at every ARM call and after every step (see
  ``INVARIANTS``). A violation raises ``Violation`` naming the invariant.

Nothing here changes the product: the hosts share one ``FakeStore`` and one ``FakeScaleSet`` exactly
as two Functions hosts share one storage account and one scale set.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from rollout.machine import ReimageInstances, UpgradeInstances
from rollout.model import ModelSpec, Phase, Release, ReleaseKind, Rollout
from rollout.policy import RolloutPolicy
from rollout.ports import PortError
from rollout.releases import ExtensionDefaults, build_release, parse_release_name, rollout_id_for
from rollout.service import RolloutService
from tests.fakes import BASE_URL, FakeClock, FakeNotifier, FakeProber, FakeScaleSet, FakeStore, _public, release_of

TARGET = "rg:vmss"


def _id_order(instance_id: str) -> tuple[int, int, str]:
    """Instance ids in the decider's order: numbers (Uniform) first, then VM names (Flexible)."""
    return (0, int(instance_id), "") if instance_id.isdigit() else (1, 0, instance_id)


INVARIANTS = {
    "one-active": "at most one active rollout per target, and it is the one the target row names",
    "budget": "at most MAX_UNAVAILABLE healthy instances taken down by a rollout's forward upgrades",
    "rollback-budget": "at most MAX_UNAVAILABLE healthy instances taken down by a rollback (upgrades back, reimages)",
    "double-upgrade": "no instance upgraded to the model it already runs or is being upgraded to, nor upgraded "
    "forward twice in one rollout while it runs the release",
    "converges": "every rollout ends terminal, or Failed/Paused with a reason, after enough quiet ticks",
    "succeeded-fleet": "Succeeded leaves every instance (scaled-out ones too) on the release",
    "rolledback-fleet": "RolledBack leaves every instance (scaled-out ones too) on the baseline, reimaged "
    "where ROLLBACK_REIMAGE says so; one already off the baseline when the rollout started and never touched "
    "by it stays as it was",
    "lost-release": "every received release has a row",
    "lost-reimage": "every reimage a rollout recorded was sent to ARM",
    "use-case-error": "a use case raises only port errors or CommandError (anything else is an HTTP 500)",
}


class Violation(AssertionError):
    def __init__(self, invariant: str, detail: str) -> None:
        super().__init__(f"[{invariant}] {INVARIANTS.get(invariant, '')}: {detail}")
        self.invariant = invariant


class HostCrash(BaseException):
    """The host died at a port boundary. A BaseException: no ``except PortError``/``Exception`` in the
    product may act on it, exactly as nothing runs in a process that is gone."""


# --- interleaving -----------------------------------------------------------------------------------

_local = threading.local()


class Op:
    """A use case on its own thread, advanced one port call at a time by the test thread."""

    def __init__(self, host: str, label: str, fn: Callable[[], Any]) -> None:
        self.host, self.label, self.fn = host, label, fn
        self.at = "start"
        self.done = False
        self.crashed = False
        self.outcome: Any = None
        self.error: BaseException | None = None
        self._crash = False
        self._go = threading.Semaphore(0)
        self._back = threading.Semaphore(0)
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"{host}:{label}")
        self._thread.start()
        self._resume()  # up to its first port call

    def _run(self) -> None:
        _local.op = self
        self._go.acquire()
        try:
            if self._crash:
                raise HostCrash()
            self.outcome = self.fn()
        except HostCrash:
            self.crashed = True
        except BaseException as exc:  # reported by the caller
            self.error = exc
        finally:
            self.done = True
            _local.op = None
            self._back.release()

    def _resume(self) -> None:
        self._go.release()
        if not self._back.acquire(timeout=60):
            raise RuntimeError(f"operation {self.label} on {self.host} did not come back from {self.at}")

    def park(self, at: str) -> None:
        """In the op's thread: stop here until the test thread says go (or crash)."""
        self.at = at
        self._back.release()
        self._go.acquire()
        if self._crash:
            raise HostCrash()

    def step(self) -> None:
        if not self.done:
            self._resume()

    def kill(self) -> None:
        if not self.done:
            self._crash = True
            self._resume()

    def finish(self) -> None:
        while not self.done:
            self._resume()


def current_op() -> Op | None:
    return getattr(_local, "op", None)


# --- the ports of one host --------------------------------------------------------------------------


@dataclass(frozen=True)
class Boundary:
    index: int
    host: str
    when: str  # "before" | "after"
    call: str  # "store.commit", "compute.upgrade_instances", ...

    @property
    def name(self) -> str:
        return f"{self.when}-{self.call.split('.')[-1]}"


STORE_WRITES = ("commit", "save_target", "insert_rollout", "update_rollout", "append_event")
STORE_READS = ("load", "get_target", "get_rollout", "list_rollouts", "list_events")
COMPUTE_WRITES = ("update_model", "upgrade_instances", "reimage_instances")
COMPUTE_READS = ("observe", "read_model", "read_image")


class _Wrapped:
    def __init__(self, world: ChaosWorld, host: str, inner: Any, prefix: str, writes: tuple[str, ...]) -> None:
        self._world, self._host, self._inner, self._prefix, self._writes = world, host, inner, prefix, writes

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if not callable(attr) or name.startswith("_"):
            return attr
        call = f"{self._prefix}.{name}"
        world, host = self._world, self._host
        if name in self._writes:

            def write(*args: Any, **kwargs: Any) -> Any:
                world.boundary(host, "before", call)
                world.oracle.before_call(host, call, args)
                result = attr(*args, **kwargs)
                world.oracle.after_call(host, call, args)
                world.boundary(host, "after", call)
                return result

            return write

        def read(*args: Any, **kwargs: Any) -> Any:
            world.interleave(host, f"read {call}")
            result = attr(*args, **kwargs)
            if call == "store.get_rollout":
                world.oracle.fence_reads[host] = result  # the fence before an ARM write reads this way
            return result

        return read


class Host:
    def __init__(self, world: ChaosWorld, name: str) -> None:
        self.name = name
        self.service = RolloutService(
            target_key=TARGET,
            compute=_Wrapped(world, name, world.scale_set, "compute", COMPUTE_WRITES),  # type: ignore[arg-type]
            prober=FakeProber(world.scale_set),
            store=_Wrapped(world, name, world.store, "store", STORE_WRITES),  # type: ignore[arg-type]
            notifier=world.notifier,
            clock=world.clock,
            policy=world.policy,
            extension=ExtensionDefaults(),
            release_container_url=BASE_URL,
        )


# --- the world ----------------------------------------------------------------------------------------


def script_release(version: int, flavour: str = "good") -> Release:
    """``install_nginx.vN.sh``; other flavours get their own app name (``broken_nginx.vN.sh``), so a
    fake scale set can tell them apart by the script's name."""
    app = "install_nginx" if flavour == "good" else f"{flavour}_nginx"
    name = parse_release_name(f"{app}.v{version}.sh")
    assert not isinstance(name, str)
    return build_release(name, f"{BASE_URL}/{name.blob_name}", f"#!/bin/bash\necho v{version} {flavour}\n".encode())


def image_release(version: int, image: str) -> Release:
    name = parse_release_name(f"install_nginx.v{version}.image.json")
    assert not isinstance(name, str)
    return build_release(name, f"{BASE_URL}/{name.blob_name}", json.dumps({"imageId": image}).encode())


class ChaosWorld:
    """Two (or more) hosts over one store, one scale set, one clock."""

    def __init__(self, *, size: int = 4, policy: RolloutPolicy | None = None, **scale_set: Any) -> None:
        self.clock = FakeClock()
        self.scale_set = FakeScaleSet(size=size, clock=self.clock, **scale_set)
        self.store = FakeStore()
        self.notifier = FakeNotifier()
        self.policy = policy or RolloutPolicy(
            bake_seconds=60, failure_threshold=2, progress_deadline_seconds=300, upgrade_retry_seconds=60
        )
        self.oracle = Oracle(self)
        self.boundaries: list[Boundary] = []
        self.crash_at: int | None = None  # crash harness: raise HostCrash at this boundary index
        self.hosts = {name: Host(self, name) for name in ("a", "b", "c")}
        self.ops: dict[str, Op] = {}

    # boundaries and interleaving
    def boundary(self, host: str, when: str, call: str) -> None:
        b = Boundary(len(self.boundaries), host, when, call)
        self.boundaries.append(b)
        if self.crash_at is not None and b.index == self.crash_at:
            self.crash_at = None
            raise HostCrash()
        self.interleave(host, f"{when} {call}")

    def interleave(self, host: str, at: str) -> None:
        op = current_op()
        if op is not None:
            op.park(at)

    # running use cases
    def service(self, host: str) -> RolloutService:
        return self.hosts[host].service

    def start(self, host: str, label: str, fn: Callable[[RolloutService], Any]) -> Op | None:
        """Start ``fn`` on ``host`` as an interleavable op (None if the host is busy)."""
        if host in self.ops:
            return None
        service = self.service(host)
        op = Op(host, label, lambda: fn(service))
        self.ops[host] = op
        self.settle(host)
        return op

    def deliver(self, host: str, release: Release) -> Op | None:
        """The blob trigger fires on ``host``. Until it returns, the event counts as undelivered: a
        host that dies (or a storage error) makes the Functions host / Event Grid deliver it again."""
        if host in self.ops:
            return None
        if release not in self.oracle.pending:
            self.oracle.delivering(release)

        def run(service: RolloutService) -> Any:
            outcome = service.start_release(release)
            self.oracle.delivered(release)
            return outcome

        return self.start(host, f"blob {release.blob_name}", run)

    def settle(self, host: str) -> None:
        op = self.ops.get(host)
        if op is not None and op.done:
            del self.ops[host]
            self.oracle.op_done(op)

    def step(self, host: str, calls: int = 1) -> None:
        for _ in range(calls):
            op = self.ops.get(host)
            if op is None:
                return
            op.step()
            self.settle(host)

    def crash(self, host: str) -> Op | None:
        op = self.ops.get(host)
        if op is None:
            return None
        op.kill()
        self.settle(host)
        return op

    def finish_all(self) -> None:
        for host in list(self.ops):
            op = self.ops[host]
            op.finish()
            self.settle(host)

    def run(self, host: str, fn: Callable[[RolloutService], Any]) -> Any:
        """Run ``fn`` on ``host`` to completion on this thread (no interleaving); a port error or a
        CommandError is an answer, anything else a violation."""
        try:
            return fn(self.service(host))
        except HostCrash:
            raise
        except BaseException as exc:
            self.oracle.use_case_error(host, "direct", exc)
            return None

    # views
    def rollouts(self) -> list[Rollout]:
        return self.store.list_rollouts(TARGET)

    def rollout(self, rollout_id: str) -> Rollout | None:
        return self.store.get_rollout(TARGET, rollout_id)

    def active(self) -> Rollout | None:
        target = self.store.get_target(TARGET)
        if target is None or not target.active_rollout_id:
            return None
        return self.rollout(target.active_rollout_id)

    def moving(self) -> bool:
        """Is anything left that ticks alone would move? (Paused/Failed wait for a human.)"""
        rollouts = self.rollouts()
        if any(r.phase in (Phase.CANARY, Phase.BAKING, Phase.PROMOTING, Phase.ROLLING_BACK) for r in rollouts):
            return True
        held = any(r.phase in (Phase.PAUSED, Phase.FAILED) for r in rollouts)
        return not held and any(r.phase is Phase.QUEUED for r in rollouts)

    def quiesce(self, max_ticks: int = 160, step: float = 30) -> None:
        """Let every suspended op finish, heal the environment, then tick (alternating hosts) until
        nothing moves any more; then check the end-state invariants."""
        self.finish_all()
        ss = self.scale_set
        ss.throttle_next, ss.throttle_reimages, ss.fail_next_observe = 0, 0, 0
        ss.fail_next_writes.clear()
        for inst in ss.instances.values():
            inst.forced_unhealthy = False
        for release in list(self.oracle.undelivered()):
            self.run("a", lambda s, r=release: s.start_release(r))
            self.oracle.delivered(release)
            self.oracle.check()
        quiet = 0
        for n in range(max_ticks):
            if not self.moving():
                quiet += 1
                if quiet > 3:
                    break
            else:
                quiet = 0
            self.clock.advance(step)
            self.run("ab"[n % 2], lambda s: s.tick())
            self.oracle.check()
        self.oracle.check_end()


# --- the oracle -----------------------------------------------------------------------------------------


def _model_key(model: ModelSpec) -> tuple[str, str]:
    return (release_of(ModelSpec(extension=model.extension)), model.image_id or "")


def _caller(kinds: tuple[type, ...]) -> tuple[Any, Rollout | None]:
    """The action and the rollout being executed, from the service's frames (``_execute``)."""
    frame = sys._getframe(2)
    for _ in range(8):
        if frame is None:
            break
        action = frame.f_locals.get("action")
        if isinstance(action, kinds):
            rollout = frame.f_locals.get("rollout")
            return action, rollout if isinstance(rollout, Rollout) else None
        frame = frame.f_back  # type: ignore[assignment]
    return None, None


@dataclass
class Oracle:
    world: ChaosWorld
    enabled: set[str] = field(default_factory=lambda: set(INVARIANTS))
    received: dict[str, Release] = field(default_factory=dict)  # rollout id -> release, delivered to a host
    pending: list[Release] = field(default_factory=list)  # deliveries whose host died: the trigger retries
    inflight: dict[str, tuple[object, str]] = field(default_factory=dict)  # instance -> (model content, rollout)
    forward_done: set[tuple[str, str]] = field(default_factory=set)  # (rollout, instance) upgraded forward
    # instance -> ("forward"/"rollback", rollout id): a healthy instance a rollout's call took down, not back yet
    down: dict[str, tuple[str, str]] = field(default_factory=dict)
    reimaged: set[tuple[str, str]] = field(default_factory=set)  # (rollout id, instance) sent to ARM
    ended: dict[str, Phase] = field(default_factory=dict)  # rollout id -> terminal phase first seen
    # rollout id -> {instance: what it ran} for the instances not on its baseline when it started (a fleet
    # left mixed by an earlier abort without rollback): a rollback leaves them as they were, untouched
    off_at_start: dict[str, dict[str, tuple[str, str]]] = field(default_factory=dict)
    # host -> the rollout row its last get_rollout returned (the fence read before an ARM write), and how
    # often a call went out in the documented window: taken over between the fence read and the call
    fence_reads: dict[str, Rollout | None] = field(default_factory=dict)
    stale_window_calls: int = 0
    order: list[str] = field(default_factory=list)  # rollouts in the order they left Queued
    hand_edits_after: dict[str, int] = field(default_factory=dict)
    edits: int = 0
    log: list[str] = field(default_factory=list)

    def fail(self, invariant: str, detail: str) -> None:
        if invariant in self.enabled:
            raise Violation(invariant, detail)

    # deliveries
    def delivering(self, release: Release) -> None:
        self.pending.append(release)

    def delivered(self, release: Release) -> None:
        if release in self.pending:
            self.pending.remove(release)
        self.received[rollout_id_for(release)] = release

    def undelivered(self) -> Iterator[Release]:
        yield from list(self.pending)

    def op_done(self, op: Op) -> None:
        if op.error is not None:
            self.use_case_error(op.host, op.label, op.error)

    def use_case_error(self, host: str, label: str, exc: BaseException) -> None:
        from rollout.machine import CommandError
        from rollout.service import RolloutNotFoundError

        if isinstance(exc, Violation):
            raise exc
        if not isinstance(exc, (PortError, CommandError, RolloutNotFoundError)):
            self.fail("use-case-error", f"{label} on host {host} raised {type(exc).__name__}: {exc}")

    def hand_edit(self) -> None:
        self.edits += 1

    # at ARM calls
    def before_call(self, host: str, call: str, args: tuple[Any, ...]) -> None:
        ss = self.world.scale_set
        self._refresh()
        if call == "compute.upgrade_instances":
            action, rollout = _caller((UpgradeInstances,))
            ids = [i for i in args[0] if i in ss.instances]
            full = _public(ss.model)
            key = _model_key(ss.model)
            rid = rollout.id if rollout else "?"
            why = f"rollout {rid}, purpose {getattr(action, 'purpose', '?')}"
            forward = rollout is not None and rollout.phase is not Phase.ROLLING_BACK
            window: list[bool] = []  # asked once per call, and only when a double upgrade would be a fault

            def in_window() -> bool:
                if not window:
                    window.append(self._taken_over_after_fence(host, rollout))
                return window[0]

            for iid in ids:
                inst = ss.instances[iid]
                flight = self.inflight.get(iid)
                busy = inst.provisioning_state in ("Updating", "Creating")
                # Where ARM keeps a model version, an instance created during the rollout reports an
                # outdated model after the baseline is written back whichever model it was created from:
                # moving it back is the safe guess (docs/design.md, "Behaviour Azure does not document"),
                # so a rollback upgrade of an instance the observation shows as outdated is not a fault.
                # The same holds forward: an instance created from the release's model reports outdated
                # once the release is written again (after a hand edit), and only an upgrade makes it
                # latest, which Succeeded needs. The same again for an instance this rollout already
                # upgraded, once a retry writes the release again after a hand edit of its own part
                # (make chaos, seed 1441434806): the product cannot tell whether its upgrade took the
                # edit, and Succeeded needs it reported latest. Where ARM compares content, both stay
                # faults.
                unknowable = ss.model_applied == "version" and not ss._latest(inst)
                # A host stalled between its fence read and its call, while another host re-issued the
                # step and watched it finish, sends the model the instance already runs (make chaos, seed
                # 2137849639): the same documented window as an upgrade still running (seed 2047699628).
                if not busy and not unknowable and _public(inst.applied) == full and not in_window():
                    self.fail(
                        "double-upgrade", f"host {host} upgrades instance {iid} to {key}, which it already runs ({why})"
                    )
                elif flight is not None and flight[0] == full and not in_window():
                    self.fail(
                        "double-upgrade",
                        f"host {host} upgrades instance {iid} to {key} while an upgrade to it is still running ({why})",
                    )
                elif (
                    forward
                    and rollout is not None
                    and (rid, iid) in self.forward_done
                    and not busy
                    and not unknowable
                    and rollout.desired.matches(inst.applied)
                    # An image edited by hand since: this upgrade replaces the OS disk, so the release runs
                    # again on a fresh disk, which is what a script for fresh VMs expects (docs/safety.md).
                    and inst.applied.image_id == ss.model.image_id
                    and not in_window()
                ):
                    self.fail(
                        "double-upgrade",
                        f"host {host} upgrades instance {iid} a second time in {rid}: it already runs the release "
                        f"{key} since this rollout's earlier upgrade ({why})",
                    )
            self._before_takedown = {i: ss.healthy(i) for i in ids}
            # A rollback's upgrades (its re-issues too) go back to the baseline; the rest go forward.
            rolling_back = rollout is not None and rollout.phase is Phase.ROLLING_BACK
            self._purpose = "rollback" if rolling_back else "forward"
            if not rolling_back and rollout is not None and rollout.promote_full:
                # promote-full is the operator's "everything left, at once" (README): no budget applies.
                self._purpose = "promote-full"
            self._call_rollout = rollout.id if rollout else "?"
        elif call == "compute.reimage_instances":
            _, rollout = _caller((ReimageInstances,))
            ids = [i for i in args[0] if i in ss.instances]
            self._before_takedown = {i: ss.healthy(i) for i in ids}
            self._purpose = "rollback"
            self._call_rollout = rollout.id if rollout else "?"

    def _taken_over_after_fence(self, host: str, rollout: Rollout | None) -> bool:
        """Did another host take this step over after this host's fence read passed it (docs/safety.md,
        "No fencing token at ARM")? ARM has no fencing token, so a host that stalls between its last
        read of the row and its call can still send a write the row no longer asks for: the documented
        residual window, allowed here and counted (found by make chaos, seed 2047699628)."""
        fenced = self.fence_reads.get(host)
        if rollout is None or fenced is None or fenced.id != rollout.id:
            return False
        current = self.world.store.get_rollout(TARGET, rollout.id)
        taken = (
            fenced.batch_started_at == rollout.batch_started_at
            and current is not None
            and current.batch_started_at != rollout.batch_started_at
        )
        if taken:
            self.stale_window_calls += 1
        return taken

    def after_call(self, host: str, call: str, args: tuple[Any, ...]) -> None:
        ss = self.world.scale_set
        written = [args[0]] if call == "store.update_rollout" else list(args[1]) if call == "store.commit" else []
        for saved in written:
            if saved.phase is Phase.CANARY and saved.baseline is not None and saved.id not in self.off_at_start:
                # The start is saved before the rollout writes anything: the fleet as it found it.
                self.off_at_start[saved.id] = {
                    i: _model_key(self.runs(i)) for i in ss.instances if not saved.baseline.matches(self.runs(i))
                }
            if saved.phase in (Phase.SUCCEEDED, Phase.ROLLED_BACK) and saved.id not in self.ended:
                # The moment the end is recorded: the fleet must be as the phase says.
                self.ended[saved.id] = saved.phase
                self._check_fleet(saved, "when it ended")
        if call not in ("compute.upgrade_instances", "compute.reimage_instances"):
            return
        full = _public(ss.model)
        for iid, was_healthy in self._before_takedown.items():
            if call == "compute.upgrade_instances":
                self.inflight[iid] = (full, self._call_rollout)
                if self._purpose != "rollback":
                    self.forward_done.add((self._call_rollout, iid))
            else:
                self.reimaged.add((self._call_rollout, iid))
            if was_healthy and not ss.healthy(iid):
                self.down[iid] = (self._purpose, self._call_rollout)
        self.log.append(f"{host}: {call}({', '.join(args[0])}) for {self._call_rollout} [{self._purpose}]")
        budget = self.world.policy.calculate_max_unavailable(len(ss.instances))
        mine = {i: why for i, (why, rid) in self.down.items() if rid == self._call_rollout}
        forward = sorted((i for i, why in mine.items() if why == "forward"), key=_id_order)
        if len(forward) > budget:
            self.fail(
                "budget",
                f"host {host}: {call} left {len(forward)} healthy instances taken down by rollout "
                f"{self._call_rollout} ({', '.join(forward)}) with a budget of {budget} "
                f"for {len(ss.instances)} instances",
            )
        if len(mine) > budget and self._purpose == "rollback":
            self.fail(
                "rollback-budget",
                f"host {host}: {call} left {len(mine)} healthy instances taken down by rollout {self._call_rollout} "
                f"({', '.join(sorted(mine, key=_id_order))}) with a budget of {budget} "
                f"for {len(ss.instances)} instances",
            )

    def _refresh(self) -> None:
        ss = self.world.scale_set
        for iid in list(self.inflight):
            inst = ss.instances.get(iid)
            if inst is None or inst.provisioning_state not in ("Updating", "Creating"):
                del self.inflight[iid]
        for iid in list(self.down):
            if iid not in ss.instances or ss.healthy(iid):
                del self.down[iid]

    # after every step
    def check(self) -> None:
        self._refresh()
        rollouts = self.world.rollouts()
        active = [r for r in rollouts if r.phase.is_active]
        target = self.world.store.get_target(TARGET)
        named = target.active_rollout_id if target else None
        if len(active) > 1:
            self.fail("one-active", f"{len(active)} active: {', '.join(f'{r.id} {r.phase.value}' for r in active)}")
        for r in active:
            if r.id != named:
                self.fail("one-active", f"{r.id} is {r.phase.value} but the target row names {named}")
        for r in rollouts:
            if r.phase is not Phase.QUEUED and r.phase is not Phase.REJECTED and r.id not in self.order:
                self.order.append(r.id)
                self.hand_edits_after[r.id] = self.edits
            if r.phase in (Phase.SUCCEEDED, Phase.ROLLED_BACK) and r.id not in self.ended:
                self.ended[r.id] = r.phase
                self._check_fleet(r, "when it ended")
            elif r.phase.is_terminal and r.id not in self.ended:
                self.ended[r.id] = r.phase

    def runs(self, iid: str) -> ModelSpec:
        """The model an instance runs, or will run once the operation on it ends."""
        ss = self.world.scale_set
        inst = ss.instances[iid]
        if inst.pending is not None:
            return inst.pending
        if inst.provisioning_state in ("Updating", "Creating"):
            return ss.model  # the fake's "finish" mode applies the model as it is when the upgrade ends
        return inst.applied

    def _check_fleet(self, r: Rollout, when: str) -> None:
        """Succeeded: every instance on the release. RolledBack: every instance on the baseline; once
        somebody edited the model by hand, the instances that never took it are on neither, so then:
        no instance on the release."""
        ss = self.world.scale_set
        if r.phase is Phase.SUCCEEDED:
            off = sorted((i for i in ss.instances if not r.desired.matches(self.runs(i))), key=_id_order)
            if off:
                runs = {i: "/".join(_model_key(self.runs(i))) for i in off}
                self.fail("succeeded-fleet", f"{r.id} Succeeded but {when} {runs} are not on the release")
        elif r.phase is Phase.ROLLED_BACK and r.baseline is not None:
            strict = self.edits == 0
            untouched = {
                i
                for i, ran in self.off_at_start.get(r.id, {}).items()
                if i in ss.instances and _model_key(self.runs(i)) == ran and (r.id, i) not in self.forward_done
            }
            off = sorted(
                (
                    i
                    for i in ss.instances
                    if (
                        (not r.baseline.matches(self.runs(i)) and i not in untouched)
                        if strict
                        else r.desired.matches(self.runs(i))
                    )
                ),
                key=_id_order,
            )
            if off:
                runs = {i: "/".join(_model_key(self.runs(i))) for i in off}
                what = "are not on the baseline" if strict else "are on the release"
                self.fail("rolledback-fleet", f"{r.id} RolledBack but {when} {runs} {what}")
            if self.world.policy.rollback_reimage and r.release.kind is ReleaseKind.SCRIPT:
                # ROLLBACK_REIMAGE: every instance the release ran on gets a fresh disk before RolledBack.
                script = release_of(ModelSpec(extension=r.desired.extension))
                dirty = sorted((i for i, inst in ss.instances.items() if script in inst.leftovers), key=_id_order)
                if dirty:
                    self.fail(
                        "rolledback-fleet",
                        f"{r.id} RolledBack but {when} {', '.join(dirty)} still carry {script}'s changes on disk "
                        "(never reimaged)",
                    )

    def check_end(self) -> None:
        """After quiescence: convergence, nothing lost, the fleet as the last rollout left it."""
        self.check()
        rollouts = self.world.rollouts()
        for r in rollouts:
            if r.phase.is_terminal:
                continue
            if r.phase in (Phase.FAILED, Phase.PAUSED) and r.reason:
                continue
            if r.phase is Phase.QUEUED and any(o.phase in (Phase.FAILED, Phase.PAUSED) for o in rollouts):
                continue
            self.fail("converges", f"{r.id} still {r.phase.value} after the quiet ticks: {r.reason}")
        for rid in self.received:
            if self.world.rollout(rid) is None:
                self.fail("lost-release", f"{rid} was received but has no row")
        for r in rollouts:
            for iid in r.reimaged_ids:
                if (r.id, iid) not in self.reimaged and iid in self.world.scale_set.instances:
                    self.fail("lost-reimage", f"{r.id} recorded a reimage of {iid} that was never sent")
        # The fleet as the last rollout that moved it left it (unless the model was edited by hand since).
        if self.order:
            last = self.world.rollout(self.order[-1])
            ended = last is not None and last.phase in (Phase.SUCCEEDED, Phase.ROLLED_BACK)
            if last is not None and ended and self.edits == self.hand_edits_after.get(last.id, -1):
                self._check_fleet(last, "once quiet")


def describe(world: ChaosWorld) -> str:
    """The state, for a failure message."""
    lines = [f"{r.id}: {r.phase.value} ({r.reason})" for r in world.rollouts()]
    lines += [
        f"instance {i}: {inst.provisioning_state} on {'/'.join(_model_key(inst.applied))}"
        for i, inst in world.scale_set.instances.items()
    ]
    return "\n".join(lines + world.oracle.log[-15:])


__all__ = [
    "INVARIANTS",
    "TARGET",
    "Boundary",
    "ChaosWorld",
    "HostCrash",
    "Op",
    "Oracle",
    "Violation",
    "describe",
    "image_release",
    "script_release",
]
