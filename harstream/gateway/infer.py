"""The pipeline's infer stage: a prepared batch -> decisions -> the messages to publish.

Runs in its own thread (``harstream-infer``): completes each
:class:`~harstream.gateway.batch.Batch` with the engine that prepared it
(``Engine.complete``: inference releases the GIL, so it overlaps the next batch's
decoding), hands the decisions to the recorder, encodes the batch's messages in order
(devices that came, were calibrated or went; decisions and transitions; errors, at
most one report per device per ``error_interval_s``) and hands the
:class:`~harstream.gateway.batch.Output` to ``deliver`` once. A decision with a
non-finite confidence or probability never leaves (it would break JSON for every
reader). Each batch's inference, recording and output has its own ``try``: a fault
costs that batch's part, counted by :class:`~harstream.gateway.faults.Faults`.
"""

from __future__ import annotations

import logging
import queue
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace

import numpy as np

from harstream.core.engine import Decisions, Engine
from harstream.core.payload import (
    discovery_payload,
    encode_activities,
    encode_calibration,
    encode_error,
    encode_gone,
    encode_transitions,
)
from harstream.gateway.batch import Batch, InferStats, Outgoing, Output, PipelineSettings
from harstream.gateway.faults import Faults
from harstream.gateway.inbox import Inbox
from harstream.gateway.recorder import Recorder

__all__ = ["InferStage"]

log = logging.getLogger("harstream.gateway")

MAX_ERROR_DEVICES = 10_000  # devices whose last error report is remembered


class InferStage:
    """The infer thread's state and loop: the engine it completes with (a swap batch
    replaces it) and the model name the decisions carry."""

    def __init__(
        self,
        engine: Engine,
        model_name: str,
        settings: PipelineSettings,
        handoff: queue.Queue[Batch | None],
        inbox: Inbox,
        faults: Faults,
        deliver: Callable[[Output], None],
        *,
        recorder: Recorder | None,
        wall_clock: Callable[[], float],
        monotonic: Callable[[], float],
    ) -> None:
        self.engine = engine
        self.model_name = model_name
        self.settings = settings
        self.handoff = handoff
        self.inbox = inbox
        self.faults = faults
        self.deliver = deliver
        self.recorder = recorder
        self.wall_clock, self.monotonic = wall_clock, monotonic
        self.stats = InferStats()
        self._last_error: OrderedDict[str, float] = OrderedDict()

    def run(self) -> None:
        errors = 0
        while (batch := self.handoff.get()) is not None:
            if batch.swap is not None:
                batch.swap.engine.decisions = self.engine.decisions
                self.engine, self.model_name = batch.swap.engine, batch.swap.model_name
                batch.swap.done()
                continue
            try:
                decisions = self._finite(self.engine.complete(batch.prepared), batch)
                if self.engine.learnt_waiting:  # the prepare thread applies it
                    self.inbox.wake()
            except Exception as exc:  # this batch's decisions alone
                errors += 1
                self.faults.caught("infer", "", exc)
                decisions = Decisions.empty(self.engine.labels)
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
            self.stats = InferStats(
                decisions=self.engine.decisions,
                errors_suppressed=self.stats.errors_suppressed,
                batch_errors=errors,
                completed_at=self.monotonic(),
            )
            self.deliver(output)

    def _output(self, batch: Batch, decisions: Decisions) -> Output:
        """A batch's messages, in order: devices come, calibrated and gone; decisions;
        errors."""
        out = Output()
        self._device_news(batch, out)
        if len(decisions):
            self._decided(batch, decisions, out)
        self._errors(batch, out)
        return out

    def _device_news(self, batch: Batch, out: Output) -> None:
        """Devices that came (online, Home Assistant discovery), were calibrated, or went
        (gone, offline)."""
        s = self.settings
        send = out.messages.append
        for device in batch.prepared.new_devices:
            send(Outgoing(f"{s.prefix}/{device}/availability", b"online", 1, True))
        if s.homeassistant:
            for device in batch.announce:
                send(
                    Outgoing(
                        f"{s.discovery_prefix}/sensor/harstream_{device}/activity/config",
                        discovery_payload(
                            device,
                            s.prefix,
                            self.model_name,
                            name=s.names.get(device),
                            expire_after_s=s.ingest.idle_timeout_s,
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
            self._last_error.pop(device, None)  # the registry let it go: so does this store
            gone = encode_gone(device, self.model_name, now, s.ingest.idle_timeout_s)
            send(Outgoing(f"{s.prefix}/{device}/activity", gone, s.qos_out, s.retain_activity))
            send(Outgoing(f"{s.prefix}/{device}/availability", b"offline", 1, True))

    def _errors(self, batch: Batch, out: Output) -> None:
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
            total = self.stats.errors_suppressed + suppressed
            self.stats = replace(self.stats, errors_suppressed=total)

    def _finite(self, decisions: Decisions, batch: Batch) -> Decisions:
        """Decisions with a non-finite confidence or probability never leave (they would
        break JSON for every reader): dropped, reported as ``internal_error``."""
        ok = np.isfinite(decisions.confidence) & np.isfinite(decisions.probs).all(axis=1)
        if ok.all():
            return decisions
        for i in np.flatnonzero(~ok).tolist():
            batch.refuse(decisions.device[i], "internal_error", "non-finite output")
        log.error("%d non-finite decisions dropped", int((~ok).sum()))
        return decisions.take(np.flatnonzero(ok))

    def _decided(self, batch: Batch, decisions: Decisions, out: Output) -> None:
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
        while len(self._last_error) > MAX_ERROR_DEVICES:
            self._last_error.popitem(last=False)
        return True
