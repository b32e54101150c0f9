"""The ``vmss-canary`` commands (typer), each a thin call into ``Api`` and a view (``render``).

Not ``from __future__ import annotations``: typer reads the parameters' ``Annotated`` metadata at run time.
The options every command takes (``--url``, ``--key``, ``--token``, ``--scope``, ``-o``, ``--http-timeout``)
are added to each command's signature by ``_command``, so they go after the command name.
"""

import inspect
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

import typer
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.text import Text

from vmss_canary_cli import render
from vmss_canary_cli.api import Api
from vmss_canary_cli.exits import PHASE_EXIT, CliError, ExitCode
from vmss_canary_cli.releasefile import DEFAULT_CONTAINER, check_container, read_release_file, upload

VERBS = ("abort", "pause", "resume", "promote", "promote-full", "retry")
# A wait or a watch survives the API being unreachable (or answering 502/503/504) for this long in a row.
UNREACHABLE_GRACE_SECONDS = 60.0


class Output(str, Enum):
    human = "human"
    json = "json"


app = typer.Typer(
    name="vmss-canary",
    help="Canary releases for Azure VM Scale Sets: the operator's command line for the function app's API.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@dataclass
class Ctx:
    """What every command gets: the connection options, the output mode and the consoles."""

    url: str | None
    key: str | None
    token: str | None
    scope: str | None
    output: Output
    http_timeout: float
    out: Console = field(init=False)
    err: Console = field(init=False)
    _api: Api | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        plain = self.output is Output.json
        self.out = Console(no_color=plain, highlight=False, soft_wrap=False)
        self.err = Console(stderr=True, highlight=False, no_color=plain, soft_wrap=True)

    @property
    def json(self) -> bool:
        return self.output is Output.json

    @property
    def api(self) -> Api:
        if self._api is None:
            self._api = Api(self.url, key=self.key, token=self.token, scope=self.scope, timeout=self.http_timeout)
        return self._api

    def close(self) -> None:
        if self._api is not None:
            self._api.close()

    def emit(self, payload: Any, view: Callable[[], RenderableType | str]) -> None:
        """The answer: JSON on stdout for ``-o json``, the human view otherwise."""
        if self.json:
            sys.stdout.write(json.dumps(payload, indent=2) + "\n")
            sys.stdout.flush()
        else:
            self.out.print(view())

    def note(self, message: str) -> None:
        """A progress message: stdout for people, stderr under ``-o json`` (stdout stays one JSON document)."""
        (self.err if self.json else self.out).print(message, markup=False, highlight=False, soft_wrap=True)

    def fail(self, exc: CliError) -> int:
        if self.json:
            sys.stderr.write(json.dumps({"error": str(exc), "exitCode": int(exc.code)}) + "\n")
        else:
            self.err.print(Text(f"error: {exc}", style="bold red"))
        return int(exc.code)


P = inspect.Parameter
COMMON = [
    P(
        "url",
        P.KEYWORD_ONLY,
        default=None,
        annotation=Annotated[
            str | None,
            typer.Option(
                "--url", envvar="VMSS_CANARY_URL", help="The function app's URL (https://<app>.azurewebsites.net)."
            ),
        ],
    ),
    P(
        "key",
        P.KEYWORD_ONLY,
        default=None,
        annotation=Annotated[
            str | None,
            typer.Option("--key", envvar="VMSS_CANARY_KEY", help="A function key (HTTP_AUTH=function-key)."),
        ],
    ),
    P(
        "token",
        P.KEYWORD_ONLY,
        default=None,
        annotation=Annotated[
            str | None,
            typer.Option(
                "--token", envvar="VMSS_CANARY_TOKEN", help="A Microsoft Entra access token (HTTP_AUTH=entra)."
            ),
        ],
    ),
    P(
        "scope",
        P.KEYWORD_ONLY,
        default=None,
        annotation=Annotated[
            str | None,
            typer.Option(
                "--scope",
                envvar="VMSS_CANARY_SCOPE",
                help="Get the Entra token for this scope (api://<client id>/.default) from DefaultAzureCredential.",
            ),
        ],
    ),
    P(
        "output",
        P.KEYWORD_ONLY,
        default=Output.human,
        annotation=Annotated[
            Output, typer.Option("--output", "-o", envvar="VMSS_CANARY_OUTPUT", help="human, or json for machines.")
        ],
    ),
    P(
        "http_timeout",
        P.KEYWORD_ONLY,
        default=30.0,
        annotation=Annotated[float, typer.Option("--http-timeout", min=1, max=600, help="Seconds per HTTP call.")],
    ),
]
COMMON_NAMES = [p.name for p in COMMON]


def _command(name: str) -> Callable[[Callable[..., int]], Callable[..., int]]:
    """Register ``fn(ctx, ...)`` as command ``name`` with the common options; its int is the exit code."""

    def register(fn: Callable[..., int]) -> Callable[..., int]:
        signature = inspect.signature(fn)
        own = list(signature.parameters.values())[1:]

        def run(**kwargs: Any) -> None:
            ctx = Ctx(**{k: kwargs.pop(k) for k in COMMON_NAMES})
            try:
                code = fn(ctx, **kwargs)
            except CliError as exc:
                code = ctx.fail(exc)
            except KeyboardInterrupt:
                ctx.err.print("interrupted")
                code = 130
            except Exception as exc:  # noqa: BLE001 - never a traceback for the operator
                if os.environ.get("VMSS_CANARY_DEBUG"):
                    raise
                code = ctx.fail(CliError(f"unexpected {type(exc).__name__}: {exc}", ExitCode.API_ERROR))
            finally:
                ctx.close()
            raise typer.Exit(int(code))

        run.__signature__ = signature.replace(parameters=own + COMMON)  # type: ignore[attr-defined]
        run.__name__ = fn.__name__
        run.__doc__ = fn.__doc__
        app.command(name)(run)
        return fn

    return register


# --- reading ------------------------------------------------------------------------------------------


@_command("status")
def status(ctx: Ctx) -> int:
    """The scale set's stable release, its active rollout, and every rollout (GET /api/rollouts)."""
    payload = ctx.api.get("rollouts")
    ctx.emit(payload, lambda: render.status_view(payload))
    return 0


def _fleet_or_none(ctx: Ctx) -> dict[str, Any] | None:
    try:
        return ctx.api.get("fleet")
    except CliError:
        return None


IdArg = Annotated[
    str, typer.Argument(metavar="ID", help="The rollout id (<app>-v<N>-<10 hex digits>), as `status` lists it.")
]
WatchOpt = Annotated[bool, typer.Option("--watch", "-w", help="Redraw until it ends; exit code as `release --wait`.")]
IntervalOpt = Annotated[float, typer.Option("--interval", min=0.2, max=300, help="Seconds between polls.")]
EventsOpt = Annotated[int, typer.Option("--events", min=0, max=1000, help="How many of the last events to show.")]
WaitOpt = Annotated[bool, typer.Option("--wait/--no-wait", help="Wait for the verdict; the exit code says it.")]
TimeoutOpt = Annotated[float, typer.Option("--timeout", min=1, help="Give up waiting after this many seconds.")]


@_command("get")
def get(
    ctx: Ctx, rollout_id: IdArg, watch: WatchOpt = False, interval: IntervalOpt = 2.0, events: EventsOpt = 10
) -> int:
    """One rollout with its audit trail (GET /api/rollouts/ID); --watch follows it live until it ends."""
    if watch:
        return _follow(ctx, rollout_id, kind="rollout", timeout=None, interval=interval, events=events).code
    detail = ctx.api.get(f"rollouts/{rollout_id}")
    fleet = _fleet_or_none(ctx) if not ctx.json else None
    ctx.emit(detail, lambda: render.rollout_view(detail, fleet, last_events=events))
    return 0


@_command("fleet")
def fleet(ctx: Ctx) -> int:
    """Every instance now: model, health and why (GET /api/fleet)."""
    payload = ctx.api.get("fleet")
    ctx.emit(payload, lambda: render.fleet_view(payload))
    return 0


@_command("targets")
def targets(ctx: Ctx) -> int:
    """Groups, waves and targets with their state (GET /api/targets)."""
    try:
        payload = ctx.api.get("targets")
    except CliError as exc:
        if exc.code is ExitCode.NOT_FOUND and "no such route" in str(exc):
            raise CliError(
                "this app has no GET /api/targets (it predates groups and waves: deploy a newer version); "
                "`vmss-canary status` shows its one scale set",
                ExitCode.NOT_FOUND,
            ) from None
        raise
    ctx.emit(payload, lambda: render.targets_view(payload))
    return 0


@_command("releases")
def releases(ctx: Ctx) -> int:
    """Every release to a group of scale sets, across its waves (GET /api/releases)."""
    payload = ctx.api.get("releases")
    ctx.emit(payload, lambda: render.releases_table(payload.get("releases")))
    return 0


@_command("release-get")
def release_get(
    ctx: Ctx,
    release_id: Annotated[str, typer.Argument(metavar="ID", help="The group release's id (the release's rollout id).")],
    watch: WatchOpt = False,
    interval: IntervalOpt = 2.0,
    events: EventsOpt = 10,
) -> int:
    """One group release: each target's wave and rollout, the trail (GET /api/releases/ID)."""
    if watch:
        return _follow(ctx, release_id, kind="group", timeout=None, interval=interval, events=events).code
    detail = ctx.api.get(f"releases/{release_id}")
    ctx.emit(detail, lambda: render.group_view(detail, last_events=events))
    return 0


# --- steering -----------------------------------------------------------------------------------------

ReasonOpt = Annotated[str | None, typer.Option("--reason", help="Why (recorded in the audit trail; 500 characters).")]
GroupReleaseOpt = Annotated[
    bool, typer.Option("--group-release", help="ID is a group release: steer the whole release (every target).")
]
TargetOpt = Annotated[
    str | None,
    typer.Option("--target", help="Steer only this target (<resource group>:<name>) of the group release ID."),
]


def _steer(
    ctx: Ctx, verb: str, rollout_id: str, reason: str | None, group: bool, target: str | None, **extra: Any
) -> int:
    body: dict[str, Any] = {**({"reason": reason} if reason is not None else {}), **extra}
    if target is not None:
        path = f"releases/{rollout_id}/targets/{target}/{verb}"
    elif group:
        path = f"releases/{rollout_id}/{verb}"
    else:
        path = f"rollouts/{rollout_id}/{verb}"
    outcome = ctx.api.post(path, body or None)

    def view() -> RenderableType:
        return Text.assemble(
            (f"{verb}: ", "bold"),
            (str(outcome.get("status")), "bold"),
            f" - {outcome.get('message')}",
            " (phase ",
            render.phase_text(outcome.get("phase")),
            ")",
        )

    ctx.emit(outcome, view)
    return 0


def _verb_command(verb: str, doc: str) -> None:
    if verb == "abort":

        def abort(
            ctx: Ctx,
            rollout_id: IdArg,
            reason: ReasonOpt = None,
            rollback: Annotated[bool, typer.Option("--rollback", help="Also roll back to the baseline.")] = False,
            group_release: GroupReleaseOpt = False,
            target: TargetOpt = None,
        ) -> int:
            extra = {"rollback": True} if rollback else {}
            return _steer(ctx, "abort", rollout_id, reason, group_release, target, **extra)

        abort.__doc__ = doc
        _command("abort")(abort)
        return

    def steer(
        ctx: Ctx,
        rollout_id: IdArg,
        reason: ReasonOpt = None,
        group_release: GroupReleaseOpt = False,
        target: TargetOpt = None,
    ) -> int:
        return _steer(ctx, verb, rollout_id, reason, group_release, target)

    steer.__doc__ = doc
    steer.__name__ = verb.replace("-", "_")
    _command(verb)(steer)


for _verb, _doc in {
    "abort": "Stop a rollout where it is (--rollback: and restore the baseline).",
    "pause": "Hold a rollout: no next step until resume.",
    "resume": "Go on with a paused rollout.",
    "promote": "Skip the rest of the canary's bake.",
    "promote-full": "Upgrade every instance left, at once.",
    "retry": "Go on with a Failed rollout from the fleet as observed.",
}.items():
    _verb_command(_verb, _doc)


# --- releasing ----------------------------------------------------------------------------------------


@_command("release")
def release(
    ctx: Ctx,
    file: Annotated[Path, typer.Argument(metavar="FILE", help="The release: <app>.v<N>.sh or <app>.v<N>.image.json.")],
    group: Annotated[
        str | None, typer.Option("--group", help="Release to this group of scale sets (<container>/<group>/<file>).")
    ] = None,
    container: Annotated[
        str, typer.Option("--container", envvar="VMSS_CANARY_CONTAINER", help="The release container.")
    ] = DEFAULT_CONTAINER,
    storage_connection_string: Annotated[
        str | None,
        typer.Option(
            "--storage-connection-string",
            envvar="VMSS_CANARY_STORAGE_CONNECTION_STRING",
            help="The release storage account's connection string.",
        ),
    ] = None,
    storage_account_url: Annotated[
        str | None,
        typer.Option(
            "--storage-account-url",
            envvar="VMSS_CANARY_STORAGE_ACCOUNT_URL",
            help="Or its blob endpoint, used with DefaultAzureCredential.",
        ),
    ] = None,
    wait: WaitOpt = False,
    timeout: TimeoutOpt = 3600,
    interval: IntervalOpt = 2.0,
    events: EventsOpt = 5,
) -> int:
    """Upload a release to the release container; with --wait, follow it to its verdict (exit 0 on Succeeded)."""
    started = time.monotonic()
    rf = read_release_file(file, group)
    check_container(container)
    if wait:
        ctx.api.get("rollouts")  # the API is reachable and takes the credential: else fail before uploading
    done = upload(rf, container=container, connection_string=storage_connection_string, account_url=storage_account_url)
    summary: dict[str, Any] = {
        "blob": f"{container}/{rf.blob_name}",
        "upload": done,
        "rolloutId": rf.rollout_id,
        "sha256": rf.sha256,
    }
    ctx.note(f"{rf.blob_name}: {done} to container {container!r}; rollout id {rf.rollout_id}")
    if not wait:
        ctx.emit(summary, lambda: f"not waiting: `vmss-canary get {rf.rollout_id} --watch` follows it")
        return 0
    remaining = max(1.0, timeout - (time.monotonic() - started))
    followed = _follow(
        ctx, rf.rollout_id, kind="auto", timeout=remaining, interval=interval, events=events, quiet_json=True
    )
    if ctx.json:
        summary.update(
            {"followed": followed.kind, "phase": followed.phase, "exitCode": followed.code, "detail": followed.detail}
        )
        ctx.emit(summary, lambda: "")
    return followed.code


# --- what-if and undo ---------------------------------------------------------------------------------


@_command("plan")
def plan(
    ctx: Ctx,
    release_spec: Annotated[
        str | None,
        typer.Argument(
            metavar="[FILE]",
            help="A release file (<app>.v<N>.sh or .image.json), a blob name, or a version (v7); "
            "none: the next version of the stable release.",
        ),
    ] = None,
    group: Annotated[str | None, typer.Option("--group", help="Plan for this group of scale sets.")] = None,
) -> int:
    """What a release would do, before anything is written (GET /api/plan): the canary and each batch, the
    capacity lost at worst, the time to full promotion and to rollback, the ARM writes, and why it would
    be refused. Exit 0 when it could start, 5 (as a Rejected release) when pre-flight would refuse it."""
    text = release_spec or ""
    if text and Path(text).is_file():
        text = read_release_file(Path(text), None).blob_name  # checked like `release` checks it
    query = urlencode({k: v for k, v in (("release", text), ("group", group)) if v})
    payload = ctx.api.get(f"plan?{query}" if query else "plan")
    ctx.emit(payload, lambda: render.plan_view(payload))
    return int(ExitCode.REJECTED) if payload.get("verdict") == "refused" else 0


@_command("undo")
def undo(
    ctx: Ctx,
    to: Annotated[
        str | None, typer.Option("--to", metavar="VERSION", help="Go back to this version (v3) instead of the last.")
    ] = None,
    target: Annotated[
        str | None, typer.Option("--target", help="The scale set (<resource group>:<name>); default: VMSS_*'s.")
    ] = None,
    reason: ReasonOpt = None,
    wait: WaitOpt = False,
    timeout: TimeoutOpt = 3600,
    interval: IntervalOpt = 2.0,
    events: EventsOpt = 5,
) -> int:
    """Replace the stable release with the previous one that succeeded (or --to VERSION) through the same canary
    and batches, as a new rollout (POST /api/undo). Exit codes as `release --wait`."""
    body: dict[str, Any] = {}
    if to is not None:
        body["to"] = to
    if reason is not None:
        body["reason"] = reason
    path = f"undo?{urlencode({'target': target})}" if target else "undo"
    outcome = ctx.api.post(path, body or None)
    rollout_id = str(outcome.get("rolloutId") or "")
    ended = outcome.get("status") == "Rejected"
    if not wait or ended or not rollout_id:
        ctx.emit(
            outcome,
            lambda: Text.assemble(
                ("undo: ", "bold"),
                (str(outcome.get("status")), "bold"),
                f" - {outcome.get('message')} ({rollout_id}, phase ",
                render.phase_text(outcome.get("phase")),
                ")",
            ),
        )
        return int(ExitCode.REJECTED) if ended else 0
    ctx.note(f"undo: {outcome.get('status')} - {outcome.get('message')}; rollout id {rollout_id}")
    followed = _follow(
        ctx, rollout_id, kind="rollout", timeout=timeout, interval=interval, events=events, quiet_json=True
    )
    if ctx.json:
        ctx.emit({**outcome, "followed": followed.kind, "phase": followed.phase, "exitCode": followed.code}, lambda: "")
    return followed.code


# --- following a rollout ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Followed:
    kind: str  # "rollout" or "group"
    phase: str
    code: int
    detail: dict[str, Any]


def _find(ctx: Ctx, rollout_id: str, kind: str) -> tuple[str, dict[str, Any]] | None:
    """The group release (``releases/ID``) or rollout (``rollouts/ID``) of this id, or None while unrecorded.

    A group release's row is written before its targets' rollouts (which share its id), so asking for the
    group first never mistakes one target's rollout for the release."""
    for what, path in (("group", f"releases/{rollout_id}"), ("rollout", f"rollouts/{rollout_id}")):
        if kind not in ("auto", what):
            continue
        try:
            return what, ctx.api.get(path)
        except CliError as exc:
            if exc.code is not ExitCode.NOT_FOUND or kind != "auto":
                raise
    return None


def end_code(kind: str, detail: dict[str, Any]) -> int:
    """The exit code of an ended rollout or group release. A group release that Halted ends as the target
    that halted it: Failed, Rejected or Aborted there (only a cause ends that way), else RolledBack (the
    canary of a target failed; the others of its wave were rolled back with it); Halted when none says."""
    phase = str(detail.get("phase"))
    if kind == "group" and phase == "Halted":
        ends = {t["rollout"].get("phase") for t in _targets_of(detail) if isinstance(t.get("rollout"), dict)}
        for cause in ("Failed", "Rejected", "Aborted", "RolledBack"):
            if cause in ends:
                return int(PHASE_EXIT[cause])
        return int(ExitCode.HALTED)
    return int(PHASE_EXIT.get(phase, ExitCode.API_ERROR))


def _targets_of(detail: dict[str, Any]) -> list[dict[str, Any]]:
    targets = detail.get("targets")
    return [t for t in targets if isinstance(t, dict)] if isinstance(targets, list) else []


def _single_rollout(ctx: Ctx, group: dict[str, Any]) -> dict[str, Any] | None:
    """The rollout of a group release with one target (the VMSS_* scale set alone, the default): shown as a
    rollout (instances, verdict, events), which says more than a table of one target."""
    targets = _targets_of(group)
    if len(targets) != 1 or not targets[0].get("rolloutId"):
        return None
    try:
        return ctx.api.get(f"rollouts/{targets[0]['rolloutId']}")
    except CliError as exc:
        if exc.code is ExitCode.NOT_FOUND:
            return None
        raise


def _follow(
    ctx: Ctx,
    rollout_id: str,
    *,
    kind: str,
    timeout: float | None,
    interval: float,
    events: int,
    quiet_json: bool = False,
) -> Followed:
    """Poll until the rollout (or group release) ends, drawing it: a live view on a terminal, a line per
    change in a log. Returns how it ended; raises ``CliError`` on timeout or a lasting outage."""
    started = time.monotonic()
    live_view = not ctx.json and ctx.out.is_terminal
    logged_events = 0
    last_line = ""
    outage_since: float | None = None
    found: tuple[str, dict[str, Any]] | None = None
    inner: dict[str, Any] | None = None  # the one rollout of a single-target group release
    fleet: dict[str, Any] | None = None
    group_phase = ""

    def frame(note: str) -> RenderableType:
        if found is None:
            return Text(note)
        what, detail = found
        if what == "group" and inner is not None:
            view: RenderableType = Group(
                Text(render.group_header(detail), style="bold"), render.rollout_view(inner, fleet, last_events=events)
            )
        elif what == "group":
            view = render.group_view(detail, last_events=events)
        else:
            view = render.rollout_view(detail, fleet, last_events=events)
        return Group(view, Text(""), Text(note, style="dim")) if note else view

    live = Live(console=ctx.out, auto_refresh=False, transient=False) if live_view else None
    if live is not None:
        live.start()
    try:
        while True:
            elapsed = time.monotonic() - started
            try:
                found = _find(ctx, rollout_id, kind) or found
                inner = _single_rollout(ctx, found[1]) if found is not None and found[0] == "group" else None
                if found is not None and (found[0] == "rollout" or inner is not None):
                    fleet = _fleet_or_none(ctx)
                outage_since = None
            except CliError as exc:
                if exc.code is not ExitCode.UNREACHABLE:
                    raise
                outage_since = outage_since or time.monotonic()
                if time.monotonic() - outage_since > UNREACHABLE_GRACE_SECONDS:
                    raise
            phase = str(found[1].get("phase")) if found else ""
            ended = phase in render.ENDED
            if outage_since is not None:
                note = f"the API is unavailable; trying again ({elapsed:.0f} s)"
            elif found is None:
                note = f"waiting for the app to record {rollout_id} ({elapsed:.0f} s)"
            elif ended:
                note = ""  # the final line says it, under the last frame
            elif timeout is not None:
                note = f"waiting for the verdict: {elapsed:.0f} s of {timeout:.0f} s; Ctrl-C stops waiting, not it"
            else:
                note = f"watching every {interval:g} s; Ctrl-C stops watching, not the rollout"
            if live is not None:
                live.update(frame(note), refresh=True)
            elif found is not None:
                what, detail = found
                if what == "group" and str(detail.get("phase")) != group_phase:
                    group_phase = str(detail.get("phase"))
                    ctx.note(f"[{elapsed:6.1f}s] {render.group_header(detail)}")
                shown = inner if what == "group" and inner is not None else detail
                if what == "group" and inner is None:
                    line = render.group_line(detail, elapsed)
                else:
                    line = render.progress_line(shown, fleet, elapsed)
                trail = [e for e in shown.get("events") or [] if isinstance(e, dict)]
                if line.split("] ", 1)[1] != last_line or len(trail) > logged_events:
                    last_line = line.split("] ", 1)[1]
                    ctx.note(line)
                    for e in trail[logged_events:] if not ctx.json else []:
                        ctx.note(render.event_line(e))
                    logged_events = len(trail)
            if found is not None and ended:
                what, detail = found
                code = end_code(what, detail)
                if live is not None:
                    live.stop()
                    live = None
                if not ctx.json:
                    reason = detail.get("rollbackReason") or detail.get("reason") or ""
                    if inner is not None:
                        target = _targets_of(detail)[0].get("target")
                        said = inner.get("rollbackReason") or inner.get("reason") or ""
                        reason = f"{target}: {inner.get('phase')}: {said}"
                    style = "bold green" if code == 0 else "bold red"
                    ctx.out.print(
                        Text(f"{rollout_id}: {phase} (exit {code}) {reason}".rstrip(), style=style), soft_wrap=True
                    )
                elif not quiet_json:
                    ctx.emit(detail, lambda: "")
                return Followed(what, phase, code, detail)
            if timeout is not None and elapsed >= timeout:
                state = (
                    f"still {phase}"
                    if found
                    else "never recorded by the app (is it the app watching this container? a release to a --group "
                    "needs an app that routes group folders)"
                )
                raise CliError(f"timeout: {rollout_id} is {state} after {timeout:.0f} s", ExitCode.TIMEOUT)
            time.sleep(interval if timeout is None else max(0.0, min(interval, timeout - elapsed)))
    finally:
        if live is not None:
            live.stop()


def run(argv: list[str] | None = None) -> int:
    """Run the app; every outcome is an exit code, never a traceback."""
    try:
        app(args=argv, prog_name="vmss-canary", standalone_mode=True)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    except Exception as exc:  # noqa: BLE001 - the last resort
        if os.environ.get("VMSS_CANARY_DEBUG"):
            raise
        print(f"vmss-canary: unexpected {type(exc).__name__}: {exc}", file=sys.stderr)
        return int(ExitCode.API_ERROR)
    return 0
