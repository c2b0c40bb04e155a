"""The ``harstream`` command line: parsing and dispatch; one module per command group.

Exit codes: 0 ok, 1 the command failed (the reason on one line), 2 bad arguments or
config. This subpackage is the only part of harstream that imports ``replay``.
Commands of other packages (training: train, evaluate, export) register themselves
through the ``harstream.commands`` entry point group, so harstream never imports them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points

from harstream._version import __version__
from harstream.cli import bench, calibrate, control, data, deploy, playback, serve
from harstream.cli.common import Parser, add_config_options, config_from_args, data_dir_from
from harstream.errors import ConfigError, HarstreamError

__all__ = ["add_config_options", "build_parser", "config_from_args", "data_dir_from", "main"]

Command = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="harstream",
        description="Real-time human activity recognition from streamed accelerometer and "
        "gyroscope samples.",
    )
    parser.add_argument("--version", action="version", version=f"harstream {__version__}")
    commands = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, parser_class=Parser
    )
    for module in (data, playback, serve, calibrate, control, bench, deploy):
        module.register(commands)
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
