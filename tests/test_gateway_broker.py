"""The gateway against a real mosquitto: the MQTT contract of docs/design.md end to end."""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import aiomqtt
import pytest

from harstream.cli.device import _publish
from harstream.cli.live import LivePrinter
from harstream.cli.playback import run_replay
from harstream.config import Config, load_config
from harstream.core.bundle import Bundle
from harstream.evaluation.metrics import score_stream
from harstream.gateway.service import Gateway
from harstream.runtime import build_engine, engine_loader, gateway_settings, mqtt_transport
from replay import Recording, iter_hapt
from tests.certs import make_ca
from tests.gateway_helpers import BAD_INPUTS, MINI, WALK, imu
from tests.mosquitto import Mosquitto

pytestmark = [pytest.mark.broker, pytest.mark.asyncio]


def config_for(server: Mosquitto, prefix: str, bundle: Bundle, *more: str) -> Config:
    return load_config(
        overrides=[
            "broker.host=127.0.0.1",
            f"broker.port={server.port}",
            f"topics.prefix={prefix}",
            "topics.qos_in=1",
            f"model.path={bundle.path}",
            "broker.reconnect_min_s=0.05",
            "broker.reconnect_max_s=0.3",
            *more,
        ]
    )


def instance_of(worker: Gateway) -> str:
    """A worker's instance (new at each start)."""
    assert worker.workers is not None
    return worker.workers.instance


@asynccontextmanager
async def gateway_running(
    config: Config, bundle: Bundle, *, reloadable: bool = False, timeout: float = 10.0
) -> AsyncIterator[Gateway]:
    gateway = Gateway(
        build_engine(config, bundle),
        mqtt_transport(config),
        gateway_settings(config, bundle),
        load_engine=engine_loader(config) if reloadable else None,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(gateway.run(stop))
    connected = asyncio.create_task(gateway.connected.wait())
    try:
        await asyncio.wait({task, connected}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if task.done():  # it failed to start: its error is the test's
            connected.cancel()
            task.result()
        assert connected.done(), f"the gateway did not connect within {timeout:g} s"
        yield gateway
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


class Listener:
    """A subscriber that knows only docs/design.md, collecting what it receives."""

    def __init__(self, server: Mosquitto, *filters: str, **options: object) -> None:
        self.client = aiomqtt.Client(server.host, server.port, **options)  # type: ignore[arg-type]
        self.filters = filters
        self.got: list[tuple[str, bytes, bool]] = []

    async def __aenter__(self) -> Listener:
        await self.client.__aenter__()
        for f in self.filters:
            await self.client.subscribe(f, qos=1)
        self.task = asyncio.create_task(self._collect())
        return self

    async def _collect(self) -> None:
        async for m in self.client.messages:
            self.got.append((m.topic.value, bytes(m.payload), bool(m.retain)))  # type: ignore[arg-type]

    async def __aexit__(self, *exc: object) -> None:
        self.task.cancel()
        await self.client.__aexit__(None, None, None)

    def json(self, suffix: str) -> list[dict]:
        return [json.loads(p) for t, p, _ in self.got if t.endswith(suffix)]

    async def until_count(self, suffix: str, n: int) -> None:
        await self.until(lambda: len(self.json(suffix)) >= n)

    async def until(self, condition: Callable[[], bool], timeout: float = 20.0) -> None:
        async with asyncio.timeout(timeout):
            while not condition():
                await asyncio.sleep(0.01)


async def test_replayed_subject_matches_the_in_process_replay(
    broker: Mosquitto, prefix: str, bundle_factory: Callable[..., Bundle]
) -> None:
    bundle = bundle_factory("gru", "stateful")
    config = config_for(broker, prefix, bundle)
    recordings = list(iter_hapt(MINI, subjects=[9]))
    recordings.append(
        Recording(9, "exp17b", recordings[0].samples[:1000], recordings[0].labels[:1000])
    )  # a second session
    log, _, _ = run_replay(
        recordings,
        config,
        bundle,
        speed=None,
        message_samples=25,
        printer=LivePrinter(io.StringIO(), total_s=1),
        device="s9",
    )
    expected = [(s.session + q, s.recording.experiment) for s in log.played for q in s.seqs]
    async with Listener(broker, f"{prefix}/#") as sub, gateway_running(config, bundle) as gw:
        await _publish(config, recordings, None, 25, "s9", quiet=True)
        await sub.until(lambda: len(sub.json("/s9/activity")) == len(expected))
        await sub.until(lambda: gw.snapshot()["queue"] == 0)
    activity = sub.json("/s9/activity")
    assert [a["seq"] for a in activity] == [seq for seq, _ in expected]
    names = {i: label for label, i in log.ids.items()}
    in_process = [names[i] for p in log.played for i in p.ids]
    assert [a["activity"] for a in activity] == in_process
    # a subscriber's own online accuracy, from the activity topic alone
    sessions = [p.session for p in log.played]
    total = None
    for p, start in zip(log.played, sessions, strict=True):
        mine = [a for a in activity if start <= a["seq"] < start + p.samples]
        ids = [log.ids[a["activity"]] for a in mine]
        score = score_stream(p.recording.labels, [a["seq"] - start for a in mine], ids)
        total = score if total is None else total + score
    reference = sum(log.scores()[1:], log.scores()[0])
    assert total is not None
    assert abs(total.online_accuracy - reference.online_accuracy) <= 0.005
    assert gw.engine.counters["resets"] == 1  # the second session started fresh
    transitions = sub.json("/s9/transition")
    assert len(transitions) == sum(a != b for a, b in itertools.pairwise(in_process))
    assert [p for t, p, _ in sub.got if t == f"{prefix}/status"][:1] == [b"online"]


async def test_a_hundred_devices_at_once_lose_nothing(
    broker: Mosquitto, prefix: str, bundle_factory: Callable[..., Bundle]
) -> None:
    bundle = bundle_factory("gru", "stateful")
    config = config_for(broker, prefix, bundle)
    devices = [f"dev{i:03d}" for i in range(100)]

    async def device_group(names: list[str]) -> None:
        async with aiomqtt.Client(broker.host, broker.port) as client:
            for start in range(0, 640, 32):
                for name in names:
                    await client.publish(
                        f"{prefix}/{name}/imu", imu(WALK[start : start + 32], seq=start), qos=1
                    )

    async with (
        Listener(broker, f"{prefix}/+/activity") as sub,
        gateway_running(config, bundle) as gw,
    ):
        await asyncio.gather(*(device_group(devices[k::10]) for k in range(10)))
        await sub.until(lambda: len(sub.got) == 100 * 10)
        stats = gw.snapshot()
    per_device: dict[str, list[int]] = {}
    for a in sub.json("/activity"):
        per_device.setdefault(a["device"], []).append(a["seq"])
    assert sorted(per_device) == devices
    assert all(sorted(s) == list(range(63, 640, 64)) for s in per_device.values())
    assert stats["dropped"] == {"overload": 0, "seq_old": 0, "too_many_devices": 0}
    assert stats["devices"] == 100 and stats["samples"] == 100 * 640


async def test_every_bad_input_is_reported_and_others_are_served(
    broker: Mosquitto, prefix: str, bundle_factory: Callable[..., Bundle]
) -> None:
    bundle = bundle_factory("gru", "stateful")
    config = config_for(broker, prefix, bundle, "service.error_interval_s=0")
    async with (
        Listener(broker, f"{prefix}/+/error", f"{prefix}/good/activity") as sub,
        gateway_running(config, bundle),
        aiomqtt.Client(broker.host, broker.port) as dev,
    ):
        for k, (device, payload, _) in enumerate(BAD_INPUTS, start=1):
            await dev.publish(f"{prefix}/{device}/imu", payload, qos=1)
            await sub.until_count("/error", k)  # one at a time: the order is checked below
        await dev.publish(f"{prefix}/gap/imu", imu(WALK[:64], seq=0), qos=1)
        await dev.publish(f"{prefix}/gap/imu", imu(WALK[100:164], seq=100), qos=1)  # gap: reset
        await dev.publish(f"{prefix}/gap/imu", imu(WALK[100:164], seq=100), qos=1)  # duplicate
        await dev.publish(f"{prefix}/good/imu", imu(WALK[:128], seq=0), qos=1)
        await sub.until(lambda: len(sub.json("/good/activity")) == 2)
        await sub.until(lambda: len(sub.json("/error")) == len(BAD_INPUTS) + 2)
    codes = [e["error"] for e in sub.json("/error")]
    assert codes == [code for _, _, code in BAD_INPUTS] + ["seq_gap", "seq_old"]
    assert all(e["detail"] for e in sub.json("/error"))


async def test_broker_restart_reconnects_and_keeps_device_state(
    own_broker: Mosquitto, prefix: str, bundle_factory: Callable[..., Bundle]
) -> None:
    bundle = bundle_factory("gru", "stateful")
    config = config_for(own_broker, prefix, bundle)
    async with gateway_running(config, bundle) as gw:
        async with aiomqtt.Client(own_broker.host, own_broker.port) as dev:
            await dev.publish(f"{prefix}/d/imu", imu(WALK[:100], seq=0), qos=1)
        await _until(lambda: gw.snapshot()["decisions"] == 1)
        own_broker.restart(down_s=0.5)
        await _until(lambda: gw.counters["reconnects"] >= 1)
        await asyncio.wait_for(gw.connected.wait(), 15)
        async with Listener(own_broker, f"{prefix}/#") as sub:
            async with aiomqtt.Client(own_broker.host, own_broker.port) as dev:
                await dev.publish(f"{prefix}/d/imu", imu(WALK[100:200], seq=100), qos=1)
            await sub.until(lambda: len(live(sub)) == 2)
    assert [a["seq"] for a in live(sub)] == [127, 191]
    assert gw.engine.counters["resets"] == 0


def live(sub: Listener) -> list[dict]:
    """The device's decisions as they were made, not the retained one: a decision whose
    PUBACK had not come when the broker stopped is sent again to the new broker (QoS 1,
    paho's persistent session), which keeps it retained and hands it to a new subscriber
    (1 run in ~10 did; the test counted it as a new decision and waited for ever)."""
    return [
        json.loads(p) for t, p, retained in sub.got if t.endswith("/d/activity") and not retained
    ]


async def _until(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


def write_config(
    path: Path, server: Mosquitto, prefix: str, bundle: Bundle, extra: str = ""
) -> Path:
    path.write_text(
        f"broker:\n  host: 127.0.0.1\n  port: {server.port}\n  reconnect_min_s: 0.05\n"
        f"topics:\n  prefix: {prefix}\n  qos_in: 1\n"
        f"model:\n  path: {bundle.path}\n"
        f"service:\n  stats_interval_s: 0.2\n{extra}"
    )
    return path


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_serve_stops_cleanly_on_a_signal(
    broker: Mosquitto,
    prefix: str,
    bundle_factory: Callable[..., Bundle],
    tmp_path: Path,
    sig: signal.Signals,
) -> None:
    bundle = bundle_factory("gru", "stateful")
    config = write_config(tmp_path / "c.yaml", broker, prefix, bundle)
    async with Listener(broker, f"{prefix}/#") as sub:
        process = subprocess.Popen(
            [sys.executable, "-m", "harstream", "serve", "--config", str(config)],
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            await sub.until(
                lambda: (
                    (f"{prefix}/status", b"online", False) in sub.got
                    or (f"{prefix}/status", b"online", True) in sub.got
                )
            )
            async with aiomqtt.Client(broker.host, broker.port) as dev:
                await dev.publish(f"{prefix}/d/imu", imu(WALK[:128], seq=0), qos=1)
            await sub.until(lambda: len(sub.json("/d/activity")) == 2)
            await sub.until(lambda: bool(sub.json("/stats")))
            process.send_signal(sig)
            _, log = await asyncio.to_thread(process.communicate, None, 20)
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
        await sub.until(
            lambda: [p for t, p, _ in sub.got if t == f"{prefix}/status"][-1] == b"offline"
        )
    assert process.returncode == 0
    assert "stopped: queue drained, status offline" in log
    stats = sub.json("/stats")[-1]
    assert stats["decisions"] == 2 and stats["latency_ms"]["count"] >= 0


async def test_bad_config_or_model_fails_fast(
    broker: Mosquitto, prefix: str, tmp_path: Path, bundle_factory: Callable[..., Bundle]
) -> None:
    bundle = bundle_factory("gru", "stateful")
    bad = write_config(tmp_path / "c.yaml", broker, prefix, bundle, "stream:\n  rate_hz: 100\n")
    result = subprocess.run(
        [sys.executable, "-m", "harstream", "serve", "--config", str(bad)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "stream.rate_hz: 100.0 Hz, but bundle" in result.stderr
    missing = write_config(tmp_path / "m.yaml", broker, prefix, bundle)
    missing.write_text(missing.read_text().replace(str(bundle.path), str(tmp_path / "none")))
    result = subprocess.run(
        [sys.executable, "-m", "harstream", "serve", "--config", str(missing)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1 and "bundle.json: missing" in result.stderr


def tls_broker(
    tmp_path: Path,
    password: str,
    *,
    anonymous: bool = True,
    require_certificate: bool = False,
    websockets: bool = False,
) -> tuple[Mosquitto, int, dict[str, Path]]:
    """A started mosquitto with a TLS listener (a throwaway CA) beside its plain one, and
    the user `gateway` with ``password``; returns it, the TLS port and the certificates."""
    certs = make_ca(tmp_path)
    passwords = tmp_path / "passwd"
    subprocess.run(
        ["mosquitto_passwd", "-b", "-c", str(passwords), "gateway", password],
        check=True,
        capture_output=True,
    )
    tls_port = Mosquitto(tmp_path).port
    server = Mosquitto(
        tmp_path / "m",
        anonymous=anonymous,
        websockets=websockets,
        extra=(
            f"password_file {passwords}\n"
            f"listener {tls_port} 127.0.0.1\n"
            f"cafile {certs['ca']}\ncertfile {certs['server_cert']}\n"
            f"keyfile {certs['server_key']}\n"
            + ("require_certificate true\n" if require_certificate else "")
        ),
    )
    return server.start(), tls_port, certs


async def test_password_and_tls(
    tmp_path: Path,
    prefix: str,
    bundle_factory: Callable[..., Bundle],
    caplog: pytest.LogCaptureFixture,
) -> None:
    bundle = bundle_factory("gru", "stateful")
    server, tls_port, certs = tls_broker(
        tmp_path, "s3cret-pw", anonymous=False, require_certificate=True
    )
    try:
        plain = config_for(
            server, prefix, bundle, "broker.username=gateway", "broker.password=s3cret-pw"
        )
        tls = config_for(
            server,
            prefix,
            bundle,
            "broker.username=gateway",
            "broker.password=s3cret-pw",
            f"broker.port={tls_port}",
            f"broker.tls.ca_file={certs['ca']}",
            f"broker.tls.cert_file={certs['client_cert']}",
            f"broker.tls.key_file={certs['client_key']}",
        )
        for config in (plain, tls):
            async with gateway_running(config, bundle) as gw:
                client = mqtt_transport(config, client_id=f"dev-{config.broker.port}")
                async with client.session() as dev:
                    await dev.publish(f"{prefix}/d/imu", imu(WALK[:64], seq=0), qos=1)
                await _until(lambda gw=gw: gw.snapshot()["decisions"] == 1)
        wrong = config_for(
            server, prefix, bundle, "broker.username=gateway", "broker.password=wrong-pw"
        )
        gateway = Gateway(
            build_engine(wrong, bundle), mqtt_transport(wrong), gateway_settings(wrong, bundle)
        )
        stop = asyncio.Event()
        with caplog.at_level("WARNING", logger="harstream"):
            task = asyncio.create_task(gateway.run(stop))
            await _until(lambda: gateway.counters["reconnects"] >= 2)
            assert not gateway.connected.is_set()
            stop.set()
            await asyncio.wait_for(task, 10)
        assert "broker unavailable" in caplog.text
        assert "s3cret-pw" not in caplog.text and "wrong-pw" not in caplog.text
        assert "wrong-pw" not in repr(mqtt_transport(wrong))
    finally:
        server.stop()


async def test_home_assistant_discovery_through_the_broker(
    broker: Mosquitto, prefix: str, bundle_factory: Callable[..., Bundle]
) -> None:
    bundle = bundle_factory("gru", "stateful")
    ha = f"ha{prefix}"
    config = config_for(
        broker, prefix, bundle, "homeassistant.enabled=true", f"homeassistant.discovery_prefix={ha}"
    )
    topic = f"{ha}/sensor/harstream_livingroom/activity/config"
    async with (
        gateway_running(config, bundle),
        Listener(broker, f"{prefix}/livingroom/activity") as first,
    ):
        async with aiomqtt.Client(broker.host, broker.port) as dev:
            await dev.publish(f"{prefix}/livingroom/imu", imu(WALK[:64], seq=0), qos=1)
        await first.until(lambda: len(first.got) == 1)  # discovery went out before it
        async with Listener(broker, topic) as late:  # retained: a late subscriber sees it
            await late.until(lambda: len(late.got) == 1)
            assert late.got[0][2] is True
            config_json = json.loads(late.got[0][1])
            async with aiomqtt.Client(broker.host, broker.port) as ha_client:
                await ha_client.publish(f"{ha}/status", b"online", qos=1)
            await late.until(lambda: len(late.got) == 2)  # announced again
    assert config_json["state_topic"] == f"{prefix}/livingroom/activity"
    assert config_json["json_attributes_topic"] == f"{prefix}/livingroom/activity"
    assert config_json["availability"] == [
        {"topic": f"{prefix}/status"},
        {"topic": f"{prefix}/livingroom/availability"},
    ]
    assert config_json["unique_id"] == "harstream_livingroom_activity"
    assert config_json["device"]["model"] == bundle.name
    async with aiomqtt.Client(broker.host, broker.port) as cleanup:  # leave no retained junk
        await cleanup.publish(topic, b"", retain=True)


@pytest.mark.parametrize("variant", ["tcp", "websockets", "mqtt5", "tls"])
async def test_the_gateway_serves_over_every_transport(
    tmp_path: Path, prefix: str, bundle_factory: Callable[..., Bundle], variant: str
) -> None:
    """The same device stream through the gateway over TCP, websockets, MQTT 5 and TLS
    (with a password); a listener on plain TCP sees every decision."""
    bundle = bundle_factory("gru", "stateful")
    server, tls_port, certs = tls_broker(tmp_path, "pw", websockets=True)
    more = {
        "tcp": [],
        "websockets": ["broker.transport=websockets", f"broker.port={server.ws_port}"],
        "mqtt5": ["broker.protocol=5"],
        "tls": [
            f"broker.port={tls_port}",
            f"broker.tls.ca_file={certs['ca']}",
            "broker.username=gateway",
            "broker.password=pw",
        ],
    }[variant]
    try:
        config = config_for(server, prefix, bundle, *more)
        async with (
            Listener(server, f"{prefix}/+/activity") as sub,
            gateway_running(config, bundle) as gw,
            aiomqtt.Client(server.host, server.port) as dev,
        ):
            for start in range(0, 640, 32):
                await dev.publish(
                    f"{prefix}/d/imu", imu(WALK[start : start + 32], seq=start), qos=1
                )
            await sub.until(lambda: len(sub.json("/activity")) == 10)
            shown = {"tcp": "(tcp://", "websockets": "(websockets://", "mqtt5": "MQTT 5"}
            assert shown.get(variant, "(tcp+tls://") in repr(gw.transport)
        assert [a["seq"] for a in sub.json("/activity")] == list(range(63, 640, 64))
    finally:
        server.stop()


async def test_a_subscriber_that_stops_reading_slows_nobody(
    broker: Mosquitto, prefix: str, bundle_factory: Callable[..., Bundle]
) -> None:
    """A dashboard that subscribes and then never reads: mosquitto queues and drops for it;
    the gateway and every other subscriber go on, the gateway's queues stay empty."""
    import socket

    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    bundle = bundle_factory("gru", "stateful")
    config = config_for(broker, prefix, bundle)
    stuck = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"{prefix}-stuck")
    stuck.connect(broker.host, broker.port)
    stuck.socket().setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.subscribe(f"{prefix}/#", qos=1)
    stuck.loop(timeout=1.0)  # CONNACK and SUBACK read; then its loop never runs again
    try:
        async with (
            Listener(broker, f"{prefix}/+/activity") as sub,
            gateway_running(config, bundle) as gw,
            aiomqtt.Client(broker.host, broker.port) as dev,
        ):
            devices = [f"d{i}" for i in range(50)]
            for start in range(0, 640, 64):
                for name in devices:
                    await dev.publish(
                        f"{prefix}/{name}/imu", imu(WALK[start : start + 64], seq=start)
                    )
            await sub.until(lambda: len(sub.json("/activity")) == 50 * 10)
            stats = gw.snapshot()
        assert stats["publish_failed"] == 0 and stats["dropped"]["overload"] == 0
        assert stats["queue"] == 0
    finally:
        stuck.socket().close()
