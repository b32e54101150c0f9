# Everything installs itself: `make test` and `make demo` work on a fresh Debian machine (root).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
AZURITE := .tools/node_modules/.bin/azurite
AZURITE_VERSION := 3.37.0
PYTEST_ARGS ?=
PERF_ARGS ?=
MUTATION_CHILDREN ?= 2
ARGS ?=

.PHONY: help setup system-deps browser-deps test test-fast lint typecheck demo twin bench bench-waves bench-judge mutation chaos clean

help:
	@echo "make test   - install what is needed and run every test level (unit, service, integration, e2e, infra)"
	@echo "make demo   - the whole canary story on the local twin (ARGS='--instances 5 --bake 10'; '--scale-sets 3': waves)"
	@echo "make twin   - start the local twin, print its endpoints and keys; Ctrl-C stops it"
	@echo "make lint   - ruff on everything, mypy --strict on rollout/, function_app.py and emulator/"
	@echo "make bench  - benchmarks; figures go to docs/benchmarks.md and docs/performance.md (cold start, ARM"
	@echo "              requests per rollout, tick cost, makespan against its lower bound, rollback and start"
	@echo "              latency; PERF_ARGS='--sizes 10,100,1000 --cold-runs 7 --makespan-sizes 10,100 --start-runs 20');"
	@echo "              the raw figures in docs/performance.json, plots (PNG) from them in docs/perf-*.png"
	@echo "make bench-waves - one release across 4 waves of 200 scale sets (20 synthetic instances each) through"
	@echo "              the function app; figures go to docs/fleet-benchmark.md (ARGS='--scale-sets 20 --waves 2')"
	@echo "make bench-judge - labelled releases (good, broken, slow, 5% errors, marginal) through the local twin:"
	@echo "              the canary judge's verdicts and time to verdict, written to docs/safety.md (ARGS='--runs 5 --seed 2')"
	@echo "make mutation - mutation testing (mutmut) of the pure core; score per module, fails under 90%"
	@echo "make chaos  - the randomized two-host test at length: CHAOS_EXAMPLES=20000 scenarios, a random seed"

$(BIN)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

$(AZURITE):
	mkdir -p .tools
	cd .tools && npm install --no-audit --no-fund --loglevel=error azurite@$(AZURITE_VERSION)

# nginx and bubblewrap run the emulated VMs of the local twin. The package must not start a system
# nginx on *:80 (it would take port 80 from every loopback address the twin uses): a temporary
# policy-rc.d forbids service starts during the install, where none is in place already.
system-deps:
	@command -v nginx >/dev/null && command -v bwrap >/dev/null || { \
	  echo "installing nginx-light and bubblewrap (Debian packages)"; \
	  made=; [ -e /usr/sbin/policy-rc.d ] || { printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; \
	    chmod +x /usr/sbin/policy-rc.d; made=1; }; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light bubblewrap >/dev/null; \
	  rc=$$?; [ -z "$$made" ] || rm -f /usr/sbin/policy-rc.d; exit $$rc; }

# Headless Chromium and its WebDriver (Debian's chromium, chromium-driver) for the dashboard's browser test
# (tests/e2e/test_dashboard_browser.py, driven by the selenium package of requirements-dev.txt).
browser-deps:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  echo "installing chromium and chromium-driver (Debian packages)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; }

include infra/tools.mk

setup: $(BIN)/.installed $(AZURITE) system-deps browser-deps infra-tools

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: $(BIN)/.installed
	$(BIN)/python -m pytest tests/unit tests/service $(PYTEST_ARGS)

lint: $(BIN)/.installed
	$(BIN)/ruff check rollout emulator tests function_app.py bench tools vmss_canary_cli
	$(BIN)/mypy

demo: setup
	$(BIN)/python -m emulator.demo $(ARGS)

twin: setup
	$(BIN)/python -m emulator.twin $(ARGS)

bench: setup
	$(BIN)/python -m bench.run $(ARGS)
	$(BIN)/python -m bench.perf $(PERF_ARGS)

bench-waves: setup
	$(BIN)/python -m bench.waves $(ARGS)

# Port 80 on the twin's loopback addresses: in a network namespace of its own when unshare can make one.
bench-judge: setup
	@if unshare -n true 2>/dev/null; then \
	  unshare -n bash -c 'ip link set lo up; $(BIN)/python -m bench.judge --write $(ARGS)'; \
	else $(BIN)/python -m bench.judge --write $(ARGS); fi

# Mutation testing of rollout/{policy,analysis,releases,machine}.py against tests/unit and tests/service
# (configuration: [tool.mutmut] in pyproject.toml; figures and how to read them: docs/mutation.md). A fresh
# run each time, one module after the other, MUTATION_CHILDREN test processes at once; each module's log is
# mutants/<module>.log. tools/mutation_score.py prints the score per module and fails under 90%.
mutation: $(BIN)/.installed
	rm -rf mutants && mkdir mutants
	@for m in policy knobs analysis releases machine; do \
	  start=$$(date +%s); \
	  $(BIN)/mutmut run --max-children $(MUTATION_CHILDREN) "rollout.$$m.*" > mutants/$$m.log 2>&1 \
	    || { tail -n 30 mutants/$$m.log; exit 1; }; \
	  echo "rollout/$$m.py: $$(( $$(date +%s) - start )) s"; \
	done
	$(BIN)/python -m tools.mutation_score

# The randomized two-host test of tests/service/test_chaos.py with more scenarios than CI's 1,000 and a
# fresh seed each run (a failure prints the seed and the shrunk steps). CHAOS_EXAMPLES picks the count,
# CHAOS_SEED replays a seed.
CHAOS_EXAMPLES ?= 20000
chaos: $(BIN)/.installed
	@seed=$${CHAOS_SEED:-$$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}; echo "chaos seed $$seed"; \
	CHAOS_EXAMPLES=$(CHAOS_EXAMPLES) CHAOS_RANDOM=1 $(BIN)/python -m pytest tests/service/test_chaos.py \
	  -k test_two_hosts_under_chaos --runxfail -p no:cacheprovider --timeout=0 --hypothesis-seed=$$seed $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .tools .pytest_cache .mypy_cache .ruff_cache mutants
