"""Labelled field recordings (what a gateway recorded, ``harstream.recordings``) as the
evaluation and fine-tuning data: the same :class:`~training.data.Prepared` recordings
the UCI data becomes, one per stretch of a session.

Each session's part files are read with pandas (parquet through pyarrow, or gzip'd CSV).
A part that cannot be read is skipped with its error named and the rest used; a session
whose parts leave a hole in its ``seq`` is cut there, since the filters and the
network run over samples without gaps. Samples get the label whose interval holds their
time (``t``, the device's clock); unlabelled ones get 0 (not scored, not trained on).
Each stretch is preprocessed with the bundle's filters and the vertical the device had
when it was recorded (its calibration, the reference one, or none), which is what the
model saw live.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harstream.core.bundle import Bundle
from harstream.core.preprocessing import Preprocessor
from harstream.recordings import (
    Label,
    LabelError,
    SessionInfo,
    check_labels,
    read_labels,
    read_sessions,
)
from training.data import Prepared

__all__ = [
    "FieldSet",
    "describe_holdout",
    "held_out",
    "load_field",
    "read_session",
    "sample_labels",
    "slice_of",
]

SAMPLE_COLUMNS = ["ax", "ay", "az", "gx", "gy", "gz"]
MIN_SAMPLES = 128  # a stretch shorter than one window teaches and tells nothing


@dataclass
class FieldSet:
    """The labelled stretches of a recording folder, and what could not be used."""

    recordings: list[Prepared] = field(default_factory=list)
    sessions: list[SessionInfo] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    unlabelled_sessions: int = 0
    #: each recording's first sample's time (device clock, epoch s), by
    #: ``{device}/{recording name}``: the rest follow on the grid
    starts: dict[str, float] = field(default_factory=dict)

    @property
    def labelled_s(self) -> float:
        """Seconds of labelled samples (activities 1-6)."""
        rate = self.sessions[0].rate_hz if self.sessions else 50.0
        return float(sum(int((r.labels > 0).sum()) for r in self.recordings)) / rate


def read_session(info: SessionInfo) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[str]]:
    """A session's samples as contiguous stretches ``(t (n,), samples (n, 6))``, and the
    problems of the parts that could not be read."""
    frames, problems = [], []
    for name in info.parts:
        path = info.path / name
        try:
            frame = (
                pd.read_parquet(path)
                if name.endswith(".parquet")
                else pd.read_csv(path, compression="gzip")
            )
            missing = {"seq", "t", *SAMPLE_COLUMNS} - set(frame.columns)
            if missing:
                raise ValueError(f"no column(s) {sorted(missing)}")
            values = frame[SAMPLE_COLUMNS].to_numpy(np.float64)
            if not np.isfinite(values).all():
                raise ValueError("samples must be finite")
        except Exception as exc:  # any reader's error: name the file, use the rest
            problems.append(f"{path}: unreadable part ({type(exc).__name__}: {exc}); skipped")
            continue
        frames.append(frame)
    if not frames:
        return [], problems
    data = pd.concat(frames).sort_values("seq").drop_duplicates("seq")
    seq = data["seq"].to_numpy(np.int64)
    t = data["t"].to_numpy(np.float64)
    # stored as float32 (CSV with the 9 digits that round-trip): the same values either way
    samples = data[SAMPLE_COLUMNS].to_numpy(np.float32).astype(np.float64)
    cuts = np.flatnonzero(np.diff(seq) != 1) + 1
    stretches = [
        (t[a:b], samples[a:b])
        for a, b in zip([0, *cuts], [*cuts, len(seq)], strict=True)
        if b - a > 0
    ]
    return stretches, problems


def sample_labels(t: np.ndarray, labels: Sequence[Label], activities: Sequence[str]) -> np.ndarray:
    """Per-sample activity ids (1-based in ``activities``; 0 where no closed label
    holds the sample's time)."""
    out = np.zeros(len(t), np.int64)
    for label in labels:
        if label.end is None:
            continue
        inside = (t >= label.start) & (t < label.end)
        out[inside] = activities.index(label.activity) + 1
    return out


def load_field(
    root: str | Path,
    bundle: Bundle,
    *,
    devices: Sequence[str] | None = None,
    sessions: Sequence[str] | None = None,
) -> FieldSet:
    """The labelled stretches under ``root`` (optionally some devices or sessions only),
    preprocessed for ``bundle``."""
    root = Path(root)
    # unstandardised, as training.data's recordings (the model's standardisation is
    # applied where they are used)
    pre = Preprocessor(bundle.preprocessing, channels=bundle.channels)
    activities = list(bundle.labels)
    infos, problems = read_sessions(root)
    out = FieldSet(problems=problems)
    labels_of: dict[str, list[Label]] = {}
    for info in infos:
        if devices is not None and info.device not in devices:
            continue
        if sessions is not None and info.session not in sessions:
            continue
        if info.device not in labels_of:
            labels_of[info.device] = _device_labels(root, info.device, activities, out.problems)
        if abs(info.rate_hz - bundle.rate_hz) > 1e-9:
            out.problems.append(
                f"{info.path}: recorded at {info.rate_hz} Hz, the model takes {bundle.rate_hz}"
            )
            continue
        if _add_session(out, info, labels_of[info.device], activities, pre):
            out.sessions.append(info)
        else:
            out.unlabelled_sessions += 1
    return out


def _device_labels(
    root: Path, device: str, activities: Sequence[str], problems: list[str]
) -> list[Label]:
    """A device's labels; none (and a problem said) when they cannot be used."""
    try:
        labels = read_labels(root, device)
        bad = check_labels(labels, activities)
        if bad:
            raise LabelError(bad)
    except LabelError as exc:
        problems.append(f"{device}: labels not used: {exc}")
        return []
    return labels


def _add_session(
    out: FieldSet,
    info: SessionInfo,
    labels: Sequence[Label],
    activities: Sequence[str],
    pre: Preprocessor,
) -> bool:
    """A session's labelled stretches of ``MIN_SAMPLES`` or more to ``out``
    (preprocessed); whether there was one."""
    stretches, bad_parts = read_session(info)
    out.problems += bad_parts
    vertical = None if info.vertical is None else np.asarray(info.vertical)
    used = False
    for k, (t, samples) in enumerate(stretches):
        truth = sample_labels(t, labels, activities)
        if len(t) < MIN_SAMPLES or not (truth > 0).any():
            continue
        features = pre.preprocess(samples, vertical).astype(np.float32)
        name = info.session if len(stretches) == 1 else f"{info.session}.{k}"
        out.recordings.append(Prepared(info.device, name, features, truth, samples, vertical))
        out.starts[f"{info.device}/{name}"] = float(t[0])
        used = True
    return used


def slice_of(r: Prepared, a: int, b: int, part: str) -> Prepared:
    """Samples ``a:b`` of a recording, named ``{its name}.{part}``."""
    return Prepared(
        r.subject,
        f"{r.experiment}.{part}",
        r.features[a:b],
        r.labels[a:b],
        r.samples[a:b],
        r.vertical,
    )


def held_out(field: FieldSet, holdout: dict[str, Any], rate_hz: float) -> list[Prepared]:
    """The recordings a fine-tune held out (its lineage's ``holdout``): the held-out
    sessions, or the tail of its one session from ``from_t``; [] when it held out none."""
    if holdout.get("kind") == "sessions":
        keep = set(holdout["sessions"])
        return [r for r in field.recordings if f"{r.subject}/{r.experiment.split('.')[0]}" in keep]
    if holdout.get("kind") != "tail":
        return []
    out = []
    for r in field.recordings:
        if f"{r.subject}/{r.experiment.split('.')[0]}" != holdout["session"]:
            continue
        start = field.starts[f"{r.subject}/{r.experiment}"]
        cut = max(0, round((holdout["from_t"] - start) * rate_hz))
        if len(r.labels) - cut >= MIN_SAMPLES:
            out.append(r if cut == 0 else slice_of(r, cut, len(r.labels), "holdout"))
    return out


def describe_holdout(held: dict[str, Any]) -> str:
    """A lineage's ``holdout`` in words."""
    if held["kind"] == "sessions":
        return f"{len(held['sessions'])} sessions ({', '.join(held['sessions'])})"
    if held["kind"] == "tail":
        return (
            f"the last {held['share']:.0%} of {held['session']}'s labels "
            f"({held['labelled_s']:.0f} s from t={held['from_t']:.3f})"
        )
    return "nothing (--holdout 0: no before/after figure)"
