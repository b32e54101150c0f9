"""The CI examples (examples/ci/) run against the local twin: the workflow's own `run:` steps, in order,
with the `vmss-canary` console script made from pyproject.toml's [project.scripts] as pip makes it. A good
release exits 0 and the pipeline passes; the broken v2 exits the RolledBack code and fails it; a script
that does not parse fails at the check and is never uploaded. The Jenkinsfile runs the same commands."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from emulator.twin import EXAMPLES, Twin, TwinOptions, local_twin
from vmss_canary_cli.exits import ExitCode

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

REPO = Path(__file__).resolve().parents[2]
CI = REPO / "examples" / "ci"
WORKFLOW = yaml.safe_load((CI / "github-actions.yml").read_text())
STEPS: list[dict[str, Any]] = WORKFLOW["jobs"]["release"]["steps"]


def run_steps() -> list[dict[str, Any]]:
    """The workflow's shell steps after the install (the test installs the console script itself)."""
    shell = [s for s in STEPS if "run" in s]
    assert shell[0]["name"] == "Install vmss-canary" and shell[0]["run"] == 'pip install "$VMSS_CANARY_PACKAGE"'
    assert WORKFLOW["jobs"]["release"]["env"]["VMSS_CANARY_PACKAGE"] == ".[cli]"
    return shell[1:]


def console_script(bin_dir: Path) -> Path:
    """``vmss-canary`` as pip writes a console script for ``[project.scripts]``: import the entry, call it."""
    entry = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]["vmss-canary"]
    module, _, function = entry.partition(":")
    path = bin_dir / "vmss-canary"
    path.write_text(f"#!{sys.executable}\nimport sys\nfrom {module} import {function}\nsys.exit({function}())\n")
    path.chmod(0o755)
    return path


@pytest.fixture(scope="module")
def twin() -> Iterator[Twin]:
    if shutil.which("nginx") is None or shutil.which("bwrap") is None:
        pytest.fail("nginx and bubblewrap are needed: run `make setup`", pytrace=False)
    options = TwinOptions(
        instances=3,
        bake_seconds=2,
        tick_seconds=0.5,
        upgrade_seconds=0.3,
        failure_threshold=2,
        lb_address="127.0.9.6",
        address_base="127.0.56.1",
    )
    with local_twin(options, say=lambda line: None) as running:
        yield running


def pipeline(twin: Twin, tmp_path: Path, script: Path) -> tuple[int, str, str]:
    """Run the workflow's steps as GitHub runs a `run:` step (bash -eo pipefail); stop at the first failure.
    Returns the exit code of the step that ended the job, its name and the whole log."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    console_script(bin_dir)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "PYTHONPATH": str(REPO),
        "RELEASE_SCRIPT": str(script),
        "RELEASE_GROUP": "",
        "RELEASE_TIMEOUT": "240",
        "VMSS_CANARY_URL": twin.host.url,
        "VMSS_CANARY_KEY": twin.host.function_key,
        "VMSS_CANARY_SCOPE": "",
        "VMSS_CANARY_STORAGE_ACCOUNT_URL": "",  # the repository variable not set: the connection string is used
        "VMSS_CANARY_STORAGE_CONNECTION_STRING": twin.azurite.connection_string,
        "VMSS_CANARY_CONTAINER": "init",
    }
    log = ""
    for step in run_steps():
        done = subprocess.run(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        log += f"--- {step['name']} (exit {done.returncode})\n{done.stdout}{done.stderr}"
        if done.returncode != 0:
            return done.returncode, step["name"], log
    return 0, "", log


def test_the_workflow_passes_a_good_release_and_fails_a_broken_one_with_the_rolled_back_code(
    twin: Twin, tmp_path: Path
) -> None:
    code, _, log = pipeline(twin, tmp_path, EXAMPLES / "install_nginx.v1.sh")
    assert code == 0, log
    assert ": Succeeded (exit 0)" in log.splitlines()[-1]
    status, listing = twin.api("GET", "rollouts")
    assert status == 200 and listing["target"]["stableVersion"] == 1

    code, step, log = pipeline(twin, tmp_path, EXAMPLES / "install_nginx.v2.sh")
    assert code == ExitCode.ROLLED_BACK, log
    assert step == "Release and wait for the verdict"
    assert "Halted (exit 3) canary-rg:canary-vmss: RolledBack: canary unhealthy" in log and "probe failed" in log

    # Run again for the same content (a re-run of the job): nothing new is uploaded, the verdict is the same.
    code, _, log = pipeline(twin, tmp_path, EXAMPLES / "install_nginx.v2.sh")
    assert code == ExitCode.ROLLED_BACK and "already uploaded" in log, log


def test_a_script_that_does_not_parse_fails_the_check_and_is_never_uploaded(twin: Twin, tmp_path: Path) -> None:
    broken = tmp_path / "install_nginx.v9.sh"
    broken.write_text("#!/bin/bash\nif then fi\n")
    code, step, log = pipeline(twin, tmp_path, broken)
    assert code == 2 and step == "Check the script", log
    assert all(r["version"] != 9 for r in twin.api("GET", "rollouts")[1]["rollouts"])


def test_the_jenkinsfile_runs_the_workflows_commands() -> None:
    jenkins = (CI / "Jenkinsfile").read_text()
    commands = [c.replace(".canary/bin/", "") for c in re.findall(r"sh '([^']+)'", jenkins)]
    assert commands[0].endswith('pip install "$VMSS_CANARY_PACKAGE"')
    assert commands[1:] == [step["run"] for step in run_steps()]
    for name in ("VMSS_CANARY_URL", "VMSS_CANARY_KEY", "VMSS_CANARY_STORAGE_CONNECTION_STRING", "RELEASE_TIMEOUT"):
        assert re.search(rf"^\s+{name} = ", jenkins, re.M), name
