"""The gateway: a transport and the pipeline, wired on the event loop.

It reads as a sentence: connect, say ``online``, subscribe, and put every batch the
connection brings into the pipeline's inbox; publish what the pipeline hands back. Two
named tasks run in one task group:

- ``connection``: (re)connects with capped, jittered exponential backoff, publishes the
  retained ``online`` status (the broker publishes the ``offline`` will if we vanish),
  subscribes, and moves received batches into the inbox (full: drop and count);
- ``stats``: publishes counters every ``stats_interval_s``.

Control (``{prefix}/control``, and SIGHUP for a reload): ``{"command": "reload"}`` loads
``model.path`` again (off the loop) and swaps it in without a restart: every device's
stream restarts on the new model (one window of warm-up; calibrations kept), stats name
the model in force; a bundle that fails to load, or names other activities, leaves the
old one serving. ``{"command": "forget", "device": D}`` erases a device's recordings.
Each command's result goes to ``{prefix}/control/result``.

The pipeline (:mod:`harstream.gateway.pipeline`) runs in its own two threads; each
batch's output comes back with one ``call_soon_threadsafe`` and is handed to the client
here, on the loop, where all MQTT work happens. Device state lives in the engine, so it
survives a broker outage; the session is persistent, so the broker keeps what devices
send while we reconnect, and QoS 1 decisions handed to the client before a loss go out
after it. On stop, the inbox is drained, the last decisions published, ``offline``
published and the session closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from harstream.core.engine import Engine
from harstream.core.payload import encode, valid_device_id
from harstream.errors import HarstreamError, PublishError
from harstream.gateway.dashboard import Dashboard, DashboardSettings
from harstream.gateway.http import HttpIngest, HttpSettings
from harstream.gateway.pipeline import Arrival, Output, Pipeline, PipelineSettings
from harstream.gateway.recorder import Recorder, RecorderSettings
from harstream.gateway.transport import Incoming, Session, Transport, TransportError, Will

__all__ = ["Backoff", "Gateway", "GatewaySettings"]

log = logging.getLogger("harstream.gateway")


@dataclass(frozen=True)
class GatewaySettings:
    """Plain values from the config (``harstream.runtime.gateway_settings``), which holds
    the one set of defaults."""

    pipeline: PipelineSettings
    qos_in: int
    stats_interval_s: float
    reconnect_min_s: float
    reconnect_max_s: float
    http: HttpSettings | None = None  # the HTTP server (ingest), when a port is set
    dashboard: DashboardSettings | None = None  # the live page, on the HTTP server
    recording: RecorderSettings | None = None  # what devices send, kept on disk


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


class Gateway:
    def __init__(
        self,
        engine: Engine,
        transport: Transport,
        settings: GatewaySettings,
        *,
        load_engine: Callable[[], tuple[Engine, str]] | None = None,
        wall_clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.engine = engine
        self.load_engine = load_engine  # (engine, model name) for a reload
        self.transport = transport
        self.settings = settings
        self.wall_clock = wall_clock
        self.monotonic = monotonic
        self.backoff = Backoff(settings.reconnect_min_s, settings.reconnect_max_s, rng)
        self.counters: Counter[str] = Counter()  # the event loop's own
        self.publish_failed: Counter[str] = Counter()  # by PublishError code
        self.connected = asyncio.Event()
        self.recorder = (
            Recorder(settings.recording, engine.labels, monotonic=monotonic)
            if settings.recording is not None
            else None
        )
        self.pipeline = Pipeline(
            engine,
            settings.pipeline,
            self._deliver,
            recorder=self.recorder,
            wall_clock=wall_clock,
            monotonic=monotonic,
        )
        self.model: dict[str, Any] = {
            "name": settings.pipeline.model_name,
            "swaps": 0,
            "error": None,
        }
        self._reloading: asyncio.Task[None] | None = None
        self.dashboard = None
        if settings.http is not None and settings.dashboard is not None:
            self.dashboard = Dashboard(
                settings.dashboard, self.live_numbers, self.connected.is_set, engine.labels
            )
        self.http = (
            HttpIngest(settings.http, self.accept, self.dashboard) if settings.http else None
        )
        self.last_stats: dict[str, Any] = {}  # rates and latency of the last interval
        self._loop: asyncio.AbstractEventLoop | None = None
        self._session: Session | None = None  # the latest: QoS 1 still queues on it offline
        self._latencies_ms: list[float] = []
        prefix = settings.pipeline.prefix
        self.status_topic = f"{prefix}/status"
        self.imu_filter = f"{prefix}/+/imu"
        self.calibrate_filter = f"{prefix}/+/calibrate"
        self.label_filter = f"{prefix}/+/label"
        self.control_topic = f"{prefix}/control"
        self.ha_status_topic = f"{settings.pipeline.discovery_prefix}/status"

    # --- the tasks -------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set, then drain, say ``offline`` and return."""
        self._loop = asyncio.get_running_loop()
        if self.recorder is not None:
            self.recorder.start()
        self.pipeline.start()
        if self.http is not None:
            await self.http.start()
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._connection(stop), name="connection")
                tasks.create_task(self._stats(stop), name="stats")
        finally:
            if self.http is not None:
                await self.http.stop()
            self.pipeline.stop()  # idempotent: after a crash too, the threads end
            if self.recorder is not None:
                await asyncio.to_thread(self.pipeline.join)
                await asyncio.to_thread(self.recorder.stop)

    async def _connection(self, stop: asyncio.Event) -> None:
        will = Will(self.status_topic, b"offline", qos=1, retain=True)
        drained = False
        while not stop.is_set():
            try:
                async with self.transport.session(will=will) as session:
                    self._session = session
                    await self._start_session(session)
                    await self._receive_until(stop, session)  # or the TransportError
                    await self._drain()
                    drained = True
                    await session.publish(self.status_topic, b"offline", qos=1, retain=True)
                    stats = self.pipeline.prepare_stats
                    log.info(
                        "stopped: queue drained, status offline (%d messages in %d batches)",
                        stats.messages,
                        stats.batches,
                    )
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
            await self._drain()

    async def _start_session(self, session: Session) -> None:
        await session.publish(self.status_topic, b"online", qos=1, retain=True)
        await session.subscribe(self.imu_filter, qos=self.settings.qos_in)
        sensor_logger = self.settings.pipeline.ingest.sensor_logger_topic
        if sensor_logger:  # the app's topic, and one level more: a topic per phone
            await session.subscribe(sensor_logger, qos=self.settings.qos_in)
            await session.subscribe(f"{sensor_logger}/+", qos=self.settings.qos_in)
        if self.engine.preprocessor.aligned:  # the model takes calibrations
            await session.subscribe(self.calibrate_filter, qos=1)
        if self.recorder is not None:
            await session.subscribe(self.label_filter, qos=1)
        await session.subscribe(self.control_topic, qos=1)
        if self.settings.pipeline.homeassistant:
            await session.subscribe(self.ha_status_topic, qos=1)
        self.backoff.reset()
        self.connected.set()
        log.info("connected; listening on %s", self.imu_filter)

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
        inbox = self.pipeline.inbox
        ha_status = self.ha_status_topic if self.settings.pipeline.homeassistant else None
        async for batch in session.batches():
            for message in [m for m in batch if m.topic == self.control_topic]:
                batch.remove(message)
                self._control(message.payload)
            if ha_status is not None:
                for message in [m for m in batch if m.topic == ha_status]:
                    batch.remove(message)
                    if message.payload == b"online":
                        inbox.request_announce()  # the pipeline knows the devices
                if not batch:
                    continue
            self.accept(batch)

    def accept(self, batch: list[Incoming]) -> int:
        """Messages into the pipeline (from MQTT or HTTP); returns how many were dropped
        because its inbox is full (counted)."""
        self.counters["messages"] += len(batch)
        dropped = self.pipeline.inbox.put(Arrival(batch, self.wall_clock(), self.monotonic()))
        self.counters["dropped_overload"] += dropped
        return dropped

    # --- control ---------------------------------------------------------------------

    def _control(self, payload: bytes) -> None:
        """A command on ``{prefix}/control``; its result on ``{prefix}/control/result``."""
        try:
            body = json.loads(payload)
            command = body.get("command") if isinstance(body, dict) else None
        except ValueError:
            command = None
        if command == "reload" and set(body) == {"command"}:
            self.request_reload()
        elif command == "forget" and set(body) == {"command", "device"}:
            device = body["device"]
            if self.recorder is None or not isinstance(device, str) or not valid_device_id(device):
                self._result("forget", False, "no recording here, or not a device id")
                return
            if self.recorder.forget(device):
                self._result("forget", True, f"{device}: recordings erased")
            else:
                self._result("forget", False, "the recorder is busy: try again")
        else:
            usage = 'send {"command": "reload"} or {"command": "forget", "device": D}'
            self._result(str(command), False, usage)

    def request_reload(self) -> None:
        """Load ``model.path`` again and swap it in (SIGHUP, or the control topic)."""
        if self._reloading is not None and not self._reloading.done():
            self._result("reload", False, "a reload is already under way")
            return
        self._reloading = asyncio.get_running_loop().create_task(self._reload(), name="reload")

    async def _reload(self) -> None:
        if self.load_engine is None:
            self._result("reload", False, "this gateway cannot reload its model")
            return
        try:  # loading a bundle reads files and builds an onnxruntime session: off the loop
            engine, name = await asyncio.to_thread(self.load_engine)
        except HarstreamError as exc:
            self.model["error"] = str(exc)
            log.error("reload failed, still serving %s: %s", self.model["name"], exc)
            self._result("reload", False, f"still serving {self.model['name']}: {exc}")
            return
        if engine.labels != self.engine.labels:
            detail = f"{name} names other activities ({', '.join(engine.labels)}): refused"
            self.model["error"] = detail
            self._result("reload", False, detail)
            return
        loop = asyncio.get_running_loop()
        swapped = loop.create_future()

        def done() -> None:  # called in the infer thread
            loop.call_soon_threadsafe(swapped.set_result, None)

        self.pipeline.swap(engine, name, done)
        await swapped
        self.engine = engine
        self.model = {"name": name, "swaps": self.model["swaps"] + 1, "error": None}
        log.info("now serving %s; every device's stream restarts on it", name)
        self._result("reload", True, f"now serving {name}")

    def _result(self, command: str, ok: bool, detail: str) -> None:
        body = {"command": command, "ok": ok, "detail": detail, "t": round(self.wall_clock(), 3)}
        self._send(f"{self.control_topic}/result", encode(body), 1, False)

    async def _drain(self) -> None:
        """Let the pipeline finish what is queued; its last outputs are published before
        this returns (they reach the loop before the thread ends)."""
        self.pipeline.stop()
        await asyncio.to_thread(self.pipeline.join)

    async def _stats(self, stop: asyncio.Event) -> None:
        started = last_t = self.monotonic()
        last: dict[str, int] = {}
        rates = ("messages", "samples", "decisions")
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.settings.stats_interval_s)
                return
            now = self.monotonic()
            current = self.snapshot()
            interval = max(now - last_t, 1e-9)
            payload = {
                **current,
                "uptime_s": round(now - started, 1),
                "interval_s": round(interval, 2),
                **{f"{k}_per_s": round((current[k] - last.get(k, 0)) / interval, 1) for k in rates},
                "latency_ms": self._latency_summary(),
            }
            last, last_t = {k: current[k] for k in rates}, now
            self.last_stats = payload
            self._send(f"{self.settings.pipeline.prefix}/stats", encode(payload), 0, False)

    # --- output ----------------------------------------------------------------------

    def _deliver(self, output: Output) -> None:
        """Called in the infer thread: hand the batch's output to the loop, once."""
        loop = self._loop
        assert loop is not None
        loop.call_soon_threadsafe(self._publish, output)

    def _publish(self, output: Output) -> None:
        for m in output.messages:
            self._send(m.topic, m.payload, m.qos, m.retain)
        if self.dashboard is not None:
            self.dashboard.update(output.decided, output.error_devices)
        if output.decided_from:
            now = self.monotonic()
            self._latencies_ms.extend((now - t) * 1000 for t in output.decided_from)
            del self._latencies_ms[:-100_000]  # bounded: the newest 100k per interval

    def _send(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        """Hand one message to the client; QoS 1 delivery is the client's job from here
        (a persistent client queues it while disconnected, bounded)."""
        session = self._session
        if session is None:
            self.publish_failed["not_connected"] += 1
            return
        try:
            session.publish_nowait(topic, payload, qos=qos, retain=retain)
            self.counters["published"] += 1
        except PublishError as exc:
            self.publish_failed[exc.code] += 1

    # --- numbers ---------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """The stats payload's counters, from each owner's latest numbers."""
        prepare, infer = self.pipeline.prepare_stats, self.pipeline.infer_stats
        return {
            "devices": prepare.devices,
            "messages": self.counters["messages"],
            "samples": prepare.samples,
            "decisions": infer.decisions,
            "rejected": prepare.rejected,
            "dropped": {
                "overload": self.counters["dropped_overload"],
                "seq_old": prepare.dropped_seq_old,
                "too_many_devices": prepare.dropped_too_many_devices,
            },
            "resets": prepare.resets,
            "evicted": prepare.evicted,
            "errors_suppressed": infer.errors_suppressed,
            "batches": prepare.batches,
            "batch_errors": infer.batch_errors,
            "published": self.counters["published"],
            "publish_failed": sum(self.publish_failed.values()),
            "publish_failed_by_reason": dict(self.publish_failed),
            "reconnects": self.counters["reconnects"],
            "queue": len(self.pipeline.inbox),
            "field_devices": {
                "streams": prepare.streams,
                "late_readings": prepare.late_readings,
                "lost_messages": prepare.lost_messages,
                "restarts": prepare.stream_restarts,
            },
            "http": dict(self.http.counters) if self.http is not None else {},
            "model": dict(self.model),
            "recording": self.recorder.status() if self.recorder is not None else None,
        }

    def live_numbers(self) -> dict[str, Any]:
        """The counters now, with the last stats interval's rates and latency."""
        last = self.last_stats
        keys = ("messages_per_s", "samples_per_s", "decisions_per_s", "latency_ms")
        return {**self.snapshot(), **{k: last[k] for k in keys if k in last}}

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
