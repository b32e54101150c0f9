// The function's only right on a Uniform target scale set: Virtual Machine Contributor on that scale set,
// deployed into the scale set's resource group, once per Uniform target (main.bicep: VMSS_NAME and
// targetScaleSets, `scope: resourceGroup(<subscription id>, <resource group>)`). Flexible targets get it on
// their resource group instead (target-group-access.bicep).
//
// Why nothing else:
// - Virtual Machine Contributor's actions include `Microsoft.Compute/virtualMachineScaleSets/*`, which covers
//   every call the compute adapter makes: read the model, PATCH the extension/image, `manualUpgrade`,
//   `reimage`, the paged instance list with instanceView, and the scale set's network interfaces.
//   A Uniform scale set's NICs are read through the Compute path
//   (`.../virtualMachineScaleSets/{name}/networkInterfaces`, action
//   `Microsoft.Compute/virtualMachineScaleSets/networkInterfaces/read`), so the wildcard already grants
//   "read on its network interfaces"; a separate Reader assignment would add nothing but surface.
// - Scoped to the scale set, not the resource group: other VMs, the load balancer and the VNet stay out of
//   reach.

@description('Name of the target scale set (must exist in this resource group).')
param scaleSetName string

@description('Object id of the function app\'s system-assigned identity.')
param principalId string

// Built-in role ids: tests/infra/test_role_ids.py checks each against the name after `// role:`
// (tests/data/azure-builtin-roles.json, transcribed from the built-in roles reference).
var virtualMachineContributor = '9980e02c-c2be-4d73-94e8-173b1dc7cf3c' // role: Virtual Machine Contributor

resource scaleSet 'Microsoft.Compute/virtualMachineScaleSets@2024-07-01' existing = {
  name: scaleSetName
}

resource vmContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(scaleSet.id, principalId, virtualMachineContributor)
  scope: scaleSet
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', virtualMachineContributor)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

output scaleSetId string = scaleSet.id
