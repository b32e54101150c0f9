#!/bin/bash
# v0 of the demo release (the walkthrough's install_nginx.sh): nginx with its stock page.
# Uploaded to the release container by infra/deploy.sh before the Event Grid subscription exists,
# so it becomes the scale set's baseline without starting a rollout.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y nginx
