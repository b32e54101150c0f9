"""The built-in role table (tests/data/azure-builtin-roles.json) and the role ids the Bicep states.

The table is the single source of role ids in the tests: each row was transcribed from the public
built-in roles reference, with the page and the commit of the page's source it was read from. The
Bicep states, next to every role id literal, which role it means, in one machine-checkable form:

    var storageQueueDataContributor = '974c5e8b-45b9-4653-ba55-5f855dd0fb88' // role: Storage Queue Data Contributor

A GUID literal that is not a role id (none today) says so instead: ``// not a role: <why>``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache

from tests.infra.bicep_model import INFRA, REPO_ROOT

ROLE_TABLE = REPO_ROOT / "tests" / "data" / "azure-builtin-roles.json"

GUID = re.compile(r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b")
ROLE_COMMENT = re.compile(r"//\s*role:\s*(?P<name>\S.*?)\s*$")
NOT_A_ROLE_COMMENT = re.compile(r"//\s*not a role:\s*\S")


@dataclass(frozen=True)
class BuiltinRole:
    name: str
    id: str
    page: str
    source: str


@cache
def builtin_roles() -> dict[str, BuiltinRole]:
    """Role name -> row of the table."""
    rows = json.loads(ROLE_TABLE.read_text())["roles"]
    roles = [BuiltinRole(r["name"], r["id"], r["page"], r["source"]) for r in rows]
    by_name = {role.name: role for role in roles}
    assert len(by_name) == len(roles), f"{ROLE_TABLE}: a role name is listed twice"
    return by_name


def role_id(name: str) -> str:
    """The id of the built-in role called ``name``, from the table (KeyError if it is not listed)."""
    return builtin_roles()[name].id


@dataclass(frozen=True)
class GuidLiteral:
    """A GUID written in a .bicep file, with what the line's comment says it is."""

    where: str  # file:line
    guid: str
    stated_role: str | None  # the name after `// role:`, if any
    not_a_role: bool  # the line says `// not a role: ...`


def guid_literals(text: str, label: str) -> list[GuidLiteral]:
    """Every GUID inside a string literal of ``text`` (Bicep source), line by line."""
    found: list[GuidLiteral] = []
    for number, line in enumerate(text.splitlines(), start=1):
        code, comment = split_comment(line)
        stated = ROLE_COMMENT.search(comment)
        for match in GUID.finditer(code):
            found.append(
                GuidLiteral(
                    where=f"{label}:{number}",
                    guid=match[0],
                    stated_role=stated["name"] if stated else None,
                    not_a_role=bool(NOT_A_ROLE_COMMENT.search(comment)),
                )
            )
    return found


def split_comment(line: str) -> tuple[str, str]:
    """(code, `// comment`) of one Bicep line; a `//` inside a '...' string (a URL) is code."""
    quoted = False
    index = 0
    while index < len(line):
        char = line[index]
        if quoted and char == "\\":
            index += 2
            continue
        if char == "'":
            quoted = not quoted
        elif not quoted and line.startswith("//", index):
            return line[:index], line[index:]
        index += 1
    return line, ""


def role_id_problems(literals: list[GuidLiteral]) -> list[str]:
    """Why each literal is not a correctly named role id from the table (empty: all are)."""
    roles = builtin_roles()
    by_id = {role.id: role for role in roles.values()}
    problems: list[str] = []
    for lit in literals:
        if lit.not_a_role:
            continue
        if lit.stated_role is None:
            known = by_id.get(lit.guid.lower())
            hint = f" (the table knows it as {known.name!r})" if known else ""
            problems.append(
                f"{lit.where}: GUID {lit.guid} has no `// role: <name>` comment{hint}; "
                "a GUID that is not a role id says `// not a role: <why>`"
            )
            continue
        row = roles.get(lit.stated_role)
        if row is None:
            problems.append(
                f"{lit.where}: role {lit.stated_role!r} is not in {ROLE_TABLE.relative_to(REPO_ROOT)}; "
                "add it from the built-in roles reference (name, id, page, source)"
            )
        elif row.id != lit.guid:
            problems.append(
                f"{lit.where}: {lit.guid} is not {lit.stated_role!r}: the built-in role's id is {row.id} ({row.page})"
            )
    return problems


def infra_guid_literals() -> list[GuidLiteral]:
    return [
        lit
        for path in sorted(INFRA.rglob("*.bicep"))
        for lit in guid_literals(path.read_text(), path.relative_to(INFRA).as_posix())
    ]
