"""The gateway's connection task: one broker session after another, until stopped.

Connects with capped, jittered exponential backoff (:class:`Backoff`), with the
retained ``offline`` status as its will (the broker publishes it if we vanish); on each
session, ``start`` subscribes and says ``online``, then everything received goes to
``dispatch`` until the connection is lost (a TransportError: reconnect) or ``stop``
is set: then ``drain`` lets the pipeline finish, ``offline`` is published and the
session closed. ``connected`` is set only while a session is started and live.
``send`` hands a message to the latest session's client.

It knows no topics but the status one, and nothing of the pipeline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import Counter
from collections.abc import Awaitable, Callable

from harstream.errors import PublishError
from harstream.gateway.transport import Incoming, Session, Transport, TransportError, Will

__all__ = ["Backoff", "Connection"]

log = logging.getLogger("harstream.gateway")


class Backoff:
    """Capped exponential backoff with full jitter: delay in [min, min(max, min * 2**n)]."""

    def __init__(self, min_s: float, max_s: float, rng: random.Random | None = None) -> None:
        self.min_s, self.max_s = min_s, max_s
        self.rng = rng or random.Random()
        self.attempt = 0

    def next(self) -> float:
        cap = min(self.max_s, self.min_s * 2**self.attempt)
        self.attempt += 1
        return self.rng.uniform(self.min_s, cap)

    def reset(self) -> None:
        self.attempt = 0


class Connection:
    """``status(b"online" | b"offline")`` gives the status payload; ``counters`` gets
    ``reconnects`` and ``published``; ``summary()`` says what was served, for the last
    log line."""

    def __init__(
        self,
        transport: Transport,
        backoff: Backoff,
        status_topic: str,
        status: Callable[[bytes], bytes],
        *,
        start: Callable[[Session], Awaitable[None]],
        dispatch: Callable[[list[Incoming]], None],
        drain: Callable[[], Awaitable[None]],
        summary: Callable[[], str],
        counters: Counter[str],
        publish_failed: Counter[str],
    ) -> None:
        self.transport = transport
        self.backoff = backoff
        self.status_topic = status_topic
        self.status = status
        self.start, self.dispatch, self.drain = start, dispatch, drain
        self.summary = summary
        self.counters = counters  # reconnects, published
        self.publish_failed = publish_failed  # by PublishError code
        self.connected = asyncio.Event()
        self.session: Session | None = None  # the latest: QoS 1 still queues on it offline

    async def run(self, stop: asyncio.Event) -> None:
        will = Will(self.status_topic, self.status(b"offline"), qos=1, retain=True)
        drained = False
        while not stop.is_set():
            try:
                async with self.transport.session(will=will) as session:
                    self.session = session
                    await self.start(session)
                    self.backoff.reset()
                    self.connected.set()
                    await self._receive_until(stop, session)  # or the TransportError
                    await self.drain()
                    drained = True
                    offline = self.status(b"offline")
                    await session.publish(self.status_topic, offline, qos=1, retain=True)
                    log.info("stopped: queue drained, status offline (%s)", self.summary())
                    return
            except TransportError as exc:
                self.connected.clear()
                delay = self.backoff.next()
                self.counters["reconnects"] += 1
                attempt = self.backoff.attempt
                log.warning("broker unavailable (%s); attempt %d in %.2f s", exc, attempt, delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=delay)
            finally:
                self.connected.clear()
        if not drained:  # stopped while disconnected
            await self.drain()

    def send(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        """Hand one message to the client; QoS 1 delivery is the client's job from here
        (a persistent client queues it while disconnected, bounded). Counted, never
        raised: ``published``, or a publish failure by its reason."""
        session = self.session
        if session is None:
            self.publish_failed["not_connected"] += 1
            return
        try:
            session.publish_nowait(topic, payload, qos=qos, retain=retain)
            self.counters["published"] += 1
        except PublishError as exc:
            self.publish_failed[exc.code] += 1

    async def _receive_until(self, stop: asyncio.Event, session: Session) -> None:
        """Receive until ``stop`` is set; raise the TransportError if the connection is
        lost first."""
        receiving = asyncio.create_task(self._receive(session), name="receive")
        stopping = asyncio.create_task(stop.wait(), name="stop")
        try:
            await asyncio.wait({receiving, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            receiving.cancel()
            stopping.cancel()
            ended, _ = await asyncio.gather(receiving, stopping, return_exceptions=True)
        if isinstance(ended, TransportError) and not stop.is_set():
            raise ended

    async def _receive(self, session: Session) -> None:
        async for batch in session.batches():
            self.dispatch(batch)
