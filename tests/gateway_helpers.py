"""Helpers shared by the gateway tests (in-memory and against mosquitto)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from harstream.config import load_config
from harstream.core.bundle import Bundle
from harstream.core.engine import Engine
from harstream.core.payload import FRAME_MAGIC, encode_frame, encode_imu
from harstream.gateway.routes import Route, Topics
from harstream.gateway.transport import Incoming
from harstream.runtime import build_engine
from replay import iter_hapt

MINI = Path(__file__).resolve().parent / "data" / "hapt-mini"
WALK = next(iter_hapt(MINI, subjects=[9])).samples


def routed(topic: str, payload: bytes, prefix: str = "p", sensor_logger: str = "sl") -> Route:
    """The route a gateway with this topic layout gives a message on ``topic``."""
    route = Topics(prefix, sensor_logger).route(Incoming(topic, payload))
    assert route is not None
    return route


def engine_for(bundle: Bundle, *overrides: str) -> Engine:
    return build_engine(load_config(overrides=["smoothing.method=none", *overrides]), bundle)


imu = encode_imu


BAD_INPUTS: list[tuple[str, bytes, str]] = [
    ("bad.id", imu(WALK[:5]), "bad_device_id"),
    ("x" * 65, imu(WALK[:5]), "bad_device_id"),
    ("dev-bad", b"{not json", "bad_json"),
    ("dev-bad", b'"just a string"', "bad_shape"),
    ("dev-bad", b'{"samples": [[1, 2, 3]]}', "bad_shape"),
    ("dev-bad", b'{"samples": [[1, 2, 3, 4, 5, "6"]]}', "bad_shape"),
    ("dev-bad", b'{"samples": [[1, 2, 3, 4, 5, 6], [1, 2]]}', "bad_shape"),
    ("dev-bad", b'{"samples": [[1, 2, 3, 4, 5, 6], 7]}', "bad_shape"),
    ("dev-bad", b'{"samples": [[1, 2, 3, 4, 5, 6], [[1], 2, 3, 4, 5, 6]]}', "bad_shape"),
    ("dev-bad", b'{"samples": [[1, 2, 3, 4, 5, 6], [true, 2, 3, 4, 5, 6]]}', "bad_shape"),
    ("dev-bad", b'{"samples": []}', "bad_shape"),
    ("dev-bad", b'{"samples": [[1, 2, 3, 4, 5, 6]], "extra": 1}', "bad_shape"),
    ("dev-bad", b'{"samples": [[1, 2, 3, 4, 5, NaN]]}', "bad_json"),
    ("dev-bad", b'{"samples": [[1, 2, 3, 4, 5, 1e999]]}', "not_finite"),
    ("dev-bad", imu(np.zeros((501, 6))), "too_many_samples"),
    ("dev-bad", imu(WALK[:5], rate=1000), "bad_rate"),
    ("dev-bad", imu(WALK[:5], rate=10), "bad_rate"),
    ("dev-bad", imu(WALK[:5], units={"acc": "ft/s2"}), "bad_units"),
    ("dev-bad", imu(WALK[:5], units=["g"]), "bad_units"),
    ("dev-bad", imu(WALK[:5], times=[1.0, 2.0]), "bad_times"),
    ("dev-bad", imu(WALK[:3], times=[1.0, 3.0, 2.0]), "bad_times"),
    ("dev-bad", imu(WALK[:5], seq=-1), "bad_seq"),
    ("dev-bad", imu(WALK[:5], seq=1.5), "bad_seq"),
    ("dev-bad", imu(WALK[:5], t="now"), "bad_t"),
    ("dev-bad", b"[" * 70_000, "too_large"),
    # issue 26: inputs that once raised past the decoder, and limits after expansion
    ("dev-bad", imu(WALK[:5], units={"acc": ["g"]}), "bad_units"),
    ("dev-bad", imu(WALK[:5], units={"gyro": {"deg/s": 1}}), "bad_units"),
    ("dev-bad", imu(WALK[:5], seq=2**63), "bad_seq"),
    ("dev-bad", imu(WALK[:5], t=1e300), "bad_t"),
    ("dev-bad", imu(WALK[:5], t=-1.0), "bad_t"),
    ("dev-bad", imu(WALK[:5], times=[-5.0, 1, 2, 3, 4]), "bad_times"),
    ("dev-bad", imu(np.zeros((500, 6)), times=[k * 1.99 for k in range(500)]), "too_many_samples"),
    ("dev-bad", imu(np.zeros((500, 6)), rate=25), "too_many_samples"),
    ("dev-bad", imu(np.full((2, 6), 1e300)), "out_of_range"),
    ("dev-bad", imu(np.full((2, 6), 100.0)), "out_of_range"),
    (
        "dev-bad",
        imu(np.full((2, 6), 700.0), units={"acc": "m/s2", "gyro": "deg/s"}),
        "out_of_range",
    ),
    # the binary frame, as strictly
    ("dev-bad", encode_frame(WALK[:5])[:-4], "bad_frame"),
    ("dev-bad", FRAME_MAGIC + bytes(10), "bad_frame"),
    ("dev-bad", encode_frame(WALK[:5])[:4] + b"\x80" + encode_frame(WALK[:5])[5:], "bad_frame"),
    ("dev-bad", encode_frame(np.full((2, 6), np.nan)), "not_finite"),
    ("dev-bad", encode_frame(np.zeros((501, 6))), "too_many_samples"),
    ("dev-bad", encode_frame(np.zeros((0, 6))), "bad_shape"),
    ("dev-bad", encode_frame(WALK[:5], rate=1000.0), "bad_rate"),
]
