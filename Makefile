# Two entry points: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo demo-api test lint typecheck unit bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev,baselines,ray,photos,conformance,hf,tune]'
	$(BIN)/python -m pip install --quiet -c constraints.txt --no-deps torchattacks
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/bbattack demo --out demo-out --force

# SCHEMA=gcv|rekognition|azure|clarifai|hf|json: the API format the local service speaks.
SCHEMA ?= gcv
demo-api: $(STAMP)
	$(BIN)/bbattack demo-api --out demo-api-out --force --schema $(SCHEMA)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -n 2 -q

test: lint typecheck unit

bench: $(STAMP)
	$(BIN)/bbattack bench benchmarks/table1.toml --db benchmarks/results/table1.sqlite --workers 2
	$(BIN)/bbattack report benchmarks/results/table1.sqlite -o benchmarks/results/table1.html

clean:
	rm -rf $(VENV) demo-out demo-api-out .mypy_cache .pytest_cache .ruff_cache
