"""Resource names in infra/: every name that must be unique across Azure gets a uniqueString suffix and
stays within its length limit.

Source for scopes and lengths: "Naming rules and restrictions for Azure resources",
learn.microsoft.com/azure/azure-resource-manager/management/resource-name-rules (MicrosoftDocs/azure-docs,
articles/azure-resource-manager/management/resource-name-rules.md). "global" in its Scope column means
the name is part of a public DNS name shared by every customer (`<name>.azurewebsites.net`,
`<name>.blob.core.windows.net`), so a fixed name collides with anybody else's deployment.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.infra.bicep_model import INFRA, BicepFile, Scope, all_files, body, load

pytestmark = pytest.mark.infra

# Resource types whose names are global (Scope "global" on the page). Types that infra/ does not use are
# listed too, so adding one later is caught by the same test.
GLOBAL_NAME_TYPES = {
    "Microsoft.Storage/storageAccounts": 24,  # 3-24, lowercase letters and numbers
    "Microsoft.Web/sites": 60,  # 2-60 ("global or per domain"; <name>.azurewebsites.net)
    "Microsoft.KeyVault/vaults": 24,
    "Microsoft.ContainerRegistry/registries": 50,
    "Microsoft.ApiManagement/service": 50,
    "Microsoft.Cache/Redis": 63,
    "Microsoft.DocumentDB/databaseAccounts": 44,
    "Microsoft.EventHub/namespaces": 50,
    "Microsoft.ServiceBus/namespaces": 50,
    "Microsoft.Sql/servers": 63,
    "Microsoft.SignalRService/signalR": 63,
    "Microsoft.Cdn/profiles/endpoints": 50,
    "Microsoft.Network/frontDoors": 64,
    "Microsoft.Network/trafficmanagerprofiles": 63,
}

# Every other type infra/ creates, with its scope on the page: a type missing from both tables fails the
# test, so whoever adds a resource has to look its scope up.
NON_GLOBAL_NAME_TYPES = {
    "Microsoft.Web/serverfarms": "resource group",
    "Microsoft.Web/sites/config": "site (fixed name authsettingsV2)",
    "Microsoft.Web/sites/basicPublishingCredentialsPolicies": "site (fixed names scm, ftp)",
    "Microsoft.OperationalInsights/workspaces": "resource group",
    "Microsoft.Insights/components": "resource group",
    # Not on the page; a system topic belongs to its source resource and lives in a resource group like
    # the other Event Grid topics (topics: region, eventSubscriptions: resource group).
    "Microsoft.EventGrid/systemTopics": "resource group",
    "Microsoft.EventGrid/topics": "region (the resource-name-rules page: topics are unique per region)",
    "Microsoft.EventGrid/systemTopics/eventSubscriptions": "system topic",
    "Microsoft.Storage/storageAccounts/blobServices": "storage account (must be default)",
    "Microsoft.Storage/storageAccounts/blobServices/containers": "storage account",
    "Microsoft.Storage/storageAccounts/tableServices": "storage account (must be default)",
    "Microsoft.Storage/storageAccounts/tableServices/tables": "storage account",
    "Microsoft.Storage/storageAccounts/queueServices": "storage account (must be default)",
    "Microsoft.Storage/storageAccounts/queueServices/queues": "storage account",
    "Microsoft.Authorization/roleAssignments": "scope of assignment (a guid)",
    "Microsoft.Compute/virtualMachineScaleSets": "resource group",
    "Microsoft.Compute/virtualMachineScaleSets/extensions": "scale set",
    "Microsoft.Network/networkSecurityGroups": "resource group",
    "Microsoft.Network/virtualNetworks": "resource group",
    "Microsoft.Network/publicIPAddresses": "resource group",
    "Microsoft.Network/loadBalancers": "resource group",
}

UNIQUE_STRING_LENGTH = 13  # uniqueString() returns 13 characters


def _created_resources() -> list[tuple[BicepFile, str, dict[str, Any]]]:
    return [
        (file, symbol, entry)
        for file in all_files()
        for symbol, entry in file.resources.items()
        if not entry["existing"]
    ]


def _symbol_text(name: str, file: BicepFile, seen: frozenset[str] = frozenset()) -> str:
    """The source of a parameter's default or a variable's value, with what it references, as text."""
    if name in seen:
        return ""
    seen = seen | {name}
    if name in file.params:
        source: Any = file.params[name].get("default")
    elif name in file.variables:
        source = file.variables[name]["value"]
    else:
        return ""
    return _expr_text(source, file, seen)


def _expr_text(expr: Any, file: BicepFile, seen: frozenset[str] = frozenset()) -> str:
    text = json.dumps(expr)
    referenced = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", text)) | ({expr} if isinstance(expr, str) else set())
    return text + "".join(_symbol_text(ref, file, seen) for ref in referenced)


def _name_source(file: BicepFile, entry: dict[str, Any]) -> str:
    """The name expression of a resource and, transitively, what it is built from: across a module
    boundary too (a module parameter's value in every caller)."""
    name = body(entry)["name"]
    text = _expr_text(name, file)
    params = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", json.dumps(name)))
    if isinstance(name, str) and name in file.params:
        params.add(name)
    for caller in all_files():
        for module in caller.modules.values():
            if caller.path.parent.joinpath(module["detail"]["path"]).resolve() != file.path.resolve():
                continue
            for param, value in body(module).get("params", {}).items():
                if param in params:
                    text += _expr_text(value, caller)
    return text


def _max_length(expr: Any, scope: Scope) -> int:
    """Longest value a name expression can take: parameters at their @maxLength, uniqueString at 13."""
    if isinstance(expr, str):
        if expr in scope.file.params:
            if expr in scope.bindings:
                bound, caller = scope.bindings[expr]
                bound_max = _max_length(bound, caller)
                return min(bound_max, _declared_max(expr, scope.file) or bound_max)
            declared = _declared_max(expr, scope.file)
            assert declared is not None, f"parameter {expr} has no @maxLength: its names have no bound"
            return declared
        if expr in scope.file.variables:
            return _max_length(scope.file.variables[expr]["value"], scope)
        total = 0
        for literal, inner in re.findall(r"([^$]*)(?:\$\{((?:[^{}]|\{[^{}]*\})*)\})?", expr):
            total += len(literal)
            if inner:
                total += _inner_max(inner, scope)
        return total
    fn = expr["function"]
    if fn["type"] == "take":
        original, count = fn["parameters"].values()
        return min(_max_length(original, scope), int(count))
    raise AssertionError(f"cannot bound the length of {expr}")


def _inner_max(inner: str, scope: Scope) -> int:
    if inner.startswith("uniqueString("):
        return UNIQUE_STRING_LENGTH
    if re.fullmatch(r"replace\(([A-Za-z_][A-Za-z0-9_]*), '-', ''\)", inner):
        return _max_length(inner[len("replace(") : inner.index(",")], scope)
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", inner):
        return _max_length(inner, scope)
    raise AssertionError(f"cannot bound the length of ${{{inner}}}")


def _declared_max(param: str, file: BicepFile) -> int | None:
    for decorator in file.params[param].get("decorators", []):
        if decorator["type"] == "max_length":
            return int(decorator["argument"])
    return None


def test_every_created_resource_type_has_a_known_name_scope() -> None:
    created = {entry["type"] for _, _, entry in _created_resources()}
    assert {"Microsoft.Web/sites", "Microsoft.Storage/storageAccounts"} <= created
    unknown = created - set(GLOBAL_NAME_TYPES) - set(NON_GLOBAL_NAME_TYPES)
    assert not unknown, f"look up the name scope of {sorted(unknown)} on the resource-name-rules page"


def test_every_globally_named_resource_gets_a_unique_string() -> None:
    checked = []
    for file, symbol, entry in _created_resources():
        if entry["type"] not in GLOBAL_NAME_TYPES:
            continue
        source = _name_source(file, entry)
        assert "uniqueString(" in source or '"unique_string"' in source, (
            f"{file.relpath}:{symbol} ({entry['type']}) has a global name without uniqueString: {source}"
        )
        checked.append(entry["type"])
    assert sorted(checked) == ["Microsoft.Storage/storageAccounts", "Microsoft.Web/sites"]


def test_global_names_fit_their_length_limit_at_the_longest_prefix() -> None:
    main = Scope(load(str(INFRA / "main.bicep")))
    cases = {
        "Microsoft.Web/sites": (main.enter_module("functionApp"), "site"),
        "Microsoft.Storage/storageAccounts": (main.enter_module("storage"), "account"),
    }
    for type_, (scope, symbol) in cases.items():
        longest = _max_length(body(scope.file.resources[symbol])["name"], scope)
        assert longest <= GLOBAL_NAME_TYPES[type_], f"{type_} name can reach {longest} characters"
    # Functions derive the host ID from the first 32 characters of the app name (same page, Microsoft.Web
    # note): the unique part must fall inside them.
    app_scope = cases["Microsoft.Web/sites"][0]
    assert _max_length(body(app_scope.file.resources["site"])["name"], app_scope) <= 32


def test_public_dns_labels_are_unique_too() -> None:
    """A public IP's dnsSettings.domainNameLabel becomes `<label>.<region>.cloudapp.azure.com` ("The
    concatenation of the domain name label and the regionalized DNS zone make up the fully qualified domain
    name", Microsoft.Network publicIPAddresses in Azure/bicep-types-az): shared by every customer in the
    region, so a label needs a uniqueString as much as a global name."""
    ips = [(f, e) for f, _, e in _created_resources() if e["type"] == "Microsoft.Network/publicIPAddresses"]
    assert ips, "the demo's load balancer IP is expected"
    for file, entry in ips:
        label = body(entry).get("properties", {}).get("dnsSettings", {}).get("domainNameLabel")
        if label is not None:
            assert "uniqueString(" in _expr_text(label, file), f"{file.relpath}: fixed domainNameLabel {label}"
