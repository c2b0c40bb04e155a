"""The pipeline's prepare stage: what the inbox holds -> a batch the engine prepared.

Runs in its own thread (``harstream-prepare``). Each round it takes what is queued
(:class:`~harstream.gateway.inbox.Inbox`, lingering under load: see
:mod:`harstream.gateway.pipeline`), applies what is due first (the lifecycle events
that came with it: a model swap, devices to erase; idle devices' eviction, decided by
the :class:`~harstream.gateway.registry.DeviceRegistry` for every store), then turns
each routed message (:class:`~harstream.gateway.routes.Route`, by its kind) into engine
messages (:class:`~harstream.gateway.ingest.Ingest`), calibration requests
(:class:`~harstream.gateway.calibrations.Calibrations`) or live labels (the recorder),
has the engine prepare them (``Engine.prepare``), hands the admitted samples to the
recorder and the :class:`~harstream.gateway.batch.Batch` to the infer stage.

Faults stay where they are raised: each message, each device's engine step (a batch
the engine fails on is prepared again device by device) and each device's recording
is handled in its own ``try``; what escapes one is refused on that device's error
topic and counted by :class:`~harstream.gateway.faults.Faults`.
"""

from __future__ import annotations

import logging
import queue
from collections import Counter, deque
from collections.abc import Callable

from harstream.core.engine import Engine, Message, Prepared
from harstream.core.payload import valid_device_id
from harstream.errors import PayloadError
from harstream.gateway.batch import Announce, Batch, Erase, Event, PrepareStats, Swap
from harstream.gateway.calibrations import Calibrations
from harstream.gateway.faults import Faults
from harstream.gateway.inbox import Arrival, Inbox
from harstream.gateway.ingest import Ingest, IngestSettings
from harstream.gateway.recorder import Recorder
from harstream.gateway.registry import DeviceRegistry
from harstream.gateway.routes import CALIBRATE, IMU, LABEL, MISPLACED, SENSOR_LOGGER, Route

__all__ = ["EVICT_EVERY_S", "LINGER_MEMORY", "PrepareStage"]

log = logging.getLogger("harstream.gateway")

EVICT_EVERY_S = 5.0  # how often the prepare thread looks for idle devices (at most)
LINGER_MEMORY = 4  # batches looked back on: linger while one of them held 2+ devices


class PrepareStage:
    """The prepare thread's state and loop: the engine it prepares with, the ingest
    (field devices' streams), calibrations; ``handoff`` takes its batches."""

    def __init__(
        self,
        engine: Engine,
        settings: IngestSettings,
        inbox: Inbox,
        handoff: queue.Queue[Batch | None],
        calibrations: Calibrations,
        faults: Faults,
        *,
        max_batch: int,
        max_linger_ms: float,
        recorder: Recorder | None,
        wall_clock: Callable[[], float],
        monotonic: Callable[[], float],
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.inbox = inbox
        self.handoff = handoff
        self.calibrations = calibrations
        self.faults = faults
        self.max_batch, self.max_linger_ms = max_batch, max_linger_ms
        self.recorder = recorder
        self.wall_clock, self.monotonic = wall_clock, monotonic
        # one registry admits and lets go of every device, in every store of this thread
        self.registry = DeviceRegistry(settings.max_devices, settings.idle_timeout_s)
        self.registry.engine = engine
        self.ingest = Ingest(settings, self.registry)
        self.registry.stores.append(self.ingest)
        if recorder is not None:
            self.registry.stores.append(recorder)
        self.stats = PrepareStats()
        self.rejected: Counter[str] = Counter()
        self._partition_warned = -1e9

    def run(self) -> None:
        batches = 0
        every = min(EVICT_EVERY_S, self.settings.idle_timeout_s / 2)
        next_evict = self.monotonic() + every
        take = self.inbox.take
        limit, linger_s = self.max_batch, self.max_linger_ms / 1000
        # devices per batch, of the last few: lingering pays only when other devices'
        # messages will come to share the batch (a lone device never waits for them)
        crowd: deque[int] = deque([0], maxlen=LINGER_MEMORY)
        while (taken := take(limit, every, linger_s if max(crowd) > 1 else 0.0)) is not None:
            arrivals, events = taken
            announce = self._apply(events)
            if self.monotonic() >= next_evict:
                self._evict()
                next_evict = self.monotonic() + every
            if arrivals or announce or self.engine.learnt_waiting:
                batch = self._prepare(arrivals, announce)
                if batch is not None:
                    crowd.append(len(batch.received))
                    self.handoff.put(batch)
                batches += 1
            self._publish_stats(batches)
        self.handoff.put(None)

    def _apply(self, events: list[Event]) -> bool:
        """The lifecycle events, in order; whether every device is to be announced."""
        announce = False
        for event in events:
            if isinstance(event, Swap):
                self._swap(event)
            elif isinstance(event, Erase):
                self.registry.forget(event.device)
                event.done(self.calibrations.forget(self.engine, event.device))
            elif isinstance(event, Announce):
                announce = True
        return announce

    def _swap(self, swap: Swap) -> None:
        """The new engine adopts every device (its stream restarts, its calibration
        stays); the batch that says so goes first to the infer stage."""
        swap.engine.adopt(self.engine)
        if self.recorder is not None:  # a new model: every device a new session
            self.recorder.end(self.engine.devices)
            self.recorder.model_name = swap.model_name
        self.engine = self.registry.engine = swap.engine
        self.handoff.put(Batch(Prepared(), swap=swap))

    def _publish_stats(self, batches: int) -> None:
        counters, ingest = self.engine.counters, self.ingest.counters
        self.stats = PrepareStats(
            devices=self.engine.device_count,
            streams=len(self.ingest.streams),
            late_readings=ingest["late_readings"],
            lost_messages=ingest["lost_messages"],
            stream_restarts=ingest["stream_restarts"],
            messages=counters["messages"],
            samples=counters["samples"],
            rejected=dict(self.rejected),
            dropped_seq_old=counters["dropped_seq_old"],
            dropped_too_many_devices=counters["rejected_too_many_devices"] + self.registry.refused,
            resets=counters["resets"],
            evicted=counters["evicted"],
            verticals_dropped=counters["verticals_dropped"],
            batches=batches,
            lingered=self.inbox.lingered,
            model_swaps=counters["model_swaps"],
        )

    def _evict(self) -> None:
        """Devices silent for ``idle_timeout_s`` leave every store (the registry)."""
        try:
            gone = self.registry.evict_idle(self.wall_clock())
        except Exception as exc:  # the next round tries again
            self.faults.caught("evict", "", exc)
            return
        if gone:
            self.handoff.put(Batch(Prepared(), evicted=gone))

    def _prepare(self, arrivals: list[Arrival], announce: bool) -> Batch | None:
        messages: list[Message] = []
        batch = Batch(Prepared())
        for arrival in arrivals:
            for route in arrival.messages:
                try:
                    self._decode(route, arrival, batch, messages)
                except Exception as exc:  # one message's fault stays its own
                    device = self.faults.caught("decode", route.topic, exc)
                    self._refuse(batch, route.device or device, "internal_error", f"{exc!r}"[:200])
        try:
            batch.prepared = self.engine.prepare(messages)
        except Exception as exc:  # find the device that broke it
            batch.prepared = self._prepare_apart(messages, exc, batch)
        if self.registry.gone:  # evicted to make room for new devices: announced
            batch.evicted, self.registry.gone = self.registry.gone, []
        for event in self.calibrations.news(self.engine, batch.prepared.events, batch):
            self._refuse(batch, event.device, event.code, event.detail)
        if self.recorder is not None:
            self._record(batch)
        batch.announce = self.engine.devices if announce else batch.prepared.new_devices
        return batch

    def _decode(
        self, route: Route, arrival: Arrival, batch: Batch, messages: list[Message]
    ) -> None:
        """One routed message, by its kind: decoded, its engine messages added."""
        kind = route.kind
        if kind in (IMU, SENSOR_LOGGER):
            decoded, errors = self.ingest.decode(route, arrival.wall)
            for device, code, detail in errors:
                self._refuse(batch, device, code, detail)
            for message in decoded:
                messages.append(message)
                batch.received.setdefault(message.device, arrival.mono)
        elif kind == CALIBRATE:
            self._calibration_request(route, batch)
        elif kind == LABEL:
            self._label(route, batch)
        elif kind == MISPLACED:  # the broker and the workers disagree
            self.rejected["wrong_partition"] += 1
            self._warn_partition(route.detail)
        else:  # nothing this gateway subscribes to: counted
            self.rejected["unknown_topic"] += 1

    def _prepare_apart(self, messages: list[Message], exc: Exception, batch: Batch) -> Prepared:
        """The engine failed on a batch: prepare each device's messages on their own, so
        that only the device that breaks it loses its messages (rare: a bug)."""
        log.warning("preparing a batch failed (%r); preparing its devices apart", exc)
        by_device: dict[str, list[Message]] = {}
        for message in messages:
            by_device.setdefault(message.device, []).append(message)
        merged = Prepared()
        for device, mine in by_device.items():
            try:
                part = self.engine.prepare(mine)
            except Exception as failure:  # this device's alone
                self.faults.caught("prepare", device, failure)
                self._refuse(batch, device, "internal_error", f"{failure!r}"[:200])
                continue
            merged.rounds += part.rounds  # rounds complete in order: devices stay apart
            merged.events += part.events
            merged.new_devices += part.new_devices
        return merged

    def _refuse(self, batch: Batch, device: str, code: str, detail: str) -> None:
        self.rejected[code] += 1
        batch.refuse(device, code, detail)

    def _calibration_request(self, route: Route, batch: Batch) -> None:
        """``{prefix}/{device}/calibrate``: start a calibration, or clear one."""
        device = route.device
        try:
            if not valid_device_id(device):
                prefix = self.settings.prefix
                raise PayloadError("bad_calibrate", f"{route.topic}: not {prefix}/DEVICE/calibrate")
            self.calibrations.request(self.engine, device, route.payload, batch)
        except PayloadError as exc:
            self._refuse(batch, device, exc.code, exc.detail)

    def _label(self, route: Route, batch: Batch) -> None:
        """``{prefix}/{device}/label``: a live label for the device's recording."""
        device = route.device
        try:
            if not valid_device_id(device):
                prefix = self.settings.prefix
                raise PayloadError("bad_label", f"{route.topic}: not {prefix}/DEVICE/label")
            if self.recorder is None:
                raise PayloadError("bad_label", "this gateway records nothing (recording.dir)")
            stored = self.recorder.label(device, route.payload)
        except PayloadError as exc:
            self._refuse(batch, device, exc.code, exc.detail)
            return
        log.info("label stored: %s", stored)

    def _warn_partition(self, reason: str) -> None:
        now = self.monotonic()
        if now - self._partition_warned >= 10.0:  # a misconfiguration, not a flood of logs
            log.error("a message for another worker: %s (workers and broker disagree)", reason)
            self._partition_warned = now

    def _record(self, batch: Batch) -> None:
        """Hand the samples the engine admitted to the recorder, with their times; a
        device whose recording fails keeps being recognised (``recording_failed``)."""
        recorder, engine = self.recorder, self.engine
        assert recorder is not None
        rate = engine.rate_hz
        for r in batch.prepared.rounds:
            for msg, start, restart in zip(
                r.messages, r.start.tolist(), r.restart.tolist(), strict=True
            ):
                # as the engine times decisions: without t, the last sample came at receipt
                t0 = msg.t if msg.t is not None else msg.received - (len(msg.samples) - 1) / rate
                vertical = engine.vertical_of(msg.device)
                source = "calibration" if msg.device in engine.verticals else "reference"
                try:
                    batch.sessions[msg.device] = recorder.samples(
                        msg.device, start, restart, msg.samples, t0, vertical, source
                    )
                except Exception as exc:  # this device's recording alone
                    self.faults.caught("record", msg.device, exc)
                    self._refuse(batch, msg.device, "recording_failed", f"{exc!r}"[:200])
