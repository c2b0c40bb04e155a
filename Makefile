# One-line entry points. `make test` is what CI runs (.ci/run); it works on a fresh
# machine: it makes the virtual environment, installs harstream with the dev and train
# extras, installs mosquitto when it is missing (as root, via apt), then runs the checks.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: test check install mosquitto demo bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[dev,train]'
	touch $@

install: $(BIN)/.installed

mosquitto:
	@scripts/ensure-mosquitto

check: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: check mosquitto
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
