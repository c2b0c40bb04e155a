"""Worker mode: one of several gateways, each serving the devices of its partitions.

The broker (NATS with its MQTT listener, ``harstream deploy nats``) gives every device
a fixed partition by a hash of its id and maps what the device publishes onto a
partitioned topic; a worker subscribes to the partitions it owns and nothing else::

    device publishes        {prefix}/{device}/imu     (also /calibrate, /label)
    a worker receives       {prefix}/imu/{p}/{device} with p = fnv1a32(device) % P
    a phone publishes       {sensor_logger}/{name}
    a worker receives       {prefix}/slog/{p}/{name}

:class:`Router` turns a partitioned topic back into the kind and device it carries
(for :class:`~harstream.gateway.routes.Topics`), after two checks: the partition is one
this worker owns (else the broker and the worker set disagree: counted as
``unowned``), and the device hashes to it under this worker's P (else the broker maps
with another P: ``partition_mismatch``). A worker
checks P at start with a probe (:data:`PROBE_PREFIX`), and announces its partitions
retained on ``{prefix}/workers/{worker}`` (its last will says when it is gone), so that
every worker sees partitions no one owns and partitions two own; who is alive and owns
what is :class:`harstream.gateway.book.WorkerBook`'s.

Pure: no I/O; the gateway (``harstream.gateway.service``) does the subscribing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from harstream.core.partitions import partition_of
from harstream.core.payload import valid_device_id

__all__ = [
    "KINDS",
    "PROBE_PREFIX",
    "SENSOR_LOGGER_KIND",
    "Router",
    "ScaleSettings",
    "takeover_share",
]

#: what a device publishes on {prefix}/{device}/{kind}, partitioned by the broker
KINDS = ("imu", "calibrate", "label")
SENSOR_LOGGER_KIND = "slog"
#: device ids of a worker's start-up probe (never a real device: dropped by every worker)
PROBE_PREFIX = "_harstream-probe-"


@dataclass(frozen=True, slots=True)
class ScaleSettings:
    partitions: int
    owned: frozenset[int]  # its own ("home") partitions
    worker: str  # this worker's name (its announcement topic)
    takeover: bool = False  # also serve dead workers' partitions (shared by the live ones)
    heartbeat_s: float = 5.0  # `online` said again this often (book.LEASE_HEARTBEATS)


def takeover_share(
    me: str, live: Mapping[str, frozenset[int]], dead: Mapping[str, frozenset[int]]
) -> frozenset[int]:
    """The partitions of dead workers that ``me`` serves besides its own: each such
    partition no live worker owns goes to the live workers in turn (sorted by name, by
    the partition's number), so every live worker computes the same split alone.

    >>> sorted(takeover_share("a", {"a": frozenset({0}), "b": frozenset({1})},
    ...                       {"c": frozenset({2, 3, 4})}))
    [2, 4]
    """
    names = sorted(live)
    if me not in names:
        return frozenset()
    owned = set().union(*live.values()) if live else set()
    orphans = sorted(set().union(*dead.values()) - owned) if dead else []
    return frozenset(p for p in orphans if names[p % len(names)] == me)


class Router:
    """Partitioned topics -> the gateway's own, for one worker."""

    def __init__(
        self, settings: ScaleSettings, prefix: str, sensor_logger_topic: str | None
    ) -> None:
        self.settings = settings
        self.owned = settings.owned  # its own and, with takeover, dead workers' (rebound whole)
        self.serving = settings.owned  # of those, the ones subscribed to (what stats say)
        self.prefix = prefix
        self.sensor_logger_topic = sensor_logger_topic
        self.counters = {"messages_unowned": 0, "messages_mismatched": 0, "probes": 0}

    def filters(
        self, calibrate: bool, label: bool, partitions: frozenset[int] | None = None
    ) -> list[str]:
        """The topic filters this worker subscribes to: per partition (default: its
        own), the kinds it serves."""
        kinds = ["imu"] + (["calibrate"] if calibrate else []) + (["label"] if label else [])
        if self.sensor_logger_topic is not None:
            kinds.append(SENSOR_LOGGER_KIND)
        chosen = self.settings.owned if partitions is None else partitions
        return [f"{self.prefix}/{kind}/{p}/+" for p in sorted(chosen) for kind in kinds]

    def is_partitioned(self, topic: str) -> bool:
        return topic.startswith(self.prefix + "/") and topic.count("/") == (
            self.prefix.count("/") + 3
        )

    def unmap(self, topic: str) -> tuple[str, str, str | None] | None:
        """A partitioned topic's ``(kind, device, None)``; ``(kind, device, reason)`` for
        a message to refuse; ``("", device, None)`` for one to drop silently (a probe);
        None for a topic that is not partitioned."""
        if not self.is_partitioned(topic):
            return None
        kind, part, device = topic[len(self.prefix) + 1 :].split("/")
        if kind not in (*KINDS, SENSOR_LOGGER_KIND) or not part.isdigit():
            return None
        if device.startswith(PROBE_PREFIX):
            self.counters["probes"] += 1
            return "", device, None
        return kind, device, self._misplaced(int(part), device)

    def _misplaced(self, p: int, device: str) -> str | None:
        """Why a device's message on partition ``p`` is not this worker's to serve
        (counted), or None."""
        partitions = self.settings.partitions
        if p not in self.owned:
            self.counters["messages_unowned"] += 1
            return f"partition {p} is not one of this worker's"
        if valid_device_id(device) and partition_of(device, partitions) != p:
            self.counters["messages_mismatched"] += 1
            return (
                f"the broker put {device} on partition {p}, but with scale.partitions "
                f"{partitions} it is {partition_of(device, partitions)}: the broker's P differs"
            )
        return None
