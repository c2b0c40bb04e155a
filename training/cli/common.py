"""What the training commands share: the train extra's check, the data folder, the
stream configs, the subjects, and the report every evaluation writes."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harstream.cli.common import config_from_args, data_dir_from
from harstream.config import Config, load_config
from harstream.core.bundle import ArchSpec
from harstream.errors import ConfigError, HarstreamError

__all__ = [
    "add_common",
    "data_dir",
    "evaluate_and_report",
    "format_report",
    "need",
    "stream_configs",
    "subjects",
]

TRAIN_EXTRA_HINT = "this command needs the train extra: pip install 'harstream[train]'"


def need(*modules: str) -> None:
    """Fail with the install hint when a module of the train extra is missing."""
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise HarstreamError(f"{', '.join(missing)} not installed; {TRAIN_EXTRA_HINT}")


def data_dir(args: argparse.Namespace, config: Any) -> Path:
    found = data_dir_from(args, config)
    if found is None:
        raise HarstreamError(
            "needs the HAPT recordings: give --data-dir DIR (a folder holding "
            "RawData/), set HARSTREAM_DATA, or run `harstream data fetch`"
        )
    return found


def stream_configs(args: argparse.Namespace) -> dict[str, Config]:
    """The run's config as ``default``, and each ``--stream-config NAME=YAML``."""
    configs = {"default": config_from_args(args)}
    for item in getattr(args, "stream_config", None) or []:
        name, sep, path = item.partition("=")
        if not sep:
            raise ConfigError(f"--stream-config {item}: expected NAME=YAML")
        configs[name] = load_config(path, args.overrides)
    if getattr(args, "calibration", None) == "none":  # uncalibrated: nothing learnt either
        for name, config in configs.items():
            cal = config.calibration.model_copy(update={"from_walking": False})
            configs[name] = config.model_copy(update={"calibration": cal})
    return configs


def subjects(args: argparse.Namespace, config: Config) -> Sequence[int]:
    """``--subjects test`` (to report) or ``validation`` (to choose)."""
    from training.data import TEST_SUBJECTS

    return TEST_SUBJECTS if args.subjects == "test" else config.train.validation_subjects


def add_common(
    parser: argparse.ArgumentParser,
    *,
    model: bool = True,
    data: bool = True,
    subjects: str | None = None,
    stream_config: bool = False,
) -> None:
    """The options most training commands take, each with one meaning everywhere."""
    from harstream.cli.common import add_config_options

    if model:
        parser.add_argument("--model", type=Path, help="bundle folder (default: the packaged one)")
    if data:
        parser.add_argument("--data-dir", type=Path, help="folder holding HAPT RawData/")
    if subjects is not None:
        parser.add_argument(
            "--subjects",
            choices=["validation", "test"],
            default=subjects,
            help="validation: to choose (a model, a setting); test: to report it",
        )
    if stream_config:
        parser.add_argument(
            "--stream-config",
            action="append",
            metavar="NAME=YAML",
            help="also score the stream level with this config (repeatable)",
        )
    add_config_options(parser)


def evaluate_and_report(
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
        f"{report['name']} ({ArchSpec(**report['arch']).summary}, {report['mode']}, "
        f"{report['parameters']:,} parameters)",
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
