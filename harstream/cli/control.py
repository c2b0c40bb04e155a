"""``harstream reload`` and the field-data commands ``harstream data labels|forget``.

``reload`` asks a running gateway (over the broker, ``{prefix}/control``) to load
``model.path`` again and swap it in, and prints its answer from
``{prefix}/control/result``. ``data labels import FILE`` adds labels to a recording
folder (a CSV ``device,start,end,activity``, or a Sensor Logger export's annotations),
all or none; ``data labels show DEVICE`` lists them; ``data forget DEVICE`` erases
everything of a device: its recordings and labels here, and through the running gateway
its calibration and retained topics (with no gateway answering, it does those itself:
the calibration state file's entry, and empty retained messages).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import json
import time
from pathlib import Path

from harstream.cli.common import add_config_options, config_from_args
from harstream.config import Config
from harstream.core.payload import valid_device_id
from harstream.errors import ConfigError, HarstreamError
from harstream.recordings import Label, add_labels, forget_device, parse_time, read_labels

__all__ = ["csv_labels", "register", "sensor_logger_labels"]

#: annotation texts that end the activity in force without starting another
STOP_WORDS = {"", "-", "stop", "end", "none"}


async def control(config: Config, body: dict[str, object], wait_s: float) -> dict[str, object]:
    """Publish a command on ``{prefix}/control``; the gateway's result."""
    from harstream.runtime import mqtt_transport

    prefix = config.topics.prefix
    transport = mqtt_transport(config, client_id=f"harstream-control-{int(time.time() * 1e3)}")
    transport.clean_session = True  # a one-off client leaves no session behind
    async with transport.session() as session:
        await session.subscribe(f"{prefix}/control/result", qos=1)
        await session.publish(f"{prefix}/control", json.dumps(body).encode(), qos=1, retain=False)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait_s):
                async for batch in session.batches():
                    for incoming in batch:
                        result = json.loads(incoming.payload)
                        if result.get("command") == body["command"]:
                            return dict(result)
    raise HarstreamError(f"no answer from a gateway on {prefix}/control within {wait_s:g} s")


def cmd_reload(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    result = asyncio.run(control(config, {"command": "reload"}, args.wait))
    print(result["detail"])
    return 0 if result["ok"] else 1


def _recording_dir(args: argparse.Namespace, config: Config) -> Path:
    folder = args.dir or config.recording.dir
    if folder is None:
        raise ConfigError("recording.dir: not set; give --dir DIR or set recording.dir")
    return Path(folder)


def _activities(config: Config) -> tuple[str, ...]:
    from harstream.core.bundle import load_bundle

    return load_bundle(config.model.path).labels


def csv_labels(path: Path, device: str | None = None) -> list[Label]:
    """Labels from a CSV with a header ``device,start,end,activity`` (``device`` may be
    left out when ``device`` is given); times in epoch seconds or ISO 8601."""
    out = []
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        need = {"start", "end", "activity"} | (set() if device else {"device"})
        if reader.fieldnames is None or need - set(reader.fieldnames):
            raise HarstreamError(f"{path}: needs the columns {sorted(need)}")
        for i, row in enumerate(reader, start=2):
            try:
                start, end = parse_time(row["start"]), parse_time(row["end"])
            except ValueError as exc:
                raise HarstreamError(f"{path}: line {i}: {exc}") from None
            who = device or row["device"].strip()
            out.append(Label(who, start, end, row["activity"].strip(), f"import {path.name}"))
    return out


def sensor_logger_labels(path: Path, device: str, activities: tuple[str, ...]) -> list[Label]:
    """Labels from a Sensor Logger export's annotations: an annotation naming an activity
    (any case, spaces for underscores) starts it, the next annotation ends it (one of
    ``stop``, ``end``, ``-`` or an empty one only ends it), the recording's end ends the
    last."""
    from replay.sensorlogger import read_sensor_logger

    recording = read_sensor_logger(path)
    if not recording.annotations:
        raise HarstreamError(f"{path}: no annotations (Annotation.csv) in this export")
    marks = sorted(recording.annotations)
    ends = [t for t, _ in marks[1:]] + [recording.end_s]
    out = []
    for (t, text), end in zip(marks, ends, strict=True):
        name = text.strip().upper().replace(" ", "_").replace("-", "_")
        if text.strip().lower() in STOP_WORDS:
            continue
        if name not in activities:
            raise HarstreamError(
                f"{path}: annotation {text!r} at {t:.3f} names no activity "
                f"({', '.join(activities)}, or stop)"
            )
        out.append(Label(device, t, end, name, f"sensor-logger {path.name}"))
    return out


def cmd_labels_import(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    root = _recording_dir(args, config)
    activities = _activities(config)
    source: Path = args.file
    if source.suffix.lower() == ".csv":
        labels = csv_labels(source, args.device)
    else:
        if not args.device:
            raise ConfigError("--device: a Sensor Logger export's labels need the device id")
        labels = sensor_logger_labels(source, args.device, activities)
    count = add_labels(root, labels, activities)
    devices = sorted({label.device for label in labels})
    print(f"{count} labels added for {', '.join(devices)} in {root}")
    return 0


def cmd_labels_show(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    for label in read_labels(_recording_dir(args, config), args.device):
        print(f"{label.describe()}  ({label.source})")
    return 0


def retained_topics(config: Config, device: str) -> list[str]:
    """What the gateway keeps retained of a device (``data forget`` empties them)."""
    prefix = config.topics.prefix
    topics = [f"{prefix}/{device}/{kind}" for kind in ("activity", "calibration", "availability")]
    discovery = config.homeassistant.discovery_prefix
    return [*topics, f"{discovery}/sensor/harstream_{device}/activity/config"]


async def clear_retained(config: Config, topics: list[str]) -> None:
    """Empty retained messages on ``topics`` (the broker then holds none there)."""
    from harstream.runtime import mqtt_transport

    transport = mqtt_transport(config, client_id=f"harstream-forget-{int(time.time() * 1e3)}")
    transport.clean_session = True
    async with transport.session() as session:
        for topic in topics:
            await session.publish(topic, b"", qos=1, retain=True)


def forget_calibration(path: Path, device: str) -> bool:
    """Drop a device's entry from ``calibration.state_file``; whether it had one."""
    from harstream.gateway.calibrations import CalibrationFile

    state = CalibrationFile(path)
    verticals, sources = state.load_sources()
    if verticals.pop(device, None) is None:
        return False
    state.save(verticals, sources)  # the others keep their sources (walking stays walking)
    return True


def cmd_forget(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    device = args.device
    if not valid_device_id(device):
        raise ConfigError(f"{device!r} is not a device id")
    answered = False
    if not args.local:  # the gateway first: it stops writing the device's files
        try:
            result = asyncio.run(control(config, {"command": "forget", "device": device}, 5))
            print(f"gateway: {result['detail']}")
            answered = bool(result["ok"])
        except (HarstreamError, OSError) as exc:
            print(f"no running gateway answered ({exc}): erasing the rest here")
    folder = args.dir or config.recording.dir
    if folder is not None:  # what is left on disk (all of it, without a gateway)
        freed = forget_device(Path(folder), device)
        print(f"{device}: {freed} bytes of recordings and labels erased from {folder}")
    if answered:
        return 0
    state_file = config.calibration.state_file
    if state_file is not None and forget_calibration(Path(state_file), device):
        print(f"{device}: calibration erased from {state_file}")
    if args.local:
        print(f"{device}: retained topics left on the broker (--local)")
        return 0
    asyncio.run(clear_retained(config, retained_topics(config, device)))
    print(f"{device}: retained topics emptied")
    return 0


def register(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    reload = commands.add_parser(
        "reload",
        help="ask the running gateway to load model.path again and serve it (no restart)",
    )
    reload.add_argument("--wait", type=float, default=30.0, help="seconds to wait for it")
    add_config_options(reload)
    reload.set_defaults(func=cmd_reload)


def register_data(data_commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """``data labels import|show`` and ``data forget`` (under ``harstream data``)."""
    from harstream.cli.common import Parser

    labels = data_commands.add_parser("labels", help="label field recordings")
    actions = labels.add_subparsers(
        dest="labels_command", metavar="ACTION", required=True, parser_class=Parser
    )
    imp = actions.add_parser(
        "import",
        help="add labels from a CSV (device,start,end,activity; epoch s or ISO 8601) or a "
        "Sensor Logger export's annotations; all or none",
    )
    imp.add_argument("file", type=Path, help="a .csv, or a Sensor Logger export (zip or folder)")
    imp.add_argument("--device", help="the device the labels are for (a CSV may name it)")
    imp.add_argument("--dir", type=Path, help="the recording folder (default recording.dir)")
    add_config_options(imp)
    imp.set_defaults(func=cmd_labels_import)
    show = actions.add_parser("show", help="list a device's labels")
    show.add_argument("device")
    show.add_argument("--dir", type=Path, help="the recording folder (default recording.dir)")
    add_config_options(show)
    show.set_defaults(func=cmd_labels_show)
    forget = data_commands.add_parser(
        "forget",
        help="erase everything of a device: recordings, labels, calibration, retained topics "
        "(through the running gateway, else here)",
    )
    forget.add_argument("device")
    forget.add_argument("--dir", type=Path, help="the recording folder (default recording.dir)")
    forget.add_argument(
        "--local",
        action="store_true",
        help="only erase the files (recordings, labels, calibration state); no broker",
    )
    add_config_options(forget)
    forget.set_defaults(func=cmd_forget)
