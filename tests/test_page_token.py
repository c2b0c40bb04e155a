"""The live page shows every device's activity: beyond loopback it needs a token (the
gateway does not start without one), on loopback without one the log warns."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Callable

import aiohttp
import pytest

from harstream.core.bundle import Bundle
from harstream.errors import ConfigError
from harstream.gateway.dashboard import Dashboard, DashboardSettings
from harstream.gateway.http import HttpIngest, HttpSettings
from tests.mosquitto import Mosquitto, free_port
from tests.test_gateway_broker import config_for, gateway_running


def settings(host: str) -> HttpSettings:
    return HttpSettings(host, free_port(), "ingest-token", None, None, 1 << 20, None)


def page(token: str | None) -> Dashboard:
    return Dashboard(DashboardSettings(token=token), dict, lambda: True, ("WALKING",))


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "", "192.168.1.20", "pi.local"])
def test_the_page_beyond_loopback_needs_a_token(host: str) -> None:
    with pytest.raises(ConfigError, match=r"^dashboard\.token: not set.*ingest\.http\.host"):
        HttpIngest(settings(host), lambda batch: 0, page(None))
    HttpIngest(settings(host), lambda batch: 0, page("secret"))  # with one: fine
    HttpIngest(settings(host), lambda batch: 0, None)  # no page: the ingest alone


def test_serve_refuses_to_start_naming_the_key() -> None:
    result = subprocess.run(
        [
            *(sys.executable, "-m", "harstream", "serve"),
            *("--set", "ingest.http.host=0.0.0.0", "--set", f"ingest.http.port={free_port()}"),
            *("--set", "broker.port=1"),  # it never gets as far as the broker
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "config error: dashboard.token: not set" in result.stderr


@pytest.mark.broker
@pytest.mark.asyncio
async def test_on_loopback_without_a_token_the_page_serves_and_the_log_warns(
    broker: Mosquitto,
    prefix: str,
    bundle_factory: Callable[..., Bundle],
    caplog: pytest.LogCaptureFixture,
) -> None:
    bundle = bundle_factory("gru", "stateful")
    port = free_port()
    config = config_for(broker, prefix, bundle, f"ingest.http.port={port}")
    with caplog.at_level(logging.WARNING, logger="harstream.http"):
        async with (
            gateway_running(config, bundle),
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{port}/api/devices") as reply,
        ):
            assert reply.status == 200
    warned = [r.getMessage() for r in caplog.records if "live page has no token" in r.getMessage()]
    assert warned == [
        "the live page has no token: every local user of this machine can read it on "
        f"127.0.0.1:{port} (set dashboard.token)"
    ]
