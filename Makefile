# Tally: `make run` starts everything, `make test` runs the whole suite.
# Both bootstrap .venv with the project and its dependencies first.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install run test test-fast lint format bench fuzz clean

# The runtime dependencies and the extras a checkout needs (pyproject.toml):
# stack for `tally up` (make run), bench for `tally bench`, dev for the tests.
EXTRAS := stack,bench,dev

$(STAMP): pyproject.toml client/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[$(EXTRAS)]'
	# The Python client (docs/client.md): its own package, which the tests use.
	$(BIN)/python -m pip install --quiet -e ./client
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/tally up

test: lint
	$(BIN)/pytest

# The inner loop: lint, then the unit and integration tests (real PostgreSQL and
# Redis, no worker processes, no browser): about a minute instead of the suite's few.
test-fast: lint
	$(BIN)/pytest tests/unit tests/integration -x -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy shared broker client/tally_client

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# The HTTP benchmark on a stack of its own (docs/benchmarks.md); options in BENCH_ARGS,
# e.g. make bench BENCH_ARGS="--workload longpoll --runs 1".
bench: $(STAMP)
	$(BIN)/tally bench http $(BENCH_ARGS)

# A longer, random schemathesis run of every operation (make test runs a short,
# derandomized one): FUZZ_EXAMPLES per operation, a new seed each time.
FUZZ_EXAMPLES ?= 300
fuzz: $(STAMP)
	FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) FUZZ_RANDOM=1 \
		$(BIN)/pytest tests/integration/test_contract_fuzz.py -p no:cacheprovider -x

clean:
	rm -rf $(VENV) .tally .pytest_cache .mypy_cache .ruff_cache
