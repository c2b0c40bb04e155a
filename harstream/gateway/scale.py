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
every worker sees partitions no one owns and partitions two own. It says ``online``
again every ``heartbeat_s``: a worker not heard for :data:`LEASE_HEARTBEATS` heartbeats
is taken as gone too, for a will can be lost (docs/scaling.md).

:class:`WorkerBook` keeps what the workers announced and which are alive. Everything on
``{prefix}/workers/#`` comes from whoever can publish there, so nothing of it is trusted:
an announcement that is not a valid one (:func:`parse_announcement`) is refused with a
reason and counted, never raised; and a status ``offline`` counts only when it names the
instance (random, new at each start) the worker last announced: its own last will, not
an earlier start's late will nor another client that did not read the announcement. The
broker's ACLs (``harstream deploy mosquitto|nats``) let only worker users write there.

Pure: no I/O; the gateway (``harstream.gateway.service``) does the subscribing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from harstream.core.partitions import parse_owned, partition_of
from harstream.core.payload import valid_device_id

__all__ = [
    "KINDS",
    "LEASE_HEARTBEATS",
    "PROBE_PREFIX",
    "SENSOR_LOGGER_KIND",
    "Announcement",
    "Router",
    "ScaleSettings",
    "WorkerBook",
    "parse_announcement",
    "parse_status",
    "takeover_share",
]

#: what a device publishes on {prefix}/{device}/{kind}, partitioned by the broker
KINDS = ("imu", "calibrate", "label")
SENSOR_LOGGER_KIND = "slog"
#: device ids of a worker's start-up probe (never a real device: dropped by every worker)
PROBE_PREFIX = "_harstream-probe-"
#: a worker's name (scale.worker) and instance: one topic level, nothing to escape
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_ANNOUNCEMENT_BYTES = 4096  # a real one is ~100 bytes; bounds the parser's work too
MAX_WORKERS = 4096  # names followed at most (no more workers than partitions)
#: a worker whose announced instance was not heard for this many heartbeats is gone
LEASE_HEARTBEATS = 3


@dataclass(frozen=True, slots=True)
class ScaleSettings:
    partitions: int
    owned: frozenset[int]  # its own ("home") partitions
    worker: str  # this worker's name (its announcement topic)
    takeover: bool = False  # also serve dead workers' partitions (shared by the live ones)
    heartbeat_s: float = 5.0  # `online` said again this often (a lease: LEASE_HEARTBEATS)


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


@dataclass(frozen=True, slots=True)
class Announcement:
    """What a worker says about itself, retained on ``{prefix}/workers/{worker}``."""

    worker: str
    partitions: int
    owned: frozenset[int]
    instance: str  # random, new at each start; "" from a worker that predates it


def parse_announcement(worker: str, payload: bytes, partitions: int) -> Announcement:
    """A worker's announcement, checked; ValueError says what is wrong with it.

    >>> parse_announcement("w1", b'{"worker": "w1", "partitions": 8, "owned": "0-3",'
    ...                    b' "instance": "9f2c"}', 8).owned == frozenset(range(4))
    True
    >>> parse_announcement("w1", b'{"worker": "w1", "partitions": 8, "owned": 3}', 8)
    Traceback (most recent call last):
    ValueError: owned: 3 is not a string (all, a, a-b or a-b/k items)
    """
    if not _NAME.match(worker):
        raise ValueError(f"worker name {worker[:80]!r}: 1-64 of A-Z a-z 0-9 _ -")
    if len(payload) > MAX_ANNOUNCEMENT_BYTES:
        raise ValueError(f"{len(payload)} bytes, more than {MAX_ANNOUNCEMENT_BYTES}")
    try:
        news = json.loads(payload)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise ValueError(f"not JSON: {str(exc)[:120]}") from None
    if not isinstance(news, dict):
        raise ValueError(f"a JSON {type(news).__name__}, not an object")
    if news.get("worker") != worker:
        raise ValueError(f"worker {str(news.get('worker'))[:80]!r} on the topic of {worker!r}")
    p = news.get("partitions")
    if type(p) is not int or p != partitions:
        raise ValueError(f"partitions {str(p)[:80]}, not this worker's {partitions}")
    owned = news.get("owned")
    if not isinstance(owned, str):
        raise ValueError(f"owned: {str(owned)[:80]} is not a string (all, a, a-b or a-b/k items)")
    instance = news.get("instance", "")
    if not isinstance(instance, str) or (instance and not _NAME.match(instance)):
        raise ValueError(f"instance {str(instance)[:80]!r}: 1-64 of A-Z a-z 0-9 _ -")
    return Announcement(worker, p, parse_owned(owned[:1000], partitions), instance)


def parse_status(payload: bytes) -> tuple[str, str]:
    """``(online|offline, instance)`` of a worker's status ``online INSTANCE`` /
    ``offline INSTANCE`` (``online`` / ``offline`` alone: instance ""); ValueError else.

    >>> parse_status(b"offline 9f2c")
    ('offline', '9f2c')
    """
    words = payload[:200].decode("ascii", errors="replace").split(" ")
    if len(payload) > 200 or words[0] not in ("online", "offline") or len(words) > 2:
        raise ValueError(f"status {payload[:80]!r}: `online|offline INSTANCE`")
    instance = words[1] if len(words) == 2 else ""
    if instance and not _NAME.match(instance):
        raise ValueError(f"status instance {instance[:80]!r}: 1-64 of A-Z a-z 0-9 _ -")
    return words[0], instance


class WorkerBook:
    """The workers' announcements and statuses as one worker follows them on
    ``{prefix}/workers/#``: who is alive and owns what. ``news`` takes each message and
    never raises for what another client published; it returns what this worker must
    do about its own topics (``"announce"``, ``"online"``) when someone else wrote them.

    A worker is gone when its announced instance says ``offline`` (its will or its
    goodbye) or, with ``lease_s``, when nothing of that instance (its announcement, an
    ``online``) came for ``lease_s``: times are the caller's monotonic seconds (``now``).

    >>> book = WorkerBook("a", "i1", 4, lease_s=15.0)
    >>> book.news("b", b'{"worker": "b", "partitions": 4, "owned": "2-3", "instance": "i2"}')
    >>> book.news("b/status", b"offline i0")  # an earlier start's will: b is still alive
    >>> sorted(book.live()), book.counters["statuses_ignored"]
    (['b'], 1)
    >>> book.news("b/status", b"online i2", now=10.0)
    >>> sorted(book.live(now=25.0)), sorted(book.live(now=25.1))  # silent past its lease
    (['b'], [])
    >>> book.news("b/status", b"offline i2", now=26.0)  # b's own will
    >>> sorted(book.live(now=26.0)), sorted(book.dead(now=26.0)["b"])
    ([], [2, 3])
    """

    def __init__(
        self, me: str, instance: str, partitions: int, lease_s: float | None = None
    ) -> None:
        self.me, self.instance, self.partitions = me, instance, partitions
        self.lease_s = lease_s
        self.announced: dict[str, Announcement] = {}
        self.status: dict[str, tuple[str, str]] = {}
        self.heard: dict[str, float] = {}  # when each worker's instance last said it lives
        self.counters = {
            "announcements_refused": 0,  # not an announcement: logged, ignored
            "statuses_refused": 0,  # not a status: logged, ignored
            "statuses_ignored": 0,  # `offline` not of the announced instance
            "own_restored": 0,  # this worker's topics written by another: re-published
        }
        self.refusals: list[str] = []  # the reasons, for the caller to log (then cleared)

    def news(self, rest: str, payload: bytes, now: float = 0.0) -> str | None:
        """One message on ``{prefix}/workers/{rest}``, come at ``now``."""
        name, _, tail = rest.partition("/")
        if tail not in ("", "status") or not _NAME.match(name):
            self._refuse("statuses_refused", f"{rest[:80]!r} is no worker topic")
            return None
        if tail == "status":
            return self._status_news(name, payload, now)
        return self._announcement_news(name, payload, now)

    def _status_news(self, name: str, payload: bytes, now: float) -> str | None:
        """A worker's ``status``: ``online`` when this worker's own must be restored."""
        try:
            state, instance = parse_status(payload)
        except ValueError as exc:
            self._refuse("statuses_refused", f"worker {name}: {exc}")
            return None
        if name == self.me:  # another client, or a late will, says this one is gone
            if (state, instance) == ("offline", self.instance):
                self._refuse("own_restored", "own status offline while alive: re-published")
                return "online"
            return None  # an earlier start's: no other worker counts it
        if name not in self.status and len(self.status) >= MAX_WORKERS:
            self._refuse("statuses_refused", f"worker {name}: more than {MAX_WORKERS}")
            return None
        self.status[name] = (state, instance)
        known = self.announced.get(name)
        if state == "online" and (known is None or known.instance == instance):
            self.heard[name] = now
        if state == "offline" and known is not None and known.instance != instance:
            self._refuse(
                "statuses_ignored",
                f"worker {name} offline for instance {instance or '(none)'}, but it "
                f"announced {known.instance or '(none)'}: an earlier start or another client",
            )
        return None

    def _announcement_news(self, name: str, payload: bytes, now: float) -> str | None:
        """A worker's announcement (empty: retired): ``announce`` when this worker's
        own must be restored."""
        if name == self.me:
            if payload and self._own(payload):
                return None
            self._refuse("own_restored", "own announcement overwritten: re-published")
            return "announce"
        if not payload:  # the retained announcement cleared: that worker is retired
            self.announced.pop(name, None)
            return None
        if name not in self.announced and len(self.announced) >= MAX_WORKERS:
            self._refuse("announcements_refused", f"worker {name}: more than {MAX_WORKERS}")
            return None
        try:
            self.announced[name] = parse_announcement(name, payload, self.partitions)
        except ValueError as exc:
            self._refuse("announcements_refused", f"worker {name}: {exc}")
            return None
        self.heard[name] = now
        return None

    def _own(self, payload: bytes) -> bool:
        try:
            return parse_announcement(self.me, payload, self.partitions).instance == self.instance
        except ValueError:
            return False

    def _refuse(self, counter: str, reason: str) -> None:
        self.counters[counter] += 1
        self.refusals.append(reason)

    def _alive(self, name: str, now: float) -> bool:
        """Dead once the announced instance says ``offline`` (its will or goodbye) or
        is silent past the lease; one that announced itself and is still subscribing
        has no status yet: alive."""
        if self.said_offline(name):
            return False
        return self.lease_s is None or now - self.heard[name] <= self.lease_s

    def said_offline(self, name: str) -> bool:
        """Whether the instance ``name`` announced said ``offline``."""
        return self.status.get(name) == ("offline", self.announced[name].instance)

    def silent(self, name: str, now: float) -> float:
        """Seconds since ``name``'s announced instance last said it lives."""
        return now - self.heard[name]

    def renew(self, names: Iterable[str], now: float) -> None:
        """A fresh lease for ``names``: what this worker heard stopped while it was away
        (disconnected), not what they said."""
        for name in names:
            if name in self.heard:
                self.heard[name] = max(self.heard[name], now)

    def live(self, now: float = 0.0) -> dict[str, frozenset[int]]:
        """The other live workers' own partitions."""
        return {w: a.owned for w, a in self.announced.items() if self._alive(w, now)}

    def dead(self, now: float = 0.0) -> dict[str, frozenset[int]]:
        return {w: a.owned for w, a in self.announced.items() if not self._alive(w, now)}
