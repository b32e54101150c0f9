"""The long-running-operation runner: manualupgrade, reimage, provisioning of new instances.

* **Upgrades are visible at once.** ``start_upgrades`` marks the instances ``Updating`` before the
  request is answered, so an observer right after the call sees them updating, as in Azure. A timer
  then waits the scale set's ``upgrade_seconds`` and hands the applies to the worker pool.
* **Idempotent writes.** Upgrading an instance already on the latest model is accepted and changes
  nothing. Upgrading an instance that is *already Updating* is accepted too (by default,
  ``upgrade_while_updating="accept"``) and does NOT start a second apply: the running one finishes
  the job. (If the model changed in between, the instance ends on the model the first upgrade took,
  so it reads ``latestModelApplied: false`` and the next tick upgrades it again.)
* **A failed extension** leaves the instance on the new model with ``provisioningState: Failed``; the
  operation then ends ``Failed`` (the SDK poller raises), as Azure reports ``VMExtensionProvisioningError``.
* **Reimage** re-runs the instance's *own* (applied) model from a clean image; it never moves an
  instance to a newer model (that is what manualupgrade is for).
* **The clock.** The upgrade time is waited on the emulator's clock (``emulator/clock.py``): real time by
  default; with a clock that skips idle time, until its virtual time reaches the operation's due time, woken
  by a jump. ``pending()`` says what a driver of such a clock needs: the next due time and whether work is in
  flight (operations due but not yet handed to the pool, applies running on it).
"""

from __future__ import annotations

import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from emulator.arm.fleet import Fleet
from emulator.arm.model import ArmError, Instance, Model, Operation, ScaleSet
from emulator.arm.semantics import Semantics
from emulator.clock import Clock
from emulator.runtime import ExtensionResult


class OperationRunner:
    def __init__(self, fleet: Fleet, semantics: Semantics, workers: int = 32) -> None:
        self._fleet = fleet
        self._clock: Clock = fleet.clock
        self._semantics = semantics
        self._workers = workers
        self._operations: dict[str, Operation] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._timers: list[threading.Thread] = []  # one per operation waiting out its upgrade time
        self._stopping = threading.Event()
        self._due: dict[str, float] = {}  # op id -> when its applies go to the pool (clock.monotonic())
        self._running = 0  # applies handed to the pool and not finished

    def pending(self) -> tuple[float | None, int]:
        """(seconds until the next waiting operation is due, or None; the work in flight: applies running on
        the pool plus operations already due whose applies are not handed over yet)."""
        with self._fleet.lock:
            now = self._clock.monotonic()
            due = [at - now for at in self._due.values()]
            ahead = [d for d in due if d > 0]
            return (min(ahead) if ahead else None), self._running + sum(1 for d in due if d <= 0)

    def start(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix="arm-upgrade")

    def cancel_waiting(self) -> None:
        """Operations still waiting out their upgrade time will not start their applies."""
        self._stopping.set()
        self._clock.wake()

    def stop(self) -> None:
        """Cancel waiting operations, finish running applies."""
        self.cancel_waiting()
        for timer in list(self._timers):
            timer.join(timeout=5)
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def get(self, op_id: str) -> Operation:
        op = self._operations.get(op_id)
        if op is None:
            raise ArmError(404, "NotFound", f"Operation '{op_id}' was not found.")
        return op

    def new(self, kind: str, scale_set: ScaleSet, pending: set[str]) -> Operation:
        """A new operation over ``pending`` instances (none: it has ended already)."""
        op = Operation(
            op_id=str(uuid.uuid4()),
            kind=kind,
            location=scale_set.location,
            started=self._clock.now(),
            pending=set(pending),
        )
        with self._fleet.lock:
            self._operations[op.op_id] = op
            if not op.pending:
                op.ended = self._clock.now()
        return op

    def wait_idle(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._fleet.lock:
                busy = any(op.ended is None for op in self._operations.values())
            if not busy:
                return
            time.sleep(0.02)
        raise TimeoutError("operations still in progress")

    def provision(self, scale_set: ScaleSet, inst: Instance) -> Operation:
        """A new instance (``Fleet.start_instance(provisioning=True)``) runs its model's extension."""
        op = self.new("create", scale_set, {inst.instance_id})
        self._submit([(inst, inst.applied)], op, reimage=False, delay=0.0)
        return op

    def start_upgrades(self, scale_set: ScaleSet, ids: list[str], *, reimage: bool) -> Operation:
        """Mark the instances Updating now and hand the applies to workers (see the module docstring)."""
        with self._fleet.lock:
            insts = [self._fleet.get_instance(scale_set, i) for i in ids]
            model = scale_set.model
            busy = [inst.instance_id for inst in sorted(insts, key=lambda i: i.seq) if inst.updating]
            if busy and not reimage and self._semantics.upgrade_while_updating == "conflict":
                # The "conflict" alternative (undocumented in Azure, see docs/emulator.md): the whole
                # call is refused and nothing starts.
                raise ArmError(
                    409,
                    "OperationNotAllowed",
                    f"Operation 'manualupgrade' is not allowed on VM instance(s) {', '.join(busy)} of "
                    f"'{scale_set.name}' since another operation is in progress on them.",
                )
            to_run: list[tuple[Instance, Model]] = []
            for inst in insts:
                if inst.updating:
                    continue  # already being upgraded: no second apply
                if not reimage and self._semantics.latest(scale_set, inst):
                    continue  # already latest: a no-op
                inst.begin_work("Updating", self._clock.now())
                inst.upgrades += 1
                to_run.append((inst, inst.applied if reimage else model))
            op = self.new(
                "reimage" if reimage else "manualupgrade", scale_set, {inst.instance_id for inst, _ in to_run}
            )
            delay = scale_set.upgrade_seconds
        self._submit(to_run, op, reimage=reimage, delay=delay)
        return op

    def _submit(self, jobs: list[tuple[Instance, Model]], op: Operation, *, reimage: bool, delay: float) -> None:
        """Run the applies of one operation after ``delay`` seconds, in parallel on the pool.

        The delay is waited once per operation on its own small thread (not per instance on a pool
        worker), so upgrading 500 instances takes about ``delay``, as a parallel upgrade in Azure does,
        and the pool's workers only do real work (nginx runtimes run scripts there). It is waited on the
        emulator's clock, until ``due``: a clock that skips idle time wakes the thread when it jumps."""

        def release() -> None:
            try:
                # Waits on the stop event too, so emu.stop() never sits through a long upgrade_seconds.
                if delay > 0 and self._clock.wait_until(due, self._stopping):
                    return
                for inst, model in jobs:
                    if self._stopping.is_set() or self._pool is None:
                        return
                    try:
                        with self._fleet.lock:
                            self._running += 1
                        self._pool.submit(self._run, inst, model, op, reimage)
                    except RuntimeError:  # the pool shut down under us: stop() is running
                        with self._fleet.lock:
                            self._running -= 1
                        return
            finally:
                with self._fleet.lock:
                    self._due.pop(op.op_id, None)

        if not jobs:
            return
        timer = threading.Thread(target=release, name=f"arm-op-{op.op_id[:8]}", daemon=True)
        with self._fleet.lock:
            due = self._clock.monotonic() + delay
            self._due[op.op_id] = due
            self._timers = [t for t in self._timers if t.is_alive()] + [timer]
        timer.start()

    def _run(self, inst: Instance, model: Model, op: Operation, reimage: bool) -> None:
        try:
            target = model.instance_model()
            result = inst.runtime.reimage(target) if reimage else inst.runtime.apply(target)
        except Exception as err:  # a broken runtime is an extension failure, not a dead worker
            result = ExtensionResult(succeeded=False, exit_code=None, stderr=repr(err), message=str(err))
        with self._fleet.lock:
            self._running -= 1
            inst.finish_work(model, result, self._clock.now())
            op.pending.discard(inst.instance_id)
            if not result.succeeded:
                op.failures.append(inst.instance_id)
            if not op.pending and op.ended is None:
                op.ended = self._clock.now()
