"""Device streams: what real phones and boards send, onto the model's 50 Hz grid. Pure.

A phone streams its sensors as it likes: each sensor on its own clock (100-200 Hz with
jitter on phones, a few Hz on some boards), acceleration with gravity or without it
(gravity then comes apart), in batches that may arrive late or out of order. The model
wants six channels (acceleration with gravity in g, angular velocity in rad/s) on one
uniform grid at ``rate_hz``. A :class:`DeviceStream` per device does the conversion,
causally, one batch at a time:

- readings of kinds ``acc`` (with gravity), ``linear_acc`` (without), ``gravity`` and
  ``gyro``, each with its own timestamps (device clock, seconds; units already the
  model's: the decoders convert m/s2 and deg/s);
- the acceleration with gravity is ``acc`` when the device sends it, else
  ``linear_acc + gravity`` (both interpolated onto the same ticks);
- a grid tick ``t_k = anchor + k / rate_hz`` is emitted once every sensor has readings
  at or after it (linear interpolation between the readings around it), so
  accelerometer and gyroscope land on the same ticks;
- a device whose fastest sensor runs above 1.5x the grid rate has its sensors first
  interpolated onto a grid ``M`` times finer, low-passed there (4th-order Butterworth at
  ``anti_alias_hz``) and then decimated, so what lies above the grid's Nyquist frequency
  does not fold into the activity band; the filter's delay (~20 ms) is taken off the
  blocks' times, so that they say when the signal they carry was measured;
- a gap longer than ``max_gap_s`` in any sensor restarts the stream after it (its grid
  index jumps, which the engine treats as a new stream); shorter gaps are bridged by the
  interpolation, keeping the device's state;
- readings older than what was already emitted are dropped and counted (``late``);
- a device clock that is not epoch time (seconds since boot or since start: anything
  before 2001) is anchored to the gateway's clock at the stream's first reading.

Each emitted block carries the grid index of its first tick (``seq``) and that tick's
device time (``t``, epoch seconds), which the engine stamps its decisions with.
Problems a user can act on come back as :class:`StreamIssue` (``no_gravity``,
``no_gyro``, ``rate_too_low``, ``unit_mismatch``).

>>> stream = DeviceStream(rate_hz=50.0)
>>> t = np.arange(0, 1.0, 0.01)  # 100 Hz, one second
>>> still = Readings("acc", t, np.tile([0.0, 0.0, 1.0], (100, 1)))
>>> spin = Readings("gyro", t + 0.003, np.zeros((100, 3)))
>>> blocks, issues = stream.push([still, spin], now=0.0)
>>> [(b.seq, b.samples.shape) for b in blocks], issues
([(0, (50, 6))], [])
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from harstream.core.iir import LowPass

__all__ = ["KINDS", "DeviceStream", "GridBlock", "Readings", "StreamIssue"]

KINDS = ("acc", "linear_acc", "gravity", "gyro")
EPOCH_2001 = 978_307_200.0  # device times before this are since-boot or since-start
STILL_GYRO = 0.15  # rad/s: below this (and steady acceleration) the device is still
STILL_SECONDS = 3.0  # how long stillness must last before the units are judged
MAX_BUFFERED = 8192  # readings kept per sensor while waiting (20 s at 400 Hz)


@dataclass(frozen=True, slots=True)
class Readings:
    """One sensor's readings: ``t`` (n,) device seconds, ``xyz`` (n, 3) in g (the
    accelerations) or rad/s (gyro)."""

    kind: str
    t: np.ndarray
    xyz: np.ndarray


@dataclass(frozen=True, slots=True)
class GridBlock:
    """Samples (m, 6) on the grid: acc x y z in g with gravity, gyro x y z in rad/s."""

    samples: np.ndarray
    seq: int  # grid index of the first sample, counted from the stream's first anchor
    t: float  # epoch seconds of the first sample (the device's clock)


@dataclass(frozen=True, slots=True)
class StreamIssue:
    code: str
    detail: str


class _Sensor:
    """One kind's recent readings and its anti-alias filter's state."""

    def __init__(self) -> None:
        self.t = np.zeros(0)
        self.v = np.zeros((0, 3))
        self.last_t = -math.inf  # newest reading seen
        self.rate_hz: float | None = None  # estimated once, from the first readings
        self.state: np.ndarray | None = None  # (3, states) of the device's anti-alias filter

    def add(
        self, t: np.ndarray, v: np.ndarray, max_gap_s: float
    ) -> tuple[int, tuple[float, float] | None]:
        """Append readings newer than the newest so far; returns how many were dropped
        as late, and the first gap longer than ``max_gap_s`` (the readings before and
        after it; None)."""
        order = np.argsort(t, kind="stable")
        t, v = t[order], v[order]
        fresh = t > self.last_t
        late = int(len(t) - fresh.sum())
        t, v = t[fresh], v[fresh]
        if not len(t):
            return late, None
        before = self.last_t if math.isfinite(self.last_t) else t[0]
        times = np.concatenate([[before], t])
        long = np.flatnonzero(np.diff(times) > max_gap_s)
        self.t = np.concatenate([self.t, t])
        self.v = np.concatenate([self.v, v])
        self.last_t = float(t[-1])
        if not len(long):
            return late, None
        # the same pair of readings decides the gap and where the stream starts again
        return late, (float(times[long[0]]), float(times[long[0] + 1]))

    def estimate_rate(self) -> float | None:
        """The sensor's rate from the median interval of its first readings (once)."""
        if self.rate_hz is None and len(self.t) >= 5:
            dt = np.diff(self.t)
            dt = dt[dt > 0]
            self.rate_hz = float(1.0 / np.median(dt)) if len(dt) else None
        return self.rate_hz

    def values_at(self, ticks: np.ndarray) -> np.ndarray:
        """Linear interpolation of the readings at ``ticks`` (all within the readings)."""
        return np.stack([np.interp(ticks, self.t, self.v[:, i]) for i in range(3)], axis=1)

    def forget_before(self, t: float) -> None:
        """Drop readings no future tick after ``t`` needs (keep the last one at or
        before it: the left neighbour of the next interpolation)."""
        keep = max(int(np.searchsorted(self.t, t, side="right")) - 1, 0)
        if keep:
            self.t, self.v = self.t[keep:], self.v[keep:]


@dataclass
class _Stillness:
    """Running check of the acceleration's magnitude while the device is still."""

    seconds: float = 0.0
    magnitudes: list[float] = field(default_factory=list)
    judged: bool = False


class DeviceStream:
    def __init__(
        self,
        rate_hz: float = 50.0,
        *,
        max_gap_s: float = 2.0,
        min_rate_hz: float = 25.0,
        anti_alias_hz: float = 20.0,
    ) -> None:
        self.rate_hz = rate_hz
        self.dt = 1.0 / rate_hz
        self.max_gap_s = max_gap_s
        self.min_rate_hz = min_rate_hz
        self.anti_alias_hz = anti_alias_hz
        self.sensors = {kind: _Sensor() for kind in KINDS}
        self.origin: float | None = None  # device time of grid index 0
        self.next_k = 0  # grid index of the next tick to emit
        self.gap_from: float | None = None  # a long gap began here: emit up to it only,
        self.restart_at: float | None = None  # then start the grid again from here
        self.factor = 0  # fine grid / grid, chosen at the first emission (1: no filter)
        self.filter: LowPass | None = None
        self.delay_s = 0.0  # the filter's group delay at low frequencies
        self.clock_offset: float | None = None  # added to device times (epoch anchoring)
        self.late = 0
        self.restarts = 0
        self._still = _Stillness()
        self._reported: set[str] = set()

    # --- the one verb ----------------------------------------------------------------

    def push(
        self, readings: Sequence[Readings], now: float
    ) -> tuple[list[GridBlock], list[StreamIssue]]:
        """Add one message's readings (``now``: the gateway's receive time, epoch
        seconds); return the grid samples they complete (two blocks when a long gap
        restarts the stream in between) and issues. Between pushes each sensor keeps at
        most ``MAX_BUFFERED`` readings: one whose partner never comes (acceleration
        without a gyroscope) cannot fill memory."""
        try:
            return self._push(readings, now)
        finally:
            for sensor in self.sensors.values():
                if len(sensor.t) > MAX_BUFFERED:
                    sensor.t, sensor.v = sensor.t[-MAX_BUFFERED:], sensor.v[-MAX_BUFFERED:]

    def _push(
        self, readings: Sequence[Readings], now: float
    ) -> tuple[list[GridBlock], list[StreamIssue]]:
        self._add(readings, now)
        used, issues = self._used_kinds()
        if used is None:
            return [], self._once(issues)
        for kind in used:
            issues += self._check_rate(kind)
        blocks = []
        while True:
            block, restarted = self._emit(used)
            if block is not None:
                blocks.append(block)
                issues += self._check_units(block.samples)
            if not restarted:
                return blocks, self._once(issues)

    def _add(self, readings: Sequence[Readings], now: float) -> None:
        """Each reading to its sensor's buffer; a long gap once the stream began sets
        the restart."""
        for r in readings:
            if not len(r.t):
                continue
            if self.clock_offset is None:
                # a device time before 2001 is a since-boot clock: anchor it to epoch
                self.clock_offset = now - float(r.t[-1]) if r.t[-1] < EPOCH_2001 else 0.0
            sensor = self.sensors[r.kind]
            t, xyz = np.asarray(r.t, np.float64), np.asarray(r.xyz, np.float64)
            late, gap = sensor.add(t, xyz, self.max_gap_s)
            self.late += late
            if gap is not None and self.origin is not None and self.restart_at is None:
                # emit up to the gap, then start anew after it
                self.gap_from, self.restart_at = gap

    def _used_kinds(self) -> tuple[list[str] | None, list[StreamIssue]]:
        """The sensors the grid is made of; or None while one is missing, with the
        issue to report (none while no acceleration has come yet)."""
        acc_kinds = self._acc_kinds()
        if acc_kinds is None:
            if self._have("linear_acc"):
                return None, [
                    StreamIssue(
                        "no_gravity",
                        "acceleration comes without gravity and no gravity sensor is "
                        "sent: add the gravity (or total acceleration) reading; sitting, "
                        "standing and lying are told apart by gravity",
                    )
                ]
            return None, []
        if not self._have("gyro"):
            return None, [StreamIssue("no_gyro", "no gyroscope readings: the model needs them")]
        return [*acc_kinds, "gyro"], []

    # --- emission --------------------------------------------------------------------

    def _acc_kinds(self) -> list[str] | None:
        if self._have("acc"):
            return ["acc"]
        if self._have("linear_acc") and self._have("gravity"):
            return ["linear_acc", "gravity"]
        return None

    def _have(self, kind: str) -> bool:
        return math.isfinite(self.sensors[kind].last_t)

    def _emit(self, used: list[str]) -> tuple[GridBlock | None, bool]:
        """The ticks every sensor now covers; and whether a gap restarted the grid after
        them (then what follows the gap may be ready too)."""
        sensors = [self.sensors[k] for k in used]
        if self.origin is None:
            for s in sensors:  # a gap before the stream began: it begins after the gap
                long = np.flatnonzero(np.diff(s.t) > self.max_gap_s)
                if len(long):
                    s.t, s.v = s.t[long[-1] + 1 :], s.v[long[-1] + 1 :]
            self.origin = max(float(s.t[0]) for s in sensors)
            self.next_k = 0
            self._choose_filter(sensors)
        if self.gap_from is None:  # a hole the readings' arrival did not flag as a gap
            self._find_gap(sensors)
        horizon = min(s.last_t for s in sensors)
        if self.gap_from is not None:
            horizon = min(horizon, self.gap_from)
        last_k = math.floor((horizon - self.origin) / self.dt + 1e-9)
        # never across a hole: ticks more than max_gap_s before the readings every sensor
        # still holds have nothing to be made of (a jumped clock the checks above missed,
        # such as one that jumped in each sensor while a gap was pending); skipped, as a gap
        starts = [float(s.t[0]) for s in sensors if len(s.t)]
        if len(starts) == len(sensors):
            first_k = math.ceil((max(starts) - self.max_gap_s - self.origin) / self.dt - 1e-9)
            self.next_k = max(self.next_k, first_k)
        block = None
        if last_k >= self.next_k:
            ks = np.arange(self.next_k, last_k + 1)
            ticks = self.origin + ks * self.dt
            columns = [self._sample(self.sensors[k], ticks) for k in used]
            acc = columns[0] if len(columns) == 2 else columns[0] + columns[1]
            samples = np.hstack([acc, columns[-1]])
            block = GridBlock(samples, int(ks[0]), float(ticks[0]) + (self.clock_offset or 0.0))
            self.next_k = int(last_k) + 1
            for s in sensors:
                s.forget_before(float(ticks[-1]))
        if self.restart_at is not None and min(s.last_t for s in sensors) >= self.restart_at:
            self._restart(used)
            return block, True
        return block, False

    def _find_gap(self, sensors: list[_Sensor]) -> None:
        """The earliest hole longer than ``max_gap_s`` in the readings still buffered
        becomes the gap (its arrival may have been seen while another gap was pending,
        when the clock jumped in one sensor, then in another): the grid stops before it
        and starts again after it, never spanning it."""
        found: tuple[float, float] | None = None
        for s in sensors:
            long = np.flatnonzero(np.diff(s.t) > self.max_gap_s)
            if len(long) and (found is None or s.t[long[0]] < found[0]):
                found = (float(s.t[long[0]]), float(s.t[long[0] + 1]))
        if found is not None:
            self.gap_from, self.restart_at = found

    def _restart(self, used: list[str]) -> None:
        """After a gap: the grid starts again at the first tick every sensor covers, its
        index continuing the device's timeline (so the engine sees the jump)."""
        start = self.restart_at
        assert start is not None and self.origin is not None
        self.restart_at = self.gap_from = None
        self.restarts += 1
        for kind in used:
            s = self.sensors[kind]
            after = s.t >= start
            s.t, s.v = s.t[after], s.v[after]
            s.state = None
        firsts = [float(self.sensors[k].t[0]) for k in used if len(self.sensors[k].t)]
        if len(firsts) == len(used):
            first = max(firsts)
            self.next_k = max(self.next_k + 1, math.ceil((first - self.origin) / self.dt))
        else:
            self.next_k += max(1, round((start - self.origin) / self.dt) - self.next_k)

    def _choose_filter(self, sensors: list[_Sensor]) -> None:
        """One fine grid for all of a device's sensors, so that they share one filter
        delay: as fine as the fastest sensor needs (at most 8x), none below 1.5x."""
        rates = [r for r in (s.estimate_rate() for s in sensors) if r is not None]
        fastest = max(rates, default=self.rate_hz)
        self.factor = min(8, round(fastest / self.rate_hz)) if fastest > 1.5 * self.rate_hz else 1
        if self.factor > 1:
            self.filter = LowPass(4, self.anti_alias_hz, self.rate_hz * self.factor)
            self.delay_s = self.filter.group_delay_s()

    def _sample(self, sensor: _Sensor, ticks: np.ndarray) -> np.ndarray:
        """The sensor's values at the grid ticks; anti-aliased for a fast device."""
        if self.filter is None:
            return sensor.values_at(ticks)
        # the fine grid: `factor` ticks per grid tick, the last of each group on the grid
        m = self.factor
        fine = (ticks[:, None] - self.dt + (np.arange(1, m + 1) * self.dt / m)[None, :]).ravel()
        fine = np.maximum(fine, sensor.t[0])  # the very first group reaches back before data
        values = sensor.values_at(fine).T  # (3, n * m)
        if sensor.state is None:
            sensor.state = self.filter.steady_state(values[:, 0])
        sensor.state, filtered = self.filter.run(sensor.state, values)
        return filtered[:, m - 1 :: m].T

    # --- plausibility ----------------------------------------------------------------

    def _check_rate(self, kind: str) -> list[StreamIssue]:
        rate = self.sensors[kind].estimate_rate()
        if rate is not None and rate < 0.9 * self.min_rate_hz:  # 10%: jitter in the estimate
            return [
                StreamIssue(
                    "rate_too_low",
                    f"{kind} arrives at {rate:.1f} Hz; at least {self.min_rate_hz:g} Hz is "
                    "needed (the model works at 50 Hz)",
                )
            ]
        return []

    def _check_units(self, samples: np.ndarray) -> list[StreamIssue]:
        """While the device is still, |acc| must be ~1 g; judged once per stream."""
        still = self._still
        if still.judged:
            return []
        acc, gyro = samples[:, :3], samples[:, 3:]
        quiet = (np.linalg.norm(gyro, axis=1) < STILL_GYRO) & (
            np.abs(np.linalg.norm(acc, axis=1) - np.median(np.linalg.norm(acc, axis=1)))
            < 0.05 * np.median(np.linalg.norm(acc, axis=1)) + 1e-6
        )
        if not quiet.all():
            still.seconds, still.magnitudes = 0.0, []
            return []
        still.seconds += len(samples) * self.dt
        still.magnitudes.extend(np.linalg.norm(acc, axis=1).tolist())
        if still.seconds < STILL_SECONDS:
            return []
        still.judged = True
        g = float(np.median(still.magnitudes))
        if 0.75 <= g <= 1.3:
            return []
        if 7.0 <= g <= 12.0:
            likely = "m/s2 sent as g (divide by 9.80665, or say units acc m/s2)"
        elif 0.07 <= g <= 0.13:
            likely = "g declared as m/s2 (say units acc g)"
        elif g < 0.3:
            likely = "acceleration without gravity, sent as if it had it"
        else:
            likely = "an unknown scale"
        return [
            StreamIssue(
                "unit_mismatch",
                f"at rest the acceleration measures {g:.3g} g, not ~1 g: likely {likely}",
            )
        ]

    def _once(self, issues: list[StreamIssue]) -> list[StreamIssue]:
        """Each code once per stream: a user needs to hear it, not 50 times a second."""
        fresh = []
        for issue in issues:
            if issue.code not in self._reported:
                self._reported.add(issue.code)
                fresh.append(issue)
        return fresh
