"""The MQTT transport: paho-mqtt driven by the asyncio event loop.

paho does the protocol (MQTT 3.1.1 and 5, QoS 0/1/2 both ways, persistent sessions and
their resends, will, keepalive, TLS, websockets, proxies), its socket driven by the
event loop (:mod:`harstream.gateway.mqttclient`). Every paho call happens on the
event-loop thread; other threads hand work to it with ``call_soon_threadsafe``.

One paho client lives as long as the :class:`MqttTransport`: each ``session()`` connects
it again, so QoS 1 and 2 messages handed to it and not yet acknowledged survive a lost
connection and go out after the reconnect (paho resends them, flagged DUP). With
``clean_session`` false (MQTT 5: clean start off and a session expiry) the broker keeps
our subscriptions and queues what arrives for us while we are away.

What is published is checked first (:func:`check_topic`, payload size) and refused with
:class:`~harstream.errors.PublishError`, so a bad topic never reaches the broker, which
would drop the connection. What waits in paho is bounded: QoS 1/2 by ``max_queued``
(paho's own queue), QoS 0 by counting what is handed over but not yet written.
Connection failures and losses surface as :class:`~harstream.gateway.transport.TransportError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal

import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from harstream.errors import PublishError
from harstream.gateway.mqttclient import (
    MAX_TOPIC_BYTES,
    Acks,
    Endpoints,
    SocketDriver,
    TlsFiles,
    build_client,
    check_topic,
)
from harstream.gateway.mqttsession import MqttSession
from harstream.gateway.transport import Incoming, TransportError, Will

__all__ = ["MAX_TOPIC_BYTES", "MqttSession", "MqttTransport", "TlsFiles", "check_topic"]

log = logging.getLogger("harstream.mqtt")

MISC_INTERVAL_S = 1.0  # how often paho checks keepalive and ping timeouts


class MqttTransport:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        client_id: str,
        username: str | None = None,
        password: str | None = None,
        tls: TlsFiles | None = None,
        keepalive_s: int = 30,
        transport: Literal["tcp", "websockets"] = "tcp",
        ws_path: str = "/mqtt",
        protocol: Literal["3.1.1", "5"] = "3.1.1",
        clean_session: bool = False,
        session_expiry_s: int = 86_400,
        max_queued: int = 10_000,
        max_inflight: int = 0,
        max_payload_bytes: int = 1 << 20,
        connect_timeout_s: float = 10.0,
        fallbacks: tuple[tuple[str, int], ...] = (),
    ) -> None:
        if password is not None and username is None:
            raise ValueError("a password needs a username")
        self.host, self.port = host, port
        self.endpoints = Endpoints(host, port, fallbacks)  # more nodes of its cluster
        self.client_id = client_id
        self.keepalive_s = keepalive_s
        self.clean_session = clean_session
        self.session_expiry_s = session_expiry_s
        self.max_queued = max_queued
        self.max_payload_bytes = max_payload_bytes
        self.connect_timeout_s = connect_timeout_s
        self.transport_name = transport
        self.tls = tls is not None
        self.protocol = protocol
        self._v5 = protocol == "5"
        client = build_client(
            client_id,
            v5=self._v5,
            clean_session=clean_session,
            transport=transport,
            ws_path=ws_path,
            username=username,
            password=password,
            tls=tls,
            max_queued=max_queued,
            max_inflight=max_inflight,
        )
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        client.on_subscribe = self._on_subscribe
        client.on_unsubscribe = self._on_unsubscribe
        self._client = client
        self._driver = SocketDriver(client, self._hand_over)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connack: asyncio.Future[None] | None = None
        self._lost: asyncio.Future[TransportError] | None = None  # its result: what ended it
        self._acks = Acks()  # mid -> publish or subscribe
        self._read: list[Incoming] = []  # what the current loop_read delivered
        self._batches_queue: asyncio.Queue[list[Incoming]] = asyncio.Queue()
        self._qos0_unwritten = 0  # QoS 0 publishes handed to paho, not yet on the socket
        self._qos0_mids: set[int] = set()
        self.session_present = False

    @property
    def connected(self) -> bool:
        """Whether the client holds a live connection right now (False as soon as paho
        has seen it fail; QoS 1/2 publishes then wait for the next session)."""
        return bool(self._client.is_connected())

    def __repr__(self) -> str:  # never shows the password
        scheme = self.transport_name + ("+tls" if self.tls else "")
        return (
            f"MqttTransport({scheme}://{self.host}:{self.port}, MQTT "
            f"{self.protocol}, client_id={self.client_id!r}, "
            f"{'clean' if self.clean_session else 'persistent'} session)"
        )

    # --- connecting ------------------------------------------------------------------

    @asynccontextmanager
    async def session(self, will: Will | None = None) -> AsyncIterator[MqttSession]:
        """Connect (again), yield the session, disconnect cleanly on leaving."""
        loop = self._loop = asyncio.get_running_loop()
        self._driver.attach(loop)
        self._batches_queue = asyncio.Queue()
        self._connack = loop.create_future()
        self._lost = loop.create_future()
        client = self._client
        if will is not None:
            client.will_set(will.topic, will.payload, will.qos, will.retain)
        misc = None
        try:
            await self._connect()
            misc = asyncio.create_task(self._misc(), name="mqtt-keepalive")
            try:
                async with asyncio.timeout(self.connect_timeout_s):
                    await asyncio.shield(self._connack)
            except TimeoutError:
                raise TransportError(
                    f"no CONNACK from {self.host}:{self.port} in {self.connect_timeout_s} s"
                ) from None
            yield MqttSession(self)
        except TransportError:  # refused, unreachable or lost: the next node next time
            self.host, self.port = self.endpoints.advance()
            raise
        finally:
            if misc is not None:
                misc.cancel()
            self._close()
            self._acks.fail_all(TransportError("connection closed"))

    async def _connect(self) -> None:
        kwargs: dict[str, Any] = {}
        if self._v5:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = 0 if self.clean_session else self.session_expiry_s
            kwargs = {"clean_start": self.clean_session, "properties": props}
        self._qos0_unwritten, self._qos0_mids = 0, set()  # paho drops unwritten QoS 0
        try:
            # DNS, TCP and the TLS handshake block: off the loop, as aiomqtt does. paho
            # keeps unacknowledged QoS 1/2 messages across connect() calls.
            await asyncio.to_thread(
                self._client.connect, self.host, self.port, self.keepalive_s, **kwargs
            )
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise TransportError(f"cannot connect to {self.host}:{self.port}: {exc}") from exc

    async def _misc(self) -> None:
        while True:
            await asyncio.sleep(MISC_INTERVAL_S)
            self._client.loop_misc()

    def _close(self) -> None:
        """A clean DISCONNECT when connected (a persistent session stays on the broker),
        else just the socket."""
        client = self._client
        with contextlib.suppress(Exception):
            if client.is_connected():
                client.disconnect()
                client.loop_write()
        self._driver.release()

    def _hand_over(self) -> None:
        """After a read: what it delivered, as one batch."""
        if self._read:
            batch, self._read = self._read, []
            self._batches_queue.put_nowait(batch)

    def _on_connect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if self._connack is None or self._connack.done():
            return
        if reason.is_failure:
            self._connack.set_exception(TransportError(f"connection refused: {reason}"))
            return
        self.session_present = flags.session_present
        self._connack.set_result(None)

    def _on_disconnect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.DisconnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        error = TransportError(f"connection lost: {reason}")
        if self._connack is not None and not self._connack.done():
            self._connack.set_exception(error)
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(error)
        self._batches_queue.put_nowait([])  # wakes a reader, which sees the loss

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        self._read.append(Incoming(message.topic, bytes(message.payload), message.retain))

    def _on_publish(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reason: ReasonCode,
        properties: Properties,
    ) -> None:
        if mid in self._qos0_mids:
            self._qos0_mids.discard(mid)
            self._qos0_unwritten -= 1
        refused = PublishError("refused", f"broker refused: {reason}")
        self._acks.settle(mid, refused if reason.is_failure else None)

    def _on_subscribe(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reasons: list[ReasonCode],
        properties: Properties,
    ) -> None:
        refused = any(r.is_failure for r in reasons)
        self._acks.settle(
            mid, TransportError(f"subscription refused: {reasons}") if refused else None
        )

    def _on_unsubscribe(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reasons: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        self._acks.settle(mid, None)  # an unsubscription the broker answers is done

    # --- the session's verbs ---------------------------------------------------------

    def _publish(self, topic: str, payload: bytes, qos: int, retain: bool) -> int:
        check_topic(topic)
        if len(payload) > self.max_payload_bytes:
            raise PublishError("too_large", f"{len(payload)} bytes > {self.max_payload_bytes}")
        if qos == 0 and self._qos0_unwritten >= self.max_queued:
            raise PublishError("queue_full", f"{self._qos0_unwritten} QoS 0 messages unwritten")
        info = self._client.publish(topic, payload, qos, retain)
        if info.rc == MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:
            raise PublishError("queue_full", f"{self.max_queued} QoS {qos} messages queued")
        if qos == 0:
            if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                raise PublishError("not_connected", "QoS 0 messages are not kept offline")
            self._qos0_unwritten += 1
            self._qos0_mids.add(info.mid)
        # QoS 1/2 while disconnected: paho keeps it (rc NO_CONN) and sends it on reconnect
        return info.mid

    async def _subscribe(self, topic: str, qos: int) -> None:
        rc, mid = self._client.subscribe(topic, qos)
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            raise TransportError(f"cannot subscribe to {topic!r}: {paho.error_string(rc)}")
        try:
            await self._until_acked(mid, f"subscription to {topic!r}")
        except TransportError as exc:
            raise TransportError(f"{topic!r}: {exc}") from exc

    async def _unsubscribe(self, topic: str) -> None:
        rc, mid = self._client.unsubscribe(topic)
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            raise TransportError(f"cannot unsubscribe from {topic!r}: {paho.error_string(rc)}")
        await self._until_acked(mid, f"unsubscription from {topic!r}")

    async def _until_acked(self, mid: int, what: str) -> None:
        """Wait for paho's callback on ``mid`` (it cannot have come yet: paho reads and
        writes only when the loop calls it), or fail when the connection is lost first."""
        assert self._lost is not None and self._loop is not None
        await self._acks.wait(self._loop, mid, self._lost, self.connect_timeout_s, what)

    async def _batches(self) -> AsyncIterator[list[Incoming]]:
        lost = self._lost
        assert lost is not None
        while True:
            batch = await self._batches_queue.get()
            if batch:
                yield batch
            if lost.done():
                raise lost.result()
