"""Smoothers: turn a device's sequence of class probabilities into a steadier label.

Each smoother is a small object per device with three verbs: ``update(probs)`` takes
one decision's class probabilities, ``get()`` returns ``(class index, confidence)`` of
the label to publish now, ``reset()`` forgets everything. ``get()`` before the first
``update`` raises ``LookupError``.

- ``none``: the argmax of the newest probabilities.
- ``ema``: an exponential moving average of the probabilities (``alpha`` = weight of the
  newest); the label is its argmax.
- ``majority``: the most frequent argmax of the last ``k`` decisions (ties go to the
  most recent); confidence = that label's mean probability over them.
- ``hysteresis``: keep the current label until a new one leads for ``min_dwell``
  decisions in a row, or leads with probability >= ``switch_confidence`` once.
- ``hmm``: an HMM forward filter. The hidden state is the activity; it stays from one
  decision to the next with probability exp(-dt / D) for its mean duration D (learned
  from the training subjects' labels, times ``stickiness``) and otherwise moves to the
  others in the proportions the training labels show. The network's probabilities
  divided by the class prior are the emissions (a discriminative network's output is a
  posterior, not a likelihood). The label is the filtered state's argmax; confidence is
  its filtered probability.

The ``UNKNOWN`` threshold is applied by the engine, on top of any smoother. This module
knows probability vectors; it knows nothing about devices, labels or time.

>>> s = HysteresisSmoother(min_dwell=2, switch_confidence=0.95)
>>> published = []
>>> for p in ([0.9, 0.1], [0.2, 0.8], [0.3, 0.7]):  # class 1 must lead twice to take over
...     s.update(np.array(p))
...     published.append(s.get()[0])
>>> published
[0, 0, 1]
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np

__all__ = [
    "METHODS",
    "EmaSmoother",
    "HmmSmoother",
    "HysteresisSmoother",
    "MajoritySmoother",
    "NoSmoother",
    "Smoother",
    "hmm_transition",
    "smoother_factory",
]


class Smoother(Protocol):
    def update(self, probs: np.ndarray) -> None: ...

    def get(self) -> tuple[int, float]: ...

    def reset(self) -> None: ...


class NoSmoother:
    def __init__(self) -> None:
        self._probs: np.ndarray | None = None

    def update(self, probs: np.ndarray) -> None:
        self._probs = probs

    def get(self) -> tuple[int, float]:
        if self._probs is None:
            raise LookupError("no decision yet")
        label = int(np.argmax(self._probs))
        return label, float(self._probs[label])

    def reset(self) -> None:
        self._probs = None


class EmaSmoother:
    def __init__(self, alpha: float) -> None:
        if not 0 < alpha <= 1:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        self.alpha = alpha
        self._avg: np.ndarray | None = None

    def update(self, probs: np.ndarray) -> None:
        if self._avg is None:
            self._avg = np.array(probs, np.float64)
        else:
            self._avg = self.alpha * probs + (1 - self.alpha) * self._avg

    def get(self) -> tuple[int, float]:
        if self._avg is None:
            raise LookupError("no decision yet")
        label = int(np.argmax(self._avg))
        return label, float(self._avg[label])

    def reset(self) -> None:
        self._avg = None


class MajoritySmoother:
    def __init__(self, k: int) -> None:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.k = k
        self._recent: deque[np.ndarray] = deque(maxlen=k)

    def update(self, probs: np.ndarray) -> None:
        self._recent.append(probs)

    def get(self) -> tuple[int, float]:
        if not self._recent:
            raise LookupError("no decision yet")
        votes = [int(np.argmax(p)) for p in self._recent]
        counts = np.bincount(votes)
        tied = set(np.flatnonzero(counts == counts.max()).tolist())
        label = next(v for v in reversed(votes) if v in tied)
        return label, float(np.mean([p[label] for p in self._recent]))

    def reset(self) -> None:
        self._recent.clear()


class HysteresisSmoother:
    def __init__(self, min_dwell: int, switch_confidence: float) -> None:
        if min_dwell < 1:
            raise ValueError(f"min_dwell must be >= 1, got {min_dwell}")
        self.min_dwell = min_dwell
        self.switch_confidence = switch_confidence
        self._label: int | None = None
        self._probs: np.ndarray | None = None
        self._challenger: int | None = None
        self._lead = 0  # consecutive decisions the challenger has led

    def update(self, probs: np.ndarray) -> None:
        self._probs = probs
        best = int(np.argmax(probs))
        if self._label is None or best == self._label:
            self._label = best
            self._challenger, self._lead = None, 0
            return
        self._lead = self._lead + 1 if best == self._challenger else 1
        self._challenger = best
        if self._lead >= self.min_dwell or probs[best] >= self.switch_confidence:
            self._label = best
            self._challenger, self._lead = None, 0

    def get(self) -> tuple[int, float]:
        if self._label is None or self._probs is None:
            raise LookupError("no decision yet")
        return self._label, float(self._probs[self._label])

    def reset(self) -> None:
        self._label = self._probs = self._challenger = None
        self._lead = 0


class HmmSmoother:
    def __init__(self, transition: np.ndarray, prior: np.ndarray) -> None:
        self.transition = np.asarray(transition, np.float64)
        self.prior = np.asarray(prior, np.float64)
        self._belief: np.ndarray | None = None

    def update(self, probs: np.ndarray) -> None:
        evidence = np.asarray(probs, np.float64) / self.prior
        predicted = self.prior if self._belief is None else self._belief @ self.transition
        belief = predicted * evidence
        total = belief.sum()
        # an all-zero product (a class the network rules out entirely) falls back to it
        self._belief = belief / total if total > 0 else evidence / evidence.sum()

    def get(self) -> tuple[int, float]:
        if self._belief is None:
            raise LookupError("no decision yet")
        label = int(np.argmax(self._belief))
        return label, float(self._belief[label])

    def reset(self) -> None:
        self._belief = None


def hmm_transition(
    mean_duration_s: Sequence[float],
    transitions: Sequence[Sequence[float]],
    step_s: float,
    stickiness: float = 1.0,
) -> np.ndarray:
    """The per-decision transition matrix: stay exp(-step / (duration * stickiness)),
    leave in the proportions of ``transitions`` (rows: from; zero diagonal)."""
    follows = np.array(transitions, np.float64)
    np.fill_diagonal(follows, 0.0)
    follows /= follows.sum(axis=1, keepdims=True)
    stay = np.exp(-step_s / (np.asarray(mean_duration_s, np.float64) * stickiness))
    matrix: np.ndarray = (1.0 - stay)[:, None] * follows
    np.fill_diagonal(matrix, stay)
    return matrix


METHODS = ("none", "ema", "majority", "hysteresis", "hmm")


def smoother_factory(
    method: str,
    *,
    ema_alpha: float = 0.5,
    majority_k: int = 3,
    min_dwell: int = 2,
    switch_confidence: float = 0.9,
    hmm: tuple[np.ndarray, np.ndarray] | None = None,
) -> Callable[[], Smoother]:
    """A function that makes a fresh smoother of ``method`` for each new device.
    ``hmm``: the transition matrix per decision (``hmm_transition``) and class prior."""
    if method == "none":
        return NoSmoother
    if method == "ema":
        return lambda: EmaSmoother(ema_alpha)
    if method == "majority":
        return lambda: MajoritySmoother(majority_k)
    if method == "hysteresis":
        return lambda: HysteresisSmoother(min_dwell, switch_confidence)
    if method == "hmm":
        if hmm is None:
            raise ValueError("the hmm smoother needs activity statistics from the bundle")
        transition, prior = hmm
        return lambda: HmmSmoother(transition, prior)
    raise ValueError(f"unknown smoothing method {method!r}; choose from {METHODS}")
