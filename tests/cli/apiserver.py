"""The operator API for the CLI's tests: the real function app's HTTP functions, served by the local
Functions host over real HTTP (function keys, its own 401/404 answers), over a ``RolloutService`` and a
``GroupService`` on the in-memory fakes (``tests/fakes.py``). Every JSON answer is what the app itself
makes with ``rollout/views.py``; only the backends are fakes.

``auto_tick``: every request first moves the fake clock by ``tick_seconds`` and ticks the service (and
the group service), so a CLI that polls sees a rollout go through its phases in a few dozen requests.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import function_app
from emulator.easyauth import PLATFORM_ENV, EasyAuthSettings
from emulator.funchost import LocalFunctionsHost
from rollout.fleet import UNROUTED_KEY, Fleet, TargetsLoad
from rollout.groups import GroupService
from rollout.policy import RolloutPolicy
from rollout.ports import TransientError
from rollout.releases import ExtensionDefaults, build_release, parse_release_name
from rollout.service import RolloutService
from rollout.settings import Settings, load_settings
from rollout.targets import DEFAULT_GROUP, TargetRef, single_target_config
from tests.fakes import BASE_URL, FakeClock, FakeNotifier, FakeProber, FakeScaleSet, FakeStore

HTTP_FUNCTIONS = [
    "list_targets",
    "list_rollouts",
    "get_rollout",
    "fleet_status",
    "steer_rollout",
    "list_group_releases",
    "get_group_release",
    "steer_group_release",
    "steer_group_target",
    "plan_release",
    "undo_release",
]
ROOT = Path(__file__).resolve().parents[2]
REF = TargetRef("00000000-0000-0000-0000-000000000001", "rg", "vmss")


@dataclass
class FakeWorld:
    """A scale set of fakes with the app's services over it, driven by the requests it gets."""

    size: int = 5
    policy: RolloutPolicy = field(default_factory=lambda: RolloutPolicy(bake_seconds=60, failure_threshold=2))
    auto_tick: bool = False
    http_auth: str = "function-key"
    fail_requests: int = 0  # the next N requests find a backend down (the app answers 503)
    tick_seconds: float = 30.0
    lock: threading.Lock = field(default_factory=threading.Lock)
    requests: int = 0

    def __post_init__(self) -> None:
        self.scale_set = FakeScaleSet(size=self.size)
        self.store, self.clock = FakeStore(), FakeClock()
        self.service = RolloutService(
            target_key=REF.key,
            compute=self.scale_set,
            prober=FakeProber(self.scale_set),
            store=self.store,
            notifier=FakeNotifier(),
            clock=self.clock,
            policy=self.policy,
            extension=ExtensionDefaults(),
            release_container_url=BASE_URL,
        )
        self.settings: Settings = load_settings(
            {
                "AZURE_SUBSCRIPTION_ID": REF.subscription_id,
                "VMSS_RESOURCE_GROUP": REF.resource_group,
                "VMSS_NAME": REF.name,
                "StateStorage": "UseDevelopmentStorage=true",
                "HTTP_AUTH": self.http_auth,
            }
        )
        config = single_target_config(REF, self.policy, self.settings.probe)
        self.groups = GroupService(config=config, store=self.store, services={REF.key: self.service}, clock=self.clock)
        self.unrouted = RolloutService(
            target_key=UNROUTED_KEY,
            compute=self.scale_set,
            prober=FakeProber(self.scale_set),
            store=self.store,
            notifier=FakeNotifier(),
            clock=self.clock,
            policy=self.policy,
            extension=ExtensionDefaults(),
        )
        self.fleet = Fleet(TargetsLoad(config), lambda target: self.service, self.unrouted, self.groups)

    def release(self, name: str, content: bytes | None = None, group: str | None = None) -> str:
        """What the blob trigger does for an upload of ``[<group>/]name`` (``Fleet.receive_release_blob``): the
        group (the default one: the VMSS_* scale set) receives it and starts its rollout. Returns the id."""
        parsed = parse_release_name(name)
        assert not isinstance(parsed, str), parsed
        body = content if content is not None else f"#!/bin/bash\necho {name}\n".encode()
        url = f"{BASE_URL}/{group + '/' if group else ''}{name}"
        with self.lock:
            outcome = self.groups.receive_release(group or DEFAULT_GROUP, build_release(parsed, url, body))
        assert outcome.release_id, outcome
        return outcome.release_id

    def tick(self, n: int = 1) -> None:
        with self.lock:
            for _ in range(n):
                self.clock.advance(self.tick_seconds)
                self.service.tick()
                self.groups.advance()

    def before_request(self) -> None:
        self.requests += 1
        if self.fail_requests > 0:
            self.fail_requests -= 1
            raise TransientError("Tables: 503 Server Busy (injected)")
        if self.auto_tick:
            self.tick()


def load_function_app(http_auth: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """function_app.py imported afresh with HTTP_AUTH set, as a worker process starting with it would."""
    monkeypatch.setenv("HTTP_AUTH", http_auth)
    spec = importlib.util.spec_from_file_location(
        f"function_app_cli_{http_auth.replace('-', '_')}", ROOT / "function_app.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextmanager
def serve(
    world: FakeWorld,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    *,
    app_module: ModuleType = function_app,
    easy_auth: EasyAuthSettings | None = None,
    functions: list[str] = HTTP_FUNCTIONS,
) -> Iterator[LocalFunctionsHost]:
    """The function app's HTTP functions over ``world``, on a free port: with a function key, or behind
    App Service authentication (``easy_auth``, with ``app_module`` loaded for ``HTTP_AUTH=entra``)."""
    if easy_auth is not None:
        for name, value in PLATFORM_ENV.items():
            monkeypatch.setenv(name, value)

    def services(env: Any = None) -> tuple[Settings, RolloutService]:
        world.before_request()
        return world.settings, world.service

    def groups(env: Any = None) -> tuple[Settings, GroupService]:
        return world.settings, world.groups

    monkeypatch.setattr(app_module, "service_from_environment", services)
    monkeypatch.setattr(app_module, "group_service_from_environment", groups)
    monkeypatch.setattr(app_module, "fleet_from_environment", lambda env=None: world.fleet)
    host = LocalFunctionsHost(
        app_module.app,
        easy_auth=easy_auth,
        http_port=0,
        functions=functions,
        state_dir=tmp_path / "host",
        export_env=False,
    )
    with host:
        yield host
