// The function app: Flex Consumption (FC1), Python 3.11, system-assigned identity, and every setting of
// the configuration contract (docs/design.md "Configuration", `rollout.settings.SETTINGS_READ`).
//
// Design decisions:
// - No keys in settings. AzureWebJobsStorage, ReleaseStorage and StateStorage are identity-based
//   connections (`<name>__accountName` / `<name>__<service>ServiceUri`), so the storage account can run
//   with shared key access off. The connection-string forms of the contract are deliberately unset.
// - Flex Consumption takes the runtime and version from `functionAppConfig`; it rejects
//   FUNCTIONS_WORKER_RUNTIME / FUNCTIONS_EXTENSION_VERSION / WEBSITE_RUN_FROM_PACKAGE app settings.
// - The role assignments the app's identity needs on the storage account and on Application Insights live
//   here, next to the identity; the scale set's role lives in target-access.bicep (another resource group).
// - Policy knobs arrive as one object from main.bicep so the defaults live in exactly one place there.

param namePrefix string
param location string
param tags object = {}

param storageAccountName string
param deploymentContainerName string
param insightsName string

@description('Subnet (delegated to Microsoft.App/environments) the app joins to reach the instances\' private IPs; empty = no VNet integration.')
param integrationSubnetId string = ''

@description('Highest number of instances Flex Consumption may scale to (40 is the plan minimum). Concurrent ticks are safe: one rollout per scale set is claimed with ETags.')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('App settings of the configuration contract, name -> string value (built in main.bicep).')
param contractSettings object

@description('Client id of an existing Microsoft Entra app registration: turns on App Service authentication (Entra ID) and HTTP_AUTH=entra. Empty = function keys only (HTTP_AUTH=function-key).')
param entraClientId string = ''

@description('Tenant of the app registration (issuer https://login.microsoftonline.com/<tenant>/v2.0).')
param entraTenantId string = tenant().tenantId

@description('Value of the azd-service-name tag: the service name in azure.yaml, how `azd deploy` finds this app.')
param azdServiceName string = 'api'

// Built-in role ids: tests/infra/test_role_ids.py checks each against the name after `// role:`
// (tests/data/azure-builtin-roles.json, transcribed from the built-in roles reference).
var storageBlobDataOwner = 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b' // role: Storage Blob Data Owner
var storageQueueDataContributor = '974c5e8b-45b9-4653-ba55-5f855dd0fb88' // role: Storage Queue Data Contributor
var storageTableDataContributor = '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3' // role: Storage Table Data Contributor
var monitoringMetricsPublisher = '3913510d-42f4-4e42-8a64-420c390055eb' // role: Monitoring Metrics Publisher

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource insights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: insightsName
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: '${namePrefix}-plan'
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    //checkov:skip=CKV_AZURE_225: zone redundancy for Flex Consumption exists only in some regions; a lost instance costs one timer tick, the next tick re-observes and heals (level-triggered)
    reserved: true
  }
}

// The Functions platform's own settings, and HTTP_AUTH (rollout/settings.py reads it; it follows entraClientId).
var platformSettings = {
  // The HTTP routes' auth (rollout/settings.py, rollout/access.py): `entra` = trust only the principal App Service authentication
  // validated (X-MS-CLIENT-PRINCIPAL, app roles Rollouts.Read / Rollouts.Operate); `function-key` = keys only.
  HTTP_AUTH: empty(entraClientId) ? 'function-key' : 'entra'
  // Host storage with the app's identity: blob leases, timer schedule monitor, blob trigger receipts.
  AzureWebJobsStorage__accountName: storage.name
  // The Event Grid blob trigger's `ReleaseStorage` connection also needs the queue endpoint
  // (poison-message queue) besides ReleaseStorage__blobServiceUri from the contract.
  ReleaseStorage__queueServiceUri: storage.properties.primaryEndpoints.queue
  // The documentation disagrees on whether an identity connection needs `__credential`: the blob connection
  // section asks for the service URIs only, the common identity properties say `managedidentity` for managed
  // identity (tests/data/azure-app-settings.json cites both). Set, it satisfies either reading; with no
  // `__clientId` next to it the system-assigned identity is used (the blob binding's utils.py, 1.1.2).
  ReleaseStorage__credential: 'managedidentity'
  // The same reading for the tick queue's identity connection (TickQueue__queueServiceUri in the contract).
  TickQueue__credential: 'managedidentity'
  APPLICATIONINSIGHTS_CONNECTION_STRING: insights.properties.ConnectionString
  // Entra ID auth for telemetry (local auth is disabled on the component).
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'Authorization=AAD'
}

// The name is the public host name <name>.azurewebsites.net, so it must be unique across Azure
// (Microsoft.Web/sites: scope global, 2-60 characters, alphanumerics and hyphens;
// learn.microsoft.com/azure/azure-resource-manager/management/resource-name-rules). The same page notes
// that a function app's host ID is its name truncated to 32 characters: prefix (at most 16) + '-' +
// uniqueString (13) = at most 30, so the unique part is never cut off.
resource site 'Microsoft.Web/sites@2024-04-01' = {
  name: '${namePrefix}-${uniqueString(resourceGroup().id)}'
  location: location
  tags: union(tags, {
    'azd-service-name': azdServiceName
  })
  kind: 'functionapp,linux'
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    //checkov:skip=CKV_AZURE_13: App Service Authentication is optional (entraClientId, the authsettingsV2 resource below); without it the HTTP triggers use function keys (auth level FUNCTION)
    //checkov:skip=CKV_AZURE_17: client certificates cannot be presented by Event Grid's webhook delivery to the blobs extension
    //checkov:skip=CKV_AZURE_212: Flex Consumption scales from zero by design; there is no instance minimum to fail over to, the platform restarts instances
    //checkov:skip=CKV_AZURE_213: the health-check path is not supported on Flex Consumption; the app's health is its timer ticks, visible in Application Insights
    //checkov:skip=CKV_AZURE_222: public network access is needed by the Event Grid webhook delivery and the operator's HTTP calls; all of it is HTTPS with keys
    serverFarmId: plan.id
    httpsOnly: true
    publicNetworkAccess: 'Enabled'
    clientCertEnabled: false
    virtualNetworkSubnetId: empty(integrationSubnetId) ? null : integrationSubnetId
    siteConfig: {
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      appSettings: [
        for setting in items(union(contractSettings, platformSettings)): {
          name: setting.key
          value: setting.value
        }
      ]
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainerName}'
          authentication: {
            type: 'SystemAssignedIdentity'
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: 2048
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
  }
}

// Optional Microsoft Entra ID sign-in (App Service authentication, "Easy Auth") in front of every route:
// learn.microsoft.com/azure/app-service/configure-authentication-provider-aad ("Use an existing registration
// created separately"). Shapes: authsettingsV2 of Microsoft.Web/sites/config@2024-04-01 (bicep-types-az).
// - Issuer `<authentication endpoint>/<tenant>/v2.0`: the page's "Issuer Url" row ("For applications that use
//   Azure AD v1, omit /v2.0"); deploy.sh --entra makes the registration issue v2 access tokens to match.
// - Allowed audiences: the client id is "always implicitly considered to be an allowed audience" (same page);
//   api://<client id> is added for tokens requested for the application ID URI.
// - Return401, not a login redirect: the callers are scripts and the CLI, not browsers.
// - excludedPaths /runtime/webhooks/blobs: authentication covers the whole app, the Functions host's own
//   endpoints included ("When you enable Easy Auth, you're protecting the entire App, not just the host",
//   Azure/azure-functions-host#4674; runtime webhook URLs are "not exempt from EasyAuth paths",
//   Azure/azure-functions-microsoftgraph-extension#36; Event Grid blob deliveries answered Unauthorized with
//   authentication on, MicrosoftDocs/azure-docs#99036). Event Grid cannot present an Entra token to a
//   system-topic webhook, so the blobs-extension webhook stays reachable and is protected by the
//   blobs_extension system key in its URL (eventgrid.bicep), exactly as without authentication.
resource authSettings 'Microsoft.Web/sites/config@2024-04-01' = if (!empty(entraClientId)) {
  parent: site
  name: 'authsettingsV2'
  properties: {
    // checkov reads every Microsoft.Web/sites/config as the `web` config; these checks are about that one:
    //checkov:skip=CKV_AZURE_13: false positive - this resource is App Service Authentication itself (platform.enabled, requireAuthentication)
    //checkov:skip=CKV_AZURE_63: HTTP logging is a setting of the web config, not of authsettingsV2; the app logs to Application Insights
    //checkov:skip=CKV_AZURE_65: detailed error messages are a setting of the web config, not of authsettingsV2
    //checkov:skip=CKV_AZURE_66: failed request tracing is a setting of the web config, not of authsettingsV2
    //checkov:skip=CKV_AZURE_80: .NET Framework version is a setting of the web config; this is a Python app
    //checkov:skip=CKV_AZURE_88: Azure Files mounts are not part of authsettingsV2; Flex Consumption deploys from a blob container
    //checkov:skip=CKV_AZURE_222: public network access is a property of the site (skipped there with its reason), not of authsettingsV2
    platform: {
      enabled: true
    }
    globalValidation: {
      requireAuthentication: true
      unauthenticatedClientAction: 'Return401'
      excludedPaths: [
        '/runtime/webhooks/blobs'
      ]
    }
    identityProviders: {
      azureActiveDirectory: {
        enabled: true
        registration: {
          clientId: entraClientId
          openIdIssuer: '${environment().authentication.loginEndpoint}${entraTenantId}/v2.0'
        }
        validation: {
          allowedAudiences: [
            'api://${entraClientId}'
          ]
        }
      }
    }
    httpSettings: {
      requireHttps: true
    }
  }
}

// Basic (user/password) publishing is off: deploy.sh publishes with the operator's Entra token.
resource scmBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'scm'
  properties: {
    allow: false
  }
}

resource ftpBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'ftp'
  properties: {
    allow: false
  }
}

// What the blob trigger needs on the account it watches and on the host storage (the same account):
// blob read + receipts/leases (Blob Data Owner), the poison queue (Queue Data Contributor).
// The tick queue needs Queue Data Contributor too: the timer creates it if missing and sends (Contributor or
// Message Sender), the queue trigger reads, deletes and poisons (Reader + Message Processor), per
// learn.microsoft.com/azure/azure-functions/functions-bindings-storage-queue-trigger (includes/functions-queue-permissions.md).
resource blobOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, site.id, storageBlobDataOwner)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataOwner)
    principalId: site.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

resource queueContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, site.id, storageQueueDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageQueueDataContributor)
    principalId: site.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

// The state tables (rollouts, rolloutevents, targets, groupreleases) and the host's timer bookkeeping.
resource tableContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, site.id, storageTableDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageTableDataContributor)
    principalId: site.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

// Telemetry with Entra auth (DisableLocalAuth on the component).
resource metricsPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(insights.id, site.id, monitoringMetricsPublisher)
  scope: insights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', monitoringMetricsPublisher)
    principalId: site.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

output name string = site.name
output principalId string = site.identity.principalId
output defaultHostName string = site.properties.defaultHostName
