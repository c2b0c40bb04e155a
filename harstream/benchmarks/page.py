"""What the live page costs: the gateway end to end without its HTTP server and with a
page open on it, alternating; and the memory its history takes per device-hour.

A "page" is what the browser does (harstream/dashboard/app.js): one event stream
(``/api/events``), ``/api/stats`` every 5 s and ``/api/devices`` every minute (here
every 30 s, so that a 20 s point fetches it).
"""

from __future__ import annotations

import contextlib
import random
import socket
import threading
import tracemalloc
import urllib.request
from collections.abc import Callable
from typing import Any

from harstream.benchmarks.e2e import alternating
from harstream.core.bundle import Bundle
from harstream.gateway.history import History

__all__ = ["history_bytes_per_device_hour", "page_cost"]

TOKEN = "bench"


def history_bytes_per_device_hour(
    devices: int = 200, hop_s: float = 0.32, switches_per_hour: float = 370.0
) -> dict[str, float]:
    """Bytes the page's history holds per device for an hour of decisions every
    ``hop_s`` (0.32 s: hop 16) switching label ``switches_per_hour`` times (the
    low-latency profile on the test subjects), measured with tracemalloc."""
    labels = ("WALKING", "WALKING_UPSTAIRS", "SITTING", "STANDING", "LAYING")
    rng = random.Random(0)
    decisions = int(3600 / hop_s)
    tracemalloc.start()
    try:
        history = History(history_s=3600.0, max_runs=2000, max_devices=devices)
        for d in range(devices):
            activity, name = rng.choice(labels), f"device{d:05d}"
            for k in range(decisions):
                if rng.random() < switches_per_hour / decisions:
                    activity = rng.choice(labels)
                history.record(name, activity, 0.9, 1000.0 + k * hop_s)
        size, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return {
        "bytes_per_device_hour": round(size / devices),
        "runs_per_device_hour": round(history.size()[1] / devices, 1),
    }


def _browse(port: int, stop: threading.Event) -> None:
    """The page's traffic until ``stop``."""
    base = f"http://127.0.0.1:{port}"
    while not stop.is_set():  # the gateway's server comes up with the gateway
        try:
            stream = urllib.request.urlopen(f"{base}/api/events?token={TOKEN}", timeout=5)
            break
        except OSError:
            stop.wait(0.2)
    else:
        return

    def read() -> None:
        try:
            while not stop.is_set() and stream.readline():
                pass
        except OSError:
            pass

    threading.Thread(target=read, daemon=True).start()
    k = 0
    while not stop.wait(5.0 if k else 0.0):
        paths = ["/api/stats", *(["/api/devices"] if k % 6 == 0 else [])]
        for path in paths:
            with contextlib.suppress(OSError):
                urllib.request.urlopen(f"{base}{path}?token={TOKEN}", timeout=5).read()
        k += 1
    stream.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def page_cost(
    bundle: Bundle, *, devices: int, seconds: float, message_samples: int, rounds: int
) -> dict[str, Any]:
    """``rounds`` e2e points without the page and with it, in turn; the medians."""

    def without() -> tuple[tuple[str, ...], Callable[[], dict[str, Any]]]:
        return (), dict

    def with_page() -> tuple[tuple[str, ...], Callable[[], dict[str, Any]]]:
        port, stop = _free_port(), threading.Event()
        threading.Thread(target=_browse, args=(port, stop), daemon=True).start()

        def after() -> dict[str, Any]:
            stop.set()
            return {}

        return (f"ingest.http.port={port}", f"dashboard.token={TOKEN}"), after

    return alternating(
        bundle,
        {"without": without, "with page": with_page},
        devices=devices,
        seconds=seconds,
        message_samples=message_samples,
        rounds=rounds,
    )
