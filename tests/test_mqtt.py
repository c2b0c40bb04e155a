"""harstream.gateway.mqtt, the gateway's MQTT client: against a real mosquitto, with aiomqtt as
the independent client on the other side; its packet splitting on its own."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiomqtt
import pytest

from harstream.gateway.mqtt import MqttTransport, _Protocol, publish_packet
from harstream.gateway.transport import Incoming, TransportError, Will
from tests.mosquitto import Mosquitto, free_port


class _Recorder(asyncio.Transport):
    """Collects what the protocol writes (its acknowledgements)."""

    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return False


async def test_packets_split_anywhere_across_reads_are_reassembled() -> None:
    big = bytes(range(256)) * 80  # 20 kB: a 3-byte remaining length
    packets = [
        publish_packet("p/a/imu", b"small"),
        publish_packet("p/b/imu", big, qos=1, packet_id=7),
        b"\xd0\x00",  # PINGRESP, no body
        publish_packet("p/c/imu", b"", qos=2, packet_id=8),
        publish_packet("p/d/imu", b"x" * 200),  # a 2-byte remaining length
    ]
    stream = b"".join(packets)
    rng = random.Random(1)
    for _ in range(30):
        protocol = _Protocol(max_buffer=1 << 20, max_incoming=100)
        recorder = _Recorder()
        protocol.connection_made(recorder)
        cuts = sorted(rng.sample(range(1, len(stream)), 12))
        for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True):
            protocol.data_received(stream[a:b])
        assert list(protocol.incoming) == [
            Incoming("p/a/imu", b"small"),
            Incoming("p/b/imu", big),
            Incoming("p/c/imu", b""),
            Incoming("p/d/imu", b"x" * 200),
        ]
        await asyncio.sleep(0)  # the coalesced write goes out
        puback, pubrec = b"\x40\x02\x00\x07", b"\x50\x02\x00\x08"
        assert bytes(recorder.written) == puback + pubrec


@asynccontextmanager
async def listening(server: Mosquitto, topic: str) -> AsyncIterator[list[aiomqtt.Message]]:
    got: list[aiomqtt.Message] = []
    async with aiomqtt.Client(server.host, server.port) as client:
        await client.subscribe(topic, qos=1)  # paho stalls on QoS 2 bursts; 1 shows arrival

        async def collect() -> None:
            async for message in client.messages:
                got.append(message)

        task = asyncio.create_task(collect())
        try:
            yield got
        finally:
            task.cancel()


async def until(condition: object, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():  # type: ignore[operator]
            await asyncio.sleep(0.01)


pytestmark = pytest.mark.asyncio


@pytest.mark.broker
async def test_publishes_at_every_qos_reach_a_subscriber_once(
    broker: Mosquitto, prefix: str
) -> None:
    transport = MqttTransport(broker.host, broker.port)
    async with listening(broker, f"{prefix}/#") as got, transport.session() as session:
        for qos in (0, 1, 2):
            await session.publish(f"{prefix}/q{qos}", f"awaited {qos}".encode(), qos=qos)
        for i in range(3000):  # a burst: QoS 2 goes out in a window, the rest at once
            session.publish_nowait(f"{prefix}/burst", str(i).encode(), qos=i % 3)
        await until(lambda: len(got) == 3003)
        await asyncio.sleep(0.2)
        assert len(got) == 3003
        assert [m.payload for m in got[:3]] == [b"awaited 0", b"awaited 1", b"awaited 2"]
        burst = [int(m.payload) for m in got[3:]]  # type: ignore[arg-type]
        assert sorted(burst) == list(range(3000))
        assert [i for i in burst if i % 3 == 1] == list(range(1, 3000, 3))  # in order
        assert {m.qos for m in got[3:] if int(m.payload) % 3} == {1}  # type: ignore[arg-type]
        assert not session._protocol._in_flight  # every PUBACK and PUBCOMP arrived


@pytest.mark.broker
async def test_receives_every_qos_exactly_once(broker: Mosquitto, prefix: str) -> None:
    transport = MqttTransport(broker.host, broker.port)
    async with transport.session() as session:
        await session.subscribe(f"{prefix}/+/imu", qos=2)
        async with aiomqtt.Client(broker.host, broker.port) as device:
            for i in range(60):
                await device.publish(f"{prefix}/d{i % 3}/imu", str(i).encode(), qos=i % 3)
        received: list[Incoming] = []
        async with asyncio.timeout(10):
            async for message in session.messages():
                received.append(message)
                if len(received) == 60:
                    break
    assert sorted(int(m.payload) for m in received) == list(range(60))
    assert {m.topic for m in received} == {f"{prefix}/d{k}/imu" for k in range(3)}


@pytest.mark.broker
async def test_will_is_published_when_the_session_ends_in_error_only(
    broker: Mosquitto, prefix: str
) -> None:
    will = Will(f"{prefix}/status", b"offline", qos=1, retain=False)
    transport = MqttTransport(broker.host, broker.port)
    async with listening(broker, f"{prefix}/status") as got:
        async with transport.session(will=will):
            pass  # a clean DISCONNECT: no will
        with pytest.raises(RuntimeError):
            async with transport.session(will=will):
                raise RuntimeError("the gateway crashed")
        await until(lambda: len(got) == 1)
        await asyncio.sleep(0.3)
    assert [m.payload for m in got] == [b"offline"]


@pytest.mark.broker
async def test_keepalive_keeps_an_idle_session_open(broker: Mosquitto, prefix: str) -> None:
    transport = MqttTransport(broker.host, broker.port, keepalive_s=1)
    async with listening(broker, f"{prefix}/#") as got, transport.session() as session:
        await asyncio.sleep(3.2)  # mosquitto drops a client silent for 1.5 keepalives
        await session.publish(f"{prefix}/still", b"here", qos=1)
        await until(lambda: len(got) == 1)


async def test_connection_errors_are_transport_errors() -> None:
    nobody = MqttTransport("127.0.0.1", free_port(), timeout_s=2)
    with pytest.raises(TransportError, match=r"127\.0\.0\.1"):
        async with nobody.session():
            pass


@pytest.mark.broker
async def test_a_lost_connection_ends_the_message_stream(own_broker: Mosquitto) -> None:
    transport = MqttTransport(own_broker.host, own_broker.port)
    async with transport.session() as session:
        await session.subscribe("x/#")
        own_broker.stop()
        with pytest.raises(TransportError, match="connection lost"):
            async with asyncio.timeout(10):
                async for _ in session.messages():
                    pass
        with pytest.raises(TransportError):
            session.publish_nowait("x/y", b"after the loss")
