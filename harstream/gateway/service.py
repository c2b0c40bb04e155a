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
import logging
import random
import secrets
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from harstream.core.engine import Engine
from harstream.core.partitions import coverage, format_owned, partition_of
from harstream.core.payload import encode, valid_device_id
from harstream.errors import ConfigError, HarstreamError, PublishError, StageError
from harstream.gateway.dashboard import Dashboard, DashboardSettings
from harstream.gateway.http import HttpIngest, HttpSettings
from harstream.gateway.pipeline import Arrival, Output, Pipeline, PipelineSettings
from harstream.gateway.recorder import Recorder, RecorderSettings
from harstream.gateway.scale import (
    PROBE_PREFIX,
    Router,
    ScaleSettings,
    WorkerBook,
    takeover_share,
)
from harstream.gateway.transport import Incoming, Session, Transport, TransportError, Will

__all__ = ["Backoff", "Gateway", "GatewaySettings"]

log = logging.getLogger("harstream.gateway")

PROBES = 8  # start-up probe devices of a worker
COVERAGE_GRACE_S = 5.0  # a new worker waits this long for the others' announcements
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
        prefix = settings.pipeline.prefix
        self.router = (
            Router(settings.scale, prefix, settings.pipeline.ingest.sensor_logger_topic)
            if settings.scale is not None
            else None
        )
        self._halt: asyncio.Event | None = None  # set to stop: by `stop`, or a dead stage
        self.pipeline = Pipeline(
            engine,
            settings.pipeline,
            self._deliver,
            on_failure=self._stage_died,
            recorder=self.recorder,
            router=self.router,
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
                settings.dashboard,
                self.live_numbers,
                self.connected.is_set,
                engine.labels,
                health=self.health,
                calibration=self._calibration_source,
            )
        # a worker forwards what comes over HTTP through the broker, to the device's owner
        take = self.accept if self.router is None else self._forward
        self.http = HttpIngest(settings.http, take, self.dashboard) if settings.http else None
        self.last_stats: dict[str, Any] = {}  # rates and latency of the last interval
        self._loop: asyncio.AbstractEventLoop | None = None
        self._session: Session | None = None  # the latest: QoS 1 still queues on it offline
        self._latencies_ms: list[float] = []
        self.status_topic = f"{prefix}/status"
        self.workers_topic = f"{prefix}/workers"
        self.workers: dict[str, frozenset[int]] = {}  # live workers' partitions (worker mode)
        # a worker's status and announcement name its instance, new at each start: its
        # will counts for it, no earlier start's will, no other client's `offline`
        self.instance = secrets.token_hex(8)
        self.book: WorkerBook | None = None
        self._rebalancing = asyncio.Lock()
        self._coverage: dict[str, str] | None = None  # what was last logged
        self._coverage_from = 0.0  # monotonic: when a worker first judges the coverage
        if settings.scale is not None:  # each worker its own status, beside its partitions
            self.status_topic = f"{self.workers_topic}/{settings.scale.worker}/status"
            self.book = WorkerBook(settings.scale.worker, self.instance, settings.scale.partitions)
        self.imu_filter = f"{prefix}/+/imu"
        self.calibrate_filter = f"{prefix}/+/calibrate"
        self.label_filter = f"{prefix}/+/label"
        self.control_topic = f"{prefix}/control"
        self.ha_status_topic = f"{settings.pipeline.discovery_prefix}/status"

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
                tasks.create_task(self._connection(halt), name="connection")
                tasks.create_task(self._stats(halt), name="stats")
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

    async def _connection(self, stop: asyncio.Event) -> None:
        will = Will(self.status_topic, self._status(b"offline"), qos=1, retain=True)
        drained = False
        while not stop.is_set():
            try:
                async with self.transport.session(will=will) as session:
                    self._session = session
                    await self._start_session(session)
                    await self._receive_until(stop, session)  # or the TransportError
                    await self._drain()
                    drained = True
                    await session.publish(
                        self.status_topic, self._status(b"offline"), qos=1, retain=True
                    )
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
        calibrate = self.engine.preprocessor.aligned  # the model takes calibrations
        if self.router is not None:
            await self._start_worker(session, calibrate)
        else:
            await session.subscribe(self.imu_filter, qos=self.settings.qos_in)
            sensor_logger = self.settings.pipeline.ingest.sensor_logger_topic
            if sensor_logger:  # the app's topic, and one level more: a topic per phone
                await session.subscribe(sensor_logger, qos=self.settings.qos_in)
                await session.subscribe(f"{sensor_logger}/+", qos=self.settings.qos_in)
            if calibrate:
                await session.subscribe(self.calibrate_filter, qos=1)
            if self.recorder is not None:
                await session.subscribe(self.label_filter, qos=1)
        await session.subscribe(self.control_topic, qos=1)
        if self.settings.pipeline.homeassistant:
            await session.subscribe(self.ha_status_topic, qos=1)
        # online once subscribed: a device that waits for it loses nothing, even the
        # first time (a new session holds nothing for the gateway before it subscribes)
        await session.publish(self.status_topic, self._status(b"online"), qos=1, retain=True)
        self.backoff.reset()
        self.connected.set()
        if self.router is None:
            log.info("connected; listening on %s", self.imu_filter)

    async def _start_worker(self, session: Session, calibrate: bool) -> None:
        """Worker mode: subscribe to the owned partitions, check the broker's P with a
        probe, announce the partitions (retained) and follow the other workers'."""
        router, scale = self.router, self.settings.scale
        assert router is not None and scale is not None
        for topic in router.filters(calibrate, self.recorder is not None):
            await session.subscribe(topic, qos=self.settings.qos_in)
        await self._probe(session, router, scale)
        announcement = self._announcement()
        await session.publish(
            f"{self.workers_topic}/{scale.worker}", encode(announcement), qos=1, retain=True
        )
        self._coverage_from = self.monotonic() + COVERAGE_GRACE_S
        asyncio.get_running_loop().call_later(COVERAGE_GRACE_S + 0.1, self._check_coverage)
        await session.subscribe(f"{self.workers_topic}/#", qos=1)
        log.info(
            "worker %s: partitions %s of %d", scale.worker, announcement["owned"], scale.partitions
        )

    async def _probe(self, session: Session, router: Router, scale: ScaleSettings) -> None:
        """Publish messages of probe devices and see where the broker puts them: no
        mapping, or partitions that say the broker's P differs, fail the start. Eight
        probes: a P and another can agree on one device (8 and 16 do on half of them),
        not on eight but by a chance of 1 in 256; a device message the broker put on
        a partition this P would not is also counted and logged while serving."""
        prefix = self.settings.pipeline.prefix
        probes = {f"{PROBE_PREFIX}{scale.worker[:40]}-{k}": -1 for k in range(PROBES)}
        for probe in probes:
            await session.subscribe(f"{prefix}/imu/+/{probe}", qos=1)
        for probe in probes:
            await session.publish(f"{prefix}/{probe}/imu", b"", qos=1, retain=False)
        early = await self._await_probes(session, prefix, probes)
        if early:
            self._dispatch(early)
        log.debug("probes on partitions %s", probes)
        self._check_probes(prefix, probes, scale)

    async def _await_probes(
        self, session: Session, prefix: str, probes: dict[str, int]
    ) -> list[Incoming]:
        """Note each probe's partition in ``probes`` as it comes, for ``probe_s`` at most;
        return the devices' messages that came meanwhile."""
        early: list[Incoming] = []
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.settings.probe_s):
                async for batch in session.batches():
                    for m in batch:
                        parts = m.topic.split("/")
                        if m.topic.startswith(prefix + "/imu/") and parts[-1] in probes:
                            probes[parts[-1]] = int(parts[-2])
                        elif not parts[-1].startswith(PROBE_PREFIX):
                            early.append(m)  # devices' messages: not lost, served once probed
                    if min(probes.values()) >= 0:
                        break
        return early

    def _check_probes(self, prefix: str, probes: dict[str, int], scale: ScaleSettings) -> None:
        """ConfigError when no probe came, or one came on a partition this P would not
        put it on."""
        if max(probes.values()) < 0:
            raise ConfigError(
                f"scale.partitions: the broker does not partition {prefix}/DEVICE/imu "
                f"(nothing on {prefix}/imu/P/DEVICE within {self.settings.probe_s:g} s): "
                "serve workers on a NATS broker configured by `harstream deploy nats`"
            )
        for probe, got in probes.items():
            want = partition_of(probe, scale.partitions)
            if got >= 0 and got != want:
                raise ConfigError(
                    f"scale.partitions: {scale.partitions}, but the broker maps with another "
                    f"count ({probe} came on partition {got}, not {want}): use the P of "
                    "`harstream deploy nats --partitions P`"
                )

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
            self._dispatch(batch)

    def _dispatch(self, batch: list[Incoming]) -> None:
        """Commands, Home Assistant's and the workers' status here; the rest to the
        pipeline."""
        ha_status = self.ha_status_topic if self.settings.pipeline.homeassistant else None
        workers = self.workers_topic + "/" if self.router is not None else None
        rest = []
        for message in batch:
            if message.topic == self.control_topic:
                try:
                    self._control(message.payload)
                except Exception as exc:  # one command's fault stays its own
                    self.pipeline.faults.caught("control", message.topic, exc)
                    self._result("unknown", False, f"internal error: {exc!r}"[:200])
            elif message.topic == ha_status:
                if message.payload == b"online":
                    self.pipeline.inbox.request_announce()  # the pipeline knows the devices
            elif workers is not None and message.topic.startswith(workers):
                try:
                    self._worker_news(message)
                except Exception as exc:  # one announcement's fault stays its own
                    self.pipeline.faults.caught("worker", message.topic, exc)
            else:
                rest.append(message)
        if rest:
            self.accept(rest)

    def _status(self, state: bytes) -> bytes:
        """``online|offline INSTANCE`` for a worker (scale.WorkerBook), the bare state else."""
        return state if self.book is None else state + b" " + self.instance.encode()

    def _announcement(self) -> dict[str, Any]:
        scale = self.settings.scale
        assert scale is not None
        return {
            "worker": scale.worker,
            "partitions": scale.partitions,
            "owned": format_owned(scale.owned),
            "instance": self.instance,
        }

    def _worker_news(self, message: Incoming) -> None:
        """A worker's announcement (its partitions) or status (online/offline): checked
        by the book, which never raises for what another client published."""
        scale, book = self.settings.scale, self.book
        assert scale is not None and book is not None
        todo = book.news(message.topic[len(self.workers_topic) + 1 :], message.payload)
        for reason in book.refusals:
            log.warning("on %s/#: %s", self.workers_topic, reason)
        book.refusals.clear()
        if todo == "online":  # this worker is alive: say so again
            self._send(self.status_topic, self._status(b"online"), 1, True)
        elif todo == "announce":
            announcement = encode(self._announcement())
            self._send(f"{self.workers_topic}/{scale.worker}", announcement, 1, True)
        self.workers = {scale.worker: scale.owned, **book.live()}
        self._check_coverage()
        if scale.takeover:
            asyncio.get_running_loop().create_task(self._rebalance(), name="rebalance")

    async def _rebalance(self) -> None:
        """Takeover: serve this worker's partitions plus its share of dead workers'
        (``takeover_share``); subscribe to what it gains before taking its messages,
        stop taking what it hands back before unsubscribing."""
        scale, router, session = self.settings.scale, self.router, self._session
        assert scale is not None and router is not None
        if session is None:
            return
        async with self._rebalancing:
            dead = self.book.dead() if self.book is not None else {}
            target = scale.owned | takeover_share(scale.worker, self.workers, dead)
            gained, released = target - router.owned, router.owned - target
            calibrate, label = self.engine.preprocessor.aligned, self.recorder is not None
            try:
                if gained:
                    router.owned = router.owned | gained
                    for topic in router.filters(calibrate, label, gained):
                        await session.subscribe(topic, qos=self.settings.qos_in)
                    router.serving = router.owned  # only now do their messages come
                    log.warning("taking over partitions %s of dead workers", format_owned(gained))
                if released:
                    router.owned = router.serving = target
                    for topic in router.filters(calibrate, label, released):
                        await session.unsubscribe(topic)
                    log.info("handing back partitions %s", format_owned(released))
            except TransportError as exc:  # the connection's own task reconnects
                log.warning("rebalancing stopped by the connection: %s", exc)

    def _check_coverage(self) -> None:
        """Log partitions no one owns or two own, once the workers had a moment to
        announce themselves (a worker starting first is alone for a while)."""
        scale = self.settings.scale
        assert scale is not None
        found = coverage(scale.partitions, {scale.worker: scale.owned, **self.workers})
        if self.monotonic() < self._coverage_from:
            return
        if found != self._coverage:
            if found["unowned"] or found["overlapping"]:
                log.error(
                    "workers %s: partitions no one owns: %s; owned twice: %s",
                    sorted({scale.worker, *self.workers}),
                    found["unowned"] or "none",
                    found["overlapping"] or "none",
                )
            self._coverage = found

    def _forward(self, batch: list[Incoming]) -> int:
        """Worker mode: what came over HTTP goes into the broker, which routes it to the
        device's owner (maybe this worker)."""
        for message in batch:
            self._send(message.topic, message.payload, 1, False)
        return 0

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
        try:  # orjson: strict, and a nesting limit instead of a RecursionError
            body = orjson.loads(payload)
            command = body.get("command") if isinstance(body, dict) else None
        except orjson.JSONDecodeError:
            command = None
        if command == "reload" and set(body) == {"command"}:
            self.request_reload()
        elif command == "forget" and set(body) == {"command", "device"}:
            self._forget(body["device"])
        else:
            usage = 'send {"command": "reload"} or {"command": "forget", "device": D}'
            self._result(str(command), False, usage)

    def _forget(self, device: object) -> None:
        """Erase everything of a device: its recordings and labels (the recorder), its
        calibration (memory and state file: the prepare thread), then its retained
        topics (empty retained payloads: activity, calibration, availability, Home
        Assistant's discovery config)."""
        if not isinstance(device, str) or not valid_device_id(device):
            self._result("forget", False, "not a device id")
            return
        erased = []
        if self.recorder is not None:
            if not self.recorder.forget(device):
                self._result("forget", False, "the recorder is busy: try again")
                return
            erased.append("recordings and labels")
        loop = asyncio.get_running_loop()

        def forgotten(calibrated: bool) -> None:  # in the prepare thread
            what = [*erased, *(["calibration"] if calibrated else []), "retained topics"]
            loop.call_soon_threadsafe(self._forgotten, device, what)

        self.pipeline.forget(device, forgotten)

    def _forgotten(self, device: str, erased: list[str]) -> None:
        prefix = self.settings.pipeline.prefix
        topics = [f"{prefix}/{device}/{kind}" for kind in ("activity", "calibration")]
        topics.append(f"{prefix}/{device}/availability")
        if self.settings.pipeline.homeassistant:
            discovery = self.settings.pipeline.discovery_prefix
            topics.append(f"{discovery}/sensor/harstream_{device}/activity/config")
        for topic in topics:
            self._send(topic, b"", 1, True)  # an empty retained message deletes the retained
        if self.dashboard is not None:
            self.dashboard.history.forget(device)
        log.info("forgot %s: %s", device, ", ".join(erased))
        self._result("forget", True, f"{device}: erased {', '.join(erased)}")

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
            "batches_lingered": prepare.lingered,
            "batch_errors": infer.batch_errors,
            "faults": self.pipeline.faults.counts(),
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
            "scale": self._scale_numbers(),
            "recording": self.recorder.status() if self.recorder is not None else None,
        }

    def _scale_numbers(self) -> dict[str, Any] | None:
        scale = self.settings.scale
        if scale is None or self.router is None:
            return None
        return {
            "worker": scale.worker,
            "partitions": scale.partitions,
            "owned": format_owned(scale.owned),
            "workers": sorted({scale.worker, *self.workers}),
            "serving": format_owned(self.router.serving),
            **coverage(scale.partitions, {scale.worker: scale.owned, **self.workers}),
            **self.router.counters,
            **(self.book.counters if self.book is not None else {}),
        }

    def _calibration_source(self, device: str) -> str | None:
        """The source of the device's vertical, in the engine serving now (a model swap
        replaces it), for the live page."""
        return self.engine.sources.get(device)

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
