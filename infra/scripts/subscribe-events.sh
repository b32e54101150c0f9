#!/bin/sh
# Post-publish step: the BlobCreated Event Grid subscription (infra/eventgrid.bicep). Used by
# infra/deploy.sh and, as the `postdeploy` hook in azure.yaml, by `azd deploy` / `azd up`.
#
#   subscribe-events.sh <resource-group> <function-app> <system-topic> <release-container>   (deploy.sh)
#   subscribe-events.sh       (azd: AZURE_RESOURCE_GROUP and the main.bicep outputs FUNCTION_APP_NAME,
#                              SYSTEM_TOPIC_NAME, RELEASE_CONTAINER_NAME from the azd environment)
#
# Why after publishing: Event Grid validates a webhook when the subscription is created, and the webhook
# URL carries the blobs extension's system key (read inside eventgrid.bicep with listKeys, never here).
# The Functions host creates that key only once the published app, with its Event Grid blob trigger, runs.
set -eu

if [ $# -eq 4 ]; then
  resource_group=$1
  app=$2
  topic=$3
  container=$4
elif [ $# -eq 0 ]; then
  resource_group=${AZURE_RESOURCE_GROUP:?AZURE_RESOURCE_GROUP is not set (azd sets it when it provisions)}
  app=${FUNCTION_APP_NAME:?FUNCTION_APP_NAME is not set: run azd provision first (a main.bicep output)}
  topic=${SYSTEM_TOPIC_NAME:?SYSTEM_TOPIC_NAME is not set: run azd provision first (a main.bicep output)}
  container=${RELEASE_CONTAINER_NAME:?RELEASE_CONTAINER_NAME is not set: run azd provision first}
else
  echo "usage: $0 [<resource-group> <function-app> <system-topic> <release-container>]" >&2
  exit 2
fi

infra=$(cd "$(dirname "$0")/.." && pwd)
attempts=${EVENTGRID_KEY_ATTEMPTS:-30}
wait_seconds=${EVENTGRID_KEY_WAIT_SECONDS:-10}

echo "==> Event Grid subscription (waits for the blobs extension key of $app)"
attempt=1
while :; do
  key=$(az functionapp keys list --resource-group "$resource_group" --name "$app" \
    --query "systemKeys.blobs_extension" --output tsv 2>/dev/null || true)
  [ -n "$key" ] && break
  if [ "$attempt" -ge "$attempts" ]; then
    echo "the blobs_extension key of $app never appeared: is the published app running? (az functionapp show" \
      "--resource-group $resource_group --name $app --query state)" >&2
    exit 1
  fi
  attempt=$((attempt + 1))
  sleep "$wait_seconds"
done

az deployment group create --resource-group "$resource_group" --name vmss-canary-eventgrid \
  --template-file "$infra/eventgrid.bicep" \
  --parameters "functionAppName=$app" "systemTopicName=$topic" "releaseContainerName=$container" \
  --output none
