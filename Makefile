# deadunits: `make run` (a default sweep and its report), `make test` (the suite).
# Both create .venv on first use.
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

.PHONY: venv run sweep report test lint format ui server slurm slurm-stop bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

run: sweep report

sweep: venv
	$(PY) -m pipeline -m experiment=$(EXPERIMENT)

report: venv
	$(PY) -m analysis --experiment $(EXPERIMENT) --out reports/$(EXPERIMENT)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: venv
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

test: venv lint
	$(PY) -m pytest

ui: venv
	@echo "MLflow UI on $(UI_STORE): http://$(HOST):$(PORT)  (Ctrl-C stops it)"
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false \
	$(VENV)/bin/mlflow ui --backend-store-uri $(UI_STORE) --host $(HOST) --port $(PORT)

server: venv
	HOST=$(HOST) PORT=$(PORT) MLFLOW=$(abspath $(VENV))/bin/mlflow scripts/server.sh $(SERVER_DIR)

slurm: ## start a local one-node SLURM cluster in SLURM_DIR; prints the SLURM_CONF to export
	scripts/slurm.sh start $(SLURM_DIR)

slurm-stop: ## stop the cluster `make slurm` started (its data stays in SLURM_DIR)
	scripts/slurm.sh stop $(SLURM_DIR)

clean:
	rm -rf outputs multirun reports .pytest_cache test-artifacts
