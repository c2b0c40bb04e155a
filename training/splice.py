"""Streams in life's order: a subject's own labelled segments spliced along a graph of
real-life activity changes.

Every HAPT subject performed one scripted sequence (stand, sit, stand, lie, sit, lie,
stand, then walking and alternating stairs), and a model or smoother fitted to whole
recordings learns that script. A spliced stream takes the subject's own activity 1-6
segments (raw samples, as recorded) and joins them in a seeded random order along
``LIFE``: walking <-> standing, walking <-> up / downstairs, and standing <-> sitting
<-> lying through one of the subject's own recorded postural transitions (7-12) between
two postures (kept in the stream with their labels: they are not scored). The
*lab-cut control* cuts the same recordings by their labels and joins the segments
back in the lab's order, so the two differ by the order alone.

Pure numpy over ``replay.Recording`` objects: no files, no models.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from harstream.evaluation.metrics import segments
from replay import ACTIVITIES, Recording

__all__ = [
    "LIFE",
    "TRANSITION",
    "SegmentPool",
    "Splice",
    "change_counts",
    "lab_cut",
    "segment_pool",
    "spliced",
]

WALKING, UPSTAIRS, DOWNSTAIRS, SITTING, STANDING, LAYING = range(1, 7)

#: Which activity may follow which in a day (no script: each successor equally likely).
LIFE: Mapping[int, tuple[int, ...]] = {
    WALKING: (STANDING, UPSTAIRS, DOWNSTAIRS),
    UPSTAIRS: (WALKING,),
    DOWNSTAIRS: (WALKING,),
    STANDING: (WALKING, SITTING, LAYING),
    SITTING: (STANDING, LAYING),
    LAYING: (SITTING, STANDING),
}

#: The recorded postural transition (HAPT activity id) between two postures.
TRANSITION: Mapping[tuple[int, int], int] = {
    (STANDING, SITTING): 7,
    (SITTING, STANDING): 8,
    (SITTING, LAYING): 9,
    (LAYING, SITTING): 10,
    (STANDING, LAYING): 11,
    (LAYING, STANDING): 12,
}


@dataclass
class SegmentPool:
    """One subject's labelled pieces: raw samples per HAPT activity id (1-12)."""

    subject: int
    pieces: dict[int, list[np.ndarray]] = field(default_factory=dict)

    def missing(self) -> list[str]:
        """The activities and transitions this subject has no segment of (named)."""
        wanted = [*LIFE, *TRANSITION.values()]
        return [ACTIVITIES[a] for a in wanted if not self.pieces.get(a)]


def segment_pool(recordings: Iterable[Recording]) -> SegmentPool:
    """The labelled segments (1-12) of one subject's recordings."""
    recordings = list(recordings)
    subjects = {r.subject for r in recordings}
    if len(subjects) != 1:
        raise ValueError(f"a segment pool is one subject's, got {sorted(subjects)}")
    pool = SegmentPool(subjects.pop())
    for r in recordings:
        for activity, a, b in segments(r.labels):
            pool.pieces.setdefault(activity, []).append(r.samples[a:b])
    return pool


@dataclass(frozen=True)
class Splice:
    """A stream made of segments: raw (n, 6) samples, per-sample labels (1-12), and the
    activity changes it holds ((from, to) per join between two activity 1-6 segments)."""

    samples: np.ndarray
    labels: np.ndarray
    changes: tuple[tuple[int, int], ...]


def spliced(
    pool: SegmentPool,
    rng: np.random.Generator,
    segments_wanted: int,
    *,
    crop: tuple[float, float] = (1.0, 1.0),
    graph: Mapping[int, Sequence[int]] = LIFE,
) -> Splice:
    """A random walk over ``graph`` of ``segments_wanted`` activity segments, each one of
    the subject's own (each segment used once before any is used again), with the
    subject's recorded transition between two postures.

    ``crop`` (low, high): each segment is cut to a random share in that range of its
    length (at a random place), so durations vary as in life; (1, 1) keeps them whole.
    Activities or transitions the subject lacks are left out of the walk (an activity
    whose posture change has no recorded transition is reached another way, if any).
    """
    have = {a for a in graph if pool.pieces.get(a)}
    if not have:
        raise ValueError(f"subject {pool.subject} has no activity 1-6 segment")
    decks: dict[int, list[int]] = {}

    def draw(activity: int) -> np.ndarray:
        deck = decks.get(activity)
        if not deck:
            deck = decks[activity] = list(rng.permutation(len(pool.pieces[activity])))
        piece = pool.pieces[activity][deck.pop()]
        share = rng.uniform(*crop)
        length = max(1, min(len(piece), round(len(piece) * share)))
        start = int(rng.integers(0, len(piece) - length + 1))
        return piece[start : start + length]

    def reachable(a: int, b: int) -> bool:
        if b not in have:
            return False
        kind = TRANSITION.get((a, b))
        return kind is None or bool(pool.pieces.get(kind))

    current = int(rng.choice(sorted(have)))
    parts: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    changes: list[tuple[int, int]] = []
    for index in range(segments_wanted):
        if index:
            options = [b for b in graph[current] if reachable(current, b)]
            if not options:
                break
            following = int(rng.choice(options))
            kind = TRANSITION.get((current, following))
            if kind is not None:
                move = draw(kind)
                parts.append(move)
                labels.append(np.full(len(move), kind, np.int8))
            changes.append((current, following))
            current = following
        piece = draw(current)
        parts.append(piece)
        labels.append(np.full(len(piece), current, np.int8))
    return Splice(np.concatenate(parts), np.concatenate(labels), tuple(changes))


def lab_cut(recording: Recording) -> Splice:
    """The control: ``recording`` cut by its labels (1-12) and joined in its own order
    (the unlabelled stretches between segments left out)."""
    pieces = segments(recording.labels)
    if not pieces:
        raise ValueError(f"{recording.experiment} has no labelled segment")
    basics = [p[0] for p in pieces if 1 <= p[0] <= 6]
    changes = tuple((a, b) for a, b in itertools.pairwise(basics) if a != b)
    return Splice(
        np.concatenate([recording.samples[a:b] for _, a, b in pieces]),
        np.concatenate([recording.labels[a:b] for _, a, b in pieces]),
        changes,
    )


def change_counts(splices: Iterable[Splice]) -> Counter[tuple[int, int]]:
    """How often each activity change occurs in the given streams."""
    return Counter(change for s in splices for change in s.changes)
