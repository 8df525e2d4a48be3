# llm-observatory: every target bootstraps what it needs on a fresh machine that has only
# python3 (3.11), make, node/npm and the PostgreSQL server binaries, as root or as a user.
#
#   make demo     the main job on the embedded SQLite demo source, into a local lake
#   make test     the whole suite, PostgreSQL- and Azurite-backed tests included (PYTEST_ARGS=...)
#   make dev      the Dagster UI on the same definitions (DAGSTER_HOME shared with the CLI)
#   make bench    the benchmark (bench/run.py, BENCH_ARGS=...)
#   make lint     ruff check, ruff format --check, the import structure
#   make clean    remove caches and the installed environments (.venv, node_modules)

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
.DELETE_ON_ERROR:

PYTHON ?= python3
VENV := .venv
VENV_PYTHON := $(VENV)/bin/python
VENV_STAMP := $(VENV)/.make-synced
NODE_STAMP := node_modules/.make-installed

# uv: UV if given, else the one on PATH, else one that pip installs into a bootstrap folder.
UV_VERSION ?= 0.13.9
UV_BOOTSTRAP := .venv-bootstrap
UV ?= $(or $(shell command -v uv 2>/dev/null),$(UV_BOOTSTRAP)/bin/uv)
UV_PREREQ := $(filter $(UV_BOOTSTRAP)/bin/uv,$(UV))
# Trust the machine's certificate store (as pip and npm do), not only uv's bundled roots:
# behind a TLS-inspecting proxy uv otherwise fails with "invalid peer certificate".
export UV_SYSTEM_CERTS ?= true

LLM_OBS_HOME ?= .llm_observatory
DAGSTER_HOME ?= $(LLM_OBS_HOME)/dagster
# Dagster wants an absolute DAGSTER_HOME.
DAGSTER_HOME_ABS = $(abspath $(DAGSTER_HOME))

# Keep runs offline: `dagster dev` otherwise uploads usage telemetry to Dagster Labs.
export DAGSTER_DISABLE_TELEMETRY ?= true

PYTEST_ARGS ?=
BENCH_ARGS ?=
DEV_ARGS ?=

.PHONY: help venv .venv node_modules browser odbc test demo dev bench lint clean clean-home

help:
	@sed -n 's/^#   make /  make /p' $(firstword $(MAKEFILE_LIST))

# ------------------------------------------------------------------------------ environments

# A venv when python3 has a working venv module (Debian needs python3-venv for that), else
# pip --target: both leave the executable at $(UV_BOOTSTRAP)/bin/uv.
$(UV_BOOTSTRAP)/bin/uv:
	@echo "uv not on PATH: installing uv $(UV_VERSION) into $(UV_BOOTSTRAP)/"
	rm -rf $(UV_BOOTSTRAP)
	if $(PYTHON) -m venv $(UV_BOOTSTRAP) >/dev/null 2>&1 && [ -x $(UV_BOOTSTRAP)/bin/pip ]; then \
	  $(UV_BOOTSTRAP)/bin/python -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"; \
	else \
	  rm -rf $(UV_BOOTSTRAP); \
	  $(PYTHON) -m pip install --quiet --disable-pip-version-check --target $(UV_BOOTSTRAP) "uv==$(UV_VERSION)"; \
	fi
	$@ --version

# The virtual environment, exactly as uv.lock says, with the dev and bench groups (dlt for the
# comparison in `make bench`) and every extra.
# Re-synced only when pyproject.toml or uv.lock change (or .venv is gone).
$(VENV_STAMP): pyproject.toml uv.lock | $(UV_PREREQ)
	UV_PROJECT_ENVIRONMENT="$(abspath $(VENV))" $(UV) sync --frozen --compile-bytecode --all-extras --group dev --group bench
	touch $@

venv .venv: $(VENV_STAMP)

# Azurite (the Azure Storage emulator) from npm, into ./node_modules, never globally.
package-lock.json:
	npm install --package-lock-only --no-audit --no-fund

$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $@

node_modules: $(NODE_STAMP)

# The browser of the UI test: Debian's chromium (Playwright drives it; no browser download).
# Installed when missing and this runs as root (CI); elsewhere the UI test skips, unless CI=true.
browser:
	@if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then \
	  :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing Debian's chromium for the UI test"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    --no-install-recommends chromium; \
	else \
	  echo "no chromium (apt-get install chromium as root): the UI test will skip, or fail under CI"; \
	fi

# The ODBC drivers the ODBC read path (SQL Server's) is tested through in CI: Debian's unixODBC
# with its PostgreSQL and SQLite drivers. Installed when missing and this runs as root (CI);
# elsewhere the ODBC tests skip, unless CI=true. (Microsoft's ODBC Driver 18 is for workers
# reading a real SQL Server; docs/sql-server-and-adls.md says how to install it.)
ODBC_PACKAGES := unixodbc odbc-postgresql libsqliteodbc
odbc:
	@if command -v odbcinst >/dev/null 2>&1 && odbcinst -q -d | grep -q 'PostgreSQL Unicode' \
	    && odbcinst -q -d | grep -q 'SQLite3'; then \
	  :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing Debian's ODBC drivers for the ODBC read path's tests"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    --no-install-recommends $(ODBC_PACKAGES); \
	else \
	  echo "no ODBC drivers (apt-get install $(ODBC_PACKAGES) as root): the ODBC tests will skip, or fail under CI"; \
	fi

# ----------------------------------------------------------------------------------- commands

test: $(VENV_STAMP) $(NODE_STAMP) browser odbc
	$(VENV_PYTHON) -m pytest $(PYTEST_ARGS)

demo: $(VENV_STAMP)
	$(VENV)/bin/llm-observatory demo

dev: $(VENV_STAMP)
	mkdir -p "$(DAGSTER_HOME_ABS)"
	DAGSTER_HOME="$(DAGSTER_HOME_ABS)" $(VENV)/bin/dagster dev -w workspace.yaml $(DEV_ARGS)

bench: $(VENV_STAMP) $(NODE_STAMP) odbc
	$(VENV_PYTHON) bench/run.py $(BENCH_ARGS)

# The style, enforced: ruff's rules (complexity limit 15 included, pyproject.toml), ruff's
# formatting, and the package's shape (imports pointing one way, none hidden in a function).
lint: $(VENV_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV_PYTHON) -m pytest -q -p no:cacheprovider llm_observatory_tests/test_structure.py

clean:
	rm -rf $(VENV) $(UV_BOOTSTRAP) node_modules .pytest_cache .ruff_cache
	find . -path ./.git -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

# The demo's working folder (source database, lake, Dagster instance): not part of `clean`.
clean-home:
	rm -rf "$(LLM_OBS_HOME)"
