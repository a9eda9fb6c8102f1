# kwatt's two entry points for a newcomer: `make demo` runs the main job,
# `make test` passes the tests. Both build the virtual environment themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv test lint typecheck unit bench demo clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip -c constraints.txt 2>/dev/null || true
	PIP_CONSTRAINT=constraints.txt $(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv
	$(BIN)/mypy core/kwatt_core client/kwatt_client cli/kwatt_cli

unit: venv
	$(BIN)/python -m pytest

test: lint typecheck unit

bench: venv
	$(BIN)/kwatt bench --trace-dir ../shared/traces/zeus/trace --gpu v100 --seeds 5
	$(BIN)/kwatt bench --trace-dir ../shared/traces/zeus/trace --gpu p100 --seeds 5

demo: bench

clean:
	rm -rf $(VENV) build *.egg-info
