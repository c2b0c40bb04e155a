"""Recording while devices stream, through mosquitto: parts rotate by the stream's own
time (a backlog uploaded fast is written as it arrives), session.json follows the
parts (labels for written samples are accepted at once, by `data labels import` and the
live label topic), a device gone quiet or evicted has its samples on disk, and faults
of one device's files (its folder deleted, its share of the folder used) stay its own."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from harstream.cli import main
from harstream.core.bundle import Bundle
from harstream.recordings import read_labels, read_sessions
from tests.gateway_helpers import WALK, imu
from tests.mosquitto import Mosquitto
from tests.test_gateway_broker import Listener, config_for, gateway_running
from training.fielddata import read_session

pytestmark = [pytest.mark.broker, pytest.mark.asyncio]

RATE = 50
SPEEDUP = 20  # the device uploads a backlog at 20x real time
ROTATE_S = 5.0
SPREAD = 0.25  # docs/field-data.md: each session's period is rotate_s +-25%


def samples_of(n: int) -> np.ndarray:
    return np.tile(WALK, (n // len(WALK) + 1, 1))[:n]


def delete(folder: Path) -> None:
    """``rm -rf`` while the gateway writes there: again if it wrote meanwhile."""
    for _ in range(50):
        if not folder.exists():
            return
        try:
            shutil.rmtree(folder)
            return
        except OSError:  # a file or folder made while the tree was being removed
            time.sleep(0.01)
    raise AssertionError(f"{folder} could not be deleted")


def part_seqs(folder: Path) -> dict[str, tuple[int, int, float]]:
    """Every samples part on disk, read from the parts: its session/name -> the seq of
    its first sample in its session, its samples, when it reached the disk (epoch s)."""
    out = {}
    for info in read_sessions(folder)[0]:
        for name in info.parts:
            try:
                mtime = (info.path / name).stat().st_mtime
                (stretch,), _ = read_session(replace(info, parts=(name,)))
            except (OSError, ValueError):
                continue
            t, _ = stretch
            out[f"{info.session}/{name}"] = (round((t[0] - info.t_start) * RATE), len(t), mtime)
    return out


async def test_labels_are_accepted_while_a_device_streams_at_20x_real_time(
    broker: Mosquitto, prefix: str, bundle_factory: Callable[..., Bundle], tmp_path: Path
) -> None:
    """The issue's case: a device uploads 120 s of samples at 20x real time (two sessions:
    its stream restarts halfway) while it is labelled: a label on samples already in a
    part is accepted by `data labels import` as soon as the part is on disk, and a live
    label on any stretch of its recordings (written, or still buffered, this session's or
    the one before) is accepted; a label where nothing was recorded is refused."""
    bundle = bundle_factory("gru", "stateful")
    folder = tmp_path / "rec"
    config = config_for(
        broker,
        prefix,
        bundle,
        f"recording.dir={folder}",
        f"recording.rotate_s={ROTATE_S}",
        "service.error_interval_s=0",  # every refusal reported
    )
    sets = [f"--set=model.path={bundle.path}", "--dir", str(folder)]
    t0 = time.time() - 600  # a backlog: the stream's clock runs behind the wall's
    seconds, restart = 120, 60  # seconds of stream; at 60 the seq jumps (a new session)
    gap = 20  # seconds of samples never sent between the sessions
    data = samples_of(seconds * RATE)
    sent_at: dict[int, float] = {}  # second of the stream -> when it was published (wall)
    imported: list[tuple[float, int]] = []  # (s from the part on disk to accepted, second)
    seen: dict[str, float] = {}  # part -> when it reached the disk (its mtime, epoch s)
    refusals: list[str] = []

    def second_t(k: int) -> float:  # the device time of the stream's second k
        return t0 + k + (gap if k >= restart else 0)

    async def label_parts(done: asyncio.Event) -> None:
        """The labeller: for each new part, a label on its last whole second, imported
        until accepted (as a user re-running the import would)."""
        pending: list[tuple[str, int]] = []
        last_scan = False
        while not (last_scan and not pending):
            last_scan = done.is_set()  # once the stream is on disk: a scan more, then stop
            for part, (first, n, mtime) in (await asyncio.to_thread(part_seqs, folder)).items():
                if part in seen:
                    continue
                seen[part] = mtime
                offset = restart if part.split("/")[0] != first_session() else 0
                last_whole = (first + n) // RATE - 1  # whole seconds inside the part
                if last_whole * RATE >= first:
                    pending.append((part, offset + last_whole))
            for part, k in list(pending):
                csv = tmp_path / f"import-{k}.csv"
                start = second_t(k)
                csv.write_text(f"device,start,end,activity\nd,{start!r},{start + 0.4!r},WALKING\n")
                code = await asyncio.to_thread(main, ["data", "labels", "import", str(csv), *sets])
                if code == 0:
                    imported.append((time.time() - seen[part], k))
                    pending.remove((part, k))
                else:
                    refusals.append(part)
            await asyncio.sleep(0.05)

    sessions: list[str] = []

    def first_session() -> str:
        if not sessions:
            sessions.extend(s.session for s in read_sessions(folder, "d")[0][:1])
        return sessions[0]

    async with (
        Listener(broker, f"{prefix}/d/error") as listener,
        gateway_running(config, bundle) as gateway,
    ):
        done = asyncio.Event()
        labeller = asyncio.create_task(label_parts(done))
        live: list[tuple[float, float]] = []
        for k in range(seconds):
            seq = k * RATE + (gap * RATE if k >= restart else 0)
            payload = imu(data[k * RATE : (k + 1) * RATE], seq=seq, t=second_t(k))
            await listener.client.publish(f"{prefix}/d/imu", payload, qos=1)
            sent_at[k] = time.monotonic()
            labels = []
            if k % 5 == 4:  # a live label on the second just sent: still buffered
                labels.append(k)
            if k == restart:  # the first session's early and last seconds, from the second
                labels += [3, restart - 2]
            for j in labels:
                start, end = second_t(j) + 0.5, second_t(j) + 0.9
                live.append((start, end))
                body = f'{{"activity": "SITTING", "start": {start!r}, "end": {end!r}}}'
                await listener.client.publish(f"{prefix}/d/label", body, qos=1)
            await asyncio.sleep(1 / SPEEDUP)
        streamed_s = time.monotonic() - sent_at[0]
        nowhere = second_t(restart) - gap / 2  # in the gap: no sample was recorded there
        body = f'{{"activity": "SITTING", "start": {nowhere!r}, "end": {nowhere + 0.4!r}}}'
        await listener.client.publish(f"{prefix}/d/label", body, qos=1)
        await listener.until(lambda: len(listener.json("/error")) == 2)
        # the last part comes with the wall-time rotation (at most rotate_s * 1.25)
        await listener.until(
            lambda: sum(s.samples for s in read_sessions(folder, "d")[0]) == seconds * RATE,
            timeout=ROTATE_S * (1 + SPREAD) + 5,
        )
        done.set()
        await asyncio.wait_for(labeller, 30)
        stats = gateway.snapshot()["recording"]
    gap_error, error = listener.json("/error")  # the seq gap is reported, and the label
    assert gap_error["error"] == "seq_gap"
    assert error["error"] == "bad_label" and "outside every recording" in error["detail"]
    # every part but the last of each session was written as the stream arrived: about
    # rotate_s (+-25%) of stream each, one message (1 s) of granularity
    first, second = read_sessions(folder, "d")[0]
    assert (first.samples, second.samples) == (restart * RATE, (seconds - restart) * RATE)
    sizes = [n for _, n, _ in part_seqs(folder).values()]
    assert len(sizes) == stats["parts"] and stats["lost_samples"] == 0
    low, high = ROTATE_S * (1 - SPREAD) * RATE, (ROTATE_S * (1 + SPREAD) + 1) * RATE
    full = sorted(sizes)[2:]  # the two sessions' last parts may be short
    assert all(low <= n <= high for n in full), sizes
    assert len(sizes) >= seconds / (ROTATE_S * (1 + SPREAD) + 1)
    assert streamed_s < seconds / 5  # the device streamed far faster than real time
    # every part got its label, accepted within one rotation of the part reaching disk
    assert len(imported) == len(sizes)
    delays = [d for d, _ in imported]
    assert max(delays) <= ROTATE_S * (1 + SPREAD), delays
    print(
        f"streamed at {seconds / streamed_s:.1f}x real time; "
        f"{len(sizes)} parts; import accepted after {np.median(delays):.3f} s median, "
        f"{max(delays):.3f} s max; {len(refusals)} refused attempts (the part was on disk, "
        "its session.json not yet)"
    )
    # every live label and every imported one is stored
    stored = read_labels(folder, "d")
    assert len([lab for lab in stored if lab.source == "live"]) == len(live)
    assert len([lab for lab in stored if lab.source.startswith("import")]) == len(imported)


async def test_a_device_gone_quiet_or_evicted_has_its_samples_labelled_on_disk(
    broker: Mosquitto, prefix: str, bundle_factory: Callable[..., Bundle], tmp_path: Path
) -> None:
    """A few samples, fewer than a rotation of stream: written when the wall-time
    rotation comes (the device went quiet), and at its eviction; session.json says so
    each time, and `data labels import` takes a label on them."""
    bundle = bundle_factory("gru", "stateful")
    folder = tmp_path / "rec"
    config = config_for(
        broker,
        prefix,
        bundle,
        f"recording.dir={folder}",
        "recording.rotate_s=1",
        "stream.idle_timeout_s=3",
    )
    sets = [f"--set=model.path={bundle.path}", "--dir", str(folder)]
    t0 = time.time() - 60
    async with Listener(broker) as device, gateway_running(config, bundle) as gateway:
        await device.client.publish(f"{prefix}/q/imu", imu(WALK[:20], seq=0, t=t0), qos=1)
        quiet = time.monotonic()
        await device.until(lambda: sum(s.samples for s in read_sessions(folder)[0]) == 20, 5)
        written_after = time.monotonic() - quiet
        label = tmp_path / "l.csv"
        label.write_text(f"device,start,end,activity\nq,{t0!r},{t0 + 0.3!r},STANDING\n")
        assert main(["data", "labels", "import", str(label), *sets]) == 0
        await device.client.publish(f"{prefix}/q/imu", imu(WALK[20:30], seq=20, t=t0 + 0.4), qos=1)
        await device.until(lambda: gateway.snapshot()["devices"] == 0, 10)  # evicted
        await device.until(lambda: sum(s.samples for s in read_sessions(folder)[0]) == 30, 5)
        (info,), _ = read_sessions(folder)
        assert (info.first_seq, info.last_seq) == (0, 29)
        assert info.t_end == pytest.approx(t0 + 29 / RATE)
        assert gateway.snapshot()["recording"]["parts"] == 2
    assert written_after <= 1.25 + 0.5 + 0.5  # rotate_s +25%, the writer's tick, slack


async def test_a_deleted_recording_folder_is_made_again_for_every_device(
    broker: Mosquitto, prefix: str, bundle_factory: Callable[..., Bundle], tmp_path: Path
) -> None:
    """One device's folder deleted, then the whole recording folder: each is made
    again, both devices keep recording (before, deleting one folder stopped all), and
    each session.json describes the parts that are there."""
    bundle = bundle_factory("gru", "stateful")
    folder = tmp_path / "rec"
    config = config_for(broker, prefix, bundle, f"recording.dir={folder}", "recording.rotate_s=1")
    t0 = time.time() - 600
    sent = {"a": 0, "b": 0}

    async def stream(client: object, seconds: int) -> None:
        for _ in range(seconds):
            for device, k in sent.items():
                payload = imu(WALK[(k % 80) * RATE :][:RATE], seq=k * RATE, t=t0 + k)
                await client.publish(f"{prefix}/{device}/imu", payload, qos=1)  # type: ignore[attr-defined]
                sent[device] += 1
            await asyncio.sleep(0.05)

    def on_disk(device: str) -> int:
        return sum(s.samples for s in read_sessions(folder, device)[0])

    async with Listener(broker) as dev, gateway_running(config, bundle) as gateway:
        await stream(dev.client, 5)
        await dev.until(lambda: on_disk("a") == on_disk("b") == 5 * RATE, 10)
        delete(folder / "a")
        await stream(dev.client, 5)
        await dev.until(lambda: on_disk("b") == 10 * RATE and on_disk("a") > 0, 10)
        delete(folder)
        await stream(dev.client, 5)
        await dev.until(lambda: on_disk("a") > 0 and on_disk("b") > 0, 10)
        await stream(dev.client, 3)
        await dev.until(lambda: on_disk("b") >= 3 * RATE and on_disk("a") >= 3 * RATE, 10)
        stats = gateway.snapshot()["recording"]
    assert stats["state"] == "recording" and stats["error"] is None
    assert stats["folders_recreated"] >= 3  # a's session, then both
    for device in ("a", "b"):
        (info,), problems = read_sessions(folder, device)
        (stretch,), bad = read_session(info)
        t, _ = stretch
        assert problems == [] and bad == [] and len(t) == info.samples  # all of it on disk
        assert info.first_seq == round((t[0] - t0) * RATE) and info.last_seq == 18 * RATE - 1


async def test_one_device_cannot_use_the_whole_recording_budget(
    broker: Mosquitto, prefix: str, bundle_factory: Callable[..., Bundle], tmp_path: Path
) -> None:
    """``recording.max_device_share``: a device that streams much more than the others
    stops being recorded at its share (counted and named in stats) while the others
    keep recording."""
    bundle = bundle_factory("gru", "stateful")
    folder = tmp_path / "rec"
    config = config_for(
        broker,
        prefix,
        bundle,
        f"recording.dir={folder}",
        "recording.rotate_s=1",
        "recording.max_bytes=400000",
        "recording.max_device_share=0.1",  # 40 kB a device
        "recording.decisions=false",
    )
    t0 = time.time() - 3600
    async with Listener(broker) as dev, gateway_running(config, bundle) as gateway:
        for k in range(60):  # the hog: 60 s, 4 s of stream a message
            payload = imu(samples_of(60 * 200)[k * 200 :][:200], seq=k * 200, t=t0 + 4 * k)
            await dev.client.publish(f"{prefix}/hog/imu", payload, qos=1)
            if k % 6 == 0:  # the quiet one: 1 s every 6 messages
                n = k // 6
                payload = imu(WALK[n * RATE :][:RATE], seq=n * RATE, t=t0 + n)
                await dev.client.publish(f"{prefix}/quiet/imu", payload, qos=1)
            await asyncio.sleep(0.02)
        await dev.until(lambda: gateway.snapshot()["samples"] == 60 * 200 + 10 * RATE)
        await dev.until(
            lambda: sum(s.samples for s in read_sessions(folder, "quiet")[0]) == 10 * RATE, 10
        )
        stats = gateway.snapshot()["recording"]
    assert stats["devices_over_share"] == ["hog"] and stats["state"] == "recording"
    hog = sum(p.stat().st_size for p in (folder / "hog").rglob("*") if p.is_file())
    recorded = sum(s.samples for s in read_sessions(folder, "hog")[0])
    assert 40_000 <= hog < 40_000 + 4 * 200 * 30  # its share, passed by one part at most
    assert stats["refused_samples"] == 60 * 200 - recorded > 0
    assert stats["max_device_bytes"] == 40_000
