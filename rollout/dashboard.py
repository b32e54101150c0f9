"""``GET /api/dashboard``: one self-contained HTML page over the same data the JSON routes give.

Two halves:

* ``collect(fleet, now)``: the data, read through the same services the JSON routes use: every group
  release (the latest ones with their targets and trail), the groups and waves, per scale set its state,
  its latest rollouts and a fleet map (each instance: the release it runs, health, in flight, why), and one
  timeline of events. A backend error is shown where it happened (that scale set, that section), never a
  500 for the whole page.
* ``render_page(data, nonce)``: the HTML. Nothing from the data is put into markup on the server: the data
  travels as a JSON data block (``<``, ``>``, ``&`` escaped as ``\\u003c``... so it cannot close its
  element) and the page's one script, allowed by a per-answer CSP nonce, draws it with DOM APIs
  (``textContent``, never ``innerHTML``). Release names and reasons are user input (an abort's reason
  is whatever the operator typed); they only ever become text nodes.

The page refreshes itself: its script fetches ``dashboard?format=json`` (a URL relative to the page,
with no key in it) every ``refresh`` seconds. Auth is the page's own: in function-key mode the page was
opened with ``?code=<key>`` (a browser cannot send a header when it navigates), so the script reads
the key from its own address and sends it as the ``x-functions-key`` header, never in a URL it builds;
in entra mode the browser's App Service authentication session cookie goes with the same-origin
fetch. ``Referrer-Policy: no-referrer`` keeps the address out of any request the page makes, and the
CSP's ``connect-src 'self'`` lets it talk only to the app.
"""

from __future__ import annotations

import html
import json
import re
import secrets
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from rollout.analysis import assess_instance, describe_instance
from rollout.fleet import Fleet
from rollout.model import FleetView, Health, Phase, Rollout, RolloutEvent, TargetRecord
from rollout.orchestration import with_recorded_models
from rollout.ports import PortError
from rollout.service import RolloutService
from rollout.views import group_release_detail, group_release_summary, rollout_summary

# A dashboard read is one ARM list (and a probe of each instance) per scale set shown: bounded so that a
# tab left open on a large fleet does not eat the subscription's ARM read budget. Scale sets with an
# active rollout are shown first; the others get their state and rollouts but no fleet map.
MAX_FLEET_MAPS = 12
RECENT_ROLLOUTS = 8  # per scale set
DETAILED_RELEASES = 5  # group releases shown with their targets and trail
LISTED_RELEASES = 25
TIMELINE_EVENTS = 80
DEFAULT_REFRESH_SECONDS = 5
MIN_REFRESH_SECONDS, MAX_REFRESH_SECONDS = 1, 300

_NONCE = re.compile(r"[A-Za-z0-9_-]{8,64}")
_IN_FLIGHT_PHASES = frozenset({Phase.CANARY, Phase.BAKING, Phase.PROMOTING, Phase.PAUSED, Phase.ROLLING_BACK})


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


# --- the data --------------------------------------------------------------------------------------------


def collect(fleet: Fleet, now: datetime, *, max_fleet_maps: int | None = None) -> dict[str, Any]:
    """Everything the page shows, as JSON-ready data (module doc); fleet maps for at most ``max_fleet_maps``
    scale sets (``MAX_FLEET_MAPS``)."""
    cap = MAX_FLEET_MAPS if max_fleet_maps is None else max_fleet_maps
    timeline: list[dict[str, Any]] = []
    releases, release_errors = _releases(fleet, timeline)
    targets = []
    where: dict[str, tuple[str, int]] = {}
    for group in fleet.config.groups:
        for number, wave in enumerate(group.waves, start=1):
            for target in wave.targets:
                where[target.key] = (group.name, number)
    services = fleet.services()
    # Fleet maps for the scale sets with an active rollout first, then in group and wave order.
    states = [(target, service, _target_state(service)) for target, service in services]
    busy = [t.key for t, _, s in states if s.get("activeRolloutId")]
    mapped = set((busy + [t.key for t, _, _ in states if t.key not in busy])[:cap])
    for target, service, state in states:
        group_name, wave_number = where.get(target.key, ("", 0))
        entry: dict[str, Any] = {
            "key": target.key,
            "group": group_name,
            "wave": wave_number,
            "state": state,
        }
        entry.update(_rollouts_and_fleet(service, state, target.key in mapped, cap, timeline))
        targets.append(entry)
    timeline.sort(key=lambda e: (e.get("at") or "", e.get("kind") or ""), reverse=True)
    try:
        unrouted = [rollout_summary(r) | {"group": r.release.group} for r in fleet.unrouted_rollouts(limit=10)]
    except PortError as exc:
        unrouted = []
        release_errors.append(f"the releases that reached no target cannot be read just now: {exc}")
    return {
        "generatedAt": _time(now),
        "source": fleet.config.source,
        "ok": not fleet.problems,
        "errors": list(fleet.problems),
        "readErrors": release_errors,
        "defaultGroup": fleet.config.default_group,
        "groups": [
            {
                "name": group.name,
                "waveBakeSeconds": group.wave_bake_seconds,
                "onFailure": group.on_failure.value,
                "waves": [
                    {"wave": number, "targets": [t.key for t in wave.targets]}
                    for number, wave in enumerate(group.waves, start=1)
                ],
            }
            for group in fleet.config.groups
        ],
        "releases": releases,
        "targets": targets,
        "fleetMapsShown": len(mapped),
        "timeline": timeline[:TIMELINE_EVENTS],
        "unrouted": unrouted,
    }


def _releases(fleet: Fleet, timeline: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    try:
        listed = fleet.groups.list()[:LISTED_RELEASES]
    except PortError as exc:
        return [], [f"the group releases cannot be read just now: {exc}"]
    out: list[dict[str, Any]] = []
    errors: list[str] = []
    for index, record in enumerate(listed):
        summary = group_release_summary(record)
        if index < DETAILED_RELEASES:
            try:
                view = fleet.groups.get(record.id, record.group)
            except PortError as exc:
                errors.append(f"release {record.id} cannot be read just now: {exc}")
            except Exception as exc:  # noqa: BLE001 - an unknown target, a vanished release: show the summary
                errors.append(f"release {record.id}: {exc}")
            else:
                detail = group_release_detail(view.record, view.events, view.rollouts, view.reverts)
                summary["targets"] = detail["targets"]
                for event in view.events:
                    timeline.append(_event(event, release=record.release.blob_name, group=record.group))
        out.append(summary)
    return out, errors


def _target_state(service: RolloutService) -> dict[str, Any]:
    try:
        record = service.store.get_target(service.target_key)
    except PortError as exc:
        return {"error": f"the state cannot be read just now: {exc}"}
    return _record_json(record)


def _record_json(record: TargetRecord | None) -> dict[str, Any]:
    return {
        "activeRolloutId": record.active_rollout_id if record else None,
        "stableVersion": record.stable_version if record else None,
        "stableRelease": record.stable_release.blob_name if record and record.stable_release else None,
    }


def _rollouts_and_fleet(
    service: RolloutService, state: Mapping[str, Any], with_map: bool, cap: int, timeline: list[dict[str, Any]]
) -> dict[str, Any]:
    out: dict[str, Any] = {"rollouts": [], "current": None, "fleet": None}
    record: TargetRecord | None = None
    current: Rollout | None = None
    try:
        record, rollouts = service.list()
        ordered = sorted(rollouts, key=lambda r: (r.created_at, r.id), reverse=True)
        out["rollouts"] = [rollout_summary(r) for r in ordered[:RECENT_ROLLOUTS]]
        active_id = record.active_rollout_id if record else None
        current = next((r for r in ordered if r.id == active_id), None) or (ordered[0] if ordered else None)
        if current is not None:
            events = service.store.list_events(service.target_key, current.id)
            out["current"] = _current_json(current)
            for event in events:
                timeline.append(_event(event, release=current.release.blob_name, target=service.target_key))
    except PortError as exc:
        out["error"] = f"the rollouts cannot be read just now: {exc}"
    if not with_map:
        out["fleetOmitted"] = (
            f"no fleet map: at most {cap} scale sets are read per refresh (those with an active rollout first)"
        )
        return out
    try:
        view = service.fleet()
    except PortError as exc:
        out["fleet"] = {"error": f"the scale set cannot be read just now: {exc}"}
        return out
    stable = state.get("stableRelease") if isinstance(state.get("stableRelease"), str) else None
    out["fleet"] = fleet_map(view, current, stable)
    return out


def _current_json(r: Rollout) -> dict[str, Any]:
    return {
        **rollout_summary(r),
        "phaseSince": _time(r.phase_since),
        "canary": list(r.canary_ids),
        "batch": {"number": r.batch_number, "instances": list(r.batch_ids)},
        "upgraded": list(r.upgraded_ids),
        "rolledBack": list(r.rollback_ids),
        "rollbackReason": r.rollback_reason or None,
    }


def _event(e: RolloutEvent, *, release: str, target: str | None = None, group: str | None = None) -> dict[str, Any]:
    return {
        "at": _time(e.at),
        "kind": e.kind.value,
        "message": e.message,
        "actor": e.actor,
        "release": release,
        "rolloutId": e.rollout_id,
        "target": target or e.data.get("target"),
        "group": group,
    }


def fleet_map(view: FleetView, rollout: Rollout | None, stable_release: str | None) -> dict[str, Any]:
    """Per instance: the release it runs, its health, whether a change is in flight on it, and why.

    The release an instance runs follows from whether it has the scale set's latest model and which
    release that model holds: the rollout's (``desired``) or the one before it (``baseline``, the stable
    release). Where ARM does not report the latest model (Flexible orchestration) the rollout's records
    say it (``rollout.orchestration.with_recorded_models``)."""
    before = stable_release or "the model before any release"
    if rollout is not None:
        view = with_recorded_models(view, rollout)
        model_is_release = rollout.desired.matches(view.model) and not (
            rollout.baseline is not None and rollout.baseline.matches(view.model)
        )
        latest, older = (rollout.release.blob_name, before) if model_is_release else (before, rollout.release.blob_name)
        if rollout.phase is Phase.SUCCEEDED and model_is_release:
            older = "an older model"
    else:
        latest, older = before, "an older model"
    active = rollout is not None and rollout.phase in _IN_FLIGHT_PHASES
    healths = {v.instance_id: assess_instance(v) for v in view.instances}
    instances = []
    for v in view.instances:
        health = healths[v.instance_id]
        in_flight = _in_flight(v.instance_id, health, v.latest_model_applied, rollout if active else None)
        instances.append(
            {
                "instanceId": v.instance_id,
                "release": latest if v.latest_model_applied else older,
                "latestModel": v.latest_model_applied,
                "health": health.value,
                "inFlight": in_flight,
                "canary": rollout is not None and v.instance_id in rollout.canary_ids,
                "privateIp": v.private_ip,
                "why": describe_instance(v),
            }
        )
    return {
        "orchestrationMode": view.orchestration_mode,
        "upgradeMode": view.upgrade_mode,
        "provisioningState": view.provisioning_state,
        "summary": {
            "instances": len(view.instances),
            "onRelease": sum(1 for i in instances if rollout is not None and i["release"] == rollout.release.blob_name),
            **{h.value.lower(): sum(1 for x in healths.values() if x is h) for h in Health},
        },
        "instances": instances,
    }


def _in_flight(instance_id: str, health: Health, latest: bool, rollout: Rollout | None) -> str | None:
    """What is being done to the instance now, or None."""
    if rollout is not None and instance_id in rollout.reimage_pending:
        return "reimaging with the baseline"
    if rollout is None:
        return "updating" if health is Health.UPDATING else None
    if rollout.phase is Phase.ROLLING_BACK:
        if health is Health.UPDATING:
            return "moving back to the baseline"
        moved_back = instance_id in rollout.rollback_ids or instance_id not in rollout.upgraded_ids
        return None if moved_back and latest else "to be moved back to the baseline"
    step = "canary" if instance_id in rollout.canary_ids else f"batch {rollout.batch_number}"
    if instance_id in rollout.batch_ids and not (latest and health is Health.HEALTHY):
        return f"{step}: upgrading to {rollout.release.blob_name}"
    return "updating" if health is Health.UPDATING else None


# --- the page --------------------------------------------------------------------------------------------


def new_nonce() -> str:
    """A fresh CSP nonce per answer (128 random bits, base64url: no character that needs escaping)."""
    return secrets.token_urlsafe(16)


def refresh_seconds(value: str | None) -> int:
    """``?refresh=N`` (seconds between the page's own refreshes), bounded; the default for anything else."""
    if value is None or not (value.isascii() and value.isdigit()) or len(value) > 4:
        return DEFAULT_REFRESH_SECONDS
    return min(max(int(value), MIN_REFRESH_SECONDS), MAX_REFRESH_SECONDS)


def _check_nonce(nonce: str) -> None:
    if not _NONCE.fullmatch(nonce):
        raise ValueError("a nonce is base64url text")


def content_security_policy(nonce: str) -> str:
    """Nothing but the page's own nonce'd script and style, and fetches to the app itself."""
    return "; ".join(
        [
            "default-src 'none'",
            f"script-src 'nonce-{nonce}'",
            f"style-src 'nonce-{nonce}'",
            "img-src data:",
            "connect-src 'self'",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ]
    )


def page_headers(nonce: str) -> dict[str, str]:
    return {
        "Content-Security-Policy": content_security_policy(nonce),
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Cache-Control": "no-store",
    }


def json_headers() -> dict[str, str]:
    return {"Referrer-Policy": "no-referrer", "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"}


def script_json(data: Any) -> str:
    """JSON that is inert inside an HTML ``<script type="application/json">`` element: ``<``, ``>`` and ``&``
    are written as JSON escapes, so no ``</script>`` or ``<!--`` can appear; JSON.parse reads them back."""
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    for raw, escaped in (
        ("&", "\\u0026"),
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(raw, escaped)
    return text


def render_page(data: Mapping[str, Any], nonce: str, refresh: int = DEFAULT_REFRESH_SECONDS) -> str:
    """The whole page: inline CSS and JS, the data as a JSON data block (module doc)."""
    _check_nonce(nonce)
    return (
        _PAGE.replace("{{NONCE}}", nonce)
        .replace("{{REFRESH}}", str(int(refresh)))
        .replace("{{CSS}}", _CSS)
        .replace("{{JS}}", _JS)
        .replace("{{DATA}}", script_json(data))
    )


def error_page(status: int, message: str, nonce: str) -> str:
    """A refusal (401, 403, 500, 503) as a small page; the message escaped on the server."""
    _check_nonce(nonce)
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>vmss-canary dashboard</title>'
        f'<style nonce="{nonce}">body{{font:15px system-ui,sans-serif;margin:2em;color:#222}}</style></head>'
        f"<body><h1>vmss-canary dashboard: HTTP {int(status)}</h1><p>{html.escape(message)}</p></body></html>"
    )


_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>vmss-canary dashboard</title>
<style nonce="{{NONCE}}">{{CSS}}</style>
</head>
<body>
<header>
  <h1>vmss-canary</h1>
  <span id="status" class="status">loading</span>
  <span id="generated" class="muted"></span>
</header>
<noscript><p class="problem">This page draws itself with JavaScript; the same data is at
<code>GET /api/dashboard?format=json</code>.</p></noscript>
<div id="problems"></div>
<main>
  <section id="releases-section"><h2>Releases</h2><div id="releases"></div></section>
  <section id="targets-section"><h2>Scale sets</h2><div id="targets"></div></section>
  <section id="waves-section"><h2>Groups and waves</h2><div id="waves"></div></section>
  <section id="timeline-section"><h2>Timeline</h2><ol id="timeline"></ol></section>
</main>
<script type="application/json" id="dashboard-data" data-refresh="{{REFRESH}}">{{DATA}}</script>
<script nonce="{{NONCE}}">{{JS}}</script>
</body>
</html>
"""

_CSS = """
:root{--ok:#1a7f37;--bad:#cf222e;--warn:#9a6700;--run:#0969da;--muted:#57606a;--line:#d0d7de}
*{box-sizing:border-box}
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1f2328;background:#f6f8fa}
header{display:flex;gap:1em;align-items:baseline;padding:.6em 1.2em;background:#fff;border-bottom:1px solid var(--line)}
h1{font-size:1.25em;margin:0}h2{font-size:1.05em;margin:.2em 0 .5em}h3{font-size:1em;margin:0}
main{display:grid;grid-template-columns:repeat(auto-fit,minmax(560px,1fr));gap:1em;padding:1em 1.2em}
section{background:#fff;border:1px solid var(--line);border-radius:6px;padding:.8em 1em;min-width:0}
#targets-section,#releases-section{grid-column:1/-1}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.25em .5em;border-bottom:1px solid #eaeef2;
vertical-align:top}th{font-weight:600;color:var(--muted)}
.muted{color:var(--muted)}.status{font-size:.9em}.status.stale{color:var(--bad);font-weight:600}
.problem{color:var(--bad);margin:.5em 1.2em}
.phase{display:inline-block;padding:0 .45em;border-radius:1em;font-size:.85em;font-weight:600;border:1px solid}
.ph-Succeeded{color:var(--ok)}.ph-RolledBack,.ph-Aborted,.ph-Rejected,.ph-Failed,.ph-Halted{color:var(--bad)}
.ph-RollingBack,.ph-Halting,.ph-Paused{color:var(--warn)}
.ph-Canary,.ph-Baking,.ph-Promoting,.ph-Running,.ph-WaveBaking,.ph-Queued{color:var(--run)}
.target{border-top:1px solid var(--line);padding:.7em 0}.target:first-child{border-top:0}
.target-head{display:flex;gap:.8em;align-items:baseline;flex-wrap:wrap}
.map{display:flex;flex-wrap:wrap;gap:.5em;margin:.6em 0}
.instance{width:200px;border:2px solid var(--line);border-radius:6px;padding:.4em .5em;background:#fff;font-size:.85em}
.instance.h-Healthy{border-color:var(--ok)}.instance.h-Unhealthy,.instance.h-Failed{border-color:var(--bad);background:#fff5f5}
.instance.h-Updating{border-color:var(--run);background:#f0f7ff}
.instance .id{font-weight:700;font-size:1.05em}.instance .why{color:var(--muted);word-break:break-word}
.badge{display:inline-block;font-size:.75em;padding:0 .35em;border-radius:3px;margin-left:.3em;color:#fff}
.badge.canary{background:#8250df}.badge.flight{background:var(--run)}
.bar{height:6px;background:#eaeef2;border-radius:3px;overflow:hidden;width:240px;display:inline-block}
.bar>span{display:block;height:100%;background:var(--ok)}
.waves{display:flex;gap:.6em;flex-wrap:wrap;align-items:stretch}
.wave{border:1px solid var(--line);border-radius:6px;padding:.4em .6em}
#timeline{list-style:none;margin:0;padding:0;max-height:520px;overflow:auto;font-size:.9em}
#timeline li{padding:.2em 0;border-bottom:1px solid #eaeef2}
#timeline .at{color:var(--muted);font-variant-numeric:tabular-nums;margin-right:.5em}
#timeline .kind{font-weight:600;margin-right:.5em}
.reason{word-break:break-word}
"""

_JS = r"""
(function () {
  "use strict";
  var block = document.getElementById("dashboard-data");
  var refresh = Math.max(1, parseInt(block.getAttribute("data-refresh"), 10) || 5) * 1000;
  // function-key mode: the page was opened with ?code=<key>; send it as a header, never in a URL.
  var key = new URLSearchParams(window.location.search).get("code");

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) { node.className = cls; }
    if (text !== undefined && text !== null) { node.textContent = String(text); }
    return node;
  }
  function add(parent) {
    for (var i = 1; i < arguments.length; i++) {
      var child = arguments[i];
      if (child === null || child === undefined) { continue; }
      parent.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
    }
    return parent;
  }
  function clear(node) { while (node.firstChild) { node.removeChild(node.firstChild); } return node; }
  function phase(name) {
    var node = el("span", "phase", name || "-");
    if (name && /^[A-Za-z]+$/.test(name)) { node.classList.add("ph-" + name); }
    node.setAttribute("data-phase", name || "");
    return node;
  }
  function when(iso) {
    if (!iso) { return "-"; }
    return String(iso).replace("T", " ").replace(/\.\d+/, "").replace("+00:00", "");
  }
  function table(headers, rows) {
    var t = el("table"), head = el("tr");
    headers.forEach(function (h) { add(head, el("th", null, h)); });
    add(t, add(el("thead"), head));
    var body = el("tbody");
    rows.forEach(function (cells) {
      var tr = el("tr");
      cells.forEach(function (c) {
        var td = el("td");
        if (c instanceof Node) { add(td, c); }
        else { td.textContent = c === null || c === undefined ? "-" : String(c); }
        add(tr, td);
      });
      add(body, tr);
    });
    return add(t, body);
  }

  function drawProblems(data) {
    var box = clear(document.getElementById("problems"));
    (data.errors || []).forEach(function (e) { add(box, el("p", "problem", "targets configuration: " + e)); });
    (data.readErrors || []).forEach(function (e) { add(box, el("p", "problem", e)); });
  }

  function drawReleases(data) {
    var box = clear(document.getElementById("releases"));
    var releases = data.releases || [];
    if (!releases.length) { add(box, el("p", "muted", "no release yet")); return; }
    add(box, table(["release", "group", "phase", "wave", "targets", "updated (UTC)", "reason"],
      releases.map(function (r) {
        var targets = el("span");
        (r.targets || []).forEach(function (t) {
          var p = t.rollout ? t.rollout.phase : (t.takenOut ? "taken out" : "waiting");
          add(targets, add(el("div"), el("span", null, "wave " + t.wave + " " + t.target + " "), phase(p)));
        });
        var name = el("span", "release-name", r.release);
        name.setAttribute("data-release-id", r.id);
        return [name, r.group, phase(r.phase), r.wave + "/" + r.waves, targets, when(r.updatedAt),
                el("span", "reason", r.reason)];
      })));
    if ((data.unrouted || []).length) {
      add(box, el("h3", null, "Releases that reached no target"));
      add(box, table(["release", "folder", "phase", "reason"], data.unrouted.map(function (u) {
        return [u.release, u.group, phase(u.phase), el("span", "reason", u.reason)];
      })));
    }
  }

  function drawWaves(data) {
    var box = clear(document.getElementById("waves"));
    var byKey = {};
    (data.targets || []).forEach(function (t) { byKey[t.key] = t; });
    (data.groups || []).forEach(function (g) {
      var head = add(el("div"), el("h3", null, "group " + g.name + (g.name === data.defaultGroup ? " (default)" : "")),
        el("span", "muted", "wave bake " + g.waveBakeSeconds + " s, on failure " + g.onFailure));
      var waves = el("div", "waves");
      g.waves.forEach(function (w) {
        var wave = add(el("div", "wave"), el("div", "muted", "wave " + w.wave));
        w.targets.forEach(function (k) {
          var t = byKey[k] || {}, cur = t.current;
          var line = add(el("div"), el("span", null, k + " "), phase(cur ? cur.phase : null));
          add(line, el("div", "muted", "stable: " + ((t.state && t.state.stableRelease) || "none")));
          add(wave, line);
        });
        add(waves, wave);
      });
      add(box, add(el("div", "group"), head, waves));
    });
  }

  function instanceTile(i) {
    var tile = el("div", "instance h-" + (/^[A-Za-z]+$/.test(i.health) ? i.health : "unknown"));
    tile.setAttribute("data-instance", i.instanceId);
    tile.setAttribute("data-health", i.health);
    tile.setAttribute("data-release", i.release);
    tile.setAttribute("data-in-flight", i.inFlight ? "true" : "false");
    var head = add(el("div"), el("span", "id", i.instanceId));
    if (i.canary) { add(head, " ", el("span", "badge canary", "canary")); }
    if (i.inFlight) { add(head, " ", el("span", "badge flight", "in flight")); }
    add(tile, head, el("div", "rel", i.release),
        el("div", "health", i.health + (i.privateIp ? " - " + i.privateIp : "")));
    if (i.inFlight) { add(tile, el("div", "flight", i.inFlight)); }
    add(tile, el("div", "why", i.why));
    return tile;
  }

  function drawTargets(data) {
    var box = clear(document.getElementById("targets"));
    (data.targets || []).forEach(function (t) {
      var card = el("div", "target");
      card.setAttribute("data-target", t.key);
      var cur = t.current;
      var head = add(el("div", "target-head"), el("h3", null, t.key),
        el("span", "muted", "group " + t.group + ", wave " + t.wave),
        el("span", "muted", "stable: " + ((t.state && t.state.stableRelease) || "none")));
      add(card, head);
      if (t.state && t.state.error) { add(card, el("p", "problem", t.state.error)); }
      if (t.error) { add(card, el("p", "problem", t.error)); }
      if (cur) {
        var line = add(el("div", "current"), el("span", "release-name", cur.release + " "), phase(cur.phase), " ",
          el("span", "reason", cur.reason));
        line.setAttribute("data-rollout", cur.id);
        add(card, line);
        var f = t.fleet;
        if (f && f.summary) {
          var done = f.summary.onRelease || 0, all = f.summary.instances || 0;
          var bar = el("span", "bar"), fill = el("span");
          fill.style.width = (all ? Math.round(100 * done / all) : 0) + "%";
          add(card, add(el("div", "progress"), add(bar, fill), el("span", "muted", " " + done + "/" + all +
            " on " + cur.release + (cur.phase === "Promoting" && cur.batch && cur.batch.number ?
            "; batch " + cur.batch.number : "") +
            (cur.canary && cur.canary.length ? "; canary " + cur.canary.join(", ") : ""))));
        }
        if (cur.rollbackReason) { add(card, el("div", "reason rollback", "rollback: " + cur.rollbackReason)); }
      } else {
        add(card, el("div", "muted", "no rollout recorded yet"));
      }
      var f2 = t.fleet;
      if (f2 && f2.error) { add(card, el("p", "problem", f2.error)); }
      if (f2 && f2.instances) {
        var map = el("div", "map");
        f2.instances.forEach(function (i) { add(map, instanceTile(i)); });
        add(card, map);
      } else if (t.fleetOmitted) {
        add(card, el("p", "muted", t.fleetOmitted));
      }
      if ((t.rollouts || []).length) {
        var d = add(el("details"), el("summary", null, "recent rollouts (" + t.rollouts.length + ")"));
        add(d, table(["release", "phase", "updated (UTC)", "reason"], t.rollouts.map(function (r) {
          return [r.release, phase(r.phase), when(r.updatedAt), el("span", "reason", r.reason)];
        })));
        add(card, d);
      }
      add(box, card);
    });
  }

  function drawTimeline(data) {
    var box = clear(document.getElementById("timeline"));
    (data.timeline || []).forEach(function (e) {
      var li = add(el("li"), el("span", "at", when(e.at)), el("span", "kind", e.kind),
        el("span", "muted", (e.target || ("group " + (e.group || ""))) + " " + e.release + ": "),
        el("span", "reason", e.message));
      li.setAttribute("data-kind", e.kind);
      add(box, li);
    });
  }

  function draw(data) {
    drawProblems(data); drawReleases(data); drawWaves(data); drawTargets(data); drawTimeline(data);
    document.getElementById("generated").textContent = "as of " + when(data.generatedAt) + " UTC";
    document.body.setAttribute("data-generated", data.generatedAt || "");
  }

  function status(text, stale) {
    var s = document.getElementById("status");
    s.textContent = text;
    s.className = stale ? "status stale" : "status";
  }

  function tick() {
    var headers = { "Accept": "application/json" };
    if (key) { headers["x-functions-key"] = key; }
    fetch("dashboard?format=json", { headers: headers, credentials: "same-origin", cache: "no-store",
                                     referrerPolicy: "no-referrer" })
      .then(function (r) {
        if (!r.ok) { throw new Error("HTTP " + r.status); }
        return r.json();
      })
      .then(function (data) { draw(data); status("live, every " + refresh / 1000 + " s", false); })
      .catch(function (err) { status("refresh failed (" + err.message + "); showing the last data", true); })
      .then(function () { window.setTimeout(tick, refresh); });
  }

  try {
    draw(JSON.parse(block.textContent));
    status("live, every " + refresh / 1000 + " s", false);
  } catch (err) {
    status("cannot draw the data: " + err.message, true);
  }
  window.setTimeout(tick, refresh);
})();
"""
