# The two commands: `make run` (the whole backend on this machine, no AWS or
# Stripe account) and `make test` (install what the tests need, run them all).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAGE ?= dev

.PHONY: install system-deps run simulate test test-unit test-integration test-e2e bench bench-billing-large package deploy clean openapi

$(VENV)/.installed: requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check 'pip<26.3'
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

install: $(VENV)/.installed

# Debian packages the tests use: Chromium for the payment-page test.
system-deps:
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; \
	  else echo "install Debian's chromium (sudo apt-get install chromium) for the browser test" >&2; exit 1; fi; }

run: install
	$(PY) -m infra.local.stage

# Lab machines publishing counters to the running stage's MQTT broker:
# `make simulate MERCHANT=mer_... DEVICES=3` (attach them first: POST /devices).
DEVICES ?= 3
simulate: install
	@test -n "$(MERCHANT)" || { echo "usage: make simulate MERCHANT=mer_... [DEVICES=3]" >&2; exit 2; }
	$(PY) -m infra.local.simulator --devices $(DEVICES) --merchant $(MERCHANT)

test: install system-deps
	$(PY) -m pytest

test-unit: install
	$(PY) -m pytest tests/unit

test-integration: install
	$(PY) -m pytest tests/integration

test-e2e: install system-deps
	$(PY) -m pytest tests/e2e

# Every benchmark of tests/bench (rating, ingestion, billing, API, package and
# cold imports), the cost model; writes docs/performance.md and
# docs/performance.json from that run. `make bench BENCH_ARGS=--quick`: small sizes.
bench: install
	$(PY) -m tests.bench.run $(BENCH_ARGS)

# The billing benchmark at 2,000 subscriptions (about 20 minutes, most of it
# moto): docs/performance-billing-2000.json, reported by `make bench`.
bench-billing-large: install
	$(PY) -m tests.bench.bench_billing --subscriptions 2000 --output docs/performance-billing-2000.json

# Deployment package of a stage: build/$(STAGE)/template.yaml and
# deployment.zip (compiled .pyc), checked by cfn-lint (docs/deploy.md).
package: install
	$(PY) -m infra.aws.package --stage $(STAGE)

# `make deploy STAGE=prod DEPLOY_BUCKET=my-artifacts DEPLOY_ARGS='--parameter AlertSender=...'`:
# a CloudFormation change set of the packaged stage, executed (docs/deploy.md).
deploy: package
	@test -n "$(DEPLOY_BUCKET)" || { echo "usage: make deploy STAGE=prod DEPLOY_BUCKET=<s3 bucket> [DEPLOY_ARGS='--parameter Name=value ...']" >&2; exit 2; }
	$(PY) -m infra.aws.deploy --stage $(STAGE) --bucket $(DEPLOY_BUCKET) $(DEPLOY_ARGS)

# The OpenAPI document, generated from the routes and their models; a test
# fails when the checked-in copy is stale.
openapi: install
	$(PY) -m chalicelib.api.openapi docs/openapi.json

clean:
	rm -rf $(VENV) build .local-stage test-artifacts .pytest_cache .hypothesis
