"""``harstream train``, ``harstream finetune`` and ``harstream cv``: one command each, each
reading top to bottom. Nothing imports torch until a command runs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from harstream.cli.common import config_from_args
from training.cli.common import add_common, data_dir, evaluate_and_report, need, stream_configs

__all__ = ["register"]


def cmd_train(args: argparse.Namespace) -> int:
    """The recipe of config `train:` on the 21 training subjects -> a bundle, then its
    evaluation on the test subjects (recorded in bundle.json)."""
    need("torch", "onnx", "matplotlib")
    from training.train import train

    config = config_from_args(args)
    data = data_dir(args, config)
    cfg = config.train
    out = args.out or Path("runs") / f"{cfg.arch}{cfg.hidden}x{cfg.layers}-{cfg.mode}"
    result = train(cfg, data, out, log=lambda line: print(line, flush=True))
    if not args.no_evaluate:
        evaluate_and_report(
            result.bundle.path, data, stream_configs(args), out / "report.json", record=True
        )
    return 0


def cmd_finetune(args: argparse.Namespace) -> int:
    """A bundle adapted to labelled field recordings (docs/field-data.md)."""
    need("torch", "onnx")
    from training.finetune import finetune

    config = config_from_args(args)
    result = finetune(
        None if args.bundle == "default" else args.bundle,
        args.recordings,
        args.out,
        steps=args.steps,
        lr=args.lr,
        holdout=args.holdout,
        devices=args.device,
        seed=config.train.seed,
        threads=config.train.threads,
    )
    if result.before:
        what = (
            f"held-out sessions {result.holdout_sessions}"
            if result.holdout_sessions
            else f"held out: the last {result.holdout['share']:.0%} of "
            f"{result.holdout['session']}'s labels (from t={result.holdout['from_t']})"
        )
        print(
            f"{what}: window accuracy "
            f"{result.before.get('window_accuracy')} -> {result.after.get('window_accuracy')}, "
            f"online {result.before.get('online_accuracy')} -> "
            f"{result.after.get('online_accuracy')}"
        )
    else:
        print("held out nothing (--holdout 0): no before/after figure")
    print(
        f"score it: harstream evaluate-field {args.recordings} --model {args.out}; "
        f"serve it: point model.path at it and send SIGHUP (or reload on the control topic)"
    )
    return 0


def cmd_cv(args: argparse.Namespace) -> int:
    """K-fold subject-group cross-validation inside the 21 training subjects: no bundle,
    no test subject."""
    need("torch", "onnx", "matplotlib")
    from training.cv import cross_validate, fold_table
    from training.metrics import write_table

    config = config_from_args(args)
    result = cross_validate(
        config.train, data_dir(args, config), args.folds, log=lambda line: print(line, flush=True)
    )
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "cv.json").write_text(json.dumps(result, indent=2) + "\n")
        title = f"{args.folds}-fold subject-group CV"
        csv, markdown = write_table(fold_table(result), args.out / "cv", title)
        print(f"wrote {args.out / 'cv.json'}, {csv}, {markdown}")
    return 0


def register(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    train = commands.add_parser(
        "train",
        help="train a model on the HAPT recordings, write a bundle, evaluate it on the test "
        "subjects",
    )
    add_common(train, model=False, stream_config=True)
    train.add_argument("--out", type=Path, help="bundle folder (default runs/NAME)")
    train.add_argument("--no-evaluate", action="store_true", help="skip the test evaluation")
    train.set_defaults(func=cmd_train)

    finetune = commands.add_parser(
        "finetune",
        help="adapt a bundle to labelled field recordings (a recording.dir) and write it to --out",
    )
    finetune.add_argument("bundle", help="a bundle folder, or 'default' for the packaged one")
    finetune.add_argument("--recordings", type=Path, required=True, help="a recording.dir")
    finetune.add_argument("--out", type=Path, required=True, help="the new bundle's folder")
    finetune.add_argument("--steps", type=int, default=100, help="training steps (default 100)")
    finetune.add_argument("--lr", type=float, default=3e-4, help="learning rate (default 3e-4)")
    finetune.add_argument(
        "--holdout",
        type=float,
        default=0.25,
        help="share of sessions (the latest; of one session: the last share of its labelled "
        "time) held out for the before/after figure (0: none)",
    )
    finetune.add_argument("--device", action="append", help="only this device (repeatable)")
    add_common(finetune, model=False, data=False)
    finetune.set_defaults(func=cmd_finetune)

    cv = commands.add_parser(
        "cv",
        help="K-fold subject-group cross-validation of the train: recipe inside the 21 "
        "training subjects (no bundle, no test subject)",
    )
    cv.add_argument("--folds", type=int, default=3, metavar="K", help="folds (default 3)")
    cv.add_argument("--out", type=Path, help="write cv.json and the fold table here")
    add_common(cv, model=False)
    cv.set_defaults(func=cmd_cv)
