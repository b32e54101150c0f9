// The canary judge's platform metrics (SIGNALS_METRICS=true): Monitoring Reader on the target scale set, so
// the function app may call Metrics - List on it (`GET {scale set id}/providers/Microsoft.Insights/metrics`,
// rollout/adapters/signals.py). Monitoring Reader: "Can read all monitoring data." (actions `*/read`,
// `Microsoft.OperationalInsights/workspaces/search/action`, `Microsoft.Support/*`;
// learn.microsoft.com/azure/role-based-access-control/built-in-roles/monitor#monitoring-reader, MicrosoftDocs/
// azure-docs articles/role-based-access-control/built-in-roles/monitor.md @ 03e5750a). Scoped to the scale set:
// nothing else of the resource group is read. Deployed into the scale set's resource group by main.bicep.

@description('Name of the target scale set (must exist in this resource group).')
param scaleSetName string

@description('Object id of the function app\'s system-assigned identity.')
param principalId string

var monitoringReader = '43d0d8ad-25c7-4714-9337-8ba259a9fe05' // role: Monitoring Reader

resource scaleSet 'Microsoft.Compute/virtualMachineScaleSets@2024-07-01' existing = {
  name: scaleSetName
}

resource scaleSetMetricsReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(scaleSet.id, principalId, monitoringReader)
  scope: scaleSet
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', monitoringReader)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}
