// Rights on the release container only (not the account):
// - the scale set's identity reads release scripts (CustomScript `managedIdentity` file download);
// - optionally, the operator who deploys uploads releases with `az storage blob upload --auth-mode login`
//   (shared key is off, so an Entra data role is the only way in).

param storageAccountName string
param releaseContainerName string

@description('Object id of the scale set\'s system-assigned identity; empty = no assignment.')
param scaleSetPrincipalId string = ''

@description('Object id of the operator (user or CI principal) who uploads releases; empty = no assignment.')
param uploaderPrincipalId string = ''

@description('principalType of the uploader.')
@allowed([
  'User'
  'ServicePrincipal'
  'Group'
])
param uploaderPrincipalType string = 'User'

// Built-in role ids: tests/infra/test_role_ids.py checks each against the name after `// role:`
// (tests/data/azure-builtin-roles.json, transcribed from the built-in roles reference).
var storageBlobDataReader = '2a2b9908-6ea1-4ae2-8e65-a410df84e7d1' // role: Storage Blob Data Reader
var storageBlobDataContributor = 'ba92f5b4-2d11-453d-a403-e96b0029c9fe' // role: Storage Blob Data Contributor

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' existing = {
  parent: storage
  name: 'default'
}

resource releaseContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: blobService
  name: releaseContainerName
}

resource scaleSetReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(scaleSetPrincipalId)) {
  name: guid(releaseContainer.id, scaleSetPrincipalId, storageBlobDataReader)
  scope: releaseContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataReader)
    principalId: scaleSetPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource uploader 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(uploaderPrincipalId)) {
  name: guid(releaseContainer.id, uploaderPrincipalId, storageBlobDataContributor)
  scope: releaseContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataContributor)
    principalId: uploaderPrincipalId
    principalType: uploaderPrincipalType
  }
}
