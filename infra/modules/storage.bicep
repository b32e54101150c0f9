// Storage for the app and the releases: one StorageV2 account holding
//  - the release container (watched by the blob trigger, read by the scale set's CustomScript extension),
//  - the state tables (rollouts, rolloutevents, targets, groupreleases),
//  - the Flex Consumption deployment container (the zipped function code),
//  - the Functions host's own blobs/queues (AzureWebJobsStorage),
//  - the tick queue (TICK_QUEUE) the timer fans out to, one message per target, and its poison queue.
// Everything is reached with Entra ID (managed identities, `az ... --auth-mode login`): shared key access
// is off, so no connection string with a key exists anywhere in the deployment.

@description('Storage account name (3-24 lower-case letters and digits, globally unique).')
@minLength(3)
@maxLength(24)
param name string

param location string
param tags object = {}

@description('Container the operator uploads release scripts to (RELEASE_CONTAINER).')
param releaseContainerName string

@description('Container the Flex Consumption plan deploys the zipped code from.')
param deploymentContainerName string

@description('The tick queue (TICK_QUEUE): the timer puts one message per target with work on it; the queue trigger advances that target.')
@minLength(3)
@maxLength(56)
param tickQueueName string = 'rollout-ticks'

@description('The notification queue (NOTIFY_QUEUE): the services put phase changes on it; deliver_notification sends them.')
@minLength(3)
@maxLength(56)
param notifyQueueName string = 'rollout-notifications'

@description('Prefix of the state table names (STATE_TABLE_PREFIX).')
param stateTablePrefix string = ''

// The adapter's table names (docs/design.md, "State in Tables"); the prefix lets several installs share an account.
var stateTables = [
  '${stateTablePrefix}rollouts'
  '${stateTablePrefix}rolloutevents'
  '${stateTablePrefix}targets'
  '${stateTablePrefix}groupreleases'
]

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // Skips, each with the reason it does not apply to this account:
  //checkov:skip=CKV_AZURE_206: LRS on purpose - releases are re-uploadable and the state tables hold an audit trail of an in-flight rollout, not data worth GRS cost
  //checkov:skip=CKV_AZURE_33: the queue service is only the Functions host's internal poison/receipt queues; its logs go to the account's diagnostic settings, not classic Storage Analytics (which needs shared key)
  //checkov:skip=CKV_AZURE_59: public endpoint needed - Event Grid, the Flex Consumption deployment, the operator's uploads and the scale set's CustomScript fetch all reach it; access is Entra-only (shared key off) and TLS1.2
  //checkov:skip=CKV_AZURE_35: default action Allow for the same reason as CKV_AZURE_59; private endpoints are a documented hardening step (infra/README.md)
  //checkov:skip=CKV2_AZURE_33: private endpoint not used, see CKV_AZURE_59
  //checkov:skip=CKV2_AZURE_1: customer-managed keys add a Key Vault and its lifecycle for no gain here; Microsoft-managed keys with infrastructure encryption
  //checkov:skip=CKV2_AZURE_41: no SAS is ever issued - shared key (which SAS needs) is disabled
  //checkov:skip=CKV2_AZURE_40: shared key access is disabled (allowSharedKeyAccess false); the check does not read the property
  name: name
  location: location
  tags: tags
  sku: {
    name: 'Standard_LRS'
  }
  kind: 'StorageV2'
  properties: {
    accessTier: 'Hot'
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    allowBlobPublicAccess: false
    // Flex Consumption runs fully on identity-based host storage, so keys can be switched off.
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    allowCrossTenantReplication: false
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
    encryption: {
      keySource: 'Microsoft.Storage'
      requireInfrastructureEncryption: true
      services: {
        blob: {
          enabled: true
          keyType: 'Account'
        }
        file: {
          enabled: true
          keyType: 'Account'
        }
        queue: {
          enabled: true
          keyType: 'Account'
        }
        table: {
          enabled: true
          keyType: 'Account'
        }
      }
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: account
  name: 'default'
  properties: {
    // A release blob overwritten or deleted by mistake can be recovered: the rollout's baseline points at it.
    isVersioningEnabled: true
    deleteRetentionPolicy: {
      enabled: true
      days: 7
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

resource releaseContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: releaseContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deploymentContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' = {
  parent: account
  name: 'default'
}

resource tables 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = [
  for table in stateTables: {
    parent: tableService
    name: table
  }
]

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' = {
  parent: account
  name: 'default'
}

// The queue trigger moves a message that failed maxDequeueCount times to `<queue>-poison`
// (learn.microsoft.com/azure/azure-functions/functions-bindings-storage-queue-trigger, "Poison messages");
// both exist from the start, so nothing depends on the host creating them.
resource tickQueues 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = [
  for queue in [tickQueueName, '${tickQueueName}-poison']: {
    parent: queueService
    name: queue
  }
]

// The notification queue and its dead letters (`<queue>-poison`: the delivery trigger's own after
// NOTIFY_MAX_ATTEMPTS, and the host's after maxDequeueCount).
resource notifyQueues 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = [
  for queue in [notifyQueueName, '${notifyQueueName}-poison']: {
    parent: queueService
    name: queue
  }
]

output accountName string = account.name
output accountId string = account.id
output blobEndpoint string = account.properties.primaryEndpoints.blob
output queueEndpoint string = account.properties.primaryEndpoints.queue
output tableEndpoint string = account.properties.primaryEndpoints.table
output releaseContainerName string = releaseContainer.name
output tickQueueName string = tickQueueName
output notifyQueueName string = notifyQueueName
output deploymentContainerName string = deploymentContainer.name
