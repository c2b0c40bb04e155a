"""Device streams onto the model's grid: rates, jitter, separate sensors, units, gaps,
late readings, clocks, and the issues a user can act on."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import orjson
import pytest

from harstream.core.devicestream import MAX_BUFFERED, DeviceStream, Readings
from harstream.core.payload import STANDARD_GRAVITY, decode_sensor_logger
from harstream.errors import PayloadError
from replay import Recording, iter_hapt
from replay.phone import phone_batches

MINI = Path(__file__).resolve().parent / "data" / "hapt-mini"
WALK = next(iter_hapt(MINI, subjects=[9]))


def signal(t: np.ndarray) -> np.ndarray:
    """A smooth 3-axis test signal (well below the grid's Nyquist frequency)."""
    return np.stack([np.sin(2 * np.pi * 1.3 * t), np.cos(2 * np.pi * 0.7 * t), 1 + 0 * t], 1)


def push_all(stream: DeviceStream, batches: list[list[Readings]], now: float = 0.0):
    blocks, issues = [], []
    for batch in batches:
        done, found = stream.push(batch, now)
        issues += found
        blocks += done
    return blocks, issues


def jittered(rate_hz: float, seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    steps = (1 + rng.uniform(-0.15, 0.15, int(seconds * rate_hz * 1.3))) / rate_hz
    t = np.cumsum(steps)
    return t[t < seconds]


@pytest.mark.parametrize("rate_hz", [25.0, 50.0, 100.0, 200.0, 400.0])
def test_any_rate_with_jitter_lands_on_the_grid(rate_hz: float) -> None:
    acc_t, gyro_t = jittered(rate_hz, 6.0, 1), jittered(rate_hz, 6.0, 2)
    stream = DeviceStream(50.0)
    batches = []
    for lo in np.arange(0, 6.0, 1.0):  # ~1 s batches, each sensor its own clock
        a, g = (acc_t >= lo) & (acc_t < lo + 1), (gyro_t >= lo) & (gyro_t < lo + 1)
        batches.append(
            [
                Readings("acc", acc_t[a], signal(acc_t[a])),
                Readings("gyro", gyro_t[g], signal(gyro_t[g])),
            ]
        )
    blocks, issues = push_all(stream, batches)
    assert issues == []
    seqs = np.concatenate([b.seq + np.arange(len(b.samples)) for b in blocks])
    assert np.array_equal(seqs, np.arange(len(seqs)))  # contiguous grid, no repeats
    samples = np.concatenate([b.samples for b in blocks])
    # device time (the blocks' t is anchored to epoch), less the anti-alias filter's delay
    ticks = stream.origin + seqs / 50.0 - stream.delay_s
    assert len(samples) >= 5.5 * 50
    # the same signal, on the grid: accurate away from the first ticks (filter warm-up)
    expected = signal(ticks)
    np.testing.assert_allclose(samples[25:, :3], expected[25:], atol=0.05)
    np.testing.assert_allclose(samples[25:, 3:], expected[25:], atol=0.05)


def test_a_fast_sensor_is_low_passed_before_it_is_decimated() -> None:
    t = np.arange(0, 4.0, 1 / 200)
    tone = 45.0  # above the grid's 25 Hz Nyquist: it would fold to 5 Hz
    noisy = signal(t) + np.stack([np.sin(2 * np.pi * tone * t)] * 3, 1) * 0.5
    stream = DeviceStream(50.0)
    blocks, _ = push_all(stream, [[Readings("acc", t, noisy), Readings("gyro", t, noisy)]])
    samples = np.concatenate([b.samples for b in blocks])
    ticks = stream.origin + np.arange(len(samples)) / 50.0 - stream.delay_s
    residual = samples[50:, 0] - signal(ticks)[50:, 0]
    assert np.abs(residual).max() < 0.1  # the 0.5 g tone is gone, not aliased


def test_gravity_apart_is_added_back_and_units_come_from_the_decoder() -> None:
    batches = list(phone_batches(WALK, rate_hz=100.0, batch_s=1.0))
    decoded = [decode_sensor_logger(orjson.dumps(b), max_bytes=10**7) for b in batches]
    kinds = {r.kind for r in decoded[0].readings}
    assert kinds == {"linear_acc", "gravity", "gyro"}
    stream = DeviceStream(50.0)
    blocks, issues = push_all(stream, [d.readings for d in decoded])
    assert issues == []
    samples = np.concatenate([b.samples for b in blocks])
    ticks = blocks[0].t - 1_795_470_000.0 + np.arange(len(samples)) / 50.0
    grid = np.arange(len(WALK)) / 50.0
    original = np.stack([np.interp(ticks, grid, WALK.samples[:, i]) for i in range(6)], 1)
    # the recording back, in g with gravity, up to the anti-alias filter's smoothing of
    # what lies near and above 20 Hz; gravity itself (the mean) exactly
    assert np.median(np.abs(samples - original)) < 0.05
    np.testing.assert_allclose(samples[:, :3].mean(0), original[:, :3].mean(0), atol=0.005)
    assert blocks[0].t == pytest.approx(1_795_470_000.0, abs=0.05)  # the phone's clock


def test_a_long_gap_restarts_a_short_one_is_bridged() -> None:
    t = np.arange(0, 10.0, 0.01)
    keep = (t < 3.0) | (t >= 3.5) & (t < 6.0) | (t >= 9.0)  # 0.5 s and 3 s without data
    parts = [t[keep & (t >= lo) & (t < lo + 1)] for lo in range(10)]
    stream = DeviceStream(50.0, max_gap_s=2.0)
    blocks, _ = push_all(
        stream,
        [[Readings("acc", p, signal(p)), Readings("gyro", p, signal(p))] for p in parts if len(p)],
    )
    seqs = np.concatenate([b.seq + np.arange(len(b.samples)) for b in blocks])
    jumps = np.flatnonzero(np.diff(seqs) != 1)
    assert len(jumps) == 1 and stream.restarts == 1  # the 3 s gap only
    assert seqs[jumps[0]] < 6.0 * 50 and seqs[jumps[0] + 1] >= 9.0 * 50 - 1
    assert seqs[0] == 0 and 3.0 * 50 in seqs  # the 0.5 s gap was bridged


def test_late_readings_are_dropped_and_counted() -> None:
    t = np.arange(0, 3.0, 0.01)
    first, second = t < 2.0, t >= 2.0
    stream = DeviceStream(50.0)
    push_all(
        stream,
        [
            [Readings("acc", t[second], signal(t[second])), Readings("gyro", t, signal(t))],
        ],
    )
    stream.push([Readings("acc", t[first], signal(t[first]))], now=0.0)
    assert stream.late == first.sum()


def test_a_since_boot_clock_is_anchored_to_the_gateway_clock() -> None:
    t = 1234.5 + np.arange(0, 2.0, 0.01)  # seconds since boot
    stream = DeviceStream(50.0)
    (block,), _ = stream.push(
        [Readings("acc", t, signal(t)), Readings("gyro", t, signal(t))], now=1_800_000_000.0
    )
    assert block.t == pytest.approx(1_800_000_000.0 - 2.0 + 0.01, abs=0.03)


@pytest.mark.parametrize(
    ("readings", "code"),
    [
        ([("linear_acc", 1.0), ("gyro", 1.0)], "no_gravity"),
        ([("acc", 1.0)], "no_gyro"),
        ([("acc", 1.0), ("gyro", 1.0)], None),
        ([("acc", STANDARD_GRAVITY), ("gyro", 1.0)], "unit_mismatch"),
        ([("acc", 1 / STANDARD_GRAVITY), ("gyro", 1.0)], "unit_mismatch"),
    ],
)
def test_issues_a_user_can_act_on(readings: list[tuple[str, float]], code: str | None) -> None:
    t = np.arange(0, 5.0, 0.01)
    still = np.tile([0.0, 0.6, 0.8], (len(t), 1))  # 1 g, device at rest
    stream = DeviceStream(50.0)
    batches = [
        [
            Readings(kind, t[(t >= lo) & (t < lo + 1)], scale * still[(t >= lo) & (t < lo + 1)])
            for kind, scale in readings
        ]
        for lo in range(5)
    ]
    if code == "unit_mismatch":
        for batch in batches:  # a resting gyroscope
            batch[1] = Readings("gyro", batch[1].t, np.zeros_like(batch[1].xyz))
    _, issues = push_all(stream, batches)
    assert [i.code for i in issues] == ([code] if code else [])
    if code == "unit_mismatch":
        assert "m/s2" in issues[0].detail


def test_a_slow_source_is_too_slow() -> None:
    t = np.arange(0, 4.0, 0.1)  # 10 Hz
    stream = DeviceStream(50.0)
    _, issues = stream.push([Readings("acc", t, signal(t)), Readings("gyro", t, signal(t))], 0.0)
    assert [i.code for i in issues] == ["rate_too_low"]


GYRO = b'{"payload": [{"name": "gyroscope", "time": 1, "values": {"x": %s, "y": 0, "z": 0}}]}'


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (b"not json", "bad_json"),
        (b'{"messageId": 1}', "bad_shape"),
        (b'{"payload": [1]}', "bad_shape"),
        (b'{"payload": [{"name": "gyroscope", "time": 1}]}', "bad_shape"),
        (b'{"payload": [], "messageId": -1}', "bad_shape"),
        (GYRO % b"1e999", "bad_json"),
        (GYRO % b'"a"', "bad_shape"),
    ],
)
def test_bad_sensor_logger_messages_are_rejected(payload: bytes, code: str) -> None:
    with pytest.raises(PayloadError, match=code):
        decode_sensor_logger(payload, max_bytes=10**6)


def test_the_connection_test_and_other_sensors_are_ignored() -> None:
    message = {
        "messageId": 0,
        "sessionId": "s",
        "deviceId": "Anna's phone",
        "payload": [
            {"name": "test", "time": 1, "values": {}},
            {"name": "location", "time": 1, "values": {"latitude": 1.0}},
            {"name": "gyroscope", "time": 1_000_000_000, "values": {"x": 1, "y": 2, "z": 3}},
        ],
    }
    batch = decode_sensor_logger(orjson.dumps(message), max_bytes=10**6)
    assert batch.device_id == "Anna_s_phone"
    assert [(r.kind, r.t.tolist(), r.xyz.tolist()) for r in batch.readings] == [
        ("gyro", [1.0], [[1.0, 2.0, 3.0]])
    ]
    with pytest.raises(PayloadError, match="too_large"):
        decode_sensor_logger(orjson.dumps(message), max_bytes=10)


def write_export(folder: Path, recording: Recording, *, zipped: bool) -> Path:
    """A Sensor Logger export of ``recording`` (the app's CSV columns: time ns,
    seconds_elapsed, z, y, x)."""
    import zipfile

    import pandas as pd

    rows: dict[str, list[dict[str, float]]] = {}
    for batch in phone_batches(recording, rate_hz=100.0):
        for entry in batch["payload"]:
            v = entry["values"]
            rows.setdefault(entry["name"], []).append(
                {
                    "time": entry["time"],
                    "seconds_elapsed": 0.0,
                    "z": v["z"],
                    "y": v["y"],
                    "x": v["x"],
                }
            )
    names = {
        "accelerometer": "Accelerometer.csv",
        "gravity": "Gravity.csv",
        "gyroscope": "Gyroscope.csv",
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, file in names.items():
        pd.DataFrame(rows[name]).to_csv(folder / file, index=False)
    (folder / "Metadata.csv").write_text("device,version\nphone,1\n")
    if not zipped:
        return folder
    archive = folder.with_suffix(".zip")
    with zipfile.ZipFile(archive, "w") as z:
        for file in folder.iterdir():
            z.write(file, f"{folder.name}/{file.name}")
    return archive


@pytest.mark.parametrize("zipped", [True, False])
def test_a_sensor_logger_export_is_predicted_and_replayed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], zipped: bool
) -> None:
    from harstream.cli import main

    export = write_export(tmp_path / "walk-2026", WALK, zipped=zipped)
    assert main(["predict", str(export), "--json"]) == 0
    decisions = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(decisions) >= len(WALK) // 64 - 1
    assert decisions[0]["t"] == pytest.approx(1_795_470_000.0 + 63 / 50, abs=0.1)  # its clock
    assert main(["predict", str(MINI / "RawData" / "labels.txt")]) == 1  # not a recording
    report = tmp_path / "r.json"
    args = ["replay", "--recording", str(export), "--speed", "max", "--quiet"]
    assert main([*args, "--report", str(report)]) == 0
    assert json.loads(report.read_text())["decisions"] == len(decisions)


def test_a_broken_export_names_its_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from harstream.cli import main

    folder = write_export(tmp_path / "broken", WALK, zipped=False)
    (folder / "Gyroscope.csv").unlink()
    assert main(["predict", str(folder)]) == 1
    assert "needs Gyroscope.csv" in capsys.readouterr().err
    bad_zip = tmp_path / "bad.zip"
    bad_zip.write_bytes(b"not a zip")
    assert main(["predict", str(bad_zip)]) == 1
    assert "not a Sensor Logger export" in capsys.readouterr().err


def test_a_gap_judged_by_one_pair_of_readings_whatever_the_rounding() -> None:
    """b + 2.0 == a in floating point though a - b > 2.0: the gap test and where the
    stream starts again once disagreed (an IndexError that killed the gateway)."""
    b, a = 30.8660577820968, 32.8660577820968
    stream = DeviceStream(50.0, max_gap_s=2.0)
    before = b - np.arange(99, -1, -1) / 50
    first, _ = stream.push(
        [Readings("acc", before, signal(before)), Readings("gyro", before, signal(before))], now=1e9
    )
    assert sum(len(blk.samples) for blk in first) == 100
    after = a + np.arange(100) / 50
    blocks, _ = stream.push(
        [Readings("acc", after, signal(after)), Readings("gyro", after, signal(after))], now=1e9
    )
    assert stream.restarts == 1 and blocks and blocks[-1].seq > 100


def test_a_sensor_waiting_for_its_partner_is_bounded() -> None:
    """Acceleration without a gyroscope is held for a while, not without bound."""
    stream = DeviceStream(50.0)
    for k in range(100):
        t = k + np.arange(1000) / 1000
        blocks, issues = stream.push([Readings("acc", t, signal(t))], now=1e9)
        assert blocks == []
    assert [i.code for i in issues] == [] and len(stream.sensors["acc"].t) <= MAX_BUFFERED


def test_a_gap_before_the_stream_begins_is_skipped_not_filled() -> None:
    """Found by the fuzzing: readings on a since-boot clock, then on epoch time, before
    the first emission once made the grid span the gap (85 billion ticks: 633 GiB)."""
    t = np.concatenate([np.arange(1.0, 35.0), 1.7e9 + np.arange(100) / 100])
    stream = DeviceStream(50.0, max_gap_s=2.0)
    blocks, _ = stream.push([Readings("acc", t, signal(t)), Readings("gyro", t, signal(t))], 0.0)
    assert sum(len(b.samples) for b in blocks) <= 50 and blocks[0].t >= 1.7e9


def test_no_tick_spans_a_hole_seen_while_another_gap_was_pending() -> None:
    """The gyroscope's clock jumps in the same message that ends a gap of both sensors:
    the second hole arrives while the first restart is pending. The grid stops at it
    (one tick at 10 s), never interpolating 2 s of ticks across 1.7e9 s (100 ticks
    before the fix; a hypothesis run found the same with 85e9 ticks: a MemoryError)."""

    def flat(t: np.ndarray) -> np.ndarray:
        xyz = np.zeros((len(t), 3))
        xyz[:, 2] = 1.0
        return xyz

    stream = DeviceStream(50.0, max_gap_s=2.0)
    t0 = np.arange(0, 3, 0.02)
    first, _ = stream.push([Readings("acc", t0, flat(t0)), Readings("gyro", t0, flat(t0))], 1.7e9)
    acc, gyro = np.arange(10, 12, 0.02), np.array([10.0, 1.7e9])
    after, _ = stream.push(
        [Readings("acc", acc, flat(acc)), Readings("gyro", gyro, flat(gyro))], 1.7e9
    )
    assert [len(b.samples) for b in first] == [150]
    assert [len(b.samples) for b in after] == [1] and stream.gap_from == 10.0
