"""``harstream serve``: the MQTT gateway (see harstream.gateway.service)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from collections.abc import Callable

from harstream.cli.common import add_config_options, config_from_args
from harstream.config import Config
from harstream.core.bundle import load_bundle
from harstream.core.engine import Engine
from harstream.gateway.service import Gateway, GatewaySettings
from harstream.gateway.transport import Transport
from harstream.runtime import build_engine, engine_loader, gateway_settings, mqtt_transport

__all__ = ["register", "serve", "setup_logging"]


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "t": round(record.created, 3),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def setup_logging(config: Config) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if config.logging.format == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("harstream")
    root.handlers[:] = [handler]
    root.setLevel(config.logging.level)


async def serve(
    engine: Engine,
    transport: Transport,
    settings: GatewaySettings,
    load_engine: Callable[[], tuple[Engine, str]] | None = None,
) -> None:
    """Run the gateway until SIGINT or SIGTERM, then stop cleanly; SIGHUP reloads the
    model (``model.path``) without a restart."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    gateway = Gateway(engine, transport, settings, load_engine=load_engine)
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, gateway.request_reload)
    try:
        await gateway.run(stop)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.remove_signal_handler(sig)


def cmd_serve(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    setup_logging(config)
    bundle = load_bundle(config.model.path)  # a bad model or config fails here, at start
    engine = build_engine(config, bundle)
    transport = mqtt_transport(config)
    log = logging.getLogger("harstream")
    log.info(
        "serving %s (%s, %s mode, hop %d) via %r, prefix %s",
        bundle.name,
        bundle.arch.type,
        bundle.mode,
        config.stream.hop,
        transport,
        config.topics.prefix,
    )
    if config.scale.partitions is not None and config.scale.nats_port is not None:
        from harstream.natsserver import log_server_version

        log_server_version(config.broker.host, config.scale.nats_port, log)
    settings = gateway_settings(config, bundle)
    asyncio.run(serve(engine, transport, settings, engine_loader(config)))
    return 0


def register(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = commands.add_parser(
        "serve", help="run the MQTT gateway: device samples in, activities out"
    )
    add_config_options(parser)
    parser.set_defaults(func=cmd_serve)
