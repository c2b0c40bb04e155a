"""A private mosquitto on a free loopback port, for tests and benchmarks.

Each broker gets its own config and directory; ``extra`` config lines add password
files or TLS listeners; ``websockets`` adds a websockets listener; ``config`` replaces the
generated configuration entirely (a file from ``harstream deploy mosquitto``, say);
``restart()`` keeps the ports (for reconnect tests) and ``kill()`` crashes it. Binds
127.0.0.1 only. Needs the ``mosquitto`` binary (Debian: ``apt-get install mosquitto``).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "INSTALL_HINT",
    "Mosquitto",
    "end_process",
    "free_port",
    "mosquitto_binary",
    "wait_for_port",
    "websockets_listener",
]

INSTALL_HINT = (
    "mosquitto is not installed; install it with: apt-get update && apt-get install -y "
    "mosquitto   (`make test` does this when it may)"
)


def mosquitto_binary() -> str:
    found = shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).exists()),
        None,
    )
    if found is None:
        raise RuntimeError(INSTALL_HINT)
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def end_process(process: subprocess.Popen[Any], timeout_s: float) -> None:
    """Ask a server to stop (SIGTERM); kill it if it has not within ``timeout_s``."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def wait_for_port(port: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout_s} s")


def websockets_listener(port: int) -> str:
    """Config lines of a websockets listener on loopback. mosquitto 2.0's websockets
    listeners hand the bind address to libwebsockets, which takes an interface name and
    ignores an address: ``lo`` with IPv4 only keeps it on 127.0.0.1."""
    return f"listener {port} lo\nprotocol websockets\nsocket_domain ipv4\n"


@dataclass
class Mosquitto:
    workdir: Path
    port: int = field(default_factory=free_port)
    extra: str = ""
    anonymous: bool = True
    websockets: bool = False
    config: str | None = None  # the whole mosquitto.conf instead of the generated one
    ws_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return "127.0.0.1"

    def write_config(self) -> Path:
        conf = self.workdir / "mosquitto.conf"
        if self.config is not None:
            conf.write_text(self.config)
            return conf
        lines = [
            f"listener {self.port} 127.0.0.1",
            f"allow_anonymous {'true' if self.anonymous else 'false'}",
            "persistence false",
            f"log_dest file {self.workdir / 'mosquitto.log'}",
            "log_type error",
            "log_type warning",
            "max_queued_messages 100000",
            "max_inflight_messages 1000",
            "set_tcp_nodelay true",
            # as root, mosquitto would switch to the `mosquitto` user, who cannot read
            # the test's private temp files; as anyone else this line does nothing
            "user root" if os.getuid() == 0 else "",
            websockets_listener(self.ws_port) if self.websockets else "",
            self.extra,
        ]
        conf.write_text("\n".join(lines) + "\n")
        return conf

    def start(self) -> Mosquitto:
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf = self.write_config()
        self.process = subprocess.Popen(
            [mosquitto_binary(), "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            wait_for_port(self.port)
            if self.websockets:
                wait_for_port(self.ws_port)
        except TimeoutError as exc:
            self.stop()
            log = self.workdir / "mosquitto.log"
            raise RuntimeError(
                f"mosquitto did not start: {log.read_text() if log.exists() else ''}"
            ) from exc
        return self

    def stop(self) -> None:
        if self.process is not None:
            end_process(self.process, 5.0)
        if self.process is not None and self.process.stderr is not None:
            self.process.stderr.close()
        self.process = None

    def restart(self, down_s: float = 0.0) -> None:
        """A clean stop (mosquitto saves its persistent state), then start again."""
        self.stop()
        time.sleep(down_s)
        self.start()

    def kill(self) -> None:
        """A crash: SIGKILL, nothing saved."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.stop()
