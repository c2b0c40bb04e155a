"""Calibration through the broker: a device worn any way says "standing still now" (on
MQTT, by `harstream calibrate`, or over HTTP), the gateway takes its vertical, publishes
the result retained, keeps it across a restart, and clears it on request."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import aiohttp
import numpy as np
import pytest

from harstream.cli.calibrate import _calibrate
from harstream.core.bundle import Bundle
from harstream.errors import ConfigError
from harstream.gateway.calibrations import CalibrationFile
from tests.gateway_helpers import imu
from tests.mosquitto import Mosquitto, free_port
from tests.test_gateway_broker import Listener, config_for, gateway_running

TILTED = np.array([0.6, 0.0, -0.8])  # gravity in the device frame: a phone on its side
STILL = np.tile(np.r_[TILTED, 0.0, 0.0, 0.0], (25, 1))  # half a second standing still


async def stream_still(listener: Listener, topic: str, messages: int, start: int = 0) -> int:
    for k in range(messages):
        await listener.client.publish(topic, imu(STILL, seq=start + 25 * k), qos=1)
        await asyncio.sleep(0.01)
    return start + 25 * messages


@pytest.mark.broker
@pytest.mark.asyncio
async def test_a_calibration_over_mqtt_is_kept_across_a_restart_and_cleared(
    broker: Mosquitto, prefix: str, bundle_factory: Callable[..., Bundle], tmp_path: Path
) -> None:
    bundle = bundle_factory("gru", "stateful", stride=4, aligned=True)
    state = tmp_path / "calibrations.json"
    config = config_for(
        broker, prefix, bundle, f"calibration.state_file={state}", "calibration.seconds=1"
    )
    topic = f"{prefix}/pocket/imu"
    async with Listener(broker, f"{prefix}/+/calibration", f"{prefix}/+/error") as listener:

        def statuses() -> list[dict[str, object]]:
            return listener.json("/calibration")

        async with gateway_running(config, bundle) as gateway:
            seq = await stream_still(listener, topic, 2)
            command = _calibrate(config, "pocket", {"seconds": 1.0}, wait_s=20.0)
            calibrating = asyncio.create_task(command)
            await listener.until(lambda: any(s["status"] == "started" for s in statuses()))
            seq = await stream_still(listener, topic, 4, seq)  # 2 s of samples: 1 s is enough
            assert await calibrating == 0
            done = [s for s in statuses() if s["status"] == "calibrated"]
            np.testing.assert_allclose(done[0]["vertical"], TILTED, atol=1e-4)
            assert gateway.engine.vertical_of("pocket") is not None
        saved = CalibrationFile(state).load()
        np.testing.assert_allclose(saved["pocket"], TILTED, atol=1e-4)

        async with gateway_running(config, bundle) as gateway:  # a restart keeps it
            np.testing.assert_allclose(gateway.engine.vertical_of("pocket"), TILTED, atol=1e-4)
            await listener.client.publish(f"{prefix}/pocket/calibrate", b'{"clear": true}', qos=1)
            await listener.until(lambda: any(s["status"] == "cleared" for s in statuses()))
            assert gateway.engine.vertical_of("pocket") is None
            # a request the gateway cannot take is an error on the device's error topic
            await listener.client.publish(f"{prefix}/pocket/calibrate", b'{"seconds": -1}', qos=1)
            await listener.until(lambda: len(listener.json("/error")) >= 1)
            assert listener.json("/error")[0]["error"] == "bad_calibrate"
        assert CalibrationFile(state).load() == {}


@pytest.mark.broker
@pytest.mark.asyncio
async def test_a_calibration_over_http_and_one_that_moved(
    broker: Mosquitto, prefix: str, bundle_factory: Callable[..., Bundle]
) -> None:
    from tests.gateway_helpers import WALK

    bundle = bundle_factory("gru", "stateful", stride=4, aligned=True)
    port = free_port()
    config = config_for(broker, prefix, bundle, f"ingest.http.port={port}", "ingest.http.token=t")
    url = f"http://127.0.0.1:{port}/calibrate"
    async with Listener(broker, f"{prefix}/+/calibration") as listener:
        async with gateway_running(config, bundle), aiohttp.ClientSession() as http:
            headers = {"Authorization": "Bearer t"}
            async with http.post(f"{url}/walker", data=b"{}", headers=headers) as reply:
                assert reply.status == 200, await reply.text()
                assert (await reply.json())["status_topic"] == f"{prefix}/walker/calibration"
            async with http.post(f"{url}/walker", data=b"{}") as reply:
                assert reply.status == 401
            async with http.post(f"{url}/walker", data=b"[1]", headers=headers) as reply:
                assert reply.status == 400 and (await reply.json())["error"] == "bad_calibrate"
            await listener.until(lambda: len(listener.json("/calibration")) >= 1)
            for k in range(0, 400, 50):  # 8 s of walking: no one stood still
                payload = imu(WALK[k : k + 50], seq=k)
                await listener.client.publish(f"{prefix}/walker/imu", payload, qos=1)
            await listener.until(lambda: len(listener.json("/calibration")) >= 2)
        failed = listener.json("/calibration")[-1]
        assert failed["status"] == "failed" and "moved" in failed["detail"]
        assert failed["vertical"] is None


def test_a_bad_calibration_file_fails_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "calibrations.json"
    path.write_text(json.dumps({"format": 1, "verticals": {"phone": [0.0, 0.0, 2.0]}}))
    with pytest.raises(ConfigError, match=r"calibrations.json: verticals.phone"):
        CalibrationFile(path).load()
    path.write_text("[1, 2]")  # JSON, but not the file's shape
    with pytest.raises(ConfigError, match=r"calibrations\.json: expected"):
        CalibrationFile(path).load()
    path.write_text("{")
    with pytest.raises(ConfigError, match="cannot read JSON"):
        CalibrationFile(path).load()


@pytest.mark.broker
@pytest.mark.asyncio
async def test_walking_calibrates_a_device_and_a_turn_remounts_it(
    broker: Mosquitto, prefix: str, tmp_path: Path
) -> None:
    """The default config (and the walking-calibration tests' bundle): a device that
    walks gets a vertical marked ``source: walking`` on its calibration topic (retained,
    and kept in the state file across a restart); turned a quarter turn, it is reported
    re-mounted."""
    from tests.test_walking_calibration import BUNDLE, SUBJECT_9, rotation, turned

    bundle = BUNDLE
    state = tmp_path / "calibrations.json"
    config = config_for(broker, prefix, bundle, f"calibration.state_file={state}")
    topic = f"{prefix}/hip/imu"
    again = turned(SUBJECT_9.samples, rotation("y", 90))
    n = len(SUBJECT_9.samples)
    async with Listener(broker, f"{prefix}/+/calibration") as listener:

        def statuses() -> list[dict[str, object]]:
            return listener.json("/calibration")

        async with gateway_running(config, bundle) as gateway:
            for k in range(0, n, 50):  # 1 s messages, as fast as the broker takes them
                await listener.client.publish(topic, imu(SUBJECT_9.samples[k : k + 50], seq=k))
            await listener.until(lambda: any(s["status"] == "calibrated" for s in statuses()), 60)
            first = next(s for s in statuses() if s["status"] == "calibrated")
            assert first["source"] == "walking" and "walking" in str(first["detail"])
            learnt = np.array(first["vertical"])
            for k in range(0, n, 50):  # re-clipped a quarter turn, walking on
                await listener.client.publish(topic, imu(again[k : k + 50], seq=n + k))
            await listener.until(lambda: any(s["status"] == "remounted" for s in statuses()), 60)
            at = next(i for i, s in enumerate(statuses()) if s["status"] == "remounted")
            assert "re-mounted" in str(statuses()[at]["detail"])
            assert statuses()[at]["vertical"] is None  # the old vertical dropped
            await listener.until(lambda: len(statuses()) > at + 1, 60)
            last = statuses()[at + 1]  # the walking seconds that showed it: in force at once
            assert last["status"] == "calibrated" and last["source"] == "walking"
            turned_by = np.degrees(np.arccos(np.clip(learnt @ np.array(last["vertical"]), -1, 1)))
            assert 60 < turned_by < 120  # the quarter turn, as walking sees it
            # one turn, one re-mount (a second one, seen once in a loaded full run, would
            # be a false re-mount: the statuses say when it came)
            assert gateway.engine.counters["remounts"] == 1, statuses()
            for s in statuses():  # each with the vertical its event set, not the batch's last
                if s["status"] in ("calibrated", "refined"):
                    said = json.loads(str(s["detail"]).split("vertical ")[1].split(" from")[0])
                    np.testing.assert_allclose(s["vertical"], said, atol=1e-3)
        verticals, sources = CalibrationFile(state).load_sources()
        assert sources == {"hip": "walking"}
        async with gateway_running(config, bundle) as gateway:  # a restart keeps it
            assert gateway.engine.sources == {"hip": "walking"}
            np.testing.assert_allclose(gateway.engine.vertical_of("hip"), verticals["hip"])
    async with Listener(broker, f"{prefix}/hip/calibration") as late:  # retained
        await late.until(lambda: len(late.json("/calibration")) == 1)
        assert late.json("/calibration")[0]["source"] == "walking"


def test_the_calibration_file_keeps_sources_and_reads_the_old_format(tmp_path: Path) -> None:
    path = tmp_path / "calibrations.json"
    CalibrationFile(path).save(
        {"a": np.array([1.0, 0, 0]), "b": np.array([0, 1.0, 0])}, {"a": "walking"}
    )
    verticals, sources = CalibrationFile(path).load_sources()
    assert sources == {"a": "walking", "b": "standing"} and set(verticals) == {"a", "b"}
    path.write_text(json.dumps({"format": 1, "verticals": {"phone": [0.0, 0.0, 1.0]}}))
    assert CalibrationFile(path).load_sources()[1] == {"phone": "standing"}
    body = {"format": 2, "verticals": {"phone": [0.0, 0.0, 1.0]}, "sources": {"phone": "x"}}
    path.write_text(json.dumps(body))
    with pytest.raises(ConfigError, match=r"sources\.phone"):
        CalibrationFile(path).load()
