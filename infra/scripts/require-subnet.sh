#!/bin/sh
# Refuses to deploy against your own scale set without VNet integration, and says why. Used by
# infra/deploy.sh and, through scripts/preprovision.sh (the `preprovision` hook in azure.yaml), by `azd provision` / `azd up`.
#
#   require-subnet.sh <demo: true|false> <integrationSubnetId>   (deploy.sh)
#   require-subnet.sh                                            (azd: INTEGRATION_SUBNET_ID, VMSS_NAME)
#
# Why: the product probes every instance's private IP on PROBE_PORT. A function app reaches private IPs
# only through VNet integration (integrationSubnetId); without it every probe fails, and pre-flight rejects
# every release as "0 of N healthy". The demo brings its own VNet and subnet.
set -eu

if [ $# -eq 0 ]; then
  demo=false
  subnet=${INTEGRATION_SUBNET_ID:-}
  how="azd env set INTEGRATION_SUBNET_ID <subnet resource id>"
  if [ -z "${VMSS_NAME:-}" ]; then
    echo "refusing to provision: no target scale set. Set it with: azd env set VMSS_NAME <scale set name>" \
      "(and VMSS_RESOURCE_GROUP if it is not in the azd resource group)." >&2
    exit 1
  fi
else
  demo=$1
  subnet=${2:-}
  how="infra/deploy.sh <rg> <location> -- --parameters integrationSubnetId=<subnet resource id> (or INTEGRATION_SUBNET_ID=<id>), or --demo"
fi

[ "$demo" = true ] && exit 0
[ -n "$subnet" ] && exit 0

echo "refusing to deploy without integrationSubnetId: the product probes each instance's private IP, which" \
  "the function app reaches only through VNet integration; without a subnet every probe fails and pre-flight" \
  "rejects every release (\"0 of N healthy\"). Give a subnet delegated to Microsoft.App/environments that can" \
  "reach the instances on PROBE_PORT: $how" >&2
exit 1
