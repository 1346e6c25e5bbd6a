# The README's two commands: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test lint bench-fleet clean

demo: $(VENV)/.installed
	$(BIN)/vigie demo

test: $(VENV)/.dev-installed
	bash scripts/services.sh
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy
	$(BIN)/pytest -q -n 2 --dist loadfile  # both cores; a test file stays on one worker

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.dev-installed: pyproject.toml $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

bench-fleet: $(VENV)/.installed
	$(BIN)/python bench/fleet_generate.py

clean:
	rm -rf $(VENV) demo bench/out .pytest_cache .mypy_cache .ruff_cache
