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

# The tests start their own broker on a free loopback port; they only need the binary.
mosquitto:
	@if command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "mosquitto missing: installing it with apt-get" >&2; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null; \
		(systemctl stop mosquitto || service mosquitto stop || true) >/dev/null 2>&1; \
	else \
		echo "mosquitto is missing: install it (Debian/Ubuntu: sudo apt-get install -y mosquitto)" >&2; \
		exit 1; \
	fi

check: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: check mosquitto
	$(BIN)/python -m pytest

# Quick start: a gateway-only install (no torch), then test subject 9 at 50x real time.
demo:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[plot]'
	$(BIN)/harstream replay --subject 9 --speed 50 --report demo-report.json --plot demo-timeline.png

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
