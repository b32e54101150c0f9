# Offline checkers for infra/ (included from the top-level Makefile: `include infra/tools.mk`).
#
# checkov gets its own venv: its many pinned dependencies would clash with the app's. The stamp file
# depends on this makefile, so changing the pin reinstalls; otherwise the target is a no-op.
# pycep-parser (the Bicep parser the tests use) installs cleanly next to the app and lives in .venv
# (requirements-dev.txt). shellcheck (for infra/deploy.sh) is a Debian package.
CHECKOV_VERSION := 3.3.30
CHECKOV_VENV := .tools/checkov
CHECKOV := $(CHECKOV_VENV)/bin/checkov

.PHONY: infra-tools infra-check

$(CHECKOV_VENV)/.installed: infra/tools.mk
	python3 -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet --disable-pip-version-check checkov==$(CHECKOV_VERSION)
	touch $@

infra-tools: $(CHECKOV_VENV)/.installed
	@command -v shellcheck >/dev/null || { \
	  echo "installing shellcheck (Debian package)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq shellcheck >/dev/null; }

# The same scan the tests run, for a quick look at the findings.
infra-check: infra-tools
	$(CHECKOV) --directory infra --framework bicep --compact --quiet --skip-download
	shellcheck infra/deploy.sh infra/scripts/*.sh
