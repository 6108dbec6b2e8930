# Two entry points for a fresh machine: `make demo` and `make test`.
# PYTHON may point at another interpreter; TORCH_SPEC pins the torch that is installed first
# (on CPU-only machines a local CPU wheel satisfies it; on GPU machines PyPI's CUDA build does).
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint install clean-venv bench mutation

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[dev,export,tune]"
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

demo: $(STAMP)
	$(BIN)/python -m data.scripts.demo

bench: $(STAMP)
	$(BIN)/python bench/bench_model.py

# mutation testing of the numerical core (minutes; not part of `make test`): see README, Development
mutation: $(STAMP)
	$(BIN)/python bench/mutation_run.py

clean-venv:
	rm -rf $(VENV)
