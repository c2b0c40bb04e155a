"""Field recordings on disk: the layout the gateway writes, and their labels.

::

    {recording.dir}/
      {device}/
        labels.csv                       start,end,activity,source (epoch s; end empty: open)
        {session}/                       one stream of the device with one calibration
          session.json                   what the session is (below), rewritten after each part
          samples-{first seq}.parquet    seq, t, ax, ay, az (g), gx, gy, gz (rad/s)
          decisions-{first seq}.parquet  seq, t, received, activity, confidence, raw_activity,
                                         p_{label} per label
          (.csv.gz instead of .parquet when pyarrow is not installed)

A session starts when a device's stream starts or restarts (first message, a seq gap, a
gateway restart) or when its calibration changes: inside one, the samples run on the
model's grid without a gap and the model saw them with one vertical. ``session.json``:
``{"format": 1, "device", "session", "rate_hz", "model", "vertical" (or null),
"vertical_source" ("calibration" | "reference" | null), "first_seq", "last_seq",
"t_start", "t_end", "samples"}``, rewritten after each part is written, so that it
holds what the parts hold (a crash between the two leaves it one part behind: the
readers take the last part's first sample as the least the session holds, and the
parts, found by name, are all read); ``t`` is the device's clock (epoch s) as the
engine reads it.

This module knows the layout and the labels (reading, checking, writing them); writing
samples is the gateway's recorder (``harstream.gateway.recorder``) and reading them into
arrays is the training side's (``training.fielddata``). No pandas, no pyarrow here.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import fcntl
import io
import itertools
import json
import math
import os
import shutil
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harstream.core.payload import valid_device_id
from harstream.errors import HarstreamError

__all__ = [
    "LABELS_FILE",
    "SESSION_FILE",
    "Label",
    "LabelError",
    "SessionInfo",
    "add_labels",
    "check_labels",
    "device_dirs",
    "forget_device",
    "labels_lock",
    "outside_recordings",
    "parse_time",
    "read_labels",
    "read_sessions",
    "remove_tree",
    "session_json",
    "write_labels",
]

SESSION_FILE = "session.json"
LABELS_FILE = "labels.csv"
_LABEL_COLUMNS = ("start", "end", "activity", "source")


class LabelError(HarstreamError):
    """Labels that cannot be taken: each problem named (device, interval, reason)."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


@dataclass(frozen=True, slots=True)
class Label:
    """An activity from ``start`` to ``end`` (epoch s, the device's clock); ``end`` None:
    still going (a live label whose end has not come yet)."""

    device: str
    start: float
    end: float | None
    activity: str
    source: str = ""

    def describe(self) -> str:
        end = "open" if self.end is None else f"{self.end:.3f}"
        return f"{self.device} {self.activity} [{self.start:.3f}, {end}]"


@dataclass(frozen=True, slots=True)
class SessionInfo:
    device: str
    session: str
    path: Path
    rate_hz: float
    model: str
    vertical: tuple[float, float, float] | None
    vertical_source: str | None
    first_seq: int
    last_seq: int
    t_start: float
    t_end: float
    samples: int
    parts: tuple[str, ...]
    decision_parts: tuple[str, ...]

    def covers(self, start: float, end: float | None) -> bool:
        """Whether the interval overlaps this session's time."""
        return start < self.t_end and (end is None or end > self.t_start)


def parse_time(value: str | float) -> float:
    """Epoch seconds from a number or an ISO 8601 time (a time without a zone is UTC)."""
    if isinstance(value, int | float):
        t = float(value)
    else:
        text = value.strip()
        try:
            t = float(text)
        except ValueError:
            try:
                when = datetime.fromisoformat(text.replace("Z", "+00:00"))
            except ValueError as exc:
                raise ValueError(f"{value!r} is neither epoch seconds nor ISO 8601") from exc
            if when.tzinfo is None:  # a zone-less time is UTC, never the gateway's zone
                when = when.replace(tzinfo=UTC)
            t = when.timestamp()
    if not math.isfinite(t):
        raise ValueError(f"{value!r} is not a finite time")
    return t


# --- sessions ----------------------------------------------------------------------------


def device_dirs(root: Path) -> list[Path]:
    """The device folders under a recording folder."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and valid_device_id(p.name))


def read_sessions(root: Path, device: str | None = None) -> tuple[list[SessionInfo], list[str]]:
    """Every session under ``root`` (or one device's), oldest first, and the problems of
    the ones that cannot be read (each named; they are skipped)."""
    infos, problems = [], []
    dirs = [root / device] if device is not None else device_dirs(root)
    for device_dir in dirs:
        if not device_dir.is_dir():
            continue
        for session_dir in sorted(p for p in device_dir.iterdir() if p.is_dir()):
            path = session_dir / SESSION_FILE
            try:
                infos.append(_session_info(path))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                problems.append(f"{path}: unreadable session ({exc}); skipped")
    infos.sort(key=lambda s: (s.t_start, s.device))
    return infos, problems


def _session_info(path: Path) -> SessionInfo:
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or data.get("format") != 1:
        raise ValueError('not {"format": 1, ...}')
    vertical = data["vertical"]
    if vertical is not None and len(vertical) != 3:
        raise ValueError("vertical: not a 3-vector")
    parts = _parts(path.parent, "samples-")
    first_seq, last_seq = int(data["first_seq"]), int(data["last_seq"])
    t_start, t_end, rate_hz = float(data["t_start"]), float(data["t_end"]), float(data["rate_hz"])
    if parts:  # a part written after session.json (a crash between): at least its first sample
        last_part = int(parts[-1].removeprefix("samples-").split(".")[0])
        if last_part > last_seq:
            last_seq, t_end = last_part, t_start + (last_part - first_seq) / rate_hz
    return SessionInfo(
        device=str(data["device"]),
        session=str(data["session"]),
        path=path.parent,
        rate_hz=rate_hz,
        model=str(data["model"]),
        vertical=None
        if vertical is None
        else (float(vertical[0]), float(vertical[1]), float(vertical[2])),
        vertical_source=data.get("vertical_source"),
        first_seq=first_seq,
        last_seq=last_seq,
        t_start=t_start,
        t_end=t_end,
        samples=int(data["samples"]),
        parts=parts,
        decision_parts=_parts(path.parent, "decisions-"),
    )


def _parts(folder: Path, prefix: str) -> tuple[str, ...]:
    """A session's part files of one kind, in seq order (their names hold it)."""
    names = [
        p.name
        for p in folder.iterdir()
        if p.name.startswith(prefix) and p.name.endswith((".parquet", ".csv.gz"))
    ]
    return tuple(sorted(names))


def forget_device(root: Path, device: str) -> int:
    """Erase everything recorded of a device (sessions and labels); bytes freed."""
    if not valid_device_id(device):
        raise ValueError(f"{device!r} is not a device id")
    folder = root / device
    if not folder.exists():
        return 0
    freed = _tree_bytes(folder)
    remove_tree(folder)
    return freed


def _tree_bytes(folder: Path) -> int:
    """The bytes of the files under ``folder``, counting none that vanish meanwhile (the
    gateway may be erasing the same device: ``remove_tree``)."""
    total = 0
    for root, _, files in os.walk(folder):  # os.walk skips folders that vanish
        for name in files:
            with contextlib.suppress(FileNotFoundError):
                total += os.stat(os.path.join(root, name)).st_size
    return total


def remove_tree(folder: Path, tries: int = 20) -> None:
    """``shutil.rmtree`` that another writer or deleter of the same folder cannot stop:
    the gateway's recorder may finish a part in it (the folder is then not empty once
    more) or delete it too (``data forget`` and the gateway erase the same device)."""
    for _ in range(tries):
        if not folder.exists():
            return
        try:
            shutil.rmtree(folder)
        except FileNotFoundError:
            continue  # someone else removed part of it: look again
        except OSError as exc:
            if exc.errno != errno.ENOTEMPTY:
                raise
            time.sleep(0.05)  # a file written meanwhile: its writer is done within ms
    if folder.exists():
        shutil.rmtree(folder)


# --- labels ------------------------------------------------------------------------------


_LOCK_FILE = ".labels.lock"
_thread_lock = threading.Lock()  # flock is per open file: threads of one process too


@contextlib.contextmanager
def labels_lock(root: Path) -> Iterator[None]:
    """Held around reading, checking and rewriting labels files: the gateway's live
    labels and `data labels import` (another process) add to the same files, and each
    rewrites a file whole, so without it one could drop what the other just added."""
    with _thread_lock:
        if not root.is_dir():  # no recordings yet: no one else writes labels here
            yield
            return
        with (root / _LOCK_FILE).open("a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)


def read_labels(root: Path, device: str) -> list[Label]:
    """A device's stored labels (none if it has no labels file)."""
    path = root / device / LABELS_FILE
    if not path.exists():
        return []
    out = []
    with path.open(newline="", encoding="utf-8") as f:
        for i, row in enumerate(csv.DictReader(f), start=2):
            try:
                end = row["end"].strip()
                out.append(
                    Label(
                        device,
                        float(row["start"]),
                        float(end) if end else None,
                        row["activity"],
                        row.get("source") or "",
                    )
                )
            except (KeyError, ValueError, AttributeError) as exc:
                problem = f"{path}: line {i}: not start,end,activity,source ({exc})"
                raise LabelError([problem]) from None
    return out


def write_labels(root: Path, device: str, labels: Iterable[Label]) -> None:
    """Replace a device's labels file (written whole, then renamed: never half a file)."""
    folder = root / device
    folder.mkdir(parents=True, exist_ok=True)
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(_LABEL_COLUMNS)
    for label in sorted(labels, key=lambda lab: lab.start):
        end = "" if label.end is None else repr(label.end)
        writer.writerow([repr(label.start), end, label.activity, label.source])
    temporary = folder / f"{LABELS_FILE}.{os.getpid()}.tmp"
    temporary.write_text(text.getvalue(), encoding="utf-8")
    os.replace(temporary, folder / LABELS_FILE)


def check_labels(
    labels: Sequence[Label],
    activities: Sequence[str],
    sessions: Sequence[SessionInfo] | None = None,
) -> list[str]:
    """What is wrong with a set of labels, each problem naming its label: an unknown
    activity, an end not after the start, two intervals of a device that overlap, and
    (given the sessions) an interval outside every recording of its device."""
    problems = []
    known = set(activities)
    for label in labels:
        if not valid_device_id(label.device):
            problems.append(f"{label.describe()}: {label.device!r} is not a device id")
        if label.activity not in known:
            problems.append(
                f"{label.describe()}: unknown activity {label.activity!r} "
                f"(one of {', '.join(activities)})"
            )
        if label.end is not None and label.end <= label.start:
            problems.append(f"{label.describe()}: the end is not after the start")
        if sessions is not None:
            problems += outside_recordings([label], sessions)
    by_device: dict[str, list[Label]] = {}
    for label in labels:
        by_device.setdefault(label.device, []).append(label)
    for group in by_device.values():
        group.sort(key=lambda lab: lab.start)
        for a, b in itertools.pairwise(group):
            if a.end is None or b.start < a.end:
                problems.append(f"{b.describe()}: overlaps {a.describe()}")
    return problems


def outside_recordings(labels: Sequence[Label], sessions: Sequence[SessionInfo]) -> list[str]:
    """The labels whose interval overlaps no session of their device, each named."""
    return [
        f"{label.describe()}: outside every recording of {label.device}"
        for label in labels
        if not any(s.device == label.device and s.covers(label.start, label.end) for s in sessions)
    ]


def add_labels(
    root: Path, new: Sequence[Label], activities: Sequence[str], *, check_sessions: bool = True
) -> int:
    """Add labels to the devices' stored ones, all or none: raises :class:`LabelError`
    naming every bad label (against each other, the stored ones and the recordings)."""
    devices = sorted({label.device for label in new})
    with labels_lock(root):
        stored = {d: read_labels(root, d) for d in devices if valid_device_id(d)}
        problems = check_labels(
            [*new, *(lab for labels in stored.values() for lab in labels)], activities
        )
        if check_sessions:  # the new ones only: a stored live label may be on samples
            # the gateway still buffers (it checked them when it took the label)
            sessions = [s for d in stored for s in read_sessions(root, d)[0]]
            problems += outside_recordings(new, sessions)
        if problems:
            raise LabelError(problems)
        for device in devices:
            mine = [lab for lab in new if lab.device == device]
            write_labels(root, device, [*stored[device], *mine])
    return len(new)


def session_json(info: dict[str, Any]) -> str:
    return json.dumps({"format": 1, **info}, indent=1) + "\n"
