"""``harstream deploy systemd | mosquitto``: deployment files for this installation."""

from __future__ import annotations

import argparse
import sys
from importlib import resources
from pathlib import Path

__all__ = ["mosquitto_config", "register", "systemd_unit"]


def mosquitto_config(
    *,
    devices: int = 1000,
    message_hz: float = 1.0,
    outage_s: float = 60.0,
    port: int = 1883,
    ws_port: int = 9001,
    bind: str = "0.0.0.0",
    ws_bind: str = "",  # an interface name (lo); empty: every interface
    persistence_dir: Path = Path("/var/lib/mosquitto"),
    password_file: Path | None = None,
    autosave_s: int = 10,
) -> str:
    """A mosquitto.conf that keeps the gateway's promise: persistent sessions, queued
    QoS 0 samples, queues sized for ``devices`` x ``message_hz`` x ``outage_s``."""
    template = resources.files("harstream").joinpath("deploy/mosquitto.conf").read_text()
    auth = (
        f"password_file {password_file}\nallow_anonymous false"
        if password_file is not None
        else "# anyone who reaches the port may publish: give --password-file on a shared network\n"
        "allow_anonymous true"
    )
    return template.format(
        devices=devices,
        message_hz=message_hz,
        outage_s=outage_s,
        queue=max(1000, round(devices * message_hz * outage_s)),
        port=port,
        bind=bind,
        ws_listener=(
            # mosquitto 2.0 passes a websockets listener's address to libwebsockets, which
            # takes an interface name (lo) and needs IPv4 named to bind to it alone
            f"listener {ws_port} {ws_bind}\nprotocol websockets\nsocket_domain ipv4"
            if ws_bind
            else f"listener {ws_port}\nprotocol websockets"
        ),
        persistence_dir=str(persistence_dir).rstrip("/"),
        auth=auth,
        autosave_s=autosave_s,
    )


def cmd_deploy_mosquitto(args: argparse.Namespace) -> int:
    sys.stdout.write(
        mosquitto_config(
            devices=args.devices,
            message_hz=args.message_hz,
            outage_s=args.outage_s,
            port=args.port,
            ws_port=args.ws_port,
            persistence_dir=args.persistence_dir,
            password_file=args.password_file,
        )
    )
    return 0


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

    mosquitto = actions.add_parser(
        "mosquitto",
        help="print a mosquitto.conf that keeps samples through restarts "
        "(persistence, queued QoS 0, queues sized for your devices, websockets for phones)",
    )
    mosquitto.add_argument("--devices", type=int, default=1000, help="devices to size queues for")
    mosquitto.add_argument(
        "--message-hz", type=float, default=1.0, help="messages per device per second"
    )
    mosquitto.add_argument(
        "--outage-s", type=float, default=60.0, help="seconds of gateway outage to queue for"
    )
    mosquitto.add_argument("--port", type=int, default=1883, help="the MQTT (TCP) port")
    mosquitto.add_argument("--ws-port", type=int, default=9001, help="the websockets port")
    mosquitto.add_argument(
        "--persistence-dir", type=Path, default=Path("/var/lib/mosquitto"), help="mosquitto.db"
    )
    mosquitto.add_argument("--password-file", type=Path, help="mosquitto_passwd file")
    mosquitto.set_defaults(func=cmd_deploy_mosquitto)
