// The demo scale set's v0 CustomScript extension, added to the MODEL only (upgradePolicy Manual: running
// instances are untouched until deploy.sh runs `az vmss update-instances --instance-ids '*'`, after it has
// uploaded the v0 script). The script is fetched from the release container with the scale set's
// system-assigned identity (`managedIdentity: {}`), the same way the product's releases are.
//
// fileUris and commandToExecute are in the public settings on purpose: the product records the current
// model as a rollout's baseline, and protected settings are never returned by a GET.

param scaleSetName string

@description('Extension name (EXTENSION_NAME): the product rewrites this extension\'s settings.')
param extensionName string

@description('Full blob URL of the v0 install script.')
param scriptUri string

@description('Blob name of the v0 script (what the extension runs).')
param scriptName string

resource scaleSet 'Microsoft.Compute/virtualMachineScaleSets@2024-07-01' existing = {
  name: scaleSetName
}

resource customScript 'Microsoft.Compute/virtualMachineScaleSets/extensions@2024-07-01' = {
  parent: scaleSet
  name: extensionName
  properties: {
    publisher: 'Microsoft.Azure.Extensions'
    type: 'CustomScript'
    typeHandlerVersion: '2.1'
    autoUpgradeMinorVersion: true
    settings: {
      fileUris: [
        scriptUri
      ]
      commandToExecute: 'bash ${scriptName}'
    }
    protectedSettings: {
      managedIdentity: {}
    }
  }
}
