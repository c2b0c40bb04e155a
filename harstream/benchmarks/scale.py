"""Scaling out: the gateway as 1 or more workers on NATS (partitioned device topics)
against one gateway on mosquitto, under load generators that keep up.

Each point starts the broker (mosquitto, or a nats-server: the one
:func:`harstream.natsserver.find_nats_server` finds, or the binary named, so that two
releases can be compared in one run), N ``harstream serve`` processes (workers owning
equal ranges of the P partitions, or one plain gateway) and G load-generator processes
(harstream.benchmarks.loadgen), each with its own devices, client id and subscriptions
to its devices' activity topics, all sending from the same moment. What it measures
from /proc while they send (and until the last generator is done): each worker's CPU
and its CPU per device-second (over the devices of its partitions), the broker's CPU per
message (devices' messages plus the activities published back), the generators' CPU;
and from the generators, merged: p50 / p99 latency and decisions lost.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harstream.benchmarks.e2e import _proc_cpu_s, _wait_online, serve_command
from harstream.core.bundle import Bundle
from harstream.core.partitions import parse_owned, partition_of
from harstream.natsserver import read_server_version
from harstream.testing.localbroker import Mosquitto, end_process
from harstream.testing.localnats import Nats, nats_cluster

__all__ = ["Fleet", "device_names", "scale_run"]


@dataclass
class Fleet:
    """The gateways of a point while it runs, for ``scale_run(during=...)``."""

    port: int  # the broker's MQTT port
    prefix: str
    processes: list[subprocess.Popen[bytes]]  # replace one to restart it
    commands: list[list[str]]  # what started each
    statuses: list[str] = field(default_factory=list)  # each one's status topic
    owned: list[frozenset[int]] = field(default_factory=list)  # each one's partitions
    logs: list[Any] = field(default_factory=list)  # each one's stderr
    before_kill: Callable[[], float] = lambda: 0.0  # call before killing a broker node
    servers: list[Any] = field(default_factory=list)  # the broker's nodes (Nats, Mosquitto)
    ports: list[int] = field(default_factory=list)  # their MQTT ports
    nodes: list[int] = field(default_factory=list)  # the node each worker connects to first


def _ranges(partitions: int, workers: int) -> list[str]:
    size = partitions // workers
    return [
        f"{k * size}-{(k + 1) * size - 1 if k < workers - 1 else partitions - 1}"
        for k in range(workers)
    ]


def device_names(devices: int) -> list[str]:
    """The load generators' device ids, in order (loadgen names them so)."""
    return [f"sim{i:05d}" for i in range(devices)]


def _split(devices: int, generators: int) -> list[tuple[int, int]]:
    """``(first device, count)`` of each generator: as equal as they go."""
    bounds = [devices * g // generators for g in range(generators + 1)]
    return [(bounds[g], bounds[g + 1] - bounds[g]) for g in range(generators)]


def _generators(
    spec: dict[str, Any], devices: int, generators: int, start_at: float, ports: list[int]
) -> list[subprocess.Popen[str]]:
    """The load generators; generator g connects to node ``g % len(ports)`` first and,
    in a cluster, to the others when it loses it."""
    started = []
    for g, (first, count) in enumerate(_split(devices, max(1, min(generators, devices)))):
        node = g % len(ports)
        mine = {
            **spec,
            "port": ports[node],
            "fallback_ports": [*ports[node + 1 :], *ports[:node]],
            "devices": count,
            "first_device": first,
            "client_id": f"loadgen-{spec['prefix']}-{g}",
            "own_topics": True,
            "start_at": start_at,
            "samples": True,
        }
        command = [sys.executable, "-m", "harstream.benchmarks.loadgen", json.dumps(mine)]
        started.append(
            subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        )
    return started


def _merged(outputs: list[tuple[str, str, int]]) -> dict[str, Any]:
    """The generators' JSON lines as one load's result."""
    parts = []
    for out, err, code in outputs:
        if code != 0:
            raise RuntimeError(f"load generator failed: {err[-2000:]}")
        parts.append(json.loads(out.strip().splitlines()[-1]))
    lat = np.array([x for part in parts for x in part.pop("latencies_ms")] or [np.nan])
    total = {k: sum(part[k] for part in parts) for k in ("devices", "messages_sent")}
    for k in ("decisions_expected", "decisions_received", "lost", "duplicates", "shifted"):
        total[k] = sum(part[k] for part in parts)
    gaps = {d: g for part in parts for d, g in part.pop("max_gap_s", {}).items()}
    missing = [m for part in parts for m in part.pop("missing", [])]
    return {
        **total,
        "latency_ms": {
            q: round(float(np.nanpercentile(lat, v)), 2)
            for q, v in (("p50", 50), ("p90", 90), ("p99", 99), ("max", 100))
        },
        "generators": len(parts),
        "generator_late_ms_p99": max(part["generator_late_ms_p99"] for part in parts),
        "generator_late_start_s": max(part["late_start_s"] for part in parts),
        "generator_cpu_s": [part["cpu_s"] for part in parts],
        **({"max_gap_s": gaps, "missing": missing} if gaps else {}),
    }


def _start_broker(
    tmp: str,
    broker: str,
    partitions: int,
    prefix: str,
    nats_server: str | None,
    cluster: int,
    mqtt_options: dict[str, str],
) -> tuple[list[Nats] | list[Mosquitto], str]:
    """The broker's nodes (one, or a NATS cluster of ``cluster``) and what it is
    (``nats-server 2.15.1``, ``mosquitto``)."""
    if broker == "nats":
        if cluster > 1:
            nodes = nats_cluster(
                Path(tmp) / "nats", cluster, partitions, prefix, nats_server, mqtt_options
            )
        else:
            nats = Nats(
                Path(tmp) / "nats",
                partitions,
                prefix,
                binary=nats_server,
                mqtt_options=mqtt_options,
            )
            nodes = [nats.start()]
        version = read_server_version("127.0.0.1", nodes[0].port)
        return nodes, f"nats-server {version}" + (f" x{cluster}" if cluster > 1 else "")
    return [Mosquitto(Path(tmp) / "broker").start()], "mosquitto"


class _BrokerCpu:
    """The CPU seconds of the broker's nodes together; a node that is gone counts with its
    last reading (read it just before killing one)."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.last = [0.0] * len(pids)

    def read(self) -> float:
        for i, pid in enumerate(self.pids):
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                self.last[i] = _proc_cpu_s(pid)
        return sum(self.last)


def _plans(
    servers: list[Nats] | list[Mosquitto],
    ports: list[int],
    partitions: int,
    workers: int,
    prefix: str,
) -> tuple[list[tuple[list[str], str]], list[frozenset[int]], list[int]]:
    """Each gateway's own config and status topic, its partitions, its first node."""
    if not isinstance(servers[0], Nats):
        return (
            [([f"broker.port={ports[0]}"], f"{prefix}/status")],
            [frozenset(range(partitions))],
            [0],
        )
    plans, owned, nodes = [], [], []
    for k, ranges in enumerate(_ranges(partitions, workers)):
        node = k % len(servers)
        others = [*ports[node + 1 :], *ports[:node]]
        nats = servers[node]
        assert isinstance(nats, Nats)
        more = [
            f"broker.port={ports[node]}",
            f"broker.fallbacks=[{','.join(f'127.0.0.1:{p}' for p in others)}]",
            f"scale.partitions={partitions}",
            f"scale.owned={ranges}",
            f"scale.worker=w{k}",
            f"scale.nats_port={nats.port}",
        ]
        plans.append((more, f"{prefix}/workers/w{k}/status"))
        owned.append(parse_owned(ranges, partitions))
        nodes.append(node)
    return plans, owned, nodes


def scale_run(
    bundle: Bundle,
    *,
    devices: int,
    seconds: float,
    workers: int = 1,
    broker: str = "nats",
    partitions: int = 128,
    message_samples: int = 50,
    overrides: tuple[str, ...] = (),
    generators: int = 1,
    nats_server: str | None = None,
    load: Mapping[str, Any] | None = None,
    during: Callable[[Fleet], dict[str, Any]] | None = None,
    cluster: int = 1,
    mqtt_options: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """One point: ``devices`` at 50 Hz for ``seconds`` through ``broker`` (nats:
    ``workers`` workers on ``nats_server``, default the one found; mosquitto: one
    gateway), sent by ``generators`` processes; ``overrides``: config for every gateway;
    ``load``: more of the generators' spec (loadgen.LoadSpec); ``during``: called once
    the devices send (a failover's kill and restart), its answer joins the result;
    ``cluster``: a NATS cluster of that many nodes, worker k and generator g connected to
    node ``k % cluster`` and ``g % cluster`` first (``broker.fallbacks``: the others);
    ``mqtt_options``: more of nats-server's mqtt block (nats_config)."""
    prefix = f"bench{os.getpid()}"
    with tempfile.TemporaryDirectory(prefix="harstream-scale-") as tmp:
        servers, server_name = _start_broker(
            tmp, broker, partitions, prefix, nats_server, cluster, dict(mqtt_options or {})
        )
        ports = [s.mqtt_port if isinstance(s, Nats) else s.port for s in servers]
        port = ports[0]
        common = [
            "broker.host=127.0.0.1",
            f"topics.prefix={prefix}",
            f"model.path={bundle.path}",
            "model.backend=onnx",
            f"stream.max_devices={max(devices, 1) * 2}",
            "logging.level=WARNING",
            *overrides,
        ]
        plans, owned, nodes = _plans(servers, ports, partitions, workers, prefix)
        processes: list[subprocess.Popen[bytes]] = []
        loads: list[subprocess.Popen[str]] = []
        logs: list[Any] = []
        try:
            for more, _ in plans:
                log = (Path(tmp) / f"gateway{len(processes)}.log").open("w")
                logs.append(log)
                processes.append(subprocess.Popen(serve_command([*common, *more]), stderr=log))
            for _, status in plans:
                _wait_online(port, prefix, topic=status)
            spec = {
                "prefix": prefix,
                "seconds": seconds,
                "message_samples": message_samples,
                "hop": bundle.hop,
                "first_decision": bundle.hop,
                **(load or {}),
            }
            # time to start Python and subscribe to each device's activity topic
            start_at = time.time() + 3.0 + devices / max(generators, 1) / 500
            loads = _generators(spec, devices, generators, start_at, ports)
            time.sleep(max(0.0, start_at - time.time()))
            broker_cpu = _BrokerCpu([s.process.pid for s in servers if s.process is not None])
            before = [_proc_cpu_s(p.pid) for p in processes]
            before.append(broker_cpu.read())
            fleet = Fleet(port, prefix, processes, [serve_command([*common, *m]) for m, _ in plans])
            fleet.statuses, fleet.owned, fleet.logs = [t for _, t in plans], owned, logs
            fleet.servers, fleet.nodes, fleet.before_kill = list(servers), nodes, broker_cpu.read
            fleet.ports = ports
            happened = during(fleet) if during is not None else {}
            outputs: list[tuple[str, str, int]] = []
            for g in loads:  # a generator's CPU: what it says (its own process time)
                out, err = g.communicate(timeout=seconds + 180)
                outputs.append((out, err, g.returncode))
            after = [_proc_cpu_s(p.pid) for p in processes]
            after.append(broker_cpu.read())
        finally:
            children: list[subprocess.Popen[Any]] = [*loads, *processes]
            for p in children:  # all asked at once, then each waited for
                p.terminate()
            for p in children:
                end_process(p, 20.0)
            for log in logs:
                log.close()
            for node in servers:
                node.stop()
    cpu = [a - b for a, b in zip(after, before, strict=True)]  # a restarted worker: both
    return {
        **_result(_merged(outputs), broker, server_name, owned, partitions, devices, seconds, cpu),
        **happened,
    }


def _result(
    load: dict[str, Any],
    broker: str,
    server_name: str,
    owned: list[frozenset[int]],
    partitions: int,
    devices: int,
    seconds: float,
    cpu: list[float],
) -> dict[str, Any]:
    """The point's numbers: CPU over the seconds of load (cores), per device-second."""
    *workers_cpu, broker_cpu = cpu
    names = device_names(devices)
    per_worker = [
        sum(1 for name in names if partition_of(name, partitions) in mine) for mine in owned
    ]
    messages = load["messages_sent"] + load["decisions_received"]
    return {
        **load,
        "broker": broker,
        "server": server_name,
        "workers": len(workers_cpu),
        "worker_devices": per_worker,
        "worker_cpu_share": [round(c / seconds, 3) for c in workers_cpu],
        "worker_cpu_ms_per_device_s": [
            round(1000 * c / (max(k, 1) * seconds), 4)
            for c, k in zip(workers_cpu, per_worker, strict=True)
        ],
        "gateway_cpu_share": round(sum(workers_cpu) / seconds, 3),
        "cpu_ms_per_device_s": round(1000 * sum(workers_cpu) / (max(devices, 1) * seconds), 4),
        "broker_cpu_share": round(broker_cpu / seconds, 3),
        "broker_cpu_us_per_message": round(1e6 * broker_cpu / max(messages, 1), 1),
        "generator_cpu_share": [round(c / seconds, 3) for c in load.pop("generator_cpu_s")],
    }
