# deadunits: `make run` (a default sweep and its report), `make test` (the suite).
# Both create .venv on first use. `make help` lists every target.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
EXPERIMENT ?= quick_study
HOST ?= 127.0.0.1
PORT ?= 5000
# `make ui` opens this store; `make server` keeps its PostgreSQL data and artifacts here.
# (Both turn off the server's GenAI job runner, which training runs do not use.)
UI_STORE ?= sqlite:///$(CURDIR)/mlflow.db
SERVER_DIR ?= $(CURDIR)/mlflow-server
# `make slurm` keeps a local one-node SLURM cluster (with accounting) here.
SLURM_DIR ?= $(CURDIR)/slurm-cluster
BENCH_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help venv run sweep report test test-fast lint format ui server slurm slurm-stop bench clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | \
		awk 'BEGIN {FS = ":.*## "}; {printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP) ## create .venv and install the project with its test extras

run: sweep report ## the default sweep (EXPERIMENT=quick_study) and its report

sweep: venv ## the sweep of preset EXPERIMENT into mlflow.db
	$(PY) -m pipeline -m experiment=$(EXPERIMENT)

report: venv ## the report of EXPERIMENT into reports/EXPERIMENT/
	$(PY) -m analysis --experiment $(EXPERIMENT) --out reports/$(EXPERIMENT)

lint: venv ## ruff check and ruff format --check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: venv ## ruff fix and format in place
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

test: venv lint ## the full suite (what CI runs): lint, unit, slow and service tests, 2 workers
	$(PY) -m pytest -n 2 --dist loadfile --durations=15

test-fast: venv ## unit tests only (no `slow`, no `services`): the edit-test loop
	$(PY) -m pytest -q -m "not slow and not services"

ui: venv ## the MLflow UI on UI_STORE at http://HOST:PORT
	@echo "MLflow UI on $(UI_STORE): http://$(HOST):$(PORT)  (Ctrl-C stops it)"
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false \
	$(VENV)/bin/mlflow ui --backend-store-uri $(UI_STORE) --host $(HOST) --port $(PORT)

server: venv ## PostgreSQL + an MLflow tracking server at http://HOST:PORT (SERVER_DIR)
	HOST=$(HOST) PORT=$(PORT) MLFLOW=$(abspath $(VENV))/bin/mlflow scripts/server.sh $(SERVER_DIR)

slurm: ## start a local one-node SLURM cluster in SLURM_DIR; prints the SLURM_CONF to export
	scripts/slurm.sh start $(SLURM_DIR)

slurm-stop: ## stop the cluster `make slurm` started (its data stays in SLURM_DIR)
	scripts/slurm.sh stop $(SLURM_DIR)

bench: venv ## the engine and logging benchmark; prints its table (BENCH_ARGS to pass flags)
	$(PY) benchmarks/bench_engines.py $(BENCH_ARGS)

clean: ## remove outputs, multirun dirs, reports and test artifacts
	rm -rf outputs multirun reports .pytest_cache test-artifacts
