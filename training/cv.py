"""Subject-group cross-validation inside the 21 training subjects.

Three validation subjects once said 0.98 where the test subjects said 0.91: subjects
differ more than checkpoints do. To compare two recipes, train each on K folds (the
training subjects split into K groups by scikit-learn's ``GroupKFold``; each group
validates a model fitted on the others) and compare the mean validation scores. The
folds train in parallel processes (joblib), the torch threads shared out between them.
The test subjects are never loaded here.
"""

from __future__ import annotations

import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from sklearn.model_selection import GroupKFold

from harstream.config import TrainConfig
from harstream.core.preprocessing import FilterSpec
from training.data import TRAIN_SUBJECTS, Prepared, input_channels, load_prepared
from training.train import train

__all__ = ["cross_validate", "fold_table", "folds"]


def folds(k: int, subjects: tuple[int, ...] = TRAIN_SUBJECTS) -> list[list[int]]:
    """The validation subjects of each of ``k`` folds (``GroupKFold``, one group per
    subject: every subject validates exactly once).

    >>> [len(group) for group in folds(3)]
    [7, 7, 7]
    """
    ids = np.array(subjects)
    splits = GroupKFold(n_splits=k).split(ids, groups=ids)
    return [sorted(ids[held].tolist()) for _, held in splits]


def _fold(
    cfg: TrainConfig, data_dir: str | Path, recordings: list[Prepared], group: list[int]
) -> dict[str, Any]:
    """Train on everything but ``group``; the scores of the best validated step. One
    network (``train.seed``): an ensemble's members are the same recipe from other seeds."""
    update = {"validation_subjects": group, "refit": False, "members": 1, "refit_steps": None}
    fold_cfg = cfg.model_copy(update=update)
    with tempfile.TemporaryDirectory() as out:
        result = train(fold_cfg, data_dir, out, log=lambda line: None, recordings=recordings)
    best = next(h for h in result.history if h["step"] == result.best_step)
    return {
        "validation_subjects": group,
        "best_step": result.best_step,
        **{key: round(best[key], 4) for key in best if key.startswith("val_")},
        "selection": round(best["selection"], 4),
    }


def cross_validate(
    cfg: TrainConfig,
    data_dir: str | Path,
    k: int = 3,
    *,
    log: Callable[[str], None] = print,
    recordings: list[Prepared] | None = None,
) -> dict[str, Any]:
    if recordings is None:
        channels = input_channels(cfg.inputs)
        recordings = load_prepared(
            data_dir, TRAIN_SUBJECTS, FilterSpec(), channels, cfg.calibration_s
        )
    groups = folds(k, tuple(sorted({r.subject for r in recordings})))
    jobs = min(cfg.jobs, k)
    per_fold = cfg.model_copy(update={"threads": max(1, cfg.threads // jobs)})
    log(f"{k} folds in {jobs} processes: validation groups {groups}")
    results = Parallel(n_jobs=jobs)(
        delayed(_fold)(per_fold, data_dir, recordings, group) for group in groups
    )
    for i, row in enumerate(results):
        row["fold"] = i
        scores = ", ".join(f"{key} {v}" for key, v in row.items() if key.startswith("val_"))
        log(f"fold {i} {row['validation_subjects']}: {scores}, selection {row['selection']}")
    summary = {
        key: round(statistics.mean(r[key] for r in results), 4)
        for key in results[0]
        if key.startswith("val_") or key == "selection"
    }
    log("mean: " + ", ".join(f"{key} {value}" for key, value in summary.items()))
    return {"folds": results, "mean": summary, "config": cfg.model_dump()}


def fold_table(result: dict[str, Any]) -> pd.DataFrame:
    """One row per fold and one for the mean."""
    frame = pd.DataFrame(result["folds"])
    frame["validation_subjects"] = frame["validation_subjects"].map(
        lambda group: " ".join(map(str, group))
    )
    mean = {"fold": "mean", "validation_subjects": "", **result["mean"]}
    frame = pd.concat([frame, pd.DataFrame([mean])], ignore_index=True)
    return frame[["fold", *[c for c in frame.columns if c != "fold"]]]
