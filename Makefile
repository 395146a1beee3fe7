# The project's commands. Every target creates .venv and installs on first use,
# so a fresh machine needs nothing but Python 3.11 and make.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install dev test lint format token plan plan-diff clean

help: ## List the targets.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

$(PY):
	$(PYTHON) -m venv $(VENV)

# Reinstall only when the dependency list changes.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@# The engine unpickles the Supabase dynamic provider in a process of its own, started in
	@# stacks/, which must import components.supabase_api: the project root goes on the venv's
	@# path (the package itself ships only the app).
	$(PY) -c 'import pathlib, sysconfig; pathlib.Path(sysconfig.get_path("purelib"), "liftoff-root.pth").write_text(str(pathlib.Path.cwd()) + "\n")'
	@touch $(STAMP)

install: $(STAMP) ## Create .venv and install the project with its dev tools.

dev: $(STAMP) ## Run the whole system locally: PostgreSQL, Redis, migrations, API.
	$(PY) -m app.local

test: $(STAMP) ## Run the whole test suite.
	$(PY) -m pytest

lint: $(STAMP) ## Ruff (lint and format check) and strict mypy.
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

format: $(STAMP) ## Apply ruff's fixes and formatting.
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

token: $(STAMP) ## Mint a dev JWT for the local system (TENANT=demo|other).
	$(PY) -m app.local.token --tenant $(or $(TENANT),demo)

plan: $(STAMP) ## Render STACK (staging|prod) offline into .plan/STACK.json: resources, policy results.
	$(if $(STACK),,$(error set STACK, e.g. make plan STACK=prod))
	$(PY) stacks/plan.py render --stack $(STACK) --out .plan/$(STACK).json

plan-diff: $(STAMP) ## What the working tree changes in each stack, against BASE (a git ref).
	$(if $(BASE),,$(error set BASE, e.g. make plan-diff BASE=origin/main))
	$(PY) stacks/plan.py diff --base $(BASE)

clean: ## Remove .venv and caches (keeps .local/ data).
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
