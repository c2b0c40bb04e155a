"""Simulated devices for benchmarks, in a process of their own.

``python -m harstream.benchmarks.loadgen '{"port": ..., "devices": ...}'`` publishes N
devices' samples at ``rate_hz`` (each device one message of ``message_samples`` every
``message_samples / rate_hz`` seconds, the devices' phases spread evenly over that
period), subscribes to their activity topics, and prints one JSON line: messages sent,
decisions expected and received, and the latency of each decision measured from the
moment the message holding its last sample was written to the socket to the moment its
activity message arrived (one process, one monotonic clock). Bounded in time and count.
It uses the gateway's own transport (paho-mqtt on the event loop, harstream.gateway.mqtt)
with a clean session, publishing at QoS 0; its CPU share is reported beside the
gateway's, since it shares the machine.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from harstream.benchmarks.engine import synthetic_stream
from harstream.core.payload import encode_frame, encode_imu
from harstream.gateway.mqtt import MqttSession, MqttTransport

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
    message_format: str = "json"  # json | frame (the binary device frame)


async def _send(
    spec: LoadSpec,
    session: MqttSession,
    names: list[str],
    sent_at: dict[tuple[str, int], float],
    began: float,
) -> tuple[int, list[float]]:
    """Every device's messages at rate; returns messages sent and how late each group was."""
    period = spec.message_samples / spec.rate_hz
    stream = synthetic_stream(int(spec.rate_hz * 120))
    lap = len(stream) // spec.message_samples
    topics = [f"{spec.prefix}/{name}/imu" for name in names]
    lateness: list[float] = []
    messages = 0
    tick = min(0.005, period / 4)
    k = 0  # round: every device sends its k-th message, spread over one period
    while k * period < spec.seconds:
        round_start = began + k * period
        body = stream[(k % lap) * spec.message_samples : (k % lap + 1) * spec.message_samples]
        seq = k * spec.message_samples
        # the decisions whose last sample this message carries (stream indices)
        decided = [
            i
            for i in range(seq, seq + spec.message_samples)
            if i + 1 >= spec.first_decision and (i + 1) % spec.hop == 0
        ]
        # every device sends the same samples: cheap, and the gateway's cost does not
        # depend on what they are
        payload = (
            encode_frame(body, seq)
            if spec.message_format == "frame"
            else encode_imu(body, seq, decimals=5)
        )
        d = 0
        while d < spec.devices:
            now = time.monotonic()
            due_until = min(int((now - round_start) / period * spec.devices) + 1, spec.devices)
            if due_until <= d:
                await asyncio.sleep(tick)
                continue
            lateness.append(now - (round_start + d * period / spec.devices))
            for i in range(d, due_until):
                session.publish_nowait(topics[i], payload)
                for index in decided:
                    sent_at[(names[i], index)] = now
            messages += due_until - d
            d = due_until
            await asyncio.sleep(0)  # the client sends what was queued in this iteration
        k += 1
    return messages, lateness


async def run_load(spec: LoadSpec) -> dict[str, Any]:
    names = [f"sim{i:05d}" for i in range(spec.devices)]
    sent_at: dict[tuple[str, int], float] = {}
    arrived: dict[tuple[str, int], float] = {}

    transport = MqttTransport(
        spec.host, spec.port, client_id=f"loadgen-{spec.prefix}", clean_session=True
    )
    async with transport.session() as session:
        await session.subscribe(f"{spec.prefix}/+/activity")
        start = len(spec.prefix) + 1

        async def collect() -> None:
            async for batch in session.batches():
                now = time.monotonic()
                for message in batch:
                    payload = message.payload
                    at = payload.index(b'"seq":') + 6
                    seq = int(payload[at : payload.index(b",", at)])
                    arrived.setdefault((message.topic[start:-9], seq), now)

        collector = asyncio.create_task(collect())
        began, cpu_began = time.monotonic(), time.process_time()
        messages, lateness = await _send(spec, session, names, sent_at, began)
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
        "generator_late_ms_p99": _pct(np.array(lateness) * 1000, 99) if lateness else 0.0,
        "generator_cpu_share": round(
            (time.process_time() - cpu_began) / (time.monotonic() - began), 3
        ),
    }


def _pct(values: np.ndarray, q: float) -> float:
    return round(float(np.nanpercentile(values, q)), 2)


if __name__ == "__main__":
    spec = LoadSpec(**json.loads(sys.argv[1]))
    print(json.dumps(asyncio.run(run_load(spec))), flush=True)
