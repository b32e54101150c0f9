// Post-publish step (infra/deploy.sh runs it after the code is deployed): the BlobCreated subscription
// from the storage account's system topic to the function's blobs-extension webhook.
//
// Why not in main.bicep: Event Grid validates a webhook when the subscription is created, and the webhook
// URL carries the `blobs_extension` system key. The Functions host creates that key (and answers the
// validation handshake) only once an app with an Event Grid-sourced blob trigger is running, i.e. after
// the code is published. The key is read here with listKeys, so it never passes through the shell.

param functionAppName string
param systemTopicName string

@description('RELEASE_CONTAINER: only blobs created in this container are delivered.')
param releaseContainerName string = 'init'

@description('Name of the blob-triggered function in function_app.py.')
param functionName string = 'release_uploaded'

resource site 'Microsoft.Web/sites@2024-04-01' existing = {
  name: functionAppName
}

resource systemTopic 'Microsoft.EventGrid/systemTopics@2022-06-15' existing = {
  name: systemTopicName
}

var blobsExtensionKey = listKeys('${site.id}/host/default', '2024-04-01').systemKeys.blobs_extension

resource releaseUploaded 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2022-06-15' = {
  parent: systemTopic
  name: 'release-uploaded'
  properties: {
    destination: {
      endpointType: 'WebHook'
      properties: {
        endpointUrl: 'https://${site.properties.defaultHostName}/runtime/webhooks/blobs?functionName=Host.Functions.${functionName}&code=${blobsExtensionKey}'
      }
    }
    eventDeliverySchema: 'EventGridSchema'
    filter: {
      includedEventTypes: [
        'Microsoft.Storage.BlobCreated'
      ]
      subjectBeginsWith: '/blobServices/default/containers/${releaseContainerName}/blobs/'
    }
    retryPolicy: {
      maxDeliveryAttempts: 30
      eventTimeToLiveInMinutes: 1440
    }
  }
}
