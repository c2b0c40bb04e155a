"""``harstream train``, ``harstream evaluate`` and ``harstream export``.

Registered with the harstream CLI through the ``harstream.commands`` entry point, so the
runtime package never imports training (docs/design.md: imports flow one way). Nothing here
imports torch until a command runs; without the ``train`` extra the commands say how to
get it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from harstream.cli.common import add_config_options, config_from_args, data_dir_from
from harstream.config import load_config
from harstream.errors import ConfigError, HarstreamError

__all__ = ["format_report", "register"]

TRAIN_EXTRA_HINT = "this command needs the train extra: pip install 'harstream[train]'"


def _need(*modules: str) -> None:
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise HarstreamError(f"{', '.join(missing)} not installed; {TRAIN_EXTRA_HINT}")


def _data_dir(args: argparse.Namespace, config: Any) -> Path:
    found = data_dir_from(args, config)
    if found is None:
        raise HarstreamError(
            "needs the HAPT recordings: give --data-dir DIR (a folder holding "
            "RawData/), set HARSTREAM_DATA, or run `harstream data fetch`"
        )
    return found


def _stream_configs(args: argparse.Namespace) -> dict[str, Any]:
    configs = {"default": config_from_args(args)}
    for item in args.stream_config or []:
        name, sep, path = item.partition("=")
        if not sep:
            raise ConfigError(f"--stream-config {item}: expected NAME=YAML")
        configs[name] = load_config(path, args.overrides)
    if getattr(args, "calibration", None) == "none":  # uncalibrated: nothing learnt either
        for name, config in configs.items():
            cal = config.calibration.model_copy(update={"from_walking": False})
            configs[name] = config.model_copy(update={"calibration": cal})
    return configs


def cmd_train(args: argparse.Namespace) -> int:
    _need("torch", "onnx", "matplotlib")
    from training.train import train

    config = config_from_args(args)
    if args.finetune is not None or args.recordings is not None:
        return _finetune(args, config)
    data_dir = _data_dir(args, config)
    if args.cv:
        from training.cv import cross_validate

        result = cross_validate(
            config.train, data_dir, args.cv, log=lambda line: print(line, flush=True)
        )
        if args.out:
            from training.cv import fold_table
            from training.metrics import write_table

            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / "cv.json").write_text(json.dumps(result, indent=2) + "\n")
            csv, markdown = write_table(
                fold_table(result), args.out / "cv", f"{args.cv}-fold subject-group CV"
            )
            print(f"wrote {args.out / 'cv.json'}, {csv}, {markdown}")
        return 0
    out = (
        args.out
        or Path("runs")
        / f"{config.train.arch}{config.train.hidden}x{config.train.layers}-{config.train.mode}"
    )
    result = train(config.train, data_dir, out, log=lambda line: print(line, flush=True))
    if not args.no_evaluate:
        _evaluate_and_report(
            result.bundle.path, data_dir, _stream_configs(args), out / "report.json", record=True
        )
    return 0


def _finetune(args: argparse.Namespace, config: Any) -> int:
    from training.finetune import finetune

    if args.finetune is None or args.recordings is None or args.out is None:
        raise ConfigError("fine-tuning needs --finetune BUNDLE, --recordings DIR and --out DIR")
    base = None if args.finetune == "default" else args.finetune
    result = finetune(
        base,
        args.recordings,
        args.out,
        steps=args.steps,
        lr=args.lr,
        holdout=args.holdout,
        devices=args.device,
        seed=config.train.seed,
        threads=config.train.threads,
    )
    if result.holdout_sessions:
        print(
            f"held-out sessions {result.holdout_sessions}: window accuracy "
            f"{result.before.get('window_accuracy')} -> {result.after.get('window_accuracy')}, "
            f"online {result.before.get('online_accuracy')} -> "
            f"{result.after.get('online_accuracy')}"
        )
    print(
        f"score it: harstream evaluate --model {args.out} --recordings {args.recordings}; "
        f"serve it: point model.path at it and send SIGHUP (or reload on the control topic)"
    )
    return 0


def _field_report(args: argparse.Namespace) -> int:
    """``evaluate --recordings DIR``: the protocol's figures on labelled field data."""
    from harstream.core.bundle import load_bundle
    from training.fielddata import load_field

    bundle = load_bundle(args.model)
    field = load_field(args.recordings, bundle, devices=args.device)
    for problem in field.problems:
        print(f"warning: {problem}")
    if not field.recordings:
        raise HarstreamError(f"{args.recordings}: no labelled recordings to score")
    print(
        f"{len(field.recordings)} labelled stretches of {len(field.sessions)} sessions, "
        f"{field.labelled_s / 60:.1f} min labelled ({field.unlabelled_sessions} sessions "
        "without labels skipped)"
    )
    report_path = args.report or Path(args.recordings) / "report" / "report.json"
    _evaluate_and_report(
        args.model,
        None,
        _stream_configs(args),
        report_path,
        record=False,
        recordings=field.recordings,
        scope="the labelled recordings",
    )
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    _need("matplotlib")
    config = config_from_args(args)
    if args.recordings is not None:
        if args.record or args.rotate != "none" or args.baseline or args.orientations:
            raise ConfigError(
                "--recordings takes none of --record, --rotate, --baseline, --orientations"
            )
        return _field_report(args)
    if args.baseline:
        return _evaluate_baseline(args, config)
    if args.orientations:
        return _orientation_report(args, config)
    if args.streams == "spliced":
        return _life_order(args, config)
    if args.calibration == "walking":
        return _walking_report(args, config)
    report_path = args.report or Path(args.model) / "report.json"
    recordings = None
    if args.rotate != "none" or args.calibration != "standing":
        from harstream.core.bundle import load_bundle
        from training.robustness import bundle_recordings, rotation_seeds

        if args.record:
            raise SystemExit(
                "--record takes the recordings as they are: drop --rotate/--calibration"
            )
        recordings = [
            r
            for spec in rotation_seeds(args.rotate)
            for r in bundle_recordings(
                load_bundle(args.model),
                _data_dir(args, config),
                rotate=spec,
                calibration=args.calibration,
            )
        ]
    _evaluate_and_report(
        args.model,
        _data_dir(args, config),
        _stream_configs(args),
        report_path,
        record=args.record,
        recordings=recordings,
    )
    return 0


def _orientation_report(args: argparse.Namespace, config: Any) -> int:
    from training.data import TEST_SUBJECTS
    from training.metrics import write_table
    from training.robustness import orientation_table

    subjects = TEST_SUBJECTS if args.subjects == "test" else config.train.validation_subjects
    table = orientation_table(args.model, _data_dir(args, config), subjects, jobs=config.train.jobs)
    print(
        f"window level on the {args.subjects} subjects {list(subjects)}, each recording "
        "turned before preprocessing"
    )
    print(table.to_string(index=False, float_format="{:.4f}".format))
    if args.report:
        title = f"Orientation robustness ({args.subjects} subjects)"
        csv, markdown = write_table(table, args.report, title)
        print(f"wrote {csv} and {markdown}")
    return 0


def _walking_report(args: argparse.Namespace, config: Any) -> int:
    """``evaluate --calibration walking``: the vertical learnt online (training.walking)."""
    import pandas as pd

    from harstream.core.bundle import load_bundle
    from training.data import TEST_SUBJECTS
    from training.metrics import write_table
    from training.robustness import rotation_seeds
    from training.walking import recording_devices, seconds_table, walking_report

    if args.record:
        raise ConfigError("--calibration walking takes no --record")
    subjects = TEST_SUBJECTS if args.subjects == "test" else config.train.validation_subjects
    bundle, data_dir = load_bundle(args.model), _data_dir(args, config)
    rotations = rotation_seeds(args.rotate)
    table = walking_report(bundle, config, data_dir, subjects, rotations, config.train.jobs)
    print(
        f"{bundle.name} on the {args.subjects} subjects {list(subjects)}, turned {args.rotate}: "
        "each subject one device, its recordings joined (lab) or spliced in random orders"
    )
    print(table.to_string(index=False))
    path = args.report or Path(args.model or "runs/default") / "walking"
    written = list(write_table(table, path, f"Calibration from walking ({args.subjects})"))
    if args.walking_seconds:
        seconds = [float(s) for s in args.walking_seconds.split(",")]
        devices = recording_devices(bundle, data_dir, subjects, rotations[0])
        sweep = pd.DataFrame(seconds_table(bundle, config, devices, seconds))
        print(
            "each recording alone, the first vertical after N s of walking in force from its start:"
        )
        print(sweep.to_string(index=False))
        written += write_table(sweep, path.with_name(f"{path.name}-seconds"), "Seconds of walking")
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def _life_order(args: argparse.Namespace, config: Any) -> int:
    """``evaluate --streams spliced``: lab order, lab-cut and random-order streams."""
    from training.data import TEST_SUBJECTS
    from training.lifeorder import life_order_report, step_table, summary_table
    from training.metrics import write_table

    if args.rotate != "none" or args.record:
        raise ConfigError("--streams spliced takes neither --rotate nor --record")
    subjects = TEST_SUBJECTS if args.subjects == "test" else config.train.validation_subjects
    report = life_order_report(
        args.model,
        _data_dir(args, config),
        _stream_configs(args),
        subjects,
        streams=args.spliced_streams,
        calibration=args.calibration,
        jobs=config.train.jobs,
    )
    summary, steps = summary_table(report), step_table(report)
    print(
        f"{report['name']} on the {args.subjects} subjects {list(subjects)}, calibration "
        f"{args.calibration}, {args.spliced_streams} random-order streams per subject"
    )
    print(summary.to_string(index=False))
    print("accuracy over the segment after each change (spliced streams):")
    print(steps.to_string(float_format="{:.4f}".format))
    for subject, missing in report["missing"].items():
        print(f"subject {subject} has no {', '.join(missing)}: its streams go without")
    path = args.report or Path(args.model or "runs/default") / "life-order.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    title = f"{report['name']}, {args.subjects} subjects, calibration {args.calibration}"
    written = [
        *write_table(summary, path.with_name(f"{path.stem}-orders"), title),
        *write_table(steps.reset_index(names="step"), path.with_name(f"{path.stem}-steps"), title),
    ]
    print(f"wrote {path}, " + ", ".join(str(p) for p in written))
    return 0


def cmd_tradeoff(args: argparse.Namespace) -> int:
    from training.data import TEST_SUBJECTS
    from training.evaluate import tradeoff, tradeoff_table
    from training.metrics import write_table

    config = config_from_args(args)
    subjects = TEST_SUBJECTS if args.subjects == "test" else config.train.validation_subjects
    rows = tradeoff(args.model, _data_dir(args, config), subjects, jobs=config.train.jobs)
    table = tradeoff_table(rows)
    print(f"stream level on the {args.subjects} subjects {list(subjects)}")
    print(table.to_string(index=False, float_format="{:.4f}".format))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"subjects": list(subjects), "rows": rows}, indent=2))
        from training.plots import plot_tradeoff

        figure = plot_tradeoff(
            rows,
            args.out.with_suffix(".png"),
            f"stream level, {args.subjects} subjects: delay vs accuracy",
        )
        csv, markdown = write_table(
            table, args.out, f"Stream level on the {args.subjects} subjects {list(subjects)}"
        )
        print(f"wrote {args.out}, {csv}, {markdown} and {figure}")
    return 0


def _evaluate_baseline(args: argparse.Namespace, config: Any) -> int:
    from training.baseline import evaluate_features_baseline
    from training.evaluate import subject_table
    from training.metrics import write_table
    from training.plots import plot_confusion

    report = evaluate_features_baseline(
        _data_dir(args, config),
        window=config.stream.window,
        hop=config.stream.hop,
        jobs=config.train.jobs,
    )
    path = args.report or Path("runs") / "baseline-features" / "report.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    window, stream = report["window"], report["stream"]["unsmoothed"]
    tables = write_table(
        subject_table(report), path.parent / f"{path.stem}-subjects", f"{report['name']}"
    )
    figure = plot_confusion(
        window["confusion"],
        report["labels"],
        path.parent / "confusion_matrix.png",
        f"{report['name']}: test windows, accuracy {window['accuracy']:.3f}",
    )
    print(
        f"{report['name']} ({report['features']} features, C {report['svm_c']} by subject CV "
        f"({report['cv_accuracy']}), fitted in {report['fit_seconds']} s on "
        f"{len(report['train_subjects'])} subjects)\n"
        f"window level: accuracy {window['accuracy']:.4f}, macro-F1 {window['macro_f1']:.4f} "
        f"({window['windows']} windows)\n"
        f"stream [hop {stream['hop']}, unsmoothed]: online accuracy "
        f"{stream['online_accuracy']:.4f}, delay median {stream['detection_delay_s_median']} s, "
        f"switches/h {stream['switches_per_hour_pred']} (true {stream['switches_per_hour_true']})\n"
        f"{report['ms_per_decision']} ms per decision (one window's features + prediction)"
    )
    print(f"wrote {path}, {tables[0]}, {tables[1]}, {figure}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    _need("torch", "onnx")
    from harstream.core.bundle import load_bundle
    from training.export import export_onnx

    bundle = load_bundle(args.model)
    path = export_onnx(bundle)
    print(f"wrote {path} (checked against torch)")
    return 0


def _evaluate_and_report(
    model: Path | None,
    data_dir: Path | None,
    configs: dict[str, Any],
    report_path: Path,
    record: bool,
    recordings: list[Any] | None = None,
    scope: str = "the test subjects",
) -> dict[str, Any]:
    from harstream.core.bundle import load_bundle
    from training.evaluate import evaluate_bundle, subject_table
    from training.metrics import write_table
    from training.plots import plot_confusion, plot_curves

    jobs = next(iter(configs.values())).train.jobs
    report = evaluate_bundle(model, data_dir, configs, recordings=recordings, jobs=jobs)
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(json.dumps(report, indent=2) + "\n")
    folder = report_path.parent
    tables = write_table(
        subject_table(report),
        folder / f"{report_path.stem}-subjects",
        f"{report['name']} on {scope}",
    )
    plot_confusion(
        report["window"]["confusion"],
        report["labels"],
        folder / "confusion_matrix.png",
        f"{report['name']} on {scope}: windows, accuracy {report['window']['accuracy']:.3f}",
    )
    bundle = load_bundle(model)
    history = bundle.training.get("history")
    if history:
        plot_curves(
            history,
            folder / "curves.png",
            f"{report['name']}: training",
            bundle.training.get("best_step"),
        )
    if record:
        from training.export import update_metrics

        update_metrics(
            bundle.path,
            {
                "test_window_accuracy": round(report["window"]["accuracy"], 4),
                "test_window_macro_f1": round(report["window"]["macro_f1"], 4),
                **{
                    f"test_online_accuracy_{name}": s["online_accuracy"]
                    for name, s in report["stream"].items()
                },
            },
        )
    print(format_report(report))
    print(
        f"wrote {report_path}, {tables[0]}, {tables[1]}, {folder / 'confusion_matrix.png'}"
        + (f", {folder / 'curves.png'}" if history else "")
    )
    return report


def format_report(report: dict[str, Any]) -> str:
    window = report["window"]
    names = list(report["stream"])
    lines = [
        f"{report['name']} ({report['arch']['type']} {report['arch']['hidden']}x"
        f"{report['arch']['layers']}, {report['mode']}, {report['parameters']:,} parameters)",
        f"window level: accuracy {window['accuracy']:.4f}, macro-F1 {window['macro_f1']:.4f} "
        f"({window['windows']} windows)",
    ]
    for name in names:
        s = report["stream"][name]
        lines.append(
            f"stream [{name}: hop {s['hop']}, {s['smoothing']}]: online accuracy "
            f"{s['online_accuracy']:.4f}, delay median {s['detection_delay_s_median']} s "
            f"p90 {s['detection_delay_s_p90']} s, switches/h {s['switches_per_hour_pred']} "
            f"(true {s['switches_per_hour_true']})"
        )
    if report.get("cold_start"):
        c = report["cold_start"]
        lines.append(
            f"after a start (raw label, {c['starts']} starts): decision 1 "
            f"{c['decision_1']}, 2 {c['decision_2']}, 5 {c['decision_5']}"
        )
    header = f"{'subject':>7} {'windows':>7} {'accuracy':>8} {'macro-F1':>8}" + "".join(
        f" {'online ' + n:>16}" for n in names
    )
    lines.append(header)
    for subject, row in window["per_subject"].items():
        online = "".join(
            f" {report['stream'][n]['per_subject'][subject]['online_accuracy']:>16.4f}"
            for n in names
        )
        lines.append(
            f"{subject:>7} {row['windows']:>7} {row['accuracy']:>8.4f} "
            f"{row['macro_f1']:>8.4f}{online}"
        )
    return "\n".join(lines)


def register(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    train = commands.add_parser(
        "train",
        help="train a model on the HAPT recordings, write a "
        "bundle, evaluate it on the test subjects",
    )
    add_config_options(train)
    train.add_argument("--data-dir", type=Path, help="folder holding HAPT RawData/")
    train.add_argument("--out", type=Path, help="bundle folder (default runs/NAME)")
    train.add_argument("--no-evaluate", action="store_true", help="skip the test evaluation")
    train.add_argument(
        "--finetune",
        metavar="BUNDLE",
        help="instead: adapt this bundle (a folder, or 'default' for the packaged one) to "
        "labelled field recordings (--recordings) and write it to --out",
    )
    train.add_argument(
        "--recordings", type=Path, metavar="DIR", help="with --finetune: a recording.dir"
    )
    train.add_argument(
        "--steps", type=int, default=100, help="with --finetune: training steps (default 100)"
    )
    train.add_argument(
        "--lr", type=float, default=3e-4, help="with --finetune: learning rate (default 3e-4)"
    )
    train.add_argument(
        "--holdout",
        type=float,
        default=0.25,
        help="with --finetune: share of sessions (the latest) held out for the report",
    )
    train.add_argument(
        "--device", action="append", help="with --finetune: only this device (repeatable)"
    )
    train.add_argument(
        "--cv",
        type=int,
        metavar="K",
        help="instead: K-fold subject-group "
        "cross-validation inside the 21 training subjects (no bundle, no test)",
    )
    train.add_argument(
        "--stream-config",
        action="append",
        metavar="NAME=YAML",
        help="also score the stream level with this config (repeatable)",
    )
    train.set_defaults(func=cmd_train)

    evaluate = commands.add_parser(
        "evaluate",
        help="window and stream level metrics of a bundle on the test subjects, with plots",
    )
    evaluate.add_argument("--model", type=Path, help="bundle folder (default: the packaged one)")
    evaluate.add_argument("--data-dir", type=Path, help="folder holding HAPT RawData/")
    evaluate.add_argument(
        "--report",
        type=Path,
        help="report JSON (default MODEL/report.json); the figures go beside it",
    )
    evaluate.add_argument(
        "--stream-config",
        action="append",
        metavar="NAME=YAML",
        help="also score the stream level with this config (repeatable)",
    )
    evaluate.add_argument(
        "--record", action="store_true", help="write the test metrics into the bundle's bundle.json"
    )
    evaluate.add_argument(
        "--baseline",
        choices=["features"],
        help="instead of a bundle: fit the classic window-features + linear SVM model on the "
        "training subjects and score it by the same protocol",
    )
    evaluate.add_argument(
        "--rotate",
        default="none",
        metavar="SPEC",
        help="turn every recording before preprocessing: none, x90 / y-90 / z180 (axis and "
        "degrees), SEED (a uniformly random rotation per recording) or uniform (seeds 0-4)",
    )
    evaluate.add_argument(
        "--calibration",
        choices=["standing", "reference", "walking", "none"],
        default="standing",
        help="models with aligned inputs: a 5 s standing calibration per recording "
        "(default), the training phone's mount assumed, learnt online from the device's "
        "walking (its own table; --walking-seconds adds the sweep), or none (nothing "
        "learnt from walking either)",
    )
    evaluate.add_argument(
        "--walking-seconds",
        metavar="S,S,...",
        help="with --calibration walking: also the accuracy of the vertical learnt from each "
        "number of walking seconds (choose calibration.walking_s on validation)",
    )
    evaluate.add_argument(
        "--orientations",
        action="store_true",
        help="instead: the window figures for each turn and calibration (the orientation "
        "table); --report FILE writes it as CSV and Markdown",
    )
    evaluate.add_argument(
        "--recordings",
        type=Path,
        metavar="DIR",
        help="instead of the test subjects: the labelled field recordings in DIR (a "
        "recording.dir); --report defaults to DIR/report/report.json",
    )
    evaluate.add_argument(
        "--device", action="append", help="with --recordings: only this device (repeatable)"
    )
    evaluate.add_argument(
        "--streams",
        choices=["lab", "spliced"],
        default="lab",
        help="spliced: also score each subject's segments cut and joined in the lab's order "
        "and in random real-life orders (the life-order protocol, docs/design.md)",
    )
    evaluate.add_argument(
        "--spliced-streams",
        type=int,
        default=3,
        metavar="K",
        help="with --streams spliced: random-order streams per subject (default 3)",
    )
    evaluate.add_argument(
        "--subjects",
        choices=["validation", "test"],
        default="test",
        help="with --orientations or --streams spliced: validation to choose a model, test "
        "to report it",
    )
    add_config_options(evaluate)
    evaluate.set_defaults(func=cmd_evaluate)

    trade = commands.add_parser(
        "tradeoff",
        help="stream-level accuracy, delay and switches "
        "for each smoothing method and hop (the latency trade-off)",
    )
    trade.add_argument("--model", type=Path, help="bundle folder (default: the packaged one)")
    trade.add_argument("--data-dir", type=Path, help="folder holding HAPT RawData/")
    trade.add_argument(
        "--subjects",
        choices=["validation", "test"],
        default="validation",
        help="validation: to choose settings; test: to report them",
    )
    trade.add_argument("--out", type=Path, help="write the rows as JSON")
    add_config_options(trade)
    trade.set_defaults(func=cmd_tradeoff)

    export = commands.add_parser("export", help="rewrite MODEL/model.onnx from model.pt")
    export.add_argument("--model", type=Path, required=True, help="bundle folder")
    export.set_defaults(func=cmd_export)
