"""A gateway install without torch: `pip install harstream` (no extras) in a new virtual
environment replays the packaged subject and serves through mosquitto on onnxruntime."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.gateway_helpers import WALK, imu
from tests.mosquitto import Mosquitto

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def gateway_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    venv = tmp_path_factory.mktemp("torch-free") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    # from the checkout, no extras; the pip cache makes this quick after the first time
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--quiet", str(REPO)],
        check=True,
        timeout=1200,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    return venv


@pytest.mark.slow
def test_no_torch_and_no_scipy_get_installed(gateway_venv: Path) -> None:
    for module in ("torch", "scipy", "matplotlib"):
        result = subprocess.run(
            [str(gateway_venv / "bin" / "python"), "-c", f"import {module}"],
            capture_output=True,
            check=False,
        )
        assert result.returncode != 0, f"{module} should not be installed"


@pytest.mark.slow
def test_replay_runs_on_onnxruntime(gateway_venv: Path, tmp_path: Path) -> None:
    report = tmp_path / "r.json"
    result = subprocess.run(
        [
            str(gateway_venv / "bin" / "harstream"),
            "replay",
            "--subject",
            "9",
            "--speed",
            "max",
            "--quiet",
            "--report",
            str(report),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(report.read_text())
    assert data["samples"] == 31865 and data["online_accuracy"] > 0.8


@pytest.mark.slow
@pytest.mark.broker
def test_serve_runs_on_onnxruntime(gateway_venv: Path, broker: Mosquitto, prefix: str) -> None:
    import asyncio

    import aiomqtt

    process = subprocess.Popen(
        [
            str(gateway_venv / "bin" / "harstream"),
            "serve",
            "--set",
            "broker.host=127.0.0.1",
            "--set",
            f"broker.port={broker.port}",
            "--set",
            f"topics.prefix={prefix}",
            "--set",
            "topics.qos_in=1",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )

    async def session() -> list[dict[str, object]]:
        async with aiomqtt.Client(broker.host, broker.port) as client:
            await client.subscribe(f"{prefix}/#", qos=1)
            got: list[dict[str, object]] = []
            async with asyncio.timeout(60):
                async for message in client.messages:
                    if message.topic.value == f"{prefix}/status" and message.payload == b"online":
                        await client.publish(f"{prefix}/d/imu", imu(WALK[:128], seq=0), qos=1)
                    elif message.topic.value.endswith("/activity"):
                        got.append(json.loads(message.payload))  # type: ignore[arg-type]
                        if len(got) == 2:
                            return got
            return got

    try:
        started = time.monotonic()
        activity = asyncio.run(session())
        assert [a["seq"] for a in activity] == [63, 127]
        assert time.monotonic() - started < 60
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
