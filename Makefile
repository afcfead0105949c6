# Two commands do all the set-up: `make run` and `make test`.
# Only python3 is needed: uv (pinned) is installed into its own venv, .venv-tools, and installs
# the project from uv.lock into .venv. Nothing touches the Python you run make with.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUN_STAMP := $(VENV)/.installed-run
TOOLS := .venv-tools
UV_VERSION := 0.13.9
UV := $(TOOLS)/bin/uv
# uv uses $(PYTHON) for .venv and never downloads an interpreter of its own. It compiles every
# installed module to bytecode once, at install: where PYTHONDONTWRITEBYTECODE is set (as on CI),
# each new process would otherwise compile the dependencies from source, ~3 s of every start.
UV_ENV := UV_PROJECT_ENVIRONMENT=$(VENV) UV_PYTHON=$(PYTHON) UV_PYTHON_DOWNLOADS=never UV_COMPILE_BYTECODE=1

HOST ?= 127.0.0.1
PORT ?= 8000
WORKERS ?=

.PHONY: install lock upgrade run test test-fast test-unit bytecode check bench lint typecheck contracts clean

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --disable-pip-version-check uv==$(UV_VERSION)

# --locked: install exactly uv.lock, and stop if pyproject.toml no longer matches it (`make lock`).
# Two installs: `install` (tests, linters, the bench: the dev extra too) and $(RUN_STAMP) (what
# `make run` needs, without the dev extra's ~50 packages). The dev install holds the run install,
# so it stamps both; the run install is --inexact, so it leaves an earlier dev install whole.
$(STAMP): pyproject.toml uv.lock | $(UV)
	$(UV_ENV) $(UV) sync --locked --extra dev
	touch $(STAMP) $(RUN_STAMP)

$(RUN_STAMP): pyproject.toml uv.lock | $(UV)
	$(UV_ENV) $(UV) sync --locked --inexact
	touch $(RUN_STAMP)

install: $(STAMP)

# Re-resolve uv.lock after editing pyproject.toml (keeps locked versions that still fit).
lock: | $(UV)
	$(UV_ENV) $(UV) lock

# Move every dependency to the newest version its cap in pyproject.toml allows.
upgrade: | $(UV)
	$(UV_ENV) $(UV) lock --upgrade

# exec: the server is make's own child, and its exit code (0 after SIGTERM or Ctrl-C) is make's.
run: $(RUN_STAMP)
	exec $(BIN)/task-assistant serve --host $(HOST) --port $(PORT) $(if $(WORKERS),--workers $(WORKERS))

# The tiers: tests/unit (no database), tests/api (the app in process on PostgreSQL), tests/system
# (processes and browsers, marked slow). Database tiers run on xdist workers, one database each.
# `bytecode` compiles our own sources first (only files changed since the last run), for the same
# reason as UV_COMPILE_BYTECODE: the suite starts dozens of processes. PYTEST keeps bytecode
# writing on for the run, so that pytest caches its rewritten test modules between runs.
XDIST ?= -n 2 --dist loadgroup
PYTEST := env -u PYTHONDONTWRITEBYTECODE $(BIN)/python -m pytest
test: install bytecode
	$(PYTEST) $(XDIST) $(PYTEST_ARGS)

# What to run after each change: unit + api, no processes or browsers. One worker more than
# `test`: the api tier waits on sockets much of the time (measured: 51-53 s against 57-59 s).
FAST_XDIST ?= -n 3 --dist loadgroup
test-fast: install bytecode
	$(PYTEST) $(FAST_XDIST) tests/unit tests/api $(PYTEST_ARGS)

test-unit: install bytecode
	$(PYTEST) tests/unit $(PYTEST_ARGS)

bytecode: install
	$(BIN)/python -m compileall -q backend bench migrations tests

lint: install
	$(BIN)/ruff check backend tests bench migrations
	$(BIN)/ruff format --check backend tests bench migrations

typecheck: install
	$(BIN)/mypy

# The import-linter contracts in pyproject.toml: layers that point one way.
contracts: install
	$(BIN)/lint-imports

check: lint typecheck contracts test

bench: install
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(TOOLS) .pytest_cache .mypy_cache .ruff_cache

# The Next.js + Better Auth example (examples/nextjs) end to end: npm ci (when its lock changed),
# next build, fresh databases on the PostgreSQL at EXAMPLE_DATABASE_URL / TEST_DATABASE_URL /
# postgresql://postgres@127.0.0.1:5432, the API and `next start`, then Playwright in Chromium.
.PHONY: example-test
example-test: install
	$(BIN)/python examples/nextjs/e2e/run.py

# Container image (Containerfile) built with buildah, no daemon or registry: see docs/deploy.md.
# `image` makes a Debian bookworm base with debootstrap once (~/.cache/task-assistant-image), then builds; it is
# skipped when nothing that goes into the image changed. `image-test` runs the image against the
# PostgreSQL on 127.0.0.1:5432 (a fresh database): migrate, serve, a chat turn, SIGTERM. As root.
.PHONY: image image-test
image:
	UV_VERSION=$(UV_VERSION) deploy/image/build.sh

image-test: image
	deploy/image/test.sh
