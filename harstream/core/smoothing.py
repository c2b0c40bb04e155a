"""Smoothers: turn each device's sequence of class probabilities into a steadier label.

A smoother serves many streams at once, each in a slot (the engine's device slots):
its state is a few arrays indexed by slot, so that a batch of decisions from many
devices is a few numpy operations. Three verbs: ``update(slots, probs)`` takes one
decision per slot (``slots`` distinct, ``probs`` (k, classes)), ``get(slots)`` returns
the label to publish now and the confidence in it, per slot, ``reset(slots)`` forgets
those slots. ``resize(capacity)`` makes room for more slots (new ones start reset).
``get`` of a slot without an update since its reset raises ``LookupError``.

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
knows probability vectors and slots; it knows nothing about devices, labels or time.

>>> s = HysteresisSmoother(classes=2, min_dwell=2, switch_confidence=0.95)
>>> s.resize(2)
>>> one = np.array([0])
>>> published = []
>>> for p in ([0.9, 0.1], [0.2, 0.8], [0.3, 0.7]):  # class 1 must lead twice to take over
...     s.update(one, np.array([p]))
...     published.append(int(s.get(one)[0][0]))
>>> published
[0, 0, 1]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np

from harstream.core.slots import SlotArrays, Spec

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
    def update(self, slots: np.ndarray, probs: np.ndarray) -> None: ...

    def get(self, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...

    def reset(self, slots: np.ndarray) -> None: ...

    def resize(self, capacity: int) -> None: ...


class _Slotted(SlotArrays):
    """Per-slot arrays (``harstream.core.slots``) plus ``_seen``: slots updated since
    their reset."""

    def __init__(self, arrays: dict[str, Spec]) -> None:
        super().__init__({"_seen": ((), bool, False), **arrays})
        self._seen: np.ndarray

    def _check(self, slots: np.ndarray) -> None:
        if not self._seen[slots].all():
            raise LookupError("no decision yet")


def _argmax_and_value(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    label = np.argmax(values, axis=1)
    return label, values[np.arange(len(values)), label].astype(np.float64)


class NoSmoother(_Slotted):
    def __init__(self, classes: int) -> None:
        super().__init__({"_probs": ((classes,), np.float64, 0.0)})
        self._probs: np.ndarray

    def update(self, slots: np.ndarray, probs: np.ndarray) -> None:
        self._probs[slots] = probs
        self._seen[slots] = True

    def get(self, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self._check(slots)
        return _argmax_and_value(self._probs[slots])


class EmaSmoother(_Slotted):
    def __init__(self, classes: int, alpha: float) -> None:
        if not 0 < alpha <= 1:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        super().__init__({"_avg": ((classes,), np.float64, 0.0)})
        self._avg: np.ndarray
        self.alpha = alpha

    def update(self, slots: np.ndarray, probs: np.ndarray) -> None:
        seen = self._seen[slots, None]
        self._avg[slots] = np.where(
            seen, self.alpha * probs + (1 - self.alpha) * self._avg[slots], probs
        )
        self._seen[slots] = True

    def get(self, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self._check(slots)
        return _argmax_and_value(self._avg[slots])


class MajoritySmoother(_Slotted):
    """The last ``k`` probability vectors per slot, newest last (shifted on update)."""

    def __init__(self, classes: int, k: int) -> None:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        super().__init__({"_recent": ((k, classes), np.float64, np.nan)})
        self._recent: np.ndarray
        self.k = k

    def update(self, slots: np.ndarray, probs: np.ndarray) -> None:
        recent = self._recent[slots]
        self._recent[slots] = np.concatenate([recent[:, 1:], probs[:, None]], axis=1)
        self._seen[slots] = True

    def get(self, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self._check(slots)
        recent = self._recent[slots]  # (m, k, classes); NaN rows: fewer than k so far
        valid = ~np.isnan(recent[:, :, 0])
        classes = recent.shape[2]
        votes = np.argmax(np.nan_to_num(recent, nan=-1.0), axis=2)  # (m, k)
        counts = ((votes[:, :, None] == np.arange(classes)) & valid[:, :, None]).sum(
            axis=1
        )  # (m, classes)
        tied = counts == counts.max(axis=1, keepdims=True)
        # ties go to the newest vote among the tied labels
        rows = np.arange(len(slots))[:, None]
        eligible = valid & tied[rows, votes]
        newest = self.k - 1 - np.argmax(eligible[:, ::-1], axis=1)
        label = votes[np.arange(len(slots)), newest]
        chosen = np.where(valid, recent[np.arange(len(slots)), :, label], 0.0)  # (m, k)
        return label, chosen.sum(axis=1) / valid.sum(axis=1)


class HysteresisSmoother(_Slotted):
    def __init__(self, classes: int, min_dwell: int, switch_confidence: float) -> None:
        if min_dwell < 1:
            raise ValueError(f"min_dwell must be >= 1, got {min_dwell}")
        super().__init__(
            {
                "_label": ((), np.int64, -1),
                "_probs": ((classes,), np.float64, 0.0),
                "_challenger": ((), np.int64, -1),
                "_lead": ((), np.int64, 0),  # consecutive decisions the challenger has led
            }
        )
        self._label: np.ndarray
        self._probs: np.ndarray
        self._challenger: np.ndarray
        self._lead: np.ndarray
        self.min_dwell = min_dwell
        self.switch_confidence = switch_confidence

    def update(self, slots: np.ndarray, probs: np.ndarray) -> None:
        self._probs[slots] = probs
        best = np.argmax(probs, axis=1)
        label, challenger = self._label[slots], self._challenger[slots]
        holds = (label < 0) | (best == label)
        lead = np.where(best == challenger, self._lead[slots] + 1, 1)
        switch = ~holds & (
            (lead >= self.min_dwell)
            | (probs[np.arange(len(slots)), best] >= self.switch_confidence)
        )
        settled = holds | switch  # the label is (now) the best: no challenger
        self._label[slots] = np.where(settled, best, label)
        self._challenger[slots] = np.where(settled, -1, best)
        self._lead[slots] = np.where(settled, 0, lead)
        self._seen[slots] = True

    def get(self, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self._check(slots)
        label = self._label[slots]
        return label, self._probs[slots, label]


class HmmSmoother(_Slotted):
    def __init__(self, transition: np.ndarray, prior: np.ndarray) -> None:
        self.transition = np.asarray(transition, np.float64)
        self.prior = np.asarray(prior, np.float64)
        super().__init__({"_belief": ((len(self.prior),), np.float64, 0.0)})
        self._belief: np.ndarray

    def update(self, slots: np.ndarray, probs: np.ndarray) -> None:
        evidence = np.asarray(probs, np.float64) / self.prior
        seen = self._seen[slots, None]
        predicted = np.where(seen, self._belief[slots] @ self.transition, self.prior)
        belief = predicted * evidence
        total = belief.sum(axis=1, keepdims=True)
        # an all-zero product (a class the network rules out entirely) falls back to it
        fallback = evidence / evidence.sum(axis=1, keepdims=True)
        self._belief[slots] = np.where(total > 0, belief / np.where(total > 0, total, 1), fallback)
        self._seen[slots] = True

    def get(self, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self._check(slots)
        return _argmax_and_value(self._belief[slots])


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
) -> Callable[[int], Smoother]:
    """A function that makes the smoother of ``method`` for ``classes`` classes (the
    engine makes one, for all its devices). ``hmm``: the transition matrix per decision
    (``hmm_transition``) and the class prior."""
    if method == "none":
        return NoSmoother
    if method == "ema":
        return lambda classes: EmaSmoother(classes, ema_alpha)
    if method == "majority":
        return lambda classes: MajoritySmoother(classes, majority_k)
    if method == "hysteresis":
        return lambda classes: HysteresisSmoother(classes, min_dwell, switch_confidence)
    if method == "hmm":
        if hmm is None:
            raise ValueError("the hmm smoother needs activity statistics from the bundle")
        transition, prior = hmm
        return lambda classes: HmmSmoother(transition, prior)
    raise ValueError(f"unknown smoothing method {method!r}; choose from {METHODS}")
