"""Worker mode against a real nats-server (MQTT listener, JetStream, the partition
mappings of `harstream deploy nats`): devices split between workers by partition, the
same decisions as one gateway, the broker's P checked at start, partitions no one owns
or two own reported, a killed worker's devices resuming after its restart."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from harstream.config import Config
from harstream.core.bundle import Bundle
from harstream.core.partitions import coverage, format_owned, parse_owned, partition_of
from harstream.errors import ConfigError
from harstream.testing.localnats import Endpoint, Nats, nats_cluster
from tests.gateway_helpers import WALK, engine_for, imu
from tests.mosquitto import Mosquitto
from tests.test_gateway_broker import Listener, config_for, gateway_running
from tests.test_restart import until

P = 8
PREFIX = "harstream"
DEVICES = [f"dev{k}" for k in range(12)]


@pytest.fixture
def nats(tmp_path: Path) -> Iterator[Nats]:
    server = Nats(tmp_path / "nats", partitions=P, prefix=PREFIX).start()
    yield server
    server.stop()


def worker_config(
    server: Endpoint | Mosquitto, bundle: Bundle, owned: str, name: str, *more: str
) -> Config:
    return config_for(
        server,  # type: ignore[arg-type]  # a Nats endpoint has the host and port it reads
        PREFIX,
        bundle,
        f"scale.partitions={P}",
        f"scale.owned={owned}",
        f"scale.worker={name}",
        *more,
    )


def serve_worker(
    config: Path, server: Nats, bundle: Bundle, scale_more: str = ""
) -> Callable[[], subprocess.Popen[str]]:
    """What starts `harstream serve` as worker w2 (partitions 4-7) in its own process,
    so that a test can `kill -9` it and start it again under the same name."""
    config.write_text(
        f"broker:\n  host: 127.0.0.1\n  port: {server.mqtt_port}\n  reconnect_min_s: 0.05\n"
        f"topics:\n  prefix: {PREFIX}\nmodel:\n  path: {bundle.path}\n"
        f"scale:\n  partitions: {P}\n  owned: 4-7\n  worker: w2\n  nats_port: {server.port}\n"
        f"{scale_more}"
    )

    def start() -> subprocess.Popen[str]:
        command = [sys.executable, "-m", "harstream", "serve", "--config", str(config)]
        return subprocess.Popen(command, stderr=subprocess.PIPE, text=True)

    return start


def w2_online(got: list[tuple[str, bytes, bool]]) -> bool:
    """Worker w2's status said `online INSTANCE`."""
    return any(t == f"{PREFIX}/workers/w2/status" and p[:7] == b"online " for t, p, _ in got)


def w2_offline(got: list[tuple[str, bytes, bool]]) -> bool:
    """Worker w2's status said `offline INSTANCE` (its will, published by the broker)."""
    return any(t == f"{PREFIX}/workers/w2/status" and p[:8] == b"offline " for t, p, _ in got)


async def send_hop(client: Any, s: int) -> None:
    """Every device's hop of walking from sample ``s``, QoS 1."""
    for device in DEVICES:
        payload = imu(WALK[s : s + 64], seq=s, t=1_790_000_000 + s / 50)
        await client.publish(f"{PREFIX}/{device}/imu", payload, qos=1)


def test_partitions_as_nats_computes_them(nats: Nats) -> None:
    """The hash the workers check against is the one the broker applies."""
    assert sorted(parse_owned("0-127/2", 128))[:3] == [0, 2, 4]
    assert format_owned(parse_owned("1-127/2", 128)).startswith("1,3,5")
    assert coverage(4, {"a": frozenset({0, 1}), "b": frozenset({1})}) == {
        "unowned": "2-3",
        "overlapping": "1",
    }
    with pytest.raises(ValueError, match=r"partitions are 0\.\.7"):
        parse_owned("4-9", 8)


@pytest.mark.broker
@pytest.mark.asyncio
async def test_two_workers_split_the_devices_and_decide_as_one_gateway(
    nats: Nats, bundle_factory: Callable[..., Bundle]
) -> None:
    bundle = bundle_factory("gru", "stateful")
    first = worker_config(nats.mqtt, bundle, "0-3", "w1")
    second = worker_config(nats.mqtt, bundle, "4-7", "w2")
    async with (
        Listener(nats.mqtt, f"{PREFIX}/+/activity") as listener,  # type: ignore[arg-type]
        gateway_running(first, bundle) as w1,
        gateway_running(second, bundle) as w2,
    ):
        for s in range(0, 640, 64):
            await send_hop(listener.client, s)
        await listener.until(lambda: len(listener.json("/activity")) == 10 * len(DEVICES), 30)
        for worker, owned in ((w1, range(4)), (w2, range(4, 8))):
            devices = set(worker.engine.devices)
            assert devices == {d for d in DEVICES if partition_of(d, P) in owned}
            assert worker.snapshot()["scale"]["unowned"] == ""
            assert worker.snapshot()["scale"]["overlapping"] == ""
        assert set(w1.engine.devices) | set(w2.engine.devices) == set(DEVICES)
    alone = engine_for(bundle).feed("x", WALK[:640], seq=0)
    for device in DEVICES:
        got = [a for a in listener.json(f"/{device}/activity")]
        assert [a["seq"] for a in got] == [d.seq for d in alone]
        assert [a["raw_activity"] for a in got] == [d.raw_activity for d in alone]


@pytest.mark.broker
@pytest.mark.asyncio
async def test_a_broker_with_another_p_or_no_mapping_fails_the_start(
    nats: Nats, broker: Mosquitto, bundle_factory: Callable[..., Bundle]
) -> None:
    bundle = bundle_factory("gru", "stateful")
    wrong = config_for(
        nats.mqtt,  # type: ignore[arg-type]
        PREFIX,
        bundle,
        "scale.partitions=16",  # the broker's is 8
        "scale.worker=w1",
    )
    with pytest.raises(ConfigError, match="maps with another count"):
        async with gateway_running(wrong, bundle):
            pass
    plain = worker_config(broker, bundle, "all", "w1", "scale.probe_s=1")
    with pytest.raises(ConfigError, match="does not partition"):
        async with gateway_running(plain, bundle):
            pass


@pytest.mark.broker
@pytest.mark.asyncio
async def test_unowned_and_overlapping_partitions_are_reported(
    nats: Nats, bundle_factory: Callable[..., Bundle]
) -> None:
    bundle = bundle_factory("gru", "stateful")
    async with (
        gateway_running(worker_config(nats.mqtt, bundle, "0-3", "w1"), bundle) as w1,
        gateway_running(worker_config(nats.mqtt, bundle, "2-5", "w2"), bundle) as w2,
    ):
        for _ in range(200):
            if (
                len(w1.snapshot()["scale"]["workers"])
                == 2
                == len(w2.snapshot()["scale"]["workers"])
            ):
                break
            await asyncio.sleep(0.05)
        for worker in (w1, w2):
            scale = worker.snapshot()["scale"]
            assert scale["unowned"] == "6-7" and scale["overlapping"] == "2-3", scale
            assert scale["workers"] == ["w1", "w2"]


@pytest.mark.broker
@pytest.mark.asyncio
async def test_a_killed_worker_is_reported_and_its_devices_resume_after_its_restart(
    nats: Nats, bundle_factory: Callable[..., Bundle], tmp_path: Path
) -> None:
    """Static ownership: `kill -9` of a worker; the other reports its partitions unowned
    (the broker publishes the dead one's will); its persistent session keeps what its
    devices send meanwhile, and after its restart their decisions resume without a gap."""
    bundle = bundle_factory("gru", "stateful")
    start = serve_worker(tmp_path / "w2.yaml", nats, bundle)
    theirs = [d for d in DEVICES if partition_of(d, P) >= 4]

    async with (
        Listener(nats.mqtt, f"{PREFIX}/+/activity", f"{PREFIX}/workers/+/status") as sub,  # type: ignore[arg-type]
        gateway_running(worker_config(nats.mqtt, bundle, "0-3", "w1"), bundle) as w1,
    ):
        w2 = start()
        try:
            await sub.until(lambda: w2_online(sub.got), 30)

            for s in range(0, 320, 64):
                await send_hop(sub.client, s)
            await sub.until(lambda: len(sub.json("/activity")) == 5 * len(DEVICES))
            w2.kill()  # SIGKILL: no goodbye; the broker publishes its will
            w2.communicate()
            killed = time.monotonic()
            await sub.until(lambda: w1.snapshot()["scale"]["unowned"] == "4-7", 10)
            reported_s = time.monotonic() - killed
            for s in range(320, 640, 64):  # while it is down
                await send_hop(sub.client, s)
            restarted = time.monotonic()
            w2 = start()
            await sub.until(lambda: len(sub.json("/activity")) == 10 * len(DEVICES), 60)
            resumed_s = time.monotonic() - restarted
            await sub.until(lambda: w1.snapshot()["scale"]["unowned"] == "", 10)
        finally:
            w2.kill()
            w2.communicate()
    print(
        f"killed worker reported after {reported_s:.2f} s; resumed {resumed_s:.1f} s after restart"
    )
    for device in theirs:
        seqs = [a["seq"] for a in sub.json(f"/{device}/activity")]
        assert seqs == [64 * k - 1 for k in range(1, 11)], device  # nothing lost, no reset


@pytest.mark.broker
@pytest.mark.asyncio
async def test_a_three_node_cluster_routes_devices_to_workers_on_other_nodes(
    tmp_path: Path, bundle_factory: Callable[..., Bundle]
) -> None:
    """Three nats-servers routed to each other (`deploy nats --cluster-port --routes`):
    devices connect to the third, the workers to the first and second, and a late
    subscriber on any node gets each device's retained activity."""
    servers = nats_cluster(tmp_path, 3, partitions=P, prefix=PREFIX)
    try:
        bundle = bundle_factory("gru", "stateful")
        await cluster_ready(servers)
        async with (
            # a QoS 1 subscription is a replicated JetStream consumer here: slower to make
            gateway_running(
                worker_config(servers[0].mqtt, bundle, "0-3", "w1"), bundle, timeout=60
            ) as w1,
            gateway_running(
                worker_config(servers[1].mqtt, bundle, "4-7", "w2"), bundle, timeout=60
            ) as w2,
            Listener(servers[2].mqtt, f"{PREFIX}/+/activity") as devices,  # type: ignore[arg-type]
        ):
            for s in range(0, 320, 64):
                await send_hop(devices.client, s)
            await devices.until(lambda: len(devices.json("/activity")) == 5 * len(DEVICES), 60)
            assert set(w1.engine.devices) | set(w2.engine.devices) == set(DEVICES)
            assert not set(w1.engine.devices) & set(w2.engine.devices)
        for server in servers:  # retained: every node has every device's last activity
            async with Listener(server.mqtt, f"{PREFIX}/+/activity") as late:  # type: ignore[arg-type]
                await late.until(lambda: len(late.json("/activity")) == len(DEVICES), 20)
                assert all(retained for _, _, retained in late.got)
    finally:
        for server in servers:
            server.stop()


async def cluster_ready(servers: list[Nats]) -> None:
    """Until every node takes a persistent MQTT session (JetStream elects its leaders
    first, and MQTT sessions wait for it). Each try under a new client id: a try that
    timed out may leave its half-made session behind (once in a CI run, 2026-12-05,
    the same id retried for 60 s without an answer)."""
    import aiomqtt

    ready = time.monotonic() + 120
    for k, server in enumerate(servers):
        for attempt in itertools.count():
            try:
                async with aiomqtt.Client(
                    "127.0.0.1",
                    server.mqtt_port,
                    identifier=f"ping{k}-{attempt}",
                    clean_session=False,
                ) as ping:
                    await ping.subscribe(f"{PREFIX}/ping/{k}", qos=1)
                    break
            except aiomqtt.MqttError:
                if time.monotonic() > ready:
                    raise
                await asyncio.sleep(0.5)


async def qos1_acknowledged(server: Nats, within_s: float = 60) -> None:
    """Until a QoS 1 publish on ``server`` is acknowledged within 2 s (fresh clients)."""
    import aiomqtt

    give_up = time.monotonic() + within_s
    while True:
        try:
            async with aiomqtt.Client("127.0.0.1", server.mqtt_port, timeout=2) as probe:
                await probe.publish(f"{PREFIX}/probe", b"", qos=1, timeout=2)
                return
        except aiomqtt.MqttError:
            if time.monotonic() > give_up:
                raise
            await asyncio.sleep(0.5)


@pytest.mark.broker
@pytest.mark.asyncio
async def test_a_worker_whose_node_is_killed_goes_on_from_another_node_of_the_cluster(
    tmp_path: Path, bundle_factory: Callable[..., Bundle]
) -> None:
    """`broker.fallbacks`: a worker connected to node 1 of three, its devices to node 3;
    `kill -9` of node 1: the worker reconnects to another node with its persistent
    session (replicated in JetStream) and goes on serving every device, its decisions
    at the same stream positions."""
    servers = nats_cluster(tmp_path, 3, partitions=P, prefix=PREFIX)
    status = f"{PREFIX}/workers/w1/status"

    def onlines() -> int:
        return sum(1 for t, p, _ in devices.got if t == status and p[:7] == b"online ")

    try:
        bundle = bundle_factory("gru", "stateful")
        await cluster_ready(servers)
        others = ",".join(f"127.0.0.1:{s.mqtt_port}" for s in servers[1:])
        config = worker_config(servers[0].mqtt, bundle, "all", "w1", f"broker.fallbacks=[{others}]")
        async with (
            gateway_running(config, bundle, timeout=60) as w1,
            Listener(servers[2].mqtt, f"{PREFIX}/+/activity", status) as devices,  # type: ignore[arg-type]
        ):
            for s in range(0, 320, 64):
                await send_hop(devices.client, s)
            await devices.until(lambda: len(devices.json("/activity")) == 5 * len(DEVICES), 60)
            before = onlines()
            servers[0].kill()  # SIGKILL: the worker's connection is gone with it
            killed = time.monotonic()
            await devices.until(lambda: onlines() > before, 60)  # it says so from node 2
            online_s = time.monotonic() - killed
            # until JetStream has new leaders, a QoS 1 publish is not acknowledged and
            # nats-server closes the publisher's connection after 5 s (a device
            # reconnects): the test's devices wait for a probe's to be acknowledged
            await qos1_acknowledged(servers[2])
            for s in range(320, 640, 64):
                await send_hop(devices.client, s)
            await devices.until(lambda: len(devices.json("/activity")) == 10 * len(DEVICES), 60)
            reconnects = w1.snapshot()["reconnects"]
        print(f"node 1 killed: its worker online again on another node after {online_s:.1f} s")
        assert reconnects >= 1
        for device in DEVICES:
            seqs = [a["seq"] for a in devices.json(f"/{device}/activity")]
            assert seqs == [64 * k - 1 for k in range(1, 11)], device  # no reset, none twice
    finally:
        for server in servers:
            server.stop()


@pytest.mark.broker
@pytest.mark.asyncio
async def test_what_a_worker_takes_over_http_reaches_the_devices_owner(
    nats: Nats, bundle_factory: Callable[..., Bundle]
) -> None:
    """A phone pushing to any worker's HTTP port is served by the worker that owns it:
    the HTTP ingest publishes into the broker, which routes by the phone's name."""
    import aiohttp
    import orjson

    from harstream.core.bundle import load_bundle
    from harstream.testing.localbroker import free_port
    from replay import iter_hapt
    from replay.phone import phone_batches
    from tests.gateway_helpers import MINI

    bundle = load_bundle()  # a phone's readings need the aligned inputs' filters only
    phone = next(d for d in (f"phone{k}" for k in range(50)) if partition_of(d, P) >= 4)
    port = free_port()
    first = worker_config(nats.mqtt, bundle, "0-3", "w1", f"ingest.http.port={port}")
    second = worker_config(nats.mqtt, bundle, "4-7", "w2")
    (recording,) = iter_hapt(MINI, subjects=[9])
    async with (
        Listener(nats.mqtt, f"{PREFIX}/{phone}/activity") as sub,  # type: ignore[arg-type]
        gateway_running(first, bundle) as w1,
        gateway_running(second, bundle) as w2,
        aiohttp.ClientSession() as http,
    ):
        url = f"http://127.0.0.1:{port}/ingest/sensor-logger?device={phone}"
        for k, batch in enumerate(phone_batches(recording, start_epoch_s=1.79e9)):
            async with http.post(url, data=orjson.dumps(batch)) as reply:
                assert reply.status == 200, await reply.text()
            if k == 20:
                break
        await sub.until(lambda: len(sub.json("/activity")) >= 10, 30)
        assert phone in w2.engine.devices and phone not in w1.engine.devices
        assert w1.snapshot()["http"]["http_accepted"] == 21


@pytest.mark.broker
@pytest.mark.asyncio
async def test_with_takeover_the_live_workers_serve_a_dead_ones_devices_until_it_returns(
    nats: Nats, bundle_factory: Callable[..., Bundle], tmp_path: Path
) -> None:
    """Dynamic ownership (`scale.takeover`): `kill -9` of a worker; the other takes over
    its partitions at once (its will) or, should the will be lost (docs/scaling.md),
    after 3 heartbeats of silence (here 1 s each); its devices' decisions come from
    there (their streams start again: one hop), and when it is back the partitions are
    handed back; no device is ever decided twice for the same samples."""
    bundle = bundle_factory("gru", "stateful")
    start = serve_worker(tmp_path / "w2.yaml", nats, bundle, "  takeover: true\n  heartbeat_s: 1\n")
    theirs = [d for d in DEVICES if partition_of(d, P) >= 4]

    first = worker_config(
        nats.mqtt, bundle, "0-3", "w1", "scale.takeover=true", "scale.heartbeat_s=1"
    )
    async with (
        Listener(nats.mqtt, f"{PREFIX}/+/activity", f"{PREFIX}/workers/+/status") as sub,  # type: ignore[arg-type]
        gateway_running(first, bundle) as w1,
    ):

        async def send(rounds: range) -> None:
            for s in (64 * k for k in rounds):
                for device in DEVICES:
                    payload = imu(WALK[s % 1280 : s % 1280 + 64], seq=s, t=1.79e9 + s / 50)
                    await sub.client.publish(f"{PREFIX}/{device}/imu", payload, qos=1)

        w2 = start()
        try:
            await sub.until(lambda: w2_online(sub.got), 30)
            await send(range(0, 5))
            await sub.until(lambda: len(sub.json("/activity")) == 5 * len(DEVICES))
            w2.kill()
            w2.communicate()
            killed = time.monotonic()
            await sub.until(lambda: w1.snapshot()["scale"]["serving"] == "0-7", 10)
            taken_s = time.monotonic() - killed
            by_lease = w1.snapshot()["scale"]["workers_silent"] == 1
            await send(range(5, 10))
            await sub.until(lambda: len(sub.json("/activity")) == 10 * len(DEVICES), 30)
            w2 = start()
            await sub.until(lambda: w1.snapshot()["scale"]["serving"] == "0-3", 30)
            await send(range(10, 15))
            await sub.until(lambda: len(sub.json("/activity")) == 15 * len(DEVICES), 30)
        finally:
            if w2.poll() is None:  # not the one killed above
                w2.kill()
                w2.communicate()
    print(f"takeover {taken_s:.2f} s after the kill, by {'lease' if by_lease else 'will'}")
    assert taken_s < (6 if by_lease else 5)  # lease: 3 heartbeats from the last one, + 1
    for device in theirs:
        seqs = [a["seq"] for a in sub.json(f"/{device}/activity")]
        assert seqs == [64 * k - 1 for k in range(1, 16)], device  # each hop once, in order


@pytest.mark.broker
@pytest.mark.asyncio
async def test_a_killed_workers_will_reaches_the_other_every_time(
    bundle_factory: Callable[..., Bundle], tmp_path: Path
) -> None:
    """20 times, each on a fresh broker: w2 killed as soon as w1 has seen it online;
    w1 takes over at once, by the will alone (heartbeats of 60 s: no lease could).
    Following `workers/#` at QoS 1, 1 such kill in 5 lost the will on nats-server 2.15.1
    (docs/scaling.md): 20 in a row would then pass about once in a hundred runs."""
    bundle = bundle_factory("gru", "stateful")
    for kill in range(20):
        server = Nats(tmp_path / f"nats{kill}", partitions=P, prefix=PREFIX).start()
        try:
            assert await taken_over_by_will(server, bundle, tmp_path), f"kill {kill + 1}: lost"
        finally:
            server.stop()


async def taken_over_by_will(server: Nats, bundle: Bundle, tmp_path: Path) -> bool:
    """w1 and w2 with takeover and 60 s heartbeats, and a monitor following their
    statuses; w2 killed once w1 has seen it online: whether w1 serves w2's partitions
    within 5 s (only the will can say so)."""
    start = serve_worker(
        tmp_path / "w2.yaml", server, bundle, "  takeover: true\n  heartbeat_s: 60\n"
    )
    first = worker_config(
        server.mqtt, bundle, "0-3", "w1", "scale.takeover=true", "scale.heartbeat_s=60"
    )
    async with (
        Listener(server.mqtt, f"{PREFIX}/workers/+/status"),  # type: ignore[arg-type]  # a monitor, at QoS 1
        gateway_running(first, bundle) as w1,
    ):

        def scale() -> dict[str, Any]:
            return w1.snapshot()["scale"]  # type: ignore[no-any-return]

        w2 = start()
        try:
            await until(lambda: "w2" in scale()["workers"], 30)
        finally:
            w2.kill()
            w2.communicate()
        with contextlib.suppress(TimeoutError):
            await until(lambda: scale()["serving"] == "0-7", 5)
        return scale()["serving"] == "0-7" and scale()["workers_silent"] == 0


@pytest.mark.broker
@pytest.mark.asyncio
async def test_a_frozen_worker_is_taken_over_after_its_lease_and_gets_its_partitions_back(
    nats: Nats, bundle_factory: Callable[..., Bundle], tmp_path: Path
) -> None:
    """A worker that stops without closing its connection (SIGSTOP: its socket stays
    open, so the broker sends its will only after 1.5 keepalives, 45 s) is taken as
    dead after 3 of its heartbeats of silence (here 1 s each); thawed, it speaks again
    and gets its partitions back, and it takes nothing of the other's for the silence
    it slept through (its late tick judges no lease)."""
    bundle = bundle_factory("gru", "stateful")
    beat = "  takeover: true\n  heartbeat_s: 1\n"
    start = serve_worker(tmp_path / "w2.yaml", nats, bundle, beat)
    first = worker_config(
        nats.mqtt, bundle, "0-3", "w1", "scale.takeover=true", "scale.heartbeat_s=1"
    )
    async with (
        Listener(nats.mqtt, f"{PREFIX}/workers/+/status") as sub,  # type: ignore[arg-type]
        gateway_running(first, bundle) as w1,
    ):
        w2 = start()
        try:
            await sub.until(lambda: w2_online(sub.got), 30)
            await sub.until(lambda: "w2" in w1.snapshot()["scale"]["workers"], 10)
            await asyncio.sleep(4)  # past a lease: w2's live heartbeats renew it (retain 0)
            assert w1.snapshot()["scale"]["serving"] == "0-3"
            w2.send_signal(signal.SIGSTOP)
            frozen = time.monotonic()
            await sub.until(lambda: w1.snapshot()["scale"]["serving"] == "0-7", 10)
            taken_s = time.monotonic() - frozen
            assert w1.snapshot()["scale"]["workers_silent"] == 1 and not w2_offline(sub.got)
            w2.send_signal(signal.SIGCONT)
            await sub.until(lambda: w1.snapshot()["scale"]["serving"] == "0-3", 10)
            await asyncio.sleep(2.5)  # w2's late tick, and any takeover it would start
        finally:
            w2.send_signal(signal.SIGCONT)
            w2.kill()
            _, log = w2.communicate()
    print(f"taken over {taken_s:.2f} s after the freeze")
    assert 1.5 <= taken_s < 6.0  # the lease: 3 s from w2's last heartbeat, + a tick
    assert "no lease judged" in log and "taking over" not in log, log[-2000:]


@pytest.mark.broker
@pytest.mark.asyncio
async def test_workers_subscribing_at_qos_0_come_online_and_serve_every_device(
    nats: Nats, bundle_factory: Callable[..., Bundle]
) -> None:
    """`topics.qos_in: 0` in worker mode (plain NATS subscriptions instead of a
    JetStream consumer per partition: the broker's cheaper path) on the current
    nats-server: both workers announce themselves online and decide every device as one
    gateway would (on 2.9.10 such workers never came online: docs/scaling.md)."""
    bundle = bundle_factory("gru", "stateful")
    first = worker_config(nats.mqtt, bundle, "0-3", "w1", "topics.qos_in=0")
    second = worker_config(nats.mqtt, bundle, "4-7", "w2", "topics.qos_in=0")
    status = f"{PREFIX}/workers/+/status"
    async with (
        Listener(nats.mqtt, f"{PREFIX}/+/activity", status) as listener,  # type: ignore[arg-type]
        gateway_running(first, bundle, timeout=30) as w1,
        gateway_running(second, bundle, timeout=30) as w2,
    ):
        assert w1.settings.qos_in == w2.settings.qos_in == 0
        await listener.until(
            lambda: (
                {t for t, p, _ in listener.got if p[:7] == b"online "}
                == {f"{PREFIX}/workers/w1/status", f"{PREFIX}/workers/w2/status"}
            ),
            10,
        )
        for s in range(0, 640, 64):
            await send_hop(listener.client, s)
        await listener.until(lambda: len(listener.json("/activity")) == 10 * len(DEVICES), 30)
        assert set(w1.engine.devices) | set(w2.engine.devices) == set(DEVICES)
        assert not set(w1.engine.devices) & set(w2.engine.devices)
    alone = engine_for(bundle).feed("x", WALK[:640], seq=0)
    for device in DEVICES:
        assert [a["seq"] for a in listener.json(f"/{device}/activity")] == [d.seq for d in alone]
