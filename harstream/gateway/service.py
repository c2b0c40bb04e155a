"""The gateway: a transport and the pipeline, wired on the event loop.

It reads as a sentence: connect, say ``online``, subscribe, route every message the
connection brings (:mod:`harstream.gateway.routes`: parsed once, here) and put the
devices' messages into the pipeline's inbox; publish what the pipeline hands back. Two
named tasks run in one task group: ``connection`` (:mod:`harstream.gateway.connection`:
reconnects with backoff; the broker publishes the ``offline`` will if we vanish) and
``stats`` (:mod:`harstream.gateway.numbers`: counters every ``stats_interval_s``).

Commands (``{prefix}/control``, and SIGHUP for a reload) are carried out by
:mod:`harstream.gateway.control`; a worker's coordination with the other workers
(probe, announcements, takeover) by :mod:`harstream.gateway.workers`.

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
import logging
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from harstream.core.engine import Engine
from harstream.errors import HarstreamError, StageError
from harstream.gateway.connection import Backoff, Connection
from harstream.gateway.control import Control, parse_command
from harstream.gateway.dashboard import Dashboard, DashboardSettings
from harstream.gateway.http import HttpIngest, HttpSettings
from harstream.gateway.numbers import Numbers
from harstream.gateway.pipeline import Arrival, Output, Pipeline, PipelineSettings
from harstream.gateway.recorder import Recorder, RecorderSettings
from harstream.gateway.routes import CONTROL, HA_STATUS, PIPELINE_KINDS, WORKER, Route, Topics
from harstream.gateway.scale import ScaleSettings
from harstream.gateway.transport import Incoming, Session, Transport
from harstream.gateway.workers import Workers

__all__ = ["Gateway", "GatewaySettings"]

log = logging.getLogger("harstream.gateway")

HEALTH_GRACE_S = 1.0  # after a stage died, /healthz answers 503 this long before exiting


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
    scale: ScaleSettings | None = None  # worker mode: the devices of some partitions only
    probe_s: float = 5.0  # worker mode: how long the start-up probe waits


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
        self.transport = transport
        self.settings = settings
        self.wall_clock = wall_clock
        self.monotonic = monotonic
        self.counters: Counter[str] = Counter()  # the event loop's own (Numbers reads them)
        self.publish_failed: Counter[str] = Counter()  # by PublishError code
        self.recorder = (
            Recorder(settings.recording, engine.labels, monotonic=monotonic)
            if settings.recording is not None
            else None
        )
        prefix = settings.pipeline.prefix
        self.workers = (
            Workers(
                settings.scale,
                prefix,
                settings.pipeline.ingest.sensor_logger_topic,
                qos_in=settings.qos_in,
                probe_s=settings.probe_s,
                send=self._send,
                monotonic=monotonic,
            )
            if settings.scale is not None
            else None
        )
        coordination = self.workers  # each worker has its own status, beside its partitions
        self.router = coordination.router if coordination is not None else None
        self.status_topic = coordination.status_topic if coordination else f"{prefix}/status"
        self.connection = Connection(
            transport,
            Backoff(settings.reconnect_min_s, settings.reconnect_max_s, rng),
            self.status_topic,
            self._status,
            start=self._start_session,
            dispatch=self._dispatch,
            drain=self._drain,
            summary=self._summary,
            counters=self.counters,
            publish_failed=self.publish_failed,
        )
        self.connected = self.connection.connected
        pipeline = settings.pipeline
        self.topics = Topics(
            prefix,
            pipeline.ingest.sensor_logger_topic,
            discovery_prefix=pipeline.discovery_prefix if pipeline.homeassistant else None,
            router=self.router,
        )
        self._halt: asyncio.Event | None = None  # set to stop: by `stop`, or a dead stage
        self.pipeline = Pipeline(
            engine,
            settings.pipeline,
            self._deliver,
            on_failure=self._stage_died,
            recorder=self.recorder,
            wall_clock=wall_clock,
            monotonic=monotonic,
        )
        self.numbers = Numbers(
            self.pipeline,
            http=lambda: dict(self.http.counters) if self.http is not None else {},
            model=lambda: dict(self.control.model),
            scale=lambda: self.workers.numbers() if self.workers is not None else None,
            recording=lambda: self.recorder.status() if self.recorder is not None else None,
            counters=self.counters,
            publish_failed=self.publish_failed,
            monotonic=monotonic,
        )
        self.dashboard = None
        if settings.http is not None and settings.dashboard is not None:
            self.dashboard = Dashboard(
                settings.dashboard,
                self.numbers.live,
                self.connected.is_set,
                engine.labels,
                health=self.health,
                # the source of a device's vertical in the engine in force at each call
                calibration=lambda device: self.engine.sources.get(device),  # noqa: PLW0108
            )
        self.control = Control(
            engine,
            settings.pipeline,
            self.pipeline,
            self._send,
            recorder=self.recorder,
            forget_history=self.dashboard.history.forget if self.dashboard is not None else None,
            load_engine=load_engine,
            wall_clock=wall_clock,
        )
        # a worker forwards what comes over HTTP through the broker, to the device's owner
        take = self.accept if self.workers is None else self.workers.forward
        self.http = HttpIngest(settings.http, take, self.dashboard) if settings.http else None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def engine(self) -> Engine:
        """The engine in force (a reload replaces it)."""
        return self.control.engine

    @property
    def model(self) -> dict[str, Any]:
        """The model in force, its swaps and the last reload's error."""
        return self.control.model

    def request_reload(self) -> None:
        """Load ``model.path`` again and swap it in (SIGHUP, or the control topic)."""
        self.control.request_reload()

    # --- the tasks -------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set, then drain, say ``offline`` and return."""
        self._loop = asyncio.get_running_loop()
        halt = self._halt = asyncio.Event()  # `stop`, or a stage that died
        if self.recorder is not None:
            self.recorder.start()
        self.pipeline.start()
        if self.http is not None:
            await self.http.start()
        try:
            async with asyncio.TaskGroup() as tasks:
                follow = tasks.create_task(self._follow(stop, halt), name="stop")
                tasks.create_task(self.connection.run(halt), name="connection")
                stats = f"{self.settings.pipeline.prefix}/stats"
                interval = self.settings.stats_interval_s
                numbers = self.numbers.publish(halt, interval, stats, self._send)
                tasks.create_task(numbers, name="stats")
                if self.workers is not None:
                    beat = self.workers.heartbeat(halt, self.connected)
                    tasks.create_task(beat, name="heartbeat")
                await halt.wait()
                follow.cancel()
        except ExceptionGroup as group:  # a start that cannot work (a worker's probe)
            errors = [e for e in group.exceptions if isinstance(e, HarstreamError)]
            if errors:
                raise errors[0] from None
            raise
        finally:
            if self.http is not None:
                if self.pipeline.failed is not None:  # a probe gets to see the 503 and why
                    await asyncio.sleep(HEALTH_GRACE_S)
                await self.http.stop()
            self.pipeline.stop()  # idempotent: after a crash too, the threads end
            if self.recorder is not None:
                await asyncio.to_thread(self.pipeline.join)
                await asyncio.to_thread(self.recorder.stop)
        if self.pipeline.failed is not None:  # offline is said: now the supervisor's turn
            raise StageError(f"{self.pipeline.failed} (see the log); exiting to be restarted")

    @staticmethod
    async def _follow(stop: asyncio.Event, halt: asyncio.Event) -> None:
        await stop.wait()
        halt.set()

    def _stage_died(self) -> None:
        """Called in the dying stage's thread: stop the gateway (``offline``, exit)."""
        loop, halt = self._loop, self._halt
        if loop is not None and halt is not None:
            loop.call_soon_threadsafe(halt.set)

    def health(self) -> tuple[bool, dict[str, Any]]:
        """/healthz: connected to the broker, both stages alive, and batches completing
        while messages wait (``stalled_s`` under ``pipeline.STALL_S``)."""
        progress = self.pipeline.progress()
        connected = self.connected.is_set()
        ok = connected and bool(progress.pop("ok"))
        status = "ok" if ok else "failed" if progress["failed"] else "disconnected"
        if connected and not progress["failed"] and not ok:
            status = "stalled"
        return ok, {"status": status, "connected": connected, **progress}

    async def _start_session(self, session: Session) -> None:
        calibrate = self.engine.preprocessor.aligned  # the model takes calibrations
        if self.workers is not None:
            await self.workers.start(session, calibrate, self.recorder is not None, self._dispatch)
        else:
            label = self.recorder is not None
            for topic, qos in self.topics.filters(calibrate, label, self.settings.qos_in):
                await session.subscribe(topic, qos=qos)
        await session.subscribe(self.topics.control, qos=1)
        if self.topics.ha_status is not None:
            await session.subscribe(self.topics.ha_status, qos=1)
        # online once subscribed: a device that waits for it loses nothing, even the
        # first time (a new session holds nothing for the gateway before it subscribes)
        await session.publish(self.status_topic, self._status(b"online"), qos=1, retain=True)
        if self.workers is None:
            log.info("connected; listening on %s/+/imu", self.topics.prefix)

    def _dispatch(self, batch: list[Incoming]) -> None:
        """Each message routed (parsed once, here): the devices' messages to the
        pipeline, the rest handled here."""
        route_of, rest = self.topics.route, []
        for message in batch:
            route = route_of(message)
            if route is None:
                continue
            if route.kind in PIPELINE_KINDS:
                rest.append(route)
            else:
                self._handle(route)
        if rest:
            self.accept(rest)

    def _handle(self, route: Route) -> None:
        """A command, Home Assistant's status or a worker's news; each one's fault stays
        its own (counted, logged once)."""
        if route.kind == CONTROL:
            try:
                self.control.handle(parse_command(route.payload))
            except Exception as exc:
                self.pipeline.faults.caught("control", route.topic, exc)
                self.control.result("unknown", False, f"internal error: {exc!r}"[:200])
        elif route.kind == HA_STATUS:
            if route.payload == b"online":
                self.pipeline.announce()  # the pipeline knows the devices
        elif route.kind == WORKER and self.workers is not None:
            try:
                self.workers.news(route.detail, route.payload, route.retained)
            except Exception as exc:
                self.pipeline.faults.caught("worker", route.topic, exc)

    def accept(self, batch: list[Route]) -> int:
        """Messages into the pipeline (from MQTT or HTTP); returns how many were dropped
        because its inbox is full (counted)."""
        self.counters["messages"] += len(batch)
        dropped = self.pipeline.inbox.put(Arrival(batch, self.wall_clock(), self.monotonic()))
        self.counters["dropped_overload"] += dropped
        return dropped

    def _status(self, state: bytes) -> bytes:
        """``online|offline INSTANCE`` for a worker (scale.WorkerBook), the bare state else."""
        return state if self.workers is None else self.workers.status(state)

    def _summary(self) -> str:
        stats = self.pipeline.prepare_stats
        return f"{stats.messages} messages in {stats.batches} batches"

    async def _drain(self) -> None:
        """Let the pipeline finish what is queued; its last outputs are published before
        this returns (they reach the loop before the thread ends)."""
        self.pipeline.stop()
        await asyncio.to_thread(self.pipeline.join)

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
            self.numbers.decided(output.decided_from)

    def _send(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        self.connection.send(topic, payload, qos, retain)

    # --- numbers ---------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """The stats payload's counters (:class:`~harstream.gateway.numbers.Numbers`)."""
        return self.numbers.snapshot()
