# Two commands set up a fresh machine with only Python 3.11 on it:
#   make demo   — install, then run the main job on the embedded default (built-in synthetic data)
#   make test   — install, then run the test suite
# Both install exactly the versions in requirements.lock (what CI verified); so do .ci/run and
# cluster/Dockerfile. `make lock` refreshes the lock after a change to pyproject.toml (keeping every pin
# it can), `make lock-upgrade` moves every pin to the newest release pyproject's ranges allow;
# `make check-latest` tries those newest releases in a scratch venv without touching the lock.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
LOCK := requirements.lock
# the lock is resolved for the platform CI and the cluster image run on; pip applies the same pins elsewhere
LOCK_ARGS := pyproject.toml --extra dev --extra text --extra cluster --python-version 3.11 \
	--python-platform x86_64-manylinux_2_28 -o $(LOCK)
LATEST ?= /tmp/arvid-ray-latest

.PHONY: install demo test test-fast test-integration test-e2e lint lock lock-upgrade check-latest

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade "pip>=24"

install: $(BIN)/python
	$(BIN)/pip install -q -c $(LOCK) torch==2.13.0
	$(BIN)/pip install -q -c $(LOCK) -e ".[dev,text]"  # text: offline sentence encoder, after torch so pip keeps the CPU build

demo: install
	$(BIN)/python experiments/tune_window.py

test: install
	$(BIN)/python -m pytest -q --durations=30 tests

# the three folders of tests/ one at a time; `test` above runs all of them. Markers (`ray`, `server`, from
# fixture use in tests/conftest.py; `slow`) still select across folders with -m.
# unit tests only (tests/unit: no Ray, no servers, no whole CLI/script runs): under 2 minutes
test-fast: install
	$(BIN)/python -m pytest -q tests/unit

# the shared Ray instance and real servers (MLflow, S3, PostgreSQL)
test-integration: install
	$(BIN)/python -m pytest -q --durations=10 tests/integration

# whole sweeps, CLI and script runs, the multi-node cluster, the browser
test-e2e: install
	$(BIN)/python -m pytest -q --durations=10 tests/e2e

lint: install
	$(BIN)/ruff check arvid_ray experiments tests

lock: install
	$(BIN)/uv pip compile $(LOCK_ARGS)

lock-upgrade: install
	$(BIN)/uv pip compile --upgrade $(LOCK_ARGS)

# pyproject's ranges without the lock, in a scratch venv: the fast unit tests and the searcher-pickle test
# (tests/unit/test_searcher.py among them: it needs no Ray) there, then every version that differs from the lock (not in CI: it downloads the newest releases)
check-latest:
	rm -rf $(LATEST) && $(PY) -m venv $(LATEST)
	$(LATEST)/bin/pip install -q --upgrade "pip>=24"
	$(LATEST)/bin/pip install -q torch==2.13.0
	$(LATEST)/bin/pip install -q -e ".[dev,text]"
	rc=0; $(LATEST)/bin/python -m pytest -q -p no:cacheprovider tests/unit || rc=$$?; $(LATEST)/bin/python tools/lock_diff.py $(LOCK); exit $$rc
