"""Property-based hunting (issue 26): every decoder, a device's stream and the whole
pipeline take random JSON, binary frames and topics; what they accept is finite, in
range and within the limits, and what they refuse is a PayloadError with a code; the
pipeline never meets a fault it had to catch, and a good device keeps deciding."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harstream.config import load_config
from harstream.core.bundle import Bundle
from harstream.core.devicestream import KINDS, DeviceStream, Readings
from harstream.core.engine import Message
from harstream.core.payload import (
    FRAME_HEADER,
    FRAME_MAGIC,
    MAX_ACC_G,
    MAX_GYRO_RADS,
    DeviceReadings,
    decode_calibrate,
    decode_imu,
    decode_sensor_logger,
)
from harstream.errors import PayloadError
from harstream.gateway.pipeline import Arrival, Output, Pipeline
from harstream.gateway.routes import Topics
from harstream.gateway.transport import Incoming
from harstream.runtime import gateway_settings
from tests.gateway_helpers import WALK, engine_for, imu, routed

LIMITS = {"rate_hz": 50.0, "max_samples": 500, "max_bytes": 65_536}
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))

numbers = st.one_of(
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0, 1, -1, 1e300, -1e300, 2**63, 2**53, 1.99, 4_102_444_801.0]),
)
json_values = st.recursive(
    st.none() | st.booleans() | numbers | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=30,
)
rows = st.lists(st.one_of(st.lists(numbers, min_size=6, max_size=6), json_values), max_size=30)


def mostly(valid: st.SearchStrategy[Any], edges: list[Any]) -> st.SearchStrategy[Any]:
    """Valid values most of the time, else an edge or anything at all: a message must
    pass the earlier checks to reach the later ones."""
    return st.one_of(*[valid] * 6, st.sampled_from(edges), json_values)


@st.composite
def imu_messages(draw: st.DrawFn) -> dict[str, Any]:
    """Device messages near the contract: each field valid, at an edge, or garbage."""
    n = draw(st.integers(1, 40))
    scale = draw(st.sampled_from([1.0, 1.0, 1.0, 60.0, 1e3, 1e300]))
    values = draw(st.lists(st.floats(-1, 1), min_size=6 * n, max_size=6 * n))
    message: dict[str, Any] = {
        "samples": draw(
            mostly(st.just(np.reshape(np.array(values) * scale, (n, 6)).tolist()), [[], [[1]]])
        )
    }
    if draw(st.booleans()):
        message["seq"] = draw(mostly(st.integers(0, 10**6), [2**53, 2**63, 2**63 - 3, -1]))
    if draw(st.booleans()):
        message["t"] = draw(mostly(st.floats(0, 2e9), [1e300, -1e300, -1.0, 4.2e9, 0]))
    if draw(st.booleans()):
        message["rate"] = draw(mostly(st.sampled_from([25, 50, 100, 400]), [24.9, 401, 0]))
    if draw(st.booleans()):
        units = st.fixed_dictionaries(
            {},
            optional={
                "acc": mostly(st.sampled_from(["g", "m/s2"]), ["ft", ["g"], {}, 1]),
                "gyro": mostly(st.sampled_from(["rad/s", "deg/s"]), ["rpm", ["rad/s"]]),
            },
        )
        message["units"] = draw(mostly(units, [{"acc": ["g"]}, {"gyro": 3}, ["g"]]))
    if draw(st.booleans()):
        start = draw(st.sampled_from([0.0, 5.0, 30.8660577820968, 1.7e9, -3.0]))
        steps = draw(
            st.lists(
                st.sampled_from([0.02, 0.01, 1.99, 2.0, 2.5, 1e-9, 0.0]), min_size=n, max_size=n
            )
        )
        message["times"] = draw(mostly(st.just((start + np.cumsum(steps)).tolist()), [[1.0]]))
    return message


@st.composite
def frames(draw: st.DrawFn) -> bytes:
    n = draw(st.integers(0, 40))
    header = FRAME_HEADER.pack(
        FRAME_MAGIC,
        draw(st.integers(0, 255)),
        draw(st.sampled_from([0, 0, 0, 1])),
        n,
        draw(st.integers(-(2**63), 2**63 - 1)),
        draw(st.floats(width=64)),
        draw(st.floats(width=32)),
    )
    body = draw(st.binary(min_size=n * 24, max_size=n * 24))
    cut = draw(st.sampled_from([0, 0, 0, 1, 7]))
    return (header + body)[: len(header + body) - cut]


def as_json(value: Any) -> bytes:
    return json.dumps(value, allow_nan=True).encode()  # NaN and Infinity tokens too


payloads = st.one_of(
    st.binary(max_size=200),
    json_values.map(as_json),
    imu_messages().map(as_json),
    imu_messages().map(as_json),
    frames(),
)


def check_accepted(decoded: Message | DeviceReadings) -> None:
    """What a decoder lets through is finite, in range and within the limits."""
    if isinstance(decoded, Message):
        s = decoded.samples
        assert s.ndim == 2 and s.shape[1] == 6 and 1 <= len(s) <= LIMITS["max_samples"]
        assert np.isfinite(s).all()
        assert np.abs(s[:, :3]).max() <= MAX_ACC_G and np.abs(s[:, 3:]).max() <= MAX_GYRO_RADS
        assert decoded.seq is None or 0 <= decoded.seq < 2**53
        assert decoded.t is None or np.isfinite(decoded.t)
        return
    for r in decoded.readings:
        assert np.isfinite(r.t).all() and np.isfinite(r.xyz).all()
        span = float(r.t.max() - r.t.min()) if len(r.t) else 0.0
        assert span * LIMITS["rate_hz"] + 1 <= LIMITS["max_samples"]


@settings(FUZZ, max_examples=800)
@given(payload=st.one_of(*[imu_messages().map(as_json)] * 4, payloads))
def test_decode_imu_refuses_with_a_code_or_accepts_what_is_sound(payload: bytes) -> None:
    try:
        decoded = decode_imu("dev", payload, now=1.7e9, **LIMITS)
    except PayloadError as exc:
        assert exc.code and exc.detail
        return
    check_accepted(decoded)


sensor_logger_like = st.fixed_dictionaries(
    {
        "payload": st.lists(
            st.one_of(
                st.fixed_dictionaries(
                    {
                        "name": st.sampled_from(
                            ["accelerometer", "gravity", "gyroscope", "totalacceleration", "x"]
                        ),
                        "time": numbers,
                        "values": st.fixed_dictionaries({"x": numbers, "y": numbers, "z": numbers})
                        | json_values,
                    }
                ),
                json_values,
            ),
            max_size=20,
        )
    },
    optional={"messageId": json_values, "sessionId": json_values, "deviceId": json_values},
)


@FUZZ
@given(payload=st.one_of(sensor_logger_like.map(as_json), json_values.map(as_json), st.binary()))
def test_decode_sensor_logger_refuses_with_a_code_or_accepts_what_is_sound(payload: bytes) -> None:
    try:
        batch = decode_sensor_logger(payload, max_bytes=65_536)
    except PayloadError as exc:
        assert exc.code and exc.detail
        return
    for r in batch.readings:
        assert np.isfinite(r.t).all() and np.isfinite(r.xyz).all()


@FUZZ
@given(payload=st.one_of(json_values.map(as_json), st.binary(max_size=50)))
def test_decode_calibrate_refuses_with_a_code_or_gives_seconds(payload: bytes) -> None:
    try:
        seconds = decode_calibrate(payload, 5.0)
    except PayloadError as exc:
        assert exc.code == "bad_calibrate"
        return
    assert seconds is None or 0 < seconds <= 60


@st.composite
def reading_batches(draw: st.DrawFn) -> list[Readings]:
    out = []
    for kind in draw(st.lists(st.sampled_from(KINDS), max_size=4)):
        n = draw(st.integers(0, 40))
        start = draw(st.sampled_from([0.0, 5.0, 1.7e9])) + draw(st.floats(0, 30))
        steps = draw(st.lists(st.floats(1e-4, 2.5), min_size=n, max_size=n))
        t = start + np.cumsum(steps) if n else np.zeros(0)
        xyz = np.array(draw(st.lists(st.floats(-60, 60), min_size=3 * n, max_size=3 * n)))
        out.append(Readings(kind, t, xyz.reshape(n, 3)))
    return out


@FUZZ
@given(batches=st.lists(reading_batches(), min_size=1, max_size=6))
def test_a_device_stream_takes_any_readings(batches: list[list[Readings]]) -> None:
    """Any sequence of (time-ordered or not) readings: blocks on the grid, finite, and
    no more than the readings' span on the grid."""
    stream = DeviceStream(50.0, max_gap_s=2.0)
    last = -1
    for readings in batches:
        blocks, issues = stream.push(readings, now=1.7e9)
        for block in blocks:
            assert np.isfinite(block.samples).all() and block.seq > last
            last = block.seq + len(block.samples) - 1
        assert all(i.code for i in issues)


P = "fz"
# not "good": the pipeline test's good device is one the junk must leave alone; junk on a
# device's own topic may rightly disturb that device (a stray seq makes its next messages
# old or a gap), which is its own stream's business, not a fault
devices = st.one_of(
    st.sampled_from(["a", "b", "goodx", "x" * 64, "x" * 65, "", "a.b", "é", "+", "#"]),
    st.text(max_size=8).filter(lambda d: d != "good"),
)
topics = st.one_of(
    st.builds(
        lambda d, kind: f"{P}/{d}/{kind}",
        devices,
        st.sampled_from(["imu", "calibrate", "label", "imu/x", "error"]),
    ),
    st.builds(lambda d: f"sensor-logger/{d}", devices),
    st.just("sensor-logger"),
    st.text(max_size=20),
)
label_like = st.fixed_dictionaries(
    {}, optional={"activity": json_values, "start": json_values, "end": json_values}
).map(as_json)


def test_the_pipeline_takes_any_message_and_keeps_deciding(
    bundle_factory: Callable[..., Bundle], tmp_path: Path
) -> None:
    bundle = bundle_factory("gru", "stateful", aligned=True)
    overrides = [
        f"topics.prefix={P}",
        f"recording.dir={tmp_path}",
        "service.error_interval_s=0",
        "batching.max_linger_ms=0",
    ]
    config = load_config(overrides=["smoothing.method=none", *overrides])
    engine = engine_for(bundle, *overrides)
    outputs: list[Output] = []
    got = threading.Condition()

    def deliver(output: Output) -> None:
        with got:
            outputs.append(output)
            got.notify_all()

    settings_ = gateway_settings(config, bundle)
    from harstream.gateway.recorder import Recorder

    assert settings_.recording is not None
    recorder = Recorder(settings_.recording, engine.labels)
    recorder.start()
    pipeline = Pipeline(engine, settings_.pipeline, deliver, recorder=recorder)
    topics_ = Topics(P, settings_.pipeline.ingest.sensor_logger_topic)
    pipeline.start()
    seq = [0]

    def good_decides() -> None:
        """The good device's next 64 samples make a decision."""
        k = seq[0] % (len(WALK) - 64)
        message = routed(f"{P}/good/imu", imu(WALK[k : k + 64], seq=seq[0]), P)
        seq[0] += 64
        pipeline.inbox.put(Arrival([message], time.time(), time.monotonic()))
        deadline = time.monotonic() + 5
        with got:
            while not any(
                m.topic == f"{P}/good/activity" and json.loads(m.payload)["seq"] == seq[0] - 1
                for o in outputs
                for m in o.messages
            ):
                assert got.wait(max(0.0, deadline - time.monotonic())), "no decision"

    try:

        @FUZZ
        @given(st.lists(st.tuples(topics, st.one_of(payloads, label_like)), min_size=1, max_size=8))
        def hunt(messages: list[tuple[str, bytes]]) -> None:
            # routed as the gateway routes what it receives, where it enters
            arrival = [r for t, p in messages if (r := topics_.route(Incoming(t, p)))]
            pipeline.inbox.put(Arrival(arrival, time.time(), time.monotonic()))
            good_decides()
            assert pipeline.failed is None
            assert pipeline.faults.counts() == {}, "a fault reached a boundary: a bug"
            for output in outputs:
                for m in output.messages:  # every payload a reader gets is strict JSON
                    if m.payload[:1] == b"{":
                        json.loads(m.payload, parse_constant=pytest.fail)
            outputs.clear()

        hunt()
    finally:
        pipeline.stop()
        pipeline.join(10)
        recorder.stop()
