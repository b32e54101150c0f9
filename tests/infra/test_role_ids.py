"""Role definition ids in infra/ against the built-in role table (tests/data/azure-builtin-roles.json).

A role assignment to a role definition that does not exist fails the deployment, and an id written
from memory can be wrong while looking right (Storage Queue Data Contributor was once written here as
974c5e8b-45b9-4653-ba55-5f855dd0a4d3). So the ids are checked against a table transcribed from the
public reference, and the name the Bicep states next to each id must be the table's name for it.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.infra.bicep_model import INFRA, Scope, all_files, body, evaluate, load
from tests.infra.role_table import (
    GUID,
    builtin_roles,
    guid_literals,
    infra_guid_literals,
    role_id_problems,
)

pytestmark = pytest.mark.infra

ROLE_DEFINITIONS = "Microsoft.Authorization/roleDefinitions"


def test_table_rows_are_complete_and_cite_the_reference() -> None:
    roles = builtin_roles()
    ids = [role.id for role in roles.values()]
    assert len(set(ids)) == len(ids), "an id is listed under two names"
    for role in roles.values():
        assert re.fullmatch(GUID.pattern.strip(r"\b"), role.id) and role.id == role.id.lower(), role
        assert role.page.startswith("https://learn.microsoft.com/azure/role-based-access-control/built-in-roles/"), role
        assert re.fullmatch(
            r"MicrosoftDocs/azure-docs articles/role-based-access-control/built-in-roles/[a-z-]+\.md @ [0-9a-f]{40}",
            role.source,
        ), role
    # Reader: read on image galleries for image releases (ARM's linked access check).
    assert "Reader" in roles


def test_every_guid_in_infra_is_a_table_role_under_the_name_the_bicep_states() -> None:
    literals = infra_guid_literals()
    assert not role_id_problems(literals), "\n".join(role_id_problems(literals))
    stated = {lit.stated_role for lit in literals if not lit.not_a_role}
    # Not vacuous: the roles the least-privilege table in infra/README.md grants are all found.
    assert {
        "Storage Blob Data Owner",
        "Storage Queue Data Contributor",
        "Storage Table Data Contributor",
        "Monitoring Metrics Publisher",
        "Virtual Machine Contributor",
        "Storage Blob Data Reader",
        "Storage Blob Data Contributor",
    } <= stated


# The scanner itself, on small snippets: each kind of mistake is reported.
@pytest.mark.parametrize(
    ("line", "expected"),
    [
        # the bug this test exists for: a plausible id under the right name
        (
            "var q = '974c5e8b-45b9-4653-ba55-5f855dd0a4d3' // role: Storage Queue Data Contributor",
            "is not 'Storage Queue Data Contributor': the built-in role's id is 974c5e8b-45b9-4653-ba55-5f855dd0fb88",
        ),
        # the right id under another role's name
        ("var q = '974c5e8b-45b9-4653-ba55-5f855dd0fb88' // role: Reader", "is not 'Reader'"),
        # no name stated
        ("var q = '974c5e8b-45b9-4653-ba55-5f855dd0fb88'", "has no `// role: <name>` comment"),
        # a role the table does not list
        ("var o = '8e3af657-a8ff-443c-a75c-2fe8c4bcb635' // role: Owner", "'Owner' is not in tests/data/"),
        # inside an expression, not only a var
        (
            "  roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', "
            "'acdd72a7-3385-48ef-bd42-f606fba81ae7')",
            "has no `// role: <name>` comment (the table knows it as 'Reader')",
        ),
    ],
)
def test_scanner_reports(line: str, expected: str) -> None:
    problems = role_id_problems(guid_literals(line, "snippet.bicep"))
    assert len(problems) == 1 and expected in problems[0], problems


def test_scanner_sees_a_guid_after_a_url_and_ignores_one_in_a_comment() -> None:
    url = (
        "var r = 'https://x/roleDefinitions/974c5e8b-45b9-4653-ba55-5f855dd0a4d3' "
        "// role: Storage Queue Data Contributor"
    )
    assert (
        "the built-in role's id is 974c5e8b-45b9-4653-ba55-5f855dd0fb88"
        in role_id_problems(guid_literals(url, "snippet.bicep"))[0]
    )
    assert guid_literals("// 974c5e8b-45b9-4653-ba55-5f855dd0a4d3 was the wrong id", "snippet.bicep") == []
    assert guid_literals(r"var s = 'it\'s // not a comment 974c5e8b-45b9-4653-ba55-5f855dd0fb88'", "x") != []


def test_scanner_accepts_a_correct_line_and_an_explicit_non_role() -> None:
    ok = "var q = '974c5e8b-45b9-4653-ba55-5f855dd0fb88' // role: Storage Queue Data Contributor\n"
    other = "param tenant string = '72f988bf-86f1-41af-91ab-2d7cd011db47' // not a role: a tenant id\n"
    literals = guid_literals(ok + other, "snippet.bicep")
    assert len(literals) == 2
    assert role_id_problems(literals) == []


def _role_definition_argument(value: Any) -> Any:
    """The role id expression of ``roleDefinitionId: subscriptionResourceId('...roleDefinitions', X)``."""
    if isinstance(value, dict) and "function" in value:
        fn = value["function"]
        params = fn["parameters"]
        assert fn["type"] in ("subscription_resource_id", "resource_id", "tenant_resource_id"), fn["type"]
        assert params["resource_type"] == ROLE_DEFINITIONS and params.get("resource_name_2") is None, params
        return params["resource_name_1"]
    return value


def _scopes_of_every_file() -> list[Scope]:
    """main.bicep's modules as main deploys them (parameters bound), every other file with its defaults."""
    main = load(str(INFRA / "main.bicep"))
    scopes = [Scope(main)] + [Scope(main).enter_module(symbol) for symbol in main.modules]
    reached = {scope.file.path for scope in scopes}
    return scopes + [Scope(file) for file in all_files() if file.path not in reached]


def test_every_role_assignment_uses_a_role_id_from_the_table() -> None:
    """Whatever path the id takes (literal, variable, parameter, module parameter), it ends in the table."""
    known = {role.id for role in builtin_roles().values()}
    checked = 0
    for scope in _scopes_of_every_file():
        for name, entry in scope.file.resources_of_type("Microsoft.Authorization/roleAssignments").items():
            if entry["existing"]:
                continue
            config = body(entry)
            value = evaluate(_role_definition_argument(config["properties"]["roleDefinitionId"]), scope)
            where = f"{scope.file.relpath}:{name}"
            assert isinstance(value, str), f"{where}: role id {value!r} cannot be resolved offline to a literal"
            assert value in known, f"{where}: role id {value} is not in tests/data/azure-builtin-roles.json"
            checked += 1
    assert checked >= 7
