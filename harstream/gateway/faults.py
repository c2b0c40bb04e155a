"""Faults caught at a boundary: what one message, device or command broke.

Every place where one message, device, label, calibration, recording or control command
is handled catches what escapes it, so that the fault stays its own: the caller rejects
it on the device's error topic with a reason code (``internal_error``,
``recording_failed``) and the other devices keep their decisions. :class:`Faults` does
the rest: each fault is counted by stage (the stats' ``faults``), and logged with its
traceback once per kind (stage, exception type and the line that raised it), so that a
device repeating a bad message cannot flood the log.
"""

from __future__ import annotations

import logging
import threading
import traceback
from collections import Counter

__all__ = ["Faults"]

log = logging.getLogger("harstream.gateway")

MAX_KINDS = 1000  # distinct fault kinds remembered (logged once each)


class Faults:
    """Shared by the threads of the gateway (a lock guards it)."""

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()
        self._seen: set[tuple[str, str, str]] = set()
        self._lock = threading.Lock()

    def caught(self, stage: str, where: str, exc: BaseException) -> str:
        """Count and (the first time of its kind) log ``exc``, raised in ``stage`` for
        ``where`` (a topic, a device or a command); returns the device of ``where``."""
        frames = traceback.extract_tb(exc.__traceback__)
        line = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "?"
        kind = (stage, type(exc).__name__, line)
        with self._lock:
            self._counts[stage] += 1
            first = kind not in self._seen and len(self._seen) < MAX_KINDS
            if first:
                self._seen.add(kind)
        if first:
            log.error(
                "%s failed for %s (logged once per kind, counted in stats' faults)",
                stage,
                where or "a batch",
                exc_info=exc,
            )
        return device_of(where)

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)


def device_of(where: str) -> str:
    """The device a topic names (``{prefix}/{device}/...``, or a Sensor Logger
    ``{topic}/{name}``); ``where`` itself when it is no topic."""
    parts = where.split("/")
    if len(parts) >= 3:
        return parts[1]
    return parts[-1]
