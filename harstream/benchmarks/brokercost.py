"""What a nats-server spends per message of each kind harstream sends it, without workers.

``python -m harstream.benchmarks.brokercost --servers nats,/usr/sbin/nats-server``
starts, for each server in turn (``rounds`` times, alternating), a private nats-server
(:mod:`harstream.testing.localnats`, the config ``harstream deploy nats`` writes) and
plain MQTT clients in processes of their own (the gateway's transport: paho-mqtt), then
reads the server's CPU from /proc while they send. Each kind of traffic alone:

- ``imu``: N devices each publish one 50-sample JSON message a second at QoS 0 (or
  ``device_qos``) to
  ``{prefix}/{device}/imu``, which the server maps to the device's partition; one
  subscriber holds a worker's subscriptions (4 kinds x P partitions, QoS 1, persistent
  session) and only counts what it gets.
- ``activity``: one publisher sends what workers send back, an activity a device every
  64 samples (N x 50/64 a second), retained at QoS 1 on ``{prefix}/{device}/activity``;
  a subscriber (the devices' side) subscribes to each device's activity topic.
- ``both``: the two together (a worker's whole traffic).

Per message: the server's CPU over the messages it was handed (the publishes, each once).
``--profile DIR`` first writes a Go CPU profile of each server (``prof_port``) per kind
(``s0-imu.pb.gz``: the first server's; read them with
:mod:`harstream.benchmarks.pproftop`), in points of their own: profiling costs CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from harstream.benchmarks.e2e import _proc_cpu_s
from harstream.benchmarks.engine import synthetic_stream
from harstream.core.payload import encode_imu
from harstream.gateway.mqtt import MqttTransport
from harstream.gateway.scale import SENSOR_LOGGER_KIND
from harstream.natsserver import read_server_version
from harstream.testing.localbroker import end_process, free_port
from harstream.testing.localnats import Nats

__all__ = ["broker_cost"]

KINDS = ("imu", "activity", "both")
HOP = 64
# an activity as a worker publishes it (encode_activities), ~330 bytes
ACTIVITY = json.dumps(
    {
        "device": "sim00000",
        "activity": "WALKING",
        "confidence": 0.9731,
        "probabilities": {
            k: 0.0045
            for k in ("WALKING", "UPSTAIRS", "DOWNSTAIRS", "SITTING", "STANDING", "LAYING")
        },
        "raw_activity": "WALKING",
        "seq": 6336,
        "t": 1764900000.123,
        "received": 1764900000.101,
        "model": "gru-hapt-v3",
    }
).encode()


async def _paced(
    count: int, rate: float, seconds: float, start_at: float, send: Any
) -> tuple[int, float]:
    """Call ``send(i)`` for ``count`` items in turn, ``rate`` a second in all, from
    ``start_at`` for ``seconds``; returns how many were sent and the lateness p99 (s)."""
    await asyncio.sleep(max(0.0, start_at - time.time()))
    began = time.monotonic()
    sent, late = 0, []
    total = int(rate * seconds)
    while sent < total:
        now = time.monotonic()
        due = min(int((now - began) * rate) + 1, total)
        if due <= sent:
            await asyncio.sleep(0.005)
            continue
        late.append(now - (began + sent / rate))
        for n in range(sent, due):
            send(n % count)
        sent = due
        await asyncio.sleep(0)
    late.sort()
    return sent, late[int(0.99 * (len(late) - 1))] if late else 0.0


async def _client(role: dict[str, Any]) -> dict[str, Any]:
    """One client process's part (``role["role"]``), until ``seconds`` after ``start_at``
    and ``grace_s`` more; prints what it sent and received."""
    prefix, devices = role["prefix"], role["devices"]
    names = [f"sim{i:05d}" for i in range(devices)]
    received = 0
    transport = MqttTransport(
        "127.0.0.1",
        role["port"],
        client_id=f"{role['role']}-{prefix}",
        clean_session=role["role"] != "sink",  # the sink: a worker's persistent session
        max_queued=100_000,
    )
    async with transport.session() as session:
        if role["role"] == "sink":
            kinds = ("imu", "calibrate", "label", SENSOR_LOGGER_KIND)
            topics = [f"{prefix}/{k}/{p}/+" for p in range(role["partitions"]) for k in kinds]
            qos = role["qos_in"]
        elif role["role"] == "devices" and role["watch"]:
            topics, qos = [f"{prefix}/{n}/activity" for n in names], 0
        else:
            topics, qos = [], 0
        for at in range(0, len(topics), 100):
            await asyncio.gather(*(session.subscribe(t, qos) for t in topics[at : at + 100]))
        print("ready", flush=True)  # subscribed: the driver answers with the start time
        role["start_at"] = float(await asyncio.to_thread(sys.stdin.readline))

        async def collect() -> None:
            nonlocal received
            async for batch in session.batches():
                received += len(batch)

        collector = asyncio.create_task(collect())
        sent, late = 0, 0.0
        if role["role"] == "devices" and role["send"]:
            body = synthetic_stream(50 * 120)[:50]
            payload = encode_imu(body, 6300, decimals=5)
            imu = [f"{prefix}/{n}/imu" for n in names]
            sent, late = await _paced(
                devices,
                devices,
                role["seconds"],
                role["start_at"],
                lambda i: session.publish_nowait(imu[i], payload, qos=role["device_qos"]),
            )
        elif role["role"] == "activities":
            activity = [f"{prefix}/{n}/activity" for n in names]
            sent, late = await _paced(
                devices,
                devices * 50 / HOP,
                role["seconds"],
                role["start_at"],
                lambda i: session.publish_nowait(
                    activity[i], ACTIVITY, qos=role["activity_qos"], retain=role["retain"]
                ),
            )
        else:
            await asyncio.sleep(max(0.0, role["start_at"] + role["seconds"] - time.time()))
        await asyncio.sleep(role["grace_s"])
        collector.cancel()
    return {"role": role["role"], "sent": sent, "received": received, "late_p99_s": late}


def _one(
    binary: str,
    kind: str,
    *,
    devices: int,
    seconds: float,
    partitions: int,
    qos_in: int,
    activity_qos: int,
    retain: bool,
    device_qos: int,
    mqtt_options: dict[str, str],
    profile: Path | None,
    tag: str,
) -> dict[str, Any]:
    """One point: ``binary`` under ``kind`` of traffic; with ``profile``, its CPU profile
    (written there) instead of a measurement (profiling costs the server CPU)."""
    prefix = f"cost{os.getpid()}"
    prof_port = free_port() if profile is not None else 0
    with tempfile.TemporaryDirectory(prefix="harstream-brokercost-") as tmp:
        server = Nats(
            Path(tmp) / "nats",
            partitions,
            prefix,
            binary=binary,
            mqtt_options=mqtt_options,
            prof_port=prof_port,
        ).start()
        version = read_server_version("127.0.0.1", server.port)
        common = {
            "port": server.mqtt_port,
            "prefix": prefix,
            "devices": devices,
            "seconds": seconds,
            "grace_s": 2.0,
            "partitions": partitions,
            "qos_in": qos_in,
            "activity_qos": activity_qos,
            "retain": retain,
            "device_qos": device_qos,
        }
        roles = [{**common, "role": "sink"}]
        roles.append(
            {**common, "role": "devices", "send": kind != "activity", "watch": kind != "imu"}
        )
        if kind != "imu":
            roles.append({**common, "role": "activities"})
        clients = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "harstream.benchmarks.brokercost",
                    "--client",
                    json.dumps(r),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for r in roles
        ]
        try:
            assert server.process is not None
            for c in clients:  # every subscription made (a worker's, before it serves)
                assert c.stdout is not None
                if c.stdout.readline().strip() != "ready":
                    raise RuntimeError(f"client failed: {c.communicate()[1][-2000:]}")
            start_at = time.time() + 0.5
            for c in clients:
                assert c.stdin is not None
                c.stdin.write(f"{start_at}\n")
                c.stdin.flush()
            time.sleep(max(0.0, start_at + 1.0 - time.time()))  # past the first second
            before, wall = _proc_cpu_s(server.process.pid), time.monotonic()
            window = seconds - 2.0
            if profile is not None:
                url = f"http://127.0.0.1:{prof_port}/debug/pprof/profile?seconds={int(window)}"
                with urllib.request.urlopen(url, timeout=window + 30) as answer:
                    (profile / f"{tag}-{kind}.pb.gz").write_bytes(answer.read())
            time.sleep(max(0.0, wall + window - time.monotonic()))
            cpu, wall = _proc_cpu_s(server.process.pid) - before, time.monotonic() - wall
            outputs = [c.communicate(timeout=seconds + 120) for c in clients]
            assert server.process is not None
        finally:
            for c in clients:
                end_process(c, 10.0)
            server.stop()
    parts = {}
    for (out, err), c in zip(outputs, clients, strict=True):
        if c.returncode != 0:
            raise RuntimeError(f"client failed: {err[-2000:]}")
        part = json.loads(out.strip().splitlines()[-1])
        parts[part.pop("role")] = part
    sent = sum(p["sent"] for p in parts.values())
    rate = sent / seconds  # messages a second handed to the server
    return {
        "server": f"nats-server {version}",
        "kind": kind,
        "cpu_share": round(cpu / wall, 3),
        "us_per_message": round(1e6 * cpu / (rate * wall), 1),
        "messages_per_s": round(rate, 1),
        "clients": parts,
    }


def broker_cost(
    servers: list[str],
    *,
    kinds: tuple[str, ...] = KINDS,
    devices: int = 1500,
    seconds: float = 15.0,
    rounds: int = 3,
    partitions: int = 128,
    qos_in: int = 1,
    activity_qos: int = 1,
    retain: bool = True,
    device_qos: int = 0,
    mqtt_options: dict[str, str] | None = None,
    profile: Path | None = None,
) -> list[dict[str, Any]]:
    """Every (kind, server) ``rounds`` times, the servers alternating; one row each with
    the rounds' figures and their median. With ``profile``: first one profiled point of
    each (not counted)."""
    found: dict[tuple[str, str], list[dict[str, Any]]] = {}
    plan = [(r, kind, s) for r in range(rounds) for kind in kinds for s in range(len(servers))]
    if profile is not None:
        plan = [(-1, kind, s) for kind in kinds for s in range(len(servers))] + plan
    for r, kind, s in plan:
        point = _one(
            servers[s],
            kind,
            devices=devices,
            seconds=seconds,
            partitions=partitions,
            qos_in=qos_in,
            activity_qos=activity_qos,
            retain=retain,
            device_qos=device_qos,
            mqtt_options=mqtt_options or {},
            profile=profile if r < 0 else None,
            tag=f"s{s}",
        )
        print(json.dumps(point), file=sys.stderr, flush=True)
        if r >= 0:
            found.setdefault((kind, servers[s]), []).append(point)
    rows = []
    for (kind, binary), points in found.items():
        us = [p["us_per_message"] for p in points]
        rows.append(
            {
                "server": points[0]["server"],
                "binary": binary,
                "kind": kind,
                "us_per_message": us,
                "median_us": statistics.median(us),
                "cpu_share": statistics.median(p["cpu_share"] for p in points),
                "messages_per_s": points[0]["messages_per_s"],
            }
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--client", help=argparse.SUPPRESS)
    parser.add_argument("--servers", default="nats,/usr/sbin/nats-server")
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--devices", type=int, default=1500)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--qos-in", type=int, default=1, help="the sink's subscriptions")
    parser.add_argument("--activity-qos", type=int, default=1)
    parser.add_argument("--device-qos", type=int, default=0)
    parser.add_argument("--no-retain", action="store_true", help="activities not retained")
    parser.add_argument("--mqtt", action="append", default=[], help="mqtt option KEY=VALUE")
    parser.add_argument("--profile", type=Path)
    args = parser.parse_args(argv)
    if args.client:
        print(json.dumps(asyncio.run(_client(json.loads(args.client)))), flush=True)
        return
    from harstream.natsserver import find_nats_server

    servers = [find_nats_server().path if s == "nats" else s for s in args.servers.split(",")]
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    rows = broker_cost(
        servers,
        kinds=tuple(args.kinds.split(",")),
        devices=args.devices,
        seconds=args.seconds,
        rounds=args.rounds,
        qos_in=args.qos_in,
        activity_qos=args.activity_qos,
        retain=not args.no_retain,
        device_qos=args.device_qos,
        mqtt_options=dict(o.split("=", 1) for o in args.mqtt),
        profile=args.profile,
    )
    for row in rows:
        print(json.dumps(row))


if __name__ == "__main__":
    main()
