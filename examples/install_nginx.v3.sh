#!/bin/bash
# A good release after the broken v2, with its own title. Unlike the walkthrough's scripts it is
# idempotent: it writes the whole site config and rewrites the title whatever an earlier release left
# on this VM (v1's edited page, v2's broken config), so it also repairs an instance that ran v2.

sudo apt-get update
sudo apt-get install -y nginx
cat <<'CONF' | sudo tee /etc/nginx/sites-available/default >/dev/null
server {
	listen 80 default_server;
	listen [::]:80 default_server;
	root /var/www/html;
	index index.html index.htm index.nginx-debian.html;
	server_name _;
	location / {
		try_files $uri $uri/ =404;
	}
}
CONF
sudo ln -sf /etc/nginx/sites-available/default /etc/nginx/sites-enabled/default
sudo sed -i -E 's/Welcome to nginx[^!<]*/Welcome to nginx v3/' /var/www/html/index*.html
sudo systemctl restart nginx
