// Read access to release images for the function app's identity (main.bicep: imageReaderScope), deployed
// into the resource group that holds the images (main.bicep: `scope: resourceGroup(<sub>, <rg>)`).
//
// Why: an image release PATCHes the scale set model's `imageReference.id`. Azure Resource Manager checks
// that the caller may read every resource a request body references, and answers 403
// LinkedAuthorizationFailed otherwise. Virtual Machine Contributor on the scale set (target-access.bicep)
// does not reach the gallery, so without this every image release would fail until its progress deadline.
//
// Least privilege: Reader on the gallery when a gallery id is given (every image definition and version in
// it, nothing else); on the whole resource group only when the images are managed images in a resource
// group (no gallery). Built-in role Reader (its id below is checked by tests/infra/test_role_ids.py)
// (learn.microsoft.com/azure/role-based-access-control/built-in-roles/general#reader: actions `*/read`).

@description('Azure Compute Gallery in this resource group; empty = grant Reader on the resource group itself.')
param galleryName string = ''

@description('Object id of the function app\'s system-assigned identity.')
param principalId string

var reader = 'acdd72a7-3385-48ef-bd42-f606fba81ae7' // role: Reader

// Galleries have their own API versions (Azure/bicep-types-az: generated/compute/microsoft.compute/2024-03-03).
resource gallery 'Microsoft.Compute/galleries@2024-03-03' existing = if (!empty(galleryName)) {
  name: galleryName
}

resource galleryReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(galleryName)) {
  name: guid(gallery.id, principalId, reader)
  scope: gallery
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', reader)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

// No `scope`: the assignment applies to this module's resource group (the image resource group).
resource resourceGroupReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (empty(galleryName)) {
  name: guid(resourceGroup().id, principalId, reader)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', reader)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}
