"""Failover at scale: ``kill -9`` of one of N workers under load, and its return.

A point of :func:`harstream.benchmarks.scale.scale_run` whose devices publish at QoS 1
(what a worker's persistent session keeps for it while it is down): ``kill_at_s`` after
the devices start, worker ``w0`` is killed; ``down_s`` later it is started again under
the same name. Measured: how long its devices wait for a decision (each device's
longest time between two decisions, against the other devices' over the same run),
decisions lost (expected and never received by the end; ``lost_net``: less those that came at
other stream positions, since a worker that starts a device over counts its hops from
the first message it sees), decisions received twice
(duplicates), and the time from the restart to its status ``online``. With
``takeover`` the live workers serve its partitions meanwhile (``scale.takeover``).

With ``cluster`` (3): a NATS cluster of that many nodes, worker k and generator g
connected to node ``k % cluster`` and ``g % cluster`` (``broker.fallbacks``: the other
nodes), and what is killed (``kill_node``) is node 1 itself, for the rest of the run:
the workers and generators that were connected to it reconnect to another node. The
waits are reported apart for the devices served by a worker of that node, the devices
whose generator was on it, and the others.
"""

from __future__ import annotations

import statistics
import subprocess
import time
from typing import Any

from harstream.benchmarks.e2e import _wait_online
from harstream.benchmarks.scale import Fleet, _ranges, _split, device_names, scale_run
from harstream.core.bundle import Bundle
from harstream.core.partitions import parse_owned, partition_of

__all__ = ["failover_run"]


def failover_run(
    bundle: Bundle,
    *,
    devices: int,
    workers: int,
    seconds: float = 30.0,
    kill_at_s: float = 10.0,
    down_s: float = 5.0,
    takeover: bool = False,
    generators: int = 2,
    partitions: int = 128,
    message_samples: int = 50,
    nats_server: str | None = None,
    cluster: int = 1,
    kill_node: bool = False,
    mqtt_options: dict[str, str] | None = None,
) -> dict[str, Any]:
    """One failover: the numbers above, beside the point's latency and CPU."""
    if kill_node and cluster < 2:
        raise ValueError("kill_node needs a cluster of 2 nodes or more")

    def kill_a_node(fleet: Fleet) -> dict[str, Any]:
        time.sleep(kill_at_s)
        fleet.before_kill()  # its CPU until now
        node = fleet.servers[0]
        node.process.kill()  # SIGKILL: no goodbye
        killed = time.monotonic()
        node.process.wait()
        node.process = None
        # its workers' and generators' reconnections show in their devices' waits
        return {"workers_moved": sum(1 for n in fleet.nodes if n == 0), "killed_s": killed}

    def kill_and_restart(fleet: Fleet) -> dict[str, Any]:
        time.sleep(kill_at_s)
        victim = fleet.processes[0]
        victim.kill()  # SIGKILL: no goodbye, its will says offline
        killed = time.monotonic()
        victim.wait()
        time.sleep(max(0.0, killed + down_s - time.monotonic()))
        restarted = time.monotonic()
        fleet.processes[0] = subprocess.Popen(fleet.commands[0], stderr=fleet.logs[0])
        _wait_online(fleet.port, fleet.prefix, timeout_s=120.0, topic=fleet.statuses[0])
        return {
            "down_s": round(restarted - killed, 3),
            "return_s": round(time.monotonic() - restarted, 3),
        }

    result = scale_run(
        bundle,
        devices=devices,
        seconds=seconds,
        workers=workers,
        partitions=partitions,
        message_samples=message_samples,
        overrides=("scale.takeover=true",) if takeover else (),
        generators=generators,
        nats_server=nats_server,
        load={"qos": 1, "gaps": True, "grace_s": 10.0},
        during=kill_a_node if kill_node else kill_and_restart,
        cluster=cluster,
        mqtt_options=mqtt_options,
    )
    gaps = result.pop("max_gap_s", {})
    ranges = _ranges(partitions, workers)
    # the killed worker's partitions, or those of every worker of the killed node
    dead = frozenset().union(
        *(
            parse_owned(r, partitions)
            for k, r in enumerate(ranges)
            if k == 0 or (kill_node and k % cluster == 0)
        )
    )
    names = device_names(devices)
    # the devices of the generators connected to the killed node
    cut = {
        name
        for g, (first, count) in enumerate(_split(devices, max(1, min(generators, devices))))
        if kill_node and g % cluster == 0
        for name in names[first : first + count]
    }
    theirs = [
        gaps.get(n, float("nan"))
        for n in names
        if partition_of(n, partitions) in dead and n not in cut
    ]
    others = [
        gaps.get(n, float("nan"))
        for n in names
        if partition_of(n, partitions) not in dead and n not in cut
    ]
    extra: dict[str, Any] = {}
    if kill_node:
        # each device's longest wait, the devices whose generator lost its node (their
        # worker's node alive, and both lost)
        extra["cut_wait_s"] = _spread(
            [gaps.get(n, float("nan")) for n in cut if partition_of(n, partitions) not in dead]
        )
        extra["cut_and_dead_wait_s"] = _spread(
            [gaps.get(n, float("nan")) for n in cut if partition_of(n, partitions) in dead]
        )
        extra["cut_devices"] = len(cut)
    for k in ("worker_cpu_share", "worker_cpu_ms_per_device_s", "gateway_cpu_share"):
        result.pop(k)  # one of the workers is two processes: their CPU is not comparable
    result.pop("cpu_ms_per_device_s")
    return {
        **result,
        **extra,
        "takeover": takeover,
        "cluster": cluster,
        "killed": "node 1" if kill_node else "worker w0",
        # lost, less the decisions that came at other stream positions: hop spans of
        # samples that got no decision at all
        "lost_net": result["lost"] - result["shifted"],
        "killed_after_s": kill_at_s,
        "dead_devices": len(theirs),
        # each device's longest time between two decisions (s): the killed worker's
        # devices, and the others' (their usual longest: a hop's span of messages)
        "dead_wait_s": _spread(theirs),
        "others_wait_s": _spread(others),
        # how much longer the killed worker's devices waited than the others usually do
        "outage_s": round(statistics.median(theirs) - statistics.median(others), 3)
        if theirs and others
        else float("nan"),
    }


def _spread(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50": float("nan"), "max": float("nan")}
    return {"p50": round(statistics.median(values), 3), "max": round(max(values), 3)}
