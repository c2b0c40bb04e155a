"""Worker mode: one of several gateways, each serving the devices of its partitions.

The broker (NATS with its MQTT listener, ``harstream deploy nats``) gives every device
a fixed partition by a hash of its id and maps what the device publishes onto a
partitioned topic; a worker subscribes to the partitions it owns and nothing else::

    device publishes        {prefix}/{device}/imu     (also /calibrate, /label)
    a worker receives       {prefix}/imu/{p}/{device} with p = fnv1a32(device) % P
    a phone publishes       {sensor_logger}/{name}
    a worker receives       {prefix}/slog/{p}/{name}

:class:`Router` turns a partitioned topic back into the one the rest of the gateway
knows, after two checks: the partition is one this worker owns (else the broker and
the worker set disagree: counted as ``unowned``), and the device hashes to it under
this worker's P (else the broker maps with another P: ``partition_mismatch``). A worker
checks P at start with a probe (:data:`PROBE_PREFIX`), and announces its partitions
retained on ``{prefix}/workers/{worker}`` (its last will says when it is gone), so that
every worker sees partitions no one owns and partitions two own.

Pure: no I/O; the gateway (``harstream.gateway.service``) does the subscribing.
"""

from __future__ import annotations

from dataclasses import dataclass

from harstream.core.partitions import partition_of
from harstream.core.payload import valid_device_id

__all__ = ["KINDS", "PROBE_PREFIX", "Router", "ScaleSettings"]

#: what a device publishes on {prefix}/{device}/{kind}, partitioned by the broker
KINDS = ("imu", "calibrate", "label")
SENSOR_LOGGER_KIND = "slog"
#: device ids of a worker's start-up probe (never a real device: dropped by every worker)
PROBE_PREFIX = "_harstream-probe-"


@dataclass(frozen=True, slots=True)
class ScaleSettings:
    partitions: int
    owned: frozenset[int]
    worker: str  # this worker's name (its announcement topic)


class Router:
    """Partitioned topics -> the gateway's own, for one worker."""

    def __init__(
        self, settings: ScaleSettings, prefix: str, sensor_logger_topic: str | None
    ) -> None:
        self.settings = settings
        self.prefix = prefix
        self.sensor_logger_topic = sensor_logger_topic
        self.counters = {"messages_unowned": 0, "messages_mismatched": 0, "probes": 0}

    def filters(self, calibrate: bool, label: bool) -> list[str]:
        """The topic filters this worker subscribes to: per owned partition, the kinds
        it serves."""
        kinds = ["imu"] + (["calibrate"] if calibrate else []) + (["label"] if label else [])
        if self.sensor_logger_topic is not None:
            kinds.append(SENSOR_LOGGER_KIND)
        return [
            f"{self.prefix}/{kind}/{p}/+" for p in sorted(self.settings.owned) for kind in kinds
        ]

    def is_partitioned(self, topic: str) -> bool:
        return topic.startswith(self.prefix + "/") and topic.count("/") == (
            self.prefix.count("/") + 3
        )

    def unmap(self, topic: str) -> tuple[str | None, str | None]:
        """``(the gateway's topic, None)``, ``(None, reason)`` for a message to refuse,
        or ``(None, None)`` for one to drop silently (a probe). Other topics pass."""
        if not self.is_partitioned(topic):
            return topic, None
        kind, part, device = topic[len(self.prefix) + 1 :].split("/")
        if kind not in (*KINDS, SENSOR_LOGGER_KIND) or not part.isdigit():
            return topic, None
        if device.startswith(PROBE_PREFIX):
            self.counters["probes"] += 1
            return None, None
        p, partitions = int(part), self.settings.partitions
        if p not in self.settings.owned:
            self.counters["messages_unowned"] += 1
            return None, f"partition {p} is not one of this worker's"
        if valid_device_id(device) and partition_of(device, partitions) != p:
            self.counters["messages_mismatched"] += 1
            return None, (
                f"the broker put {device} on partition {p}, but with scale.partitions "
                f"{partitions} it is {partition_of(device, partitions)}: the broker's P differs"
            )
        if kind == SENSOR_LOGGER_KIND:
            return f"{self.sensor_logger_topic}/{device}", None
        return f"{self.prefix}/{device}/{kind}", None
