"""A phone in the field: test subject 9 streamed as the Sensor Logger app streams (~100 Hz
with jittered clocks per sensor, m/s2, gravity apart, ~1 s batches, sent faster than
real time), over MQTT (websockets, as the app does) and over HTTP push, through the
gateway with the packaged model: recognised as well as the clean 50 Hz recording (online
accuracy within 0.02), with decisions stamped in the phone's clock."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable
from pathlib import Path

import aiohttp
import aiomqtt
import numpy as np
import orjson
import pytest

from harstream.config import Config, load_config
from harstream.core.bundle import UNKNOWN, load_bundle
from harstream.evaluation.metrics import StreamScore, score_stream
from harstream.runtime import build_engine
from replay import iter_hapt
from replay.phone import phone_batches
from tests.mosquitto import Mosquitto, free_port
from tests.test_gateway_broker import Listener, gateway_running

pytestmark = [pytest.mark.broker, pytest.mark.asyncio]

DEMO = Path(__file__).resolve().parent.parent / "replay" / "demo"
RECORDINGS = list(iter_hapt(DEMO, subjects=[9]))
START = 1_795_470_000.0  # the phone's clock at the first recording's first sample
PAUSE_S = 30.0  # between the two recordings: the app stopped and started again


def starts() -> list[float]:
    out, t = [], START
    for r in RECORDINGS:
        out.append(t)
        t += r.duration_s + PAUSE_S
    return out


def sessions() -> list[list[bytes]]:
    return [
        [
            orjson.dumps(b)
            for b in phone_batches(r, start_epoch_s=t0, session=f"s{i}", device="Subject 9")
        ]
        for i, (r, t0) in enumerate(zip(RECORDINGS, starts(), strict=True))
    ]


def clean_scores(config: Config) -> list[StreamScore]:
    """The same model on the clean 50 Hz recordings, 25-sample messages; one device, as
    the phone is: each recording a new stream, the vertical learnt from its walking kept
    (``forget`` drops the stream, not the calibration)."""
    bundle = load_bundle()
    ids = {label: i + 1 for i, label in enumerate(bundle.labels)} | {UNKNOWN: 0}
    scores = []
    engine = build_engine(config, bundle)
    for r in RECORDINGS:
        engine.forget("d")
        decided = []
        for s in range(0, len(r), 25):
            decided += engine.feed("d", r.samples[s : s + 25], seq=s)
        scores.append(
            score_stream(r.labels, [d.seq for d in decided], [ids[d.activity] for d in decided])
        )
    return scores


def phone_scores(activities: list[dict[str, object]]) -> list[StreamScore]:
    """Each recording scored from the activities alone: a decision's t (the phone's
    clock) says which sample it was made at."""
    ids = {label: i + 1 for i, label in enumerate(load_bundle().labels)} | {UNKNOWN: 0}
    scores = []
    for r, t0 in zip(RECORDINGS, starts(), strict=True):
        mine = [a for a in activities if t0 <= float(a["t"]) < t0 + r.duration_s]  # type: ignore[arg-type]
        seqs = [round((float(a["t"]) - t0) * 50) for a in mine]  # type: ignore[arg-type]
        scores.append(score_stream(r.labels, seqs, [ids[str(a["activity"])] for a in mine]))
    return scores


def field_config(server: Mosquitto, prefix: str, *more: str) -> Config:
    return load_config(
        overrides=[
            "broker.host=127.0.0.1",
            f"broker.port={server.port}",
            f"topics.prefix={prefix}",
            f"ingest.sensor_logger.topic={prefix}-sl",
            "broker.reconnect_min_s=0.05",
            *more,
        ]
    )


def expected_decisions() -> int:
    return sum(len(r) // 64 for r in RECORDINGS) - 2  # each session starts a little late


def check(activities: list[dict[str, object]], config: Config) -> None:
    """The subject's online accuracy (both recordings) within 0.02 of the clean one."""
    assert {a["device"] for a in activities} == {"phone9"}
    got = sum(phone_scores(activities), StreamScore())
    clean = sum(clean_scores(config), StreamScore())
    assert abs(got.online_accuracy - clean.online_accuracy) <= 0.02, (got, clean)
    assert got.decisions >= expected_decisions()
    # stamped in the phone's clock (its epoch times), and received by the gateway later
    times = np.array([float(a["t"]) for a in activities])  # type: ignore[arg-type]
    assert times.min() >= START and times.max() <= starts()[-1] + RECORDINGS[-1].duration_s
    assert all(float(a["received"]) > 1.7e9 for a in activities)  # type: ignore[arg-type]


async def test_sensor_logger_over_mqtt_websockets(
    tmp_path: Path, prefix: str, bundle_factory: Callable[..., object]
) -> None:
    server = Mosquitto(tmp_path / "broker", websockets=True).start()
    try:
        config = field_config(server, prefix)
        bundle = load_bundle()
        async with (
            Listener(server, f"{prefix}/+/activity") as sub,
            gateway_running(config, bundle),
            aiomqtt.Client(server.host, server.ws_port, transport="websockets") as phone,
        ):
            for session in sessions():
                for message in session:  # the app's own topic per phone: its last level
                    await phone.publish(f"{prefix}-sl/phone9", message, qos=1)
            await sub.until(lambda: len(sub.json("/activity")) >= expected_decisions(), 60)
            await asyncio.sleep(0.5)
        check(sub.json("/phone9/activity"), config)
    finally:
        server.stop()


async def test_sensor_logger_over_http_push(
    broker: Mosquitto, prefix: str, bundle_factory: Callable[..., object]
) -> None:
    port = free_port()
    config = field_config(
        broker, prefix, f"ingest.http.port={port}", "ingest.http.token=s3cret-token"
    )
    url = f"http://127.0.0.1:{port}/ingest/sensor-logger"
    async with (
        Listener(broker, f"{prefix}/+/activity", f"{prefix}/+/error") as sub,
        gateway_running(config, load_bundle()) as gw,
        aiohttp.ClientSession() as http,
    ):
        first = sessions()[0][0]
        async with http.post(url, data=first) as reply:  # no token
            assert reply.status == 401
        async with http.post(url + "?token=wrong", data=first) as reply:
            assert reply.status == 401
        async with http.post(url + "?token=s3cret-token", data=b"{oops") as reply:
            assert reply.status == 400 and (await reply.json())["error"] == "bad_json"
        too_big = io.BytesIO(b" " * (2 << 20))
        async with http.post(url + "?token=s3cret-token", data=too_big) as reply:
            assert reply.status == 413
        headers = {"Authorization": "Bearer s3cret-token"}
        for session in sessions():
            for message in session:  # the deviceId ("Subject 9") names the phone here
                async with http.post(url + "?device=phone9", data=message, headers=headers) as r:
                    assert r.status == 200, await r.text()
                    assert (await r.json())["readings"] > 100
        await sub.until(lambda: len(sub.json("/activity")) >= expected_decisions(), 60)
        await asyncio.sleep(0.5)
        stats = gw.snapshot()
    check(sub.json("/phone9/activity"), config)
    assert stats["http"] == {
        "http_unauthorized": 2,
        "http_rejected": 2,
        "http_accepted": sum(len(s) for s in sessions()),
    }
    assert stats["field_devices"]["streams"] == 1 and stats["field_devices"]["restarts"] == 1


async def test_a_board_that_needs_resampling_and_one_without_gravity(
    broker: Mosquitto, prefix: str, bundle_factory: Callable[..., object]
) -> None:
    """harstream's own message at 100 Hz in m/s2 and deg/s, stamped with a board's
    since-boot clock: recognised like the clean recordings. A phone that sends
    acceleration without gravity is told why it gets nothing."""
    from harstream.core.payload import encode_imu

    config = field_config(broker, prefix)
    async with (
        Listener(broker, f"{prefix}/+/activity", f"{prefix}/+/error") as sub,
        gateway_running(config, load_bundle()),
        aiomqtt.Client(broker.host, broker.port) as board,
    ):
        for r, t0 in zip(RECORDINGS, starts(), strict=True):
            t = np.arange(0, r.duration_s, 0.01)  # 100 Hz
            grid = np.arange(len(r)) / 50.0
            samples = np.stack([np.interp(t, grid, r.samples[:, i]) for i in range(6)], 1)
            samples[:, :3] *= 9.80665
            samples[:, 3:] *= 180 / np.pi
            for lo in range(0, len(samples), 100):
                message = encode_imu(
                    samples[lo : lo + 100],
                    times=(t0 - START + 1000 + t[lo : lo + 100]).tolist(),  # since boot
                    rate=100,
                    units={"acc": "m/s2", "gyro": "deg/s"},
                )
                await board.publish(f"{prefix}/board/imu", message, qos=1)
        linear_only = {
            "messageId": 0,
            "payload": [
                {"name": name, "time": 10**18 + i * 10**7, "values": {"x": 0, "y": 0, "z": 0}}
                for name in ("accelerometer", "gyroscope")
                for i in range(50)
            ],
        }
        await board.publish(f"{prefix}-sl/linear-only", orjson.dumps(linear_only), qos=1)
        await sub.until(lambda: len(sub.json("/board/activity")) >= expected_decisions(), 60)
        await sub.until(lambda: bool(sub.json("/linear-only/error")))
    (error,) = sub.json("/linear-only/error")
    assert error["error"] == "no_gravity" and "gravity" in error["detail"]
    activity = sub.json("/board/activity")
    # the since-boot clock was anchored to the gateway's: epoch times (the stream went
    # faster than real time, so only the first decision is close to its receipt)
    assert abs(float(activity[0]["t"]) - float(activity[0]["received"])) < 10  # type: ignore[arg-type]
    # map back to the phone's START-based clock through the first recording's start
    offset = float(activity[0]["t"]) - float(activity[0]["seq"]) / 50 - START  # type: ignore[arg-type]
    for a in activity:
        a["t"] = float(a["t"]) - offset  # type: ignore[arg-type]
        a["device"] = "phone9"
    check(activity, config)
