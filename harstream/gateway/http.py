"""The gateway's HTTP server (aiohttp, imported only when it runs): Sensor Logger's HTTP
push, beside MQTT.

``POST /ingest/sensor-logger`` takes the app's message (the same schema as over MQTT),
checks it, and hands it to the pipeline as a route, the one its MQTT topic would give
(``?device=NAME`` plays the topic's last level; :mod:`harstream.gateway.routes`).
Replies: 200 with the readings accepted; 400 (a JSON error naming the problem) for a bad
message; 401 without the right token; 413 for a body over ``max_body_bytes``; 503 when
the gateway's queue is full. Access: with ``token`` set, a request must carry it as
``Authorization: Bearer TOKEN`` or as ``?token=TOKEN`` (for apps that can only be given
a URL); without it the port is open to whoever reaches it, which the start-up log says.
Tokens never reach the logs. TLS from a certificate and key, or behind a reverse proxy.
The live page shows every device's activity: bound beyond loopback it needs
``dashboard.token`` (the gateway does not start without it); on loopback without one,
the log warns.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import ssl
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harstream.core.payload import (
    decode_calibrate,
    decode_sensor_logger,
    valid_device_id,
)
from harstream.errors import ConfigError, PayloadError
from harstream.gateway.routes import Route, Topics

if TYPE_CHECKING:
    from aiohttp import web

    from harstream.gateway.dashboard import Dashboard

__all__ = ["HttpIngest", "HttpSettings", "token_accepted"]

log = logging.getLogger("harstream.http")


@dataclass(frozen=True)
class HttpSettings:
    host: str
    port: int
    token: str | None
    cert_file: Path | None
    key_file: Path | None
    max_body_bytes: int
    sensor_logger_topic: str | None
    prefix: str = "harstream"  # calibration requests go on as {prefix}/{device}/calibrate


class HttpIngest:
    """The HTTP server; ``accept`` puts messages into the pipeline and returns how many
    it had to drop (a full queue)."""

    def __init__(
        self,
        settings: HttpSettings,
        accept: Callable[[list[Route]], int],
        dashboard: Dashboard | None = None,
    ) -> None:
        self.settings = settings
        self.accept = accept
        self.topics = Topics(settings.prefix, settings.sensor_logger_topic)  # to build routes
        self.dashboard = dashboard
        if (
            dashboard is not None
            and dashboard.settings.token is None
            and not loopback(settings.host)
        ):
            raise ConfigError(
                f"dashboard.token: not set, but the live page would be served on "
                f"ingest.http.host {settings.host!r}, beyond loopback, to anyone who reaches "
                "it: set dashboard.token, or dashboard.enabled: false, or bind 127.0.0.1"
            )
        self.counters: Counter[str] = Counter()  # the event loop's
        self._runner: web.AppRunner | None = None

    def app(self) -> web.Application:
        from aiohttp import web  # only a gateway with an HTTP port pays for importing it

        app = web.Application(client_max_size=self.settings.max_body_bytes)
        app.router.add_post("/ingest/sensor-logger", self._sensor_logger)
        app.router.add_post("/calibrate/{device}", self._calibrate)
        if self.dashboard is not None:
            self.dashboard.add_routes(app)
        return app

    async def start(self) -> None:
        from aiohttp import web

        s = self.settings
        context = None
        if s.cert_file is not None and s.key_file is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(s.cert_file, s.key_file)
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, s.host, s.port, ssl_context=context)
        await site.start()
        scheme = "https" if context else "http"
        log.info("HTTP ingest on %s://%s:%d/ingest/sensor-logger", scheme, s.host, s.port)
        if self.dashboard is not None and self.dashboard.settings.token is None:
            log.warning(
                "the live page has no token: every local user of this machine can read "
                "it on %s:%d (set dashboard.token)",
                s.host,
                s.port,
            )
        if s.token is None:
            log.warning(
                "HTTP ingest has no token: anyone who reaches %s:%d can send samples "
                "(set ingest.http.token)",
                s.host,
                s.port,
            )

    async def stop(self) -> None:
        if self.dashboard is not None:
            self.dashboard.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def _authorised(self, request: web.Request) -> bool:
        return token_accepted(request, self.settings.token)

    async def _sensor_logger(self, request: web.Request) -> web.Response:
        from aiohttp import web

        if not self._authorised(request):
            self.counters["http_unauthorized"] += 1
            return _error(401, "unauthorized", "missing or wrong token")
        topic = self.settings.sensor_logger_topic
        if topic is None:
            return _error(404, "disabled", "Sensor Logger ingest is off (ingest.sensor_logger)")
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            self.counters["http_rejected"] += 1
            limit = self.settings.max_body_bytes
            return _error(413, "too_large", f"a body of at most {limit} bytes")
        try:
            batch = decode_sensor_logger(body, max_bytes=self.settings.max_body_bytes)
        except PayloadError as exc:
            self.counters["http_rejected"] += 1
            return _error(400, exc.code, exc.detail)
        # as from the phone's own topic ({sensor_logger}/{name}): a worker forwards it
        # through the broker, which routes it by name to the device's owner
        name = request.query.get("device") or batch.device_id
        if self.accept([self.topics.sensor_logger(name, body)]):
            self.counters["http_dropped"] += 1
            return _error(503, "overloaded", "the gateway's queue is full; try again")
        self.counters["http_accepted"] += 1
        readings = sum(len(r.t) for r in batch.readings)
        return web.json_response({"accepted": True, "readings": readings})

    async def _calibrate(self, request: web.Request) -> web.Response:
        """``POST /calibrate/{device}``: the body of a calibrate message (empty,
        ``{"seconds": S}`` or ``{"clear": true}``); the result comes on MQTT."""
        from aiohttp import web

        if not self._authorised(request):
            self.counters["http_unauthorized"] += 1
            return _error(401, "unauthorized", "missing or wrong token")
        device = request.match_info["device"]
        body = await request.read()
        try:
            if not valid_device_id(device):
                raise PayloadError("bad_device", f"{device!r} is not a device id")
            decode_calibrate(body, 1.0)  # checked here, so the caller hears what is wrong
        except PayloadError as exc:
            self.counters["http_rejected"] += 1
            return _error(400, exc.code, exc.detail)
        if self.accept([self.topics.calibrate(device, body)]):
            self.counters["http_dropped"] += 1
            return _error(503, "overloaded", "the gateway's queue is full; try again")
        self.counters["http_accepted"] += 1
        status_topic = f"{self.settings.prefix}/{device}/calibration"
        return web.json_response({"accepted": True, "status_topic": status_topic})


def loopback(host: str) -> bool:
    """``host`` binds loopback only (``localhost``, 127.0.0.0/8, ``::1``); an empty host,
    0.0.0.0 or a name binds more.

    >>> [loopback(h) for h in ("127.0.0.1", "localhost", "::1", "0.0.0.0", "", "pi.lan")]
    [True, True, True, False, False, False]
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def token_accepted(request: web.Request, expected: str | None) -> bool:
    """The request carries ``expected`` as ``Authorization: Bearer`` or ``?token=``
    (compared in constant time); any request does when no token is set."""
    if expected is None:
        return True
    header = request.headers.get("Authorization", "")
    given = header[7:] if header.startswith("Bearer ") else request.query.get("token", "")
    return hmac.compare_digest(given.encode(), expected.encode())


def _error(status: int, code: str, detail: str) -> web.Response:
    from aiohttp import web

    body: dict[str, Any] = {"error": code, "detail": detail}
    return web.json_response(body, status=status)
