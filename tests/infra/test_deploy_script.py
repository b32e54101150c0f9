"""infra/deploy.sh and its helper scripts, run for real against a recording stand-in for `az`.

The stand-in (written below) logs every call, copies every parameters file it is given, and answers the
few queries the script reads back (deployment outputs, keys, ids). Nothing reaches Azure; what is checked
is the script's own logic: what it refuses, and which deployments it asks `az` for, with which parameters.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.infra.bicep_model import INFRA

pytestmark = pytest.mark.infra

SUBNET = "/subscriptions/s1/resourceGroups/net/providers/Microsoft.Network/virtualNetworks/v/subnets/functions"
GALLERY_ID = "/subscriptions/s1/resourceGroups/images/providers/Microsoft.Compute/galleries/fleet"
APP_ID = "11111111-2222-3333-4444-555555555555"

FAKE_AZ = r"""#!/usr/bin/env bash
printf '%s\n' "$*" >> "$STUB_DIR/az.log"
for arg in "$@"; do
  case $arg in
    @*.json) n=$(ls "$STUB_DIR"/files | wc -l); cp "${arg#@}" "$STUB_DIR/files/$n.json" ;;
  esac
done
case "$*" in
  "account show"*) echo 00000000-0000-0000-0000-00000000000a ;;
  "ad signed-in-user show"*) echo user-object-id ;;
  "deployment group show"*)
    case "$*" in
      *outputs.functionAppName.*) echo vmsscanary-abc ;;
      *outputs.functionAppHostName.*) echo vmsscanary-abc.azurewebsites.net ;;
      *outputs.storageAccountName.*) echo vmsscanaryabc ;;
      *outputs.releaseContainerName.*) echo init ;;
      *outputs.systemTopicName.*) echo vmsscanary-storage-events ;;
      *outputs.targetResourceGroup.*) echo rg ;;
      *outputs.scaleSetName.*) echo canary-vmss ;;
      *outputs.httpAuth.*) echo "${STUB_HTTP_AUTH:-function-key}" ;;
      *outputs.demoInitialScriptName.*) echo install_nginx.v0.sh ;;
      *outputs.demoPublicIp.*) echo 203.0.113.7 ;;
    esac ;;
  "functionapp keys list"*) echo "${STUB_BLOBS_KEY-blobs-key}" ;;
  "ad app list"*) echo "${STUB_EXISTING_APP:-}" ;;
  "ad app create"*) echo "$STUB_APP_ID" ;;
  "ad sp show"*) exit 3 ;;
esac
exit 0
"""

FAKE_ZIP = """#!/bin/sh
: > "$3"
"""


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str
    calls: list[str]
    parameter_files: list[Any]  # parameters files (objects) and the app roles file (a list)

    def calls_starting(self, prefix: str) -> list[str]:
        return [call for call in self.calls if call.startswith(prefix)]


# What the scripts may run besides the stand-ins: linked into the test's own PATH, so that whatever else
# the machine has installed (Functions Core Tools, a real az) cannot be picked up.
SYSTEM_TOOLS = ("bash", "sh", "cat", "cp", "dirname", "grep", "ls", "mktemp", "rm", "sed", "sleep", "sort", "tr", "wc")


@pytest.fixture
def stub_dir(tmp_path: Path) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (tmp_path / "files").mkdir()
    for name, text in (("az", FAKE_AZ), ("zip", FAKE_ZIP)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    for tool in SYSTEM_TOOLS:
        found = shutil.which(tool)
        assert found, f"{tool} is needed to run the deploy scripts"
        (bin_dir / tool).symlink_to(found)
    return tmp_path


def _run(stub_dir: Path, script: Path, *args: str, env: dict[str, str] | None = None) -> Run:
    proc = subprocess.run(
        [str(script), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={
            "PATH": str(stub_dir / "bin"),
            "HOME": str(stub_dir),
            "STUB_DIR": str(stub_dir),
            "STUB_APP_ID": APP_ID,
            **(env or {}),
        },
    )
    log = stub_dir / "az.log"
    files = sorted((stub_dir / "files").glob("*.json"), key=lambda p: int(p.stem))
    return Run(
        proc.returncode,
        proc.stdout,
        proc.stderr,
        log.read_text().splitlines() if log.exists() else [],
        [json.loads(f.read_text()) for f in files],
    )


def _deploy(stub_dir: Path, *args: str, env: dict[str, str] | None = None) -> Run:
    return _run(stub_dir, INFRA / "deploy.sh", "rg", "westeurope", *args, env=env)


def _main_parameters(run: Run) -> dict[str, Any]:
    """The values main.parameters.json passed to the main deployment, after substitution."""
    (rendered,) = [f for f in run.parameter_files if isinstance(f, dict) and "integrationSubnetId" in f["parameters"]]
    return {name: spec["value"] for name, spec in rendered["parameters"].items()}


def test_refuses_an_own_scale_set_without_a_subnet_and_says_why(stub_dir: Path) -> None:
    run = _deploy(stub_dir, "--", "--parameters", "scaleSetName=my-vmss", "targetResourceGroup=my-rg")
    assert run.returncode != 0
    message = run.stderr
    assert "integrationSubnetId" in message
    assert "private IP" in message and "0 of N healthy" in message  # the reason
    assert "Microsoft.App/environments" in message  # what to give
    assert not run.calls_starting("deployment"), run.calls
    assert not run.calls_starting("group create"), "nothing may be created before the refusal"


@pytest.mark.parametrize(
    ("args", "env"),
    [
        (("--", "--parameters", f"integrationSubnetId={SUBNET}", "scaleSetName=my-vmss"), {}),
        (("--", "--parameters", "scaleSetName=my-vmss"), {"INTEGRATION_SUBNET_ID": SUBNET}),
    ],
    ids=["parameter", "environment"],
)
def test_deploys_an_own_scale_set_with_a_subnet(stub_dir: Path, args: tuple[str, ...], env: dict[str, str]) -> None:
    run = _deploy(stub_dir, *args, env=env)
    assert run.returncode == 0, run.stderr
    (main_call,) = [c for c in run.calls_starting("deployment group create") if "main.bicep" in c]
    assert "deployDemoScaleSet=false" in main_call and "scaleSetName=my-vmss" in main_call
    rendered = _main_parameters(run)
    if env:
        assert rendered["integrationSubnetId"] == SUBNET
    else:
        assert f"integrationSubnetId={SUBNET}" in main_call
    # The code is published, then the Event Grid subscription is deployed (after the blobs key is there).
    publish = run.calls.index(next(c for c in run.calls if c.startswith("functionapp deployment source config-zip")))
    (eventgrid,) = [c for c in run.calls_starting("deployment group create") if "eventgrid.bicep" in c]
    assert run.calls.index(eventgrid) > publish
    assert "releaseContainerName=init" in eventgrid and "functionAppName=vmsscanary-abc" in eventgrid
    assert "x-functions-key" in run.stdout


def test_demo_needs_no_subnet(stub_dir: Path) -> None:
    key = stub_dir / "id.pub"
    key.write_text("ssh-ed25519 AAAA test")
    run = _deploy(stub_dir, "--demo", "--ssh-key", str(key))
    assert run.returncode == 0, run.stderr
    (main_call,) = [c for c in run.calls_starting("deployment group create") if "main.bicep" in c]
    assert "deployDemoScaleSet=true" in main_call
    assert run.calls_starting("storage blob upload") and run.calls_starting("vmss update-instances")
    assert [c for c in run.calls_starting("deployment group create") if "eventgrid.bicep" in c]


def test_parameters_file_is_rendered_with_no_variable_left(stub_dir: Path) -> None:
    run = _deploy(stub_dir, env={"INTEGRATION_SUBNET_ID": SUBNET, "IMAGE_READER_SCOPE": GALLERY_ID})
    assert run.returncode == 0, run.stderr
    rendered = _main_parameters(run)
    assert "${" not in json.dumps(rendered)
    assert rendered["location"] == "westeurope"
    assert rendered["uploaderPrincipalId"] == "user-object-id"  # the signed-in operator uploads releases
    assert rendered["uploaderPrincipalType"] == "User"
    assert rendered["scaleSetName"] == "canary-vmss"
    assert rendered["targetResourceGroup"] == ""  # main.bicep: empty = the deployment's resource group
    assert rendered["imageReaderScope"] == GALLERY_ID
    assert rendered["entraClientId"] == ""
    # Every variable the file uses is one deploy.sh substitutes (the same file serves azd).
    template = (INFRA / "main.parameters.json").read_text()
    variables = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", template))
    assert {"AZURE_LOCATION", "AZURE_ENV_NAME", "INTEGRATION_SUBNET_ID"} <= variables


@pytest.mark.parametrize(
    "scope",
    [
        "/subscriptions/s1/resourceGroups/images/providers/Microsoft.Compute/images/one-image",
        "fleet",
        "/subscriptions/s1",
    ],
)
def test_refuses_an_image_reader_scope_that_is_neither_a_gallery_nor_a_resource_group(
    stub_dir: Path, scope: str
) -> None:
    run = _deploy(stub_dir, "--", "--parameters", f"integrationSubnetId={SUBNET}", f"imageReaderScope={scope}")
    assert run.returncode != 0
    assert "imageReaderScope" in run.stderr and "Microsoft.Compute/galleries" in run.stderr
    assert not run.calls_starting("deployment")


def test_image_reader_scope_of_a_resource_group_is_accepted(stub_dir: Path) -> None:
    run = _deploy(
        stub_dir, env={"INTEGRATION_SUBNET_ID": SUBNET, "IMAGE_READER_SCOPE": "/subscriptions/s1/resourceGroups/img"}
    )
    assert run.returncode == 0, run.stderr


def test_entra_creates_the_registration_with_both_roles_and_turns_authentication_on(stub_dir: Path) -> None:
    run = _deploy(stub_dir, "--entra", env={"INTEGRATION_SUBNET_ID": SUBNET, "STUB_HTTP_AUTH": "entra"})
    assert run.returncode == 0, run.stderr
    (create,) = run.calls_starting("ad app create")
    assert f"--app-roles @{INFRA / 'entra-app-roles.json'}" in create
    assert "--sign-in-audience AzureADMyOrg" in create
    uri_update = [c for c in run.calls_starting("ad app update") if "--identifier-uris" in c]
    assert uri_update == [
        f"ad app update --id {APP_ID} --identifier-uris api://{APP_ID} --set api.requestedAccessTokenVersion=2"
    ]
    assert run.calls_starting(f"ad sp create --id {APP_ID}")
    assert _main_parameters(run)["entraClientId"] == APP_ID
    # The registration exists before the deployment that points App Service authentication at it.
    main_call = next(c for c in run.calls if c.startswith("deployment group create") and "main.bicep" in c)
    assert run.calls.index(create) < run.calls.index(main_call)
    assert [c for c in run.calls_starting("ad app update") if "/.auth/login/aad/callback" in c]
    assert "Rollouts.Read" in run.stdout and "Rollouts.Operate" in run.stdout


def test_entra_updates_an_existing_registration_instead_of_creating_another(stub_dir: Path) -> None:
    run = _deploy(stub_dir, "--entra", env={"INTEGRATION_SUBNET_ID": SUBNET, "STUB_EXISTING_APP": APP_ID})
    assert run.returncode == 0, run.stderr
    assert not run.calls_starting("ad app create")
    assert f"ad app update --id {APP_ID} --app-roles @{INFRA / 'entra-app-roles.json'}" in run.calls


def test_app_roles_file_defines_the_reader_and_the_operator() -> None:
    roles = json.loads((INFRA / "entra-app-roles.json").read_text())
    assert sorted(role["value"] for role in roles) == ["Rollouts.Operate", "Rollouts.Read"]
    assert len({role["id"] for role in roles}) == 2  # fixed ids: updating the registration keeps them
    for role in roles:
        assert role["isEnabled"] is True
        assert "User" in role["allowedMemberTypes"]  # assignable to users and groups
        assert role["displayName"] and role["description"]


# ---- the helper scripts in their azd (no-argument) form ----


def test_azd_preprovision_check_needs_the_subnet_and_the_scale_set(stub_dir: Path) -> None:
    script = INFRA / "scripts" / "require-subnet.sh"
    missing_subnet = _run(stub_dir, script, env={"VMSS_NAME": "my-vmss"})
    assert missing_subnet.returncode == 1
    assert "azd env set INTEGRATION_SUBNET_ID" in missing_subnet.stderr and "0 of N healthy" in missing_subnet.stderr
    missing_vmss = _run(stub_dir, script, env={"INTEGRATION_SUBNET_ID": SUBNET})
    assert missing_vmss.returncode == 1 and "azd env set VMSS_NAME" in missing_vmss.stderr
    assert _run(stub_dir, script, env={"INTEGRATION_SUBNET_ID": SUBNET, "VMSS_NAME": "my-vmss"}).returncode == 0


def test_azd_postdeploy_hook_subscribes_with_the_provisioned_names(stub_dir: Path) -> None:
    env = {
        "AZURE_RESOURCE_GROUP": "rg-azd",
        "FUNCTION_APP_NAME": "vmsscanary-xyz",
        "SYSTEM_TOPIC_NAME": "vmsscanary-storage-events",
        "RELEASE_CONTAINER_NAME": "init",
    }
    run = _run(stub_dir, INFRA / "scripts" / "subscribe-events.sh", env=env)
    assert run.returncode == 0, run.stderr
    (deployment,) = run.calls_starting("deployment group create")
    assert "--resource-group rg-azd" in deployment and f"--template-file {INFRA / 'eventgrid.bicep'}" in deployment
    assert "functionAppName=vmsscanary-xyz" in deployment and "releaseContainerName=init" in deployment


def test_event_grid_step_gives_up_when_the_blobs_key_never_appears(stub_dir: Path) -> None:
    env = {"STUB_BLOBS_KEY": "", "EVENTGRID_KEY_ATTEMPTS": "2", "EVENTGRID_KEY_WAIT_SECONDS": "0"}
    run = _run(stub_dir, INFRA / "scripts" / "subscribe-events.sh", "rg", "app", "topic", "init", env=env)
    assert run.returncode == 1
    assert "blobs_extension key of app never appeared" in run.stderr
    assert len(run.calls_starting("functionapp keys list")) == 2
    assert not run.calls_starting("deployment")


def test_scripts_are_executable() -> None:
    for script in (INFRA / "deploy.sh", *(INFRA / "scripts").glob("*.sh")):
        assert os.access(script, os.X_OK), script


# ---- the scale sets the app may steer (targetScaleSets, TARGET_SCALE_SETS, --targets) ----

SUB_A = "00000000-0000-0000-0000-0000000000aa"
SUB_B = "00000000-0000-0000-0000-0000000000bb"
WEB_EU = f"/subscriptions/{SUB_A}/resourceGroups/rg-web/providers/Microsoft.Compute/virtualMachineScaleSets/web-eu"
FLEX_US = f"/subscriptions/{SUB_B}/resourceGroups/rg-us/providers/Microsoft.Compute/virtualMachineScaleSets/flex-us"
GOOD_TARGETS = f"{WEB_EU}:Uniform,{FLEX_US}:Flexible"


def test_no_targets_renders_empty_lists(stub_dir: Path) -> None:
    run = _deploy(stub_dir, env={"INTEGRATION_SUBNET_ID": SUBNET})
    assert run.returncode == 0, run.stderr
    rendered = _main_parameters(run)
    assert rendered["targetScaleSets"] == "" and rendered["scaleSetOrchestration"] == ""  # main.bicep: VMSS_NAME alone
    assert "other targets" not in run.stdout


def test_targets_from_the_environment_reach_the_deployment(stub_dir: Path) -> None:
    env = {"INTEGRATION_SUBNET_ID": SUBNET, "TARGET_SCALE_SETS": GOOD_TARGETS, "VMSS_ORCHESTRATION": "Flexible"}
    run = _deploy(stub_dir, env=env)
    assert run.returncode == 0, run.stderr
    rendered = _main_parameters(run)
    assert rendered["targetScaleSets"] == GOOD_TARGETS
    assert rendered["scaleSetOrchestration"] == "Flexible"
    assert "other targets    2 scale sets" in run.stdout


def test_targets_file_one_entry_a_line_with_comments(stub_dir: Path) -> None:
    targets = stub_dir / "targets.txt"
    targets.write_text(f"# the web tier\n{WEB_EU}:Uniform\n\n  {FLEX_US}:Flexible   # canary region\n")
    run = _deploy(stub_dir, "--targets", str(targets), env={"INTEGRATION_SUBNET_ID": SUBNET})
    assert run.returncode == 0, run.stderr
    assert _main_parameters(run)["targetScaleSets"] == GOOD_TARGETS


def test_targets_file_that_does_not_exist_is_refused(stub_dir: Path) -> None:
    run = _deploy(stub_dir, "--targets", str(stub_dir / "missing.txt"), env={"INTEGRATION_SUBNET_ID": SUBNET})
    assert run.returncode == 1 and "--targets: no such file" in run.stderr
    assert not run.calls_starting("group create")


MALFORMED_TARGETS = [
    pytest.param(WEB_EU, "has no orchestration mode", id="no-mode"),
    pytest.param(f"{WEB_EU}:uniform", "must be Uniform or Flexible", id="mode-in-another-case"),
    pytest.param(f"{WEB_EU}:Rolling", "must be Uniform or Flexible", id="unknown-mode"),
    pytest.param("/subscriptions/s1/resourceGroups/rg/web:Uniform", "is not a scale set resource id", id="short-id"),
    pytest.param(
        WEB_EU.replace("virtualMachineScaleSets", "virtualMachines") + ":Flexible",
        "is not a scale set resource id",
        id="a-vm-not-a-scale-set",
    ),
    pytest.param(f"{WEB_EU}:Uniform,,{FLEX_US}:Flexible", "entry 2 is empty", id="empty-entry"),
    pytest.param(f"{WEB_EU}:Uniform,", "entry 2 is empty", id="trailing-comma"),
    pytest.param(f"{WEB_EU}:Uniform, {FLEX_US}:Flexible", "white space", id="space"),
    pytest.param(f"{WEB_EU}:Uniform,{WEB_EU.upper()}:Flexible", "a second time", id="duplicate-in-another-case"),
]


@pytest.mark.parametrize(("targets", "problem"), MALFORMED_TARGETS)
@pytest.mark.parametrize("how", ["environment", "parameter"])
def test_refuses_a_malformed_target_list_before_creating_anything(
    stub_dir: Path, targets: str, problem: str, how: str
) -> None:
    if how == "environment":
        run = _deploy(stub_dir, env={"INTEGRATION_SUBNET_ID": SUBNET, "TARGET_SCALE_SETS": targets})
    else:
        run = _deploy(stub_dir, "--", "--parameters", f"integrationSubnetId={SUBNET}", f"targetScaleSets={targets}")
    assert run.returncode == 1
    assert "targetScaleSets" in run.stderr and problem in run.stderr
    assert "<scale set resource id>:<Uniform|Flexible>" in run.stderr  # what to write instead
    assert not run.calls_starting("group create") and not run.calls_starting("deployment")


def test_every_problem_of_a_target_list_is_named_at_once(stub_dir: Path) -> None:
    targets = f"{WEB_EU},{FLEX_US}:flexible,nonsense:Uniform"
    run = _deploy(stub_dir, env={"INTEGRATION_SUBNET_ID": SUBNET, "TARGET_SCALE_SETS": targets})
    assert run.returncode == 1
    assert "entry 1 has no orchestration mode" in run.stderr
    assert "entry 2: the orchestration mode must be Uniform or Flexible" in run.stderr
    assert "entry 3 is not a scale set resource id" in run.stderr


def test_refuses_an_unknown_vmss_orchestration(stub_dir: Path) -> None:
    run = _deploy(stub_dir, env={"INTEGRATION_SUBNET_ID": SUBNET, "VMSS_ORCHESTRATION": "flexible"})
    assert run.returncode == 1 and "VMSS_ORCHESTRATION" in run.stderr
    assert not run.calls_starting("group create")


def test_azd_preprovision_hook_checks_the_subnet_and_the_targets(stub_dir: Path) -> None:
    script = INFRA / "scripts" / "preprovision.sh"
    base = {"INTEGRATION_SUBNET_ID": SUBNET, "VMSS_NAME": "my-vmss"}
    assert _run(stub_dir, script, env={**base, "TARGET_SCALE_SETS": GOOD_TARGETS}).returncode == 0
    assert _run(stub_dir, script, env=base).returncode == 0
    malformed = _run(stub_dir, script, env={**base, "TARGET_SCALE_SETS": WEB_EU})
    assert malformed.returncode == 1 and "has no orchestration mode" in malformed.stderr
    no_subnet = _run(stub_dir, script, env={"VMSS_NAME": "my-vmss", "TARGET_SCALE_SETS": GOOD_TARGETS})
    assert no_subnet.returncode == 1 and "azd env set INTEGRATION_SUBNET_ID" in no_subnet.stderr
