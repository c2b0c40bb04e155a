"""Routes: each incoming message parsed once, where it enters, into a typed value.

A :class:`Route` says what kind of message it is and which device it concerns; the
topic is never parsed again behind this edge. :class:`Topics` knows a gateway's topic
layout (its prefix, the Sensor Logger app's topic, the control and status topics and,
for a worker, the partitioned topics of :class:`~harstream.gateway.scale.Router`) and
turns each message the transport brings into a route (``Topics.route``); the HTTP
server builds routes directly (``Topics.sensor_logger``, ``Topics.calibrate``)::

    {prefix}/{device}/imu            imu            (device)
    {prefix}/{device}/calibrate      calibrate      (device)
    {prefix}/{device}/label          label          (device)
    {sensor_logger}[/{name}]         sensor-logger  (device: the name as a device id, or
                                                     "" when the payload's deviceId says)
    {prefix}/control                 control
    {discovery_prefix}/status        ha-status      (Home Assistant restarted: re-announce)
    {prefix}/workers/{rest}          worker         (worker mode; detail: rest)
    {prefix}/{kind}/{p}/{device}     imu, calibrate, label, sensor-logger (worker mode,
                                     mapped back by the Router), misplaced (a partition
                                     this worker does not serve; detail: why), or none
                                     (a start-up probe: dropped)
    anything else                    unknown        (counted, dropped)

The device id is not checked here: each kind's decoder refuses a bad one on the
device's error topic, as it does any bad payload. Pure: no I/O, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from harstream.core.payload import device_id_from
from harstream.gateway.scale import SENSOR_LOGGER_KIND, Router
from harstream.gateway.transport import Incoming

__all__ = [
    "CALIBRATE",
    "CONTROL",
    "HA_STATUS",
    "IMU",
    "LABEL",
    "MISPLACED",
    "PIPELINE_KINDS",
    "SENSOR_LOGGER",
    "UNKNOWN",
    "WORKER",
    "Kind",
    "Route",
    "Topics",
]

Kind = Literal[
    "imu",
    "sensor-logger",
    "calibrate",
    "label",
    "control",
    "ha-status",
    "worker",
    "misplaced",
    "unknown",
]
IMU: Final = "imu"
SENSOR_LOGGER: Final = "sensor-logger"
CALIBRATE: Final = "calibrate"
LABEL: Final = "label"
CONTROL: Final = "control"
HA_STATUS: Final = "ha-status"
WORKER: Final = "worker"
MISPLACED: Final = "misplaced"
UNKNOWN: Final = "unknown"

#: the kinds the pipeline takes (the event loop handles the others)
PIPELINE_KINDS = frozenset({IMU, SENSOR_LOGGER, CALIBRATE, LABEL, MISPLACED, UNKNOWN})
#: what a device publishes on {prefix}/{device}/{kind}
_DEVICE_KINDS: dict[str, Kind] = {"imu": IMU, "calibrate": CALIBRATE, "label": LABEL}


@dataclass(frozen=True, slots=True)
class Route:
    """One incoming message, parsed: its kind, its device (``""`` when the kind has
    none), its payload, the topic it came on (for logs, and for a worker to forward
    it) and, for some kinds, a detail (see the module docstring)."""

    kind: Kind
    device: str
    payload: bytes
    topic: str
    detail: str = ""
    retained: bool = False  # the message's (worker news: a retained one renews no lease)


class Topics:
    """A gateway's topic layout: incoming topics -> routes, and the filters to
    subscribe to. ``discovery_prefix``: Home Assistant's, when its status is followed;
    ``router``: a worker's (partitioned topics)."""

    def __init__(
        self,
        prefix: str,
        sensor_logger_topic: str | None,
        *,
        discovery_prefix: str | None = None,
        router: Router | None = None,
    ) -> None:
        self.prefix = prefix
        self.sensor_logger_topic = sensor_logger_topic
        self.router = router
        self.control = f"{prefix}/control"
        self.ha_status = f"{discovery_prefix}/status" if discovery_prefix is not None else None
        self.workers = f"{prefix}/workers" if router is not None else None
        self._device_start = len(prefix) + 1
        self._prefix_slash = prefix + "/"
        self._workers_slash = f"{self.workers}/" if self.workers is not None else None
        self._sl_slash = f"{sensor_logger_topic}/" if sensor_logger_topic else None

    def route(self, message: Incoming) -> Route | None:  # noqa: PLR0911 (a return per kind)
        """The message's route; None for one to drop without a word (a probe)."""
        topic, payload = message.topic, message.payload
        if topic.startswith(self._prefix_slash):
            device, slash, kind = topic[self._device_start :].rpartition("/")
            found = _DEVICE_KINDS.get(kind)
            if found is not None and slash and self.router is None:  # the hot path
                return Route(found, device, payload, topic)
            if topic == self.control:
                return Route(CONTROL, "", payload, topic)
            if self._workers_slash is not None and topic.startswith(self._workers_slash):
                rest = topic[len(self._workers_slash) :]
                return Route(WORKER, "", payload, topic, rest, message.retained)
            if self.router is not None:
                return self._partitioned(message)
        if topic == self.ha_status:
            return Route(HA_STATUS, "", payload, topic)
        if self._sl_slash is not None and (
            topic == self.sensor_logger_topic or topic.startswith(self._sl_slash)
        ):
            name = topic[len(self._sl_slash) :]
            return Route(SENSOR_LOGGER, device_id_from(name) if name else "", payload, topic)
        return Route(UNKNOWN, "", payload, topic)

    def _partitioned(self, message: Incoming) -> Route | None:
        """Worker mode: a partitioned topic, mapped back by the router (after its
        checks), or a device's own topic (early, before the broker maps it)."""
        assert self.router is not None
        topic, payload = message.topic, message.payload
        mapped = self.router.unmap(topic)
        if mapped is None:  # not partitioned: a device topic as any gateway gets it
            device, slash, kind = topic[self._device_start :].rpartition("/")
            found = _DEVICE_KINDS.get(kind)
            if found is not None and slash:
                return Route(found, device, payload, topic)
            return Route(UNKNOWN, "", payload, topic)
        kind, device, refused = mapped
        if refused is not None:
            return Route(MISPLACED, device, payload, topic, refused)
        if not kind:
            return None  # a probe
        if kind == SENSOR_LOGGER_KIND:
            # the phone's own topic: what a worker forwards, and what a fault names
            own = f"{self.sensor_logger_topic}/{device}"
            return Route(SENSOR_LOGGER, device_id_from(device), payload, own)
        return Route(_DEVICE_KINDS[kind], device, payload, f"{self.prefix}/{device}/{kind}")

    def filters(self, calibrate: bool, label: bool, qos_in: int) -> list[tuple[str, int]]:
        """The device topics to subscribe to outside worker mode, with their QoS: imu
        and the Sensor Logger app's topic and one level more (a topic per phone) at
        ``qos_in``; calibrate when the model takes calibrations and label when the
        gateway records, at 1."""
        found = [(f"{self.prefix}/+/imu", qos_in)]
        if self.sensor_logger_topic:  # the app's topic, and one level more
            found += [(self.sensor_logger_topic, qos_in), (f"{self.sensor_logger_topic}/+", qos_in)]
        if calibrate:
            found.append((f"{self.prefix}/+/calibrate", 1))
        if label:
            found.append((f"{self.prefix}/+/label", 1))
        return found

    # --- routes built directly (HTTP) ------------------------------------------------

    def sensor_logger(self, name: str, payload: bytes) -> Route:
        """A Sensor Logger message for the phone ``name`` (as a device id)."""
        device = device_id_from(name)
        return Route(SENSOR_LOGGER, device, payload, f"{self.sensor_logger_topic}/{device}")

    def calibrate(self, device: str, payload: bytes) -> Route:
        """A calibration request of ``device``."""
        return Route(CALIBRATE, device, payload, f"{self.prefix}/{device}/calibrate")
