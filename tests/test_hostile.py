"""Messages that once stopped recognition for every device (issue 26), through a real
mosquitto: a good device streams throughout, each hostile input goes in one at a time,
and the good device must keep getting decisions (within 2 s) while the hostile one is
refused with a reason code."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiomqtt
import numpy as np
import pytest

from harstream.core.bundle import Bundle
from harstream.core.payload import encode_frame
from tests.gateway_helpers import WALK, imu, routed
from tests.mosquitto import Mosquitto
from tests.test_gateway_broker import Listener, config_for, gateway_running

pytestmark = [pytest.mark.broker]

# a gap that one rounding sees as longer than stream.max_gap_s (2 s) and another not:
# b + 2.0 == a exactly, though a - b > 2.0
GAP_B, GAP_A = 30.8660577820968, 32.8660577820968
assert GAP_A - GAP_B > 2.0 and not GAP_A > GAP_B + 2.0


def _times_before(end: float, n: int) -> list[float]:
    return [end - (n - 1 - k) / 50 for k in range(n)]


#: (name, topic suffix, payload, the code the hostile device gets; None: no error)
HOSTILE: list[tuple[str, str, bytes, str | None]] = [
    ("units of a wrong type", "imu", imu(WALK[:5], units={"acc": ["g"]}), "bad_units"),
    ("units a number", "imu", imu(WALK[:5], units={"gyro": 3}), "bad_units"),
    ("t far ahead", "imu", imu(WALK[:5], seq=0, t=1e300), "bad_t"),
    ("t far behind", "imu", imu(WALK[:5], seq=0, t=-1e300), "bad_t"),
    ("t in a frame", "imu", encode_frame(WALK[:5], seq=0, t=-1e18), "bad_t"),
    ("seq past int64", "imu", imu(WALK[:5], seq=2**63), "bad_seq"),
    ("seq near int64", "imu", imu(WALK[:5], seq=2**63 - 3), "bad_seq"),
    (
        "times spread far",
        "imu",
        imu(np.zeros((500, 6)), times=[k * 1.99 for k in range(500)]),
        "too_many_samples",
    ),
    ("huge samples", "imu", imu(np.full((64, 6), 1e300)), "out_of_range"),
    ("huge samples in a frame", "imu", encode_frame(np.full((64, 6), 1e30)), "out_of_range"),
]


async def _stream_good(dev: aiomqtt.Client, prefix: str, stop: asyncio.Event) -> None:
    """The good device: 64 samples every 40 ms (a decision each), seq counting on."""
    seq = 0
    while not stop.is_set():
        k = seq % (len(WALK) - 64)
        await dev.publish(f"{prefix}/good/imu", imu(WALK[k : k + 64], seq=seq), qos=1)
        seq += 64
        await asyncio.sleep(0.04)


@contextlib.asynccontextmanager
async def good_device(broker: Mosquitto, prefix: str) -> AsyncIterator[None]:
    stop = asyncio.Event()
    async with aiomqtt.Client(broker.host, broker.port) as dev:
        task = asyncio.create_task(_stream_good(dev, prefix, stop))
        try:
            yield
        finally:
            stop.set()
            await task


async def keeps_deciding(sub: Listener, within: float = 2.0) -> None:
    """The good device gets a decision within ``within`` seconds from now."""
    before = len(sub.json("/good/activity"))
    deadline = time.monotonic() + within
    while len(sub.json("/good/activity")) <= before:
        assert time.monotonic() < deadline, f"the good device got no decision in {within} s"
        await asyncio.sleep(0.01)


@pytest.mark.asyncio
async def test_no_single_message_stops_the_others(
    broker: Mosquitto, prefix: str, bundle_factory: Callable[..., Bundle], tmp_path: Path
) -> None:
    bundle = bundle_factory("gru", "stateful")
    config = config_for(
        broker, prefix, bundle, "service.error_interval_s=0", f"recording.dir={tmp_path}"
    )
    async with (
        Listener(
            broker, f"{prefix}/+/error", f"{prefix}/good/activity", f"{prefix}/control/result"
        ) as sub,
        gateway_running(config, bundle) as gw,
        good_device(broker, prefix),
        aiomqtt.Client(broker.host, broker.port) as bad,
    ):
        await keeps_deciding(sub, within=10.0)
        for k, (name, suffix, payload, code) in enumerate(HOSTILE):
            device = f"bad{k}"
            await bad.publish(f"{prefix}/{device}/{suffix}", payload, qos=1)
            await sub.until(lambda d=device: any(t == f"{prefix}/{d}/error" for t, _, _ in sub.got))
            got = [json.loads(p)["error"] for t, p, _ in sub.got if t == f"{prefix}/{device}/error"]
            assert got == [code], name
            await keeps_deciding(sub)
        # per-sample times whose gap one test rounds one way and another the other way
        gapped = f"{prefix}/gap/imu"
        await bad.publish(gapped, imu(WALK[:100], times=_times_before(GAP_B, 100)), qos=1)
        await bad.publish(gapped, imu(WALK[100:101], times=[GAP_A]), qos=1)
        await bad.publish(gapped, imu(WALK[101:201], times=_times_before(GAP_A + 2.02, 100)))
        await keeps_deciding(sub)
        # a control message nested deeper than any parser's recursion limit
        await bad.publish(f"{prefix}/control", b"[" * 50_000 + b"]" * 50_000, qos=1)
        await sub.until(lambda: bool(sub.json("/control/result")))
        assert sub.json("/control/result")[-1]["ok"] is False
        await keeps_deciding(sub)
        assert gw.connected.is_set()
        rejected = gw.snapshot()["rejected"]
    for code in {c for *_, c in HOSTILE if c is not None}:
        assert rejected.get(code, 0) >= 1, code


def test_serve_with_a_dead_stage_says_offline_503_and_exits_non_zero(
    broker: Mosquitto,
    prefix: str,
    bundle_factory: Callable[..., Bundle],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`harstream serve` whose prepare stage dies of a bug (injected): /healthz says 503
    within 5 s, the retained status becomes offline, and the command fails (exit 1) so
    that systemd restarts it."""
    import threading
    import urllib.error
    import urllib.request

    import paho.mqtt.client as paho

    from harstream.cli import main
    from harstream.gateway.prepare import PrepareStage
    from tests.mosquitto import free_port
    from tests.test_gateway_broker import write_config

    bundle = bundle_factory("gru", "stateful")
    port = free_port()
    extra = f"ingest:\n  http:\n    port: {port}\ndashboard:\n  enabled: true\n"
    config = write_config(tmp_path / "c.yaml", broker, prefix, bundle, extra)
    real = PrepareStage._prepare

    def prepare(self: PrepareStage, arrivals: list[Any], *rest: Any) -> Any:
        if any(m.topic.endswith("/die/imu") for a in arrivals for m in a.messages):
            raise RuntimeError("the prepare stage's own bug (injected)")
        return real(self, arrivals, *rest)

    monkeypatch.setattr(PrepareStage, "_prepare", prepare)
    seen: dict[str, Any] = {"health": [], "status": []}

    def device_side() -> None:
        client = paho.Client(paho.CallbackAPIVersion.VERSION2)
        client.on_message = lambda c, u, m: seen["status"].append(m.payload)
        client.connect(broker.host, broker.port)
        client.subscribe(f"{prefix}/status", qos=1)
        client.loop_start()
        try:
            deadline = time.monotonic() + 20
            while b"online" not in seen["status"] and time.monotonic() < deadline:
                time.sleep(0.02)
            client.publish(f"{prefix}/die/imu", imu(WALK[:64], seq=0), qos=1).wait_for_publish()
            died = time.monotonic()
            while time.monotonic() - died < 5:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz") as r:
                        seen["health"].append((r.status, json.loads(r.read())))
                except urllib.error.HTTPError as exc:
                    seen["health"].append((exc.code, json.loads(exc.read())))
                    break
                except OSError:
                    pass
                time.sleep(0.05)
            while seen["status"][-1] != b"offline" and time.monotonic() < deadline:
                time.sleep(0.02)
        finally:
            client.loop_stop()
            client.disconnect()

    side = threading.Thread(target=device_side)
    side.start()
    code = main(["serve", "--config", str(config)])
    side.join(30)
    assert code == 1
    assert seen["status"][-1] == b"offline"
    status, body = seen["health"][-1]
    assert status == 503 and body["status"] == "failed" and "prepare" in body["failed"]


@pytest.mark.asyncio
async def test_chaos_under_load_never_pauses_the_good_devices(
    broker: Mosquitto, prefix: str, bundle_factory: Callable[..., Bundle], tmp_path: Path
) -> None:
    """Twenty good devices stream while bad devices cycle through every bad and hostile
    input, the control topic is flooded, and the recording folder is deleted: no good
    device goes more than 2 s without a decision, and the gateway stays healthy."""
    import shutil

    from tests.gateway_helpers import BAD_INPUTS

    bundle = bundle_factory("gru", "stateful")
    folder = tmp_path / "recordings"
    config = config_for(broker, prefix, bundle, f"recording.dir={folder}")
    good = [f"good{k}" for k in range(20)]
    arrived: dict[str, list[float]] = {d: [] for d in good}
    bad_inputs = [(f"{prefix}/{d}/imu", p) for d, p, _ in BAD_INPUTS] + [
        (f"{prefix}/hostile{k}/{suffix}", p) for k, (_, suffix, p, _) in enumerate(HOSTILE)
    ]
    controls = [
        b"[" * 50_000,
        b'{"command": "forget", "device": "good0"}',
        b'{"command": "reload"}',
        b'{"command": 1}',
        b"\xff",
    ]
    stop = asyncio.Event()

    async def listen() -> None:
        async with aiomqtt.Client(broker.host, broker.port) as client:
            await client.subscribe(f"{prefix}/+/activity", qos=0)
            listening.set()
            async for m in client.messages:
                device = m.topic.value.split("/")[1]
                if device in arrived:
                    arrived[device].append(time.monotonic())

    async def stream(client: aiomqtt.Client, device: str) -> None:
        seq = 0
        while not stop.is_set():
            k = seq % (len(WALK) - 64)
            await client.publish(f"{prefix}/{device}/imu", imu(WALK[k : k + 64], seq=seq))
            seq += 64
            await asyncio.sleep(0.1)

    async def harm(client: aiomqtt.Client, items: list[tuple[str, bytes]], pause: float) -> None:
        k = 0
        while not stop.is_set():
            topic, payload = items[k % len(items)]
            await client.publish(topic, payload, qos=0)
            k += 1
            await asyncio.sleep(pause)

    listening = asyncio.Event()
    listener = asyncio.create_task(listen())
    await listening.wait()
    async with (
        gateway_running(config, bundle) as gw,
        aiomqtt.Client(broker.host, broker.port) as devices,
        aiomqtt.Client(broker.host, broker.port) as attacker,
    ):
        tasks = [asyncio.create_task(stream(devices, d)) for d in good]
        tasks.append(asyncio.create_task(harm(attacker, bad_inputs, 0.005)))
        tasks.append(
            asyncio.create_task(harm(attacker, [(f"{prefix}/control", c) for c in controls], 0.01))
        )
        await asyncio.sleep(3)
        shutil.rmtree(folder)  # the recording folder vanishes under load
        await asyncio.sleep(4)
        stop.set()
        await asyncio.gather(*tasks)
        healthy, body = gw.health()
        snapshot = gw.snapshot()
    listener.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await listener
    worst = max(float(np.diff(t).max()) for t in arrived.values())
    print(f"chaos: {snapshot['rejected']}, faults {snapshot['faults']}, worst gap {worst:.3f} s")
    assert healthy, body
    assert snapshot["rejected"]  # the bad inputs were seen and refused
    for device, times in arrived.items():
        assert len(times) >= 30, device
        gaps = np.diff(times)
        assert gaps.max() <= 2.0, f"{device} waited {gaps.max():.2f} s for a decision"


def test_field_device_streams_are_bounded_by_max_devices() -> None:
    """A flood of new device ids cannot make streams (or Sensor Logger orderings) past
    stream.max_devices: the device registry admits each device once, whatever kind of
    message it sends, before anything is kept for it."""
    from harstream.gateway.ingest import Ingest, IngestSettings

    settings = IngestSettings(
        prefix="p",
        rate_hz=50.0,
        max_samples_per_message=500,
        max_payload_bytes=65_536,
        sensor_logger_topic="sl",
        sensor_logger_max_bytes=1_000_000,
        max_gap_s=2.0,
        reorder_window=4,
        idle_timeout_s=60.0,
        max_devices=2,
    )
    ingest = Ingest(settings)
    codes = []
    for k in range(4):
        _, errors = ingest.decode(routed(f"p/d{k}/imu", imu(WALK[:50], rate=100)), 1e9)
        codes.append([code for _, code, _ in errors])
    assert codes == [[], [], ["too_many_devices"], ["too_many_devices"]]
    assert len(ingest.streams) == 2
    logger = json.dumps({"messageId": 0, "payload": []}).encode()
    for k in range(4):  # the registry is full: a phone counts as any device
        _, errors = ingest.decode(routed(f"sl/phone{k}", logger), 1e9)
        assert [c for _, c, _ in errors] == ["too_many_devices"]
    assert len(ingest.orders) == 0 and len(ingest.registry) == 2
    # idle ones make room
    _, errors = ingest.decode(routed("p/late/imu", imu(WALK[:50], rate=100)), 1e9 + 61)
    assert errors == [] and "late" in ingest.streams and len(ingest.streams) == 1
