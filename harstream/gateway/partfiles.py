"""A recording's files: a part's tables encoded and written, and its session.json.

A part is one or two files in the session's folder (``samples-{first seq}{ext}`` and
``decisions-{first seq}{ext}``, parquet or gzip'd CSV: :mod:`harstream.recordings`
holds the layout). Each file is written to a temporary name and renamed; the samples
are followed at once by ``session.json`` brought to the extent the parts now hold, so
it never claims a sample no file holds. Pure file writing: no threads, no budget.
"""

from __future__ import annotations

import gzip
import io
import os
from pathlib import Path
from typing import Any, Literal

import numpy as np

from harstream.recordings import SESSION_FILE, session_json

__all__ = [
    "SAMPLE_COLUMNS",
    "Extent",
    "atomic_write",
    "encode_table",
    "resolve_format",
    "write_part",
]

SAMPLE_COLUMNS = ("ax", "ay", "az", "gx", "gy", "gz")

#: a samples part's first seq, last seq, first t, last t, sample count
Extent = tuple[int, int, float, float, int]


def resolve_format(requested: str) -> Literal["parquet", "csv"]:
    """``auto``: parquet when pyarrow is installed, else gzip'd CSV."""
    if requested == "csv":
        return "csv"
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        if requested == "parquet":
            raise
        return "csv"
    return "parquet"


def encode_table(
    format: Literal["parquet", "csv"], columns: dict[str, Any], samples: bool = False
) -> bytes:
    """A table as the file's bytes (parquet or gzip'd CSV)."""
    if format == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        sink = io.BytesIO()
        if samples:  # 20 bytes a sample, half of the defaults' 39 (docs/field-data.md)
            encodings = {c: "BYTE_STREAM_SPLIT" for c in ("t", *SAMPLE_COLUMNS)}
            pq.write_table(
                pa.table(columns),
                sink,
                compression="zstd",
                use_dictionary=False,
                column_encoding={"seq": "DELTA_BINARY_PACKED", **encodings},
            )
        else:
            pq.write_table(pa.table(columns), sink, compression="zstd")
        return sink.getvalue()
    return gzip.compress(_csv_bytes(columns), compresslevel=6)


def write_part(
    folder: Path,
    files: list[tuple[str, bytes]],
    meta: dict[str, Any],
    extent: Extent | None,
) -> int:
    """The part's files, the samples first and session.json right after them (the
    label checks read it: the sooner it follows the samples, the sooner a label on
    them is accepted), then the decisions; bytes written. ``meta`` (the session's
    session.json) is brought up to date once it is written."""
    for name, data in files:
        atomic_write(folder / name, data)
        if extent is not None and name.startswith("samples-"):
            new = dict(meta)
            new.setdefault("first_seq", extent[0])
            new.setdefault("t_start", extent[2])
            new["last_seq"], new["t_end"] = extent[1], extent[3]
            new["samples"] = new.get("samples", 0) + extent[4]
            atomic_write(folder / SESSION_FILE, session_json(new).encode())
            meta.update(new)  # only once written: a retry counts these samples once
    return sum(len(data) for _, data in files)


def atomic_write(path: Path, data: bytes) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


def _csv_bytes(columns: dict[str, Any]) -> bytes:
    """Columns as CSV: numbers with all their digits, text as it is."""
    cells = [_formatted(np.asarray(c)) for c in columns.values()]
    lines = [",".join(columns), *(",".join(row) for row in zip(*cells, strict=True))]
    return ("\n".join(lines) + "\n").encode()


def _formatted(column: np.ndarray) -> np.ndarray:
    if column.dtype.kind == "f":  # float32 needs 9 significant digits, float64 17
        return np.char.mod("%.9g" if column.dtype.itemsize == 4 else "%.17g", column)
    if column.dtype.kind in "iu":
        return np.char.mod("%d", column)
    return column.astype(str)
