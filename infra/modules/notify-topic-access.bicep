// The function app's right to publish notifications: EventGrid Data Sender on the notification topic alone
// (notify-topic.bicep). "The identity used to publish events to Event Grid must have the permission
// Microsoft.EventGrid/events/send/action ... included in the built-in RBAC role Event Grid Data Sender"
// (MicrosoftDocs/azure-docs articles/event-grid/authenticate-with-microsoft-entra-id.md).

param topicName string

@description('Object id of the function app\'s system-assigned identity.')
param principalId string

// Built-in role ids: tests/infra/test_role_ids.py checks each against the name after `// role:`
// (tests/data/azure-builtin-roles.json, transcribed from the built-in roles reference).
var eventGridDataSender = 'd5a91429-5739-47e2-a06b-3470a27159e7' // role: EventGrid Data Sender

resource topic 'Microsoft.EventGrid/topics@2022-06-15' existing = {
  name: topicName
}

resource dataSender 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(topic.id, principalId, eventGridDataSender)
  scope: topic
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', eventGridDataSender)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}
