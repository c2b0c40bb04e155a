"""`harstream data forget DEVICE` through mosquitto: everything of the device goes (its
recordings and labels, its calibration in memory and in the state file, its retained
activity, calibration, availability and Home Assistant discovery config), through the
running gateway, or without one by the command itself; another device keeps all of it."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from harstream.cli import main
from harstream.core.bundle import Bundle
from harstream.gateway.calibrations import CalibrationFile
from harstream.recordings import read_labels
from tests.mosquitto import Mosquitto
from tests.test_calibration import stream_still
from tests.test_gateway_broker import Listener, config_for, gateway_running


async def retained(broker: Mosquitto, *filters: str) -> set[str]:
    """The topics under ``filters`` on which the broker holds a retained message."""
    async with Listener(broker, *filters) as late:
        await asyncio.sleep(0.7)
    return {t for t, payload, was_retained in late.got if was_retained and payload}


@pytest.mark.broker
@pytest.mark.asyncio
async def test_forget_erases_everything_of_a_device(
    broker: Mosquitto, prefix: str, bundle_factory: Callable[..., Bundle], tmp_path: Path
) -> None:
    bundle = bundle_factory("gru", "stateful", stride=4, aligned=True)
    state, folder = tmp_path / "calibrations.json", tmp_path / "rec"
    config = config_for(
        broker,
        prefix,
        bundle,
        f"calibration.state_file={state}",
        "calibration.seconds=1",
        f"recording.dir={folder}",
        "homeassistant.enabled=true",
        "homeassistant.discovery_prefix=ha",
    )
    sets = [f"--set=broker.port={broker.port}", f"--set=topics.prefix={prefix}"]
    sets += [f"--set=calibration.state_file={state}", "--set=homeassistant.discovery_prefix=ha"]

    def of(device: str) -> tuple[str, str]:
        return f"{prefix}/{device}/#", f"ha/sensor/harstream_{device}/#"

    async with Listener(broker, f"{prefix}/+/calibration", f"{prefix}/+/error") as sub:
        async with gateway_running(config, bundle) as gateway:
            for device in ("pocket", "other"):
                seq = await stream_still(sub, f"{prefix}/{device}/imu", 2)
                await sub.client.publish(f"{prefix}/{device}/calibrate", b'{"seconds": 1}', qos=1)
                await sub.until(lambda d=device: _status(sub, d) == "started")
                seq = await stream_still(sub, f"{prefix}/{device}/imu", 6, seq)
                await sub.until(lambda d=device: _status(sub, d) == "calibrated")
                now = time.time()  # the samples carry no `t`: they are stamped on receipt
                label = {"activity": "STANDING", "start": now - 2, "end": now}
                await sub.client.publish(f"{prefix}/{device}/label", json.dumps(label), qos=1)
            await sub.until(lambda: len(read_labels(folder, "pocket")) == 1, 10)
            await sub.until((folder / "other").exists, 10)
            kinds = {"activity", "calibration", "availability"}
            everything = {f"{prefix}/pocket/{k}" for k in kinds}
            everything.add("ha/sensor/harstream_pocket/activity/config")
            assert await retained(broker, *of("pocket")) == everything
            assert set(CalibrationFile(state).load()) == {"pocket", "other"}

            argv = ["data", "forget", "pocket", "--dir", str(folder), *sets]
            assert await asyncio.to_thread(main, argv) == 0  # the gateway answers

            assert not (folder / "pocket").exists() and read_labels(folder, "pocket") == []
            assert set(CalibrationFile(state).load()) == {"other"}
            assert gateway.engine.vertical_of("pocket") is None
            assert "pocket" not in gateway.engine.devices and "other" in gateway.engine.devices
            assert await retained(broker, *of("pocket")) == set()
            others = await retained(broker, *of("other"))  # the check can see them
            assert others == {t.replace("pocket", "other") for t in everything}
        assert await retained(broker, *of("pocket")) == set()  # nothing came back at the stop

    # no gateway running: the command erases the rest itself
    argv = ["data", "forget", "other", "--dir", str(folder), *sets]
    assert await asyncio.to_thread(main, argv) == 0
    assert not (folder / "other").exists()
    assert CalibrationFile(state).load() == {}
    assert await retained(broker, *of("other")) == set()


def _status(sub: Listener, device: str) -> str | None:
    got = [s["status"] for s in sub.json(f"/{device}/calibration")]
    return got[-1] if got else None


def test_forgetting_one_calibration_keeps_the_others_sources(tmp_path: Path) -> None:
    """Without a gateway, `data forget` rewrites the state file: a walking vertical of
    another device must stay walking (a standing one is never refined from walking)."""
    from harstream.cli.control import forget_calibration

    state = CalibrationFile(tmp_path / "calibrations.json")
    up, side = np.array([0.0, 0.0, 1.0]), np.array([1.0, 0.0, 0.0])
    state.save({"pocket": up, "belt": side}, {"pocket": "standing", "belt": "walking"})
    assert forget_calibration(state.path, "pocket")
    verticals, sources = state.load_sources()
    assert list(verticals) == ["belt"] and sources == {"belt": "walking"}
    assert not forget_calibration(state.path, "pocket")  # nothing left to forget
