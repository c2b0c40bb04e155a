from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harstream.core.window import WindowBuffer


@settings(max_examples=200, deadline=None)
@given(
    st.integers(min_value=1, max_value=40).flatmap(
        lambda w: st.tuples(st.just(w), st.integers(min_value=1, max_value=w))
    ),
    st.lists(st.integers(min_value=1, max_value=120), min_size=1, max_size=30),
)
def test_emits_exactly_the_sliding_windows(shape: tuple[int, int], sizes: list[int]) -> None:
    window, hop = shape
    stream = np.arange(sum(sizes) * 2, dtype=np.float32).reshape(-1, 2)
    buf = WindowBuffer(window, hop, channels=2)
    stops, windows, i = [], [], 0
    for size in sizes:
        out = buf.push(stream[i : i + size])
        i += size
        stops.extend(out.stops.tolist())
        windows.extend(out.windows)
        assert len(out.stops) == len(out.windows)
    expected = list(range(window, len(stream) + 1, hop))
    assert stops == expected
    for stop, got in zip(stops, windows, strict=True):
        np.testing.assert_array_equal(got, stream[stop - window : stop])


def test_windows_are_copies_not_views() -> None:
    buf = WindowBuffer(4, 4, channels=1)
    first = buf.push(np.arange(4.0)[:, None]).windows
    buf.push(np.full((40, 1), -1.0))
    assert first[0, :, 0].tolist() == [0.0, 1.0, 2.0, 3.0]


def test_reset_starts_counting_again() -> None:
    buf = WindowBuffer(4, 2, channels=1)
    buf.push(np.zeros((3, 1)))
    buf.reset()
    assert buf.count == 0
    assert buf.push(np.ones((3, 1))).stops.tolist() == []
    assert buf.push(np.ones((1, 1))).stops.tolist() == [4]


def test_hop_must_fit_the_window() -> None:
    with pytest.raises(ValueError, match="hop <= window"):
        WindowBuffer(4, 5, channels=1)
