"""What every command module shares: the one-line-error parser and config options."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import NoReturn

from harstream.config import Config, load_config

__all__ = ["Parser", "add_config_options", "config_from_args", "data_dir_from"]


class Parser(argparse.ArgumentParser):
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
