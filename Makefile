# Two commands matter: `make demo` and `make test`. Both create .venv on first use.
# `make lint` (ruff check, ruff format --check, mypy --strict) runs in CI too.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test fault fuzz bench lint clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/relay demo $(ARGS)

test: $(STAMP)
	$(BIN)/pytest $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy --strict relay adapters

# Crash, fault and bad-input suite (tests/fault, marker `fault`). Knobs: RELAY_FAULT_RUNS (crash-loop
# runs, default 300; the several-daemon loop runs a quarter of it per row, the 1688 loop a fifth), RELAY_FAULT_SEED (replay a run), RELAY_FAULT_EXAMPLES (state-machine examples).
fault: $(STAMP)
	$(BIN)/pytest tests/fault -m fault --timeout=1800 $(ARGS)

# Coverage-guided fuzzing with atheris (optional extra `fuzz`; on demand, not in CI).
FUZZ_STAMP := $(VENV)/.installed-fuzz
$(FUZZ_STAMP): $(STAMP) pyproject.toml
	$(BIN)/pip install --quiet -e '.[test,fuzz]'
	touch $(FUZZ_STAMP)

fuzz: $(FUZZ_STAMP)
	$(BIN)/python fuzz/fuzz_callback.py -max_total_time=60 $(ARGS)

# `make bench ARGS="--orders 5000 --concurrency 64"` (or BENCH_ORDERS=5000 BENCH_CONCURRENCY=64 make bench)
BENCH_STAMP := $(VENV)/.installed-bench
$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(BIN)/pip install --quiet -e '.[test,bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python -m bench $(ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
