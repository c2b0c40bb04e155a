"""The model bundle: a directory with ``bundle.json``, ``model.pt`` and ``model.onnx``.

``bundle.json`` says everything serving needs besides the weights: labels, network
architecture, inference mode, window and hop, sample rate, channel order, filter
parameters and the normalisation statistics; plus how the model was trained and what
it measured. No pickles anywhere: ``model.pt`` is a state_dict for
``torch.load(..., weights_only=True)`` and ``model.onnx`` runs on onnxruntime.

This module reads and validates the JSON; it imports neither torch nor onnxruntime.
A malformed bundle raises :class:`~harstream.errors.ModelError` naming the file, key
and reason.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from harstream.core.preprocessing import CHANNELS, INPUTS, FilterSpec, Preprocessor
from harstream.errors import ModelError

__all__ = [
    "BUNDLE_FORMAT",
    "ActivityStats",
    "ArchSpec",
    "Bundle",
    "CalibrationSpec",
    "default_bundle_path",
    "load_bundle",
]

BUNDLE_FORMAT = 1
UNKNOWN = "UNKNOWN"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ArchSpec(_Strict):
    type: Literal["gru", "lstm"]
    hidden: Annotated[int, Field(gt=0)]
    layers: Annotated[int, Field(gt=0)]
    dropout: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0
    #: samples per recurrent step: > 1 puts a linear front end over each ``stride``
    #: samples and steps the recurrent layers once per such patch
    stride: Annotated[int, Field(gt=0)] = 1
    #: networks of this shape averaged (geometric mean of their class probabilities);
    #: their states are stacked along the layer axis, ``state_layers`` in all
    members: Annotated[int, Field(gt=0)] = 1

    @property
    def state_tensors(self) -> int:
        """How many state arrays the network carries: h (GRU) or h and c (LSTM)."""
        return 2 if self.type == "lstm" else 1

    @property
    def summary(self) -> str:
        """E.g. ``gru 64x2`` or ``gru 64x2 x 3 networks``."""
        networks = f" x {self.members} networks" if self.members > 1 else ""
        return f"{self.type} {self.hidden}x{self.layers}{networks}"

    @property
    def state_layers(self) -> int:
        """The first axis of each state array: every member's layers, member by member."""
        return self.layers * self.members


class _Normalization(_Strict):
    mean: list[float]
    std: list[Annotated[float, Field(gt=0)]]


class ActivityStats(_Strict):
    """What the training subjects' label sequences say, for the HMM smoother:
    mean segment duration per class (s), the fraction of each class's segments that
    lead to each other class (rows sum to 1), and each class's share of the samples."""

    mean_duration_s: list[Annotated[float, Field(gt=0)]]
    transitions: list[list[Annotated[float, Field(ge=0)]]]
    prior: list[Annotated[float, Field(gt=0)]]


class CalibrationSpec(_Strict):
    """The mean standing vertical of the training subjects (device frame): the
    calibration a device gets when it is assumed to be worn as in the training data."""

    reference_vertical: Annotated[list[float], Field(min_length=3, max_length=3)]
    seconds: Annotated[float, Field(gt=0)] = 5.0


class _BundleSpec(_Strict):
    format: Literal[1]
    labels: Annotated[list[str], Field(min_length=2)]
    arch: ArchSpec
    mode: Literal["window", "stateful"]
    window: Annotated[int, Field(gt=0)]
    hop: Annotated[int, Field(gt=0)]
    rate_hz: Annotated[float, Field(gt=0)]
    channels: list[str]
    preprocessing: dict[str, Any]
    normalization: _Normalization
    calibration: CalibrationSpec | None = None
    activity_stats: ActivityStats | None = None
    training: dict[str, Any] = {}
    metrics: dict[str, Any] = {}

    @field_validator("labels")
    @classmethod
    def _distinct_labels(cls, labels: list[str]) -> list[str]:
        if UNKNOWN in labels or len(set(labels)) != len(labels):
            raise ValueError(f"must be distinct and must not contain {UNKNOWN}")
        return labels

    @field_validator("hop")
    @classmethod
    def _hop_fits(cls, hop: int, info: ValidationInfo) -> int:
        if hop > info.data.get("window", hop):
            raise ValueError("must not exceed window")
        return hop

    @field_validator("channels")
    @classmethod
    def _known_inputs(cls, channels: list[str]) -> list[str]:
        if tuple(channels) not in INPUTS:
            raise ValueError(f"must be one of {[list(c) for c in INPUTS]}")
        return channels

    @field_validator("normalization")
    @classmethod
    def _one_per_channel(cls, norm: _Normalization, info: ValidationInfo) -> _Normalization:
        width = len(info.data.get("channels", CHANNELS))
        if len(norm.mean) != width or len(norm.std) != width:
            raise ValueError(f"mean and std need {width} values each (one per channel)")
        return norm

    @field_validator("activity_stats")
    @classmethod
    def _one_per_label(cls, stats: ActivityStats | None, info: ValidationInfo) -> Any:
        n = len(info.data.get("labels", []))
        if stats is not None and not (
            len(stats.mean_duration_s) == len(stats.prior) == len(stats.transitions) == n
            and all(len(row) == n for row in stats.transitions)
        ):
            raise ValueError(f"needs {n} values per list and a {n}x{n} transitions matrix")
        return stats


@dataclass(frozen=True)
class Bundle:
    """A validated bundle directory. ``spec`` fields are exposed as attributes."""

    path: Path
    labels: tuple[str, ...]
    arch: ArchSpec
    mode: str
    window: int
    hop: int
    rate_hz: float
    preprocessing: FilterSpec
    mean: tuple[float, ...]
    std: tuple[float, ...]
    training: dict[str, Any]
    metrics: dict[str, Any]
    channels: tuple[str, ...] = CHANNELS
    calibration: CalibrationSpec | None = None
    activity_stats: ActivityStats | None = None

    @property
    def onnx_path(self) -> Path:
        return self.path / "model.onnx"

    @property
    def weights_path(self) -> Path:
        return self.path / "model.pt"

    def preprocessor(self) -> Preprocessor:
        """The filters, inputs and standardisation the network was trained on."""
        return Preprocessor(self.preprocessing, self.mean, self.std, self.channels)

    @property
    def name(self) -> str:
        """A short id for payloads: the bundle's ``training.name`` or its folder name."""
        return str(self.training.get("name") or self.path.name)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": BUNDLE_FORMAT,
            "labels": list(self.labels),
            "arch": self.arch.model_dump(),
            "mode": self.mode,
            "window": self.window,
            "hop": self.hop,
            "rate_hz": self.rate_hz,
            "channels": list(self.channels),
            "preprocessing": self.preprocessing.to_dict(),
            "normalization": {"mean": list(self.mean), "std": list(self.std)},
            **({"calibration": self.calibration.model_dump()} if self.calibration else {}),
            **({"activity_stats": self.activity_stats.model_dump()} if self.activity_stats else {}),
            "training": self.training,
            "metrics": self.metrics,
        }

    def save(self) -> Path:
        """Write ``bundle.json`` (the one writer of the format); the weights are the
        trainer's to write beside it."""
        self.path.mkdir(parents=True, exist_ok=True)
        meta = self.path / "bundle.json"
        meta.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        return meta


def default_bundle_path() -> Path:
    """The bundle packaged with harstream (what serve and replay use without --model)."""
    return Path(str(resources.files("harstream").joinpath("default_model")))


def load_bundle(path: str | Path | None = None) -> Bundle:
    """Read and validate ``path/bundle.json`` (default: the packaged bundle)."""
    folder = Path(path) if path is not None else default_bundle_path()
    meta = folder / "bundle.json"
    try:
        data = json.loads(meta.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ModelError(f"{meta}: missing (a bundle is a folder with bundle.json)") from exc
    except (OSError, ValueError) as exc:
        raise ModelError(f"{meta}: cannot read JSON: {exc}") from exc
    try:
        spec = _BundleSpec.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        reason = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
        raise ModelError(f"{meta}: {where}: {reason.removeprefix('Value error, ')}") from exc
    try:
        filters = FilterSpec.from_dict(spec.preprocessing)
    except (TypeError, ValueError) as exc:
        raise ModelError(f"{meta}: preprocessing: {exc}") from exc
    if filters.rate_hz != spec.rate_hz:
        raise ModelError(
            f"{meta}: preprocessing.rate_hz ({filters.rate_hz}) differs from "
            f"rate_hz ({spec.rate_hz})"
        )
    return Bundle(
        path=folder,
        labels=tuple(spec.labels),
        arch=spec.arch,
        mode=spec.mode,
        window=spec.window,
        hop=spec.hop,
        rate_hz=spec.rate_hz,
        preprocessing=filters,
        mean=tuple(spec.normalization.mean),
        std=tuple(spec.normalization.std),
        training=spec.training,
        metrics=spec.metrics,
        channels=tuple(spec.channels),
        calibration=spec.calibration,
        activity_stats=spec.activity_stats,
    )
