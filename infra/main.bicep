// vmss-canary: canary releases for a VM Scale Set, as an event-driven Azure Functions app.
//
// Deploys (resource group scope, `az deployment group create`; infra/deploy.sh drives the whole thing):
//   storage.bicep         one account: release container, state tables, deployment container, host storage
//   monitoring.bicep      Log Analytics + Application Insights (Entra auth only)
//   functionapp.bicep     Flex Consumption app, Python 3.11, system identity, every contract setting,
//                         its storage and telemetry roles
//   target-access.bicep   Virtual Machine Contributor on each Uniform target scale set only (its resource group)
//   target-group-access.bicep  Virtual Machine Contributor on the resource group of each Flexible target scale set
//   release-access.bicep  read on the release container for the scale set, upload for the operator
//   image-access.bicep    optional (imageReaderScope): Reader on the image gallery / image resource group
//   discovery-access.bicep  optional (targetsDiscoverySubscriptions): Reader on each subscription (tag discovery)
//   demo-*.bicep          optional: the walkthrough's 3-instance nginx fleet behind a load balancer
//   ../eventgrid.bicep    NOT here: the BlobCreated subscription needs the blobs extension's system key,
//                         which exists only once the code is published (deploy.sh deploys it afterwards)
//
// The Event Grid system topic is created here so that the post-publish step only adds the subscription.

targetScope = 'resourceGroup'

@description('Prefix of every resource name (lower case letters, digits, hyphens).')
@minLength(3)
@maxLength(16)
param namePrefix string = 'vmsscanary'

param location string = resourceGroup().location

@description('Azure Developer CLI environment name (AZURE_ENV_NAME, main.parameters.json); tagged as azd-env-name. Empty = no tag.')
param environmentName string = ''

param tags object = {
  app: 'vmss-canary'
}

var allTags = union(tags, empty(environmentName) ? {} : {
  'azd-env-name': environmentName
})

@description('Storage account name; the default is unique per resource group.')
@maxLength(24)
param storageAccountName string = take('${replace(namePrefix, '-', '')}${uniqueString(resourceGroup().id)}', 24)

@description('RELEASE_CONTAINER: the container watched for release scripts.')
param releaseContainerName string = 'init'

@description('Container the Flex Consumption plan deploys the code package from.')
param deploymentContainerName string = 'app-package'

// ---- the target scale set ----
@description('VMSS_RESOURCE_GROUP: resource group of the target scale set (same subscription). Empty = this resource group.')
param targetResourceGroup string = resourceGroup().name

@description('VMSS_NAME: the target scale set (Uniform orchestration, upgradePolicy Manual).')
param scaleSetName string = 'canary-vmss'

@description('VMSS_ORCHESTRATION: orchestration mode of VMSS_NAME. Uniform: the role on the scale set; Flexible: on its resource group (its VMs and NICs are listed there). Empty = Uniform.')
@allowed([
  ''
  'Uniform'
  'Flexible'
])
param scaleSetOrchestration string = 'Uniform'

@description('TARGET_SCALE_SETS: the other scale sets the app may steer (the targets document\'s, the tagged ones), comma-separated, each `<scale set resource id>:<Uniform|Flexible>` (/subscriptions/<id>/resourceGroups/<rg>/providers/Microsoft.Compute/virtualMachineScaleSets/<name>:Flexible). Any subscription of the tenant. Empty = VMSS_NAME alone. deploy.sh and the azd preprovision hook check it (infra/scripts/check-targets.sh).')
param targetScaleSets string = ''

// main.parameters.json fills these from environment variables (azd, deploy.sh); an unset one arrives empty.
var targetGroup = empty(targetResourceGroup) ? resourceGroup().name : targetResourceGroup

// ---- the scale sets the function app may steer: VMSS_NAME, then targetScaleSets ----
// A quote-free string rather than an array parameter: main.parameters.json is shared with azd, which substitutes
// its environment into the file's text before parsing it (Azure/azure-dev cli/azd/pkg/infra/provisioning/bicep/
// bicep_provider.go @ e2de21b9, loadParameters: envsubst.Eval, then JSON), and deploy.sh does the same; a list
// of resource ids travels through both unchanged. Entries split by position: ['', 'subscriptions', <id>,
// 'resourceGroups', <rg>, 'providers', 'Microsoft.Compute', 'virtualMachineScaleSets', '<name>:<mode>'].
var vmssTarget = {
  subscription: subscription().subscriptionId
  resourceGroup: targetGroup
  scaleSetName: scaleSetName
  orchestration: empty(scaleSetOrchestration) ? 'Uniform' : scaleSetOrchestration
}
var listedTargets = [
  for entry in (empty(targetScaleSets) ? [] : split(targetScaleSets, ',')): {
    subscription: split(entry, '/')[2]
    resourceGroup: split(entry, '/')[4]
    scaleSetName: split(split(entry, '/')[8], ':')[0]
    orchestration: last(split(entry, ':'))
  }
]
var steeredTargets = concat([vmssTarget], listedTargets)

// One assignment per scale set and one per resource group, whatever the spelling (ARM names are case-insensitive):
// a role assignment PUT twice in one deployment, or VMSS_NAME listed again, must not race itself. A Uniform scale
// set in the resource group of a Flexible one needs nothing more: the resource group's role covers it.
// (Comparisons are written literal first and parenthesised: the offline parser, pycep, binds `a.b == c` as
// `a.(b == c)` otherwise.)
var scaleSetKeys = [for t in steeredTargets: toLower('${t.subscription}/${t.resourceGroup}/${t.scaleSetName}')]
var groupKeys = [for t in steeredTargets: toLower('${t.subscription}/${t.resourceGroup}')]
var flexibleGroupKeys = [for t in steeredTargets: ('Flexible' == t.orchestration) ? toLower('${t.subscription}/${t.resourceGroup}') : '']
// indexOf on an array: "the index of the first occurrence of an item", case-sensitive (Bicep array functions,
// learn.microsoft.com/azure/azure-resource-manager/bicep/bicep-functions-array#indexof); flatten joins the
// one-element and empty slices (same page, #flatten): a filter without lambdas.
var grantsScaleSet = [
  for (t, i) in steeredTargets: (('Uniform' == t.orchestration) && (indexOf(scaleSetKeys, scaleSetKeys[i]) == i)) && !contains(flexibleGroupKeys, groupKeys[i])
]
var grantsGroup = [
  for (t, i) in steeredTargets: ('Flexible' == t.orchestration) && (indexOf(flexibleGroupKeys, flexibleGroupKeys[i]) == i)
]
var uniformSlices = [for (t, i) in steeredTargets: grantsScaleSet[i] ? [t] : []]
var uniformTargets = flatten(uniformSlices)
var flexibleSlices = [for (t, i) in steeredTargets: grantsGroup[i] ? [t] : []]
var flexibleTargets = flatten(flexibleSlices)

@description('Create the walkthrough\'s demo scale set (3 Ubuntu LTS instances, nginx, load balancer) as the target.')
param deployDemoScaleSet bool = false

@description('SSH public key for the demo scale set\'s admin user (required when deployDemoScaleSet).')
param sshPublicKey string = ''

@description('VM size of the demo instances.')
param demoVmSku string = 'Standard_B2s'

@description('Blob name of the demo\'s initial (v0) release script, uploaded by deploy.sh.')
param demoInitialScriptName string = 'install_nginx.v0.sh'

@description('Without the demo: a subnet delegated to Microsoft.App/environments that can reach the instances\' private IPs (probes). Empty = no VNet integration (probes will fail).')
param integrationSubnetId string = ''

@description('Image releases: resource id of an Azure Compute Gallery (/subscriptions/<sub>/resourceGroups/<rg>/providers/Microsoft.Compute/galleries/<gallery>) or of a resource group holding images (/subscriptions/<sub>/resourceGroups/<rg>). The function app gets Reader there: ARM checks the caller\'s read access to the image a scale set model references (LinkedAuthorizationFailed). Empty = none (script releases only).')
param imageReaderScope string = ''

@description('TARGETS_CONFIG: blob name of the targets document in the release container (targets.yaml, .json or .yml). Empty = the scale set above is the only target.')
param targetsConfig string = ''

@description('TARGETS_DISCOVERY_SUBSCRIPTIONS: subscription ids whose scale sets tagged canary-group=<group> form groups. The function app gets Reader on each (modules/discovery-access.bicep).')
param targetsDiscoverySubscriptions array = []

@description('SIGNALS_METRICS: read the target scale set\'s Azure Monitor platform metrics per instance for the canary judge. The function app gets Monitoring Reader on that scale set (modules/signals-scale-set-access.bicep).')
param signalsMetrics bool = false

@description('SIGNALS_LOAD_BALANCER_ID: resource id of the load balancer in front of the scale set (/subscriptions/<sub>/resourceGroups/<rg>/providers/Microsoft.Network/loadBalancers/<name>); its health probe status is read per backend. The function app gets Monitoring Reader on it. Empty = not read.')
param signalsLoadBalancerId string = ''

@description('SIGNALS_LOGS_WORKSPACE_ID: the Log Analytics workspace id (its customerId, a GUID) the signals query runs in. Empty = no query.')
param signalsLogsWorkspaceId string = ''

@description('Resource id of that workspace (/subscriptions/<sub>/resourceGroups/<rg>/providers/Microsoft.OperationalInsights/workspaces/<name>): the function app gets Log Analytics Reader on it. Required with signalsLogsWorkspaceId.')
param signalsLogsWorkspaceResourceId string = ''

@description('SIGNALS_LOGS_QUERY: the KQL query (README, configuration table). Empty = the documented default.')
param signalsLogsQuery string = ''

@description('SIGNALS_LOGS_ENDPOINT: the Log Analytics query endpoint.')
param signalsLogsEndpoint string = 'https://api.loganalytics.io'

@description('Client id of an existing Microsoft Entra app registration (deploy.sh --entra creates one): App Service authentication with Entra ID in front of every route, HTTP_AUTH=entra. Empty = function keys only.')
param entraClientId string = ''

@description('Tenant of the app registration.')
param entraTenantId string = tenant().tenantId

@description('Object id of the operator (or CI principal) who uploads releases; gets Storage Blob Data Contributor on the release container only. Empty = none.')
param uploaderPrincipalId string = ''

@description('principalType of the uploader (AZURE_PRINCIPAL_TYPE under azd). Empty = User.')
@allowed([
  ''
  'User'
  'ServicePrincipal'
  'Group'
])
param uploaderPrincipalType string = 'User'

// ---- the configuration contract (docs/design.md "Configuration"); defaults are rollout/policy.py's ----
@description('EXTENSION_NAME: the CustomScript extension\'s name on the scale set.')
param extensionName string = 'CustomScript'

@description('EXTENSION_FILE_AUTH: how instances fetch release scripts.')
@allowed([
  'managedIdentity'
  'none'
])
param extensionFileAuth string = 'managedIdentity'

@description('EXTENSION_IDENTITY_CLIENT_ID: client id of a user-assigned identity on the scale set; empty = its system-assigned identity.')
param extensionIdentityClientId string = ''

@description('STATE_TABLE_PREFIX: prefix of the state table names.')
param stateTablePrefix string = ''

@description('ROLLOUT_TICK_SCHEDULE: NCRONTAB (with seconds) of the advance_rollouts timer.')
param tickSchedule string = '*/30 * * * * *'

@description('TICK_QUEUE: the Storage queue the timer puts one message per target on (3-56 characters: `<name>-poison` is its poison queue).')
@minLength(3)
@maxLength(56)
param tickQueueName string = 'rollout-ticks'

@description('TICK_READ_BURST: ARM reads the ticks of one timer run may make at once (ARM\'s subscription read bucket holds 250).')
@minValue(0)
param tickReadBurst int = 100

@description('TICK_READ_RATE: ARM reads per second after the burst, a decimal string (ARM refills 25 a second).')
param tickReadRate string = '20'

// ---- notifications (docs/design.md "Notifications"): where phase changes go ----
@description('NOTIFY_QUEUE: the Storage queue phase changes wait on for delivery (3-56 characters: `<name>-poison` holds the dead letters).')
@minLength(3)
@maxLength(56)
param notifyQueueName string = 'rollout-notifications'

@description('NOTIFY_WEBHOOK_URL: a generic JSON webhook. The URL is a secret: pass a Key Vault reference, @Microsoft.KeyVault(SecretUri=...), and grant the app Key Vault Secrets User on that vault; empty = off.')
param notifyWebhookUrl string = ''

@description('NOTIFY_TEAMS_WEBHOOK_URL: a Teams incoming webhook, as a Key Vault reference (see notifyWebhookUrl); empty = off.')
param notifyTeamsWebhookUrl string = ''

@description('NOTIFY_SLACK_WEBHOOK_URL: a Slack incoming webhook, as a Key Vault reference (see notifyWebhookUrl); empty = off.')
param notifySlackWebhookUrl string = ''

@description('Create an Event Grid custom topic (CloudEvents 1.0, Entra auth only) for the notifications and let the app publish to it (EventGrid Data Sender); sets NOTIFY_EVENTGRID_ENDPOINT.')
param deployNotifyTopic bool = false

@description('NOTIFY_MAX_ATTEMPTS: delivery attempts per channel before a notification is dead-lettered.')
@minValue(1)
@maxValue(20)
param notifyMaxAttempts int = 6

@description('NOTIFY_RETRY_BASE_SECONDS: the first retry delay, doubling each time (a decimal string).')
param notifyRetryBaseSeconds string = '30'

@description('NOTIFY_TIMEOUT_SECONDS: each delivery request\'s timeout (a decimal string).')
param notifyTimeoutSeconds string = '10'

@minValue(1)
param canaryCount int = 1

@minValue(0)
param bakeSeconds int = 300

@minValue(1)
@maxValue(100)
param batchPercent int = 20

@description('Fixed batch size; 0 = use batchPercent.')
@minValue(0)
param batchSize int = 0

@description('How promotion batches are sized: batchSize/batchPercent every batch ("fixed"), or 1, 2, 4, ... instances capped by maxUnavailable ("progressive").')
@allowed([
  'fixed'
  'progressive'
])
param batchMode string = 'fixed'

@description('A count ("2") or a share of the fleet ("25%").')
param maxUnavailable string = '20%'

@minValue(1)
param failureThreshold int = 3

@minValue(1)
param progressDeadlineSeconds int = 900

@minValue(1)
param upgradeRetrySeconds int = 300

@description('While an upgrade runs, the engine looks again this often (times the targets with work) instead of waiting for the timer, and at the bake end; 0: the timer only (rollout.cadence).')
@minValue(0)
@maxValue(3600)
param lookIntervalSeconds int = 5

@minValue(1)
param minHealthyInstances int = 1

@description('Script releases: reimage instances moved back to the baseline (a fresh disk).')
param rollbackReimage bool = true

@description('How a rollback uses capacity: unhealthy instances at once, healthy ones within maxUnavailable ("budgeted"), or every instance in one call ("all-at-once").')
@allowed([
  'budgeted'
  'all-at-once'
])
param rollbackMode string = 'budgeted'

@description('Canary vs baseline median latency ratio that counts as unhealthy; "0" = off.')
param latencyRatio string = '0'

@description('Milliseconds the canary must also be slower by, for LATENCY_RATIO to count.')
param latencyMinDeltaMs string = '50'

@description('Canary judge: false-Fail rate over a whole bake (docs/safety.md, "The canary judge").')
param judgeAlpha string = '0.05'

@description('Canary judge: chance of an early Pass of a canary worse than the allowed effect.')
param judgePassAlpha string = '0.05'

@description('Canary judge: allowed increase of the error rate over the baseline, in percentage points.')
param judgeErrorMarginPercent string = '1'

@description('Canary judge: allowed slowdown against the baseline (a ratio, plus LATENCY_MIN_DELTA_MS).')
param judgeLatencyRatio string = '1.2'

@description('Canary judge: requests (or latencies) per side before a metric is tested.')
param judgeMinSamples string = '10'

@description('Canary judge: at the end of the bake, a metric beyond its allowed effect with a p-value below this is Marginal.')
param judgeMarginalP string = '0.1'

param probePath string = '/'

@minValue(1)
@maxValue(65535)
param probePort int = 80

@minValue(100)
@maxValue(599)
param probeExpectStatus int = 200

@description('Regular expression the probed page must match; empty = any body.')
param probeBodyPattern string = ''

@description('Seconds; a decimal string, e.g. "3" or "2.5".')
param probeTimeoutSeconds string = '3'

module storage 'modules/storage.bicep' = {
  name: 'storage'
  params: {
    name: storageAccountName
    location: location
    tags: allTags
    releaseContainerName: releaseContainerName
    deploymentContainerName: deploymentContainerName
    stateTablePrefix: stateTablePrefix
    tickQueueName: tickQueueName
    notifyQueueName: notifyQueueName
  }
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  params: {
    namePrefix: namePrefix
    location: location
    tags: allTags
  }
}

module demo 'modules/demo-scale-set.bicep' = if (deployDemoScaleSet) {
  name: 'demo-scale-set'
  scope: resourceGroup(targetGroup)
  params: {
    location: location
    tags: allTags
    scaleSetName: scaleSetName
    vmSku: demoVmSku
    sshPublicKey: sshPublicKey
    httpPort: probePort
  }
}

module notifyTopic 'modules/notify-topic.bicep' = if (deployNotifyTopic) {
  name: 'notify-topic'
  params: {
    name: '${namePrefix}-notify'
    location: location
    tags: allTags
  }
}

module functionApp 'modules/functionapp.bicep' = {
  name: 'function-app'
  params: {
    namePrefix: namePrefix
    location: location
    tags: allTags
    storageAccountName: storage.outputs.accountName
    deploymentContainerName: storage.outputs.deploymentContainerName
    insightsName: monitoring.outputs.insightsName
    integrationSubnetId: deployDemoScaleSet ? demo.outputs.functionSubnetId : integrationSubnetId
    entraClientId: entraClientId
    entraTenantId: entraTenantId
    // Every variable rollout/settings.py reads, except the ones deliberately unset in Azure
    // (tests/infra/test_bicep.py lists them with the reason).
    contractSettings: {
      AZURE_SUBSCRIPTION_ID: subscription().subscriptionId
      VMSS_RESOURCE_GROUP: targetGroup
      VMSS_NAME: scaleSetName
      ARM_ENDPOINT: environment().resourceManager
      ReleaseStorage__blobServiceUri: storage.outputs.blobEndpoint
      StateStorage__tableServiceUri: storage.outputs.tableEndpoint
      RELEASE_CONTAINER: storage.outputs.releaseContainerName
      EXTENSION_NAME: extensionName
      EXTENSION_FILE_AUTH: extensionFileAuth
      EXTENSION_IDENTITY_CLIENT_ID: extensionIdentityClientId
      STATE_TABLE_PREFIX: stateTablePrefix
      ROLLOUT_TICK_SCHEDULE: tickSchedule
      TICK_QUEUE: storage.outputs.tickQueueName
      TickQueue__queueServiceUri: storage.outputs.queueEndpoint
      TICK_READ_BURST: string(tickReadBurst)
      TICK_READ_RATE: tickReadRate
      CANARY_COUNT: string(canaryCount)
      BAKE_SECONDS: string(bakeSeconds)
      BATCH_PERCENT: string(batchPercent)
      BATCH_SIZE: string(batchSize)
      BATCH_MODE: batchMode
      MAX_UNAVAILABLE: maxUnavailable
      FAILURE_THRESHOLD: string(failureThreshold)
      PROGRESS_DEADLINE_SECONDS: string(progressDeadlineSeconds)
      UPGRADE_RETRY_SECONDS: string(upgradeRetrySeconds)
      LOOK_INTERVAL_SECONDS: string(lookIntervalSeconds)
      MIN_HEALTHY_INSTANCES: string(minHealthyInstances)
      ROLLBACK_REIMAGE: rollbackReimage ? 'true' : 'false'
      ROLLBACK_MODE: rollbackMode
      LATENCY_RATIO: latencyRatio
      LATENCY_MIN_DELTA_MS: latencyMinDeltaMs
      JUDGE_ALPHA: judgeAlpha
      JUDGE_PASS_ALPHA: judgePassAlpha
      JUDGE_ERROR_MARGIN_PERCENT: judgeErrorMarginPercent
      JUDGE_LATENCY_RATIO: judgeLatencyRatio
      JUDGE_MIN_SAMPLES: judgeMinSamples
      JUDGE_MARGINAL_P: judgeMarginalP
      PROBE_PATH: probePath
      PROBE_PORT: string(probePort)
      PROBE_EXPECT_STATUS: string(probeExpectStatus)
      PROBE_BODY_PATTERN: probeBodyPattern
      PROBE_TIMEOUT_SECONDS: probeTimeoutSeconds
      TARGETS_CONFIG: targetsConfig
      TARGETS_DISCOVERY_SUBSCRIPTIONS: join(targetsDiscoverySubscriptions, ',')
      SIGNALS_METRICS: signalsMetrics ? 'true' : 'false'
      SIGNALS_LOAD_BALANCER_ID: signalsLoadBalancerId
      SIGNALS_LOGS_WORKSPACE_ID: signalsLogsWorkspaceId
      SIGNALS_LOGS_QUERY: signalsLogsQuery
      SIGNALS_LOGS_ENDPOINT: signalsLogsEndpoint
      NOTIFY_QUEUE: storage.outputs.notifyQueueName
      NOTIFY_WEBHOOK_URL: notifyWebhookUrl
      NOTIFY_TEAMS_WEBHOOK_URL: notifyTeamsWebhookUrl
      NOTIFY_SLACK_WEBHOOK_URL: notifySlackWebhookUrl
      NOTIFY_EVENTGRID_ENDPOINT: deployNotifyTopic ? notifyTopic!.outputs.endpoint : ''
      NOTIFY_MAX_ATTEMPTS: string(notifyMaxAttempts)
      NOTIFY_RETRY_BASE_SECONDS: notifyRetryBaseSeconds
      NOTIFY_TIMEOUT_SECONDS: notifyTimeoutSeconds
    }
  }
}

// The notification topic: the app's identity may publish to it (EventGrid Data Sender on the topic alone).
module notifyTopicAccess 'modules/notify-topic-access.bicep' = if (deployNotifyTopic) {
  name: 'notify-topic-access'
  params: {
    topicName: notifyTopic!.outputs.name
    principalId: functionApp.outputs.principalId
  }
}

// Each Uniform target: Virtual Machine Contributor on the scale set, in its resource group, in any subscription of
// the tenant: `scope: resourceGroup(<subscription id>, <resource group>)` deploys the module there ("If the
// resource group is in a different subscription, provide the subscription ID and the name of the resource group",
// learn.microsoft.com/azure/azure-resource-manager/bicep/deploy-to-resource-group, "Scope to different resource
// group"). The scale set must exist before its role can be assigned: the demo creates it, otherwise it is yours.
module targetAccess 'modules/target-access.bicep' = [
  for (t, i) in uniformTargets: {
    name: 'target-access-${i}'
    scope: resourceGroup(t.subscription, t.resourceGroup)
    dependsOn: [
      demo
    ]
    params: {
      scaleSetName: t.scaleSetName
      principalId: functionApp.outputs.principalId
    }
  }
]

// Each resource group holding a Flexible target: Virtual Machine Contributor on the resource group (its VMs and
// NICs are listed there; modules/target-group-access.bicep says why nothing narrower works).
module targetGroupAccess 'modules/target-group-access.bicep' = [
  for (t, i) in flexibleTargets: {
    name: 'target-group-access-${i}'
    scope: resourceGroup(t.subscription, t.resourceGroup)
    params: {
      principalId: functionApp.outputs.principalId
    }
  }
]

// Tag discovery: Reader for the function app on each subscription it lists scale sets in.
module discoveryAccess 'modules/discovery-access.bicep' = [
  for sub in targetsDiscoverySubscriptions: {
    name: 'discovery-access-${sub}'
    scope: subscription(sub)
    params: {
      principalId: functionApp.outputs.principalId
    }
  }
]

// Image releases: Reader for the function app on the gallery (or the image resource group). The module runs in
// that resource group: /subscriptions/{sub}/resourceGroups/{rg}[/providers/Microsoft.Compute/galleries/{name}].
// The fallback to this resource group's id only keeps the segment indexes valid when the module is off.
var imageScopeSegments = split(empty(imageReaderScope) ? resourceGroup().id : imageReaderScope, '/')

module imageAccess 'modules/image-access.bicep' = if (!empty(imageReaderScope)) {
  name: 'image-access'
  scope: resourceGroup(imageScopeSegments[2], imageScopeSegments[4])
  params: {
    galleryName: (length(imageScopeSegments) > 8) ? imageScopeSegments[8] : ''
    principalId: functionApp.outputs.principalId
  }
}

// The canary judge's signals (rollout/adapters/signals.py): read access to exactly what the SIGNALS_* settings
// name. Each module runs in the resource group of what it grants access to. The fallbacks to this resource
// group's id only keep the segment indexes valid when a module is off.
var signalsLbSegments = split(empty(signalsLoadBalancerId) ? resourceGroup().id : signalsLoadBalancerId, '/')
var signalsWorkspaceSegments = split(empty(signalsLogsWorkspaceResourceId) ? resourceGroup().id : signalsLogsWorkspaceResourceId, '/')

module signalsScaleSetAccess 'modules/signals-scale-set-access.bicep' = if (signalsMetrics) {
  name: 'signals-scale-set-access'
  scope: resourceGroup(targetGroup)
  dependsOn: [
    demo
  ]
  params: {
    scaleSetName: scaleSetName
    principalId: functionApp.outputs.principalId
  }
}

module signalsLoadBalancerAccess 'modules/signals-load-balancer-access.bicep' = if (!empty(signalsLoadBalancerId)) {
  name: 'signals-load-balancer-access'
  scope: resourceGroup(signalsLbSegments[2], signalsLbSegments[4])
  params: {
    loadBalancerName: (length(signalsLbSegments) > 8) ? signalsLbSegments[8] : ''
    principalId: functionApp.outputs.principalId
  }
}

module signalsWorkspaceAccess 'modules/signals-workspace-access.bicep' = if (!empty(signalsLogsWorkspaceResourceId)) {
  name: 'signals-workspace-access'
  scope: resourceGroup(signalsWorkspaceSegments[2], signalsWorkspaceSegments[4])
  params: {
    workspaceName: (length(signalsWorkspaceSegments) > 8) ? signalsWorkspaceSegments[8] : ''
    principalId: functionApp.outputs.principalId
  }
}

module releaseAccess 'modules/release-access.bicep' = {
  name: 'release-access'
  params: {
    storageAccountName: storage.outputs.accountName
    releaseContainerName: storage.outputs.releaseContainerName
    scaleSetPrincipalId: deployDemoScaleSet ? demo.outputs.principalId : ''
    uploaderPrincipalId: uploaderPrincipalId
    uploaderPrincipalType: empty(uploaderPrincipalType) ? 'User' : uploaderPrincipalType
  }
}

// After releaseAccess: the extension's first run must find the identity's role in place.
module demoExtension 'modules/demo-extension.bicep' = if (deployDemoScaleSet) {
  name: 'demo-extension'
  scope: resourceGroup(targetGroup)
  dependsOn: [
    releaseAccess
  ]
  params: {
    scaleSetName: scaleSetName
    extensionName: extensionName
    scriptUri: '${storage.outputs.blobEndpoint}${releaseContainerName}/${demoInitialScriptName}'
    scriptName: demoInitialScriptName
  }
}

// Event Grid system topic on the account; its BlobCreated subscription is eventgrid.bicep (post-publish).
resource storageAccount 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource systemTopic 'Microsoft.EventGrid/systemTopics@2022-06-15' = {
  name: '${namePrefix}-storage-events'
  location: location
  tags: allTags
  dependsOn: [
    storage
  ]
  properties: {
    source: storageAccount.id
    topicType: 'Microsoft.Storage.StorageAccounts'
  }
}

output functionAppName string = functionApp.outputs.name
output functionAppHostName string = functionApp.outputs.defaultHostName
output storageAccountName string = storage.outputs.accountName
output blobEndpoint string = storage.outputs.blobEndpoint
output releaseContainerName string = storage.outputs.releaseContainerName
output systemTopicName string = systemTopic.name
output targetResourceGroup string = targetGroup
output scaleSetName string = scaleSetName
output demoPublicIp string = deployDemoScaleSet ? demo.outputs.publicIpAddress : ''
output demoInitialScriptName string = demoInitialScriptName
output httpAuth string = empty(entraClientId) ? 'function-key' : 'entra'

// The Azure Developer CLI stores each output as an environment variable of the same name, which its hooks
// read (learn.microsoft.com/azure/developer/azure-developer-cli/manage-environment-variables, "Output from
// Bicep"): infra/scripts/subscribe-events.sh uses these after `azd deploy`.
output FUNCTION_APP_NAME string = functionApp.outputs.name
output SYSTEM_TOPIC_NAME string = systemTopic.name
output RELEASE_CONTAINER_NAME string = storage.outputs.releaseContainerName
