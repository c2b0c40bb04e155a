"""The life-order protocol: streams spliced from a subject's own segments along the
real-life graph, the lab-cut control, and the step and posture-event figures."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from harstream.cli import main
from harstream.evaluation.metrics import score_stream, segments
from replay import ACTIVITIES, Recording, iter_hapt
from training.splice import LIFE, TRANSITION, lab_cut, segment_pool, spliced

DEMO = Path(__file__).resolve().parent.parent / "replay" / "demo"  # test subject 9, whole


def _recording(plan: list[tuple[int, int]], subject: int = 1, experiment: str = "e1") -> Recording:
    """A recording of (activity, samples) runs whose samples say where they came from:
    column 0 holds the sample's index in the recording."""
    labels = np.concatenate([np.full(n, a, np.int8) for a, n in plan])
    samples = np.zeros((len(labels), 6))
    samples[:, 0] = np.arange(len(labels))
    return Recording(subject, experiment, samples, labels)


LAB = [(5, 100), (7, 20), (4, 90), (8, 20), (5, 80), (11, 25), (6, 110), (10, 20), (4, 70)]
LAB += [(9, 20), (6, 60), (12, 20), (5, 50), (0, 30), (1, 120), (0, 10), (3, 60), (2, 70)]


def _basic_runs(labels: np.ndarray) -> list[int]:
    return [a for a, _, _ in segments(labels) if 1 <= a <= 6]


def test_spliced_streams_follow_life_and_cross_postures_through_transitions() -> None:
    pool = segment_pool([_recording(LAB)])
    assert pool.missing() == []
    for seed in range(20):
        s = spliced(pool, np.random.default_rng(seed), 12)
        runs = [(a, b - c) for a, c, b in segments(s.labels)]
        basics = _basic_runs(s.labels)
        assert len(basics) == 12 and len(s.samples) == len(s.labels)
        assert list(s.changes) == list(itertools.pairwise(basics))
        for a, b in s.changes:
            assert b in LIFE[a]
        # a recorded transition of the right kind sits between two postures, nowhere else
        kinds = [a for a, _ in runs if a > 6]
        assert kinds == [TRANSITION[c] for c in s.changes if c in TRANSITION]
        # every sample comes from the recording with its own label
        source = _recording(LAB)
        assert np.array_equal(source.labels[s.samples[:, 0].astype(int)], s.labels)


def test_each_segment_is_used_once_before_any_is_used_again() -> None:
    plan = [(1, 50), (0, 5), (1, 51), (0, 5), (1, 52), (0, 5), (5, 40), (0, 5), (2, 30)]
    plan += [(0, 5), (3, 31)]
    pool = segment_pool([_recording(plan)])
    s = spliced(pool, np.random.default_rng(3), 40)
    walking = [b - a for act, a, b in segments(s.labels) if act == 1]
    for first in range(0, len(walking) - 2, 3):
        assert sorted(walking[first : first + 3]) == [50, 51, 52]


def test_crops_vary_durations_within_the_segment() -> None:
    pool = segment_pool([_recording(LAB)])
    s = spliced(pool, np.random.default_rng(0), 30, crop=(0.3, 0.6))
    for activity, a, b in segments(s.labels):
        if activity <= 6:
            whole = max(n for act, n in LAB if act == activity)
            assert b - a <= round(0.6 * whole)


def test_a_subject_missing_an_activity_or_transition_still_gets_streams() -> None:
    no_lying = [(a, n) for a, n in LAB if a not in (6, 9, 10, 11, 12)]
    pool = segment_pool([_recording(no_lying)])
    assert set(pool.missing()) == {
        "LAYING",
        "SIT_TO_LIE",
        "LIE_TO_SIT",
        "STAND_TO_LIE",
        "LIE_TO_STAND",
    }
    s = spliced(pool, np.random.default_rng(1), 15)
    assert 6 not in s.labels and len(_basic_runs(s.labels)) == 15
    # without SIT_TO_STAND, sitting is left only by the way that remains (none here: the
    # walk ends there rather than invent a join)
    stuck = [(a, n) for a, n in no_lying if a != 8]
    s = spliced(segment_pool([_recording(stuck)]), np.random.default_rng(1), 50)
    basics = _basic_runs(s.labels)
    assert 4 not in basics[:-1]  # SITTING, if reached, is the last segment


def test_lab_cut_keeps_the_order_and_drops_unlabelled_samples() -> None:
    r = _recording(LAB)
    cut = lab_cut(r)
    assert 0 not in cut.labels and len(cut.labels) == sum(n for a, n in LAB if a)
    assert np.array_equal(cut.labels, r.labels[r.labels > 0])
    assert cut.changes[:3] == ((5, 4), (4, 5), (5, 6))


def test_step_accuracy_and_posture_events() -> None:
    # STAND 100, STAND_TO_SIT 50, SIT 300, WALK 100 (the SIT -> WALK join has no transition)
    truth = np.array([5] * 100 + [7] * 50 + [4] * 300 + [1] * 100)
    # SIT named during the transition, WALK 50 samples late
    seqs = [0, 50, 100, 149, 200, 300, 400, 500]
    labels = [5, 5, 5, 4, 4, 4, 4, 1]
    score = score_stream(truth, seqs, labels)
    assert score.step_accuracy() == {(5, 4): 1.0, (4, 1): 0.5}
    assert score.posture_transitions == 1 and score.posture_detection == 1.0
    assert score.posture_false == 0
    # SIT -> STAND -> SIT well after the transition's 3 s: two false posture changes
    flicker = score_stream(truth, [*seqs[:6], 350, 375, *seqs[6:]], [*labels[:6], 5, 4, 4, 1])
    assert flicker.posture_false == 2
    late = score_stream(truth, [0, 349], [5, 4])  # SIT named 3.98 s after the transition
    assert late.posture_detected == 0 and late.posture_transitions == 1
    both = score + flicker
    assert both.steps[(4, 1)] == [100, 200] and both.posture_false == 2


def test_evaluate_spliced_streams_on_the_demo_subject(tmp_path: Path, capsys) -> None:
    report = tmp_path / "life.json"
    args = ["evaluate-orders", "--data-dir", str(DEMO), "--report", str(report)]
    assert main([*args, "--streams", "2", "--seed", "1"]) == 0
    out = json.loads(report.read_text())
    assert out["seed"] == 1 and out["streams_per_subject"] == 2
    assert out["missing"] == {str(s): ["recordings"] for s in (2, 4, 10, 12, 13, 18, 20, 24)}
    for order in ("lab", "lab-cut", "spliced"):
        default = out["orders"][order]["default"]
        assert default["online_accuracy"] > 0.5 and default["posture_transitions"] > 0
    spliced_ = out["orders"]["spliced"]["default"]
    assert spliced_["steps"] and all(0 <= v <= 1 for v in spliced_["steps"].values())
    # the lab order has the recordings' length; the lab-cut control drops the unlabelled
    samples = sum(len(r.samples) for r in iter_hapt(DEMO))
    labelled = sum(int(np.sum(r.labels > 0)) for r in iter_hapt(DEMO))
    assert out["orders"]["lab"]["default"]["samples"] == samples
    assert out["orders"]["lab-cut"]["default"]["samples"] == labelled
    # the cut leaves no unlabelled stretch for a switch to fall in; the lab order has them
    assert out["orders"]["lab-cut"]["default"]["switches_per_hour_unlabelled"] == 0
    lab = out["orders"]["lab"]["default"]
    assert 0 < lab["switches_per_hour_unlabelled"] <= lab["switches_per_hour_pred"]
    recall = spliced_["per_subject_recall"]["9"]
    assert set(recall) <= set(ACTIVITIES.values()) and all(0 <= v <= 1 for v in recall.values())
    printed = capsys.readouterr().out
    assert "spliced" in printed and "has no recordings" in printed
    assert (tmp_path / "life-steps.md").exists() and (tmp_path / "life-orders.csv").exists()


@pytest.mark.slow
def test_every_test_subject_gets_spliced_streams(hapt_dir: Path) -> None:
    from training.data import TEST_SUBJECTS
    from training.lifeorder import order_streams

    for subject in TEST_SUBJECTS:
        orders, missing = order_streams(list(iter_hapt(hapt_dir, subjects=[subject])), 2)
        assert missing == [] and len(orders["spliced"]) == 2
        lab = sum(len(r.samples) for r in orders["lab"])
        for stream in orders["spliced"]:
            assert 0.4 * lab < len(stream.samples) < 2.5 * lab


def test_hmm_statistics_carry_no_script() -> None:
    from training.data import Prepared, activity_stats

    r = _recording(LAB)
    prepared = Prepared(1, "e1", r.samples, r.labels, r.samples)
    stats = activity_stats([prepared], 6, duration_s=7.0)
    assert stats["mean_duration_s"] == [7.0] * 6  # not the lab's segment lengths
    follows = np.array(stats["transitions"])
    np.testing.assert_allclose(follows.sum(axis=1), 1.0)
    off = ~np.eye(6, dtype=bool)
    assert np.all(np.diag(follows) == 0) and np.all(follows[off] > 0)  # nothing impossible
    # the lab script goes STAND -> SIT and never STAND -> WALK; the prior does not care
    assert follows[4, 0] == follows[4, 3] == follows[4, 5] > follows[4, 1]
    # WALKING_UPSTAIRS leads back to WALKING, never by script to WALKING_DOWNSTAIRS
    assert follows[1, 0] > follows[1, 2]
    shares = [sum(n for a, n in LAB if a == c) for c in range(1, 7)]
    np.testing.assert_allclose(stats["prior"], (np.array(shares) + 1) / (sum(shares) + 6))
