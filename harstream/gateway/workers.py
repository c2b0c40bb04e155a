"""Worker coordination: one gateway among several, each serving some partitions.

What a worker does besides serving its devices (the pure parts live in
:mod:`harstream.gateway.scale` and :mod:`harstream.gateway.book`):

- at each connection: subscribe to its partitions' topics, check the broker's P with a
  probe (a mismatch or no partitioning fails the start), announce its partitions
  retained on ``{prefix}/workers/{worker}`` and follow the others' announcements;
- on each announcement or status of another worker (:class:`~harstream.gateway.book.
  WorkerBook`, which never raises for what another client published): log partitions
  no one owns or two own and, with ``scale.takeover``, serve its share of dead workers'
  partitions (subscribe to what it gains before taking its messages, stop taking what
  it hands back before unsubscribing);
- every ``heartbeat_s`` (:meth:`Workers.tick`): say ``online`` again, and take a
  worker not heard for ``LEASE_HEARTBEATS`` of its heartbeats as dead, as its will
  would have said (a will can be lost: docs/scaling.md). Leases are judged on these
  ticks only, and only when this worker's own ``online`` came back within its lease
  and the tick is not late: a worker cut off, frozen or stalled heard nothing, and
  gives the live ones a fresh lease instead;
- what comes over HTTP goes into the broker, which routes it to the device's owner.

It does not know the pipeline: messages it gets early (during the probe) go back
through ``dispatch``, and what it publishes through ``send``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Callable
from typing import Any

from harstream.core.partitions import coverage, format_owned, partition_of
from harstream.core.payload import encode
from harstream.errors import ConfigError
from harstream.gateway.book import LEASE_HEARTBEATS, WorkerBook
from harstream.gateway.routes import Route
from harstream.gateway.scale import PROBE_PREFIX, Router, ScaleSettings, takeover_share
from harstream.gateway.transport import Incoming, Session, TransportError

__all__ = ["COVERAGE_GRACE_S", "PROBES", "Workers"]

log = logging.getLogger("harstream.gateway")

PROBES = 8  # start-up probe devices of a worker
COVERAGE_GRACE_S = 5.0  # a new worker waits this long for the others' announcements

Send = Callable[[str, bytes, int, bool], None]


class Workers:
    """This worker's side of the worker set: its router, the book of the others, its
    announcement and status (``online|offline INSTANCE``)."""

    def __init__(
        self,
        scale: ScaleSettings,
        prefix: str,
        sensor_logger_topic: str | None,
        *,
        qos_in: int,
        probe_s: float,
        send: Send,
        monotonic: Callable[[], float],
    ) -> None:
        self.scale = scale
        self.prefix = prefix
        self.qos_in = qos_in
        self.probe_s = probe_s
        self.send = send
        self.monotonic = monotonic
        self.router = Router(scale, prefix, sensor_logger_topic)
        self.topic = f"{prefix}/workers"  # announcements and statuses: {topic}/#
        self.status_topic = f"{self.topic}/{scale.worker}/status"
        # a worker's status and announcement name its instance, new at each start: its
        # will counts for it, no earlier start's will, no other client's `offline`
        self.instance = secrets.token_hex(8)
        self.book = WorkerBook(scale.worker, self.instance, scale.partitions)
        self.live: dict[str, frozenset[int]] = {}  # live workers' partitions
        self.dead: dict[str, frozenset[int]] = {}  # and dead ones' (while announced)
        self.judged = monotonic()  # leases are judged as of this (the last good tick)
        self.ticked = monotonic()
        self.counters = {"workers_silent": 0, "ticks_unjudged": 0, "tick_faults": 0}
        self.session: Session | None = None  # the latest (rebalancing subscribes on it)
        self.calibrate = self.label = False  # the kinds served, set at each start
        self._rebalancing = asyncio.Lock()
        self._coverage: dict[str, str] | None = None  # what was last logged
        self._coverage_from = 0.0  # monotonic: when a worker first judges the coverage

    def status(self, state: bytes) -> bytes:
        """``online|offline INSTANCE`` (see :class:`~harstream.gateway.book.WorkerBook`)."""
        return state + b" " + self.instance.encode()

    def announcement(self) -> dict[str, Any]:
        return {
            "worker": self.scale.worker,
            "partitions": self.scale.partitions,
            "owned": format_owned(self.scale.owned),
            "instance": self.instance,
            "heartbeat_s": self.scale.heartbeat_s,
        }

    async def start(
        self,
        session: Session,
        calibrate: bool,
        label: bool,
        dispatch: Callable[[list[Incoming]], None],
    ) -> None:
        """Subscribe to the owned partitions, check the broker's P with a probe,
        announce the partitions (retained) and follow the other workers'."""
        scale, router = self.scale, self.router
        self.session, self.calibrate, self.label = session, calibrate, label
        # a new session holds its own partitions only (with takeover it starts clean):
        # what was taken over is subscribed again by the rebalance below
        router.owned = router.serving = scale.owned
        # the live ones were not heard while this worker was away: a fresh lease each
        now = self.monotonic()
        self.book.renew(self.live, now)
        self.book.echo = self.judged = now
        for topic in router.filters(calibrate, label):
            await session.subscribe(topic, qos=self.qos_in)
        early = await self._probe(session)
        if early:
            dispatch(early)
        announcement = self.announcement()
        await session.publish(
            f"{self.topic}/{scale.worker}", encode(announcement), qos=1, retain=True
        )
        self._coverage_from = self.monotonic() + COVERAGE_GRACE_S
        asyncio.get_running_loop().call_later(COVERAGE_GRACE_S + 0.1, self.check_coverage)
        # QoS 0: on nats-server 2.15.1 a will sent to a QoS 1 subscription was lost in 20%
        # of kills (12 of 60), at QoS 0 in none of 90 (docs/scaling.md); what the topics
        # hold is retained, so a resubscription brings it all back anyway
        await session.subscribe(f"{self.topic}/#", qos=0)
        self._follow(force=True)
        log.info(
            "worker %s: partitions %s of %d", scale.worker, announcement["owned"], scale.partitions
        )

    async def _probe(self, session: Session) -> list[Incoming]:
        """Publish messages of probe devices and see where the broker puts them: no
        mapping, or partitions that say the broker's P differs, fail the start. Eight
        probes: a P and another can agree on one device (8 and 16 do on half of them),
        not on eight but by a chance of 1 in 256; a device message the broker put on
        a partition this P would not is also counted and logged while serving. Returns
        the devices' messages that came meanwhile."""
        prefix = self.prefix
        probes = {f"{PROBE_PREFIX}{self.scale.worker[:40]}-{k}": -1 for k in range(PROBES)}
        for probe in probes:
            await session.subscribe(f"{prefix}/imu/+/{probe}", qos=1)
        for probe in probes:
            await session.publish(f"{prefix}/{probe}/imu", b"", qos=1, retain=False)
        early = await self._await_probes(session, probes)
        log.debug("probes on partitions %s", probes)
        self._check_probes(probes)
        return early

    async def _await_probes(self, session: Session, probes: dict[str, int]) -> list[Incoming]:
        """Note each probe's partition in ``probes`` as it comes, for ``probe_s`` at most;
        return the devices' messages that came meanwhile."""
        early: list[Incoming] = []
        imu = self.prefix + "/imu/"
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.probe_s):
                async for batch in session.batches():
                    for m in batch:
                        parts = m.topic.split("/")
                        if m.topic.startswith(imu) and parts[-1] in probes:
                            probes[parts[-1]] = int(parts[-2])
                        elif not parts[-1].startswith(PROBE_PREFIX):
                            early.append(m)  # devices' messages: not lost, served once probed
                    if min(probes.values()) >= 0:
                        break
        return early

    def _check_probes(self, probes: dict[str, int]) -> None:
        """ConfigError when no probe came, or one came on a partition this P would not
        put it on."""
        prefix, scale = self.prefix, self.scale
        if max(probes.values()) < 0:
            raise ConfigError(
                f"scale.partitions: the broker does not partition {prefix}/DEVICE/imu "
                f"(nothing on {prefix}/imu/P/DEVICE within {self.probe_s:g} s): "
                "serve workers on a NATS broker configured by `harstream deploy nats`"
            )
        for probe, got in probes.items():
            want = partition_of(probe, scale.partitions)
            if got >= 0 and got != want:
                raise ConfigError(
                    f"scale.partitions: {scale.partitions}, but the broker maps with another "
                    f"count ({probe} came on partition {got}, not {want}): use the P of "
                    "`harstream deploy nats --partitions P`"
                )

    def news(self, name: str, payload: bytes, retained: bool = False) -> None:
        """A worker's announcement (``name`` = WORKER) or status (``WORKER/status``),
        checked by the book, which never raises for what another client published."""
        book = self.book
        todo = book.news(name, payload, self.monotonic(), retained)
        for reason in book.refusals:
            log.warning("on %s/#: %s", self.topic, reason)
        book.refusals.clear()
        if todo == "online":  # this worker is alive: say so again
            self.send(self.status_topic, self.status(b"online"), 1, True)
        elif todo == "announce":
            self.send(f"{self.topic}/{self.scale.worker}", encode(self.announcement()), 1, True)
        self._follow()

    async def heartbeat(self, stop: asyncio.Event, connected: asyncio.Event) -> None:
        """Until ``stop``: a ``tick`` every ``heartbeat_s`` while ``connected`` (a fault
        in one is logged and counted; the next comes all the same)."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.scale.heartbeat_s)
            if stop.is_set():
                return
            if not connected.is_set():  # nothing is heard from anyone: no lease judged
                self.ticked = self.monotonic()
                continue
            try:
                self.tick()
            except Exception:
                self.counters["tick_faults"] += 1
                log.exception("worker heartbeat")

    def tick(self) -> None:
        """Say ``online`` again, and judge the leases as of now, unless this worker was
        away: its tick late (frozen, loop stalled) or its own ``online`` not back
        within its lease (cut off, its connection not yet known lost). Then the live
        ones get a fresh lease instead."""
        now, every, echo = self.monotonic(), self.scale.heartbeat_s, self.book.echo
        gap, self.ticked = now - self.ticked, now
        self.send(self.status_topic, self.status(b"online"), 1, True)
        if gap > 2 * every or echo is None or now - echo > LEASE_HEARTBEATS * every:
            self.counters["ticks_unjudged"] += 1
            why = f"tick {gap:.1f} s after the last" if gap > 2 * every else "own status not back"
            log.warning("worker %s: %s: no lease judged, a fresh one each", self.scale.worker, why)
            self.book.renew(self.live, now)
        self.judged = now
        self._follow()

    def _follow(self, force: bool = False) -> None:
        """The live workers as the book says, leases as of the last tick; coverage and
        takeover follow them (a rebalance when they changed, or ``force``)."""
        scale, book = self.scale, self.book
        live, dead = {scale.worker: scale.owned, **book.live(self.judged)}, book.dead(self.judged)
        for name in dead.keys() - self.dead.keys():
            if not book.said_offline(name):  # no will came: silent past its lease
                self.counters["workers_silent"] += 1
                log.warning(
                    "worker %s not heard for %.1f s (%d heartbeats, no will): taken as dead",
                    name,
                    book.silent(name, self.judged),
                    LEASE_HEARTBEATS,
                )
        changed = (live, dead) != (self.live, self.dead)
        self.live, self.dead = live, dead
        self.check_coverage()
        if scale.takeover and (changed or force):
            asyncio.get_running_loop().create_task(self._rebalance(), name="rebalance")

    async def _rebalance(self) -> None:
        """Takeover: serve this worker's partitions plus its share of dead workers'
        (``takeover_share``); subscribe to what it gains before taking its messages,
        stop taking what it hands back before unsubscribing."""
        scale, router, session = self.scale, self.router, self.session
        if session is None:
            return
        async with self._rebalancing:
            target = scale.owned | takeover_share(scale.worker, self.live, self.dead)
            gained, released = target - router.owned, router.owned - target
            calibrate, label = self.calibrate, self.label
            try:
                if gained:
                    router.owned = router.owned | gained
                    for topic in router.filters(calibrate, label, gained):
                        await session.subscribe(topic, qos=self.qos_in)
                    router.serving = router.owned  # only now do their messages come
                    log.warning("taking over partitions %s of dead workers", format_owned(gained))
                if released:
                    router.owned = router.serving = target
                    for topic in router.filters(calibrate, label, released):
                        await session.unsubscribe(topic)
                    log.info("handing back partitions %s", format_owned(released))
            except TransportError as exc:  # the connection's own task reconnects
                log.warning("rebalancing stopped by the connection: %s", exc)

    def check_coverage(self) -> None:
        """Log partitions no one owns or two own, once the workers had a moment to
        announce themselves (a worker starting first is alone for a while)."""
        scale = self.scale
        found = coverage(scale.partitions, {scale.worker: scale.owned, **self.live})
        if self.monotonic() < self._coverage_from:
            return
        if found != self._coverage:
            if found["unowned"] or found["overlapping"]:
                log.error(
                    "workers %s: partitions no one owns: %s; owned twice: %s",
                    sorted({scale.worker, *self.live}),
                    found["unowned"] or "none",
                    found["overlapping"] or "none",
                )
            self._coverage = found

    def forward(self, batch: list[Route]) -> int:
        """What came over HTTP goes into the broker on the device's own topic, which the
        broker maps to the device's owner (maybe this worker); nothing is dropped here."""
        for route in batch:
            self.send(route.topic, route.payload, 1, False)
        return 0

    def numbers(self) -> dict[str, Any]:
        """The stats payload's ``scale``."""
        scale, router = self.scale, self.router
        return {
            "worker": scale.worker,
            "partitions": scale.partitions,
            "owned": format_owned(scale.owned),
            "workers": sorted({scale.worker, *self.live}),
            "serving": format_owned(router.serving),
            **coverage(scale.partitions, {scale.worker: scale.owned, **self.live}),
            **router.counters,
            **self.book.counters,
            **self.counters,
        }
