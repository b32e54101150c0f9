"""App setting names against the platform setting table (tests/data/azure-app-settings.json).

Azure ignores an app setting nobody reads: ``ReleaseStorage__blobServiceURI`` or
``APPLICATIONINSIGHTS_AUTH_STRING`` deploys fine and only the first trigger (or the missing telemetry)
shows it. Names the code reads are checked against ``SETTINGS_READ``; names the Functions platform reads
are checked against a table transcribed from the documentation (each row with its page, source file and
commit, and the words it rests on), not against a list written from the same memory as the Bicep.
"""

from __future__ import annotations

import importlib.metadata
import json
import re
from pathlib import Path

import pytest

from rollout.settings import SETTINGS_READ
from tests.infra.bicep_model import REPO_ROOT
from tests.infra.setting_table import (
    ANY_BINDING,
    SETTINGS_PY,
    binding_connections,
    code_connection_suffixes,
    code_suffix_problems,
    setting_name_problems,
    setting_table,
)
from tests.infra.test_bicep import READ_OUTSIDE_SETTINGS_PY, app_settings

pytestmark = pytest.mark.infra

SAMPLE = REPO_ROOT / "local.settings.sample.json"
DOCS_SOURCE = re.compile(r"MicrosoftDocs/azure-docs (articles|includes)/[a-z0-9/.-]+\.md @ [0-9a-f]{40}")
PACKAGE_SOURCE = re.compile(r"(?P<dist>[a-z0-9-]+)==(?P<version>[0-9.]+) (?P<path>[A-Za-z0-9_/.]+\.py)")


def _read_by_code() -> set[str]:
    return set(SETTINGS_READ) | set(READ_OUTSIDE_SETTINGS_PY)


def _sample_names() -> set[str]:
    return set(json.loads(SAMPLE.read_text())["Values"])


def _unescape(markdown: str) -> str:
    return markdown.replace("\\_", "_")


def test_table_rows_cite_the_documentation_and_quote_the_name() -> None:
    table = setting_table()
    rows = list(table.settings.values()) + list(table.suffixes.values())
    assert len(rows) >= 10
    for row in rows:
        assert row.page.startswith("https://learn.microsoft.com/azure/azure-functions/"), row
        assert row.read_by, row
        own, *also = row.citations
        assert DOCS_SOURCE.fullmatch(own.source), row
        assert row.name in _unescape(own.quote), f"{row.name}: the quote does not name it"
        for citation in also:
            if citation.page is not None:
                assert citation.page.startswith("https://learn.microsoft.com/azure/"), citation
                assert DOCS_SOURCE.fullmatch(citation.source), citation
            else:
                assert PACKAGE_SOURCE.fullmatch(citation.source), citation
            assert row.name in _unescape(citation.quote), citation
    for suffix, row in table.suffixes.items():
        assert re.fullmatch(r"__[a-z][A-Za-z]+", suffix), suffix
        assert row.bindings and all(re.fullmatch(r"[a-zA-Z]+|\*", b) for b in row.bindings), row
    for name in table.settings:
        assert re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name), name


def test_package_citations_match_the_pinned_and_installed_package() -> None:
    """A row citing a package's source is checked against that very file of the installed, pinned package."""
    requirements = (REPO_ROOT / "requirements.txt").read_text().splitlines()
    checked = 0
    for row in list(setting_table().settings.values()) + list(setting_table().suffixes.values()):
        for citation in row.citations:
            match = PACKAGE_SOURCE.fullmatch(citation.source)
            if citation.page is not None or match is None:
                continue
            pin = f"{match['dist']}=={match['version']}"
            assert pin in requirements, f"{citation.source}: requirements.txt does not pin {pin}"
            assert importlib.metadata.version(match["dist"]) == match["version"]
            files = importlib.metadata.files(match["dist"]) or []
            (installed,) = [f for f in files if str(f) == match["path"]]
            text = Path(str(installed.locate())).read_text()
            assert citation.quote in text, f"{row.name}: {citation.quote!r} is not in {match['dist']}/{match['path']}"
            checked += 1
    assert checked >= 5


def test_every_app_setting_the_bicep_sets_is_read_by_the_code_or_the_platform() -> None:
    names = set(app_settings())
    problems = setting_name_problems(names, _read_by_code(), binding_connections())
    assert not problems, "\n".join(problems)
    # Not vacuous: these are accepted only through the table (the code does not read them).
    table = setting_table()
    assert {
        "AzureWebJobsStorage__accountName",
        "APPLICATIONINSIGHTS_CONNECTION_STRING",
        "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
    } <= names & set(table.settings) - _read_by_code()
    assert "ReleaseStorage__queueServiceUri" in names - _read_by_code()


def test_every_name_in_local_settings_sample_is_read_by_the_code_or_the_platform() -> None:
    names = _sample_names()
    problems = setting_name_problems(names, _read_by_code(), binding_connections())
    assert not problems, "\n".join(problems)
    assert {"FUNCTIONS_WORKER_RUNTIME", "AzureWebJobsFeatureFlags"} <= names - _read_by_code()


def test_identity_connection_settings_the_code_reads_are_documented() -> None:
    source = SETTINGS_PY.read_text()
    problems = code_suffix_problems(source, SETTINGS_READ)
    assert not problems, "\n".join(problems)
    assert {("ReleaseStorage", "blobServiceUri"), ("StateStorage", "tableServiceUri")} <= set(
        code_connection_suffixes(source)
    )


def test_the_blob_trigger_connection_is_known_with_its_binding_type() -> None:
    assert binding_connections()["ReleaseStorage"] == {"blobTrigger"}


def test_the_local_host_refuses_documented_suffixes_only() -> None:
    """emulator/funchost/sdkbinding.py names the settings that switch the blob SDK binding to a managed identity."""
    source = (REPO_ROOT / "emulator" / "funchost" / "sdkbinding.py").read_text()
    found = set(re.findall(r"\{conn\}(__[A-Za-z]+)", source))
    assert len(found) >= 3
    assert found <= set(setting_table().suffixes), found - set(setting_table().suffixes)


# The check itself: each kind of mistake is reported, with a hint where one helps.
@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            "ReleaseStorage__blobServiceURI",
            "the documented spelling is 'ReleaseStorage__blobServiceUri': names are case-sensitive",
        ),
        (
            "AzureWebJobsStorage__accountname",
            "the documented spelling is 'AzureWebJobsStorage__accountName'",
        ),
        ("APPLICATIONINSIGHTS_AUTH_STRING", "neither read by the code nor a platform setting"),
        ("APPLICATIONINSIGHTS_AUTHENTICATON_STRING", "did you mean 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING'?"),
        # __accountName is only for AzureWebJobsStorage (functions-reference.md)
        ("ReleaseStorage__accountName", "__accountName is not a connection property"),
        # a queue endpoint is only read by blob triggers; a table endpoint not by a blob connection
        ("ReleaseStorage__tableServiceUri", "__tableServiceUri configures table connections"),
        # the code reads StateStorage through DefaultAzureCredential: no binding reads StateStorage__credential
        ("StateStorage__credential", "'StateStorage' is not the connection of any binding"),
        ("ReleaseStorge__queueServiceUri", "did you mean 'ReleaseStorage__queueServiceUri'?"),
        ("ReleaseStorage__blob__serviceUri", "neither read by the code nor a platform setting"),
    ],
)
def test_check_reports(name: str, expected: str) -> None:
    problems = setting_name_problems({name}, _read_by_code(), binding_connections())
    assert len(problems) == 1 and expected in problems[0], problems


@pytest.mark.parametrize(
    "name",
    ["ReleaseStorage__serviceUri", "ReleaseStorage__credential", "ReleaseStorage__clientId"],
)
def test_check_accepts_documented_properties_of_the_blob_trigger_connection(name: str) -> None:
    assert setting_name_problems({name}, _read_by_code(), binding_connections()) == []


def test_check_catches_misspelt_names_in_the_bicep_settings() -> None:
    settings = app_settings()
    renamed = {"APPLICATIONINSIGHTS_AUTHENTICATION_STRING": "APPLICATIONINSIGHTS_AUTH_STRING"}
    renamed["ReleaseStorage__queueServiceUri"] = "ReleaseStorage__queueServiceURI"
    names = {renamed.get(name, name) for name in settings}
    problems = setting_name_problems(names, _read_by_code(), binding_connections())
    assert [p.split(":")[0] for p in problems] == sorted(renamed.values()), problems


def test_check_catches_a_misspelt_suffix_in_the_code() -> None:
    source = SETTINGS_PY.read_text()
    assert source.count('"tableServiceUri"') == 2
    misspelt = source.replace('"StateStorage", "tableServiceUri"', '"StateStorage", "tableServiceURI"')
    problems = code_suffix_problems(misspelt, SETTINGS_READ)
    assert problems == [
        "StateStorage__tableServiceURI: read by _connection() in rollout/settings.py but missing from SETTINGS_READ",
        "StateStorage__tableServiceURI: __tableServiceURI is not a connection property in azure-app-settings.json "
        "(the documented spelling is '__tableServiceUri': names are case-sensitive)",
    ]
    # Misspelt consistently in SETTINGS_READ too: still reported.
    read = [n.replace("tableServiceUri", "tableServiceURI") if n.startswith("State") else n for n in SETTINGS_READ]
    assert len(code_suffix_problems(misspelt, read)) == 1


def test_any_binding_marker_is_only_on_common_properties() -> None:
    common = {s for s, row in setting_table().suffixes.items() if ANY_BINDING in row.bindings}
    assert common == {"__credential", "__clientId"}
