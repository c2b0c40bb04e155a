"""What the pipeline's stages share: their settings, what travels between them, the
lifecycle events the event loop sends them, and what each reports.

A :class:`Batch` goes from the prepare thread to the infer thread (two deep); an
:class:`Output` from the infer thread to the event loop (one hand-off per batch). Each
stage publishes a snapshot of its counters after every batch (:class:`PrepareStats`,
:class:`InferStats`), which the stats task reads: nothing is written by two threads.
Plain data: no behaviour, no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from harstream.core.engine import Engine, Prepared
from harstream.gateway.ingest import IngestSettings

__all__ = [
    "Announce",
    "Batch",
    "Erase",
    "Event",
    "InferStats",
    "Outgoing",
    "Output",
    "PipelineSettings",
    "PrepareStats",
    "Swap",
]


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
    verticals_dropped: int = 0  # calibrations beyond the engine's bound
    batches: int = 0
    lingered: int = 0  # batches that waited for more messages (under load)
    model_swaps: int = 0


@dataclass(frozen=True, slots=True)
class InferStats:
    decisions: int = 0
    errors_suppressed: int = 0
    batch_errors: int = 0
    completed_at: float = 0.0  # monotonic: when the last batch was handed over


#: device, status (started | calibrated | failed | cleared | refined | remounted), the
#: device's own vertical in force, its source (standing | walking | None), detail
CalibrationNews = tuple[str, str, list[float] | None, str | None, str]


@dataclass(slots=True)
class Batch:
    """A batch between the two threads."""

    prepared: Prepared
    errors: list[tuple[str, str, str]] = field(default_factory=list)  # device, code, detail
    received: dict[str, float] = field(default_factory=dict)  # device -> monotonic receipt
    announce: list[str] = field(default_factory=list)  # to (re)announce to Home Assistant
    evicted: list[str] = field(default_factory=list)  # gone silent: say they are offline
    calibrations: list[CalibrationNews] = field(default_factory=list)
    sessions: dict[str, str] = field(default_factory=dict)  # device -> recording session
    swap: Swap | None = None  # this batch is the new engine's first

    def refuse(self, device: str, code: str, detail: str) -> None:
        """One of the batch's messages is refused (reported on the device's error topic)."""
        self.errors.append((device, code, detail))


@dataclass(slots=True)
class Swap:
    """A model swap on its way through the pipeline; ``done`` is called in the infer
    thread once both stages run the new engine."""

    engine: Engine
    model_name: str
    done: Callable[[], None]


@dataclass(frozen=True, slots=True)
class Announce:
    """Announce every device again (Home Assistant restarted)."""


@dataclass(slots=True)
class Erase:
    """Drop ``device`` (its stream, its engine slot, its calibration); ``done(it had a
    calibration)`` is called in the prepare thread."""

    device: str
    done: Callable[[bool], None]


#: what the event loop asks of the prepare thread besides messages (through the inbox)
Event = Announce | Swap | Erase
