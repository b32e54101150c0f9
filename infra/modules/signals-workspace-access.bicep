// The canary judge's Log Analytics query (SIGNALS_LOGS_WORKSPACE_ID): Log Analytics Reader on that workspace, so
// the function app may run SIGNALS_LOGS_QUERY there (`POST https://api.loganalytics.io/v1/workspaces/{id}/query`,
// rollout/adapters/signals.py). Log Analytics Reader: "can view and search all monitoring data" (actions `*/read`,
// `Microsoft.OperationalInsights/workspaces/analytics/query/action`, `.../workspaces/search/action`;
// learn.microsoft.com/azure/role-based-access-control/built-in-roles/monitor#log-analytics-reader, MicrosoftDocs/
// azure-docs articles/role-based-access-control/built-in-roles/monitor.md @ 03e5750a). Scoped to the workspace
// only. Deployed into the workspace's resource group by main.bicep.

@description('Name of the Log Analytics workspace (must exist in this resource group).')
param workspaceName string

@description('Object id of the function app\'s system-assigned identity.')
param principalId string

var logAnalyticsReader = '73c42c96-874c-492b-b04d-ab87d138a893' // role: Log Analytics Reader

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' existing = {
  name: workspaceName
}

resource workspaceQueryReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(workspace.id, principalId, logAnalyticsReader)
  scope: workspace
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', logAnalyticsReader)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}
