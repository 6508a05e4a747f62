# Two commands: `make run` (the pipeline) and `make test` (the suite). Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PATH := $(CURDIR)/$(BIN):$(PATH)
export TF_CPP_MIN_LOG_LEVEL ?= 2
UI_PORT ?= 5000

.PHONY: run test ui bench clean

$(STAMP): pyproject.toml requirements.lock
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c requirements.lock -e '.[test]'
	touch $@

run: $(STAMP)
	$(BIN)/dvc repro
	@echo
	@echo "Report:       reports/comparison.md and reports/comparison.html"
	@echo "Metrics:      dvc metrics show"
	@echo "MLflow store: $${MLFLOW_TRACKING_URI:-sqlite:///$(CURDIR)/mlflow.db}  (browse it with: make ui)"

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadfile $(PYTEST_ARGS)  # two workers: the suite waits mostly on TensorFlow start-ups

ui: $(STAMP)
	@echo "MLflow UI: http://127.0.0.1:$(UI_PORT)  (Ctrl-C to stop)"
	@echo "Runs tables: choose 'Model training' at the sidebar's top (MLflow 3 opens on its GenAI view); the report's run links open there"
	$(BIN)/mlflow ui --backend-store-uri "$${MLFLOW_TRACKING_URI:-sqlite:///$(CURDIR)/mlflow.db}" --host 127.0.0.1 --port $(UI_PORT)

bench: $(STAMP)
	$(BIN)/python -m bench.training_speed

clean:
	# metrics/, plots/ and reports/ are tracked in git (the committed run): `git checkout` them, never delete
	rm -rf data/prepared models mlflow.db mlruns mlartifacts
