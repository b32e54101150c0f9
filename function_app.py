"""The function app: triggers only. Each parses its input, calls ``rollout.service``, maps the result.

* ``release_uploaded`` (blob, Event Grid source, bound to a ``BlobClient``): a release blob landed ->
  check its size, read it, then start, queue or reject it.
* ``advance_rollouts`` (timer): put one message per target with work on the tick queue (``rollout.fanout``),
  then move every group's release across its waves (``rollout.groups``).
* ``advance_target`` (Storage queue): advance that one target one level-triggered step.
* ``deliver_notification`` (Storage queue): send one phase change to the configured channels
  (``rollout.notifications``), retrying failed channels with backoff, then dead-lettering them.
* ``list_targets`` (HTTP): the targets in force (groups, waves, targets, their state, load errors).
* ``list_rollouts`` / ``get_rollout`` / ``steer_rollout`` / ``fleet_status`` (HTTP): status, the
  operator verbs abort, pause, resume, promote, promote-full, retry, and the live fleet.
* ``plan_release`` / ``undo_release`` (HTTP): the what-if of a release, and undo of the stable release. Who may call
  them is ``HTTP_AUTH`` (``rollout.access``): function keys, or App Service authentication with
  Microsoft Entra ID app roles. Every answer is JSON; 500 only for a misconfigured app.
* ``dashboard`` (HTTP): one self-contained HTML page over the same data (``rollout.dashboard``).

Runs unchanged under ``func start`` (Core Tools) and in Azure; locally ``emulator.funchost`` fires
the same functions.
"""

from __future__ import annotations

import json
import logging
import os
import re
import uuid
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, TypeGuard

import azure.functions as func
import azurefunctions.extensions.bindings.blob as blob

from rollout import logcontext
from rollout.access import OPERATE_ROLE, READ_ROLE, Caller, Denied, authorize
from rollout.adapters.blobs import TriggeredBlob
from rollout.adapters.notify import deliver
from rollout.bootstrap import (
    build_channels,
    build_notification_queue,
    fanout_from_environment,
    fleet_from_environment,
    group_service_from_environment,
    notify_settings_from_environment,
    service_from_environment,
)
from rollout.dashboard import collect as dashboard_data
from rollout.dashboard import error_page, new_nonce, page_headers, refresh_seconds, render_page
from rollout.dashboard import json_headers as dashboard_json_headers
from rollout.fanout import TickMessageError, decode_tick
from rollout.fleet import Fleet
from rollout.groups import (
    AmbiguousGroupReleaseError,
    GroupReleaseNotFoundError,
    GroupService,
    GroupTargetNotFoundError,
    UnknownTargetError,
)
from rollout.logcontext import log_context
from rollout.machine import CommandError, Verb
from rollout.notifications import Envelope, NotificationError
from rollout.ports import InvalidKeyError, InvalidRecordError, PortError
from rollout.releases import MAX_VERSION, rollout_id_problem
from rollout.service import OutcomeStatus, PlanInputError, RolloutNotFoundError, RolloutService, UndoRefusedError
from rollout.settings import SettingsError, http_auth_at_startup, platform_auth_enabled
from rollout.targets_doc import route
from rollout.views import (
    fleet_json,
    group_release_detail,
    group_release_summary,
    rollout_detail,
    rollout_summary,
    target_json,
    targets_json,
)

# Auth levels are fixed when the functions are indexed, so HTTP_AUTH is read once here. In entra mode
# the routes are anonymous to the Functions host: App Service authentication in front rejects calls
# without a valid token (Return401), and "When using one of these function app-level security methods,
# you should set the HTTP-triggered function authorization level to anonymous"
# (learn.microsoft.com/azure/azure-functions/functions-bindings-http-webhook-trigger, "Secure an HTTP
# endpoint in production"). Every call still checks the principal and its app role (rollout.access),
# and fails closed (500) unless the platform says authentication is on.
HTTP_AUTH = http_auth_at_startup(os.environ)
app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS if HTTP_AUTH == "entra" else func.AuthLevel.FUNCTION)
log = logging.getLogger("function_app")
# Every log line carries the invocation id, rollout id, target and phase in force (rollout.logcontext).
logcontext.install()


# The non-HTTP triggers take the invocation's ``context`` for its ``invocation_id``. The worker passes it to a
# parameter named ``context`` whose resolved annotation is a type named ``Context``
# (Azure/azure-functions-python-worker azure_functions_worker/functions.py, ``Registry.add_function`` resolves
# ``typing.get_type_hints`` and ``is_context_required`` checks it); the ``= None`` default (Python 3.11's
# get_type_hints no longer turns it into Optional) only lets tests and tools call a trigger without one.
def _invocation(context: func.Context | None) -> str | None:
    return context.invocation_id if context is not None else None


MAX_BODY_BYTES = 4096
MAX_REASON_CHARS = 500
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f]")

# Every answer is a JSON object; a route's handler returns its status and that object.
JsonObject = Mapping[str, object]
Handler = Callable[[RolloutService, Caller], tuple[int, JsonObject]]


# The trigger hands over a BlobClient (the SDK-type binding), not the content: with func.InputStream
# the host downloads the whole blob and sends it to the worker before the function runs (in
# azure-functions 1.26 InputStream wraps those bytes; read(n) only slices them), so a multi-GB upload
# could exhaust the worker's memory before any size check. Here the size is read from the blob's
# properties first; only a blob small enough to be a release is downloaded (docs/design.md, Releases).
@app.blob_trigger(
    arg_name="client",
    path="%RELEASE_CONTAINER%/{name}",
    connection="ReleaseStorage",
    source=func.BlobSource.EVENT_GRID,
)
def release_uploaded(client: blob.BlobClient, context: func.Context = None) -> None:  # type: ignore[assignment]
    with log_context(invocation_id=_invocation(context)):
        _release_uploaded(client)


def _release_uploaded(client: blob.BlobClient) -> None:
    # The blob's folder names its group (<container>/<group>/<app>.v<N>.sh; none: the default group), which
    # receives it and starts its first wave, or the refusal is recorded (rollout.fleet.Fleet, rollout.groups).
    fleet = fleet_from_environment()
    # Not closed here: the worker caches the client per binding and blob for later invocations
    # (azure-functions-python-worker, bindings/meta.py, deferred_bindings_cache).
    released = TriggeredBlob(client)
    outcome = fleet.receive_release_blob(released)
    rollout_id = getattr(outcome, "rollout_id", None) or getattr(outcome, "release_id", None)
    with log_context(rollout_id=rollout_id, phase=outcome.phase):
        _log_release(released, outcome)


def _log_release(released: TriggeredBlob, outcome: Any) -> None:
    log.info("release_uploaded %s/%s: %s %s", released.container, released.name, outcome.status, outcome.message)


@app.timer_trigger(arg_name="timer", schedule="%ROLLOUT_TICK_SCHEDULE%", run_on_startup=False)
def advance_rollouts(timer: func.TimerRequest, context: func.Context = None) -> None:  # type: ignore[assignment]
    with log_context(invocation_id=_invocation(context)):
        _advance_rollouts(timer)


def _advance_rollouts(timer: func.TimerRequest) -> None:
    """Advances no rollout itself: finds the targets with work and puts one message per target on the
    tick queue, spread over the ARM read budget (``rollout.fanout``; ``advance_target`` does the ticks),
    then moves every group's release across its waves (it reads the targets' rollouts and starts the
    next wave's targets once the last one has succeeded)."""
    due = " (past due)" if timer.past_due else ""
    result = fanout_from_environment().fan_out()
    level = logging.WARNING if result.unreadable or result.failed else logging.INFO
    log.log(level, "advance_rollouts%s: %s", due, result.summary())
    for group in fleet_from_environment().groups.advance():
        if group.status is OutcomeStatus.IDLE and group.release_id is None:
            continue  # no release in this group
        level = logging.WARNING if group.status in (OutcomeStatus.ERROR, OutcomeStatus.LOST) else logging.INFO
        log.log(level, "advance_rollouts%s group %s: %s %s", due, group.group, group.status, group.message)


# Queue trigger (Python v2 programming model: ``queue_trigger(arg_name, queue_name, connection)``,
# Azure/azure-functions-python-library azure/functions/decorators/function_app.py). The host decodes
# the message from base64 (host.json extensions.queues.messageEncoding, default base64) and retries a
# failed invocation up to maxDequeueCount (3 in host.json) times before moving the message to
# ``<queue>-poison`` (MicrosoftDocs/azure-docs articles/azure-functions/functions-bindings-storage-queue-trigger.md,
# "Poison messages"). A message that is not a tick message is logged and dropped here: retrying it
# cannot help. A message delivered twice ticks twice: a tick is level-triggered and the ETag claim
# keeps one writer per target.
@app.queue_trigger(arg_name="message", queue_name="%TICK_QUEUE%", connection="TickQueue")
def advance_target(message: func.QueueMessage, context: func.Context = None) -> None:  # type: ignore[assignment]
    with log_context(invocation_id=_invocation(context)):
        _advance_target(message)


def _advance_target(message: func.QueueMessage) -> None:
    try:
        tick = decode_tick(message.get_body())
    except TickMessageError as exc:
        log.error("advance_target: dropping message %s: %s", message.id, exc)
        return
    fleet = fleet_from_environment()
    if fleet.target(tick.target) is None:
        log.error("advance_target: dropping message %s: no target %r is configured", message.id, tick.target)
        return
    with log_context(target=tick.target):
        try:
            # A look (tick.look) is the engine's own earlier look; the tick asks for the next one itself
            # (rollout.cadence: a delayed message on this queue, picked up within host.json's
            # queues.maxPollingInterval).
            outcome = fleet.service(tick.target).tick(look=tick.look, share=tick.share)
        except PortError as exc:
            # The state store or ARM is unreachable: the next timer run enqueues this target again.
            log.warning("advance_target %s: %s", tick.target, exc)
            return
        level = logging.WARNING if outcome.status in (OutcomeStatus.ERROR, OutcomeStatus.LOST) else logging.INFO
        with log_context(rollout_id=outcome.rollout_id, phase=outcome.phase):
            looked = f" (next look at {outcome.next_look:%H:%M:%S})" if outcome.next_look else ""
            log.log(level, "advance_target %s: %s %s%s", tick.target, outcome.status, outcome.message, looked)


# Notifications (rollout.notifications, rollout.adapters.notify): the services put each phase change on the
# NOTIFY_QUEUE; this trigger delivers it to every configured channel. A channel that fails gets a new message
# for it alone, delayed by the backoff, until NOTIFY_MAX_ATTEMPTS; then the message goes to
# ``<NOTIFY_QUEUE>-poison``. Raising (only when that re-enqueue fails, or the settings are bad) leaves the
# retry to the host: maxDequeueCount (host.json) attempts, then the host's own move to ``<queue>-poison``
# (functions-bindings-storage-queue-trigger.md, "Poison messages", cited at advance_target above).
@app.queue_trigger(arg_name="message", queue_name="%NOTIFY_QUEUE%", connection="TickQueue")
def deliver_notification(message: func.QueueMessage, context: func.Context = None) -> None:  # type: ignore[assignment]
    with log_context(invocation_id=_invocation(context)):
        try:
            envelope = Envelope.decode(message.get_body())
        except NotificationError as exc:
            log.error("deliver_notification: dropping message %s: %s", message.id, exc)
            return
        n = envelope.notification
        with log_context(rollout_id=n.rollout_id, target=n.target, phase=n.phase_after):
            notify = notify_settings_from_environment()
            queue = build_notification_queue(notify)
            if queue is None:
                raise SettingsError("NOTIFY_QUEUE has no connection (TickQueue)")
            try:
                report = deliver(
                    envelope,
                    build_channels(notify),
                    queue,
                    max_attempts=notify.max_attempts,
                    base_seconds=notify.retry_base_seconds,
                )
            finally:
                queue.close()
            log.info("deliver_notification %s (%s): %s", n.id, n.kind.value, report.outcome)


@app.route(route="rollouts", methods=["GET"])
def list_rollouts(req: func.HttpRequest) -> func.HttpResponse:
    return _http(req, READ_ROLE, "list rollouts", lambda service, caller: _list(service))


@app.route(route="rollouts/{id}", methods=["GET"])
def get_rollout(req: func.HttpRequest) -> func.HttpResponse:
    def run(service: RolloutService, caller: Caller) -> tuple[int, JsonObject]:
        rollout_id = _rollout_id(req)
        try:
            return 200, rollout_detail(*service.get(rollout_id))
        except RolloutNotFoundError:
            # Not on the VMSS_* scale set: another target's, or a release that reached no target.
            return 200, rollout_detail(*fleet_from_environment().find_rollout(rollout_id, first=service))

    return _http(req, READ_ROLE, "view a rollout", run)


@app.route(route="targets", methods=["GET"])
def list_targets(req: func.HttpRequest) -> func.HttpResponse:
    """The targets in force: source, groups, waves, each target's effective policy and state, the problems of a
    configuration that cannot be used (200 all the same: the app is up, the document is the operator's)."""
    return _http(req, READ_ROLE, "view the targets", lambda service, caller: (200, _targets(fleet_from_environment())))


def _targets(fleet: Fleet) -> JsonObject:
    states: dict[str, dict[str, object]] = {}
    for target, service in fleet.services():
        states[target.key] = _target_state(service)
    try:
        unrouted = fleet.unrouted_rollouts()
    except PortError as exc:
        log.warning("reading the unrouted releases failed: %s", exc)
        unrouted = []
    return targets_json(fleet.config, fleet.problems, states, unrouted)


def _target_state(service: RolloutService) -> dict[str, object]:
    """A target's state row and its active rollout's phase; a storage error is shown for that target only."""
    try:
        record = service.store.get_target(service.target_key)
        active = None
        if record is not None and record.active_rollout_id:
            active = service.store.get_rollout(service.target_key, record.active_rollout_id)
    except PortError as exc:
        return {"error": f"the state cannot be read just now: {exc}"}
    return {
        "activeRolloutId": record.active_rollout_id if record else None,
        "activePhase": active.phase.value if active is not None else None,
        "stableVersion": record.stable_version if record else None,
        "stableRelease": record.stable_release.blob_name if record and record.stable_release else None,
    }


@app.route(route="fleet", methods=["GET"])
def fleet_status(req: func.HttpRequest) -> func.HttpResponse:
    return _http(req, READ_ROLE, "view the fleet", lambda service, caller: (200, fleet_json(service.fleet())))


@app.route(route="rollouts/{id}/{verb}", methods=["POST"])
def steer_rollout(req: func.HttpRequest) -> func.HttpResponse:
    def run(service: RolloutService, caller: Caller) -> tuple[int, JsonObject]:
        name = _route_param(req, "verb")
        try:
            verb = Verb(name)
        except ValueError:
            raise _Refused(404, f"unknown verb {_shorten(name)}; expected one of {', '.join(Verb)}") from None
        rollout_id = _rollout_id(req)
        try:
            body = _command_body(req.get_body(), verb)
        except ValueError as exc:
            raise _Refused(400, str(exc)) from None
        outcome = service.command(rollout_id, verb, actor=caller.actor, reason=body.reason, rollback=body.rollback)
        return 200, outcome.as_dict()

    return _http(req, OPERATE_ROLE, "steer rollouts", run)


class _Refused(Exception):
    """The request itself is wrong (bad id, verb or body): answered with ``status`` before any work."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _rollout_id(req: func.HttpRequest) -> str:
    """The route's rollout id, checked against the shape rollout ids have before it reaches storage.

    Anything else cannot name a rollout: 404 (an unknown rollout, as for a well-formed id that does not
    exist), saying why, without echoing more than the start of it."""
    rollout_id = _route_param(req, "id")
    problem = rollout_id_problem(rollout_id)
    if problem is not None:
        raise _Refused(404, f"no such rollout: {problem}")
    return rollout_id


def _route_param(req: func.HttpRequest, name: str) -> str:
    """A route parameter as text ("" when absent)."""
    value = req.route_params.get(name)
    return value if isinstance(value, str) else ""


def _list(service: RolloutService) -> tuple[int, JsonObject]:
    target, rollouts = service.list()
    return 200, {"target": target_json(target), "rollouts": [rollout_summary(r) for r in rollouts]}


class _CommandBody(NamedTuple):
    """A verb's optional JSON body, checked: {"reason": str, "rollback": bool (abort only)}. (Not a
    dataclass: the tests load this module under other names, which dataclasses cannot resolve.)"""

    reason: str = ""
    rollback: bool = False


def _command_body(raw: bytes, verb: Verb) -> _CommandBody:
    """The optional JSON body, checked (raises ``ValueError`` saying why: answered 400)."""
    if not raw or not raw.strip():
        return _CommandBody()
    if len(raw) > MAX_BODY_BYTES:
        raise ValueError(f"body is {len(raw)} bytes; at most {MAX_BODY_BYTES}")
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # not UTF-8/16/32, not JSON, nested too deep
        raise ValueError(f"body is not valid JSON: {_shorten(str(exc))}") from None
    if not isinstance(body, dict):
        raise ValueError("body must be a JSON object")
    allowed = {"reason", "rollback"} if verb is Verb.ABORT else {"reason"}
    unknown = sorted(set(body) - allowed)
    if unknown:
        names = ", ".join(unknown)
        names = names if len(names) <= 60 else names[:60] + "..."
        raise ValueError(f"unknown field(s) {names}; {verb} takes {', '.join(sorted(allowed))}")
    reason = body.get("reason", "")
    rollback = body.get("rollback", False)
    if not isinstance(rollback, bool):
        raise ValueError('"rollback" must be true or false')
    if not _is_reason(reason):
        raise ValueError(
            f'"reason" must be a string of at most {MAX_REASON_CHARS} characters without control characters'
        )
    return _CommandBody(reason=reason, rollback=rollback)


def _is_reason(value: object) -> TypeGuard[str]:
    if not isinstance(value, str) or len(value) > MAX_REASON_CHARS or _CONTROL_CHARS.search(value):
        return False
    try:
        value.encode("utf-8")  # JSON may carry unpaired surrogates ("\ud800"): not text, not storable
    except UnicodeEncodeError:
        return False
    return True


def _http(req: func.HttpRequest, needs: str, action: str, run: Handler) -> func.HttpResponse:
    """Settings -> who is calling -> the request's own checks -> the service; every answer is JSON."""
    try:
        settings, service = service_from_environment()
        if settings.http_auth != HTTP_AUTH:
            raise SettingsError(
                f"HTTP_AUTH is {settings.http_auth!r} but the routes were declared for {HTTP_AUTH!r} when the app "
                "started; restart the function app"
            )
        decision = authorize(settings.http_auth, platform_auth_enabled(os.environ), req.headers, needs, action)
        if isinstance(decision, Denied):
            if decision.status >= 500:
                log.error("%s", decision.message)
            return _json(decision.status, {"error": decision.message})
        status, payload = run(service, decision)
        return _json(status, payload)
    except _Refused as exc:
        return _json(exc.status, {"error": str(exc)})
    except RolloutNotFoundError as exc:
        return _json(404, {"error": f"no rollout {exc.args[0]!r} on this scale set"})
    except CommandError as exc:
        return _json(409, {"error": str(exc)})
    except SettingsError as exc:
        log.error("%s", exc)
        return _json(500, {"error": str(exc)})
    except InvalidKeyError as exc:
        return _json(400, {"error": f"not a valid key for the state store: {exc}"})
    except InvalidRecordError as exc:
        log.warning("state the store cannot hold: %s", exc)
        return _json(409, {"error": f"the rollout's state cannot be stored: {exc}"})
    except PortError as exc:
        log.warning("backend error: %s", exc)
        return _json(503, {"error": f"a backend is unavailable, try again: {exc}"})
    except Exception:  # noqa: BLE001 - the last resort: log it, answer JSON, never a traceback
        incident = uuid.uuid4().hex[:12]
        log.exception("unexpected error in %s (incident %s)", action, incident)
        return _json(500, {"error": f"internal error (incident {incident}); the details are in the app's log"})


def _shorten(text: str, limit: int = 60) -> str:
    """``repr`` of at most ``limit`` characters: an answer never echoes a huge or hostile input whole."""
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}... ({len(text)} characters)"


def _json(status: int, payload: JsonObject) -> func.HttpResponse:
    return func.HttpResponse(
        json.dumps(payload, indent=2, sort_keys=False), status_code=status, mimetype="application/json"
    )


# --- Group releases (rollout.groups): a release crossing the waves of a group --------------------
# ``GET /api/releases``, ``GET /api/releases/{id}`` (with each target's rollout), ``POST
# /api/releases/{id}/{verb}`` (the whole release: abort, pause, resume, promote, promote-full) and
# ``POST /api/releases/{id}/targets/{target}/{verb}`` (one target only). Same auth and answers as above.

MAX_TARGET_KEY_CHARS = 200


@app.route(route="releases", methods=["GET"])
def list_group_releases(req: func.HttpRequest) -> func.HttpResponse:
    def run(service: RolloutService, caller: Caller) -> tuple[int, JsonObject]:
        return 200, {"releases": [group_release_summary(r) for r in _groups().list()]}

    return _http(req, READ_ROLE, "list group releases", _group_errors(run))


@app.route(route="releases/{id}", methods=["GET"])
def get_group_release(req: func.HttpRequest) -> func.HttpResponse:
    def run(service: RolloutService, caller: Caller) -> tuple[int, JsonObject]:
        view = _groups().get(_group_release_id(req), _group_param(req))
        return 200, group_release_detail(view.record, view.events, view.rollouts, view.reverts)

    return _http(req, READ_ROLE, "view a group release", _group_errors(run))


@app.route(route="releases/{id}/{verb}", methods=["POST"])
def steer_group_release(req: func.HttpRequest) -> func.HttpResponse:
    def run(service: RolloutService, caller: Caller) -> tuple[int, JsonObject]:
        verb = _verb(req)
        release_id = _group_release_id(req)
        body = _group_command_body(req, verb)
        outcome = _groups().command(
            release_id, verb, actor=caller.actor, reason=body.reason, rollback=body.rollback, group=_group_param(req)
        )
        return 200, outcome.as_dict()

    return _http(req, OPERATE_ROLE, "steer group releases", _group_errors(run))


@app.route(route="releases/{id}/targets/{target}/{verb}", methods=["POST"])
def steer_group_target(req: func.HttpRequest) -> func.HttpResponse:
    def run(service: RolloutService, caller: Caller) -> tuple[int, JsonObject]:
        verb = _verb(req)
        release_id = _group_release_id(req)
        target = _route_param(req, "target")
        if not target or len(target) > MAX_TARGET_KEY_CHARS or _CONTROL_CHARS.search(target):
            raise _Refused(404, f"no such target in the release: {_shorten(target)}")
        body = _group_command_body(req, verb)
        outcome = _groups().command(
            release_id,
            verb,
            target=target,
            actor=caller.actor,
            reason=body.reason,
            rollback=body.rollback,
            group=_group_param(req),
        )
        return 200, outcome.as_dict()

    return _http(req, OPERATE_ROLE, "steer group releases", _group_errors(run))


def _groups() -> GroupService:
    return group_service_from_environment()[1]


def _verb(req: func.HttpRequest) -> Verb:
    name = _route_param(req, "verb")
    try:
        return Verb(name)
    except ValueError:
        raise _Refused(404, f"unknown verb {_shorten(name)}; expected one of {', '.join(Verb)}") from None


def _group_release_id(req: func.HttpRequest) -> str:
    """Group release ids have the shape of rollout ids (the id of its release): anything else is 404."""
    release_id = _route_param(req, "id")
    problem = rollout_id_problem(release_id)
    if problem is not None:
        raise _Refused(404, f"no such group release: {problem}")
    return release_id


def _group_param(req: func.HttpRequest) -> str | None:
    """``?group=<name>``: whose release the id is, when the same content was released to several groups."""
    group = req.params.get("group")
    if group is None:
        return None
    if not group or len(group) > 63 or _CONTROL_CHARS.search(group):
        raise _Refused(404, f"no such group: {_shorten(group)}")
    return str(group)


def _group_command_body(req: func.HttpRequest, verb: Verb) -> _CommandBody:
    try:
        return _command_body(req.get_body(), verb)
    except ValueError as exc:
        raise _Refused(400, str(exc)) from None


def _group_errors(run: Handler) -> Handler:
    """The group service's lookups answered 404, as the rollout routes answer an unknown rollout."""

    def guarded(service: RolloutService, caller: Caller) -> tuple[int, JsonObject]:
        try:
            return run(service, caller)
        except GroupReleaseNotFoundError as exc:
            raise _Refused(404, f"no group release {_shorten(str(exc.args[0]))}") from None
        except AmbiguousGroupReleaseError as exc:
            raise _Refused(
                409,
                f"{exc.release_id} is a release of groups {', '.join(exc.groups)} (the same content released to "
                "each): name one with ?group=<name>",
            ) from None
        except GroupTargetNotFoundError as exc:
            raise _Refused(404, f"{_shorten(str(exc.args[0]))} is not a target of this release") from None
        except UnknownTargetError as exc:
            raise _Refused(409, f"the configuration has no service for a target of this release: {exc}") from None

    return guarded


# --- The dashboard (rollout.dashboard): one self-contained HTML page over the data above ------------------
# ``GET /api/dashboard``: the page (the data in it, drawn by its one nonce'd script, which refreshes it);
# ``GET /api/dashboard?format=json``: the same data, what the page fetches. Same auth and refusals as the
# JSON routes (role Rollouts.Read); a refusal is shown as a small page to a browser.


@app.route(route="dashboard", methods=["GET"])
def dashboard(req: func.HttpRequest) -> func.HttpResponse:
    def run(service: RolloutService, caller: Caller) -> tuple[int, JsonObject]:
        return 200, dashboard_data(fleet_from_environment(), service.clock.now())

    answer = _http(req, READ_ROLE, "view the dashboard", run)
    status = answer.status_code
    if req.params.get("format") == "json":
        return func.HttpResponse(
            answer.get_body(), status_code=status, mimetype="application/json", headers=dashboard_json_headers()
        )
    payload = json.loads(answer.get_body())
    nonce = new_nonce()
    page = (
        render_page(payload, nonce, refresh_seconds(req.params.get("refresh")))
        if status == 200
        else error_page(status, str(payload.get("error", "")), nonce)
    )
    return func.HttpResponse(
        page, status_code=status, mimetype="text/html", charset="utf-8", headers=page_headers(nonce)
    )


# --- What-if and undo (rollout.whatif, RolloutService.undo) ----------------------------------------
# ``GET /api/plan?release=<blob name or version>[&group=G]``: what a release would do to each target of
# its group, wave by wave, before anything is written (read role). ``POST /api/undo[?target=<rg>:<name>]``
# with ``{"to": "v3", "reason": "..."}`` (both optional): replace the stable release with an earlier one
# that succeeded there, as a new rollout (operator role). README, "What-if and undo".

MAX_RELEASE_PARAM_CHARS = 300


@app.route(route="plan", methods=["GET"])
def plan_release(req: func.HttpRequest) -> func.HttpResponse:
    def run(service: RolloutService, caller: Caller) -> tuple[int, JsonObject]:
        text = req.params.get("release") or ""
        if len(text) > MAX_RELEASE_PARAM_CHARS or _CONTROL_CHARS.search(text):
            raise _Refused(400, f"release={_shorten(text)} is not a release name or version")
        group_name = req.params.get("group")
        if group_name is not None and (not group_name or len(group_name) > 63 or _CONTROL_CHARS.search(group_name)):
            raise _Refused(400, f"group={_shorten(group_name)} is not a group name")
        fleet = fleet_from_environment()
        if fleet.problems:
            raise _Refused(409, f"the targets configuration cannot be used: {'; '.join(fleet.problems[:5])}")
        if group_name is None and "/" in text:
            group_name = text.split("/", 1)[0]
        group = route(fleet.config, group_name)
        if isinstance(group, str):
            raise _Refused(400, group)
        waves: list[JsonObject] = []
        verdicts: list[str] = []
        unknown: list[str] = []  # why the release names nothing on a target (a version it never had)
        total = 0.0
        for number, wave in enumerate(group.waves, start=1):
            plans: list[dict[str, Any]] = []
            for target in wave.targets:
                target_service = fleet.service(target.key)
                try:
                    release, revert, notes = target_service.plan_release(text)
                except PlanInputError as exc:
                    unknown.append(str(exc))
                    plans.append({"target": target.key, "verdict": "refused", "error": str(exc)})
                    continue
                plans.append(target_service.plan(release, revert=revert, notes=notes).as_dict())
            verdicts.extend(str(p["verdict"]) for p in plans)
            slowest = max((float(p["estimate"]["promotionSeconds"]) for p in plans if "estimate" in p), default=0.0)
            total += slowest + (group.wave_bake_seconds if number < len(group.waves) else 0)
            waves.append({"wave": number, "targets": plans})
        if unknown and len(unknown) == len(verdicts):
            raise _Refused(400, unknown[0])  # it names nothing anywhere: the request is wrong
        verdict = "refused" if "refused" in verdicts else ("warnings" if "warnings" in verdicts else "ok")
        return 200, {
            "release": text or None,
            "group": group.name,
            "verdict": verdict,
            "promotionSeconds": round(total),
            "waveBakeSeconds": group.wave_bake_seconds,
            "waves": waves,
            "written": False,
        }

    return _http(req, READ_ROLE, "plan a release", run)


@app.route(route="undo", methods=["POST"])
def undo_release(req: func.HttpRequest) -> func.HttpResponse:
    def run(service: RolloutService, caller: Caller) -> tuple[int, JsonObject]:
        try:
            to, reason = _undo_body(req.get_body())
        except ValueError as exc:
            raise _Refused(400, str(exc)) from None
        target = req.params.get("target")
        if target is not None:
            if not target or len(target) > MAX_TARGET_KEY_CHARS or _CONTROL_CHARS.search(target):
                raise _Refused(404, f"no such target: {_shorten(target)}")
            try:
                service = fleet_from_environment().service(target)
            except KeyError:
                raise _Refused(404, f"no target {_shorten(target)} is configured") from None
        try:
            outcome = service.undo(to, actor=caller.actor, reason=reason)
        except UndoRefusedError as exc:
            raise _Refused(409, str(exc)) from None
        return 200, {**outcome.as_dict(), "target": service.target_key}

    return _http(req, OPERATE_ROLE, "undo a release", run)


def _undo_body(raw: bytes) -> tuple[int | None, str]:
    """``{"to": "v3" | 3, "reason": str}``, both optional (raises ``ValueError`` saying why: 400)."""
    if not raw or not raw.strip():
        return None, ""
    if len(raw) > MAX_BODY_BYTES:
        raise ValueError(f"body is {len(raw)} bytes; at most {MAX_BODY_BYTES}")
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"body is not valid JSON: {_shorten(str(exc))}") from None
    if not isinstance(body, dict):
        raise ValueError("body must be a JSON object")
    unknown = sorted(set(body) - {"to", "reason"})
    if unknown:
        names = ", ".join(unknown)
        raise ValueError(f"unknown field(s) {_shorten(names)}; undo takes reason, to")
    to = body.get("to")
    version: int | None = None
    if isinstance(to, bool) or not isinstance(to, (int, str, type(None))):
        raise ValueError('"to" must be a version: 3 or "v3"')
    if isinstance(to, int):
        version = to
    elif isinstance(to, str):
        digits = to[1:] if to[:1] in ("v", "V") else to
        if not digits.isdigit() or not digits.isascii() or len(digits) > 9:
            raise ValueError(f'"to" must be a version like "v3", not {_shorten(to)}')
        version = int(digits)
    if version is not None and not 0 <= version <= MAX_VERSION:
        raise ValueError(f'"to" must be a version between 0 and {MAX_VERSION}')
    reason = body.get("reason", "")
    if not _is_reason(reason):
        raise ValueError(
            f'"reason" must be a string of at most {MAX_REASON_CHARS} characters without control characters'
        )
    return version, reason
