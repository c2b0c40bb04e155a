"""The gateway's one I/O boundary: a transport opens sessions to a message broker.

The gateway runs on any :class:`Transport`: :class:`harstream.gateway.mqtt.MqttTransport`
(paho-mqtt) for a real broker, :class:`harstream.gateway.memory.MemoryTransport` for unit
tests. A session is an async context manager; leaving it disconnects. Messages arrive in
batches, as each read of the connection brought them, so that a busy gateway pays the
asyncio hand-off once per read, not once per message.

Connection failures and losses surface as :class:`TransportError` (the gateway
reconnects: :mod:`harstream.gateway.connection`); an outgoing message
the transport will not send (bad topic, too large, queue full) as
:class:`~harstream.errors.PublishError`, with the connection intact.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol

from harstream.errors import HarstreamError

__all__ = ["Incoming", "Session", "Transport", "TransportError", "Will"]


class TransportError(HarstreamError):
    """The broker cannot be reached, refused us, or the connection was lost."""


@dataclass(frozen=True, slots=True)
class Incoming:
    topic: str
    payload: bytes
    retained: bool = False  # brought back by a subscription (MQTT's retain flag), not live


@dataclass(frozen=True)
class Will:
    """The message the broker publishes for us when we vanish."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


class Session(Protocol):
    async def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        """Publish and wait until the broker has acknowledged it (QoS > 0) or it is sent."""
        ...

    def publish_nowait(
        self, topic: str, payload: bytes, qos: int = 0, retain: bool = False
    ) -> None:
        """Hand a message to the client; delivery at its QoS is the client's job from
        here. Raises PublishError when it will not take it. For the decision stream."""
        ...

    async def subscribe(self, topic: str, qos: int = 0) -> None: ...

    async def unsubscribe(self, topic: str) -> None: ...

    def batches(self) -> AsyncIterator[list[Incoming]]:
        """What each read of the connection brought, in order; raises TransportError
        when the connection is lost."""
        ...


class Transport(Protocol):
    def session(self, will: Will | None = None) -> AbstractAsyncContextManager[Session]: ...
