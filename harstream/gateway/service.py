"""The gateway service: device messages in over a transport, activities out.

It reads as a sentence: connect, say ``online``, subscribe, and for every message
received queue it; take what is queued as one batch, decode it and run the engine on it
off the event loop, then publish the decisions. Four named tasks run in one task group:

- ``connection``: (re)connects with capped, jittered exponential backoff, publishes the
  retained ``online`` status (the broker publishes the ``offline`` will if we vanish),
  subscribes, and moves received messages into a bounded queue (full: drop and count);
- ``batches``: a batch is everything queued when it wakes, plus whatever arrives within
  ``max_delay_ms``, up to ``max_batch`` messages; it decodes the batch and runs the
  engine's first stage (``Engine.prepare``: admission, filters, windows) in the
  *prepare* thread;
- ``decisions``: runs the engine's second stage (``Engine.complete``: inference,
  smoothing) in the *infer* thread and publishes the decisions. Inference releases the
  GIL, so batch k's inference overlaps batch k+1's decoding: two threads, one batch
  apart, each seeing the batches in order;
- ``stats``: publishes counters every ``stats_interval_s``.

Device state lives in the engine, so it survives a broker outage. A bad message is
counted by reason, reported on its device's error topic (rate-limited) and dropped.
On stop, the queue is drained, ``offline`` is published and the session closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from harstream.core.engine import Decision, Engine, Message, Prepared
from harstream.core.payload import (
    decode_imu,
    discovery_payload,
    encode,
    encode_activity,
    encode_error,
    encode_transition,
)
from harstream.errors import PayloadError
from harstream.gateway.transport import Session, Transport, TransportError, Will

__all__ = ["Backoff", "Gateway", "GatewaySettings"]

log = logging.getLogger("harstream.gateway")

_STOP = object()  # queue sentinel: everything before it is the last work to do
_ANNOUNCE = object()  # queue marker: Home Assistant restarted, announce every device


@dataclass(frozen=True)
class GatewaySettings:
    """Plain values from the config (``harstream.runtime.gateway_settings``), which holds
    the one set of defaults."""

    prefix: str
    qos_in: int
    qos_out: int
    retain_activity: bool
    max_batch: int
    max_delay_ms: float
    queue_size: int
    stats_interval_s: float
    error_interval_s: float
    max_payload_bytes: int
    max_samples_per_message: int
    rate_hz: float
    reconnect_min_s: float
    reconnect_max_s: float
    homeassistant: bool
    discovery_prefix: str
    model_name: str


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


@dataclass
class _Batch:
    """One batch on its way: prepared in the prepare thread, completed in the infer
    thread, published from the event loop."""

    prepared: Prepared = field(default_factory=Prepared)
    decisions: list[Decision] = field(default_factory=list)
    errors: list[tuple[str, str, str]] = field(default_factory=list)  # device, code, detail
    received: dict[str, float] = field(default_factory=dict)  # device -> first receipt
    new_devices: list[str] = field(default_factory=list)  # to announce to Home Assistant


class Gateway:
    def __init__(
        self,
        engine: Engine,
        transport: Transport,
        settings: GatewaySettings,
        *,
        wall_clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.engine = engine
        self.transport = transport
        self.settings = settings
        self.wall_clock = wall_clock
        self.monotonic = monotonic
        self.backoff = Backoff(settings.reconnect_min_s, settings.reconnect_max_s, rng)
        self.counters: Counter[str] = Counter()
        self.rejected: Counter[str] = Counter()
        self.connected = asyncio.Event()
        self.session: Session | None = None
        self._queue: asyncio.Queue[Any] = asyncio.Queue(settings.queue_size)
        self._prepared: asyncio.Queue[Any] = asyncio.Queue(2)  # batches between the stages
        self._prepare_thread = ThreadPoolExecutor(1, thread_name_prefix="harstream-prepare")
        self._infer_thread = ThreadPoolExecutor(1, thread_name_prefix="harstream-infer")
        self._latencies_ms: list[float] = []
        self._last_error: OrderedDict[str, float] = OrderedDict()
        self._engine_counters: dict[str, int] = {}
        self._batches_done = 0
        self._drained = asyncio.Event()
        prefix = settings.prefix
        self.status_topic = f"{prefix}/status"
        self.imu_filter = f"{prefix}/+/imu"
        self.ha_status_topic = f"{settings.discovery_prefix}/status"

    # --- the three tasks ------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set, then drain, say ``offline`` and return."""
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._connection(stop), name="connection")
                tasks.create_task(self._batches(), name="batches")
                tasks.create_task(self._decisions(), name="decisions")
                tasks.create_task(self._stats(stop), name="stats")
        finally:
            self._prepare_thread.shutdown(wait=False)
            self._infer_thread.shutdown(wait=False)

    async def _connection(self, stop: asyncio.Event) -> None:
        will = Will(self.status_topic, b"offline", qos=1, retain=True)
        try:
            while not stop.is_set():
                try:
                    async with self.transport.session(will=will) as session:
                        await self._start_session(session)
                        receiving = asyncio.create_task(self._receive(session), name="receive")
                        stopping = asyncio.create_task(stop.wait())
                        done, _ = await asyncio.wait(
                            {receiving, stopping}, return_when=asyncio.FIRST_COMPLETED
                        )
                        if receiving in done:
                            stopping.cancel()
                            receiving.result()  # raises the TransportError that ended it
                            continue
                        receiving.cancel()
                        await self._queue.put(_STOP)
                        await self._drained.wait()  # the last decisions go out first
                        await session.publish(self.status_topic, b"offline", qos=1, retain=True)
                        log.info("stopped: queue drained, status offline")
                        return
                except TransportError as exc:
                    self.session = None
                    self.connected.clear()
                    delay = self.backoff.next()
                    self.counters["reconnects"] += 1
                    log.warning(
                        "broker unavailable (%s); attempt %d in %.2f s",
                        exc,
                        self.backoff.attempt,
                        delay,
                    )
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), timeout=delay)
            await self._queue.put(_STOP)  # stopped while disconnected
            await self._drained.wait()
        finally:
            self.session = None
            self.connected.clear()

    async def _start_session(self, session: Session) -> None:
        await session.publish(self.status_topic, b"online", qos=1, retain=True)
        await session.subscribe(self.imu_filter, qos=self.settings.qos_in)
        if self.settings.homeassistant:
            await session.subscribe(self.ha_status_topic, qos=1)
        self.session = session
        self.backoff.reset()
        self.connected.set()
        log.info("connected; listening on %s", self.imu_filter)

    async def _receive(self, session: Session) -> None:
        start = len(self.settings.prefix) + 1
        async for message in session.messages():
            if message.topic == self.ha_status_topic:
                if message.payload == b"online":
                    await self._queue.put(_ANNOUNCE)  # the worker knows the devices
                continue
            self.counters["messages"] += 1
            item = (message.topic[start:-4], message.payload, self.wall_clock(), self.monotonic())
            try:
                self._queue.put_nowait(item)
            except asyncio.QueueFull:
                self.counters["dropped_overload"] += 1

    async def _batches(self) -> None:
        loop = asyncio.get_running_loop()
        delay_s = self.settings.max_delay_ms / 1000
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self.settings.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            deadline = self.monotonic() + delay_s
            while len(batch) < self.settings.max_batch and batch[-1] is not _STOP:
                left = deadline - self.monotonic()
                if left <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), left))
                except TimeoutError:
                    break
            done = batch[-1] is _STOP
            announce = any(item is _ANNOUNCE for item in batch)
            work = [item for item in batch if item is not _STOP and item is not _ANNOUNCE]
            try:
                # CPU-bound, so off the event loop: the connection keeps reading meanwhile
                result = await loop.run_in_executor(
                    self._prepare_thread, self._prepare, work, announce
                )
                await self._prepared.put(result)
            except Exception:  # a bug must not take every other device down with it
                self.counters["batch_errors"] += 1
                log.exception("batch of %d messages failed; dropped", len(work))
            if done:
                await self._prepared.put(_STOP)
                return

    async def _decisions(self) -> None:
        loop = asyncio.get_running_loop()
        while (batch := await self._prepared.get()) is not _STOP:
            try:
                batch.decisions = await loop.run_in_executor(
                    self._infer_thread, self.engine.complete, batch.prepared
                )
                self._engine_counters = dict(self.engine.counters)
                self._engine_counters["devices"] = len(self.engine.devices)
                self._publish(batch)
            except Exception:
                self.counters["batch_errors"] += 1
                log.exception("inference of a batch failed; its decisions are dropped")
        self._drained.set()

    async def _stats(self, stop: asyncio.Event) -> None:
        started = last_t = self.monotonic()
        last: Counter[str] = Counter()
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=self.settings.stats_interval_s)
                return
            except TimeoutError:
                pass
            now = self.monotonic()
            current = self.snapshot()
            interval = max(now - last_t, 1e-9)
            payload = {
                **current,
                "uptime_s": round(now - started, 1),
                "interval_s": round(interval, 2),
                **{
                    f"{k}_per_s": round((current[k] - last[k]) / interval, 1)
                    for k in ("messages", "samples", "decisions")
                },
                "latency_ms": self._latency_summary(),
            }
            last, last_t = (
                Counter({k: current[k] for k in ("messages", "samples", "decisions")}),
                now,
            )
            self._send(f"{self.settings.prefix}/stats", encode(payload), 0, False)

    # --- work -----------------------------------------------------------------------

    def _prepare(
        self, items: list[tuple[str, bytes, float, float]], announce_all: bool = False
    ) -> _Batch:
        """Decode one batch and run the engine's first stage, in the prepare thread. The
        engine needs no lock: its stages touch separate state (see Engine.prepare)."""
        result = _Batch()
        messages: list[Message] = []
        s = self.settings
        for device, payload, wall, mono in items:
            try:
                messages.append(
                    decode_imu(
                        device,
                        payload,
                        now=wall,
                        rate_hz=s.rate_hz,
                        max_samples=s.max_samples_per_message,
                        max_bytes=s.max_payload_bytes,
                    )
                )
                result.received.setdefault(device, mono)
            except PayloadError as exc:
                result.errors.append((device, exc.code, exc.detail))
        known = set(self.engine.devices) if s.homeassistant else set()
        result.prepared = self.engine.prepare(messages)
        result.errors.extend((e.device, e.code, e.detail) for e in result.prepared.events)
        if announce_all:
            result.new_devices = self.engine.devices
        elif s.homeassistant:
            now_known = set(self.engine.devices)
            result.new_devices = [
                d
                for d in dict.fromkeys(m.device for m in messages)
                if d not in known and d in now_known
            ]
        self._batches_done += 1
        if self._batches_done % 64 == 0:
            self.engine.evict_idle(self.wall_clock())
        return result

    def _publish(self, batch: _Batch) -> None:
        s = self.settings
        if batch.new_devices:
            self._announce(batch.new_devices)
        for d in batch.decisions:
            topic = f"{s.prefix}/{d.device}"
            self._send(
                f"{topic}/activity", encode_activity(d, s.model_name), s.qos_out, s.retain_activity
            )
            if d.changed:
                self._send(f"{topic}/transition", encode_transition(d), s.qos_out, False)
        now = self.monotonic()
        for d in batch.decisions:
            if d.device in batch.received:
                self._latencies_ms.append((now - batch.received[d.device]) * 1000)
        del self._latencies_ms[:-100_000]  # bounded: the newest 100k per interval
        for device, code, detail in batch.errors:
            self.rejected[code] += 1
            if self._may_report(device, now):
                self._send(f"{s.prefix}/{device}/error", encode_error(code, detail), 0, False)

    def _may_report(self, device: str, now: float) -> bool:
        """At most one error report per device per ``error_interval_s`` (bounded memory)."""
        last = self._last_error.get(device)
        if last is not None and now - last < self.settings.error_interval_s:
            self.counters["errors_suppressed"] += 1
            return False
        self._last_error[device] = now
        self._last_error.move_to_end(device)
        while len(self._last_error) > 10_000:
            self._last_error.popitem(last=False)
        return True

    def _announce(self, devices: list[str]) -> None:
        s = self.settings
        for d in devices:
            self._send(
                f"{s.discovery_prefix}/sensor/harstream_{d}/activity/config",
                discovery_payload(d, s.prefix, s.model_name),
                1,
                True,
            )

    def _send(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        """Hand one message to the client (QoS 1 delivery is the client's job from here);
        while disconnected, count it as failed: a decision is not worth holding."""
        session = self.session
        if session is None:
            self.counters["publish_failed"] += 1
            return
        try:
            session.publish_nowait(topic, payload, qos=qos, retain=retain)
            self.counters["published"] += 1
        except TransportError:
            self.counters["publish_failed"] += 1

    # --- numbers --------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        engine = self._engine_counters
        return {
            "devices": engine.get("devices", 0),
            "messages": self.counters["messages"],
            "samples": engine.get("samples", 0),
            "decisions": engine.get("decisions", 0),
            "rejected": dict(self.rejected),
            "dropped": {
                "overload": self.counters["dropped_overload"],
                "seq_old": engine.get("dropped_seq_old", 0),
                "too_many_devices": engine.get("rejected_too_many_devices", 0),
            },
            "resets": engine.get("resets", 0),
            "evicted": engine.get("evicted", 0),
            "published": self.counters["published"],
            "publish_failed": self.counters["publish_failed"],
            "reconnects": self.counters["reconnects"],
            "queue": self._queue.qsize(),
        }

    def _latency_summary(self) -> dict[str, float | int | None]:
        values, self._latencies_ms = self._latencies_ms, []
        if not values:
            return {"count": 0, "p50": None, "p99": None, "max": None}
        arr = np.array(values)
        return {
            "count": len(values),
            "p50": round(float(np.percentile(arr, 50)), 3),
            "p99": round(float(np.percentile(arr, 99)), 3),
            "max": round(float(arr.max()), 3),
        }
