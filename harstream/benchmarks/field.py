"""What field devices cost: the resampling path against the native 50 Hz path, in process.

The same stream fed to the gateway's decoding (``harstream.gateway.ingest``) and engine
two ways: as harstream's own 50 Hz messages (the fast path) and as a phone's Sensor
Logger batches (separate jittered sensor clocks at ~100 Hz, m/s2, gravity apart: the
DeviceStream path). Reported per device-second of stream: CPU microseconds of decoding
plus the engine (inference included), and per batch the time from its arrival to its
decisions (decode, resample, prepare, complete) when one device sends alone.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from typing import Any

from harstream.config import Config
from harstream.core.bundle import Bundle
from harstream.gateway.ingest import Ingest
from harstream.gateway.routes import Route, Topics
from harstream.gateway.transport import Incoming
from harstream.runtime import build_engine, ingest_settings

__all__ = ["field_cost"]


def route_of(topics: Topics, topic: str, payload: bytes) -> Route:
    """The message routed as the gateway routes it where it enters (a cost counted)."""
    route = topics.route(Incoming(topic, payload))
    assert route is not None
    return route


def _run(
    config: Config,
    bundle: Bundle,
    topics: Sequence[str],
    payloads: Sequence[bytes],
    seconds_per_message: float,
) -> dict[str, Any]:
    """Every device (one per topic) sends every payload, round by round; the engine
    takes each round as one batch, as the gateway does under load."""
    settings = ingest_settings(config)
    ingest, topics_ = Ingest(settings), Topics(settings.prefix, settings.sensor_logger_topic)
    engine = build_engine(config, bundle)
    cpu0 = time.process_time()
    decisions = 0
    for k, payload in enumerate(payloads):
        messages = []
        for topic in topics:
            got, _ = ingest.decode(route_of(topics_, topic, payload), 1_800_000_000.0 + k)
            messages += got
        decisions += len(engine.feed_many(messages).decisions)
    cpu = time.process_time() - cpu0
    device_seconds = len(topics) * len(payloads) * seconds_per_message
    return {"cpu_us_per_device_s": round(cpu / device_seconds * 1e6, 1), "decisions": decisions}


def _lone_latency_ms(
    config: Config, bundle: Bundle, topic: str, payloads: Sequence[bytes]
) -> float:
    """Median ms from a lone device's batch arriving to its decisions being made."""
    settings = ingest_settings(config)
    ingest, topics_ = Ingest(settings), Topics(settings.prefix, settings.sensor_logger_topic)
    engine = build_engine(config, bundle)
    times = []
    for k, payload in enumerate(payloads):
        t0 = time.perf_counter()
        got, _ = ingest.decode(route_of(topics_, topic, payload), 1_800_000_000.0 + k)
        decided = engine.feed_many(got).decisions
        if decided:
            times.append(time.perf_counter() - t0)
    return round(statistics.median(times) * 1000, 3) if times else float("nan")


def field_cost(
    config: Config,
    bundle: Bundle,
    *,
    native: Sequence[bytes],
    phone: Sequence[bytes],
    devices: int,
    seconds_per_message: float = 1.0,
) -> dict[str, Any]:
    """``native``: harstream messages of one device's stream, ``phone``: Sensor Logger
    batches of the same stream (both ``seconds_per_message`` each)."""
    prefix = config.topics.prefix
    sl = config.ingest.sensor_logger.topic
    assert sl is not None, "ingest.sensor_logger.topic must be set"
    rounds = min(len(native), len(phone))
    native_topics = [f"{prefix}/dev{i}/imu" for i in range(devices)]
    phone_topics = [f"{sl}/dev{i}" for i in range(devices)]
    result: dict[str, Any] = {
        "devices": devices,
        "seconds_of_stream": rounds * seconds_per_message,
        "native": _run(config, bundle, native_topics, native[:rounds], seconds_per_message),
        "phone": _run(config, bundle, phone_topics, phone[:rounds], seconds_per_message),
    }
    result["native"]["lone_ms"] = _lone_latency_ms(config, bundle, native_topics[0], native)
    result["phone"]["lone_ms"] = _lone_latency_ms(config, bundle, phone_topics[0], phone)
    result["phone_over_native"] = round(
        result["phone"]["cpu_us_per_device_s"] / result["native"]["cpu_us_per_device_s"], 2
    )
    return result
