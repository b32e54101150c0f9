"""``LocalFunctionsHost``: the facade that indexes the app, hands each function to its trigger kind,
and starts and stops them together (see the package docstring)."""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from emulator.easyauth import PLATFORM_ENV, EasyAuth, EasyAuthSettings
from emulator.funchost.admin import AdminApi
from emulator.funchost.blob import DEFAULT_MAX_DEQUEUE_COUNT, BlobTrigger
from emulator.funchost.core import (
    HostStartupError,
    Invocation,
    ManualTrigger,
    Runtime,
    Trigger,
    index_app,
    load_app,
    log,
)
from emulator.funchost.environment import EnvExport
from emulator.funchost.http import HttpFunction, HttpTrigger
from emulator.funchost.keys import KEYS_FILE, HostKeys
from emulator.funchost.queue import QueueOptions, QueueTrigger
from emulator.funchost.timer import TimerTrigger

_HOST_SERIAL = itertools.count(1)
T = TypeVar("T")


def _once_started(value: T | None) -> T:
    """What ``start()`` sets up (keys, state dir), or an error before it."""
    if value is None:
        raise RuntimeError("host not started")
    return value


class LocalFunctionsHost:
    """Hosts one app in-process: HTTP server, timer threads, blob pollers. See the package docstring."""

    def __init__(
        self,
        app: Any,
        *,
        env: Mapping[str, str] | None = None,
        http_host: str = "127.0.0.1",
        http_port: int = 7071,
        route_prefix: str = "api",
        timer_period_seconds: float | None = None,
        blob_poll_seconds: float = 1.0,
        blob_max_dequeue_count: int = DEFAULT_MAX_DEQUEUE_COUNT,
        state_dir: str | Path | None = None,
        keys: HostKeys | None = None,
        export_env: bool = True,
        functions: Iterable[str] | None = None,
        easy_auth: EasyAuthSettings | None = None,
        max_url_bytes: int | None = None,
        queue_options: QueueOptions | None = None,
    ) -> None:
        self.app = load_app(app) if isinstance(app, str) else app
        self._env_overrides = dict(env or {})
        if easy_auth is not None:
            # The platform tells the app that App Service authentication is on; a caller's env cannot override it.
            self._env_overrides.update(PLATFORM_ENV)
        self._http_address = (http_host, http_port)
        self._given_state_dir = Path(state_dir) if state_dir is not None else None
        self._given_keys = keys
        self._export_env = export_env
        self._only = set(functions) if functions is not None else None
        self._runtime = Runtime(f"funchost{next(_HOST_SERIAL)}-")
        self.thread_prefix = self._runtime.thread_prefix
        self._env = EnvExport()
        self._keys: HostKeys | None = None
        self._state_dir: Path | None = None
        self._owns_state_dir = False
        self._started = False
        self._http = HttpTrigger(
            self._runtime,
            lambda: self.keys,
            route_prefix=route_prefix,
            easy_auth=EasyAuth(easy_auth) if easy_auth is not None else None,
            max_url_bytes=max_url_bytes,
        )
        self._timers = TimerTrigger(self._runtime, timer_period_seconds)
        self._blobs = BlobTrigger(self._runtime, blob_poll_seconds, blob_max_dequeue_count)
        self._queues = QueueTrigger(self._runtime, queue_options or QueueOptions())
        # One entry per trigger kind: a new kind is one more module and one more entry.
        self._manual_kinds: list[ManualTrigger] = [self._timers, self._blobs, self._queues]
        self._admin = AdminApi(self._runtime, lambda: self.keys, self._manual_functions, lambda: self.function_names)

    # ---- what callers read ------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return self._http.url

    @property
    def api_url(self) -> str:
        return f"{self.url}/{self._http.route_prefix}" if self._http.route_prefix else self.url

    @property
    def keys(self) -> HostKeys:
        return _once_started(self._keys)

    @property
    def function_key(self) -> str:
        return self.keys.function_key

    @property
    def master_key(self) -> str:
        return self.keys.master_key

    @property
    def state_dir(self) -> Path:
        return _once_started(self._state_dir)

    @property
    def max_url_bytes(self) -> int | None:
        return self._http.max_url_bytes

    @property
    def http_functions(self) -> list[HttpFunction]:
        """The HTTP functions in routing order (route, methods, auth level)."""
        return list(self._http.functions)

    @property
    def invocations(self) -> list[Invocation]:
        """A snapshot of every invocation so far, in completion order."""
        return self._runtime.invocations

    @property
    def function_names(self) -> list[str]:
        return [*self._http.names(), *(name for kind in self._manual_kinds for name in kind.names())]

    def trigger_kind_of(self, name: str) -> str:
        """``timer``, ``blob``... for a function fired by its trigger, ``http`` for an HTTP one."""
        kind = self._manual_functions().get(name)
        return kind.binding_type.removesuffix("Trigger") if kind is not None else "http"

    def blob_receipts(self) -> dict[str, dict[str, Any]]:
        return self._blobs.receipts()

    def wait_for_invocations(
        self, function: str, count: int, timeout: float = 10.0, outcome: str | None = None
    ) -> list[Invocation]:
        """Block until ``function`` has ``count`` invocations (with ``outcome`` if given); return them."""
        return self._runtime.wait_for_invocations(function, count, timeout, outcome)

    def wait_for_blob_scans(self, function: str, count: int, timeout: float = 10.0) -> None:
        """Block until ``count`` more full scans of ``function``'s container have completed.

        "Nothing fired after N scans" is a real negative assertion; "nothing fired after a sleep" is not.
        """
        self._blobs.wait_for_scans(function, count, timeout)

    def wait_for_queue_polls(self, function: str, count: int, timeout: float = 10.0) -> None:
        """Block until ``count`` more polls of ``function``'s queue have completed (a real negative assertion)."""
        self._queues.wait_for_polls(function, count, timeout)

    def queue_of(self, function: str) -> str:
        """The queue a queue-triggered function reads (``%SETTING%`` resolved)."""
        return self._queues.queue_of(function)

    # ---- lifecycle --------------------------------------------------------------------------------

    def start(self) -> LocalFunctionsHost:
        if self._started:
            raise RuntimeError("host already started")
        # Index and validate everything before binding a socket or starting a thread, so a bad
        # setting fails start() cleanly with nothing to tear down.
        self._index({**os.environ, **self._env_overrides})
        self._prepare_state()
        if self._export_env:
            self._env.apply(self._env_overrides)
        self._started = True
        try:
            self._http.serve(*self._http_address, self._admin.handle)
            for kind in self._manual_kinds:
                kind.start()
        except BaseException:
            self.stop()
            raise
        log.info("host started at %s: %s", self.url, ", ".join(self.function_names))
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server and every thread; wait for running invocations up to ``timeout``."""
        if not self._started:
            return
        self._runtime.stop.set()
        self._http.shutdown()
        self._runtime.join(timeout)
        self._env.restore()
        if self._owns_state_dir and self._state_dir is not None:
            shutil.rmtree(self._state_dir, ignore_errors=True)
        self._started = False
        log.info("host stopped")

    def __enter__(self) -> LocalFunctionsHost:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def trigger(self, name: str, input: str | None = None) -> Invocation:  # noqa: A002 - admin API name
        """Fire a non-HTTP function now and wait for it (the admin API does the same, asynchronously).

        A timer that is already running is skipped (the singleton lock), as a scheduled firing would be.
        """
        kind = self._manual_functions().get(name)
        if kind is None:
            raise KeyError(f"no timer, blob or queue function named {name!r}")
        return kind.fire(name, input)

    # ---- indexing ---------------------------------------------------------------------------------

    def _manual_functions(self) -> dict[str, ManualTrigger]:
        return {name: kind for kind in self._manual_kinds for name in kind.names()}

    def _index(self, env: Mapping[str, str]) -> None:
        every: list[Trigger] = [self._http, *self._manual_kinds]
        kinds = {kind.binding_type: kind for kind in every}
        problems: list[str] = []
        for function in index_app(self.app):
            name = function.get_function_name() or function.get_user_function().__name__
            if self._only is not None and name not in self._only:
                continue
            trigger = function.get_trigger()
            kind = kinds.get(str(trigger.type) if trigger is not None else "")
            if kind is None:
                log.warning("function %s: trigger %s is not emulated; not hosted", name, trigger and trigger.type)
                continue
            try:
                kind.add(function, name, trigger, env)
            except HostStartupError as error:
                problems.append(str(error))
        if problems:
            for kind in kinds.values():
                kind.clear()
            raise HostStartupError("cannot host the app:\n  " + "\n  ".join(problems))

    def _prepare_state(self) -> None:
        if self._given_state_dir is not None:
            self._state_dir = self._given_state_dir
            self._state_dir.mkdir(parents=True, exist_ok=True)
        else:
            self._state_dir = Path(tempfile.mkdtemp(prefix="funchost-"))
            self._owns_state_dir = True
        self._keys = self._given_keys or HostKeys.load_or_create(self._state_dir / KEYS_FILE)
        self._blobs.use_receipts(self._state_dir)


__all__ = ["KEYS_FILE", "LocalFunctionsHost"]
