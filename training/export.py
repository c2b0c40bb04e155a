"""Write a model bundle: bundle.json + model.pt (state_dict) + model.onnx.

``write_bundle`` is what ``harstream train`` ends with; ``export_onnx`` rewrites
``model.onnx`` from ``model.pt`` (``harstream export --model DIR``). After writing,
the ONNX graph is run next to torch on random inputs and must agree within 1e-5.
"""

from __future__ import annotations

import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harstream.core.bundle import ActivityStats, ArchSpec, Bundle, CalibrationSpec, load_bundle
from harstream.core.inference import OnnxModel, TorchModel
from harstream.core.preprocessing import CHANNELS, FilterSpec
from harstream.core.torchnet import ExportWrapper, Net, build_net
from harstream.errors import ModelError

__all__ = ["check_parity", "export_onnx", "write_bundle"]

ONNX_OPSET = 17


def write_bundle(
    net: Net,
    out_dir: str | Path,
    *,
    arch: ArchSpec,
    labels: list[str] | tuple[str, ...],
    mode: str,
    window: int,
    hop: int,
    filters: FilterSpec,
    mean: np.ndarray | list[float],
    std: np.ndarray | list[float],
    training: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    channels: tuple[str, ...] = CHANNELS,
    calibration: CalibrationSpec | None = None,
    activity_stats: ActivityStats | None = None,
) -> Bundle:
    draft = Bundle(
        path=Path(out_dir),
        labels=tuple(labels),
        arch=arch,
        mode=mode,
        window=window,
        hop=hop,
        rate_hz=filters.rate_hz,
        preprocessing=filters,
        mean=tuple(float(v) for v in mean),
        std=tuple(float(v) for v in std),
        training=training or {},
        metrics=metrics or {},
        channels=channels,
        calibration=calibration,
        activity_stats=activity_stats,
    )
    return _save(net, draft)


def write_like(net: Net, base: Bundle, out_dir: str | Path, **changes: Any) -> Bundle:
    """``net`` as a bundle of ``base``'s contract (labels, inputs, normalisation,
    calibration, smoother statistics, ...) in ``out_dir``, with ``changes`` to its
    fields (e.g. ``training``, ``metrics``, ``arch``)."""
    return _save(net, replace(base, path=Path(out_dir), **changes))


def _save(net: Net, draft: Bundle) -> Bundle:
    """bundle.json, the weights and the ONNX graph of ``draft``, read back validated."""
    draft.save()
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    torch.save(state, draft.weights_path)
    bundle = load_bundle(draft.path)  # what the gateway will read, validated
    export_onnx(bundle)
    return bundle


def update_metrics(bundle_dir: str | Path, metrics: dict[str, Any]) -> None:
    """Merge ``metrics`` into bundle.json's metrics (the weights are untouched)."""
    bundle = load_bundle(bundle_dir)
    replace(bundle, metrics={**bundle.metrics, **metrics}).save()


def export_onnx(bundle: Bundle) -> Path:
    """(Re)write ``model.onnx`` from ``model.pt``; check it against torch."""
    net = build_net(bundle.arch, len(bundle.labels), len(bundle.channels))
    net.load_state_dict(torch.load(bundle.weights_path, map_location="cpu", weights_only=True))
    net.eval()
    wrapper = ExportWrapper(net).eval()
    batch, steps = 2, bundle.hop
    x = torch.zeros(batch, steps, len(bundle.channels))
    states = ["h0", "c0"][: bundle.arch.state_tensors]
    state = tuple(torch.zeros(bundle.arch.state_layers, batch, bundle.arch.hidden) for _ in states)
    outputs = ["probs", *[s.replace("0", "n") for s in states]]
    axes = {"x": {0: "batch", 1: "time"}, "probs": {0: "batch", 1: "time"}}
    axes.update({name: {1: "batch"} for name in [*states, *outputs[1:]]})
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated in favour of dynamo, but exports these
        # recurrent nets in 0.4 s instead of 25 s, to an identical graph for onnxruntime.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper,
            (x, *state),
            str(bundle.onnx_path),
            input_names=["x", *states],
            output_names=outputs,
            dynamic_axes=axes,
            opset_version=ONNX_OPSET,
            dynamo=False,
        )
    check_parity(bundle)
    return bundle.onnx_path


def check_parity(bundle: Bundle, tolerance: float = 1e-5, seed: int = 0) -> float:
    """Max abs difference of probabilities and states, torch vs onnxruntime, on random
    inputs carried over two calls; raises ModelError above ``tolerance``."""
    rng = np.random.default_rng(seed)
    onnx, ref = OnnxModel(bundle), TorchModel(bundle)
    state_a, state_b = onnx.initial_state(3), ref.initial_state(3)
    worst = 0.0
    for steps in (bundle.hop, 7 * bundle.arch.stride):
        x = rng.standard_normal((3, steps, len(bundle.channels))).astype(np.float32)
        state_a, probs_a = onnx.step(state_a, x)
        state_b, probs_b = ref.step(state_b, x)
        worst = max(worst, float(np.abs(probs_a - probs_b).max()))
        worst = max(
            worst, *(float(np.abs(a - b).max()) for a, b in zip(state_a, state_b, strict=True))
        )
    if worst > tolerance:
        raise ModelError(f"{bundle.onnx_path}: differs from torch by {worst:.2e} > {tolerance}")
    return worst
