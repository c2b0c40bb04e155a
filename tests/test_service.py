"""The gateway on the in-memory transport: the service logic without sockets."""

from __future__ import annotations

import asyncio
import itertools
import json
import random
from collections import Counter
from collections.abc import Callable

import pytest

from harstream.config import load_config
from harstream.core.bundle import Bundle
from harstream.core.engine import Engine
from harstream.gateway.connection import Backoff
from harstream.gateway.memory import MemoryBroker, MemoryTransport
from harstream.gateway.service import Gateway, GatewaySettings
from harstream.runtime import gateway_settings
from tests.gateway_helpers import BAD_INPUTS, WALK, engine_for, imu

P = "hs"


# the config's defaults, with quick reconnects, no error rate limit and no stats
TEST_CONFIG = [
    f"topics.prefix={P}",
    "service.stats_interval_s=3600",
    "broker.reconnect_min_s=0.01",
    "broker.reconnect_max_s=0.05",
    "service.error_interval_s=0",
]


def settings(bundle: Bundle, *overrides: str) -> GatewaySettings:
    return gateway_settings(load_config(overrides=[*TEST_CONFIG, *overrides]), bundle)


class Harness:
    """A gateway on a memory broker, plus a device-side session to publish with."""

    def __init__(
        self,
        bundle: Bundle,
        *overrides: str,
        load_engine: Callable[[], tuple[Engine, str]] | None = None,
    ) -> None:
        self.broker = MemoryBroker()
        self.engine = engine_for(bundle, *overrides)  # the same config as the gateway
        self.gateway = Gateway(
            self.engine,
            MemoryTransport(self.broker),
            settings(bundle, *overrides),
            load_engine=load_engine,
            rng=random.Random(0),
        )
        self.stop = asyncio.Event()

    async def __aenter__(self) -> Harness:
        self.task = asyncio.create_task(self.gateway.run(self.stop))
        await asyncio.wait_for(self.gateway.connected.wait(), 5)
        self.device = self.broker.open(None)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, 10)

    async def send(self, device: str, payload: bytes) -> None:
        await self.device.publish(f"{P}/{device}/imu", payload)

    def published(self, suffix: str) -> list[tuple[str, dict]]:
        return [
            (t, json.loads(p))
            for t, p, _ in self.broker.log
            if t.endswith(suffix) and p[:1] == b"{"
        ]

    async def settle(self, condition: Callable[[], bool], timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while not condition():
                await asyncio.sleep(0.005)


@pytest.mark.asyncio
async def test_decisions_transitions_and_status(bundle_factory: Callable[..., Bundle]) -> None:
    async with Harness(bundle_factory("gru", "stateful")) as h:
        for start in range(0, 1000, 50):
            await h.send("phone1", imu(WALK[start : start + 50], seq=start, t=100 + start / 50))
        await h.settle(lambda: len(h.published("/activity")) == 1000 // 64)
    activity = h.published("hs/phone1/activity")
    first = activity[0][1]
    assert set(first) == {
        "device",
        "activity",
        "confidence",
        "probabilities",
        "raw_activity",
        "seq",
        "t",
        "received",
        "model",
    }
    assert first["seq"] == 63 and first["t"] == pytest.approx(100 + 63 / 50)
    assert first["model"] == "random-gru-stateful" and len(first["probabilities"]) == 6
    assert (
        h.broker.retained["hs/phone1/activity"]
        == [p for t, p, _ in h.broker.log if t == "hs/phone1/activity"][-1]
    )
    labels = [a["activity"] for _, a in activity]
    changes = [(a, b) for a, b in itertools.pairwise(labels) if a != b]
    transitions = h.published("/transition")
    assert [(t["from"], t["to"]) for _, t in transitions] == changes
    statuses = [p for t, p, _ in h.broker.log if t == "hs/status"]
    assert statuses == [b"online", b"offline"]  # and offline was published after the last decision
    assert h.broker.retained["hs/status"] == b"offline"


@pytest.mark.asyncio
async def test_bad_input_is_counted_reported_and_harmless(
    bundle_factory: Callable[..., Bundle],
) -> None:
    async with Harness(bundle_factory("gru", "stateful")) as h:
        for device, payload, _ in BAD_INPUTS:
            await h.send(device, payload)
            await h.send("good", imu(WALK[:64]) if device == "bad.id" else imu(WALK[:1]))
        await h.send("seqdev", imu(WALK[:128], seq=0))
        await h.send("seqdev", imu(WALK[:64], seq=0))  # old seq: dropped
        await h.settle(lambda: len(h.published("/error")) >= len(BAD_INPUTS) + 1)
    codes = [e["error"] for _, e in h.published("/error")]
    assert codes == [code for _, _, code in BAD_INPUTS] + ["seq_old"]
    expected = Counter(code for _, _, code in BAD_INPUTS) + Counter(seq_old=1)
    assert h.gateway.snapshot()["rejected"] == expected
    assert h.published("hs/good/activity")  # the good device was served throughout
    topics = {t for t, _ in h.published("/error")}
    assert "hs/bad.id/error" in topics and "hs/dev-bad/error" in topics


@pytest.mark.asyncio
async def test_error_reports_are_rate_limited(bundle_factory: Callable[..., Bundle]) -> None:
    async with Harness(bundle_factory("gru", "stateful"), "service.error_interval_s=60") as h:
        for _ in range(5):
            await h.send("noisy", b"nope")
        await h.settle(lambda: h.gateway.snapshot()["rejected"].get("bad_json") == 5)
    assert len(h.published("hs/noisy/error")) == 1
    assert h.gateway.snapshot()["errors_suppressed"] == 4


@pytest.mark.asyncio
async def test_reconnects_and_device_state_survives(bundle_factory: Callable[..., Bundle]) -> None:
    bundle = bundle_factory("gru", "stateful")
    async with Harness(bundle) as h:
        await h.send("d", imu(WALK[:100], seq=0))
        await h.settle(lambda: len(h.published("hs/d/activity")) == 1)
        (gateway_session,) = [s for s in h.broker.sessions if s is not h.device]
        h.broker.down = True
        h.broker.drop(gateway_session)  # the connection breaks; the will fires
        assert h.broker.retained["hs/status"] == b"offline"
        await asyncio.sleep(0.1)  # a few refused attempts
        h.broker.down = False
        await h.settle(lambda: h.broker.retained["hs/status"] == b"online")
        await h.settle(lambda: any(s is not h.device and s.filters for s in h.broker.sessions))
        await h.send("d", imu(WALK[100:200], seq=100))
        await h.settle(lambda: len(h.published("hs/d/activity")) == 3)
    assert h.gateway.counters["reconnects"] >= 2
    assert h.engine.counters["resets"] == 0  # the stream went on where it was
    alone = engine_for(bundle).feed("d", WALK[:200], seq=0)
    got = [a["probabilities"] for _, a in h.published("hs/d/activity")]
    assert [round(v, 4) for v in got[2].values()] == [
        round(v, 4) for v in alone[2].probabilities.values()
    ]


@pytest.mark.asyncio
async def test_broker_down_at_start_is_retried_with_backoff(
    bundle_factory: Callable[..., Bundle],
) -> None:
    h = Harness(bundle_factory("gru", "stateful"))
    h.broker.down = True
    task = asyncio.create_task(h.gateway.run(h.stop))
    await h.settle(lambda: h.gateway.counters["reconnects"] >= 3)
    assert not h.gateway.connected.is_set()
    h.broker.down = False
    await asyncio.wait_for(h.gateway.connected.wait(), 5)
    h.stop.set()
    await asyncio.wait_for(task, 5)


def test_backoff_is_capped_and_jittered() -> None:
    backoff = Backoff(0.5, 8.0, random.Random(1))
    delays = [backoff.next() for _ in range(12)]
    assert all(0.5 <= d <= 8.0 for d in delays)
    assert max(delays[6:]) > 4.0 and len(set(delays)) == len(delays)
    backoff.reset()
    assert backoff.next() <= 0.5 * 1


@pytest.mark.asyncio
async def test_stats_are_published(bundle_factory: Callable[..., Bundle]) -> None:
    async with Harness(bundle_factory("gru", "stateful"), "service.stats_interval_s=0.05") as h:
        await h.send("d", imu(WALK[:128], seq=0))
        await h.send("d", b"junk")
        await h.settle(lambda: any(s["decisions"] == 2 for _, s in h.published("hs/stats")))
    stats = [s for _, s in h.published("hs/stats") if s["decisions"] == 2][-1]
    assert stats["devices"] == 1 and stats["samples"] == 128 and stats["messages"] == 2
    assert stats["rejected"] == {"bad_json": 1}
    assert set(stats) >= {
        "messages_per_s",
        "samples_per_s",
        "decisions_per_s",
        "latency_ms",
        "dropped",
        "resets",
        "uptime_s",
    }


@pytest.mark.asyncio
async def test_overload_drops_and_counts(bundle_factory: Callable[..., Bundle]) -> None:
    async with Harness(
        bundle_factory("gru", "stateful"), "service.queue_size=2", "batching.max_batch=1"
    ) as h:
        for k in range(50):
            await h.send(f"d{k}", imu(WALK[:64]))
        await h.settle(lambda: h.gateway.counters["messages"] == 50)
        await h.settle(lambda: h.gateway.snapshot()["queue"] == 0)
    dropped = h.gateway.counters["dropped_overload"]
    assert dropped > 0 and len(h.published("/activity")) == 50 - dropped


@pytest.mark.asyncio
async def test_home_assistant_discovery(bundle_factory: Callable[..., Bundle]) -> None:
    async with Harness(bundle_factory("gru", "stateful"), "homeassistant.enabled=true") as h:
        await h.send("kitchen", imu(WALK[:64]))
        await h.settle(
            lambda: "homeassistant/sensor/harstream_kitchen/activity/config" in h.broker.retained
        )
        before = len(h.broker.log)
        await h.device.publish("homeassistant/status", b"online")
        await h.settle(
            lambda: any(t.endswith("kitchen/activity/config") for t, _, _ in h.broker.log[before:])
        )
    config = json.loads(h.broker.retained["homeassistant/sensor/harstream_kitchen/activity/config"])
    assert config["state_topic"] == "hs/kitchen/activity"
    assert config["value_template"] == "{{ value_json.activity }}"
    assert config["availability"][0] == {"topic": "hs/status"} and config["unique_id"]
    assert config["device"]["identifiers"] == ["harstream_kitchen"]


@pytest.mark.asyncio
async def test_a_silent_device_turns_unknown_and_offline(
    bundle_factory: Callable[..., Bundle],
) -> None:
    bundle = bundle_factory("gru", "stateful")
    async with Harness(bundle, "stream.idle_timeout_s=0.4", "homeassistant.enabled=true") as h:
        await h.send("phone", imu(WALK[:128], seq=0))
        await h.settle(lambda: len(h.published("hs/phone/activity")) == 2)
        assert h.broker.retained["hs/phone/availability"] == b"online"
        await h.settle(lambda: h.broker.retained.get("hs/phone/availability") == b"offline")
    last = json.loads(h.broker.retained["hs/phone/activity"])
    assert last["activity"] == "UNKNOWN" and last["seq"] is None and "silent" in last["reason"]
    discovery = json.loads(
        h.broker.retained["homeassistant/sensor/harstream_phone/activity/config"]
    )
    assert discovery["expire_after"] == 0 or discovery["expire_after"] >= 0
    assert {"topic": "hs/phone/availability"} in discovery["availability"]


@pytest.mark.asyncio
async def test_per_device_names_units_and_axes(bundle_factory: Callable[..., Bundle]) -> None:
    """A board mounted sideways (its x is our y, its y our -x) sending m/s2: with its
    settings in the config it decides exactly as the same stream sent our way."""
    bundle = bundle_factory("gru", "stateful")
    turned = WALK[:256].copy()
    turned[:, [0, 1, 3, 4]] = WALK[:256][:, [1, 0, 4, 3]] * [1, -1, 1, -1]
    turned[:, :3] *= 9.80665
    settings = [
        "devices.board.name=Hall board",
        "devices.board.units.acc=m/s2",
        "devices.board.axes=-y,x,z",  # our x = -(its y), our y = its x
        "homeassistant.enabled=true",
    ]
    async with Harness(bundle, *settings) as h:
        await h.send("board", imu(turned, seq=0))
        await h.send("plain", imu(WALK[:256], seq=0))
        await h.settle(lambda: len(h.published("/activity")) == 8)
    board = [a["probabilities"] for _, a in h.published("hs/board/activity")]
    plain = [a["probabilities"] for _, a in h.published("hs/plain/activity")]
    for b, p in zip(board, plain, strict=True):
        assert b == pytest.approx(p, abs=2e-4)
    discovery = json.loads(
        h.broker.retained["homeassistant/sensor/harstream_board/activity/config"]
    )
    assert discovery["device"]["name"] == "Hall board"
