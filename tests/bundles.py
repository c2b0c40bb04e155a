"""Small, randomly initialised model bundles for tests (the real bundle format)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from harstream.core.bundle import ActivityStats, ArchSpec, Bundle, CalibrationSpec
from harstream.core.preprocessing import ALIGNED_CHANNELS, CHANNELS, FilterSpec, Preprocessor
from replay import BASIC_ACTIVITIES, iter_hapt
from training.data import activity_stats, load_prepared
from training.export import write_bundle

MINI = Path(__file__).resolve().parent / "data" / "hapt-mini"


UPRIGHT = (1.0, 0.0, 0.0)  # the UCI phone's x axis points up
MINI_PREPARED = load_prepared(MINI, range(1, 31), FilterSpec())


def feature_stats(channels: tuple[str, ...] = CHANNELS) -> tuple[np.ndarray, np.ndarray]:
    pre = Preprocessor(FilterSpec(), channels=channels)
    features = np.concatenate([pre.preprocess(r.samples, UPRIGHT) for r in iter_hapt(MINI)])
    std = features.std(axis=0)
    return features.mean(axis=0), np.where(std > 0, std, 1.0)


def random_bundle(
    out: Path,
    kind: str = "gru",
    mode: str = "stateful",
    hidden: int = 16,
    layers: int = 2,
    window: int = 128,
    hop: int = 64,
    seed: int = 0,
    stride: int = 1,
    aligned: bool = False,
    members: int = 1,
) -> Bundle:
    torch.manual_seed(seed)
    from harstream.core.torchnet import Ensemble, build_net

    channels = ALIGNED_CHANNELS if aligned else CHANNELS
    arch = ArchSpec(
        type=kind,  # type: ignore[arg-type]
        hidden=hidden,
        layers=layers,
        dropout=0.0,
        stride=stride,
        members=members,
    )
    net = build_net(arch, len(BASIC_ACTIVITIES), len(channels))
    with torch.no_grad():
        for one in net.members if isinstance(net, Ensemble) else [net]:
            one.head.weight.mul_(8.0)  # confident, varied outputs: argmax changes over time
            # Long memory, so that a state that is not carried shows: open the GRU update
            # gate / LSTM forget gate (both the second block of biases), as trained nets do.
            for layer in range(layers):
                getattr(one.rnn, f"bias_hh_l{layer}")[hidden : 2 * hidden] += 3.0
    mean, std = feature_stats(channels)
    return write_bundle(
        net,
        out,
        arch=arch,
        labels=BASIC_ACTIVITIES,
        mode=mode,
        window=window,
        hop=hop,
        filters=FilterSpec(),
        mean=mean,
        std=std,
        training={"name": f"random-{kind}-{mode}", "seed": seed},
        channels=channels,
        calibration=CalibrationSpec(reference_vertical=list(UPRIGHT)) if aligned else None,
        activity_stats=ActivityStats(
            **activity_stats(MINI_PREPARED, len(BASIC_ACTIVITIES), duration_s=6.0)
        ),
    )
