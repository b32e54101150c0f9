"""Human output: rich renderables built from the API's JSON (``rollout/views.py`` gives the shapes).

Pure functions of the payloads: the live view of ``get --watch`` and ``release --wait`` is
``rollout_view`` (or ``group_view``) redrawn by ``rich.live.Live`` after each poll; the line log of a
non-terminal (a CI log) is ``progress_line``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Group, RenderableType
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

PHASE_STYLE = {
    "Succeeded": "bold green",
    "RolledBack": "bold red",
    "RollingBack": "red",
    "Aborted": "bold yellow",
    "Rejected": "bold red",
    "Failed": "bold red",
    "Halted": "bold red",
    "Halting": "red",
    "Paused": "yellow",
}
ENDED = frozenset({"Succeeded", "RolledBack", "Aborted", "Rejected", "Failed", "Halted"})

Json = Mapping[str, Any]


def when(value: object) -> str:
    """An ISO time from the API as ``YYYY-MM-DD HH:MM:SS`` (UTC), or ``-``."""
    if not isinstance(value, str) or not value:
        return "-"
    return value.replace("T", " ")[:19]


def clock(value: object) -> str:
    return when(value)[11:] if isinstance(value, str) and len(value) >= 19 else when(value)


def phase_text(phase: object) -> Text:
    text = str(phase) if phase else "-"
    return Text(text, style=PHASE_STYLE.get(text, "cyan"))


def _ids(values: object) -> str:
    return ", ".join(str(v) for v in values) if isinstance(values, list) and values else "-"


def _holds(model: object, spec: object) -> bool:
    """Does the scale set's model (``/api/fleet``) hold the part of ``spec`` a release sets?"""
    if not isinstance(model, Mapping) or not isinstance(spec, Mapping) or not spec:
        return False
    if spec.get("imageId") and str(model.get("imageId") or "").lower() != str(spec["imageId"]).lower():
        return False
    ext = spec.get("extension")
    if isinstance(ext, Mapping):
        have = model.get("extension")
        if not isinstance(have, Mapping) or have.get("settings") != ext.get("settings"):
            return False
    return True


def on_release(detail: Json, fleet: Json | None) -> tuple[int, int | None]:
    """Instances on the rollout's release, and the fleet's size when ``fleet`` is this rollout's scale set.

    The fleet's model is the release's while it goes out (its instances on the latest model are on the
    release) and the baseline's once it rolls back (those not on the latest model still are). For a scale
    set holding neither (another target's fleet, a later release), only the rollout's own count is known."""
    own = len(_id_set(detail.get("upgraded")) - _id_set(detail.get("rolledBack")))
    summary = fleet.get("summary") if fleet else None
    if not fleet or not isinstance(summary, Mapping):
        return own, None
    total, latest = int(summary.get("instances") or 0), int(summary.get("onLatestModel") or 0)
    if _holds(fleet.get("model"), detail.get("desired")):
        return latest, total
    if detail.get("baseline") and _holds(fleet.get("model"), detail.get("baseline")):
        return total - latest, total
    return own, None


def _id_set(values: object) -> set[str]:
    return {str(v) for v in values} if isinstance(values, list) else set()


def verdict(detail: Json) -> str:
    """The canary's verdict as far as the rollout shows it, with the canary judge's when it has one."""
    said = _phase_verdict(detail)
    judged = judge_line(detail.get("judgement"))
    return f"{said}; {judged}" if judged else said


def judge_line(judgement: object) -> str:
    """``judge Pass: errors 0/812 vs 1/790, median 12 vs 11 ms (look 4)``: the judge's verdict and figures."""
    if not isinstance(judgement, Mapping) or not judgement.get("verdict"):
        return ""
    canary, base = judgement.get("canary"), judgement.get("baseline")
    parts = []
    if isinstance(canary, Mapping) and isinstance(base, Mapping):
        ours, theirs = (
            f"{canary.get('errors', 0)}/{canary.get('requests', 0)}",
            f"{base.get('errors', 0)}/{base.get('requests', 0)}",
        )
        parts.append(f"errors {ours} vs {theirs}")
    figures = judgement.get("figures")
    latency = figures.get("latency") if isinstance(figures, Mapping) else None
    if isinstance(latency, Mapping) and latency.get("canaryMedianMs") is not None:
        parts.append(f"median {latency.get('canaryMedianMs'):g} vs {latency.get('baselineMedianMs'):g} ms")
    looks = judgement.get("looks")
    detail = ", ".join(parts) + (f" (look {looks})" if looks else "")
    return f"judge {judgement['verdict']}" + (f": {detail}" if detail else "")


def _phase_verdict(detail: Json) -> str:
    phase = detail.get("phase")
    canary = _ids(detail.get("canary"))
    streak = detail.get("unhealthyStreak") or 0
    if phase == "Queued":
        return "not started: waiting for the scale set"
    if phase == "Canary":
        bad = f", {streak} unhealthy observation(s) in a row" if streak else ""
        return f"canary {canary} upgrading / under observation{bad}"
    if phase == "Baking":
        bad = f" ({streak} unhealthy observation(s) in a row)" if streak else ""
        return f"canary {canary} healthy, baking{bad}"
    if phase in ("Promoting", "Succeeded"):
        return f"canary {canary} passed"
    if phase in ("RollingBack", "RolledBack"):
        return f"rolled back: {detail.get('rollbackReason') or detail.get('reason') or '-'}"
    if phase == "Paused":
        return f"paused in {detail.get('pausedFrom') or '-'}"
    if phase in ("Aborted", "Rejected", "Failed"):
        return f"{str(phase).lower()}: {detail.get('reason') or '-'}"
    return str(detail.get("reason") or "-")


def _bar(done: int, total: int | None, label: str) -> RenderableType:
    grid = Table.grid(padding=(0, 1))
    if total:
        grid.add_row(ProgressBar(total=total, completed=min(done, total), width=30), f"{done}/{total} {label}")
    else:
        grid.add_row(f"{done} {label} (the fleet's size is not known for this rollout)")
    return grid


def events_table(events: object, last: int) -> Table:
    table = Table(box=None, pad_edge=False, show_header=True, header_style="bold")
    table.add_column("at (UTC)", no_wrap=True)
    table.add_column("event", no_wrap=True)
    table.add_column("actor", no_wrap=True)
    table.add_column("message", overflow="fold")
    rows = [e for e in events if isinstance(e, Mapping)] if isinstance(events, list) else []
    for e in rows[-last:] if last > 0 else []:
        table.add_row(when(e.get("at")), str(e.get("kind") or "-"), str(e.get("actor") or "-"), str(e.get("message")))
    return table


def rollout_view(detail: Json, fleet: Json | None, *, last_events: int = 5) -> RenderableType:
    """One rollout: the header, the phase, a bar of instances on the release, the verdict, the last events."""
    release = detail.get("release")
    name = release.get("name") if isinstance(release, Mapping) else release
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold", no_wrap=True)
    head.add_column(overflow="fold")
    head.add_row("rollout", f"{detail.get('id')}  ({name}, {detail.get('kind') or '-'})")
    head.add_row("phase", Text.assemble(phase_text(detail.get("phase")), f"  since {when(detail.get('phaseSince'))}"))
    done, total = on_release(detail, fleet)
    head.add_row("progress", _bar(done, total, "instances on the new release"))
    head.add_row("verdict", verdict(detail))
    batch = detail.get("batch")
    if isinstance(batch, Mapping) and batch.get("number"):
        head.add_row("batch", f"{batch.get('number')}: {_ids(batch.get('instances'))}")
    if fleet and isinstance(fleet.get("summary"), Mapping) and total:
        s = fleet["summary"]
        head.add_row(
            "fleet",
            f"{s.get('healthy', 0)} healthy, {s.get('updating', 0)} updating, "
            f"{s.get('unhealthy', 0)} unhealthy, {s.get('failed', 0)} failed",
        )
    if detail.get("reason"):
        head.add_row("reason", str(detail.get("reason")))
    return Group(head, Text(""), events_table(detail.get("events"), last_events))


def progress_line(detail: Json, fleet: Json | None, elapsed: float) -> str:
    """One line for a log (a non-terminal): elapsed seconds, phase, instances on the release, verdict."""
    done, total = on_release(detail, fleet)
    count = f"{done}/{total}" if total else f"{done}"
    return f"[{elapsed:6.1f}s] {str(detail.get('phase')):<11} {count} on the new release; {verdict(detail)}"


def event_line(event: Json) -> str:
    return f"          {clock(event.get('at'))} {str(event.get('kind')):<22} {event.get('message')}"


def group_done(detail: Json) -> tuple[int, int]:
    targets = [t for t in detail.get("targets") or [] if isinstance(t, Mapping)]
    done = sum(1 for t in targets if isinstance(t.get("rollout"), Mapping) and t["rollout"].get("phase") == "Succeeded")
    return done, len(targets)


def group_view(detail: Json, *, last_events: int = 5) -> RenderableType:
    """A group release: header, wave, a bar of targets that succeeded, each target's rollout, the events."""
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold", no_wrap=True)
    head.add_column(overflow="fold")
    head.add_row("release", f"{detail.get('id')}  ({detail.get('release')}, group {detail.get('group')})")
    head.add_row("phase", Text.assemble(phase_text(detail.get("phase")), f"  since {when(detail.get('phaseSince'))}"))
    head.add_row("wave", f"{detail.get('wave')} of {detail.get('waves')} (on failure: {detail.get('onFailure')})")
    done, total = group_done(detail)
    head.add_row("progress", _bar(done, total, "targets succeeded"))
    if detail.get("reason"):
        head.add_row("reason", str(detail.get("reason")))
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("wave", "target", "rollout", "phase", "reason"):
        table.add_column(column, overflow="fold")
    for t in detail.get("targets") or []:
        if not isinstance(t, Mapping):
            continue
        rollout = t.get("rollout") if isinstance(t.get("rollout"), Mapping) else {}
        assert isinstance(rollout, Mapping)
        table.add_row(
            str(t.get("wave")),
            str(t.get("target")),
            str(t.get("rolloutId") or "-"),
            phase_text(rollout.get("phase") or "not started"),
            str(rollout.get("reason") or ""),
        )
    return Group(head, Text(""), table, Text(""), events_table(detail.get("events"), last_events))


def group_header(detail: Json) -> str:
    """One line for a group release: id, group, phase, wave."""
    return (
        f"group release {detail.get('id')} (group {detail.get('group')}): {detail.get('phase')}, "
        f"wave {detail.get('wave')} of {detail.get('waves')}"
    )


def group_line(detail: Json, elapsed: float) -> str:
    done, total = group_done(detail)
    return (
        f"[{elapsed:6.1f}s] {str(detail.get('phase')):<11} wave {detail.get('wave')}/{detail.get('waves')}, "
        f"{done}/{total} targets succeeded; {detail.get('reason') or ''}".rstrip("; ")
    )


def status_view(payload: Json) -> RenderableType:
    target = payload.get("target") if isinstance(payload.get("target"), Mapping) else None
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    if target:
        head.add_row("scale set", str(target.get("key")))
        stable = target.get("stableRelease") or "-"
        head.add_row("stable", f"{stable} (v{target.get('stableVersion')})" if target.get("stableVersion") else "-")
        head.add_row("active", str(target.get("activeRolloutId") or "-"))
    else:
        head.add_row("scale set", "no rollout recorded yet")
    return Group(head, Text(""), rollouts_table(payload.get("rollouts")))


def rollouts_table(rollouts: object) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("id", "release", "phase", "updated (UTC)", "reason"):
        table.add_column(column, overflow="fold", no_wrap=column != "reason")
    for r in rollouts if isinstance(rollouts, list) else []:
        if isinstance(r, Mapping):
            table.add_row(
                str(r.get("id")),
                str(r.get("release")),
                phase_text(r.get("phase")),
                when(r.get("updatedAt")),
                str(r.get("reason") or ""),
            )
    return table


def fleet_view(fleet: Json) -> RenderableType:
    s = fleet.get("summary") if isinstance(fleet.get("summary"), Mapping) else {}
    assert isinstance(s, Mapping)
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    head.add_row(
        "scale set",
        f"{fleet.get('orchestrationMode')}, upgrade policy {fleet.get('upgradeMode')}, "
        f"provisioning {fleet.get('provisioningState')}",
    )
    head.add_row(
        "instances",
        f"{s.get('instances', 0)}: {s.get('onLatestModel', 0)} on the latest model, {s.get('healthy', 0)} healthy, "
        f"{s.get('updating', 0)} updating, {s.get('unhealthy', 0)} unhealthy, {s.get('failed', 0)} failed",
    )
    model = fleet.get("model") if isinstance(fleet.get("model"), Mapping) else {}
    assert isinstance(model, Mapping)
    ext = model.get("extension") if isinstance(model.get("extension"), Mapping) else None
    if ext is not None:
        settings = ext.get("settings") if isinstance(ext.get("settings"), Mapping) else {}
        assert isinstance(settings, Mapping)
        head.add_row("model", f"{ext.get('name')}: {settings.get('commandToExecute', '-')}")
    if model.get("imageId"):
        head.add_row("image", str(model.get("imageId")))
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("instance", "latest model", "health", "private ip", "detail"):
        table.add_column(column, overflow="fold", no_wrap=column != "detail")
    for i in fleet.get("instances") or []:
        if isinstance(i, Mapping):
            latest = i.get("latestModelApplied")
            table.add_row(
                str(i.get("instanceId")),
                "-" if latest is None else ("yes" if latest else "no"),
                phase_text_health(i.get("health")),
                str(i.get("privateIp") or "-"),
                str(i.get("detail") or ""),
            )
    return Group(head, Text(""), table)


def phase_text_health(health: object) -> Text:
    style = {"Healthy": "green", "Unhealthy": "red", "Failed": "bold red", "Updating": "yellow"}
    return Text(str(health or "-"), style=style.get(str(health), ""))


def releases_table(releases: object) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("id", "group", "release", "phase", "wave", "updated (UTC)", "reason"):
        table.add_column(column, overflow="fold", no_wrap=column != "reason")
    for r in releases if isinstance(releases, list) else []:
        if isinstance(r, Mapping):
            table.add_row(
                str(r.get("id")),
                str(r.get("group")),
                str(r.get("release")),
                phase_text(r.get("phase")),
                f"{r.get('wave')}/{r.get('waves')}",
                when(r.get("updatedAt")),
                str(r.get("reason") or ""),
            )
    return table


def targets_view(payload: Json) -> RenderableType:
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column(overflow="fold")
    head.add_row("source", str(payload.get("source") or "-"))
    head.add_row("default group", str(payload.get("defaultGroup") or "-"))
    found = payload.get("errors")
    errors: Sequence[Any] = found if isinstance(found, list) else []
    head.add_row("configuration", "ok" if payload.get("ok") else Text("NOT usable", style="bold red"))
    for problem in errors:
        head.add_row("", Text(str(problem), style="red"))
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("group", "wave", "target", "active rollout", "phase", "stable"):
        table.add_column(column, overflow="fold")
    for g in payload.get("groups") or []:
        if not isinstance(g, Mapping):
            continue
        for w in g.get("waves") or []:
            if not isinstance(w, Mapping):
                continue
            for t in w.get("targets") or []:
                if not isinstance(t, Mapping):
                    continue
                state = t.get("state") if isinstance(t.get("state"), Mapping) else {}
                assert isinstance(state, Mapping)
                stable = state.get("stableRelease") or "-"
                table.add_row(
                    str(g.get("name")),
                    str(w.get("wave")),
                    str(t.get("key")),
                    str(state.get("activeRolloutId") or "-"),
                    phase_text(state.get("activePhase") or "-")
                    if not state.get("error")
                    else Text(str(state["error"])),
                    str(stable),
                )
    return Group(head, Text(""), table)


# --- what-if (GET /api/plan) --------------------------------------------------------------------------

SEVERITY_STYLE = {"refuse": "bold red", "warn": "yellow"}


def _duration(seconds: object) -> str:
    value = float(seconds) if isinstance(seconds, (int, float)) else 0.0
    minutes, secs = divmod(int(round(value)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def target_plan_view(plan: Json) -> RenderableType:
    """One target's plan: the steps, capacity, times, ARM writes and the findings (or why there is none)."""
    if plan.get("error"):
        target, error = plan.get("target"), plan.get("error")
        return Text.assemble((f"{target}", "bold"), ": ", ("refused", "bold red"), f" - {error}")
    verdict_style = {"refused": "bold red", "warnings": "yellow", "ok": "green"}.get(str(plan.get("verdict")), "")
    fleet = plan.get("fleet") or {}
    header = Text.assemble(
        (f"{plan.get('target')}", "bold"),
        f": {plan.get('release')} on {fleet.get('instances')} instance(s) ({fleet.get('healthy')} healthy) - ",
        (str(plan.get("verdict")), verdict_style),
    )
    steps = Table(box=None, pad_edge=False, show_header=True)
    steps.add_column("step")
    steps.add_column("instances")
    for step in plan.get("steps") or []:
        name = "canary" if step.get("kind") == "canary" else f"batch {step.get('number')}"
        steps.add_row(name, _ids(step.get("instances")))
    capacity = plan.get("capacity") or {}
    estimate = plan.get("estimate") or {}
    writes = plan.get("armWrites") or {}

    def total(path: str) -> str:
        w = writes.get(path) or {}
        return f"{w.get('total')} ({w.get('model')} model, {w.get('upgrades')} upgrade, {w.get('reimages')} reimage)"

    facts = Table(box=None, pad_edge=False, show_header=False)
    facts.add_column(style="dim")
    facts.add_column()
    facts.add_row(
        "capacity",
        f"at most {capacity.get('maxUnavailable')} instance(s) down at once "
        f"({capacity.get('maxUnavailablePercent')}%), {capacity.get('minServing')} always serving",
    )
    facts.add_row("full promotion", f"~{_duration(estimate.get('promotionSeconds'))}")
    facts.add_row("rollback", f"~{_duration(estimate.get('rollbackSeconds'))} (from the last batch)")
    facts.add_row("times from", str(estimate.get("source")))
    facts.add_row("ARM writes", f"{total('promotion')} to promote")
    facts.add_row("", f"{total('rollbackOfCanary')} if the canary rolls back")
    facts.add_row("", f"{total('rollbackFromLastBatch')} if the last batch rolls back")
    parts: list[RenderableType] = [header, steps, facts]
    for finding in plan.get("findings") or []:
        style = SEVERITY_STYLE.get(str(finding.get("severity")), "")
        parts.append(
            Text.assemble(
                (f"{finding.get('severity')} ", style), (f"[{finding.get('check')}] ", "dim"), finding.get("reason", "")
            )
        )
    return Group(*parts)


def plan_view(payload: Json) -> RenderableType:
    """``GET /api/plan``: every wave's targets, then the group's total."""
    parts: list[RenderableType] = [
        Text.assemble(
            ("what-if ", "bold"),
            f"{payload.get('release') or '(the next release)'} to group {payload.get('group')!r}: ",
            (str(payload.get("verdict")), "bold"),
            " - nothing was written",
        )
    ]
    waves = payload.get("waves") or []
    for wave in waves:
        if len(waves) > 1:
            parts.append(Text(f"wave {wave.get('wave')}", style="bold underline"))
        for plan in wave.get("targets") or []:
            parts.append(target_plan_view(plan))
            parts.append(Text(""))
    if len(waves) > 1:
        parts.append(
            Text(
                f"whole group: ~{_duration(payload.get('promotionSeconds'))} "
                f"(with {payload.get('waveBakeSeconds')} s of bake between waves)"
            )
        )
    return Group(*parts)
