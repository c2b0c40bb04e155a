"""A session of the MQTT transport (:class:`harstream.gateway.mqtt.MqttTransport`): what
the gateway does with one connection of its paho client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from harstream.gateway.transport import Incoming

if TYPE_CHECKING:
    from harstream.gateway.mqtt import MqttTransport

__all__ = ["MqttSession"]


class MqttSession:
    """One connection of the transport's client. ``batches`` yields what each read
    brought; ``publish_nowait`` hands a message to paho (and keeps working across a
    reconnect for QoS > 0: paho holds it until the next connection)."""

    def __init__(self, transport: MqttTransport) -> None:
        self._t = transport

    async def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        """Publish and wait until the broker has it (PUBACK / PUBCOMP), or until it is
        written for QoS 0."""
        mid = self._t._publish(topic, payload, qos, retain)
        await self._t._until_acked(mid, f"publish to {topic!r}")

    def publish_nowait(
        self, topic: str, payload: bytes, qos: int = 0, retain: bool = False
    ) -> None:
        self._t._publish(topic, payload, qos, retain)

    async def subscribe(self, topic: str, qos: int = 0) -> None:
        await self._t._subscribe(topic, qos)

    async def unsubscribe(self, topic: str) -> None:
        await self._t._unsubscribe(topic)

    def batches(self) -> AsyncIterator[list[Incoming]]:
        return self._t._batches()
