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

__all__ = ["part_costs", "recording_cost"]


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


def part_costs(parts: int = 300, rounds: int = 3) -> dict[str, float]:
    """CPU per part of a minute of one device (3,000 samples and 47 decisions, parquet:
    encoded and written, two files) against rewriting its session.json, which the
    recorder does after every part (issue 29); ``rounds`` of each in turn, medians (ms)."""
    import statistics
    import time

    import numpy as np

    from harstream.gateway.partfiles import SAMPLE_COLUMNS, encode_table
    from harstream.gateway.partfiles import atomic_write as write
    from harstream.recordings import session_json

    labels = ["A", "B", "C", "D", "E", "F"]
    folder = Path(tempfile.mkdtemp(prefix="harstream-bench-parts-"))

    def encode(columns: dict[str, Any], samples: bool = False) -> bytes:
        return encode_table("parquet", columns, samples)

    x = np.random.default_rng(0).normal(size=(3000, 6)).astype(np.float32)
    samples: dict[str, Any] = {"seq": np.arange(3000), "t": 1.79e9 + np.arange(3000) / 50}
    samples |= {c: x[:, i] for i, c in enumerate(SAMPLE_COLUMNS)}
    decisions: dict[str, list[Any]] = {"seq": list(range(47)), "t": [1.0] * 47}
    decisions |= {"received": [1.0] * 47, "activity": ["A"] * 47, "confidence": [0.5] * 47}
    decisions |= {"raw_activity": ["A"] * 47} | {f"p_{label}": [0.1] * 47 for label in labels}
    meta = {"device": "d", "session": "s", "rate_hz": 50.0, "model": "m", "vertical": None}
    meta |= {"vertical_source": None, "first_seq": 0, "last_seq": 2999, "samples": 3000}
    meta |= {"t_start": 1.79e9, "t_end": 1.79e9 + 60}
    part_ms, meta_ms = [], []
    try:
        for _ in range(rounds):
            started = time.process_time()
            for i in range(parts):
                write(folder / f"samples-{i:012d}.parquet", encode(samples, True))
                write(folder / f"decisions-{i:012d}.parquet", encode(decisions))
            part_ms.append((time.process_time() - started) / parts * 1e3)
            started = time.process_time()
            for _ in range(parts):
                write(folder / "session.json", session_json(meta).encode())
            meta_ms.append((time.process_time() - started) / parts * 1e3)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    part, json_ms = statistics.median(part_ms), statistics.median(meta_ms)
    return {"part_ms": round(part, 3), "session_json_ms": round(json_ms, 3)}
