"""Reader for UCI HAR Dataset v1.0 windows, stitched back into continuous streams.

Layout (``DIR`` or ``DIR/UCI HAR Dataset``)::

    {train,test}/Inertial Signals/{total_acc,body_gyro}_{x,y,z}_{split}.txt
                                   one 128-sample window per row, 50 Hz
    {train,test}/y_{split}.txt     activity id 1..6 per window
    {train,test}/subject_{split}.txt  subject id per window

The windows overlap by 50%: a window continues the previous one of the same subject
when its first 64 samples equal the previous window's last 64. Where they do not, a new
stream (a new Recording) starts. The 6 raw channels are total_acc (g, gravity included)
and body_gyro (rad/s), the same units as HAPT raw. Note total_acc was already median
and 20 Hz low-pass filtered by the dataset's authors; filtering it again changes it
only slightly.

Raises :class:`replay.DataError` naming the file and line; never skips.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from replay.errors import DataError
from replay.hapt import read_matrix
from replay.recording import Recording

__all__ = ["find_uci_har_dir", "iter_uci_har", "read_split"]

WINDOW = 128
OVERLAP = 64
_CHANNELS = [f"{kind}_{axis}" for kind in ("total_acc", "body_gyro") for axis in "xyz"]


def find_uci_har_dir(data_dir: str | Path) -> Path:
    root = Path(data_dir)
    for candidate in (root / "UCI HAR Dataset", root):
        if (candidate / "train").is_dir() or (candidate / "test").is_dir():
            return candidate
    raise DataError(f"{root}: no 'UCI HAR Dataset/{{train,test}}' folder here")


def _read_ints(path: Path) -> np.ndarray:
    return read_matrix(path, columns=1)[:, 0].astype(np.int64)


def read_split(root: Path, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(windows (N, 128, 6), activity (N,), subject (N,))`` of one split, checked."""
    folder = root / split
    activity = _read_ints(folder / f"y_{split}.txt")
    subject = _read_ints(folder / f"subject_{split}.txt")
    if len(subject) != len(activity):
        raise DataError(
            f"{folder / f'subject_{split}.txt'}: {len(subject)} rows, but "
            f"y_{split}.txt has {len(activity)}"
        )
    bad = np.flatnonzero((activity < 1) | (activity > 6))
    if bad.size:
        raise DataError(
            f"{folder / f'y_{split}.txt'}:{bad[0] + 1}: activity {activity[bad[0]]} is not in 1..6"
        )
    channels = []
    for name in _CHANNELS:
        path = folder / "Inertial Signals" / f"{name}_{split}.txt"
        values = read_matrix(path, columns=WINDOW)
        if len(values) != len(activity):
            raise DataError(f"{path}: {len(values)} rows, but y_{split}.txt has {len(activity)}")
        channels.append(values)
    return np.stack(channels, axis=-1), activity, subject


def _stitch(windows: np.ndarray, activity: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Join consecutive windows whose overlaps match into continuous (samples, labels)."""
    start = 0
    for i in range(1, len(windows) + 1):
        continues = i < len(windows) and np.allclose(
            windows[i - 1, OVERLAP:], windows[i, :OVERLAP], rtol=1e-6, atol=1e-9
        )
        if continues:
            continue
        run = windows[start:i]
        samples = np.concatenate([run[0], *(w[OVERLAP:] for w in run[1:])])
        # each window labels its second half; the first window labels its first half too
        halves = np.concatenate([activity[start : start + 1], activity[start:i]])
        labels = np.repeat(halves, OVERLAP).astype(np.int8)
        yield samples, labels
        start = i


def iter_uci_har(
    data_dir: str | Path,
    subjects: Iterable[int] | None = None,
    splits: Iterable[str] = ("train", "test"),
) -> Iterator[Recording]:
    """Yield each continuous stream of the chosen subjects, subjects ascending."""
    root = find_uci_har_dir(data_dir)
    wanted = None if subjects is None else set(subjects)
    per_subject: dict[int, list[tuple[str, np.ndarray, np.ndarray]]] = {}
    for split in splits:
        if not (root / split).is_dir():
            continue
        windows, activity, subject = read_split(root, split)
        for sid in np.unique(subject):
            if wanted is None or int(sid) in wanted:
                rows = subject == sid
                per_subject.setdefault(int(sid), []).append((split, windows[rows], activity[rows]))
    for sid in sorted(per_subject):
        for split, windows, activity in per_subject[sid]:
            for k, (samples, labels) in enumerate(_stitch(windows, activity)):
                yield Recording(
                    subject=sid,
                    experiment=f"{split}{k:03d}",
                    samples=samples,
                    labels=labels,
                    rate_hz=50.0,
                    source=str(root / split),
                )
