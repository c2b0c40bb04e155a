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

The stages are :class:`~harstream.gateway.prepare.PrepareStage` and
:class:`~harstream.gateway.infer.InferStage`; what travels between them is in
:mod:`harstream.gateway.batch`. Decoding (``harstream.gateway.ingest``) routes each
message by topic: harstream's own message, or the Sensor Logger app's; field devices'
readings go through their :class:`~harstream.core.devicestream.DeviceStream` onto the
model's grid first. A device
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
(``PrepareStats``, ``InferStats``), which the stats task reads; nothing is written by
two threads. Per-device state lives in the engine; each stage touches only
its own side of it (see ``Engine.prepare``).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from harstream.core.engine import Engine
from harstream.gateway.batch import (
    Announce,
    Batch,
    Erase,
    InferStats,
    Outgoing,
    Output,
    PipelineSettings,
    PrepareStats,
    Swap,
)
from harstream.gateway.calibrations import Calibrations
from harstream.gateway.faults import Faults
from harstream.gateway.inbox import Arrival, Inbox
from harstream.gateway.infer import InferStage
from harstream.gateway.ingest import Ingest
from harstream.gateway.prepare import PrepareStage
from harstream.gateway.recorder import Recorder

__all__ = [
    "Arrival",
    "Inbox",
    "InferStats",
    "Outgoing",
    "Output",
    "Pipeline",
    "PipelineSettings",
    "PrepareStats",
]

log = logging.getLogger("harstream.gateway")

STALL_S = 5.0  # messages waiting this long without a batch completing: unhealthy
FAILED_JOIN_S = 2.0  # how long a stop waits for the threads once a stage died


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
        wall_clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.on_failure = on_failure  # called in the dying thread (see _supervised)
        self.failed: str | None = None  # a stage that died: what killed it
        self.faults = Faults()
        self.monotonic = monotonic
        self.inbox = Inbox(settings.queue_size, settings.queue_bytes)
        self._handoff: queue.Queue[Batch | None] = queue.Queue(2)
        calibrations = Calibrations(settings.calibration_file, settings.calibration_s)
        calibrations.restore(engine)  # fails the start on a bad file
        self.preparing = PrepareStage(
            engine,
            settings.ingest,
            self.inbox,
            self._handoff,
            calibrations,
            self.faults,
            max_batch=settings.max_batch,
            max_linger_ms=settings.max_linger_ms,
            recorder=recorder,
            wall_clock=wall_clock,
            monotonic=monotonic,
        )
        self.inferring = InferStage(
            engine,
            settings.model_name,
            settings,
            self._handoff,
            self.inbox,
            self.faults,
            deliver,
            recorder=recorder,
            wall_clock=wall_clock,
            monotonic=monotonic,
        )
        self._threads = [
            threading.Thread(
                target=self._supervised,
                args=("prepare", self.preparing.run),
                name="harstream-prepare",
                daemon=True,
            ),
            threading.Thread(
                target=self._supervised,
                args=("infer", self.inferring.run),
                name="harstream-infer",
                daemon=True,
            ),
        ]

    @property
    def engine(self) -> Engine:
        """The prepare stage's engine (the one in force once a swap reached it)."""
        return self.preparing.engine

    @property
    def ingest(self) -> Ingest:
        return self.preparing.ingest

    @property
    def prepare_stats(self) -> PrepareStats:
        return self.preparing.stats

    @property
    def infer_stats(self) -> InferStats:
        return self.inferring.stats

    def swap(self, engine: Engine, model_name: str, done: Callable[[], None]) -> None:
        """Serve with ``engine`` from the next batch on (see the module docstring)."""
        self.inbox.signal(Swap(engine, model_name, done))

    def forget(self, device: str, done: Callable[[bool], None]) -> None:
        """Drop ``device`` (its stream, its slot: no eviction will announce it) and its
        calibration (from ``calibration.state_file`` too) in the prepare thread, which
        owns them; then ``done(it had a calibration)``, in that thread."""
        self.inbox.signal(Erase(device, done))

    def announce(self) -> None:
        """Announce every device again (Home Assistant restarted), with the next batch."""
        self.inbox.signal(Announce())

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
        since = max(self.inferring.stats.completed_at, self.inbox.waiting_since)
        stalled_s = now - since if queued else 0.0
        return {
            "failed": self.failed,
            "queue": queued,
            "stalled_s": round(stalled_s, 3),
            "ok": self.failed is None and stalled_s < STALL_S,
        }
