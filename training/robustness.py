"""Recordings as a device worn another way sees them, and the orientation table.

A turn of the device is one rotation R of both sensor triads (acc and gyro) before any
preprocessing: what a phone in a pocket, a bag or a holder streams instead of the UCI
belt clip. Rotation specs (``harstream evaluate --rotate``):

- ``none``: as recorded;
- ``x90``, ``y-90``, ``z180``, ...: a fixed turn about one device axis, in degrees;
- an integer SEED: a uniformly random rotation per recording, drawn from that seed;
- ``uniform``: the seeds 0-4 (the robustness figures average over them).

Calibrations (models with gravity-aligned inputs; device-frame models take none):

- ``standing``: the first 5 s of the recording's first STANDING segment, taken after
  the turn, as a wearer asked to stand still would give (``training.data``);
- ``reference``: the training subjects' mean standing vertical, i.e. the device is
  assumed to be worn as the training phone was;
- ``none``: uncalibrated.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from joblib import Parallel, delayed

from harstream.core.bundle import Bundle, load_bundle
from harstream.core.inference import Model, expand_steps, load_model
from training.augment import random_rotation
from training.data import TEST_SUBJECTS, Prepared, load_prepared, protocol_windows
from training.metrics import window_metrics

__all__ = [
    "CALIBRATIONS",
    "ORIENTATIONS",
    "bundle_recordings",
    "cold_start",
    "orientation_table",
    "parse_rotation",
    "rotation_seeds",
    "window_predictions",
]

CALIBRATIONS = ("standing", "reference", "none")
#: The rows of the orientation table: fixed turns and five random ones.
ORIENTATIONS = ("none", "z180", "y90", "x90", "0", "1", "2", "3", "4")
MOVING = (0, 1, 2)  # WALKING, WALKING_UPSTAIRS, WALKING_DOWNSTAIRS


def rotation_seeds(spec: str) -> list[str]:
    """``uniform`` -> the five seeds it stands for; any other spec -> itself."""
    return [str(seed) for seed in range(5)] if spec == "uniform" else [spec]


def parse_rotation(spec: str, index: int) -> np.ndarray:
    """The rotation matrix of ``spec`` for the ``index``-th recording of an evaluation."""
    if spec == "none":
        return np.eye(3)
    if spec.lstrip("-").isdigit():
        rng = np.random.default_rng([int(spec), index])
        return random_rotation(rng, 180.0)  # uniform angle about a uniform axis
    axis, degrees = spec[:1], spec[1:]
    if axis not in ("x", "y", "z"):
        raise ValueError(f"rotation {spec!r}: use none, SEED, uniform or x/y/z + degrees")
    try:
        angle = np.radians(float(degrees))
    except ValueError:
        raise ValueError(f"rotation {spec!r}: {degrees!r} is not a number of degrees") from None
    c, s = np.cos(angle), np.sin(angle)
    i, j = [k for k in range(3) if k != "xyz".index(axis)]
    turn = np.eye(3)
    turn[i, i], turn[i, j], turn[j, i], turn[j, j] = c, -s, s, c
    return turn


def bundle_recordings(
    bundle: Bundle,
    data_dir: str | Path,
    subjects: Iterable[int] = TEST_SUBJECTS,
    *,
    rotate: str = "none",
    calibration: str = "standing",
) -> list[Prepared]:
    """The subjects' recordings, turned by ``rotate``, preprocessed (unstandardised) for
    ``bundle``, each with the ``calibration`` it gets (aligned inputs only)."""
    if calibration not in CALIBRATIONS:
        raise ValueError(f"calibration {calibration!r}: choose from {CALIBRATIONS}")
    parse_rotation(rotate, 0)  # a bad spec fails before any file is read
    spec = bundle.calibration
    return load_prepared(
        data_dir,
        subjects,
        bundle.preprocessing,
        bundle.channels,
        spec.seconds if spec is not None else 5.0,
        turn=None if rotate == "none" else lambda index: parse_rotation(rotate, index),
        calibration=calibration,
        reference=None if spec is None else np.asarray(spec.reference_vertical),
    )


def window_predictions(
    bundle: Bundle, model: Model, recording: Prepared
) -> tuple[np.ndarray, np.ndarray]:
    """(truth, predicted) class ids of one recording's protocol windows."""
    pre = bundle.preprocessor()
    features = pre.preprocess(recording.samples, recording.vertical)
    starts, truth = protocol_windows(recording.labels, bundle.window, bundle.hop)
    if not len(starts):
        return truth, truth
    if bundle.mode == "stateful":
        stride = bundle.arch.stride
        whole = len(features) - len(features) % stride
        _, probs = model.step(model.initial_state(1), features[None, :whole])
        per_sample = expand_steps(probs[0], stride, len(features))
        return truth, per_sample[starts + bundle.window - 1].argmax(-1)
    windows = np.stack([features[s : s + bundle.window] for s in starts])
    _, probs = model.step(model.initial_state(len(windows)), windows)
    return truth, probs[:, -1].argmax(-1)


def _orientation_row(
    bundle: Bundle, data_dir: str | Path, subjects: Sequence[int], rotate: str, calibration: str
) -> dict[str, Any]:
    model = load_model(bundle, "onnx")
    recordings = bundle_recordings(
        bundle, data_dir, subjects, rotate=rotate, calibration=calibration
    )
    pairs = [window_predictions(bundle, model, r) for r in recordings]
    truth = np.concatenate([t for t, _ in pairs])
    pred = np.concatenate([p for _, p in pairs])
    m = window_metrics(truth, pred, bundle.labels)
    moving = np.isin(truth, MOVING)
    return {
        "rotation": rotate,
        "calibration": calibration,
        "accuracy": m["accuracy"],
        "macro_f1": m["macro_f1"],
        "walking_classes_accuracy": round(float(np.mean(pred[moving] == truth[moving])), 4),
        "moving_vs_still_accuracy": round(float(np.mean(np.isin(pred, MOVING) == moving)), 4),
    }


def orientation_table(
    bundle_dir: str | Path | None,
    data_dir: str | Path,
    subjects: Sequence[int] = TEST_SUBJECTS,
    rotations: Sequence[str] = ORIENTATIONS,
    calibrations: Sequence[str] = CALIBRATIONS,
    jobs: int = 2,
) -> pd.DataFrame:
    """Window figures of one bundle per (rotation, calibration), and the mean over the
    random rotations (rows ``uniform``). A device-frame bundle takes no calibration:
    its rows say ``-``."""
    bundle = load_bundle(bundle_dir)
    if not bundle.preprocessor().aligned:
        calibrations = ("-",)
    pairs = [(rot, cal) for rot in rotations for cal in calibrations]
    rows = Parallel(n_jobs=jobs)(
        delayed(_orientation_row)(bundle, data_dir, subjects, rot, cal if cal != "-" else "none")
        for rot, cal in pairs
    )
    for row, (_, cal) in zip(rows, pairs, strict=True):
        row["calibration"] = cal
    table = pd.DataFrame(rows)
    random = table[table["rotation"].str.isdigit()]
    if len(random):
        means = random.drop(columns="rotation").groupby("calibration", sort=False).mean()
        means = means.round(4).reset_index().assign(rotation="uniform (mean of seeds)")
        table = pd.concat([table, means[table.columns]], ignore_index=True)
    return table


def cold_start(
    bundle: Bundle,
    recordings: Sequence[Prepared],
    decisions: Sequence[int] = (1, 2, 5),
    every_s: float = 10.0,
) -> dict[str, Any]:
    """How right a device's first decisions are: from a start every ``every_s`` seconds
    of each recording (filters and network from scratch, the recording's calibration
    kept, as after a reset), the raw label of the k-th decision (hop ``bundle.hop``)
    against the activity at its last sample, where that is one of 1-6."""
    model = load_model(bundle, "onnx")
    pre = bundle.preprocessor()
    hop, stride, last = bundle.hop, bundle.arch.stride, max(decisions)
    span = last * hop
    right = dict.fromkeys(decisions, 0)
    counted = dict.fromkeys(decisions, 0)
    step = max(1, round(every_s * bundle.rate_hz))
    for r in recordings:
        starts = np.arange(0, len(r.samples) - span, step)
        if not len(starts):
            continue
        x = np.stack([r.samples[s : s + span] for s in starts])
        vertical = None if r.vertical is None else np.tile(r.vertical, (len(starts), 1))
        _, features = pre.process(None, x, vertical)
        if bundle.mode == "stateful":
            _, probs = model.step(model.initial_state(len(starts)), features)
            at = [k * hop // stride - 1 for k in decisions]
            labels = probs[:, at].argmax(-1)  # (starts, decisions)
        else:
            continue  # a window model's first decision waits for a whole window
        for j, k in enumerate(decisions):
            truth = r.labels[starts + k * hop - 1]
            scored = (truth >= 1) & (truth <= 6)
            right[k] += int(np.sum(labels[scored, j] == truth[scored] - 1))
            counted[k] += int(scored.sum())
    return {
        f"decision_{k}": round(right[k] / counted[k], 4) if counted[k] else None for k in decisions
    } | {"starts": counted[decisions[0]]}
