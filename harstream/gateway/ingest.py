"""What devices send -> what the engine takes: routing, decoding, and field devices.

Runs in the pipeline's prepare thread, one routed message
(:class:`~harstream.gateway.routes.Route`) at a time, without I/O:

- ``imu`` (``{prefix}/{device}/imu``): harstream's own message. At the model's rate, in g and
  rad/s, it goes to the engine as it is; at another rate, in other units or with
  per-sample times, its readings go through the device's
  :class:`~harstream.core.devicestream.DeviceStream` first.
- ``sensor-logger`` (``{sensor_logger}`` and ``{sensor_logger}/{name}``): the Sensor
  Logger app. The device is ``name`` when the topic has that level (one topic per
  phone, which broker ACLs and partitioned workers need), else the message's
  ``deviceId``, both turned into device ids. Messages are put back in ``messageId``
  order (at most ``reorder_window`` held while one is missing), then their readings go
  through the device's stream.

Per-device settings from the config: units for devices whose messages do not say, and
an axis convention (a permutation with signs) applied to both sensors. Every device is
admitted by the gateway's :class:`~harstream.gateway.registry.DeviceRegistry` once its
message decodes, before a stream or an order is kept for it (a new device beyond
``max_devices`` is ``too_many_devices``), so a flood of device ids cannot fill memory;
the registry drops a device's stream when it evicts or erases the device (``drop``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from harstream.core.devicestream import DeviceStream, Readings
from harstream.core.engine import Message
from harstream.core.payload import (
    DeviceReadings,
    check_span,
    decode_imu,
    decode_sensor_logger,
)
from harstream.errors import PayloadError
from harstream.gateway.registry import DeviceRegistry
from harstream.gateway.routes import SENSOR_LOGGER, Route

__all__ = ["DeviceSettings", "Ingest", "IngestSettings"]

Error = tuple[str, str, str]  # device, code, detail


@dataclass(frozen=True, slots=True)
class DeviceSettings:
    units: dict[str, str] = field(default_factory=dict)
    axes: str = "x,y,z"  # device axes -> harstream axes, e.g. "-y,x,z"

    def transform(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(column order, signs) of the axis convention; None for the identity."""
        if self.axes == "x,y,z":
            return None
        parts = self.axes.split(",")
        order = np.array(["xyz".index(p.lstrip("-")) for p in parts])
        signs = np.array([-1.0 if p.startswith("-") else 1.0 for p in parts])
        return order, signs


@dataclass(frozen=True, slots=True)
class IngestSettings:
    prefix: str
    rate_hz: float
    max_samples_per_message: int
    max_payload_bytes: int
    sensor_logger_topic: str | None
    sensor_logger_max_bytes: int
    max_gap_s: float
    reorder_window: int
    idle_timeout_s: float
    devices: Mapping[str, DeviceSettings] = field(default_factory=dict)
    max_devices: int = 10_000  # devices served (stream.max_devices; the registry's)


@dataclass
class _Order:
    """A device's Sensor Logger messages, put back in messageId order."""

    session: str = ""
    next_id: int | None = None
    held: dict[int, DeviceReadings] = field(default_factory=dict)


class Ingest:
    """``registry``: the gateway's (a registry of its own, without an engine, when
    none is given: ingest on its own, as in tests and benchmarks)."""

    def __init__(self, settings: IngestSettings, registry: DeviceRegistry | None = None) -> None:
        self.settings = settings
        self.streams: dict[str, DeviceStream] = {}
        self.orders: dict[str, _Order] = {}
        if registry is None:
            registry = DeviceRegistry(settings.max_devices, settings.idle_timeout_s)
            registry.stores.append(self)
        self.registry = registry
        self.counters: Counter[str] = Counter()  # written only by the prepare thread
        self._transforms = {d: s.transform() for d, s in settings.devices.items()}

    def decode(self, route: Route, wall: float) -> tuple[list[Message], list[Error]]:
        """Engine messages (none, one, or a few) from one ``imu`` or ``sensor-logger``
        message; errors."""
        if route.kind == SENSOR_LOGGER:
            return self._sensor_logger_message(route, wall)
        device = route.device
        s = self.settings
        configured = s.devices.get(device)
        try:
            decoded = decode_imu(
                device,
                route.payload,
                now=wall,
                rate_hz=s.rate_hz,
                max_samples=s.max_samples_per_message,
                max_bytes=s.max_payload_bytes,
                units=configured.units if configured is not None else None,
            )
        except PayloadError as exc:
            return [], [(device, exc.code, exc.detail)]
        if not self.registry.admit(device, wall):
            return [], [self._refused(device)]
        if isinstance(decoded, Message):
            transform = self._transforms.get(device)
            if transform is not None:
                decoded = Message(
                    device,
                    _turn(decoded.samples, transform),
                    decoded.seq,
                    decoded.t,
                    decoded.received,
                )
            return [decoded], []
        return self._through_stream(decoded)

    def _sensor_logger_message(
        self, route: Route, wall: float
    ) -> tuple[list[Message], list[Error]]:
        s = self.settings
        named = route.device  # the topic's name, as a device id ("": the payload says)
        try:
            batch = decode_sensor_logger(route.payload, max_bytes=s.sensor_logger_max_bytes)
            times = [r.t for r in batch.readings if len(r.t)]
            if times:  # what the readings become on the grid: within the message limit
                span = max(float(t.max()) for t in times) - min(float(t.min()) for t in times)
                check_span(span, s.rate_hz, s.max_samples_per_message)
        except PayloadError as exc:
            return [], [(named or "sensor-logger", exc.code, exc.detail)]
        device = named or batch.device_id
        if not self.registry.admit(device, wall):
            return [], [self._refused(device)]
        readings = DeviceReadings(device, batch.readings, wall, batch.message_id, batch.session_id)
        messages: list[Message] = []
        errors: list[Error] = []
        for ready in self._in_order(readings):
            got, problems = self._through_stream(ready)
            messages += got
            errors += problems
        return messages, errors

    def _in_order(self, readings: DeviceReadings) -> list[DeviceReadings]:
        """The messages ready to go, in messageId order (a new session starts over)."""
        order = self.orders.setdefault(readings.device, _Order())
        if readings.session != order.session:
            order.session, order.next_id, order.held = readings.session, None, {}
        mid = readings.message_id
        if mid is None or order.next_id is None or mid <= order.next_id:
            if mid is not None and (order.next_id is None or mid == order.next_id):
                order.next_id = mid + 1
            elif mid is not None:
                self.counters["late_messages"] += 1  # its readings may still be new enough
            ready = [readings]
        else:
            order.held[mid] = readings
            ready = []
        while order.held and (
            order.next_id in order.held or len(order.held) > self.settings.reorder_window
        ):
            if order.next_id not in order.held:  # give up on the missing one
                self.counters["lost_messages"] += 1
                assert order.next_id is not None
                order.next_id = min(order.held)
            ready.append(order.held.pop(order.next_id))
            order.next_id += 1
        return ready

    def _through_stream(self, readings: DeviceReadings) -> tuple[list[Message], list[Error]]:
        device = readings.device
        stream = self.streams.get(device)
        if stream is None:  # the device is admitted (decode)
            stream = self.streams[device] = DeviceStream(
                self.settings.rate_hz, max_gap_s=self.settings.max_gap_s
            )
        transform = self._transforms.get(device)
        parts = readings.readings
        if transform is not None:
            parts = [Readings(r.kind, r.t, _turn(r.xyz, transform)) for r in parts]
        late, restarts = stream.late, stream.restarts
        blocks, issues = stream.push(parts, readings.received)
        self.counters["late_readings"] += stream.late - late
        self.counters["stream_restarts"] += stream.restarts - restarts
        messages = [
            Message(device, b.samples, seq=b.seq, t=b.t, received=readings.received) for b in blocks
        ]
        return messages, [(device, i.code, i.detail) for i in issues]

    def _refused(self, device: str) -> Error:
        self.counters["rejected_too_many_devices"] += 1
        return device, "too_many_devices", self.registry.detail

    def drop(self, device: str) -> None:
        """Let go of the device's stream and message order (the registry evicted or
        erased it)."""
        self.streams.pop(device, None)
        self.orders.pop(device, None)


def _turn(values: np.ndarray, transform: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Apply an axis convention to (n, 3) or (n, 6) (each triple) values."""
    order, signs = transform
    columns = np.concatenate([order + 3 * k for k in range(values.shape[1] // 3)])
    turned: np.ndarray = values[:, columns] * np.tile(signs, values.shape[1] // 3)
    return turned
