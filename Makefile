# Two entry points for a newcomer: `make serve` and `make test`. Both build .venv/ from pyproject.toml.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test]'
	touch $(STAMP)

# The strict client used by tests/test_strict_client.py, pinned by its package-lock.json.
AI_SDK := tests/clients/vercel_ai_sdk
$(AI_SDK)/node_modules/.installed: $(AI_SDK)/package-lock.json
	npm ci --prefix $(AI_SDK) --no-audit --no-fund --loglevel=error
	touch $@

# OpenCode itself (the real CLI) for tests/test_opencode.py, pinned by its package-lock.json. `npm install`
# with the lockfile, not `npm ci`: the lock holds this platform's binary package, and `npm ci` refuses a lock
# that lacks the other platforms' optional binaries, which the registry reached here does not serve.
OPENCODE := tests/clients/opencode
$(OPENCODE)/node_modules/.installed: $(OPENCODE)/package-lock.json
	npm install --prefix $(OPENCODE) --no-audit --no-fund --no-save --loglevel=error
	touch $@

.PHONY: install serve test check bench
install: $(STAMP)

## serve: install, then start the gateway on 127.0.0.1:8080 with specs/ and the embedded SQLite database
serve: $(STAMP)
	$(VENV)/bin/engine serve --host 127.0.0.1 --port 8080

## test: install, then lint, type-check (mypy --strict), check the specs and run the whole test suite
test: $(STAMP) $(AI_SDK)/node_modules/.installed $(OPENCODE)/node_modules/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/engine check
	$(VENV)/bin/pytest

check: $(STAMP)
	$(VENV)/bin/engine check

## bench: added latency, throughput, stream relay and memory vs a local fake and a bare passthrough, for the
## small, OpenCode-sized and 200-turn bodies, with issue 13's goal table (see bench/README.md)
bench: $(STAMP)
	$(VENV)/bin/python bench/run.py --body small,opencode,agent
