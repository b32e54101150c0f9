#!/bin/bash
# A BROKEN release, on purpose: it installs nginx, then ships a site config with a typo that nginx
# refuses to load. The script itself exits 0, so the CustomScript extension reports success; only the
# health probe (connection refused once nginx is restarted) can catch it, and the rollout must roll back.

sudo apt-get update
sudo apt-get install -y nginx
sudo sed -i -e 's/Welcome to nginx/Welcome to nginx v2/' /var/www/html/index*.html
echo 'server { listen 80 default_server; root /var/www/html; index index.nginx-debian.html; locaton / { } }' \
    | sudo tee /etc/nginx/sites-available/default >/dev/null
sudo systemctl restart nginx
exit 0
