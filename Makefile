# Two set-up commands, each complete on a fresh machine and safe to repeat:
#   make run    installs what it needs, then runs `kedro run --pipelines=train` on the embedded sample
#   make test   installs what it needs, then lints (ruff, mypy) and runs the whole test suite
# and, for the inner loop:
#   make test-fast  the tests not marked slow (the unit tests), no lint
VENV ?= .venv
PYTHON := $(VENV)/bin/python
export KEDRO_DISABLE_TELEMETRY := true
export DS_BUILD_OPS := 0

.PHONY: install run test test-fast lint viz mlflow-ui

install: $(VENV)/.installed

# torch first, on its own: the default is the CPU build (an unpinned torch from PyPI is a CUDA build of
# several GB). On a GPU machine, take a CUDA build from PyTorch's index, e.g.
#   make install TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
TORCH ?= torch==2.13.0
TORCH_INDEX_URL ?=
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet "$(TORCH)" $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL))
	$(PYTHON) -m pip install --quiet -e ".[dev]"
	touch $@

run: install
	$(VENV)/bin/kedro run --pipelines=train

test: lint
	$(VENV)/bin/pytest

test-fast: install
	$(VENV)/bin/pytest -m "not slow"

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy src

viz: install
	$(VENV)/bin/kedro viz run --host 127.0.0.1 --no-browser

mlflow-ui: install
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///mlflow.db
