"""Recording on the gateway (in-memory transport, real files): sessions, parts, formats,
rotation, bounds, erasure, live labels, and the model hot swap."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from harstream.cli import main
from harstream.cli.control import control
from harstream.core.bundle import Bundle
from harstream.core.engine import Engine
from harstream.errors import ModelError
from harstream.gateway import partfiles
from harstream.recordings import read_labels, read_sessions
from tests.gateway_helpers import WALK, engine_for, imu
from tests.mosquitto import Mosquitto
from tests.test_gateway_broker import Listener, config_for, gateway_running, write_config
from tests.test_service import Harness
from training.fielddata import read_session

T0 = 1_790_000_000.0


def record(folder: Path, *more: str) -> tuple[str, ...]:
    return (f"recording.dir={folder}", "recording.rotate_s=3600", *more)


async def stream(h: Harness, device: str, samples: np.ndarray, *, seq0: int = 0, t0: float = T0):
    for s in range(0, len(samples), 50):
        part = samples[s : s + 50]
        await h.send(device, imu(part, seq=seq0 + s, t=t0 + s / 50))


@pytest.mark.asyncio
@pytest.mark.parametrize("fmt", ["parquet", "csv"])
async def test_a_session_holds_exactly_what_the_model_saw(
    bundle_factory: Callable[..., Bundle], tmp_path: Path, fmt: str
) -> None:
    bundle = bundle_factory("gru", "stateful")
    async with Harness(bundle, *record(tmp_path, f"recording.format={fmt}")) as h:
        await stream(h, "phone1", WALK[:1000])
        await h.settle(lambda: len(h.published("hs/phone1/activity")) == 1000 // 64)
    published = [a for _, a in h.published("hs/phone1/activity")]
    (info,), problems = read_sessions(tmp_path)
    assert problems == [] and info.device == "phone1" and info.samples == 1000
    assert info.first_seq == 0 and info.last_seq == 999 and info.model == bundle.name
    assert info.t_start == pytest.approx(T0) and info.t_end == pytest.approx(T0 + 999 / 50)
    ext = ".parquet" if fmt == "parquet" else ".csv.gz"
    assert all(p.endswith(ext) for p in info.parts + info.decision_parts)
    (stretch,), bad = read_session(info)
    t, samples = stretch
    assert bad == [] and np.array_equal(samples, WALK[:1000].astype(np.float32))
    assert np.allclose(t, T0 + np.arange(1000) / 50)
    import pandas as pd

    read = pd.read_parquet if fmt == "parquet" else pd.read_csv
    decisions = pd.concat([read(info.path / p) for p in info.decision_parts])
    assert decisions["activity"].tolist() == [a["activity"] for a in published]
    assert decisions["seq"].tolist() == [a["seq"] for a in published]
    assert np.allclose(
        decisions[f"p_{bundle.labels[0]}"],
        [a["probabilities"][bundle.labels[0]] for a in published],
        atol=1e-4,
    )


@pytest.mark.asyncio
async def test_a_gap_or_a_calibration_starts_a_new_session_and_parts_rotate(
    bundle_factory: Callable[..., Bundle], tmp_path: Path
) -> None:
    bundle = bundle_factory("gru", "stateful", aligned=True)
    async with Harness(bundle, *record(tmp_path), "recording.rotate_bytes=8000") as h:
        await stream(h, "d", WALK[:600])
        still = np.tile(WALK[:1], (600, 1))  # a device lying still
        await stream(h, "d", still[:400], seq0=1000, t0=T0 + 20)  # a gap of 400 samples
        await h.settle(lambda: h.gateway.snapshot()["samples"] == 1000)
        await h.device.publish("hs/d/calibrate", b'{"seconds": 1}')
        await stream(h, "d", still[400:], seq0=1400, t0=T0 + 28)
        await h.settle(lambda: h.gateway.snapshot()["samples"] == 1200)
    sessions, _ = read_sessions(tmp_path)
    assert [(s.first_seq, s.last_seq) for s in sessions] == [(0, 599), (1000, 1399), (1400, 1599)]
    assert [s.vertical_source for s in sessions] == [None, None, "calibration"]
    assert sessions[-1].vertical is not None
    assert len(sessions[0].parts) > 1  # 600 samples > 8 kB of buffer: rotated
    ((_, samples),) = read_session(sessions[0])[0]
    assert np.array_equal(samples, WALK[:600].astype(np.float32))


@pytest.mark.asyncio
async def test_the_disk_budget_or_a_full_disk_stops_recording_not_the_gateway(
    bundle_factory: Callable[..., Bundle], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = bundle_factory("gru", "stateful")
    config = (
        *record(tmp_path / "a", "recording.max_bytes=1000", "recording.rotate_bytes=5000"),
        "service.stats_interval_s=0.05",
    )
    async with Harness(bundle, *config) as h:
        await stream(h, "d", WALK[:1000])
        await h.settle(lambda: len(h.published("hs/d/activity")) == 1000 // 64)
        await h.settle(
            lambda: any(s["recording"]["state"] == "stopped" for _, s in h.published("hs/stats"))
        )
    status = h.published("hs/stats")[-1][1]["recording"]
    assert "recording.max_bytes" in status["error"]

    def full(path: Path, data: bytes) -> None:  # the fault: the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(partfiles, "atomic_write", full)
    async with Harness(bundle, *record(tmp_path / "b", "recording.rotate_bytes=5000")) as h:
        await stream(h, "d", WALK[:1000])
        await h.settle(lambda: len(h.published("hs/d/activity")) == 1000 // 64)
        await h.settle(lambda: h.gateway.snapshot()["recording"]["state"] == "stopped")
        assert "No space left" in h.gateway.snapshot()["recording"]["error"]


@pytest.mark.asyncio
async def test_live_labels_are_checked_and_stored(
    bundle_factory: Callable[..., Bundle], tmp_path: Path
) -> None:
    bundle = bundle_factory("gru", "stateful")
    async with Harness(bundle, *record(tmp_path)) as h:
        await stream(h, "d", WALK[:500])
        await h.settle(lambda: h.gateway.snapshot()["samples"] == 500)
        sends = [
            b'{"activity": "WALKING", "start": %f}' % (T0 + 1),
            b'{"activity": "WALKING", "end": "%s"}'
            % time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(T0 + 5)).encode(),
            b'{"activity": "FLYING", "start": %f}' % (T0 + 6),  # unknown
            b'{"activity": "SITTING", "start": %f, "end": %f}' % (T0 + 8, T0 + 7),  # reversed
            b'{"activity": "SITTING", "start": %f, "end": %f}' % (T0 + 4, T0 + 6),  # overlaps
            b'{"activity": "LAYING", "end": %f}' % (T0 + 9),  # nothing open
            b'{"activity": "STANDING", "start": %f}' % (T0 + 9_000),  # no recording there
            b"{nope",
        ]
        for payload in sends:
            await h.device.publish("hs/d/label", payload)
        await h.settle(lambda: len(h.published("hs/d/error")) == 6)
        await h.device.publish("hs/other/label", sends[0])
        await h.settle(lambda: len(h.published("hs/other/error")) == 1)
    errors = [e for _, e in h.published("hs/d/error")]
    assert {e["error"] for e in errors} == {"bad_label"}
    details = " | ".join(e["detail"] for e in errors)
    for words in ("FLYING", "not after the start", "overlaps", "no open LAYING", "outside"):
        assert words in details
    (label,) = read_labels(tmp_path, "d")
    assert (label.activity, label.start, label.end) == ("WALKING", T0 + 1, T0 + 5)


@pytest.mark.asyncio
async def test_forget_erases_a_device_and_old_sessions_expire(
    bundle_factory: Callable[..., Bundle], tmp_path: Path
) -> None:
    bundle = bundle_factory("gru", "stateful")
    async with Harness(bundle, *record(tmp_path)) as h:
        await stream(h, "a", WALK[:300])
        await stream(h, "b", WALK[:300])
        await h.settle(lambda: h.gateway.snapshot()["samples"] == 600)
    assert {s.device for s in read_sessions(tmp_path)[0]} == {"a", "b"}
    old = read_sessions(tmp_path, "b")[0][0].path / "session.json"
    os.utime(old, (time.time() - 40 * 86_400,) * 2)  # last written 40 days ago
    async with Harness(bundle, *record(tmp_path)) as h:  # retention runs at start
        assert {s.device for s in read_sessions(tmp_path)[0]} == {"a"}
        await stream(h, "a", WALK[:300], seq0=300, t0=T0 + 6)
        await h.settle(lambda: h.gateway.snapshot()["samples"] == 300)
        await h.device.publish("hs/control", b'{"command": "forget", "device": "a"}')
        await h.settle(lambda: len(h.published("hs/control/result")) == 1)
        await h.device.publish("hs/control", b'{"command": "explode"}')
        await h.settle(lambda: len(h.published("hs/control/result")) == 2)
    ok, bad = [r for _, r in h.published("hs/control/result")]
    assert ok["ok"] and not bad["ok"] and "reload" in bad["detail"]
    assert read_sessions(tmp_path)[0] == [] and not (tmp_path / "a").exists()


@pytest.mark.asyncio
async def test_a_model_swap_keeps_serving_and_says_so(
    bundle_factory: Callable[..., Bundle], tmp_path: Path
) -> None:
    old, new = bundle_factory("gru", "stateful"), bundle_factory("lstm", "stateful")

    def reordered() -> tuple[Engine, str]:  # a bundle whose classes are other ones
        engine = engine_for(new)
        engine.labels = tuple(reversed(engine.labels))
        return engine, "reordered"

    def broken() -> tuple[Engine, str]:
        raise ModelError("model.onnx: broken")

    loads = [lambda: (engine_for(new), new.name), reordered, broken]

    def load() -> tuple[Engine, str]:  # each reload takes the next
        return loads.pop(0)()

    async with Harness(old, *record(tmp_path), load_engine=load) as h:
        await stream(h, "d", WALK[:640])
        await h.settle(lambda: len(h.published("hs/d/activity")) == 10)
        await h.device.publish("hs/control", b'{"command": "reload"}')
        await h.settle(lambda: len(h.published("hs/control/result")) == 1)
        await stream(h, "d", WALK[640:1280], seq0=640, t0=T0 + 12.8)
        await h.settle(lambda: len(h.published("hs/d/activity")) == 20)

        def results() -> list:
            return h.published("hs/control/result")

        for _ in range(2):  # a bundle with other activities, then a broken one
            await h.device.publish("hs/control", b'{"command": "reload"}')
            before = len(results())
            await h.settle(lambda: len(results()) == before + 1)  # noqa: B023
        await stream(h, "d", WALK[1280:1408], seq0=1280, t0=T0 + 25.6)
        await h.settle(lambda: len(h.published("hs/d/activity")) == 22)
    results = [r for _, r in h.published("hs/control/result")]
    assert [r["ok"] for r in results] == [True, False, False]
    assert new.name in results[0]["detail"] and "other activities" in results[1]["detail"]
    assert "broken" in results[2]["detail"]
    models = [a["model"] for _, a in h.published("hs/d/activity")]
    assert models == [old.name] * 10 + [new.name] * 12
    seqs = [a["seq"] for _, a in h.published("hs/d/activity")]
    assert seqs == [64 * k - 1 for k in range(1, 23)]  # the stream restarted at 640: in step
    snapshot = h.gateway.snapshot()
    assert snapshot["model"]["name"] == new.name and snapshot["model"]["swaps"] == 1
    assert snapshot["resets"] == 0  # the seq checks carried over
    assert {s.model for s in read_sessions(tmp_path)[0]} == {old.name, new.name}


@pytest.mark.broker
@pytest.mark.asyncio
async def test_recording_labels_reload_and_forget_through_mosquitto(
    broker: Mosquitto, prefix: str, bundle_factory: Callable[..., Bundle], tmp_path: Path
) -> None:
    """What a user does, over the broker: a device streams and is recorded, a live label
    comes from a button, a fine-tuned bundle replaces the model with `harstream reload`
    (model.path a symlink switched to it), `harstream data forget` erases the device."""
    old, new = bundle_factory("gru", "stateful"), bundle_factory("lstm", "stateful")
    current = tmp_path / "current"
    current.symlink_to(old.path)
    folder = tmp_path / "rec"
    config = config_for(
        broker, prefix, old, f"model.path={current}", *record(folder, "recording.rotate_s=0.5")
    )
    sets = [f"--set=broker.port={broker.port}", f"--set=topics.prefix={prefix}"]
    topic = f"{prefix}/d/imu"
    async with (
        Listener(broker, f"{prefix}/d/activity", f"{prefix}/d/error") as listener,
        gateway_running(config, old, reloadable=True) as gateway,
    ):
        for s in range(0, 640, 64):
            payload = imu(WALK[s : s + 64], seq=s, t=T0 + s / 50)
            await listener.client.publish(topic, payload, qos=1)
        await listener.until(lambda: len(listener.json("/activity")) == 10)
        label = {"activity": "WALKING", "start": T0 + 1, "end": T0 + 9}
        await listener.client.publish(f"{prefix}/d/label", json.dumps(label), qos=1)
        await listener.until(lambda: len(read_labels(folder, "d")) == 1)
        current.unlink()
        current.symlink_to(new.path)
        result = await control(config, {"command": "reload"}, 20)
        assert result["ok"] and new.name in str(result["detail"])
        for s in range(640, 1280, 64):
            payload = imu(WALK[s : s + 64], seq=s, t=T0 + s / 50)
            await listener.client.publish(topic, payload, qos=1)
        await listener.until(lambda: len(listener.json("/activity")) == 20)
        assert gateway.snapshot()["model"] == {"name": new.name, "swaps": 1, "error": None}
        await listener.until(lambda: len(read_sessions(folder)[0]) == 2, timeout=15)
        code = await asyncio.to_thread(main, ["data", "forget", "d", "--dir", str(folder), *sets])
        assert code == 0 and not (folder / "d").exists()
    activity = [p for t, p, _ in listener.got if t.endswith("/activity")]
    assert activity[-1] == b""  # forget emptied the retained activity
    models = [json.loads(a)["model"] for a in activity[:-1]]
    assert models == [old.name] * 10 + [new.name] * 10
    assert listener.json("/error") == []
    assert not (folder / "d").exists()  # the gateway held nothing back to write later


@pytest.mark.broker
@pytest.mark.asyncio
async def test_serve_reloads_its_model_on_sighup(
    broker: Mosquitto, prefix: str, bundle_factory: Callable[..., Bundle], tmp_path: Path
) -> None:
    old, new = bundle_factory("gru", "stateful"), bundle_factory("lstm", "stateful")
    current = tmp_path / "current"
    current.symlink_to(old.path)
    config = write_config(tmp_path / "c.yaml", broker, prefix, old)
    config.write_text(config.read_text().replace(str(old.path), str(current)))
    topic = f"{prefix}/d/imu"
    filters = (f"{prefix}/d/activity", f"{prefix}/control/result", f"{prefix}/status")
    async with Listener(broker, *filters) as sub:
        process = subprocess.Popen(
            [sys.executable, "-m", "harstream", "serve", "--config", str(config)],
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            await sub.until(lambda: (f"{prefix}/status", b"online") in [g[:2] for g in sub.got])
            await sub.client.publish(topic, imu(WALK[:64], seq=0), qos=1)
            await sub.until(lambda: len(sub.json("/activity")) == 1, timeout=30)
            current.unlink()
            current.symlink_to(new.path)
            process.send_signal(signal.SIGHUP)
            await sub.until(lambda: len(sub.json("/control/result")) == 1, timeout=30)
            await sub.client.publish(topic, imu(WALK[64:128], seq=64), qos=1)
            await sub.until(lambda: len(sub.json("/activity")) == 2)
            process.send_signal(signal.SIGTERM)
            _, log = await asyncio.to_thread(process.communicate, None, 20)
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
    assert process.returncode == 0
    assert sub.json("/control/result")[0]["ok"] and f"now serving {new.name}" in log
    assert [a["model"] for a in sub.json("/activity")] == [old.name, new.name]


def test_a_session_json_one_part_behind_still_covers_that_part(tmp_path: Path) -> None:
    """After a crash between a part and its session.json, the readers take the last
    part's first sample as the least the session holds (parts are named by it)."""
    from harstream.recordings import Label, add_labels, session_json

    folder = tmp_path / "d" / "20260101T000000Z-0"
    folder.mkdir(parents=True)
    meta = {"device": "d", "session": folder.name, "rate_hz": 50.0, "model": "m"}
    meta |= {"vertical": None, "vertical_source": None, "first_seq": 0, "last_seq": 249}
    meta |= {"t_start": T0, "t_end": T0 + 249 / 50, "samples": 250}
    (folder / "session.json").write_text(session_json(meta))
    for seq in (0, 250):
        (folder / f"samples-{seq:012d}.parquet").write_bytes(b"")
    (info,), _ = read_sessions(tmp_path)
    assert (info.last_seq, info.t_end) == (250, T0 + 5.0)
    label = Label("d", T0 + 4.99, T0 + 5.5, "WALKING")  # on the second part's first sample
    assert add_labels(tmp_path, [label], ["WALKING"]) == 1


@pytest.mark.asyncio
async def test_a_write_fault_of_one_device_loses_its_part_only(
    bundle_factory: Callable[..., Bundle], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write that fails for one device's files (not a full disk) loses that part,
    counted; the other device keeps recording and recording goes on."""
    bundle = bundle_factory("gru", "stateful")
    real = partfiles.atomic_write

    def refused(path: Path, data: bytes) -> None:  # the fault: one device's folder
        if path.parent.parent.name == "bad":
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        real(path, data)

    monkeypatch.setattr(partfiles, "atomic_write", refused)
    async with Harness(bundle, *record(tmp_path, "recording.rotate_bytes=5000")) as h:
        await stream(h, "bad", WALK[:500])
        await stream(h, "good", WALK[:500])
        await h.settle(lambda: h.gateway.snapshot()["samples"] == 1000)
    status = h.gateway.snapshot()["recording"]
    assert status["state"] == "recording" and status["error"] is None
    assert status["lost_samples"] == 500 and status["write_errors"] >= 1
    assert [s.device for s in read_sessions(tmp_path)[0]] == ["good"]
    assert read_sessions(tmp_path, "good")[0][0].samples == 500


def test_a_device_over_its_share_records_again_once_its_old_sessions_expire(
    tmp_path: Path,
) -> None:
    """The recorder on its own (real files, a fake clock for the hourly expiry): a device
    past ``max_device_bytes`` is refused and counted; its expired sessions count off,
    and it is recorded again."""
    from harstream.gateway.recorder import Recorder, RecorderSettings

    now = [0.0]
    settings = RecorderSettings(
        tmp_path, "parquet", 1.0, 4 << 20, 128 << 20, 30.0, 1 << 30, False, 50.0, "m", 10_000
    )
    rec = Recorder(settings, ["WALKING"], monotonic=lambda: now[0])
    rec.start()
    try:

        def feed(start: int, n: int) -> None:
            for s in range(start, start + n, 100):
                rec.samples("hog", s, s == 0, WALK[s % 4000 :][:100], T0 + s / 50, None, None)

        def until(condition: Callable[[], bool]) -> None:
            deadline = time.monotonic() + 10
            while not condition():
                assert time.monotonic() < deadline
                time.sleep(0.01)

        feed(0, 3000)
        until(lambda: rec.status()["refused_samples"] > 0)
        until(rec._queue.empty)
        status = rec.status()
        assert status["devices_over_share"] == ["hog"] and status["state"] == "recording"
        written = status["samples"]
        assert written + status["refused_samples"] == 3000
        for info in read_sessions(tmp_path)[0]:  # its sessions are 40 days old
            os.utime(info.path / "session.json", (time.time() - 40 * 86_400,) * 2)
        now[0] += 3601  # the hourly expiry is due
        until(lambda: rec.status()["devices_over_share"] == [])
        feed(3000, 200)  # two parts (~9 kB): within its share again
        until(lambda: rec.status()["samples"] == written + 200)
        status = rec.status()
        assert status["folders_recreated"] == 1  # its session's folder had expired
        assert status["devices_over_share"] == [] and status["refused_samples"] == 3000 - written
        (info,), _ = read_sessions(tmp_path)
        assert (info.first_seq, info.last_seq) == (3000, 3199)
    finally:
        rec.stop()
