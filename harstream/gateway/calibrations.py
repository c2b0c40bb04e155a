"""Where the gateway keeps device calibrations across restarts: one small JSON file.

``{"format": 1, "verticals": {"phone-1": [x, y, z], ...}}``: each device's calibrated
vertical (device frame, unit vector). Written whole to a temporary file and renamed over
the old one, so a crash leaves the old file or the new one, never half of either. A file
that cannot be read or does not hold that fails the gateway's start naming the file.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from harstream.core.payload import valid_device_id
from harstream.errors import ConfigError

__all__ = ["CalibrationFile"]


class CalibrationFile:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def load(self) -> dict[str, np.ndarray]:
        """The saved verticals; none when the file does not exist yet."""
        if not self.path.exists():
            return {}
        where = f"calibration.state_file {self.path}"
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{where}: cannot read JSON: {exc}") from exc
        if (
            not isinstance(data, dict)
            or data.get("format") != 1
            or not isinstance(verticals := data.get("verticals"), dict)
        ):
            raise ConfigError(f'{where}: expected {{"format": 1, "verticals": {{...}}}}')
        out = {}
        for device, v in verticals.items():
            if not valid_device_id(device) or not _unit_vector(v):
                raise ConfigError(f"{where}: verticals.{device}: not a device id and unit 3-vector")
            out[device] = np.asarray(v, np.float64)
        return out

    def save(self, verticals: Mapping[str, np.ndarray]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        body = {"format": 1, "verticals": {d: [float(x) for x in v] for d, v in verticals.items()}}
        temporary = self.path.with_name(self.path.name + ".tmp")
        temporary.write_text(json.dumps(body, indent=1) + "\n", encoding="utf-8")
        os.replace(temporary, self.path)


def _unit_vector(v: object) -> bool:
    if not isinstance(v, list) or len(v) != 3:
        return False
    if not all(isinstance(x, int | float) and math.isfinite(x) for x in v):
        return False
    return abs(math.hypot(*v) - 1.0) < 1e-3
