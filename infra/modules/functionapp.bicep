// The function app: Flex Consumption (FC1), Python 3.11, system-assigned identity, and every setting of
// the configuration contract (DESIGN.md section 4, `rollout.settings.SETTINGS_READ`).
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

// Settings of the Functions platform itself (not read by rollout/settings.py).
var platformSettings = {
  // Host storage with the app's identity: blob leases, timer schedule monitor, blob trigger receipts.
  AzureWebJobsStorage__accountName: storage.name
  // The Event Grid blob trigger's `ReleaseStorage` connection also needs the queue endpoint
  // (poison-message queue) besides ReleaseStorage__blobServiceUri from the contract.
  ReleaseStorage__queueServiceUri: storage.properties.primaryEndpoints.queue
  APPLICATIONINSIGHTS_CONNECTION_STRING: insights.properties.ConnectionString
  // Entra ID auth for telemetry (local auth is disabled on the component).
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'Authorization=AAD'
}

resource site 'Microsoft.Web/sites@2024-04-01' = {
  name: '${namePrefix}-func'
  location: location
  tags: tags
  kind: 'functionapp,linux'
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    //checkov:skip=CKV_AZURE_13: App Service Authentication would block the Event Grid webhook and the operator's key-authenticated HTTP verbs; HTTP triggers use function keys (auth level FUNCTION)
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

// The state tables (rollouts, rolloutevents, targets) and the host's timer bookkeeping.
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
