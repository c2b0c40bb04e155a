"""``harstream config show`` and ``harstream data verify|fetch|export``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harstream.cli.common import Parser, add_config_options, config_from_args, data_dir_from
from harstream.cli.control import register_data
from harstream.config import dump_config
from harstream.errors import HarstreamError

__all__ = ["register"]


def cmd_config_show(args: argparse.Namespace) -> int:
    sys.stdout.write(dump_config(config_from_args(args)))
    return 0


def cmd_data_verify(args: argparse.Namespace) -> int:
    from replay.verify import format_report, verify_data

    report = verify_data(args.dir, checksums=not args.no_checksums)
    print(format_report(report))
    return 0 if report.ok else 1


def cmd_data_fetch(args: argparse.Namespace) -> int:
    from replay.fetch import Progress, fetch_dataset

    config = config_from_args(args)
    dest = Path(args.dest) if args.dest else data_dir_from(args, config)
    if dest is None:
        dest = Path.home() / ".local" / "share" / "harstream" / "data"
    sources = {
        "hapt": (config.data.hapt_url, config.data.hapt_sha256),
        "uci-har": (config.data.uci_har_url, config.data.uci_har_sha256),
    }
    names = list(sources) if args.dataset == "all" else [args.dataset]
    for name in names:
        url, sha256 = sources[name]
        fetch_dataset(name, dest, url, sha256=sha256, progress=Progress(name), retries=args.retries)
        print(f"{name}: ready in {dest}")
    print(
        f"use it with --data-dir {dest} (or HARSTREAM_DATA={dest}); "
        f"check it with: harstream data verify {dest}"
    )
    return 0


def cmd_data_export(args: argparse.Namespace) -> int:
    from harstream.cli.playback import load_subject
    from replay.csvio import write_csv

    config = config_from_args(args)
    recordings = load_subject(args.subject, data_dir_from(args, config))
    if args.experiment is not None:
        recordings = [r for r in recordings if r.experiment == f"exp{args.experiment:02d}"]
        if not recordings:
            raise HarstreamError(f"subject {args.subject} has no experiment {args.experiment}")
    if len(recordings) > 1 and "{experiment}" not in str(args.out):
        recordings = recordings[:1]
        print(
            f"subject {args.subject} has several experiments; wrote the first "
            "(pick one with --experiment, or put {experiment} in --out)",
            file=sys.stderr,
        )
    for rec in recordings:
        path = write_csv(str(args.out).replace("{experiment}", rec.experiment), rec)
        print(
            f"wrote {path}: {len(rec)} samples ({rec.duration_s:.0f} s) of subject "
            f"{rec.subject}, {rec.experiment}"
        )
    return 0


def register(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    config = commands.add_parser("config", help="show the effective configuration")
    config_commands = config.add_subparsers(
        dest="config_command", metavar="ACTION", required=True, parser_class=Parser
    )
    show = config_commands.add_parser("show", help="print the validated, effective config")
    add_config_options(show)
    show.set_defaults(func=cmd_config_show)

    data = commands.add_parser(
        "data", help="get, check and export the UCI recordings; label and erase field recordings"
    )
    data_commands = data.add_subparsers(
        dest="data_command", metavar="ACTION", required=True, parser_class=Parser
    )
    verify = data_commands.add_parser(
        "verify",
        help="check a data folder (HAPT RawData, UCI HAR v1); exit 1 with the reasons when "
        "it is wrong",
    )
    verify.add_argument("dir", type=Path, help="folder holding RawData/ and/or 'UCI HAR Dataset/'")
    verify.add_argument(
        "--no-checksums",
        action="store_true",
        help="skip comparing RawData files with the published sha256",
    )
    verify.set_defaults(func=cmd_data_verify)
    fetch = data_commands.add_parser("fetch", help="download the official UCI archives")
    fetch.add_argument(
        "--dest",
        type=Path,
        help="data folder to fill (default: $HARSTREAM_DATA, data.dir, "
        "else ~/.local/share/harstream/data)",
    )
    fetch.add_argument("--dataset", choices=["hapt", "uci-har", "all"], default="hapt")
    fetch.add_argument("--retries", type=int, default=5, help="retries per download")
    add_config_options(fetch)
    fetch.set_defaults(func=cmd_data_fetch)
    export = data_commands.add_parser(
        "export", help="write a subject's raw samples and labels as CSV (harstream predict's input)"
    )
    export.add_argument("--subject", type=int, required=True)
    export.add_argument("--experiment", type=int, help="experiment number (default: the first)")
    export.add_argument(
        "--out",
        type=Path,
        required=True,
        help="CSV file; {experiment} in the name writes one file per experiment",
    )
    export.add_argument("--data-dir", type=Path, help="folder holding HAPT RawData/")
    add_config_options(export)
    export.set_defaults(func=cmd_data_export)
    register_data(data_commands)
