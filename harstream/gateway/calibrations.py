"""Device calibrations in the gateway: requests, the engine's news, and the state file.

:class:`Calibrations` is the prepare thread's calibration side: it starts or clears a
calibration on a request (``{prefix}/{device}/calibrate``, ``POST /calibrate/{device}``),
turns the engine's calibration events (calibrated, failed, refined from walking,
remounted) into the news published retained on ``{prefix}/{device}/calibration``, and
keeps the verticals in ``calibration.state_file`` (:class:`CalibrationFile`). The engine
is passed to each call: a model swap replaces it.

The state file:

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
import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from harstream.core.engine import Engine, EngineEvent
from harstream.core.payload import decode_calibrate, valid_device_id
from harstream.errors import ConfigError, PayloadError
from harstream.gateway.batch import Batch

__all__ = ["CalibrationFile", "Calibrations"]

log = logging.getLogger("harstream.gateway")

#: The engine's calibration events -> the status published on the calibration topic.
EVENTS = {
    "calibrated": "calibrated",
    "calibration_failed": "failed",
    "refined": "refined",
    "remounted": "remounted",
    "calibration_dropped": "cleared",  # beyond the engine's bound (``KEPT_VERTICALS``)
}


class Calibrations:
    """Calibration requests and news for the prepare thread; ``path``: the state file
    (None: kept in memory only); ``default_s``: a request without seconds."""

    def __init__(self, path: Path | None, default_s: float) -> None:
        self.file = CalibrationFile(path) if path is not None else None
        self.default_s = default_s

    def restore(self, engine: Engine) -> None:
        """The saved verticals into ``engine`` (a bad file fails the start)."""
        if self.file is None:
            return
        verticals, sources = self.file.load_sources()
        for device, vertical in verticals.items():
            engine.set_vertical(device, vertical, sources[device])

    def request(self, engine: Engine, device: str, payload: bytes, batch: Batch) -> None:
        """A calibrate message: start a calibration, or clear one. Raises PayloadError
        for a bad one or one the engine refuses."""
        try:
            seconds = decode_calibrate(payload, self.default_s)
            if seconds is None:
                engine.set_vertical(device, None)
                self.save(engine)
                batch.calibrations.append((device, "cleared", *vertical_of(engine, device), ""))
                return
            engine.calibrate(device, seconds)
        except ValueError as exc:  # the model takes none, or too many wait for devices
            code = "calibration_refused" if engine.preprocessor.aligned else "no_calibration"
            raise PayloadError(code, str(exc)) from None
        detail = f"stand still for {seconds:g} s"
        batch.calibrations.append((device, "started", *vertical_of(engine, device), detail))

    def news(self, engine: Engine, events: list[EngineEvent], batch: Batch) -> list[EngineEvent]:
        """The engine's calibration events as the batch's news (saved when a vertical
        changed); returns the other events (refusals)."""
        saved = False
        others = []
        for event in events:
            status = EVENTS.get(event.code)
            if status is None:
                others.append(event)
                continue
            # each status with the vertical its event put in force (a batch may change a
            # device's more than once); remounted: dropped (a new one may follow)
            if event.vertical is not None:
                now: tuple[list[float] | None, str | None] = (list(event.vertical), event.source)
            elif status == "remounted":
                now = (None, None)
            else:
                now = vertical_of(engine, event.device)
            batch.calibrations.append((event.device, status, *now, event.detail))
            saved = saved or status != "failed"
        if saved:
            self.save(engine)
        return others

    def forget(self, engine: Engine, device: str) -> bool:
        """Drop the device's calibration (the file too); whether it had one."""
        had = device in engine.verticals
        if had:
            engine.set_vertical(device, None)
            self.save(engine)
        return had

    def save(self, engine: Engine) -> None:
        if self.file is None:
            return
        try:
            self.file.save(engine.verticals, engine.sources)
        except Exception:  # a full or read-only disk must not stop recognition
            log.exception("cannot save calibrations to %s", self.file.path)


def vertical_of(engine: Engine, device: str) -> tuple[list[float] | None, str | None]:
    """The device's own vertical in force and its source."""
    vertical = engine.verticals.get(device)
    if vertical is None:
        return None, None
    return vertical.tolist(), engine.sources.get(device)


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
