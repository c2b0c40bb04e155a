"""The gateway's numbers: the stats payload, the live page's counters, latencies.

Each owner keeps its own counters (the pipeline's stages their snapshots, the HTTP
server, the recorder, the worker coordination); :class:`Numbers` holds the event
loop's own (messages taken, dropped for overload, published, reconnects, publish
failures by reason, the decisions' latencies) and assembles the payload published on
``{prefix}/stats`` every ``stats_interval_s`` (with the interval's rates and latency)
and served to the live page. It publishes through ``send`` and knows no transport.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np

from harstream.core.payload import encode
from harstream.gateway.pipeline import Pipeline

__all__ = ["Numbers"]

MAX_LATENCIES = 100_000  # decisions' latencies kept per interval (the newest)
RATES = ("messages", "samples", "decisions")
LIVE_KEYS = ("messages_per_s", "samples_per_s", "decisions_per_s", "latency_ms")

Part = Callable[[], Any]


class Numbers:
    """The loop's counters and the stats payload; ``http``, ``model``, ``scale`` and
    ``recording`` give those parts' numbers now."""

    def __init__(
        self,
        pipeline: Pipeline,
        *,
        http: Part,
        model: Part,
        scale: Part,
        recording: Part,
        counters: Counter[str],
        publish_failed: Counter[str],
        monotonic: Callable[[], float],
    ) -> None:
        self.pipeline = pipeline
        self.parts = {"http": http, "model": model, "scale": scale, "recording": recording}
        self.monotonic = monotonic
        self.counters = counters  # the event loop's own
        self.publish_failed = publish_failed  # by PublishError code
        self.latencies_ms: list[float] = []
        self.last_stats: dict[str, Any] = {}  # rates and latency of the last interval

    def decided(self, received: list[float]) -> None:
        """Decisions handed to the client now, from inputs received at ``received``."""
        now = self.monotonic()
        self.latencies_ms.extend((now - t) * 1000 for t in received)
        del self.latencies_ms[:-MAX_LATENCIES]  # bounded: the newest per interval

    def snapshot(self) -> dict[str, Any]:
        """The stats payload's counters, from each owner's latest numbers."""
        prepare, infer = self.pipeline.prepare_stats, self.pipeline.infer_stats
        counters, parts = self.counters, self.parts
        return {
            "devices": prepare.devices,
            "messages": counters["messages"],
            "samples": prepare.samples,
            "decisions": infer.decisions,
            "rejected": prepare.rejected,
            "dropped": {
                "overload": counters["dropped_overload"],
                "seq_old": prepare.dropped_seq_old,
                "too_many_devices": prepare.dropped_too_many_devices,
            },
            "resets": prepare.resets,
            "evicted": prepare.evicted,
            "verticals_dropped": prepare.verticals_dropped,
            "errors_suppressed": infer.errors_suppressed,
            "batches": prepare.batches,
            "batches_lingered": prepare.lingered,
            "batch_errors": infer.batch_errors,
            "faults": self.pipeline.faults.counts(),
            "published": counters["published"],
            "publish_failed": sum(self.publish_failed.values()),
            "publish_failed_by_reason": dict(self.publish_failed),
            "reconnects": counters["reconnects"],
            "queue": len(self.pipeline.inbox),
            "field_devices": {
                "streams": prepare.streams,
                "late_readings": prepare.late_readings,
                "lost_messages": prepare.lost_messages,
                "restarts": prepare.stream_restarts,
            },
            "http": parts["http"](),
            "model": parts["model"](),
            "scale": parts["scale"](),
            "recording": parts["recording"](),
        }

    def live(self) -> dict[str, Any]:
        """The counters now, with the last stats interval's rates and latency."""
        last = self.last_stats
        return {**self.snapshot(), **{k: last[k] for k in LIVE_KEYS if k in last}}

    async def publish(
        self,
        stop: asyncio.Event,
        interval_s: float,
        topic: str,
        send: Callable[[str, bytes, int, bool], None],
    ) -> None:
        """Publish the stats payload on ``topic`` every ``interval_s`` until ``stop``."""
        started = last_t = self.monotonic()
        last: dict[str, int] = {}
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval_s)
                return
            now = self.monotonic()
            current = self.snapshot()
            interval = max(now - last_t, 1e-9)
            payload = {
                **current,
                "uptime_s": round(now - started, 1),
                "interval_s": round(interval, 2),
                **{f"{k}_per_s": round((current[k] - last.get(k, 0)) / interval, 1) for k in RATES},
                "latency_ms": self._latency_summary(),
            }
            last, last_t = {k: current[k] for k in RATES}, now
            self.last_stats = payload
            send(topic, encode(payload), 0, False)

    def _latency_summary(self) -> dict[str, float | int | None]:
        values, self.latencies_ms = self.latencies_ms, []
        if not values:
            return {"count": 0, "p50": None, "p99": None, "max": None}
        arr = np.array(values)
        return {
            "count": len(values),
            "p50": round(float(np.percentile(arr, 50)), 3),
            "p99": round(float(np.percentile(arr, 99)), 3),
            "max": round(float(arr.max()), 3),
        }
