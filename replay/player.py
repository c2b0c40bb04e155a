"""The real-rate player: a subject's recordings as a device would send them.

``play`` cuts recordings into messages of ``message_samples`` samples and yields each
one when a real device would send it: once its last sample has been measured, at
``rate_hz x speed`` (``speed=None`` plays as fast as possible). Time comes from a clock
object, so tests use :class:`FakeClock`, which advances on ``sleep`` without sleeping.

Recordings of one subject play back to back as one device. Each recording is a new
session: its ``seq`` jumps one sample past the previous recording's end, which a
receiver sees as a gap and answers by resetting the device's stream state, as it would
for a real device that stopped and started again.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from replay.recording import Recording

__all__ = ["Chunk", "Clock", "FakeClock", "RealClock", "chunks", "play"]


class Clock(Protocol):
    def now(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class RealClock:
    def now(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class FakeClock:
    """A clock for tests: ``sleep`` moves time forward at once."""

    def __init__(self, start: float = 0.0) -> None:
        self.t = start
        self.slept = 0.0

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds
        self.slept += seconds


@dataclass(frozen=True)
class Chunk:
    """One message: ``samples`` of ``recording`` from index ``start``; ``seq`` its first
    sample's index in the device stream; ``t`` the device time of that sample."""

    recording: Recording
    start: int
    samples: np.ndarray
    seq: int
    t: float
    due_s: float  # stream seconds at which the chunk's last sample has been measured

    @property
    def session_start(self) -> int:
        """The ``seq`` of this recording's first sample."""
        return self.seq - self.start


def chunks(
    recordings: Iterable[Recording], message_samples: int = 25, t0: float = 0.0
) -> Iterator[Chunk]:
    """The messages of a device session per recording, unpaced (``due_s`` says when)."""
    if message_samples < 1:
        raise ValueError("message_samples must be >= 1")
    played_s = 0.0  # stream time before the current recording
    seq = 0
    for rec in recordings:
        for start in range(0, len(rec), message_samples):
            part = rec.samples[start : start + message_samples]
            yield Chunk(
                rec,
                start,
                part,
                seq + start,
                t0 + played_s + start / rec.rate_hz,
                played_s + (start + len(part)) / rec.rate_hz,
            )
        played_s += rec.duration_s
        seq += len(rec) + 1  # the gap that tells the receiver a new session starts


def play(
    recordings: Iterable[Recording],
    *,
    message_samples: int = 25,
    speed: float | None = 1.0,
    clock: Clock | None = None,
    t0: float = 0.0,
) -> Iterator[Chunk]:
    """``chunks``, each yielded when due at ``speed`` x real time (None: at once)."""
    if speed is not None and speed <= 0:
        raise ValueError("speed must be > 0 (or None for as fast as possible)")
    clock = clock or RealClock()
    began = clock.now()
    for chunk in chunks(recordings, message_samples, t0):
        if speed is not None:
            wait = began + chunk.due_s / speed - clock.now()
            if wait > 0:
                clock.sleep(wait)
        yield chunk
