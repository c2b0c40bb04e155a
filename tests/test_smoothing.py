"""One contract test over every smoother, then what makes each one itself."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harstream.core.smoothing import (
    METHODS,
    EmaSmoother,
    HysteresisSmoother,
    MajoritySmoother,
    Smoother,
    hmm_transition,
    smoother_factory,
)

# four activities of 20 s on average, each leading to the others equally; decisions 1.28 s apart
HMM = (hmm_transition([20.0] * 4, np.ones((4, 4)), 1.28), np.full(4, 0.25))
FACTORIES: dict[str, Callable[[int], Smoother]] = {m: smoother_factory(m, hmm=HMM) for m in METHODS}


class One:
    """One stream of a smoother, in slot ``slot``: the scalar view the tests read."""

    def __init__(self, smoother: Smoother, slot: int = 0) -> None:
        self.smoother = smoother
        self.slot = np.array([slot])
        smoother.resize(slot + 1)

    def update(self, probs: np.ndarray | list[float]) -> None:
        self.smoother.update(self.slot, np.asarray(probs, np.float64)[None])

    def get(self) -> tuple[int, float]:
        label, confidence = self.smoother.get(self.slot)
        return int(label[0]), float(confidence[0])

    def reset(self) -> None:
        self.smoother.reset(self.slot)


def one(method: str, classes: int = 4) -> One:
    return One(FACTORIES[method](classes))


probability_vectors = st.lists(
    st.lists(st.floats(min_value=0.01, max_value=1.0), min_size=4, max_size=4).map(
        lambda v: np.array(v) / np.sum(v)
    ),
    min_size=1,
    max_size=30,
)


@pytest.mark.parametrize("method", METHODS)
@settings(max_examples=40, deadline=None)
@given(sequence=probability_vectors)
def test_contract(method: str, sequence: list[np.ndarray]) -> None:
    smoother = one(method)
    with pytest.raises(LookupError):
        smoother.get()
    for probs in sequence:
        smoother.update(probs)
        label, confidence = smoother.get()
        assert 0 <= label < 4 and 0.0 <= confidence <= 1.0 + 1e-9
    smoother.reset()
    with pytest.raises(LookupError):
        smoother.get()
    # after a reset it behaves like a new one
    fresh = one(method)
    for probs in sequence:
        smoother.update(probs)
        fresh.update(probs)
        assert smoother.get() == fresh.get()


@pytest.mark.parametrize("method", METHODS)
@settings(max_examples=20, deadline=None)
@given(a=probability_vectors, b=probability_vectors)
def test_slots_are_independent_and_a_batch_equals_each_alone(
    method: str, a: list[np.ndarray], b: list[np.ndarray]
) -> None:
    """Two streams updated together, in slots 3 and 1 of one smoother (grown midway),
    publish what each publishes alone."""
    together = FACTORIES[method](4)
    together.resize(4)
    alone = [one(method), one(method)]
    both = np.array([3, 1])
    for i in range(max(len(a), len(b))):
        if i == 1:  # growing keeps every slot's state
            together.resize(16)
        pair = [s[i] if i < len(s) else None for s in (a, b)]
        rows = [k for k in (0, 1) if pair[k] is not None]
        slots = both[rows]
        together.update(slots, np.stack([pair[k] for k in rows]))
        labels, confidences = together.get(slots)
        for j, k in enumerate(rows):
            alone[k].update(pair[k])
            assert (int(labels[j]), float(confidences[j])) == pytest.approx(alone[k].get())


@pytest.mark.parametrize("method", METHODS)
def test_a_steady_input_settles_on_its_label(method: str) -> None:
    smoother = one(method)
    for _ in range(10):
        smoother.update(np.array([0.1, 0.2, 0.6, 0.1]))
    assert smoother.get()[0] == 2
    if method == "hmm":  # its confidence is the filtered belief, which evidence sharpens
        assert smoother.get()[1] > 0.6
    else:
        assert smoother.get()[1] == pytest.approx(0.6)


def test_ema_averages_probabilities() -> None:
    s = One(EmaSmoother(2, alpha=0.25))
    s.update(np.array([1.0, 0.0]))
    s.update(np.array([0.0, 1.0]))
    assert s.get() == (0, pytest.approx(0.75))
    s.update(np.array([0.0, 1.0]))
    s.update(np.array([0.0, 1.0]))
    assert s.get() == (1, pytest.approx(1 - 0.75**3))


def test_majority_votes_and_breaks_ties_towards_the_newest() -> None:
    s = One(MajoritySmoother(2, k=3))
    for probs in ([0.9, 0.1], [0.4, 0.6], [0.3, 0.7]):
        s.update(probs)
    assert s.get() == (1, pytest.approx((0.1 + 0.6 + 0.7) / 3))
    s = One(MajoritySmoother(2, k=2))
    s.update(np.array([0.9, 0.1]))
    s.update(np.array([0.2, 0.8]))
    assert s.get()[0] == 1  # one vote each: the newest wins


def test_hysteresis_switches_on_dwell_or_confidence() -> None:
    s = One(HysteresisSmoother(3, min_dwell=3, switch_confidence=0.9))
    s.update(np.array([0.8, 0.2, 0.0]))
    for probs in ([0.3, 0.7, 0.0], [0.3, 0.7, 0.0]):
        s.update(probs)
        assert s.get()[0] == 0  # challenger 1 has led twice, needs three
    s.update(np.array([0.3, 0.0, 0.7]))  # a different challenger restarts the count
    s.update(np.array([0.3, 0.7, 0.0]))
    assert s.get() == (0, pytest.approx(0.3))
    s.update(np.array([0.05, 0.95, 0.0]))  # confident enough to switch at once
    assert s.get() == (1, pytest.approx(0.95))


def test_unknown_method_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown smoothing method 'kalman'"):
        smoother_factory("kalman")


def test_hmm_transition_stays_for_the_mean_duration() -> None:
    matrix = hmm_transition([10.0, 40.0], [[0.0, 1.0], [1.0, 0.0]], step_s=1.0, stickiness=2.0)
    np.testing.assert_allclose(matrix.sum(axis=1), 1.0)
    np.testing.assert_allclose(np.diag(matrix), np.exp([-1.0 / 20.0, -1.0 / 80.0]))


def test_hmm_holds_through_a_blip_and_follows_a_change() -> None:
    smoother = One(smoother_factory("hmm", hmm=HMM)(4))
    walking, sitting = np.array([0.85, 0.05, 0.05, 0.05]), np.array([0.05, 0.85, 0.05, 0.05])
    published = []
    for probs in [walking] * 5 + [sitting] + [walking] * 3 + [sitting] * 4:
        smoother.update(probs)
        published.append(smoother.get()[0])
    assert published[5] == 0  # one decision against five does not switch
    assert published[-1] == 1 and published[-4:].count(1) >= 2  # four in a row do
    with pytest.raises(ValueError, match="activity statistics"):
        smoother_factory("hmm")


def test_hmm_divides_out_the_prior() -> None:
    """The network's output is a posterior: a class common in training needs more of it."""
    common = One(smoother_factory("hmm", hmm=(HMM[0], np.array([0.7, 0.1, 0.1, 0.1])))(4))
    common.update(np.array([0.55, 0.45, 0.0, 0.0]))
    assert common.get()[0] == 0  # the first belief is the network's own output
    common.update(np.array([0.55, 0.45, 0.0, 0.0]))
    assert common.get()[0] == 1  # then evidence counts as likelihood: 0.55 / 0.7 < 0.45 / 0.1
