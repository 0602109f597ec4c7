# Sidestream operator commands. Every target is a thin call to the `sidestream` CLI
# (or to a standard tool); `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SS := $(BIN)/sidestream
STAMP := $(VENV)/.installed
W ?= audit
PYTEST_ARGS ?=
# `make test` runs the suite on this many processes (pytest-xdist), sharing one local stack;
# many tests mostly wait (group joins, timeouts, child processes), so 2 cores keep 2 busy.
TEST_WORKERS ?= 2

.DEFAULT_GOAL := help
.PHONY: workers console chaos chaos-quick replay dlq-show dlq-redrive lag observe observe-down deploy-check tools help setup lock up down status migrate topics reset-topics worker demo test test-all test-chaos api notifications load bench bench-quick lint fmt typecheck schemas-check clean

help: ## List every target with one line each
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-15s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): requirements.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --require-hashes -r requirements.lock
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $(STAMP)

setup: $(STAMP) ## Create .venv and install the pinned, hash-checked dependencies
	@echo "setup: $(VENV) is ready"

lock: $(STAMP) ## Re-pin dependencies with hashes: requirements.lock (dev), requirements-runtime.lock (the image), the bench peer's own lock
	$(BIN)/uv pip compile pyproject.toml --extra dev --generate-hashes --python-version 3.11 --no-header -o requirements.lock
	$(BIN)/uv pip compile pyproject.toml --generate-hashes --python-version 3.11 --no-header -o requirements-runtime.lock
	$(BIN)/uv pip compile devtools/bench/peer-requirements.in --generate-hashes --python-version 3.11 --no-header -o devtools/bench/peer-requirements.lock

up: $(STAMP) ## Start the local Kafka (tansu), Postgres and Redis and wait until healthy
	$(SS) dev up

down: $(STAMP) ## Stop the local servers that `make up` started
	$(SS) dev down

status: $(STAMP) ## Show each local server: PID, address, health
	$(SS) dev status

topics: $(STAMP) ## Create missing topics from schemas/topics.yaml and show what differs
	$(SS) topics apply

reset-topics: $(STAMP) ## Local stack: recreate every topic empty and forget its offsets (stop workers first)
	$(SS) dev reset-topics --yes

migrate: $(STAMP) ## Create or upgrade every table (versioned, idempotent)
	$(SS) db migrate

worker: $(STAMP) ## Run one worker until Ctrl-C/SIGTERM: make worker W=NAME (names: make workers)
	$(SS) worker run $(W)

workers: $(STAMP) ## List every worker: name, consumer group, topics, table (the one registry)
	$(SS) worker list

schemas-check: $(STAMP) ## Fail on a changed/unreleased schema version, a breaking change, or a field no sink maps
	$(SS) schemas check

demo: $(STAMP) ## Run the main job end to end on the local stack and print a summary
	$(SS) demo

test: $(STAMP) ## Run the test suite on TEST_WORKERS=2 processes (starts the local stack it needs)
	$(BIN)/pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

test-all: $(STAMP) ## Run every test, including the slow chaos-marked ones
	$(BIN)/pytest -m 'not bench' $(PYTEST_ARGS)

test-chaos: $(STAMP) ## Run only the slow fault tests (SIGKILLed workers, database restarts, ...)
	$(BIN)/pytest -m chaos $(PYTEST_ARGS)

api: $(STAMP) ## Serve the reference API on 127.0.0.1:8000 (sidestream api)
	$(SS) api

replay: $(STAMP) ## Replay a sink's group: make replay W=audit ARGS="--from-time 2h [--target-schema shadow] [--rate 2000] [--dry-run]"
	$(SS) replay --sink $(W) $(ARGS)

dlq-show: $(STAMP) ## Dead letters by error class: make dlq-show W=audit
	$(SS) dlq show sidestream.$(W) $(ARGS)

dlq-redrive: $(STAMP) ## Send fixed dead letters back once: make dlq-redrive W=audit ARGS="--error-class CheckViolation [--dry-run]"
	$(SS) dlq redrive sidestream.$(W) $(ARGS)

lag: $(STAMP) ## Consumer lag per group and partition: make lag [ARGS="--watch" | ARGS="--json"]
	$(SS) lag $(ARGS)

notifications: $(STAMP) ## Notification deliveries by status: make notifications [ARGS="--status failed"]
	$(SS) notifications show $(ARGS)

load: $(STAMP) ## Publish synthetic events: make load ARGS="--rate 2000 --count 50000"
	$(SS) load $(ARGS)

bench: $(STAMP) ## Every benchmark against the local stack: scoreboard + bench/results/*.json + flame graphs of the sink and invalidation workers
	$(SS) bench --profile

bench-quick: $(STAMP) ## Every benchmark at small sizes (CI: keeps them from rotting; no timing verdicts)
	$(SS) bench --quick

console: $(STAMP) ## Operator console on http://127.0.0.1:8090 over the local stack (after `make up`); prints a sign-in link
	$(SS) console $(ARGS)

observe: $(STAMP) ## Local Prometheus (Debian's prometheus, no Docker) on 127.0.0.1:9090 scraping the local stack, with the alert rules
	$(SS) observe up

observe-down: $(STAMP) ## Stop the local Prometheus that `make observe` started
	$(SS) observe down

deploy-check: $(STAMP) ## Validate deploy/ offline: compose, Kubernetes (+KEDA), Prometheus rules (promtool), Grafana
	$(SS) deploy check $(DEPLOY_CHECK_ARGS)

tools: ## Install the system tools some targets use (promtool/prometheus, wrk) from Debian, as root
	bash deploy/install-tools.sh

chaos: $(STAMP) ## Fault scenarios at full size (kills, crashes, freezes, proxies); exit 1 on loss/dups/stale
	$(SS) chaos $(ARGS)

chaos-quick: $(STAMP) ## Fault scenarios at small sizes, a few minutes (CI); exit 1 on loss/dups/stale
	$(SS) chaos --quick $(ARGS)

lint: $(STAMP) ## ruff check + format check + import layering contracts
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

fmt: $(STAMP) ## Format and auto-fix with ruff
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: $(STAMP) ## mypy --strict over the code and tests
	$(BIN)/mypy runtime schemas producers consumers services devtools sidestream tests

clean: down ## Stop servers and remove the local stack's data (.stack/)
	rm -rf .stack
