# The two commands a newcomer needs (see README):
#   make demo   set up, create the demo SQLite database and show `retention plan` on it
#   make test   set up, then lint, type-check and run the whole test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint setup clean bench

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/retention demo
	$(BIN)/retention plan

lint: $(STAMP)
	$(BIN)/ruff check retention tests bench
	$(BIN)/ruff format --check retention tests bench
	$(BIN)/mypy retention

test: lint
	$(BIN)/pytest

bench: $(STAMP)
	$(BIN)/python bench/sql_purge.py

clean:
	rm -rf $(VENV) var
