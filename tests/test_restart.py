"""The broker goes away mid-stream: with the mosquitto of `harstream deploy mosquitto` and
the gateway's persistent session, a clean restart loses no sample, resets no device and
loses no decision; a crash (SIGKILL) loses at most what mosquitto itself had not saved,
and the gateway carries on.

Devices publish at QoS 1 with a persistent session (what the README tells devices that
must not lose samples); a subscriber with a persistent session collects the activities.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from harstream.cli.deploy import mosquitto_config
from harstream.config import load_config
from harstream.core.bundle import Bundle
from harstream.gateway.mqtt import MqttTransport
from harstream.gateway.service import Gateway
from harstream.gateway.transport import TransportError
from harstream.runtime import build_engine, gateway_settings, mqtt_transport
from tests.gateway_helpers import WALK, imu
from tests.mosquitto import Mosquitto, free_port

pytestmark = [pytest.mark.broker, pytest.mark.slow, pytest.mark.asyncio]

HOP = 64


def deployed_broker(workdir: Path, devices: int) -> Mosquitto:
    """mosquitto with the deploy command's config, on loopback ports of its own."""
    port, ws_port = free_port(), free_port()
    text = mosquitto_config(
        devices=devices,
        outage_s=30,
        port=port,
        ws_port=ws_port,
        bind="127.0.0.1",
        ws_bind="lo",
        persistence_dir=workdir / "db",
        autosave_s=1,
        anonymous=True,
    )
    (workdir / "db").mkdir(parents=True)
    log = f"log_dest file {workdir / 'mosquitto.log'}\n"
    user = "user root\n" if os.getuid() == 0 else ""  # root would switch to `mosquitto`
    return Mosquitto(workdir, port=port, ws_port=ws_port, config=text + log + user).start()


class Collector:
    """A subscriber with a persistent session that reconnects until told to stop."""

    def __init__(self, server: Mosquitto, topic: str, name: str) -> None:
        self.transport = MqttTransport(server.host, server.port, client_id=name)
        self.topic = topic
        self.got: list[dict[str, object]] = []
        self.raw: dict[tuple[str, int], set[bytes]] = {}

    async def run(self) -> None:
        while True:
            try:
                async with self.transport.session() as session:
                    await session.subscribe(self.topic, qos=1)
                    async for batch in session.batches():
                        for message in batch:
                            data = json.loads(message.payload)
                            self.got.append(data)
                            key = (str(data["device"]), int(data["seq"]))  # type: ignore[call-overload]
                            self.raw.setdefault(key, set()).add(message.payload)
            except TransportError:
                await asyncio.sleep(0.05)


@asynccontextmanager
async def running(coro: Callable[[], object]) -> AsyncIterator[None]:
    task = asyncio.create_task(coro())  # type: ignore[arg-type]
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def until(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)


async def stream_with_an_outage(
    server: Mosquitto,
    bundle: Bundle,
    prefix: str,
    *,
    devices: int,
    messages: int,
    samples: int,
    period_s: float,
    outage_at: int,
    outage: Callable[[], None],
    done: Callable[[Collector], bool] | None = None,
) -> tuple[Gateway, Collector]:
    """Devices stream ``messages`` messages each; before message ``outage_at``, ``outage``
    runs in a thread (the loop, and every client on it, keeps running through it). Waits
    until ``done`` (default: every decision collected)."""
    config = load_config(
        overrides=[
            "broker.host=127.0.0.1",
            f"broker.port={server.port}",
            f"topics.prefix={prefix}",
            f"model.path={bundle.path}",
            "broker.reconnect_min_s=0.05",
            "broker.reconnect_max_s=0.2",
            f"stream.max_devices={devices}",
        ]
    )
    gateway = Gateway(
        build_engine(config, bundle), mqtt_transport(config), gateway_settings(config, bundle)
    )
    collector = Collector(server, f"{prefix}/+/activity", f"{prefix}-collector")
    device = MqttTransport(
        server.host, server.port, client_id=f"{prefix}-devices", max_queued=1_000_000
    )
    names = [f"d{i:04d}" for i in range(devices)]
    expected = devices * (messages * samples // HOP)
    done = done or (lambda c: len(c.raw) >= expected)
    stop = asyncio.Event()
    outages: list[asyncio.Future[None]] = []
    async with running(lambda: gateway.run(stop)), running(collector.run):
        await until(gateway.connected.is_set)
        await asyncio.sleep(0.2)  # the collector subscribes
        k = 0
        while k < messages:  # a device with a persistent session: reconnect, go on
            try:
                async with device.session() as session:
                    while k < messages:
                        if k == outage_at and not outages:
                            outages.append(asyncio.ensure_future(asyncio.to_thread(outage)))
                        body = WALK[(k * samples) % 3000 : (k * samples) % 3000 + samples]
                        payload = imu(body, seq=k * samples)
                        for name in names:  # QoS 1: paho keeps it until the broker has it
                            session.publish_nowait(f"{prefix}/{name}/imu", payload, qos=1)
                        k += 1
                        await asyncio.sleep(period_s)
                        if not device.connected:
                            break
            except TransportError:
                await asyncio.sleep(0.05)
        await asyncio.gather(*outages)
        while True:  # the device delivers what it still holds; every decision comes
            try:
                async with device.session():
                    await until(lambda: done(collector))
                break
            except TransportError:
                await asyncio.sleep(0.05)
        stop.set()
    return gateway, collector


def check_nothing_lost(
    gateway: Gateway, collector: Collector, devices: int, messages: int, samples: int
) -> None:
    seqs = list(range(HOP - 1, messages * samples, HOP))
    expected = {(f"d{i:04d}", s) for i in range(devices) for s in seqs}
    assert set(collector.raw) == expected  # every decision, and no other
    # a decision delivered twice (QoS 1 may) is the same decision, never a second one
    assert all(len(payloads) == 1 for payloads in collector.raw.values())
    engine = gateway.engine
    assert engine.counters["resets"] == 0  # no device state was reset
    assert engine.counters["samples"] == devices * messages * samples  # no sample lost


@pytest.mark.parametrize("run", range(3))  # the reconnect race depends on timing
async def test_a_clean_broker_restart_loses_nothing_for_one_device(
    tmp_path: Path, prefix: str, bundle_factory: Callable[..., Bundle], run: int
) -> None:
    server = deployed_broker(tmp_path / "broker", devices=1)
    try:
        gateway, collector = await stream_with_an_outage(
            server,
            bundle_factory("gru", "stateful"),
            prefix,
            devices=1,
            messages=40,
            samples=25,
            period_s=0.05,  # 10x real rate
            outage_at=12 + 5 * run,
            outage=lambda: server.restart(down_s=1.0),
        )
        check_nothing_lost(gateway, collector, 1, 40, 25)
        assert gateway.counters["reconnects"] >= 1
    finally:
        server.stop()


async def test_a_clean_broker_restart_loses_nothing_for_a_thousand_devices(
    tmp_path: Path, prefix: str, bundle_factory: Callable[..., Bundle]
) -> None:
    server = deployed_broker(tmp_path / "broker", devices=1000)
    try:
        gateway, collector = await stream_with_an_outage(
            server,
            bundle_factory("gru", "stateful"),
            prefix,
            devices=1000,
            messages=10,
            samples=64,
            period_s=0.5,
            outage_at=4,
            outage=lambda: server.restart(down_s=1.0),
        )
        check_nothing_lost(gateway, collector, 1000, 10, 64)
    finally:
        server.stop()


async def test_a_broker_crash_loses_at_most_what_the_broker_lost(
    tmp_path: Path, prefix: str, bundle_factory: Callable[..., Bundle]
) -> None:
    """SIGKILL: mosquitto loses what it had not saved (autosave_interval 1 s here; in
    practice the messages it had acknowledged to the device and not yet delivered); the
    devices' own persistent sessions resend what was unacknowledged, the gateway
    reconnects and carries on. Samples lost show as a seq gap (a reset, counted), never
    as a repeated decision."""
    server = deployed_broker(tmp_path / "broker", devices=1)
    total = 40 * 25

    def crash() -> None:
        server.kill()
        server.start()

    try:
        gateway, collector = await stream_with_an_outage(
            server,
            bundle_factory("gru", "stateful"),
            prefix,
            devices=1,
            messages=40,
            samples=25,
            period_s=0.05,
            outage_at=20,
            outage=crash,
            # the stream reached its end: a decision within its last hop
            done=lambda c: any(seq >= total - HOP for _, seq in c.raw),
        )
        decided = sorted(seq for _, seq in collector.raw)
        assert all(len(payloads) == 1 for payloads in collector.raw.values())
        assert decided == sorted(set(decided)) and decided[-1] < total
        lost = total - gateway.engine.counters["samples"]
        assert lost % 25 == 0 and lost <= 5 * 25  # whole messages, a few at most
        assert (lost == 0) == (gateway.engine.counters["resets"] == 0)
        print(f"crash: {lost} of {total} samples lost")
    finally:
        server.stop()
