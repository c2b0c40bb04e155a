"""The live page: what every device is doing now, its last hour, the gateway's health.

Served by the gateway's HTTP server (``ingest.http.port``) when ``dashboard.enabled``:

- ``/``: the page (``harstream/dashboard/``: one HTML file and one script, no build
  step, no CDN: it works offline on a Raspberry Pi);
- ``/api/devices``: every device's activity now, confidence, since when, last decision,
  errors; ``/api/devices/{id}/timeline``: its last ``dashboard.history_s`` as label runs;
  ``/api/stats``: the stats topic's numbers; ``/api/events``: server-sent events from
  the gateway's own output (the browser never talks MQTT), every ``EVENT_INTERVAL_S`` at
  most: each device's latest decision since the last (one write per interval, not one
  per batch, so that an open page costs the gateway next to nothing);
- ``/metrics``: the same counters in the Prometheus text format (prometheus_client);
  ``/healthz``: 200 while the gateway is healthy (connected to the broker, its stages
  alive and completing batches while messages wait), else 503 with the reason (for
  supervisors; no token).

Reading is not ingesting: the page and the API take ``dashboard.token`` (bearer header,
or ``?token=`` for the page and its event stream), never the ingest token.

Each device's recent history is kept by :class:`~harstream.gateway.history.History`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any

from harstream.gateway.history import History

if TYPE_CHECKING:
    from aiohttp import web

__all__ = ["EVENT_INTERVAL_S", "Dashboard", "DashboardSettings", "History"]

EVENT_INTERVAL_S = 0.5


@dataclass(frozen=True)
class DashboardSettings:
    token: str | None
    history_s: float = 3600.0
    max_runs: int = 2000  # per device: the oldest go first
    max_devices: int = 10_000
    max_clients: int = 20  # event streams open at once


class Dashboard:
    """The page's routes on the gateway's aiohttp application. ``snapshot`` gives the
    stats topic's numbers; ``connected`` says whether the broker is."""

    def __init__(
        self,
        settings: DashboardSettings,
        snapshot: Callable[[], dict[str, Any]],
        connected: Callable[[], bool],
        labels: tuple[str, ...],
        *,
        health: Callable[[], tuple[bool, dict[str, Any]]] | None = None,
        calibration: Callable[[str], str | None] = lambda device: None,
    ) -> None:
        self.settings = settings
        self.calibration = calibration  # a device's calibration source, if any
        self.snapshot = snapshot
        self.connected = connected
        self.health = health  # /healthz: (healthy, body); else by `connected` alone
        self.labels = labels
        self.history = History(settings.history_s, settings.max_runs, settings.max_devices)
        self._clients: set[asyncio.Queue[bytes]] = set()
        self._pending: dict[str, tuple[str, float, float]] = {}  # device -> latest
        self._flusher: asyncio.Task[None] | None = None
        self.started = time.monotonic()

    # --- fed by the gateway ----------------------------------------------------------

    def update(self, decided: list[tuple[str, str, float, float]], errors: list[str]) -> None:
        """One batch's decisions ``(device, activity, confidence, t)`` and the devices
        of its errors (the event loop calls this with each batch's output)."""
        record = self.history.record
        for device, activity, confidence, t in decided:
            record(device, activity, confidence, t)
        for device in errors:
            self.history.error(device)
        if self._clients:
            pending = self._pending
            for device, activity, confidence, t in decided:
                pending[device] = (activity, confidence, t)

    async def _flush(self) -> None:
        """While streams are open: every interval, one event with each device's latest
        decision since the last, to every stream (one too slow to take it skips it)."""
        while self._clients:
            await asyncio.sleep(EVENT_INTERVAL_S)
            if not self._pending:
                continue
            latest, self._pending = self._pending, {}
            body = [
                {"device": d, "activity": a, "confidence": round(c, 3), "t": round(t, 3)}
                for d, (a, c, t) in latest.items()
            ]
            event = b"data: " + json.dumps(body).encode() + b"\n\n"
            for queue in self._clients:
                with contextlib.suppress(asyncio.QueueFull):
                    queue.put_nowait(event)
        self._flusher = None

    def close(self) -> None:
        """End every open event stream (the gateway stops)."""
        for queue in self._clients:
            while not queue.empty():  # room for the last word, even in a stuck stream
                queue.get_nowait()
            queue.put_nowait(b"")
        self._clients.clear()

    # --- routes ----------------------------------------------------------------------

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/", self._page)
        app.router.add_get("/app.js", self._script)
        app.router.add_get("/api/devices", self._devices)
        app.router.add_get("/api/devices/{device}/timeline", self._timeline)
        app.router.add_get("/api/stats", self._stats)
        app.router.add_get("/api/events", self._events)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)

    def _authorised(self, request: web.Request) -> bool:
        from harstream.gateway.http import token_accepted

        return token_accepted(request, self.settings.token)

    def _refuse(self) -> web.Response:
        from aiohttp import web

        body = {"error": "unauthorized", "detail": "missing or wrong dashboard token"}
        return web.json_response(body, status=401)

    async def _page(self, request: web.Request) -> web.Response:
        from aiohttp import web

        if not self._authorised(request):
            return self._refuse()
        return web.Response(text=_asset("index.html"), content_type="text/html")

    async def _script(self, request: web.Request) -> web.Response:
        from aiohttp import web

        return web.Response(text=_asset("app.js"), content_type="application/javascript")

    async def _devices(self, request: web.Request) -> web.Response:
        from aiohttp import web

        if not self._authorised(request):
            return self._refuse()
        devices = self.history.devices()
        for device in devices:  # standing | walking | none (a read of the engine's dict)
            device["calibration"] = self.calibration(device["device"]) or "none"
        return web.json_response(
            {"now": round(time.time(), 3), "labels": list(self.labels), "devices": devices}
        )

    async def _timeline(self, request: web.Request) -> web.Response:
        from aiohttp import web

        if not self._authorised(request):
            return self._refuse()
        device = request.match_info["device"]
        now = time.time()
        runs = self.history.timeline(device, now)
        if runs is None:
            body = {"error": "unknown_device", "detail": f"no decisions for {device!r}"}
            return web.json_response(body, status=404)
        return web.json_response(
            {
                "device": device,
                "now": round(now, 3),
                "history_s": self.settings.history_s,
                "runs": runs,
            }
        )

    async def _stats(self, request: web.Request) -> web.Response:
        from aiohttp import web

        if not self._authorised(request):
            return self._refuse()
        return web.json_response(self._numbers())

    def _numbers(self) -> dict[str, Any]:
        devices, runs = self.history.size()
        return {
            **self.snapshot(),
            "uptime_s": round(time.monotonic() - self.started, 1),
            "connected": self.connected(),
            "history": {"devices": devices, "runs": runs},
        }

    async def _events(self, request: web.Request) -> web.StreamResponse:
        from aiohttp import web

        if not self._authorised(request):
            return self._refuse()
        if len(self._clients) >= self.settings.max_clients:
            body = {"error": "too_many_clients", "detail": "too many event streams open"}
            return web.json_response(body, status=503)
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=100)
        self._clients.add(queue)
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush())
        try:
            await response.write(b": connected\n\n")
            while True:
                try:
                    event = await asyncio.wait_for(queue.get(), timeout=15.0)
                except TimeoutError:
                    event = b": keep-alive\n\n"
                if not event:  # the gateway stops
                    break
                await response.write(event)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self._clients.discard(queue)
        return response

    async def _metrics(self, request: web.Request) -> web.Response:
        from aiohttp import web

        if not self._authorised(request):
            return self._refuse()
        from prometheus_client import CollectorRegistry, generate_latest

        registry = CollectorRegistry()
        registry.register(_Collector(self._numbers))
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4"})

    async def _healthz(self, request: web.Request) -> web.Response:
        from aiohttp import web

        if self.health is not None:
            ok, body = self.health()
            return web.json_response(body, status=200 if ok else 503)
        up = self.connected()
        return web.json_response(
            {"status": "ok" if up else "disconnected"}, status=200 if up else 503
        )


class _Collector:
    """The stats numbers as Prometheus metrics, read when scraped."""

    def __init__(self, numbers: Callable[[], dict[str, Any]]) -> None:
        self.numbers = numbers

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        n = self.numbers()
        for name in (
            "messages",
            "samples",
            "decisions",
            "published",
            "reconnects",
            "resets",
            "evicted",
            "batches",
            "batch_errors",
            "publish_failed",
        ):
            yield CounterMetricFamily(f"harstream_{name}", f"{name} since start", value=n[name])
        rejected = CounterMetricFamily(
            "harstream_rejected", "bad messages dropped, by code", labels=["code"]
        )
        for code, count in n["rejected"].items():
            rejected.add_metric([code], count)
        yield rejected
        dropped = CounterMetricFamily("harstream_dropped", "messages dropped", labels=["why"])
        for why, count in n["dropped"].items():
            dropped.add_metric([why], count)
        yield dropped
        yield GaugeMetricFamily("harstream_devices", "devices served", value=n["devices"])
        yield GaugeMetricFamily("harstream_queue", "messages waiting", value=n["queue"])
        yield GaugeMetricFamily("harstream_uptime_seconds", "uptime", value=n["uptime_s"])
        yield GaugeMetricFamily(
            "harstream_connected", "1 if the broker is", value=int(n["connected"])
        )
        latency = n.get("latency_ms") or {}
        gauge = GaugeMetricFamily(
            "harstream_latency_ms", "receipt to decision, last interval", labels=["quantile"]
        )
        for q in ("p50", "p99"):
            if latency.get(q) is not None:
                gauge.add_metric([q], latency[q])
        yield gauge


def _asset(name: str) -> str:
    return resources.files("harstream").joinpath("dashboard", name).read_text(encoding="utf-8")
