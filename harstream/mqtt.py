"""The MQTT transport, on aiomqtt (paho-mqtt 2.x). The only module that imports aiomqtt.

Plain values in (host, port, credentials, TLS files), a :class:`~harstream.transport
.Session` out; aiomqtt's errors come out as :class:`~harstream.transport.TransportError`.
"""

from __future__ import annotations

import ssl
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiomqtt
from paho.mqtt.client import MQTT_ERR_SUCCESS
from paho.mqtt.client import error_string as mqtt_error_string

from harstream.transport import Incoming, TransportError, Will

__all__ = ["MqttSession", "MqttTransport", "TlsFiles"]


@dataclass(frozen=True)
class TlsFiles:
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure: bool = False  # skip the host name check (test CAs)


class MqttSession:
    def __init__(self, client: aiomqtt.Client) -> None:
        self._client = client

    async def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        try:
            await self._client.publish(topic, payload, qos=qos, retain=retain)
        except aiomqtt.MqttError as exc:
            raise TransportError(f"publish to {topic} failed: {exc}") from exc

    def publish_nowait(
        self, topic: str, payload: bytes, qos: int = 0, retain: bool = False
    ) -> None:
        # aiomqtt's publish awaits each PUBACK and scans all pending calls per call, which is
        # quadratic when a batch publishes thousands of decisions. paho's own publish queues
        # the message and handles QoS 1 by itself (bounded by max_queued_outgoing_messages).
        info = self._client._client.publish(topic, payload, qos, retain)
        if info.rc != MQTT_ERR_SUCCESS:
            raise TransportError(f"publish to {topic} failed: {mqtt_error_string(info.rc)}")

    async def subscribe(self, topic: str, qos: int = 0) -> None:
        try:
            await self._client.subscribe(topic, qos=qos)
        except aiomqtt.MqttError as exc:
            raise TransportError(f"subscribe to {topic} failed: {exc}") from exc

    async def messages(self) -> AsyncIterator[Incoming]:
        # aiomqtt's iterator spends a task and an asyncio.wait on every message; under load,
        # what has already arrived is taken from its queue directly, in one go
        arrived = self._client._queue
        try:
            async for message in self._client.messages:
                yield _incoming(message)
                while not arrived.empty():
                    yield _incoming(arrived.get_nowait())
        except aiomqtt.MqttError as exc:
            raise TransportError(f"connection lost: {exc}") from exc


def _incoming(message: aiomqtt.Message) -> Incoming:
    payload = message.payload
    if not isinstance(payload, bytes | bytearray):
        payload = b"" if payload is None else str(payload).encode()
    return Incoming(message.topic.value, bytes(payload))


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
        max_inflight: int = 100,  # paho rescans its in-flight list on every PUBACK: keep it short
        max_queued: int = 100_000,  # outgoing messages waiting for the socket; beyond: dropped
    ) -> None:
        self.host = host
        self.port = port
        self.username = username
        self._password = password
        self.tls = tls
        self.client_id = client_id or f"harstream-{uuid.uuid4().hex[:12]}"
        self.keepalive_s = keepalive_s
        self.max_inflight = max_inflight
        self.max_queued = max_queued

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
        client = aiomqtt.Client(
            self.host,
            self.port,
            username=self.username,
            password=self._password,
            identifier=self.client_id,
            keepalive=self.keepalive_s,
            will=None
            if will is None
            else aiomqtt.Will(will.topic, will.payload, will.qos, will.retain),
            tls_context=tls_context,
            max_inflight_messages=self.max_inflight,
            max_queued_outgoing_messages=self.max_queued,
            timeout=10,
        )
        # a batch publishes its decisions concurrently; aiomqtt would log a warning for
        # every call beyond 10 in flight
        client.pending_calls_threshold = 1_000_000
        try:
            async with client:
                yield MqttSession(client)
        except aiomqtt.MqttError as exc:
            raise TransportError(f"{self.host}:{self.port}: {exc}") from exc
