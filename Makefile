# Two set-up commands, each complete on a fresh machine and safe to repeat:
#   make run    installs what it needs, then runs `kedro run --pipelines=train` on the embedded sample
#   make test   installs what it needs, then runs the whole test suite
VENV ?= .venv
PYTHON := $(VENV)/bin/python
export KEDRO_DISABLE_TELEMETRY := true
export DS_BUILD_OPS := 0

.PHONY: install run test viz mlflow-ui

install: $(VENV)/.installed

# torch first, pinned: its CPU build is on local disk here, and an unpinned torch pulls a CUDA build.
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet torch==2.13.0
	$(PYTHON) -m pip install --quiet -e ".[dev]"
	touch $@

run: install
	$(VENV)/bin/kedro run --pipelines=train

test: install
	$(VENV)/bin/pytest

viz: install
	$(VENV)/bin/kedro viz run --host 127.0.0.1 --no-browser

mlflow-ui: install
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///mlflow.db
