# attnrec — the two commands that matter on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export PIP_DISABLE_PIP_VERSION_CHECK=1

.PHONY: setup system-deps demo test test-fast faults soak bench bench-quality microbench lint clean stack-up stack-down

setup: system-deps $(STAMP)

system-deps:
	@bash deploy/setup-system.sh

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[train,dev,bench]'
	@touch $(STAMP)

demo: setup                 ## the main job, end to end (< 5 min once dependencies are cached)
	$(BIN)/attnrec demo

test: setup                 ## unit + integration + fault tests against real Kafka and Redis
	$(BIN)/python -m pytest -q -rs

test-fast: setup            ## unit tests only (no services)
	$(BIN)/python -m pytest -q -m "not integration"

faults: setup               ## the fault-injection tests alone, with the full set on the 3-broker Kafka and Redis Cluster
	$(BIN)/python -m pytest -q -m faults --cluster-faults

bench: setup                ## end-to-end speed sweeps (long; not in CI)
	$(BIN)/attnrec bench --sweep --json docs/bench/bench.json

soak: setup                 ## 10^6 events (~30 min) under faults, exactly-once accounting + memory plot (not in CI)
	$(BIN)/python -m pytest -q -rs -p no:cacheprovider -s tests/integration/test_soak.py --soak

bench-quality: setup        ## full training runs on the public data (long; not in CI)
	bash training/bench_quality.sh

microbench: setup           ## onnxruntime vs torch per-batch latency
	$(BIN)/python -m attnrec.exporter.microbench --json docs/bench/microbench.json

lint: setup
	$(BIN)/ruff check attnrec stream training exporter apps deploy tests

stack-up: setup
	$(BIN)/attnrec stack up
stack-down:
	$(BIN)/attnrec stack down

clean:
	-$(BIN)/attnrec stack down
	rm -rf .attnrec .pytest_cache
