"""The ``harstream`` command line: argument parsing and dispatch, nothing else.

Each subcommand is a small function taking the parsed arguments; the work lives in
the modules they call. Exit codes: 0 ok, 1 the command failed (the reason on one
line), 2 bad arguments or config. ``replay`` is imported here and only here.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import NoReturn

from harstream._version import __version__
from harstream.config import Config, dump_config, load_config
from harstream.errors import ConfigError, HarstreamError

__all__ = ["add_config_options", "config_from_args", "data_dir_from", "main"]

Command = Callable[[argparse.Namespace], int]


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def add_config_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        metavar="YAML",
        help="config file (default: $HARSTREAM_CONFIG, else built-in defaults)",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one value, e.g. stream.hop=32 (repeatable; the value is parsed as YAML)",
    )


def config_from_args(args: argparse.Namespace) -> Config:
    return load_config(args.config, args.overrides)


def data_dir_from(args: argparse.Namespace, config: Config | None = None) -> Path | None:
    """--data-dir, else $HARSTREAM_DATA, else data.dir of the config, else None."""
    if getattr(args, "data_dir", None):
        return Path(args.data_dir)
    if os.environ.get("HARSTREAM_DATA"):
        return Path(os.environ["HARSTREAM_DATA"])
    return config.data.dir if config is not None else None


# --- commands -------------------------------------------------------------------------


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


def cmd_bench(args: argparse.Namespace) -> int:
    import json

    from harstream.bench import engine_throughput
    from harstream.bundle import load_bundle

    bundle = load_bundle(args.model)
    devices = [1, 10] if args.quick else [int(d) for d in args.devices.split(",")]
    results = []
    print(
        f"engine throughput, bundle {bundle.path} ({bundle.arch.type}-{bundle.arch.hidden}"
        f"x{bundle.arch.layers}), {args.message_samples}-sample messages, median of runs"
    )
    print(f"{'backend':>8} {'mode':>9} {'devices':>8} {'samples/s':>12} {'decisions/s':>12}")
    for backend in args.backends.split(","):
        for mode in args.modes.split(","):
            for n in devices:
                result = engine_throughput(
                    bundle,
                    devices=n,
                    mode=mode,
                    backend=backend,
                    threads=args.threads,
                    message_samples=args.message_samples,
                    min_seconds=0.3 if args.quick else 1.5,
                    repeats=1 if args.quick else 3,
                )
                results.append(result.as_dict())
                print(
                    f"{backend:>8} {mode:>9} {n:>8} {result.samples_per_s:>12,.0f} "
                    f"{result.decisions_per_s:>12,.0f}",
                    flush=True,
                )
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "bench.json").write_text(json.dumps({"engine": results}, indent=2) + "\n")
    return 0


# --- parser ---------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="harstream",
        description="Real-time human activity recognition "
        "from streamed accelerometer and gyroscope samples.",
    )
    parser.add_argument("--version", action="version", version=f"harstream {__version__}")
    commands = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, parser_class=_Parser
    )

    config = commands.add_parser("config", help="show the effective configuration")
    config_commands = config.add_subparsers(
        dest="config_command", metavar="ACTION", required=True, parser_class=_Parser
    )
    show = config_commands.add_parser("show", help="print the validated, effective config")
    add_config_options(show)
    show.set_defaults(func=cmd_config_show)

    data = commands.add_parser("data", help="get and check the UCI recordings")
    data_commands = data.add_subparsers(
        dest="data_command", metavar="ACTION", required=True, parser_class=_Parser
    )
    verify = data_commands.add_parser(
        "verify",
        help="check a data folder (HAPT RawData, "
        "UCI HAR v1); exit 1 with the reasons when it is wrong",
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
        help="data folder to fill (default: --data-dir, "
        "$HARSTREAM_DATA, data.dir, else ~/.local/share/harstream/data)",
    )
    fetch.add_argument("--dataset", choices=["hapt", "uci-har", "all"], default="hapt")
    fetch.add_argument("--retries", type=int, default=5, help="retries per download")
    fetch.add_argument("--data-dir", type=Path, help=argparse.SUPPRESS)
    add_config_options(fetch)
    fetch.set_defaults(func=cmd_data_fetch)
    bench = commands.add_parser("bench", help="measure engine throughput (samples/s)")
    bench.add_argument("--model", type=Path, help="bundle folder (default: the packaged one)")
    bench.add_argument("--devices", default="1,1000", help="comma-separated device counts")
    bench.add_argument("--modes", default="window,stateful")
    bench.add_argument("--backends", default="onnx")
    bench.add_argument("--threads", type=int, default=1, help="inference threads")
    bench.add_argument(
        "--message-samples",
        type=int,
        default=25,
        help="samples per device message (25 = 0.5 s at 50 Hz)",
    )
    bench.add_argument("--quick", action="store_true", help="a few seconds: a smoke test")
    bench.add_argument("--out", type=Path, help="write bench.json here")
    bench.set_defaults(func=cmd_bench)

    # Commands of other packages (training: train, evaluate, export) register themselves
    # through this entry point group, so harstream never imports them by name.
    for entry in sorted(entry_points(group="harstream.commands"), key=lambda e: e.name):
        entry.load()(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from replay import DataError as RecordingError

    args = build_parser().parse_args(argv)
    func: Command = args.func
    try:
        return func(args)
    except ConfigError as exc:
        print(f"harstream: config error: {exc}", file=sys.stderr)
        return 2
    except (HarstreamError, RecordingError) as exc:
        print(f"harstream: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
