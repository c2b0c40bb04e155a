"""What other clients publish on ``{prefix}/workers/#`` cannot stop a worker or move its
partitions: malformed announcements are refused with a reason and counted (at start, as
retained messages, and later), and a status ``offline`` counts only from the instance
the worker announced (its own will), never from a client that merely names it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harstream.config import load_config
from harstream.core.bundle import Bundle
from harstream.core.partitions import partition_of
from harstream.errors import ConfigError
from harstream.gateway.book import WorkerBook, parse_announcement
from harstream.gateway.scale import ScaleSettings
from harstream.gateway.service import Gateway
from harstream.gateway.workers import Workers
from harstream.testing.localnats import Nats
from tests.gateway_helpers import WALK, imu
from tests.test_gateway_broker import Listener, gateway_running, instance_of
from tests.test_scale import DEVICES, PREFIX, P, worker_config

GOOD = {"worker": "b", "partitions": 4, "owned": "2-3", "instance": "i2"}


def bad_news(name: str, partitions: int) -> list[tuple[str, bytes, str]]:
    """(what another client leaves retained on {prefix}/workers/{rest}, why it is
    refused) for a worker ``name`` among workers of P ``partitions``."""
    good = {**GOOD, "worker": name, "partitions": partitions}
    return [
        (name, b"[1, 2]", "not an object"),
        (name, b"\xff\xfe", "not JSON"),
        (name, b"[" * 3000 + b"]" * 3000, "bytes, more than"),
        (name, b"[" * 2000 + b"]" * 2000, "not JSON"),  # nesting past the parser's limit
        (name, orjson.dumps({**good, "owned": 3}), "is not a string"),
        (name, orjson.dumps({**good, "owned": "7-9999"}), "partitions are 0.."),
        (name, orjson.dumps({**good, "owned": ["0-3"]}), "is not a string"),
        (name, orjson.dumps({**good, "partitions": True}), f"not this worker's {partitions}"),
        (name, orjson.dumps({**good, "partitions": 2 * partitions}), "not this worker's"),
        (name, orjson.dumps({**good, "worker": "c"}), f"on the topic of '{name}'"),
        (name, orjson.dumps({**good, "instance": {"x": 1}}), "instance"),
        (f"{name}/x/y", orjson.dumps(good), "no worker topic"),
        (f"{name} c", orjson.dumps(good), "no worker topic"),
        (f"{name}/status", b"offline i.2", "instance"),  # not an instance name
        (f"{name}/status", b"gone", "online|offline"),
        (f"{name}/status", b"offline a b", "online|offline"),
    ]


BAD_NEWS = bad_news("b", 4)


@pytest.mark.parametrize(("rest", "payload", "reason"), BAD_NEWS)
def test_a_malformed_announcement_or_status_is_refused_with_its_reason(
    rest: str, payload: bytes, reason: str
) -> None:
    book = WorkerBook("a", "i1", 4)
    assert book.news(rest, payload) is None  # never raises
    assert sum(book.counters.values()) == 1 and reason in book.refusals[0], book.refusals
    assert book.live(0.0) == {} and book.dead(0.0) == {}


def test_only_the_announced_instance_says_a_worker_is_gone() -> None:
    book = WorkerBook("a", "i1", 4)
    book.news("b", orjson.dumps(GOOD))
    for spoof in (b"offline", b"offline i0", b"offline zz"):  # none names b's instance
        book.news("b/status", spoof)
        assert book.live(0.0) == {"b": frozenset({2, 3})}, spoof
    assert book.counters["statuses_ignored"] == 3
    book.news("b/status", b"offline i2")  # its will
    assert book.live(0.0) == {} and book.dead(0.0) == {"b": frozenset({2, 3})}
    book.news("b", orjson.dumps({**GOOD, "instance": "i3"}))  # b started again
    assert book.live(0.0) == {"b": frozenset({2, 3})}  # the old will no longer counts
    # a worker that predates instances: bare statuses, as before
    book.news("c", orjson.dumps({"worker": "c", "partitions": 4, "owned": "0"}))
    book.news("c/status", b"offline")
    assert "c" in book.dead(0.0)


def test_a_worker_silent_past_its_lease_is_dead_until_its_instance_speaks_again() -> None:
    """The lease: a will can be lost, so a worker whose announced instance says nothing
    live for 3 of the heartbeats it announced is dead. A retained message brought back
    by a resubscription renews nothing (unless it is the instance's first news), nor
    does an earlier instance's `online`; a will wins; a worker that announced no
    heartbeat has no lease; a retired worker is forgotten."""
    book = WorkerBook("a", "i1", 4)
    beating = orjson.dumps({**GOOD, "heartbeat_s": 1})

    def echo(now: float) -> None:  # a's own `online` came back: a is connected
        book.news("a/status", b"online i1", now=now)

    book.news("b", beating, now=0.0, retained=True)  # first news of i2: its lease starts
    echo(3.1)
    assert book.live(3.0) == {"b": frozenset({2, 3})} and "b" in book.dead(3.1)
    book.news("b", beating, now=3.0, retained=True)  # the same again, on a resubscription
    book.news("b/status", b"online i2", now=3.0, retained=True)
    book.news("b/status", b"online i0", now=3.0)  # an earlier start's
    assert "b" in book.dead(3.1) and not book.said_offline("b")
    book.news("b/status", b"online i2", now=5.0)  # b itself, live: alive again
    echo(8.5)
    assert book.live(8.0) and not book.live(8.5) and book.silent("b", 8.5) == 3.5
    book.renew(["b", "c"], now=20.0)  # back from being away (c: never announced)
    echo(23.5)
    assert book.live(23.0) and "c" not in book.heard
    book.news("b/status", b"offline i2", now=21.0)  # its will wins over the lease
    assert book.dead(21.0) and book.said_offline("b")
    book.news("c", orjson.dumps({**GOOD, "worker": "c"}), now=0.0)  # no heartbeat_s
    assert "c" in book.live(1e9)  # a worker that predates heartbeats: its will alone
    book.news("b", b"", now=30.0)  # retired
    assert "b" not in book.heard and "b" not in book.dead(30.0)
    assert book.lease_s("c") is None
    with pytest.raises(ValueError, match="heartbeat_s"):
        parse_announcement("b", orjson.dumps({**GOOD, "heartbeat_s": 0}), 4)
    # what a worker may announce is what the config takes: nothing of its own is refused
    with pytest.raises(ConfigError, match=r"scale\.heartbeat_s"):
        load_config(overrides=["scale.heartbeat_s=3601"])


def test_a_lease_lapses_only_when_this_worker_heard_itself_after_it() -> None:
    """Cut off (its own `online` not back since before the other's lease ran out), a
    worker cannot tell the other's silence from its own deafness: no lapse. Once its
    own status comes back after the deadline, the silence is the other's."""
    book = WorkerBook("a", "i1", 4)
    book.news("b", orjson.dumps({**GOOD, "heartbeat_s": 5}), now=0.0)
    book.news("b/status", b"online i2", now=5.0)  # b's deadline: 20
    book.news("a/status", b"online i1", now=7.5)  # then a hears nothing more
    assert "b" in book.live(22.5)
    book.news("a/status", b"online i1", now=22.6)  # a's own, back after b's deadline
    assert "b" in book.dead(22.6)


def test_leases_are_judged_on_ticks_and_not_while_this_worker_was_away() -> None:
    """`Workers.tick` on a fake clock: it says `online` each time; it judges a lease
    only when its own status came back within its lease and the tick is not late;
    otherwise the live ones get a fresh lease (a cut-off, frozen or stalled worker
    heard nothing, whatever the others said); a death by lease is counted."""
    clock = [0.0]
    sent: list[tuple[str, bytes]] = []
    scale = ScaleSettings(4, frozenset({0, 1}), "a", heartbeat_s=1.0)
    workers = Workers(
        scale,
        "p",
        None,
        qos_in=1,
        probe_s=1.0,
        send=lambda topic, payload, qos, retain: sent.append((topic, payload)),
        monotonic=lambda: clock[0],
    )
    own = workers.status(b"online")

    def at(t: float, *news: tuple[str, bytes]) -> None:
        clock[0] = t
        for rest, payload in news:
            workers.news(rest, payload)

    at(0.0, ("b", orjson.dumps({**GOOD, "heartbeat_s": 1})), ("a/status", own))
    for t in (1.0, 2.0, 3.0):  # b silent from 0: its lease (3 s) not yet over
        at(t, ("a/status", own))
        workers.tick()
    assert sent[-1] == ("p/workers/a/status", own) and "b" in workers.live
    at(9.0)  # frozen from 3 to 9: late, and its own status not back meanwhile
    workers.tick()
    assert "b" in workers.live and workers.counters["ticks_unjudged"] == 1
    for t in (10.0, 11.0, 12.0):  # a fresh lease from 9: b still alive at 12
        at(t, ("a/status", own))
        workers.tick()
    assert "b" in workers.live
    at(13.0)
    workers.tick()  # judged: b silent since 9, past its lease
    assert "b" not in workers.live and workers.counters["workers_silent"] == 1
    at(13.5, ("b/status", b"online i2"))  # b speaks: alive again at once
    assert "b" in workers.live
    for t in (14.0, 15.0, 16.0, 17.0):  # own status not back since 12: cut off from 16 on
        at(t)
        workers.tick()
    assert "b" in workers.live and workers.counters["ticks_unjudged"] == 3  # 9, 16, 17


def test_a_worker_restores_its_own_topics_when_another_writes_them() -> None:
    book = WorkerBook("a", "i1", 4)
    mine = orjson.dumps({"worker": "a", "partitions": 4, "owned": "0-1", "instance": "i1"})
    assert book.news("a", mine) is None
    assert book.news("a/status", b"online i1") is None
    assert book.news("a/status", b"offline i0") is None  # an earlier start's late will
    assert book.news("a/status", b"offline i1") == "online"  # says this one is gone
    assert book.news("a", orjson.dumps({**GOOD, "worker": "a"})) == "announce"
    assert book.news("a", b"") == "announce"  # cleared
    assert book.counters["own_restored"] == 3


def test_parse_announcement_takes_what_a_worker_publishes() -> None:
    got = parse_announcement("b", orjson.dumps(GOOD), 4)
    assert (got.worker, got.partitions, sorted(got.owned), got.instance) == ("b", 4, [2, 3], "i2")


@pytest.fixture
def nats(tmp_path: Path) -> Iterator[Nats]:
    server = Nats(tmp_path / "nats", partitions=P, prefix=PREFIX).start()
    yield server
    server.stop()


def settled(w1: Gateway, instance: str) -> bool:
    """w1 has seen w2's `online INSTANCE` again, and is done rebalancing on it: its own
    partitions only, no rebalance pending."""
    assert w1.workers is not None
    pending = [t for t in asyncio.all_tasks() if t.get_name() == "rebalance" and not t.done()]
    return (
        w1.workers.book.status.get("w2") == ("online", instance)
        and not pending
        and w1.workers.router.owned == frozenset(range(4))
    )


async def _send_round(client: object, s: int) -> None:
    for device in DEVICES:
        payload = imu(WALK[s : s + 64], seq=s, t=1_790_000_000 + s / 50)
        await client.publish(f"{PREFIX}/{device}/imu", payload, qos=1)  # type: ignore[attr-defined]


@pytest.mark.broker
@pytest.mark.asyncio
async def test_workers_start_and_serve_over_retained_malformed_announcements(
    nats: Nats, bundle_factory: Callable[..., Bundle]
) -> None:
    """Every malformed announcement above left retained before the workers start, and
    sent again while they serve: both workers start, every device is decided, and each
    worker counts what it refused."""
    bundle = bundle_factory("gru", "stateful")
    news = [bad_news(f"x{k}", P)[k] for k in range(len(BAD_NEWS))]  # a name each: the
    bad = [  # broker keeps one retained message a topic
        (f"{PREFIX}/workers/{rest}", payload)
        for rest, payload, _ in news
        if " " not in rest  # not a topic the broker takes
    ]
    async with Listener(nats.mqtt, f"{PREFIX}/+/activity") as sub:  # type: ignore[arg-type]
        for topic, payload in bad:
            await sub.client.publish(topic, payload, qos=1, retain=True)
        async with (
            gateway_running(worker_config(nats.mqtt, bundle, "0-3", "w1"), bundle) as w1,
            gateway_running(worker_config(nats.mqtt, bundle, "4-7", "w2"), bundle) as w2,
        ):
            await _send_round(sub.client, 0)
            for topic, payload in bad:  # and again while they serve
                await sub.client.publish(topic, payload, qos=1, retain=False)
            await _send_round(sub.client, 64)
            await sub.until(lambda: len(sub.json("/activity")) == 2 * len(DEVICES), 30)
            for worker in (w1, w2):
                scale = worker.snapshot()["scale"]
                refused = scale["announcements_refused"] + scale["statuses_refused"]
                assert refused == 2 * len(bad), scale
                assert scale["workers"] == ["w1", "w2"] and scale["unowned"] == "", scale
        for topic, _ in bad:  # leave the broker as found
            await sub.client.publish(topic, b"", qos=1, retain=True)
    assert {json.loads(p)["seq"] for _, p, _ in sub.got} == {63, 127}


@pytest.mark.broker
@pytest.mark.asyncio
async def test_a_spoofed_offline_moves_no_partition_of_a_live_worker(
    nats: Nats, bundle_factory: Callable[..., Bundle]
) -> None:
    """Takeover on: another client publishes w2's status `offline` (bare, with another
    instance, and with the very instance w2 announced); w1 never serves w2's
    partitions while w2 lives (the last one w2 itself answers at once), and each of
    w2's devices is decided by one worker only."""
    bundle = bundle_factory("gru", "stateful")
    first = worker_config(nats.mqtt, bundle, "0-3", "w1", "scale.takeover=true")
    second = worker_config(nats.mqtt, bundle, "4-7", "w2", "scale.takeover=true")
    status = f"{PREFIX}/workers/w2/status"
    async with (
        Listener(nats.mqtt, f"{PREFIX}/+/activity", status) as sub,  # type: ignore[arg-type]
        gateway_running(first, bundle) as w1,
        gateway_running(second, bundle) as w2,
    ):
        await sub.until(lambda: w1.snapshot()["scale"]["workers"] == ["w1", "w2"], 10)
        served: set[frozenset[int]] = set()  # what w1 takes (before it has subscribed)

        async def watch() -> None:
            while True:
                assert w1.router is not None
                served.add(w1.router.owned)
                await asyncio.sleep(0.005)

        watching = asyncio.create_task(watch())
        try:
            for s, spoof in ((0, b"offline"), (64, b"offline 0123456789abcdef")):
                await sub.client.publish(status, spoof, qos=1, retain=True)
                await _send_round(sub.client, s)
                await asyncio.sleep(1.0)
                assert served == {frozenset(range(4))}, (spoof, served)
            # a client that read the announcement: w2 sees its own status say it is
            # gone and says `online` again; w1 may take over for that moment only
            spoof = b"offline " + instance_of(w2).encode()
            await sub.client.publish(status, spoof, qos=1, retain=True)
            await sub.until(lambda: w2.snapshot()["scale"]["own_restored"] == 1, 10)
            await sub.until(lambda: settled(w1, instance_of(w2)), 10)
        finally:
            watching.cancel()
        assert w1.snapshot()["scale"]["statuses_ignored"] == 2
        await _send_round(sub.client, 128)
        await sub.until(lambda: len(sub.json("/activity")) >= 3 * len(DEVICES), 30)
        await asyncio.sleep(0.5)
        theirs = {d for d in DEVICES if partition_of(d, P) >= 4}
        assert set(w1.engine.devices).isdisjoint(theirs)
    for device in DEVICES:
        seqs = [a["seq"] for a in sub.json(f"/{device}/activity")]
        assert seqs == [63, 127, 191], device  # each decided once: by one worker


@settings(max_examples=400, deadline=None)
@given(
    rest=st.one_of(
        st.text(max_size=30),
        st.sampled_from(["b", "b/status", "a", "a/status", "b/x"]),
    ),
    payload=st.one_of(
        st.binary(max_size=200),
        st.sampled_from([b"offline i2", b"online i1", b"offline i1", b""]),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
            lambda inner: (
                st.lists(inner, max_size=3)
                | st.dictionaries(
                    st.sampled_from(["worker", "partitions", "owned", "instance", "x"]), inner
                )
            ),
            max_leaves=10,
        ).map(lambda v: json.dumps(v).encode()),
    ),
)
def test_no_message_on_the_workers_topics_raises(rest: str, payload: bytes) -> None:
    """Whatever another client publishes, the book answers with None or what to
    restore, and its live and dead workers stay well-formed."""
    book = WorkerBook("a", "i1", 4)
    book.news("b", orjson.dumps(GOOD))
    assert book.news(rest, payload) in (None, "online", "announce")
    for owned in (*book.live(0.0).values(), *book.dead(0.0).values()):
        assert owned <= frozenset(range(4))
