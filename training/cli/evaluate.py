"""The evaluation commands, one per protocol, each reading top to bottom:
``evaluate`` (the test subjects as recorded), ``evaluate-orders`` (life's order),
``evaluate-orientations``, ``evaluate-walking`` (the vertical learnt from walking),
``evaluate-baseline``, ``evaluate-field`` (labelled field recordings), ``tradeoff`` and
``export``. docs/design.md has the protocol."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from harstream.cli.common import config_from_args
from harstream.errors import HarstreamError
from training.cli.common import (
    add_common,
    data_dir,
    evaluate_and_report,
    need,
    stream_configs,
    subjects,
)

__all__ = ["register"]

CALIBRATION_HELP = (
    "models with aligned inputs: a 5 s standing calibration per recording, the training "
    "phone's mount assumed (reference), or none"
)


def cmd_evaluate(args: argparse.Namespace) -> int:
    """The test subjects' recordings as they are (or turned, or with another
    calibration): window and stream figures, cold start, plots; --record writes them
    into bundle.json."""
    need("matplotlib")
    from harstream.core.bundle import load_bundle
    from training.robustness import bundle_recordings, rotation_seeds

    config = config_from_args(args)
    data = data_dir(args, config)
    as_recorded = args.rotate == "none" and args.calibration == "standing"
    if args.record and not as_recorded:
        raise HarstreamError(
            "--record takes the recordings as they are: drop --rotate/--calibration"
        )
    recordings = None
    if not as_recorded:
        bundle = load_bundle(args.model)
        recordings = [
            r
            for spec in rotation_seeds(args.rotate)
            for r in bundle_recordings(bundle, data, rotate=spec, calibration=args.calibration)
        ]
    report_path = args.report or Path(args.model or "runs/default") / "report.json"
    evaluate_and_report(
        args.model, data, stream_configs(args), report_path, args.record, recordings
    )
    return 0


def cmd_orders(args: argparse.Namespace) -> int:
    """Life's order: each subject's segments as recorded, cut and joined in the lab's
    order, and spliced in random real-life orders (training.lifeorder)."""
    from training.lifeorder import life_order_report, step_table, summary_table
    from training.metrics import write_table

    config = config_from_args(args)
    chosen = subjects(args, config)
    report = life_order_report(
        args.model,
        data_dir(args, config),
        stream_configs(args),
        chosen,
        streams=args.streams,
        seed=args.seed,
        calibration=args.calibration,
        jobs=config.train.jobs,
    )
    summary, steps = summary_table(report), step_table(report)
    print(
        f"{report['name']} on the {args.subjects} subjects {list(chosen)}, calibration "
        f"{args.calibration}, {args.streams} random-order streams per subject"
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


def cmd_orientations(args: argparse.Namespace) -> int:
    """Window figures for each turn of the device and each calibration."""
    from training.metrics import write_table
    from training.robustness import orientation_table

    config = config_from_args(args)
    chosen = subjects(args, config)
    table = orientation_table(args.model, data_dir(args, config), chosen, jobs=config.train.jobs)
    print(
        f"window level on the {args.subjects} subjects {list(chosen)}, each recording "
        "turned before preprocessing"
    )
    print(table.to_string(index=False, float_format="{:.4f}".format))
    if args.report:
        title = f"Orientation robustness ({args.subjects} subjects)"
        csv, markdown = write_table(table, args.report, title)
        print(f"wrote {csv} and {markdown}")
    return 0


def cmd_walking(args: argparse.Namespace) -> int:
    """The vertical learnt online from each device's walking (training.walking): each
    subject one device, its recordings joined (lab) or spliced in random orders."""
    import pandas as pd

    from harstream.core.bundle import load_bundle
    from training.metrics import write_table
    from training.robustness import rotation_seeds
    from training.walking import recording_devices, seconds_table, walking_report

    config = config_from_args(args)
    chosen = subjects(args, config)
    bundle, data = load_bundle(args.model), data_dir(args, config)
    rotations = rotation_seeds(args.rotate)
    table = walking_report(bundle, config, data, chosen, rotations, config.train.jobs)
    print(
        f"{bundle.name} on the {args.subjects} subjects {list(chosen)}, turned {args.rotate}: "
        "each subject one device, its recordings joined (lab) or spliced in random orders"
    )
    print(table.to_string(index=False))
    path = args.report or Path(args.model or "runs/default") / "walking"
    written = list(write_table(table, path, f"Calibration from walking ({args.subjects})"))
    if args.walking_seconds:
        seconds = [float(s) for s in args.walking_seconds.split(",")]
        devices = recording_devices(bundle, data, chosen, rotations[0])
        sweep = pd.DataFrame(seconds_table(bundle, config, devices, seconds))
        print(
            "each recording alone, the first vertical after N s of walking in force from its start:"
        )
        print(sweep.to_string(index=False))
        written += write_table(sweep, path.with_name(f"{path.name}-seconds"), "Seconds of walking")
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def cmd_field(args: argparse.Namespace) -> int:
    """The protocol's figures on labelled field recordings, per device."""
    need("matplotlib")
    from harstream.core.bundle import load_bundle
    from training.fielddata import describe_holdout, held_out, load_field

    bundle = load_bundle(args.model)
    field = load_field(args.recordings, bundle, devices=args.device)
    for problem in field.problems:
        print(f"warning: {problem}")
    if not field.recordings:
        raise HarstreamError(f"{args.recordings}: no labelled recordings to score")
    lineage = bundle.training.get("finetune") or {}
    if lineage:  # a fine-tuned bundle: say what of its recordings it was fitted on
        holdout = lineage.get("holdout") or {"kind": "sessions", "sessions": []}
        print(
            f"{bundle.name} was fine-tuned on {lineage['recordings']}: sessions "
            f"{', '.join(lineage['fit_sessions'])}; held out {describe_holdout(holdout)}"
        )
    if args.heldout:
        if not lineage:
            raise HarstreamError(f"--heldout: {bundle.name} is not a fine-tuned bundle")
        field.recordings = held_out(field, lineage.get("holdout") or {}, bundle.rate_hz)
        if not field.recordings:
            raise HarstreamError(
                f"--heldout: {bundle.name} held out nothing of {args.recordings} to score"
            )
        print("scoring what it held out only")
    elif lineage:
        print("scoring every labelled stretch, the ones it was fitted on included (--heldout: not)")
    print(
        f"{len(field.recordings)} labelled stretches of {len(field.sessions)} sessions, "
        f"{field.labelled_s / 60:.1f} min labelled ({field.unlabelled_sessions} sessions "
        "without labels skipped)"
    )
    report_path = args.report or Path(args.recordings) / "report" / "report.json"
    evaluate_and_report(
        args.model,
        None,
        stream_configs(args),
        report_path,
        record=False,
        recordings=field.recordings,
        scope="the labelled recordings",
    )
    return 0


def cmd_tradeoff(args: argparse.Namespace) -> int:
    """Stream-level accuracy, delay and switches for each smoothing method and hop."""
    from training.evaluate import tradeoff, tradeoff_table
    from training.metrics import write_table

    config = config_from_args(args)
    chosen = subjects(args, config)
    rows = tradeoff(args.model, data_dir(args, config), chosen, jobs=config.train.jobs)
    table = tradeoff_table(rows)
    print(f"stream level on the {args.subjects} subjects {list(chosen)}")
    print(table.to_string(index=False, float_format="{:.4f}".format))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"subjects": list(chosen), "rows": rows}, indent=2))
        from training.plots import plot_tradeoff

        figure = plot_tradeoff(
            rows,
            args.out.with_suffix(".png"),
            f"stream level, {args.subjects} subjects: delay vs accuracy",
        )
        csv, markdown = write_table(
            table, args.out, f"Stream level on the {args.subjects} subjects {list(chosen)}"
        )
        print(f"wrote {args.out}, {csv}, {markdown} and {figure}")
    return 0


def cmd_baseline(args: argparse.Namespace) -> int:
    """The classic window-features + linear SVM model, fitted on the training subjects
    and scored by the same protocol (no bundle)."""
    need("matplotlib")
    from training.baseline import evaluate_features_baseline
    from training.evaluate import subject_table
    from training.metrics import write_table
    from training.plots import plot_confusion

    config = config_from_args(args)
    report = evaluate_features_baseline(
        data_dir(args, config),
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
    """model.onnx rewritten from model.pt (and checked against torch)."""
    need("torch", "onnx")
    from harstream.core.bundle import load_bundle
    from training.export import export_onnx

    path = export_onnx(load_bundle(args.model))
    print(f"wrote {path} (checked against torch)")
    return 0


def register(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    _register_test_figures(commands)
    _register_robustness(commands)
    _register_other(commands)


def _register_test_figures(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """evaluate and evaluate-orders: a bundle's figures on the test subjects."""
    evaluate = commands.add_parser(
        "evaluate",
        help="window and stream level figures of a bundle on the test subjects as recorded, "
        "with plots",
    )
    add_common(evaluate, stream_config=True)
    evaluate.add_argument(
        "--report", type=Path, help="report JSON (default MODEL/report.json); figures beside it"
    )
    evaluate.add_argument(
        "--record", action="store_true", help="write the test metrics into the bundle's bundle.json"
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
        choices=["standing", "reference", "none"],
        default="standing",
        help=CALIBRATION_HELP + " (default standing)",
    )
    evaluate.set_defaults(func=cmd_evaluate)

    orders = commands.add_parser(
        "evaluate-orders",
        help="stream figures in the lab's order, the lab-cut control and random real-life "
        "orders spliced from each subject's own segments (life's order, docs/design.md)",
    )
    add_common(orders, subjects="test", stream_config=True)
    orders.add_argument(
        "--streams", type=int, default=3, metavar="K", help="random-order streams per subject"
    )
    orders.add_argument(
        "--seed", type=int, default=0, help="of the spliced streams (each (seed, subject, k))"
    )
    orders.add_argument(
        "--calibration",
        choices=["standing", "reference", "walking", "none"],
        default="reference",
        help=CALIBRATION_HELP + ", walking (none given, learnt from the device's walking) "
        "(default reference: the UCI phone's mount)",
    )
    orders.add_argument("--report", type=Path, help="report JSON; the tables beside it")
    orders.set_defaults(func=cmd_orders)


def _register_robustness(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """evaluate-orientations and evaluate-walking: turned devices, verticals from walking."""
    orientations = commands.add_parser(
        "evaluate-orientations",
        help="window figures for each turn of the device and each calibration",
    )
    add_common(orientations, subjects="test")
    orientations.add_argument("--report", type=Path, help="write the table as CSV and Markdown")
    orientations.set_defaults(func=cmd_orientations)

    walking = commands.add_parser(
        "evaluate-walking",
        help="the vertical learnt online from each device's walking: accuracy after the "
        "first vertical, its arrival time, a re-mount half-way",
    )
    add_common(walking, subjects="test")
    walking.add_argument(
        "--rotate", default="none", metavar="SPEC", help="turn every recording (as evaluate)"
    )
    walking.add_argument(
        "--walking-seconds",
        metavar="S,S,...",
        help="also the accuracy of the vertical learnt from each number of walking seconds "
        "(choose calibration.walking_s on validation)",
    )
    walking.add_argument("--report", type=Path, help="the table's path (CSV and Markdown)")
    walking.set_defaults(func=cmd_walking)


def _register_other(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """The baseline, field recordings, the smoothing trade-off and the ONNX export."""
    baseline = commands.add_parser(
        "evaluate-baseline",
        help="fit the classic window-features + linear SVM model on the training subjects and "
        "score it by the same protocol",
    )
    add_common(baseline, model=False)
    baseline.add_argument("--report", type=Path, help="report JSON; the figures beside it")
    baseline.set_defaults(func=cmd_baseline)

    field = commands.add_parser(
        "evaluate-field",
        help="window and stream figures of a bundle on labelled field recordings, per device",
    )
    field.add_argument("recordings", type=Path, help="a recording.dir")
    add_common(field, data=False, stream_config=True)
    field.add_argument("--device", action="append", help="only this device (repeatable)")
    field.add_argument(
        "--heldout",
        action="store_true",
        help="with a fine-tuned --model: score only what its fine-tune held out (the "
        "sessions, or the last share of its one session; bundle.json's lineage)",
    )
    field.add_argument(
        "--report", type=Path, help="report JSON (default RECORDINGS/report/report.json)"
    )
    field.set_defaults(func=cmd_field)

    trade = commands.add_parser(
        "tradeoff",
        help="stream-level accuracy, delay and switches for each smoothing method and hop "
        "(the latency trade-off)",
    )
    add_common(trade, subjects="validation")
    trade.add_argument("--out", type=Path, help="write the rows as JSON")
    trade.set_defaults(func=cmd_tradeoff)

    export = commands.add_parser("export", help="rewrite MODEL/model.onnx from model.pt")
    export.add_argument("--model", type=Path, required=True, help="bundle folder")
    export.set_defaults(func=cmd_export)
