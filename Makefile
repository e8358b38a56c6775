# Two commands on a fresh machine: `make run` and `make test`. Everything else is set up by them.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install node-example run test test-latest fuzz lint typecheck buf proto-baseline proto docs dist bench chaos bench-agent-server-venv clean

$(STAMP): pyproject.toml client/pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ./client -e '.[dev]'
	touch $@

install: $(STAMP)

## The Node.js example's packages (examples/node), exactly as its package-lock.json lists them.
NODE_EXAMPLE_STAMP := examples/node/node_modules/.installed

$(NODE_EXAMPLE_STAMP): examples/node/package.json examples/node/package-lock.json
	cd examples/node && npm ci --no-audit --no-fund --loglevel=error
	touch $@

node-example: $(NODE_EXAMPLE_STAMP)

## Start the service on 127.0.0.1:50051 with the embedded SQLite file (offline model unless OPENAI_API_KEY is set).
run: install
	$(BIN)/threadline serve

## Lint, type-check and run the whole suite.
test: install node-example lint typecheck buf
	$(BIN)/python -m pytest -q

## The suite against the newest releases pyproject.toml allows, in a fresh venv of its own without constraints.txt:
## prints which releases differ from constraints.txt, then runs pytest, so an upstream release that breaks us fails here.
LATEST_VENV ?= .venv-latest

test-latest: node-example
	rm -rf $(LATEST_VENV)
	$(PYTHON) -m venv $(LATEST_VENV)
	$(LATEST_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(LATEST_VENV)/bin/python -m pip install --quiet --upgrade --upgrade-strategy eager -e ./client -e '.[dev]'
	$(LATEST_VENV)/bin/python -m pip freeze --exclude-editable > $(LATEST_VENV)/freeze.txt
	$(LATEST_VENV)/bin/python scripts/compare_pins.py constraints.txt $(LATEST_VENV)/freeze.txt
	$(LATEST_VENV)/bin/python -m pytest -q

## The fuzzed contract, long and random (make test runs it with a fixed seed and a small budget).
fuzz: install
	THREADLINE_FUZZ_EXAMPLES=$${THREADLINE_FUZZ_EXAMPLES:-5000} $(BIN)/python -m pytest -q tests/e2e/test_fuzzed_contract.py

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports  # the layers' direction: [tool.importlinter] in pyproject.toml
	$(BIN)/python scripts/check_public_apis.py  # dependencies through their public APIs only

typecheck: install
	$(BIN)/mypy
	$(BIN)/mypy bench  # scripts, not a package: checked on their own, with the same settings

## The contract: buf lint, buf format, and no breaking change against the last release's contract.
## The baseline is an image committed in protos/baseline/ (a clean clone has no release tag to build from).
buf: install
	cd protos && $(abspath $(BIN))/buf lint
	cd protos && $(abspath $(BIN))/buf format --diff --exit-code
	cd protos && $(abspath $(BIN))/buf breaking --against baseline/threadline-v1.binpb

## At a release: make the current contract the baseline later changes must not break, and commit it.
proto-baseline: install
	cd protos && $(abspath $(BIN))/buf build --exclude-source-info -o baseline/threadline-v1.binpb

## The client's and the server's wheels and sdists in dist/, checked by twine as PyPI would.
dist: install
	rm -rf dist
	$(BIN)/python -m build --outdir dist client
	$(BIN)/python -m build --outdir dist .
	$(BIN)/twine check --strict dist/*

## Benchmarks: Threadline over gRPC against in-process baselines (needs PostgreSQL, like `make test`).
bench: install
	cd bench && ../$(BIN)/python ask_throughput.py && ../$(BIN)/python stream_latency.py \
		&& ../$(BIN)/python thread_length.py && ../$(BIN)/python open_streams.py \
		&& ../$(BIN)/python auth_cost.py && ../$(BIN)/python observability_cost.py && ../$(BIN)/python cancelled_streams.py \
		&& ../$(BIN)/python stalled_streams.py \
		&& ../$(BIN)/python agent_server.py

## Restarts under load (bench/chaos.py, about 2 minutes; needs PostgreSQL): three replicas, one SIGKILLed and restarted
## at a time, 20 times, while clients retry their turns with request_ids; exits 1 if a turn was lost, doubled or forked.
chaos: install
	cd bench && ../$(BIN)/python chaos.py

## The LangGraph Agent Server (dev mode) for bench/agent_server.py, which `make bench` skips without it. A venv of
## its own: langgraph-api pins grpcio and protobuf below ours. The rest follows constraints.txt (same langgraph and
## langchain-core), and the graph's dependencies are ours minus gRPC (the graph imports server/ from the source tree).
AGENT_SERVER_VENV ?= .venv-agent-server
AGENT_SERVER_STAMP := $(AGENT_SERVER_VENV)/.installed
AGENT_SERVER_PACKAGES := 'langgraph-cli[inmem]==0.4.40' langgraph-api==0.16.7 langgraph-runtime-inmem==0.36.7

$(AGENT_SERVER_STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(AGENT_SERVER_VENV)
	$(AGENT_SERVER_VENV)/bin/python -m pip install --quiet --upgrade pip
	grep -vE '^(grpcio|protobuf)' constraints.txt > $(AGENT_SERVER_VENV)/constraints.txt
	$(AGENT_SERVER_VENV)/bin/python -c 'import tomllib; print(*(d for d in tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"] if not d.startswith(("grpcio", "protobuf", "threadline-client"))), sep="\n")' > $(AGENT_SERVER_VENV)/requirements.txt
	$(AGENT_SERVER_VENV)/bin/python -m pip install --quiet -c $(AGENT_SERVER_VENV)/constraints.txt \
		-r $(AGENT_SERVER_VENV)/requirements.txt $(AGENT_SERVER_PACKAGES)
	touch $@

bench-agent-server-venv: $(AGENT_SERVER_STAMP)

## Regenerate the committed gRPC code from protos/.
proto: install
	$(BIN)/python scripts/generate_proto.py

## Regenerate the reference pages docs/configuration.md (from config.py) and docs/errors.md (from protos/).
docs: install
	$(BIN)/python scripts/generate_docs.py

clean:
	rm -rf $(VENV) $(LATEST_VENV) $(AGENT_SERVER_VENV) examples/node/node_modules .pytest_cache .mypy_cache .ruff_cache build dist client/build client/dist
