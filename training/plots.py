"""Figures of an evaluation: the confusion matrix and the training curves (matplotlib)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["plot_confusion", "plot_curves"]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only; no display needed
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(
    confusion: Sequence[Sequence[int]], labels: Sequence[str], path: Path, title: str
) -> Path:
    """Row-normalised confusion matrix with the counts written in each cell."""
    plt = _pyplot()
    counts = np.asarray(confusion)
    share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(7.5, 6.5))
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    short = [label.replace("WALKING_", "W_").replace("STAIRS", "") for label in labels]
    ax.set_xticks(range(len(labels)), short, rotation=35, ha="right")
    ax.set_yticks(range(len(labels)), short)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(len(labels)):
        for j in range(len(labels)):
            if counts[i, j]:
                ax.text(
                    j,
                    i,
                    f"{counts[i, j]}\n{share[i, j]:.0%}",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if share[i, j] > 0.6 else "black",
                )
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_curves(
    history: Sequence[dict[str, float]], path: Path, title: str, best_step: int | None = None
) -> Path:
    """Training loss, and train/validation accuracies, against optimiser steps."""
    plt = _pyplot()
    steps = [h["step"] for h in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.plot(steps, [h["train_loss"] for h in history], label="train loss")
    left.set_xlabel("step")
    left.set_ylabel("cross-entropy")
    left.legend()
    for key, name in (
        ("train_accuracy", "train (augmented, per step)"),
        ("val_accuracy", "validation windows"),
        ("val_macro_f1", "validation macro-F1"),
        ("val_online_accuracy", "validation online accuracy"),
    ):
        if any(key in h for h in history):
            right.plot(steps, [h.get(key, np.nan) for h in history], label=name)
    if best_step:
        for ax in (left, right):
            ax.axvline(best_step, color="grey", linestyle=":", linewidth=1)
    right.set_xlabel("step")
    right.set_ylabel("accuracy")
    right.set_ylim(0.5, 1.0)
    right.legend(loc="lower right", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_tradeoff(rows: Sequence[dict[str, Any]], path: Path, title: str) -> Path:
    """Detection delay (p90) against online accuracy, one point per smoothing x hop."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 5))
    markers = {"none": "o", "ema": "s", "majority": "^", "hysteresis": "D"}
    colors = {64: "#1b9e77", 32: "#d95f02", 16: "#7570b3"}
    for row in rows:
        ax.scatter(
            row["detection_delay_s_p90"],
            row["online_accuracy"],
            s=20 + row["switches_per_hour_pred"] / 5,
            marker=markers.get(row["smoothing"], "o"),
            color=colors.get(row["hop"], "grey"),
            alpha=0.8,
            label=f"{row['smoothing']}, hop {row['hop']}",
        )
    ax.set_xlabel("detection delay, 90th percentile (s)")
    ax.set_ylabel("online accuracy")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(
        fontsize=7, ncol=2, loc="lower left", title="marker size ~ switches/hour", title_fontsize=7
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
