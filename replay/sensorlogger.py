"""A Sensor Logger recording export: a zip (or its unpacked folder) of one CSV per sensor.

The app writes ``Accelerometer.csv`` (m/s2, without gravity), ``Gravity.csv`` (m/s2),
``Gyroscope.csv`` (rad/s) and, on Android, ``TotalAcceleration.csv`` (m/s2, with
gravity), each with a ``time`` column in epoch nanoseconds and ``x``, ``y``, ``z``
columns (in whatever order), besides files for sensors harstream does not use.
``read_sensor_logger`` returns each sensor's readings as the app recorded them (times in
seconds, the app's units); putting them on the model's grid is the recognizer's job.

pandas reads the CSVs: it is in the ``phone`` extra, imported only here, with a message
saying how to get it when it is missing. Imports nothing of harstream.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from replay.errors import DataError

__all__ = ["SENSOR_FILES", "PhoneRecording", "is_sensor_logger_export", "read_sensor_logger"]

#: file name -> the reading name of the app's live stream (the same data)
SENSOR_FILES = {
    "Accelerometer.csv": "accelerometer",
    "Gravity.csv": "gravity",
    "Gyroscope.csv": "gyroscope",
    "TotalAcceleration.csv": "totalacceleration",
}


@dataclass(frozen=True)
class PhoneRecording:
    name: str
    sensors: dict[str, tuple[np.ndarray, np.ndarray]]  # reading name -> (t s, (n, 3))
    # Annotation.csv: (t s, text) of each annotation the user made while recording
    annotations: tuple[tuple[float, str], ...] = ()

    @property
    def end_s(self) -> float:
        """The time of the last reading of any sensor."""
        return max(float(t[-1]) for t, _ in self.sensors.values() if len(t))


def is_sensor_logger_export(path: Path) -> bool:
    if path.is_dir():
        return any((path / name).is_file() for name in SENSOR_FILES)
    return path.suffix.lower() == ".zip"


def read_sensor_logger(path: str | Path) -> PhoneRecording:
    path = Path(path)
    try:
        import pandas as pd
    except ImportError as exc:
        raise DataError(
            f"{path}: reading a Sensor Logger export needs pandas: pip install 'harstream[phone]'"
        ) from exc
    files = _files(path)
    sensors: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, reading in SENSOR_FILES.items():
        if name not in files:
            continue
        try:
            frame = pd.read_csv(io.BytesIO(files[name]))
        except (ValueError, pd.errors.ParserError) as exc:
            raise DataError(f"{path}/{name}: not a readable CSV: {exc}") from exc
        missing = {"time", "x", "y", "z"} - set(frame.columns)
        if missing:
            raise DataError(f"{path}/{name}: no column(s) {sorted(missing)}")
        frame = frame.dropna(subset=["time", "x", "y", "z"]).sort_values("time")
        xyz = frame[["x", "y", "z"]].to_numpy(np.float64)
        if not np.all(np.isfinite(xyz)):
            raise DataError(f"{path}/{name}: values must be finite numbers")
        sensors[reading] = (frame["time"].to_numpy(np.float64) / 1e9, xyz)
    if "gyroscope" not in sensors or not (
        "totalacceleration" in sensors or {"accelerometer", "gravity"} <= set(sensors)
    ):
        raise DataError(
            f"{path}: needs Gyroscope.csv and TotalAcceleration.csv or Accelerometer.csv "
            f"with Gravity.csv; found {sorted(f for f in files if f.endswith('.csv'))}"
        )
    return PhoneRecording(path.stem, sensors, _annotations(path, files, pd))


def _annotations(path: Path, files: dict[str, bytes], pd: Any) -> tuple[tuple[float, str], ...]:
    """Annotation.csv's ``time`` (epoch ns) and ``text`` columns, if the export has it."""
    if "Annotation.csv" not in files:
        return ()
    try:
        frame = pd.read_csv(io.BytesIO(files["Annotation.csv"]), keep_default_na=False)
    except (ValueError, pd.errors.ParserError) as exc:
        raise DataError(f"{path}/Annotation.csv: not a readable CSV: {exc}") from exc
    if not {"time", "text"} <= set(frame.columns):
        raise DataError(f"{path}/Annotation.csv: needs the columns time and text")
    return tuple(
        (float(t) / 1e9, str(text)) for t, text in zip(frame["time"], frame["text"], strict=True)
    )


def _files(path: Path) -> dict[str, bytes]:
    """The export's CSV files by name (a zip may hold them in one folder)."""
    if path.is_dir():
        return {p.name: p.read_bytes() for p in path.iterdir() if p.suffix == ".csv"}
    try:
        with zipfile.ZipFile(path) as archive:
            return {
                Path(info.filename).name: archive.read(info)
                for info in archive.infolist()
                if info.filename.endswith(".csv")
            }
    except (OSError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: not a Sensor Logger export (zip or folder): {exc}") from exc
