"""Training data from the recordings, through the gateway's own preprocessing.

Every recording is preprocessed causally from its first sample by
``harstream.core.preprocessing.Preprocessor.preprocess`` (the engine's offline function),
unstandardised; the bundle's mean/std are computed here from the fitting subjects.

The split is the evaluation protocol of docs/design.md: the 9 UCI HAR test subjects are only
ever used for the final report; validation subjects come out of the other 21.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harstream.core.preprocessing import FilterSpec, Preprocessor
from harstream.evaluation.metrics import segments
from replay import iter_hapt
from replay.hapt import find_raw_dir

__all__ = [
    "TEST_SUBJECTS",
    "TRAIN_SUBJECTS",
    "Prepared",
    "class_targets",
    "data_checksum",
    "load_prepared",
    "normalization",
    "protocol_windows",
]

TEST_SUBJECTS = (2, 4, 9, 10, 12, 13, 18, 20, 24)
TRAIN_SUBJECTS = tuple(s for s in range(1, 31) if s not in TEST_SUBJECTS)
IGNORE = -100  # target of samples outside activity 1-6 segments (not trained on)


@dataclass(frozen=True, eq=False)
class Prepared:
    """One recording, preprocessed: features (n, 9) float32 unstandardised, labels (n,)."""

    subject: int
    experiment: str
    features: np.ndarray
    labels: np.ndarray
    samples: np.ndarray  # the raw (n, 6) samples, for stream-level evaluation


def load_prepared(
    data_dir: str | Path, subjects: Iterable[int], filters: FilterSpec
) -> list[Prepared]:
    pre = Preprocessor(filters)
    return [
        Prepared(r.subject, r.experiment, pre.preprocess(r.samples), r.labels, r.samples)
        for r in iter_hapt(data_dir, subjects=subjects)
    ]


def normalization(recordings: Sequence[Prepared]) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std over every sample of the given recordings."""
    stacked = np.concatenate([r.features for r in recordings]).astype(np.float64)
    return stacked.mean(axis=0), stacked.std(axis=0)


def class_targets(labels: np.ndarray) -> np.ndarray:
    """Per-sample class ids: activity 1..6 -> 0..5, anything else -> IGNORE."""
    labels = np.asarray(labels, np.int64)
    return np.where((labels >= 1) & (labels <= 6), labels - 1, IGNORE)


def protocol_windows(
    labels: np.ndarray, window: int = 128, hop: int = 64, stride: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Windows lying wholly inside one activity 1-6 segment, cut from each segment's
    start every ``stride`` (default ``hop``) samples: ``(starts, class ids)``.

    With window 128 and hop 64 this gives 7,415 train and 2,996 test windows on HAPT.
    """
    stride = stride or hop
    starts, classes = [], []
    for activity, a, b in segments(labels):
        if activity <= 6:
            for s in range(a, b - window + 1, stride):
                starts.append(s)
                classes.append(activity - 1)
    return np.array(starts, np.int64), np.array(classes, np.int64)


def data_checksum(data_dir: str | Path, subjects: Iterable[int]) -> str:
    """sha256 over labels.txt and the subjects' sensor files (names and contents)."""
    raw = find_raw_dir(data_dir)
    wanted = {f"user{s:02d}" for s in subjects}
    digest = hashlib.sha256()
    sensors = [p for p in raw.glob("*_exp*_user*.txt") if p.stem.split("_")[-1] in wanted]
    paths = [raw / "labels.txt", *sorted(sensors)]
    for path in paths:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()
