# The two commands a newcomer needs: `make run` and `make test`.
# Each sets up its own virtual environment from pyproject.toml on first use.

VENV ?= .venv
BIN := $(VENV)/bin
# The machine's PostgreSQL, unless the environment names another.
PACHYDERM_TEST_DATABASE_URL ?= postgresql://postgres@127.0.0.1:5432/test
export PACHYDERM_TEST_DATABASE_URL
# The machine's RabbitMQ (with the consistent-hash plugin), unless the environment names another.
PACHYDERM_TEST_AMQP_URL ?= amqp://guest:guest@127.0.0.1:5672/
export PACHYDERM_TEST_AMQP_URL

.PHONY: run test lint audit bench clean

# setuptools too: venv seeds Python 3.11's own (65.5.0), which has known advisories.
$(BIN)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip setuptools
	$(BIN)/pip install --quiet --editable '.[dev]'
	touch $@

run: $(BIN)/.installed
	$(BIN)/python -m examples.demo

# With the library's branch coverage, reported at the end (floor: pyproject.toml).
test: $(BIN)/.installed
	$(BIN)/pytest --cov --cov-report=term

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Known vulnerabilities in the installed environment, pinned as `pip freeze` lists it
# (the editable project itself left out): fails on any finding, and on any package it
# could not audit (--strict). It needs PyPI's JSON API, or OSV with
# PIP_AUDIT_FLAGS='--vulnerability-service osv'; .ci/audit checks first that one answers.
audit: $(BIN)/.installed
	$(BIN)/pip freeze --all --exclude-editable > $(VENV)/audited-requirements.txt
	$(BIN)/pip-audit --strict --no-deps --disable-pip --progress-spinner off \
		--requirement $(VENV)/audited-requirements.txt $(PIP_AUDIT_FLAGS)

bench: $(BIN)/.installed
	$(BIN)/python -m bench --runs 3

clean:
	rm -rf $(VENV) pachyderm.db pachyderm.db-wal pachyderm.db-shm
