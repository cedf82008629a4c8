# The one command surface: make run | make test | make lint | make bench
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
NODE_STAMP := tests/interop/node_modules/.installed-stamp

.PHONY: all install node run test check lint format bench lock imports clean

## `make` alone: lint, then test.
all: lint test

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev,demo]'
	touch $@

## Re-pin constraints.txt (every dependency's exact version, what CI installs) to the newest releases the
## ranges in pyproject.toml admit; run the tests, then commit both.
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install --quiet --upgrade pip
	.lock-venv/bin/pip install --quiet -e '.[dev,demo,bench]'
	( echo '# Exact versions CI and `make install` use (make lock re-pins them); ranges live in pyproject.toml.'; \
	  .lock-venv/bin/pip freeze --exclude-editable ) > constraints.txt
	rm -rf .lock-venv

node: $(NODE_STAMP)

$(NODE_STAMP): tests/interop/package.json tests/interop/package-lock.json
	cd tests/interop && npm install --no-audit --no-fund --loglevel=error
	touch $@

## Run the worker. With no reachable Redis it starts an embedded one and enqueues a demo crawl.
run: install
	$(BIN)/crawl-worker run --demo

## Run every test (real Redis on 127.0.0.1:6379 unless CRAWL_WORKER_TEST_REDIS_URL says otherwise).
## It ends with the 15 slowest tests and a coverage summary of worker/ (failing below the floor in pyproject.toml).
test: install node
	$(BIN)/python -m pytest --durations=15 --cov --cov-report=term

## The edit-test loop: lint, then every test that needs neither Node, Chromium, Docker nor a multi-second wait.
check: lint
	$(BIN)/python -m pytest -q -m "not node and not browser and not docker and not slow"

## ruff (lint and format check) and mypy strict, on worker/ and tests/ (and bench/ for ruff).
lint: install
	$(BIN)/ruff check worker tests $(wildcard bench)
	$(BIN)/ruff format --check worker tests $(wildcard bench)
	$(BIN)/mypy

## Redraw the import pictures (docs/imports.svg, docs/imports/*.svg) from the source; needs Graphviz's dot.
imports: install
	$(BIN)/python -m worker.imports > docs/imports.dot
	$(BIN)/python -m worker.imports --write docs/imports
	dot -Tsvg docs/imports.dot -o docs/imports.svg
	for f in docs/imports/*.dot; do dot -Tsvg "$$f" -o "$${f%.dot}.svg"; done

## Rewrite the code in ruff's format (what `make lint` checks).
format: install
	$(BIN)/ruff format worker tests $(wildcard bench)
	$(BIN)/ruff check --fix worker tests $(wildcard bench)

## Benchmarks (docs/benchmarks.md). The crawl benchmark serves its sites with nginx (Debian's package).
bench: install node
	$(BIN)/pip install --quiet -c constraints.txt -e '.[bench]'
	command -v nginx >/dev/null 2>&1 || test -x /usr/sbin/nginx || \
		(DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >/dev/null 2>&1 || \
		 (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null))
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) tests/interop/node_modules .pytest_cache .mypy_cache .ruff_cache
