# Two commands set up a fresh machine with only Python 3.11 on it:
#   make demo   — install, then run the main job on the embedded default (built-in synthetic data)
#   make test   — install, then run the test suite
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install demo test lint

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev,text]"  # text: offline sentence encoder, after torch so pip keeps the CPU build

demo: install
	$(BIN)/python experiments/tune_window.py

test: install
	$(BIN)/python -m pytest -q tests

lint: install
	$(BIN)/ruff check arvid_ray experiments tests
