# txgate: `make up` runs the demo, `make test` runs every check. Both do all set-up first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TOOLS := .tools

.PHONY: setup up test lint typecheck unit bench clean

setup: $(VENV)/.installed $(TOOLS)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

# anvil (the dev chain), solc and OpenZeppelin, from npm, into a folder git ignores.
$(TOOLS)/.installed: tools/package.json tools/package-lock.json
	mkdir -p $(TOOLS)
	cp tools/package.json tools/package-lock.json $(TOOLS)/
	cd $(TOOLS) && npm ci --no-audit --no-fund --loglevel=error
	test -x $(TOOLS)/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil
	touch $@

up: setup
	$(BIN)/txgate up --demo

lint: setup
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: setup
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/pytest -q

bench: setup
	$(BIN)/python bench/custody_throughput.py
	$(BIN)/python bench/policy_eval.py

clean:
	rm -rf $(VENV) $(TOOLS)
