"""``harstream replay`` (a subject's recordings through the recognizer at real rate) and
``harstream predict`` (a CSV recording -> one row per decision)."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harstream.cli.common import add_config_options, config_from_args, data_dir_from
from harstream.cli.live import LivePrinter, format_summary
from harstream.config import Config, load_config
from harstream.core.bundle import UNKNOWN, Bundle, load_bundle
from harstream.core.engine import Decision
from harstream.errors import HarstreamError
from harstream.evaluation.metrics import StreamScore, label_in_force, score_stream
from harstream.runtime import build_engine
from replay import ACTIVITIES, DataError, Recording, iter_hapt, iter_uci_har
from replay.csvio import SAMPLE_COLUMNS, read_csv
from replay.player import Chunk, Clock, RealClock, play

__all__ = ["ReplayLog", "load_subject", "register", "run_replay"]


def load_phone_recording(path: Path, config: Config) -> tuple[Recording, float]:
    """A Sensor Logger export on the model's grid, through the same DeviceStream as the
    gateway's live path; returns it (unlabelled) and the epoch time of its first sample."""
    from harstream.core.devicestream import DeviceStream, Readings
    from harstream.core.payload import SENSOR_LOGGER_KINDS
    from replay.sensorlogger import read_sensor_logger

    phone = read_sensor_logger(path)
    readings = []
    for name, (t, xyz) in phone.sensors.items():
        kind, scale = SENSOR_LOGGER_KINDS[name]
        readings.append(Readings(kind, t, xyz * scale))
    stream = DeviceStream(config.stream.rate_hz, max_gap_s=config.stream.max_gap_s)
    blocks, issues = stream.push(readings, now=float(max(t[-1] for t, _ in phone.sensors.values())))
    for issue in issues:
        print(f"{path}: {issue.code}: {issue.detail}", file=sys.stderr)
    if not blocks:
        raise DataError(
            f"{path}: too short for one sample on the {config.stream.rate_hz:g} Hz grid"
        )
    # gaps restart the stream; a replay plays the pieces back to back
    samples = np.concatenate([b.samples for b in blocks])
    recording = Recording(
        0, phone.name, samples, np.zeros(len(samples), np.int8), config.stream.rate_hz, str(path)
    )
    return recording, blocks[0].t


def demo_dir() -> Path:
    from importlib import resources

    return Path(str(resources.files("replay").joinpath("demo")))


def load_subject(subject: int, data_dir: Path | None, fmt: str = "hapt") -> list[Recording]:
    """The subject's recordings from ``data_dir``, or the packaged demo when none is given."""
    source = data_dir if data_dir is not None else demo_dir()
    reader = iter_hapt if fmt == "hapt" else iter_uci_har
    recordings = list(reader(source, subjects=[subject]))
    if not recordings:
        where = f"in {data_dir}" if data_dir is not None else "packaged (only subject 9 is)"
        raise DataError(
            f"no recordings of subject {subject} {where}; get the full data with "
            "`harstream data fetch`, then pass --data-dir DIR or set HARSTREAM_DATA"
        )
    return recordings


@dataclass
class _Played:
    recording: Recording
    session: int  # seq of the recording's first sample in the device stream
    samples: int = 0
    seqs: list[int] = field(default_factory=list)  # recording-local index of each decision
    ids: list[int] = field(default_factory=list)  # published activity id (0 = UNKNOWN)
    confidence: list[float] = field(default_factory=list)


class ReplayLog:
    """What was played and decided, per recording; scored by the protocol's metrics."""

    def __init__(self, labels: tuple[str, ...]) -> None:
        self.ids = {label: i + 1 for i, label in enumerate(labels)} | {UNKNOWN: 0}
        self.played: list[_Played] = []

    def chunk(self, chunk: Chunk) -> _Played:
        if not self.played or self.played[-1].recording is not chunk.recording:
            self.played.append(_Played(chunk.recording, chunk.session_start))
        current = self.played[-1]
        current.samples = chunk.start + len(chunk.samples)
        return current

    def decision(self, current: _Played, decision: Decision) -> int:
        """Record a decision; returns its recording-local sample index."""
        local = decision.seq - current.session
        current.seqs.append(local)
        current.ids.append(self.ids[decision.activity])
        current.confidence.append(decision.confidence)
        return local

    def scores(self) -> list[StreamScore]:
        return [
            score_stream(p.recording.labels[: p.samples], p.seqs, p.ids, p.recording.rate_hz)
            for p in self.played
        ]


def run_replay(
    recordings: list[Recording],
    config: Config,
    bundle: Bundle,
    *,
    speed: float | None,
    message_samples: int,
    printer: LivePrinter,
    device: str,
    clock: Clock | None = None,
) -> tuple[ReplayLog, float, bool]:
    """Play the recordings through an engine; returns the log, wall seconds, interrupted."""
    clock = clock or RealClock()
    engine = build_engine(config, bundle)
    log = ReplayLog(bundle.labels)
    started = clock.now()
    offsets = np.cumsum([0.0] + [r.duration_s for r in recordings])
    index = {id(r): k for k, r in enumerate(recordings)}
    try:
        for chunk in play(recordings, message_samples=message_samples, speed=speed, clock=clock):
            current = log.chunk(chunk)
            for decision in engine.feed(
                device, chunk.samples, seq=chunk.seq, t=chunk.t, now=clock.now()
            ):
                local = log.decision(current, decision)
                truth = int(chunk.recording.labels[local])
                printer.decision(
                    decision.t,
                    chunk.recording.experiment,
                    decision,
                    ACTIVITIES.get(truth, "-"),
                    wrong=1 <= truth <= 6 and log.ids[decision.activity] != truth,
                )
            base = offsets[index[id(chunk.recording)]]
            printer.progress(
                base + (chunk.start + len(chunk.samples)) / chunk.recording.rate_hz,
                clock.now() - started,
            )
    except KeyboardInterrupt:
        return log, clock.now() - started, True
    return log, clock.now() - started, False


def replay_report(
    subject: int,
    log: ReplayLog,
    wall_s: float,
    speed: float | None,
    interrupted: bool,
    labels: tuple[str, ...],
) -> tuple[dict[str, Any], dict[str, float]]:
    total = sum(log.scores(), StreamScore())
    summary = total.summary()
    report = {
        "subject": subject,
        "recordings": len(log.played),
        **summary,
        "speed": "max" if speed is None else speed,
        "wall_s": round(wall_s, 3),
        "realtime_factor": round(total.duration_s / wall_s, 1) if wall_s > 0 else None,
        "interrupted": interrupted,
    }
    recall = {labels[c - 1]: v for c, v in total.recall().items()}
    report["recall"] = {k: round(v, 4) for k, v in recall.items()}
    return report, recall


def timeline_panels(log: ReplayLog) -> list[Any]:
    from harstream.evaluation.timeline import TimelinePanel

    panels = []
    for p in log.played:
        rec = p.recording
        n = p.samples
        force = label_in_force(n, p.seqs, p.ids)
        panels.append(
            TimelinePanel(
                title=f"subject {rec.subject}, {rec.experiment}",
                rate_hz=rec.rate_hz,
                truth=rec.labels[:n].astype(np.int64),
                published=np.maximum(force, 0),
                decision_t=np.array(p.seqs, np.float64) / rec.rate_hz,
                confidence=np.array(p.confidence),
                acc_magnitude=np.linalg.norm(rec.samples[:n, :3], axis=1),
            )
        )
    return panels


#: The UCI recordings were made with the phone upright on the waist: a subject replay
#: gives its devices that mount as their calibration (a --set of its own wins).
UCI_MOUNT = "calibration.uncalibrated=reference"


def cmd_replay(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    if args.recording is None and args.subject is not None:
        config = load_config(args.config, [UCI_MOUNT, *args.overrides])
    if args.recording is not None:
        recordings = [load_phone_recording(args.recording, config)[0]]
        what, device = f"recording {args.recording.name}", args.device or "phone"
    elif args.subject is None:
        raise HarstreamError("give --subject N (the UCI recordings) or --recording PATH")
    else:
        recordings = load_subject(args.subject, data_dir_from(args, config), args.format)
        what, device = f"subject {args.subject}", args.device or f"subject{args.subject}"
    speed = None if args.speed == "max" else float(args.speed)
    if speed is not None and speed <= 0:
        raise HarstreamError("--speed must be > 0 or max")
    if args.publish:
        from harstream.cli.device import publish_recordings

        return publish_recordings(args, config, recordings, speed)
    bundle = load_bundle(args.model if args.model else config.model.path)
    printer = LivePrinter(
        sys.stdout, total_s=sum(r.duration_s for r in recordings), quiet=args.quiet
    )
    printer.header(
        f"replaying {what} ({len(recordings)} recording(s)) through "
        f"{bundle.name}, hop {config.stream.hop}, smoothing {config.smoothing.method}, "
        f"uncalibrated devices: {config.calibration.uncalibrated}, speed {args.speed}"
    )
    log, wall_s, interrupted = run_replay(
        recordings,
        config,
        bundle,
        speed=speed,
        message_samples=args.message_samples,
        printer=printer,
        device=device,
    )
    report, recall = replay_report(
        args.subject or 0, log, wall_s, speed, interrupted, bundle.labels
    )
    printer.summary(format_summary(report, recall))
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps(report, indent=2) + "\n")
    if args.plot:
        from harstream.evaluation.timeline import plot_timeline

        plot_timeline(
            timeline_panels(log),
            ACTIVITIES,
            args.plot,
            f"harstream replay, {what}: online accuracy "
            f"{report['online_accuracy']:.3f}, {bundle.name}, hop {config.stream.hop}",
        )
    return 130 if interrupted else 0


def cmd_predict(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    bundle = load_bundle(args.model if args.model else config.model.path)
    from replay.sensorlogger import is_sensor_logger_export

    if is_sensor_logger_export(args.file):
        phone, t0 = load_phone_recording(args.file, config)
        samples = phone.samples
    else:
        recording = read_csv(args.file)
        samples = recording.samples
        t0 = float(recording.t[0]) if recording.t is not None else 0.0
    needed = bundle.window if bundle.mode == "window" else config.stream.hop
    if len(samples) < needed:
        raise DataError(
            f"{args.file}: {len(samples)} samples, fewer than one decision needs ({needed})"
        )
    engine = build_engine(config, bundle)
    decisions = engine.feed("csv", samples, seq=0, t=t0)
    out = sys.stdout
    if args.json:
        for d in decisions:
            out.write(
                json.dumps(
                    {
                        "seq": d.seq,
                        "t": round(d.t, 3),
                        "activity": d.activity,
                        "confidence": round(d.confidence, 4),
                        "raw_activity": d.raw_activity,
                        "probabilities": {k: round(v, 4) for k, v in d.probabilities.items()},
                    }
                )
                + "\n"
            )
        return 0
    writer = csv.writer(out)
    writer.writerow(
        [
            "seq",
            "t",
            "activity",
            "confidence",
            "raw_activity",
            *(f"p_{label}" for label in bundle.labels),
        ]
    )
    for d in decisions:
        writer.writerow(
            [
                d.seq,
                f"{d.t:.2f}",
                d.activity,
                f"{d.confidence:.4f}",
                d.raw_activity,
                *(f"{d.probabilities[label]:.4f}" for label in bundle.labels),
            ]
        )
    return 0


def register(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    replay = commands.add_parser(
        "replay", help="play a subject's UCI recordings through the recognizer at real rate"
    )
    replay.add_argument("--subject", type=int, help="subject id (1..30)")
    replay.add_argument(
        "--recording",
        type=Path,
        help="instead: a Sensor Logger recording export (zip or folder) from a phone",
    )
    replay.add_argument(
        "--data-dir",
        type=Path,
        help="folder holding HAPT RawData/ (default: "
        "$HARSTREAM_DATA, else the packaged demo subject 9)",
    )
    replay.add_argument(
        "--format",
        choices=["hapt", "uci-har"],
        default="hapt",
        help="hapt raw streams, or UCI HAR v1 windows stitched back",
    )
    replay.add_argument("--speed", default="1", help="x real time, or max (as fast as possible)")
    replay.add_argument(
        "--message-samples", type=int, default=25, help="samples per message (25 = 0.5 s)"
    )
    replay.add_argument(
        "--model", type=Path, help="bundle folder (default: model.path, else the packaged bundle)"
    )
    replay.add_argument("--device", help="device id (default subjectN)")
    replay.add_argument("--quiet", action="store_true", help="print only the summary")
    replay.add_argument(
        "--publish",
        action="store_true",
        help="publish the recordings to the "
        "broker of the config as a device would, instead of recognising them",
    )
    replay.add_argument("--report", type=Path, help="write the summary as JSON")
    replay.add_argument("--plot", type=Path, help="draw the timeline to this PNG")
    add_config_options(replay)
    replay.set_defaults(func=cmd_replay)

    predict = commands.add_parser(
        "predict",
        help="run a recording (CSV, or a Sensor Logger export) through the recognizer: "
        "one row per decision",
    )
    predict.add_argument(
        "file",
        type=Path,
        help=f"CSV with header {','.join(SAMPLE_COLUMNS)} (t optional), or a Sensor Logger "
        "export (zip or folder of Accelerometer.csv, Gravity.csv, Gyroscope.csv)",
    )
    predict.add_argument("--json", action="store_true", help="JSON lines instead of CSV")
    predict.add_argument("--model", type=Path, help="bundle folder (default: the packaged one)")
    add_config_options(predict)
    predict.set_defaults(func=cmd_predict)
