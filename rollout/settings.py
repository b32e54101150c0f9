"""Environment -> Settings, validated, with every problem reported at once.

The variables are the configuration contract of DESIGN.md section 4; ``local.settings.sample.json``
lists them all and ``infra/`` sets them all (a test checks both against ``SETTINGS_READ`` below).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from rollout.policy import ROLLBACK_MODES, RolloutPolicy

T = TypeVar("T")

DEFAULT_ARM_ENDPOINT = "https://management.azure.com"

# Every variable this module reads (a test keeps infra/ and local.settings.sample.json in step).
SETTINGS_READ: tuple[str, ...] = (
    "AZURE_SUBSCRIPTION_ID",
    "VMSS_RESOURCE_GROUP",
    "VMSS_NAME",
    "ARM_ENDPOINT",
    "ARM_CA_BUNDLE",
    "ARM_TOKEN",
    "ReleaseStorage",
    "ReleaseStorage__blobServiceUri",
    "StateStorage",
    "StateStorage__tableServiceUri",
    "AzureWebJobsStorage",
    "AzureWebJobsStorage__tableServiceUri",
    "RELEASE_CONTAINER",
    "EXTENSION_NAME",
    "EXTENSION_FILE_AUTH",
    "EXTENSION_IDENTITY_CLIENT_ID",
    "STATE_TABLE_PREFIX",
    "ROLLOUT_TICK_SCHEDULE",
    "CANARY_COUNT",
    "BAKE_SECONDS",
    "BATCH_PERCENT",
    "BATCH_SIZE",
    "MAX_UNAVAILABLE",
    "FAILURE_THRESHOLD",
    "PROGRESS_DEADLINE_SECONDS",
    "UPGRADE_RETRY_SECONDS",
    "MIN_HEALTHY_INSTANCES",
    "ROLLBACK_REIMAGE",
    "ROLLBACK_MODE",
    "LATENCY_RATIO",
    "LATENCY_MIN_DELTA_MS",
    "PROBE_PATH",
    "PROBE_PORT",
    "PROBE_EXPECT_STATUS",
    "PROBE_BODY_PATTERN",
    "PROBE_TIMEOUT_SECONDS",
    "HTTP_AUTH",
)

# Who may call the operator API (README "The operator API"): routes need a function key and the actor
# is recorded as "function key", or App Service authentication (Microsoft Entra ID) is in front and the
# actor and app roles come from the validated principal.
HTTP_AUTH_MODES: tuple[str, ...] = ("function-key", "entra")
DEFAULT_HTTP_AUTH = "function-key"

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


class SettingsError(ValueError):
    """One or more settings are missing or malformed; the message lists every problem."""


@dataclass(frozen=True)
class StorageConnection:
    """Either a connection string (Azurite, keys) or a service URI used with the managed identity."""

    connection_string: str | None = None
    service_uri: str | None = None

    def describe(self) -> str:
        if self.service_uri:
            return f"{self.service_uri} (managed identity)"
        return "connection string"


@dataclass(frozen=True)
class ProbeSettings:
    path: str = "/"
    port: int = 80
    expect_status: int = 200
    body_pattern: str = ""
    timeout_seconds: float = 3.0


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
    release_container: str = "init"
    extension_name: str = "CustomScript"
    extension_file_auth: str = "managedIdentity"  # or "none" (public/SAS URLs: not recommended)
    extension_identity_client_id: str | None = None
    state_table_prefix: str = ""
    tick_schedule: str = "*/30 * * * * *"
    policy: RolloutPolicy = field(default_factory=RolloutPolicy)
    probe: ProbeSettings = field(default_factory=ProbeSettings)
    http_auth: str = DEFAULT_HTTP_AUTH  # one of HTTP_AUTH_MODES

    @property
    def target_key(self) -> str:
        """The scale set's key in the state tables (PartitionKey: no '/', '\\', '#' or '?')."""
        return f"{self.resource_group}:{self.vmss_name}".lower()


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

    def number(name: str, default: T, parse: Callable[[str], T], minimum: float) -> T:
        raw = get(name)
        if raw is None:
            return default
        try:
            value = parse(raw)
        except ValueError:
            problems.append(f"{name}={raw!r} is not a number")
            return default
        if value < minimum:  # type: ignore[operator]
            problems.append(f"{name}={raw!r} must be at least {minimum}")
            return default
        return value

    subscription_id = required("AZURE_SUBSCRIPTION_ID", _GUIDISH_RE, "subscription id")
    resource_group = required("VMSS_RESOURCE_GROUP", _NAME_RE, "resource group name")
    vmss_name = required("VMSS_NAME", _NAME_RE, "scale set name")

    arm_endpoint = (get("ARM_ENDPOINT", DEFAULT_ARM_ENDPOINT) or DEFAULT_ARM_ENDPOINT).rstrip("/")
    if not arm_endpoint.startswith("https://"):
        problems.append(f"ARM_ENDPOINT={arm_endpoint!r} must be an https:// URL (tokens travel on it)")

    release_storage = _connection(env, "ReleaseStorage", "blobServiceUri", get)
    state_storage = _connection(env, "StateStorage", "tableServiceUri", get) or _connection(
        env, "AzureWebJobsStorage", "tableServiceUri", get
    )
    if state_storage is None:
        problems.append("StateStorage (or StateStorage__tableServiceUri, or AzureWebJobsStorage) is required")

    container = get("RELEASE_CONTAINER", "init") or "init"
    if not _CONTAINER_RE.match(container):
        problems.append(f"RELEASE_CONTAINER={container!r} is not a valid blob container name")

    file_auth = get("EXTENSION_FILE_AUTH", "managedIdentity") or "managedIdentity"
    if file_auth not in ("managedIdentity", "none"):
        problems.append(f"EXTENSION_FILE_AUTH={file_auth!r} must be 'managedIdentity' or 'none'")

    http_auth = get("HTTP_AUTH", DEFAULT_HTTP_AUTH) or DEFAULT_HTTP_AUTH
    if http_auth not in HTTP_AUTH_MODES:
        problems.append(f"HTTP_AUTH={http_auth!r} must be one of {', '.join(repr(m) for m in HTTP_AUTH_MODES)}")

    prefix = get("STATE_TABLE_PREFIX", "") or ""
    if prefix and not re.match(r"^[A-Za-z][A-Za-z0-9]{0,30}$", prefix):
        problems.append(f"STATE_TABLE_PREFIX={prefix!r} must be letters and digits, starting with a letter")

    probe_path = get("PROBE_PATH", "/") or "/"
    if not probe_path.startswith("/"):
        problems.append(f"PROBE_PATH={probe_path!r} must start with '/'")
    body_pattern = env.get("PROBE_BODY_PATTERN", "") or ""
    if body_pattern:
        try:
            re.compile(body_pattern)
        except re.error as exc:
            problems.append(f"PROBE_BODY_PATTERN={body_pattern!r} is not a valid regular expression: {exc}")
    probe = ProbeSettings(
        path=probe_path,
        port=number("PROBE_PORT", 80, int, 1),
        expect_status=number("PROBE_EXPECT_STATUS", 200, int, 100),
        body_pattern=body_pattern,
        timeout_seconds=number("PROBE_TIMEOUT_SECONDS", 3.0, float, 0.1),
    )
    if probe.port > 65535:
        problems.append(f"PROBE_PORT={probe.port} is not a TCP port")

    policy_values: dict[str, Any] = dict(
        canary_count=number("CANARY_COUNT", 1, int, 1),
        bake_seconds=number("BAKE_SECONDS", 300, int, 0),
        batch_percent=number("BATCH_PERCENT", 20, int, 1),
        batch_size=number("BATCH_SIZE", 0, int, 0),
        **_max_unavailable(get("MAX_UNAVAILABLE"), problems),
        failure_threshold=number("FAILURE_THRESHOLD", 3, int, 1),
        progress_deadline_seconds=number("PROGRESS_DEADLINE_SECONDS", 900, int, 1),
        upgrade_retry_seconds=number("UPGRADE_RETRY_SECONDS", 300, int, 1),
        min_healthy_instances=number("MIN_HEALTHY_INSTANCES", 1, int, 1),
        rollback_reimage=_flag(get("ROLLBACK_REIMAGE"), "ROLLBACK_REIMAGE", True, problems),
        rollback_mode=_choice(get("ROLLBACK_MODE"), "ROLLBACK_MODE", ROLLBACK_MODES, problems),
        latency_ratio=number("LATENCY_RATIO", 0.0, float, 0),
        latency_min_delta_ms=number("LATENCY_MIN_DELTA_MS", 50.0, float, 0),
    )
    policy = RolloutPolicy()
    try:
        policy = RolloutPolicy(**policy_values)
    except ValueError as exc:
        problems.append(str(exc))

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
        extension_name=get("EXTENSION_NAME", "CustomScript") or "CustomScript",
        extension_file_auth=file_auth,
        extension_identity_client_id=get("EXTENSION_IDENTITY_CLIENT_ID"),
        state_table_prefix=prefix,
        tick_schedule=get("ROLLOUT_TICK_SCHEDULE", "*/30 * * * * *") or "*/30 * * * * *",
        policy=policy,
        probe=probe,
        http_auth=http_auth,
    )


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
        return StorageConnection(service_uri=uri.rstrip("/"))
    conn = get(name, None)
    if conn:
        return StorageConnection(connection_string=conn)
    return None


def _max_unavailable(raw: str | None, problems: list[str]) -> dict[str, int]:
    """MAX_UNAVAILABLE is a count ("2") or a share of the fleet ("25%"); default 20%."""
    if raw is None:
        return {}
    match = re.fullmatch(r"([0-9]{1,6})(%?)", raw)
    if match is None or int(match[1]) == 0:
        problems.append(f"MAX_UNAVAILABLE={raw!r} must be a count like 2 or a percentage like 25%")
        return {}
    if match[2]:
        return {"max_unavailable_percent": int(match[1])}
    return {"max_unavailable": int(match[1])}


def _flag(raw: str | None, name: str, default: bool, problems: list[str]) -> bool:
    if raw is None:
        return default
    if raw.lower() in ("true", "1", "yes"):
        return True
    if raw.lower() in ("false", "0", "no"):
        return False
    problems.append(f"{name}={raw!r} must be true or false")
    return default


def _choice(raw: str | None, name: str, allowed: tuple[str, ...], problems: list[str]) -> str:
    """One of ``allowed`` (compared without case); the first is the default."""
    if raw is None:
        return allowed[0]
    for value in allowed:
        if raw.lower() == value:
            return value
    problems.append(f"{name}={raw!r} must be one of {', '.join(allowed)}")
    return allowed[0]
