"""Fine-tune a bundle on labelled field recordings. Reads top to bottom.

1. Load the base bundle's network from ``model.pt`` (a state_dict, ``weights_only``):
   one that does not match the bundle's ``arch`` is refused here, naming the file.
2. Load the labelled recordings (``training.fielddata``) for the base bundle's inputs,
   with the vertical each device had. Hold out for the report the latest sessions
   (``holdout`` of them, by session: never part of one), or, with a single labelled
   session, its last ``holdout`` share of labelled time (the tail, cut at one sample);
   refuse, saying how to record more, when that tail holds fewer than
   ``MIN_HOLDOUT_WINDOWS`` protocol windows, and refuse a fine-tune set with fewer than
   two activities. ``holdout=0`` holds out nothing (no figure; the lineage says so).
3. Train every weight from the base ones with a small learning rate for a fixed number
   of steps (no selection on the held-out sessions: they only report), on random crops
   of the fine-tune stretches, with the base bundle's standardisation kept (the
   gateway's preprocessing does not change).
4. Score the held-out sessions before and after (protocol windows and raw online
   accuracy, as in training's validation), and write a normal bundle whose bundle.json
   carries its lineage: the base bundle, the recordings, sessions, seconds of labels,
   the settings and the scores.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harstream.config import TrainConfig
from harstream.core.bundle import Bundle, load_bundle
from harstream.core.torchnet import Net, build_net
from harstream.errors import HarstreamError, ModelError
from training.data import Prepared, protocol_windows
from training.export import write_like
from training.fielddata import MIN_SAMPLES, FieldSet, describe_holdout, load_field, slice_of
from training.train import _fit, _make_sampler, evaluate_torch

__all__ = ["MIN_HOLDOUT_WINDOWS", "FinetuneResult", "finetune", "load_net"]

#: a held-out tail of one session scores at least this many protocol windows (128
#: samples, hop 64: 8 windows are ~10 s of one activity), or the fine-tune is refused
MIN_HOLDOUT_WINDOWS = 8


@dataclass
class FinetuneResult:
    bundle: Bundle
    before: dict[str, float]
    after: dict[str, float]
    fit_sessions: list[str]
    holdout_sessions: list[str]
    labelled_s: float
    seconds: float
    #: what was held out: {"kind": "sessions", "sessions"}, {"kind": "tail", "session",
    #: "share", "from_t", "labelled_s"} (one session) or {"kind": "none", "reason"}
    holdout: dict[str, Any]


def load_net(bundle: Bundle) -> Net:
    """The bundle's torch network; a model.pt of another architecture is refused."""
    net = build_net(bundle.arch, len(bundle.labels), len(bundle.channels))
    try:
        weights = torch.load(bundle.weights_path, map_location="cpu", weights_only=True)
        net.load_state_dict(weights)
    except Exception as exc:  # missing file, unpickling refused, other shapes or keys
        raise ModelError(
            f"{bundle.weights_path}: not a {bundle.arch.type} {bundle.arch.hidden}x"
            f"{bundle.arch.layers} (stride {bundle.arch.stride}) with {len(bundle.channels)} "
            f"inputs as bundle.json says: {exc}"
        ) from exc
    return net


def finetune(
    base: str | Path | None,
    recordings: str | Path,
    out_dir: str | Path,
    *,
    steps: int = 100,
    lr: float = 3e-4,
    holdout: float = 0.25,
    devices: Sequence[str] | None = None,
    seed: int = 0,
    threads: int = 2,
    log: Callable[[str], None] = lambda line: print(line, flush=True),
) -> FinetuneResult:
    started = time.monotonic()
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    rng = np.random.default_rng(seed)

    # 1. the base network
    bundle = load_bundle(base)
    if bundle.mode != "stateful":
        raise ModelError(f"{bundle.path}: fine-tuning takes a stateful bundle")
    net = load_net(bundle)

    # 2. the data, split by session
    field = _field(recordings, bundle, devices, log)
    fit, hold, held_out, fit_sessions, holdout_sessions = _split(field, holdout, bundle)
    classes = _classes(fit, bundle)
    labelled_s = FieldSet(fit, field.sessions).labelled_s
    names = ", ".join(bundle.labels[c - 1] for c in classes)
    log(
        f"fine-tune on {len(fit)} stretches of {len(fit_sessions)} sessions "
        f"({labelled_s / 60:.1f} min labelled: {names}); held out {describe_holdout(held_out)}"
    )

    # 3. training from the base weights
    cfg = _settings(bundle, steps, lr, seed, fit)
    mean, std = np.asarray(bundle.mean), np.asarray(bundle.std)
    before = _scores(net, hold, mean, std, cfg)
    _fit(net, _make_sampler(cfg, fit, mean, std, rng), cfg, steps, lambda *a: None)
    after = _scores(net, hold, mean, std, cfg)
    if hold:
        log(f"held out ({describe_holdout(held_out)}) before: {_fmt(before)}")
        log(f"held out ({describe_holdout(held_out)}) after:  {_fmt(after)}")

    # 4. the bundle, with its lineage
    seconds = time.monotonic() - started
    record = {
        "name": f"{bundle.name}-ft",
        "finetune": {
            "base": {"name": bundle.name, "path": str(bundle.path), "sha256": _sha(bundle)},
            "recordings": str(Path(recordings).resolve()),
            "devices": sorted({str(r.subject) for r in fit}),
            "fit_sessions": fit_sessions,
            "holdout_sessions": holdout_sessions,
            "holdout": held_out,
            "labelled_s": round(labelled_s, 1),
            "steps": steps,
            "lr": lr,
            "seed": seed,
            "seconds": round(seconds, 1),
        },
        "base_training": {k: v for k, v in bundle.training.items() if k != "history"},
    }
    metrics: dict[str, Any] = {f"holdout_before_{k}": v for k, v in before.items()}
    metrics |= {f"holdout_after_{k}": v for k, v in after.items()}
    out = write_like(net.eval(), bundle, out_dir, training=record, metrics=metrics)
    log(f"wrote {out.path} in {seconds:.0f} s")
    return FinetuneResult(
        out, before, after, fit_sessions, holdout_sessions, labelled_s, seconds, held_out
    )


def _field(
    recordings: str | Path,
    bundle: Bundle,
    devices: Sequence[str] | None,
    log: Callable[[str], None],
) -> FieldSet:
    """The labelled field recordings, preprocessed for ``bundle``; refused when none."""
    field = load_field(recordings, bundle, devices=devices)
    for problem in field.problems:
        log(f"warning: {problem}")
    if not field.recordings:
        raise HarstreamError(
            f"{recordings}: no labelled recordings (label them with `harstream data labels "
            "import` or on {prefix}/{device}/label)"
        )
    return field


def _split(
    field: FieldSet, holdout: float, bundle: Bundle
) -> tuple[list[Prepared], list[Prepared], dict[str, Any], list[str], list[str]]:
    """(fit, held out, what was held out, fit sessions, held-out sessions): the latest
    ``holdout`` share of sessions, or of a lone session its last labelled stretch."""
    order = [f"{s.device}/{s.session}" for s in field.sessions]  # oldest first
    if len(order) == 1 and holdout > 0:  # one session: its last labelled stretch
        fit, hold, held_out = _hold_out_tail(field, order[0], holdout, bundle)
        return fit, hold, held_out, order, []
    held = math.ceil(holdout * len(order)) if holdout > 0 else 0
    fit_sessions, holdout_sessions = order[: len(order) - held], order[len(order) - held :]
    fit = [r for r in field.recordings if _key(r) not in holdout_sessions]
    hold = [r for r in field.recordings if _key(r) in holdout_sessions]
    held_out = (
        {"kind": "sessions", "sessions": holdout_sessions}
        if held
        else {"kind": "none", "reason": "--holdout 0: nothing held out, no figure"}
    )
    return fit, hold, held_out, fit_sessions, holdout_sessions


def _classes(fit: list[Prepared], bundle: Bundle) -> list[int]:
    """The activities the fine-tune set holds (class ids); refused under two."""
    classes = sorted({int(c) for r in fit for c in np.unique(r.labels) if c > 0})
    if len(classes) < 2:
        named = [bundle.labels[c - 1] for c in classes]
        raise HarstreamError(
            f"the fine-tune set holds {named or 'no activity'} only: at least two activities "
            "are needed (a network shown one class learns to say only that)"
        )
    return classes


def _hold_out_tail(
    field: FieldSet, session: str, share: float, bundle: Bundle
) -> tuple[list[Prepared], list[Prepared], dict[str, Any]]:
    """One session's stretches split at the sample after which ``share`` of its labelled
    samples lie: (fit, held out, what was held out). Refused, saying how to get a
    figure, when the held-out tail holds fewer than MIN_HOLDOUT_WINDOWS windows."""
    recs = field.recordings  # one session's stretches, in time order
    counts = [int((r.labels > 0).sum()) for r in recs]
    need = max(1, round(share * sum(counts)))  # labelled samples to hold out
    fit: list[Prepared] = []
    hold: list[Prepared] = []
    from_t = None
    for r, count in zip(reversed(recs), reversed(counts), strict=True):
        if need <= 0:
            fit.insert(0, r)
            continue
        if count <= need:  # all of this stretch is held out
            hold.insert(0, r)
            need -= count
            cut = 0
        else:
            cut = int(np.flatnonzero(r.labels > 0)[count - need])
            need = 0
            head = slice_of(r, 0, cut, "fit")
            tail = slice_of(r, cut, len(r.labels), "holdout")
            hold.insert(0, tail)
            if len(head.labels) >= MIN_SAMPLES and (head.labels > 0).any():
                fit.insert(0, head)
        from_t = field.starts[f"{r.subject}/{r.experiment}"] + cut / bundle.rate_hz
    hold = [r for r in hold if len(r.labels) >= MIN_SAMPLES]
    windows = sum(len(protocol_windows(r.labels, bundle.window, bundle.hop)[0]) for r in hold)
    labelled_s = sum(counts) / bundle.rate_hz
    if windows < MIN_HOLDOUT_WINDOWS or not fit:
        raise HarstreamError(
            f"{session} is the only labelled session, and the last {share:.0%} of its "
            f"{labelled_s:.0f} s of labels holds {windows} whole windows of one activity: "
            f"too few for a before/after figure (at least {MIN_HOLDOUT_WINDOWS}, ~10 s of one "
            "activity, with labels to fine-tune on before it). Record more: stream again "
            "(a new session) or longer, and label it (`harstream data labels import` or "
            "{prefix}/{device}/label); or fine-tune without a figure with --holdout 0"
        )
    assert from_t is not None
    held = {
        "kind": "tail",
        "session": session,
        "share": share,
        "from_t": round(from_t, 3),
        "labelled_s": round(sum(int((r.labels > 0).sum()) for r in hold) / bundle.rate_hz, 1),
    }
    return fit, hold, held


def _key(recording: Any) -> str:
    return f"{recording.subject}/{recording.experiment.split('.')[0]}"


def _settings(bundle: Bundle, steps: int, lr: float, seed: int, fit: list[Any]) -> TrainConfig:
    """The base bundle's training settings, for small data: crops no longer than the
    shortest stretch, the inputs as recorded (no uncalibrated copies: a device's
    calibration state is part of what it teaches)."""
    stride = bundle.arch.stride
    shortest = min(len(r.labels) for r in fit)
    seq_len = max(stride, min(512, shortest) // stride * stride)
    base = bundle.training.get("config") or {}
    known = set(TrainConfig.model_fields)
    cfg = TrainConfig.model_validate({k: v for k, v in base.items() if k in known})
    return cfg.model_copy(
        update={
            "lr": lr,
            "iterations": steps,
            "seed": seed,
            "seq_len": seq_len,
            "short_seq_len": min(cfg.short_seq_len, seq_len),
            "uncalibrated_p": 0.0,  # every crop with its recording's own vertical
            "walking_p": 0.0,
            "stale_p": 0.0,
            "mode": "stateful",
            "stride": stride,
            "inputs": "aligned" if bundle.calibration is not None else "device",
        }
    )


def _scores(
    net: Net, hold: list[Any], mean: np.ndarray, std: np.ndarray, cfg: TrainConfig
) -> dict[str, float]:
    if not hold:
        return {}
    scores = evaluate_torch(net, hold, mean, std, cfg)
    names = {"val_accuracy": "window_accuracy", "val_online_accuracy": "online_accuracy"}
    return {new: round(scores[old], 4) for old, new in names.items() if old in scores}


def _fmt(scores: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.4f}" for k, v in scores.items())


def _sha(bundle: Bundle) -> str:
    return hashlib.sha256(bundle.weights_path.read_bytes()).hexdigest()
