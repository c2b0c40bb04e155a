"""Where the gateway keeps device calibrations across restarts: one small JSON file.

``{"format": 2, "verticals": {"phone-1": [x, y, z], ...}, "sources": {"phone-1":
"walking", ...}}``: each device's calibrated vertical (device frame, unit vector) and
where it came from (``standing``: a calibration; ``walking``: learnt from the device's
walking). A format 1 file (no sources: every vertical a standing one) is still read.
Written whole to a temporary file and renamed over
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
        return self.load_sources()[0]

    def load_sources(self) -> tuple[dict[str, np.ndarray], dict[str, str]]:
        """The saved verticals and their sources."""
        if not self.path.exists():
            return {}, {}
        where = f"calibration.state_file {self.path}"
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{where}: cannot read JSON: {exc}") from exc
        if (
            not isinstance(data, dict)
            or data.get("format") not in (1, 2)
            or not isinstance(verticals := data.get("verticals"), dict)
            or not isinstance(sources := data.get("sources", {}), dict)
        ):
            raise ConfigError(
                f'{where}: expected {{"format": 2, "verticals": {{...}}, "sources": {{...}}}}'
            )
        out, kinds = {}, {}
        for device, v in verticals.items():
            if not valid_device_id(device) or not _unit_vector(v):
                raise ConfigError(f"{where}: verticals.{device}: not a device id and unit 3-vector")
            out[device] = np.asarray(v, np.float64)
            kinds[device] = sources.get(device, "standing")
            if kinds[device] not in ("standing", "walking"):
                raise ConfigError(
                    f"{where}: sources.{device}: standing or walking, not {kinds[device]!r}"
                )
        return out, kinds

    def save(
        self, verticals: Mapping[str, np.ndarray], sources: Mapping[str, str] | None = None
    ) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        body = {
            "format": 2,
            "verticals": {d: [float(x) for x in v] for d, v in verticals.items()},
            "sources": {d: (sources or {}).get(d, "standing") for d in verticals},
        }
        temporary = self.path.with_name(self.path.name + ".tmp")
        temporary.write_text(json.dumps(body, indent=1) + "\n", encoding="utf-8")
        os.replace(temporary, self.path)


def _unit_vector(v: object) -> bool:
    if not isinstance(v, list) or len(v) != 3:
        return False
    if not all(isinstance(x, int | float) and math.isfinite(x) for x in v):
        return False
    return abs(math.hypot(*v) - 1.0) < 1e-3
