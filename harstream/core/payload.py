"""The MQTT payload codec of docs/design.md: device messages in, gateway messages out. Pure.

Input, on ``{prefix}/{device}/imu``::

    {"samples": [[ax, ay, az, gx, gy, gz], ...], "seq": int?, "t": float?,
     "rate": number?, "units": {"acc": "g"|"m/s2", "gyro": "rad/s"|"deg/s"}?,
     "times": [t0, t1, ...]?}

and a Sensor Logger message (``decode_sensor_logger``). The decoders check everything
and raise :class:`~harstream.errors.PayloadError` with a short code: ``bad_device_id``,
``too_large``, ``bad_json``, ``bad_shape``, ``not_finite``, ``too_many_samples``,
``bad_seq``, ``bad_t``, ``bad_rate``, ``bad_units``, ``bad_times``, ``out_of_range``
(readings beyond what a body-worn IMU can measure, ``MAX_ACC_G`` and ``MAX_GYRO_RADS``).
Every limit holds after expansion: a message whose readings span more of the model's
grid than ``max_samples`` is ``too_many_samples`` however few readings it has. Output
encoders build
the activity, transition, error, stats and Home Assistant discovery payloads. This module
knows bytes and dicts; it knows nothing about sockets.

>>> limits = {"rate_hz": 50.0, "max_samples": 500, "max_bytes": 65_536}
>>> m = decode_imu("phone-1", b'{"samples": [[0, 0, 1, 0, 0, 0.1]], "seq": 7}', now=5.0, **limits)
>>> m.device, m.samples.shape, m.seq, m.t, m.received
('phone-1', (1, 6), 7, None, 5.0)
>>> decode_imu("phone-1", b'{"samples": [[0, 0, 1]]}', now=5.0, **limits)
Traceback (most recent call last):
...
harstream.errors.PayloadError: bad_shape: samples must be rows of 6 numbers, got shape (1, 3)
"""

from __future__ import annotations

import contextlib
import itertools
import math
import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from harstream.core.bundle import UNKNOWN
from harstream.core.devicestream import Readings
from harstream.core.engine import Decisions, Message
from harstream.errors import PayloadError

__all__ = [
    "ACC_UNITS",
    "DEVICE_ID",
    "FRAME_MAGIC",
    "GYRO_UNITS",
    "MAX_ACC_G",
    "MAX_CALIBRATION_S",
    "MAX_GYRO_RADS",
    "MAX_SEQ",
    "MAX_T",
    "SENSOR_LOGGER_KINDS",
    "STANDARD_GRAVITY",
    "DeviceReadings",
    "SensorLoggerBatch",
    "check_span",
    "decode_calibrate",
    "decode_imu",
    "decode_sensor_logger",
    "device_id_from",
    "discovery_payload",
    "encode",
    "encode_activities",
    "encode_calibration",
    "encode_error",
    "encode_frame",
    "encode_gone",
    "encode_imu",
    "encode_transitions",
    "valid_device_id",
]

DEVICE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


STANDARD_GRAVITY = 9.80665  # m/s2 per g
MIN_RATE_HZ, MAX_RATE_HZ = 25.0, 400.0  # what a device may say it streams at
#: the physical ranges a reading must lie in (after units): beyond any body-worn IMU's
#: full scale (16-32 g, 2000-4000 deg/s); larger values are a device fault, refused as
#: out_of_range (they would drive the model's filters and state past float range)
MAX_ACC_G, MAX_GYRO_RADS = 64.0, 70.0
#: seq: an integer the engine's int64 arithmetic keeps exact (2^53 - 1)
MAX_SEQ = 2**53 - 1
#: t and times: seconds from 0 (a since-boot clock) to 2100-01-01 (epoch)
MAX_T = 4_102_444_800.0
ACC_UNITS = {"g": 1.0, "m/s2": 1 / STANDARD_GRAVITY}
GYRO_UNITS = {"rad/s": 1.0, "deg/s": math.pi / 180}


@dataclass(frozen=True, slots=True)
class DeviceReadings:
    """A device's readings for its DeviceStream (already in g and rad/s); ``message_id``
    orders messages that carry one (Sensor Logger)."""

    device: str
    readings: list[Readings]
    received: float
    message_id: int | None = None
    session: str = ""


def valid_device_id(device: str) -> bool:
    return DEVICE_ID.fullmatch(device) is not None


#: The binary device frame: header ``<4sBBHqdf4x`` (32 bytes, little-endian) then n x 6
#: float32 samples. Flags: which of seq and t are present, and the units.
FRAME_MAGIC = b"HSB1"
FRAME_HEADER = struct.Struct("<4sBBHqdf4x")
FLAG_SEQ, FLAG_T, FLAG_ACC_MS2, FLAG_GYRO_DEG = 1, 2, 4, 8


def decode_imu(
    device: str,
    payload: bytes,
    *,
    now: float,
    rate_hz: float,
    max_samples: int,
    max_bytes: int,
    units: Mapping[str, str] | None = None,
) -> Message | DeviceReadings:
    """Validate one device message, JSON or a binary frame (``FRAME_MAGIC``...); ``now``
    is the gateway's receive time (epoch s); the limits come from the config
    (``stream.rate_hz``, ``stream.max_samples_per_message``, ``service.max_payload_bytes``);
    ``units`` are the device's configured ones, which the message's own ``units`` override.

    A message at the model's rate, in g and rad/s, without per-sample times is a
    :class:`Message` for the engine as it is (the fast path). Anything else (another
    ``rate``, other ``units``, per-sample ``times``) becomes :class:`DeviceReadings`, in
    the model's units, for the device's :class:`~harstream.core.devicestream.DeviceStream`.
    """
    if not valid_device_id(device):
        raise PayloadError("bad_device_id", "device ids are 1-64 characters of A-Z a-z 0-9 _ -")
    if len(payload) > max_bytes:
        raise PayloadError("too_large", f"{len(payload)} bytes > {max_bytes}")
    if payload[:4] == FRAME_MAGIC:
        samples, seq, t, rate, sent_units, times = _from_frame(payload, max_samples)
    else:
        samples, seq, t, rate, sent_units, times = _from_json(payload, max_samples)
    peaks = np.abs(samples).max(axis=0).tolist()  # per channel; NaN and inf carry through
    if not all(map(math.isfinite, peaks)):
        raise PayloadError("not_finite", "samples must be finite numbers")
    _check_seq(seq)
    _check_t(t)
    rate = _checked_rate(rate_hz if rate is None else rate)
    acc_scale, gyro_scale = _unit_scales({**(units or {}), **sent_units})
    _check_range(peaks, acc_scale, gyro_scale)
    if rate == rate_hz and times is None and acc_scale == gyro_scale == 1.0:
        return Message(device, samples, seq, None if t is None else float(t), now)
    if times is None:
        times = _sample_times(len(samples), rate, seq, t, now)
    check_span(float(times[-1] - times[0]), rate_hz, max_samples)
    readings = [
        Readings("acc", times, samples[:, :3] * acc_scale),
        Readings("gyro", times, samples[:, 3:] * gyro_scale),
    ]
    return DeviceReadings(device, readings, now)


def _check_seq(seq: Any) -> None:
    if seq is not None and (
        not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq <= MAX_SEQ
    ):
        raise PayloadError("bad_seq", f"seq must be an integer from 0 to {MAX_SEQ}")


def _check_t(t: Any) -> None:
    if t is not None and (not _is_number(t) or not 0 <= t <= MAX_T):
        raise PayloadError("bad_t", f"t must be a number from 0 to {MAX_T:.0f} (epoch seconds)")


def _checked_rate(rate: Any) -> float:
    """The message's rate (the configured one when it sent none), checked."""
    if not _is_number(rate) or not MIN_RATE_HZ <= rate <= MAX_RATE_HZ:
        raise PayloadError(
            "bad_rate", f"rate must be a number from {MIN_RATE_HZ:g} to {MAX_RATE_HZ:g} Hz"
        )
    return float(rate)


def _sample_times(n: int, rate: float, seq: int | None, t: Any, now: float) -> np.ndarray:
    """Times of a message's ``n`` evenly spaced samples: from the device's own clock if
    it sent one (``t``, else ``seq`` counted from the stream's start, anchored later),
    else ours (the last sample received ``now``)."""
    offsets = np.arange(n) / rate
    if t is not None:
        return float(t) + offsets
    if seq is not None:
        return seq / rate + offsets
    return now - offsets[::-1]


_Parsed = tuple[np.ndarray, Any, Any, Any, dict[str, str], "np.ndarray | None"]


def _from_json(payload: bytes, max_samples: int) -> _Parsed:
    """samples, seq, t, rate (None: the default), units, times of a JSON message."""
    try:
        data = orjson.loads(payload)  # strict JSON: NaN and Infinity are errors
    except orjson.JSONDecodeError as exc:
        if "infinity" in str(exc):  # a number beyond float64 (1e999)
            raise PayloadError("not_finite", "samples must be finite numbers") from None
        raise PayloadError("bad_json", f"not JSON: {exc}") from None
    if not isinstance(data, dict) or "samples" not in data:
        raise PayloadError("bad_shape", 'expected an object with "samples"')
    unknown = set(data) - {"samples", "seq", "t", "rate", "units", "times"}
    if unknown:
        raise PayloadError("bad_shape", f"unknown keys: {sorted(unknown)}")
    raw = data["samples"]
    if not isinstance(raw, list) or not raw:
        raise PayloadError("bad_shape", "samples must be a non-empty list of rows")
    if len(raw) > max_samples:
        raise PayloadError("too_many_samples", f"{len(raw)} samples > {max_samples}")
    samples = _samples(raw, payload, keys=len(data))
    times = _times(data.get("times"), len(samples))
    units = _units(data.get("units"))
    return samples, data.get("seq"), data.get("t"), data.get("rate"), units, times


def _from_frame(payload: bytes, max_samples: int) -> _Parsed:
    """The same fields of a binary frame: its header says the sample count, and the
    length must match it exactly."""
    if len(payload) < FRAME_HEADER.size:
        raise PayloadError("bad_frame", f"a frame has a {FRAME_HEADER.size}-byte header")
    _, flags, reserved, n, seq, t, rate = FRAME_HEADER.unpack_from(payload)
    if reserved or flags & ~(FLAG_SEQ | FLAG_T | FLAG_ACC_MS2 | FLAG_GYRO_DEG):
        raise PayloadError("bad_frame", "unknown flags: this gateway reads frame version 1")
    if n == 0:
        raise PayloadError("bad_shape", "a frame needs at least one sample")
    if n > max_samples:
        raise PayloadError("too_many_samples", f"{n} samples > {max_samples}")
    expected = FRAME_HEADER.size + n * 24
    if len(payload) != expected:
        raise PayloadError(
            "bad_frame", f"{n} samples make {expected} bytes, the frame has {len(payload)}"
        )
    with np.errstate(invalid="ignore"):  # a signalling NaN: refused as not_finite below
        samples = np.frombuffer(payload, "<f4", n * 6, FRAME_HEADER.size).reshape(n, 6)
        samples = samples.astype(np.float64)
    units = {
        "acc": "m/s2" if flags & FLAG_ACC_MS2 else "g",
        "gyro": "deg/s" if flags & FLAG_GYRO_DEG else "rad/s",
    }
    return (
        samples,
        seq if flags & FLAG_SEQ else None,
        t if flags & FLAG_T else None,
        float(rate) if rate else None,
        units,
        None,
    )


def encode_frame(
    samples: np.ndarray,
    seq: int | None = None,
    t: float | None = None,
    *,
    rate: float | None = None,
    acc: str = "g",
    gyro: str = "rad/s",
) -> bytes:
    """A binary device frame, what :func:`decode_imu` reads beside JSON (samples as
    float32). A microcontroller writes the same with one ``memcpy`` of its header struct.

    >>> frame = encode_frame(np.zeros((2, 6)), seq=7)
    >>> len(frame), frame[:4]
    (80, b'HSB1')
    """
    rows = np.ascontiguousarray(samples, "<f4")
    flags = (
        (FLAG_SEQ if seq is not None else 0)
        | (FLAG_T if t is not None else 0)
        | (FLAG_ACC_MS2 if acc == "m/s2" else 0)
        | (FLAG_GYRO_DEG if gyro == "deg/s" else 0)
    )
    header = FRAME_HEADER.pack(FRAME_MAGIC, flags, 0, len(rows), seq or 0, t or 0.0, rate or 0.0)
    return header + rows.tobytes()


def _units(raw: Any) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict) or set(raw) - {"acc", "gyro"}:
        raise PayloadError(
            "bad_units", 'units must be {"acc": "g"|"m/s2", "gyro": "rad/s"|"deg/s"}'
        )
    return raw


def _unit_scales(units: Mapping[str, Any]) -> tuple[float, float]:
    """Factors to g and rad/s."""
    acc, gyro = units.get("acc", "g"), units.get("gyro", "rad/s")
    if not isinstance(acc, str) or not isinstance(gyro, str):
        raise PayloadError("bad_units", 'units are names: {"acc": "g", "gyro": "rad/s"}')
    if acc not in ACC_UNITS or gyro not in GYRO_UNITS:
        raise PayloadError(
            "bad_units",
            f"acc must be one of {sorted(ACC_UNITS)}, gyro one of {sorted(GYRO_UNITS)}; "
            f"got {acc!r}, {gyro!r}",
        )
    return ACC_UNITS[acc], GYRO_UNITS[gyro]


def _times(raw: Any, n: int) -> np.ndarray | None:
    if raw is None:
        return None
    try:
        times = np.array(raw, np.float64)
    except (TypeError, ValueError):
        raise PayloadError("bad_times", "times must be numbers (seconds)") from None
    if (
        times.shape != (n,)
        or not np.all((times >= 0) & (times <= MAX_T))
        or np.any(np.diff(times) <= 0)
    ):
        raise PayloadError(
            "bad_times",
            f"times must be {n} increasing numbers from 0 to {MAX_T:.0f} (one per sample)",
        )
    return times


def _check_range(peaks: list[float], acc_scale: float, gyro_scale: float) -> None:
    """Readings within the physical ranges, else out_of_range: ``peaks`` are the six
    channels' largest magnitudes in the message's units."""
    if max(peaks[:3]) * acc_scale > MAX_ACC_G or max(peaks[3:]) * gyro_scale > MAX_GYRO_RADS:
        raise PayloadError(
            "out_of_range",
            f"acceleration must lie within +-{MAX_ACC_G:g} g, angular velocity within "
            f"+-{MAX_GYRO_RADS:g} rad/s",
        )


def check_span(span_s: float, rate_hz: float, max_samples: int) -> None:
    """Readings spanning ``span_s`` seconds become about ``span_s * rate_hz`` samples on
    the model's grid: more than ``max_samples`` is too_many_samples."""
    if span_s * rate_hz + 1 > max_samples:
        raise PayloadError(
            "too_many_samples",
            f"the readings span {span_s:.3g} s: {span_s * rate_hz + 1:.0f} samples at "
            f"{rate_hz:g} Hz > {max_samples}",
        )


#: Sensor Logger's reading names -> (kind, scale to the model's units); others ignored
SENSOR_LOGGER_KINDS = {
    "accelerometer": ("linear_acc", 1 / STANDARD_GRAVITY),  # m/s2, without gravity
    "gravity": ("gravity", 1 / STANDARD_GRAVITY),
    "totalacceleration": ("acc", 1 / STANDARD_GRAVITY),  # Android: m/s2, with gravity
    "gyroscope": ("gyro", 1.0),  # rad/s
}


@dataclass(frozen=True, slots=True)
class SensorLoggerBatch:
    """One Sensor Logger message: the phone's ``deviceId``, ``messageId`` (its order)
    and ``sessionId``, and its readings by kind in the model's units."""

    device_id: str
    message_id: int
    session_id: str
    readings: list[Readings]


def device_id_from(name: str) -> str:
    """A device id from a name an app chose: characters outside ``[A-Za-z0-9_-]`` become
    ``_``, cut to 64 (empty: ``unnamed``).

    >>> device_id_from("Anna's iPhone 15")
    'Anna_s_iPhone_15'
    """
    return re.sub(r"[^A-Za-z0-9_-]", "_", name)[:64] or "unnamed"


def decode_sensor_logger(payload: bytes, *, max_bytes: int) -> SensorLoggerBatch:
    """Validate one Sensor Logger message (its MQTT and HTTP push schema)."""
    if len(payload) > max_bytes:
        raise PayloadError("too_large", f"{len(payload)} bytes > {max_bytes}")
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise PayloadError("bad_json", f"not JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("payload"), list):
        raise PayloadError("bad_shape", 'expected an object with a "payload" list')
    message_id = data.get("messageId", 0)
    if not isinstance(message_id, int) or isinstance(message_id, bool) or message_id < 0:
        raise PayloadError("bad_shape", "messageId must be a non-negative integer")
    rows = _sensor_logger_rows(data["payload"])
    readings = [_sensor_logger_readings(name, table) for name, table in rows.items()]
    return SensorLoggerBatch(
        device_id_from(str(data.get("deviceId") or "")),
        message_id,
        str(data.get("sessionId") or ""),
        readings,
    )


def _sensor_logger_rows(entries: list[Any]) -> dict[str, list[tuple[Any, Any, Any, Any]]]:
    """The readings of the kinds the model uses, by name: (time, x, y, z) rows as sent."""
    rows: dict[str, list[tuple[Any, Any, Any, Any]]] = {}
    try:
        for entry in entries:
            name = entry.get("name")
            if name in SENSOR_LOGGER_KINDS:  # else location, battery, the connection test ...
                xyz = entry["values"]
                rows.setdefault(name, []).append((entry["time"], xyz["x"], xyz["y"], xyz["z"]))
    except (AttributeError, KeyError, TypeError):
        raise PayloadError(
            "bad_shape", "payload entries must be objects; readings need time and values x y z"
        ) from None
    return rows


def _sensor_logger_readings(name: str, table: list[tuple[Any, Any, Any, Any]]) -> Readings:
    """One kind's rows, checked, as :class:`Readings` in seconds and the model's units."""
    kind, scale = SENSOR_LOGGER_KINDS[name]
    try:  # one conversion for the whole table: no Python per reading beyond the rows
        array = np.array(table, np.float64)
    except (TypeError, ValueError):
        raise PayloadError("bad_shape", f"{name}: time and x y z must be numbers") from None
    if array.ndim != 2 or not np.all(np.isfinite(array)):
        raise PayloadError("not_finite", f"{name} values must be finite numbers")
    if not np.all((array[:, 0] >= 0) & (array[:, 0] <= MAX_T * 1e9)):
        raise PayloadError("bad_times", f"{name}: time must be epoch ns up to 2100")
    limit = MAX_GYRO_RADS if kind == "gyro" else MAX_ACC_G / scale
    if np.abs(array[:, 1:]).max() > limit:
        raise PayloadError("out_of_range", f"{name} values beyond {limit:g}")
    return Readings(kind, array[:, 0] / 1e9, array[:, 1:] * scale)


def _samples(raw: list[Any], payload: bytes, keys: int) -> np.ndarray:
    """The rows as an (n, 6) float64 array, or PayloadError(bad_shape)."""
    # The common case without numpy's type discovery (2-3x faster). It needs leaves that
    # are all numbers: no true/false/null, and no quotes but the keys' own, so no string
    # and no object with keys anywhere; then rows of length 6 are rows of 6 numbers or of
    # 6 lists, which np.fromiter refuses.
    plain = (
        payload.count(b'"') == 2 * keys
        and b"null" not in payload
        and b"true" not in payload
        and b"false" not in payload
    )
    if plain:
        with contextlib.suppress(ValueError, TypeError):  # a number for a row, say
            if set(map(len, raw)) == {6}:
                flat = itertools.chain.from_iterable(raw)
                return np.fromiter(flat, np.float64, 6 * len(raw)).reshape(-1, 6)
    try:
        samples = np.array(raw)
    except ValueError:  # ragged rows
        raise PayloadError("bad_shape", "samples must be rows of 6 numbers") from None
    if samples.dtype.kind not in "iuf" or _has_bool(raw):  # strings, nulls, objects
        raise PayloadError("bad_shape", "samples must be rows of 6 numbers")
    if samples.ndim != 2 or samples.shape[1] != 6:
        raise PayloadError(
            "bad_shape", f"samples must be rows of 6 numbers, got shape {samples.shape}"
        )
    return samples.astype(np.float64, copy=False)


def _has_bool(rows: list[Any]) -> bool:  # numpy takes True for 1
    return any(type(v) is bool for row in rows if isinstance(row, list) for v in row)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def encode(data: dict[str, Any]) -> bytes:
    return orjson.dumps(data)


def encode_imu(
    samples: np.ndarray,
    seq: int | None = None,
    t: float | None = None,
    *,
    decimals: int | None = None,
    **fields: Any,
) -> bytes:
    """A device message, what :func:`decode_imu` reads. Floats are written exactly
    (shortest round-trip form) unless ``decimals`` rounds them; ``fields`` are added
    as they are (a test may add a bad one on purpose).

    >>> encode_imu(np.array([[0.0, 0.0, 1.0, 0.0, 0.0, 0.1]]), seq=7)
    b'{"samples":[[0.0,0.0,1.0,0.0,0.0,0.1]],"seq":7}'
    """
    rows = np.ascontiguousarray(samples, np.float64)
    data: dict[str, Any] = {"samples": rows.round(decimals) if decimals is not None else rows}
    if seq is not None:
        data["seq"] = seq
    if t is not None:
        data["t"] = t
    data.update(fields)
    return orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY)


def encode_activities(decisions: Decisions, model: str) -> list[bytes]:
    """Each decision's ``{prefix}/{device}/activity`` payload, in order; the batch's
    numbers are rounded once, as arrays."""
    labels, names = decisions.labels, decisions.names
    columns = zip(
        decisions.device,
        decisions.activity.tolist(),
        np.round(decisions.confidence, 4).tolist(),
        np.round(decisions.probs.astype(np.float64), 4).tolist(),
        decisions.raw.tolist(),
        decisions.seq.tolist(),
        np.round(decisions.t, 3).tolist(),
        np.round(decisions.received, 3).tolist(),
        strict=True,
    )
    return [
        encode(
            {
                "device": device,
                "activity": names[activity],
                "confidence": confidence,
                "probabilities": dict(zip(labels, probs, strict=True)),
                "raw_activity": labels[raw],
                "seq": seq,
                "t": t,
                "received": received,
                "model": model,
            }
        )
        for device, activity, confidence, probs, raw, seq, t, received in columns
    ]


def encode_gone(device: str, model: str, now: float, idle_s: float) -> bytes:
    """The activity of a device gone silent (evicted): UNKNOWN, with no seq."""
    return encode(
        {
            "device": device,
            "activity": UNKNOWN,
            "confidence": 0.0,
            "probabilities": {},
            "raw_activity": None,
            "seq": None,
            "t": round(now, 3),
            "received": round(now, 3),
            "model": model,
            "reason": f"silent for {idle_s:g} s",
        }
    )


def encode_transitions(decisions: Decisions) -> list[tuple[int, bytes]]:
    """The ``{prefix}/{device}/transition`` payloads of the decisions that changed the
    published activity: (index in ``decisions``, payload)."""
    names = decisions.names
    return [
        (
            i,
            encode(
                {
                    "device": decisions.device[i],
                    "from": names[int(decisions.previous[i])],
                    "to": names[int(decisions.activity[i])],
                    "seq": int(decisions.seq[i]),
                    "t": round(float(decisions.t[i]), 3),
                }
            ),
        )
        for i in np.flatnonzero(decisions.changed).tolist()
    ]


def encode_error(code: str, detail: str) -> bytes:
    return encode({"error": code, "detail": detail})


#: The most a calibration may last (s): a request for longer is refused.
MAX_CALIBRATION_S = 60.0


def decode_calibrate(payload: bytes, default_s: float) -> float | None:
    """A ``{prefix}/{device}/calibrate`` request: the seconds to stand still for
    (empty payload: ``default_s``; ``{"seconds": S}``), or None for ``{"clear": true}``.
    Raises PayloadError ``bad_calibrate`` on anything else."""
    if not payload.strip():
        return default_s
    try:
        body = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise PayloadError("bad_calibrate", f"not JSON: {exc}") from None
    if not isinstance(body, dict) or set(body) - {"seconds", "clear"}:
        raise PayloadError("bad_calibrate", 'send {}, {"seconds": S} or {"clear": true}')
    if body.get("clear") is True:
        return None
    seconds = body.get("seconds", default_s)
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, int | float)
        or not 0 < seconds <= MAX_CALIBRATION_S
    ):
        raise PayloadError("bad_calibrate", f"seconds must be in (0, {MAX_CALIBRATION_S:g}]")
    return float(seconds)


def encode_calibration(
    device: str,
    status: str,
    vertical: Sequence[float] | None,
    detail: str,
    t: float,
    source: str | None = None,
) -> bytes:
    """A device's calibration status (``{prefix}/{device}/calibration``, retained):
    started | calibrated | failed | cleared | refined | remounted, the vertical in force
    (None: none) and where it came from (``source``: standing | walking | None)."""
    return encode(
        {
            "device": device,
            "status": status,
            "vertical": None if vertical is None else [round(float(v), 5) for v in vertical],
            "source": source,
            "detail": detail,
            "t": round(t, 3),
        }
    )


def discovery_payload(
    device: str, prefix: str, model: str, *, name: str | None = None, expire_after_s: float = 0
) -> bytes:
    """Home Assistant MQTT discovery config of one device's activity sensor: available
    while both the gateway and the device are (``{prefix}/{device}/availability``), and
    expired after ``expire_after_s`` without an update if the gateway itself is gone."""
    state = f"{prefix}/{device}/activity"
    return encode(
        {
            "name": "Activity",
            "unique_id": f"harstream_{device}_activity",
            "object_id": f"harstream_{device}_activity",
            "state_topic": state,
            "value_template": "{{ value_json.activity }}",
            "json_attributes_topic": state,
            "availability": [
                {"topic": f"{prefix}/status"},
                {"topic": f"{prefix}/{device}/availability"},
            ],
            "availability_mode": "all",
            "payload_available": "online",
            "payload_not_available": "offline",
            **({"expire_after": round(expire_after_s)} if expire_after_s else {}),
            "icon": "mdi:run",
            "device": {
                "identifiers": [f"harstream_{device}"],
                "name": name or f"harstream {device}",
                "manufacturer": "harstream",
                "model": model,
            },
        }
    )
