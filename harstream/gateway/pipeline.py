"""The gateway pipeline: device messages in, activities out, in two threads.

::

    event loop          prepare thread              infer thread                event loop
    read batch -> Inbox -> decode, Engine.prepare -> Engine.complete, encode -> publish
                 (bounded)                  (Prepared, 2 deep)        (one hand-off per batch)

The event loop only moves bytes: it puts what each read brought into the :class:`Inbox`
and publishes what comes back. A batch is what is queued when the prepare thread is
free, up to ``max_batch`` messages. Batching adapts to load: when the thread comes back
to an empty inbox, the next message is processed the moment it arrives (a lone device
never waits for a batch that never fills); when messages were already waiting, the
gateway is busy and the thread lingers up to ``max_linger_ms`` for more, because every
batch has fixed costs (an inference call costs nearly as much for 3 devices as for 30),
but only while one of the last ``LINGER_MEMORY`` batches held messages of two devices
or more: a lone device streaming faster than real time finds its own next message
waiting, and no other device's would come to fill the batch.
Inference releases the GIL, so batch k's inference overlaps batch k+1's decoding.

Decoding (``harstream.gateway.ingest``) routes each message by topic: harstream's own
message, or the Sensor Logger app's; field devices' readings go through their
:class:`~harstream.core.devicestream.DeviceStream` onto the model's grid first. A device
seen for the first time is announced ``online`` on ``{prefix}/{device}/availability``
(and to Home Assistant); one evicted after ``idle_timeout_s`` of silence gets an
``UNKNOWN`` activity and ``offline``.

Calibration (models with gravity-aligned inputs): a message on
``{prefix}/{device}/calibrate`` (or ``POST /calibrate/{device}``) starts one in the
engine; its result, and a clear, are published retained on
``{prefix}/{device}/calibration`` and saved to ``calibration.state_file``; so are the
verticals the engine learns from each device's walking (source ``walking``) and its
re-mounts (status ``remounted``).

Recording (``recording.dir``): the prepare thread hands the samples the engine admitted
to the :class:`~harstream.gateway.recorder.Recorder`, which says which session they
belong to; the infer thread hands it the decisions with those sessions. Live labels on
``{prefix}/{device}/label`` are stored by the prepare thread.

A model swap (:meth:`Pipeline.swap`) travels with the batches: the prepare thread
switches to the new engine before its next batch (the new engine adopts every device:
its stream restarts, its calibration stays) and marks that batch, and the infer thread
switches when it reaches it, so every batch is completed by the engine that prepared it.

Faults stay where they are raised: each incoming message, each device's engine step (a
batch the engine fails on is prepared again device by device), each device's recording
and each batch's inference and output are handled inside their own ``try``; what
escapes one is rejected on that device's error topic (``internal_error``,
``recording_failed``) and logged and counted by :class:`~harstream.gateway.faults.Faults`.
An exception that escapes a stage's loop (a bug) marks the pipeline ``failed`` and calls
``on_failure``: the gateway stops, says ``offline`` and exits with an error.
:meth:`Pipeline.progress` says, for /healthz, how long messages have waited without a
batch completing.

Each stage owns its counters and publishes a snapshot of them after every batch
(:class:`PrepareStats`, :class:`InferStats`), which the stats task reads; nothing is
written by two threads. Per-device state lives in the engine; each stage touches only
its own side of it (see ``Engine.prepare``).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harstream.core.engine import Decisions, Engine, Message, Prepared
from harstream.core.payload import (
    decode_calibrate,
    discovery_payload,
    encode_activities,
    encode_calibration,
    encode_error,
    encode_gone,
    encode_transitions,
    valid_device_id,
)
from harstream.errors import PayloadError
from harstream.gateway.calibrations import CalibrationFile
from harstream.gateway.faults import Faults
from harstream.gateway.inbox import Arrival, Inbox
from harstream.gateway.ingest import Ingest, IngestSettings
from harstream.gateway.recorder import Recorder
from harstream.gateway.scale import Router
from harstream.gateway.transport import Incoming

__all__ = ["Arrival", "Inbox", "InferStats", "Outgoing", "Output", "Pipeline", "PrepareStats"]

log = logging.getLogger("harstream.gateway")

#: The engine's calibration events -> the status published on the calibration topic.
_CALIBRATION_EVENTS = {
    "calibrated": "calibrated",
    "calibration_failed": "failed",
    "refined": "refined",
    "remounted": "remounted",
}

EVICT_EVERY_S = 5.0  # how often the prepare thread looks for idle devices (at most)
LINGER_MEMORY = 4  # batches looked back on: linger while one of them held 2+ devices
STALL_S = 5.0  # messages waiting this long without a batch completing: unhealthy
FAILED_JOIN_S = 2.0  # how long a stop waits for the threads once a stage died


@dataclass(frozen=True, slots=True)
class PipelineSettings:
    """The plain values the pipeline needs (from ``harstream.runtime.gateway_settings``)."""

    ingest: IngestSettings
    qos_out: int
    retain_activity: bool
    max_batch: int
    max_linger_ms: float
    queue_size: int
    error_interval_s: float
    homeassistant: bool
    discovery_prefix: str
    model_name: str
    names: Mapping[str, str] = field(default_factory=dict)  # device -> friendly name
    queue_bytes: int = 64 * 1024 * 1024  # the inbox's payload bytes at most
    calibration_s: float = 5.0  # a calibration request without seconds
    calibration_file: Path | None = None  # where calibrations persist
    live_page: bool = False  # collect Output.decided / error_devices for the page

    @property
    def prefix(self) -> str:
        return self.ingest.prefix


@dataclass(frozen=True, slots=True)
class Outgoing:
    topic: str
    payload: bytes
    qos: int
    retain: bool


@dataclass(slots=True)
class Output:
    """One batch's messages to publish, and when each decision's input arrived."""

    messages: list[Outgoing] = field(default_factory=list)
    decided_from: list[float] = field(default_factory=list)  # monotonic receipt per decision
    # for the live page (only with ``live_page``): (device, activity, confidence,
    # gateway time) per decision, and the devices of the batch's errors
    decided: list[tuple[str, str, float, float]] = field(default_factory=list)
    error_devices: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class PrepareStats:
    devices: int = 0
    streams: int = 0  # field devices whose readings go through a DeviceStream
    late_readings: int = 0
    lost_messages: int = 0
    stream_restarts: int = 0
    messages: int = 0
    samples: int = 0
    rejected: dict[str, int] = field(default_factory=dict)  # bad messages by code
    dropped_seq_old: int = 0
    dropped_too_many_devices: int = 0
    resets: int = 0
    evicted: int = 0
    batches: int = 0
    lingered: int = 0  # batches that waited for more messages (under load)
    model_swaps: int = 0


@dataclass(frozen=True, slots=True)
class InferStats:
    decisions: int = 0
    errors_suppressed: int = 0
    batch_errors: int = 0
    completed_at: float = 0.0  # monotonic: when the last batch was handed over


@dataclass(slots=True)
class _Batch:
    """A batch between the two threads."""

    prepared: Prepared
    errors: list[tuple[str, str, str]] = field(default_factory=list)  # device, code, detail
    received: dict[str, float] = field(default_factory=dict)  # device -> monotonic receipt
    announce: list[str] = field(default_factory=list)  # to (re)announce to Home Assistant
    evicted: list[str] = field(default_factory=list)  # gone silent: say they are offline
    # device, status (started | calibrated | failed | cleared | refined | remounted),
    # the device's own vertical in force, its source (standing | walking | None), detail
    calibrations: list[tuple[str, str, list[float] | None, str | None, str]] = field(
        default_factory=list
    )
    sessions: dict[str, str] = field(default_factory=dict)  # device -> recording session
    swap: _Swap | None = None  # this batch is the new engine's first


@dataclass(slots=True)
class _Swap:
    """A model swap on its way through the pipeline; ``done`` is called in the infer
    thread once both stages run the new engine."""

    engine: Engine
    model_name: str
    done: Callable[[], None]


class Pipeline:
    """Two threads between an :class:`Inbox` and ``deliver`` (called in the infer thread
    with each batch's :class:`Output`; the gateway hands it to the event loop)."""

    def __init__(
        self,
        engine: Engine,
        settings: PipelineSettings,
        deliver: Callable[[Output], None],
        *,
        on_failure: Callable[[], None] | None = None,
        recorder: Recorder | None = None,
        router: Router | None = None,
        wall_clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engine = engine  # the prepare thread's (and, before a swap, the infer thread's)
        self._completing = engine  # the infer thread's
        self.model_name = settings.model_name  # the infer thread's
        self.recorder = recorder
        self.router = router  # worker mode: partitioned topics -> the gateway's own
        self._swap: _Swap | None = None
        self._forgets: list[tuple[str, Callable[[bool], None]]] = []  # `data forget` requests
        self.settings = settings
        self.deliver = deliver
        self.on_failure = on_failure  # called in the dying thread (see _supervised)
        self.failed: str | None = None  # a stage that died: what killed it
        self.faults = Faults()
        self.wall_clock = wall_clock
        self.monotonic = monotonic
        self.inbox = Inbox(settings.queue_size, settings.queue_bytes)
        self.prepare_stats = PrepareStats()
        self.infer_stats = InferStats()
        self._handoff: queue.Queue[_Batch | None] = queue.Queue(2)
        self.ingest = Ingest(settings.ingest)  # the prepare thread's
        self._calibrate_suffix = "/calibrate"
        self._label_suffix = "/label"
        self.calibrations = (
            CalibrationFile(settings.calibration_file) if settings.calibration_file else None
        )
        if self.calibrations is not None:  # fails the start on a bad file
            verticals, sources = self.calibrations.load_sources()
            for device, vertical in verticals.items():
                engine.set_vertical(device, vertical, sources[device])
        self._last_error: OrderedDict[str, float] = OrderedDict()
        self._partition_warned = -1e9
        self._threads = [
            threading.Thread(
                target=self._supervised,
                args=("prepare", self._prepare_loop),
                name="harstream-prepare",
                daemon=True,
            ),
            threading.Thread(
                target=self._supervised,
                args=("infer", self._infer_loop),
                name="harstream-infer",
                daemon=True,
            ),
        ]

    def swap(self, engine: Engine, model_name: str, done: Callable[[], None]) -> None:
        """Serve with ``engine`` from the next batch on (see the module docstring)."""
        self._swap = _Swap(engine, model_name, done)
        self.inbox.wake()

    def forget(self, device: str, done: Callable[[bool], None]) -> None:
        """Drop ``device`` (its stream, its slot: no eviction will announce it) and its
        calibration (from ``calibration.state_file`` too) in the prepare thread, which
        owns them; then ``done(it had a calibration)``, in that thread."""
        self._forgets.append((device, done))
        self.inbox.wake()

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Finish what is queued, then end both threads (``join`` waits for that)."""
        self.inbox.close()

    def join(self, timeout: float | None = None) -> None:
        """Wait for both threads; once a stage died, at most ``FAILED_JOIN_S`` more (the
        other may wait forever on the dead one: the threads are daemons)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        given_up = None  # when to stop waiting because a stage died
        for thread in self._threads:
            while thread.is_alive():
                now = time.monotonic()
                if self.failed is not None and given_up is None:
                    given_up = now + FAILED_JOIN_S
                limits = [d for d in (deadline, given_up) if d is not None]
                if limits and now >= min(limits):
                    return
                thread.join(min([0.1, *(d - now for d in limits)]))

    def _supervised(self, stage: str, loop: Callable[[], None]) -> None:
        """Run a stage's loop; an exception that escapes it is a bug no boundary caught:
        the pipeline is broken, so say so (``failed``, ``on_failure``), and the gateway
        stops with an error for its supervisor to restart it."""
        try:
            loop()
        except BaseException as exc:
            self.failed = f"the {stage} stage died: {type(exc).__name__}: {exc}"
            log.critical("%s; the gateway stops", self.failed, exc_info=True)
            if stage == "prepare":  # let the infer thread finish
                with contextlib.suppress(queue.Full):
                    self._handoff.put(None, timeout=FAILED_JOIN_S)
            if self.on_failure is not None:
                self.on_failure()

    def progress(self) -> dict[str, Any]:
        """For /healthz: alive, and how long messages have waited without a batch
        completing (0 while the inbox is empty)."""
        now = self.monotonic()
        queued = len(self.inbox)
        since = max(self.infer_stats.completed_at, self.inbox.waiting_since)
        stalled_s = now - since if queued else 0.0
        return {
            "failed": self.failed,
            "queue": queued,
            "stalled_s": round(stalled_s, 3),
            "ok": self.failed is None and stalled_s < STALL_S,
        }

    # --- the prepare thread ----------------------------------------------------------

    def _prepare_loop(self) -> None:
        rejected: Counter[str] = Counter()
        batches = 0
        every = min(EVICT_EVERY_S, self.settings.ingest.idle_timeout_s / 2)
        next_evict = self.monotonic() + every
        take = self.inbox.take
        limit, linger_s = self.settings.max_batch, self.settings.max_linger_ms / 1000
        # devices per batch, of the last few: lingering pays only when other devices'
        # messages will come to share the batch (a lone device never waits for them)
        crowd: deque[int] = deque([0], maxlen=LINGER_MEMORY)
        while (taken := take(limit, every, linger_s if max(crowd) > 1 else 0.0)) is not None:
            arrivals, announce = taken
            if self._swap is not None:
                swap, self._swap = self._swap, None
                swap.engine.adopt(self.engine)
                if self.recorder is not None:  # a new model: every device a new session
                    self.recorder.end(self.engine.devices)
                    self.recorder.model_name = swap.model_name
                self.engine = swap.engine
                self._handoff.put(_Batch(Prepared(), swap=swap))
            while self._forgets:
                device, done = self._forgets.pop(0)
                had = device in self.engine.verticals
                self.engine.forget(device)
                self.ingest.forget(device)
                if had:
                    self.engine.set_vertical(device, None)
                    self._save_calibrations()
                done(had)
            if self.monotonic() >= next_evict:
                self._evict()
                next_evict = self.monotonic() + every
            if arrivals or announce or self.engine.learnt_waiting:
                batch = self._prepare(arrivals, announce, rejected)
                if batch is not None:
                    crowd.append(len(batch.received))
                    self._handoff.put(batch)
                batches += 1
            counters, ingest = self.engine.counters, self.ingest.counters
            self.prepare_stats = PrepareStats(
                devices=self.engine.device_count,
                streams=len(self.ingest.streams),
                late_readings=ingest["late_readings"],
                lost_messages=ingest["lost_messages"],
                stream_restarts=ingest["stream_restarts"],
                messages=counters["messages"],
                samples=counters["samples"],
                rejected=dict(rejected),
                dropped_seq_old=counters["dropped_seq_old"],
                dropped_too_many_devices=counters["rejected_too_many_devices"],
                resets=counters["resets"],
                evicted=counters["evicted"],
                batches=batches,
                lingered=self.inbox.lingered,
                model_swaps=counters["model_swaps"],
            )
        self._handoff.put(None)

    def _evict(self) -> None:
        """Devices silent for ``idle_timeout_s`` leave the engine, ingest and recorder."""
        now = self.wall_clock()
        try:
            gone = self.engine.evict_idle(now)
            self.ingest.evict_idle(now)
            if gone and self.recorder is not None:
                self.recorder.end(gone)
        except Exception as exc:  # the next round tries again
            self.faults.caught("evict", "", exc)
            return
        if gone:
            self._handoff.put(_Batch(Prepared(), evicted=gone))

    def _prepare(
        self, arrivals: list[Arrival], announce: bool, rejected: Counter[str]
    ) -> _Batch | None:
        messages: list[Message] = []
        batch = _Batch(Prepared())
        for arrival in arrivals:
            for received in arrival.messages:
                try:
                    self._decode(received, arrival, batch, messages, rejected)
                except Exception as exc:  # one message's fault stays its own
                    device = self.faults.caught("decode", received.topic, exc)
                    self._refuse(batch, rejected, device, "internal_error", f"{exc!r}"[:200])
        try:
            batch.prepared = self.engine.prepare(messages)
        except Exception as exc:  # find the device that broke it
            batch.prepared = self._prepare_apart(messages, exc, batch, rejected)
        saved = False
        for event in batch.prepared.events:
            if event.code in _CALIBRATION_EVENTS:
                status = _CALIBRATION_EVENTS[event.code]
                # remounted: the vertical was dropped (a new one may follow in this batch)
                now = (None, None) if status == "remounted" else self._vertical(event.device)
                batch.calibrations.append((event.device, status, *now, event.detail))
                saved = saved or status != "failed"
                continue
            rejected[event.code] += 1
            batch.errors.append((event.device, event.code, event.detail))
        if saved:
            self._save_calibrations()
        if self.recorder is not None:
            self._record(batch, rejected)
        batch.announce = self.engine.devices if announce else batch.prepared.new_devices
        return batch

    def _decode(
        self,
        received: Incoming,
        arrival: Arrival,
        batch: _Batch,
        messages: list[Message],
        rejected: Counter[str],
    ) -> None:
        """One incoming message: routed, decoded, its engine messages added."""
        incoming = received
        router = self.router
        if router is not None:
            topic, refused = router.unmap(received.topic)
            if topic is None:
                if refused is not None:  # the broker and the workers disagree
                    rejected["wrong_partition"] += 1
                    self._warn_partition(refused)
                return
            if topic != received.topic:
                incoming = Incoming(topic, received.payload)
        if incoming.topic.endswith(self._calibrate_suffix):
            self._calibration_request(incoming, batch, rejected)
            return
        if incoming.topic.endswith(self._label_suffix):
            self._label(incoming, batch, rejected)
            return
        decoded, errors = self.ingest.decode(incoming, arrival.wall)
        for device, code, detail in errors:
            self._refuse(batch, rejected, device, code, detail)
        for message in decoded:
            messages.append(message)
            batch.received.setdefault(message.device, arrival.mono)

    def _prepare_apart(
        self, messages: list[Message], exc: Exception, batch: _Batch, rejected: Counter[str]
    ) -> Prepared:
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
                self._refuse(batch, rejected, device, "internal_error", f"{failure!r}"[:200])
                continue
            merged.rounds += part.rounds  # rounds complete in order: devices stay apart
            merged.events += part.events
            merged.new_devices += part.new_devices
        return merged

    @staticmethod
    def _refuse(batch: _Batch, rejected: Counter[str], device: str, code: str, detail: str) -> None:
        rejected[code] += 1
        batch.errors.append((device, code, detail))

    def _calibration_request(
        self, incoming: Incoming, batch: _Batch, rejected: Counter[str]
    ) -> None:
        """``{prefix}/{device}/calibrate``: start a calibration, or clear one."""
        prefix = self.settings.prefix + "/"
        device = incoming.topic[len(prefix) : -len(self._calibrate_suffix)]
        try:
            if not incoming.topic.startswith(prefix) or not valid_device_id(device):
                raise PayloadError(
                    "bad_calibrate", f"{incoming.topic}: not {prefix}DEVICE/calibrate"
                )
            seconds = decode_calibrate(incoming.payload, self.settings.calibration_s)
            if seconds is None:
                self.engine.set_vertical(device, None)
                self._save_calibrations()
                batch.calibrations.append((device, "cleared", *self._vertical(device), ""))
                return
            self.engine.calibrate(device, seconds)
        except PayloadError as exc:
            rejected[exc.code] += 1
            batch.errors.append((device, exc.code, exc.detail))
            return
        except ValueError as exc:  # the model takes none, or too many wait for devices
            code = "calibration_refused" if self.engine.preprocessor.aligned else "no_calibration"
            rejected[code] += 1
            batch.errors.append((device, code, str(exc)))
            return
        detail = f"stand still for {seconds:g} s"
        batch.calibrations.append((device, "started", *self._vertical(device), detail))

    def _warn_partition(self, reason: str) -> None:
        now = self.monotonic()
        if now - self._partition_warned >= 10.0:  # a misconfiguration, not a flood of logs
            log.error("a message for another worker: %s (workers and broker disagree)", reason)
            self._partition_warned = now

    def _record(self, batch: _Batch, rejected: Counter[str]) -> None:
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
                    self._refuse(batch, rejected, msg.device, "recording_failed", f"{exc!r}"[:200])

    def _label(self, incoming: Incoming, batch: _Batch, rejected: Counter[str]) -> None:
        """``{prefix}/{device}/label``: a live label for the device's recording."""
        prefix = self.settings.prefix + "/"
        device = incoming.topic[len(prefix) : -len(self._label_suffix)]
        try:
            if not incoming.topic.startswith(prefix) or not valid_device_id(device):
                raise PayloadError("bad_label", f"{incoming.topic}: not {prefix}DEVICE/label")
            if self.recorder is None:
                raise PayloadError("bad_label", "this gateway records nothing (recording.dir)")
            stored = self.recorder.label(device, incoming.payload)
        except PayloadError as exc:
            rejected[exc.code] += 1
            batch.errors.append((device, exc.code, exc.detail))
            return
        log.info("label stored: %s", stored)

    def _vertical(self, device: str) -> tuple[list[float] | None, str | None]:
        """The device's own vertical in force and its source."""
        vertical = self.engine.verticals.get(device)
        if vertical is None:
            return None, None
        return vertical.tolist(), self.engine.sources.get(device)

    def _save_calibrations(self) -> None:
        if self.calibrations is None:
            return
        try:
            self.calibrations.save(self.engine.verticals, self.engine.sources)
        except Exception:  # a full or read-only disk must not stop recognition
            log.exception("cannot save calibrations to %s", self.calibrations.path)

    # --- the infer thread ------------------------------------------------------------

    def _infer_loop(self) -> None:
        errors = 0
        while (batch := self._handoff.get()) is not None:
            if batch.swap is not None:
                batch.swap.engine.decisions = self._completing.decisions
                self._completing, self.model_name = batch.swap.engine, batch.swap.model_name
                batch.swap.done()
                continue
            try:
                decisions = self._finite(self._completing.complete(batch.prepared), batch)
                if self._completing.learnt_waiting:  # the prepare thread applies it
                    self.inbox.wake()
            except Exception as exc:  # this batch's decisions alone
                errors += 1
                self.faults.caught("infer", "", exc)
                decisions = Decisions.empty(self._completing.labels)
            if self.recorder is not None and decisions:
                try:
                    self.recorder.decisions(batch.sessions, decisions)
                except Exception as exc:  # recognition goes on
                    self.faults.caught("record", "", exc)
            try:
                output = self._output(batch, decisions)
            except Exception as exc:  # this batch's messages alone
                errors += 1
                self.faults.caught("output", "", exc)
                output = Output()
            self.infer_stats = InferStats(
                decisions=self._completing.decisions,
                errors_suppressed=self.infer_stats.errors_suppressed,
                batch_errors=errors,
                completed_at=self.monotonic(),
            )
            self.deliver(output)

    def _output(self, batch: _Batch, decisions: Decisions) -> Output:
        """A batch's messages, in order: devices come, calibrated and gone; decisions;
        errors."""
        out = Output()
        self._device_news(batch, out)
        if len(decisions):
            self._decided(batch, decisions, out)
        self._errors(batch, out)
        return out

    def _device_news(self, batch: _Batch, out: Output) -> None:
        """Devices that came (online, Home Assistant discovery), were calibrated, or went
        (gone, offline)."""
        s = self.settings
        send = out.messages.append
        for device in batch.prepared.new_devices:
            send(Outgoing(f"{s.prefix}/{device}/availability", b"online", 1, True))
        if s.homeassistant:
            expire = s.ingest.idle_timeout_s
            for device in batch.announce:
                send(
                    Outgoing(
                        f"{s.discovery_prefix}/sensor/harstream_{device}/activity/config",
                        discovery_payload(
                            device,
                            s.prefix,
                            self.model_name,
                            name=s.names.get(device),
                            expire_after_s=expire,
                        ),
                        1,
                        True,
                    )
                )
        now = self.wall_clock()
        for device, status, vertical, source, detail in batch.calibrations:
            payload = encode_calibration(device, status, vertical, detail, now, source)
            send(Outgoing(f"{s.prefix}/{device}/calibration", payload, 1, True))
        for device in batch.evicted:
            idle = s.ingest.idle_timeout_s
            send(
                Outgoing(
                    f"{s.prefix}/{device}/activity",
                    encode_gone(device, self.model_name, now, idle),
                    s.qos_out,
                    s.retain_activity,
                )
            )
            send(Outgoing(f"{s.prefix}/{device}/availability", b"offline", 1, True))

    def _errors(self, batch: _Batch, out: Output) -> None:
        """The batch's errors to their devices, those past the report rate counted as
        suppressed."""
        s = self.settings
        now = self.monotonic()
        suppressed = 0
        for device, code, detail in batch.errors:
            if s.live_page:
                out.error_devices.append(device)
            if self._may_report(device, now):
                out.messages.append(
                    Outgoing(f"{s.prefix}/{device}/error", encode_error(code, detail), 0, False)
                )
            else:
                suppressed += 1
        if suppressed:
            stats = self.infer_stats
            self.infer_stats = InferStats(
                stats.decisions,
                stats.errors_suppressed + suppressed,
                stats.batch_errors,
                stats.completed_at,
            )

    def _finite(self, decisions: Decisions, batch: _Batch) -> Decisions:
        """Decisions with a non-finite confidence or probability never leave (they would
        break JSON for every reader): dropped, reported as ``internal_error``."""
        ok = np.isfinite(decisions.confidence) & np.isfinite(decisions.probs).all(axis=1)
        if ok.all():
            return decisions
        for i in np.flatnonzero(~ok).tolist():
            batch.errors.append((decisions.device[i], "internal_error", "non-finite output"))
        log.error("%d non-finite decisions dropped", int((~ok).sum()))
        return decisions.take(np.flatnonzero(ok))

    def _decided(self, batch: _Batch, decisions: Decisions, out: Output) -> None:
        """A batch's decisions: encoded together, handed over as one list."""
        s = self.settings
        prefix, qos, retain = s.prefix, s.qos_out, s.retain_activity
        send = out.messages.append
        payloads = encode_activities(decisions, self.model_name)
        for device, payload in zip(decisions.device, payloads, strict=True):
            send(Outgoing(f"{prefix}/{device}/activity", payload, qos, retain))
        for i, payload in encode_transitions(decisions):
            send(Outgoing(f"{prefix}/{decisions.device[i]}/transition", payload, qos, False))
        received = batch.received
        out.decided_from.extend(received[d] for d in decisions.device if d in received)
        if s.live_page:
            out.decided.extend(
                zip(
                    decisions.device,
                    [decisions.names[a] for a in decisions.activity.tolist()],
                    decisions.confidence.tolist(),
                    decisions.received.tolist(),
                    strict=True,
                )
            )

    def _may_report(self, device: str, now: float) -> bool:
        """At most one error report per device per ``error_interval_s`` (bounded memory)."""
        last = self._last_error.get(device)
        if last is not None and now - last < self.settings.error_interval_s:
            return False
        self._last_error[device] = now
        self._last_error.move_to_end(device)
        while len(self._last_error) > 10_000:
            self._last_error.popitem(last=False)
        return True
