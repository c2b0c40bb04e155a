"""The binary device frame: the same message as JSON, decoded without a loop per sample.
Its malformed forms are in tests/gateway_helpers.BAD_INPUTS (served by the service and
broker tests with every other bad input)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from harstream.core.bundle import Bundle
from harstream.core.engine import Engine, Message
from harstream.core.payload import DeviceReadings, decode_imu, encode_frame, encode_imu
from tests.gateway_helpers import WALK, engine_for

LIMITS = {"now": 5.0, "rate_hz": 50.0, "max_samples": 500, "max_bytes": 65536}


def test_a_frame_decodes_as_its_json_twin() -> None:
    rows = WALK[:25].astype(np.float32).astype(np.float64)  # what float32 carries exactly
    frame = decode_imu("d", encode_frame(rows, seq=100, t=1_795_470_000.5), **LIMITS)
    twin = decode_imu("d", encode_imu(rows, seq=100, t=1_795_470_000.5), **LIMITS)
    assert isinstance(frame, Message) and isinstance(twin, Message)
    np.testing.assert_array_equal(frame.samples, twin.samples)
    assert (frame.seq, frame.t, frame.received) == (twin.seq, twin.t, twin.received)
    bare = decode_imu("d", encode_frame(rows), **LIMITS)
    assert isinstance(bare, Message) and bare.seq is None and bare.t is None
    assert len(encode_frame(rows)) == 32 + 25 * 24  # vs ~2,500 bytes of JSON


def test_a_frame_in_other_units_and_rates_goes_through_the_device_stream() -> None:
    rows = np.tile([0.0, 0.0, 9.80665, 0.0, 0.0, 90.0], (10, 1))
    got = decode_imu(
        "d", encode_frame(rows, t=100.0, rate=100.0, acc="m/s2", gyro="deg/s"), **LIMITS
    )
    assert isinstance(got, DeviceReadings)
    acc, gyro = got.readings
    np.testing.assert_allclose(acc.xyz[0], [0.0, 0.0, 1.0], rtol=1e-6)
    np.testing.assert_allclose(gyro.xyz[0], [0.0, 0.0, np.pi / 2], rtol=1e-6)
    np.testing.assert_allclose(acc.t[:3], [100.0, 100.01, 100.02])


def test_the_engine_decides_the_same_from_frames_and_json(
    bundle_factory: Callable[..., Bundle],
) -> None:
    rows = WALK[:640].astype(np.float32).astype(np.float64)
    bundle = bundle_factory("gru", "stateful", stride=4, aligned=True)
    chunks = [(k, rows[k : k + 40]) for k in range(0, 640, 40)]
    frames = _decisions(engine_for(bundle), [encode_frame(c, seq=k) for k, c in chunks])
    texts = _decisions(engine_for(bundle), [encode_imu(c, seq=k) for k, c in chunks])
    assert frames == texts and len(frames) == 10


def _decisions(engine: Engine, payloads: list[bytes]) -> list[tuple[int, str, float]]:
    out = []
    for payload in payloads:
        message = decode_imu("d", payload, **LIMITS)
        assert isinstance(message, Message)
        out += engine.feed("d", message.samples, seq=message.seq)
    return [(d.seq, d.raw_activity, d.confidence) for d in out]
