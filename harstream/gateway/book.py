"""Who is alive among the workers, and what each owns: what one worker makes of the
others' messages on ``{prefix}/workers/#`` (announcements and statuses).

Everything there comes from whoever can publish there, so nothing of it is trusted: an
announcement that is not a valid one (:func:`parse_announcement`) is refused with a
reason and counted, never raised; and a status ``offline`` counts only when it names the
instance (random, new at each start) the worker last announced: its own last will, not
an earlier start's late will nor another client that did not read the announcement. The
broker's ACLs (``harstream deploy mosquitto|nats``) let only worker users write there.

A will can be lost (docs/scaling.md), so a worker also says ``online`` again every
``heartbeat_s`` (which its announcement gives), and one whose instance was not heard
for :data:`LEASE_HEARTBEATS` of its own heartbeats is gone too (its lease). Only what
comes live renews a lease: a retained message that a (re)subscription brings back says
nothing of the present, unless it is the first news of that instance.

Pure: no I/O, no clock (``now`` is the caller's monotonic seconds).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass

from harstream.core.partitions import parse_owned

__all__ = [
    "LEASE_HEARTBEATS",
    "Announcement",
    "WorkerBook",
    "parse_announcement",
    "parse_status",
]

#: a worker's name (scale.worker) and instance: one topic level, nothing to escape
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_ANNOUNCEMENT_BYTES = 4096  # a real one is ~100 bytes; bounds the parser's work too
MAX_WORKERS = 4096  # names followed at most (no more workers than partitions)
MAX_HEARTBEAT_S = 3600.0
#: a worker whose announced instance was not heard for this many of its heartbeats is gone
LEASE_HEARTBEATS = 3


@dataclass(frozen=True, slots=True)
class Announcement:
    """What a worker says about itself, retained on ``{prefix}/workers/{worker}``."""

    worker: str
    partitions: int
    owned: frozenset[int]
    instance: str  # random, new at each start; "" from a worker that predates it
    #: how often it says `online` again; None from a worker that predates heartbeats
    #: (its will alone says when it is gone)
    heartbeat_s: float | None = None


def parse_announcement(worker: str, payload: bytes, partitions: int) -> Announcement:
    """A worker's announcement, checked; ValueError says what is wrong with it.

    >>> parse_announcement("w1", b'{"worker": "w1", "partitions": 8, "owned": "0-3",'
    ...                    b' "instance": "9f2c", "heartbeat_s": 5}', 8).heartbeat_s
    5.0
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
    beat = news.get("heartbeat_s")
    if beat is not None and (type(beat) not in (int, float) or not 0 < beat <= MAX_HEARTBEAT_S):
        raise ValueError(f"heartbeat_s {str(beat)[:80]}: seconds in (0, {MAX_HEARTBEAT_S}]")
    owned_set = parse_owned(owned[:1000], partitions)
    return Announcement(worker, p, owned_set, instance, None if beat is None else float(beat))


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
    goodbye) or was not heard for ``LEASE_HEARTBEATS`` of the heartbeats it announced,
    while this worker's own ``online`` came back after that (``echo``).

    >>> book = WorkerBook("a", "i1", 4)
    >>> b = b'{"worker": "b", "partitions": 4, "owned": "2-3", "instance": "i2", "heartbeat_s": 5}'
    >>> book.news("b", b, now=0.0, retained=True)  # at subscription: first news of i2
    >>> book.news("b/status", b"offline i0")  # an earlier start's will: b is still alive
    >>> sorted(book.live(now=0.0)), book.counters["statuses_ignored"]
    (['b'], 1)
    >>> book.news("b/status", b"online i2", now=10.0)  # a heartbeat
    >>> book.news("b/status", b"online i2", now=20.0, retained=True)  # a resubscription's
    >>> sorted(book.live(now=25.1))  # silent past its lease, but is it b or a?
    ['b']
    >>> book.news("a/status", b"online i1", now=25.1)  # a's own, back: a is connected
    >>> sorted(book.live(now=25.0)), sorted(book.live(now=25.1))
    (['b'], [])
    >>> book.news("b/status", b"offline i2", now=26.0)  # b's own will
    >>> sorted(book.dead(now=0.0)["b"])
    [2, 3]
    """

    def __init__(self, me: str, instance: str, partitions: int) -> None:
        self.me, self.instance, self.partitions = me, instance, partitions
        self.announced: dict[str, Announcement] = {}
        self.status: dict[str, tuple[str, str]] = {}
        self.heard: dict[str, float] = {}  # when each announced instance last said it lives
        self.echo: float | None = None  # when this worker last heard its own `online`
        self.counters = {
            "announcements_refused": 0,  # not an announcement: logged, ignored
            "statuses_refused": 0,  # not a status: logged, ignored
            "statuses_ignored": 0,  # `offline` not of the announced instance
            "own_restored": 0,  # this worker's topics written by another: re-published
        }
        self.refusals: list[str] = []  # the reasons, for the caller to log (then cleared)

    def news(
        self, rest: str, payload: bytes, now: float = 0.0, retained: bool = False
    ) -> str | None:
        """One message on ``{prefix}/workers/{rest}``, come at ``now``; ``retained``:
        brought back by a subscription (the MQTT retain flag), not sent just now."""
        name, _, tail = rest.partition("/")
        if tail not in ("", "status") or not _NAME.match(name):
            self._refuse("statuses_refused", f"{rest[:80]!r} is no worker topic")
            return None
        if tail == "status":
            return self._status_news(name, payload, now, retained)
        return self._announcement_news(name, payload, now, retained)

    def _status_news(self, name: str, payload: bytes, now: float, retained: bool) -> str | None:
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
            if (state, instance) == ("online", self.instance):
                self.echo = now  # what it says comes back: it is connected
            return None  # an earlier start's: no other worker counts it
        if name not in self.status and len(self.status) >= MAX_WORKERS:
            self._refuse("statuses_refused", f"worker {name}: more than {MAX_WORKERS}")
            return None
        self.status[name] = (state, instance)
        known = self.announced.get(name)
        if state == "online" and known is not None and known.instance == instance and not retained:
            self.heard[name] = now
        if state == "offline" and known is not None and known.instance != instance:
            self._refuse(
                "statuses_ignored",
                f"worker {name} offline for instance {instance or '(none)'}, but it "
                f"announced {known.instance or '(none)'}: an earlier start or another client",
            )
        return None

    def _announcement_news(
        self, name: str, payload: bytes, now: float, retained: bool
    ) -> str | None:
        """A worker's announcement (empty: retired): ``announce`` when this worker's
        own must be restored."""
        if name == self.me:
            if payload and self._own(payload):
                return None
            self._refuse("own_restored", "own announcement overwritten: re-published")
            return "announce"
        if not payload:  # the retained announcement cleared: that worker is retired
            self.announced.pop(name, None)
            self.heard.pop(name, None)
            return None
        if name not in self.announced and len(self.announced) >= MAX_WORKERS:
            self._refuse("announcements_refused", f"worker {name}: more than {MAX_WORKERS}")
            return None
        try:
            news = parse_announcement(name, payload, self.partitions)
        except ValueError as exc:
            self._refuse("announcements_refused", f"worker {name}: {exc}")
            return None
        known = self.announced.get(name)
        self.announced[name] = news
        if not retained or known is None or known.instance != news.instance:
            self.heard[name] = now  # a new instance's first news, or said just now
        return None

    def _own(self, payload: bytes) -> bool:
        """Whether ``payload`` is this worker's own announcement: its name and instance
        (no further checks, so that nothing of its own can be refused and re-sent in a
        loop)."""
        try:
            news = json.loads(payload[:MAX_ANNOUNCEMENT_BYTES])
        except (ValueError, RecursionError):
            return False
        return isinstance(news, dict) and (news.get("worker"), news.get("instance")) == (
            self.me,
            self.instance,
        )

    def _refuse(self, counter: str, reason: str) -> None:
        self.counters[counter] += 1
        self.refusals.append(reason)

    def said_offline(self, name: str) -> bool:
        """Whether the instance ``name`` announced said ``offline``."""
        return self.status.get(name) == ("offline", self.announced[name].instance)

    def lease_s(self, name: str) -> float | None:
        """How long ``name`` may be silent (None: no lease, its will alone)."""
        beat = self.announced[name].heartbeat_s
        return None if beat is None else LEASE_HEARTBEATS * beat

    def silent(self, name: str, now: float) -> float:
        """Seconds since ``name``'s announced instance last said it lives."""
        return now - self.heard[name]

    def renew(self, names: Iterable[str], now: float) -> None:
        """A fresh lease for ``names``: what this worker heard stopped while it was away
        (disconnected, frozen), not what they said."""
        for name in names:
            if name in self.heard:
                self.heard[name] = max(self.heard[name], now)

    def _alive(self, name: str, now: float) -> bool:
        """Dead once the announced instance says ``offline`` (its will or goodbye) or
        is silent past its lease while this worker heard its own ``online`` after that
        lease ran out (so the silence is the other's, not this worker's being cut off);
        one that announced itself and is still subscribing has no status yet: alive."""
        if self.said_offline(name):
            return False
        lease = self.lease_s(name)
        if lease is None:
            return True
        deadline = self.heard[name] + lease
        return now <= deadline or self.echo is None or self.echo < deadline

    def live(self, now: float) -> dict[str, frozenset[int]]:
        """The other live workers' own partitions, leases judged at ``now``."""
        return {w: a.owned for w, a in self.announced.items() if self._alive(w, now)}

    def dead(self, now: float) -> dict[str, frozenset[int]]:
        return {w: a.owned for w, a in self.announced.items() if not self._alive(w, now)}
