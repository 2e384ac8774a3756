# The two commands: `make run` (the whole backend on this machine, no AWS or
# Stripe account) and `make test` (install what the tests need, run them all).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAGE ?= dev

.PHONY: install system-deps run simulate audit-deps test test-unit test-integration test-e2e load crash bench bench-billing-large package deploy clean openapi

$(VENV)/.installed: requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check 'pip>=23.3,<26.3'
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

install: $(VENV)/.installed

# Debian packages the tests use: Chromium for the payment-page test,
# poppler-utils' pdftoppm to render the invoices' pages as PNG.
system-deps:
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; \
	  else echo "install Debian's chromium (sudo apt-get install chromium) for the browser test" >&2; exit 1; fi; }
	@command -v pdftoppm >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends poppler-utils >/dev/null; \
	  else echo "install Debian's poppler-utils (sudo apt-get install poppler-utils) for the invoice rendering test" >&2; exit 1; fi; }

run: install
	$(PY) -m infra.local.stage

# Lab machines publishing counters to the running stage's MQTT broker:
# `make simulate MERCHANT=mer_... DEVICES=3` (attach them first: POST /devices).
DEVICES ?= 3
simulate: install
	@test -n "$(MERCHANT)" || { echo "usage: make simulate MERCHANT=mer_... [DEVICES=3]" >&2; exit 2; }
	$(PY) -m infra.local.simulator --devices $(DEVICES) --merchant $(MERCHANT)

# Known vulnerabilities in what the locked requirements install: pip-audit
# against PyPI, else the PyPA advisory database kept in tests/dependency_audit/.
audit-deps: install
	$(PY) -m tests.dependency_audit.run

test: install system-deps audit-deps
	$(PY) -m pytest

test-unit: install
	$(PY) -m pytest tests/unit

test-integration: install
	$(PY) -m pytest tests/integration

test-e2e: install system-deps
	$(PY) -m pytest tests/e2e

# The load run (tests/load/run.py): LOAD_DEVICES machines publishing over MQTT
# for LOAD_SECONDS, duplicates, readings out of order and resets among them,
# while a billing run and API traffic go on; every total checked exactly.
# Figures in test-artifacts/load.json (docs/reliability.md).
LOAD_SECONDS ?= 600
LOAD_DEVICES ?= 1000
load: install
	$(PY) -m tests.load.run --seconds $(LOAD_SECONDS) --devices $(LOAD_DEVICES) --output test-artifacts/load.json

# Crashes in a billing run of CRASH_SUBSCRIPTIONS subscriptions (tests/load/crash.py):
# the driver killed, AWS's stand-in restarted, Stripe frozen; then no invoice
# twice, no charge twice, gapless numbers. Figures in test-artifacts/crash.json.
CRASH_SUBSCRIPTIONS ?= 2000
crash: install
	$(PY) -m tests.load.crash --subscriptions $(CRASH_SUBSCRIPTIONS) --settle --output test-artifacts/crash.json

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
# a CloudFormation change set of the packaged stage, checked, executed
# (docs/deploy.md). DEPLOY_ARGS is every option of `python -m infra.aws.deploy`
# (--parameter, --allow-replacement, --no-execute, ...); it may span lines.
deploy: package
	@test -n "$(DEPLOY_BUCKET)" || { echo "usage: make deploy STAGE=prod DEPLOY_BUCKET=<s3 bucket> [DEPLOY_ARGS='--parameter Name=value ...']" >&2; exit 2; }
	$(PY) -m infra.aws.deploy --stage $(STAGE) --bucket $(DEPLOY_BUCKET) $(strip $(DEPLOY_ARGS))

# The OpenAPI document, generated from the routes and their models; a test
# fails when the checked-in copy is stale.
openapi: install
	$(PY) -m chalicelib.api.openapi docs/openapi.json

clean:
	rm -rf $(VENV) build .local-stage test-artifacts .pytest_cache .hypothesis
