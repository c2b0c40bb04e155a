"""The gateway's one I/O boundary: a transport opens sessions to a message broker.

``serve`` runs on any :class:`Transport`: :class:`harstream.gateway.mqtt.MqttTransport` for a
real broker, :class:`harstream.gateway.memory.MemoryTransport` for unit tests. A session is an
async context manager; leaving it disconnects. Connection failures and losses surface
as :class:`TransportError` (the implementations translate their library's errors).
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


@dataclass(frozen=True)
class Will:
    """The message the broker publishes for us when we vanish."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


class Session(Protocol):
    async def publish(
        self, topic: str, payload: bytes, qos: int = 0, retain: bool = False
    ) -> None: ...

    def publish_nowait(
        self, topic: str, payload: bytes, qos: int = 0, retain: bool = False
    ) -> None:
        """Queue a message with the client; QoS 1 delivery is the client's job from here.
        For high-volume traffic (decisions); ``publish`` waits for the broker's PUBACK."""
        ...

    async def subscribe(self, topic: str, qos: int = 0) -> None: ...

    def messages(self) -> AsyncIterator[Incoming]: ...


class Transport(Protocol):
    def session(self, will: Will | None = None) -> AbstractAsyncContextManager[Session]: ...
