// Read access for tag discovery (TARGETS_DISCOVERY_SUBSCRIPTIONS): the function app's identity lists the scale
// sets of a subscription to find those tagged canary-group=<group> (README, "Targets, groups and waves").
// main.bicep deploys this module once per listed subscription (`scope: subscription(<id>)`: a resource group
// deployment may deploy to "any subscription in the tenant",
// learn.microsoft.com/azure/azure-resource-manager/bicep/deploy-to-resource-group, "Deployment scopes").
//
// The call: Virtual Machine Scale Sets - List All, GET /subscriptions/{subscriptionId}/providers/
// Microsoft.Compute/virtualMachineScaleSets (operationId VirtualMachineScaleSets_ListAll in
// Azure/azure-rest-api-specs, specification/compute/resource-manager/Microsoft.Compute/Compute/stable/
// 2026-04-01/ComputeRP.json; azure-mgmt-compute 39.0.0, build_virtual_machine_scale_sets_list_all_request).
// It needs Microsoft.Compute/virtualMachineScaleSets/read at the subscription: the built-in role Reader
// (learn.microsoft.com/azure/role-based-access-control/built-in-roles/general#reader: actions `*/read`;
// its id below is checked by tests/infra/test_role_ids.py). No narrower built-in role grants only that read.
//
// Discovery only finds targets: steering a discovered scale set still needs Virtual Machine Contributor on it
// (or its resource group): list it in main.bicep's targetScaleSets (target-access.bicep, target-group-access.bicep).

targetScope = 'subscription'

@description('Object id of the function app\'s system-assigned identity.')
param principalId string

var reader = 'acdd72a7-3385-48ef-bd42-f606fba81ae7' // role: Reader

resource discoveryReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(subscription().id, principalId, reader)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', reader)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}
