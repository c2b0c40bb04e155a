"""The live page's history: each device's recent label runs, and what the page lists.

History is kept as label runs per device, ``(start, end, activity, confidence sum,
decisions)``, a run per change of the published label: bounded in age, in runs per
device and in devices (``stream.max_devices``, the device registry's limit: a new
device beyond it takes the place of the one silent longest), so its memory does not
grow with the decision rate. Written by
the event loop only (from each batch's output); no I/O.
"""

from __future__ import annotations

from collections import deque
from typing import Any

__all__ = ["GAP_S", "History"]

#: Longer than this between two decisions of a device, and the timeline shows a gap.
GAP_S = 30.0


class History:
    """Each device's recent label runs, and what the page lists about it. Written by the
    event loop only (from each batch's output)."""

    def __init__(self, history_s: float, max_runs: int, max_devices: int) -> None:
        self.history_s = history_s
        self.max_runs = max_runs
        self.max_devices = max_devices
        # device -> runs [start, end, activity, confidence sum, decisions] (lists: the
        # newest is extended in place)
        self._runs: dict[str, deque[list[Any]]] = {}
        self._errors: dict[str, int] = {}

    def record(self, device: str, activity: str, confidence: float, t: float) -> None:
        runs = self._runs.get(device)
        if runs is None:
            if len(self._runs) >= self.max_devices:  # room: the stalest device goes
                stalest = min(
                    self._runs, key=lambda d: self._runs[d][-1][1] if self._runs[d] else -1
                )
                self.forget(stalest)
            runs = self._runs[device] = deque(maxlen=self.max_runs)
        if runs and runs[-1][2] == activity and t - runs[-1][1] < GAP_S:
            last = runs[-1]
            last[1], last[3], last[4] = t, last[3] + confidence, last[4] + 1
        else:  # a new label, or the device was silent: a gap shows as one
            runs.append([t, t, activity, confidence, 1])
        while runs and runs[0][1] < t - self.history_s:
            runs.popleft()

    def _last_decision(self, device: str) -> float:
        runs = self._runs[device]
        return float(runs[-1][1]) if runs else -1.0

    def error(self, device: str) -> None:
        if device in self._runs or len(self._errors) < self.max_devices:
            self._errors[device] = self._errors.get(device, 0) + 1

    def devices(self) -> list[dict[str, Any]]:
        out = []
        for device, runs in self._runs.items():
            if not runs:
                continue
            last = runs[-1]
            out.append(
                {
                    "device": device,
                    "activity": last[2],
                    "confidence": round(last[3] / last[4], 3),
                    "since": round(last[0], 3),
                    "last_decision": round(last[1], 3),
                    "errors": self._errors.get(device, 0),
                }
            )
        return out

    def timeline(self, device: str, now: float) -> list[dict[str, Any]] | None:
        runs = self._runs.get(device)
        if runs is None:
            return None
        start = now - self.history_s
        return [
            {
                "start": round(max(r[0], start), 3),
                "end": round(r[1], 3),
                "activity": r[2],
                "confidence": round(r[3] / r[4], 3),
                "decisions": r[4],
            }
            for r in runs
            if r[1] >= start
        ]

    def forget(self, device: str) -> None:
        self._runs.pop(device, None)
        self._errors.pop(device, None)

    def size(self) -> tuple[int, int]:
        """(devices, runs) held."""
        return len(self._runs), sum(len(r) for r in self._runs.values())
