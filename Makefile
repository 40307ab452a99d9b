PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install test lint demo bench compat readme clean

install: ## create .venv and install beit-tools with its dev extras (pinned by constraints.txt)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'

test: ## lint, then the whole test suite
	$(BIN)/ruff check beit_tools tests scripts
	$(BIN)/python -m pytest -q

lint:
	$(BIN)/ruff check beit_tools tests scripts
	$(BIN)/ruff format --check beit_tools tests scripts

demo: ## variants; inspect -> convert (by URL, from 127.0.0.1) -> verify -> push --dry-run on a small synthetic checkpoint, offline
	$(BIN)/python scripts/demo.py

bench: ## conversion time and peak memory on a BEiT-large-sized synthetic checkpoint
	$(BIN)/python scripts/bench.py

compat: ## the converted folders load and compute right in transformers 4.x (a second venv, .venv-4x)
	test -x .venv-4x/bin/python || $(PYTHON) -m venv .venv-4x
	.venv-4x/bin/python -m pip install --quiet torch==2.13.0 'transformers>=4.46,<5' safetensors pillow
	$(BIN)/python scripts/compat.py prepare build/compat
	.venv-4x/bin/python scripts/compat.py check build/compat

readme: ## regenerate README.md's sample outputs from real runs
	$(BIN)/python scripts/readme_samples.py

clean:
	rm -rf demo build .pytest_cache .ruff_cache
