#!/bin/sh
# The azd `preprovision` hook (azure.yaml): the checks infra/deploy.sh makes before anything is created.
#
#   preprovision.sh    (azd: INTEGRATION_SUBNET_ID, VMSS_NAME, VMSS_ORCHESTRATION, TARGET_SCALE_SETS)
#
# 1. require-subnet.sh: no deployment against your own scale set without VNet integration;
# 2. check-targets.sh: the scale sets the app may steer (TARGET_SCALE_SETS, main.bicep's targetScaleSets) and
#    VMSS_NAME's orchestration mode are well formed, every problem named at once.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
sh "$here/require-subnet.sh"
sh "$here/check-targets.sh" "${TARGET_SCALE_SETS:-}" "${VMSS_ORCHESTRATION:-}"
