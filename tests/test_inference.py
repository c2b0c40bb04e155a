"""Backends and bundles: torch and onnxruntime agree; bundles round-trip; bad ones fail."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from harstream.core.bundle import Bundle, load_bundle
from harstream.core.inference import (
    OnnxModel,
    TorchModel,
    load_model,
    stack_states,
    unstack_state,
)
from harstream.errors import ModelError

KINDS = ["gru", "lstm"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("mode", ["window", "stateful"])
def test_torch_and_onnx_agree(bundle_factory: Callable[..., Bundle], kind: str, mode: str) -> None:
    bundle = bundle_factory(kind, mode)
    onnx, ref = OnnxModel(bundle), TorchModel(bundle)
    rng = np.random.default_rng(1)
    state_a, state_b = onnx.initial_state(5), ref.initial_state(5)
    for steps in (128, 64, 1, 33):  # state carried across calls, as stateful mode does
        x = rng.standard_normal((5, steps, 9)).astype(np.float32)
        state_a, probs_a = onnx.step(state_a, x)
        state_b, probs_b = ref.step(state_b, x)
        assert probs_a.shape == (5, steps, 6)
        assert np.abs(probs_a - probs_b).max() <= 1e-4
        for a, b in zip(state_a, state_b, strict=True):
            assert np.abs(a - b).max() <= 1e-4
    np.testing.assert_allclose(probs_a.sum(axis=-1), 1.0, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_state_carries_exactly_across_chunks_and_batches(
    bundle_factory: Callable[..., Bundle], kind: str
) -> None:
    model = OnnxModel(bundle_factory(kind, "stateful"))
    x = np.random.default_rng(2).standard_normal((3, 200, 9)).astype(np.float32)
    _, whole = model.step(model.initial_state(3), x)
    # device by device, in uneven chunks, states split and re-stacked between calls
    states = unstack_state(model.initial_state(3))
    parts = []
    for a, b in ((0, 64), (64, 65), (65, 200)):
        state, probs = model.step(stack_states(states), x[:, a:b])
        states = unstack_state(state)
        parts.append(probs)
    np.testing.assert_allclose(np.concatenate(parts, axis=1), whole, atol=1e-5)
    assert states[0][0].shape == (2, 1, 16)


@pytest.mark.parametrize("kind", KINDS)
def test_an_ensemble_is_the_geometric_mean_of_its_members(
    bundle_factory: Callable[..., Bundle], kind: str, tmp_path: Path
) -> None:
    """arch.members = 2: one ONNX graph whose probabilities are the normalised geometric
    mean of its members' and whose state is theirs stacked, member by member; torch and
    onnxruntime agree on it."""
    import torch

    from harstream.core.torchnet import HarNet
    from training.export import write_like

    pair = bundle_factory(kind, "stateful", members=2)
    onnx, ref = OnnxModel(pair), TorchModel(pair)
    assert onnx.initial_state(3)[0].shape == (4, 3, 16)  # 2 layers x 2 members
    # each member as a bundle of its own: the same weights under members.K.
    weights = torch.load(pair.weights_path, weights_only=True)
    alone = []
    for k in range(2):
        own = {n.split(".", 2)[2]: w for n, w in weights.items() if n.startswith(f"members.{k}.")}
        single = load_bundle(pair.path)
        arch = single.arch.model_copy(update={"members": 1})
        net = HarNet.from_arch(arch, len(single.labels), len(single.channels))
        net.load_state_dict(own)
        alone.append(OnnxModel(write_like(net, single, tmp_path / f"member{k}", arch=arch)))
    rng = np.random.default_rng(3)
    states = [m.initial_state(3) for m in (onnx, ref, *alone)]
    for steps in (64, 1, 33):
        x = rng.standard_normal((3, steps, 9)).astype(np.float32)
        outs = [m.step(s, x) for m, s in zip((onnx, ref, *alone), states, strict=True)]
        states = [o[0] for o in outs]
        probs = [o[1] for o in outs]
        geometric = np.sqrt(probs[2] * probs[3])
        geometric /= geometric.sum(axis=-1, keepdims=True)
        np.testing.assert_allclose(probs[0], geometric, atol=1e-5)
        np.testing.assert_allclose(probs[0], probs[1], atol=1e-5)
        for tensor in range(len(states[0])):
            stacked = np.concatenate([states[2][tensor], states[3][tensor]])
            np.testing.assert_allclose(states[0][tensor], stacked, atol=1e-5)
    assert not np.allclose(probs[2], probs[3], atol=1e-2)  # two different members


def test_bundle_round_trip(bundle_factory: Callable[..., Bundle], tmp_path: Path) -> None:
    bundle = bundle_factory("lstm", "window")
    copy = Path(shutil.copytree(bundle.path, tmp_path / "copy"))
    again = load_bundle(copy)
    assert again.to_json() == bundle.to_json()
    assert again.arch.type == "lstm" and again.mode == "window" and again.labels[0] == "WALKING"
    x = np.ones((1, 128, 9), np.float32)
    np.testing.assert_allclose(
        OnnxModel(again).step(OnnxModel(again).initial_state(1), x)[1],
        OnnxModel(bundle).step(OnnxModel(bundle).initial_state(1), x)[1],
    )


def test_auto_backend_prefers_onnx_and_falls_back_to_torch(
    bundle_factory: Callable[..., Bundle], tmp_path: Path
) -> None:
    bundle = bundle_factory("gru", "stateful")
    assert isinstance(load_model(bundle, "auto"), OnnxModel)
    assert isinstance(load_model(bundle, "torch"), TorchModel)
    no_onnx = Path(shutil.copytree(bundle.path, tmp_path / "b"))
    (no_onnx / "model.onnx").unlink()
    assert isinstance(load_model(load_bundle(no_onnx), "auto"), TorchModel)
    with pytest.raises(ModelError, match="unknown backend 'tpu'"):
        load_model(bundle, "tpu")


def edit(bundle: Bundle, tmp_path: Path, change: Callable[[dict], None]) -> Path:
    folder = Path(shutil.copytree(bundle.path, tmp_path / "edited"))
    meta = json.loads((folder / "bundle.json").read_text())
    change(meta)
    (folder / "bundle.json").write_text(json.dumps(meta))
    return folder


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m["arch"].update(type="cnn"), r"arch\.type: Input should be 'gru' or 'lstm'"),
        (lambda m: m.pop("labels"), r"labels: Field required"),
        (lambda m: m.update(extra=1), r"extra: unknown key"),
        (lambda m: m.update(format=2), r"format: Input should be 1"),
        (
            lambda m: m["normalization"].update(std=[0.0] * 9),
            r"normalization\.std\.0: Input should "
            "be greater than 0",
        ),
        (lambda m: m.update(channels=m["channels"][::-1]), r"channels: must be"),
        (
            lambda m: m["preprocessing"].update(median_kernel=4),
            r"preprocessing: median_kernel must",
        ),
        (lambda m: m["preprocessing"].update(bogus=1), r"preprocessing: .*bogus"),
        (lambda m: m.update(labels=["A", "A"]), r"labels: must be distinct"),
    ],
)
def test_malformed_bundle_json_names_file_key_and_reason(
    bundle_factory: Callable[..., Bundle], tmp_path: Path, change, message: str
) -> None:
    folder = edit(bundle_factory("gru", "stateful"), tmp_path, change)
    with pytest.raises(ModelError, match=rf"{folder / 'bundle.json'}: {message}"):
        load_bundle(folder)


def test_missing_or_broken_files_fail_at_load(
    bundle_factory: Callable[..., Bundle], tmp_path: Path
) -> None:
    with pytest.raises(ModelError, match=r"bundle\.json: missing"):
        load_bundle(tmp_path)
    bundle = bundle_factory("gru", "stateful")
    folder = Path(shutil.copytree(bundle.path, tmp_path / "b"))
    (folder / "model.onnx").write_bytes(b"not onnx")
    with pytest.raises(ModelError, match=r"model\.onnx: cannot load"):
        OnnxModel(load_bundle(folder))
    (folder / "model.pt").write_bytes(b"not torch")
    with pytest.raises(ModelError, match=r"model\.pt: cannot load"):
        TorchModel(load_bundle(folder))
    # an LSTM graph where the bundle says GRU: the state inputs do not match
    lstm = bundle_factory("lstm", "stateful")
    shutil.copy(lstm.onnx_path, folder / "model.onnx")
    with pytest.raises(ModelError, match=r"inputs \['x', 'h0', 'c0'\].*for a gru"):
        OnnxModel(load_bundle(folder))


def test_weights_load_without_pickle(bundle_factory: Callable[..., Bundle]) -> None:
    import torch

    weights = torch.load(bundle_factory("gru", "stateful").weights_path, weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in weights.values())


def test_the_shipped_bundle_agrees_between_torch_and_onnx() -> None:
    from training.export import check_parity

    bundle = load_bundle()  # the packaged default
    assert bundle.arch.type == "gru" and bundle.mode == "stateful"
    assert check_parity(bundle, tolerance=1e-4) <= 1e-4
