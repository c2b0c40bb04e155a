"""Simulated devices for benchmarks, in a process of their own.

``python -m harstream.benchmarks.loadgen '{"port": ..., "devices": ...}'`` publishes N
devices' samples at ``rate_hz`` (each device one message of ``message_samples`` every
``message_samples / rate_hz`` seconds, the devices' phases spread evenly over that
period), subscribes to their activity topics, and prints one JSON line: messages sent,
decisions expected and received, and the latency of each decision measured from the
moment the message holding its last sample was handed to the client to the moment its
activity message arrived (one process, one monotonic clock). Bounded in time and count.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from dataclasses import dataclass
from typing import Any

import aiomqtt
import numpy as np

from harstream.benchmarks.engine import synthetic_stream

__all__ = ["LoadSpec", "run_load"]


@dataclass(frozen=True)
class LoadSpec:
    port: int
    prefix: str
    devices: int = 1
    seconds: float = 20.0
    message_samples: int = 32
    rate_hz: float = 50.0
    hop: int = 64
    first_decision: int = 64  # samples before the first decision (window or hop)
    warmup_s: float = 2.0
    grace_s: float = 3.0
    qos: int = 0
    host: str = "127.0.0.1"


def _payload(samples: np.ndarray, seq: int) -> bytes:
    rows = ",".join("[" + ",".join(f"{v:.5f}" for v in row) + "]" for row in samples)
    return f'{{"samples":[{rows}],"seq":{seq}}}'.encode()


async def run_load(spec: LoadSpec) -> dict[str, Any]:
    period = spec.message_samples / spec.rate_hz
    stream = synthetic_stream(int(spec.rate_hz * 120))
    # pre-encode one lap of messages: the generator should cost little next to the gateway
    lap = len(stream) // spec.message_samples
    bodies = [stream[i * spec.message_samples : (i + 1) * spec.message_samples] for i in range(lap)]
    names = [f"sim{i:05d}" for i in range(spec.devices)]
    sent_at: dict[tuple[str, int], float] = {}
    arrived: dict[tuple[str, int], float] = {}
    loop_lag: list[float] = []
    messages = 0

    async with (
        aiomqtt.Client(
            spec.host,
            spec.port,
            max_queued_outgoing_messages=None,
            identifier=f"loadgen-sub-{spec.prefix}",
        ) as sub,
        aiomqtt.Client(
            spec.host,
            spec.port,
            identifier=f"loadgen-pub-{spec.prefix}",
            max_inflight_messages=10_000,
        ) as pub,
    ):
        await sub.subscribe(f"{spec.prefix}/+/activity", qos=0)
        start = len(spec.prefix) + 1

        async def collect() -> None:
            async for message in sub.messages:
                now = time.monotonic()
                device = message.topic.value[start:-9]
                seq = json.loads(message.payload)["seq"]
                arrived.setdefault((device, seq), now)

        collector = asyncio.create_task(collect())
        began = time.monotonic()
        deadline = began + spec.seconds
        # round k of device d is due at began + (k + d / devices) * period
        k = 0
        while True:
            round_start = began + k * period
            if round_start >= deadline:
                break
            body = bodies[k % lap]
            seq = k * spec.message_samples
            last = seq + spec.message_samples - 1
            decides = (last + 1) >= spec.first_decision and (last + 1) % spec.hop == 0
            payload = _payload(body, seq)  # every device sends the same samples: cheap, and
            for d, name in enumerate(names):  # the gateway's cost does not depend on them
                due = round_start + d * period / spec.devices
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                else:
                    loop_lag.append(-wait)
                sent = time.monotonic()
                await pub.publish(f"{spec.prefix}/{name}/imu", payload, qos=spec.qos)
                messages += 1
                if decides:
                    sent_at[(name, last)] = sent
            k += 1
        await asyncio.sleep(spec.grace_s)
        collector.cancel()

    measured = [
        arrived[key] - t
        for key, t in sent_at.items()
        if key in arrived and t - began >= spec.warmup_s
    ]
    expected = sum(1 for t in sent_at.values() if t - began >= spec.warmup_s)
    lat = np.array(measured) * 1000 if measured else np.array([np.nan])
    return {
        "devices": spec.devices,
        "seconds": spec.seconds,
        "message_samples": spec.message_samples,
        "messages_sent": messages,
        "decisions_expected": expected,
        "decisions_received": len(measured),
        "lost": expected - len(measured),
        "latency_ms": {
            "p50": _pct(lat, 50),
            "p90": _pct(lat, 90),
            "p99": _pct(lat, 99),
            "max": round(float(np.nanmax(lat)), 2),
        },
        "generator_late_ms_p99": _pct(np.array(loop_lag) * 1000, 99) if loop_lag else 0.0,
    }


def _pct(values: np.ndarray, q: float) -> float:
    return round(float(np.nanpercentile(values, q)), 2)


if __name__ == "__main__":
    spec = LoadSpec(**json.loads(sys.argv[1]))
    print(json.dumps(asyncio.run(run_load(spec))), flush=True)
