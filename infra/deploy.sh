#!/usr/bin/env bash
# One command from clone to a working deployment (see infra/README.md):
#
#   infra/deploy.sh <resource-group> <location> [--demo] [--ssh-key <file.pub>] [--entra] [--targets <file>]
#                   [-- <extra az params>]
#
#   --demo     also deploy the walkthrough's nginx fleet (its own VNet and integration subnet)
#   --entra    create or update the Microsoft Entra app registration (app roles Rollouts.Read and
#              Rollouts.Operate) and turn on App Service authentication with it (entraClientId)
#   --targets  a file naming the other scale sets the app may steer, one a line (# comments and blank lines
#              ignored): <scale set resource id>:<Uniform|Flexible>; sets targetScaleSets (scripts/check-targets.sh)
#   Without --demo, integrationSubnetId is required (or INTEGRATION_SUBNET_ID): see scripts/require-subnet.sh.
#   Optional environment: INTEGRATION_SUBNET_ID, IMAGE_READER_SCOPE, ENTRA_CLIENT_ID, VMSS_ORCHESTRATION,
#   TARGET_SCALE_SETS (main.parameters.json).
#
# 1. main.bicep: storage, monitoring, the Flex Consumption app, roles (and the demo scale set);
# 2. publish the function code (zip deploy with a remote build of requirements.txt);
# 3. demo only: upload the v0 script and bring the instances to the model (update-instances *);
# 4. scripts/subscribe-events.sh: the BlobCreated subscription (eventgrid.bicep), last because its webhook
#    URL carries the blobs extension's system key, which exists only once the published app runs;
# 5. print the endpoints and how to call them.
set -euo pipefail

usage() {
  sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
}

[[ $# -ge 2 ]] || usage
resource_group=$1
location=$2
shift 2
demo=false
entra=false
ssh_key_file=""
targets_file=""
extra=()
while [[ $# -gt 0 ]]; do
  case $1 in
    --demo) demo=true ;;
    --entra) entra=true ;;
    --ssh-key) ssh_key_file=$2; shift ;;
    --targets) [[ $# -ge 2 ]] || usage; targets_file=$2; shift ;;
    --) shift; extra=("$@"); break ;;
    *) usage ;;
  esac
  shift
done

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)

# The value a parameter gets from the extra `az` arguments (name=value; the last one wins, as in az), or
# "from-file" when a parameters file passed there mentions it.
extra_parameter() {
  local name=$1 found="" arg
  for arg in "${extra[@]}"; do
    case $arg in
      "$name="*) found=${arg#*=} ;;
      @*) [[ -f ${arg#@} ]] && grep -q "\"$name\"" "${arg#@}" && found=from-file ;;
    esac
  done
  printf '%s' "$found"
}

# Checked before anything is created.
subnet=$(extra_parameter integrationSubnetId)
subnet=${subnet:-${INTEGRATION_SUBNET_ID:-}}
sh "$here/scripts/require-subnet.sh" "$demo" "$subnet"

image_scope=$(extra_parameter imageReaderScope)
image_scope=${image_scope:-${IMAGE_READER_SCOPE:-}}
shopt -s nocasematch
if [[ -n $image_scope && $image_scope != from-file &&
      ! $image_scope =~ ^/subscriptions/[^/]+/resourceGroups/[^/]+(/providers/Microsoft\.Compute/galleries/[^/]+)?/?$ ]]; then
  echo "imageReaderScope must be the resource id of an Azure Compute Gallery" \
    "(/subscriptions/<sub>/resourceGroups/<rg>/providers/Microsoft.Compute/galleries/<gallery>)" \
    "or of a resource group holding images (/subscriptions/<sub>/resourceGroups/<rg>), not: $image_scope" >&2
  exit 1
fi
shopt -u nocasematch

# The scale sets the function app may steer besides VMSS_NAME (main.bicep: targetScaleSets), from --targets
# (one entry a line), else TARGET_SCALE_SETS; a targetScaleSets=... in the extra az arguments wins, as in az.
targets=${TARGET_SCALE_SETS:-}
if [[ -n $targets_file ]]; then
  [[ -f $targets_file ]] || { echo "--targets: no such file: $targets_file" >&2; exit 1; }
  targets=$(sed -e 's/#.*//' -e 's/[[:space:]]//g' "$targets_file" | grep -v '^$' | tr '\n' ',' || true)
  targets=${targets%,}
fi
effective_targets=$(extra_parameter targetScaleSets)
effective_targets=${effective_targets:-$targets}
orchestration=$(extra_parameter scaleSetOrchestration)
orchestration=${orchestration:-${VMSS_ORCHESTRATION:-}}
[[ $effective_targets == from-file ]] && effective_targets=""
[[ $orchestration == from-file ]] && orchestration=""
sh "$here/scripts/check-targets.sh" "$effective_targets" "$orchestration"

for tool in az zip; do
  command -v "$tool" >/dev/null || { echo "deploy.sh needs '$tool' on PATH" >&2; exit 1; }
done
az account show --query id --output tsv >/dev/null || { echo "run 'az login' first" >&2; exit 1; }

workdir=$(mktemp -d)
trap 'rm -rf "$workdir"' EXIT

# The operator gets Storage Blob Data Contributor on the release container (uploads; shared key is off).
uploader=$(az ad signed-in-user show --query id --output tsv 2>/dev/null || true)

entra_client_id=${ENTRA_CLIENT_ID:-}
if [[ $entra == true ]]; then
  # App registrations are Microsoft Graph objects, not ARM resources: Bicep cannot create them here.
  # App roles: learn.microsoft.com/entra/identity-platform/howto-add-app-roles-in-apps; the identifier URI
  # api://<client id> and the v2.0 issuer: learn.microsoft.com/azure/app-service/configure-authentication-provider-aad.
  display_name="vmss-canary ($resource_group)"
  if [[ -z $entra_client_id ]]; then
    entra_client_id=$(az ad app list --display-name "$display_name" --query "[0].appId" --output tsv)
  fi
  if [[ -z $entra_client_id ]]; then
    echo "==> Entra app registration: create '$display_name'"
    entra_client_id=$(az ad app create --display-name "$display_name" --sign-in-audience AzureADMyOrg \
      --app-roles "@$here/entra-app-roles.json" --query appId --output tsv)
  else
    echo "==> Entra app registration: update $entra_client_id"
    az ad app update --id "$entra_client_id" --app-roles "@$here/entra-app-roles.json"
  fi
  # v2 access tokens, so that their issuer is the .../v2.0 one App Service authentication is configured with.
  az ad app update --id "$entra_client_id" --identifier-uris "api://$entra_client_id" \
    --set api.requestedAccessTokenVersion=2
  # The enterprise application (service principal): app roles are assigned to users and groups on it.
  az ad sp show --id "$entra_client_id" --output none 2>/dev/null ||
    az ad sp create --id "$entra_client_id" --output none
fi

# main.parameters.json is shared with the Azure Developer CLI, which substitutes ${VARIABLE}s from its
# environment (azure.yaml); deploy.sh substitutes the same ones. Command-line parameters come later and win.
render_parameters() {
  local text pair name value
  text=$(<"$here/main.parameters.json")
  for pair in \
    "AZURE_ENV_NAME=${AZURE_ENV_NAME:-}" \
    "AZURE_LOCATION=$location" \
    "AZURE_PRINCIPAL_ID=$uploader" \
    "AZURE_PRINCIPAL_TYPE=User" \
    "VMSS_NAME=canary-vmss" \
    "VMSS_RESOURCE_GROUP=" \
    "VMSS_ORCHESTRATION=${VMSS_ORCHESTRATION:-}" \
    "TARGET_SCALE_SETS=$targets" \
    "INTEGRATION_SUBNET_ID=${INTEGRATION_SUBNET_ID:-}" \
    "IMAGE_READER_SCOPE=${IMAGE_READER_SCOPE:-}" \
    "ENTRA_CLIENT_ID=$entra_client_id"; do
    name=${pair%%=*}
    value=${pair#*=}
    if [[ $value == *[\"\\]* ]]; then
      echo "$name contains a quote or backslash: $value" >&2
      exit 1
    fi
    text=${text//"\${$name}"/"$value"}
  done
  if [[ $text == *"\${"* ]]; then
    echo "main.parameters.json uses a variable deploy.sh does not substitute:" \
      "$(grep -o "\\\${[A-Za-z_]*}" <<<"$text" | sort -u | tr '\n' ' ')" >&2
    exit 1
  fi
  printf '%s\n' "$text" >"$workdir/main.parameters.json"
}
render_parameters

params=(--parameters "@$workdir/main.parameters.json" --parameters "deployDemoScaleSet=$demo")
if [[ $demo == true ]]; then
  if [[ -z $ssh_key_file ]]; then
    for candidate in ~/.ssh/id_ed25519.pub ~/.ssh/id_rsa.pub; do
      [[ -f $candidate ]] && { ssh_key_file=$candidate; break; }
    done
  fi
  [[ -n $ssh_key_file && -f $ssh_key_file ]] || { echo "--demo needs an SSH public key (--ssh-key)" >&2; exit 1; }
  params+=(--parameters "sshPublicKey=$(<"$ssh_key_file")")
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
http_auth=$(output httpAuth)

echo "==> publish the function code to $app"
package=$workdir/app.zip
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

sh "$here/scripts/subscribe-events.sh" "$resource_group" "$app" "$topic" "$container"

if [[ $http_auth == entra && $entra == true ]]; then
  # Browser sign-in (https://<app>/.auth/login/aad) comes back to this redirect URI.
  az ad app update --id "$entra_client_id" --web-redirect-uris "https://$host/.auth/login/aad/callback" \
    --enable-id-token-issuance true
fi

cat <<DONE

Deployed.
  function app     https://$host
  rollouts         GET  https://$host/api/rollouts
  steer            POST https://$host/api/rollouts/{id}/{abort|pause|resume|promote|promote-full|retry}
  release upload   az storage blob upload --auth-mode login --account-name $account \\
                     --container-name $container --name install_nginx.v1.sh --file install_nginx.v1.sh
  target           $target_rg/$vmss
DONE
if [[ -n $effective_targets ]]; then
  echo "  other targets    $(tr ',' '\n' <<<"$effective_targets" | grep -c .) scale sets (targetScaleSets; roles: infra/README.md)"
fi
if [[ $demo == true ]]; then
  echo "  demo site        http://$(output demoPublicIp)/"
fi
cat <<DONE

Function key (send as the x-functions-key header):
  az functionapp keys list --resource-group $resource_group --name $app --query functionKeys.default --output tsv
DONE
if [[ $http_auth == entra ]]; then
  cat <<DONE

Microsoft Entra ID authentication is on (app registration $entra_client_id): every request also needs
"Authorization: Bearer <token for api://$entra_client_id>", from a user or group assigned the app role
Rollouts.Read or Rollouts.Operate (infra/README.md, "Signing in with Microsoft Entra ID").
DONE
fi
