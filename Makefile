# Local development and test entry points. Everything runs from the repository root.
.DEFAULT_GOAL := help
SHELL := /bin/bash

PYTHON3 ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.stamp
REQUIREMENTS := $(wildcard requirements*.txt)
JS_DIR := tests/js
JS_LOCK := $(wildcard $(JS_DIR)/package-lock.json)
JS_STAMP := $(if $(JS_LOCK),$(JS_DIR)/node_modules/.stamp)
WEB_DIR := api_server/assets
WEB_STAMP := $(WEB_DIR)/node_modules/.stamp
COMPOSECHECK_DIR := tools/composecheck
COMPOSECHECK_SRC := $(wildcard $(COMPOSECHECK_DIR)/*.go) $(COMPOSECHECK_DIR)/go.mod $(COMPOSECHECK_DIR)/go.sum
COMPOSECHECK_STAMP := $(VENV)/.composecheck.stamp
PYTEST_ARGS ?=

.PHONY: help install install-system run test faults bench bench-compare clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-15s %s\n", $$1, $$2}'

$(PY):
	$(PYTHON3) -m venv $(VENV)

# Reinstall only when a requirements file changed since the last install.
$(STAMP): $(REQUIREMENTS) | $(PY)
	$(PY) -m pip install -r requirements-dev.txt
	touch $@

$(JS_DIR)/node_modules/.stamp: $(JS_DIR)/package-lock.json $(JS_DIR)/package.json
	cd $(JS_DIR) && npm ci --no-audit --no-fund
	touch $@

# Browser assets the API serves itself (Swagger UI, the Socket.IO client), pinned by package-lock.json.
$(WEB_STAMP): $(WEB_DIR)/package-lock.json $(WEB_DIR)/package.json
	cd $(WEB_DIR) && npm ci --no-audit --no-fund
	touch $@

# tests/test_compose.py falls back to this when `docker compose` is missing: the loader behind
# `docker compose config` (compose-go), built into the venv. Needs the Go toolchain.
$(COMPOSECHECK_STAMP): $(COMPOSECHECK_SRC) | $(PY)
	cd $(COMPOSECHECK_DIR) && go build -buildvcs=false -o ../../$(VENV)/bin/composecheck .
	touch $@

install-system: $(STAMP) ## Debian packages (Redis, nginx, Java, Maven, Chromium) and Kafka's jars, when missing
	$(PY) -m devstack install-system

install: $(STAMP) install-system $(WEB_STAMP) $(JS_STAMP) $(COMPOSECHECK_STAMP) ## Python venv, system packages, web assets, JS test client, composecheck

run: install ## start the local stack (Ctrl-C stops it)
	$(PY) -m devstack run

# pytest exits 5 when it collected nothing: for CI that is a failure, not a pass.
test: install ## run the test suite (extra arguments: PYTEST_ARGS=...)
	@$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi; \
	exit $$rc

faults: install ## the fault-injection suite, long profile: more clients, longer windows (PYTEST_ARGS=...)
	@FAULT_PROFILE=long $(PY) -m pytest -m faults tests/faults $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi; \
	exit $$rc

bench: install ## delivery latency, fan-out and memory per connection (BENCH_ARGS=...)
	$(PY) -m bench.delivery $(BENCH_ARGS)

# The side-by-side comparison with a plain Node Socket.IO hub (socket.io 4 + redis-adapter), in the
# same run on this machine: ../shared/bench beside the checkout, its own replica set on 27017-27019.
SHARED_BENCH ?= ../shared/bench
COMPARE_ARGS ?= --targets node,notihub --scenarios S1,S2b,S3 --rounds 2 --alternate-order
bench-compare: install ## notihub side by side with a Node Socket.IO hub (COMPARE_ARGS=...)
	@test -x $(SHARED_BENCH)/run.sh || { echo "$(SHARED_BENCH)/run.sh not found" >&2; exit 1; }
	$(SHARED_BENCH)/run.sh mongo start
	$(SHARED_BENCH)/run.sh $(COMPARE_ARGS); rc=$$?; $(SHARED_BENCH)/run.sh report; \
	$(SHARED_BENCH)/run.sh mongo stop; exit $$rc

clean: ## remove the local stack's data and logs
	rm -rf .notihub
