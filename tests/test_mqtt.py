"""harstream.gateway.mqtt, paho-mqtt on the event loop: against a real mosquitto (TCP,
websockets, MQTT 5), with aiomqtt as the independent client on the other side; and
against fake brokers that answer garbage or stop reading."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import aiomqtt
import pytest

from harstream.errors import PublishError
from harstream.gateway.mqtt import MqttTransport
from harstream.gateway.transport import Incoming, TransportError, Will
from tests.mosquitto import Mosquitto, free_port

pytestmark = pytest.mark.asyncio


@asynccontextmanager
async def listening(server: Mosquitto, topic: str) -> AsyncIterator[list[aiomqtt.Message]]:
    got: list[aiomqtt.Message] = []
    async with aiomqtt.Client(server.host, server.port) as client:
        await client.subscribe(topic, qos=2)

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


def transport_for(server: Mosquitto, name: str, **options: object) -> MqttTransport:
    return MqttTransport(server.host, server.port, client_id=name, **options)  # type: ignore[arg-type]


async def round_trip(transport: MqttTransport, topic: str, n: int = 50) -> list[Incoming]:
    """Subscribe, publish ``n`` messages at QoS 0/1/2 through the same transport, read
    them back."""
    received: list[Incoming] = []
    async with transport.session() as session:
        await session.subscribe(f"{topic}/#", qos=2)
        for i in range(n):
            session.publish_nowait(f"{topic}/{i % 3}", str(i).encode(), qos=i % 3)
        async with asyncio.timeout(10):
            async for batch in session.batches():
                received.extend(batch)
                if len(received) >= n:
                    break
    return received


@pytest.mark.broker
async def test_publishes_at_every_qos_reach_a_subscriber_once(
    broker: Mosquitto, prefix: str
) -> None:
    transport = transport_for(broker, f"{prefix}-pub")
    async with listening(broker, f"{prefix}/#") as got, transport.session() as session:
        for qos in (0, 1, 2):
            await session.publish(f"{prefix}/q{qos}", f"awaited {qos}".encode(), qos=qos)
        for i in range(3000):
            session.publish_nowait(f"{prefix}/burst", str(i).encode(), qos=i % 3)
        await until(lambda: len(got) == 3003)
        await asyncio.sleep(0.2)
    assert len(got) == 3003
    assert [m.payload for m in got[:3]] == [b"awaited 0", b"awaited 1", b"awaited 2"]
    burst = [int(m.payload) for m in got[3:]]  # type: ignore[arg-type]
    assert sorted(burst) == list(range(3000))
    assert [i for i in burst if i % 3 == 1] == list(range(1, 3000, 3))  # in order


@pytest.mark.broker
async def test_receives_every_qos_exactly_once_in_batches(broker: Mosquitto, prefix: str) -> None:
    transport = transport_for(broker, f"{prefix}-sub")
    received: list[Incoming] = []
    batches = 0
    async with transport.session() as session:
        await session.subscribe(f"{prefix}/+/imu", qos=2)
        async with aiomqtt.Client(broker.host, broker.port) as device:
            for i in range(60):
                await device.publish(f"{prefix}/d{i % 3}/imu", str(i).encode(), qos=i % 3)
        async with asyncio.timeout(10):
            async for batch in session.batches():
                received.extend(batch)
                batches += 1
                if len(received) == 60:
                    break
    assert sorted(int(m.payload) for m in received) == list(range(60))
    assert {m.topic for m in received} == {f"{prefix}/d{k}/imu" for k in range(3)}
    assert 1 <= batches <= 60


@pytest.mark.broker
async def test_websockets_and_mqtt5(tmp_path, prefix: str) -> None:  # type: ignore[no-untyped-def]
    server = Mosquitto(tmp_path / "ws", websockets=True).start()
    try:
        over_ws = MqttTransport(
            server.host, server.ws_port, client_id=f"{prefix}-ws", transport="websockets"
        )
        got = await round_trip(over_ws, f"{prefix}/ws")
        assert sorted(int(m.payload) for m in got) == list(range(50))
        v5 = transport_for(server, f"{prefix}-v5", protocol="5")
        got = await round_trip(v5, f"{prefix}/v5")
        assert sorted(int(m.payload) for m in got) == list(range(50))
        assert "websockets://" in repr(over_ws) and "MQTT 5" in repr(v5)
    finally:
        server.stop()


@pytest.mark.broker
async def test_will_is_published_when_the_session_ends_in_error_only(
    broker: Mosquitto, prefix: str
) -> None:
    will = Will(f"{prefix}/status", b"offline", qos=1, retain=False)
    transport = transport_for(broker, f"{prefix}-will")
    async with listening(broker, f"{prefix}/status") as got:
        async with transport.session(will=will):
            pass  # a clean DISCONNECT: no will
        await asyncio.sleep(0.3)
        assert got == []
        crashed = transport_for(broker, f"{prefix}-will2")
        session = crashed.session(will=will)
        await session.__aenter__()
        assert crashed._driver.sock is not None
        crashed._driver.sock.close()  # the process dies: no DISCONNECT
        await until(lambda: len(got) == 1)
        with contextlib.suppress(Exception):
            await session.__aexit__(None, None, None)
    assert [m.payload for m in got] == [b"offline"]


@pytest.mark.broker
async def test_keepalive_keeps_an_idle_session_open(broker: Mosquitto, prefix: str) -> None:
    transport = transport_for(broker, f"{prefix}-idle", keepalive_s=1)
    async with listening(broker, f"{prefix}/#") as got, transport.session() as session:
        await asyncio.sleep(3.2)  # mosquitto drops a client silent for 1.5 keepalives
        await session.publish(f"{prefix}/still", b"here", qos=1)
        await until(lambda: len(got) == 1)


async def test_connection_errors_are_transport_errors() -> None:
    nobody = MqttTransport("127.0.0.1", free_port(), client_id="nobody", connect_timeout_s=2)
    with pytest.raises(TransportError, match=r"127\.0\.0\.1"):
        async with nobody.session():
            pass


@pytest.mark.broker
@pytest.mark.parametrize(
    ("topic", "payload", "code"),
    [
        ("a/+/b", b"x", "bad_topic"),
        ("a/#", b"x", "bad_topic"),
        ("a/\0/b", b"x", "bad_topic"),
        ("a//b", b"x", "bad_topic"),
        ("", b"x", "bad_topic"),
        ("a/" + "x" * 70_000, b"x", "bad_topic"),
        ("a/b", b"x" * 2_000_000, "too_large"),
    ],
)
async def test_bad_outgoing_messages_are_refused_and_the_connection_stays(
    broker: Mosquitto, prefix: str, topic: str, payload: bytes, code: str
) -> None:
    transport = transport_for(broker, f"{prefix}-bad")
    async with listening(broker, f"{prefix}/#") as got, transport.session() as session:
        with pytest.raises(PublishError, match=code):
            session.publish_nowait(topic, payload, qos=1)
        with pytest.raises(PublishError, match=code):
            await session.publish(topic, payload, qos=0)
        await session.publish(f"{prefix}/after", b"still connected", qos=1)
        await until(lambda: len(got) == 1)


async def test_a_password_needs_a_username() -> None:
    with pytest.raises(ValueError, match="username"):
        MqttTransport("127.0.0.1", 1883, client_id="x", password="secret")


@pytest.mark.broker
async def test_a_lost_connection_ends_the_stream_and_qos1_waits_for_the_next(
    own_broker: Mosquitto, prefix: str
) -> None:
    transport = transport_for(own_broker, f"{prefix}-lost")
    async with transport.session() as session:
        await session.subscribe("x/#")
        own_broker.stop()
        with pytest.raises(TransportError, match="connection lost"):
            async with asyncio.timeout(10):
                async for _ in session.batches():
                    pass
        with pytest.raises(PublishError, match="not_connected"):
            session.publish_nowait(f"{prefix}/lost", b"QoS 0 is not kept", qos=0)
        session.publish_nowait(f"{prefix}/kept", b"QoS 1 is kept", qos=1)
    own_broker.start()
    async with listening(own_broker, f"{prefix}/#") as got, transport.session():
        await until(lambda: len(got) == 1)  # sent on the next connection
    assert [m.payload for m in got] == [b"QoS 1 is kept"]


@pytest.mark.broker
async def test_the_outgoing_queue_is_bounded_while_disconnected(
    own_broker: Mosquitto, prefix: str
) -> None:
    transport = transport_for(own_broker, f"{prefix}-bounded", max_queued=100)
    async with transport.session() as session:
        own_broker.stop()
        with contextlib.suppress(TransportError):
            async with asyncio.timeout(10):
                async for _ in session.batches():
                    pass
        for i in range(100):
            session.publish_nowait(f"{prefix}/q", str(i).encode(), qos=1)
        with pytest.raises(PublishError, match="queue_full"):
            session.publish_nowait(f"{prefix}/q", b"one too many", qos=1)
    own_broker.start()
    async with listening(own_broker, f"{prefix}/#") as got, transport.session():
        await until(lambda: len(got) == 100)
    assert [int(m.payload) for m in got] == list(range(100))  # type: ignore[arg-type]


@contextlib.contextmanager
def fake_broker(answer: bytes) -> Iterator[int]:
    """A TCP server on loopback that reads the CONNECT, sends ``answer``, then never
    reads or says anything again (its receive buffer is small: it fills soon)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.2)
    stop = threading.Event()
    conns: list[socket.socket] = []

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            conns.append(conn)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            with contextlib.suppress(OSError):
                conn.recv(1024)  # the CONNECT
                conn.sendall(answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        for conn in conns:
            conn.close()
        server.close()


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x20\x01\x00",  # a CONNACK one byte short
        b"\xff\xff\xff\xff\xff\x7f",  # a remaining length of 5 bytes
        b"\x20\x02\x00\x05",  # CONNACK: not authorised
        b"HTTP/1.1 400 Bad Request\r\n\r\n",  # not MQTT at all
    ],
)
async def test_a_broker_answering_garbage_is_a_transport_error(garbage: bytes) -> None:
    with fake_broker(garbage) as port:
        transport = MqttTransport("127.0.0.1", port, client_id="g", connect_timeout_s=2)
        for _ in range(2):  # and again: the client is reusable after it
            with pytest.raises(TransportError):
                async with transport.session():
                    pass


async def test_a_broker_that_stops_reading_bounds_what_waits() -> None:
    connack = b"\x20\x02\x00\x00"
    with fake_broker(connack) as port:
        transport = MqttTransport(
            "127.0.0.1", port, client_id="full", max_queued=50, connect_timeout_s=2
        )
        async with transport.session() as session:
            refused = 0
            for _ in range(5000):  # 320 MB if nothing were bounded
                try:
                    session.publish_nowait("a/b", b"x" * 65_536, qos=0)
                except PublishError as exc:
                    assert exc.code == "queue_full"
                    refused += 1
                await asyncio.sleep(0)
            assert refused > 0
            assert transport._qos0_unwritten <= 50
