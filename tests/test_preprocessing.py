from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harstream.core.preprocessing import FilterSpec, FilterState, Preprocessor
from replay import iter_hapt

MINI = Path(__file__).resolve().parent / "data" / "hapt-mini"
RECORDING = next(iter_hapt(MINI, subjects=[9])).samples[:1500]  # walking, real data
PRE = Preprocessor(FilterSpec(), mean=np.arange(9) * 0.1, std=np.linspace(0.5, 1.5, 9))
WHOLE = PRE.preprocess(RECORDING)


def in_chunks(pre: Preprocessor, samples: np.ndarray, sizes: list[int]) -> np.ndarray:
    state, parts, i = None, [], 0
    for size in sizes:
        if i >= len(samples):
            break
        state, y = pre.process(state, samples[None, i : i + size])
        parts.append(y[0])
        i += size
    if i < len(samples):
        state, y = pre.process(state, samples[None, i:])
        parts.append(y[0])
    return np.concatenate(parts)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=500), min_size=1, max_size=60))
def test_any_chunking_gives_the_whole_recording_result(sizes: list[int]) -> None:
    np.testing.assert_allclose(in_chunks(PRE, RECORDING, sizes), WHOLE, rtol=0, atol=1e-6)


@settings(max_examples=20, deadline=None)
@given(st.integers(min_value=1, max_value=7).map(lambda k: 2 * k - 1))
def test_chunking_is_exact_for_any_median_kernel(kernel: int) -> None:
    pre = Preprocessor(FilterSpec(median_kernel=kernel))
    np.testing.assert_allclose(
        in_chunks(pre, RECORDING, [1, 2, 3, 50, 7] * 40), pre.preprocess(RECORDING), atol=1e-6
    )


def test_streams_in_a_batch_do_not_mix() -> None:
    other = RECORDING[::-1].copy()
    state, y = PRE.process(None, np.stack([RECORDING[:700], other[:700]]))
    states = state.unstack()
    _, rest_a = PRE.process(states[0], RECORDING[None, 700:])
    _, rest_b = PRE.process(states[1], other[None, 700:])
    np.testing.assert_allclose(np.concatenate([y[0], rest_a[0]]), WHOLE, atol=1e-6)
    np.testing.assert_allclose(np.concatenate([y[1], rest_b[0]]), PRE.preprocess(other), atol=1e-6)
    restacked = FilterState.stack(states)
    assert all(np.array_equal(a, b) for a, b in zip(restacked, state, strict=True))


def test_channels_follow_the_uci_order() -> None:
    raw = Preprocessor(FilterSpec())
    y = raw.preprocess(RECORDING)
    # gravity (total - body) is smooth: its sample-to-sample change is tiny next to body_acc's
    gravity = y[:, 6:9] - y[:, 0:3]
    assert np.abs(np.diff(gravity, axis=0)).max() < 0.02 < np.abs(np.diff(y[:, :3], axis=0)).max()
    # gyro and total_acc channels are the filtered raw signals: close to them on average
    np.testing.assert_allclose(y[:, 3:6].mean(axis=0), RECORDING[:, 3:].mean(axis=0), atol=5e-3)
    np.testing.assert_allclose(y[:, 6:9].mean(axis=0), RECORDING[:, :3].mean(axis=0), atol=5e-3)
    # the median filter removes a one-sample spike entirely
    spiky = np.tile(RECORDING[:1], (50, 1))
    spiky[25, 0] += 5.0
    np.testing.assert_allclose(
        raw.preprocess(spiky), raw.preprocess(np.tile(RECORDING[:1], (50, 1))), atol=1e-9
    )


def test_standardisation_uses_mean_and_std() -> None:
    raw = Preprocessor(FilterSpec()).preprocess(RECORDING)
    mean, std = np.arange(9) * 0.1, np.linspace(0.5, 1.5, 9)
    np.testing.assert_allclose(WHOLE, (raw - mean) / std, atol=1e-5)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"median_kernel": 2}, "median_kernel must be odd"),
        ({"lowpass_hz": 30.0}, "lowpass_hz < rate_hz / 2"),
        ({"gravity_hz": 25.0}, "gravity_hz < lowpass_hz"),
        ({"lowpass_order": 0}, "orders must be >= 1"),
    ],
)
def test_bad_filter_specs_are_refused(options: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FilterSpec(**options)  # type: ignore[arg-type]


def test_bad_input_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match=r"samples must be \(B, n>0, 6\)"):
        PRE.process(None, np.zeros((1, 10, 5)))
    with pytest.raises(ValueError, match="9 values"):
        Preprocessor(FilterSpec(), mean=[0.0] * 6, std=[1.0] * 6)


def test_aligned_inputs_do_not_depend_on_how_the_device_is_turned() -> None:
    from harstream.core.preprocessing import ALIGNED_CHANNELS
    from training.augment import random_rotation
    from training.data import turned

    # per-axis median filtering is the one step that does not commute with a rotation
    pre = Preprocessor(FilterSpec(median_kernel=1), channels=ALIGNED_CHANNELS)
    vertical = np.array([1.0, 0.0, 0.0])
    upright = pre.preprocess(RECORDING, vertical)
    for seed in range(3):
        turn = random_rotation(np.random.default_rng(seed), 180.0)
        device = turned(RECORDING, turn)
        np.testing.assert_allclose(pre.preprocess(device, turn @ vertical), upright, atol=1e-4)
    uncalibrated = pre.preprocess(RECORDING)
    assert np.all(uncalibrated[:, 6:] == 0.0)
    np.testing.assert_allclose(uncalibrated[:, :6], upright[:, :6])
    assert upright[:, 8].min() == 1.0 and upright[:, 6:8].max() <= 1.0


def test_a_batch_mixes_calibrated_and_uncalibrated_streams() -> None:
    from harstream.core.preprocessing import ALIGNED_CHANNELS

    pre = Preprocessor(FilterSpec(), channels=ALIGNED_CHANNELS)
    pair = np.stack([RECORDING[:300], RECORDING[:300]])
    _, both = pre.process(None, pair, np.array([[1.0, 0.0, 0.0], [np.nan] * 3]))
    np.testing.assert_allclose(both[0], pre.preprocess(RECORDING[:300], [1.0, 0.0, 0.0]))
    np.testing.assert_allclose(both[1], pre.preprocess(RECORDING[:300]))
    assert np.all(both[1][:, 6:] == 0.0) and np.all(both[0][:, 8] == 1.0)
