"""Benchmarks that print numbers (never timed unit tests): ``harstream bench``.

Scenario ``engine``: samples/s the in-process engine sustains for N devices, each
sending one message of ``message_samples`` samples per round, all messages of a round
in one ``feed_many`` call (as the gateway batches them). Signals are synthetic (a
slowly turning gravity vector plus noise): the engine's cost does not depend on what
the samples mean. Each figure is the median of ``repeats`` timed runs.

Scenario ``stages``: where a gateway's CPU goes per device message, in process and
stage by stage as the gateway runs them (decoding the JSON, ``Engine.prepare``,
``Engine.complete`` split into inference and the rest, encoding the activities), as
microseconds per message and as cores busy at that many devices sending at 50 Hz.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

import numpy as np

from harstream.config import Config, load_config
from harstream.core.bundle import Bundle
from harstream.core.engine import Engine, Message
from harstream.core.inference import Model, State, load_model
from harstream.core.payload import decode_imu, encode_activities, encode_frame, encode_imu
from harstream.runtime import build_engine, imu_limits

__all__ = ["EngineResult", "engine_throughput", "gateway_stages", "synthetic_stream"]


def synthetic_stream(n: int, seed: int = 0, rate_hz: float = 50.0) -> np.ndarray:
    """(n, 6) plausible raw samples: gravity turning slowly, walking-like bounce, noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / rate_hz
    angle = 0.3 * np.sin(2 * np.pi * t / 20.0)
    acc = np.stack([np.cos(angle), np.sin(angle), 0.1 * np.ones(n)], axis=1)
    acc[:, 0] += 0.2 * np.sin(2 * np.pi * 1.8 * t)
    gyro = 0.3 * np.stack([np.sin(2 * np.pi * 0.9 * t + k) for k in range(3)], axis=1)
    return np.hstack([acc, gyro]) + rng.normal(0, 0.02, (n, 6))


@dataclass
class EngineResult:
    devices: int
    mode: str
    backend: str
    hop: int
    message_samples: int
    samples_per_s: float
    runs: list[float]
    decisions_per_s: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _one_round(engine: Engine, devices: list[str], chunk: np.ndarray) -> int:
    """Every device sends ``chunk`` as one message; returns the decisions made."""
    return len(engine.feed_many([Message(d, chunk) for d in devices]).decisions)


def bench_config(bundle: Bundle, *overrides: str) -> Config:
    """The default config with ``overrides``; a bundle from before the HMM smoother (no
    activity statistics) runs with hysteresis, so that earlier bundles can be compared
    (either smoother costs well under a microsecond per decision)."""
    if bundle.activity_stats is None:
        overrides = ("smoothing.method=hysteresis", *overrides)
    return load_config(overrides=overrides)


def engine_throughput(
    bundle: Bundle,
    *,
    devices: int,
    mode: str | None = None,
    backend: str = "onnx",
    threads: int = 1,
    hop: int | None = None,
    message_samples: int = 25,
    min_seconds: float = 1.5,
    repeats: int = 3,
) -> EngineResult:
    mode = mode or bundle.mode
    hop = hop or bundle.hop
    model = load_model(bundle, backend, threads)
    stream = synthetic_stream(50 * 60)
    chunks = [
        stream[i : i + message_samples]
        for i in range(0, len(stream) - message_samples + 1, message_samples)
    ]
    runs, decision_rates = [], []
    for _ in range(repeats):
        engine = build_engine(
            bench_config(bundle, f"stream.hop={hop}", f"stream.max_devices={max(devices, 1)}"),
            bundle,
            model,
            mode=mode,
        )
        names = [f"dev{i}" for i in range(devices)]
        for k in range(-(-bundle.window // message_samples)):  # warm up: windows full
            _one_round(engine, names, chunks[k])
        k = samples = decisions = 0
        start = time.perf_counter()
        while (elapsed := time.perf_counter() - start) < min_seconds or samples == 0:
            decisions += _one_round(engine, names, chunks[k % len(chunks)])
            samples += devices * message_samples
            k += 1
        runs.append(samples / elapsed)
        decision_rates.append(decisions / elapsed)
    return EngineResult(
        devices=devices,
        mode=mode,
        backend=backend,
        hop=hop,
        message_samples=message_samples,
        samples_per_s=statistics.median(runs),
        runs=runs,
        decisions_per_s=statistics.median(decision_rates),
    )


class _TimedModel:
    """A model that adds up the seconds its ``step`` calls take."""

    def __init__(self, model: Model) -> None:
        self.model = model
        self.labels = model.labels
        self.arch = model.arch
        self.seconds = 0.0

    def initial_state(self, batch: int) -> State:
        return self.model.initial_state(batch)

    def step(self, state: State, x: np.ndarray) -> tuple[State, np.ndarray]:
        start = time.perf_counter()
        try:
            return self.model.step(state, x)
        finally:
            self.seconds += time.perf_counter() - start


def gateway_stages(
    bundle: Bundle,
    *,
    devices: int,
    message_samples: int = 50,
    rounds: int = 10,
    batch: int = 1024,
    message_format: str = "json",
) -> dict[str, Any]:
    """Microseconds per message of each gateway stage, ``rounds`` rounds of every device
    sending one message, in batches of ``batch`` (the gateway's ``max_batch``)."""
    model = _TimedModel(load_model(bundle, "onnx", 1))
    config = bench_config(bundle, f"stream.hop={bundle.hop}", f"stream.max_devices={devices}")
    engine = build_engine(config, bundle, model)
    limits = imu_limits(config)
    stream = synthetic_stream(message_samples * (rounds + 3))
    encoder = encode_frame if message_format == "frame" else partial(encode_imu, decimals=5)
    payloads = [
        encoder(stream[i : i + message_samples]) for i in range(0, len(stream), message_samples)
    ]
    names = [f"dev{i}" for i in range(devices)]
    seconds = dict.fromkeys(("decode", "prepare", "complete", "encode"), 0.0)
    inference = 0.0
    for k, payload in enumerate(payloads):
        if k == 3:  # the first rounds fill the windows and warm up
            seconds = dict.fromkeys(seconds, 0.0)
            inference = model.seconds
        for lo in range(0, devices, batch):
            t0 = time.perf_counter()
            decoded = [decode_imu(d, payload, now=0.0, **limits) for d in names[lo : lo + batch]]
            messages = [m for m in decoded if isinstance(m, Message)]  # 50 Hz in g: all of them
            t1 = time.perf_counter()
            prepared = engine.prepare(messages)
            t2 = time.perf_counter()
            decisions = engine.complete(prepared)
            t3 = time.perf_counter()
            encode_activities(decisions, bundle.name)
            t4 = time.perf_counter()
            for stage, took in zip(seconds, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
                seconds[stage] += took
    inference = model.seconds - inference
    timed = {
        "decode": seconds["decode"],
        "prepare": seconds["prepare"],
        "inference": inference,
        "complete_rest": seconds["complete"] - inference,
        "encode": seconds["encode"],
    }
    per_message = {k: v / (rounds * devices) * 1e6 for k, v in timed.items()}
    messages_per_s = devices * 50.0 / message_samples
    return {
        "devices": devices,
        "message_samples": message_samples,
        "message_format": message_format,
        "us_per_message": {k: round(v, 1) for k, v in per_message.items()},
        "cores": {k: round(v * messages_per_s / 1e6, 3) for k, v in per_message.items()},
    }
