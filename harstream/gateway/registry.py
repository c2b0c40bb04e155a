"""The device registry: one owner of which devices the gateway serves.

Every per-device store of the prepare thread (the engine's slot, a field device's
stream and message order, the recorder's open session) holds a device only once the
registry admitted it, and drops it when the registry evicts or erases it. One limit,
``stream.max_devices``, counts each device once, whatever stores hold it:

- :meth:`DeviceRegistry.admit`: a device's message (decoded, before any store keeps
  state for it). A new device beyond ``max_devices`` first makes idle devices leave,
  then is refused (``too_many_devices``, counted) before anything is kept for it;
- :meth:`DeviceRegistry.evict_idle`: devices silent for ``idle_timeout_s`` leave every
  store; those the engine served are returned, to be announced ``offline``;
- :meth:`DeviceRegistry.forget`: ``data forget``: a device leaves every store at once.

The stores on other threads follow from what the registry decides: the infer thread's
last error report per device is dropped with the announcement of an evicted device;
the page's history (event loop) is bounded by the same ``max_devices`` and makes room
by dropping its stalest device. Calibrations outlive eviction on purpose (a device that
comes back keeps its vertical), bounded by the engine (4 x ``max_devices``; idle walking
verticals, then standing ones, the least recently used first); they leave on ``forget``.

The prepare thread's alone: no lock, no I/O, the clock passed in.
"""

from __future__ import annotations

from typing import Protocol

from harstream.core.engine import Engine

__all__ = ["RESCAN_S", "DeviceRegistry", "DeviceStore"]

#: a full registry looks for idle devices at most this often (a flood of new device ids
#: must not cost a scan of every device each)
RESCAN_S = 1.0


class DeviceStore(Protocol):
    def drop(self, device: str) -> None:
        """Let go of everything kept for ``device`` (it is evicted or erased)."""
        ...


class DeviceRegistry:
    """``engine``: the engine in force (a model swap replaces it); ``stores``: the
    other stores that drop a device the registry lets go."""

    def __init__(self, max_devices: int, idle_timeout_s: float) -> None:
        self.max_devices = max_devices
        self.idle_timeout_s = idle_timeout_s
        self.engine: Engine | None = None
        self.stores: list[DeviceStore] = []
        self.last_seen: dict[str, float] = {}  # admitted devices -> their last message
        self.gone: list[str] = []  # the engine's devices evicted to make room: to announce
        self.refused = 0  # messages of new devices beyond max_devices
        self._scanned = -1e18  # when a full registry last looked for idle devices

    def __len__(self) -> int:
        return len(self.last_seen)

    @property
    def detail(self) -> str:
        return f"the gateway serves at most {self.max_devices} devices"

    def admit(self, device: str, now: float) -> bool:
        """Whether ``device`` is served (its message at ``now``, epoch seconds)."""
        seen = self.last_seen
        if device in seen:
            seen[device] = now
            return True
        if len(seen) >= self.max_devices and now - self._scanned >= RESCAN_S:
            self._scanned = now
            self.gone += self.evict_idle(now)
        if len(seen) >= self.max_devices:
            self.refused += 1
            return False
        seen[device] = now
        return True

    def evict_idle(self, now: float) -> list[str]:
        """Devices silent for ``idle_timeout_s`` leave every store; returns those the
        engine served (the longest silent first), to announce."""
        limit = now - self.idle_timeout_s
        idle = [device for device, seen in self.last_seen.items() if seen < limit]
        gone = self.engine.evict_idle(now) if self.engine is not None else []
        for device in dict.fromkeys((*idle, *gone)):  # each once
            self._drop(device)
        return gone

    def forget(self, device: str) -> None:
        """``device`` leaves every store now (no announcement: it is erased)."""
        if self.engine is not None:
            self.engine.forget(device)
        self._drop(device)

    def _drop(self, device: str) -> None:
        self.last_seen.pop(device, None)
        for store in self.stores:
            store.drop(device)
