"""Scaling out: the gateway as 1 or more workers on NATS (partitioned device topics)
against one gateway on mosquitto, under the same load generator.

Each point starts the broker, N ``harstream serve`` processes (workers owning equal
ranges of the P partitions, or one plain gateway) and the load generator; it reports
the load generator's latency and losses, each worker's CPU share, the gateway CPU per
device-second summed over the workers, and the broker's CPU per message (devices'
messages plus the activities published back).
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from harstream.benchmarks.e2e import _proc_cpu_s, _wait_online, load_result, run_load, serve_command
from harstream.core.bundle import Bundle
from harstream.testing.localbroker import Mosquitto, end_process
from harstream.testing.localnats import Nats

__all__ = ["scale_run"]


def _ranges(partitions: int, workers: int) -> list[str]:
    size = partitions // workers
    return [
        f"{k * size}-{(k + 1) * size - 1 if k < workers - 1 else partitions - 1}"
        for k in range(workers)
    ]


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
) -> dict[str, Any]:
    """One point: ``devices`` at 50 Hz for ``seconds`` through ``broker`` (nats:
    ``workers`` workers; mosquitto: one gateway); ``overrides``: config for every one."""
    prefix = f"bench{os.getpid()}"
    with tempfile.TemporaryDirectory(prefix="harstream-scale-") as tmp:
        server: Nats | Mosquitto
        if broker == "nats":
            server = Nats(Path(tmp) / "nats", partitions, prefix).start()
            port = server.mqtt_port
        else:
            server = Mosquitto(Path(tmp) / "broker").start()
            port = server.port
        common = [
            f"broker.port={port}",
            "broker.host=127.0.0.1",
            f"topics.prefix={prefix}",
            f"model.path={bundle.path}",
            "model.backend=onnx",
            f"stream.max_devices={max(devices, 1) * 2}",
            "logging.level=WARNING",
            *overrides,
        ]
        plans: list[tuple[list[str], str]] = []
        if broker == "nats":
            for k, owned in enumerate(_ranges(partitions, workers)):
                more = [
                    f"scale.partitions={partitions}",
                    f"scale.owned={owned}",
                    f"scale.worker=w{k}",
                    f"scale.nats_port={server.port}",
                ]
                plans.append((more, f"{prefix}/workers/w{k}/status"))
        else:
            plans.append(([], f"{prefix}/status"))
        processes: list[subprocess.Popen[bytes]] = []
        logs: list[Any] = []
        try:
            for more, _ in plans:
                command = serve_command([*common, *more])
                log = (Path(tmp) / f"gateway{len(processes)}.log").open("w")
                logs.append(log)
                processes.append(subprocess.Popen(command, stderr=log))
            for _, status in plans:
                _wait_online(port, prefix, topic=status)
            assert server.process is not None
            before = [_proc_cpu_s(p.pid) for p in processes]
            broker_before, wall_before = _proc_cpu_s(server.process.pid), time.monotonic()
            spec = {
                "port": port,
                "prefix": prefix,
                "devices": devices,
                "seconds": seconds,
                "message_samples": message_samples,
                "hop": bundle.hop,
                "first_decision": bundle.hop,
            }
            load = run_load(spec, seconds + 180)
            wall = time.monotonic() - wall_before
            cpu = [_proc_cpu_s(p.pid) - b for p, b in zip(processes, before, strict=True)]
            broker_cpu = _proc_cpu_s(server.process.pid) - broker_before
        finally:
            for p in processes:  # all asked at once, then each waited for
                p.terminate()
            for p in processes:
                end_process(p, 20.0)
            for log in logs:
                log.close()
            server.stop()
    result = load_result(load)
    messages = result["messages_sent"] + result.get("decisions_received", 0)
    result.update(
        {
            "broker": broker,
            "workers": len(processes),
            "worker_cpu_share": [round(c / wall, 3) for c in cpu],
            "gateway_cpu_share": round(sum(cpu) / wall, 3),
            "cpu_ms_per_device_s": round(1000 * sum(cpu) / wall / max(devices, 1), 4),
            "broker_cpu_share": round(broker_cpu / wall, 3),
            "broker_cpu_us_per_message": round(1e6 * broker_cpu / max(messages, 1), 1),
        }
    )
    return result
