"""paho-mqtt's client, built from the transport's options and driven by the event loop.

paho does the protocol; this module only connects its socket to the asyncio loop, as
aiomqtt does internally: :class:`SocketDriver` watches the socket and calls paho's
``loop_read`` / ``loop_write`` when it is ready (a timer in the transport calls
``loop_misc`` for keepalive). paho reports its socket through callbacks, some from
``connect()``, which runs in a worker thread: every one is carried out on the loop
thread, in order. Plain TCP sockets are read through :class:`_BufferedSocket`, one
system call per read instead of three or more per packet. :class:`Acks` holds the
futures of paho's message ids awaiting the broker's answer; :func:`check_topic` says
whether a topic may be published. The transport (:mod:`harstream.gateway.mqtt`)
handles connections, acknowledgements and messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from harstream.errors import PublishError
from harstream.gateway.transport import TransportError

__all__ = [
    "MAX_TOPIC_BYTES",
    "Acks",
    "Endpoints",
    "SocketDriver",
    "TlsFiles",
    "build_client",
    "check_topic",
]

MAX_TOPIC_BYTES = 65_535  # MQTT strings carry a 2-byte length


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


class Acks:
    """paho's message ids awaiting the broker's answer (publish, subscribe, unsubscribe),
    each a future on the loop."""

    def __init__(self) -> None:
        self._waiting: dict[int, asyncio.Future[None]] = {}

    async def wait(
        self,
        loop: asyncio.AbstractEventLoop,
        mid: int,
        lost: asyncio.Future[TransportError],
        timeout_s: float,
        what: str,
    ) -> None:
        """Until ``mid`` is answered; raises what ``lost`` holds if the connection ends
        first, or a TransportError after ``timeout_s``."""
        future = self._waiting[mid] = loop.create_future()
        try:
            done, _ = await asyncio.wait(
                {future, lost}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED
            )
        finally:  # given up (lost, timed out, cancelled): no one will read it
            if not future.done() and self._waiting.get(mid) is future:
                del self._waiting[mid]
                future.cancel()
        if future in done:
            future.result()
            return
        if lost in done:
            raise lost.result()
        raise TransportError(f"{what}: no answer in {timeout_s} s")

    def settle(self, mid: int, error: Exception | None) -> None:
        """``mid`` is answered: done, or failed with ``error``."""
        future = self._waiting.pop(mid, None)
        if future is None or future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(None)

    def fail_all(self, error: Exception) -> None:
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(error)
        self._waiting.clear()


class Endpoints:
    """The brokers a transport connects to: ``host:port``, then ``fallbacks`` (more nodes
    of the same cluster); after each failed or lost connection the next, in turn."""

    def __init__(self, host: str, port: int, fallbacks: tuple[tuple[str, int], ...]) -> None:
        self.all = [(host, port), *fallbacks]
        self.at = 0

    def advance(self) -> tuple[str, int]:
        """The next broker's ``(host, port)`` (the same one when there is only one)."""
        self.at = (self.at + 1) % len(self.all)
        return self.all[self.at]


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


def build_client(
    client_id: str,
    *,
    v5: bool,
    clean_session: bool,
    transport: Literal["tcp", "websockets"],
    ws_path: str,
    username: str | None,
    password: str | None,
    tls: TlsFiles | None,
    max_queued: int,
    max_inflight: int,
) -> paho.Client:
    """paho's client with these options, reconnecting never by itself (the gateway
    does) and raising what its callbacks raise."""
    client = _Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        clean_session=None if v5 else clean_session,
        protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
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
    return client


class SocketDriver:
    """Watches paho's socket on the event loop; ``after_read`` is called after each
    read (the transport hands over what it delivered). The socket is watched by its
    descriptor number, remembered when it opens, because paho closes it right after
    saying so."""

    def __init__(self, client: paho.Client, after_read: Callable[[], None]) -> None:
        self.client = client
        self.after_read = after_read
        self.loop: asyncio.AbstractEventLoop | None = None
        self.loop_thread = 0
        self.sock: Any = None  # the socket the loop watches, by its descriptor
        self.fd: int | None = None
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_socket_register_write
        client.on_socket_unregister_write = self._on_socket_unregister_write

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Drive the client on ``loop`` (the running one, at each session)."""
        self.loop, self.loop_thread = loop, threading.get_ident()

    def release(self) -> None:
        """Stop watching the socket (the connection is closed)."""
        if self.sock is not None:
            self._unwatch(self.sock)

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
        loop = self.loop
        if loop is None or loop.is_closed():  # paho's __del__ closes the socket late
            self.sock, self.fd = None, None
            return
        if threading.get_ident() == self.loop_thread:
            action(*args)
        else:
            loop.call_soon_threadsafe(action, *args)

    def _watch(self, sock: Any, fd: int) -> None:
        assert self.loop is not None
        if self.sock is not None:
            self._unwatch(self.sock)
        self.sock, self.fd = sock, fd
        self.loop.add_reader(fd, self._readable)
        if self.client.want_write():
            self.loop.add_writer(fd, self._writable)

    def _unwatch(self, sock: Any) -> None:
        if sock is not self.sock or self.fd is None or self.loop is None:
            return
        self.loop.remove_reader(self.fd)
        self.loop.remove_writer(self.fd)
        self.sock, self.fd = None, None

    def _want_write(self, sock: Any, want: bool) -> None:
        if sock is not self.sock or self.fd is None or self.loop is None:
            return  # not watched yet: _watch looks at want_write() itself
        if want:
            self.loop.add_writer(self.fd, self._writable)
        else:
            self.loop.remove_writer(self.fd)

    def _readable(self) -> None:
        client, sock = self.client, self.sock
        client.loop_read()
        # TLS may hold decrypted bytes the socket no longer signals (paho's own loop
        # checks the same)
        while sock is not None and sock is self.sock and getattr(sock, "pending", None):
            if not sock.pending():
                break
            client.loop_read()
        self.after_read()

    def _writable(self) -> None:
        self.client.loop_write()
