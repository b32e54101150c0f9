"""The Bicep in infra/ against the code it deploys: settings contract, triggers, roles, hardening.

These run offline on the parsed Bicep (see ``bicep_model``); what only Azure can tell (does the
deployment succeed, do the roles suffice at runtime) is listed in infra/README.md.
"""

from __future__ import annotations

import functools
import re
import subprocess
from typing import Any

import pytest

from rollout.settings import DEFAULT_TICK_SCHEDULE, SETTINGS_READ, load_settings
from tests.infra.bicep_model import (
    INFRA,
    BicepFile,
    Expr,
    Scope,
    accessor_path,
    all_files,
    body,
    evaluate,
    load,
    resolve_principal,
    unquote,
)
from tests.infra.role_table import role_id
from tests.infra.setting_table import binding_connections, setting_name_problems

pytestmark = pytest.mark.infra

# Built-in role definition ids, from the table transcribed from the public reference (the only place the
# tests hold role ids: tests/data/azure-builtin-roles.json, checked by test_role_ids.py).
STORAGE_BLOB_DATA_OWNER = role_id("Storage Blob Data Owner")
STORAGE_BLOB_DATA_CONTRIBUTOR = role_id("Storage Blob Data Contributor")
STORAGE_BLOB_DATA_READER = role_id("Storage Blob Data Reader")
STORAGE_QUEUE_DATA_CONTRIBUTOR = role_id("Storage Queue Data Contributor")
STORAGE_TABLE_DATA_CONTRIBUTOR = role_id("Storage Table Data Contributor")
VIRTUAL_MACHINE_CONTRIBUTOR = role_id("Virtual Machine Contributor")
MONITORING_METRICS_PUBLISHER = role_id("Monitoring Metrics Publisher")
READER = role_id("Reader")
MONITORING_READER = role_id("Monitoring Reader")
LOG_ANALYTICS_READER = role_id("Log Analytics Reader")
EVENTGRID_DATA_SENDER = role_id("EventGrid Data Sender")

FUNCTION_IDENTITY = "modules/functionapp.bicep:site.identity.principalId"
SCALE_SET_IDENTITY = "modules/demo-scale-set.bicep:scaleSet.identity.principalId"
UPLOADER = "main.bicep:param uploaderPrincipalId"

ACCOUNT = "Microsoft.Storage/storageAccounts"
CONTAINER = "Microsoft.Storage/storageAccounts/blobServices/containers"
SCALE_SET = "Microsoft.Compute/virtualMachineScaleSets"
INSIGHTS = "Microsoft.Insights/components"
GALLERY = "Microsoft.Compute/galleries"
LOAD_BALANCER = "Microsoft.Network/loadBalancers"
WORKSPACE = "Microsoft.OperationalInsights/workspaces"
TOPIC = "Microsoft.EventGrid/topics"
# An assignment without `scope` applies to the resource group its module is deployed to.
RESOURCE_GROUP = "resourceGroup"
SUBSCRIPTION = "subscription"

# The complete list: an assignment not listed here (a broader scope, another role) fails the test.
EXPECTED_ROLE_ASSIGNMENTS = {
    # the blob trigger on the release container + host storage (same account): blobs, receipts, leases
    (STORAGE_BLOB_DATA_OWNER, ACCOUNT, FUNCTION_IDENTITY),
    # the blob trigger's poison queue and the host's queues
    (STORAGE_QUEUE_DATA_CONTRIBUTOR, ACCOUNT, FUNCTION_IDENTITY),
    # the state tables
    (STORAGE_TABLE_DATA_CONTRIBUTOR, ACCOUNT, FUNCTION_IDENTITY),
    # telemetry with Entra auth (local auth is off on the component)
    (MONITORING_METRICS_PUBLISHER, INSIGHTS, FUNCTION_IDENTITY),
    # each Uniform target scale set only; covers Microsoft.Compute/virtualMachineScaleSets/networkInterfaces/read
    (VIRTUAL_MACHINE_CONTRIBUTOR, SCALE_SET, FUNCTION_IDENTITY),
    # each resource group holding a Flexible target: its VMs and NICs are listed at the resource group
    (VIRTUAL_MACHINE_CONTRIBUTOR, RESOURCE_GROUP, FUNCTION_IDENTITY),
    # CustomScript fetches release scripts with the scale set's identity
    (STORAGE_BLOB_DATA_READER, CONTAINER, SCALE_SET_IDENTITY),
    # the operator uploads releases (shared key is off)
    (STORAGE_BLOB_DATA_CONTRIBUTOR, CONTAINER, UPLOADER),
    # optional (imageReaderScope): read the release images (ARM's linked access check on imageReference.id),
    # on the gallery, or on the image resource group when the scope given is a resource group
    (READER, GALLERY, FUNCTION_IDENTITY),
    (READER, RESOURCE_GROUP, FUNCTION_IDENTITY),
    # optional (targetsDiscoverySubscriptions): list the scale sets of each subscription tag discovery reads
    (READER, SUBSCRIPTION, FUNCTION_IDENTITY),
    # optional (SIGNALS_*): the canary judge's platform metrics of the scale set, the load balancer's health
    # probe status, the Log Analytics query
    (MONITORING_READER, SCALE_SET, FUNCTION_IDENTITY),
    (MONITORING_READER, LOAD_BALANCER, FUNCTION_IDENTITY),
    (LOG_ANALYTICS_READER, WORKSPACE, FUNCTION_IDENTITY),
    # optional (deployNotifyTopic): publish notifications to the notification topic only
    (EVENTGRID_DATA_SENDER, TOPIC, FUNCTION_IDENTITY),
}

# The only role assignments on a whole subscription (a module with targetScope = 'subscription'), and why.
SUBSCRIPTION_WIDE_ASSIGNMENTS = {
    "modules/discovery-access.bicep:discoveryReader": "tag discovery lists every scale set of the subscription",
}

# The only role assignments allowed without `scope` (i.e. on a whole resource group), and why.
RESOURCE_GROUP_WIDE_ASSIGNMENTS = {
    "modules/image-access.bicep:resourceGroupReader": "imageReaderScope names a resource group of managed images",
    "modules/target-group-access.bicep:groupVmContributor": "a Flexible scale set's VMs and NICs are listed there",
}

# Variables rollout/settings.py reads that the deployment deliberately leaves unset, and why.
NOT_SET_IN_AZURE = {
    "ARM_TOKEN": "static bearer token for the emulator; in Azure the managed identity gets tokens",
    "ARM_CA_BUNDLE": "public ARM endpoints chain to the system CAs; only the local emulator needs a bundle",
    "ReleaseStorage": "connection-string form (a key); ReleaseStorage__blobServiceUri (identity) is set",
    "StateStorage": "connection-string form (a key); StateStorage__tableServiceUri (identity) is set",
    "AzureWebJobsStorage": "connection-string form (a key); AzureWebJobsStorage__accountName is set",
    "AzureWebJobsStorage__tableServiceUri": "only a fallback for unset StateStorage; StateStorage__... is set",
    "TickQueue": "connection-string form (a key); TickQueue__queueServiceUri (identity) is set",
    "NOTIFY_EVENTGRID_KEY": "the topic's access key; in Azure the managed identity (EventGrid Data Sender) publishes",
}

# Settings read by the app outside rollout/settings.py, and by what.
READ_OUTSIDE_SETTINGS_PY: dict[str, str] = {}

# The blob trigger's contract with infra/ (docs/design.md, "Configuration"); checked against function_app.py below.
CONTRACT_BLOB_TRIGGER = {
    "function": "release_uploaded",
    "connection": "ReleaseStorage",
    "path": "%RELEASE_CONTAINER%/{name}",
    "source": "EventGrid",
}

REQUIRED_FOR_LOADING = {
    "AZURE_SUBSCRIPTION_ID": "00000000-0000-0000-0000-000000000000",
    "VMSS_RESOURCE_GROUP": "rg",
    "VMSS_NAME": "vmss",
    "StateStorage__tableServiceUri": "https://account.table.core.windows.net/",
}


def main() -> BicepFile:
    return load(str(INFRA / "main.bicep"))


def main_scope() -> Scope:
    return Scope(main())


def contract_settings_raw() -> dict[str, Any]:
    """contractSettings as main.bicep passes it to the function app module (unevaluated)."""
    params = body(main().modules["functionApp"])["params"]
    return {unquote(k): v for k, v in params["contractSettings"].items()}


def app_settings() -> dict[str, Any]:
    """Every app setting of the function app, evaluated with the default parameters."""
    scope = main_scope().enter_module("functionApp")
    site = body(scope.file.resources["site"])
    loop = site["properties"]["siteConfig"]["appSettings"]
    # The settings are a for-loop over union(contractSettings, platformSettings): check that shape, so a
    # third source of settings added in the template cannot escape these tests.
    union = loop["loop_type"]["detail"]["array_name"]["function"]["parameters"]["arg_1"]["function"]
    assert union["type"] == "union"
    assert sorted(union["parameters"].values()) == ["contractSettings", "platformSettings"]
    contract = evaluate("contractSettings", scope)
    platform = evaluate("platformSettings", scope)
    assert not set(contract) & set(platform), "a setting is defined twice"
    return {**contract, **platform}


def test_every_bicep_file_parses() -> None:
    files = all_files()
    assert {f.relpath for f in files} >= {"main.bicep", "eventgrid.bicep", "modules/functionapp.bicep"}
    for file in files:
        assert file.doc.get("resources") or file.doc.get("modules"), f"{file.relpath} parsed empty"


def test_app_settings_cover_every_variable_the_code_reads() -> None:
    settings = app_settings()
    unexplained_exclusions = set(NOT_SET_IN_AZURE) - set(SETTINGS_READ)
    assert not unexplained_exclusions, f"excluded but no longer read by the code: {unexplained_exclusions}"
    missing = [name for name in SETTINGS_READ if name not in settings and name not in NOT_SET_IN_AZURE]
    assert not missing, f"rollout/settings.py reads {missing} but the function app does not set them"
    deliberately_unset = [name for name in NOT_SET_IN_AZURE if name in settings]
    assert not deliberately_unset, f"{deliberately_unset} must not be set in Azure: {NOT_SET_IN_AZURE}"
    # Settings the Functions platform reads come from tests/data/azure-app-settings.json (transcribed from the
    # documentation); anything else unknown is a typo. tests/infra/test_setting_names.py tests the check.
    unknown = setting_name_problems(settings, set(SETTINGS_READ) | set(READ_OUTSIDE_SETTINGS_PY), binding_connections())
    assert not unknown, "app settings nobody reads (typo?):\n" + "\n".join(unknown)


def test_identity_connections_point_at_the_created_account_endpoints() -> None:
    settings = app_settings()
    assert settings["ReleaseStorage__blobServiceUri"] == Expr("account.properties.primaryEndpoints.blob")
    assert settings["ReleaseStorage__queueServiceUri"] == Expr("storage.properties.primaryEndpoints.queue")
    assert settings["StateStorage__tableServiceUri"] == Expr("account.properties.primaryEndpoints.table")
    assert settings["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"] == "Authorization=AAD"
    # The identity forms, and no value anywhere that looks like a key or a connection string.
    for name, value in settings.items():
        assert not (isinstance(value, str) and re.search(r"AccountKey=|SharedAccessSignature=", value)), name


def test_bicep_policy_defaults_give_the_same_settings_as_the_code_defaults() -> None:
    """A knob whose Bicep default drifted from rollout/policy.py changes the loaded Settings."""
    settings = app_settings()
    literal = {name: value for name, value in settings.items() if isinstance(value, str)}
    knobs = {name for name in literal if name.isupper() and name not in REQUIRED_FOR_LOADING}
    assert {"CANARY_COUNT", "BAKE_SECONDS", "MAX_UNAVAILABLE", "PROBE_TIMEOUT_SECONDS"} <= knobs
    from_bicep = load_settings({**REQUIRED_FOR_LOADING, **{name: literal[name] for name in knobs}})
    from_code = load_settings(REQUIRED_FOR_LOADING)
    # arm_endpoint is environment().resourceManager in Bicep (not literal); everything else must match.
    assert from_bicep == from_code
    # The timer's schedule is read by the Functions host, not by load_settings: compared on its own.
    assert literal["ROLLOUT_TICK_SCHEDULE"] == DEFAULT_TICK_SCHEDULE


@functools.cache
def _function_bindings() -> dict[str, list[dict[str, str]]]:
    """function name -> its bindings, as the Functions worker indexes the real function_app.py."""
    import function_app
    from emulator.appindex import functions_of

    return {
        fn.get_function_name(): [
            {k: str(getattr(v, "value", v)) for k, v in b.get_dict_repr().items()} for b in fn.get_bindings()
        ]
        for fn in functions_of(function_app.app)
    }


def _blob_trigger_from_function_app() -> dict[str, str]:
    triggers = [
        {"function": name, **binding}
        for name, bindings in _function_bindings().items()
        for binding in bindings
        if binding["type"] == "blobTrigger"
    ]
    assert len(triggers) == 1, f"expected exactly one blob trigger, found {triggers}"
    return triggers[0]


def _setting_references(path: str) -> list[str]:
    return re.findall(r"%([A-Za-z0-9_]+)%", path)


def _check_blob_trigger_against_bicep(trigger: dict[str, str]) -> None:
    settings = app_settings()
    # The connection is identity-based: <connection>__blobServiceUri (+ queue endpoint for the trigger).
    assert f"{trigger['connection']}__blobServiceUri" in settings
    assert f"{trigger['connection']}__queueServiceUri" in settings
    assert trigger["source"] == "EventGrid"
    # path "%RELEASE_CONTAINER%/{name}": the setting it names holds the container the template creates.
    (container_setting,) = _setting_references(trigger["path"])
    container = settings[container_setting]
    scope = main_scope().enter_module("storage")
    created = evaluate(body(scope.file.resources["releaseContainer"])["name"], scope)
    assert container == created == "init"

    # The Event Grid subscription (eventgrid.bicep, deployed by deploy.sh) filters on that container and
    # delivers to this function's blobs-extension webhook.
    eventgrid = Scope(load(str(INFRA / "eventgrid.bicep")))
    sub = body(eventgrid.file.resources["releaseUploaded"])["properties"]
    assert evaluate(sub["filter"]["subjectBeginsWith"], eventgrid) == (
        f"/blobServices/default/containers/{container}/blobs/"
    )
    assert evaluate(sub["filter"]["includedEventTypes"], eventgrid) == ["Microsoft.Storage.BlobCreated"]
    url = evaluate(sub["destination"]["properties"]["endpointUrl"], eventgrid)
    assert f"/runtime/webhooks/blobs?functionName=Host.Functions.{trigger['function']}&code=" in url
    # The post-publish step (deploy.sh and the azd hook both run it) passes the container main.bicep
    # created, not eventgrid.bicep's default; tests/infra/test_deploy_script.py runs it.
    subscribe = (INFRA / "scripts" / "subscribe-events.sh").read_text()
    assert re.search(r"releaseContainerName=\"?\$", subscribe), "subscribe-events.sh must pass releaseContainerName"


def test_blob_trigger_contract_matches_bicep() -> None:
    _check_blob_trigger_against_bicep(CONTRACT_BLOB_TRIGGER)


def test_function_app_blob_trigger_matches_bicep() -> None:
    trigger = _blob_trigger_from_function_app()
    _check_blob_trigger_against_bicep(trigger)


def test_every_setting_a_binding_names_is_set() -> None:
    """%NAME% in any binding (timer schedule, blob path) must be an app setting."""
    settings = app_settings()
    referenced = 0
    for function, bindings in _function_bindings().items():
        for binding in bindings:
            for value in binding.values():
                for name in _setting_references(value):
                    referenced += 1
                    assert name in settings, f"{function} uses %{name}% but it is not set"
    assert referenced >= 2  # at least the blob path's container and the timer's schedule


def _role_assignments() -> set[tuple[str, str, str]]:
    """(role id, scope resource type, principal source) of every role assignment main.bicep deploys."""
    found: set[tuple[str, str, str]] = set()
    scopes = [main_scope()] + [main_scope().enter_module(symbol) for symbol in main().modules]
    for scope in scopes:
        for name, entry in scope.file.resources_of_type("Microsoft.Authorization/roleAssignments").items():
            config = body(entry)
            where = f"{scope.file.relpath}:{name}"
            if "scope" in config:
                target_type = scope.file.resources[config["scope"]]["type"]
            elif re.search(r"^targetScope = 'subscription'$", (INFRA / scope.file.relpath).read_text(), re.M):
                assert where in SUBSCRIPTION_WIDE_ASSIGNMENTS, f"{where} has no scope: the whole subscription"
                target_type = SUBSCRIPTION
            else:
                assert where in RESOURCE_GROUP_WIDE_ASSIGNMENTS, f"{where} has no scope: the whole resource group"
                target_type = RESOURCE_GROUP
            role_fn = config["properties"]["roleDefinitionId"]["function"]
            assert role_fn["type"] == "subscription_resource_id", where
            role = evaluate(role_fn["parameters"]["resource_name_1"], scope)
            principal = resolve_principal(config["properties"]["principalId"], scope)
            assert config["properties"]["principalType"] in ("ServicePrincipal", "uploaderPrincipalType"), where
            found.add((role, target_type, principal))
    return found


def test_role_assignments_are_exactly_the_least_privilege_set() -> None:
    assert _role_assignments() == EXPECTED_ROLE_ASSIGNMENTS


def test_no_role_assignment_outside_the_deployed_modules() -> None:
    deployed = {"main.bicep"} | {main().module_file(s).relpath for s in main().modules}
    for file in all_files():
        if file.resources_of_type("Microsoft.Authorization/roleAssignments"):
            assert file.relpath in deployed, f"{file.relpath} assigns roles but main.bicep never deploys it"


# ---- the scale sets the app may steer: VMSS_NAME and targetScaleSets (main.bicep) ----

THIS_SUBSCRIPTION = "00000000-0000-0000-0000-0000000000aa"  # subscription().subscriptionId of the deployment
OTHER_SUBSCRIPTION = "00000000-0000-0000-0000-0000000000bb"
DEPLOYMENT_GROUP = "canary-rg"  # resourceGroup().name of the deployment
RG_FUNCTION_ARGS = ("resource_group_name", "subscription_id")  # pycep's names of resourceGroup()'s arguments


def _scale_set_id(subscription: str, group: str, name: str) -> str:
    return f"/subscriptions/{subscription}/resourceGroups/{group}/providers/{SCALE_SET}/{name}"


def _eval_targets(expr: Any, params: dict[str, str], local: dict[str, Any]) -> Any:
    """The value of one of main.bicep's target expressions for the given parameters (others at their defaults):
    just the functions and operators those expressions use, with ARM's meaning (case-sensitive `==`, `indexOf`
    and `contains`; `split` keeps empty pieces)."""
    file = main()
    if expr is None or isinstance(expr, bool | int):
        return expr
    if isinstance(expr, list):
        return [_eval_targets(item, params, local) for item in expr]
    if isinstance(expr, str):
        if expr in local:
            return local[expr]
        if expr in file.params:
            if expr in params:
                return params[expr]
            return _eval_targets(file.params[expr].get("default"), params, local)
        if expr in file.variables:
            return _eval_targets(file.variables[expr]["value"], params, local)
        if "${" in expr:

            def substitute(match: re.Match[str]) -> str:
                head, *attributes = match[1].split(".")
                value = _eval_targets(head, params, local)
                for attribute in attributes:
                    value = value[attribute]
                return str(value)

            return re.sub(r"\$\{([^}]+)\}", substitute, expr)
        return expr
    if "loop_type" in expr:
        detail = expr["loop_type"]["detail"]
        values = []
        for index, item in enumerate(_eval_targets(detail["array_name"], params, local)):
            inner = {**local, detail["item_name"]: item}
            if "index_name" in detail:
                inner[detail["index_name"]] = index
            values.append(_eval_targets(expr["config"], params, inner))
        return values
    if "function" in expr:
        fn = expr["function"]
        args = [_eval_targets(a, params, local) for a in fn["parameters"].values() if a is not None]
        kind = fn["type"]
        if kind == "subscription" and not args:
            return {"subscriptionId": THIS_SUBSCRIPTION}
        if kind == "resource_group" and not args:
            return {"name": DEPLOYMENT_GROUP}
        functions: dict[str, Any] = {
            "split": lambda text, sep: text.split(sep),
            "empty": lambda value: not value,
            "last": lambda values: values[-1],
            "concat": lambda *lists: [item for values in lists for item in values],
            "to_lower": lambda text: text.lower(),
            "index_of": lambda values, item: values.index(item) if item in values else -1,
            "contains": lambda values, item: item in values,
            "flatten": lambda lists: [item for values in lists for item in values],
        }
        return functions[kind](*args)
    if "operator" in expr:
        op = expr["operator"]
        operands = op["operands"]
        kind = op["type"]
        if kind == "property_accessor":
            assert isinstance(operands["operand_2"], str), operands
            return _eval_targets(operands["operand_1"], params, local)[operands["operand_2"]]
        if kind == "conditional":
            branch = "true_value" if _eval_targets(operands["condition"], params, local) else "false_value"
            return _eval_targets(operands[branch], params, local)
        values = [_eval_targets(v, params, local) for v in operands.values()]
        operators: dict[str, Any] = {
            "index_accessor": lambda values, index: values[index],
            "equals": lambda a, b: a == b,
            "and": lambda a, b: a and b,
            "not": lambda a: not a,
        }
        return operators[kind](*values)
    return {unquote(k): _eval_targets(v, params, local) for k, v in expr.items()}


def _target_deployments(**params: str) -> dict[str, list[dict[str, Any]]]:
    """Per target module of main.bicep (targetAccess, targetGroupAccess): each copy its loop deploys, with the
    subscription and resource group it is deployed to, its deployment name and the parameters it gets."""
    deployments: dict[str, list[dict[str, Any]]] = {}
    for symbol in ("targetAccess", "targetGroupAccess"):
        config = main().modules[symbol]["config"]
        assert config["condition"] is None, f"{symbol}: a conditional loop (the offline parser cannot read it)"
        detail = config["loop_type"]["detail"]
        copies = []
        for index, item in enumerate(_eval_targets(detail["array_name"], params, {})):
            local = {detail["item_name"]: item, detail["index_name"]: index}
            call = config["config"]
            scope_fn = call["scope"]["function"]
            assert scope_fn["type"] == "resource_group", symbol
            copies.append(
                {
                    "subscription": _eval_targets(scope_fn["parameters"]["subscription_id"], params, local),
                    "resourceGroup": _eval_targets(scope_fn["parameters"]["resource_group_name"], params, local),
                    "deployment": _eval_targets(call["name"], params, local),
                    "params": {
                        name: _eval_targets(value, params, local)
                        for name, value in call["params"].items()
                        if name != "principalId"
                    },
                }
            )
        deployments[symbol] = copies
    return deployments


def _scale_set_grants(deployments: dict[str, list[dict[str, Any]]]) -> list[tuple[str, str, str]]:
    return [(d["subscription"], d["resourceGroup"], d["params"]["scaleSetName"]) for d in deployments["targetAccess"]]


def _group_grants(deployments: dict[str, list[dict[str, Any]]]) -> list[tuple[str, str]]:
    assert all(d["params"] == {} for d in deployments["targetGroupAccess"])
    return [(d["subscription"], d["resourceGroup"]) for d in deployments["targetGroupAccess"]]


def test_by_default_only_the_vmss_scale_set_gets_the_role_on_itself() -> None:
    deployments = _target_deployments()
    assert _scale_set_grants(deployments) == [(THIS_SUBSCRIPTION, DEPLOYMENT_GROUP, "canary-vmss")]
    assert _group_grants(deployments) == []
    # main.parameters.json passes the unset variables as empty strings (deploy.sh and azd): the same.
    rendered = {"targetScaleSets": "", "scaleSetOrchestration": "", "targetResourceGroup": "", "scaleSetName": "web"}
    assert _scale_set_grants(_target_deployments(**rendered)) == [(THIS_SUBSCRIPTION, DEPLOYMENT_GROUP, "web")]
    # The VMSS_* target is the one the app steers: same expressions as AZURE_SUBSCRIPTION_ID, VMSS_RESOURCE_GROUP
    # and VMSS_NAME.
    settings = contract_settings_raw()
    vmss = main().variables["vmssTarget"]["value"]
    assert (vmss["resourceGroup"], vmss["scaleSetName"]) == (settings["VMSS_RESOURCE_GROUP"], settings["VMSS_NAME"])
    assert vmss["subscription"] == settings["AZURE_SUBSCRIPTION_ID"]


def test_vm_contributor_lands_on_the_scale_set_the_module_is_given() -> None:
    target = main_scope().enter_module("targetAccess")
    scale_set = target.file.resources["scaleSet"]
    assert scale_set["type"] == SCALE_SET and scale_set["existing"]
    assert scale_set["config"]["name"] == "scaleSetName"
    assert body(target.file.resources["vmContributor"])["scope"] == "scaleSet"


def _checked_list(entries: list[str]) -> str:
    """The comma-separated list, after the check deploy.sh and the azd hook run (it must accept it)."""
    listed = ",".join(entries)
    proc = subprocess.run(
        ["sh", str(INFRA / "scripts" / "check-targets.sh"), listed], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    return listed


WEB = _scale_set_id(THIS_SUBSCRIPTION, "rg-web", "web-eu")
FLEX = _scale_set_id(THIS_SUBSCRIPTION, "rg-flex", "flex-eu")
FAR_UNIFORM = _scale_set_id(OTHER_SUBSCRIPTION, "rg-us", "web-us")
FAR_FLEX = _scale_set_id(OTHER_SUBSCRIPTION, "rg-us-flex", "flex-us")


@pytest.mark.parametrize(
    ("entries", "params", "scale_sets", "groups"),
    [
        pytest.param(
            [f"{WEB}:Uniform"],
            {},
            [(THIS_SUBSCRIPTION, DEPLOYMENT_GROUP, "canary-vmss"), (THIS_SUBSCRIPTION, "rg-web", "web-eu")],
            [],
            id="uniform-on-the-scale-set",
        ),
        pytest.param(
            [f"{FLEX}:Flexible"],
            {},
            [(THIS_SUBSCRIPTION, DEPLOYMENT_GROUP, "canary-vmss")],
            [(THIS_SUBSCRIPTION, "rg-flex")],
            id="flexible-on-its-resource-group",
        ),
        pytest.param(
            [f"{FAR_UNIFORM}:Uniform", f"{FAR_FLEX}:Flexible"],
            {},
            [(THIS_SUBSCRIPTION, DEPLOYMENT_GROUP, "canary-vmss"), (OTHER_SUBSCRIPTION, "rg-us", "web-us")],
            [(OTHER_SUBSCRIPTION, "rg-us-flex")],
            id="another-subscription-through-a-module-deployed-there",
        ),
        pytest.param(
            [_scale_set_id(THIS_SUBSCRIPTION, DEPLOYMENT_GROUP.upper(), "CANARY-VMSS") + ":Uniform", f"{WEB}:Uniform"],
            {},
            [(THIS_SUBSCRIPTION, DEPLOYMENT_GROUP, "canary-vmss"), (THIS_SUBSCRIPTION, "rg-web", "web-eu")],
            [],
            id="vmss-listed-again-in-another-case-is-granted-once",
        ),
        pytest.param(
            [f"{FLEX}:Flexible", _scale_set_id(THIS_SUBSCRIPTION, "RG-FLEX", "flex-eu-2") + ":Flexible"],
            {},
            [(THIS_SUBSCRIPTION, DEPLOYMENT_GROUP, "canary-vmss")],
            [(THIS_SUBSCRIPTION, "rg-flex")],
            id="two-flexible-in-one-resource-group-one-assignment",
        ),
        pytest.param(
            [_scale_set_id(THIS_SUBSCRIPTION, "rg-flex", "uniform-beside") + ":Uniform", f"{FLEX}:Flexible"],
            {},
            [(THIS_SUBSCRIPTION, DEPLOYMENT_GROUP, "canary-vmss")],
            [(THIS_SUBSCRIPTION, "rg-flex")],
            id="uniform-in-a-flexible-resource-group-is-covered-by-it",
        ),
        pytest.param(
            [f"{WEB}:Uniform"],
            {"scaleSetOrchestration": "Flexible"},
            [(THIS_SUBSCRIPTION, "rg-web", "web-eu")],
            [(THIS_SUBSCRIPTION, DEPLOYMENT_GROUP)],
            id="flexible-vmss-target",
        ),
    ],
)
def test_each_target_gets_the_role_at_its_narrowest_scope(
    entries: list[str],
    params: dict[str, str],
    scale_sets: list[tuple[str, str, str]],
    groups: list[tuple[str, str]],
) -> None:
    deployments = _target_deployments(targetScaleSets=_checked_list(entries), **params)
    assert _scale_set_grants(deployments) == scale_sets
    assert _group_grants(deployments) == groups
    # Nested deployment names stay unique within each loop (two copies may land in one resource group).
    for copies in deployments.values():
        names = [d["deployment"] for d in copies]
        assert len(set(names)) == len(names) and all(len(name) <= 64 for name in names)


def test_target_modules_assign_under_deterministic_names() -> None:
    """A redeployment must find the same assignment (a new name for the same role, principal and scope would be
    refused with RoleAssignmentExists): guid() of the scope, the principal and the role, nothing random."""
    for symbol, scope_id in (("targetAccess", "scaleSet.id"), ("targetGroupAccess", "resourceGroup().id")):
        module = main_scope().enter_module(symbol)
        (assignment,) = module.file.resources_of_type("Microsoft.Authorization/roleAssignments").values()
        name = body(assignment)["name"]["function"]
        assert name["type"] == "guid", symbol
        scope_arg, principal_arg, role_arg = name["parameters"].values()
        if scope_id == "scaleSet.id":
            assert accessor_path(scope_arg) == scope_id
        else:  # resourceGroup().id: the module's resource group
            this_group = {"function": {"type": "resource_group", "parameters": dict.fromkeys(RG_FUNCTION_ARGS)}}
            assert scope_arg["operator"]["operands"] == {"operand_1": this_group, "operand_2": "id"}
        assert principal_arg == "principalId"
        assert evaluate(role_arg, module) == VIRTUAL_MACHINE_CONTRIBUTOR
        assert resolve_principal(principal_arg, module) == FUNCTION_IDENTITY


def test_scale_set_reader_is_on_the_release_container() -> None:
    access = main_scope().enter_module("releaseAccess")
    container = access.file.resources["releaseContainer"]
    assert evaluate(container["config"]["name"], access) == app_settings()["RELEASE_CONTAINER"]
    assert "scaleSetReader" in access.file.resources


def _created(type_: str) -> list[tuple[BicepFile, dict[str, Any]]]:
    return [
        (file, body(res))
        for file in all_files()
        for res in file.resources_of_type(type_, include_existing=False).values()
    ]


def test_storage_is_private_tls12_keyless_https_only() -> None:
    accounts = _created(ACCOUNT)
    assert accounts, "no storage account found"
    for file, account in accounts:
        props = account["properties"]
        assert props["allowBlobPublicAccess"] is False, file.relpath
        assert props["minimumTlsVersion"] == "TLS1_2", file.relpath
        assert props["allowSharedKeyAccess"] is False, file.relpath
        assert props["supportsHttpsTrafficOnly"] is True, file.relpath
    for file, container in _created(CONTAINER):
        assert container["properties"]["publicAccess"] == "None", file.relpath


def test_function_app_is_https_only_tls12_with_system_identity_on_flex_python_311() -> None:
    sites = _created("Microsoft.Web/sites")
    assert len(sites) == 1
    file, site = sites[0]
    props = site["properties"]
    assert props["httpsOnly"] is True
    assert props["siteConfig"]["minTlsVersion"] == "1.2"
    assert props["siteConfig"]["ftpsState"] == "Disabled"
    assert site["identity"]["type"] == "SystemAssigned"
    config = props["functionAppConfig"]
    assert config["runtime"] == {"name": "python", "version": "3.11"}
    assert config["deployment"]["storage"]["authentication"] == {"type": "SystemAssignedIdentity"}
    plan = body(file.resources["plan"])
    assert plan["sku"] == {"name": "FC1", "tier": "FlexConsumption"}
    # Flex Consumption rejects these; the runtime comes from functionAppConfig.
    assert not {"FUNCTIONS_WORKER_RUNTIME", "FUNCTIONS_EXTENSION_VERSION"} & set(app_settings())


def test_demo_scale_set_is_manual_uniform_with_identity_and_nginx_load_balancing() -> None:
    demo = main_scope().enter_module("demo")
    vmss = body(demo.file.resources["scaleSet"])
    assert vmss["properties"]["upgradePolicy"] == {"mode": "Manual"}
    assert vmss["properties"]["orchestrationMode"] == "Uniform"
    assert vmss["identity"] == {"type": "SystemAssigned"}
    assert evaluate(vmss["sku"]["capacity"], demo) == 3
    assert vmss["properties"]["virtualMachineProfile"]["storageProfile"]["imageReference"]["publisher"] == ("Canonical")
    lb = evaluate(body(demo.file.resources["loadBalancer"])["properties"], demo)
    (probe,) = lb["probes"]
    (rule,) = lb["loadBalancingRules"]
    assert (probe["name"], probe["properties"]["protocol"], probe["properties"]["port"]) == ("nginx", "Http", 80)
    assert (rule["properties"]["frontendPort"], rule["properties"]["backendPort"]) == (80, 80)
    ext_scope = main_scope().enter_module("demoExtension")
    ext = evaluate(body(ext_scope.file.resources["customScript"])["properties"], ext_scope)
    assert ext["type"] == "CustomScript" and ext["protectedSettings"] == {"managedIdentity": {}}
    # the release container's URL (blob endpoint, known only in Azure) + the v0 script
    assert ext["settings"]["fileUris"] == ["${storage.outputs.blobEndpoint}init/install_nginx.v0.sh"]
    assert (INFRA / "scripts" / "install_nginx.v0.sh").exists()


def _eval_image_scope(expr: Any, image_reader_scope: str) -> Any:
    """The value of one of main.bicep's imageAccess expressions for a given imageReaderScope: just the
    functions and operators those expressions use (split, index, length, >, ?:, empty)."""
    if isinstance(expr, int):
        return expr
    if isinstance(expr, str):
        if expr == "imageReaderScope":
            return image_reader_scope
        if expr == "imageScopeSegments":
            return _eval_image_scope(main().variables["imageScopeSegments"]["value"], image_reader_scope)
        return expr
    if "function" in expr:
        fn = expr["function"]
        args = [_eval_image_scope(a, image_reader_scope) for a in fn["parameters"].values()]
        if fn["type"] == "split":
            return args[0].split(args[1])
        if fn["type"] == "length":
            return len(args[0])
        if fn["type"] == "empty":
            return not args[0]
        raise AssertionError(f"unexpected function {fn['type']}")
    op = expr["operator"]
    operands = op["operands"]
    if op["type"] == "conditional":
        branch = "true_value" if _eval_image_scope(operands["condition"], image_reader_scope) else "false_value"
        return _eval_image_scope(operands[branch], image_reader_scope)
    if op["type"] == "property_accessor" and accessor_path(expr) is None:
        return "/subscriptions/THIS/resourceGroups/THIS"  # resourceGroup().id: only reached when the scope is empty
    values = [_eval_image_scope(v, image_reader_scope) for v in operands.values()]
    if op["type"] == "index_accessor":
        return values[0][values[1]]
    if op["type"] == "greater_than":
        return values[0] > values[1]
    raise AssertionError(f"unexpected operator {op['type']}")


@pytest.mark.parametrize(
    ("image_reader_scope", "subscription", "group", "gallery"),
    [
        (f"/subscriptions/s1/resourceGroups/images/providers/{GALLERY}/fleet", "s1", "images", "fleet"),
        ("/subscriptions/s1/resourceGroups/images", "s1", "images", ""),
        ("/subscriptions/s1/resourceGroups/images/", "s1", "images", ""),
    ],
)
def test_image_reader_lands_on_the_gallery_or_resource_group_named(
    image_reader_scope: str, subscription: str, group: str, gallery: str
) -> None:
    call = main().modules["imageAccess"]
    # Optional: deployed only when imageReaderScope is set.
    condition = call["config"]["condition"]["operator"]
    assert condition["type"] == "not"
    assert condition["operands"]["bool_value"]["function"] == {
        "type": "empty",
        "parameters": {"item_to_test": "imageReaderScope"},
    }
    config = body(call)
    scope_fn = config["scope"]["function"]
    assert scope_fn["type"] == "resource_group"
    assert _eval_image_scope(scope_fn["parameters"]["subscription_id"], image_reader_scope) == subscription
    assert _eval_image_scope(scope_fn["parameters"]["resource_group_name"], image_reader_scope) == group
    assert _eval_image_scope(config["params"]["galleryName"], image_reader_scope) == gallery
    # In the module: the gallery assignment when a gallery is named, the resource group one otherwise.
    access = main_scope().enter_module("imageAccess")
    gallery_reader = access.file.resources["galleryReader"]["config"]["condition"]
    group_reader = access.file.resources["resourceGroupReader"]["config"]["condition"]
    assert gallery_reader == {"operator": {"type": "not", "operands": {"bool_value": group_reader}}}
    assert group_reader == {"function": {"type": "empty", "parameters": {"item_to_test": "galleryName"}}}
    assert access.file.resources["gallery"]["existing"]


def _auth_settings() -> tuple[dict[str, Any], dict[str, Any]]:
    app = main_scope().enter_module("functionApp")
    (name, entry), *others = app.file.resources_of_type("Microsoft.Web/sites/config", include_existing=False).items()
    assert not others, "one sites/config resource expected (authsettingsV2)"
    return entry, evaluate(body(entry), app)


def test_entra_authentication_is_optional_and_requires_a_validated_principal() -> None:
    entry, auth = _auth_settings()
    # Only with an app registration (entraClientId, default empty = off).
    is_empty = {"function": {"type": "empty", "parameters": {"item_to_test": "entraClientId"}}}
    assert entry["config"]["condition"] == {"operator": {"type": "not", "operands": {"bool_value": is_empty}}}
    assert evaluate("entraClientId", main_scope()) == ""
    assert entry["api_version"] == "2024-04-01"
    assert auth["name"] == "authsettingsV2"
    props = auth["properties"]
    assert props["platform"]["enabled"] is True
    validation = props["globalValidation"]
    assert validation["requireAuthentication"] is True
    assert validation["unauthenticatedClientAction"] == "Return401"
    aad = props["identityProviders"]["azureActiveDirectory"]
    assert aad["enabled"] is True
    # Every identity provider but Entra stays off (absent).
    assert set(props["identityProviders"]) == {"azureActiveDirectory"}
    registration = body(entry)["properties"]["identityProviders"]["azureActiveDirectory"]["registration"]
    assert registration["clientId"] == "entraClientId"
    assert registration["openIdIssuer"] == "${environment().authentication.loginEndpoint}${entraTenantId}/v2.0"
    assert body(entry)["properties"]["identityProviders"]["azureActiveDirectory"]["validation"] == {
        "allowedAudiences": ["api://${entraClientId}"]
    }
    # main.bicep passes its parameters through, tenant defaulting to the deployment's tenant.
    params = body(main().modules["functionApp"])["params"]
    assert (params["entraClientId"], params["entraTenantId"]) == ("entraClientId", "entraTenantId")
    tenant_default = main().params["entraTenantId"]["default"]["operator"]
    assert tenant_default["type"] == "property_accessor"
    assert tenant_default["operands"] == {"operand_1": {"function": {"type": "tenant"}}, "operand_2": "tenantId"}


def test_blob_webhook_stays_reachable_with_authentication_on() -> None:
    """Event Grid delivers to /runtime/webhooks/blobs with the blobs_extension key and no Entra token."""
    _, auth = _auth_settings()
    excluded = auth["properties"]["globalValidation"]["excludedPaths"]
    eventgrid = Scope(load(str(INFRA / "eventgrid.bicep")))
    url = evaluate(body(eventgrid.file.resources["releaseUploaded"])["properties"]["destination"], eventgrid)[
        "properties"
    ]["endpointUrl"]
    path = re.sub(r"^https://[^/]+", "", url).split("?")[0]
    assert excluded == [path] == ["/runtime/webhooks/blobs"]


def test_http_auth_setting_follows_the_entra_switch() -> None:
    settings = app_settings()
    assert "HTTP_AUTH" in settings
    raw = load(str(INFRA / "modules" / "functionapp.bicep")).variables["platformSettings"]["value"]["HTTP_AUTH"]
    assert raw == {
        "operator": {
            "type": "conditional",
            "operands": {
                "condition": {"function": {"type": "empty", "parameters": {"item_to_test": "entraClientId"}}},
                "true_value": "function-key",
                "false_value": "entra",
            },
        }
    }


def test_function_app_queue_trigger_matches_bicep() -> None:
    """The tick queue's trigger: an identity connection to the account's queue endpoint, the queue the
    template creates (and its `-poison` queue), and the role that lets the app send, read and poison."""
    triggers = [
        {"function": name, **binding}
        for name, bindings in _function_bindings().items()
        for binding in bindings
        if binding["type"] == "queueTrigger"
    ]
    assert [(t["function"], t["connection"], t["queueName"]) for t in triggers] == [
        ("advance_target", "TickQueue", "%TICK_QUEUE%"),
        ("deliver_notification", "TickQueue", "%NOTIFY_QUEUE%"),
    ]
    settings = app_settings()
    assert settings["TickQueue__queueServiceUri"] == Expr("account.properties.primaryEndpoints.queue")
    (queue_setting,) = _setting_references(triggers[0]["queueName"])
    scope = main_scope().enter_module("storage")
    queues = scope.file.resources["tickQueues"]["config"]
    assert evaluate(queues["loop_type"]["detail"]["array_name"], scope) == ["rollout-ticks", "rollout-ticks-poison"]
    assert settings[queue_setting] == "rollout-ticks"
    # The notification queue: on the same connection, created with its dead-letter queue.
    (notify_setting,) = _setting_references(triggers[1]["queueName"])
    notify_queues = scope.file.resources["notifyQueues"]["config"]
    assert evaluate(notify_queues["loop_type"]["detail"]["array_name"], scope) == [
        "rollout-notifications",
        "rollout-notifications-poison",
    ]
    assert settings[notify_setting] == "rollout-notifications"
    assert (STORAGE_QUEUE_DATA_CONTRIBUTOR, ACCOUNT, FUNCTION_IDENTITY) in _role_assignments()
