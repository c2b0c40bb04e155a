"""A timeline figure of a replay: truth, published activity, confidence, raw signal.

One panel group per recording, time on the x axis: the ground-truth band, the band of
the published activity (the label in force), the confidence of each decision and the
raw acceleration magnitude. matplotlib is imported only when a figure is drawn.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harstream.errors import HarstreamError
from harstream.evaluation.metrics import segments

__all__ = ["COLORS", "TimelinePanel", "plot_timeline"]

#: one colour per activity id (0 = unlabelled / no decision yet, 1..6 basic, 7..12
#: transitions share a grey); UNKNOWN is drawn as 0
COLORS = {
    0: "#ffffff",
    1: "#1b9e77",
    2: "#d95f02",
    3: "#7570b3",
    4: "#e7298a",
    5: "#66a61e",
    6: "#e6ab02",
    **{i: "#bbbbbb" for i in range(7, 13)},
}


@dataclass
class TimelinePanel:
    title: str
    rate_hz: float
    truth: np.ndarray  # (n,) activity ids per sample
    published: np.ndarray  # (n,) label in force as activity ids (0 before the first)
    decision_t: np.ndarray  # (k,) seconds of each decision's last sample
    confidence: np.ndarray  # (k,)
    acc_magnitude: np.ndarray  # (n,) |acc| in g


def _bands(ax: Any, labels: np.ndarray, rate_hz: float, y: float) -> None:
    for label, a, b in segments(labels):
        ax.broken_barh(
            [(a / rate_hz, (b - a) / rate_hz)], (y, 0.8), color=COLORS[label], linewidth=0
        )


def plot_timeline(
    panels: Sequence[TimelinePanel], names: dict[int, str], path: Path, title: str
) -> Path:
    try:
        import matplotlib
    except ImportError as exc:
        raise HarstreamError("--plot needs matplotlib: pip install 'harstream[plot]'") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    fig, axes = plt.subplots(
        len(panels) * 3,
        1,
        figsize=(14, 3.4 * len(panels)),
        sharex=False,
        gridspec_kw={"height_ratios": [1.1, 1, 1] * len(panels)},
    )
    axes = np.atleast_1d(axes)
    for k, panel in enumerate(panels):
        bands, conf, signal = axes[3 * k : 3 * k + 3]
        end = len(panel.truth) / panel.rate_hz
        _bands(bands, panel.truth, panel.rate_hz, 1.0)
        _bands(bands, panel.published, panel.rate_hz, 0.0)
        bands.set_yticks([0.4, 1.4], ["published", "truth"])
        bands.set_ylim(-0.1, 1.9)
        bands.set_title(panel.title, loc="left", fontsize=10)
        conf.step(panel.decision_t, panel.confidence, where="post", color="#333333", lw=0.9)
        conf.set_ylim(0, 1.05)
        conf.set_ylabel("confidence", fontsize=8)
        t = np.arange(len(panel.acc_magnitude)) / panel.rate_hz
        signal.plot(t, panel.acc_magnitude, color="#4477aa", lw=0.4)
        signal.set_ylabel("|acc| (g)", fontsize=8)
        signal.set_xlabel("seconds", fontsize=8)
        for ax in (bands, conf, signal):
            ax.set_xlim(0, end)
            ax.tick_params(labelsize=8)
    handles = [Patch(color=COLORS[i], label=names[i]) for i in range(1, 7)]
    handles.append(Patch(color=COLORS[7], label="transition"))
    fig.legend(
        handles=handles,
        loc="upper center",
        ncol=7,
        fontsize=8,
        frameon=False,
        bbox_to_anchor=(0.5, 0.995),
    )
    fig.suptitle(title, y=1.02, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path
