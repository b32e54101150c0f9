"""What every trigger kind of the local host shares: loading and indexing the app, the startup error,
invocation records, calling user code with a ``context``, and the host's threads.

A trigger kind (``http.py``, ``timer.py``, ``blob.py``; a queue trigger would be one more module) is a
``Trigger``: it takes the functions of its binding type at indexing, starts its threads from
``start()`` through the shared ``Runtime``, and, when it can be fired by hand (the admin API,
``LocalFunctionsHost.trigger``), is also a ``ManualTrigger``.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
import secrets
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import Any, Protocol

import azure.functions as func
from azure.functions._abc import RetryContext, TraceContext
from azure.functions.decorators.function_app import Function

from emulator import appindex

log = logging.getLogger("emulator.funchost")


class HostStartupError(RuntimeError):
    """The app cannot be hosted as configured (missing setting, bad schedule, unsupported route...)."""


# --------------------------------------------------------------------------------------------------
# The app


def load_app(spec: str) -> Any:
    """``module:attr`` (default attribute ``app``) -> the app object."""
    module_name, _, attr = spec.partition(":")
    module = importlib.import_module(module_name)
    try:
        return getattr(module, attr or "app")
    except AttributeError:
        raise HostStartupError(f"module {module_name!r} has no attribute {attr or 'app'!r}") from None


def index_app(app: Any) -> list[Function]:
    """The app's functions, as the Python worker indexes them (FunctionApp or a lone Blueprint).

    Indexed once per process through ``emulator.appindex``: ``get_functions()`` fails when called
    twice on one app object, and tests, the demo and a restarted host all index the same app."""
    if not isinstance(app, func.Blueprint) and not hasattr(app, "get_functions"):
        raise HostStartupError(f"{app!r} is not an azure.functions FunctionApp or Blueprint")
    return appindex.functions_of(app)


def enum_value(value: Any) -> str:
    return str(value.value if isinstance(value, Enum) else value)


# --------------------------------------------------------------------------------------------------
# Invocations and the context a function receives


@dataclass(frozen=True)
class Invocation:
    """One firing of a function as the host saw it (also logged)."""

    function: str
    trigger: str  # "http" | "timer" | "blob" | "queue"
    started_at: datetime
    duration_s: float
    outcome: str  # "succeeded" | "failed" | "skipped"
    error: str | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)


# Slotted dataclasses: each field is a concrete attribute where azure.functions declares an abstract property.
@dataclass(frozen=True, slots=True)
class _RetryContext(RetryContext):
    retry_count: int
    max_retry_count: int
    exception: Any = None


@dataclass(frozen=True, slots=True)
class _TraceContext(TraceContext):
    trace_parent: str = field(default_factory=lambda: f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01")
    trace_state: str = ""
    attributes: dict[str, str] = field(default_factory=dict)


_THREAD_LOCAL = threading.local()


@dataclass(frozen=True, slots=True)
class Context(func.Context):
    """What a function declaring a ``context`` parameter receives."""

    function_name: str
    function_directory: str
    retry_context: RetryContext
    invocation_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    trace_context: TraceContext = field(default_factory=_TraceContext)
    thread_local_storage: Any = _THREAD_LOCAL


def call_user_function(function: Function, trigger_arg: str, value: Any, context: Context) -> Any:
    user_function = function.get_user_function()
    kwargs: dict[str, Any] = {trigger_arg: value}
    if "context" in inspect.signature(user_function).parameters and trigger_arg != "context":
        kwargs["context"] = context
    result = user_function(**kwargs)
    if inspect.iscoroutine(result):
        # The Python worker runs async functions on its event loop; one loop per call is enough here.
        result = asyncio.run(result)
    return result


@dataclass
class HostedFunction:
    """A function of the app, as one trigger kind hosts it."""

    function: Function
    name: str
    kind: str  # http | timer | blob | queue
    trigger_arg: str


# --------------------------------------------------------------------------------------------------
# Trigger kinds


class Trigger(Protocol):
    """One trigger kind the host runs (binding ``binding_type``)."""

    binding_type: str  # as the worker's indexing names it: "httpTrigger", "timerTrigger", ...

    def add(self, function: Function, name: str, trigger: Any, env: Mapping[str, str]) -> None:
        """Host ``function``; raise ``HostStartupError`` when it cannot be hosted as declared."""

    def names(self) -> list[str]: ...

    def clear(self) -> None:
        """Forget every function (a failed indexing)."""

    def start(self) -> None:
        """Start polling or scheduling (on ``Runtime`` threads); the HTTP kind starts with the server."""


class ManualTrigger(Trigger, Protocol):
    """A trigger kind that can be fired by hand (the admin API, ``LocalFunctionsHost.trigger``)."""

    input_hint: str | None  # what ``input`` must be (None: ignored)

    def fire(self, name: str, input: str | None) -> Invocation:  # noqa: A002 - the admin API's name
        """Run ``name`` now and wait for it."""


# --------------------------------------------------------------------------------------------------
# The runtime: invocation records, counters and threads shared by the trigger kinds


class Runtime:
    """The invocations so far, per-function counters (blob scans) and every thread of one host."""

    def __init__(self, thread_prefix: str) -> None:
        # Thread names carry a per-host prefix, so leaks can be attributed (and tested) per host.
        self.thread_prefix = thread_prefix
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self._changed = threading.Condition(self.lock)
        self._invocations: list[Invocation] = []
        self._counters: dict[str, int] = {}
        self._threads: list[threading.Thread] = []
        self._workers: set[threading.Thread] = set()

    @property
    def invocations(self) -> list[Invocation]:
        with self.lock:
            return list(self._invocations)

    def record(self, invocation: Invocation, *, quiet: bool = False) -> None:
        with self._changed:
            self._invocations.append(invocation)
            self._changed.notify_all()
        if quiet:
            return
        level = logging.INFO if invocation.outcome != "failed" else logging.ERROR
        log.log(
            level,
            "function %s (%s) %s in %.3fs%s",
            invocation.function,
            invocation.trigger,
            invocation.outcome,
            invocation.duration_s,
            f": {invocation.error}" if invocation.error else "",
        )

    def count(self, counter: str) -> None:
        with self._changed:
            self._counters[counter] = self._counters.get(counter, 0) + 1
            self._changed.notify_all()

    def invoke(
        self, hosted: HostedFunction, value: Any, detail: Mapping[str, Any], retry: tuple[int, int] = (0, 0)
    ) -> tuple[Invocation, Any]:
        """Call the function; a raise is a failed invocation (traceback logged, never propagated)."""
        started_at = datetime.now(UTC)
        began = time.monotonic()
        directory = str(Path(hosted.function.function_script_file).parent)
        context = Context(hosted.name, directory, _RetryContext(*retry))
        result: Any = None
        outcome, message = "succeeded", None
        try:
            result = call_user_function(hosted.function, hosted.trigger_arg, value, context)
        except Exception as error:  # noqa: BLE001 - a function failure is data for the host
            log.error(
                "function %s raised (invocation %s):\n%s", hosted.name, context.invocation_id, traceback.format_exc()
            )
            outcome, message = "failed", f"{type(error).__name__}: {error}"
        duration = time.monotonic() - began
        invocation = Invocation(hosted.name, hosted.kind, started_at, duration, outcome, message, dict(detail))
        self.record(invocation)
        return invocation, result

    def wait_for_invocations(
        self, function: str, count: int, timeout: float = 10.0, outcome: str | None = None
    ) -> list[Invocation]:
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = [
                    i for i in self._invocations if i.function == function and (outcome is None or i.outcome == outcome)
                ]
                remaining = deadline - time.monotonic()
                if len(found) >= count or remaining <= 0:
                    if len(found) < count:
                        raise TimeoutError(f"{function}: {len(found)} of {count} invocations after {timeout}s")
                    return found
                self._changed.wait(remaining)

    def wait_for_count(self, counter: str, more: int, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        with self._changed:
            target = self._counters.get(counter, 0) + more
            while self._counters.get(counter, 0) < target:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"{what} did not complete in {timeout}s")
                self._changed.wait(remaining)

    def spawn(self, name: str, target: Callable[..., None], *args: Any) -> None:
        """A long-lived thread (server, scheduler, poller), joined by ``join``."""
        # Daemon threads as a last resort only: join() waits for them; daemon just means a hung user
        # function cannot keep the interpreter alive after a failed test.
        thread = threading.Thread(target=target, args=args, name=f"{self.thread_prefix}{name}", daemon=True)
        self._threads.append(thread)
        thread.start()

    def spawn_worker(self, name: str, target: Callable[..., Any], *args: Any) -> threading.Thread:
        """A thread for one invocation; it forgets itself when done."""

        def run() -> None:
            try:
                target(*args)
            finally:
                with self.lock:
                    self._workers.discard(threading.current_thread())

        thread = threading.Thread(target=run, name=f"{self.thread_prefix}{name}", daemon=True)
        with self.lock:
            self._workers.add(thread)
        thread.start()
        return thread

    def join(self, timeout: float) -> None:
        """Wait up to ``timeout`` for every thread (after ``stop`` is set)."""
        deadline = time.monotonic() + timeout
        with self.lock:
            workers = list(self._workers)
        for thread in [*self._threads, *workers]:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                log.warning("thread %s still running after stop(); it is a daemon and dies with us", thread.name)
        self._threads.clear()
