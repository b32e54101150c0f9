// A Flexible target scale set: Virtual Machine Contributor for the function app on the scale set's resource
// group, deployed into that resource group (main.bicep: `scope: resourceGroup(<subscription>, <resource group>)`,
// once per resource group however many Flexible targets it holds).
//
// Why the resource group and nothing narrower:
// - A Flexible scale set's instances are standalone Microsoft.Compute/virtualMachines with standalone
//   Microsoft.Network/networkInterfaces (docs/design.md, "Flexible orchestration"). The compute adapter reads
//   them with two list calls at the resource group: VirtualMachines_List
//   (GET /subscriptions/{s}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines, filtered by
//   'virtualMachineScaleSet/id') and NetworkInterfaces_List (.../providers/Microsoft.Network/networkInterfaces).
//   Azure checks a request at the scope it names, and a role reaches only its own scope and the ones below it
//   ("Lower levels inherit role permissions from higher levels": MicrosoftDocs/azure-docs
//   articles/role-based-access-control/scope-overview.md @ 784b9c1a, learn.microsoft.com/azure/role-based-access-control/scope-overview).
//   A role on the scale set or on each VM is below the resource group, so it cannot authorise a list there.
// - Per-VM assignments would also miss every VM the scale set creates later (scale-out, repair).
// - Virtual Machine Contributor has `Microsoft.Compute/virtualMachines/*` (read, reimage),
//   `Microsoft.Compute/virtualMachineScaleSets/*` (the model, manualUpgrade) and `Microsoft.Network/networkInterfaces/*`
//   (MicrosoftDocs/azure-docs articles/role-based-access-control/built-in-roles/compute.md @ 26d1e35d, as infra/README.md cites).
// The price: every VM, scale set and NIC of this resource group is in reach, so keep a Flexible scale set in a
// resource group of its own (infra/README.md).

@description('Object id of the function app\'s system-assigned identity.')
param principalId string

// Built-in role id: tests/infra/test_role_ids.py checks it against the name after `// role:`.
var virtualMachineContributor = '9980e02c-c2be-4d73-94e8-173b1dc7cf3c' // role: Virtual Machine Contributor

// No `scope`: the assignment applies to this module's resource group. The name is a deterministic guid of the
// scope, the principal and the role, so a redeployment finds the same assignment.
resource groupVmContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(resourceGroup().id, principalId, virtualMachineContributor)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', virtualMachineContributor)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}
