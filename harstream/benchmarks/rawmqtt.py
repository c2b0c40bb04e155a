"""Just enough MQTT 3.1.1 for a load generator: connect, subscribe, QoS 0 publish, read.

Benchmarks need a generator that costs far less than the gateway it loads, on the same
two cores. A general client spends tens of microseconds of Python per message; here a
publish is one pre-framed ``bytes`` written to a socket, and reading splits the stream
into (topic, payload) without callbacks or tasks. Not for production: no QoS > 0 from
us, no keepalive (set to 0, which the broker accepts), no reconnects.
"""

from __future__ import annotations

import asyncio
import struct

__all__ = ["RawClient", "publish_packet"]


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _string(text: bytes) -> bytes:
    return struct.pack("!H", len(text)) + text


def publish_packet(topic: str, payload: bytes) -> bytes:
    """A complete QoS 0 PUBLISH packet.

    >>> publish_packet("a/b", b"hi").hex()
    '30070003612f626869'
    """
    body = _string(topic.encode()) + payload
    return b"\x30" + _varint(len(body)) + body


class RawClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, host: str, port: int, client_id: str) -> RawClient:
        reader, writer = await asyncio.open_connection(host, port)
        variable = _string(b"MQTT") + bytes([4, 0x02]) + struct.pack("!H", 0)  # clean, no ping
        body = variable + _string(client_id.encode())
        writer.write(b"\x10" + _varint(len(body)) + body)
        await writer.drain()
        connack = await reader.readexactly(4)
        if connack[0] != 0x20 or connack[3] != 0:
            raise ConnectionError(f"broker refused the connection: {connack.hex()}")
        return cls(reader, writer)

    async def subscribe(self, topic_filter: str, qos: int = 0) -> None:
        body = struct.pack("!H", 1) + _string(topic_filter.encode()) + bytes([qos])
        self.writer.write(b"\x82" + _varint(len(body)) + body)
        await self.writer.drain()
        while True:  # skip anything until the SUBACK
            kind, _ = await self._read_packet()
            if kind == 0x90:
                return

    def send(self, packet: bytes) -> None:
        """Queue a pre-framed packet (call ``drain`` now and then)."""
        self.writer.write(packet)

    async def drain(self) -> None:
        await self.writer.drain()

    async def _read_packet(self) -> tuple[int, bytes]:
        first = (await self.reader.readexactly(1))[0]
        length, shift = 0, 0
        while True:
            byte = (await self.reader.readexactly(1))[0]
            length += (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        return first & 0xF0, await self.reader.readexactly(length)

    async def messages(self) -> tuple[str, bytes]:
        """The next PUBLISH received, as (topic, payload); other packets are skipped."""
        while True:
            kind, body = await self._read_packet()
            if kind != 0x30:
                continue
            qos = 0  # we subscribe at QoS 0, so the broker sends at QoS 0
            size = struct.unpack("!H", body[:2])[0]
            topic = body[2 : 2 + size].decode()
            start = 2 + size + (2 if qos else 0)
            return topic, body[start:]

    async def close(self) -> None:
        self.writer.write(b"\xe0\x00")  # DISCONNECT
        await self.writer.drain()
        self.writer.close()
        await self.writer.wait_closed()
