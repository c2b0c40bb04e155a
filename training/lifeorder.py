"""The life-order evaluation: a bundle on streams whose activities follow no script.

For each subject, three orders of the same labelled segments (``training.splice``):

- ``lab``: the recordings as they are (the protocol's stream level);
- ``lab-cut``: the recordings cut by their labels and joined back in the lab's order
  (the control: the joins without the order);
- ``spliced``: ``streams`` seeded random walks along the real-life graph ``LIFE``,
  each about as long as the subject's recordings, postures joined through the
  subject's own recorded transitions (not scored).

Every stream runs through the gateway's engine (``training.evaluate.stream_scores``)
with each config given; the figures are the protocol's stream-level ones plus the step
table (accuracy over the segment after each kind of change) and postural transitions as
events (``harstream.evaluation.metrics``). A subject missing an activity or a
transition still gets its streams; the report names what was missing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from joblib import Parallel, delayed

from harstream.config import Config
from harstream.core.bundle import Bundle, load_bundle
from harstream.evaluation.metrics import StreamScore, segments
from replay import ACTIVITIES, Recording, iter_hapt
from training.data import TEST_SUBJECTS, Prepared, prepare
from training.evaluate import stream_scores
from training.robustness import CALIBRATIONS
from training.splice import lab_cut, segment_pool, spliced

__all__ = ["ORDERS", "life_order_report", "order_streams", "step_table", "summary_table"]

ORDERS = ("lab", "lab-cut", "spliced")
#: Besides ``CALIBRATIONS``: ``walking``, nothing given and the engine learning each
#: stream's vertical from its walking (``calibration.from_walking``; with ``none`` it is
#: off).
LIFE_CALIBRATIONS = (*CALIBRATIONS, "walking")
SHORT = {1: "WALK", 2: "UP", 3: "DOWN", 4: "SIT", 5: "STAND", 6: "LAY"}


def order_streams(
    raw: Sequence[Recording], streams: int = 3, seed: int = 0
) -> tuple[dict[str, list[Recording]], list[str]]:
    """One subject's recordings in the three orders, and what the subject lacks."""
    pool = segment_pool(raw)
    # as many segments as the subject recorded
    wanted = sum(1 for r in raw for a, _, _ in segments(r.labels) if 1 <= a <= 6)
    subject = pool.subject
    made = [
        spliced(pool, np.random.default_rng([seed, subject, k]), wanted) for k in range(streams)
    ]
    cut = [lab_cut(r) for r in raw]
    orders = {
        "lab": list(raw),
        "lab-cut": [
            Recording(subject, f"{r.experiment}-cut", c.samples, c.labels)
            for r, c in zip(raw, cut, strict=True)
        ],
        "spliced": [
            Recording(subject, f"spliced{k}", s.samples, s.labels) for k, s in enumerate(made)
        ],
    }
    return orders, pool.missing()


def _score_subject(
    bundle: Bundle,
    configs: Mapping[str, Config],
    data_dir: str | Path,
    subject: int,
    streams: int,
    seed: int,
    calibration: str,
) -> tuple[dict[tuple[str, str], StreamScore], list[str]]:
    """One subject (a joblib task): its stream totals per (order, config), and what it lacks."""
    raw = list(iter_hapt(data_dir, subjects=[subject]))
    if not raw:
        return {}, ["recordings"]
    orders, missing = order_streams(raw, streams, seed)
    spec = bundle.calibration
    scores = {}
    for order, recordings in orders.items():
        prepared: list[Prepared] = prepare(
            recordings,
            bundle.preprocessing,
            bundle.channels,
            spec.seconds if spec is not None else 5.0,
            calibration="none" if calibration == "walking" else calibration,
            reference=None if spec is None else np.asarray(spec.reference_vertical),
        )
        for name, config in configs.items():
            scores[(order, name)] = sum(
                stream_scores(bundle, config, prepared).values(), StreamScore()
            )
    return scores, missing


def life_order_report(
    bundle_dir: str | Path | Bundle | None,
    data_dir: str | Path,
    configs: Mapping[str, Config],
    subjects: Sequence[int] = TEST_SUBJECTS,
    *,
    streams: int = 3,
    seed: int = 0,
    calibration: str = "reference",
    jobs: int = 2,
) -> dict[str, Any]:
    """The three orders' stream figures per config, with steps and postural events."""
    if calibration not in LIFE_CALIBRATIONS:
        raise ValueError(f"calibration {calibration!r}: choose from {LIFE_CALIBRATIONS}")
    if calibration in ("walking", "none"):  # learnt from walking, or truly none
        configs = {name: _from_walking(c, calibration == "walking") for name, c in configs.items()}
    bundle = bundle_dir if isinstance(bundle_dir, Bundle) else load_bundle(bundle_dir)
    results = Parallel(n_jobs=min(jobs, len(subjects)))(
        delayed(_score_subject)(bundle, configs, data_dir, s, streams, seed, calibration)
        for s in subjects
    )
    report: dict[str, Any] = {
        "bundle": str(bundle.path),
        "name": bundle.name,
        "subjects": list(subjects),
        "streams_per_subject": streams,
        "seed": seed,
        "calibration": calibration,
        "missing": {s: m for s, (_, m) in zip(subjects, results, strict=True) if m},
        "orders": {},
    }
    for order in ORDERS:
        report["orders"][order] = {}
        for name, config in configs.items():
            by_subject = {
                s: scores[(order, name)]
                for s, (scores, _) in zip(subjects, results, strict=True)
                if scores
            }
            total = sum(by_subject.values(), StreamScore())
            report["orders"][order][name] = {
                **total.summary(),
                "smoothing": config.smoothing.method,
                "hop": config.stream.hop,
                "recall": {ACTIVITIES[c]: round(v, 4) for c, v in total.recall().items()},
                "steps": {
                    f"{SHORT[a]} -> {SHORT[b]}": round(v, 4)
                    for (a, b), v in total.step_accuracy().items()
                },
                "per_subject": {
                    s: round(score.online_accuracy, 4) for s, score in by_subject.items()
                },
                "per_subject_recall": {
                    s: {ACTIVITIES[c]: round(v, 4) for c, v in score.recall().items()}
                    for s, score in by_subject.items()
                },
            }
    return report


def _from_walking(config: Config, on: bool) -> Config:
    cal = config.calibration.model_copy(update={"from_walking": on})
    return config.model_copy(update={"calibration": cal})


def summary_table(report: dict[str, Any]) -> pd.DataFrame:
    """One row per (config, order): the headline stream figures."""
    rows = []
    for order, by_config in report["orders"].items():
        for name, s in by_config.items():
            rows.append(
                {
                    "config": name,
                    "order": order,
                    "online": s["online_accuracy"],
                    "macro_f1": s["macro_f1"],
                    "delay_median_s": s["detection_delay_s_median"],
                    "delay_p90_s": s["detection_delay_s_p90"],
                    "switches_h": s["switches_per_hour_pred"],
                    "true_h": s["switches_per_hour_true"],
                    # where the published ones fell: in postural transitions, unlabelled
                    "in_transitions_h": s["switches_per_hour_in_transitions"],
                    "unlabelled_h": s["switches_per_hour_unlabelled"],
                    "switch_ratio": round(
                        s["switches_per_hour_pred"] / max(s["switches_per_hour_true"], 1e-9), 2
                    ),
                    "posture_3s": s["posture_detected_within_3s"],
                    "false_posture_h": s["false_posture_changes_per_hour"],
                }
            )
    return pd.DataFrame(rows)


def step_table(report: dict[str, Any], order: str = "spliced") -> pd.DataFrame:
    """Accuracy over the segment after each kind of change (rows) per config (columns)."""
    by_config = report["orders"][order]
    return pd.DataFrame({name: s["steps"] for name, s in by_config.items()}).sort_index()
