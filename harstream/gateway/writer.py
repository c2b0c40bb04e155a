"""The recorder's writer thread: session buffers -> part files on disk.

It takes the recorder's hand-off queue (items ``session``, ``samples``, ``decisions``,
``end``, ``forget``), buffers each session and writes a part
(:func:`~harstream.gateway.partfiles.write_part`) when it holds ``rotate_s`` of the
stream's own time (a backlog uploaded faster than real time is written as it arrives)
or has waited ``rotate_s`` of wall time, whichever comes first (each session's period
is ``rotate_s`` spread by +-25%), or holds ``rotate_bytes``, when all buffers together
pass ``max_buffer_bytes`` (the largest first), and on stop. The folder's bytes are kept
by :class:`~harstream.gateway.budget.Budget`.

Faults of one device's files stay that device's: a session folder deleted under the
gateway is made again (the session goes on from what it still holds), another failed
write loses that part only (counted, logged). A full or read-only disk (or quota), or
``max_bytes`` reached, stops recording (``error``); recognition goes on.
"""

from __future__ import annotations

import errno
import logging
import queue
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from harstream.gateway.budget import Budget
from harstream.gateway.partfiles import SAMPLE_COLUMNS, Extent, encode_table, write_part
from harstream.recordings import remove_tree

__all__ = ["RecorderSettings", "Writer"]

log = logging.getLogger("harstream.gateway")

EXPIRE_EVERY_S = 3600.0
TICK_S = 0.5  # how often the writer looks for sessions to rotate
ROTATE_SPREAD = 0.25  # each session's rotate_s is spread by +-25% (see Writer._begin)
#: write errors that no device can escape: recording stops (another error loses one part)
DISK_ERRORS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})


@dataclass(frozen=True, slots=True)
class RecorderSettings:
    dir: Path
    format: Literal["parquet", "csv"]
    rotate_s: float
    rotate_bytes: int
    max_buffer_bytes: int
    keep_days: float
    max_bytes: int
    decisions: bool
    rate_hz: float
    model_name: str
    #: one device's recordings at most (recording.max_device_share of max_bytes); None: max_bytes
    max_device_bytes: int | None = None


@dataclass(slots=True)
class _Buffer:
    """The writer's side of a session: what is not written yet, and what is."""

    device: str
    session: str
    meta: dict[str, Any]
    chunks: list[tuple[int, float, np.ndarray]] = field(default_factory=list)  # seq, t, float32
    decisions: list[tuple[Any, ...]] = field(default_factory=list)
    bytes: int = 0
    held: int = 0  # unwritten samples: the stream's own time held is held / rate_hz
    since: float = 0.0  # monotonic time of the oldest unwritten row
    ended: float | None = None  # monotonic time the session ended (late decisions may come)
    folder_made: bool = False
    rotate_s: float = 60.0  # this session's: rotate_s spread by +-25% (see Writer._begin)


class Writer:
    """The writer thread's state; ``run`` is its loop. Its counters are read by the
    recorder's ``status`` (ints and tuples replaced whole: safe from another thread)."""

    def __init__(
        self,
        settings: RecorderSettings,
        labels: list[str],
        items: queue.Queue[tuple[Any, ...] | None],
        monotonic: Callable[[], float],
    ) -> None:
        self.settings = settings
        self.labels = labels
        self.items = items
        self.monotonic = monotonic
        self.root: Path = settings.dir
        self.ext = ".parquet" if settings.format == "parquet" else ".csv.gz"
        max_device_bytes = settings.max_device_bytes or settings.max_bytes
        self.budget = Budget(self.root, settings.max_bytes, max_device_bytes)
        self._buffers: dict[str, _Buffer] = {}
        self._current: dict[str, str] = {}  # device -> its open session's key
        self._buffered = 0
        self.error: str | None = None
        self.counts = {"sessions": 0, "parts": 0, "samples": 0, "decisions": 0}
        self.refused = 0  # samples of devices over their share, not kept
        self.lost = 0  # samples of parts that could not be written (one device's fault)
        self.write_errors = 0
        self.recreated = 0  # folders made again after they were deleted

    def run(self) -> None:
        next_expire = self.monotonic() + EXPIRE_EVERY_S
        next_tick = self.monotonic() + TICK_S
        while True:
            try:
                item = self.items.get(timeout=TICK_S)
            except queue.Empty:
                item = ()
            if item is None:
                break
            try:
                if item:
                    self._handle(item)
                # the sweep over every session is paced, not run per item: at 1,000
                # devices per item it was the recorder's main cost
                if self.monotonic() >= next_tick:
                    self._tick()
                    next_tick = self.monotonic() + TICK_S
                if self.monotonic() >= next_expire:
                    self.budget.expire(self.settings.keep_days)
                    next_expire = self.monotonic() + EXPIRE_EVERY_S
            except OSError as exc:  # a full or failing disk: stop recording, go on serving
                self.fail(f"cannot write to {self.root}: {exc}")
        for key in list(self._buffers):
            self._write(key)

    def encode(self, columns: dict[str, Any], samples: bool = False) -> bytes:
        return encode_table(self.settings.format, columns, samples)

    def fail(self, error: str) -> None:
        if self.error is None:
            log.error("recording stopped: %s", error)
        self.error = error
        self._buffers.clear()
        self._buffered = 0

    def _handle(self, item: tuple[Any, ...]) -> None:
        kind = item[0]
        if self.error is not None and kind != "forget":
            return
        if kind == "session":
            self._begin(*item[1:])
        elif kind == "samples":
            self._add_samples(*item[1:])
        elif kind == "decisions":
            self._add_decisions(*item[1:])
        elif kind == "end":
            self._end(item[1])
        elif kind == "forget":
            self._erase(item[1])

    def _begin(self, key: str, meta: dict[str, Any]) -> None:
        """A device's new session (its old one ends)."""
        self._end(meta["device"])
        # devices that started together would all rotate in the same tick: each
        # session gets its own period (rotate_s +-25%, fixed by its key), so that parts
        # are written evenly over time rather than in bursts that stall the pipeline
        spread = 1 + ROTATE_SPREAD * (2 * (zlib.crc32(key.encode()) % 1000) / 1000 - 1)
        self._buffers[key] = _Buffer(
            meta["device"], meta["session"], meta, rotate_s=self.settings.rotate_s * spread
        )
        self._current[meta["device"]] = key
        self.counts["sessions"] += 1

    def _add_samples(self, key: str, start: int, t0: float, samples: np.ndarray) -> None:
        """A session's samples to its buffer, written once it holds a part's worth."""
        buf = self._buffers.get(key)
        if buf is None:
            return
        if buf.device in self.budget.over:  # past its share of the folder: not kept
            self.refused += len(samples)
            return
        if not (buf.chunks or buf.decisions):
            buf.since = self.monotonic()
        kept = samples.astype(np.float32)  # what is written: half the memory
        buf.chunks.append((start, t0, kept))
        size = kept.nbytes + 64
        buf.bytes += size
        buf.held += len(kept)
        self._buffered += size
        # the stream's own time: a backlog uploaded at 20x real time holds rotate_s
        # of samples after rotate_s / 20 of wall time, and is written then
        if (
            buf.bytes >= self.settings.rotate_bytes
            or buf.held >= buf.rotate_s * self.settings.rate_hz
        ):
            self._write(key)
        if self._buffered > self.settings.max_buffer_bytes:
            self._shed()

    def _add_decisions(self, key: str, rows: list[tuple[Any, ...]]) -> None:
        buf = self._buffers.get(key)
        if buf is not None and buf.device not in self.budget.over:
            if not (buf.chunks or buf.decisions):
                buf.since = self.monotonic()
            buf.decisions.extend(rows)
            size = 64 * len(rows)
            buf.bytes += size
            self._buffered += size

    def _erase(self, device: str) -> None:
        """A device's buffers and folder (``forget``)."""
        for k in [k for k, b in self._buffers.items() if b.device == device]:
            self._buffered -= self._buffers.pop(k).bytes
        self._current.pop(device, None)
        remove_tree(self.root / device)  # `data forget` may be deleting it too
        self.budget.measure()
        log.info("recordings of %s erased", device)

    def _end(self, device: str) -> None:
        key = self._current.pop(device, None)
        if key is not None and key in self._buffers:
            self._write(key)
            self._buffers[key].ended = self.monotonic()

    def _tick(self) -> None:
        """Write the sessions whose oldest row waited ``rotate_s`` (a device gone quiet
        has its last samples on disk, and its session.json current, within that); drop
        ended ones once their late decisions had a second to come."""
        now = self.monotonic()
        for key, buf in list(self._buffers.items()):
            if (buf.chunks or buf.decisions) and now - buf.since >= buf.rotate_s:
                self._write(key)
            if buf.ended is not None and now - buf.ended >= 1.0:
                self._write(key)
                del self._buffers[key]

    def _shed(self) -> None:
        """All buffers past ``max_buffer_bytes``: write the largest down to half of it."""
        for key in sorted(self._buffers, key=lambda k: -self._buffers[k].bytes):
            self._write(key)
            if self._buffered <= self.settings.max_buffer_bytes // 2:
                break

    def _write(self, key: str) -> None:
        """Write a session's buffer as its next part files, with its session.json
        brought to the extent the parts now hold. Only a full or read-only disk (or
        quota) raises (recording stops)."""
        buf = self._buffers[key]
        if self.error is not None or not (buf.chunks or buf.decisions):
            return
        files: list[tuple[str, bytes]] = []
        extent: Extent | None = None
        if buf.chunks:
            seq = np.concatenate([np.arange(s, s + len(x)) for s, _, x in buf.chunks])
            step = 1.0 / self.settings.rate_hz  # samples on the grid: t0 + i / rate
            t = np.concatenate([t0 + step * np.arange(len(x)) for _, t0, x in buf.chunks])
            x = np.concatenate([x for _, _, x in buf.chunks])
            columns: dict[str, Any] = {"seq": seq, "t": t}
            columns |= {c: x[:, i] for i, c in enumerate(SAMPLE_COLUMNS)}
            name = f"samples-{int(seq[0]):012d}{self.ext}"
            files.append((name, self.encode(columns, samples=True)))
            extent = (int(seq[0]), int(seq[-1]), float(t[0]), float(t[-1]), len(seq))
        if buf.decisions:
            rows = buf.decisions
            names = ["seq", "t", "received", "activity", "confidence", "raw_activity"]
            names += [f"p_{label}" for label in self.labels]
            columns = {n: [r[i] for r in rows] for i, n in enumerate(names)}
            files.append((f"decisions-{int(rows[0][0]):012d}{self.ext}", self.encode(columns)))
        held, decided = buf.held, len(buf.decisions)
        self._buffered -= buf.bytes
        buf.chunks, buf.decisions, buf.bytes, buf.held = [], [], 0, 0
        try:
            written = self._store(buf, files, extent)
        except OSError as exc:
            if exc.errno in DISK_ERRORS:
                raise
            self.write_errors += 1
            self.lost += held
            log.error("recording of %s: a part lost: %s", buf.device, exc)
            return
        if extent is not None:
            self.counts["samples"] += extent[4]
            self.counts["parts"] += 1
        self.counts["decisions"] += decided
        self.budget.add(buf.device, written)
        if self.budget.full:
            self.fail(
                f"{self.root} holds {self.budget.bytes} bytes: recording.max_bytes "
                f"({self.settings.max_bytes}) reached"
            )

    def _store(self, buf: _Buffer, files: list[tuple[str, bytes]], extent: Extent | None) -> int:
        """Write a part's files and the session.json they make true; bytes written."""
        folder = self.root / buf.device / buf.session
        if not buf.folder_made:  # file system calls cost (0.1-0.5 ms each): once
            folder.mkdir(parents=True, exist_ok=True)
            buf.folder_made = True
        try:
            written = write_part(folder, files, buf.meta, extent)
        except FileNotFoundError:
            # the folder was deleted (by hand, a clean-up): what it held is gone, so the
            # session on disk starts again from this part
            folder.mkdir(parents=True, exist_ok=True)
            for key in ("first_seq", "t_start", "samples"):
                buf.meta.pop(key, None)
            self.recreated += 1
            log.warning("recording folder %s was deleted: made again", folder)
            self.budget.measure()  # what is left (the caller adds this part)
            written = write_part(folder, files, buf.meta, extent)
        return written
