"""App settings: ``%SETTING%`` placeholders, connections, and the settings exported as environment variables.

The real host makes app settings environment variables of the worker process. Here the app runs
in-process, so ``EnvExport`` puts them into ``os.environ`` from ``start()`` to ``stop()`` and restores
the previous values afterwards.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path

from emulator.funchost.core import HostStartupError

_PLACEHOLDER_RE = re.compile(r"%([^%\s]+)%")


def resolve_placeholders(text: str, env: Mapping[str, str], where: str) -> str:
    """Replace ``%NAME%`` with the app setting ``NAME``; a missing one names itself and ``where``."""

    def lookup(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in env:
            raise HostStartupError(f"{where}: app setting {name!r} (used as %{name}%) is not set")
        return env[name]

    return _PLACEHOLDER_RE.sub(lookup, text)


def connection_string(function: str, connection: str, env: Mapping[str, str], what: str) -> str:
    """The connection string a storage trigger (``what``, e.g. "the blob trigger") uses.

    The real host looks the connection up as given, then with the AzureWebJobs prefix; no connection at
    all means the host's own storage (AzureWebJobsStorage). Identity-based connections
    (``<connection>__...``) are refused: there is no managed identity locally."""
    candidates = [connection, f"AzureWebJobs{connection}"] if connection else ["AzureWebJobsStorage"]
    for candidate in candidates:
        if env.get(candidate):
            return env[candidate]
    if connection and any(k.startswith(f"{connection}__") and v for k, v in env.items()):
        raise HostStartupError(
            f"function {function}: connection {connection!r} is identity-based ({connection}__...); "
            f"the local host has no managed identity: set {connection} to a connection string"
        )
    raise HostStartupError(f"function {function}: app setting {candidates[0]!r} ({what}'s connection) is not set")


class EnvExport:
    """App settings as environment variables for the run; ``restore`` puts back what ``apply`` overwrote."""

    def __init__(self) -> None:
        self._saved: dict[str, str | None] = {}

    def apply(self, settings: Mapping[str, str]) -> None:
        for name, value in settings.items():
            self._saved.setdefault(name, os.environ.get(name))
            os.environ[name] = value

    def restore(self) -> None:
        for name, previous in self._saved.items():
            if previous is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = previous
        self._saved.clear()


def load_settings_file(path: Path) -> dict[str, str]:
    """``local.settings.json`` -> its ``Values`` (the format Core Tools reads)."""
    data = json.loads(path.read_text())
    return {str(k): str(v) for k, v in (data.get("Values") or {}).items()}


def route_prefix_from_host_json(script_root: Path) -> str:
    """``extensions.http.routePrefix`` of ``<script_root>/host.json``; ``api`` without one."""
    host_json = script_root / "host.json"
    if not host_json.exists():
        return "api"
    data = json.loads(host_json.read_text())
    prefix = data.get("extensions", {}).get("http", {}).get("routePrefix")
    return "api" if prefix is None else str(prefix)
