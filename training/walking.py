"""Calibration from walking, measured: the vertical arrives online, through the engine.

``harstream evaluate-walking``. Each subject is one device (its
recordings joined in order: the same phone on the same belt), turned by one rotation
(``--rotate``), that nobody calibrates (or, with ``calibration="standing"``, one its
wearer calibrated standing still: walking must then leave it alone). Joined, because
in every HAPT recording the postures come before the walking: only a device that walked
before shows whether a vertical learnt from walking gets posture right (the second
recording's postures). It streams through the gateway's engine in messages of one hop;
the vertical in force when each message arrives is logged (the engine learns it from
the device's own WALKING decisions). The figures:

- ``window``: the protocol windows (128/64 inside activity 1-6 segments) with the
  network fed exactly what the engine fed it (each message's samples with the vertical
  in force then), counted from the device's first 10 s of labelled walking on;
- ``first_vertical_s``: seconds from the device's first sample (and from its first
  labelled walking) to its first vertical;
- ``online``: the published decisions scored by the protocol's stream level;
- the re-mount case (``remounted``): each device is turned again by a random rotation
  half-way through its first recording (while its wearer walks and climbs stairs); the
  windows counted are those after 30 s of labelled walking that follow the turn (the
  rest of the walking, then the second recording), and ``recover_s`` is the time from
  the turn to a walking vertical within 15 deg of the new mount's (the mean gravity
  direction over the labelled walking after the turn, in the same recording; NaN: none
  before the stream ended).

This module runs the engine and the network offline; it knows nothing of MQTT.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from joblib import Parallel, delayed

from harstream.config import Config
from harstream.core.bundle import UNKNOWN, Bundle
from harstream.core.engine import Message
from harstream.core.inference import expand_steps, load_model
from harstream.core.preprocessing import gravity_direction
from harstream.errors import HarstreamError
from harstream.evaluation.metrics import StreamScore, score_stream
from harstream.runtime import build_engine
from replay import Recording, iter_hapt
from training.augment import random_rotation
from training.data import Prepared, protocol_windows, standing_vertical, turned
from training.metrics import window_metrics
from training.robustness import parse_rotation

__all__ = [
    "WalkingRun",
    "recording_devices",
    "remounted",
    "run_walking",
    "seconds_table",
    "spliced_devices",
    "subject_devices",
    "walking_figures",
    "walking_report",
]

WALKING, STANDING = 1, 5  # the HAPT label ids
#: Windows count from this much labelled walking on (after the start, or the turn).
COUNT_AFTER_S = 10.0
COUNT_AFTER_TURN_S = 30.0
#: Re-mounted: recovered once a walking vertical this close to the new mount's is in
#: force (the mean gravity direction over the labelled walking after the turn).
RECOVERED_DEG = 15.0


@dataclass
class WalkingRun:
    """One recording through the engine: where the vertical changed (sample index,
    vertical or None, source), what it published, and where it was turned."""

    recording: Prepared
    timeline: list[tuple[int, np.ndarray | None, str | None]] = field(default_factory=list)
    decided: list[tuple[int, int]] = field(default_factory=list)
    turn_at: int | None = None


def subject_devices(
    bundle: Bundle,
    data_dir: str | Path,
    subjects: Sequence[int],
    rotate: str = "none",
    calibration: str = "none",
) -> list[tuple[Prepared, int]]:
    """One device per subject: its recordings joined in order, turned by ``rotate``
    (``training.robustness.parse_rotation``, one rotation per subject), and the length
    of its first recording. ``calibration``: ``standing`` (the first 5 s of the
    stream's first STANDING segment) or ``none``."""
    devices = []
    for index, subject in enumerate(subjects):
        raw = list(iter_hapt(data_dir, subjects=[subject]))
        if not raw:
            raise HarstreamError(f"{data_dir}: no recordings of subject {subject}")
        samples = np.concatenate([r.samples for r in raw])
        labels = np.concatenate([r.labels for r in raw])
        name = "+".join(r.experiment for r in raw)
        device = _device(bundle, subject, name, samples, labels, rotate, index, calibration)
        devices.append((device, len(raw[0].samples)))
    return devices


def recording_devices(
    bundle: Bundle,
    data_dir: str | Path,
    subjects: Sequence[int],
    rotate: str = "none",
    calibration: str = "none",
) -> list[tuple[Prepared, int]]:
    """Each recording alone a device (the protocol's usual unit), turned by ``rotate``
    (one rotation per recording), with its length."""
    raw = [r for subject in subjects for r in iter_hapt(data_dir, subjects=[subject])]
    return _each_a_device(bundle, raw, rotate, calibration)


def spliced_devices(
    bundle: Bundle,
    data_dir: str | Path,
    subjects: Sequence[int],
    rotate: str = "none",
    calibration: str = "none",
    streams: int = 3,
) -> list[tuple[Prepared, int]]:
    """The life-order protocol's random-order streams (``training.lifeorder``), each a
    device turned by ``rotate`` (one rotation per stream), with its length (no turn
    point of its own: ``remounted`` turns it half-way)."""
    from training.lifeorder import order_streams

    raw = [
        stream
        for subject in subjects
        for stream in order_streams(list(iter_hapt(data_dir, subjects=[subject])), streams)[0][
            "spliced"
        ]
    ]
    return _each_a_device(bundle, raw, rotate, calibration)


def _each_a_device(
    bundle: Bundle, raw: Sequence[Recording], rotate: str, calibration: str
) -> list[tuple[Prepared, int]]:
    """Each recording (or stream) a device of its own (the i-th turned by ``rotate``'s
    i-th rotation), with its length."""
    return [
        (
            _device(bundle, r.subject, r.experiment, r.samples, r.labels, rotate, i, calibration),
            len(r.samples),
        )
        for i, r in enumerate(raw)
    ]


def _device(
    bundle: Bundle,
    subject: int,
    name: str,
    samples: np.ndarray,
    labels: np.ndarray,
    rotate: str,
    index: int,
    calibration: str,
) -> Prepared:
    """A device's stream turned by ``rotate``, with its standing calibration (the first
    5 s of its first STANDING segment) or none."""
    if calibration not in ("standing", "none"):
        raise ValueError(f"calibration {calibration!r}: standing or none")
    samples = turned(samples, parse_rotation(rotate, index))
    vertical = None
    if calibration == "standing":
        _, filtered = bundle.preprocessor().filter(None, samples[None])
        seconds = bundle.calibration.seconds if bundle.calibration is not None else 5.0
        vertical = standing_vertical(filtered[0], labels, bundle.rate_hz, seconds)
    empty = np.zeros((0, len(bundle.channels)), np.float32)
    return Prepared(subject, name, empty, labels, samples, vertical)


def remounted(devices: Sequence[tuple[Prepared, int]], seed: int) -> list[tuple[Prepared, int]]:
    """The devices turned again by a uniformly random rotation (seeded per device) from
    half-way through their first recording: a wearer who re-clipped it. Returns each
    with the sample of the turn."""
    out = []
    for index, (r, first) in enumerate(devices):
        half = first // 2
        rotation = random_rotation(np.random.default_rng([seed, index, 28]), 180.0)
        samples = np.concatenate([r.samples[:half], turned(r.samples[half:], rotation)])
        out.append(
            (Prepared(r.subject, r.experiment, r.features, r.labels, samples, r.vertical), half)
        )
    return out


def run_walking(
    bundle: Bundle,
    config: Config,
    devices: Sequence[tuple[Prepared, int]],
    *,
    remount: bool = False,
) -> list[WalkingRun]:
    """Every device through one engine (messages of one hop), each with its standing
    calibration if it has one (``vertical``), else none. ``remount``: the devices come
    from ``remounted`` (their second values are the turns)."""
    engine = build_engine(config, bundle)
    engine.max_devices = max(engine.max_devices, len(devices))
    recordings = [r for r, _ in devices]
    names = [f"s{r.subject}-{r.experiment}" for r in recordings]
    runs = [WalkingRun(r, turn_at=turn if remount else None) for r, turn in devices]
    for name, r in zip(names, recordings, strict=True):
        engine.set_vertical(name, r.vertical)
    ids = {label: i + 1 for i, label in enumerate(bundle.labels)} | {UNKNOWN: 0}
    chunk = config.stream.hop
    for start in range(0, max(len(r.samples) for r in recordings), chunk):
        batch = [
            Message(name, r.samples[start : start + chunk], seq=start)
            for name, r in zip(names, recordings, strict=True)
            if start < len(r.samples)
        ]
        prepared = engine.prepare(batch)
        for name, run in zip(names, runs, strict=True):  # in force for this message
            if start < len(run.recording.samples):
                _log_vertical(run, start, engine.verticals.get(name), engine.sources.get(name))
        decisions = engine.complete(prepared)
        index = {name: run for name, run in zip(names, runs, strict=True)}
        for d in decisions:
            index[d.device].decided.append((d.seq, ids[d.activity]))
    return runs


def _log_vertical(run: WalkingRun, start: int, v: np.ndarray | None, source: str | None) -> None:
    last = run.timeline[-1] if run.timeline else None
    if last is None or last[2] != source or not _same(last[1], v):
        run.timeline.append((start, None if v is None else v.copy(), source))


def _same(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    if a is None or b is None:
        return a is b
    return bool(np.array_equal(a, b))


def _probs(bundle: Bundle, run: WalkingRun, model: Any) -> np.ndarray:
    """Per-sample class probabilities of the network fed what the engine fed it."""
    pre = bundle.preprocessor()
    samples = run.recording.samples
    _, filtered = pre.filter(None, samples[None])
    bounds = [a for a, _, _ in run.timeline] + [len(samples)]
    parts = []
    for (a, v, _), b in zip(run.timeline, bounds[1:], strict=True):
        parts.append(pre.inputs(filtered[:, a:b], None if v is None else v[None])[0])
    features = np.concatenate(parts)
    stride = bundle.arch.stride
    whole = len(features) - len(features) % stride
    _, probs = model.step(model.initial_state(1), features[None, :whole])
    return expand_steps(probs[0], stride, len(features))


def _count_from(labels: np.ndarray, start: int, seconds: float, rate_hz: float) -> int:
    """The sample after which ``seconds`` of labelled walking follow ``start``."""
    walking = np.cumsum(labels[start:] == WALKING)
    reached = np.flatnonzero(walking >= round(seconds * rate_hz))
    return start + int(reached[0]) + 1 if len(reached) else len(labels)


def _first_walking_vertical(
    run: WalkingRun, after: int, near: np.ndarray | None = None
) -> int | None:
    """Where the first walking vertical from sample ``after`` on took effect; with
    ``near``: the first within ``RECOVERED_DEG`` of it."""
    close = np.cos(np.radians(RECOVERED_DEG))
    for a, v, source in run.timeline:
        if v is None or a < after or source != "walking":
            continue
        if near is None or v @ near >= close:
            return a
    return None


def _walking_gravity(bundle: Bundle, run: WalkingRun, after: int) -> np.ndarray | None:
    """The mean gravity direction over the labelled walking from the turn at ``after``
    to the end of the recording it was in (twice the turn: see ``remounted``): the
    vertical a re-mounted device should recover (None: no walking there)."""
    labels = run.recording.labels[: 2 * after]
    walking = np.flatnonzero(labels[after:] == WALKING) + after
    if not len(walking):
        return None
    _, filtered = bundle.preprocessor().filter(None, run.recording.samples[None])
    v = gravity_direction(filtered[0, walking]).sum(axis=0)
    unit: np.ndarray = v / np.linalg.norm(v)
    return unit


def walking_figures(bundle: Bundle, runs: Sequence[WalkingRun]) -> dict[str, Any]:
    """The windows counted (see the module docstring), their accuracy, arrival and
    recovery times, and the online stream score of the published decisions."""
    model = load_model(bundle, "onnx")
    rate = bundle.rate_hz
    truth, pred, first, first_walk, recover, stream = [], [], [], [], [], StreamScore()
    for run in runs:
        labels = run.recording.labels
        per_sample = _probs(bundle, run, model)
        starts, classes = protocol_windows(labels, bundle.window, bundle.hop)
        turn = run.turn_at
        begin = _count_from(labels, turn or 0, COUNT_AFTER_TURN_S if turn else COUNT_AFTER_S, rate)
        keep = starts >= begin
        truth.append(classes[keep])
        pred.append(per_sample[starts[keep] + bundle.window - 1].argmax(-1))
        near = None if turn is None else _walking_gravity(bundle, run, turn)
        arrived = _first_walking_vertical(run, turn or 0, near)
        walk0 = np.flatnonzero(labels == WALKING)
        if turn is not None:
            recover.append(np.nan if arrived is None else (arrived - turn) / rate)
        elif arrived is not None:
            first.append(arrived / rate)
            if len(walk0):
                first_walk.append((arrived - walk0[0]) / rate)
        seqs, decided = zip(*run.decided, strict=True) if run.decided else ((), ())
        stream += score_stream(labels, seqs, decided, rate)
    truth_, pred_ = np.concatenate(truth), np.concatenate(pred)
    m = window_metrics(truth_, pred_, bundle.labels) if len(truth_) else {}
    out: dict[str, Any] = {
        "devices": len(runs),
        "windows": len(truth_),  # none: nothing counted (too little walking after the turn)
        "accuracy": round(m["accuracy"], 4) if m else None,
        "macro_f1": round(m["macro_f1"], 4) if m else None,
        "online_accuracy": round(stream.online_accuracy, 4),
        "calibrated_devices": sum(_first_walking_vertical(r, 0) is not None for r in runs),
    }
    if first:
        out["first_vertical_s_median"] = round(float(np.median(first)), 1)
        out["first_vertical_after_walking_s_median"] = round(float(np.median(first_walk)), 1)
    if recover:
        done = np.array(recover)
        out["recovered"] = f"{int(np.isfinite(done).sum())}/{len(done)}"
        out["recover_s_median"] = (
            round(float(np.nanmedian(done)), 1) if np.isfinite(done).any() else None
        )
    return out


def seconds_table(
    bundle: Bundle,
    config: Config,
    devices: Sequence[tuple[Prepared, int]],
    seconds: Sequence[float],
) -> list[dict[str, Any]]:
    """How good a vertical N seconds of walking give, for each N: each device's first
    vertical from the engine with ``calibration.walking_s`` = N, applied to all of the
    device's protocol windows (as if it had been in force from the start: the vertical's
    quality alone, not its arrival), and its angle to the device's standing vertical
    (the first 5 s of its first STANDING segment; devices without one, such as subject
    10's walking-only recording, are left out). Row ``standing``: that standing
    vertical in force from the start instead (the protocol's calibrated figure)."""
    model = load_model(bundle, "onnx")
    pre = bundle.preprocessor()
    devices = [(d, n) for d, n in devices if (d.labels == STANDING).any()]  # to compare with
    standing = []
    for device, _ in devices:
        _, filtered = pre.filter(None, device.samples[None])
        standing.append(standing_vertical(filtered[0], device.labels, bundle.rate_hz, 5.0))
    rows = [_fixed_row(bundle, model, devices, standing, standing, "standing")]
    for n in seconds:
        cal = config.calibration.model_copy(update={"walking_s": n})
        runs = run_walking(bundle, config.model_copy(update={"calibration": cal}), devices)
        first = [next((v for _, v, src in run.timeline if src == "walking"), None) for run in runs]
        rows.append(_fixed_row(bundle, model, devices, first, standing, n))
    return rows


def _fixed_row(
    bundle: Bundle,
    model: Any,
    devices: Sequence[tuple[Prepared, int]],
    verticals: Sequence[np.ndarray | None],
    standing: Sequence[np.ndarray],
    name: float | str,
) -> dict[str, Any]:
    """The devices' protocol windows with ``verticals`` in force from the start."""
    truth, pred, angles = [], [], []
    for (device, _), v, s in zip(devices, verticals, standing, strict=True):
        if v is None:
            continue
        angles.append(float(np.degrees(np.arccos(np.clip(v @ s, -1, 1)))))
        per_sample = _probs(bundle, WalkingRun(device, timeline=[(0, v, "walking")]), model)
        starts, classes = protocol_windows(device.labels, bundle.window, bundle.hop)
        truth.append(classes)
        pred.append(per_sample[starts + bundle.window - 1].argmax(-1))
    m = window_metrics(np.concatenate(truth), np.concatenate(pred), bundle.labels)
    return {
        "walking_s": name,
        "devices": f"{len(truth)}/{len(devices)}",
        "accuracy": round(m["accuracy"], 4),
        "macro_f1": round(m["macro_f1"], 4),
        "angle_to_standing_deg_median": round(float(np.median(angles)), 1),
        "angle_to_standing_deg_max": round(float(np.max(angles)), 1),
    }


#: The report's rows: (streams, calibration, turned again half-way). ``none`` is the
#: device left uncalibrated (``calibration.from_walking`` off): the baseline.
ROWS = (
    ("lab", "walking", False),
    ("lab", "walking", True),
    ("lab", "standing", False),
    ("lab", "standing", True),
    ("lab", "none", False),
    ("spliced", "walking", False),
    ("spliced", "walking", True),
    ("spliced", "standing", False),
    ("spliced", "none", False),
)


def _rotation_rows(
    bundle: Bundle, config: Config, data_dir: str | Path, subjects: Sequence[int], rotate: str
) -> list[dict[str, Any]]:
    """Every row of ``ROWS`` for one rotation spec (a joblib task)."""
    rows = []
    devices: dict[tuple[str, str], list[tuple[Prepared, int]]] = {}
    for streams, calibration, again in ROWS:
        given = "standing" if calibration == "standing" else "none"
        if (streams, given) not in devices:
            make = subject_devices if streams == "lab" else spliced_devices
            devices[(streams, given)] = make(bundle, data_dir, subjects, rotate, given)
        chosen = devices[(streams, given)]
        cal = config.calibration.model_copy(update={"from_walking": calibration != "none"})
        cfg = config.model_copy(update={"calibration": cal})
        seed = int(rotate) if rotate.lstrip("-").isdigit() else 0
        runs = run_walking(bundle, cfg, remounted(chosen, seed) if again else chosen, remount=again)
        rows.append(
            {
                "rotation": rotate,
                "streams": streams,
                "calibration": calibration,
                "remount": again,
                **walking_figures(bundle, runs),
            }
        )
    return rows


def walking_report(
    bundle: Bundle,
    config: Config,
    data_dir: str | Path,
    subjects: Sequence[int],
    rotations: Sequence[str],
    jobs: int = 2,
) -> pd.DataFrame:
    """The calibration-from-walking table: ``ROWS`` for each rotation, and their mean
    over the random rotations (rotation ``uniform (mean of seeds)``)."""
    parts = Parallel(n_jobs=min(jobs, len(rotations)))(
        delayed(_rotation_rows)(bundle, config, data_dir, subjects, rotate) for rotate in rotations
    )
    table = pd.DataFrame([row for part in parts for row in part])
    random = table[table["rotation"].str.lstrip("-").str.isdigit()]
    if len(random) and len(rotations) > 1:
        keys = ["streams", "calibration", "remount"]
        numeric = random.drop(columns=["rotation"]).select_dtypes("number").columns.difference(keys)
        means = random.groupby(keys, sort=False)[list(numeric)].mean().round(4).reset_index()
        means["rotation"] = "uniform (mean of seeds)"
        table = pd.concat([table, means], ignore_index=True)
    return table
