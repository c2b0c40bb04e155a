"""End to end through mosquitto on loopback: three processes, as deployed.

A private mosquitto, ``harstream serve`` in its own process, and the load generator in
a third. Reports decision latency (last sample of a hop published -> activity received),
losses, and the gateway's CPU time and peak memory (read from /proc).
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from harstream.core.bundle import Bundle
from harstream.testing.localbroker import Mosquitto, end_process, wait_for_port

__all__ = ["alternating", "e2e_run", "load_result", "run_load", "serve_command"]


def serve_command(settings: Iterable[str]) -> list[str]:
    """``harstream serve`` in a process of its own, each setting a ``--set``."""
    command = [sys.executable, "-m", "harstream", "serve"]
    for item in settings:
        command += ["--set", item]
    return command


def run_load(spec: Mapping[str, Any], timeout_s: float) -> subprocess.CompletedProcess[str]:
    """The load generator (harstream.benchmarks.loadgen) in a process of its own."""
    return subprocess.run(
        [sys.executable, "-m", "harstream.benchmarks.loadgen", json.dumps(spec)],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def load_result(load: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The load generator's JSON line; its error if it failed."""
    if load.returncode != 0:
        raise RuntimeError(f"load generator failed: {load.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(load.stdout.strip().splitlines()[-1])
    return result


def _proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime


def _proc_rss_mb(pid: int, key: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _wait_online(port: int, prefix: str, timeout_s: float = 30.0, topic: str | None = None) -> None:
    """Block until the gateway's retained status (``topic``, default ``{prefix}/status``)
    says online."""
    import asyncio

    from harstream.gateway.mqtt import MqttTransport
    from harstream.gateway.transport import TransportError

    async def wait() -> None:
        transport = MqttTransport(
            "127.0.0.1", port, client_id=f"{prefix}-probe", clean_session=True
        )
        async with asyncio.timeout(timeout_s):
            while True:
                try:
                    async with transport.session() as session:
                        await session.subscribe(topic or f"{prefix}/status")
                        async for batch in session.batches():
                            # a worker says `online INSTANCE`
                            if any(m.payload.split(b" ")[0] == b"online" for m in batch):
                                return
                except TransportError:  # a cluster's node drops MQTT clients until
                    await asyncio.sleep(0.5)  # JetStream is ready: try again

    asyncio.run(wait())


def e2e_run(
    bundle: Bundle,
    *,
    devices: int,
    seconds: float,
    message_samples: int = 32,
    message_format: str = "json",
    overrides: tuple[str, ...] = (),
    hop: int | None = None,
    baseline_model: Path | None = None,
    gateway_pythonpath: Path | None = None,
    speed: float = 1.0,
) -> dict[str, Any]:
    """One point: ``devices`` at 50 Hz (times ``speed``: faster than real time) for
    ``seconds``, through ``harstream serve`` or, given ``baseline_model``, through the
    baseline gateway (harstream.benchmarks.baseline).
    ``gateway_pythonpath`` runs the gateway process from another checkout (an earlier
    commit, for a before/after pair under the same load generator and broker)."""
    hop = hop or bundle.hop
    prefix = f"bench{os.getpid()}"
    with tempfile.TemporaryDirectory(prefix="harstream-bench-") as tmp:
        broker = Mosquitto(Path(tmp) / "broker").start()
        settings = [
            f"broker.port={broker.port}",
            "broker.host=127.0.0.1",
            f"topics.prefix={prefix}",
            f"model.path={bundle.path}",
            "model.backend=onnx",
            f"stream.hop={hop}",
            f"stream.max_devices={max(devices, 1) * 2}",
            "logging.level=INFO",  # start-up and the last line (messages, batches)
            *overrides,
        ]
        command = serve_command(settings)
        if baseline_model is not None:
            hop = 64
            spec = {"port": broker.port, "prefix": prefix, "model": str(baseline_model)}
            command = [sys.executable, "-m", "harstream.benchmarks.baseline", json.dumps(spec)]
        wait_for_port(broker.port)
        env, cwd = dict(os.environ), None
        if gateway_pythonpath is not None:
            # `python -m` puts the working directory first on sys.path: run it there too
            env["PYTHONPATH"], cwd = str(gateway_pythonpath), gateway_pythonpath
        with (Path(tmp) / "gateway.log").open("w") as log:
            launched = time.monotonic()
            gateway = subprocess.Popen(command, stderr=log, env=env, cwd=cwd)
        try:
            _wait_online(broker.port, prefix)
            ready_s = time.monotonic() - launched  # cold start: launch -> retained "online"
            idle_rss = _proc_rss_mb(gateway.pid)
            assert broker.process is not None
            broker_pid = broker.process.pid
            cpu_before, wall_before = _proc_cpu_s(gateway.pid), time.monotonic()
            broker_before = _proc_cpu_s(broker_pid)
            first = bundle.window if bundle.mode == "window" else hop
            if baseline_model is not None:
                first = 128  # the baseline decides on whole windows
            load_spec = {
                "port": broker.port,
                "prefix": prefix,
                "devices": devices,
                "seconds": seconds,
                "message_samples": message_samples,
                "message_format": message_format,
                "rate_hz": 50.0 * speed,
                "hop": hop,
                "first_decision": first,
            }
            load = run_load(load_spec, seconds + 120)
            cpu = _proc_cpu_s(gateway.pid) - cpu_before
            wall = time.monotonic() - wall_before
            broker_cpu = _proc_cpu_s(broker_pid) - broker_before
            peak_rss = _proc_rss_mb(gateway.pid, "VmHWM")
            rss = _proc_rss_mb(gateway.pid)
        finally:
            end_process(gateway, 20.0)
            broker.stop()
        result = load_result(load)
        batching = re.search(
            r"\((\d+) messages in (\d+) batches\)", (Path(tmp) / "gateway.log").read_text()
        )
        if batching:  # harstream's gateway says how it batched (the baseline does not)
            messages, batches = int(batching[1]), int(batching[2])
            result["messages_per_batch"] = round(messages / max(batches, 1), 1)
    result.update(
        {
            "hop": hop,
            "gateway_cpu_s": round(cpu, 2),
            "gateway_cpu_share": round(cpu / wall, 3),  # 1.0 = one core busy
            "cpu_ms_per_device_s": round(1000 * cpu / wall / max(devices, 1), 4),
            "broker_cpu_share": round(broker_cpu / wall, 3),
            "gateway_ready_s": round(ready_s, 3),
            "gateway_rss_mb_idle": round(idle_rss, 1),
            "gateway_rss_mb": round(rss, 1),
            "gateway_rss_mb_peak": round(peak_rss, 1),
        }
    )
    return result


#: A mode of :func:`alternating`: called before its run, returns the run's config
#: overrides and what to call after it (which may return numbers to add to the run).
Mode = Callable[[], tuple[tuple[str, ...], Callable[[], dict[str, Any]]]]


def alternating(
    bundle: Bundle,
    modes: Mapping[str, Mode],
    *,
    devices: int,
    seconds: float,
    message_samples: int,
    rounds: int,
) -> dict[str, dict[str, Any]]:
    """``rounds`` e2e points of each mode, in turn (so that a noisy machine's drift hits
    them alike); per mode the medians of p50, p99 and gateway CPU, the total lost, each
    run's numbers, and the medians of what the mode's after-call returned."""
    points: dict[str, list[dict[str, Any]]] = {mode: [] for mode in modes}
    for _ in range(rounds):
        for mode, setup in modes.items():
            overrides, after = setup()
            extra: dict[str, Any] = {}
            try:
                r = e2e_run(
                    bundle,
                    devices=devices,
                    seconds=seconds,
                    message_samples=message_samples,
                    overrides=overrides,
                )
            finally:
                extra = after()
            points[mode].append({**r, "extra": extra})
    out = {}
    for mode, runs in points.items():
        keys = sorted({k for r in runs for k in r["extra"]})
        out[mode] = {
            "p50_ms": statistics.median(r["latency_ms"]["p50"] for r in runs),
            "p99_ms": statistics.median(r["latency_ms"]["p99"] for r in runs),
            "gateway_cpu_share": statistics.median(r["gateway_cpu_share"] for r in runs),
            "lost": sum(r["lost"] for r in runs),
            "runs": [
                (r["latency_ms"]["p50"], r["latency_ms"]["p99"], r["gateway_cpu_share"])
                for r in runs
            ],
            **{k: statistics.median(r["extra"][k] for r in runs) for k in keys},
        }
    return out
