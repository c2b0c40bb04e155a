"""The gateway's recorder: what devices sent, and what was published, kept on disk.

Off unless ``recording.dir`` is set (it is personal data). The layout is
:mod:`harstream.recordings`'. Two sides:

- the pipeline's threads hand over work and return at once: the prepare thread the
  samples the engine admitted (on the model's grid, with their stream index and device
  time), the infer thread the decisions; this side decides where a session starts (a
  new stream, a seq gap, a changed calibration) and never touches the disk;
- one writer thread (:mod:`harstream.gateway.writer`) buffers each session and writes
  its parts (:mod:`harstream.gateway.partfiles`): each part is written to a temporary
  name and renamed, then the session's ``session.json`` is brought up to its extent:
  it never claims a sample no part holds, so the label checks (``data labels import``,
  live labels) see what is on disk.

Bounded everywhere: the hand-off queue (beyond it samples are dropped and counted, and
the device's next message starts a new session, since its stream has a hole), the
buffers, each device's share of the folder (``max_device_bytes``: beyond it the device's
samples are refused and counted while the others keep recording), and the folder
(``max_bytes``; sessions older than ``keep_days`` deleted hourly): the writer's
:class:`~harstream.gateway.budget.Budget`. A full disk, or the
budget reached, stops recording with the error in ``status()`` (the stats topic);
recognition goes on. Faults of one device's files stay that device's: a folder deleted
under the gateway is made again (the session goes on from what it still holds), another
failed write loses that part only (counted, logged).

Live labels (``{prefix}/{device}/label``) are checked and stored by the prepare thread
through :meth:`Recorder.label` (:mod:`harstream.gateway.livelabels`: rare, small files),
against the device's sessions on disk and the samples of its open (and just-ended)
session still buffered.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from harstream.core.engine import Decisions
from harstream.errors import ConfigError
from harstream.gateway.livelabels import decode_label, store_label
from harstream.gateway.partfiles import SAMPLE_COLUMNS, resolve_format
from harstream.gateway.writer import RecorderSettings, Writer

__all__ = ["SAMPLE_COLUMNS", "Recorder", "RecorderSettings", "decode_label", "resolve_format"]

log = logging.getLogger("harstream.gateway")

QUEUE_ITEMS = 10_000
LIVE_LABEL_AHEAD_S = 60.0  # a live label may start this far past the device's latest sample


@dataclass(slots=True)
class _Open:
    """The prepare side's view of a device's session."""

    key: str  # device/session
    next_seq: int
    vertical: np.ndarray | None
    t_start: float  # the session's first sample (device clock)
    t_last: float  # its latest sample
    #: the device's previous session (t_start, t_last): its last part may still be buffered
    previous: tuple[float, float] | None = None


class Recorder:
    def __init__(
        self,
        settings: RecorderSettings,
        labels: Sequence[str],
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.labels = list(labels)
        self.root = settings.dir
        self.model_name = settings.model_name  # the model in force (a swap changes it)
        self._queue: queue.Queue[tuple[Any, ...] | None] = queue.Queue(QUEUE_ITEMS)
        self.writer = Writer(settings, self.labels, self._queue, monotonic)
        self._open: dict[str, _Open] = {}  # the prepare thread's
        self._dropped = 0  # samples the hand-off had no room for (prepare thread)
        self._labels = 0
        self._thread = threading.Thread(
            target=self.writer.run, name="harstream-recorder", daemon=True
        )

    # --- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        """Create the folder (fails the start if it cannot), apply retention, start."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / ".write-test"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise ConfigError(f"recording.dir: {self.root}: cannot write there: {exc}") from exc
        if self.settings.format == "parquet":  # imports take ~0.6 s: not at a first write
            self.writer.encode({"seq": np.arange(2)})
        self.writer.budget.expire(self.settings.keep_days)
        self.writer.budget.measure()
        self._thread.start()

    def stop(self, timeout: float | None = 30.0) -> None:
        """Write every buffer, then end the writer thread."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout)

    def status(self) -> dict[str, Any]:
        writer, budget = self.writer, self.writer.budget
        return {
            "dir": str(self.root),
            "format": self.settings.format,
            "state": "stopped" if writer.error else "recording",
            "error": writer.error,
            "bytes": budget.bytes,
            "dropped_samples": self._dropped,
            "labels": self._labels,
            "max_device_bytes": budget.max_device_bytes,
            "devices_over_share": list(budget.over_named),
            "refused_samples": writer.refused,
            "lost_samples": writer.lost,
            "write_errors": writer.write_errors,
            "folders_recreated": writer.recreated,
            **writer.counts,
        }

    # --- the prepare thread ----------------------------------------------------------

    def samples(
        self,
        device: str,
        start: int,
        new_stream: bool,
        samples: np.ndarray,
        t0: float,
        vertical: np.ndarray | None,
        vertical_source: str | None,
    ) -> str:
        """A device's admitted samples (n, 6) with stream index ``start``, the first at
        device time ``t0`` (the rest on the grid after it); ``new_stream``: the engine
        starts the device's stream here (a new device or a seq gap). Returns the session
        key they belong to."""
        now = self._open.get(device)
        if (
            now is None
            or new_stream
            or start != now.next_seq
            or (vertical is not now.vertical and not _same(vertical, now.vertical))
        ):
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(t0))
            session = f"{stamp}-{start}"
            key = f"{device}/{session}"
            meta = {
                "device": device,
                "session": session,
                "rate_hz": self.settings.rate_hz,
                "model": self.model_name,
                "vertical": None if vertical is None else [float(v) for v in vertical],
                "vertical_source": vertical_source if vertical is not None else None,
            }
            self._put(("session", key, meta))
            previous = None if now is None else (now.t_start, now.t_last)
            now = self._open[device] = _Open(key, start, vertical, t0, t0, previous)
        n = len(samples)
        now.next_seq = start + n
        now.t_last = t0 + (n - 1) / self.settings.rate_hz
        if not self._put(("samples", now.key, start, t0, samples)):
            self._dropped += n
            del self._open[device]  # a hole: the next message starts a new session
        return now.key

    def end(self, devices: Sequence[str]) -> None:
        """Devices gone silent (evicted): their sessions end."""
        for device in devices:
            if self._open.pop(device, None) is not None:
                self._put(("end", device))

    def drop(self, device: str) -> None:
        """The device left (the registry evicted or erased it): its session ends."""
        self.end([device])

    def label(self, device: str, payload: bytes) -> str:
        """A live label from ``{prefix}/{device}/label``: stored at once; raises
        PayloadError ``bad_label`` naming what is wrong. Returns what was stored."""
        now = self._open.get(device)
        # the samples still buffered: the open session's (and the start may run a
        # little ahead of them: a button pressed before the samples came) and the
        # previous session's, whose last part the writer may not have written yet
        buffered = [] if now is None else [(now.t_start, now.t_last + LIVE_LABEL_AHEAD_S)]
        if now is not None and now.previous is not None:
            buffered.append(now.previous)
        stored = store_label(self.root, device, payload, self.labels, buffered)
        self._labels += 1
        return stored

    # --- the infer thread ------------------------------------------------------------

    def decisions(self, sessions: Mapping[str, str], decisions: Decisions) -> None:
        """A batch's decisions; ``sessions``: device -> the session key its samples went
        to in that batch."""
        if not self.settings.decisions:
            return
        rows: dict[str, list[tuple[Any, ...]]] = {}
        names, labels = decisions.names, decisions.labels
        for device, seq, t, received, activity, confidence, raw, probs in zip(
            decisions.device,
            decisions.seq.tolist(),
            decisions.t.tolist(),
            decisions.received.tolist(),
            decisions.activity.tolist(),
            decisions.confidence.tolist(),
            decisions.raw.tolist(),
            decisions.probs.tolist(),
            strict=True,
        ):
            key = sessions.get(device)
            if key is not None:
                rows.setdefault(key, []).append(
                    (seq, t, received, names[activity], confidence, labels[raw], *probs)
                )
        for key, got in rows.items():
            self._put(("decisions", key, got))

    # --- any thread ------------------------------------------------------------------

    def forget(self, device: str) -> bool:
        """Erase a device's recordings and what is buffered of it (False: the hand-off
        is full, try again). A device still streaming is recorded again from its next
        message, in a new session."""
        self._open.pop(device, None)  # one dict operation: safe beside the prepare thread
        return self._put(("forget", device))

    def _put(self, item: tuple[Any, ...]) -> bool:
        if self.writer.error is not None and item[0] != "forget":
            return True  # stopped: nothing more is kept (not a loss to count)
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            return False
        return True


def _same(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    if a is None or b is None:
        return a is b
    return bool(np.array_equal(a, b))
