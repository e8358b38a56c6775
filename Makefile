# Two commands on a fresh machine: `make run` and `make test`. Everything else is set up by them.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test lint typecheck proto bench clean

$(STAMP): pyproject.toml client/pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ./client -e '.[dev]'
	touch $@

install: $(STAMP)

## Start the service on 127.0.0.1:50051 with the embedded SQLite file (offline model unless OPENAI_API_KEY is set).
run: install
	$(BIN)/threadline serve

## Lint, type-check and run the whole suite.
test: install lint typecheck
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

## Benchmarks: Threadline over gRPC against in-process baselines (needs PostgreSQL, like `make test`).
bench: install
	cd bench && ../$(BIN)/python ask_throughput.py && ../$(BIN)/python stream_latency.py \
		&& ../$(BIN)/python thread_length.py && ../$(BIN)/python open_streams.py

## Regenerate the committed gRPC code from protos/.
proto: install
	$(BIN)/python scripts/generate_proto.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build dist client/build client/dist
