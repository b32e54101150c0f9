#!/usr/bin/env bash
# One command from clone to a working deployment (see infra/README.md):
#
#   infra/deploy.sh <resource-group> <location> [--demo] [--ssh-key <file.pub>] [-- <extra az params>]
#
# 1. main.bicep: storage, monitoring, the Flex Consumption app, roles (and the demo scale set);
# 2. publish the function code (zip deploy with a remote build of requirements.txt);
# 3. demo only: upload the v0 script and bring the instances to the model (update-instances *);
# 4. eventgrid.bicep: the BlobCreated subscription. It comes last because its webhook URL carries the
#    blobs extension's system key, which the Functions host creates only when the published app with
#    its Event Grid blob trigger starts - and Event Grid validates the webhook at creation;
# 5. print the endpoints and how to get a function key.
set -euo pipefail

usage() {
  sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
}

[[ $# -ge 2 ]] || usage
resource_group=$1
location=$2
shift 2
demo=false
ssh_key_file=""
extra=()
while [[ $# -gt 0 ]]; do
  case $1 in
    --demo) demo=true ;;
    --ssh-key) ssh_key_file=$2; shift ;;
    --) shift; extra=("$@"); break ;;
    *) usage ;;
  esac
  shift
done

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)

for tool in az zip; do
  command -v "$tool" >/dev/null || { echo "deploy.sh needs '$tool' on PATH" >&2; exit 1; }
done
az account show --query id --output tsv >/dev/null || { echo "run 'az login' first" >&2; exit 1; }

params=(--parameters "@$here/main.parameters.json" --parameters "deployDemoScaleSet=$demo")
if [[ $demo == true ]]; then
  if [[ -z $ssh_key_file ]]; then
    for candidate in ~/.ssh/id_ed25519.pub ~/.ssh/id_rsa.pub; do
      [[ -f $candidate ]] && { ssh_key_file=$candidate; break; }
    done
  fi
  [[ -n $ssh_key_file && -f $ssh_key_file ]] || { echo "--demo needs an SSH public key (--ssh-key)" >&2; exit 1; }
  params+=(--parameters "sshPublicKey=$(<"$ssh_key_file")")
fi

# The operator gets Storage Blob Data Contributor on the release container (uploads; shared key is off).
uploader=$(az ad signed-in-user show --query id --output tsv 2>/dev/null || true)
if [[ -n $uploader ]]; then
  params+=(--parameters "uploaderPrincipalId=$uploader" --parameters uploaderPrincipalType=User)
fi

echo "==> resource group $resource_group ($location)"
az group create --name "$resource_group" --location "$location" --output none

echo "==> main.bicep"
az deployment group create --resource-group "$resource_group" --name vmss-canary \
  --template-file "$here/main.bicep" "${params[@]}" "${extra[@]}" --output none
output() {
  az deployment group show --resource-group "$resource_group" --name vmss-canary \
    --query "properties.outputs.$1.value" --output tsv
}
app=$(output functionAppName)
host=$(output functionAppHostName)
account=$(output storageAccountName)
container=$(output releaseContainerName)
topic=$(output systemTopicName)
target_rg=$(output targetResourceGroup)
vmss=$(output scaleSetName)

echo "==> publish the function code to $app"
package=$(mktemp -d)/app.zip
trap 'rm -rf "$(dirname "$package")"' EXIT
(cd "$repo" && zip -q -r "$package" function_app.py host.json requirements.txt rollout \
  -x '*__pycache__*' '*.pyc')
if command -v func >/dev/null; then
  (cd "$repo" && func azure functionapp publish "$app" --python)
else
  az functionapp deployment source config-zip --resource-group "$resource_group" --name "$app" \
    --src "$package" --build-remote true --output none
fi

if [[ $demo == true ]]; then
  script=$(output demoInitialScriptName)
  echo "==> demo: upload $script (before the Event Grid subscription: v0 is the baseline, not a release)"
  # The role assignment for the operator may take a minute to propagate.
  for attempt in 1 2 3 4 5 6; do
    az storage blob upload --auth-mode login --account-name "$account" --container-name "$container" \
      --name "$script" --file "$here/scripts/install_nginx.v0.sh" --overwrite --output none && break
    [[ $attempt == 6 ]] && exit 1
    sleep 20
  done
  echo "==> demo: apply the CustomScript model to every instance"
  az vmss update-instances --resource-group "$target_rg" --name "$vmss" --instance-ids '*' --output none
fi

echo "==> Event Grid subscription (waits for the blobs extension key)"
for attempt in $(seq 1 30); do
  key=$(az functionapp keys list --resource-group "$resource_group" --name "$app" \
    --query "systemKeys.blobs_extension" --output tsv 2>/dev/null || true)
  [[ -n $key ]] && break
  [[ $attempt == 30 ]] && { echo "blobs_extension key never appeared: is the app running?" >&2; exit 1; }
  sleep 10
done
az deployment group create --resource-group "$resource_group" --name vmss-canary-eventgrid \
  --template-file "$here/eventgrid.bicep" \
  --parameters "functionAppName=$app" "systemTopicName=$topic" "releaseContainerName=$container" \
  --output none

cat <<DONE

Deployed.
  function app     https://$host
  rollouts         GET  https://$host/api/rollouts
  steer            POST https://$host/api/rollouts/{id}/{abort|pause|resume|promote|promote-full|retry}
  release upload   az storage blob upload --auth-mode login --account-name $account \\
                     --container-name $container --name install_nginx.v1.sh --file install_nginx.v1.sh
  target           $target_rg/$vmss
DONE
if [[ $demo == true ]]; then
  echo "  demo site        http://$(output demoPublicIp)/"
fi
cat <<DONE

Function key (send as the x-functions-key header):
  az functionapp keys list --resource-group $resource_group --name $app --query functionKeys.default --output tsv
DONE
