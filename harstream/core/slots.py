"""Per-slot state: named numpy arrays whose first axis is a slot, one slot per stream.

The engine keeps every device's state (filters, window, recurrent state, smoother) in
arrays like these, so that a batch of messages from many devices is a few numpy
operations over the slots that sent data instead of Python per device. Arrays grow by
doubling when more slots are needed; a slot's values can be set back to their reset
values. This module knows arrays; it knows nothing about devices.

>>> state = SlotArrays({"count": ((), np.int64, 0), "last": ((3,), np.float64, np.nan)})
>>> state.resize(2)
>>> state.count[[0, 1]] += 5
>>> state.reset(np.array([1]))
>>> state.count[:2].tolist(), state.capacity
([5, 0], 16)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

__all__ = ["SlotArrays"]

#: An array's shape after the slot axis, its dtype, and the value a reset slot holds.
Spec = tuple[tuple[int, ...], Any, Any]


class SlotArrays:
    """Arrays named in ``spec`` (name -> :data:`Spec`), as attributes of this object."""

    def __init__(self, spec: Mapping[str, Spec]) -> None:
        self._spec = dict(spec)
        self.capacity = 0
        for name, (shape, dtype, fill) in self._spec.items():
            setattr(self, name, np.full((0, *shape), fill, dtype))

    def __getattr__(self, name: str) -> np.ndarray:
        """Only for names that are not arrays (the arrays are plain attributes): tells
        type checkers that every named attribute is an array."""
        raise AttributeError(f"{type(self).__name__} has no array {name!r}")

    def resize(self, capacity: int) -> None:
        """Room for at least ``capacity`` slots; new slots hold their reset values.
        Doubles, so that adding slots one at a time costs O(1) each, amortised."""
        if capacity <= self.capacity:
            return
        size = max(capacity, 2 * self.capacity, 16)
        for name, (shape, dtype, fill) in self._spec.items():
            grown = np.full((size, *shape), fill, dtype)
            grown[: self.capacity] = getattr(self, name)
            setattr(self, name, grown)
        self.capacity = size

    def reset(self, slots: Any, names: Iterable[str] | None = None) -> None:
        """Set ``slots`` (an index or index array) of ``names`` (all by default) back to
        their reset values."""
        for name in self._spec if names is None else names:
            getattr(self, name)[slots] = self._spec[name][2]
