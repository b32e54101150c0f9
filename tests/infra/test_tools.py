"""infra/ through the external checkers: checkov (Bicep security policies) and shellcheck (deploy.sh).

The checkers are found relative to the repo root (``make infra-tools`` installs them, `make setup`
depends on it) and a missing one FAILS with the command to run: a skipped security scan looks like a
passed one in CI.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from typing import Any

import pytest

from tests.infra.bicep_model import INFRA, REPO_ROOT, load

pytestmark = pytest.mark.infra

CHECKOV = REPO_ROOT / ".tools" / "checkov" / "bin" / "checkov"


def _run_checkov() -> dict[str, Any]:
    if not CHECKOV.exists():
        pytest.fail(f"checkov is not installed at {CHECKOV.relative_to(REPO_ROOT)}: run `make setup`")
    # --skip-download: no policy/guideline download from the vendor's API. The proxy variables make
    # sure that anything checkov still tries to fetch goes to a closed loopback port and fails fast.
    env = {
        **os.environ,
        "https_proxy": "http://127.0.0.1:9",
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "http_proxy": "http://127.0.0.1:9",
        "HTTP_PROXY": "http://127.0.0.1:9",
    }
    proc = subprocess.run(
        [str(CHECKOV), "--directory", str(INFRA), "--framework", "bicep", "--output", "json", "--skip-download"],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        cwd=REPO_ROOT,
    )
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"checkov gave no JSON report (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    # One framework -> one report object (a list when several frameworks run).
    result: dict[str, Any] = report[0] if isinstance(report, list) else report
    return result


@pytest.fixture(scope="module")
def checkov_report() -> dict[str, Any]:
    return _run_checkov()


def test_checkov_finds_no_failed_checks(checkov_report: dict[str, Any]) -> None:
    results = checkov_report["results"]
    failed = [
        f"{c['check_id']} {c['check_name']} -- {c['file_path']}:{c['resource']}" for c in results["failed_checks"]
    ]
    assert not failed, "checkov failed checks:\n" + "\n".join(failed)
    # A scan that parsed nothing also has no failures: make sure it really looked at the templates.
    scanned = {c["file_path"] for c in results["passed_checks"]}
    assert {"/modules/storage.bicep", "/modules/functionapp.bicep", "/modules/demo-scale-set.bicep"} <= scanned
    assert checkov_report["summary"]["passed"] >= 20
    assert checkov_report["summary"]["parsing_errors"] == 0


def test_every_checkov_skip_is_inline_with_a_reason(checkov_report: dict[str, Any]) -> None:
    skipped = checkov_report["results"]["skipped_checks"]
    assert skipped, "expected the documented inline skips (e.g. CKV_AZURE_206 on the storage account)"
    for check in skipped:
        reason = (check.get("check_result", {}).get("suppress_comment") or "").strip()
        assert len(reason) >= 20, f"{check['check_id']} on {check['resource']} is skipped without a reason"
    # Skips only come from the Bicep (no --skip-check on the command line, no config file).
    assert not list(REPO_ROOT.glob(".checkov.y*ml"))


def test_deploy_script_passes_shellcheck() -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.fail("shellcheck is not installed: run `make setup` (Debian package shellcheck)")
    scripts = [INFRA / "deploy.sh", *sorted((INFRA / "scripts").glob("*.sh"))]
    proc = subprocess.run([shellcheck, *map(str, scripts)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_deploy_script_is_strict_bash() -> None:
    text = (INFRA / "deploy.sh").read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in text
    assert os.access(INFRA / "deploy.sh", os.X_OK)


def test_parameters_file_names_only_parameters_main_bicep_declares() -> None:
    parameters = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    declared = load(str(INFRA / "main.bicep")).params
    unknown = set(parameters) - set(declared)
    assert not unknown, f"main.parameters.json sets undeclared parameters: {sorted(unknown)}"
    # deploy.sh overrides these on the command line; each must exist too.
    for name in ("deployDemoScaleSet", "sshPublicKey", "uploaderPrincipalId", "uploaderPrincipalType"):
        assert name in declared
