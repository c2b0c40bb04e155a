"""What recording costs: the gateway end to end without ``recording.dir`` and with it,
alternating, and what it writes: bytes per device-hour on disk.

Parts rotate every half of a point (``recording.rotate_s``), so that the writing happens
inside the measured time, not at the gateway's stop. A part has a fixed cost (two files
created and written, ~3-5 ms on this machine's disk), so a point shorter than twice the
default ``rotate_s`` (60 s) overstates the cost by that ratio: measure with
``--seconds 120`` for the default's."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harstream.benchmarks.e2e import alternating
from harstream.core.bundle import Bundle

__all__ = ["recording_cost"]


def recording_cost(
    bundle: Bundle,
    *,
    devices: int,
    seconds: float,
    message_samples: int,
    rounds: int,
    fmt: str = "parquet",
) -> dict[str, Any]:
    """``rounds`` e2e points without recording and with it, in turn; the medians, and
    the bytes written per device-hour (samples and decisions of every device)."""

    def without() -> tuple[tuple[str, ...], Callable[[], dict[str, Any]]]:
        return (), dict

    def recording() -> tuple[tuple[str, ...], Callable[[], dict[str, Any]]]:
        folder = Path(tempfile.mkdtemp(prefix="harstream-bench-rec-"))

        def after() -> dict[str, Any]:  # the gateway has stopped: every buffer written
            written = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
            shutil.rmtree(folder, ignore_errors=True)
            return {"bytes_per_device_hour": round(written / devices * 3600 / seconds)}

        overrides = (
            f"recording.dir={folder}",
            f"recording.format={fmt}",
            f"recording.rotate_s={seconds / 2:g}",
        )
        return overrides, after

    return alternating(
        bundle,
        {"without": without, "recording": recording},
        devices=devices,
        seconds=seconds,
        message_samples=message_samples,
        rounds=rounds,
    )
