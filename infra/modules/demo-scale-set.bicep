// The walkthrough's demo fleet, for trying the product end to end (main.bicep: deployDemoScaleSet):
// a VNet, a public Standard load balancer with the `nginx` HTTP probe and rule on port 80, and a Uniform
// scale set of 3 Ubuntu LTS instances with upgradePolicy Manual (the product refuses Rolling/Automatic)
// and a system-assigned identity (it fetches release scripts from the release container with it).
//
// The CustomScript extension is NOT part of this model: it is added by demo-extension.bicep after the
// identity has been granted read on the release container, and applied by deploy.sh with
// `az vmss update-instances` once the v0 script has been uploaded. Putting it here would make the first
// boot fetch a script that does not exist yet with an identity that has no role yet.
//
// The VNet also holds the function app's integration subnet: the product probes each instance's private
// IP (PROBE_PORT), which is only reachable from inside the VNet.

param location string
param tags object = {}
param scaleSetName string

@description('VM size of the instances.')
param vmSku string = 'Standard_B2s'

@minValue(1)
@maxValue(100)
param instanceCount int = 3

param adminUsername string = 'azureuser'

@description('SSH public key (OpenSSH format) for adminUsername; password login is disabled.')
param sshPublicKey string

param addressPrefix string = '10.42.0.0/16'
param instanceSubnetPrefix string = '10.42.1.0/24'
param functionSubnetPrefix string = '10.42.2.0/24'

@description('Port nginx serves on; the load balancer probe and rule use it.')
param httpPort int = 80

var lbName = '${scaleSetName}LB'
var frontendName = 'frontend'
var backendPoolName = '${scaleSetName}LBBEPool'

resource instanceNsg 'Microsoft.Network/networkSecurityGroups@2024-05-01' = {
  name: '${scaleSetName}-nsg'
  location: location
  tags: tags
  properties: {
    securityRules: [
      {
        // Standard load balancers are closed by default: nginx must be allowed explicitly. SSH is not opened.
        name: 'allow-http'
        properties: {
          priority: 100
          direction: 'Inbound'
          access: 'Allow'
          protocol: 'Tcp'
          sourceAddressPrefix: 'Internet'
          sourcePortRange: '*'
          destinationAddressPrefix: '*'
          destinationPortRange: string(httpPort)
        }
      }
    ]
  }
}

resource functionNsg 'Microsoft.Network/networkSecurityGroups@2024-05-01' = {
  name: '${scaleSetName}-func-nsg'
  location: location
  tags: tags
  properties: {
    securityRules: []
  }
}

resource vnet 'Microsoft.Network/virtualNetworks@2024-05-01' = {
  name: '${scaleSetName}-vnet'
  location: location
  tags: tags
  properties: {
    addressSpace: {
      addressPrefixes: [
        addressPrefix
      ]
    }
    subnets: [
      {
        name: 'instances'
        properties: {
          addressPrefix: instanceSubnetPrefix
          networkSecurityGroup: {
            id: instanceNsg.id
          }
        }
      }
      {
        // Flex Consumption VNet integration requires a subnet delegated to Microsoft.App/environments.
        name: 'functions'
        properties: {
          addressPrefix: functionSubnetPrefix
          networkSecurityGroup: {
            id: functionNsg.id
          }
          delegations: [
            {
              name: 'flex'
              properties: {
                serviceName: 'Microsoft.App/environments'
              }
            }
          ]
        }
      }
    ]
  }
}

resource publicIp 'Microsoft.Network/publicIPAddresses@2024-05-01' = {
  name: '${lbName}-ip'
  location: location
  tags: tags
  sku: {
    name: 'Standard'
  }
  properties: {
    publicIPAllocationMethod: 'Static'
  }
}

resource loadBalancer 'Microsoft.Network/loadBalancers@2024-05-01' = {
  name: lbName
  location: location
  tags: tags
  sku: {
    name: 'Standard'
  }
  properties: {
    frontendIPConfigurations: [
      {
        name: frontendName
        properties: {
          publicIPAddress: {
            id: publicIp.id
          }
        }
      }
    ]
    backendAddressPools: [
      {
        name: backendPoolName
      }
    ]
    probes: [
      {
        name: 'nginx'
        properties: {
          protocol: 'Http'
          port: httpPort
          requestPath: '/'
          intervalInSeconds: 5
          numberOfProbes: 2
        }
      }
    ]
    loadBalancingRules: [
      {
        name: 'nginx'
        properties: {
          protocol: 'Tcp'
          frontendPort: httpPort
          backendPort: httpPort
          frontendIPConfiguration: {
            id: resourceId('Microsoft.Network/loadBalancers/frontendIPConfigurations', lbName, frontendName)
          }
          backendAddressPool: {
            id: resourceId('Microsoft.Network/loadBalancers/backendAddressPools', lbName, backendPoolName)
          }
          probe: {
            id: resourceId('Microsoft.Network/loadBalancers/probes', lbName, 'nginx')
          }
          // Outbound (apt-get in the install script) goes through the explicit outbound rule below.
          disableOutboundSnat: true
        }
      }
    ]
    outboundRules: [
      {
        name: 'outbound'
        properties: {
          protocol: 'All'
          frontendIPConfigurations: [
            {
              id: resourceId('Microsoft.Network/loadBalancers/frontendIPConfigurations', lbName, frontendName)
            }
          ]
          backendAddressPool: {
            id: resourceId('Microsoft.Network/loadBalancers/backendAddressPools', lbName, backendPoolName)
          }
        }
      }
    ]
  }
}

resource scaleSet 'Microsoft.Compute/virtualMachineScaleSets@2024-07-01' = {
  name: scaleSetName
  location: location
  tags: tags
  sku: {
    name: vmSku
    tier: 'Standard'
    capacity: instanceCount
  }
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    //checkov:skip=CKV_AZURE_95: automatic OS image upgrades would re-image instances behind the canary controller's back; with upgradePolicy Manual every model change goes through a canary rollout (image releases included)
    //checkov:skip=CKV_AZURE_97: encryption at host needs the EncryptionAtHost subscription feature registered; a demo fleet must deploy on any subscription (platform-managed disk encryption still applies)
    orchestrationMode: 'Uniform'
    // The canary is the exact instance the product upgrades; overprovisioned extra VMs would blur that.
    overprovision: false
    upgradePolicy: {
      mode: 'Manual'
    }
    virtualMachineProfile: {
      osProfile: {
        computerNamePrefix: take(replace(scaleSetName, '-', ''), 9)
        adminUsername: adminUsername
        linuxConfiguration: {
          disablePasswordAuthentication: true
          ssh: {
            publicKeys: [
              {
                path: '/home/${adminUsername}/.ssh/authorized_keys'
                keyData: sshPublicKey
              }
            ]
          }
        }
      }
      storageProfile: {
        imageReference: {
          publisher: 'Canonical'
          offer: 'ubuntu-24_04-lts'
          sku: 'server'
          version: 'latest'
        }
        osDisk: {
          createOption: 'FromImage'
          caching: 'ReadWrite'
          managedDisk: {
            storageAccountType: 'Standard_LRS'
          }
        }
      }
      networkProfile: {
        networkInterfaceConfigurations: [
          {
            name: 'nic'
            properties: {
              primary: true
              ipConfigurations: [
                {
                  name: 'ipconfig'
                  properties: {
                    subnet: {
                      id: vnet.properties.subnets[0].id
                    }
                    loadBalancerBackendAddressPools: [
                      {
                        id: loadBalancer.properties.backendAddressPools[0].id
                      }
                    ]
                  }
                }
              ]
            }
          }
        ]
      }
    }
  }
}

output scaleSetId string = scaleSet.id
output principalId string = scaleSet.identity.principalId
output functionSubnetId string = vnet.properties.subnets[1].id
output publicIpAddress string = publicIp.properties.ipAddress
