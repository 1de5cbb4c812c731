# Two commands do all set-up on a fresh machine:
#   make demo   - install into .venv and run the demo on the embedded default (SQLite)
#   make test   - install into .venv and run lint, types and the whole test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test bench lint

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/ecrm demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	$(BIN)/pytest -q -p no:cacheprovider -n 2 --durations=30  # two processes: the suite waits on hubs as much as it computes

bench: $(STAMP)
	$(BIN)/ecrm bench ingest
