"""The evaluation protocol's stream-level numbers, one definition for train, evaluate,
replay and bench (the window-level ones are scikit-learn's, in ``training.metrics``).

Stream level (what a subscriber sees), per recording with per-sample truth in HAPT
activity ids (0 unlabelled, 1..6 basic, 7..12 transitions):

- the *label in force* at sample i is the latest published decision whose ``seq`` <= i;
- online accuracy = share of samples inside activity 1-6 segments, after the first
  decision, whose label in force equals the truth;
- detection delay = for each activity 1-6 segment lasting >= 5 s, seconds from its
  start until the label in force first equals its activity (a miss if that never
  happens before the segment ends);
- switches per hour of the published label, next to the true switches per hour (changes
  of activity between consecutive activity 1-6 segments), and where the published ones
  fall: inside a postural transition (7-12) or in an unlabelled stretch (0), by the
  truth at the decision's ``seq`` (in lab order most fall between the script's segments,
  where the wearer does what no label names and the true rate counts nothing);
- per step (a change from activity A to B between consecutive activity 1-6 segments):
  the share of B's segment whose label in force is B (``step_accuracy``);
- postural transitions as events: the share of recorded transitions (7-12) after which
  the label in force reaches the posture they lead to by ``POSTURE_WITHIN_S`` after
  their end, and the published changes between two postures that no recorded
  transition explains (false posture changes, per hour).

Pure numpy: no files, no models. ``StreamScore`` objects add up across recordings.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "MIN_SEGMENT_S",
    "POSTURES",
    "POSTURE_WITHIN_S",
    "TRANSITION_TO",
    "StreamScore",
    "label_in_force",
    "score_stream",
    "segments",
]

MIN_SEGMENT_S = 5.0
NO_LABEL = -1
POSTURES = (4, 5, 6)  # SITTING, STANDING, LAYING
#: The posture each HAPT transition (7-12) leads to.
TRANSITION_TO = {7: 4, 8: 5, 9: 6, 10: 4, 11: 6, 12: 5}
POSTURE_WITHIN_S = 3.0


def label_in_force(
    n: int, seqs: Sequence[int] | np.ndarray, labels: Sequence[int] | np.ndarray
) -> np.ndarray:
    """(n,) label in force at each sample; NO_LABEL (-1) before the first decision.

    >>> label_in_force(6, [1, 3], [4, 5]).tolist()
    [-1, 4, 4, 5, 5, 5]
    """
    out = np.full(n, NO_LABEL, np.int64)
    seqs = np.asarray(seqs, np.int64)
    labels = np.asarray(labels, np.int64)
    if len(seqs) == 0:
        return out
    if np.any(np.diff(seqs) < 0):
        raise ValueError("decision seqs must be non-decreasing")
    index = np.searchsorted(seqs, np.arange(n), side="right") - 1
    valid = index >= 0
    out[valid] = labels[index[valid]]
    return out


@dataclass
class StreamScore:
    """Sums over one or more recordings; properties give the protocol's figures."""

    samples: int = 0
    scored: int = 0  # samples in activity 1-6 segments after the first decision
    correct: int = 0
    duration_s: float = 0.0
    delays_s: list[float] = field(default_factory=list)
    misses: int = 0
    switches_pred: int = 0
    switches_true: int = 0
    switches_in_transitions: int = 0  # published switches inside a transition (7-12)
    switches_unlabelled: int = 0  # ... and in an unlabelled stretch (0)
    decisions: int = 0
    truth: list[np.ndarray] = field(default_factory=list, repr=False)  # scored samples
    pred: list[np.ndarray] = field(default_factory=list, repr=False)
    #: (from, to) activity ids -> [samples right, samples] over the segments after it
    steps: dict[tuple[int, int], list[int]] = field(default_factory=dict)
    posture_transitions: int = 0
    posture_detected: int = 0
    posture_false: int = 0

    def __add__(self, other: StreamScore) -> StreamScore:
        return StreamScore(
            samples=self.samples + other.samples,
            scored=self.scored + other.scored,
            correct=self.correct + other.correct,
            duration_s=self.duration_s + other.duration_s,
            delays_s=self.delays_s + other.delays_s,
            misses=self.misses + other.misses,
            switches_pred=self.switches_pred + other.switches_pred,
            switches_true=self.switches_true + other.switches_true,
            switches_in_transitions=self.switches_in_transitions + other.switches_in_transitions,
            switches_unlabelled=self.switches_unlabelled + other.switches_unlabelled,
            decisions=self.decisions + other.decisions,
            truth=self.truth + other.truth,
            pred=self.pred + other.pred,
            steps={
                k: [
                    a + b
                    for a, b in zip(
                        self.steps.get(k, [0, 0]), other.steps.get(k, [0, 0]), strict=True
                    )
                ]
                for k in self.steps.keys() | other.steps.keys()
            },
            posture_transitions=self.posture_transitions + other.posture_transitions,
            posture_detected=self.posture_detected + other.posture_detected,
            posture_false=self.posture_false + other.posture_false,
        )

    @property
    def online_accuracy(self) -> float:
        return self.correct / self.scored if self.scored else 0.0

    def macro_f1(self, classes: Sequence[int] = range(1, 7)) -> float:
        """Macro-F1 of the label in force over the scored samples (activity ids)."""
        if not self.truth:
            return 0.0
        truth, pred = np.concatenate(self.truth), np.concatenate(self.pred)
        scores = []
        for c in classes:
            tp = np.sum((truth == c) & (pred == c))
            fp = np.sum((truth != c) & (pred == c))
            fn = np.sum((truth == c) & (pred != c))
            if tp + fn == 0:
                continue
            scores.append(2 * tp / (2 * tp + fp + fn))
        return float(np.mean(scores)) if scores else 0.0

    def recall(self, classes: Sequence[int] = range(1, 7)) -> dict[int, float]:
        if not self.truth:
            return {}
        truth, pred = np.concatenate(self.truth), np.concatenate(self.pred)
        return {c: float(np.mean(pred[truth == c] == c)) for c in classes if np.any(truth == c)}

    def step_accuracy(self) -> dict[tuple[int, int], float]:
        """Per step (from, to): the share of the following segments' samples right."""
        return {k: right / total for k, (right, total) in sorted(self.steps.items()) if total}

    @property
    def posture_detection(self) -> float | None:
        if not self.posture_transitions:
            return None
        return self.posture_detected / self.posture_transitions

    @property
    def false_posture_changes_per_hour(self) -> float:
        return self.posture_false / (self.duration_s / 3600) if self.duration_s else 0.0

    def delay_percentile(self, q: float) -> float | None:
        return float(np.percentile(self.delays_s, q)) if self.delays_s else None

    @property
    def switches_per_hour_pred(self) -> float:
        return self.per_hour(self.switches_pred)

    @property
    def switches_per_hour_true(self) -> float:
        return self.per_hour(self.switches_true)

    def per_hour(self, count: int) -> float:
        return count / (self.duration_s / 3600) if self.duration_s else 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "samples": self.samples,
            "duration_s": round(self.duration_s, 2),
            "decisions": self.decisions,
            "online_accuracy": round(self.online_accuracy, 4),
            "macro_f1": round(self.macro_f1(), 4),
            "detection_delay_s_median": _round(self.delay_percentile(50)),
            "detection_delay_s_p90": _round(self.delay_percentile(90)),
            "detection_misses": self.misses,
            "segments_scored": len(self.delays_s) + self.misses,
            "switches_per_hour_pred": round(self.switches_per_hour_pred, 1),
            "switches_per_hour_true": round(self.switches_per_hour_true, 1),
            "switches_per_hour_in_transitions": round(
                self.per_hour(self.switches_in_transitions), 1
            ),
            "switches_per_hour_unlabelled": round(self.per_hour(self.switches_unlabelled), 1),
            "posture_transitions": self.posture_transitions,
            "posture_detected_within_3s": _round(self.posture_detection),
            "false_posture_changes_per_hour": round(self.false_posture_changes_per_hour, 1),
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def score_stream(
    truth: np.ndarray,
    seqs: Sequence[int] | np.ndarray,
    labels: Sequence[int] | np.ndarray,
    rate_hz: float = 50.0,
) -> StreamScore:
    """Score one recording: ``truth`` (n,) activity ids; decisions as their ``seqs`` and
    published activity ids (0 for UNKNOWN, which never equals a truth)."""
    n = len(truth)
    truth = np.asarray(truth, np.int64)
    force = label_in_force(n, seqs, labels)
    basic = (truth >= 1) & (truth <= 6)
    scored = basic & (force != NO_LABEL)
    score = StreamScore(
        samples=n,
        scored=int(scored.sum()),
        correct=int(np.sum(scored & (force == truth))),
        duration_s=n / rate_hz,
        decisions=len(seqs),
        truth=[truth[scored]],
        pred=[force[scored]],
    )
    published = np.asarray(labels, np.int64)
    switched = np.flatnonzero(published[1:] != published[:-1]) + 1
    score.switches_pred = len(switched)
    at = truth[np.minimum(np.asarray(seqs, np.int64)[switched], n - 1)] if n else switched
    score.switches_in_transitions = int(np.sum(at >= 7))
    score.switches_unlabelled = int(np.sum(at == 0))
    basics = [s for s in segments(truth) if 1 <= s[0] <= 6]
    score.switches_true = sum(1 for a, b in itertools.pairwise(basics) if a[0] != b[0])
    for activity, start, stop in basics:
        if (stop - start) / rate_hz < MIN_SEGMENT_S:
            continue
        hits = np.flatnonzero(force[start:stop] == activity)
        if len(hits):
            score.delays_s.append(float(hits[0] / rate_hz))
        else:
            score.misses += 1
    for (before, _, _), (after, start, stop) in itertools.pairwise(basics):
        if before != after:
            right = int(np.sum(force[start:stop] == after))
            tally = score.steps.setdefault((before, after), [0, 0])
            tally[0] += right
            tally[1] += stop - start
    _score_postures(score, truth, np.asarray(seqs, np.int64), published, force, rate_hz)
    return score


def _score_postures(
    score: StreamScore,
    truth: np.ndarray,
    seqs: np.ndarray,
    published: np.ndarray,
    force: np.ndarray,
    rate_hz: float,
) -> None:
    """Postural transitions as events (module docstring): detected ones, false changes."""
    within = round(POSTURE_WITHIN_S * rate_hz)
    explained = []  # (first, last) sample where a change to the posture is expected
    for activity, start, stop in segments(truth):
        posture = TRANSITION_TO.get(activity)
        if posture is None:
            continue
        end = min(len(truth), stop + within)
        explained.append((start, end, posture))
        score.posture_transitions += 1
        score.posture_detected += int(np.any(force[start:end] == posture))
    if len(published) < 2:
        return
    changed = np.flatnonzero(published[1:] != published[:-1]) + 1
    for i in changed:
        old, new, at = published[i - 1], published[i], seqs[i]
        if (
            old in POSTURES
            and new in POSTURES
            and not any(a <= at < b and new == posture for a, b, posture in explained)
        ):
            score.posture_false += 1


def segments(labels: np.ndarray) -> list[tuple[int, int, int]]:
    """Runs of equal label as ``(label, start, stop)``, stop exclusive, label 0 skipped.

    >>> segments(np.array([0, 4, 4, 5, 5, 0]))
    [(4, 1, 3), (5, 3, 5)]
    """
    if len(labels) == 0:
        return []
    edges = np.flatnonzero(np.diff(labels)) + 1
    starts = np.concatenate(([0], edges))
    stops = np.concatenate((edges, [len(labels)]))
    return [
        (int(labels[a]), int(a), int(b)) for a, b in zip(starts, stops, strict=True) if labels[a]
    ]
