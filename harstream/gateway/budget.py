"""The recording folder's budget: its bytes in all and per device, and their limits.

The writer thread's: it adds what each part wrote (:meth:`Budget.add`), measures the
folder from the disk at start and after an erasure or a deleted folder
(:meth:`Budget.measure`), and deletes sessions older than ``keep_days``
(:meth:`Budget.expire`). A device past its share (``max_device_bytes``) is ``over``:
its samples are refused while the others keep recording, until expiry or an erasure
brings it back under. Whether the folder as a whole is full is the writer's to act on
(:attr:`Budget.full`).
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
from pathlib import Path

from harstream.recordings import SESSION_FILE, read_sessions

__all__ = ["OVER_SHARE_NAMED", "Budget"]

log = logging.getLogger("harstream.gateway")

OVER_SHARE_NAMED = 20  # devices over their share named in status() (the rest counted)


class Budget:
    def __init__(self, root: Path, max_bytes: int, max_device_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.max_device_bytes = max_device_bytes
        self.bytes = 0
        self.device_bytes: dict[str, int] = {}  # bytes on disk per device
        self.over: set[str] = set()  # devices over their share
        self.over_named: tuple[str, ...] = ()  # a copy for status() (another thread)

    @property
    def full(self) -> bool:
        return self.bytes >= self.max_bytes

    def add(self, device: str, written: int) -> None:
        """A part of ``device`` took ``written`` bytes."""
        self.bytes += written
        device_bytes = self.device_bytes.get(device, 0) + written
        self.device_bytes[device] = device_bytes
        if device_bytes >= self.max_device_bytes and device not in self.over:
            self.over.add(device)
            self._name_over()
            log.warning(
                "recording of %s stopped: it holds %d bytes, its share of recording.max_bytes "
                "(%d); the other devices keep recording",
                device,
                device_bytes,
                self.max_device_bytes,
            )

    def measure(self) -> None:
        """The folder's bytes, in all and per device, from the disk; devices back under
        their share record again."""
        sizes: dict[str, int] = {}
        with contextlib.suppress(OSError):  # a folder deleted meanwhile: what was seen
            for path in self.root.rglob("*"):
                with contextlib.suppress(OSError):  # a file renamed or deleted meanwhile
                    if path.is_file():
                        device = path.relative_to(self.root).parts[0]
                        sizes[device] = sizes.get(device, 0) + path.stat().st_size
        self.bytes = sum(sizes.values())
        self.device_bytes = sizes
        self.over = {d for d, n in sizes.items() if n >= self.max_device_bytes}
        self._name_over()

    def expire(self, keep_days: float) -> None:
        """Delete sessions last written more than ``keep_days`` ago."""
        limit = time.time() - keep_days * 86_400
        for info in read_sessions(self.root)[0]:
            marker = info.path / SESSION_FILE
            try:
                if marker.stat().st_mtime >= limit:
                    continue
                freed = sum(p.stat().st_size for p in info.path.iterdir() if p.is_file())
                shutil.rmtree(info.path)
            except FileNotFoundError:  # deleted meanwhile (by hand): nothing to expire
                continue
            log.info("recording %s/%s expired (keep_days)", info.device, info.session)
            # counted off, not measured again: a walk of a full folder takes seconds
            self.bytes -= freed
            left = self.device_bytes.get(info.device, 0) - freed
            self.device_bytes[info.device] = max(0, left)
            if left < self.max_device_bytes and info.device in self.over:
                self.over.discard(info.device)  # under its share again: recorded
                self._name_over()

    def _name_over(self) -> None:
        self.over_named = tuple(sorted(self.over)[:OVER_SHARE_NAMED])
