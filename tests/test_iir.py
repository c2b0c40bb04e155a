"""harstream.core.iir against scipy.signal, the reference implementation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import signal

from harstream.core.iir import LowPass, butter_lowpass_sos


@pytest.mark.parametrize("order", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("cutoff", [0.3, 2.0, 20.0])
def test_design_matches_scipy_butter(order: int, cutoff: float) -> None:
    mine = butter_lowpass_sos(order, cutoff, 50.0)
    reference = signal.butter(order, cutoff, fs=50.0, output="sos")
    _, h_mine = signal.sosfreqz(mine, 1024, fs=50.0)
    _, h_ref = signal.sosfreqz(reference, 1024, fs=50.0)
    np.testing.assert_allclose(h_mine, h_ref, atol=1e-12)


@pytest.mark.parametrize("cutoff", [0.3, 20.0])
def test_filtering_matches_sosfilt_from_steady_state(cutoff: float) -> None:
    x = np.random.default_rng(0).normal(size=(4, 3000)) + 1.0
    f = LowPass(3, cutoff, 50.0)
    sos = signal.butter(3, cutoff, fs=50.0, output="sos")
    zi = signal.sosfilt_zi(sos)[:, None, :] * x[None, :, :1]
    expected, _ = signal.sosfilt(sos, x, axis=-1, zi=zi)
    _, y = f.run(f.steady_state(x[:, 0]), x)
    np.testing.assert_allclose(y, expected, atol=1e-10)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=700), min_size=1, max_size=20))
def test_state_carries_across_any_chunks(sizes: list[int]) -> None:
    x = np.random.default_rng(1).normal(size=(2, sum(sizes)))
    f = LowPass(3, 0.3, 50.0)
    _, whole = f.run(f.steady_state(x[:, 0]), x)
    z, parts, i = f.steady_state(x[:, 0]), [], 0
    for size in sizes:
        z, y = f.run(z, x[:, i : i + size])
        parts.append(y)
        i += size
    np.testing.assert_allclose(np.concatenate(parts, axis=-1), whole, atol=1e-9)


def test_bad_cutoff_is_refused() -> None:
    with pytest.raises(ValueError, match=r"must lie in \(0, 25.0\) Hz"):
        butter_lowpass_sos(3, 30.0, 50.0)
