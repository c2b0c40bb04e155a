"""``harstream deploy systemd | mosquitto | nats | user``: deployment files for this
installation. The broker configs are closed by default: users and ACLs from the users
file (``harstream deploy user``; the rules in :mod:`harstream.brokers.access`); ``--anonymous``
opens them for local experiments."""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
from importlib import resources
from pathlib import Path

from harstream.brokers.access import (
    ANONYMOUS_WARNING,
    ROLES,
    Topics,
    User,
    add_user,
    mosquitto_acl,
    mosquitto_passwords,
    nats_authorization,
    read_users,
)
from harstream.brokers.nats import nats_config
from harstream.errors import ConfigError

__all__ = ["mosquitto_config", "register", "systemd_unit"]

DEFAULT_USERS = Path("/etc/harstream/users")


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
    acl_file: Path | None = None,
    anonymous: bool = False,
    autosave_s: int = 10,
) -> str:
    """A mosquitto.conf that keeps the gateway's promise: persistent sessions, queued
    QoS 0 samples, queues sized for ``devices`` x ``message_hz`` x ``outage_s``; closed
    (``password_file`` and ``acl_file`` of :mod:`harstream.brokers.access`) unless
    ``anonymous``."""
    template = resources.files("harstream").joinpath("deploy/mosquitto.conf").read_text()
    if anonymous:
        auth = "# " + ANONYMOUS_WARNING + "\nallow_anonymous true"
    elif password_file is None or acl_file is None:
        raise ConfigError("deploy mosquitto: a password file and an ACL file, or --anonymous")
    else:
        auth = (
            "# only the users of the password file, each within its ACL (harstream deploy user)\n"
            f"password_file {password_file}\nacl_file {acl_file}\nallow_anonymous false"
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


def cmd_deploy_nats(args: argparse.Namespace) -> int:
    from harstream.cli.common import config_from_args

    config = config_from_args(args)
    users, topics = _users(args)
    sys.stdout.write(
        nats_config(
            partitions=args.partitions,
            prefix=config.topics.prefix,
            bind=args.bind,
            http_port=args.http_port,
            sensor_logger=config.ingest.sensor_logger.topic,
            port=args.port,
            mqtt_port=args.mqtt_port,
            ws_port=args.ws_port,
            store_dir=args.store_dir,
            server_name=args.server_name,
            cluster_port=args.cluster_port,
            routes=tuple(r for r in (args.routes or "").split(",") if r),
            authorization=None if args.anonymous else nats_authorization(users, topics),
            anonymous=args.anonymous,
        )
    )
    sys.stderr.write(_nats_run_note() + "\n")
    return 0


def _nats_run_note() -> str:
    """How to run the config: the nats-server found here (harstream.natsserver), or how
    to get a current one."""
    from harstream.natsserver import find_nats_server

    try:
        server = find_nats_server()
    except RuntimeError as exc:
        return f"no nats-server to run it with here: {exc}"
    return (
        f"run it with: {server.path} -c THIS_FILE   (nats-server {server.version}, {server.source})"
    )


def _users(args: argparse.Namespace) -> tuple[list[User], Topics]:
    """The users file's users (none with --anonymous) and the config's topic roots."""
    from harstream.cli.common import config_from_args

    config = config_from_args(args)
    topics = Topics(
        config.topics.prefix,
        config.ingest.sensor_logger.topic,
        config.homeassistant.discovery_prefix,
    )
    if args.anonymous:
        print(f"warning: {ANONYMOUS_WARNING.replace('{prefix}', topics.prefix)}", file=sys.stderr)
        return [], topics
    return read_users(args.users), topics


def cmd_deploy_mosquitto(args: argparse.Namespace) -> int:
    users, topics = _users(args)
    if not args.anonymous:  # the password and ACL files beside the config it prints
        for path, text in (
            (args.password_file, mosquitto_passwords(users)),
            (args.acl_file, mosquitto_acl(users, topics)),
        ):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            path.chmod(0o640)  # mosquitto reads it; nobody else needs the hashes
            with contextlib.suppress(LookupError, PermissionError):  # no such group: as is
                shutil.chown(path, group="mosquitto")
            print(f"wrote {path} ({len(users)} users)", file=sys.stderr)
    sys.stdout.write(
        mosquitto_config(
            devices=args.devices,
            message_hz=args.message_hz,
            outage_s=args.outage_s,
            port=args.port,
            ws_port=args.ws_port,
            persistence_dir=args.persistence_dir,
            password_file=args.password_file,
            acl_file=args.acl_file,
            anonymous=args.anonymous,
        )
    )
    return 0


def cmd_deploy_user(args: argparse.Namespace) -> int:
    password = sys.stdin.readline().strip() if args.password_stdin else None
    chosen = add_user(args.users, args.name, args.role, password)
    print(f"{args.role} {args.name} in {args.users}", file=sys.stderr)
    if password is None:
        print(chosen)  # the only time it is shown: give it to the device now
    print(
        "now write the broker's files again: harstream deploy mosquitto|nats ...",
        file=sys.stderr,
    )
    return 0


def _add_users_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--users", type=Path, default=DEFAULT_USERS, help="the users file (harstream deploy user)"
    )
    parser.add_argument(
        "--anonymous",
        action="store_true",
        help="no users, no ACLs: any client may publish anything (local experiments only)",
    )


def systemd_unit(user: str, venv: Path, config: Path, worker: bool = False) -> str:
    """The gateway's unit; ``worker``: the template ``harstream@.service`` whose instance
    is the partitions it owns (``harstream@0-63``, ``harstream@64-127``)."""
    template = resources.files("harstream").joinpath("deploy/harstream.service").read_text()
    unit = template.format(user=user, venv=venv, config=config)
    if worker:
        unit = unit.replace(
            f"ExecStart={venv}/bin/harstream serve",
            "# one instance per worker: %i = the partitions it owns (scale.owned), its name\n"
            "# the host's and the range (a worker restarted keeps its name, so its session)\n"
            f"ExecStart={venv}/bin/harstream serve --set scale.owned=%i --set scale.worker=%H-%i",
        )
        unit = unit.replace(
            "Description=harstream activity recognition gateway",
            "Description=harstream gateway worker (partitions %i)",
        )
        unit = unit.replace("StateDirectory=harstream\n", "StateDirectory=harstream/%i\n")
    return unit


def cmd_deploy_systemd(args: argparse.Namespace) -> int:
    venv = args.venv or Path(sys.prefix)
    sys.stdout.write(systemd_unit(args.user, venv, args.config, worker=args.worker))
    return 0


def register(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from harstream.cli.common import Parser, add_config_options

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
    systemd.add_argument(
        "--worker",
        action="store_true",
        help="the template harstream@.service: one instance per worker, named by the "
        "partitions it owns (systemctl start harstream@0-63 harstream@64-127)",
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
    mosquitto.add_argument(
        "--password-file",
        type=Path,
        default=Path("/etc/mosquitto/harstream.passwd"),
        help="where to write mosquitto's password file (from --users)",
    )
    mosquitto.add_argument(
        "--acl-file",
        type=Path,
        default=Path("/etc/mosquitto/harstream.acl"),
        help="where to write mosquitto's ACL file (from --users)",
    )
    _add_users_options(mosquitto)
    add_config_options(mosquitto)
    mosquitto.set_defaults(func=cmd_deploy_mosquitto)

    user = actions.add_parser(
        "user",
        help="add (or replace) a broker user: a device (its name is its id), the operator, "
        "the gateway or a worker (its name is its scale.worker); prints a new password",
    )
    user.add_argument("name", help="the user name (a device: its device id)")
    user.add_argument("--role", choices=ROLES, required=True, help="what it may do")
    user.add_argument("--users", type=Path, default=DEFAULT_USERS, help="the users file")
    user.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    user.set_defaults(func=cmd_deploy_user)

    nats = actions.add_parser(
        "nats",
        help="print a nats-server config for gateway workers: MQTT listener, JetStream, "
        "device partitions (docs/scaling.md)",
    )
    _add_users_options(nats)
    nats.add_argument(
        "--partitions", type=int, default=128, help="P: fixed for the deployment's life"
    )
    nats.add_argument("--bind", default="0.0.0.0", help="the address every listener binds")
    nats.add_argument("--port", type=int, default=4222, help="the NATS client port")
    nats.add_argument("--http-port", type=int, default=8222, help="monitoring; 0: none")
    nats.add_argument("--mqtt-port", type=int, default=1883, help="the MQTT port")
    nats.add_argument("--ws-port", type=int, default=8080, help="MQTT over websockets; 0: none")
    nats.add_argument("--store-dir", type=Path, default=Path("/var/lib/nats"), help="JetStream")
    nats.add_argument("--server-name", default="harstream-nats-1", help="unique per server")
    nats.add_argument("--cluster-port", type=int, default=0, help="cluster routes; 0: alone")
    nats.add_argument(
        "--routes", help="comma-separated nats-route://HOST:PORT of the other cluster servers"
    )
    add_config_options(nats)
    nats.set_defaults(func=cmd_deploy_nats)
