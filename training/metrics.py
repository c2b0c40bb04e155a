"""Window-level figures of the evaluation protocol, by scikit-learn, and their tables.

Accuracy, macro-F1, per-class precision/recall/F1, the confusion matrix and the
classification report of class ids (0..C-1). The stream-level figures (online accuracy,
detection delay, switches) have no library; they stay in the torch-free runtime
(``harstream.evaluation.metrics``), which the gateway and ``replay`` use too.

Tables (per subject, per fold, per setting) are pandas data frames, written as CSV for
scripts and as Markdown for the docs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import (
    accuracy_score,
    classification_report,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)

__all__ = ["window_metrics", "write_table"]


def window_metrics(truth: np.ndarray, pred: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
    """The protocol's window-level figures of class ids ``truth`` and ``pred``.

    Macro-F1 averages over the classes present in ``truth`` (a subject who never climbed
    stairs is not scored on stairs). The confusion matrix has rows = truth.

    >>> m = window_metrics(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]), ["A", "B", "C"])
    >>> m["accuracy"], m["confusion"]
    (0.75, [[1, 1, 0], [0, 2, 0], [0, 0, 0]])
    """
    ids = list(range(len(labels)))
    present = sorted(set(np.asarray(truth).tolist()))
    precision, recall, f1, _ = precision_recall_fscore_support(
        truth, pred, labels=ids, zero_division=0.0
    )
    return {
        "windows": len(truth),
        "accuracy": float(accuracy_score(truth, pred)) if len(truth) else 0.0,
        "macro_f1": (
            float(f1_score(truth, pred, labels=present, average="macro", zero_division=0.0))
            if present
            else 0.0
        ),
        "precision": precision.tolist(),
        "recall": recall.tolist(),
        "f1": f1.tolist(),
        "confusion": confusion_matrix(truth, pred, labels=ids).tolist(),
        "report": classification_report(
            truth, pred, labels=ids, target_names=list(labels), zero_division=0.0, output_dict=True
        ),
    }


def write_table(frame: pd.DataFrame, path: Path, title: str = "") -> tuple[Path, Path]:
    """``path`` with suffixes .csv and .md; numbers in the Markdown to 4 significant digits."""
    path.parent.mkdir(parents=True, exist_ok=True)
    csv, markdown = path.with_suffix(".csv"), path.with_suffix(".md")
    frame.to_csv(csv, index=False)
    text = frame.to_markdown(index=False, floatfmt=".4g")
    markdown.write_text((f"{title}\n\n" if title else "") + text + "\n")
    return csv, markdown
