"""The function app: triggers only. Each parses its input, calls ``rollout.service``, maps the result.

* ``release_uploaded`` (blob, Event Grid source, bound to a ``BlobClient``): a release blob landed ->
  check its size, read it, then start, queue or reject it.
* ``advance_rollouts`` (timer): advance the active rollout one level-triggered step.
* ``list_rollouts`` / ``get_rollout`` / ``steer_rollout`` / ``fleet_status`` (HTTP, function key):
  status, the operator verbs abort, pause, resume, promote, promote-full, retry, and the live fleet.

Runs unchanged under ``func start`` (Core Tools) and in Azure; locally ``emulator.funchost`` fires
the same functions.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import azure.functions as func
import azurefunctions.extensions.bindings.blob as blob

from rollout.adapters.blobs import TriggeredBlob
from rollout.bootstrap import service_from_environment
from rollout.machine import COMMANDS, CommandError
from rollout.ports import PortError
from rollout.service import RolloutNotFoundError
from rollout.settings import SettingsError
from rollout.views import fleet_json, rollout_detail, rollout_summary, target_json

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
log = logging.getLogger("function_app")

MAX_BODY_BYTES = 4096
MAX_REASON_CHARS = 500


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
def release_uploaded(client: blob.BlobClient) -> None:
    _, service = service_from_environment()
    # Not closed here: the worker caches the client per binding and blob for later invocations
    # (azure-functions-python-worker, bindings/meta.py, deferred_bindings_cache).
    released = TriggeredBlob(client)
    outcome = service.receive_release_blob(released)
    log.info("release_uploaded %s/%s: %s %s", released.container, released.name, outcome.status, outcome.message)


@app.timer_trigger(arg_name="timer", schedule="%ROLLOUT_TICK_SCHEDULE%", run_on_startup=False)
def advance_rollouts(timer: func.TimerRequest) -> None:
    _, service = service_from_environment()
    outcome = service.tick()
    level = logging.WARNING if outcome.status in ("Error", "Lost") else logging.INFO
    log.log(
        level, "advance_rollouts%s: %s %s", " (past due)" if timer.past_due else "", outcome.status, outcome.message
    )


@app.route(route="rollouts", methods=["GET"])
def list_rollouts(req: func.HttpRequest) -> func.HttpResponse:
    return _http(lambda service: _list(service))


@app.route(route="rollouts/{id}", methods=["GET"])
def get_rollout(req: func.HttpRequest) -> func.HttpResponse:
    rollout_id = req.route_params.get("id", "")
    return _http(lambda service: (200, rollout_detail(*service.get(rollout_id))))


@app.route(route="fleet", methods=["GET"])
def fleet_status(req: func.HttpRequest) -> func.HttpResponse:
    return _http(lambda service: (200, fleet_json(service.fleet())))


@app.route(route="rollouts/{id}/{verb}", methods=["POST"])
def steer_rollout(req: func.HttpRequest) -> func.HttpResponse:
    rollout_id, verb = req.route_params.get("id", ""), req.route_params.get("verb", "")
    if verb not in COMMANDS:
        return _json(404, {"error": f"unknown verb {verb!r}; expected one of {', '.join(COMMANDS)}"})
    try:
        body = _command_body(req.get_body(), verb)
    except ValueError as exc:
        return _json(400, {"error": str(exc)})
    # Behind App Service authentication the caller's name is in this header; with a function key
    # alone we only know "a key holder".
    actor = req.headers.get("x-ms-client-principal-name") or "operator (function key)"

    def run(service: Any) -> tuple[int, Any]:
        outcome = service.command(
            rollout_id, verb, actor=actor, reason=body.get("reason", ""), rollback=body.get("rollback", False)
        )
        return 200, outcome.as_dict()

    return _http(run)


def _list(service: Any) -> tuple[int, Any]:
    target, rollouts = service.list()
    return 200, {"target": target_json(target), "rollouts": [rollout_summary(r) for r in rollouts]}


def _command_body(raw: bytes, verb: str) -> dict[str, Any]:
    """The optional JSON body: {"rollback": bool (abort only), "reason": str}. Anything else is a 400."""
    if not raw or not raw.strip():
        return {}
    if len(raw) > MAX_BODY_BYTES:
        raise ValueError(f"body is {len(raw)} bytes; at most {MAX_BODY_BYTES}")
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ValueError("body must be a JSON object")
    allowed = {"reason", "rollback"} if verb == "abort" else {"reason"}
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise ValueError(f"unknown field(s) {', '.join(unknown)}; {verb} takes {', '.join(sorted(allowed))}")
    if "rollback" in body and not isinstance(body["rollback"], bool):
        raise ValueError('"rollback" must be true or false')
    if "reason" in body and (not isinstance(body["reason"], str) or len(body["reason"]) > MAX_REASON_CHARS):
        raise ValueError(f'"reason" must be a string of at most {MAX_REASON_CHARS} characters')
    return body


def _http(run: Any) -> func.HttpResponse:
    try:
        _, service = service_from_environment()
        status, payload = run(service)
        return _json(status, payload)
    except RolloutNotFoundError as exc:
        return _json(404, {"error": f"no rollout {exc.args[0]!r} on this scale set"})
    except CommandError as exc:
        return _json(409, {"error": str(exc)})
    except SettingsError as exc:
        log.error("%s", exc)
        return _json(500, {"error": str(exc)})
    except PortError as exc:
        log.warning("backend error: %s", exc)
        return _json(503, {"error": f"a backend is unavailable, try again: {exc}"})


def _json(status: int, payload: Any) -> func.HttpResponse:
    return func.HttpResponse(
        json.dumps(payload, indent=2, sort_keys=False), status_code=status, mimetype="application/json"
    )
