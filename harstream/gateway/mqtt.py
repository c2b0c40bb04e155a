"""The MQTT transport: a lean asyncio client of MQTT 3.1.1, sized for the gateway's load.

Why not a general client library: profiled at 3,000 devices (docs/benchmarks.md), the
gateway's event-loop thread spent most of a core in paho-mqtt's pure-Python packet
handling under aiomqtt: three or four ``recv`` calls, a message object, a properties
object, topic matching and callbacks for every packet, and one ``send`` per publish,
all holding the GIL the batch worker needs. Here a read takes whatever the socket has
and one loop splits it into packets; everything published in one event-loop iteration
leaves in one ``send``.

It speaks what the gateway and ``replay --publish`` need: CONNECT (clean session,
keepalive, will, user name and password, TLS), SUBSCRIBE, PUBLISH in and out at QoS 0,
1 and 2, PINGREQ and DISCONNECT. Clean sessions only: what is in flight when the
connection drops is lost, which suits decisions (the next hop supersedes them); the
gateway reconnects. Failures come out as :class:`~harstream.gateway.transport.TransportError`.
Tests talk to it through a real mosquitto, with aiomqtt as the independent client.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from harstream.gateway.transport import Incoming, TransportError, Will

__all__ = ["MqttSession", "MqttTransport", "TlsFiles", "publish_packet", "varint"]

# fixed-header packet types (high nibble of the first byte)
CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK, PINGRESP = 2, 3, 4, 5, 6, 7, 9, 13
QOS2_WINDOW = 10  # our QoS 2 messages in flight at once (see send_publish)
PINGREQ_PACKET = b"\xc0\x00"
DISCONNECT_PACKET = b"\xe0\x00"
CONNACK_REFUSED = {
    1: "unacceptable protocol version",
    2: "client identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorized",
}


def varint(n: int) -> bytes:
    """MQTT's variable-length integer (the fixed header's remaining length).

    >>> varint(0).hex(), varint(127).hex(), varint(128).hex(), varint(16_383).hex()
    ('00', '7f', '8001', 'ff7f')
    """
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _string(data: bytes) -> bytes:
    return len(data).to_bytes(2, "big") + data


def publish_packet(
    topic: str, payload: bytes, qos: int = 0, retain: bool = False, packet_id: int = 0
) -> bytes:
    """A complete PUBLISH packet.

    >>> publish_packet("a/b", b"hi").hex()
    '30070003612f626869'
    >>> publish_packet("a/b", b"hi", qos=1, retain=True, packet_id=5).hex()
    '33090003612f6200056869'
    """
    head = _string(topic.encode())
    if qos:
        head += packet_id.to_bytes(2, "big")
    first = 0x30 | (qos << 1) | (1 if retain else 0)
    return bytes([first]) + varint(len(head) + len(payload)) + head + payload


def _connect_packet(
    client_id: str, keepalive_s: int, will: Will | None, username: str | None, password: str | None
) -> bytes:
    flags = 0x02  # clean session
    payload = _string(client_id.encode())
    if will is not None:
        flags |= 0x04 | (will.qos << 3) | (0x20 if will.retain else 0)
        payload += _string(will.topic.encode()) + _string(will.payload)
    if username is not None:
        flags |= 0x80
        payload += _string(username.encode())
        if password is not None:
            flags |= 0x40
            payload += _string(password.encode())
    body = _string(b"MQTT") + bytes([4, flags]) + keepalive_s.to_bytes(2, "big") + payload
    return b"\x10" + varint(len(body)) + body


def _ack(kind: int, packet_id: int) -> bytes:
    first = (kind << 4) | (0x02 if kind == PUBREL else 0)
    return bytes([first, 2]) + packet_id.to_bytes(2, "big")


class _Protocol(asyncio.Protocol):
    """One connection: parses what arrives, tracks what is in flight, batches writes."""

    def __init__(self, max_buffer: int, max_incoming: int) -> None:
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport  # set by connection_made, before any use
        self.connack: asyncio.Future[int] = self.loop.create_future()
        self.error: TransportError | None = None
        self.last_heard = time.monotonic()
        self.incoming: deque[Incoming] = deque()
        self.max_incoming = max_incoming
        self.max_buffer = max_buffer
        self._reading_paused = False
        self._waiter: asyncio.Future[None] | None = None
        self._buffer = bytearray()
        self._out: list[bytes] = []
        self._out_bytes = 0
        self._next_id = 0
        self._in_flight: dict[int, asyncio.Future[int] | None] = {}  # our packet id -> waiter
        self._qos2_in: set[int] = set()  # broker packet ids received, PUBREL not yet
        self._qos2_out = 0  # our QoS 2 messages between PUBLISH and PUBCOMP
        self._qos2_waiting: deque[bytes] = deque()  # beyond QOS2_WINDOW, in order

    # --- asyncio.Protocol -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(TransportError(f"connection lost: {exc or 'closed by the broker'}"))

    def data_received(self, data: bytes) -> None:
        self.last_heard = time.monotonic()
        buffer = self._buffer
        buffer += data
        at, end = 0, len(buffer)
        while end - at >= 2:
            # fixed header: type and flags, then the remaining length in 1-4 bytes of 7 bits
            length, shift, i, whole = 0, 0, at + 1, False
            while i < end and i <= at + 4:
                byte = buffer[i]
                i += 1
                length |= (byte & 0x7F) << shift
                shift += 7
                if not byte & 0x80:
                    whole = True
                    break
            if not whole:
                if i > at + 4:
                    self.close(TransportError("malformed packet from the broker"))
                    return
                break  # the rest of the header has not arrived yet
            stop = i + length
            if stop > end:
                break  # nor the rest of the packet
            self._packet(buffer[at], buffer, i, stop)
            at = stop
        del buffer[:at]
        if self._waiter is not None and self.incoming and not self._waiter.done():
            self._waiter.set_result(None)
        if len(self.incoming) > self.max_incoming and not self._reading_paused:
            self.transport.pause_reading()
            self._reading_paused = True

    # --- packets in ---------------------------------------------------------------------

    def _packet(self, first: int, data: bytearray, start: int, stop: int) -> None:
        kind = first >> 4
        if kind == PUBLISH:
            qos = (first >> 1) & 3
            size = int.from_bytes(data[start : start + 2], "big")
            topic = data[start + 2 : start + 2 + size].decode(errors="replace")
            at = start + 2 + size
            if qos:
                packet_id = int.from_bytes(data[at : at + 2], "big")
                at += 2
                if qos == 1:
                    self.write(_ack(PUBACK, packet_id))
                else:
                    self.write(_ack(PUBREC, packet_id))
                    if packet_id in self._qos2_in:
                        return  # a re-delivery before our PUBREC arrived: already queued
                    self._qos2_in.add(packet_id)
            self.incoming.append(Incoming(topic, bytes(data[at:stop])))
            return
        packet_id = int.from_bytes(data[start : start + 2], "big") if stop - start >= 2 else 0
        if kind == PUBACK:
            self._done(packet_id, 0)
        elif kind == PUBCOMP:
            self._done(packet_id, 0)
            self._qos2_out -= 1
            if self._qos2_waiting:
                self.send_publish(self._qos2_waiting.popleft(), 2)
        elif kind == PUBREC:
            self.write(_ack(PUBREL, packet_id))
        elif kind == PUBREL:
            self._qos2_in.discard(packet_id)
            self.write(_ack(PUBCOMP, packet_id))
        elif kind == SUBACK:
            self._done(packet_id, data[stop - 1])  # one filter per SUBSCRIBE
        elif kind == CONNACK and not self.connack.done():
            self.connack.set_result(data[start + 1])
        # PINGRESP: last_heard is all it is for

    def _done(self, packet_id: int, code: int) -> None:
        waiter = self._in_flight.pop(packet_id, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(code)

    # --- packets out --------------------------------------------------------------------

    def write(self, packet: bytes) -> None:
        """Queue a packet; what is queued in one loop iteration goes out in one send."""
        if self.error is not None:
            raise self.error
        if self._out_bytes + self.transport.get_write_buffer_size() > self.max_buffer:
            raise TransportError(f"outgoing buffer full ({self.max_buffer} bytes unsent)")
        if not self._out:
            self.loop.call_soon(self._flush)
        self._out.append(packet)
        self._out_bytes += len(packet)

    def _flush(self) -> None:
        if self._out and self.error is None and not self.transport.is_closing():
            self.transport.write(b"".join(self._out))
        self._out.clear()
        self._out_bytes = 0

    def send_publish(self, packet: bytes, qos: int) -> None:
        """QoS 0 and 1 PUBLISHes go out at once; QoS 2 ones at most QOS2_WINDOW at a time.
        A broker holds each QoS 2 message until our PUBREL, and mosquitto drops (yet
        acknowledges) any QoS > 0 message beyond its in-flight quota
        (max_inflight_messages, 20); a QoS 1 message leaves that quota as soon as it is
        read, so half of it is left for QoS 1 bursts (tested: 3,000)."""
        if qos < 2:
            self.write(packet)
            return
        if self._qos2_out >= QOS2_WINDOW:
            self._qos2_waiting.append(packet)
            return
        self.write(packet)
        self._qos2_out += 1

    def packet_id(self, waiter: asyncio.Future[int] | None) -> int:
        """A free packet id, registered as in flight until its acknowledgement."""
        if len(self._in_flight) >= 65_535:
            raise TransportError("65,535 messages await acknowledgement: the broker stalls")
        while True:
            self._next_id = self._next_id % 65_535 + 1
            if self._next_id not in self._in_flight:
                self._in_flight[self._next_id] = waiter
                return self._next_id

    async def wait(self, waiter: asyncio.Future[int], what: str, timeout_s: float) -> int:
        try:
            async with asyncio.timeout(timeout_s):
                return await waiter
        except TimeoutError:
            raise TransportError(f"{what}: no answer from the broker in {timeout_s:g} s") from None

    # --- reading the queue --------------------------------------------------------------

    async def next_batch(self) -> list[Incoming]:
        """Everything received so far (waits for at least one message)."""
        while not self.incoming:
            if self.error is not None:
                raise self.error
            self._waiter = self.loop.create_future()
            await self._waiter
            self._waiter = None
        items = list(self.incoming)
        self.incoming.clear()
        if self._reading_paused:
            self._reading_paused = False
            self.transport.resume_reading()
        return items

    def _fail(self, error: TransportError) -> None:
        if self.error is not None:
            return
        self.error = error
        for waiter in [self.connack, self._waiter, *self._in_flight.values()]:
            if waiter is not None and not waiter.done():
                waiter.set_exception(error)
        self._in_flight.clear()
        # the gateway may not be waiting on some of them: no "never retrieved" warnings
        for waiter in [self.connack, self._waiter]:
            if waiter is not None and waiter.done() and not waiter.cancelled():
                waiter.exception()

    def close(self, error: TransportError) -> None:
        """Drop the connection at once (nothing more is sent)."""
        self._fail(error)
        self.transport.abort()

    def disconnect(self) -> None:
        """Send what is queued and DISCONNECT, then close."""
        if self.error is not None:
            return
        self._out.append(DISCONNECT_PACKET)
        self._flush()
        self.transport.close()
        self._fail(TransportError("session closed"))


class MqttSession:
    def __init__(self, protocol: _Protocol, timeout_s: float) -> None:
        self._protocol = protocol
        self._timeout_s = timeout_s

    async def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        """Publish and, at QoS > 0, wait for the broker's acknowledgement."""
        p = self._protocol
        if not qos:
            p.send_publish(publish_packet(topic, payload, 0, retain), 0)
            return
        waiter: asyncio.Future[int] = p.loop.create_future()
        packet_id = p.packet_id(waiter)
        p.send_publish(publish_packet(topic, payload, qos, retain, packet_id), qos)
        await p.wait(waiter, f"publish to {topic}", self._timeout_s)

    def publish_nowait(
        self, topic: str, payload: bytes, qos: int = 0, retain: bool = False
    ) -> None:
        p = self._protocol
        packet_id = p.packet_id(None) if qos else 0
        p.send_publish(publish_packet(topic, payload, qos, retain, packet_id), qos)

    async def subscribe(self, topic: str, qos: int = 0) -> None:
        p = self._protocol
        waiter: asyncio.Future[int] = p.loop.create_future()
        packet_id = p.packet_id(waiter)
        body = packet_id.to_bytes(2, "big") + _string(topic.encode()) + bytes([qos])
        p.write(b"\x82" + varint(len(body)) + body)
        granted = await p.wait(waiter, f"subscribe to {topic}", self._timeout_s)
        if granted == 0x80:
            raise TransportError(f"subscribe to {topic} refused by the broker")

    async def messages(self) -> AsyncIterator[Incoming]:
        while True:
            for message in await self._protocol.next_batch():
                yield message


@dataclass(frozen=True)
class TlsFiles:
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure: bool = False  # skip the host name check (test CAs)


class MqttTransport:
    def __init__(
        self,
        host: str,
        port: int = 1883,
        *,
        username: str | None = None,
        password: str | None = None,
        tls: TlsFiles | None = None,
        client_id: str | None = None,
        keepalive_s: int = 30,
        timeout_s: float = 10.0,
        max_buffer: int = 32 * 1024 * 1024,  # unsent bytes; beyond, publishing fails
        max_incoming: int = 50_000,  # received, not yet taken: beyond, stop reading
    ) -> None:
        self.host = host
        self.port = port
        self.username = username
        self._password = password
        self.tls = tls
        self.client_id = client_id or f"harstream-{uuid.uuid4().hex[:12]}"
        self.keepalive_s = keepalive_s
        self.timeout_s = timeout_s
        self.max_buffer = max_buffer
        self.max_incoming = max_incoming

    def __repr__(self) -> str:  # never shows the password
        return (
            f"MqttTransport({self.host}:{self.port}, user={self.username!r}, tls={bool(self.tls)})"
        )

    def _tls_context(self) -> ssl.SSLContext | None:
        if self.tls is None:
            return None
        context = ssl.create_default_context(
            cafile=str(self.tls.ca_file) if self.tls.ca_file else None
        )
        if self.tls.cert_file and self.tls.key_file:
            context.load_cert_chain(str(self.tls.cert_file), str(self.tls.key_file))
        if self.tls.insecure:
            context.check_hostname = False
        return context

    @asynccontextmanager
    async def session(self, will: Will | None = None) -> AsyncIterator[MqttSession]:
        try:
            tls_context = self._tls_context()
        except (OSError, ssl.SSLError) as exc:
            raise TransportError(f"TLS files unusable: {exc}") from exc
        where = f"{self.host}:{self.port}"
        loop = asyncio.get_running_loop()
        protocol: _Protocol | None = None
        try:
            async with asyncio.timeout(self.timeout_s):
                _, protocol = await loop.create_connection(
                    lambda: _Protocol(self.max_buffer, self.max_incoming),
                    self.host,
                    self.port,
                    ssl=tls_context,
                    server_hostname=self.host if tls_context else None,
                )
                protocol.write(
                    _connect_packet(
                        self.client_id, self.keepalive_s, will, self.username, self._password
                    )
                )
                code = await protocol.connack
        except TimeoutError:
            if protocol is not None:
                protocol.close(TransportError("connect timed out"))
            raise TransportError(f"{where}: no CONNACK in {self.timeout_s:g} s") from None
        except OSError as exc:  # refused, unreachable, TLS handshake (ssl.SSLError)
            raise TransportError(f"{where}: {exc}") from exc
        if code:
            protocol.close(TransportError("refused"))
            reason = CONNACK_REFUSED.get(code, f"code {code}")
            raise TransportError(f"{where}: connection refused: {reason}")
        pinging = asyncio.create_task(self._keepalive(protocol), name="mqtt-keepalive")
        try:
            yield MqttSession(protocol, self.timeout_s)
        except BaseException:
            # leaving on an error: vanish without DISCONNECT so that the broker publishes
            # the will (a crashed gateway reads "offline")
            protocol.close(TransportError("session ended by an error"))
            raise
        else:  # a clean DISCONNECT: the broker discards the will
            protocol.disconnect()
        finally:
            pinging.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pinging

    async def _keepalive(self, protocol: _Protocol) -> None:
        """PINGREQ twice per keepalive period; no answer for 1.5 periods: connection dead."""
        period = self.keepalive_s
        while protocol.error is None:
            await asyncio.sleep(period / 2)
            if time.monotonic() - protocol.last_heard > 1.5 * period:
                protocol.close(TransportError(f"no answer from the broker in {1.5 * period:g} s"))
                return
            with contextlib.suppress(TransportError):
                protocol.write(PINGREQ_PACKET)
