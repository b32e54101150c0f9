"""azure.yaml (Azure Developer CLI) against the repository: what it names exists, its hooks are POSIX sh
that shellcheck accepts, and the names it relies on line up with the Bicep.

azure.yaml fields: learn.microsoft.com/azure/developer/azure-developer-cli/azd-schema and the JSON schema
Azure/azure-dev schemas/v1.0/azure.yaml.json (infra.path default `infra`, infra.module default `main`,
services.<name>.project/language/host, command hooks with `shell` sh|pwsh and `run`).
"""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.infra.bicep_model import INFRA, REPO_ROOT, body, load

pytestmark = pytest.mark.infra

AZURE_YAML = REPO_ROOT / "azure.yaml"
# Variables azd itself sets in every environment (manage-environment-variables, "Standard environment
# variables"); any other variable main.parameters.json uses must be documented for `azd env set`.
AZD_STANDARD_VARIABLES = {
    "AZURE_ENV_NAME",
    "AZURE_LOCATION",
    "AZURE_PRINCIPAL_ID",
    "AZURE_PRINCIPAL_TYPE",
    "AZURE_RESOURCE_GROUP",
}


def _project() -> dict[str, Any]:
    data = yaml.safe_load(AZURE_YAML.read_text())
    assert isinstance(data, dict)
    return data


def _hooks() -> dict[str, dict[str, Any]]:
    hooks: dict[str, dict[str, Any]] = _project()["hooks"]
    return hooks


def test_azure_yaml_parses_and_names_the_bicep_and_the_function_app() -> None:
    project = _project()
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", project["name"])  # the schema's pattern
    infra = project["infra"]
    assert infra["provider"] == "bicep"
    infra_dir = REPO_ROOT / infra["path"]
    assert infra_dir.is_dir() and infra_dir == INFRA
    assert (infra_dir / f"{infra['module']}.bicep").is_file()
    assert (infra_dir / f"{infra['module']}.parameters.json").is_file()
    ((service_name, service),) = project["services"].items()
    assert (service["language"], service["host"]) == ("python", "function")
    project_dir = REPO_ROOT / service["project"]
    for needed in ("function_app.py", "host.json", "requirements.txt", "rollout"):
        assert (project_dir / needed).exists(), needed
    # azd finds the app through the azd-service-name tag, which must carry the service's name.
    app = load(str(INFRA / "modules" / "functionapp.bicep"))
    tags = body(app.resources["site"])["tags"]["function"]["parameters"]
    assert json.dumps(tags).count("azd-service-name") == 1
    assert app.params["azdServiceName"]["default"] == service_name


def test_every_hook_names_an_existing_posix_script_that_passes_shellcheck() -> None:
    hooks = _hooks()
    assert set(hooks) == {"preprovision", "postdeploy"}
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.fail("shellcheck is not installed: run `make setup` (Debian package shellcheck)")
    for event, hook in hooks.items():
        assert hook["shell"] == "sh", event
        script = REPO_ROOT / hook["run"]
        assert script.is_file(), f"{event}: {hook['run']} does not exist"
        assert script.read_text().startswith("#!/bin/sh\n"), f"{event}: not a POSIX sh script"
        proc = subprocess.run(
            [shellcheck, "--shell=sh", str(script)], capture_output=True, text=True, timeout=60, check=False
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr


def test_postdeploy_hook_reads_outputs_main_bicep_has() -> None:
    script = (REPO_ROOT / _hooks()["postdeploy"]["run"]).read_text()
    read = set(re.findall(r"\$\{([A-Z_]+):\?", script))
    assert {"FUNCTION_APP_NAME", "SYSTEM_TOPIC_NAME", "RELEASE_CONTAINER_NAME"} <= read
    outputs = set(load(str(INFRA / "main.bicep")).outputs)
    assert read - AZD_STANDARD_VARIABLES <= outputs, f"not main.bicep outputs: {read - outputs}"


def test_parameters_file_variables_are_azd_standard_or_documented() -> None:
    variables = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", (INFRA / "main.parameters.json").read_text()))
    assert {"AZURE_ENV_NAME", "AZURE_LOCATION"} <= variables
    readme = (INFRA / "README.md").read_text()
    undocumented = [v for v in sorted(variables - AZD_STANDARD_VARIABLES) if f"azd env set {v}" not in readme]
    assert not undocumented, f"document `azd env set <name>` in infra/README.md for {undocumented}"


def test_funcignore_keeps_exactly_the_app() -> None:
    patterns = [
        line.strip()
        for line in (REPO_ROOT / ".funcignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def ignored(path: Path) -> bool:
        parts = path.relative_to(REPO_ROOT).parts
        return any(fnmatch.fnmatch(part, pattern) for part in parts for pattern in patterns)

    kept = {p.relative_to(REPO_ROOT).parts[0] for p in REPO_ROOT.iterdir() if not ignored(p)}
    assert kept == {"function_app.py", "host.json", "requirements.txt", "rollout"}
    assert not ignored(REPO_ROOT / "rollout" / "settings.py")
