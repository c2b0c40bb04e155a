"""Subject-group cross-validation inside the 21 training subjects.

Three validation subjects once said 0.98 where the test subjects said 0.91: subjects
differ more than checkpoints do. To compare two recipes, train each on K folds (the
training subjects dealt round-robin into K groups; each group validates a model fitted
on the others) and compare the mean validation scores. The test subjects are never
loaded here.
"""

from __future__ import annotations

import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harstream.config import TrainConfig
from training.data import TRAIN_SUBJECTS, Prepared, load_prepared
from training.train import train

__all__ = ["cross_validate", "folds"]


def folds(k: int) -> list[list[int]]:
    """The 21 training subjects dealt into k groups.

    >>> folds(3)[0]
    [1, 6, 11, 16, 21, 25, 28]
    """
    return [list(TRAIN_SUBJECTS[i::k]) for i in range(k)]


def cross_validate(
    cfg: TrainConfig,
    data_dir: str | Path,
    k: int = 3,
    *,
    log: Callable[[str], None] = print,
    recordings: list[Prepared] | None = None,
) -> dict[str, Any]:
    if recordings is None:
        recordings = load_prepared(data_dir, TRAIN_SUBJECTS, _filters())
    results = []
    for i, group in enumerate(folds(k)):
        fold_cfg = cfg.model_copy(update={"validation_subjects": group, "refit": False})
        with tempfile.TemporaryDirectory() as out:
            result = train(fold_cfg, data_dir, out, log=lambda line: None, recordings=recordings)
        best = next(h for h in result.history if h["step"] == result.best_step)
        row = {
            "fold": i,
            "validation_subjects": group,
            "best_step": result.best_step,
            **{key: round(best[key], 4) for key in best if key.startswith("val_")},
            "selection": round(best["selection"], 4),
        }
        log(
            f"fold {i} {group}: "
            + ", ".join(
                f"{k_} {v}" for k_, v in row.items() if k_.startswith("val_") or k_ == "selection"
            )
        )
        results.append(row)
    summary = {
        key: round(statistics.mean(r[key] for r in results), 4)
        for key in results[0]
        if key.startswith("val_") or key == "selection"
    }
    log("mean: " + ", ".join(f"{key} {value}" for key, value in summary.items()))
    return {"folds": results, "mean": summary, "config": cfg.model_dump()}


def _filters() -> Any:
    from harstream.preprocessing import FilterSpec

    return FilterSpec()
