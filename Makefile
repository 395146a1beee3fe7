# The project's commands. Every target creates .venv and installs on first use,
# so a fresh machine needs nothing but Python 3.11 and make.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The policy pack's own virtualenv, the one policies/PulumiPolicy.yaml names.
PACK_VENV := policies/venv
PACK_STAMP := $(PACK_VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install dev test lint format docs token plan plan-diff cost lock prune-secrets release rollback rehearse compat clean

help: ## List the targets.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

$(PY):
	$(PYTHON) -m venv $(VENV)

# Reinstall only when the dependency list changes.
# The .pth puts the project root on the venv's path: Pulumi's dynamic-provider host (a separate
# process on this venv) must import components/ to unpickle the providers defined there.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	$(PY) -c 'import pathlib, sysconfig; pathlib.Path(sysconfig.get_path("purelib"), "liftoff-root.pth").write_text("$(CURDIR)\n")'
	@touch $(STAMP)

# The CLI runs a local policy pack on <pack>/<virtualenv>/bin/python as it finds it and installs
# nothing into it (tools/runtime.py), so this creates it. Recreated from scratch whenever the
# requirements change: it holds exactly what the pack declares, and nothing of the project's.
$(PACK_STAMP): policies/requirements.txt
	$(PYTHON) -m venv --clear $(PACK_VENV)
	$(PACK_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(PACK_VENV)/bin/python -m pip install --quiet -r policies/requirements.txt
	@touch $(PACK_STAMP)

install: $(STAMP) $(PACK_STAMP) ## Create .venv with the project and its dev tools, and the policy pack's policies/venv.

dev: $(STAMP) ## Run the whole system locally: PostgreSQL, Redis, migrations, API, worker (SCALE=on-demand: workers from zero).
	$(PY) -m app.local $(if $(SCALE),--scale $(SCALE))

test: $(STAMP) $(PACK_STAMP) ## Run the whole test suite.
	$(PY) -m pytest

lint: $(STAMP) ## Ruff (lint and format check), strict mypy, the dependency rules and Squawk on the migrations.
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
	$(VENV)/bin/lint-imports --no-logo
	$(PY) -m release.compat.lint

format: $(STAMP) ## Apply ruff's fixes and formatting.
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

docs: $(STAMP) ## Regenerate docs/configuration.md from the settings contract (a test checks it).
	$(PY) -m tools.configuration_doc

token: $(STAMP) ## Mint a dev JWT for the local system (TENANT=demo|other).
	$(PY) -m app.local.token --tenant $(or $(TENANT),demo)

plan: $(STAMP) $(PACK_STAMP) ## Render STACK (staging|prod) offline into .plan/STACK.json: resources, policy results.
	$(if $(STACK),,$(error set STACK, e.g. make plan STACK=prod))
	$(PY) tools/plan.py render --stack $(STACK) --out .plan/$(STACK).json

plan-diff: $(STAMP) $(PACK_STAMP) ## What the working tree changes in each stack, against BASE (a git ref).
	$(if $(BASE),,$(error set BASE, e.g. make plan-diff BASE=origin/main))
	$(PY) tools/plan.py diff --base $(BASE)

lock: $(STAMP) ## Re-lock the image's dependencies (app/requirements.lock) after changing pyproject.toml.
	$(PY) -m piptools compile --quiet --generate-hashes --strip-extras --allow-unsafe --all-build-deps \
		--no-emit-index-url --no-emit-find-links --output-file app/requirements.lock pyproject.toml
	sed -i 's|^#    pip-compile .*|#    make lock|' app/requirements.lock

cost: $(STAMP) ## Monthly cost of STACK (staging|prod), offline, line by line (FORMAT=table|markdown|json).
	$(if $(STACK),,$(error set STACK, e.g. make cost STACK=prod))
	$(PY) -m tools.cost --stack $(STACK) --format $(or $(FORMAT),table) $(if $(FREE_TIERS),--free-tiers)

prune-secrets: $(STAMP) ## Destroy STACK's secret versions no revision pins (lists them unless APPLY=1).
	$(if $(STACK),,$(error set STACK, e.g. make prune-secrets STACK=prod))
	$(PY) tools/prune_secrets.py --stack $(STACK) $(if $(APPLY),--apply)

# Needs the Pulumi CLI and the deployer's credentials; exits 3 when a gate rolls the release back
# and 4 when it holds for approval (make reports those as errors; CI reads the code itself).
release: $(STAMP) $(PACK_STAMP) ## Release STACK behind its canary gates (RESUME=1, APPROVE=1, RETRY=1: see docs/deploy.md).
	$(if $(STACK),,$(error set STACK, e.g. make release STACK=prod))
	$(PY) -m release release --stack $(STACK) $(if $(RETRY),--retry) $(if $(RESUME),--resume) $(if $(APPROVE),--approve)

rollback: $(STAMP) $(PACK_STAMP) ## Send STACK's API traffic and worker instances back to the last good release, traffic only.
	$(if $(STACK),,$(error set STACK, e.g. make rollback STACK=prod))
	$(PY) -m release rollback --stack $(STACK) $(if $(FURTHER),--further)

# Starts its own Postgres, Redis, API revisions and worker instances in .local/rehearsal and stops
# them at the end; with FAULT=api or FAULT=worker the expected outcome is a rollback, exit 3 (make
# reports it as "Error 3"). RATE=0 sends no load: the steps are judged on the controller's probes.
rehearse: $(STAMP) ## Rehearse a release on this machine (FAULT=api|worker, RATE=N requests/s (0: probes only), MIGRATION=expand|breaking).
	$(PY) -m release.rehearsal $(if $(FAULT),--fault $(if $(filter 1,$(FAULT)),api,$(FAULT))) $(if $(RATE),--rate $(RATE)) $(if $(MIGRATION),--migration $(MIGRATION))

# Starts its own Postgres, Redis and both sides' API and worker in a temporary directory; exits 3
# when BASE's code fails on the schema HEAD's migrations make (make reports it as "Error 3").
compat: $(STAMP) ## Check the code at BASE (a git ref) against HEAD's schema: old code, new migrations (JSON=1).
	$(if $(BASE),,$(error set BASE, e.g. make compat BASE=origin/main))
	$(PY) -m release.compat --base $(BASE) $(if $(HEAD),--head $(HEAD)) $(if $(JSON),--json)

clean: ## Remove .venv, policies/venv and caches (keeps .local/ data).
	rm -rf $(VENV) $(PACK_VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
