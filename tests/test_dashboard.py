"""The live page: its history store, its API against a running gateway and broker, and
the page itself in a real headless browser (Debian's chromium and chromedriver, driven by
selenium; nothing is downloaded)."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from harstream.cli.device import _publish
from harstream.core.bundle import Bundle, load_bundle
from harstream.gateway.history import History
from replay import iter_hapt
from tests.mosquitto import Mosquitto, free_port
from tests.test_gateway_broker import config_for, gateway_running

MINI = Path(__file__).resolve().parent / "data" / "hapt-mini"
TOKEN = "look-only"


def test_history_keeps_label_runs_bounded_in_age_and_count() -> None:
    history = History(history_s=60.0, max_runs=3, max_devices=2)
    for k, activity in enumerate(["SITTING"] * 5 + ["STANDING"] * 2 + ["WALKING"]):
        history.record("a", activity, 0.5 + 0.1 * (k % 2), t=100.0 + k)
    runs = history.timeline("a", now=107.0)
    assert [r["activity"] for r in runs] == ["SITTING", "STANDING", "WALKING"]
    assert runs[0]["decisions"] == 5 and runs[0]["start"] == 100.0 and runs[0]["end"] == 104.0
    history.record("a", "LAYING", 0.9, t=108.0)  # a fourth run: the oldest goes
    assert [r["activity"] for r in history.timeline("a", 108.0)] == [
        "STANDING",
        "WALKING",
        "LAYING",
    ]
    history.record("a", "LAYING", 0.9, t=200.0)  # silent for 92 s: a gap, and aged out
    assert [(r["start"], r["end"]) for r in history.timeline("a", 200.0)] == [(200.0, 200.0)]
    history.record("b", "SITTING", 0.9, 1.0)
    history.record("c", "SITTING", 0.9, 2.0)  # beyond max_devices: the stalest (b) goes
    assert {d["device"] for d in history.devices()} == {"a", "c"}
    assert history.timeline("b", 2.0) is None


@pytest.fixture
def gateway_config(broker: Mosquitto, prefix: str) -> Callable[[Bundle], tuple[object, str]]:
    def make(bundle: Bundle) -> tuple[object, str]:
        port = free_port()
        config = config_for(
            broker,
            prefix,
            bundle,
            f"ingest.http.port={port}",
            "ingest.http.token=phones",
            f"dashboard.token={TOKEN}",
            "service.stats_interval_s=0.5",
            "calibration.uncalibrated=reference",
        )
        return config, f"http://127.0.0.1:{port}"

    return make


@pytest.mark.broker
@pytest.mark.asyncio
async def test_the_api_serves_devices_timelines_stats_events_and_metrics(
    gateway_config: Callable[[Bundle], tuple[object, str]],
) -> None:
    bundle = load_bundle()
    config, url = gateway_config(bundle)
    recordings = list(iter_hapt(MINI, subjects=[9]))
    async with gateway_running(config, bundle) as gateway, aiohttp.ClientSession() as http:
        await _publish(config, recordings, None, 50, "s9", quiet=True)
        await until(lambda: gateway.pipeline.infer_stats.decisions >= 10)
        await until(lambda: "s9" in gateway.engine.sources)  # it walked: a vertical learnt
        await asyncio.sleep(0.6)  # a stats interval, for the rates
        for headers in ({}, {"Authorization": "Bearer phones"}):  # the ingest token is not it
            async with http.get(f"{url}/api/devices", headers=headers) as reply:
                assert reply.status == 401
        auth = {"Authorization": f"Bearer {TOKEN}"}
        async with http.get(f"{url}/api/devices", headers=auth) as reply:
            body = await reply.json()
        (device,) = body["devices"]
        assert device["device"] == "s9" and device["activity"] in bundle.labels
        assert device["calibration"] == "walking"
        async with http.get(f"{url}/api/devices/s9/timeline?token={TOKEN}") as reply:
            runs = (await reply.json())["runs"]
        assert len(runs) >= 2 and sum(r["decisions"] for r in runs) >= 10
        async with http.get(f"{url}/api/devices/nobody/timeline", headers=auth) as reply:
            assert reply.status == 404
        async with http.get(f"{url}/api/stats", headers=auth) as reply:
            stats = await reply.json()
        assert stats["decisions"] >= 10 and stats["connected"] is True
        assert "decisions_per_s" in stats and stats["history"]["devices"] == 1
        async with http.get(f"{url}/metrics", headers=auth) as reply:
            families = {f.name: f for f in text_string_to_metric_families(await reply.text())}
        assert families["harstream_decisions"].samples[0].value == stats["decisions"]
        assert families["harstream_connected"].samples[0].value == 1
        async with http.get(f"{url}/healthz") as reply:
            assert reply.status == 200
        # the event stream carries the gateway's own decisions as they are made
        async with http.get(f"{url}/api/events", headers=auth) as events:
            assert events.headers["Content-Type"] == "text/event-stream"
            more = asyncio.create_task(_publish(config, recordings[:1], None, 50, "s9b", True))
            got = await asyncio.wait_for(_first_event(events), 20)
            await more
        assert '"device": "s9b"' in got or '"device": "s9"' in got


async def _first_event(response: aiohttp.ClientResponse) -> str:
    async for line in response.content:
        if line.startswith(b"data: "):
            return line.decode()
    raise AssertionError("the stream ended")


async def until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.05)


def browser():  # type: ignore[no-untyped-def]
    """Headless chromium through Debian's chromedriver (selenium downloads nothing when
    given the driver's path)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    options.add_argument("--window-size=1400,800")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver_path = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    return webdriver.Chrome(service=Service(executable_path=driver_path), options=options)


@pytest.mark.broker
@pytest.mark.asyncio
async def test_the_page_in_a_real_browser(
    gateway_config: Callable[[Bundle], tuple[object, str]], tmp_path: Path
) -> None:
    if shutil.which("chromium") is None or shutil.which("chromedriver") is None:
        pytest.fail("needs Debian's chromium and chromium-driver (make tools installs them)")
    from selenium.webdriver.common.by import By

    bundle = load_bundle()
    config, url = gateway_config(bundle)
    recordings = list(iter_hapt(MINI, subjects=[9]))
    async with gateway_running(config, bundle) as gateway:
        await _publish(config, recordings, None, 50, "s9", quiet=True)
        await until(lambda: gateway.pipeline.infer_stats.decisions >= 5)
        driver = await asyncio.to_thread(browser)
        try:
            await asyncio.to_thread(driver.get, f"{url}/?token={TOKEN}")

            def row_text(device: str) -> str:
                """The row's text (the table is redrawn on every event: read it in one go)."""
                text: str = driver.execute_script(
                    'const r = document.querySelector("#devices tr[data-device=\'" +'
                    'arguments[0] + "\']");'
                    "return r ? r.innerText.replace(/\\s+/g, ' ') : '';",
                    device,
                )
                return text

            await until_thread(lambda: row_text("s9").startswith("s9"))
            # a new device streams at 8x real time: the page shows it and follows it
            streaming = asyncio.create_task(_publish(config, recordings, 8.0, 25, "live", True))
            seen = set()
            while not streaming.done():
                text = await asyncio.to_thread(row_text, "live")
                seen.update(label for label in bundle.labels if f" {label} " in f" {text} ")
                await asyncio.sleep(0.2)
            assert len(seen) >= 2, seen  # the row changed activity while the page was open
            await asyncio.to_thread(
                lambda: driver.find_element(
                    By.CSS_SELECTOR, "#devices tr[data-device='live']"
                ).click()
            )
            await until_thread(
                lambda: len(driver.find_elements(By.CSS_SELECTOR, "#bands div[title*=' ']")) >= 2
            )
            assert driver.find_element(By.ID, "d-title").text.startswith("live: the last ")
            await until_thread(lambda: driver.find_element(By.ID, "s-broker").text != "-")
            assert driver.find_element(By.ID, "s-broker").text == "broker connected"
            driver.save_screenshot(str(tmp_path / "page.png"))
            if os.environ.get("HARSTREAM_SCREENSHOTS"):  # docs/figures/dashboard.png
                driver.save_screenshot(os.environ["HARSTREAM_SCREENSHOTS"])
            errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
            assert errors == []
            assert driver.find_element(By.ID, "error").text == ""
        finally:
            await asyncio.to_thread(driver.quit)
    assert (tmp_path / "page.png").stat().st_size > 10_000


async def until_thread(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    """``until`` for a condition that calls the browser (blocking: run in a thread)."""
    async with asyncio.timeout(timeout):
        while not await asyncio.to_thread(condition):
            await asyncio.sleep(0.1)
