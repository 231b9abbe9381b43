# make run          - set up and serve the API + worker (Ctrl-C stops everything it started)
# make test         - set up and run the whole test suite
# make test-lowest  - the fast tests against the lowest dependency versions pyproject.toml allows (CI runs it)
# make lock         - refresh the lock files in requirements/ from pyproject.toml (needs PyPI)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LOWEST := .venv-lowest
# The tests `make test-lowest` runs: everything that needs no browser and no long drill.
LOWEST_TESTS ?= tests --ignore=tests/test_dashboard.py --ignore=tests/test_chaos.py

.PHONY: run test test-lowest lint bench chaos clean lock

# Installs exactly the lock (hash-checked), then the project itself without resolving anything again.
$(STAMP): pyproject.toml requirements/dev.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --no-deps --require-hashes -r requirements/dev.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/python scripts/devenv.py run

test: $(STAMP)
	$(BIN)/python scripts/devenv.py test $(PYTEST_ARGS)

$(LOWEST)/.installed: pyproject.toml requirements/lowest.txt
	@test -x $(LOWEST)/bin/python || $(PYTHON) -m venv $(LOWEST)
	$(LOWEST)/bin/python -m pip install --quiet --no-deps --require-hashes -r requirements/lowest.txt
	$(LOWEST)/bin/python -m pip install --quiet --no-deps -e .
	@touch $@

test-lowest: $(LOWEST)/.installed
	$(LOWEST)/bin/python scripts/devenv.py test $(LOWEST_TESTS) $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python bench/run.py $(if $(QUICK),--quick,) $(if $(LONG),--long,)

chaos: $(STAMP)
	$(BIN)/python chaos/run.py $(if $(QUICK),--quick,)

# mypy twice: for the oldest Python supported and the newest (the standard library's types differ).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/mypy --python-version 3.13

# dev.txt: every Python from 3.11 to 3.13 on every platform (one universal resolution);
# runtime.txt: what a deployment installs beside the wheel; lowest.txt: the lowest versions pyproject.toml allows.
UV_COMPILE = $(BIN)/uv pip compile pyproject.toml --quiet --generate-hashes --python-version 3.11
lock: $(STAMP)
	$(BIN)/python -m pip install --quiet 'uv>=0.5'
	$(UV_COMPILE) --universal --extra dev -o requirements/dev.txt
	$(UV_COMPILE) --universal -o requirements/runtime.txt
	$(UV_COMPILE) --resolution lowest-direct --extra test -o requirements/lowest.txt

# The dev database and Redis db go with .dev/ (they hold what its master key made): see scripts/devenv.py clean.
clean:
	@if [ -x $(BIN)/python ]; then $(BIN)/python scripts/devenv.py clean; fi
	rm -rf $(VENV) $(LOWEST) .dev .pytest_cache
