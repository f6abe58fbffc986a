# The two commands a new user needs: `make run` (the whole system on this machine) and
# `make test`. Everything runs from the virtual environment in $(VENV).
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY = $(VENV)/bin/python
# Where a machine keeps wheels that are not on PyPI in the form we pin (torch's CPU build).
WHEELS ?= /opt/wheels
FIND_LINKS = $(if $(wildcard $(WHEELS)),--find-links $(WHEELS))
# Extra arguments for the test runner, e.g. `make test TEST_ARGS="tests.test_celery -v 2"`.
TEST_ARGS ?=
BENCHES = $(sort $(filter-out bench/__init__.py,$(wildcard bench/*.py)))

.PHONY: help install run test lint format bench

help:
	@echo "make install  create $(VENV) and install requirements-dev.txt"
	@echo "make run      migrate, seed demo data, then web + Celery worker + beat until Ctrl-C"
	@echo "make test     the test suite (Django test runner)"
	@echo "make lint     ruff check, ruff format --check, import-layer contracts"
	@echo "make format   ruff format and safe ruff fixes"
	@echo "make bench    the benchmarks in bench/ (numbers quoted in the README)"

install: $(VENV)/.installed

# Reinstalls only when a requirements file changed since the last install.
$(VENV)/.installed: requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install $(FIND_LINKS) -r requirements-dev.txt
	touch $@

# Embedded (no DATABASE_URL/REDIS_URL): SQLite, filesystem broker, runserver and an admin
# login admin/admin. With DATABASE_URL and REDIS_URL (plus SECRET_KEY and ALLOWED_HOSTS):
# PostgreSQL, Redis, gunicorn, collectstatic. See marketing/management/commands/run_all.py.
run: install
	$(PY) manage.py run_all

# Serial by default (the whole suite takes a minute or two on 2 cores); try
# `make test TEST_ARGS="--parallel auto"` for more cores.
test: install
	$(PY) manage.py test $(TEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: install
	@test -n "$(BENCHES)" || { echo "no benchmarks in bench/"; exit 1; }
	set -e; for bench in $(BENCHES); do $(PY) $$bench; done
