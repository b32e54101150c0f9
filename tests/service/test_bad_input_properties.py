"""Bad input at every entry point, generated: each gets a clear error or a recorded ``Rejected``, nothing
crashes, and the state store's records still load after every example.

The entry points and what "a clear error" is there:

* the blob trigger (``Fleet.receive_release_blob``, what ``release_uploaded`` calls): any blob name and
  content is ``Ignored`` (not a release by name), ``Rejected`` with its reason recorded, or a release
  that starts or is queued;
* HTTP: every route of ``function_app.py``, called as the Functions host calls it (the decorated
  function's user code with a ``func.HttpRequest``) over the in-memory fakes (``tests/cli/apiserver.py``):
  any method, id, verb, body, query string and headers (and, behind App Service authentication, any
  client principal) is answered with a status the API documents, an error as JSON with an ``error`` text,
  never a 500 and never through the app's last-resort handler. The routes are read from the app, so a
  route added later is covered too;
* the queue trigger (``advance_target``): any message is ticked or dropped with a log line;
* the notification trigger (``deliver_notification``): any message that is not a notification is dropped
  with a log line;
* settings (``load_settings``, ``load_fanout_settings``, ``http_auth_at_startup``): any string for any
  setting gives settings or a ``SettingsError`` naming that setting;
* the targets document (``TargetsLoader`` over a document blob) and tag discovery: any bytes, JSON or
  YAML give a configuration or its problems, never an exception;
* the policy's thresholds (``RolloutPolicy``'s knobs, in app settings and in a target's ``policy``): any
  value gives a policy whose every field is within its bounds, or an error naming the setting.

"The records still load": every row the fake store holds is encoded and decoded again with the Tables
adapter's own encoders (what Azure Tables would hand back), and every rollout renders as the API's JSON.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import re
import string
from collections.abc import Iterator
from datetime import UTC, datetime
from types import ModuleType, SimpleNamespace
from typing import Any
from urllib.parse import quote

import azure.functions as func
import pytest
import yaml
from azure.core.exceptions import ResourceNotFoundError
from azure.functions.queue import QueueMessage
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import function_app
from emulator import appindex
from emulator.easyauth import PLATFORM_ENV
from rollout.access import OPERATE_ROLE, READ_ROLE
from rollout.adapters.tables import (
    event_from_entity,
    event_to_entity,
    group_release_from_entity,
    group_release_to_entity,
    rollout_from_entity,
    rollout_to_entity,
    target_from_entity,
    target_to_entity,
)
from rollout.bootstrap import (
    fanout_from_environment,
    fleet_from_environment,
    group_service_from_environment,
    service_from_environment,
)
from rollout.fanout import TickMessage
from rollout.fleet import TargetsLoader
from rollout.knobs import bound_problem, knob_fields
from rollout.machine import Verb
from rollout.model import Phase
from rollout.notifications import SCHEMA, Envelope, NotificationError, NotificationKind
from rollout.policy import RolloutPolicy
from rollout.releases import ROLLOUT_ID_RE
from rollout.service import OutcomeStatus
from rollout.settings import (
    SETTINGS_READ,
    ProbeSettings,
    SettingsError,
    http_auth_at_startup,
    load_fanout_settings,
    load_settings,
)
from rollout.targets import TargetRef
from rollout.targets_doc import (
    TaggedScaleSet,
    TargetDefaults,
    TargetsDocumentError,
    config_from_data,
    groups_from_tags,
)
from rollout.views import group_release_detail, rollout_detail
from tests.cli.apiserver import HTTP_FUNCTIONS, FakeWorld, load_function_app
from tests.fakes import FakeReleaseBlob, FakeStore
from tests.service.test_fleet import document_world
from tests.service.test_fleet import settings as grouped_settings

SUB = "00000000-0000-0000-0000-000000000001"
REQUIRED = {"AZURE_SUBSCRIPTION_ID": SUB, "VMSS_RESOURCE_GROUP": "rg", "VMSS_NAME": "vmss", "StateStorage": "x"}
FAST = settings(
    max_examples=200,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)

# Text of every kind (unpaired surrogates and controls included), and text that means something somewhere.
any_text = st.text(st.characters(exclude_categories=()), max_size=60)
nasty = st.text(
    st.sampled_from(list("/\\#?%~'\"&=+ .\t\n\r\x00\x1f\x7f\x85\u2028\ud800\udfff-_vV09af.shimagejson²١")),
    max_size=40,
)
numbers_as_text = st.one_of(
    st.integers(-(10**30), 10**30).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.sampled_from(
        ["nan", "NaN", "inf", "-inf", "Infinity", "1e309", "-0", "0x10", "1_000", "²", "١٢", "٣.٥", "1e-400"]
    ),
    st.sampled_from(["", " ", "25%", "0%", "100%", "101%", "%", "9" * 5000, "true", "True", "yes", "0", "1"]),
)
setting_values = st.one_of(any_text, nasty, numbers_as_text)


# --- the state store after each example ---------------------------------------------------------


def assert_records_load(store: FakeStore) -> None:
    """Every row round-trips through the Tables adapter's encoders, and every rollout renders."""
    for (target, rollout_id), rollout in store.rollouts.items():
        back = rollout_from_entity(rollout_to_entity(rollout), rollout.etag)
        assert back == rollout, (target, rollout_id)
        json.dumps(rollout_detail(rollout, store.list_events(target, rollout_id)))
    for record in store.targets.values():
        assert target_from_entity(target_to_entity(record), record.etag) == record
    # At most one active rollout per target, and it is the one the target's row names.
    for target in {t for t, _ in store.rollouts}:
        active = [r.id for (t, _), r in store.rollouts.items() if t == target and r.phase.is_active]
        named = store.targets[target].active_rollout_id if target in store.targets else None
        assert active == ([named] if named else []), (target, active, named)
    for record in store.group_releases.values():
        assert group_release_from_entity(group_release_to_entity(record), record.etag) == record
        json.dumps(group_release_detail(record, [], {}, {}))
    for event in store.events:
        assert event_from_entity(event_to_entity(event)) == event


# --- the blob trigger ---------------------------------------------------------------------------

release_names = st.builds(
    lambda folder, app, version, ext: f"{folder}{app}.v{version}.{ext}",
    st.sampled_from(["", "default/", "web/", "api/", "nogroup/", "../", "a/b/", "Web/", "-x/", "x" * 70 + "/"]),
    st.one_of(st.sampled_from(["install_nginx", "app", "A-1"]), st.text(string.ascii_letters + "_-.", max_size=70)),
    st.one_of(st.integers(0, 10**13), st.just(1)),
    st.sampled_from(["sh", "image.json", "SH", "json", "sh.txt"]),
)
blob_names = st.one_of(release_names, any_text, nasty)
image_ids = st.sampled_from(
    [
        "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/images/ok",
        "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/galleries/g/images/i/versions/1.0.0",
        "",
        "not an id",
        "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/images/a/../b",
    ]
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | any_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(any_text, inner, max_size=3),
    max_leaves=10,
)
blob_contents = st.one_of(
    st.binary(max_size=300),
    any_text.map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.just(b"#!/bin/bash\necho ok\n"),
    st.just(b"#!/bin/bash\nif then fi (\n"),
    st.just(b"\xef\xbb\xbf#!/bin/bash\r\necho crlf\r\n"),
    st.just(b"#!/bin/bash\n\x00\n"),
    st.builds(lambda i: json.dumps({"imageId": i}).encode(), image_ids),
    st.builds(lambda v: json.dumps(v).encode(), json_values),
    st.builds(lambda n: b"#" * n, st.integers(256 * 1024 - 2, 256 * 1024 + 2)),
)


class Grouped:
    """The fleet of a targets document (groups ``web``, the default, and ``api``; three targets in two
    waves) with the real script checker (``bash -n``): releases routed by their folder."""

    def __init__(self) -> None:
        self.inner = document_world()
        self.store, self.fleet = self.inner.store, self.inner.fleet

    def tick(self) -> None:
        self.inner.clock.advance(30)
        for _, service in self.fleet.services():
            service.tick()
        self.fleet.groups.advance()


@pytest.mark.parametrize("grouped", [False, True], ids=["one target", "groups"])
def test_any_blob_name_and_content_is_ignored_rejected_with_its_reason_or_released(grouped: bool) -> None:
    world: FakeWorld | Grouped = Grouped() if grouped else FakeWorld(size=3)
    seen: list[OutcomeStatus] = []

    @FAST
    @given(name=blob_names, content=blob_contents, gone=st.booleans())
    def one_blob(name: str, content: bytes, gone: bool) -> None:
        blob = FakeReleaseBlob(name, content)
        blob.url = f"https://acct.blob.core.windows.net/init/{quote(name.encode('utf-8', 'surrogatepass'))}"
        blob.exists = not gone
        before = dict(world.store.rollouts)
        outcome = world.fleet.receive_release_blob(blob)
        seen.append(outcome.status)
        assert outcome.status in (
            OutcomeStatus.IGNORED,
            OutcomeStatus.REJECTED,
            OutcomeStatus.ADVANCED,
            OutcomeStatus.QUEUED,
            OutcomeStatus.DUPLICATE,
        ), outcome
        assert isinstance(outcome.message, str) and outcome.message
        if outcome.status is OutcomeStatus.REJECTED:
            # Recorded: a row in Rejected with the reason, in the group's target or the unrouted partition.
            new = [r for key, r in world.store.rollouts.items() if key not in before]
            recorded = getattr(outcome, "rollout_id", None) or getattr(outcome, "release_id", None)
            assert any(r.phase is Phase.REJECTED and r.reason for r in new) or recorded, outcome
        if outcome.status is OutcomeStatus.IGNORED:
            assert world.store.rollouts == before  # nothing recorded for what is not a release
        assert_records_load(world.store)
        world.tick()  # whatever was received moves on; that must not break either
        assert_records_load(world.store)

    one_blob()
    assert {OutcomeStatus.IGNORED, OutcomeStatus.REJECTED} <= set(seen), set(seen)


# --- HTTP ---------------------------------------------------------------------------------------


def http_routes() -> dict[str, tuple[str, ...]]:
    """Every HTTP function of the app with its route's parameters (``rollouts/{id}/{verb}`` -> id, verb):
    a route added later is covered without editing this file."""
    routes = {}
    for function in appindex.functions_of(function_app.app):
        trigger = function.get_trigger()
        if trigger.get_binding_name() == "httpTrigger":
            routes[function.get_function_name()] = tuple(re.findall(r"{(\w+)(?::[^}]*)?}", trigger.route or ""))
    return routes


ROUTES = http_routes()
# The triggers that are not HTTP, each with its property below (the timer's only input is past_due).
OTHER_TRIGGERS = {"release_uploaded", "advance_target", "advance_rollouts", "deliver_notification"}
ALLOWED = {200, 400, 401, 403, 404, 409, 503}
ROLE_URI = "http://schemas.microsoft.com/ws/2008/06/identity/claims/role"
command_fields = st.fixed_dictionaries(
    {},
    optional={
        "reason": st.one_of(any_text, json_values, st.text(min_size=495, max_size=505)),
        "rollback": st.one_of(st.booleans(), json_values),
        "extra": json_values,
    },
)
bodies = st.one_of(
    st.just(b""),
    st.binary(max_size=200),
    json_values.map(lambda v: json.dumps(v).encode()),
    command_fields.map(lambda d: json.dumps(d).encode()),
    command_fields.map(lambda d: json.dumps(d, ensure_ascii=False).encode("utf-8", "surrogatepass")),
    st.integers(1, 5000).map(lambda n: b"[" * n + b"]" * n),
    st.integers(4000, 20_000).map(lambda n: b'{"reason": "' + b"a" * n + b'"}'),
)
header_values = st.one_of(
    st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=80),
    st.sampled_from(["e30=", "bm90IGpzb24=", "W10=", "eyJ1c2VyX2lkIjogMX0=", "", "Bearer x"]),
)
headers = st.dictionaries(
    st.sampled_from(
        [
            "x-ms-client-principal",
            "x-ms-client-principal-name",
            "x-ms-client-principal-id",
            "x-ms-client-principal-idp",
            "authorization",
            "content-type",
            "x-functions-key",
        ]
    ),
    header_values,
    max_size=4,
)
queries = st.one_of(
    st.dictionaries(st.sampled_from(["group", "limit", "x"]), st.one_of(any_text, nasty), max_size=2),
    st.dictionaries(st.just("group"), st.sampled_from(["web", "api", "default", "WEB", ""]), max_size=1),
    st.dictionaries(any_text, any_text, max_size=2),
)
methods = st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "get", "BREW"])


class GroupedApp:
    """The HTTP routes over a targets document's fleet (``Grouped``): groups ``web`` and ``api``, the same
    script released to both (so a bare id is ambiguous, 409), one group release rejected."""

    def __init__(self) -> None:
        self.grouped = Grouped()
        self.store, self.fleet = self.grouped.store, self.grouped.fleet
        self.groups = self.fleet.groups
        self.settings = grouped_settings(TARGETS_CONFIG="targets.yaml")
        [(_, self.service), *_] = self.fleet.services()
        for name in ("web/install_nginx.v1.sh", "api/install_nginx.v1.sh", "api/install_nginx.v2.sh"):
            self.fleet.receive_release_blob(FakeReleaseBlob(name, b"#!/bin/bash\necho same\n"))
        self.fleet.receive_release_blob(FakeReleaseBlob("web/install_nginx.v3.sh", b"#!/bin/bash\nif then\n"))
        for _ in range(3):
            self.tick()

    def tick(self) -> None:
        self.grouped.tick()


@pytest.fixture(params=["function-key", "entra", "groups"])
def world(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, ModuleType]]:
    """The function app's HTTP functions over a world of fakes: one target holding a rollout in Baking (its
    canary up), a rejected release and a queued one, with function keys or behind App Service authentication
    (``entra``: the module loaded afresh with ``HTTP_AUTH=entra``, the platform's signal on); or the fleet
    of a targets document (``groups``)."""
    mode = request.param
    for key in ("HTTP_AUTH", "WEBSITE_AUTH_ENABLED"):
        monkeypatch.delenv(key, raising=False)
    app_module = function_app
    if mode == "entra":
        app_module = load_function_app("entra", monkeypatch)
        for key, value in PLATFORM_ENV.items():
            monkeypatch.setenv(key, value)
    w: Any
    if mode == "groups":
        w = GroupedApp()
    else:
        w = FakeWorld(size=4, http_auth=mode)
        w.release("install_nginx.v1.sh")
        w.tick(3)
        w.release("install_nginx.v2.sh", b"#!/bin/bash\necho v2\n")
        rejected = w.fleet.receive_release_blob(FakeReleaseBlob("install_nginx.v3.image.json", b'{"imageId": "nope"}'))
        assert rejected.status is OutcomeStatus.REJECTED
    monkeypatch.setattr(app_module, "service_from_environment", lambda env=None: (w.settings, w.service))
    monkeypatch.setattr(app_module, "group_service_from_environment", lambda env=None: (w.settings, w.groups))
    monkeypatch.setattr(app_module, "fleet_from_environment", lambda env=None: w.fleet)
    yield w, app_module


def principal_header(claims: list[tuple[str, Any]], extra: dict[str, Any]) -> str:
    """An ``X-MS-CLIENT-PRINCIPAL`` as App Service authentication sends it: Base64 of a JSON object."""
    body = {**extra, "claims": [{"typ": t, "val": v} for t, v in claims]}
    return base64.b64encode(json.dumps(body).encode()).decode()


claim_types = st.sampled_from(["roles", "role", ROLE_URI, "name", "preferred_username", "oid", "appid", "azp", "x"])
claim_values = st.one_of(st.sampled_from([READ_ROLE, OPERATE_ROLE, "Rollouts.operate", ""]), any_text, json_values)
signed_in = st.builds(
    lambda role, name, more: principal_header([("roles", role), ("name", name), *more], {}),
    st.sampled_from([OPERATE_ROLE, READ_ROLE]),
    st.one_of(any_text, st.just("ops@example.com")),
    st.lists(st.tuples(claim_types, claim_values), max_size=2),
)
principals = st.one_of(
    signed_in,
    signed_in,
    st.builds(
        principal_header,
        st.lists(st.tuples(claim_types, claim_values), max_size=5),
        st.fixed_dictionaries({}, optional={"name_typ": st.one_of(claim_types, json_values), "role_typ": json_values}),
    ),
    st.builds(lambda v: base64.b64encode(json.dumps(v).encode()).decode(), json_values),
    st.sampled_from(["", "e30=", "not base64!", "W10=", "eyJjbGFpbXMiOiB7fX0=", "x" * 70_000]),
    any_text,
)


def test_every_entry_point_is_covered() -> None:
    assert set(HTTP_FUNCTIONS) <= set(ROUTES)  # the routes the CLI's tests serve, at least
    assert ROUTES["steer_group_target"] == ("id", "target", "verb")
    names = {f.get_function_name() for f in appindex.functions_of(function_app.app)}
    assert names - set(ROUTES) == OTHER_TRIGGERS, "a new trigger: give it a property here"


def test_no_request_to_any_route_gets_a_500_or_anything_but_json(
    world: tuple[Any, ModuleType], caplog: pytest.LogCaptureFixture
) -> None:
    world, app_module = world  # type: ignore[assignment]
    existing = sorted(rid for (_, rid) in world.store.rollouts)
    group_ids = sorted(rid for (_, rid) in world.store.group_releases)
    ids = st.one_of(
        any_text,
        nasty,
        st.sampled_from(existing + group_ids),
        st.sampled_from([i.upper() for i in existing] + [i + "\n" for i in existing] + ["x" * 5000]),
        st.from_regex(ROLLOUT_ID_RE, fullmatch=True),  # the shape of an id, no such rollout: reaches the store
    )
    verbs = st.one_of(st.sampled_from([v.value for v in Verb]), any_text, nasty)
    targets = st.one_of(st.just(world.service.target_key), any_text, nasty, st.just("x" * 300))
    seen: list[int] = []

    @FAST
    @given(
        function=st.sampled_from(sorted(ROUTES)),
        method=methods,
        rid=ids,
        verb=verbs,
        target=targets,
        body=bodies,
        hdrs=headers,
        principal=st.none() | principals,
        query=queries,
        tick=st.booleans(),
        upload=st.none() | st.tuples(blob_names, blob_contents),
    )
    def one_request(
        function: str,
        method: str,
        rid: str,
        verb: str,
        target: str,
        body: bytes,
        hdrs: dict[str, str],
        principal: str | None,
        query: dict[str, str],
        tick: bool,
        upload: tuple[str, bytes] | None,
    ) -> None:
        if upload is not None:  # whatever a blob left in the store, the routes show it
            world.fleet.receive_release_blob(FakeReleaseBlob(*upload))
        if principal is not None:
            hdrs = {**hdrs, "x-ms-client-principal": principal}
        params = {"id": rid, "verb": verb, "target": target}
        route_params = {name: params.get(name, rid) for name in ROUTES[function]}
        path = "/".join(quote(v.encode("utf-8", "surrogatepass"), safe="") for v in route_params.values())
        request = func.HttpRequest(
            method,
            f"http://localhost/api/{function}/{path}",
            headers=hdrs,
            params=query,
            route_params=route_params,
            body=body,
        )
        response = appindex.user_function(app_module.app, function)(request)
        seen.append(response.status_code)
        assert response.status_code in ALLOWED, (function, method, rid[:60], verb[:60], response.get_body()[:300])
        if function == "dashboard" and query.get("format") != "json" and response.mimetype == "text/html":
            # The dashboard answers a browser with a page, its refusals too (the message escaped in it).
            assert response.status_code != 500 and response.get_body(), (response.status_code, query)
            assert_records_load(world.store)
            return
        if response.status_code >= 400 or response.mimetype == "application/json":
            assert response.mimetype == "application/json"
            payload = json.loads(response.get_body())
        if response.status_code >= 400:
            assert isinstance(payload.get("error"), str) and 0 < len(payload["error"]) < 2000
        else:
            assert response.get_body()
        assert_records_load(world.store)
        if tick:
            world.tick()
            assert_records_load(world.store)

    with caplog.at_level(logging.ERROR):
        one_request()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert {200, 404} <= set(seen), sorted(set(seen))
    if world.settings.http_auth == "entra":
        assert {401, 403} <= set(seen), sorted(set(seen))
    if isinstance(world, GroupedApp):
        # A release of two groups named without ?group= is ambiguous: asked for directly, as the generated
        # requests reach it only now and then (more routes, fewer draws of this one).
        answers = []
        for gid in sorted({gid.split("~")[-1] for gid in group_ids}):
            request = func.HttpRequest(
                method="GET", url=f"/api/releases/{quote(gid, safe='')}", route_params={"id": gid}, body=b""
            )
            answers.append(appindex.user_function(app_module.app, "get_group_release")(request).status_code)
        assert 409 in answers, (answers, group_ids)


# --- settings -----------------------------------------------------------------------------------

APP_SETTINGS = sorted(set(SETTINGS_READ) - {"AzureWebJobsStorage__tableServiceUri"})


@FAST
@given(env=st.dictionaries(st.sampled_from(APP_SETTINGS), setting_values, min_size=1, max_size=4))
def test_any_setting_value_gives_settings_or_an_error_naming_the_setting(env: dict[str, str]) -> None:
    merged = {**REQUIRED, **env}
    try:
        loaded = load_settings(merged)
    except SettingsError as exc:
        message = str(exc)
        assert message.startswith("invalid settings: ")
        assert any(name in message for name in merged), message
        for problem in message.removeprefix("invalid settings: ").split("; "):
            assert any(name in problem for name in merged) or "(0 =" in problem, problem
    else:
        assert_policy_in_bounds(loaded.policy)
        assert_policy_in_bounds(loaded.probe)
    assert http_auth_at_startup(merged) in ("function-key", "entra")


@FAST
@given(
    env=st.dictionaries(
        st.sampled_from(["TickQueue", "TICK_QUEUE", "TICK_READ_BURST", "TICK_READ_RATE"]), setting_values
    )
)
def test_any_fanout_setting_value_gives_settings_or_an_error_naming_it(env: dict[str, str]) -> None:
    try:
        loaded = load_fanout_settings({"TickQueue": "UseDevelopmentStorage=true", **env})
    except SettingsError as exc:
        assert any(name in str(exc) for name in ("TickQueue", *env)), str(exc)
    else:
        assert loaded.read_burst >= 0 and math.isfinite(loaded.read_rate) and loaded.read_rate >= 0.1


def assert_policy_in_bounds(value: Any) -> None:
    """Every knob of a loaded policy or probe is a finite value within its declared bounds."""
    for kf in knob_fields(type(value)):
        field_value = getattr(value, kf.name)
        if isinstance(field_value, float):
            assert math.isfinite(field_value), (kf.knob.setting, field_value)
        assert bound_problem(kf.name, field_value, kf.knob) is None, (kf.knob.setting, field_value)


# --- the policy's thresholds ---------------------------------------------------------------------

POLICY_SETTINGS = sorted({kf.knob.setting for kf in knob_fields(RolloutPolicy)})
PROBE_SETTINGS = sorted({kf.knob.setting for kf in knob_fields(ProbeSettings)})


@FAST
@given(setting=st.sampled_from(POLICY_SETTINGS + PROBE_SETTINGS), value=setting_values)
def test_a_threshold_with_any_value_is_in_bounds_or_refused_by_its_name(setting: str, value: str) -> None:
    try:
        loaded = load_settings({**REQUIRED, setting: value})
    except SettingsError as exc:
        assert f"{setting}=" in str(exc) or f"{setting} " in str(exc), str(exc)
        return
    assert_policy_in_bounds(loaded.policy)
    assert_policy_in_bounds(loaded.probe)


@FAST
@given(
    setting=st.sampled_from(POLICY_SETTINGS + PROBE_SETTINGS),
    value=st.one_of(
        setting_values,
        st.integers(-(10**20), 10**20),
        st.floats(allow_nan=True, allow_infinity=True),
        st.booleans(),
        st.none(),
        json_values,
    ),
)
def test_a_targets_document_threshold_with_any_value_is_in_bounds_or_refused_by_its_name(
    setting: str, value: Any
) -> None:
    section = "policy" if setting in POLICY_SETTINGS else "probe"
    target = {"resourceGroup": "rg", "name": "a", section: {setting: value}}
    data = {"groups": [{"name": "web", "waves": [{"targets": [target]}]}]}
    try:
        config = config_from_data(data, TargetDefaults(subscription_id=SUB), "test")
    except TargetsDocumentError as exc:
        assert any(setting in p for p in exc.problems), exc.problems
        return
    [loaded] = [t for g in config.groups for w in g.waves for t in w.targets]
    assert_policy_in_bounds(loaded.policy)
    assert_policy_in_bounds(loaded.probe)


# --- the targets document and tag discovery ---------------------------------------------------------


class DocumentBlob:
    """``rollout.fleet.DocumentSource`` over one document that changes with every read."""

    container_name = "init"

    def __init__(self) -> None:
        self.content = b""
        self.etag = 0

    def read_if_changed(self, name: str, etag: str | None, max_bytes: int) -> tuple[str, bytes] | None:
        self.etag += 1
        return f'"{self.etag}"', self.content[:max_bytes]


def yaml_dump(value: Any) -> bytes:
    return yaml.safe_dump(value, allow_unicode=True).encode("utf-8", "surrogatepass")


documents = st.one_of(
    st.binary(max_size=300),
    any_text.map(lambda t: t.encode("utf-8", "surrogatepass")),
    json_values.map(lambda v: json.dumps(v).encode()),
    json_values.map(yaml_dump),
    st.sampled_from(
        [
            b"a: &x [*x]",
            b"!!python/object/apply:os.system ['true']",
            b"a: !!binary AAAA",
            b"groups: [{name: web, waves: [{targets: [{resourceGroup: rg, name: a, policy: {BATCH_MODE: [1]}}]}]}]",
            b"{'groups': 1e999}",
            b"groups:\n  - name: web\n    waves: *x\n",
            b"- - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - -",
            b"a: 2001-01-01\nb: .nan\nc: 0o17\nd: 1_000",
            b'{"groups": [], "groups": []}',
            b"[" * 3000 + b"]" * 3000,
        ]
    ),
)


@FAST
@given(content=documents, name=st.sampled_from(["targets.json", "targets.yaml", "targets.yml"]))
def test_any_targets_document_gives_a_configuration_or_its_problems(content: bytes, name: str) -> None:
    source = DocumentBlob()
    source.content = content
    config_settings = load_settings({**REQUIRED, "TARGETS_CONFIG": name, "ReleaseStorage": "x"})
    load = TargetsLoader(config_settings, source).load()
    if load.problems:
        assert load.config.groups == ()
        assert all(isinstance(p, str) and p for p in load.problems)
    else:
        assert load.config.groups
        for group in load.config.groups:
            for wave in group.waves:
                for target in wave.targets:
                    assert_policy_in_bounds(target.policy)
                    assert_policy_in_bounds(target.probe)


@FAST
@given(
    tags=st.lists(
        st.dictionaries(
            st.one_of(st.sampled_from(["canary-group", "Canary-Group", "canary-wave", "CANARY-WAVE"]), any_text),
            st.one_of(any_text, nasty, numbers_as_text),
            max_size=3,
        ),
        max_size=5,
    )
)
def test_any_tags_give_groups_or_problems(tags: list[dict[str, str]]) -> None:
    tagged = [TaggedScaleSet(TargetRef(SUB, "rg", f"s{i}"), t) for i, t in enumerate(tags)]
    groups, problems = groups_from_tags(tagged, TargetDefaults(subscription_id=SUB))
    assert all(isinstance(p, str) and p for p in problems)
    assert sum(len(w.targets) for g in groups for w in g.waves) <= len(tagged)


# --- the triggers themselves: release_uploaded with a BlobClient, advance_target with a queue message ---


class SdkBlobClient:
    """What ``release_uploaded`` gets from the blob extension (an ``azure.storage.blob.BlobClient``), as far
    as ``rollout.adapters.blobs.TriggeredBlob`` uses it: names, URL, properties, a conditional ranged read."""

    def __init__(self, name: str, content: bytes, gone: bool) -> None:
        self.container_name = "init"
        self.blob_name = name
        self.url = f"https://acct.blob.core.windows.net/init/{quote(name.encode('utf-8', 'surrogatepass'))}"
        self.content = content
        self.gone = gone

    def get_blob_properties(self) -> Any:
        if self.gone:
            raise ResourceNotFoundError("The specified blob does not exist.")
        return SimpleNamespace(size=len(self.content), etag='"0x8D1"')

    def download_blob(self, *, offset: int, length: int, etag: str, **kwargs: Any) -> Any:
        assert etag == '"0x8D1"' and offset == 0 and length <= len(self.content)
        return SimpleNamespace(readall=lambda: self.content[offset : offset + length])


@pytest.fixture
def triggered(monkeypatch: pytest.MonkeyPatch) -> FakeWorld:
    w = FakeWorld(size=3)
    monkeypatch.setattr(function_app, "fleet_from_environment", lambda env=None: w.fleet)
    return w


def test_the_blob_trigger_function_takes_any_blob_without_raising(
    triggered: FakeWorld, caplog: pytest.LogCaptureFixture
) -> None:
    release_uploaded = appindex.user_function(function_app.app, "release_uploaded")

    @FAST
    @given(name=blob_names, content=blob_contents, gone=st.booleans())
    def one_blob(name: str, content: bytes, gone: bool) -> None:
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="function_app"):
            release_uploaded(client=SdkBlobClient(name, content, gone))
        # The trigger logged what became of it (Ignored, Rejected, Advanced, Queued, Duplicate).
        assert any(r.getMessage().startswith("release_uploaded init/") for r in caplog.records)
        assert_records_load(triggered.store)

    one_blob()


def tick_body(target: str) -> bytes:
    return TickMessage(target, datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC)).encode().encode()


def test_the_queue_trigger_takes_any_message_without_raising(
    triggered: FakeWorld, caplog: pytest.LogCaptureFixture
) -> None:
    advance_target = appindex.user_function(function_app.app, "advance_target")
    triggered.release("install_nginx.v1.sh")
    tick_like = st.fixed_dictionaries(
        {},
        optional={
            "v": st.one_of(st.just(1), json_values),
            "target": st.one_of(st.just(triggered.service.target_key), any_text, json_values),
            "enqueuedAt": st.one_of(st.just("2026-01-01T00:00:00+00:00"), any_text, json_values),
            "notBefore": st.one_of(st.just("2026-01-01T00:00:00"), st.just("9999-12-31T23:59:59"), any_text),
            "x": json_values,
        },
    )
    messages = st.one_of(
        st.binary(max_size=300),
        json_values.map(lambda v: json.dumps(v).encode()),
        tick_like.map(lambda d: json.dumps(d).encode()),
        st.just(tick_body(triggered.service.target_key)),
        st.just(tick_body("RG:VMSS")),
        st.just(b" " * 3000),
    )

    @FAST
    @given(body=messages)
    def one_message(body: bytes) -> None:
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="function_app"):
            advance_target(message=QueueMessage(id="m1", body=body, dequeue_count=1, pop_receipt="p"))  # type: ignore[no-untyped-call]
        # Ticked ("advance_target rg:vmss: ...") or dropped saying why ("advance_target: dropping message ...").
        assert any(r.getMessage().startswith("advance_target") for r in caplog.records)
        assert_records_load(triggered.store)

    one_message()


def test_the_notification_trigger_drops_any_message_that_is_not_a_notification(
    triggered: FakeWorld, caplog: pytest.LogCaptureFixture
) -> None:
    deliver = appindex.user_function(function_app.app, "deliver_notification")
    notification_like = st.fixed_dictionaries(
        {"schema": st.one_of(st.just(SCHEMA), any_text)},
        optional={
            "kind": st.one_of(st.sampled_from([k.value for k in NotificationKind]), any_text, json_values),
            "id": st.one_of(any_text, json_values),
            "rolloutId": st.one_of(any_text, json_values),
            "wave": json_values,
            "phaseAfter": json_values,
            "x": json_values,
        },
    )
    envelope_like = st.fixed_dictionaries(
        {"notification": st.one_of(notification_like, json_values)},
        optional={"pending": json_values, "attempt": json_values, "failures": json_values},
    )
    messages = st.one_of(
        st.binary(max_size=300),
        json_values.map(lambda v: json.dumps(v).encode()),
        envelope_like.map(lambda d: json.dumps(d).encode()),
        st.just(b" " * 3000),
    )

    @FAST
    @given(body=messages)
    def one_message(body: bytes) -> None:
        try:
            Envelope.decode(body)
        except NotificationError:
            pass
        else:
            return  # a well-formed notification: delivered (tests/integration/test_notify_delivery.py)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="function_app"):
            deliver(message=QueueMessage(id="m1", body=body, dequeue_count=1, pop_receipt="p"))  # type: ignore[no-untyped-call]
        # Dropped, saying why: a retry could not make it a notification.
        assert any(r.getMessage().startswith("deliver_notification: dropping") for r in caplog.records)
        assert_records_load(triggered.store)

    one_message()


# --- the wiring: settings the storage and ARM clients are built from ----------------------------------

WIRED_SETTINGS = [
    "StateStorage",
    "StateStorage__tableServiceUri",
    "AzureWebJobsStorage",
    "ReleaseStorage",
    "ReleaseStorage__blobServiceUri",
    "ARM_ENDPOINT",
    "ARM_CA_BUNDLE",
    "ARM_TOKEN",
    "TickQueue",
    "TickQueue__queueServiceUri",
]
connection_like = st.one_of(
    setting_values,
    st.sampled_from(
        [
            "UseDevelopmentStorage=true",
            "AccountName=x",
            "DefaultEndpointsProtocol=https;AccountName=a;AccountKey=c2VjcmV0c2VjcmV0;EndpointSuffix=core.windows.net",
            "DefaultEndpointsProtocol=https;AccountName=a;AccountKey=c2VjcmV0c2VjcmV0;BlobEndpoint=garbage",
            "https://acct.table.core.windows.net",
            "https://[::1",
            "https://host:99999",
            "http://",
            "ftp://host",
            "https://a b",
        ]
    ),
)


@FAST
@given(env=st.dictionaries(st.sampled_from(WIRED_SETTINGS), connection_like, min_size=1, max_size=3))
def test_the_clients_are_built_or_a_settings_error_names_the_setting(env: dict[str, str]) -> None:
    merged = {**REQUIRED, "StateStorage": "UseDevelopmentStorage=true", "TickQueue": "UseDevelopmentStorage=true"}
    merged.update(env)
    for wire in (
        service_from_environment,
        fleet_from_environment,
        group_service_from_environment,
        fanout_from_environment,
    ):
        try:
            wire(merged)
        except SettingsError as exc:
            assert any(name in str(exc) for name in merged), str(exc)
            assert "c2VjcmV0c2VjcmV0" not in str(exc)  # never the account key


def test_a_malformed_connection_string_is_a_500_naming_the_setting_not_an_incident(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Found by the property above: the storage client's ValueError reached the last-resort handler
    # ("internal error (incident ...)"), and the triggers failed without naming the setting.
    for key, value in {**REQUIRED, "StateStorage": "AccountKey=c2VjcmV0c2VjcmV0"}.items():
        monkeypatch.setenv(key, value)
    for key in ("HTTP_AUTH", "WEBSITE_AUTH_ENABLED", "StateStorage__tableServiceUri", "ARM_CA_BUNDLE"):
        monkeypatch.delenv(key, raising=False)
    request = func.HttpRequest("GET", "http://localhost/api/rollouts", headers={}, params={}, route_params={}, body=b"")
    response = appindex.user_function(function_app.app, "list_rollouts")(request)
    payload = json.loads(response.get_body())
    assert response.status_code == 500
    assert payload["error"].startswith("invalid settings: StateStorage is not a valid storage connection string")
    assert "incident" not in payload["error"] and "c2VjcmV0c2VjcmV0" not in payload["error"]
