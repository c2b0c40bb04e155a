"""The gateway's recorder: what devices sent, and what was published, kept on disk.

Off unless ``recording.dir`` is set (it is personal data). The layout is
:mod:`harstream.recordings`'. Two sides:

- the pipeline's threads hand over work and return at once: the prepare thread the
  samples the engine admitted (on the model's grid, with their stream index and device
  time), the infer thread the decisions; this side decides where a session starts (a
  new stream, a seq gap, a changed calibration) and never touches the disk;
- one writer thread buffers each session and writes a part file when it holds
  ``rotate_s`` of the stream's own time (a backlog uploaded faster than real time is
  written as it arrives) or has waited ``rotate_s`` of wall time, whichever comes first
  (each session's period is ``rotate_s`` spread by +-25%), or holds ``rotate_bytes``,
  when all buffers together pass ``max_buffer_bytes`` (the largest first), and on stop.
  Each part is written to a temporary name and renamed, then the session's
  ``session.json`` is brought up to its extent: it never claims a sample no part holds,
  so the label checks (``data labels import``, live labels) see what is on disk.

Bounded everywhere: the hand-off queue (beyond it samples are dropped and counted, and
the device's next message starts a new session, since its stream has a hole), the
buffers, each device's share of the folder (``max_device_bytes``: beyond it the device's
samples are refused and counted while the others keep recording), and the folder
(``max_bytes``; sessions older than ``keep_days`` deleted hourly). A full disk, or the
budget reached, stops recording with the error in ``status()`` (the stats topic);
recognition goes on. Faults of one device's files stay that device's: a folder deleted
under the gateway is made again (the session goes on from what it still holds), another
failed write loses that part only (counted, logged).

Live labels (``{prefix}/{device}/label``) are checked and stored by the prepare thread
through :meth:`Recorder.label` (rare, small files), against the device's sessions on
disk and the samples of its open (and just-ended) session still buffered.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import io
import logging
import os
import queue
import shutil
import threading
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import orjson

from harstream.core.engine import Decisions
from harstream.errors import ConfigError, PayloadError
from harstream.recordings import (
    SESSION_FILE,
    Label,
    check_labels,
    labels_lock,
    parse_time,
    read_labels,
    read_sessions,
    remove_tree,
    session_json,
    write_labels,
)

__all__ = ["Recorder", "RecorderSettings", "decode_label", "resolve_format"]

log = logging.getLogger("harstream.gateway")

SAMPLE_COLUMNS = ("ax", "ay", "az", "gx", "gy", "gz")
EXPIRE_EVERY_S = 3600.0
QUEUE_ITEMS = 10_000
TICK_S = 0.5  # how often the writer looks for sessions to rotate
LIVE_LABEL_AHEAD_S = 60.0  # a live label may start this far past the device's latest sample
ROTATE_SPREAD = 0.25  # each session's rotate_s is spread by +-25% (see Recorder._handle)
#: write errors that no device can escape: recording stops (another error loses one part)
DISK_ERRORS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})
OVER_SHARE_NAMED = 20  # devices over their share named in status() (the rest counted)


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


def resolve_format(requested: str) -> Literal["parquet", "csv"]:
    """``auto``: parquet when pyarrow is installed, else gzip'd CSV."""
    if requested == "csv":
        return "csv"
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        if requested == "parquet":
            raise
        return "csv"
    return "parquet"


def decode_label(
    payload: bytes, activities: Sequence[str]
) -> tuple[str, float | None, float | None]:
    """A live label ``{"activity": A, "start": t}``, ``{"activity": A, "end": t}`` or
    both (epoch seconds or ISO 8601): (activity, start, end). PayloadError ``bad_label``."""
    try:
        body = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise PayloadError("bad_label", f"not JSON: {exc}") from None
    if (
        not isinstance(body, dict)
        or set(body) - {"activity", "start", "end"}
        or not ({"start", "end"} & set(body))
    ):
        raise PayloadError(
            "bad_label", 'send {"activity": A, "start": t} and/or {"activity": A, "end": t}'
        )
    activity = body.get("activity")
    if activity not in activities:
        raise PayloadError(
            "bad_label", f"unknown activity {activity!r} (one of {', '.join(activities)})"
        )
    times: list[float | None] = []
    for key in ("start", "end"):
        value = body.get(key)
        if value is None:
            times.append(None)
            continue
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise PayloadError("bad_label", f"{key}: epoch seconds or ISO 8601")
        try:
            times.append(parse_time(value))
        except ValueError as exc:
            raise PayloadError("bad_label", f"{key}: {exc}") from None
    return str(activity), times[0], times[1]


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
    rotate_s: float = 60.0  # this session's: rotate_s spread by +-25% (see Recorder._handle)


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
        self.monotonic = monotonic
        self.root = settings.dir
        self.ext = ".parquet" if settings.format == "parquet" else ".csv.gz"
        self.model_name = settings.model_name  # the model in force (a swap changes it)
        self._queue: queue.Queue[tuple[Any, ...] | None] = queue.Queue(QUEUE_ITEMS)
        self._open: dict[str, _Open] = {}  # the prepare thread's
        self._buffers: dict[str, _Buffer] = {}  # the writer's
        self._current: dict[str, str] = {}  # device -> its open session's key (the writer's)
        self._buffered = 0
        self._bytes = 0
        self._error: str | None = None
        self._counts = {"sessions": 0, "parts": 0, "samples": 0, "decisions": 0}
        self._dropped = 0  # samples the hand-off had no room for (prepare thread)
        self._labels = 0
        self._device_bytes: dict[str, int] = {}  # bytes on disk per device (the writer's)
        self._max_device_bytes = settings.max_device_bytes or settings.max_bytes
        self._over: set[str] = set()  # devices over their share (the writer's)
        self._over_named: tuple[str, ...] = ()  # a copy for status() (another thread)
        self._refused = 0  # samples of devices over their share, not kept
        self._lost = 0  # samples of parts that could not be written (one device's fault)
        self._write_errors = 0
        self._recreated = 0  # folders made again after they were deleted
        self._thread = threading.Thread(target=self._run, name="harstream-recorder", daemon=True)

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
            self._encode({"seq": np.arange(2)})
        self._expire()
        self._measure()
        self._thread.start()

    def stop(self, timeout: float | None = 30.0) -> None:
        """Write every buffer, then end the writer thread."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout)

    def status(self) -> dict[str, Any]:
        return {
            "dir": str(self.root),
            "format": self.settings.format,
            "state": "stopped" if self._error else "recording",
            "error": self._error,
            "bytes": self._bytes,
            "dropped_samples": self._dropped,
            "labels": self._labels,
            "max_device_bytes": self._max_device_bytes,
            "devices_over_share": list(self._over_named),
            "refused_samples": self._refused,
            "lost_samples": self._lost,
            "write_errors": self._write_errors,
            "folders_recreated": self._recreated,
            **self._counts,
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

    def label(self, device: str, payload: bytes) -> str:
        """A live label from ``{prefix}/{device}/label``: stored at once; raises
        PayloadError ``bad_label`` naming what is wrong. Returns what was stored."""
        activity, start, end = decode_label(payload, self.labels)
        try:
            with labels_lock(self.root):  # `data labels import` may be adding to the file
                return self._add_label(device, activity, start, end)
        except OSError as exc:
            raise PayloadError("bad_label", f"cannot store it: {exc}") from None

    def _add_label(self, device: str, activity: str, start: float | None, end: float | None) -> str:
        stored = read_labels(self.root, device)
        opened = [lab for lab in stored if lab.end is None]
        if start is not None:
            now = self._open.get(device)
            # the samples still buffered: the open session's (and the start may run a
            # little ahead of them: a button pressed before the samples came) and the
            # previous session's, whose last part the writer may not have written yet
            buffered = [] if now is None else [(now.t_start, now.t_last + LIVE_LABEL_AHEAD_S)]
            if now is not None and now.previous is not None:
                buffered.append(now.previous)
            live = any(start < b and (end is None or end > a) for a, b in buffered)
            if not live and not any(
                s.covers(start, end) for s in read_sessions(self.root, device)[0]
            ):
                raise PayloadError("bad_label", f"{device}: {start:.3f} is outside every recording")
            # an open label ends where the next one starts
            closed = [Label(device, o.start, start, o.activity, o.source) for o in opened]
            stored = [lab for lab in stored if lab.end is not None] + closed
            new = Label(device, start, end, activity, "live")
        else:
            match = [o for o in opened if o.activity == activity]
            if not match:
                raise PayloadError("bad_label", f"{device}: no open {activity} label to end")
            stored = [lab for lab in stored if lab is not match[0]]
            new = Label(device, match[0].start, end, activity, match[0].source)
        problems = check_labels([*stored, new], self.labels)
        if problems:
            raise PayloadError("bad_label", "; ".join(problems))
        write_labels(self.root, device, [*stored, new])
        self._labels += 1
        return new.describe()

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
        if self._error is not None and item[0] != "forget":
            return True  # stopped: nothing more is kept (not a loss to count)
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            return False
        return True

    # --- the writer thread -----------------------------------------------------------

    def _run(self) -> None:
        next_expire = self.monotonic() + EXPIRE_EVERY_S
        next_tick = self.monotonic() + TICK_S
        while True:
            try:
                item = self._queue.get(timeout=TICK_S)
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
                    self._expire()
                    next_expire = self.monotonic() + EXPIRE_EVERY_S
            except OSError as exc:  # a full or failing disk: stop recording, go on serving
                self._fail(f"cannot write to {self.root}: {exc}")
        for key in list(self._buffers):
            self._write(key)

    def _handle(self, item: tuple[Any, ...]) -> None:
        kind = item[0]
        if self._error is not None and kind != "forget":
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
        self._counts["sessions"] += 1

    def _add_samples(self, key: str, start: int, t0: float, samples: np.ndarray) -> None:
        """A session's samples to its buffer, written once it holds a part's worth."""
        buf = self._buffers.get(key)
        if buf is None:
            return
        if buf.device in self._over:  # past its share of the folder: not kept
            self._refused += len(samples)
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
        if buf is not None and buf.device not in self._over:
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
        self._measure()
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
        brought to the extent the parts now hold. A session folder deleted under the
        gateway is made again; another failure of this device's files loses this part
        only. Only a full or read-only disk (or quota) raises (recording stops)."""
        buf = self._buffers[key]
        if self._error is not None or not (buf.chunks or buf.decisions):
            return
        files: list[tuple[str, bytes]] = []
        extent: tuple[int, int, float, float, int] | None = None
        if buf.chunks:
            seq = np.concatenate([np.arange(s, s + len(x)) for s, _, x in buf.chunks])
            step = 1.0 / self.settings.rate_hz  # samples on the grid: t0 + i / rate
            t = np.concatenate([t0 + step * np.arange(len(x)) for _, t0, x in buf.chunks])
            x = np.concatenate([x for _, _, x in buf.chunks])
            columns: dict[str, Any] = {"seq": seq, "t": t}
            columns |= {c: x[:, i] for i, c in enumerate(SAMPLE_COLUMNS)}
            name = f"samples-{int(seq[0]):012d}{self.ext}"
            files.append((name, self._encode(columns, samples=True)))
            extent = (int(seq[0]), int(seq[-1]), float(t[0]), float(t[-1]), len(seq))
        if buf.decisions:
            rows = buf.decisions
            names = ["seq", "t", "received", "activity", "confidence", "raw_activity"]
            names += [f"p_{label}" for label in self.labels]
            columns = {n: [r[i] for r in rows] for i, n in enumerate(names)}
            files.append((f"decisions-{int(rows[0][0]):012d}{self.ext}", self._encode(columns)))
        held, decided = buf.held, len(buf.decisions)
        self._buffered -= buf.bytes
        buf.chunks, buf.decisions, buf.bytes, buf.held = [], [], 0, 0
        try:
            written = self._store(buf, files, extent)
        except OSError as exc:
            if exc.errno in DISK_ERRORS:
                raise
            self._write_errors += 1
            self._lost += held
            log.error("recording of %s: a part lost: %s", buf.device, exc)
            return
        if extent is not None:
            self._counts["samples"] += extent[4]
            self._counts["parts"] += 1
        self._counts["decisions"] += decided
        self._bytes += written
        device_bytes = self._device_bytes.get(buf.device, 0) + written
        self._device_bytes[buf.device] = device_bytes
        if device_bytes >= self._max_device_bytes and buf.device not in self._over:
            self._over.add(buf.device)
            self._over_named = tuple(sorted(self._over)[:OVER_SHARE_NAMED])
            log.warning(
                "recording of %s stopped: it holds %d bytes, its share of recording.max_bytes "
                "(%d); the other devices keep recording",
                buf.device,
                device_bytes,
                self._max_device_bytes,
            )
        if self._bytes >= self.settings.max_bytes:
            self._fail(
                f"{self.root} holds {self._bytes} bytes: recording.max_bytes "
                f"({self.settings.max_bytes}) reached"
            )

    def _store(
        self,
        buf: _Buffer,
        files: list[tuple[str, bytes]],
        extent: tuple[int, int, float, float, int] | None,
    ) -> int:
        """Write a part's files and the session.json they make true; bytes written."""
        folder = self.root / buf.device / buf.session
        if not buf.folder_made:  # file system calls cost (0.1-0.5 ms each): once
            folder.mkdir(parents=True, exist_ok=True)
            buf.folder_made = True
        try:
            written = self._write_files(folder, files, buf.meta, extent)
        except FileNotFoundError:
            # the folder was deleted (by hand, a clean-up): what it held is gone, so the
            # session on disk starts again from this part
            folder.mkdir(parents=True, exist_ok=True)
            for key in ("first_seq", "t_start", "samples"):
                buf.meta.pop(key, None)
            self._recreated += 1
            log.warning("recording folder %s was deleted: made again", folder)
            self._measure()  # what is left (the caller adds this part)
            written = self._write_files(folder, files, buf.meta, extent)
        return written

    def _write_files(
        self,
        folder: Path,
        files: list[tuple[str, bytes]],
        meta: dict[str, Any],
        extent: tuple[int, int, float, float, int] | None,
    ) -> int:
        """The part's files, the samples first and session.json right after them (the
        label checks read it: the sooner it follows the samples, the sooner a label on
        them is accepted), then the decisions."""
        for name, data in files:
            _atomic_write(folder / name, data)
            if extent is not None and name.startswith("samples-"):
                new = dict(meta)
                new.setdefault("first_seq", extent[0])
                new.setdefault("t_start", extent[2])
                new["last_seq"], new["t_end"] = extent[1], extent[3]
                new["samples"] = new.get("samples", 0) + extent[4]
                _atomic_write(folder / SESSION_FILE, session_json(new).encode())
                meta.update(new)  # only once written: a retry counts these samples once
        return sum(len(data) for _, data in files)

    def _measure(self) -> None:
        """The folder's bytes, in all and per device, from the disk (at start, after an
        erasure or a deleted folder); devices back under their share record again."""
        sizes: dict[str, int] = {}
        with contextlib.suppress(OSError):  # a folder deleted meanwhile: what was seen
            for path in self.root.rglob("*"):
                with contextlib.suppress(OSError):  # a file renamed or deleted meanwhile
                    if path.is_file():
                        device = path.relative_to(self.root).parts[0]
                        sizes[device] = sizes.get(device, 0) + path.stat().st_size
        self._bytes = sum(sizes.values())
        self._device_bytes = sizes
        self._over = {d for d, n in sizes.items() if n >= self._max_device_bytes}
        self._over_named = tuple(sorted(self._over)[:OVER_SHARE_NAMED])

    def _encode(self, columns: dict[str, Any], samples: bool = False) -> bytes:
        """A table as the file's bytes (parquet or gzip'd CSV)."""
        if self.settings.format == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            sink = io.BytesIO()
            if samples:  # 20 bytes a sample, half of the defaults' 39 (docs/field-data.md)
                encodings = {c: "BYTE_STREAM_SPLIT" for c in ("t", *SAMPLE_COLUMNS)}
                pq.write_table(
                    pa.table(columns),
                    sink,
                    compression="zstd",
                    use_dictionary=False,
                    column_encoding={"seq": "DELTA_BINARY_PACKED", **encodings},
                )
            else:
                pq.write_table(pa.table(columns), sink, compression="zstd")
            return sink.getvalue()
        return gzip.compress(_csv_bytes(columns), compresslevel=6)

    def _fail(self, error: str) -> None:
        if self._error is None:
            log.error("recording stopped: %s", error)
        self._error = error
        self._buffers.clear()
        self._buffered = 0

    def _expire(self) -> None:
        """Delete sessions last written more than ``keep_days`` ago."""
        limit = time.time() - self.settings.keep_days * 86_400
        for info in read_sessions(self.root)[0]:
            marker = info.path / SESSION_FILE
            try:
                if marker.stat().st_mtime >= limit:
                    continue
                freed = sum(p.stat().st_size for p in info.path.iterdir() if p.is_file())
                shutil.rmtree(info.path)
            except FileNotFoundError:  # deleted meanwhile (by hand): nothing to expire
                continue
            log.info("recording %s/%s expired (keep_days)", info.device, info.session)
            # counted off, not measured again: a walk of a full folder takes seconds
            self._bytes -= freed
            left = self._device_bytes.get(info.device, 0) - freed
            self._device_bytes[info.device] = max(0, left)
            if left < self._max_device_bytes and info.device in self._over:
                self._over.discard(info.device)  # under its share again: recorded
                self._over_named = tuple(sorted(self._over)[:OVER_SHARE_NAMED])


def _same(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    if a is None or b is None:
        return a is b
    return bool(np.array_equal(a, b))


def _atomic_write(path: Path, data: bytes) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


def _csv_bytes(columns: dict[str, Any]) -> bytes:
    """Columns as CSV: numbers with all their digits, text as it is."""
    cells = [_formatted(np.asarray(c)) for c in columns.values()]
    lines = [",".join(columns), *(",".join(row) for row in zip(*cells, strict=True))]
    return ("\n".join(lines) + "\n").encode()


def _formatted(column: np.ndarray) -> np.ndarray:
    if column.dtype.kind == "f":  # float32 needs 9 significant digits, float64 17
        return np.char.mod("%.9g" if column.dtype.itemsize == 4 else "%.17g", column)
    if column.dtype.kind in "iu":
        return np.char.mod("%d", column)
    return column.astype(str)
