"""Environment -> Settings, validated, with every problem reported at once.

The variables are the configuration contract (docs/design.md, "Configuration"): ``settings_table()``
below lists each one once, with its meaning and default; the policy and probe knobs come from the
fields of ``RolloutPolicy`` and ``ProbeSettings`` (``rollout.knobs``). README.md's configuration
table is generated from it (``python -m rollout.settings --update-readme``; a test fails when they
differ); ``local.settings.sample.json`` lists every variable and ``infra/`` sets them all (tests check
both against ``SETTINGS_READ``).
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from rollout.knobs import KnobField, bound_problem, knob, knob_fields
from rollout.policy import RolloutPolicy
from rollout.ports import TABLE_PREFIX_PATTERN
from rollout.releases import DEFAULT_EXTENSION_NAME, FILE_AUTH_MODES

DEFAULT_ARM_ENDPOINT = "https://management.azure.com"
DEFAULT_RELEASE_CONTAINER = "init"
# The advance timer's schedule: the Functions host reads %ROLLOUT_TICK_SCHEDULE% itself (function_app.py);
# this is the value infra/ and local.settings.sample.json set (tests check both).
DEFAULT_TICK_SCHEDULE = "*/30 * * * * *"
# The fan-out (rollout.fanout): the queue the timer puts one message per target on, and the ARM read
# budget its messages are spread over (below ARM's subscription read bucket of 250, refilled 25/s:
# learn.microsoft.com/azure/azure-resource-manager/management/request-limits-and-throttling).
DEFAULT_TICK_QUEUE = "rollout-ticks"
DEFAULT_TICK_READ_BURST = 100
DEFAULT_TICK_READ_RATE = 20.0

# Who may call the operator API (README "The operator API"): routes need a function key and the actor
# is recorded as "function key", or App Service authentication (Microsoft Entra ID) is in front and the
# actor and app roles come from the validated principal.
HTTP_AUTH_MODES: tuple[str, ...] = ("function-key", "entra")
DEFAULT_HTTP_AUTH = HTTP_AUTH_MODES[0]

# Read-only variables the platform itself sets (not app settings; infra/ must not set them).
# WEBSITE_AUTH_ENABLED: "Read-only. Injected into a Windows or Linux app to indicate whether App Service
# authentication is enabled." (learn.microsoft.com/azure/app-service/reference-app-settings, section
# "Authentication & Authorization"). Its value is "True" when on; Microsoft.Identity.Web compares it
# with "true" ignoring case (AzureAD/microsoft-identity-web,
# src/Microsoft.Identity.Web/AppServicesAuth/AppServicesAuthenticationInformation.cs).
PLATFORM_AUTH_SIGNAL = "WEBSITE_AUTH_ENABLED"
PLATFORM_SIGNALS_READ: tuple[str, ...] = (PLATFORM_AUTH_SIGNAL,)

_NAME_RE = re.compile(r"^[A-Za-z0-9._()-]{1,90}$")
_CONTAINER_RE = re.compile(r"^(?!.*--)[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
_GUIDISH_RE = re.compile(r"^[0-9a-fA-F-]{1,64}$")
# TARGETS_CONFIG: a blob name (plain '/'-separated segments, as rollout.adapters.blobs accepts) with the
# suffix that says how it is read (rollout.targets_doc.DOCUMENT_SUFFIXES).
_SEGMENT = r"[A-Za-z0-9][A-Za-z0-9._-]{0,100}"
_DOCUMENT_BLOB_RE = re.compile(rf"(?:{_SEGMENT}/){{0,4}}{_SEGMENT}\.(?:json|ya?ml)", re.IGNORECASE)
MAX_DISCOVERY_SUBSCRIPTIONS = 20


class SettingsError(ValueError):
    """One or more settings are missing or malformed; the message lists every problem."""


@dataclass(frozen=True)
class StorageConnection:
    """Either a connection string (Azurite, keys) or a service URI used with the managed identity."""

    connection_string: str | None = None
    service_uri: str | None = None
    setting: str = ""  # the app setting it was read from (errors name it, never its value)

    def describe(self) -> str:
        if self.service_uri:
            return f"{self.service_uri} (managed identity)"
        return "connection string"


@dataclass(frozen=True)
class ProbeSettings:
    """The HTTP probe of each instance's private IP; every field is a knob (``rollout.knobs``)."""

    path: str = knob("/", "PROBE_PATH", "the probe's path (starts with `/`)")
    port: int = knob(80, "PROBE_PORT", "the probe's TCP port", minimum=1, maximum=65535)
    # A status code is three digits, 100 to 599 (RFC 9110, section 15); infra/main.bicep bounds it the same.
    expect_status: int = knob(
        200, "PROBE_EXPECT_STATUS", "the HTTP status a healthy instance answers", minimum=100, maximum=599
    )
    body_pattern: str = knob("", "PROBE_BODY_PATTERN", "optional regular expression the body must match")
    # At most host.json's functionTimeout (5 min): a tick waits for its probes. Larger values could not
    # finish within an invocation, and past the socket's range (1e300) they crashed the probe.
    timeout_seconds: float = knob(3.0, "PROBE_TIMEOUT_SECONDS", "per probe, in seconds", minimum=0.1, maximum=300)


@dataclass(frozen=True)
class Settings:
    subscription_id: str
    resource_group: str
    vmss_name: str
    arm_endpoint: str = DEFAULT_ARM_ENDPOINT
    arm_ca_bundle: str | None = None
    arm_token: str | None = field(default=None, repr=False)
    release_storage: StorageConnection | None = None
    state_storage: StorageConnection = field(default_factory=StorageConnection)
    release_container: str = DEFAULT_RELEASE_CONTAINER
    extension_name: str = DEFAULT_EXTENSION_NAME
    extension_file_auth: str = FILE_AUTH_MODES[0]  # or "none" (public/SAS URLs: not recommended)
    extension_identity_client_id: str | None = None
    state_table_prefix: str = ""
    policy: RolloutPolicy = field(default_factory=RolloutPolicy)
    probe: ProbeSettings = field(default_factory=ProbeSettings)
    http_auth: str = DEFAULT_HTTP_AUTH  # one of HTTP_AUTH_MODES
    # Many scale sets (README "Targets, groups and waves"): a targets document in the release container,
    # and the subscriptions whose scale sets tagged canary-group=<name> form groups. Neither: the
    # VMSS_* scale set is the default group of one target, as before.
    targets_config: str | None = None
    targets_discovery_subscriptions: tuple[str, ...] = ()

    @property
    def target_key(self) -> str:
        """The scale set's key in the state tables (PartitionKey: no '/', '\\', '#' or '?')."""
        return f"{self.resource_group}:{self.vmss_name}".lower()


@dataclass(frozen=True)
class SettingRow:
    """One row of the configuration table: the variables, what they mean, the default as shown."""

    names: tuple[str, ...]
    meaning: str
    default: str


def _code(value: Any) -> str:
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, float):
        return f"`{value:g}`"
    return f"`{value}`" if value != "" else "none"


def _shared_settings(cls: type[Any]) -> set[str]:
    """Settings that set a count field or, ending in ``%``, a percent field (``Knob.percent``)."""
    return {kf.knob.setting for kf in knob_fields(cls) if kf.knob.percent}


def _bounds_text(kf: KnobField) -> str:
    k = kf.knob
    if k.choices:
        return f"; one of {', '.join(f'`{c}`' for c in k.choices)}"
    text = ""
    if k.minimum is not None and k.maximum is not None:
        text = f"; {k.minimum:g} to {k.maximum:g}"
    elif k.minimum is not None and k.zero_means is not None and k.minimum != 0:
        text = f"; `0` ({k.zero_means}) or at least {k.minimum:g}"
    elif k.minimum is not None:
        text = f"; at least {k.minimum:g}"
    if k.zero_means is not None and k.minimum == 0:
        text += f" (`0` = {k.zero_means})"
    return text


def _knob_rows(cls: type[Any]) -> list[SettingRow]:
    """One row per app setting of a knob dataclass, in field order. A setting shared by a count and a
    percent field shows the percent default (the count's default, 0, means "use the percent")."""
    shared = _shared_settings(cls)
    rows: dict[str, SettingRow] = {}
    for kf in knob_fields(cls):
        k = kf.knob
        if k.setting in shared:
            if k.percent:
                rows[k.setting] = SettingRow((k.setting,), rows[k.setting].meaning, f"`{kf.default}%`")
            else:
                rows[k.setting] = SettingRow((k.setting,), k.meaning, "")
            continue
        rows[k.setting] = SettingRow((k.setting,), k.meaning + _bounds_text(kf), _code(kf.default))
    return list(rows.values())


def settings_table() -> tuple[SettingRow, ...]:
    """Every app setting, once: the README's configuration table is generated from this (see the module doc)."""
    return (
        *_FIXED_ROWS,
        *_TARGETS_ROWS,
        *_knob_rows(RolloutPolicy),
        *_knob_rows(ProbeSettings),
        _HTTP_AUTH_ROW,
        *_FANOUT_ROWS,
        *_SIGNALS_ROWS,
        *_NOTIFY_ROWS,
    )


_FIXED_ROWS: tuple[SettingRow, ...] = (
    SettingRow(("AZURE_SUBSCRIPTION_ID", "VMSS_RESOURCE_GROUP", "VMSS_NAME"), "the target scale set", "required"),
    SettingRow(
        ("ARM_ENDPOINT",),
        "ARM base URL (sovereign clouds, the local emulator); must be https",
        _code(DEFAULT_ARM_ENDPOINT),
    ),
    SettingRow(
        ("ARM_CA_BUNDLE",), "CA bundle to trust for `ARM_ENDPOINT` (the emulator's self-signed CA)", "system trust"
    ),
    SettingRow(
        ("ARM_TOKEN",),
        "static bearer token for ARM (the emulator only); unset = managed identity (`DefaultAzureCredential`)",
        "unset",
    ),
    SettingRow(
        ("ReleaseStorage", "ReleaseStorage__blobServiceUri"),
        "release container connection: a connection string (Azurite), or the blob endpoint used with the managed "
        "identity (Azure). Set only one form: the blob trigger's binding uses the managed identity as soon as "
        "`ReleaseStorage__blobServiceUri` exists, even empty",
        "",
    ),
    SettingRow(
        ("StateStorage", "StateStorage__tableServiceUri"),
        "state tables connection, same two forms",
        "`AzureWebJobsStorage`",
    ),
    SettingRow(
        ("AzureWebJobsStorage", "AzureWebJobsStorage__tableServiceUri"),
        "the Functions host's own storage; the state tables' fallback",
        "",
    ),
    SettingRow(("RELEASE_CONTAINER",), "the container watched for releases", _code(DEFAULT_RELEASE_CONTAINER)),
    SettingRow(
        ("EXTENSION_NAME",), "the CustomScript extension's name on the scale set", _code(DEFAULT_EXTENSION_NAME)
    ),
    SettingRow(
        ("EXTENSION_FILE_AUTH",),
        "how VMs fetch scripts: `managedIdentity` (protected setting `managedIdentity: {}`) or `none` (public/SAS "
        "URLs; not recommended)",
        _code(FILE_AUTH_MODES[0]),
    ),
    SettingRow(
        ("EXTENSION_IDENTITY_CLIENT_ID",),
        "a user-assigned identity's client id for the script download",
        "system identity",
    ),
    SettingRow(
        ("STATE_TABLE_PREFIX",),
        "prefix of the tables `rollouts`, `rolloutevents`, `targets`, `groupreleases` (letters, digits)",
        "none",
    ),
    SettingRow(
        ("ROLLOUT_TICK_SCHEDULE",),
        "NCRONTAB of the advance timer (6 fields, seconds first); read by the Functions host, not by the app",
        _code(DEFAULT_TICK_SCHEDULE),
    ),
)
_TARGETS_ROWS: tuple[SettingRow, ...] = (
    SettingRow(
        ("TARGETS_CONFIG",),
        "the targets document: a blob in the release container (`.json`, `.yaml` or `.yml`) declaring groups, "
        'waves and targets (README, "Targets, groups and waves"); read with the release storage\'s identity and '
        "re-read when its ETag changes. Unset: the `VMSS_*` scale set is the default group of one target",
        "unset",
    ),
    SettingRow(
        ("TARGETS_DISCOVERY_SUBSCRIPTIONS",),
        "subscription ids (comma-separated) whose scale sets tagged `canary-group=<group>` (and "
        "`canary-wave=<n>`) form groups; the app's identity needs Reader there (infra/README.md)",
        "none",
    ),
)
_HTTP_AUTH_ROW = SettingRow(
    ("HTTP_AUTH",),
    "who may call the operator API: `function-key` (function keys; actor recorded as `function key`) or "
    "`entra` (App Service authentication with Microsoft Entra ID in front; actor and app roles "
    "`Rollouts.Read`/`Rollouts.Operate` from the validated principal; needs the platform's "
    "`WEBSITE_AUTH_ENABLED=True`). Read when the app starts (it sets the routes' auth level): change it with "
    "a restart",
    _code(DEFAULT_HTTP_AUTH),
)

_FANOUT_ROWS: tuple[SettingRow, ...] = (
    SettingRow(
        ("TICK_QUEUE",),
        "the Storage queue the timer puts one message per target with work on; the queue trigger reads it "
        "(its poison queue is `<name>-poison`)",
        _code(DEFAULT_TICK_QUEUE),
    ),
    SettingRow(
        ("TickQueue", "TickQueue__queueServiceUri"),
        "the tick queue's connection: a connection string (Azurite), or the queue endpoint used with the managed "
        "identity (Azure); read by the queue trigger's binding and by the timer",
        "",
    ),
    SettingRow(
        ("TICK_READ_BURST",),
        "ARM reads the ticks of one timer run may make at once; later messages are delayed (at least 0)",
        _code(DEFAULT_TICK_READ_BURST),
    ),
    SettingRow(
        ("TICK_READ_RATE",),
        "ARM reads per second the ticks may make after the burst (at least 0.1)",
        _code(DEFAULT_TICK_READ_RATE),
    ),
)

# The canary judge's signals (rollout.adapters.signals): each source is off unless set.
DEFAULT_SIGNALS_LOGS_ENDPOINT = "https://api.loganalytics.io"
DEFAULT_SIGNALS_LOGS_QUERY = (
    "NginxAccess_CL"
    " | summarize requests = count(), errors = countif(Status >= 500),"
    " latencies_ms = make_list(RequestTime * 1000.0, 10000) by Computer"
)
_SIGNALS_ROWS: tuple[SettingRow, ...] = (
    SettingRow(
        ("SIGNALS_METRICS",),
        "`true`: read the scale set's Azure Monitor platform metrics per instance (`Percentage CPU`, `Network In "
        "Total`, `Network Out Total`, split by `VMName`); needs Monitoring Reader on the scale set (infra/README.md)",
        "`false`",
    ),
    SettingRow(
        ("SIGNALS_LOAD_BALANCER_ID",),
        "resource id of the load balancer in front of the scale set: read its health probe status "
        "(`DipAvailability`) per backend address; needs Monitoring Reader on it. Unset: not read",
        "unset",
    ),
    SettingRow(
        ("SIGNALS_LOGS_WORKSPACE_ID",),
        "Log Analytics workspace id (a GUID): run `SIGNALS_LOGS_QUERY` there over each window; needs Log Analytics "
        "Reader on the workspace. Unset: not read",
        "unset",
    ),
    SettingRow(
        ("SIGNALS_LOGS_QUERY",),
        "the KQL query; its result has one row per instance with the columns `Computer`, `requests` and "
        "optionally `errors`, `latencies_ms` (a list); the window is the query's timespan",
        "requests, 5xx and latencies of `NginxAccess_CL` by `Computer` (`DEFAULT_SIGNALS_LOGS_QUERY`, quoted in "
        'docs/design.md, "Signals")',
    ),
    SettingRow(
        ("SIGNALS_LOGS_ENDPOINT",),
        "the Log Analytics query endpoint (sovereign clouds, the local emulator); must be https",
        _code(DEFAULT_SIGNALS_LOGS_ENDPOINT),
    ),
)

# Notifications (rollout.notifications, docs/design.md "Notifications"): the queue the service puts phase
# changes on (the tick queue's connection, TickQueue), and the channels the queue trigger delivers them to.
DEFAULT_NOTIFY_QUEUE = "rollout-notifications"
DEFAULT_NOTIFY_MAX_ATTEMPTS = 6
DEFAULT_NOTIFY_RETRY_BASE_SECONDS = 30.0
DEFAULT_NOTIFY_TIMEOUT_SECONDS = 10.0
_NOTIFY_ROWS: tuple[SettingRow, ...] = (
    SettingRow(
        ("NOTIFY_QUEUE",),
        "the Storage queue (on the `TickQueue` connection) that phase changes wait on for delivery; the queue "
        "trigger `deliver_notification` reads it, dead letters go to `<name>-poison`",
        _code(DEFAULT_NOTIFY_QUEUE),
    ),
    SettingRow(
        ("NOTIFY_WEBHOOK_URL",),
        "a generic JSON webhook (https) that receives each notification as JSON; a secret (a Key Vault reference "
        "in Azure), never logged",
        "unset",
    ),
    SettingRow(
        ("NOTIFY_TEAMS_WEBHOOK_URL",),
        "a Microsoft Teams incoming webhook (an Adaptive Card per notification); a secret, never logged",
        "unset",
    ),
    SettingRow(
        ("NOTIFY_SLACK_WEBHOOK_URL",),
        "a Slack incoming webhook (`text` and `blocks`); a secret, never logged",
        "unset",
    ),
    SettingRow(
        ("NOTIFY_EVENTGRID_ENDPOINT",),
        "an Event Grid custom topic's endpoint (`.../api/events`, input schema CloudEvents 1.0); the app's "
        "identity needs `EventGrid Data Sender` on the topic",
        "unset",
    ),
    SettingRow(
        ("NOTIFY_EVENTGRID_KEY",),
        "the topic's access key instead of the managed identity (not recommended); a secret, never logged",
        "unset (managed identity)",
    ),
    SettingRow(
        ("NOTIFY_MAX_ATTEMPTS",),
        "delivery attempts per channel before a notification is dead-lettered (1 to 20)",
        _code(DEFAULT_NOTIFY_MAX_ATTEMPTS),
    ),
    SettingRow(
        ("NOTIFY_RETRY_BASE_SECONDS",),
        "the first retry's delay in seconds, doubling on each later one, at most an hour (0 to 3600)",
        _code(DEFAULT_NOTIFY_RETRY_BASE_SECONDS),
    ),
    SettingRow(
        ("NOTIFY_TIMEOUT_SECONDS",),
        "each delivery request's timeout in seconds (1 to 60)",
        _code(DEFAULT_NOTIFY_TIMEOUT_SECONDS),
    ),
)

# Every variable of the configuration contract (a test keeps infra/ and local.settings.sample.json in step).
SETTINGS_READ: tuple[str, ...] = tuple(name for row in settings_table() for name in row.names)


def markdown_table() -> str:
    """README.md's configuration table, generated from ``settings_table()``."""
    lines = ["| setting | meaning | default |", "|---|---|---|"]
    for row in settings_table():
        names = " / ".join(f"`{name}`" for name in row.names) if len(row.names) == 2 else None
        names = names or ", ".join(f"`{name}`" for name in row.names)
        lines.append(f"| {names} | {row.meaning} | {row.default} |".replace("|  |", "| |"))
    return "\n".join(lines) + "\n"


README_BEGIN = "<!-- settings table: generated by `python -m rollout.settings --update-readme`; do not edit -->\n"
README_END = "<!-- end of the generated settings table -->\n"


def readme_with_table(readme: str) -> str:
    """``readme`` with the text between the markers replaced by ``markdown_table()``."""
    start = readme.index(README_BEGIN) + len(README_BEGIN)
    end = readme.index(README_END, start)
    return readme[:start] + markdown_table() + readme[end:]


def load_settings(env: Mapping[str, str]) -> Settings:
    """Read and validate the environment; raise ``SettingsError`` naming every bad variable."""
    problems: list[str] = []

    def get(name: str, default: str | None = None) -> str | None:
        value = env.get(name)
        if value is None or value.strip() == "":
            return default
        return value.strip()

    def required(name: str, pattern: re.Pattern[str] | None = None, what: str = "") -> str:
        value = get(name)
        if value is None:
            problems.append(f"{name} is required")
            return ""
        if pattern is not None and not pattern.match(value):
            problems.append(f"{name}={value!r} is not a valid {what or 'value'}")
        return value

    subscription_id = required("AZURE_SUBSCRIPTION_ID", _GUIDISH_RE, "subscription id")
    resource_group = required("VMSS_RESOURCE_GROUP", _NAME_RE, "resource group name")
    vmss_name = required("VMSS_NAME", _NAME_RE, "scale set name")

    arm_endpoint = (get("ARM_ENDPOINT") or DEFAULT_ARM_ENDPOINT).rstrip("/")
    if not arm_endpoint.startswith("https://"):
        problems.append(f"ARM_ENDPOINT={_shown(arm_endpoint)} must be an https:// URL (tokens travel on it)")
    elif _url_host(arm_endpoint, ("https",)) is None:
        problems.append(f"ARM_ENDPOINT={_shown(arm_endpoint)} is not a valid URL (https://<host>[:<port>])")

    release_storage = _connection(env, "ReleaseStorage", "blobServiceUri", get)
    state_storage = _connection(env, "StateStorage", "tableServiceUri", get) or _connection(
        env, "AzureWebJobsStorage", "tableServiceUri", get
    )
    if state_storage is None:
        problems.append("StateStorage (or StateStorage__tableServiceUri, or AzureWebJobsStorage) is required")
    problems.extend(p for c in (release_storage, state_storage) if (p := _endpoint_problem(c)) is not None)

    container = get("RELEASE_CONTAINER") or DEFAULT_RELEASE_CONTAINER
    if not _CONTAINER_RE.match(container):
        problems.append(f"RELEASE_CONTAINER={container!r} is not a valid blob container name")

    file_auth = get("EXTENSION_FILE_AUTH") or FILE_AUTH_MODES[0]
    if file_auth not in FILE_AUTH_MODES:
        problems.append(f"EXTENSION_FILE_AUTH={file_auth!r} must be {' or '.join(repr(m) for m in FILE_AUTH_MODES)}")

    http_auth = get("HTTP_AUTH") or DEFAULT_HTTP_AUTH
    if http_auth not in HTTP_AUTH_MODES:
        problems.append(f"HTTP_AUTH={http_auth!r} must be one of {', '.join(repr(m) for m in HTTP_AUTH_MODES)}")

    prefix = get("STATE_TABLE_PREFIX") or ""
    if not TABLE_PREFIX_PATTERN.match(prefix):
        problems.append(f"STATE_TABLE_PREFIX={prefix!r} must be letters and digits, starting with a letter")

    # PROBE_BODY_PATTERN is kept as written (blanks may be part of the expression).
    probe = ProbeSettings(
        **_knob_values(ProbeSettings, get, problems, verbatim=env, verbatim_names=("PROBE_BODY_PATTERN",))
    )
    if not probe.path.startswith("/"):
        problems.append(f"PROBE_PATH={probe.path!r} must start with '/'")
    if probe.body_pattern:
        try:
            re.compile(probe.body_pattern)
        except re.error as exc:
            problems.append(f"PROBE_BODY_PATTERN={probe.body_pattern!r} is not a valid regular expression: {exc}")

    policy = RolloutPolicy(**_knob_values(RolloutPolicy, get, problems))

    targets_config = get("TARGETS_CONFIG")
    if targets_config is not None:
        if not _DOCUMENT_BLOB_RE.fullmatch(targets_config) or ".." in targets_config:
            problems.append(
                f"TARGETS_CONFIG={targets_config[:80]!r} must be a blob name in the release container ending in "
                ".json, .yaml or .yml (for example targets.yaml)"
            )
        if release_storage is None:
            problems.append("TARGETS_CONFIG needs ReleaseStorage (the document lives in the release container)")
    discovery = tuple(s.strip() for s in (get("TARGETS_DISCOVERY_SUBSCRIPTIONS") or "").split(",") if s.strip())
    for sub in discovery:
        if not _GUIDISH_RE.match(sub):
            problems.append(f"TARGETS_DISCOVERY_SUBSCRIPTIONS: {sub[:80]!r} is not a subscription id")
    if len(discovery) > MAX_DISCOVERY_SUBSCRIPTIONS:
        problems.append(f"TARGETS_DISCOVERY_SUBSCRIPTIONS names more than {MAX_DISCOVERY_SUBSCRIPTIONS} subscriptions")

    if problems:
        raise SettingsError("invalid settings: " + "; ".join(problems))
    assert state_storage is not None
    return Settings(
        subscription_id=subscription_id,
        resource_group=resource_group,
        vmss_name=vmss_name,
        arm_endpoint=arm_endpoint,
        arm_ca_bundle=get("ARM_CA_BUNDLE"),
        arm_token=get("ARM_TOKEN"),
        release_storage=release_storage,
        state_storage=state_storage,
        release_container=container,
        extension_name=get("EXTENSION_NAME") or DEFAULT_EXTENSION_NAME,
        extension_file_auth=file_auth,
        extension_identity_client_id=get("EXTENSION_IDENTITY_CLIENT_ID"),
        state_table_prefix=prefix,
        policy=policy,
        probe=probe,
        http_auth=http_auth,
        targets_config=targets_config,
        targets_discovery_subscriptions=tuple(dict.fromkeys(discovery)),
    )


_QUEUE_RE = re.compile(r"^(?!.*--)[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")


@dataclass(frozen=True)
class FanoutSettings:
    """The timer's fan-out: the tick queue, its connection, the ARM read budget of one run."""

    queue: StorageConnection
    queue_name: str = DEFAULT_TICK_QUEUE
    read_burst: int = DEFAULT_TICK_READ_BURST
    read_rate: float = DEFAULT_TICK_READ_RATE


def load_fanout_settings(env: Mapping[str, str]) -> FanoutSettings:
    """The fan-out's settings, read only by the timer and the queue trigger (the HTTP API and the blob
    trigger work without them); raise ``SettingsError`` naming every bad one."""
    problems: list[str] = []

    def get(name: str, default: str | None = None) -> str | None:
        value = env.get(name)
        return default if value is None or value.strip() == "" else value.strip()

    queue = _connection(env, "TickQueue", "queueServiceUri", get)
    if queue is None:
        problems.append("TickQueue (or TickQueue__queueServiceUri) is required by the timer and the queue trigger")
    elif (problem := _endpoint_problem(queue)) is not None:
        problems.append(problem)
    name = get("TICK_QUEUE") or DEFAULT_TICK_QUEUE
    if not _QUEUE_RE.match(name) or len(name) > 63 - len("-poison"):
        problems.append(
            f"TICK_QUEUE={name!r} is not a valid queue name (3-56 lower-case letters, digits and single hyphens, "
            "so that `<name>-poison` is one too)"
        )
    burst, rate = DEFAULT_TICK_READ_BURST, DEFAULT_TICK_READ_RATE
    raw_burst, raw_rate = get("TICK_READ_BURST"), get("TICK_READ_RATE")
    if raw_burst is not None:
        if re.fullmatch(r"[0-9]{1,9}", raw_burst):  # not str.isdigit: "²" and 5,000 digits are digits too
            burst = int(raw_burst)
        else:
            problems.append(
                f"TICK_READ_BURST={_shown(raw_burst)} must be a whole number, at least 0 (at most 9 digits)"
            )
    if raw_rate is not None:
        try:
            rate = float(raw_rate)
        except ValueError:
            rate = -1.0
        if not rate >= 0.1 or rate == float("inf"):
            problems.append(f"TICK_READ_RATE={raw_rate!r} must be a number of reads per second, at least 0.1")
    if problems:
        raise SettingsError("invalid settings: " + "; ".join(problems))
    assert queue is not None
    return FanoutSettings(queue=queue, queue_name=name, read_burst=burst, read_rate=rate)


@dataclass(frozen=True)
class NotifySettings:
    """Where notifications go. ``channels`` maps a channel (``rollout.notifications.CHANNELS``) to its
    URL; the URLs and the key are secrets: ``repr`` never shows them."""

    queue: StorageConnection | None
    queue_name: str = DEFAULT_NOTIFY_QUEUE
    channels: Mapping[str, str] = field(default_factory=dict, repr=False)
    eventgrid_key: str | None = field(default=None, repr=False)
    max_attempts: int = DEFAULT_NOTIFY_MAX_ATTEMPTS
    retry_base_seconds: float = DEFAULT_NOTIFY_RETRY_BASE_SECONDS
    timeout_seconds: float = DEFAULT_NOTIFY_TIMEOUT_SECONDS

    @property
    def enabled(self) -> bool:
        """Any channel configured (and a queue to reach it): only then does the service enqueue."""
        return bool(self.channels) and self.queue is not None


_NOTIFY_URLS = {
    "webhook": "NOTIFY_WEBHOOK_URL",
    "teams": "NOTIFY_TEAMS_WEBHOOK_URL",
    "slack": "NOTIFY_SLACK_WEBHOOK_URL",
    "eventgrid": "NOTIFY_EVENTGRID_ENDPOINT",
}


def _url_problem(name: str, url: str) -> str | None:
    """https, or http to a loopback address (the local twin's receiver). The URL itself is never echoed."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return f"{name} is not a URL"
    host = parts.hostname or ""
    if parts.scheme == "https" and host:
        return None
    if parts.scheme == "http" and (host.startswith("127.") or host in ("localhost", "::1")):
        return None
    return f"{name} must be an https:// URL (http only to a loopback address)"


def load_notify_settings(env: Mapping[str, str]) -> NotifySettings:
    """The notification settings (read by the services and the delivery trigger); raise ``SettingsError``
    naming every bad one, never showing a URL or key."""
    problems: list[str] = []

    def get(name: str, default: str | None = None) -> str | None:
        value = env.get(name)
        return default if value is None or value.strip() == "" else value.strip()

    channels: dict[str, str] = {}
    for channel, name in _NOTIFY_URLS.items():
        url = get(name)
        if url is None:
            continue
        problem = _url_problem(name, url)
        if problem is not None:
            problems.append(problem)
        else:
            channels[channel] = url
    queue = _connection(env, "TickQueue", "queueServiceUri", get)
    if channels and queue is None:
        problems.append("notification channels are set but there is no queue connection (TickQueue)")
    name = get("NOTIFY_QUEUE") or DEFAULT_NOTIFY_QUEUE
    if not _QUEUE_RE.match(name) or len(name) > 63 - len("-poison"):
        problems.append(
            f"NOTIFY_QUEUE={name[:80]!r} is not a valid queue name (3-56 lower-case letters, digits and single "
            "hyphens, so that `<name>-poison` is one too)"
        )

    def number(setting: str, default: float, low: float, high: float, whole: bool = False) -> float:
        raw = get(setting)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            value = float("nan")
        if not low <= value <= high or (whole and value != int(value)):
            kind = "a whole number" if whole else "a number"
            problems.append(f"{setting}={raw[:40]!r} must be {kind} from {low:g} to {high:g}")
            return default
        return value

    attempts = int(number("NOTIFY_MAX_ATTEMPTS", DEFAULT_NOTIFY_MAX_ATTEMPTS, 1, 20, whole=True))
    base = number("NOTIFY_RETRY_BASE_SECONDS", DEFAULT_NOTIFY_RETRY_BASE_SECONDS, 0, 3600)
    timeout = number("NOTIFY_TIMEOUT_SECONDS", DEFAULT_NOTIFY_TIMEOUT_SECONDS, 1, 60)
    if problems:
        raise SettingsError("invalid settings: " + "; ".join(problems))
    return NotifySettings(
        queue=queue,
        queue_name=name,
        channels=channels,
        eventgrid_key=get("NOTIFY_EVENTGRID_KEY"),
        max_attempts=attempts,
        retry_base_seconds=base,
        timeout_seconds=timeout,
    )


def _knob_values(
    cls: type[Any],
    get: Callable[[str], str | None],
    problems: list[str],
    verbatim: Mapping[str, str] | None = None,
    verbatim_names: tuple[str, ...] = (),
) -> dict[str, Any]:
    """The fields of knob dataclass ``cls`` that the environment sets, parsed by the field's type and
    checked against its bounds; a bad value is a problem named by its setting (the default stays)."""
    values: dict[str, Any] = {}
    shared = _shared_settings(cls)
    for kf in knob_fields(cls):
        k = kf.knob
        raw = (
            (verbatim.get(k.setting) or None)
            if verbatim is not None and k.setting in verbatim_names
            else get(k.setting)
        )
        if raw is None:
            continue
        if k.setting in shared:
            raw, percent = _count_or_percent(raw, k.setting, problems)
            if raw is None or percent != k.percent:
                continue
        value = _parse(kf, raw, problems)
        if value is None:
            continue
        problem = bound_problem(f"{k.setting}={raw + ('%' if k.percent else '')!r}", value, k)
        if problem is not None:
            problems.append(problem)
            continue
        values[kf.name] = value
    return values


def _parse(kf: KnobField, raw: str, problems: list[str]) -> Any:
    """``raw`` as the field's type (None, with a problem, when it is not one)."""
    name = kf.knob.setting
    if kf.type == "bool":
        if raw.lower() in ("true", "1", "yes"):
            return True
        if raw.lower() in ("false", "0", "no"):
            return False
        problems.append(f"{name}={raw!r} must be true or false")
        return None
    if kf.type in ("int", "float"):
        try:
            value = int(raw) if kf.type == "int" else float(raw)
        except ValueError:  # not a number, or more digits than Python converts (sys.get_int_max_str_digits)
            problems.append(f"{name}={_shown(raw)} is not a number")
            return None
        if not math.isfinite(value):  # "nan", "inf", "1e999": every bound compares false with NaN
            problems.append(f"{name}={raw!r} is not a finite number")
            return None
        return value
    for choice in kf.knob.choices:  # compared without case
        if raw.lower() == choice.lower():
            return choice
    return raw


def _shown(raw: str, limit: int = 80) -> str:
    """``repr`` of a setting's value, cut to ``limit`` characters: an error names a huge value without echoing it."""
    return repr(raw) if len(raw) <= limit else f"{raw[:limit]!r}... ({len(raw)} characters)"


def _count_or_percent(raw: str, name: str, problems: list[str]) -> tuple[str | None, bool]:
    """A setting shared by a count and a percent field: "2" or "25%" (never 0) -> ("2", False), ("25", True).

    Reported once, by the count field (the first of the two)."""
    match = re.fullmatch(r"([0-9]{1,6})(%?)", raw)
    if match is None or int(match[1]) == 0:
        message = f"{name}={raw!r} must be a count like 2 or a percentage like 25%"
        if message not in problems:
            problems.append(message)
        return None, False
    return match[1], bool(match[2])


def http_auth_at_startup(env: Mapping[str, str]) -> str:
    """The HTTP_AUTH mode to declare the routes with, at import time (auth levels are fixed then).

    Never raises, and fails closed: only a valid ``entra`` gives anonymous routes (App Service
    authentication in front); anything else keeps function keys, and a bad value is then reported by
    ``load_settings`` on every call (a 500 naming HTTP_AUTH)."""
    value = (env.get("HTTP_AUTH") or "").strip()
    return "entra" if value == "entra" else DEFAULT_HTTP_AUTH


def platform_auth_enabled(env: Mapping[str, str]) -> bool:
    """Whether the platform says App Service authentication is on (WEBSITE_AUTH_ENABLED, see above)."""
    return (env.get(PLATFORM_AUTH_SIGNAL) or "").strip().lower() == "true"


def _connection(
    env: Mapping[str, str],
    name: str,
    uri_suffix: str,
    get: Callable[[str, str | None], str | None],
) -> StorageConnection | None:
    """A Functions-style connection: ``NAME`` holds a connection string, or ``NAME__<service>Uri``
    holds an endpoint used with the managed identity (the secure default in Azure)."""
    uri = get(f"{name}__{uri_suffix}", None)
    if uri:
        return StorageConnection(service_uri=uri.rstrip("/"), setting=f"{name}__{uri_suffix}")
    conn = get(name, None)
    if conn:
        return StorageConnection(connection_string=conn, setting=name)
    return None


def _endpoint_problem(conn: StorageConnection | None) -> str | None:
    """Why a connection's service endpoint is not a URL a storage client can use (None: it is, or it is a
    connection string, which the storage client parses when it is built: ``rollout.bootstrap``)."""
    if conn is None or not conn.service_uri:
        return None
    if _url_host(conn.service_uri, ("https", "http")) is None:
        # Not echoed: an endpoint may carry a SAS token.
        return f"{conn.setting} must be the service's URL, like https://<account>.<service>.core.windows.net"
    return None


def _url_host(url: str, schemes: tuple[str, ...]) -> str | None:
    """The host of ``url`` when it is an absolute URL with one of ``schemes`` and nothing a client would
    refuse (blanks, control characters, a malformed IPv6 literal or port); else None."""
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        return None
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError for a port that is not a number in range
    except ValueError:  # "https://[::1": Invalid IPv6 URL
        return None
    if parts.scheme.lower() not in schemes or not parts.hostname:
        return None
    return parts.hostname


def main(argv: list[str]) -> int:
    """``--markdown``: print the configuration table; ``--update-readme``: rewrite it in README.md."""
    readme = Path(__file__).resolve().parents[1] / "README.md"
    if argv == ["--markdown"]:
        sys.stdout.write(markdown_table())
        return 0
    if argv == ["--update-readme"]:
        readme.write_text(readme_with_table(readme.read_text(encoding="utf-8")), encoding="utf-8")
        return 0
    sys.stderr.write("usage: python -m rollout.settings --markdown | --update-readme\n")
    return 2


_LB_ID_RE = re.compile(
    r"^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\.Network/loadBalancers/[^/]+$", re.IGNORECASE
)
_WORKSPACE_ID_RE = re.compile(r"^[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")


@dataclass(frozen=True)
class SignalSettings:
    """Which signal sources the canary judge reads (``rollout.adapters.signals``); all off by default."""

    metrics: bool = False
    load_balancer_id: str | None = None
    logs_workspace_id: str | None = None
    logs_query: str = DEFAULT_SIGNALS_LOGS_QUERY
    logs_endpoint: str = DEFAULT_SIGNALS_LOGS_ENDPOINT

    @property
    def any(self) -> bool:
        return bool(self.metrics or self.load_balancer_id or self.logs_workspace_id)


def load_signal_settings(env: Mapping[str, str]) -> SignalSettings:
    """The ``SIGNALS_*`` settings; raise ``SettingsError`` naming every bad one."""
    problems: list[str] = []

    def get(name: str) -> str | None:
        value = env.get(name)
        return None if value is None or value.strip() == "" else value.strip()

    raw_metrics = (get("SIGNALS_METRICS") or "false").lower()
    if raw_metrics not in ("true", "false"):
        problems.append(f"SIGNALS_METRICS={raw_metrics[:40]!r} must be true or false")
    lb = get("SIGNALS_LOAD_BALANCER_ID")
    if lb is not None and not _LB_ID_RE.match(lb):
        problems.append(
            f"SIGNALS_LOAD_BALANCER_ID={lb[:120]!r} is not a load balancer resource id "
            "(/subscriptions/<id>/resourceGroups/<rg>/providers/Microsoft.Network/loadBalancers/<name>)"
        )
    workspace = get("SIGNALS_LOGS_WORKSPACE_ID")
    if workspace is not None and not _WORKSPACE_ID_RE.match(workspace):
        problems.append(f"SIGNALS_LOGS_WORKSPACE_ID={workspace[:80]!r} is not a workspace id (a GUID)")
    query = get("SIGNALS_LOGS_QUERY") or DEFAULT_SIGNALS_LOGS_QUERY
    endpoint = (get("SIGNALS_LOGS_ENDPOINT") or DEFAULT_SIGNALS_LOGS_ENDPOINT).rstrip("/")
    if not endpoint.startswith("https://"):
        problems.append(f"SIGNALS_LOGS_ENDPOINT={endpoint[:120]!r} must be an https:// URL (tokens travel on it)")
    if problems:
        raise SettingsError("invalid settings: " + "; ".join(problems))
    return SignalSettings(
        metrics=raw_metrics == "true",
        load_balancer_id=lb,
        logs_workspace_id=workspace,
        logs_query=query,
        logs_endpoint=endpoint,
    )


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
