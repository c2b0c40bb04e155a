"""Train a GRU/LSTM on the HAPT recordings and write a model bundle. Reads top to bottom.

1. Load the 21 training subjects, preprocessed by the gateway's own offline function.
2. Split off the validation subjects; fit the normalisation on the rest.
3. Train with AdamW and a cosine schedule:
   - stateful mode: random crops of ``seq_len`` samples from zero state (a share
     ``short_crop_p`` of the batches ``short_seq_len``: a device's first decisions
     count more), a target at every labelled step (the activity of the newest sample;
     one per ``stride`` samples), truncated backprop;
   - aligned inputs: each recording calibrated on its first STANDING segment, a share
     ``uncalibrated_p`` of the crops shown without it, a share ``walking_p`` with a
     vertical learnt from its walking (arriving during the crop in half of them) and a
     share ``stale_p`` with a vertical no longer true (a re-mounted device);
   - window mode: windows of ``window`` steps, the target at the last step.
4. Every ``eval_every`` steps, score the validation subjects the way the protocol
   scores test subjects (windows at protocol positions; raw online accuracy at ``hop``)
   and keep the best checkpoint.
5. Optionally refit on all 21 subjects for the best step count.
   With ``members`` > 1, steps 3-5 again for each further network, seed ``seed + k``
   (its own spliced streams, selection and refit): an ensemble, averaged by the bundle.
6. Write the bundle (bundle.json, model.pt, model.onnx) with the training record.

The test subjects are not loaded here at all.
"""

from __future__ import annotations

import math
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import nn

from harstream.config import TrainConfig
from harstream.core.bundle import ActivityStats, ArchSpec, Bundle, CalibrationSpec
from harstream.core.inference import expand_steps
from harstream.core.preprocessing import CALIBRATED, FilterSpec
from harstream.core.torchnet import Ensemble, HarNet, Net
from harstream.evaluation.metrics import StreamScore, score_stream
from replay import BASIC_ACTIVITIES
from training.augment import augment_crop, random_rotation
from training.data import (
    IGNORE,
    TRAIN_SUBJECTS,
    Prepared,
    activity_stats,
    class_targets,
    data_checksum,
    input_channels,
    load_prepared,
    normalization,
    protocol_windows,
    recalibrated,
    spliced_recordings,
    walking_vertical,
)
from training.export import write_bundle
from training.metrics import window_metrics

__all__ = ["TrainResult", "train"]


@dataclass
class TrainResult:
    bundle: Bundle
    history: list[dict[str, float]] = field(default_factory=list)
    best_step: int = 0
    seconds: float = 0.0


def train(
    cfg: TrainConfig,
    data_dir: str | Path,
    out_dir: str | Path,
    *,
    log: Callable[[str], None] = lambda line: print(line, flush=True),
    recordings: list[Prepared] | None = None,
) -> TrainResult:
    started = time.monotonic()
    torch.set_num_threads(cfg.threads)
    data = _load(cfg, data_dir, recordings, log)  # 1-2
    members: list[_Member] = []
    for k in range(cfg.members):  # the same recordings; each member its own spliced streams
        member_cfg = cfg.model_copy(update={"seed": cfg.seed + k})
        if k:
            log(f"member {k + 1} of {cfg.members} (seed {member_cfg.seed})")
        own = _load(member_cfg, data_dir, data.recordings, log) if k else data
        members.append(_train_member(member_cfg, own, _refit_steps(cfg, k), log))
    first = members[0]
    # the scores of the selected checkpoint (train_* on its augmented crops, val_* on the
    # validation subjects; an ensemble's: its members as selected, together); test scores
    # are added by `evaluate --record`
    scores = next((h for h in first.history if h["step"] == first.best_step), {})
    fitted = first.fitted
    if len(members) > 1:
        fitted = replace(fitted, net=Ensemble([m.fitted.net for m in members]))
        chosen = [m.selected for m in members if m.selected is not None]
        if data.val and len(chosen) == len(members):
            together = Ensemble([c.net for c in chosen])
            scores = evaluate_torch(
                together, data.val, chosen[0].mean, chosen[0].std, cfg, data.val_spliced
            )
            log("ensemble on validation: " + "  ".join(f"{k} {v:.3f}" for k, v in scores.items()))
    metrics = {f"best_step_{k}": v for k, v in scores.items() if k != "step"}
    seconds = time.monotonic() - started
    bundle = _write(cfg, data, fitted, members, metrics, data_dir, out_dir, seconds)  # 6
    log(f"wrote {bundle.path} in {seconds:.0f} s")
    return TrainResult(bundle, first.history, first.best_step, seconds)


def _refit_steps(cfg: TrainConfig, k: int) -> int | None:
    """Member k's refit step count (``refit_steps``: one for all, or one per member)."""
    steps = cfg.refit_steps
    return steps[k] if isinstance(steps, list) else steps


@dataclass
class _Member:
    """One trained network: the one written (refit or selected) and the selected one."""

    seed: int
    fitted: _Fitted
    history: list[dict[str, float]]
    best_step: int
    selected: _Fitted | None  # the validated checkpoint (None when refit_steps skipped it)


def _train_member(
    cfg: TrainConfig, data: _Data, steps: int | None, log: Callable[[str], None]
) -> _Member:
    """Steps 3-5 for one network (``cfg.seed`` its own); ``steps``: skip the selection
    and refit for that many."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    if steps is not None:  # the selection was made by an earlier run
        return _Member(cfg.seed, _refit(cfg, data, steps), [], steps, None)
    selected, history, best_step = _select(cfg, data, rng, log)  # 3-4
    fitted = selected
    if cfg.refit and data.val:  # 5
        log(f"refit on all {len(TRAIN_SUBJECTS)} training subjects for {best_step} steps")
        fitted = _refit(cfg, data, max(best_step, 1))
    return _Member(cfg.seed, fitted, history, best_step, selected)


@dataclass
class _Data:
    """The training recordings, split, and the random-order streams spliced from them."""

    recordings: list[Prepared]
    fit: list[Prepared]
    val: list[Prepared]
    fit_spliced: list[Prepared]
    val_spliced: list[Prepared]
    splice: Callable[..., list[Prepared]]  # more streams like fit_spliced (for the refit)
    channels: tuple[str, ...]
    filters: FilterSpec = field(default_factory=FilterSpec)


@dataclass
class _Fitted:
    net: Net
    mean: np.ndarray
    std: np.ndarray
    trained_on: list[Prepared]  # what the batches were drawn from (the HMM's class prior)


def _load(
    cfg: TrainConfig,
    data_dir: str | Path,
    recordings: list[Prepared] | None,
    log: Callable[[str], None],
) -> _Data:
    """Steps 1-2: the 21 training subjects, preprocessed; validation split off; spliced
    streams of both sides (stateful mode: the fitting side trains on them too)."""
    filters, channels = FilterSpec(), input_channels(cfg.inputs)
    if recordings is None:
        recordings = load_prepared(data_dir, TRAIN_SUBJECTS, filters, channels, cfg.calibration_s)
    if any(r.subject not in TRAIN_SUBJECTS for r in recordings):
        raise ValueError("training recordings must come from the 21 training subjects")
    val = [r for r in recordings if r.subject in cfg.validation_subjects]
    fit = [r for r in recordings if r.subject not in cfg.validation_subjects]
    splice = partial(
        spliced_recordings,
        filters=filters,
        channels=channels,
        calibration_s=cfg.calibration_s,
        crop=cfg.spliced_crop,
        seed=cfg.seed,
    )
    stateful = cfg.mode == "stateful"
    data = _Data(
        recordings,
        fit,
        val,
        splice(fit, cfg.spliced_streams) if stateful else [],
        splice(val, cfg.validation_streams, crop=(1.0, 1.0), seed=cfg.seed + 1) if stateful else [],
        splice,
        channels,
        filters,
    )
    log(
        f"fit subjects {sorted({r.subject for r in fit})} (+{len(data.fit_spliced)} spliced "
        f"streams), validation subjects {sorted({r.subject for r in val})} "
        f"(+{len(data.val_spliced)} spliced streams)"
    )
    return data


def _arch(cfg: TrainConfig, members: int = 1) -> ArchSpec:
    return ArchSpec(
        type=cfg.arch,
        hidden=cfg.hidden,
        layers=cfg.layers,
        dropout=cfg.dropout,
        stride=cfg.stride,
        members=members,
    )


def _select(
    cfg: TrainConfig, data: _Data, rng: np.random.Generator, log: Callable[[str], None]
) -> tuple[_Fitted, list[dict[str, float]], int]:
    """Steps 3-4: train on the fitting side, score the validation side every
    ``eval_every`` steps, keep the best checkpoint."""
    net = HarNet.from_arch(_arch(cfg), len(BASIC_ACTIVITIES), len(data.channels))
    mean, std = normalization(data.fit)
    history: list[dict[str, float]] = []
    best = {"score": -1.0, "step": 0, "state": _snapshot(net)}
    trained_on = data.fit + data.fit_spliced

    def on_eval(step: int, train_loss: float, train_acc: float) -> None:
        scores = evaluate_torch(net, data.val, mean, std, cfg, data.val_spliced) if data.val else {}
        row = {"step": step, "train_loss": train_loss, "train_accuracy": train_acc, **scores}
        history.append(row)
        score = scores.get("selection", train_acc)
        if score > best["score"]:
            best.update(score=score, step=step, state=_snapshot(net))
        log(
            f"step {step:5d}  loss {train_loss:.3f}  train acc {train_acc:.3f}  "
            + "  ".join(f"{k} {v:.3f}" for k, v in scores.items())
        )

    _fit(net, _make_sampler(cfg, trained_on, mean, std, rng), cfg, cfg.iterations, on_eval)
    net.load_state_dict(best["state"])
    log(f"best validation at step {best['step']} (selection score {best['score']:.4f})")
    return _Fitted(net, mean, std, trained_on), history, int(best["step"])


def _refit(cfg: TrainConfig, data: _Data, steps: int) -> _Fitted:
    """Step 5: a fresh network on all 21 subjects (and their spliced streams) for the
    selected number of steps; the normalisation refitted too. Seeded on its own, so a
    run with ``train.refit_steps`` gives the same network as the whole recipe."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng([cfg.seed, 1])
    mean, std = normalization(data.recordings)
    net = HarNet.from_arch(_arch(cfg), len(BASIC_ACTIVITIES), len(data.channels))
    trained_on = data.recordings + (
        data.splice(data.recordings, cfg.spliced_streams) if cfg.mode == "stateful" else []
    )
    _fit(net, _make_sampler(cfg, trained_on, mean, std, rng), cfg, steps, lambda *args: None)
    return _Fitted(net, mean, std, trained_on)


def _write(
    cfg: TrainConfig,
    data: _Data,
    fitted: _Fitted,
    members: list[_Member],
    metrics: dict[str, float],
    data_dir: str | Path,
    out_dir: str | Path,
    seconds: float,
) -> Bundle:
    """Step 6: the bundle, with its training record."""
    first = members[0]
    name = f"{cfg.arch}{cfg.hidden}x{cfg.layers}-{cfg.mode}"
    if cfg.stride > 1:
        name += f"-stride{cfg.stride}"
    if cfg.inputs != "device":
        name += f"-{cfg.inputs}"
    if len(members) > 1:
        name += f"-x{len(members)}"
    subjects = sorted({r.subject for r in data.recordings})
    record = {
        "name": name,
        "subjects": subjects,
        "validation_subjects": sorted({r.subject for r in data.val}),
        "refit": cfg.refit,
        "seed": cfg.seed,
        "best_step": first.best_step,
        "seconds": round(seconds, 1),
        "config": cfg.model_dump(),
        "data_sha256": data_checksum(data_dir, subjects),
        "git_commit": _git_commit(),
        "torch": torch.__version__,
        "history": first.history,
    }
    if len(members) > 1:
        record["members"] = [
            {"seed": m.seed, "best_step": m.best_step, "history": m.history} for m in members
        ]
    stats = activity_stats(fitted.trained_on, len(BASIC_ACTIVITIES), duration_s=cfg.hmm_duration_s)
    return write_bundle(
        fitted.net.eval(),
        out_dir,
        arch=_arch(cfg, len(members)),
        labels=BASIC_ACTIVITIES,
        mode=cfg.mode,
        window=cfg.window,
        hop=cfg.hop,
        filters=data.filters,
        mean=fitted.mean,
        std=fitted.std,
        training=record,
        metrics=metrics,
        channels=data.channels,
        calibration=_reference_calibration(data.recordings, cfg),
        activity_stats=ActivityStats(**stats),
    )


def _reference_calibration(recordings: list[Prepared], cfg: TrainConfig) -> CalibrationSpec | None:
    """The mean of the training recordings' standing verticals (aligned inputs only)."""
    verticals = [r.vertical for r in recordings if r.vertical is not None]
    if not verticals:
        return None
    mean = np.mean(verticals, axis=0)
    return CalibrationSpec(
        reference_vertical=(mean / np.linalg.norm(mean)).tolist(), seconds=cfg.calibration_s
    )


# --- batches ----------------------------------------------------------------------------

Sampler = Callable[[], tuple[torch.Tensor, torch.Tensor]]


def _make_sampler(
    cfg: TrainConfig,
    recs: list[Prepared],
    mean: np.ndarray,
    std: np.ndarray,
    rng: np.random.Generator,
) -> Sampler:
    """Random training batches ``(x (B, T, 9), y (B, T))``; y is IGNORE where unscored:
    crops of the recordings (stateful mode) or protocol windows (window mode)."""
    prepare = partial(_augmented, cfg=cfg, mean=mean, std=std, rng=rng)
    targets = [class_targets(r.labels, cfg.transition_targets) for r in recs]
    if cfg.mode == "stateful":
        lengths = np.array([len(r.labels) for r in recs], np.float64)
        weights = lengths / lengths.sum()

        def crops() -> tuple[torch.Tensor, torch.Tensor]:
            xs, ys = [], []
            length = cfg.short_seq_len if rng.random() < cfg.short_crop_p else cfg.seq_len
            for i in rng.choice(len(recs), size=cfg.batch_size, p=weights):
                part = _crop(len(recs[i].labels), length, cfg.augment.time_warp, rng)
                xs.append(prepare(recs[i], part))
                # one output per step of stride samples: the target of its last sample
                ys.append(targets[i][part][cfg.stride - 1 :: cfg.stride])
            return torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys))

        return crops

    index = [
        (i, s, c)
        for i, r in enumerate(recs)
        for s, c in zip(
            *protocol_windows(r.labels, cfg.window, cfg.hop, cfg.window_stride), strict=True
        )
    ]

    def windows() -> tuple[torch.Tensor, torch.Tensor]:
        xs, ys = [], []
        for k in rng.integers(0, len(index), size=cfg.batch_size):
            i, s, c = index[k]
            part = slice(s, s + cfg.window)
            xs.append(prepare(recs[i], part))
            y = np.full(cfg.window // cfg.stride, IGNORE, np.int64)
            y[-1] = c  # window mode: one target, at the last step
            ys.append(y)
        return torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys))

    return windows


def _crop(n: int, length: int, warp: float, rng: np.random.Generator) -> slice | np.ndarray:
    """Where a crop of ``length`` samples comes from in a recording of ``n``: a slice, or
    with ``warp`` > 0 the nearest samples of a stretch played at 1 +/- ``warp`` speed.

    >>> _crop(100, 10, 0.0, np.random.default_rng(0))
    slice(77, 87, None)
    >>> len(_crop(100, 10, 0.2, np.random.default_rng(0)))
    10
    """
    speed = 1.0 + rng.uniform(-warp, warp) if warp else 1.0
    span = min(int(np.ceil((length - 1) * speed)) + 1, n)
    start = int(rng.integers(0, n - span + 1))
    if not warp:
        return slice(start, start + length)
    return np.minimum(start + np.round(np.arange(length) * speed).astype(np.int64), n - 1)


def _augmented(
    rec: Prepared,
    part: slice | np.ndarray,
    *,
    cfg: TrainConfig,
    mean: np.ndarray,
    std: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """One crop of ``rec`` as the network sees it in training: augmented, standardised,
    float32."""
    aug = cfg.augment
    if cfg.inputs == "aligned":  # turning the device changes nothing here but the calibration
        x = np.array(rec.features[part], np.float64)
        if aug.scale > 0:
            x[:, :6] *= 1.0 + rng.uniform(-aug.scale, aug.scale)
        x = _calibrated(x, rec, part, cfg, rng)
    else:
        x = augment_crop(
            rec.features[part],
            rec.labels[part],
            rng,
            rotate_deg=aug.rotate_deg,
            lie_rotate_p=aug.lie_rotate_p,
            scale=aug.scale,
        )
    x = (x - mean) / std
    if aug.noise:
        x += rng.normal(0, aug.noise, x.shape)
    return x.astype(np.float32)


def _calibrated(
    x: np.ndarray,
    rec: Prepared,
    part: slice | np.ndarray,
    cfg: TrainConfig,
    rng: np.random.Generator,
) -> np.ndarray:
    """An aligned crop calibrated as a live device may be: not at all (a share
    ``uncalibrated_p``), from walking (``walking_p``: a vertical learnt from one of the
    recording's walking stretches; in half of them it arrives during the crop, as it does
    live, the crop uncalibrated before), with a stale vertical (``stale_p``: its own
    turned at random, a re-mounted device), else standing (the recording's own)."""
    draw = rng.random()
    if draw < cfg.uncalibrated_p:
        return _uncalibrated(x)
    draw -= cfg.uncalibrated_p
    if rec.directions is None or draw >= cfg.walking_p + cfg.stale_p:
        return x
    if draw < cfg.walking_p:
        vertical = walking_vertical(
            rec.directions,
            rec.labels,
            rng,
            rate_hz=FilterSpec().rate_hz,
            seconds=cfg.walking_vertical_s,
        )
        arrives = rng.random() < 0.5
    else:
        vertical = None if rec.vertical is None else random_rotation(rng, 180.0) @ rec.vertical
        arrives = False
    if vertical is None:  # no walking (or no calibration) in this recording: as it is
        return x
    x = recalibrated(x, rec.directions[part], vertical)
    if arrives:
        x[: int(rng.integers(0, len(x))), CALIBRATED] = 0.0
    return x


# --- the loop ---------------------------------------------------------------------------


def _fit(
    net: HarNet,
    sample: Sampler,
    cfg: TrainConfig,
    steps: int,
    on_eval: Callable[[int, float, float], None],
) -> None:
    optimiser = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
    )
    loss_fn = nn.CrossEntropyLoss(ignore_index=IGNORE)
    losses, correct, counted = [], 0, 0
    show = sys.stderr.isatty()
    for step in range(1, steps + 1):
        net.train()
        x, y = sample()
        if not (y != IGNORE).any():  # a crop without a label teaches nothing (and its loss is NaN)
            continue
        logits, _ = net(x)
        loss = loss_fn(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
        optimiser.step()
        schedule.step()
        losses.append(loss.item())
        mask = y != IGNORE
        correct += int((logits.argmax(-1)[mask] == y[mask]).sum())
        counted += int(mask.sum())
        if show:
            print(
                f"\rstep {step}/{steps} loss {np.mean(losses[-20:]):.3f}",
                end="",
                file=sys.stderr,
                flush=True,
            )
        if step % cfg.eval_every == 0 or step == steps:
            if show:
                print("\r", end="", file=sys.stderr)
            on_eval(step, float(np.mean(losses)), correct / max(counted, 1))
            losses, correct, counted = [], 0, 0


def _snapshot(net: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


@torch.inference_mode()
def step_probabilities(
    net: Net, recs: list[Prepared], mean: np.ndarray, std: np.ndarray
) -> list[np.ndarray]:
    """Per-sample class probabilities of each whole recording from zero state (n,
    classes): after each sample, the newest output (``expand_steps``).

    The recordings run as one zero-padded batch: the network is causal, so padding at
    the end changes nothing before it.
    """
    net.eval()
    longest = max(len(r.features) for r in recs)
    longest += -longest % net.stride
    x = np.zeros((len(recs), longest, recs[0].features.shape[1]), np.float32)
    for i, r in enumerate(recs):
        x[i, : len(r.features)] = (r.features - mean) / std
    logits, _ = net(torch.from_numpy(x))
    probs = torch.softmax(logits, -1).numpy()
    return [expand_steps(probs[i], net.stride, len(r.features)) for i, r in enumerate(recs)]


@torch.inference_mode()
def evaluate_torch(
    net: Net,
    recs: list[Prepared],
    mean: np.ndarray,
    std: np.ndarray,
    cfg: TrainConfig,
    spliced: Sequence[Prepared] = (),
) -> dict[str, float]:
    """Validation scores: protocol windows and raw (unsmoothed) online accuracy at hop,
    on the recordings and (stateful mode) on ``spliced`` random-order streams."""
    net.eval()
    truth, pred = [], []
    stream = None
    if cfg.mode == "stateful":
        for r, probs in zip(recs, step_probabilities(net, recs, mean, std), strict=True):
            starts, classes = protocol_windows(r.labels, cfg.window, cfg.hop)
            truth.append(classes)
            pred.append(probs[starts + cfg.window - 1].argmax(-1))
            seqs = np.arange(cfg.hop - 1, len(r.labels), cfg.hop)
            score = score_stream(r.labels, seqs, probs[seqs].argmax(-1) + 1)
            stream = score if stream is None else stream + score
    else:
        for r in recs:
            starts, classes = protocol_windows(r.labels, cfg.window, cfg.hop)
            x = np.stack([(r.features[s : s + cfg.window] - mean) / std for s in starts])
            logits, _ = net(torch.from_numpy(x.astype(np.float32)))
            truth.append(classes)
            pred.append(logits[:, -1].argmax(-1).numpy())
            ends = np.arange(cfg.window, len(r.labels) + 1, cfg.hop)
            xs = np.stack([(r.features[e - cfg.window : e] - mean) / std for e in ends])
            labels = net(torch.from_numpy(xs.astype(np.float32)))[0][:, -1].argmax(-1).numpy()
            score = score_stream(r.labels, ends - 1, labels + 1)
            stream = score if stream is None else stream + score
    m = window_metrics(np.concatenate(truth), np.concatenate(pred), BASIC_ACTIVITIES)
    scores = {"val_accuracy": m["accuracy"], "val_macro_f1": m["macro_f1"]}
    if cfg.mode == "stateful" and recs[0].vertical is not None:
        # the same windows as an uncalibrated device (any orientation) is read
        bare = [replace(r, features=_uncalibrated(r.features)) for r in recs]
        truth_u, pred_u = [], []
        for r, probs in zip(bare, step_probabilities(net, bare, mean, std), strict=True):
            starts, classes = protocol_windows(r.labels, cfg.window, cfg.hop)
            truth_u.append(classes)
            pred_u.append(probs[starts + cfg.window - 1].argmax(-1))
        scores["val_uncalibrated_accuracy"] = float(
            np.mean(np.concatenate(truth_u) == np.concatenate(pred_u))
        )
    if stream is not None:
        scores["val_online_accuracy"] = stream.online_accuracy
    parts = [scores["val_macro_f1"], scores.get("val_online_accuracy", 0.0)]
    if spliced and cfg.mode == "stateful":
        total = StreamScore()
        for r, probs in zip(
            spliced, step_probabilities(net, list(spliced), mean, std), strict=True
        ):
            seqs = np.arange(cfg.hop - 1, len(r.labels), cfg.hop)
            total += score_stream(r.labels, seqs, probs[seqs].argmax(-1) + 1)
        scores["val_spliced_online_accuracy"] = total.online_accuracy
        parts.append(total.online_accuracy)
    # model selection: window macro-F1, online accuracy in lab order and (when scored)
    # in random order weigh the same
    scores["selection"] = float(np.mean(parts))
    return scores


def _uncalibrated(features: np.ndarray) -> np.ndarray:
    """Aligned features as a device without calibration has them (its channels 0)."""
    bare = features.copy()
    bare[:, CALIBRATED] = 0.0
    return bare


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parent,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None
