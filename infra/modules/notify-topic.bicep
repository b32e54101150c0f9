// Notifications to Azure-native automation (docs/design.md, "Notifications"): an Event Grid custom topic that
// takes CloudEvents 1.0 (inputSchema CloudEventSchemaV1_0; MicrosoftDocs/azure-docs
// articles/event-grid/cloudevents-schema.md), with local (key) auth off, so the only way to publish is a
// Microsoft Entra token: the function app's identity gets EventGrid Data Sender on this topic alone
// (notify-topic-access.bicep, deployed after the function app, whose identity it needs) ("the
// security principal used by a client application that sends events to Event Grid must have the RBAC role
// EventGrid Data Sender", articles/event-grid/authenticate-with-microsoft-entra-id.md). Logic Apps, Functions
// or alert automation subscribe to it. NOTIFY_EVENTGRID_ENDPOINT is the topic's endpoint (main.bicep).

param name string
param location string
param tags object = {}

resource topic 'Microsoft.EventGrid/topics@2022-06-15' = {
  name: name
  location: location
  tags: tags
  // The topic's own identity, for event subscriptions that deliver with a managed identity (a dead-letter
  // blob, a Service Bus queue) instead of keys.
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    //checkov:skip=CKV_AZURE_193: the Flex Consumption app publishes over the public endpoint (no private endpoint in this template); local auth is off, so only an Entra token with EventGrid Data Sender on this topic is accepted
    inputSchema: 'CloudEventSchemaV1_0'
    disableLocalAuth: true
    publicNetworkAccess: 'Enabled'
  }
}

output endpoint string = topic.properties.endpoint
output name string = topic.name
