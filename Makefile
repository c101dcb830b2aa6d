# fti-assets: `make demo` runs the whole FTI graph on embedded defaults; `make test` passes the tests.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
export DAGSTER_HOME ?= $(CURDIR)/data/dagster_home
export MLFLOW_DISABLE_TELEMETRY := true
export MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR := false
export DAGSTER_DISABLE_TELEMETRY := true
HOST ?= 127.0.0.1

DRIFT_ENV := FTI_CONFIG=configs/simulated_drift.yaml DAGSTER_HOME=$(CURDIR)/data/drift/dagster_home

SERVE_PORT ?= 8000

.PHONY: install demo demo-drift demo-scaleout ui ui-drift mlflow-ui serve rollback recover bench test lint format clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# The CPU wheel of torch first: with torch present, the project's `torch>=2.2` downloads nothing more.
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[dev,scaleout]"
	touch $@

install: $(VENV)/.installed

$(DAGSTER_HOME)/dagster.yaml: configs/dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	cp configs/dagster.yaml $@

demo: install $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/python -m fti_assets.demo $(ARGS)

# The Dagster UI, plus the drift-report and MLflow servers its links open (all on loopback).
ui: install $(DAGSTER_HOME)/dagster.yaml
	BIN=$(BIN) HOST=$(HOST) scripts/ui.sh data

# The closed loop: drift -> held-back predictions -> one retrain -> gated promotion -> release.
demo-drift: install
	mkdir -p data/drift/dagster_home && cp configs/dagster.yaml data/drift/dagster_home/
	$(DRIFT_ENV) $(BIN)/python -m fti_assets.demo_drift

ui-drift: install
	$(DRIFT_ENV) BIN=$(BIN) HOST=$(HOST) scripts/ui.sh data/drift

# The whole graph on real engines, on loopback (deploy/): the instance on PostgreSQL, steps on Celery workers (the
# PyTorch step on the `gpu` queue's worker), an MLflow server, the Feast SQL registry, Redis. Creates its own
# databases, stops what it starts (about 2 minutes). FTI_CELERY_BROKER_URL=pyamqp://guest:guest@127.0.0.1:5672//
# runs it on RabbitMQ.
demo-scaleout: install
	BIN=$(BIN) scripts/demo_scaleout.sh

# Online predictions: POST /predict, GET /health, /metrics, /docs (FTI_SERVICE_TOKEN for a bearer token).
serve: install
	$(BIN)/python -m fti_assets.serving --host $(HOST) --port $(SERVE_PORT) $(ARGS)

# make rollback VERSION=3 REASON="v4 misbehaves in production"
rollback: install $(DAGSTER_HOME)/dagster.yaml
	@test -n "$(VERSION)" || { echo "usage: make rollback VERSION=N [REASON=...]" >&2; exit 2; }
	$(BIN)/python -m fti_assets.training.rollback --version "$(VERSION)" --reason "$(or $(REASON),manual rollback)"

# Each prints its named baseline and ours, measured in the same run. Loopback traffic only.
bench: install
	$(BIN)/python -m pip install --quiet -e ".[bench]"
	$(BIN)/python bench/drift.py --rows 1000000 --columns 10
	$(BIN)/python bench/online_materialize.py --entities 200000 $(if $(FTI_TEST_REDIS_URL),--redis $(FTI_TEST_REDIS_URL))
	$(BIN)/python bench/serving.py $(ARGS)
	$(BIN)/python bench/serving_under_writes.py
	$(BIN)/python bench/backfill_shape.py
	$(BIN)/python bench/pipeline_scale.py --scales 1 4
	$(BIN)/python bench/model_quality.py
	$(if $(and $(FTI_TEST_POSTGRES_URL),$(FTI_TEST_REDIS_URL)),$(BIN)/python bench/scaleout_backfill.py)

mlflow-ui: install
	$(BIN)/mlflow ui --host $(HOST) --port 5000 --backend-store-uri sqlite:///$(CURDIR)/data/mlflow/mlflow.db

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check fti_assets fti_assets_tests feature_repo
	$(BIN)/ruff format --check fti_assets fti_assets_tests feature_repo

format: install
	$(BIN)/ruff format fti_assets fti_assets_tests feature_repo
	$(BIN)/ruff check --fix fti_assets fti_assets_tests feature_repo

clean:
	rm -rf data $(VENV)

# Fail runs whose process died, free their pool slots, sweep their temp files (make demo does this first).
recover: install $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/python -m fti_assets.recovery
