"""The admin HTTP API (``/_admin/...``): the Python control API of ``ArmEmulator`` over HTTP, for the
local twin's CLI and anything not in the test process. Same bearer token as ARM; not in the request log.
Malformed requests (a missing or mistyped field) answer 400 InvalidParameter (``gateway``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from emulator.arm.model import JSON, ArmError, ScaleSet
from emulator.arm.routes import RouteTable
from emulator.clock import SkipClock
from emulator.runtime import InstanceModel, InstanceRuntime

if TYPE_CHECKING:
    from emulator.arm.emulator import ArmEmulator

AdminAnswer = tuple[int, Any]
AdminHandler = Callable[[JSON, dict[str, str], re.Match[str]], AdminAnswer]
_SS = r"/scalesets/(?P<rg>[^/]+)/(?P<name>[^/]+)"


class AdminApi:
    def __init__(self, emu: ArmEmulator) -> None:
        self._emu = emu
        e = emu
        self.routes: RouteTable[AdminHandler] = (
            RouteTable[AdminHandler]()
            .add("POST", r"/scalesets", lambda b, q, m: self._create(b))
            .add("POST", r"/settings", lambda b, q, m: self._change_settings(b))
            .add("GET", r"/settings", lambda b, q, m: (200, self.settings()))
            .add("POST", r"/faults", lambda b, q, m: self._inject_fault(b))
            .add("DELETE", r"/faults", self._after(e.clear_faults, {"faults": []}))
            .add("GET", r"/faults", lambda b, q, m: (200, {"faults": e.faults_json()}))
            .add("GET", r"/requests", lambda b, q, m: self._requests(q))
            .add("DELETE", r"/requests", self._after(e.clear_requests, {"requests": []}))
            .add("POST", r"/images", lambda b, q, m: self._add_image(b))
            .add("GET", r"/images", lambda b, q, m: (200, {"images": e.images()}))
            .add("DELETE", r"/images", self._after(e.clear_images, {"images": []}))
            .add("POST", r"/idle", lambda b, q, m: self._idle(b))
            .add("GET", r"/clock", lambda b, q, m: (200, self.clock()))
            .add("POST", r"/clock", lambda b, q, m: self._advance_clock(b))
            .add("POST", r"/monitor", lambda b, q, m: (200, e.monitor.configure(b or {})))
            .add("GET", r"/monitor", lambda b, q, m: (200, e.monitor.describe()))
            .add("GET", _SS, lambda b, q, m: (200, e.describe(m["rg"], m["name"])))
            .add("DELETE", _SS, lambda b, q, m: self._delete(m["rg"], m["name"]))
            .add(
                "POST",
                _SS + "/scale",
                lambda b, q, m: (200, {"added": e.scale_out(m["rg"], m["name"], int(b.get("count", 1)))}),
            )
            .add("POST", _SS + "/timings", self._timings)
            .add("POST", _SS + "/release-failures", self._fail_release)
            .add("DELETE", _SS + "/release-failures", self._clear_release_failures)
            .add("POST", _SS + r"/instances/(?P<vm>[^/]+)/health", self._instance_health)
        )

    def dispatch(self, method: str, path: str, query: dict[str, str], body: Any) -> AdminAnswer:
        parts = [p for p in path.split("/") if p][1:]  # drop "_admin"
        found = self.routes.find(method, "/" + "/".join(parts))
        if found is None:
            raise ArmError(404, "NotFound", f"No admin route for {method} {path}.")
        handler, m = found
        return handler(body or {}, query, m)

    def settings(self) -> JSON:
        e = self._emu
        throttle, reads = e.throttle, e.read_limit
        return {
            "page_size": e.page_size,
            "retry_after": e.retry_after,
            "upgrade_seconds": e.default_upgrade_seconds,
            "throttle": None if throttle is None else {"capacity": throttle[0], "per_minute": throttle[1]},
            "read_limit": None if reads is None else {"capacity": reads[0], "per_second": reads[1]},
            "reads_throttled": e.reads_throttled,
            "model_applied": e.model_applied,
            "upgrade_while_updating": e.upgrade_while_updating,
            "flexible_model_applied": e.flexible_model_applied,
            "readable_scopes": None if e.readable_scopes is None else list(e.readable_scopes),
        }

    def _change_settings(self, body: JSON) -> AdminAnswer:
        e = self._emu
        if "page_size" in body:
            e.set_page_size(int(body["page_size"]))
        if "retry_after" in body or "upgrade_seconds" in body:
            e.set_timings(retry_after=body.get("retry_after"), upgrade_seconds=body.get("upgrade_seconds"))
        if "throttle" in body:
            t = body["throttle"]
            e.set_throttling(
                None if t is None else float(t.get("capacity", 12)), 4.0 if t is None else float(t.get("per_minute", 4))
            )
        if "read_limit" in body:
            r = body["read_limit"]
            e.set_read_limit(
                None if r is None else float(r.get("capacity", 250)),
                25.0 if r is None else float(r.get("per_second", 25)),
            )
        if "model_applied" in body or "upgrade_while_updating" in body or "flexible_model_applied" in body:
            e.set_semantics(
                model_applied=body.get("model_applied"),
                upgrade_while_updating=body.get("upgrade_while_updating"),
                flexible_model_applied=body.get("flexible_model_applied"),
            )
        if "readable_scopes" in body:
            e.set_readable_scopes(body["readable_scopes"])
        return 200, self.settings()

    @staticmethod
    def _after(action: Callable[[], None], answer: JSON) -> AdminHandler:
        """A handler that runs ``action`` and answers 200 ``answer``."""

        def handler(body: JSON, query: dict[str, str], m: re.Match[str]) -> AdminAnswer:
            action()
            return 200, dict(answer)

        return handler

    def _add_image(self, body: JSON) -> AdminAnswer:
        self._emu.add_image(str(body["id"]))
        return 201, {"images": self._emu.images()}

    def _idle(self, body: JSON) -> AdminAnswer:
        self._emu.wait_idle(float(body.get("timeout", 30)))
        return 200, {}

    def clock(self) -> JSON:
        """The emulator's clock (emulator/clock.py), for whoever drives one that skips idle time: ``now`` (epoch
        seconds, virtual), ``offset`` (virtual - real), ``next_event_in`` (seconds until the next waiting
        operation is due, or None) and ``in_flight`` (operations due whose applies are not handed to the pool
        yet, plus applies running on it)."""
        clock = self._emu.clock
        next_event_in, in_flight = self._emu.operations.pending()
        return {
            "skips": clock.skips,
            "now": clock.time(),
            "offset": clock.offset if isinstance(clock, SkipClock) else 0.0,
            "next_event_in": next_event_in,
            "in_flight": in_flight,
        }

    def _advance_clock(self, body: JSON) -> AdminAnswer:
        """``{"advance": seconds}``: jump a clock that skips idle time forward (400 on a real-time emulator, or
        for a negative or non-numeric jump)."""
        clock = self._emu.clock
        if not isinstance(clock, SkipClock):
            raise ArmError(
                400, "InvalidParameter", "this emulator runs on real time (start it with --skip-clock to jump it)"
            )
        seconds = body.get("advance")
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not seconds >= 0:
            raise ArmError(400, "InvalidParameter", f"advance must be a number of seconds >= 0, not {seconds!r}")
        clock.advance(float(seconds))
        return 200, self.clock()

    def _inject_fault(self, body: JSON) -> AdminAnswer:
        self._emu.inject_fault(
            body.get("method", "*"),
            body["path_regex"],
            int(body["status"]),
            count=int(body.get("count", 1)),
            body=body.get("body"),
            headers=body.get("headers"),
        )
        return 201, {"faults": self._emu.faults_json()}

    def _requests(self, query: dict[str, str]) -> AdminAnswer:
        records = self._emu.requests(
            query.get("method"),
            query.get("path_contains"),
            path_regex=query.get("path_regex"),
            include_polls=query.get("include_polls") == "true",
        )
        return 200, {"requests": [r.to_json() for r in records]}

    def _delete(self, rg: str, name: str) -> AdminAnswer:
        self._emu.scale_set(rg, name)  # 404 when missing
        self._emu.delete_scale_set(rg, name)
        return 200, {}

    def _timings(self, body: JSON, query: dict[str, str], m: re.Match[str]) -> AdminAnswer:
        self._emu.set_timings(m["rg"], m["name"], upgrade_seconds=body.get("upgrade_seconds"))
        return 200, self._emu.describe(m["rg"], m["name"])

    def _fail_release(self, body: JSON, query: dict[str, str], m: re.Match[str]) -> AdminAnswer:
        self._emu.fail_release(
            m["rg"],
            m["name"],
            body["pattern"],
            mode=body.get("mode", "extension"),
            stderr=body.get("stderr", "install failed: injected failure"),
        )
        return 200, self._emu.describe(m["rg"], m["name"])

    def _clear_release_failures(self, body: JSON, query: dict[str, str], m: re.Match[str]) -> AdminAnswer:
        self._emu.clear_release_failures(m["rg"], m["name"])
        return 200, self._emu.describe(m["rg"], m["name"])

    def _instance_health(self, body: JSON, query: dict[str, str], m: re.Match[str]) -> AdminAnswer:
        self._emu.set_instance_health(
            m["rg"], m["name"], m["vm"], bool(body.get("healthy", True)), vm_health=body.get("vm_health")
        )
        return 200, self._emu.describe(m["rg"], m["name"])

    def _create(self, body: JSON) -> AdminAnswer:
        """A scale set with ``instances`` instances whose runtimes are of kind ``runtime``."""
        ext = body.get("extension")
        kind = body.get("runtime", "synthetic")
        if kind not in self._emu.runtime_kinds:
            raise ArmError(
                400, "InvalidParameter", f"Unknown runtime kind {kind!r}; known: {sorted(self._emu.runtime_kinds)}"
            )
        holder: dict[str, ScaleSet] = {}
        builder = self._emu.runtime_kinds[kind]

        def lazy_factory(address: str, initial: InstanceModel) -> InstanceRuntime:
            # The builder needs the scale set (its failure rules), which exists only once created.
            return builder(holder["ss"], body)(address, initial)

        rg, name = body["resource_group"], body["name"]
        try:
            scale_set = self._emu.create_scale_set(
                rg,
                name,
                0,
                location=body.get("location", "westeurope"),
                orchestration_mode=body.get("orchestration_mode", "Uniform"),
                upgrade_mode=body.get("upgrade_mode", "Manual"),
                image_id=body.get("image_id"),
                extension_settings=None if ext is None else ext.get("settings", {}),
                extension_protected_settings=None if ext is None else ext.get("protected_settings"),
                extension_name="CustomScript" if ext is None else ext.get("name", "CustomScript"),
                extension_properties=None if ext is None else ext.get("properties"),
                tags=_tags(body.get("tags")),
                upgrade_seconds=body.get("upgrade_seconds"),
                runtime_factory=lazy_factory,
            )
        except KeyError as err:
            raise ArmError(400, "InvalidParameter", f"missing {err}") from err
        holder["ss"] = scale_set
        for _ in range(int(body.get("instances", 3))):
            self._emu.fleet.start_instance(scale_set, provisioning=False)
        return 201, self._emu.describe(rg, name)


def _tags(value: Any) -> dict[str, str] | None:
    """A scale set's tags from an admin body: an object of text values (ARM's TrackedResource.tags)."""
    if value is None:
        return None
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ArmError(400, "InvalidParameter", "tags must be an object of text values")
    return dict(value)
