# make run   - set up and serve the API + worker (Ctrl-C stops everything it started)
# make test  - set up and run the whole test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench chaos clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/python scripts/devenv.py run

test: $(STAMP)
	$(BIN)/python scripts/devenv.py test $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python bench/run.py $(if $(QUICK),--quick,) $(if $(LONG),--long,)

chaos: $(STAMP)
	$(BIN)/python chaos/run.py $(if $(QUICK),--quick,)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .dev .pytest_cache
