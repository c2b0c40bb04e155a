"""Training, evaluation and export: a seconds-long smoke run end to end on the mini
fixture, and (slow) the shipped bundle's recorded test accuracy recomputed from data."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harstream.cli import main
from harstream.config import load_config
from harstream.core.bundle import Bundle, load_bundle
from harstream.core.inference import OnnxModel
from harstream.core.preprocessing import (
    ALIGNED_CHANNELS,
    CALIBRATED,
    FilterSpec,
    Preprocessor,
    aligned_inputs,
)
from replay import iter_hapt
from training.augment import augment_crop, lying_episodes, random_rotation
from training.baseline import evaluate_features_baseline, window_features
from training.cv import cross_validate, fold_table, folds
from training.data import (
    TEST_SUBJECTS,
    TRAIN_SUBJECTS,
    load_prepared,
    protocol_windows,
    recalibrated,
    walking_vertical,
)
from training.evaluate import TRADEOFF, window_predictions
from training.robustness import bundle_recordings

MINI = Path(__file__).resolve().parent / "data" / "hapt-mini"
FAST = [  # --set overrides for seconds-long training runs
    "train.iterations=4",
    "train.eval_every=2",
    "train.seq_len=256",
    "train.batch_size=4",
    "train.hidden=8",
    "train.threads=1",
]


@pytest.mark.parametrize("mode", ["stateful", "window"])
def test_train_evaluate_export_end_to_end(tmp_path: Path, mode: str, capsys) -> None:
    out = tmp_path / "bundle"
    args = ["train", "--data-dir", str(MINI), "--out", str(out), "--set", f"train.mode={mode}"]
    for item in FAST:
        args += ["--set", item]
    assert main(args) == 0
    bundle = load_bundle(out)
    assert bundle.mode == mode and bundle.arch.hidden == 8
    assert bundle.training["subjects"] == [1]  # the fixture's only training subject
    assert len(bundle.training["data_sha256"]) == 64 and bundle.training["history"]
    report = json.loads((out / "report.json").read_text())
    assert report["subjects"] == [9]  # the fixture's only test subject
    assert report["window"]["windows"] == 37
    stream = report["stream"]["default"]
    samples = len(next(iter_hapt(MINI, subjects=[9])).samples)
    # a decision every hop: from the first hop (stateful) or the first full window
    first = 64 if mode == "stateful" else 128
    assert stream["decisions"] == (samples - first) // 64 + 1
    assert stream["samples"] == samples and stream["segments_scored"] > 0
    assert bundle.metrics["test_window_accuracy"] == round(report["window"]["accuracy"], 4)
    assert (out / "confusion_matrix.png").stat().st_size > 10_000
    assert (out / "curves.png").stat().st_size > 10_000
    assert "window level: accuracy" in capsys.readouterr().out
    # export rewrites the ONNX graph from the weights and checks it against torch
    before = OnnxModel(bundle).step(OnnxModel(bundle).initial_state(1), np.ones((1, 64, 9), "f"))
    (out / "model.onnx").unlink()
    assert main(["export", "--model", str(out)]) == 0
    after = OnnxModel(bundle).step(OnnxModel(bundle).initial_state(1), np.ones((1, 64, 9), "f"))
    np.testing.assert_allclose(after[1], before[1], atol=1e-6)


def test_train_without_data_says_where_to_get_it(capsys, monkeypatch) -> None:
    monkeypatch.delenv("HARSTREAM_DATA", raising=False)
    assert main(["train"]) == 1
    assert "give --data-dir DIR" in capsys.readouterr().err


def test_protocol_windows_lie_inside_one_segment() -> None:
    labels = np.array([0] * 10 + [4] * 300 + [7] * 50 + [5] * 127 + [1] * 200, np.int8)
    starts, classes = protocol_windows(labels, 128, 64)
    assert starts.tolist() == [10, 74, 138, 487, 551]  # the 127-sample segment fits none
    assert classes.tolist() == [3, 3, 3, 0, 0]


def test_rotation_augmentation_keeps_vectors_consistent() -> None:
    rng = np.random.default_rng(0)
    rotation = random_rotation(rng, 30.0)
    np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-12)
    x = rng.normal(size=(50, 9)).astype(np.float32)
    labels = np.array([5] * 20 + [11] * 10 + [6] * 20)
    out = augment_crop(x, labels, rng, rotate_deg=20, lie_rotate_p=1.0, scale=0.0)
    for k in range(3):  # each triad keeps its length: only rotations happened
        np.testing.assert_allclose(
            np.linalg.norm(out[:, 3 * k : 3 * k + 3], axis=1),
            np.linalg.norm(x[:, 3 * k : 3 * k + 3], axis=1),
            rtol=1e-5,
        )
    assert lying_episodes(labels) == [(20, 50)]


def test_a_walking_vertical_recalibrates_as_the_engine_would() -> None:
    """Training's walking-calibrated crops: the mean gravity over a walking stretch, and
    the calibrated channels with it equal to what the engine computes for that vertical."""
    reference = np.array([1.0, 0.0, 0.0])  # the fixture's subject 9 only walks
    rec = load_prepared(
        MINI, [9], FilterSpec(), ALIGNED_CHANNELS, calibration="reference", reference=reference
    )[0]
    assert rec.directions is not None and rec.vertical is reference
    rng = np.random.default_rng(0)
    v = walking_vertical(rec.directions, rec.labels, rng, rate_hz=50.0, seconds=(5.0, 20.0))
    assert v is not None and abs(np.linalg.norm(v) - 1.0) < 1e-9
    # a stretch of the walking: near the mean gravity of all of it, not equal to it
    walking = rec.directions[rec.labels == 1, :3].mean(axis=0)
    angle = np.degrees(np.arccos(v @ walking / np.linalg.norm(walking)))
    assert 0.0 < angle < 10.0
    # with the vertical they were made with, the features come back unchanged
    same = recalibrated(rec.features, rec.directions, rec.vertical)
    np.testing.assert_allclose(same, rec.features, atol=1e-5)
    # with the walking one, the engine's own aligned inputs for that vertical
    pre = Preprocessor(FilterSpec(), channels=ALIGNED_CHANNELS)
    _, device = pre.filter(None, rec.samples[None])
    expected = aligned_inputs(device, v[None])[0]
    got = recalibrated(rec.features, rec.directions, v)
    np.testing.assert_allclose(got[:, CALIBRATED], expected[:, CALIBRATED], atol=1e-5)
    np.testing.assert_allclose(got[:, :6], expected[:, :6], atol=1e-4)
    # a recording without walking gives none
    still = np.full(len(rec.labels), 5)
    assert walking_vertical(rec.directions, still, rng, rate_hz=50.0, seconds=(5.0, 20.0)) is None


@pytest.mark.slow
def test_shipped_bundle_reproduces_its_recorded_test_accuracy(hapt_dir: Path) -> None:
    bundle = load_bundle()
    model = OnnxModel(bundle)

    def accuracy(rotate: str) -> float:
        recordings = bundle_recordings(bundle, hapt_dir, TEST_SUBJECTS, rotate=rotate)
        pairs = [window_predictions(bundle, model, r) for r in recordings]
        truth = np.concatenate([t for t, _ in pairs])
        pred = np.concatenate([p for _, p in pairs])
        assert len(truth) == 2996  # the protocol's test windows
        return float(np.mean(truth == pred))

    lab = accuracy("none")
    assert lab == pytest.approx(bundle.metrics["test_window_accuracy"], abs=0.002)
    # calibrated, it reads a phone turned any way as well as the belt-clipped one
    assert accuracy("0") == pytest.approx(lab, abs=0.01)


def test_evaluate_writes_the_subject_table(tmp_path: Path) -> None:
    report = tmp_path / "r.json"
    assert main(["evaluate", "--data-dir", str(MINI), "--report", str(report)]) == 0
    table = pd.read_csv(tmp_path / "r-subjects.csv")
    data = json.loads(report.read_text())
    assert table["subject"].astype(str).tolist() == ["9", "all"]
    assert table["accuracy"].iloc[-1] == pytest.approx(data["window"]["accuracy"])
    assert table["online default"].iloc[0] == data["stream"]["default"]["online_accuracy"]
    cold = data["cold_start"]  # the first decisions after a start every 10 s (84 s of subject 9)
    assert cold["starts"] >= 2 and all(0.0 <= cold[f"decision_{k}"] <= 1.0 for k in (1, 2, 5))
    assert "| subject" in (tmp_path / "r-subjects.md").read_text()


def test_window_features_baseline_by_the_same_protocol(tmp_path: Path, capsys) -> None:
    report = tmp_path / "baseline" / "report.json"
    args = ["evaluate-baseline", "--data-dir", str(MINI), "--report", str(report)]
    assert main(args) == 0
    data = json.loads(report.read_text())
    assert data["features"] == 168 and data["train_subjects"] == [1]
    assert data["window"]["windows"] == 37  # the same protocol windows as the networks
    stream = data["stream"]["unsmoothed"]
    samples = len(next(iter_hapt(MINI, subjects=[9])).samples)
    assert stream["decisions"] == (samples - 128) // 64 + 1  # one per window a gateway runs
    # the fixture's subject 1 only sits and stands, so that is all the model can say
    confusion = np.array(data["window"]["confusion"])
    assert confusion.sum() == 37 and confusion[:, [0, 1, 2, 5]].sum() == 0
    assert (tmp_path / "baseline" / "confusion_matrix.png").stat().st_size > 10_000
    assert "window level: accuracy" in capsys.readouterr().out


def test_window_features_separate_what_they_were_fitted_on() -> None:
    # fitted and scored on subject 9 (walking, stairs): the features carry the classes
    data = evaluate_features_baseline(MINI, train_subjects=[9], test_subjects=[9], jobs=1)
    assert data["window"]["accuracy"] > 0.9


def test_window_features_are_what_the_docstring_says() -> None:
    rng = np.random.default_rng(0)
    windows = rng.normal(size=(4, 128, 9))
    features = window_features(windows)
    assert features.shape == (4, 168)
    np.testing.assert_allclose(features[:, :9], windows.mean(axis=1))  # means first
    flat = window_features(np.ones((1, 128, 9)))
    assert np.all(np.isfinite(flat))  # a still channel has no skew, not NaN


def test_cross_validation_folds_by_subject_in_parallel(tmp_path: Path) -> None:
    one = load_prepared(MINI, [1], FilterSpec())[0]
    # the fixture has one training subject: a second one from the same samples
    two = [one, replace(one, subject=3)]
    result = cross_validate(load_config(overrides=FAST).train, MINI, 2, recordings=two)
    assert sorted(r["validation_subjects"][0] for r in result["folds"]) == [1, 3]
    table = fold_table(result)
    assert table["fold"].tolist() == [0, 1, "mean"]
    assert table["selection"].iloc[-1] == pytest.approx(result["mean"]["selection"])


def test_tradeoff_writes_its_table(tmp_path: Path) -> None:
    out = tmp_path / "tradeoff.json"
    args = ["tradeoff", "--data-dir", str(MINI), "--subjects", "test", "--out", str(out)]
    assert main(args) == 0
    rows = json.loads(out.read_text())["rows"]
    table = pd.read_csv(tmp_path / "tradeoff.csv")
    assert table["setting"].tolist() == [r["setting"] for r in rows] and len(rows) == len(TRADEOFF)
    assert table["online_accuracy"].tolist() == [r["online_accuracy"] for r in rows]
    assert (tmp_path / "tradeoff.png").exists() and (tmp_path / "tradeoff.md").exists()


def test_subject_folds_cover_every_training_subject_once() -> None:
    groups = folds(3)
    assert sorted(s for g in groups for s in g) == sorted(TRAIN_SUBJECTS)


def test_evaluate_turns_recordings_and_writes_the_orientation_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from training.robustness import parse_rotation

    turn = parse_rotation("z90", 0)
    np.testing.assert_allclose(turn @ [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], atol=1e-12)
    uniform = [parse_rotation("3", i) for i in range(2)]
    assert not np.allclose(uniform[0], uniform[1])  # one turn per recording
    np.testing.assert_allclose(uniform[0] @ uniform[0].T, np.eye(3), atol=1e-12)
    with pytest.raises(ValueError, match="degrees"):
        parse_rotation("xabc", 0)

    report = tmp_path / "turned.json"
    args = ["evaluate", "--data-dir", str(MINI), "--report", str(report), "--rotate", "y90"]
    assert main(args) == 0
    turned = json.loads(report.read_text())["window"]["accuracy"]
    table = tmp_path / "orientations"
    args = ["evaluate-orientations", "--data-dir", str(MINI), "--report", str(table)]
    assert main(args) == 0
    rows = pd.read_csv(table.with_suffix(".csv"))
    assert "uniform (mean of seeds)" in rows["rotation"].tolist()
    y90 = rows[rows["rotation"] == "y90"].iloc[0]
    assert y90["accuracy"] == pytest.approx(turned, abs=1e-4)  # the same figure both ways


def test_refit_steps_skip_the_selection(tmp_path: Path) -> None:
    out = tmp_path / "refit"
    args = ["train", "--data-dir", str(MINI), "--out", str(out), "--no-evaluate"]
    for item in [*FAST, "train.refit_steps=3"]:
        args += ["--set", item]
    assert main(args) == 0
    bundle = load_bundle(out)
    assert bundle.training["best_step"] == 3 and bundle.training["history"] == []
    # the HMM's statistics come with it, from what the network trained on
    assert bundle.activity_stats is not None
    duration = load_config().train.hmm_duration_s
    assert bundle.activity_stats.mean_duration_s == [duration] * 6


def test_an_ensemble_trains_its_members_as_the_single_recipe_would(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """train.members = 2: member k is the recipe with seed + k (member 0 bitwise the
    single network), each with its own refit steps, in one bundle."""
    import torch

    def run(name: str, *extra: str) -> Bundle:
        args = ["train", "--data-dir", str(MINI), "--out", str(tmp_path / name), "--no-evaluate"]
        for item in [*FAST, *extra]:
            args += ["--set", item]
        assert main(args) == 0
        return load_bundle(tmp_path / name)

    pair = run("pair", "train.members=2", "train.refit_steps=[3, 2]")
    single = run("single", "train.members=1", "train.refit_steps=3")
    second = run("second", "train.members=1", "train.refit_steps=2", "train.seed=1")
    assert pair.arch.members == 2 and pair.training["name"].endswith("-x2")
    assert [(m["seed"], m["best_step"]) for m in pair.training["members"]] == [(0, 3), (1, 2)]
    weights = torch.load(pair.weights_path, weights_only=True)
    for k, alone in enumerate((single, second)):
        own = torch.load(alone.weights_path, weights_only=True)
        assert own.keys() == {n.split(".", 2)[2] for n in weights if n.startswith(f"members.{k}.")}
        for name, value in own.items():
            assert torch.equal(weights[f"members.{k}.{name}"], value), (k, name)
    assert pair.mean == single.mean and pair.activity_stats == single.activity_stats
    bad = ["train", "--data-dir", str(MINI), "--set", "train.members=2"]
    assert main([*bad, "--set", "train.refit_steps=[3]"]) != 0  # one count per member, or one
    assert "refit_steps lists 1 step counts for 2 members" in capsys.readouterr().err


def test_crops_are_calibrated_in_the_configured_shares() -> None:
    """train.uncalibrated_p / walking_p / stale_p: each crop is shown uncalibrated (its
    calibrated channels 0), with another vertical (walking or stale: its tilt changed),
    or as recorded (its standing calibration), in those shares."""
    from harstream.config import TrainConfig
    from training.data import Prepared
    from training.train import _calibrated

    reference = np.array([1.0, 0.0, 0.0])
    rec = load_prepared(
        MINI, [9], FilterSpec(), ALIGNED_CHANNELS, calibration="reference", reference=reference
    )[0]
    assert isinstance(rec, Prepared) and rec.directions is not None
    cfg = TrainConfig()
    rng = np.random.default_rng(0)
    part = slice(1000, 1512)
    kinds = {"none": 0, "other": 0, "recorded": 0}
    for _ in range(2000):
        x = _calibrated(np.array(rec.features[part], np.float64), rec, part, cfg, rng)
        if not x[:, CALIBRATED].any():
            kinds["none"] += 1
        elif np.allclose(x, rec.features[part], atol=1e-6):
            kinds["recorded"] += 1
        else:
            kinds["other"] += 1
    share = {k: v / 2000 for k, v in kinds.items()}
    assert abs(share["none"] - cfg.uncalibrated_p) < 0.04
    assert abs(share["other"] - (cfg.walking_p + cfg.stale_p)) < 0.04
    assert abs(share["recorded"] - (1 - cfg.uncalibrated_p - cfg.walking_p - cfg.stale_p)) < 0.04


def test_a_time_warped_crop_plays_a_stretch_at_another_speed() -> None:
    from training.train import _crop

    rng = np.random.default_rng(1)
    spans = []
    for _ in range(200):
        part = _crop(5_000, 1_000, 0.2, rng)
        assert isinstance(part, np.ndarray) and len(part) == 1_000
        assert part.min() >= 0 and part.max() < 5_000 and np.all(np.diff(part) >= 0)
        spans.append((part[-1] - part[0]) / 999)
    assert 0.8 <= min(spans) < 0.85 and 1.15 < max(spans) <= 1.2  # speeds over 1 +/- 0.2
    plain = _crop(5_000, 1_000, 0.0, np.random.default_rng(1))  # off: a plain slice
    assert isinstance(plain, slice) and plain.stop - plain.start == 1_000
