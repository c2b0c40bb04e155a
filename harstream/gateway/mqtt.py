"""The MQTT transport: paho-mqtt driven by the asyncio event loop.

paho does the protocol (MQTT 3.1.1 and 5, QoS 0/1/2 both ways, persistent sessions and
their resends, will, keepalive, TLS, websockets, proxies); this module only connects its
socket to the event loop, as aiomqtt does internally: the loop watches the socket and
calls paho's ``loop_read`` / ``loop_write`` when it is ready, and a timer calls
``loop_misc`` (keepalive). Every paho call happens on the event-loop thread; other
threads hand work to it with ``call_soon_threadsafe``.

One paho client lives as long as the :class:`MqttTransport`: each ``session()`` connects
it again, so QoS 1 and 2 messages handed to it and not yet acknowledged survive a lost
connection and go out after the reconnect (paho resends them, flagged DUP). With
``clean_session`` false (MQTT 5: clean start off and a session expiry) the broker keeps
our subscriptions and queues what arrives for us while we are away.

What is published is checked first (:func:`check_topic`, payload size) and refused with
:class:`~harstream.errors.PublishError`, so a bad topic never reaches the broker, which
would drop the connection. What waits in paho is bounded: QoS 1/2 by
``max_queued`` (paho's own queue), QoS 0 by counting what is handed over but not yet
written. Connection failures and losses surface as
:class:`~harstream.gateway.transport.TransportError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from harstream.errors import PublishError
from harstream.gateway.transport import Incoming, TransportError, Will

__all__ = ["MAX_TOPIC_BYTES", "MqttSession", "MqttTransport", "TlsFiles", "check_topic"]

log = logging.getLogger("harstream.mqtt")

MAX_TOPIC_BYTES = 65_535  # MQTT strings carry a 2-byte length
MISC_INTERVAL_S = 1.0  # how often paho checks keepalive and ping timeouts


def check_topic(topic: str) -> None:
    """A topic we may publish to: not empty, no wildcard, no NUL, no empty level, at most
    65,535 bytes of UTF-8. Raises PublishError naming what is wrong.

    >>> check_topic("harstream/phone1/activity")
    >>> check_topic("harstream//activity")
    Traceback (most recent call last):
    ...
    harstream.errors.PublishError: bad_topic: 'harstream//activity': empty level
    """
    if not topic:
        raise PublishError("bad_topic", "empty topic")
    if "+" in topic or "#" in topic:
        raise PublishError("bad_topic", f"{topic!r}: wildcards (+ #) are for subscriptions")
    if "\0" in topic:
        raise PublishError("bad_topic", f"{topic!r}: NUL character")
    if "" in topic.split("/"):
        raise PublishError("bad_topic", f"{topic!r}: empty level")
    if len(topic.encode()) > MAX_TOPIC_BYTES:
        raise PublishError("bad_topic", f"topic of {len(topic.encode())} bytes > {MAX_TOPIC_BYTES}")


@dataclass(frozen=True)
class TlsFiles:
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure: bool = False  # skip host name verification (test CAs)


class _BufferedSocket:
    """A TCP socket whose ``recv`` serves paho from one large read. paho reads every
    packet with three or more ``recv`` calls (the type byte, the length byte by byte,
    the body); through this, one system call brings whatever the socket holds.
    ``pending()`` says what is buffered, so that the reader drains it (the socket no
    longer signals it), as for TLS. Everything else goes to the socket."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._data = b""
        self._pos = 0

    def recv(self, size: int) -> bytes:
        if self._pos >= len(self._data):
            self._data, self._pos = self._sock.recv(max(size, 65_536)), 0
        out = self._data[self._pos : self._pos + size]
        self._pos += len(out)
        return out

    def pending(self) -> int:
        return len(self._data) - self._pos

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class _Client(paho.Client):
    """paho's client with plain TCP sockets buffered (see _BufferedSocket); TLS sockets
    and websockets are paho's own."""

    def _create_socket(self) -> Any:
        sock = super()._create_socket()
        if type(sock) is socket.socket:
            return _BufferedSocket(sock)
        return sock


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

    async def batches(self) -> AsyncIterator[list[Incoming]]:
        async for batch in self._t._batches():
            yield batch


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
    ) -> None:
        if password is not None and username is None:
            raise ValueError("a password needs a username")
        self.host, self.port = host, port
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
        client = _Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=None if self._v5 else clean_session,
            protocol=MQTTProtocolVersion.MQTTv5 if self._v5 else MQTTProtocolVersion.MQTTv311,
            transport=transport,
            reconnect_on_failure=False,
        )
        if transport == "websockets":
            client.ws_set_options(path=ws_path)
        if username is not None:
            client.username_pw_set(username, password)
        if tls is not None:
            client.tls_set(
                ca_certs=str(tls.ca_file) if tls.ca_file else None,
                certfile=str(tls.cert_file) if tls.cert_file else None,
                keyfile=str(tls.key_file) if tls.key_file else None,
            )
            client.tls_insecure_set(tls.insecure)
        client.max_queued_messages_set(max_queued)
        client.max_inflight_messages_set(max_inflight)
        client.suppress_exceptions = False
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        client.on_subscribe = self._on_subscribe
        client.on_unsubscribe = self._on_unsubscribe
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_socket_register_write
        client.on_socket_unregister_write = self._on_socket_unregister_write
        self._client = client
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._sock: Any = None  # the socket the loop watches, by its descriptor
        self._fd: int | None = None
        self._connack: asyncio.Future[None] | None = None
        self._lost: asyncio.Future[TransportError] | None = None  # its result: what ended it
        self._waiting: dict[int, asyncio.Future[None]] = {}  # mid -> publish or subscribe
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
        loop = asyncio.get_running_loop()
        self._loop, self._loop_thread = loop, threading.get_ident()
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
        finally:
            if misc is not None:
                misc.cancel()
            self._close()
            for future in self._waiting.values():
                if not future.done():
                    future.set_exception(TransportError("connection closed"))
            self._waiting.clear()

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
        if self._sock is not None:
            self._unwatch(self._sock)

    # --- paho's socket callbacks -------------------------------------------------------
    # paho calls these from connect() too, which runs in a worker thread: every one is
    # carried out on the loop thread, in order. The socket is watched by its descriptor
    # number, remembered when it opens, because paho closes it right after saying so.

    def _on_socket_open(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        raw = getattr(sock, "_socket", sock)  # the TCP socket under paho's websocket wrapper
        with contextlib.suppress(OSError):  # small packets go out at once
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._on_loop(self._watch, sock, sock.fileno())

    def _on_socket_close(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._on_loop(self._unwatch, sock)

    def _on_socket_register_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._on_loop(self._want_write, sock, True)

    def _on_socket_unregister_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._on_loop(self._want_write, sock, False)

    def _on_loop(self, action: Callable[..., None], *args: Any) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():  # paho's __del__ closes the socket late
            self._sock, self._fd = None, None
            return
        if threading.get_ident() == self._loop_thread:
            action(*args)
        else:
            loop.call_soon_threadsafe(action, *args)

    def _watch(self, sock: Any, fd: int) -> None:
        assert self._loop is not None
        if self._sock is not None:
            self._unwatch(self._sock)
        self._sock, self._fd = sock, fd
        self._loop.add_reader(fd, self._readable)
        if self._client.want_write():
            self._loop.add_writer(fd, self._writable)

    def _unwatch(self, sock: Any) -> None:
        if sock is not self._sock or self._fd is None or self._loop is None:
            return
        self._loop.remove_reader(self._fd)
        self._loop.remove_writer(self._fd)
        self._sock, self._fd = None, None

    def _want_write(self, sock: Any, want: bool) -> None:
        if sock is not self._sock or self._fd is None or self._loop is None:
            return  # not watched yet: _watch looks at want_write() itself
        if want:
            self._loop.add_writer(self._fd, self._writable)
        else:
            self._loop.remove_writer(self._fd)

    def _readable(self) -> None:
        client, sock = self._client, self._sock
        client.loop_read()
        # TLS may hold decrypted bytes the socket no longer signals (paho's own loop
        # checks the same)
        while sock is not None and sock is self._sock and getattr(sock, "pending", None):
            if not sock.pending():
                break
            client.loop_read()
        if self._read:
            batch, self._read = self._read, []
            self._batches_queue.put_nowait(batch)

    def _writable(self) -> None:
        self._client.loop_write()

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
        self._read.append(Incoming(message.topic, bytes(message.payload)))

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
        future = self._waiting.pop(mid, None)
        if future is not None and not future.done():
            if reason.is_failure:
                future.set_exception(PublishError("refused", f"broker refused: {reason}"))
            else:
                future.set_result(None)

    def _on_subscribe(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reasons: list[ReasonCode],
        properties: Properties,
    ) -> None:
        future = self._waiting.pop(mid, None)
        if future is None or future.done():
            return
        if any(r.is_failure for r in reasons):
            future.set_exception(TransportError(f"subscription refused: {reasons}"))
        else:
            future.set_result(None)

    def _on_unsubscribe(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reasons: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        future = self._waiting.pop(mid, None)
        if future is not None and not future.done():
            future.set_result(None)  # an unsubscription the broker answers is done

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
        lost = self._lost
        assert lost is not None and self._loop is not None
        future = self._waiting[mid] = self._loop.create_future()
        done, _ = await asyncio.wait(
            {future, lost}, timeout=self.connect_timeout_s, return_when=asyncio.FIRST_COMPLETED
        )
        if future in done:
            future.result()
            return
        if lost in done:
            raise lost.result()
        raise TransportError(f"{what}: no answer in {self.connect_timeout_s} s")

    async def _batches(self) -> AsyncIterator[list[Incoming]]:
        lost = self._lost
        assert lost is not None
        while True:
            batch = await self._batches_queue.get()
            if batch:
                yield batch
            if lost.done():
                raise lost.result()
