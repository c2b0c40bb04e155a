"""The protocol's stream metrics against hand-computed examples."""

from __future__ import annotations

import numpy as np
import pytest

from harstream.evaluation.metrics import StreamScore, label_in_force, score_stream
from training.metrics import window_metrics

RATE = 10.0  # 10 Hz keeps the hand arithmetic small


def test_label_in_force_holds_each_decision_until_the_next() -> None:
    assert label_in_force(5, [], []).tolist() == [-1] * 5
    assert label_in_force(7, [0, 2, 2, 5], [1, 2, 3, 4]).tolist() == [1, 1, 3, 3, 3, 4, 4]
    with pytest.raises(ValueError, match="non-decreasing"):
        label_in_force(5, [3, 1], [1, 2])


def test_stream_score_by_hand() -> None:
    # 0-59: WALKING (6 s), 60-69: a transition (not scored), 70-139: SITTING (7 s),
    # 140-149: unlabelled, 150-169: STANDING (2 s, too short for a delay)
    truth = np.array([1] * 60 + [7] * 10 + [4] * 70 + [0] * 10 + [5] * 20)
    # decisions at the last sample they saw: 9 WALKING, 79 STANDING, 99 SITTING, 159 STANDING
    score = score_stream(truth, [9, 79, 99, 159], [1, 5, 4, 5], RATE)
    # scored: samples 9..59 (51 walking, all right), 70..139 sitting: 70..78 say WALKING
    # (wrong), 79..98 STANDING (wrong), 99..139 SITTING (41 right); 150..169 standing:
    # 150..158 SITTING (wrong), 159..169 right (11)
    assert score.scored == 51 + 70 + 20
    assert score.correct == 51 + 41 + 11
    assert score.online_accuracy == pytest.approx(103 / 141)
    # delays: walking segment starts at 0, first WALKING in force at 9 -> 0.9 s;
    # sitting starts at 70, SITTING in force from 99 -> 2.9 s; standing is only 2 s long
    assert score.delays_s == pytest.approx([0.9, 2.9])
    assert score.misses == 0
    assert score.switches_pred == 3 and score.switches_true == 2
    assert score.duration_s == pytest.approx(17.0)
    assert score.switches_per_hour_pred == pytest.approx(3 / (17 / 3600))
    summary = score.summary()
    assert summary["detection_delay_s_median"] == pytest.approx(1.9)
    assert summary["decisions"] == 4 and summary["segments_scored"] == 2


def test_switches_are_placed_by_the_truth_at_their_decision() -> None:
    # the same truth: WALKING 0-59, a transition 60-69, SITTING 70-139, unlabelled
    # 140-149, STANDING 150-169
    truth = np.array([1] * 60 + [7] * 10 + [4] * 70 + [0] * 10 + [5] * 20)
    # switches at 65 (in the transition), 99 (in SITTING), 145 (unlabelled), 159
    score = score_stream(truth, [9, 65, 99, 145, 159], [1, 2, 4, 1, 5], RATE)
    assert score.switches_pred == 4
    assert score.switches_in_transitions == 1 and score.switches_unlabelled == 1
    total = score + score
    assert total.switches_in_transitions == 2 and total.switches_unlabelled == 2
    summary = total.summary()
    assert summary["switches_per_hour_unlabelled"] == pytest.approx(2 / (34 / 3600), abs=0.1)


def test_a_segment_never_recognised_is_a_miss_and_unknown_never_counts() -> None:
    truth = np.array([6] * 80)
    score = score_stream(truth, [9, 49], [0, 0], RATE)  # UNKNOWN published twice
    assert score.correct == 0 and score.misses == 1 and score.delays_s == []
    assert score.summary()["detection_delay_s_median"] is None


def test_scores_add_up_across_recordings() -> None:
    a = score_stream(np.array([1] * 60), [9], [1], RATE)
    b = score_stream(np.array([2] * 60), [9], [3], RATE)
    total = a + b
    assert total.scored == a.scored + b.scored and total.correct == a.correct
    assert total.online_accuracy == pytest.approx(51 / 102)
    assert total.recall() == {1: 1.0, 2: 0.0}
    assert total.macro_f1() == pytest.approx((1.0 + 0.0) / 2)
    assert sum([a, b], StreamScore()).scored == total.scored


def test_window_metrics_by_hand() -> None:
    truth = np.array([0, 0, 1, 1, 2, 2])
    pred = np.array([0, 1, 1, 1, 2, 0])
    m = window_metrics(truth, pred, ["A", "B", "C"])
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["confusion"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert m["precision"] == pytest.approx([0.5, 2 / 3, 1.0])
    assert m["recall"] == pytest.approx([0.5, 1.0, 0.5])
    assert m["macro_f1"] == pytest.approx(np.mean([0.5, 0.8, 2 / 3]))
    assert m["report"]["B"]["recall"] == pytest.approx(1.0)
    # macro-F1 over the classes present in the truth only
    assert window_metrics(truth[:4], pred[:4], ["A", "B", "C"])["macro_f1"] == pytest.approx(
        np.mean([2 / 3, 0.8])
    )
