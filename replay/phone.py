"""A recording as a real phone would stream it, in the Sensor Logger app's format.

The UCI recordings are 50 Hz, in g, with gravity, on one clock. A phone running Sensor
Logger streams something else, and ``phone_batches`` makes that from a recording:

- each sensor on its own clock at ``rate_hz`` (100 by default, as an iPhone at
  "fastest"), every interval jittered by up to ``jitter`` (±15%), accelerometer and
  gyroscope starting at different phases;
- accelerations in m/s2, the ``accelerometer`` reading *without* gravity and a separate
  ``gravity`` reading, gravity estimated by a slow causal low-pass (one pole, 0.3 Hz) as
  phones do; ``gyroscope`` in rad/s; times in epoch nanoseconds;
- batched every ``batch_s`` seconds into ``{"messageId", "sessionId", "deviceId",
  "payload": [{"name", "time", "values": {"x", "y", "z"}}, ...]}``;
- optionally with whole batches lost (``drop_every``: every n-th batch never arrives, as
  a QoS 0 message over Wi-Fi may not).

Values between the recording's samples are interpolated linearly (the recording holds
nothing above 25 Hz to alias). Imports nothing of harstream.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np

from replay.recording import Recording

__all__ = ["STANDARD_GRAVITY", "phone_batches", "sensor_times"]

STANDARD_GRAVITY = 9.80665  # m/s2 per g
GRAVITY_CUTOFF_HZ = 0.3


def sensor_times(
    duration_s: float, rate_hz: float, jitter: float, rng: np.random.Generator
) -> np.ndarray:
    """Jittered sample times in [0, duration_s), starting at a random phase."""
    n = int(duration_s * rate_hz * 1.2) + 2
    steps = (1.0 + rng.uniform(-jitter, jitter, n)) / rate_hz
    times = rng.uniform(0, 1 / rate_hz) + np.concatenate([[0.0], np.cumsum(steps[:-1])])
    return times[times < duration_s]


def _one_pole_lowpass(x: np.ndarray, cutoff_hz: float, rate_hz: float) -> np.ndarray:
    """Causal first-order low-pass along axis 0, starting from the first value."""
    alpha = 1.0 - math.exp(-2 * math.pi * cutoff_hz / rate_hz)
    out = np.empty_like(x)
    state = x[0].copy()
    for i, value in enumerate(x):
        state += alpha * (value - state)
        out[i] = state
    return out


def _readings(name: str, times_ns: np.ndarray, values: np.ndarray) -> list[dict[str, Any]]:
    return [
        {
            "name": name,
            "time": int(t),
            "values": {"x": float(v[0]), "y": float(v[1]), "z": float(v[2])},
        }
        for t, v in zip(times_ns, values, strict=True)
    ]


def phone_batches(
    recording: Recording,
    *,
    start_epoch_s: float = 1_795_470_000.0,
    rate_hz: float = 100.0,
    jitter: float = 0.15,
    batch_s: float = 1.0,
    device: str = "phone",
    session: str = "session-1",
    drop_every: int = 0,
    seed: int = 0,
) -> Iterator[dict[str, Any]]:
    """Sensor Logger messages of ``recording``, in order (lost ones left out)."""
    rng = np.random.default_rng(seed)
    rec_rate = recording.rate_hz
    grid = np.arange(len(recording)) / rec_rate
    total = recording.samples[:, :3] * STANDARD_GRAVITY
    gravity = _one_pole_lowpass(total, GRAVITY_CUTOFF_HZ, rec_rate)
    duration = len(recording) / rec_rate

    def at(times: np.ndarray, values: np.ndarray) -> np.ndarray:
        return np.stack([np.interp(times, grid, values[:, i]) for i in range(3)], axis=1)

    acc_t = sensor_times(duration, rate_hz, jitter, rng)
    gyro_t = sensor_times(duration, rate_hz, jitter, rng)
    streams = {
        "accelerometer": (acc_t, at(acc_t, total) - at(acc_t, gravity)),
        "gravity": (acc_t, at(acc_t, gravity)),
        "gyroscope": (gyro_t, at(gyro_t, recording.samples[:, 3:])),
    }
    for k in range(math.ceil(duration / batch_s)):
        lo, hi = k * batch_s, (k + 1) * batch_s
        payload: list[dict[str, Any]] = []
        for name, (times, values) in streams.items():
            part = (times >= lo) & (times < hi)
            times_ns = np.round((start_epoch_s + times[part]) * 1e9).astype(np.int64)
            payload += _readings(name, times_ns, values[part])
        if drop_every and k % drop_every == drop_every - 1:
            continue
        yield {"messageId": k, "sessionId": session, "deviceId": device, "payload": payload}
