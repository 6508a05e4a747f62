# Two commands: `make run` (the pipeline) and `make test` (the suite). Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PATH := $(CURDIR)/$(BIN):$(PATH)
export TF_CPP_MIN_LOG_LEVEL ?= 2
UI_PORT ?= 5000
# where the report's MLflow run links point (with a local store); a comment on the line itself would end up in the value
export TRANSFERLAB_UI_ADDRESS ?= http://127.0.0.1:$(UI_PORT)
REPRO_FLAGS ?= -f  # make verify reruns every stage: a stage whose outputs are all in git (the sweeps) is otherwise skipped
SERVER_DIR ?= .server
SERVER_PORT ?= 5001
PG_PORT ?= 5433

.PHONY: run test ui bench clean verify server server-stop pipeline layers

$(STAMP): pyproject.toml requirements.lock
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c requirements.lock -e '.[test]'
	touch $@

run: $(STAMP)
	$(BIN)/python -m transferlab.launch.preflight  # a FIFO or a link out in what DVC hashes, an alias bomb in params.yaml: refused before DVC (or the check below) reads them
	$(BIN)/python -m transferlab.tools.pipeline --check  # stale dependency lists (imports or sweep variants edited) stop here: make pipeline
	$(BIN)/python -m transferlab.launch.warm -- $(BIN)/dvc repro  # stages fork from one process that imported TensorFlow and MLflow
	@echo
	@echo "Report:       reports/comparison.md and reports/comparison.html"
	@echo "Metrics:      dvc metrics show"
	@echo "MLflow store: $${MLFLOW_TRACKING_URI:-sqlite:///$(CURDIR)/mlflow.db}  (browse it with: make ui)"

test: $(STAMP)
	$(BIN)/python -m pytest -n 3 --dist loadfile $(PYTEST_ARGS)  # three workers on two cores: with two, a third of the CPU time idled while tests waited on stage processes, servers and clusters (9 min 00 s; 7 min 56 s with three)

ui: $(STAMP)
	@echo "MLflow UI: http://127.0.0.1:$(UI_PORT)  (Ctrl-C to stop)"
	@echo "Runs tables: choose 'Model training' at the sidebar's top (MLflow 3 opens on its GenAI view); the report's run links open there"
	# one local user: one worker (MLflow's default 4 only take longer to start), and no job runner (MLflow 3's
	# GenAI jobs: 10 processes and 2.6 GiB with it, 2 processes and about 550 MiB without)
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false exec $(BIN)/mlflow ui --backend-store-uri "$${MLFLOW_TRACKING_URI:-sqlite:///$(CURDIR)/mlflow.db}" \
		--host 127.0.0.1 --port $(UI_PORT) --workers 1

pipeline: $(STAMP)  # regenerate the dependency lists of dvc.yaml, inputs/dvc.yaml, variants/dvc.yaml from the code and params
	$(BIN)/python -m transferlab.tools.pipeline

layers: $(STAMP)  # each folder's imports, and any against the layer order (docs/architecture.md)
	$(BIN)/python -m transferlab.tools.layers

verify: $(STAMP)  # rebuild (a fresh clone rebuilds everything), then fail if the committed run does not reproduce (bits on its platform, conclusions elsewhere)
	$(BIN)/python -m transferlab.launch.warm -- $(BIN)/dvc repro $(REPRO_FLAGS)  # as `make run` does
	$(BIN)/python -m transferlab.tools.verify

server: $(STAMP)  # MLflow on a local PostgreSQL cluster, both on 127.0.0.1 (src/transferlab/tools/server.py)
	$(BIN)/python -m transferlab.tools.server start --dir $(SERVER_DIR) --port $(SERVER_PORT) --pg-port $(PG_PORT)

server-stop: $(STAMP)
	$(BIN)/python -m transferlab.tools.server stop --dir $(SERVER_DIR)

bench: $(STAMP)
	$(BIN)/python -m bench.training_speed

clean:
	# metrics/, plots/ and reports/ are tracked in git (the committed run): `git checkout` them, never delete
	rm -rf data/prepared models mlflow.db mlruns mlartifacts
