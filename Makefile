# One entry point for people, CI (.ci/run) and the before-you-stop check.
# Everything runs from a project-local virtualenv (.venv) built from requirements-dev.txt.
SHELL := /bin/bash
.DEFAULT_GOAL := help
# The interpreter of .venv: the Astro Runtime image's Python minor version (3.12) when the machine
# has it, so the tests run on what production runs (dev/runtime_python.py); else python3, warned.
ifeq ($(origin PY_SYS),undefined)
PY_SYS := $(shell python3 dev/runtime_python.py)
endif
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Azurite (Microsoft's Azure Storage emulator, from npm) for the external Azure stage tests. 3.33.0:
# the last release without the telemetry SDK (3.34 added applicationinsights/OpenTelemetry: 361 MB and
# 55k files to unpack, 35 s of a fresh setup here; 3.33.0 is 121 MB, 19 s) and nothing to switch off.
AZURITE := $(VENV)/azurite/node_modules/.bin/azurite-blob
AZURITE_VERSION := 3.33.0
AZURITE_STAMP := $(VENV)/azurite/.installed-$(AZURITE_VERSION)
export PYTHONPATH := $(CURDIR)
export DO_NOT_TRACK := 1
# Every process the stack and the tests start reuses the bytecode the first one wrote (the project's
# own __pycache__ is git-ignored); where PYTHONDONTWRITEBYTECODE is set (these machines), each
# process compiled Airflow & co. again: about a sixth of the suite's CPU time.
unexport PYTHONDONTWRITEBYTECODE
# The Snowflake connector probes cloud metadata endpoints (AWS, Azure, GCP) on every connection, for
# its telemetry: ~20 ms and ~30 ms of CPU per connection to the local Snowflake, nothing to find.
export SNOWFLAKE_DISABLE_PLATFORM_DETECTION := true

.PHONY: help setup demo airflow preflight drill stop status mail test test-all browser lint audit format manifest bench clean access-plan access-apply

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

# No --compile-bytecode: compiling all 16k modules took 35 s of every fresh setup; the recipes below
# write bytecode as modules are first imported (PYTHONDONTWRITEBYTECODE is unexported), which
# compiles only what the stack and the tests import, once.
$(STAMP): requirements.txt requirements-dev.txt
	@test -x $(PY) || $(PY_SYS) -m venv $(VENV)
	@$(PY) -m pip install --quiet --disable-pip-version-check uv
	$(VENV)/bin/uv pip install --quiet --python $(PY) -r requirements-dev.txt
	@touch $(STAMP)

$(AZURITE_STAMP):
	@rm -rf $(VENV)/azurite && mkdir -p $(VENV)/azurite
	cd $(VENV)/azurite && npm install --no-audit --no-fund --silent azurite@$(AZURITE_VERSION)
	@touch $@

# 1. The Debian packages the code's native libraries load (packages.txt, which the Astro image
#    installs too): apt-get when one is missing (tests/unit/test_native_libraries.py checks them).
# 2. A .venv built with another Python minor than PY_SYS is rebuilt (e.g. one made before 3.12).
# 3. The Python packages and Azurite, when their inputs changed, side by side (-j2: npm unpacking
#    Azurite overlaps uv installing the packages; a fresh setup measured 48 s for both one after the
#    other, 27 s side by side).
setup: ## Create .venv and install everything, the OS packages of packages.txt included (idempotent)
	@dev/os_packages.sh packages.txt
	@if test -x $(PY) && [ "$$($(PY) -c 'import sys; print(sys.version_info[:2])')" != "$$($(PY_SYS) -c 'import sys; print(sys.version_info[:2])')" ]; then \
		echo "rebuilding $(VENV) with $(PY_SYS)"; rm -rf $(VENV); fi
	@$(MAKE) -j2 --no-print-directory PY_SYS=$(PY_SYS) $(STAMP) $(AZURITE_STAMP)

demo: setup manifest ## Start the local stack and run the whole pipeline once, end to end; print a summary
	$(PY) -m dev.stack demo

airflow: setup manifest ## Airflow UI on http://localhost:8080 (airflow standalone) on the local stack
	$(PY) -m dev.stack airflow

preflight: setup manifest ## Check connections, CDC, login rights, Snowflake grants, pools, salt, SMTP on the local stack
	$(PY) -m dev.stack preflight

drill: setup manifest ## Outage drill on the local stack: source down for 3 runs, then back; `make mail` shows 1 incident + 1 resolved mail
	$(PY) -m dev.stack drill

stop: ## Stop every local service this project started (by pid)
	@test -x $(PY) && $(PY) -m dev.stack stop || true

mail: setup ## Print the alert e-mails the local SMTP sink captured (.local/mail)
	$(PY) -m dev.smtp_sink print --body --dir .local/mail

status: setup ## Show which local services are running
	$(PY) -m dev.stack status

# pytest-xdist: one worker per core and one more (tests wait on the servers they start: 3 workers on
# 2 cores measured 612 s against 719 s with 2); each starts its own servers and Airflow home; a
# module's tests stay on one worker (--dist loadscope), so a module-scoped server starts once; modules
# are handed out in collection order, the longest first (tests/conftest.py LONGEST_FIRST).
TEST_WORKERS ?= $(shell echo $$(( $$(nproc 2>/dev/null || echo 2) + 1 )))
test: setup manifest ## The test suite CI runs (unit, integration and one full end-to-end run), on every core
	$(PY) -m pytest -m "not slow" -p no:cacheprovider -n $(TEST_WORKERS) --dist loadscope --no-loadscope-reorder

test-all: setup manifest browser ## Everything, including slow suites (property tests at scale, failure matrix, browser)
	$(PY) -m pytest -p no:cacheprovider -n $(TEST_WORKERS) --dist loadscope --no-loadscope-reorder

# The browser tests drive Debian's Chromium with Playwright (from PyPI, in requirements-dev.txt);
# Playwright never downloads a browser of its own.
browser: setup ## Debian's Chromium for the browser tests (apt-get, when missing)
	@dev/os_packages.sh -p chromium

lint: setup audit ## ruff (with Airflow AIR rules), ruff format check, mypy (include/), no import cycles (import-linter), sqlfluff, audit
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy   # include/, configured in pyproject.toml [tool.mypy]
	$(VENV)/bin/lint-imports --no-cache   # no import cycles in dev/ or include/ (.importlinter)
	cd include/sql/tsql && $(CURDIR)/$(VENV)/bin/sqlfluff lint .   # T-SQL (own .sqlfluff: tsql, %s params)
	$(VENV)/bin/sqlfluff lint include/dbt/billing/models include/dbt/billing/tests include/dbt/billing/analyses

audit: setup ## Known vulnerabilities of the installed, pinned packages (pip-audit; .ci/audit-accepted.txt)
	$(PY) -m dev.audit_deps

# The Snowflake access spec (include/config/access.yaml + the source YAMLs): the local Snowflake of the
# stack, or a real account with ACCESS_CONN=<Airflow connection id> (README "Snowflake access, PII and cost guards").
ACCESS_CONN ?=
access-plan: setup ## Print the statements that bring Snowflake to the access spec (ACCESS_CONN=<conn id> for a real account)
	$(PY) -m dev.access_local plan $(if $(ACCESS_CONN),--conn-id $(ACCESS_CONN))

access-apply: setup ## Run them (as SECURITYADMIN / SYSADMIN / ACCOUNTADMIN); fails unless the next plan is empty
	$(PY) -m dev.access_local apply $(if $(ACCESS_CONN),--conn-id $(ACCESS_CONN))

format: setup ## Apply ruff fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# Cosmos renders the dbt DAG from a manifest, never `dbt ls` at parse time. Where it lives and how
# it is built (the Dockerfile runs the same module): include/cdc_pipeline/orchestration/dbt_manifest.py.
manifest: setup ## Build the dbt manifest Cosmos parses (only when missing or older than the dbt project)
	$(PY) -m include.cdc_pipeline.orchestration.dbt_manifest --if-stale

bench: setup ## Benchmarks (print figures; not part of the tests)
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean: stop ## Remove local state (.local) — keeps .venv
	rm -rf .local
