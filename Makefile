# The two commands a newcomer needs (see README):
#   make demo   set up, start this checkout's local S3 server (or reuse it; a server another
#               checkout started is refused), create the demo data (SQLite database, buckets,
#               backup folder) and show `retention plan` on it
#   make test   set up, then lint, type-check and run the whole test suite, on one worker
#               process per CPU core (pytest-xdist; TEST_WORKERS=0 runs it in this process)
# `make demo-stop` stops the local S3 server that `make demo` started.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# pytest-xdist workers: "auto" is one per physical core. Most of the suite waits on PostgreSQL,
# MariaDB and subprocesses, so two workers gain even on two cores.
TEST_WORKERS ?= auto

.PHONY: demo demo-stop test lint setup clean bench

$(STAMP): pyproject.toml setup.py retention/audit/_leaves.c retention/stores/_keys.c
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	scripts/demo-s3 start
	$(BIN)/retention demo
	$(BIN)/retention plan

demo-stop:
	scripts/demo-s3 stop

lint: $(STAMP)
	$(BIN)/ruff check retention tests bench
	$(BIN)/ruff format --check retention tests bench
	$(BIN)/mypy retention

test: lint
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadgroup

bench: $(STAMP)
	$(BIN)/python bench/sql_purge.py

clean:
	-scripts/demo-s3 stop
	rm -rf $(VENV) var
