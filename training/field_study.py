"""The field-data study of docs/field-data.md: how much a little labelled data of one's
own recovers for a phone worn another way than in the lab.

For each test subject and fixed rotation: the subject's two experiments, the phone
turned by the rotation, are streamed as a Sensor Logger phone (100 Hz jittered clocks,
m/s2, gravity apart, 1 s batches, QoS 1) through a real mosquitto to a real gateway that
records them (``calibration.uncalibrated: reference``: the user never calibrated, so
the gateway assumes the lab's mount; ``calibration.from_walking`` off, as when the study
was measured: learning the vertical from walking would repair part of the "before").
The experiments are labelled from the truth (as a CSV import); the first is the
fine-tune set, the second is held out and scored by the protocol (``evaluate-field``)
with the base bundle and the fine-tuned one.

    python -m training.field_study --data-dir DIR --subjects 2 4 9 --rotations x90 y180 \\
        --out docs/figures/field-study
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pandas as pd

from harstream.config import load_config
from harstream.core.bundle import load_bundle
from harstream.evaluation.metrics import segments
from harstream.gateway.service import Gateway
from harstream.recordings import Label, add_labels
from harstream.runtime import build_engine, gateway_settings, mqtt_transport
from harstream.testing.localbroker import Mosquitto
from replay import BASIC_ACTIVITIES, iter_hapt
from replay.phone import phone_batches
from replay.recording import Recording
from training.data import turned
from training.evaluate import evaluate_bundle
from training.fielddata import load_field
from training.finetune import finetune
from training.robustness import parse_rotation

__all__ = ["record_as_phone", "study", "truth_labels"]

START = 1_795_470_000.0  # the phone's clock at the first experiment's first sample
APART_S = 3600.0  # the second experiment an hour later


def truth_labels(recording: Recording, device: str, start_s: float) -> list[Label]:
    """The recording's activity 1-6 segments as labels on the phone's clock."""
    rate = recording.rate_hz
    return [
        Label(device, start_s + a / rate, start_s + b / rate, BASIC_ACTIVITIES[c - 1], "truth")
        for c, a, b in segments(recording.labels)
        if 1 <= c <= 6
    ]


async def record_as_phone(
    recordings: Sequence[Recording],
    starts: Sequence[float],
    folder: Path,
    broker: Mosquitto,
    device: str = "user",
    overrides: Sequence[str] = (),
) -> None:
    """Stream each recording as a Sensor Logger phone (its clock starting at its start)
    through ``broker`` to a gateway that records into ``folder``; returns once the
    gateway has taken every sample and stopped."""
    config = load_config(
        overrides=[
            f"broker.host={broker.host}",
            f"broker.port={broker.port}",
            "broker.clean_session=true",
            f"recording.dir={folder}",
            "calibration.uncalibrated=reference",
            "calibration.from_walking=false",
            "service.stats_interval_s=3600",
            *overrides,
        ]
    )
    bundle = load_bundle(config.model.path)
    gateway = Gateway(
        build_engine(config, bundle), mqtt_transport(config), gateway_settings(config, bundle)
    )
    stop = asyncio.Event()
    task = asyncio.create_task(gateway.run(stop))
    await asyncio.wait_for(gateway.connected.wait(), 10)
    phone = mqtt_transport(config, client_id=f"phone-{device}")
    phone.clean_session = True
    sent = 0
    async with phone.session() as session:
        for k, (r, start) in enumerate(zip(recordings, starts, strict=True)):
            for batch in phone_batches(r, start_epoch_s=start, session=f"s{k}", seed=k):
                await session.publish(
                    f"sensor-logger/{device}", orjson.dumps(batch), qos=1, retain=False
                )
                sent += 1
    deadline = time.monotonic() + 120
    while gateway.counters["messages"] < sent or gateway.snapshot()["queue"]:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the gateway took {gateway.counters['messages']} of {sent}")
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)  # the last batch through the pipeline
    stop.set()
    await task


def _score(model: Path | None, folder: Path, sessions: list[str], config: Any) -> dict[str, Any]:
    bundle = load_bundle(model)
    field = load_field(folder, bundle, sessions=sessions)
    report = evaluate_bundle(model, None, {"default": config}, recordings=field.recordings, jobs=1)
    stream = report["stream"]["default"]
    return {
        "window_accuracy": round(report["window"]["accuracy"], 4),
        "online_accuracy": stream["online_accuracy"],
        "minutes": round(field.labelled_s / 60, 2),
    }


def study(
    data_dir: Path,
    subjects: Sequence[int],
    rotations: Sequence[str],
    work: Path,
    steps: int = 100,
) -> pd.DataFrame:
    rows = []
    config = load_config(
        overrides=["calibration.uncalibrated=reference", "calibration.from_walking=false"]
    )
    with tempfile.TemporaryDirectory() as broker_dir:
        broker = Mosquitto(Path(broker_dir)).start()
        try:
            for subject in subjects:
                experiments = list(iter_hapt(data_dir, subjects=[subject]))[:2]
                for spec in rotations:
                    rotation = parse_rotation(spec, 0)
                    turned_recs = [
                        replace(r, samples=turned(r.samples, rotation)) for r in experiments
                    ]
                    folder = work / f"s{subject}-{spec}"
                    shutil.rmtree(folder, ignore_errors=True)
                    starts = [START, START + APART_S + len(experiments[0]) / 50]
                    asyncio.run(record_as_phone(turned_recs, starts, folder, broker))
                    labels = [
                        label
                        for r, start in zip(experiments, starts, strict=True)
                        for label in truth_labels(r, "user", start)
                    ]
                    add_labels(folder, labels, load_bundle().labels)
                    infos = sorted(p.name for p in (folder / "user").iterdir() if p.is_dir())
                    fit_session, held = infos[0], infos[-1]
                    out = work / f"s{subject}-{spec}-bundle"
                    started = time.monotonic()
                    finetune(None, folder, out, steps=steps, log=lambda line: None)
                    minutes = time.monotonic() - started
                    before = _score(None, folder, [held], config)
                    after = _score(out, folder, [held], config)
                    fit = _score(None, folder, [fit_session], config)
                    row = {
                        "subject": subject,
                        "rotation": spec,
                        "labelled_min": fit["minutes"],
                        "window_before": before["window_accuracy"],
                        "window_after": after["window_accuracy"],
                        "online_before": before["online_accuracy"],
                        "online_after": after["online_accuracy"],
                        "finetune_s": round(minutes, 1),
                    }
                    print(json.dumps(row), flush=True)
                    rows.append(row)
        finally:
            broker.stop()
    return pd.DataFrame(rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.field_study", description=__doc__)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--subjects", type=int, nargs="+", default=[2, 4, 9])
    parser.add_argument("--rotations", nargs="+", default=["x90", "y180", "z90"])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--work", type=Path, default=Path("runs/field-study"))
    parser.add_argument("--out", type=Path, help="write the table as CSV + Markdown here")
    args = parser.parse_args(argv)
    table = study(args.data_dir, args.subjects, args.rotations, args.work, args.steps)
    print(table.to_string(index=False))
    if args.out:
        from training.metrics import write_table

        csv, markdown = write_table(table, args.out, "Fine-tuning on one labelled experiment")
        print(f"wrote {csv} and {markdown}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
