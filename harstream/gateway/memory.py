"""An in-memory broker and transport, for unit tests of the gateway (no sockets).

Topic filters with ``+`` and ``#``, retained messages, last wills (``drop`` a session to
fire its will, as a broker does when a client vanishes). Not a full MQTT broker; the
MQTT path itself is tested against a real mosquitto.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from harstream.errors import PublishError
from harstream.gateway.transport import Incoming, TransportError, Will

__all__ = ["MemoryBroker", "MemorySession", "MemoryTransport", "topic_matches"]


def topic_matches(pattern: str, topic: str) -> bool:
    """MQTT filter matching.

    >>> topic_matches("a/+/imu", "a/d1/imu"), topic_matches("a/#", "a/b/c")
    (True, True)
    >>> topic_matches("a/+", "a/b/c")
    False
    """
    parts, levels = pattern.split("/"), topic.split("/")
    for i, part in enumerate(parts):
        if part == "#":
            return True
        if i >= len(levels) or (part != "+" and part != levels[i]):
            return False
    return len(parts) == len(levels)


class MemorySession:
    def __init__(self, broker: MemoryBroker) -> None:
        self.broker = broker
        self.filters: list[str] = []
        self.queue: asyncio.Queue[Incoming | None] = asyncio.Queue()
        self.closed = False

    async def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        if self.closed or self.broker.down:
            raise TransportError("not connected")
        self.broker.deliver(topic, payload, retain)

    def publish_nowait(
        self, topic: str, payload: bytes, qos: int = 0, retain: bool = False
    ) -> None:
        if self.closed or self.broker.down:
            raise PublishError("not_connected", "the session is closed")
        self.broker.deliver(topic, payload, retain)

    async def subscribe(self, topic: str, qos: int = 0) -> None:
        self.filters.append(topic)
        for name, payload in self.broker.retained.items():
            if topic_matches(topic, name):
                self.queue.put_nowait(Incoming(name, payload, retained=True))

    async def unsubscribe(self, topic: str) -> None:
        if topic in self.filters:
            self.filters.remove(topic)

    async def batches(self) -> AsyncIterator[list[Incoming]]:
        """Everything queued when the reader wakes, as one batch."""
        while True:
            batch = [await self.queue.get()]
            while not self.queue.empty():
                batch.append(self.queue.get_nowait())
            messages = [m for m in batch if m is not None]
            if messages:
                yield messages
            if None in batch:
                raise TransportError("connection lost")


class MemoryBroker:
    def __init__(self) -> None:
        self.sessions: list[MemorySession] = []
        self.retained: dict[str, bytes] = {}
        self.log: list[tuple[str, bytes, bool]] = []  # every publish, in order
        self.down = False
        self._wills: dict[int, Will] = {}

    def deliver(self, topic: str, payload: bytes, retain: bool) -> None:
        self.log.append((topic, payload, retain))
        if retain:
            self.retained[topic] = payload
        for session in self.sessions:
            if any(topic_matches(f, topic) for f in session.filters):
                session.queue.put_nowait(Incoming(topic, payload))

    def drop(self, session: MemorySession, fire_will: bool = True) -> None:
        """Cut one session off, as a network failure would."""
        if session in self.sessions:
            self.sessions.remove(session)
            session.closed = True
            session.queue.put_nowait(None)
            will = self._wills.pop(id(session), None)
            if will is not None and fire_will:
                self.deliver(will.topic, will.payload, will.retain)

    def open(self, will: Will | None) -> MemorySession:
        if self.down:
            raise TransportError("connection refused: broker down")
        session = MemorySession(self)
        self.sessions.append(session)
        if will is not None:
            self._wills[id(session)] = will
        return session

    def close(self, session: MemorySession) -> None:
        """A clean disconnect: no will."""
        self._wills.pop(id(session), None)
        if session in self.sessions:
            self.sessions.remove(session)
        session.closed = True


class MemoryTransport:
    def __init__(self, broker: MemoryBroker) -> None:
        self.broker = broker

    @asynccontextmanager
    async def session(self, will: Will | None = None) -> AsyncIterator[MemorySession]:
        session = self.broker.open(will)
        try:
            yield session
        finally:
            self.broker.close(session)
