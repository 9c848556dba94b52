# ShopBotly — `make help` lists the targets.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3.11
TOOLS := .tools
UV := $(shell command -v uv 2>/dev/null || echo $(TOOLS)/bin/uv)
export UV_PYTHON := $(PYTHON)
export UV_PYTHON_DOWNLOADS := never
RUN := $(UV) run --frozen --all-packages
PYTEST_ARGS ?=

.PHONY: help install up down ps logs demo test test-fault test-unit test-integration lint fmt bench kafka-up kafka-down clean schema

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*## "}{printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}'

$(TOOLS)/bin/uv:
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install -q 'uv==0.13.9'

.venv/.installed: uv.lock pyproject.toml $(wildcard libs/*/pyproject.toml services/*/pyproject.toml tools/*/pyproject.toml) | $(UV)
	$(UV) sync --frozen --all-packages
	touch $@

install: .venv/.installed ## Install Python deps (uv, one lock file) and fetch the Kafka broker
	deploy/local/kafka.sh fetch

kafka-up: install ## Start the local Kafka broker (KRaft, 127.0.0.1:9092) in the background
	deploy/local/kafka.sh start

kafka-down: ## Stop the local Kafka broker
	deploy/local/kafka.sh stop

up: install ## Start the whole stack in the background (crashed services restarted); returns when every /readyz is green
	deploy/local/stack.sh up

down: ## Stop the whole stack (services, emulator, Kafka)
	deploy/local/stack.sh down

ps: ## Each service: pid, state, restarts, readiness, last exit
	deploy/local/stack.sh ps

logs: ## Follow the logs of the stack (.run/stack/logs/<service>.log)
	deploy/local/stack.sh logs

demo: ## Send signed demo webhooks and show the CRM records and an order lookup
	$(RUN) shopbotly demo

test: install ## Run every test: unit, component, integration with a real broker, e2e and fault injection (two processes; TEST_JOBS=1 for one)
	deploy/local/test-tools.sh
	UV="$(UV)" TEST_JOBS="$(TEST_JOBS)" deploy/local/run-tests.sh $(PYTEST_ARGS)

test-fault: install ## Only the fault suite (kill -9, broker restart and outage noise, CRM outage, 429 storm, make up supervision)
	$(RUN) pytest tests/fault $(PYTEST_ARGS)

test-unit: install ## Only the fast tests (no broker)
	$(RUN) pytest -m "unit or component" $(PYTEST_ARGS)

lint: install ## ruff, mypy --strict, and the deployment validations (installs promtool when root)
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) mypy libs/common/src $(wildcard services/*/src) $(wildcard tools/*/src)
	UV="$(UV)" deploy/lint.sh

fmt: install ## Format and autofix
	$(RUN) ruff format .
	$(RUN) ruff check --fix .

schema: install ## Export the config JSON Schema to config/shopbotly.schema.json
	$(RUN) shopbotly config schema > config/shopbotly.schema.json

bench: install ## Run the benchmarks (installs wrk/hey when root); writes bench/results/latest.{json,md}
	tools/bench/ensure-tools.sh
	$(RUN) python -m shopbotly.bench $(BENCH_ARGS)

.PHONY: images test-images
images: .venv/.installed ## Build every image of the Dockerfile (docker, else buildah; local stand-in bases when no registry answers)
	UV="$(UV)" $(RUN) python deploy/images/images.py build

test-images: install ## Build the images, start each service from its image (own user, read-only root): /readyz (root)
	UV="$(UV)" SHOPBOTLY_IMAGE_TESTS=1 $(RUN) pytest tests/images $(PYTEST_ARGS)

clean: ## Remove the run folder and caches (keeps the Kafka jars)
	deploy/local/stack.sh down || true
	rm -rf .run .mypy_cache .ruff_cache
