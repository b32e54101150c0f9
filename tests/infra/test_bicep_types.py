"""Every resource in infra/ against the Bicep compiler's type definitions (tests/data/bicep-types/).

The checker is tests/infra/bicep_types.py; the snippets below show that each kind of mistake it claims
to find is reported (so the check on infra/ cannot pass by checking nothing), and that what it does not
evaluate (expressions) is left alone.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.infra.bicep_model import INFRA
from tests.infra.bicep_types import TYPES_ROOT, check_file, check_text, declarations, infra_files, parse

pytestmark = pytest.mark.infra

STORAGE = "Microsoft.Storage/storageAccounts@2023-05-01"

# A correct account, the base of most snippets.
ACCOUNT = f"""
param location string
resource account '{STORAGE}' = {{
  name: 'canarystore'
  location: location
  kind: 'StorageV2'
  sku: {{
    name: 'Standard_LRS'
  }}
  properties: {{
    minimumTlsVersion: 'TLS1_2'
    allowSharedKeyAccess: false
  }}
}}
"""


def findings(text: str) -> list[str]:
    return [str(f) for f in check_text(text)]


def only(text: str) -> str:
    found = findings(text)
    assert len(found) == 1, found
    return found[0]


def test_the_vendored_definitions_cover_every_type_version_infra_uses() -> None:
    assert (TYPES_ROOT / "README.md").is_file() and (TYPES_ROOT / "LICENSE").is_file()
    used = {
        (decl.type.split("/")[0].lower(), decl.api_version)
        for path in infra_files()
        for decl in declarations(parse(path.read_text()))
    }
    missing = [
        f"{ns}/{version}" for ns, version in sorted(used) if not (TYPES_ROOT / ns / version / "types.json").is_file()
    ]
    assert not missing, f"add these from Azure/bicep-types-az: {missing}"


def test_every_resource_in_infra_matches_the_type_definitions() -> None:
    checked: list[str] = []
    problems = [str(f) for path in infra_files() for f in check_file(path, checked=checked)]
    assert not problems, "\n".join(problems)
    # Not vacuous: the names of the properties infra/ writes were resolved against the types, deep ones too.
    assert len(checked) >= 150, len(checked)
    assert any(p.endswith("siteConfig.minTlsVersion") for p in checked)
    assert any(p.endswith("functionAppConfig.scaleAndConcurrency.instanceMemoryMB") for p in checked)
    assert any(p.endswith("retryPolicy.maxDeliveryAttempts") for p in checked)


# A misspelt property deep inside each real template is reported (the files are walked, not just parsed).
@pytest.mark.parametrize(
    ("relpath", "key"),
    [
        ("modules/functionapp.bicep", "minTlsVersion"),
        ("modules/functionapp.bicep", "instanceMemoryMB"),
        ("modules/functionapp.bicep", "allow"),  # basicPublishingCredentialsPolicies, a `parent:` child
        ("modules/storage.bicep", "keyType"),
        ("modules/storage.bicep", "publicAccess"),  # containers: parent of a parent
        ("modules/demo-scale-set.bicep", "serviceName"),  # vnet subnet delegation, in an array literal
        ("modules/demo-scale-set.bicep", "disablePasswordAuthentication"),
        ("modules/demo-extension.bicep", "typeHandlerVersion"),
        ("modules/monitoring.bicep", "IngestionMode"),
        ("modules/release-access.bicep", "principalType"),
        ("eventgrid.bicep", "maxDeliveryAttempts"),
        ("main.bicep", "topicType"),
    ],
)
def test_a_misspelt_property_in_infra_is_reported(relpath: str, key: str, tmp_path: Path) -> None:
    text = (INFRA / relpath).read_text()
    mutated, count = re.subn(rf"^(\s+){key}:", rf"\g<1>{key}Typo:", text, count=1, flags=re.MULTILINE)
    assert count == 1, f"{key} not found in {relpath}"
    found = [str(f) for f in check_text(mutated, relpath)]
    assert any(f"{key}Typo: unknown property" in f for f in found), found


def test_a_correct_snippet_passes() -> None:
    assert findings(ACCOUNT) == []


def test_an_unknown_property_name_is_reported_with_the_closest_name() -> None:
    text = ACCOUNT.replace("allowSharedKeyAccess", "allowSharedKeyAcess")
    assert "account properties.allowSharedKeyAcess: unknown property (did you mean 'allowSharedKeyAccess'?" in only(
        text
    )


def test_a_property_name_is_checked_even_when_its_value_is_an_expression() -> None:
    text = ACCOUNT.replace("allowSharedKeyAccess: false", "allowSharedKeyAcess: empty(location)")
    assert "allowSharedKeyAcess: unknown property" in only(text)


def test_a_read_only_property_set_is_reported() -> None:
    text = ACCOUNT.replace("minimumTlsVersion: 'TLS1_2'", "provisioningState: 'Succeeded'")
    assert "account properties.provisioningState: read-only" in only(text)
    assert "account id: read-only" in only(ACCOUNT.replace("  kind:", "  id: 'x'\n  kind:"))


def test_a_missing_required_property_is_reported_at_the_top_and_in_literal_objects() -> None:
    assert "account sku: required property missing" in only(
        re.sub(r"  sku: \{\s*name: 'Standard_LRS'\s*\}\n", "", ACCOUNT)
    )
    assert "account sku.name: required property missing" in only(ACCOUNT.replace("name: 'Standard_LRS'", ""))


def test_a_string_literal_outside_a_closed_union_is_reported() -> None:
    text = ACCOUNT.replace("  properties: {", "  properties: {\n    accessTier: 'Lukewarm'", 1)
    # accessTier is 'Hot' | 'Cool' | 'Premium' | 'Cold' with no open string in 2023-05-01
    assert "properties.accessTier: 'Lukewarm' is not one of the allowed values: 'Hot'" in only(text)


def test_a_literal_of_the_wrong_kind_is_reported() -> None:
    assert "properties.allowSharedKeyAccess: string literal where the type is bool" in only(
        ACCOUNT.replace("allowSharedKeyAccess: false", "allowSharedKeyAccess: 'false'")
    )
    # an interpolated string is still a string
    assert "properties.allowSharedKeyAccess: string literal where the type is bool" in only(
        ACCOUNT.replace("allowSharedKeyAccess: false", "allowSharedKeyAccess: '${location}'")
    )
    assert "sku: string literal where the type is an object" in only(
        re.sub(r"sku: \{\s*name: 'Standard_LRS'\s*\}", "sku: 'Standard_LRS'", ACCOUNT)
    )


def test_literal_bounds_are_reported() -> None:
    assert "account name: length 2 is below the minimum length 3" in only(ACCOUNT.replace("'canarystore'", "'ab'"))
    text = ACCOUNT.replace(
        "  properties: {",
        """  resource blobs 'blobServices' = {
    name: 'default'
    properties: {
      deleteRetentionPolicy: {
        enabled: true
        days: 366
      }
    }
  }
  properties: {""",
        1,
    )
    assert "account::blobs properties.deleteRetentionPolicy.days: 366 is above the maximum 365" in only(text)
    assert "days: -1 is below the minimum 1" in only(text.replace("days: 366", "days: -1"))


def test_expressions_are_not_evaluated() -> None:
    text = ACCOUNT.replace("minimumTlsVersion: 'TLS1_2'", "minimumTlsVersion: location").replace(
        "kind: 'StorageV2'", "kind: empty(location) ? 'StorageV2' : 'BlobStorage'"
    )
    assert findings(text) == []


def test_a_discriminated_object_is_checked_as_the_element_its_discriminator_selects() -> None:
    site = """
resource site 'Microsoft.Web/sites@2024-04-01' existing = {
  name: 'app'
}
"""
    auth = (
        site
        + """
resource auth 'Microsoft.Web/sites/config@2024-04-01' = {
  parent: site
  name: 'authsettingsV2'
  properties: {
    globalValidation: {
      requireAuthentication: true
      unauthenticatedClientAction: 'Return401'
    }
  }
}
"""
    )
    assert findings(auth) == []
    assert "properties.globalValidation.unauthenticatedClientAction: 'Return402' is not one of" in only(
        auth.replace("'Return401'", "'Return402'")
    )
    # a property of another element of the same type (`web` has minTlsVersion, authsettingsV2 does not)
    assert "properties.minTlsVersion: unknown property" in only(
        auth.replace("    globalValidation: {", "    minTlsVersion: '1.2'\n    globalValidation: {")
    )
    assert "auth name: 'authsettingsV3' is not one of ['appsettings'" in only(
        auth.replace("'authsettingsV2'", "'authsettingsV3'")
    )
    assert "the discriminator 'name' must be a literal" in only(
        auth.replace("name: 'authsettingsV2'", "name: site.name")
    )


def test_nested_child_resources_get_their_full_type_and_the_parents_api_version() -> None:
    text = ACCOUNT.replace(
        "  properties: {",
        """  resource blobs 'blobServices' = {
    name: 'default'
    resource releases 'containers' = {
      name: 'init'
      properties: {
        publicAccess: 'Everyone'
      }
    }
    resource other 'containers@2023-01-01' = {
      name: 'other'
    }
  }
  properties: {""",
        1,
    )
    found = findings(text)
    assert any("account::blobs::releases properties.publicAccess: 'Everyone' is not one of" in f for f in found), found
    assert any(
        "account::blobs::other: Microsoft.Storage/storageAccounts/blobServices/containers@2023-01-01: no type "
        "definitions for microsoft.storage 2023-01-01"
        in f
        and "from Azure/bicep-types-az" in f
        for f in found
    ), found
    assert len(found) == 2, found


def test_a_looped_parent_is_resolved() -> None:
    text = f"""
resource accounts '{STORAGE}' existing = [for n in ['aaa', 'bbb']: {{
  name: n
}}]
resource services 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' = [for i in range(0, 2): {{
  parent: accounts[i]
  name: 'default'
}}]
resource wrong 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {{
  parent: accounts[0]
  name: 'releases'
}}
"""
    assert "wrong: with `parent: accounts` the type must be Microsoft.Storage/storageAccounts/<child>" in only(text)


def test_a_parent_with_another_type_is_reported() -> None:
    text = (
        ACCOUNT
        + """
resource tables 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' = {
  parent: account
  name: 'default'
}
resource wrong 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: account
  name: 'releases'
}
"""
    )
    assert "wrong: with `parent: account` the type must be Microsoft.Storage/storageAccounts/<child>" in only(text)


def test_an_unknown_type_or_version_is_a_finding_that_says_where_to_get_it(tmp_path: Path) -> None:
    text = ACCOUNT.replace(STORAGE, "Microsoft.Storage/storageAccounts@2099-01-01")
    assert "add microsoft.storage/2099-01-01/types.json from Azure/bicep-types-az" in only(text)
    assert "has no such resource type" in only(ACCOUNT.replace(STORAGE, "Microsoft.Storage/storageAcounts@2023-05-01"))
    # and with no vendored definitions at all, nothing passes silently
    assert all("from Azure/bicep-types-az" in str(f) for f in check_text(ACCOUNT, root=tmp_path))
    assert check_text(ACCOUNT, root=tmp_path)


def test_existing_resources_are_checked_for_name_and_scope_only() -> None:
    text = f"""
resource ok '{STORAGE}' existing = {{
  name: 'whatever'
  scope: resourceGroup('other')
}}
resource bad '{STORAGE}' existing = {{
  name: 'x'
  properties: {{
    nonsense: true
  }}
}}
resource nameless '{STORAGE}' existing = {{
  scope: resourceGroup('other')
}}
"""
    found = findings(text)
    assert any(
        "bad properties: an `existing` resource takes only name, scope, parent and dependsOn" in f for f in found
    )
    assert any("nameless name: required property missing" in f for f in found)
    assert len(found) == 2, found


def test_scope_is_only_for_extension_resources() -> None:
    text = (
        ACCOUNT
        + """
resource ra 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(account.id)
  scope: account
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', 'x')
    principalId: 'p'
  }
}
"""
    )
    assert findings(text) == []
    assert "account scope: Microsoft.Storage/storageAccounts is not an extension resource" in only(
        text.replace("  kind:", "  scope: resourceGroup()\n  kind:", 1)
    )


def test_for_expressions_are_checked_item_by_item() -> None:
    text = """
param settings object
resource site 'Microsoft.Web/sites@2024-04-01' = {
  name: 'app'
  location: 'westeurope'
  properties: {
    siteConfig: {
      appSettings: [
        for s in items(settings): {
          name: s.key
          valu: s.value
        }
      ]
    }
  }
}
"""
    assert "properties.siteConfig.appSettings[for].valu: unknown property (did you mean 'value'?" in only(text)


def test_a_property_written_twice_is_reported() -> None:
    text = ACCOUNT.replace("allowSharedKeyAccess: false", "allowSharedKeyAccess: false\n    allowSharedKeyAccess: true")
    assert "properties.allowSharedKeyAccess: written twice" in only(text)


def test_property_names_read_from_a_resource_are_checked() -> None:
    site = """
resource site 'Microsoft.Web/sites@2024-04-01' existing = {
  name: 'app'
}
"""
    ok = site + "output host string = site.properties.defaultHostName\noutput id string = site.identity.principalId\n"
    assert findings(ok) == []
    assert "has no property 'defaultHostNam' (did you mean 'defaultHostName'?)" in only(
        ok.replace("defaultHostName", "defaultHostNam")
    )
    # inside string interpolation and through an array index
    assert "has no property 'minTlsVerson'" in only(
        site + "var u = 'https://${site.properties.siteConfig.minTlsVerson}'\n"
    )
    assert "site.properties.hostNames[n] is a StringType; it has no property 'x'" in only(
        site + "var h = site.properties.hostNames[0].x\n"
    )


@pytest.mark.parametrize(
    ("relpath", "read"),
    [
        ("modules/functionapp.bicep", "site.properties.defaultHostName"),
        ("modules/functionapp.bicep", "insights.properties.ConnectionString"),
        ("modules/storage.bicep", "account.properties.primaryEndpoints.table"),
        ("modules/demo-scale-set.bicep", "scaleSet.identity.principalId"),
        ("eventgrid.bicep", "site.properties.defaultHostName"),  # inside '${...}'
    ],
)
def test_a_misspelt_read_in_infra_is_reported(relpath: str, read: str) -> None:
    text = (INFRA / relpath).read_text()
    assert read in text
    found = [str(f) for f in check_text(text.replace(read, read + "X"), relpath)]
    assert any(f"has no property '{read.rsplit('.', 1)[1]}X'" in f for f in found), found


def test_module_calls_are_checked_against_the_modules_parameters(tmp_path: Path) -> None:
    (tmp_path / "mod.bicep").write_text(
        """
param name string
param count int = 1
param maybe string?
@allowed([
  'User'
  'Group'
])
param kind string = 'User'
resource account 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: name
}
"""
    )
    call = """
param n string
module m 'mod.bicep' = {
  name: 'm'
  params: {
    name: n
  }
}
"""

    def found(text: str) -> list[str]:
        return [str(f) for f in check_text(text, base=tmp_path)]

    assert found(call) == []
    assert any(
        "params.nam: mod.bicep declares no such parameter (did you mean 'name'?)" in f
        for f in found(call.replace("name: n", "nam: n"))
    )
    assert any(
        "params.name: required by mod.bicep but not passed" in f for f in found(call.replace("name: n", "count: 2"))
    )
    assert "params.count: string literal where the parameter is int" in " ".join(
        found(call.replace("name: n", "name: n\n    count: '2'"))
    )
    assert "params.kind: 'Robot' is not one of the @allowed values ['User', 'Group']" in " ".join(
        found(call.replace("name: n", "name: n\n    kind: 'Robot'"))
    )
    assert "module file nope.bicep does not exist" in " ".join(found(call.replace("mod.bicep", "nope.bicep")))


def test_a_misspelt_module_parameter_in_main_is_reported() -> None:
    text = (INFRA / "main.bicep").read_text()
    mutated = text.replace(
        "    releaseContainerName: storage.outputs.releaseContainerName\n",
        "    releaseContainer: storage.outputs.releaseContainerName\n",
        1,
    )
    assert mutated != text
    found = [str(f) for f in check_text(mutated, "main.bicep", base=INFRA)]
    assert any("params.releaseContainer: release-access.bicep declares no such parameter" in f for f in found), found
    assert any("params.releaseContainerName: required by release-access.bicep but not passed" in f for f in found), (
        found
    )
