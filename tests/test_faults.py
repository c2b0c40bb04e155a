"""Fault isolation (issue 26): an exception injected in each stage stays with the
message, device or command that raised it, and a stage that dies anyway stops the
gateway truthfully (offline, unhealthy, an error for its supervisor)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from harstream.core.bundle import Bundle
from harstream.errors import StageError
from tests.gateway_helpers import WALK, imu, routed
from tests.test_service import Harness, P

pytestmark = pytest.mark.asyncio


class Boom(RuntimeError):
    """The injected bug."""


def failing_for(device: str, real: Callable[..., Any], pick: Callable[..., str | None]):
    """``real``, except that it raises Boom when ``pick(*args)`` names ``device``."""

    def call(*args: Any, **kwargs: Any) -> Any:
        if pick(*args, **kwargs) == device:
            raise Boom(f"injected for {device}")
        return real(*args, **kwargs)

    return call


async def good_and_bad(h: Harness, bad: Callable[[int], object], rounds: int = 3) -> None:
    """The good device streams; between its messages, ``bad(k)`` does harm."""
    for k in range(rounds):
        await h.send("good", imu(WALK[64 * k : 64 * (k + 1)], seq=64 * k))
        await bad(k)  # type: ignore[misc]
    await h.settle(lambda: len(h.published(f"{P}/good/activity")) == rounds)


def errors_of(h: Harness, device: str) -> list[str]:
    return [e["error"] for _, e in h.published(f"{P}/{device}/error")]


async def test_a_message_that_breaks_decoding_is_its_own(
    bundle_factory: Callable[..., Bundle], caplog: pytest.LogCaptureFixture
) -> None:
    async with Harness(bundle_factory("gru", "stateful")) as h:
        ingest = h.gateway.pipeline.ingest
        ingest.decode = failing_for(  # type: ignore[method-assign]
            "boom", ingest.decode, lambda incoming, wall: incoming.topic.split("/")[1]
        )

        async def bad(k: int) -> None:
            await h.send("boom", imu(WALK[:64], seq=64 * k))

        await good_and_bad(h, bad)
        await h.settle(lambda: len(errors_of(h, "boom")) == 3)
        snapshot = h.gateway.snapshot()
    assert errors_of(h, "boom") == ["internal_error"] * 3
    assert snapshot["rejected"]["internal_error"] == 3 and snapshot["faults"] == {"decode": 3}
    logged = [r for r in caplog.records if r.exc_info and "decode failed" in r.getMessage()]
    assert len(logged) == 1  # with its traceback, once per kind
    assert h.gateway.pipeline.progress()["ok"]


async def test_a_device_that_breaks_the_engine_is_its_own(
    bundle_factory: Callable[..., Bundle],
) -> None:
    async with Harness(bundle_factory("gru", "stateful")) as h:
        engine = h.gateway.pipeline.engine
        real = engine.prepare

        def prepare(messages: list[Any]) -> Any:
            if any(m.device == "boom" for m in messages):
                raise Boom("injected in the engine")
            return real(messages)

        engine.prepare = prepare  # type: ignore[method-assign]

        async def bad(k: int) -> None:
            await h.send("boom", imu(WALK[:64], seq=64 * k))
            await h.send("other", imu(WALK[64 * k : 64 * (k + 1)], seq=64 * k))

        await good_and_bad(h, bad)
        await h.settle(lambda: len(h.published(f"{P}/other/activity")) == 3)
    assert set(errors_of(h, "boom")) == {"internal_error"}
    assert errors_of(h, "good") == [] and errors_of(h, "other") == []
    assert h.gateway.snapshot()["faults"]["prepare"] >= 1


async def test_a_batch_that_breaks_inference_costs_that_batch_only(
    bundle_factory: Callable[..., Bundle],
) -> None:
    async with Harness(bundle_factory("gru", "stateful")) as h:
        pipeline = h.gateway.pipeline
        real, failures = pipeline.inferring.engine.complete, [1]

        def complete(prepared: Any) -> Any:
            if failures:
                failures.pop()
                raise Boom("injected in inference")
            return real(prepared)

        pipeline.inferring.engine.complete = complete  # type: ignore[method-assign]
        for k in range(4):
            await h.send("good", imu(WALK[64 * k : 64 * (k + 1)], seq=64 * k))
            await h.settle(lambda k=k: h.gateway.snapshot()["batches"] == k + 1)
        await h.settle(lambda: len(h.published(f"{P}/good/activity")) == 3)
        snapshot = h.gateway.snapshot()
    assert snapshot["batch_errors"] == 1 and snapshot["faults"] == {"infer": 1}
    assert [a["seq"] for _, a in h.published(f"{P}/good/activity")] == [127, 191, 255]


async def test_recording_calibration_label_and_control_faults_are_their_own(
    bundle_factory: Callable[..., Bundle], tmp_path: Path
) -> None:
    bundle = bundle_factory("gru", "stateful", aligned=True)
    async with Harness(bundle, f"recording.dir={tmp_path}", "recording.rotate_s=3600") as h:
        gw = h.gateway
        recorder, engine = gw.recorder, gw.pipeline.engine
        assert recorder is not None
        recorder.samples = failing_for("boom", recorder.samples, lambda d, *a: d)  # type: ignore[method-assign]
        recorder.label = failing_for("boom", recorder.label, lambda d, *a: d)  # type: ignore[method-assign]
        engine.calibrate = failing_for("boom", engine.calibrate, lambda d, *a: d)  # type: ignore[method-assign]
        recorder.forget = failing_for("boom", recorder.forget, lambda d, *a: d)  # type: ignore[method-assign]

        async def bad(k: int) -> None:
            await h.send("boom", imu(WALK[64 * k : 64 * (k + 1)], seq=64 * k))
            await h.device.publish(f"{P}/boom/label", b'{"activity": "WALKING", "start": 1}')
            await h.device.publish(f"{P}/boom/calibrate", b"{}")
            forget = json.dumps({"command": "forget", "device": "boom"}).encode()
            await h.device.publish(f"{P}/control", forget)

        await good_and_bad(h, bad)
        await h.settle(lambda: len(h.published(f"{P}/control/result")) == 3)
        await h.settle(lambda: len(h.published(f"{P}/boom/activity")) == 3)
        faults = gw.snapshot()["faults"]
    assert set(errors_of(h, "boom")) == {"recording_failed", "internal_error"}
    assert faults == {"record": 3, "decode": 6, "control": 3}
    assert not any(r["ok"] for _, r in h.published(f"{P}/control/result"))
    assert errors_of(h, "good") == []


async def test_no_non_finite_decision_leaves(bundle_factory: Callable[..., Bundle]) -> None:
    async with Harness(bundle_factory("gru", "stateful")) as h:
        pipeline = h.gateway.pipeline
        real = pipeline.inferring.engine.complete

        def complete(prepared: Any) -> Any:
            decisions = real(prepared)
            decisions.confidence[[d == "boom" for d in decisions.device]] = np.nan
            return decisions

        pipeline.inferring.engine.complete = complete  # type: ignore[method-assign]

        async def bad(k: int) -> None:
            await h.send("boom", imu(WALK[64 * k : 64 * (k + 1)], seq=64 * k))

        await good_and_bad(h, bad)
        await h.settle(lambda: len(errors_of(h, "boom")) == 3)
    assert h.published(f"{P}/boom/activity") == []
    assert errors_of(h, "boom") == ["internal_error"] * 3


@pytest.mark.parametrize("stage", ["prepare", "infer"])
async def test_a_dead_stage_stops_the_gateway_truthfully(
    bundle_factory: Callable[..., Bundle], stage: str
) -> None:
    h = Harness(bundle_factory("gru", "stateful"))
    gw = h.gateway
    await h.__aenter__()
    await h.send("good", imu(WALK[:64], seq=0))
    await h.settle(lambda: len(h.published(f"{P}/good/activity")) == 1)
    assert gw.health()[0]

    def dead(*args: Any) -> Any:
        raise Boom(f"the {stage} stage's own bug")

    if stage == "prepare":
        gw.pipeline.preparing._prepare = dead  # type: ignore[method-assign]
    else:
        gw.pipeline.inferring.deliver = dead
    await h.send("good", imu(WALK[64:128], seq=64))
    await h.settle(lambda: gw.pipeline.failed is not None)
    ok, body = gw.health()
    assert not ok and body["status"] == "failed" and stage in body["failed"]
    with pytest.raises(StageError, match=f"the {stage} stage died"):
        await asyncio.wait_for(h.task, 5)  # no stop asked: it stops by itself
    assert h.broker.retained[f"{P}/status"] == b"offline"


async def test_the_inbox_is_bounded_in_bytes_as_in_messages() -> None:
    from harstream.gateway.pipeline import Arrival, Inbox

    inbox = Inbox(capacity=100, capacity_bytes=1000)
    big = [routed("p/d/imu", bytes(300)) for _ in range(5)]
    assert inbox.put(Arrival(big, 0.0, 0.0)) == 2  # 900 bytes fit, 2 messages do not
    assert inbox.put(Arrival(big[:1], 0.0, 0.0)) == 1
    taken = inbox.take(limit=10, timeout=0.0)
    assert taken is not None and sum(len(a.messages) for a in taken[0]) == 3
    assert inbox.put(Arrival(big, 0.0, 0.0)) == 2  # the room came back with the take


async def test_health_reports_messages_waiting_without_progress(
    bundle_factory: Callable[..., Bundle],
) -> None:
    """A pipeline whose stages are alive but make no progress (here: not started) while
    messages wait is unhealthy after STALL_S; an empty inbox is healthy however idle."""
    import time

    from harstream.gateway.pipeline import STALL_S, Arrival, Pipeline
    from tests.gateway_helpers import engine_for
    from tests.test_service import settings

    bundle = bundle_factory("gru", "stateful")
    pipeline = Pipeline(engine_for(bundle), settings(bundle).pipeline, lambda output: None)
    assert pipeline.progress() == {"failed": None, "queue": 0, "stalled_s": 0.0, "ok": True}
    now = time.monotonic()
    pipeline.inbox.put(Arrival([routed(f"{P}/d/imu", imu(WALK[:5]), P)], 0.0, now - 1.0))
    assert pipeline.progress()["ok"]  # waiting 1 s: not yet
    pipeline.inbox.take(10, 0.0)
    pipeline.inbox.put(Arrival([routed(f"{P}/d/imu", imu(WALK[:5]), P)], 0.0, now - STALL_S))
    progress = pipeline.progress()
    assert not progress["ok"] and progress["queue"] == 1 and progress["stalled_s"] >= STALL_S


async def test_a_lone_device_never_lingers_two_devices_do(
    bundle_factory: Callable[..., Bundle],
) -> None:
    """Busy takes (messages already waiting: here the engine is slowed down) linger for
    more only when other devices were seen in the last batches: a lone device faster
    than real time never waits for a batch no other device would fill."""
    import time

    async def feed(h: Harness, devices: list[str]) -> int:
        engine = h.gateway.pipeline.engine
        real = engine.prepare

        def slow(messages: list[Any]) -> Any:
            time.sleep(0.02)  # messages pile up meanwhile: the next take is busy
            return real(messages)

        engine.prepare = slow  # type: ignore[method-assign]
        for k in range(20):
            for d in devices:
                await h.send(d, imu(WALK[25 * k : 25 * (k + 1)], seq=25 * k))
            await asyncio.sleep(0.01)
        await h.settle(lambda: h.gateway.snapshot()["samples"] == 20 * 25 * len(devices))
        return int(h.gateway.snapshot()["batches_lingered"])

    async with Harness(bundle_factory("gru", "stateful"), "batching.max_linger_ms=5") as h:
        assert await feed(h, ["lone"]) == 0
    async with Harness(bundle_factory("gru", "stateful"), "batching.max_linger_ms=5") as h:
        assert await feed(h, ["a", "b"]) > 0
