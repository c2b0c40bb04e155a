"""Evaluate a bundle on the test subjects, as the protocol says, with the runtime's code.

Window level: the protocol windows (128/64 inside activity 1-6 segments, recordings
preprocessed causally from their first sample) through the onnxruntime backend. A
window-mode model sees each window alone, from zero state; a stateful model runs over
the whole recording from its first sample and is read at each window's last sample,
which is exactly what a subscriber would see from it at that moment.

Stream level: every test recording replayed through the real engine (each recording a
device, preprocessing, windowing, inference, smoothing per config), scored by the label
in force (``harstream.evaluation.metrics``). One stream section per config given.

Subjects (and, in the trade-off, settings) are scored in parallel processes by joblib;
the window figures are scikit-learn's (``training.metrics``); the per-subject and
per-setting tables are pandas frames written as CSV and Markdown.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from joblib import Parallel, delayed

from harstream.config import Config
from harstream.core.bundle import UNKNOWN, Bundle, load_bundle
from harstream.core.engine import Message
from harstream.core.inference import Model, load_model
from harstream.evaluation.metrics import StreamScore, score_stream
from harstream.runtime import build_engine
from training.data import TEST_SUBJECTS, Prepared
from training.metrics import window_metrics
from training.robustness import bundle_recordings, cold_start, window_predictions

__all__ = [
    "evaluate_bundle",
    "inference_cost_ms",
    "stream_scores",
    "stream_section",
    "subject_table",
    "tradeoff",
    "tradeoff_table",
    "window_predictions",
    "window_section",
]


def stream_scores(
    bundle: Bundle, config: Config, recordings: Sequence[Prepared], chunk: int = 250
) -> dict[tuple[int, str], StreamScore]:
    """Replay every recording through one engine (a device each); score each."""
    engine = build_engine(config, bundle)
    engine.max_devices = max(engine.max_devices, len(recordings))
    names = [f"s{r.subject}-{r.experiment}" for r in recordings]
    if bundle.preprocessor().aligned:  # each recording with its own calibration, or none
        engine.default_vertical = None
        for name, r in zip(names, recordings, strict=True):
            engine.set_vertical(name, r.vertical)
    decided: dict[str, list[tuple[int, int]]] = {n: [] for n in names}
    ids = {label: i + 1 for i, label in enumerate(bundle.labels)} | {UNKNOWN: 0}
    longest = max(len(r.samples) for r in recordings)
    for start in range(0, longest, chunk):
        batch = [
            Message(name, r.samples[start : start + chunk], seq=start)
            for name, r in zip(names, recordings, strict=True)
            if start < len(r.samples)
        ]
        for d in engine.feed_many(batch).decisions:
            decided[d.device].append((d.seq, ids[d.activity]))
    scores = {}
    for name, r in zip(names, recordings, strict=True):
        seqs, labels = zip(*decided[name], strict=True) if decided[name] else ((), ())
        scores[(r.subject, r.experiment)] = score_stream(r.labels, seqs, labels, bundle.rate_hz)
    return scores


def inference_cost_ms(bundle: Bundle, model: Model, calls: int = 300) -> float:
    """Median milliseconds of one batch-1 decision: a hop of samples (stateful) or a
    whole window (window mode), through the model alone."""
    steps = bundle.hop if bundle.mode == "stateful" else bundle.window
    shape = (1, steps, len(bundle.channels))
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    state = model.initial_state(1)
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        model.step(state, x)
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1000)


def _score_subject(
    bundle: Bundle, configs: Mapping[str, Config], recordings: Sequence[Prepared]
) -> tuple[np.ndarray, np.ndarray, dict[str, StreamScore]]:
    """One subject's window truth and predictions, and its stream score per config (a
    joblib task: it loads its own model)."""
    model = load_model(bundle, "onnx")
    pairs = [window_predictions(bundle, model, r) for r in recordings]
    streams = {
        name: sum(stream_scores(bundle, config, recordings).values(), StreamScore())
        for name, config in configs.items()
    }
    return (
        np.concatenate([t for t, _ in pairs]),
        np.concatenate([p for _, p in pairs]),
        streams,
    )


def evaluate_bundle(
    bundle_dir: str | Path | None,
    data_dir: str | Path | None,
    configs: Mapping[str, Config],
    subjects: Sequence[int] = TEST_SUBJECTS,
    recordings: list[Prepared] | None = None,
    jobs: int = 2,
) -> dict[str, Any]:
    """The protocol's window and stream figures, overall and per subject (or per device
    of field recordings); the subjects are scored in parallel by ``jobs`` processes
    (joblib)."""
    bundle = load_bundle(bundle_dir)
    if recordings is None:
        if data_dir is None:
            raise ValueError("give the data folder or the recordings")
        recordings = bundle_recordings(bundle, data_dir, subjects)
    labels = list(bundle.labels)
    order = sorted({r.subject for r in recordings})
    results = Parallel(n_jobs=min(jobs, len(order)))(
        delayed(_score_subject)(bundle, configs, [r for r in recordings if r.subject == s])
        for s in order
    )
    streams = {
        name: stream_section(
            {s: streams_[name] for s, (_, _, streams_) in zip(order, results, strict=True)},
            labels,
            config.stream.hop,
            config.smoothing.method,
        )
        for name, config in configs.items()
    }
    return {
        "bundle": str(bundle.path),
        "name": bundle.name,
        "arch": bundle.arch.model_dump(),
        "mode": bundle.mode,
        "parameters": _parameter_count(bundle),
        "subjects": order,
        "labels": labels,
        "window": window_section(
            {s: (t, p) for s, (t, p, _) in zip(order, results, strict=True)}, labels
        ),
        "stream": streams,
        "inference_ms_per_decision": round(
            inference_cost_ms(bundle, load_model(bundle, "onnx")), 4
        ),
        # raw labels of the 1st, 2nd and 5th decision after a start (training.robustness)
        "cold_start": cold_start(bundle, recordings),
    }


def window_section(
    by_subject: Mapping[int, tuple[np.ndarray, np.ndarray]], labels: Sequence[str]
) -> dict[str, Any]:
    """A report's window section from each subject's (truth, predicted) class ids: the
    figures of all subjects together, and per subject windows, accuracy and macro-F1."""
    overall = window_metrics(
        np.concatenate([t for t, _ in by_subject.values()]),
        np.concatenate([p for _, p in by_subject.values()]),
        labels,
    )
    per_subject = {}
    for subject, (truth, pred) in by_subject.items():
        m = window_metrics(truth, pred, labels)
        per_subject[subject] = {k: m[k] for k in ("windows", "accuracy", "macro_f1")}
    return {**overall, "per_subject": per_subject}


def stream_section(
    by_subject: Mapping[int, StreamScore], labels: Sequence[str], hop: int, smoothing: str
) -> dict[str, Any]:
    """A report's stream section: the summary of all subjects together, recall per
    class, and per subject its online accuracy, median delay and switches."""
    total = sum(by_subject.values(), StreamScore())
    keys = (
        "online_accuracy",
        "detection_delay_s_median",
        "switches_per_hour_pred",
        "switches_per_hour_true",
    )
    return {
        **total.summary(),
        "recall": {labels[c - 1]: round(v, 4) for c, v in total.recall().items()},
        "hop": hop,
        "smoothing": smoothing,
        "per_subject": {
            s: {k: score.summary()[k] for k in keys} for s, score in by_subject.items()
        },
    }


def subject_table(report: dict[str, Any]) -> pd.DataFrame:
    """One row per subject (and one for all): windows, window accuracy and macro-F1, and
    per stream config its online accuracy, median delay and switches per hour."""
    rows = []
    for subject, window in [*report["window"]["per_subject"].items(), ("all", report["window"])]:
        row: dict[str, Any] = {
            "subject": subject,
            "windows": window["windows"],
            "accuracy": window["accuracy"],
            "macro_f1": window["macro_f1"],
        }
        for name, stream in report["stream"].items():
            part = stream if subject == "all" else stream["per_subject"][subject]
            row[f"online {name}"] = part["online_accuracy"]
            row[f"delay {name}"] = part["detection_delay_s_median"]
            row[f"switches/h {name}"] = part["switches_per_hour_pred"]
        rows.append(row)
    return pd.DataFrame(rows)


def _parameter_count(bundle: Bundle) -> int:
    arch, inputs, classes = bundle.arch, len(bundle.channels), len(bundle.labels)
    gates = 3 if arch.type == "gru" else 4
    total = 0
    if arch.stride > 1:  # the linear front end over each patch
        total += arch.stride * inputs * arch.hidden + arch.hidden
        inputs = arch.hidden
    for layer in range(arch.layers):
        width = inputs if layer == 0 else arch.hidden
        total += gates * (arch.hidden * width + arch.hidden * arch.hidden + 2 * arch.hidden)
    return (total + arch.hidden * classes + classes) * arch.members


#: The smoothing settings the trade-off compares: (name, --set overrides).
TRADEOFF = [
    (f"{name} hop {hop}", [f"stream.hop={hop}", f"smoothing.method={name.split()[0]}", *extra])
    for hop in (64, 32, 16)
    for name, extra in (
        ("none", []),
        ("ema", ["smoothing.ema_alpha=0.5"]),
        ("majority", ["smoothing.majority_k=3"]),
        ("hysteresis", ["smoothing.min_dwell=2", "smoothing.switch_confidence=0.9"]),
        ("hmm", ["smoothing.hmm_stickiness=1"]),
        ("hmm x3", ["smoothing.hmm_stickiness=3"]),
    )
]


def tradeoff(
    bundle_dir: str | Path | None,
    data_dir: str | Path,
    subjects: Sequence[int],
    settings: Sequence[tuple[str, list[str]]] = TRADEOFF,
    recordings: list[Prepared] | None = None,
    jobs: int = 2,
) -> list[dict[str, Any]]:
    """Stream-level scores of one bundle under each smoothing/hop setting."""
    from harstream.config import load_config

    bundle = load_bundle(bundle_dir)
    if recordings is None:
        recordings = bundle_recordings(bundle, data_dir, subjects)
    configs = [load_config(overrides=overrides) for _, overrides in settings]
    totals = Parallel(n_jobs=jobs)(
        delayed(_stream_total)(bundle, config, recordings) for config in configs
    )
    return [
        {
            "setting": name,
            "hop": config.stream.hop,
            "smoothing": config.smoothing.method,
            "overrides": overrides,
            **total.summary(),
        }
        for (name, overrides), config, total in zip(settings, configs, totals, strict=True)
    ]


def _stream_total(bundle: Bundle, config: Config, recordings: Sequence[Prepared]) -> StreamScore:
    return sum(stream_scores(bundle, config, recordings).values(), StreamScore())


def tradeoff_table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    columns = [
        "setting",
        "online_accuracy",
        "macro_f1",
        "detection_delay_s_median",
        "detection_delay_s_p90",
        "switches_per_hour_pred",
        "switches_per_hour_true",
    ]
    return pd.DataFrame(rows)[columns]
