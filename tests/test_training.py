"""Training, evaluation and export: a seconds-long smoke run end to end on the mini
fixture, and (slow) the shipped bundle's recorded test accuracy recomputed from data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from harstream.bundle import load_bundle
from harstream.cli import main
from harstream.inference import OnnxModel
from replay import iter_hapt
from training.augment import augment_crop, lying_episodes, random_rotation
from training.data import TEST_SUBJECTS, load_prepared, protocol_windows
from training.evaluate import window_predictions

MINI = Path(__file__).resolve().parent / "data" / "hapt-mini"
FAST = [
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


@pytest.mark.slow
def test_shipped_bundle_reproduces_its_recorded_test_accuracy(hapt_dir: Path) -> None:
    bundle = load_bundle()
    model = OnnxModel(bundle)
    recordings = load_prepared(hapt_dir, TEST_SUBJECTS, bundle.preprocessing)
    pairs = [window_predictions(bundle, model, r) for r in recordings]
    truth = np.concatenate([t for t, _ in pairs])
    pred = np.concatenate([p for _, p in pairs])
    assert len(truth) == 2996  # the protocol's test windows
    accuracy = float(np.mean(truth == pred))
    assert accuracy == pytest.approx(bundle.metrics["test_window_accuracy"], abs=0.002)
