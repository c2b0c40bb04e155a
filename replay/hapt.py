"""Reader for the HAPT raw recordings (UCI "Smartphone-Based Recognition of Human
Activities and Postural Transitions", v2.1).

Layout of a data folder (``DIR`` or ``DIR/RawData``)::

    RawData/acc_expNN_userMM.txt    n rows of "x y z", total acceleration in g, 50 Hz
    RawData/gyro_expNN_userMM.txt   n rows of "x y z", angular velocity in rad/s
    RawData/labels.txt              rows of "experiment user activity start end"

``labels.txt`` sample numbers are 1-based and the end is inclusive (the dataset was
made in MATLAB, whose ``x(start:end)`` is exactly that): in every experiment, a segment
that follows another starts at the previous end + 1, and no end exceeds the row count.
So a row ``e u a s t`` labels the 0-based samples ``s-1 .. t-1``.

Readers raise :class:`replay.DataError` naming the file and line; they never skip.
This module knows files; it knows nothing about filters, models or MQTT.
"""

from __future__ import annotations

import lzma
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from replay.errors import DataError
from replay.recording import Recording

__all__ = [
    "Experiment",
    "LabelRow",
    "find_raw_dir",
    "iter_hapt",
    "list_experiments",
    "read_labels",
    "read_matrix",
]

_SENSOR_FILE = re.compile(r"^(acc|gyro)_exp(\d+)_user(\d+)\.txt(\.xz)?$")


@dataclass(frozen=True)
class Experiment:
    experiment: int
    subject: int
    acc_path: Path
    gyro_path: Path


@dataclass(frozen=True)
class LabelRow:
    experiment: int
    subject: int
    activity: int
    start: int  # 0-based, inclusive
    stop: int  # 0-based, exclusive
    line: int


def find_raw_dir(data_dir: str | Path) -> Path:
    """The ``RawData`` folder of a HAPT data folder (accepts the folder itself too)."""
    root = Path(data_dir)
    for candidate in (root / "RawData", root):
        if (candidate / "labels.txt").is_file():
            return candidate
    raise DataError(f"{root}: no HAPT RawData/labels.txt here (see `harstream data fetch`)")


def list_experiments(raw_dir: Path) -> list[Experiment]:
    """Experiments with both sensor files, in experiment order; a lone file is an error."""
    found: dict[tuple[int, int], dict[str, Path]] = {}
    for path in sorted(raw_dir.iterdir()):
        match = _SENSOR_FILE.match(path.name)
        if match:
            kind, exp, user = match.group(1), int(match.group(2)), int(match.group(3))
            if kind in found.get((exp, user), {}):
                raise DataError(f"{path}: a second {kind} file for experiment {exp}")
            found.setdefault((exp, user), {})[kind] = path
    experiments = []
    for (exp, user), files in sorted(found.items()):
        for kind in ("acc", "gyro"):
            if kind not in files:
                other = next(iter(files.values()))
                raise DataError(
                    f"{raw_dir / f'{kind}_exp{exp:02d}_user{user:02d}.txt'}: missing "
                    f"(its pair {other.name} exists)"
                )
        experiments.append(Experiment(exp, user, files["acc"], files["gyro"]))
    return experiments


def read_matrix(path: Path, columns: int = 3) -> np.ndarray:
    """A whitespace-separated numeric text file as a (rows, columns) float64 array."""
    lines = _read_text(path).rstrip().splitlines()
    if not lines:
        raise DataError(f"{path}: no rows")
    try:
        values = np.loadtxt(lines, dtype=np.float64, ndmin=2)
    except ValueError:
        values = None  # the slow path below names the bad line
    if (
        values is not None
        and values.shape == (len(lines), columns)  # loadtxt skips blank lines; we do not
        and np.all(np.isfinite(values))
    ):
        return values
    # Slow path, only to name the first bad line precisely.
    for number, line in enumerate(lines, start=1):
        fields = line.split()
        if len(fields) != columns:
            raise DataError(f"{path}:{number}: expected {columns} columns, found {len(fields)}")
        try:
            row = [float(field) for field in fields]
        except ValueError as exc:
            raise DataError(f"{path}:{number}: not a number: {line.strip()!r}") from exc
        if not all(np.isfinite(row)):
            raise DataError(f"{path}:{number}: non-finite value: {line.strip()!r}")
    raise DataError(f"{path}: cannot parse")  # pragma: no cover - the loop names the line


def _read_text(path: Path) -> str:
    """A text file, or its xz-compressed form (``NAME.txt.xz``, as the demo data ships)."""
    try:
        if path.suffix == ".xz":
            with lzma.open(path, "rt", encoding="ascii") as handle:
                return handle.read()
        return path.read_text(encoding="ascii")
    except FileNotFoundError as exc:
        raise DataError(f"{path}: missing") from exc
    except (OSError, UnicodeDecodeError, lzma.LZMAError) as exc:
        raise DataError(f"{path}: cannot read: {exc}") from exc


def read_labels(raw_dir: Path) -> list[LabelRow]:
    """All rows of ``labels.txt``, checked: 5 integers, activity 1..12, 1 <= start <= end."""
    path = raw_dir / "labels.txt"
    rows = []
    text = _read_text(path)
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 5:
            raise DataError(f"{path}:{number}: expected 5 columns, found {len(fields)}")
        try:
            exp, user, activity, start, end = (int(field) for field in fields)
        except ValueError as exc:
            raise DataError(f"{path}:{number}: not an integer: {line.strip()!r}") from exc
        if not 1 <= activity <= 12:
            raise DataError(f"{path}:{number}: activity {activity} is not in 1..12")
        if not 1 <= start <= end:
            raise DataError(f"{path}:{number}: segment {start}..{end} is empty or starts before 1")
        rows.append(LabelRow(exp, user, activity, start - 1, end, number))
    return rows


def label_array(rows: Iterable[LabelRow], n_samples: int, source: Path) -> np.ndarray:
    """Per-sample labels of one experiment from its label rows (checked against its length)."""
    labels = np.zeros(n_samples, dtype=np.int8)
    for row in rows:
        if row.stop > n_samples:
            raise DataError(
                f"{source}:{row.line}: segment ends at sample {row.stop}, "
                f"past the end of experiment {row.experiment} ({n_samples} samples)"
            )
        if np.any(labels[row.start : row.stop]):
            raise DataError(f"{source}:{row.line}: segment overlaps another one")
        labels[row.start : row.stop] = row.activity
    return labels


def read_experiment(experiment: Experiment, label_rows: Iterable[LabelRow]) -> Recording:
    acc = read_matrix(experiment.acc_path)
    gyro = read_matrix(experiment.gyro_path)
    if len(acc) != len(gyro):
        raise DataError(
            f"{experiment.gyro_path}: {len(gyro)} rows, but "
            f"{experiment.acc_path.name} has {len(acc)}"
        )
    rows = list(label_rows)
    for row in rows:
        if row.subject != experiment.subject:
            raise DataError(
                f"{experiment.acc_path.parent / 'labels.txt'}:{row.line}: user "
                f"{row.subject}, but experiment {row.experiment} is user "
                f"{experiment.subject}"
            )
    labels = label_array(rows, len(acc), experiment.acc_path.parent / "labels.txt")
    return Recording(
        subject=experiment.subject,
        experiment=f"exp{experiment.experiment:02d}",
        samples=np.hstack([acc, gyro]),
        labels=labels,
        rate_hz=50.0,
        source=str(experiment.acc_path.parent),
    )


def iter_hapt(data_dir: str | Path, subjects: Iterable[int] | None = None) -> Iterator[Recording]:
    """Yield each experiment of the chosen subjects (all by default) as a Recording,
    subjects ascending, each subject's experiments in order."""
    raw_dir = find_raw_dir(data_dir)
    wanted = None if subjects is None else set(subjects)
    by_experiment: dict[int, list[LabelRow]] = {}
    for row in read_labels(raw_dir):
        by_experiment.setdefault(row.experiment, []).append(row)
    experiments = [e for e in list_experiments(raw_dir) if wanted is None or e.subject in wanted]
    experiments.sort(key=lambda e: (e.subject, e.experiment))
    for experiment in experiments:
        yield read_experiment(experiment, by_experiment.get(experiment.experiment, []))
