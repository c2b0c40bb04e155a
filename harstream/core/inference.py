"""Inference backends behind one protocol: ``step(state, x) -> (state, probs)``.

``x`` is (B, T, C) float32 features of B streams; ``state`` is a tuple of arrays of
shape (layers x members, B, hidden): ``(h,)`` for a GRU, ``(h, c)`` for an LSTM. ``probs`` is
(B, T / stride, classes): ``probs[:, k]`` is the class distribution after the network
consumed ``x[:, : (k + 1) * stride]``. ``stride`` (``arch.stride``) is the number of
samples per recurrent step; T must be a multiple of it (1 for a per-sample network).
Window mode calls ``step`` from ``initial_state`` on whole windows and reads the last
step; stateful mode carries the state from call to call.

Backends:
- ``onnx``: onnxruntime on ``model.onnx`` (the default; no torch needed).
- ``torch``: the reference, from ``model.pt`` (weights_only) and the network in
  ``harstream.core.torchnet``; imported only when asked for.

This module does no file reading beyond handing paths to the runtimes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from harstream.core.bundle import ArchSpec, Bundle
from harstream.errors import ModelError

__all__ = [
    "Model",
    "OnnxModel",
    "State",
    "expand_steps",
    "load_model",
    "stack_states",
    "torch_available",
    "unstack_state",
]

State = tuple[np.ndarray, ...]


class Model(Protocol):
    labels: tuple[str, ...]
    arch: ArchSpec

    def initial_state(self, batch: int) -> State: ...

    def step(self, state: State, x: np.ndarray) -> tuple[State, np.ndarray]: ...


def stack_states(states: Sequence[State]) -> State:
    """Join per-stream states (batch 1 each, or more) along the batch axis, in order."""
    return tuple(np.concatenate(parts, axis=1) for parts in zip(*states, strict=True))


def unstack_state(state: State) -> list[State]:
    """Split a batched state into per-stream states (views)."""
    batch = state[0].shape[1]
    return [tuple(s[:, i : i + 1] for s in state) for i in range(batch)]


def expand_steps(probs: np.ndarray, stride: int, n: int) -> np.ndarray:
    """Per-step outputs (T / stride, classes) -> per-sample (n, classes): row i is the
    newest output available after sample i (the first stride - 1 rows, before any
    output, repeat the first)."""
    if stride == 1:
        return probs[:n]
    out = np.repeat(probs, stride, axis=0)[: max(n - (stride - 1), 0)]
    head = np.repeat(probs[:1], min(stride - 1, n), axis=0)
    return np.concatenate([head, out])


def _zeros(arch: ArchSpec, batch: int) -> State:
    return tuple(
        np.zeros((arch.state_layers, batch, arch.hidden), np.float32)
        for _ in range(arch.state_tensors)
    )


class OnnxModel:
    """onnxruntime on ``model.onnx``: inputs x, h0[, c0]; outputs probs, hn[, cn]."""

    def __init__(self, bundle: Bundle, threads: int = 1) -> None:
        import onnxruntime as ort

        self.labels = bundle.labels
        self.arch = bundle.arch
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        try:
            self._session = ort.InferenceSession(
                str(bundle.onnx_path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ModelError(f"{bundle.onnx_path}: cannot load: {exc}") from exc
        states = ["h0", "c0"][: self.arch.state_tensors]
        self._state_inputs = states
        self._outputs = ["probs", *[s.replace("0", "n") for s in states]]
        got_in = [i.name for i in self._session.get_inputs()]
        got_out = [o.name for o in self._session.get_outputs()]
        if got_in != ["x", *states] or got_out != self._outputs:
            raise ModelError(
                f"{bundle.onnx_path}: inputs {got_in} / outputs {got_out}; "
                f"expected {['x', *states]} / {self._outputs} for a {self.arch.type}"
            )

    def initial_state(self, batch: int) -> State:
        return _zeros(self.arch, batch)

    def step(self, state: State, x: np.ndarray) -> tuple[State, np.ndarray]:
        feeds: dict[str, Any] = {"x": np.ascontiguousarray(x, np.float32)}
        for name, value in zip(self._state_inputs, state, strict=True):
            feeds[name] = np.ascontiguousarray(value, np.float32)
        probs, *new_state = self._session.run(self._outputs, feeds)
        return tuple(new_state), probs


class TorchModel:
    """The reference backend: the torch network from ``model.pt`` (weights_only)."""

    def __init__(self, bundle: Bundle, threads: int = 1) -> None:
        import torch

        from harstream.core.torchnet import build_net

        self.labels = bundle.labels
        self.arch = bundle.arch
        self._torch = torch
        torch.set_num_threads(threads)
        self._net = build_net(bundle.arch, len(bundle.labels), len(bundle.channels))
        try:
            weights = torch.load(bundle.weights_path, map_location="cpu", weights_only=True)
            self._net.load_state_dict(weights)
        except Exception as exc:  # missing file, unpickling refused, shape mismatch
            raise ModelError(f"{bundle.weights_path}: cannot load: {exc}") from exc
        self._net.eval()

    def initial_state(self, batch: int) -> State:
        return _zeros(self.arch, batch)

    def step(self, state: State, x: np.ndarray) -> tuple[State, np.ndarray]:
        torch = self._torch
        with torch.inference_mode():
            tensors = tuple(torch.from_numpy(np.ascontiguousarray(s, np.float32)) for s in state)
            rnn_state = tensors if self.arch.type == "lstm" else tensors[0]
            logits, new = self._net(
                torch.from_numpy(np.ascontiguousarray(x, np.float32)), rnn_state
            )
            probs = torch.softmax(logits, dim=-1).numpy()
        new_state = tuple(t.numpy() for t in new) if self.arch.type == "lstm" else (new.numpy(),)
        return new_state, probs


def torch_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is not None


def load_model(bundle: Bundle, backend: str = "auto", threads: int = 1) -> Model:
    """The bundle's network on the chosen backend.

    ``auto`` takes onnxruntime whenever the bundle has ``model.onnx``: it is the faster
    of the two at every batch size we measured (docs/benchmarks.md) and the parity test
    holds it to torch's output; torch only when there is no ONNX file and it is installed.
    """
    if backend == "auto":
        backend = "onnx" if bundle.onnx_path.exists() or not torch_available() else "torch"
    if backend == "onnx":
        return OnnxModel(bundle, threads)
    if backend == "torch":
        if not torch_available():
            raise ModelError("backend 'torch' needs torch: pip install 'harstream[train]'")
        return TorchModel(bundle, threads)
    raise ModelError(f"unknown backend {backend!r}; choose auto, torch or onnx")
