"""The closed control plane on real brokers: `harstream deploy mosquitto|nats` with the
users of `harstream deploy user`. A device publishes its own samples and reads its own
decisions, and nothing else; only the operator sends `{prefix}/control`; only a worker
writes its own worker topics; no one gets in without a password."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import aiomqtt
import bcrypt
import pytest

from harstream.brokers.access import (
    Topics,
    add_user,
    mosquitto_acl,
    mosquitto_hash,
    mosquitto_passwords,
    read_users,
)
from harstream.brokers.nats import nats_config
from harstream.cli.deploy import mosquitto_config
from harstream.core.bundle import Bundle
from harstream.errors import ConfigError
from harstream.testing.localnats import Nats
from tests.gateway_helpers import WALK, imu
from tests.mosquitto import Mosquitto, free_port
from tests.test_gateway_broker import Listener, config_for, gateway_running, instance_of
from tests.test_scale import DEVICES, PREFIX, P, worker_config

T0 = 1_790_000_000


def make_users(path: Path, **roles: str) -> dict[str, str]:
    """Users ``name=role`` in a users file; their passwords."""
    return {name: add_user(path, name, role) for name, role in roles.items()}


def closed_mosquitto(workdir: Path, users: Path) -> Mosquitto:
    """mosquitto with the config, password file and ACL file `deploy mosquitto` writes."""
    found = read_users(users)
    passwd, acl = workdir / "passwd", workdir / "acl"
    workdir.mkdir(parents=True)
    passwd.write_text(mosquitto_passwords(found))
    acl.write_text(mosquitto_acl(found, Topics(PREFIX)))
    port = free_port()
    text = mosquitto_config(
        port=port,
        ws_port=free_port(),
        bind="127.0.0.1",
        ws_bind="lo",
        persistence_dir=workdir / "db",
        password_file=passwd,
        acl_file=acl,
    )
    (workdir / "db").mkdir(parents=True)
    log = f"log_dest file {workdir / 'mosquitto.log'}\n"
    root = "user root\n" if os.getuid() == 0 else ""  # root would switch to `mosquitto`
    return Mosquitto(workdir, port=port, config=text + log + root).start()


def as_user(name: str, passwords: dict[str, str], client: str = "test") -> dict[str, object]:
    return {"username": name, "password": passwords[name], "identifier": f"{name}-{client}"}


def test_users_file_and_hashes(tmp_path: Path) -> None:
    users = tmp_path / "users"
    make_users(users, d1="device", op="operator")
    assert [(u.name, u.role) for u in read_users(users)] == [("d1", "device"), ("op", "operator")]
    assert oct(users.stat().st_mode & 0o777) == "0o600"
    add_user(users, "d1", "device", "another-secret")  # replaced, not doubled
    assert [u.name for u in read_users(users)] == ["op", "d1"]
    assert mosquitto_hash("x", b"0123456789ab").startswith("$7$101$MDEyMzQ1Njc4OWFi$")
    with pytest.raises(ConfigError, match="reserved"):
        add_user(users, "control", "device")
    with pytest.raises(ConfigError, match="A-Z a-z"):
        add_user(users, "d/1", "device")
    with pytest.raises(ConfigError, match="a password file and an ACL file, or --anonymous"):
        mosquitto_config()
    with pytest.raises(ConfigError, match="or --anonymous"):
        nats_config()
    assert "allow_anonymous true" in mosquitto_config(anonymous=True)


def test_deploy_cli_writes_the_files_and_says_what_anonymous_opens(tmp_path: Path) -> None:
    users = tmp_path / "users"
    run = [sys.executable, "-m", "harstream", "deploy"]
    made = subprocess.run(
        [*run, "user", "anna", "--role", "device", "--users", str(users)],
        capture_output=True,
        text=True,
        check=True,
    )
    password = made.stdout.strip()
    assert len(password) >= 20 and "anna" in read_users(users)[0].name
    given = subprocess.run(
        [*run, "user", "gw", "--role", "gateway", "--users", str(users), "--password-stdin"],
        input="chosen-secret\n",
        capture_output=True,
        text=True,
        check=True,
    )
    assert given.stdout == ""  # a password given is not printed back
    (gw,) = [u for u in read_users(users) if u.name == "gw"]
    assert bcrypt.checkpw(b"chosen-secret", gw.bcrypt_hash.encode())
    files = ["--password-file", str(tmp_path / "passwd"), "--acl-file", str(tmp_path / "acl")]
    conf = subprocess.run(
        [*run, "mosquitto", "--users", str(users), *files],
        capture_output=True,
        text=True,
        check=False,
    )
    assert conf.returncode == 0, conf.stderr
    assert "allow_anonymous false" in conf.stdout and f"acl_file {tmp_path / 'acl'}" in conf.stdout
    assert (tmp_path / "passwd").read_text().startswith("anna:$7$101$")
    assert "pattern write harstream/%u/imu" in (tmp_path / "acl").read_text()
    nats = subprocess.run(
        [*run, "nats", "--users", str(users)], capture_output=True, text=True, check=False
    )
    assert '{user: "anna", password: "$2b$' in nats.stdout, nats.stderr
    opened = subprocess.run(
        [*run, "mosquitto", "--anonymous"], capture_output=True, text=True, check=False
    )
    assert "allow_anonymous true" in opened.stdout
    assert "may publish any device's samples, send harstream/control" in opened.stderr
    missing = subprocess.run(
        [*run, "nats", "--users", str(tmp_path / "none")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert missing.returncode != 0 and "harstream deploy user" in missing.stderr


async def _refused(server: object, **options: object) -> bool:
    try:
        async with aiomqtt.Client("127.0.0.1", server.port, **options):  # type: ignore[attr-defined, arg-type]
            return False
    except aiomqtt.MqttError:
        return True


@pytest.mark.broker
@pytest.mark.asyncio
async def test_mosquitto_lets_each_user_do_its_part_only(
    tmp_path: Path, bundle_factory: Callable[..., Bundle]
) -> None:
    users = tmp_path / "users"
    pw = make_users(users, d1="device", d2="device", op="operator", gw="gateway")
    broker = closed_mosquitto(tmp_path / "broker", users)
    try:
        assert await _refused(broker)  # anonymous
        assert await _refused(broker, username="d1", password="wrong")
        bundle = bundle_factory("gru", "stateful")
        config = config_for(
            broker, PREFIX, bundle, "broker.username=gw", f"broker.password={pw['gw']}"
        )
        async with (
            gateway_running(config, bundle, reloadable=True) as gateway,
            Listener(broker, f"{PREFIX}/#", **as_user("op", pw)) as operator,
            Listener(broker, f"{PREFIX}/d1/#", f"{PREFIX}/d2/#", **as_user("d1", pw)) as d1,
            Listener(broker, f"{PREFIX}/d2/#", **as_user("d2", pw)) as d2,
        ):
            for s in (0, 64):
                await d1.client.publish(f"{PREFIX}/d1/imu", imu(WALK[s : s + 64], seq=s), qos=1)
                await d2.client.publish(f"{PREFIX}/d2/imu", imu(WALK[s : s + 64], seq=s), qos=1)
            await d1.until(lambda: len(d1.json("/d1/activity")) == 2)  # its own decisions
            await d2.until(lambda: len(d2.json("/d2/activity")) == 2)
            # what d1 may not do: another device's samples, the control topic, a worker's
            await d1.client.publish(f"{PREFIX}/d3/imu", imu(WALK[:64], seq=0), qos=1)
            await d1.client.publish(f"{PREFIX}/control", b'{"command": "reload"}', qos=1)
            await d1.client.publish(f"{PREFIX}/workers/w1/status", b"offline", qos=1)
            await d1.client.publish(f"{PREFIX}/d1/imu", imu(WALK[128:192], seq=128), qos=1)
            await d1.until(lambda: len(d1.json("/d1/activity")) == 3)
            await operator.client.publish(f"{PREFIX}/control", b'{"command": "reload"}', qos=1)
            result = f"{PREFIX}/control/result"
            await operator.until(lambda: any(t == result for t, *_ in operator.got))
            await asyncio.sleep(0.3)
            topics = {t for t, _, _ in operator.got}
            assert not any("/d3/" in t or "/workers/" in t for t in topics), topics
            assert [t for t, *_ in operator.got].count(f"{PREFIX}/control") == 1  # the operator's
            assert [t for t, *_ in operator.got].count(f"{PREFIX}/control/result") == 1
            assert "d3" not in gateway.engine.devices
            assert not any(t.startswith(f"{PREFIX}/d2/") for t, *_ in d1.got)  # not readable
            # a device cannot send another's samples, even with the other's topic
            await d2.client.publish(f"{PREFIX}/d1/imu", imu(WALK[192:256], seq=192), qos=1)
            await asyncio.sleep(0.5)
            assert len(d1.json("/d1/activity")) == 3
    finally:
        broker.stop()


@pytest.mark.broker
@pytest.mark.asyncio
async def test_nats_lets_each_user_do_its_part_only(
    tmp_path: Path, bundle_factory: Callable[..., Bundle]
) -> None:
    """Workers w1 and w2 (takeover on) under their own users; a device, the operator and
    w1 itself try to say w2 is offline: the broker refuses each, w1 never serves w2's
    partitions, every device is decided once."""
    users = tmp_path / "users"
    roles = {d: "device" for d in DEVICES} | {"op": "operator", "w1": "worker", "w2": "worker"}
    pw = make_users(users, **roles)
    server = Nats(tmp_path / "nats", partitions=P, prefix=PREFIX, users=users).start()
    try:
        assert await _refused(server.mqtt)
        bundle = bundle_factory("gru", "stateful")
        workers = [
            worker_config(
                server.mqtt,
                bundle,
                owned,
                name,
                "scale.takeover=true",
                f"broker.username={name}",
                f"broker.password={pw[name]}",
            )
            for owned, name in (("0-3", "w1"), ("4-7", "w2"))
        ]
        async with (
            gateway_running(workers[0], bundle) as w1,
            gateway_running(workers[1], bundle) as w2,
            Listener(server.mqtt, f"{PREFIX}/#", **as_user("op", pw)) as operator,  # type: ignore[arg-type]
            Listener(server.mqtt, f"{PREFIX}/dev0/#", **as_user("dev0", pw, "reader")) as dev0,  # type: ignore[arg-type]
        ):
            with contextlib.suppress(aiomqtt.MqttError):  # refused: another device's
                await dev0.client.subscribe(f"{PREFIX}/dev1/#", qos=1)
            await operator.until(lambda: w1.snapshot()["scale"]["workers"] == ["w1", "w2"], 10)
            status = f"{PREFIX}/workers/w2/status"
            for name in ("dev0", "op", "w1"):
                with contextlib.suppress(aiomqtt.MqttError):
                    spoofer = as_user(name, pw, "spoof")
                    async with aiomqtt.Client("127.0.0.1", server.mqtt_port, **spoofer) as c:  # type: ignore[arg-type]
                        await c.publish(status, b"offline " + instance_of(w2).encode(), qos=1)
                        if name != "op":  # the operator's own right
                            await c.publish(f"{PREFIX}/control", b'{"command": "x"}', qos=1)
            for s in (0, 64):
                for device in DEVICES:
                    async with aiomqtt.Client(
                        "127.0.0.1", server.mqtt_port, **as_user(device, pw)
                    ) as c:
                        payload = imu(WALK[s : s + 64], seq=s, t=T0 + s / 50)
                        await c.publish(f"{PREFIX}/{device}/imu", payload, qos=1)
            await operator.until(lambda: len(operator.json("/activity")) == 2 * len(DEVICES), 30)
            await asyncio.sleep(0.5)
            spoofed = [p for t, p, _ in operator.got if t == status and p.startswith(b"offline")]
            assert spoofed == [], spoofed
            assert not any(t == f"{PREFIX}/control" for t, *_ in operator.got)
            assert w1.snapshot()["scale"]["serving"] == "0-3"
            assert w2.snapshot()["scale"]["own_restored"] == 0
            assert len(dev0.json("/dev0/activity")) == 2  # its own decisions, and no other's
            assert {t.split("/")[1] for t, *_ in dev0.got} == {"dev0"}
        for device in DEVICES:
            seqs = [a["seq"] for a in operator.json(f"/{device}/activity")]
            assert seqs == [63, 127], device
    finally:
        server.stop()
