# carealarm — the two commands a newcomer types are `make demo` and `make test`; both do all set-up.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test setup system-packages system-packages-demo lint clean bench care-day

# `make demo FLEET=off` runs the demo without its own simulated fleet, to play `make care-day` against it.
FLEET ?= on
SEED  ?= 1

demo: system-packages-demo $(STAMP)
	@echo ""
	@echo "  carealarm demo: console at http://127.0.0.1:8000"
	@echo "  sign in as  nurse / nurse  (care-station nurse; also supervisor / supervisor)"
	@echo "  $(if $(filter off,$(FLEET)),no simulated fleet: run 'make care-day' in a second terminal,a simulated client presses an alarm within seconds); Ctrl+C stops"
	@echo ""
	CAREALARM_DATA_DIR=var $(BIN)/carealarm run --demo $(if $(filter off,$(FLEET)),,--simulate --alarm-every 45)

# A compressed care-station day with every case the console must handle (against `make demo FLEET=off`).
care-day: $(STAMP)
	CAREALARM_DATA_DIR=var $(BIN)/carealarm simulate --scenario care-day --seed $(SEED)

test: system-packages $(STAMP) lint
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

setup: system-packages $(STAMP)

# Benchmarks (under ten minutes): needs the local PostgreSQL; writes bench-report/<time>/report.md + PNGs.
BENCH_STAMP := $(VENV)/.bench-installed
bench: system-packages-demo $(STAMP) $(BENCH_STAMP)
	$(BIN)/python -m bench --out bench-report
	@echo "bench: the report is in the newest folder of bench-report/ (see the line above)"

$(BENCH_STAMP): pyproject.toml $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	@touch $(BENCH_STAMP)

system-packages:
	@tools/system-packages.sh test

system-packages-demo:
	@tools/system-packages.sh demo

# The virtual environment is rebuilt when pyproject.toml changes.
$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "carealarm needs Python 3.11 or newer: set PYTHON=python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $(STAMP)

clean:
	rm -rf $(VENV) var test-artifacts .pytest_cache .mypy_cache .ruff_cache .hypothesis *.egg-info
