// The canary judge's load balancer signal (SIGNALS_LOAD_BALANCER_ID): Monitoring Reader on that load balancer,
// so the function app may read its Health Probe Status (`DipAvailability`) per backend address through
// Metrics - List (rollout/adapters/signals.py). Monitoring Reader: "Can read all monitoring data."
// (learn.microsoft.com/azure/role-based-access-control/built-in-roles/monitor#monitoring-reader, MicrosoftDocs/
// azure-docs articles/role-based-access-control/built-in-roles/monitor.md @ 03e5750a). Scoped to the load
// balancer only. Deployed into the load balancer's resource group by main.bicep.

@description('Name of the load balancer (must exist in this resource group).')
param loadBalancerName string

@description('Object id of the function app\'s system-assigned identity.')
param principalId string

var monitoringReader = '43d0d8ad-25c7-4714-9337-8ba259a9fe05' // role: Monitoring Reader

resource loadBalancer 'Microsoft.Network/loadBalancers@2024-05-01' existing = {
  name: loadBalancerName
}

resource loadBalancerMetricsReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(loadBalancer.id, principalId, monitoringReader)
  scope: loadBalancer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', monitoringReader)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}
