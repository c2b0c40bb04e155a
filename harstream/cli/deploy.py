"""``harstream deploy systemd``: print the systemd unit for this installation."""

from __future__ import annotations

import argparse
import sys
from importlib import resources
from pathlib import Path

__all__ = ["register", "systemd_unit"]


def systemd_unit(user: str, venv: Path, config: Path) -> str:
    template = resources.files("harstream").joinpath("deploy/harstream.service").read_text()
    return template.format(user=user, venv=venv, config=config)


def cmd_deploy_systemd(args: argparse.Namespace) -> int:
    venv = args.venv or Path(sys.prefix)
    sys.stdout.write(systemd_unit(args.user, venv, args.config))
    return 0


def register(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from harstream.cli.common import Parser

    deploy = commands.add_parser("deploy", help="deployment files for this installation")
    actions = deploy.add_subparsers(
        dest="deploy_command", metavar="ACTION", required=True, parser_class=Parser
    )
    systemd = actions.add_parser(
        "systemd",
        help="print a systemd unit running `harstream serve` (see docs/deploy-raspberry-pi.md)",
    )
    systemd.add_argument("--user", default="harstream", help="the service's system user")
    systemd.add_argument(
        "--venv",
        type=Path,
        help="the virtual environment holding harstream (default: the one running this command)",
    )
    systemd.add_argument(
        "--config",
        type=Path,
        default=Path("/etc/harstream/config.yaml"),
        help="the config file the service reads (HARSTREAM_CONFIG)",
    )
    systemd.set_defaults(func=cmd_deploy_systemd)
