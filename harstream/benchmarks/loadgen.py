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

Several of them share a load (``harstream.benchmarks.scale``): each takes the devices
``first_device`` .. ``first_device + devices - 1`` under its own client id, subscribes to
those devices' activity topics one by one (``own_topics``) rather than to all, starts
sending at the wall-clock time ``start_at`` (all together), and hands back its
latencies (``samples``) for the percentiles of the whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from harstream.benchmarks.engine import synthetic_stream
from harstream.core.payload import encode_frame, encode_imu
from harstream.gateway.mqtt import MqttSession, MqttTransport
from harstream.gateway.transport import TransportError

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
    first_device: int = 0  # names sim{first_device:05d} on
    client_id: str = ""  # "": loadgen-{prefix}
    own_topics: bool = False  # subscribe to each device's activity, not {prefix}/+/activity
    start_at: float = 0.0  # time.time() to start sending at (0: at once)
    samples: bool = False  # also return every latency (ms), for merging generators
    gaps: bool = False  # also return each device's longest wait between two decisions (s)
    fallback_ports: tuple[int, ...] = ()  # more nodes of a cluster: reconnect to them in turn


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
                session.publish_nowait(topics[i], payload, qos=spec.qos)
                for index in decided:
                    sent_at[(names[i], index)] = now
            messages += due_until - d
            d = due_until
            await asyncio.sleep(0)  # the client sends what was queued in this iteration
        k += 1
    return messages, lateness


class _Receiver:
    """The generator's connection: its subscriptions to its devices' activities, what
    arrived when; with fallback ports, a lost connection taken up on the next node."""

    def __init__(self, spec: LoadSpec, names: list[str]) -> None:
        self.spec, self.names = spec, names
        self.transport = MqttTransport(
            spec.host,
            spec.port,
            client_id=spec.client_id or f"loadgen-{spec.prefix}",
            clean_session=True,
            fallbacks=tuple((spec.host, p) for p in spec.fallback_ports),
        )
        self.arrived: dict[tuple[str, int], float] = {}
        self.duplicates = 0  # a decision (device, seq) received again: decided twice
        self.reconnects = 0
        self.subscribed = asyncio.Event()

    async def subscribe(self, session: MqttSession) -> None:
        spec = self.spec
        if spec.own_topics:
            topics = [f"{spec.prefix}/{n}/activity" for n in self.names]
            for at in range(0, len(topics), 100):  # 100 subscriptions in flight at a time
                await asyncio.gather(*(session.subscribe(t) for t in topics[at : at + 100]))
        else:
            await session.subscribe(f"{spec.prefix}/+/activity")

    def collect(self, batch: list[Any]) -> None:
        now = time.monotonic()
        start, arrived = len(self.spec.prefix) + 1, self.arrived
        for message in batch:
            payload = message.payload
            at = payload.index(b'"seq":') + 6
            seq = int(payload[at : payload.index(b",", at)])
            key = (message.topic[start:-9], seq)
            if key in arrived:
                self.duplicates += 1
            else:
                arrived[key] = now

    async def connection(self) -> None:
        """Connected and subscribed until cancelled (QoS 1 publishes wait in paho while
        it reconnects)."""
        while True:
            try:
                async with self.transport.session() as session:
                    await self.subscribe(session)
                    self.subscribed.set()
                    async for batch in session.batches():
                        self.collect(batch)
            except TransportError:
                if not self.spec.fallback_ports:
                    raise
                self.reconnects += 1
                await asyncio.sleep(0.2)


async def run_load(spec: LoadSpec) -> dict[str, Any]:
    names = [f"sim{i:05d}" for i in range(spec.first_device, spec.first_device + spec.devices)]
    sent_at: dict[tuple[str, int], float] = {}

    receiver = _Receiver(spec, names)
    transport = receiver.transport
    connected = asyncio.create_task(receiver.connection())
    waiting = asyncio.create_task(receiver.subscribed.wait())
    await asyncio.wait({connected, waiting}, return_when=asyncio.FIRST_COMPLETED)
    if connected.done():
        waiting.cancel()
        connected.result()  # the first connection failed: raise it
    session = MqttSession(transport)  # publishes go to whichever connection is up
    late_start_s = time.time() - spec.start_at if spec.start_at else 0.0
    await asyncio.sleep(max(0.0, -late_start_s))
    began, cpu_began = time.monotonic(), time.process_time()
    messages, lateness = await _send(spec, session, names, sent_at, began)
    await asyncio.sleep(spec.grace_s)
    connected.cancel()
    with contextlib.suppress(asyncio.CancelledError, TransportError):
        await connected
    arrived = receiver.arrived

    measured = [
        arrived[key] - t
        for key, t in sent_at.items()
        if key in arrived and t - began >= spec.warmup_s
    ]
    expected = sum(1 for t in sent_at.values() if t - began >= spec.warmup_s)
    lat = np.array(measured) * 1000 if measured else np.array([np.nan])
    extra: dict[str, Any] = {}
    if spec.samples:
        extra["latencies_ms"] = [round(x * 1000, 2) for x in measured]
    if spec.gaps:
        extra["max_gap_s"] = _max_gaps(arrived, began + spec.warmup_s)
        # which decisions never came: device, seq and when its message was sent (s)
        extra["missing"] = sorted(
            [d, seq, round(t - began, 2)]
            for (d, seq), t in sent_at.items()
            if (d, seq) not in arrived and t - began >= spec.warmup_s
        )[:200]
    return {
        **extra,
        "late_start_s": round(max(0.0, late_start_s), 3),
        "devices": spec.devices,
        "seconds": spec.seconds,
        "message_samples": spec.message_samples,
        "messages_sent": messages,
        "decisions_expected": expected,
        "decisions_received": len(measured),
        "lost": expected - len(measured),
        "duplicates": receiver.duplicates,
        "reconnects": receiver.reconnects,
        # decisions at stream positions no message ended a hop at: a device started over
        # (a restarted or new worker counts hops from the first message it sees)
        "shifted": sum(
            1 for key, t in arrived.items() if key not in sent_at and t - began >= spec.warmup_s
        ),
        "latency_ms": {
            "p50": _pct(lat, 50),
            "p90": _pct(lat, 90),
            "p99": _pct(lat, 99),
            "max": round(float(np.nanmax(lat)), 2),
        },
        "generator_late_ms_p99": _pct(np.array(lateness) * 1000, 99) if lateness else 0.0,
        "cpu_s": round(time.process_time() - cpu_began, 3),
        "generator_cpu_share": round(
            (time.process_time() - cpu_began) / (time.monotonic() - began), 3
        ),
    }


def _max_gaps(arrived: dict[tuple[str, int], float], since: float) -> dict[str, float]:
    """Each device's longest time between two decisions received after ``since``."""
    times: dict[str, list[float]] = {}
    for (device, _), t in arrived.items():
        if t >= since:
            times.setdefault(device, []).append(t)
    return {
        device: round(float(np.max(np.diff(sorted(ts)))), 3) if len(ts) > 1 else 0.0
        for device, ts in times.items()
    }


def _pct(values: np.ndarray, q: float) -> float:
    return round(float(np.nanpercentile(values, q)), 2)


if __name__ == "__main__":
    spec = LoadSpec(**json.loads(sys.argv[1]))
    print(json.dumps(asyncio.run(run_load(spec))), flush=True)
