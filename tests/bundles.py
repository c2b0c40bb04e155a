"""Small, randomly initialised model bundles for tests (the real bundle format)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from harstream.core.bundle import ArchSpec, Bundle
from harstream.core.preprocessing import FilterSpec, Preprocessor
from replay import BASIC_ACTIVITIES, iter_hapt
from training.export import write_bundle

MINI = Path(__file__).resolve().parent / "data" / "hapt-mini"


def feature_stats() -> tuple[np.ndarray, np.ndarray]:
    pre = Preprocessor(FilterSpec())
    features = np.concatenate([pre.preprocess(r.samples) for r in iter_hapt(MINI)])
    return features.mean(axis=0), features.std(axis=0)


def random_bundle(
    out: Path,
    kind: str = "gru",
    mode: str = "stateful",
    hidden: int = 16,
    layers: int = 2,
    window: int = 128,
    hop: int = 64,
    seed: int = 0,
) -> Bundle:
    torch.manual_seed(seed)
    from harstream.core.torchnet import HarNet

    arch = ArchSpec(type=kind, hidden=hidden, layers=layers, dropout=0.0)  # type: ignore[arg-type]
    net = HarNet.from_arch(arch, n_classes=len(BASIC_ACTIVITIES))
    with torch.no_grad():
        net.head.weight.mul_(8.0)  # confident, varied outputs, so argmax changes over time
        # Long memory, so that a state that is not carried shows: open the GRU update gate
        # / LSTM forget gate (both the second block of biases), as trained nets tend to.
        for layer in range(layers):
            getattr(net.rnn, f"bias_hh_l{layer}")[hidden : 2 * hidden] += 3.0
    mean, std = feature_stats()
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
    )
