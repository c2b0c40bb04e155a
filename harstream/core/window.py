"""A sliding window over one stream: keeps the last ``window`` rows, emits every ``hop``.

A window is emitted when the number of rows pushed so far, ``count``, reaches
``window`` and then every ``hop`` rows after that (``count = window + k * hop``).
With ``window == hop`` it cuts the stream into consecutive chunks, which is what the
stateful mode feeds its model. Rows are copied once into a buffer of 2 x window rows
that is compacted when full, so the cost per row is O(1) amortised, whatever the
message sizes; a push makes no Python loop over its rows.

This module knows rows and counts; it knows nothing about devices, time or models.

Window 4, hop 2, pushing rows 0..4 then 5..7 (each digit is a row)::

    pushed   0 1 2 3 4 | 5 6 7
    count    1 2 3 4 5 | 6 7 8
    emits          ^   |   ^   ^
    windows     [0 1 2 3]  [2 3 4 5]  [4 5 6 7]

>>> buf = WindowBuffer(window=4, hop=2, channels=1)
>>> out = buf.push(np.arange(5.0)[:, None])
>>> out.stops.tolist(), out.windows[..., 0].tolist()
([4], [[0.0, 1.0, 2.0, 3.0]])
>>> out = buf.push(np.arange(5.0, 8.0)[:, None])
>>> out.stops.tolist(), out.windows[..., 0].tolist()
([6, 8], [[2.0, 3.0, 4.0, 5.0], [4.0, 5.0, 6.0, 7.0]])
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["Emitted", "WindowBuffer"]


class Emitted(NamedTuple):
    """``windows`` (k, window, channels), copies; ``stops`` (k,): ``count`` at each emit,
    so window j holds rows ``stops[j] - window .. stops[j] - 1`` of the stream."""

    stops: np.ndarray
    windows: np.ndarray


class WindowBuffer:
    def __init__(self, window: int, hop: int, channels: int, dtype: type = np.float32) -> None:
        if not 0 < hop <= window:
            raise ValueError(f"need 0 < hop <= window, got hop={hop}, window={window}")
        self.window = window
        self.hop = hop
        self._data: np.ndarray = np.zeros((2 * window, channels), dtype)
        self._end = 0  # rows of _data in use; the newest row is _data[_end - 1]
        self.count = 0  # rows pushed since the last reset
        self._nothing = Emitted(np.zeros(0, np.int64), np.zeros((0, window, channels), dtype))

    def reset(self) -> None:
        self._end = 0
        self.count = 0

    def push(self, rows: np.ndarray) -> Emitted:
        """Append rows (n, channels); return the windows completed by them, oldest first."""
        stops: list[int] = []
        windows: list[np.ndarray] = []
        room = self.window  # a piece never overruns the buffer after compaction
        for start in range(0, len(rows), room):
            piece = rows[start : start + room]
            if self._end + len(piece) > len(self._data):
                self._compact()
            first = self._end
            self._data[first : first + len(piece)] = piece
            self._end += len(piece)
            before = self.count
            self.count += len(piece)
            for stop in range(self._first_stop_after(before), self.count + 1, self.hop):
                end = first + (stop - before)
                windows.append(self._data[end - self.window : end].copy())
                stops.append(stop)
        if not windows:
            return self._nothing
        return Emitted(np.array(stops, np.int64), np.stack(windows))

    def _first_stop_after(self, count: int) -> int:
        """The first emitting ``count`` strictly greater than ``count``."""
        if count < self.window:
            return self.window
        return count + self.hop - (count - self.window) % self.hop

    def _compact(self) -> None:
        keep = min(self._end, self.window - 1)  # all a future window can still need
        self._data[:keep] = self._data[self._end - keep : self._end]
        self._end = keep
