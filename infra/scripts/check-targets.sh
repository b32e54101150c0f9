#!/bin/sh
# Checks the list of scale sets the function app may steer (main.bicep's targetScaleSets, TARGET_SCALE_SETS)
# and VMSS_NAME's orchestration mode (scaleSetOrchestration, VMSS_ORCHESTRATION) before anything is deployed,
# naming every problem at once. Used by infra/deploy.sh and, through scripts/preprovision.sh, by azd.
#
#   check-targets.sh <targetScaleSets> [<scaleSetOrchestration>]
#
# The list: comma-separated, no spaces, each entry a scale set's resource id, a colon and its orchestration mode:
#   /subscriptions/<subscription id>/resourceGroups/<rg>/providers/Microsoft.Compute/virtualMachineScaleSets/<name>:Uniform
# (`az vmss list --query "[].[id, orchestrationMode]" --output tsv` prints both). main.bicep takes each entry
# apart by position, so a malformed one would deploy a role to the wrong scope or fail half-way: refused here.
# The mode decides the scope of the role: Uniform = the scale set, Flexible = its resource group.
# Names: 1-90 of letters, digits, . _ ( ) -, as the app checks target names (rollout/targets_doc.py).
set -eu

list=${1:-}
mode=${2:-}
problems=""
problem() {
  problems="$problems
  - $1"
}

case $mode in
  "" | Uniform | Flexible) ;;
  *) problem "scaleSetOrchestration (VMSS_ORCHESTRATION) must be Uniform or Flexible, not: $mode" ;;
esac

guid='[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}'
name='[A-Za-z0-9._()-]{1,90}'
id_pattern="^/subscriptions/$guid/resourceGroups/$name/providers/Microsoft\\.Compute/virtualMachineScaleSets/$name\$"

if [ -n "$list" ]; then
  case $list in
    *[[:space:]]*) problem "targetScaleSets contains white space: separate entries with a comma only" ;;
  esac
  seen=""
  position=0
  rest=$list,
  while [ -n "$rest" ]; do
    entry=${rest%%,*}
    rest=${rest#*,}
    position=$((position + 1))
    if [ -z "$entry" ]; then
      problem "entry $position is empty (two commas, or a comma at the start or end)"
      continue
    fi
    case $entry in
      *:*) ;;
      *)
        problem "entry $position has no orchestration mode (append :Uniform or :Flexible): $entry"
        continue
        ;;
    esac
    id=${entry%:*}
    entry_mode=${entry##*:}
    case $entry_mode in
      Uniform | Flexible) ;;
      *) problem "entry $position: the orchestration mode must be Uniform or Flexible, not '$entry_mode': $entry" ;;
    esac
    # Fixed segments in any case (ARM resource ids are case-insensitive); main.bicep reads them by position.
    if ! printf '%s\n' "$id" | grep -Eiq "$id_pattern"; then
      problem "entry $position is not a scale set resource id (/subscriptions/<subscription id>/resourceGroups/<rg>/providers/Microsoft.Compute/virtualMachineScaleSets/<name>): $id"
      continue
    fi
    key=$(printf '%s\n' "$id" | tr '[:upper:]' '[:lower:]')
    if printf '%s\n' "$seen" | grep -Fxq "$key"; then
      problem "entry $position lists a scale set a second time: $id"
    fi
    seen="$seen
$key"
  done
fi

if [ -n "$problems" ]; then
  echo "refusing to deploy: the scale sets the app may steer are malformed (targetScaleSets / TARGET_SCALE_SETS," \
    "scaleSetOrchestration / VMSS_ORCHESTRATION):$problems" >&2
  echo "Each entry is <scale set resource id>:<Uniform|Flexible>, entries separated by commas (infra/README.md," \
    "\"Many scale sets\")." >&2
  exit 1
fi
