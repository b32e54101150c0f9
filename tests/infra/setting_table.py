"""The platform app-setting table (tests/data/azure-app-settings.json) and the check of setting names against it.

The Functions platform, not this project's code, reads some app settings: the host's own
(``AzureWebJobsStorage__accountName``, ``APPLICATIONINSIGHTS_AUTHENTICATION_STRING``, ...) and the
properties of a binding's identity-based connection (``<connection>__blobServiceUri``, ...). A misspelt
name there is silently ignored by Azure: nothing fails until the first trigger does. So every such name
must come from the table, each row transcribed from the documentation with its page and source, and a
``<connection>__<suffix>`` name must join a connection a binding of ``function_app.py`` uses with a
suffix the table lists for that binding's type.
"""

from __future__ import annotations

import ast
import difflib
import functools
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from tests.infra.bicep_model import REPO_ROOT

SETTING_TABLE = REPO_ROOT / "tests" / "data" / "azure-app-settings.json"
SETTINGS_PY = REPO_ROOT / "rollout" / "settings.py"
ANY_BINDING = "*"


@dataclass(frozen=True)
class Citation:
    source: str
    quote: str
    page: str | None = None


@dataclass(frozen=True)
class PlatformName:
    """A whole setting name (``name`` set) or a connection property suffix (``bindings`` set)."""

    name: str  # "APPLICATIONINSIGHTS_AUTHENTICATION_STRING", or "__blobServiceUri" for a suffix
    read_by: str
    page: str
    citations: tuple[Citation, ...]  # the row's own source first, then `also`
    bindings: tuple[str, ...] = ()


@dataclass(frozen=True)
class SettingTable:
    settings: dict[str, PlatformName]
    suffixes: dict[str, PlatformName]


def _row(raw: Mapping[str, object], key: str) -> PlatformName:
    also = raw.get("also", [])
    assert isinstance(also, list)
    citations = [Citation(str(raw["source"]), str(raw["quote"]), str(raw["page"]))]
    citations += [Citation(str(c["source"]), str(c["quote"]), c.get("page")) for c in also]
    bindings = raw.get("bindings", [])
    assert isinstance(bindings, list)
    return PlatformName(
        name=str(raw[key]),
        read_by=str(raw["read_by"]),
        page=str(raw["page"]),
        citations=tuple(citations),
        bindings=tuple(str(b) for b in bindings),
    )


@functools.cache
def setting_table() -> SettingTable:
    doc = json.loads(SETTING_TABLE.read_text())
    settings = [_row(r, "name") for r in doc["settings"]]
    suffixes = [_row(r, "suffix") for r in doc["suffixes"]]
    table = SettingTable({r.name: r for r in settings}, {r.name: r for r in suffixes})
    assert len(table.settings) == len(settings), f"{SETTING_TABLE}: a setting is listed twice"
    assert len(table.suffixes) == len(suffixes), f"{SETTING_TABLE}: a suffix is listed twice"
    return table


def binding_connections() -> dict[str, set[str]]:
    """connection name -> the binding types that use it, as the Functions worker indexes function_app.py."""
    import function_app
    from emulator.appindex import functions_of

    found: dict[str, set[str]] = {}
    for fn in functions_of(function_app.app):
        for binding in fn.get_bindings():
            raw = binding.get_dict_repr()
            if "connection" in raw:
                # An empty connection means the host storage connection (blob connections include).
                found.setdefault(str(raw["connection"] or "AzureWebJobsStorage"), set()).add(str(raw["type"]))
    return found


def code_connection_suffixes(source: str) -> list[tuple[str, str]]:
    """(connection, property) of every ``_connection(env, "<connection>", "<property>", get)`` in ``source``
    (rollout/settings.py): the identity-connection settings the code itself reads."""
    found: list[tuple[str, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "_connection":
            name, prop = node.args[1], node.args[2]
            assert isinstance(name, ast.Constant) and isinstance(prop, ast.Constant), ast.unparse(node)
            found.append((str(name.value), str(prop.value)))
    return found


def _hint(name: str, known: Iterable[str]) -> str:
    by_lower = {k.lower(): k for k in known}
    if name.lower() in by_lower:
        return f" (the documented spelling is {by_lower[name.lower()]!r}: names are case-sensitive)"
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.8)
    return f" (did you mean {close[0]!r}?)" if close else ""


def setting_name_problems(
    names: Iterable[str], read_by_code: Iterable[str], connections: Mapping[str, set[str]]
) -> list[str]:
    """Why each of ``names`` is read by nobody (empty: every name is read by the code or the platform).

    A name is fine when the code reads it (``read_by_code``), when the table lists it as a platform
    setting, or when it is ``<connection>__<suffix>`` with ``connection`` a binding's connection
    (``connections``: name -> binding types) and the table listing ``__<suffix>`` for that binding type.
    """
    table = setting_table()
    read = set(read_by_code)
    where = SETTING_TABLE.relative_to(REPO_ROOT)
    known = read | set(table.settings) | {f"{c}{s}" for c in connections for s in table.suffixes}
    problems: list[str] = []
    for name in sorted(set(names)):
        if name in read or name in table.settings:
            continue
        connection, sep, prop = name.partition("__")
        suffix = f"__{prop}"
        row = table.suffixes.get(suffix)
        if not sep or "__" in prop:
            why = f"neither read by the code nor a platform setting in {where}"
        elif connection not in connections:
            why = f"{connection!r} is not the connection of any binding in function_app.py, nor read by the code"
        elif row is None:
            why = f"{suffix} is not a connection property in {where}"
        elif ANY_BINDING not in row.bindings and not connections[connection] & set(row.bindings):
            why = (
                f"{suffix} configures {', '.join(row.bindings)} connections ({row.page}), but {connection!r} is used "
                f"by {', '.join(sorted(connections[connection]))}"
            )
        else:
            continue
        problems.append(f"{name}: {why}{_hint(name, known)}")
    return problems


def code_suffix_problems(source: str, settings_read: Iterable[str]) -> list[str]:
    """Why an identity-connection setting rollout/settings.py reads (``source``) is not a documented one."""
    table = setting_table()
    read = set(settings_read)
    problems: list[str] = []
    from_code = {f"{connection}__{prop}" for connection, prop in code_connection_suffixes(source)}
    for name in sorted(from_code | {n for n in read if "__" in n}):
        suffix = "__" + name.partition("__")[2]
        if name not in read:
            problems.append(f"{name}: read by _connection() in rollout/settings.py but missing from SETTINGS_READ")
        if name not in table.settings and suffix not in table.suffixes:
            hint = _hint(suffix, table.suffixes)
            problems.append(f"{name}: {suffix} is not a connection property in {SETTING_TABLE.name}{hint}")
    return problems
