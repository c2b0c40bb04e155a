"""Recordings as CSV: what ``harstream predict`` reads and ``harstream data export`` writes.

One row per sample, a header naming the columns, in any order::

    t,ax,ay,az,gx,gy,gz,activity
    0.00,1.0208,-0.1264,0.1027,-0.0026,-0.0087,0.0171,STANDING

``ax ay az`` (acceleration in g, gravity included) and ``gx gy gz`` (angular velocity
in rad/s) are required; ``t`` (seconds) and ``activity`` (a name of
``replay.ACTIVITIES``, empty when unlabelled) are optional. A bad file raises
:class:`replay.DataError` naming the file and line.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from replay.errors import DataError
from replay.recording import ACTIVITIES, Recording

__all__ = ["SAMPLE_COLUMNS", "CsvRecording", "read_csv", "write_csv"]

SAMPLE_COLUMNS = ("ax", "ay", "az", "gx", "gy", "gz")
_IDS = {name: i for i, name in ACTIVITIES.items()}


@dataclass(frozen=True)
class CsvRecording:
    samples: np.ndarray  # (n, 6)
    t: np.ndarray | None  # (n,) seconds, when the file has a t column
    labels: np.ndarray | None  # (n,) activity ids, when the file has an activity column


def read_csv(path: str | Path) -> CsvRecording:
    path = Path(path)
    try:
        handle = path.open(newline="", encoding="utf-8")
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    with handle:
        reader = csv.reader(handle)
        header = [name.strip() for name in next(reader, [])]
        missing = [c for c in SAMPLE_COLUMNS if c not in header]
        if missing:
            raise DataError(
                f"{path}:1: missing column(s) {', '.join(missing)} "
                f"(the header must name {', '.join(SAMPLE_COLUMNS)}; t optional)"
            )
        numeric = [c for c in (*SAMPLE_COLUMNS, "t") if c in header]
        where = {c: header.index(c) for c in header}
        values: list[list[float]] = []
        labels: list[int] = []
        for number, row in enumerate(reader, start=2):
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise DataError(f"{path}:{number}: {len(row)} cells, the header has {len(header)}")
            values.append([_number(row[where[c]], f"{path}:{number}: column {c}") for c in numeric])
            if "activity" in where:
                name = row[where["activity"]].strip()
                if name and name not in _IDS:
                    raise DataError(f"{path}:{number}: unknown activity {name!r}")
                labels.append(_IDS.get(name, 0))
    if not values:
        raise DataError(f"{path}: no samples")
    array = np.array(values, np.float64)
    return CsvRecording(
        samples=array[:, :6],
        t=array[:, 6] if "t" in where else None,
        labels=np.array(labels, np.int8) if "activity" in where else None,
    )


def _number(cell: str, where: str) -> float:
    """A finite float from a CSV cell, or a DataError naming ``where``."""
    cell = cell.strip()
    try:
        value = float(cell)
    except ValueError:
        raise DataError(f"{where}: not a number: {cell!r}") from None
    if not np.isfinite(value):
        raise DataError(f"{where}: not finite: {cell!r}")
    return value


def write_csv(path: str | Path, recording: Recording) -> Path:
    """Write a recording with its time axis (from 0) and labels."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(len(recording)) / recording.rate_hz
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["t", *SAMPLE_COLUMNS, "activity"])
        for i in range(len(recording)):
            label = int(recording.labels[i])
            writer.writerow(
                [
                    f"{t[i]:.2f}",
                    *(repr(float(v)) for v in recording.samples[i]),
                    ACTIVITIES.get(label, ""),
                ]
            )
    return path
