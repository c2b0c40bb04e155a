"""Training data from the recordings, through the gateway's own preprocessing.

Every recording is preprocessed causally from its first sample by
``harstream.core.preprocessing.Preprocessor.preprocess`` (the engine's offline function),
unstandardised; the bundle's mean/std are computed here from the fitting subjects.

The split is the evaluation protocol of docs/design.md: the 9 UCI HAR test subjects are only
ever used for the final report; validation subjects come out of the other 21.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harstream.core.preprocessing import (
    ALIGNED_CHANNELS,
    CALIBRATED,
    CHANNELS,
    FilterSpec,
    Preprocessor,
    gravity_direction,
)
from harstream.evaluation.metrics import TRANSITION_TO, segments
from replay import Recording, iter_hapt
from replay.hapt import find_raw_dir
from training.splice import LIFE, segment_pool, spliced

__all__ = [
    "TEST_SUBJECTS",
    "TRAIN_SUBJECTS",
    "Prepared",
    "activity_stats",
    "class_targets",
    "data_checksum",
    "input_channels",
    "load_prepared",
    "normalization",
    "prepare",
    "protocol_windows",
    "recalibrated",
    "spliced_recordings",
    "standing_vertical",
    "turned",
    "walking_vertical",
]

TEST_SUBJECTS = (2, 4, 9, 10, 12, 13, 18, 20, 24)
TRAIN_SUBJECTS = tuple(s for s in range(1, 31) if s not in TEST_SUBJECTS)
IGNORE = -100  # target of samples outside activity 1-6 segments (not trained on)
#: HAPT id -> the id a transition leads to (7..12 -> a posture; others unchanged)
_DESTINATION = np.array([TRANSITION_TO.get(i, i) for i in range(13)], np.int64)


WALKING, STANDING = 1, 5


@dataclass(frozen=True, eq=False)
class Prepared:
    """One recording, preprocessed: features (n, C) float32 unstandardised, labels (n,).

    With the aligned inputs, ``features`` carry the recording's own standing calibration
    (``vertical``); ``without_calibration`` gives them as an uncalibrated device sees them.
    """

    subject: int | str  # a UCI subject, or a field recording's device
    experiment: str  # a UCI experiment, or a field recording's session
    features: np.ndarray
    labels: np.ndarray
    samples: np.ndarray  # the raw (n, 6) samples, for stream-level evaluation
    vertical: np.ndarray | None = None  # the standing calibration (aligned inputs)
    #: aligned inputs: per sample the unit gravity and unit total acceleration (n, 6),
    #: from which the calibrated channels follow for any other vertical (``recalibrated``)
    directions: np.ndarray | None = None


def standing_vertical(
    filtered: np.ndarray, labels: np.ndarray, rate_hz: float, seconds: float
) -> np.ndarray:
    """A standing calibration from a recording: the mean gravity direction over the first
    ``seconds`` of its first STANDING segment (what a wearer asked to stand still for a
    calibration gives), from its filtered device-frame channels (n, 9)."""
    standing = [(a, b) for activity, a, b in segments(labels) if activity == STANDING]
    if not standing:
        raise ValueError("the recording has no STANDING segment to calibrate on")
    a, b = standing[0]
    part = filtered[a : min(b, a + max(1, round(seconds * rate_hz)))]
    v = gravity_direction(part).sum(axis=0)
    unit: np.ndarray = v / np.linalg.norm(v)
    return unit


def load_prepared(
    data_dir: str | Path,
    subjects: Iterable[int],
    filters: FilterSpec,
    channels: Sequence[str] = CHANNELS,
    calibration_s: float = 5.0,
    *,
    turn: Callable[[int], np.ndarray] | None = None,
    calibration: str = "standing",
    reference: np.ndarray | None = None,
) -> list[Prepared]:
    """The subjects' recordings, preprocessed (unstandardised). ``turn(i)``: a rotation
    of the i-th recording's device, applied to both sensors before anything else.

    With the aligned inputs each recording gets a ``calibration``: ``standing`` (the
    first ``calibration_s`` of its first STANDING segment; a recording without one,
    such as subject 10's walking-only exp21, takes the subject's first one with it: the
    same phone on the same belt, turned the same way; none at all: uncalibrated),
    ``reference`` (the vertical ``reference``) or ``none``.
    """
    return prepare(
        list(iter_hapt(data_dir, subjects=subjects)),
        filters,
        channels,
        calibration_s,
        turn=turn,
        calibration=calibration,
        reference=reference,
    )


def prepare(
    raw: Sequence[Recording],
    filters: FilterSpec,
    channels: Sequence[str] = CHANNELS,
    calibration_s: float = 5.0,
    *,
    turn: Callable[[int], np.ndarray] | None = None,
    calibration: str = "standing",
    reference: np.ndarray | None = None,
) -> list[Prepared]:
    """``load_prepared`` for recordings already in memory (HAPT experiments, or streams
    spliced from them: ``training.splice``)."""
    pre = Preprocessor(filters, channels=channels)
    out = []
    for index, r in enumerate(raw):
        rotation = None if turn is None else turn(index)
        samples = r.samples if rotation is None else turned(r.samples, rotation)
        _, filtered = pre.filter(None, samples[None])
        vertical = None
        if pre.aligned and calibration == "standing":
            stands = [c for c in (r, *raw) if c.subject == r.subject and STANDING in c.labels]
            if stands:
                standing = filtered
                if stands[0] is not r:
                    source = stands[0].samples
                    source = source if rotation is None else turned(source, rotation)
                    _, standing = pre.filter(None, source[None])
                vertical = standing_vertical(
                    standing[0], stands[0].labels, filters.rate_hz, calibration_s
                )
        elif pre.aligned and calibration == "reference":
            vertical = reference
        features = pre.inputs(filtered, None if vertical is None else vertical[None])[0]
        directions = _directions(filtered[0]) if pre.aligned else None
        out.append(
            Prepared(r.subject, r.experiment, features, r.labels, samples, vertical, directions)
        )
    return out


def _directions(device: np.ndarray) -> np.ndarray:
    """Unit gravity and unit total acceleration per sample (n, 6) float32, from the
    filtered device-frame channels (n, 9)."""
    total = device[:, 6:9]
    unit = total / np.maximum(np.linalg.norm(total, axis=1, keepdims=True), 1e-9)
    return np.concatenate([gravity_direction(device), unit], axis=1).astype(np.float32)


def recalibrated(features: np.ndarray, directions: np.ndarray, vertical: np.ndarray) -> np.ndarray:
    """Aligned ``features`` (n, C) as read with another calibrated ``vertical`` (3,):
    their calibrated channels (tilt, acc_tilt, calibrated) recomputed from ``directions``
    (``Prepared.directions``), the rest unchanged; ``aligned_inputs`` does the same."""
    out = np.array(features, np.float64)
    out[:, CALIBRATED] = np.stack(
        [directions[:, :3] @ vertical, directions[:, 3:] @ vertical, np.ones(len(out))], axis=1
    )
    return out


def walking_vertical(
    directions: np.ndarray,
    labels: np.ndarray,
    rng: np.random.Generator,
    *,
    rate_hz: float,
    seconds: tuple[float, float],
) -> np.ndarray | None:
    """A vertical as calibration from walking learns it: the mean gravity direction over
    a random stretch of ``seconds`` (drawn in that range, at most the segment) of a random
    WALKING segment of the recording; None when it has no walking that long."""
    shortest = round(seconds[0] * rate_hz)
    walks = [(a, b) for act, a, b in segments(labels) if act == WALKING and b - a >= shortest]
    if not walks:
        return None
    a, b = walks[int(rng.integers(len(walks)))]
    n = min(b - a, round(rng.uniform(*seconds) * rate_hz))
    start = a + int(rng.integers(0, b - a - n + 1))
    v = directions[start : start + n, :3].astype(np.float64).sum(axis=0)
    unit: np.ndarray = v / np.linalg.norm(v)
    return unit


def spliced_recordings(
    recordings: Sequence[Prepared],
    per_subject: int,
    *,
    filters: FilterSpec,
    channels: Sequence[str],
    calibration_s: float,
    crop: tuple[float, float],
    seed: int,
) -> list[Prepared]:
    """``per_subject`` random-order streams (``training.splice``) of each subject's
    segments, as many segments long as the subject recorded, preprocessed and calibrated
    like its recordings."""
    made = []
    for subject in sorted({r.subject for r in recordings}, key=str):
        mine = [r for r in recordings if r.subject == subject]
        pool = segment_pool(
            Recording(int(subject), r.experiment, r.samples, r.labels) for r in mine
        )
        wanted = sum(1 for r in mine for a, _, _ in segments(r.labels) if 1 <= a <= 6)
        for k in range(per_subject):
            s = spliced(pool, np.random.default_rng([seed, int(subject), k]), wanted, crop=crop)
            made.append(Recording(int(subject), f"spliced{k}", s.samples, s.labels))
    return prepare(made, filters, channels, calibration_s)


def turned(samples: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """Raw (n, 6) samples of a device turned by ``rotation``: both sensors rotate."""
    return np.concatenate([samples[:, :3] @ rotation.T, samples[:, 3:] @ rotation.T], axis=1)


def input_channels(inputs: str) -> tuple[str, ...]:
    """The channel names of ``train.inputs``."""
    return ALIGNED_CHANNELS if inputs == "aligned" else CHANNELS


def normalization(recordings: Sequence[Prepared]) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std over every sample of the given recordings (a constant
    channel, such as ``calibrated``, keeps std 1)."""
    stacked = np.concatenate([r.features for r in recordings]).astype(np.float64)
    std = stacked.std(axis=0)
    return stacked.mean(axis=0), np.where(std > 1e-9, std, 1.0)


def activity_stats(
    recordings: Sequence[Prepared],
    n_classes: int,
    *,
    duration_s: float,
    graph: Mapping[int, Sequence[int]] = LIFE,
    elsewhere: float = 0.1,
) -> dict[str, list[Any]]:
    """What the HMM smoother needs (``ActivityStats`` in the bundle), with no script in
    it: one mean activity duration ``duration_s`` for every class (not the lab's segment
    lengths), successors uniform over the real-life ``graph`` (``training.splice.LIFE``)
    with weight ``elsewhere`` for every other class (no switch is impossible: a decision
    every 1.28 s can skip a short activity), and each class's share of the samples the
    network was trained on (``recordings``) as its prior."""
    follows = np.full((n_classes, n_classes), elsewhere)
    for a, successors in graph.items():
        for b in successors:
            follows[a - 1, b - 1] = 1.0
    np.fill_diagonal(follows, 0.0)
    labels = np.concatenate([np.asarray(r.labels) for r in recordings])
    counts = np.array([np.sum(labels == c + 1) for c in range(n_classes)], np.float64) + 1.0
    return {
        "mean_duration_s": [float(duration_s)] * n_classes,
        "transitions": (follows / follows.sum(axis=1, keepdims=True)).tolist(),
        "prior": (counts / counts.sum()).tolist(),
    }


def class_targets(labels: np.ndarray, transitions: str = "ignore") -> np.ndarray:
    """Per-sample class ids: activity 1..6 -> 0..5, anything else -> IGNORE; with
    ``transitions="destination"`` a postural transition (7..12) -> the posture it leads to.

    >>> class_targets(np.array([0, 5, 7, 4]), "destination").tolist()
    [-100, 4, 3, 3]
    """
    labels = np.asarray(labels, np.int64)
    if transitions == "destination":
        labels = np.where(labels >= 7, _DESTINATION[np.clip(labels, 0, 12)], labels)
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
