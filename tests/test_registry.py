"""The device registry: one admission, one limit and one eviction for every store of
the prepare thread (the engine's slot, a field device's stream and order, the
recorder's open session), with real parts: the engine, ingest, decoded payloads."""

from __future__ import annotations

from collections.abc import Callable

from harstream.config import load_config
from harstream.core.bundle import Bundle
from harstream.gateway.ingest import Ingest
from harstream.gateway.registry import DeviceRegistry
from harstream.runtime import ingest_settings
from tests.gateway_helpers import WALK, engine_for, imu, routed

T0 = 1.8e9


class Ends:
    """A store that notes what it was told to let go of (the recorder's part)."""

    def __init__(self) -> None:
        self.dropped: list[str] = []

    def drop(self, device: str) -> None:
        self.dropped.append(device)


def parts(bundle: Bundle) -> tuple[DeviceRegistry, Ingest, Ends, Callable[..., list[str]]]:
    overrides = ["stream.max_devices=2", "stream.idle_timeout_s=60", "topics.prefix=p"]
    engine = engine_for(bundle, *overrides)
    registry = DeviceRegistry(2, 60.0)
    registry.engine = engine
    ingest = Ingest(ingest_settings(load_config(overrides=overrides)), registry)
    ends = Ends()
    registry.stores += [ingest, ends]

    def send(device: str, payload: bytes, now: float) -> list[str]:
        messages, errors = ingest.decode(routed(f"p/{device}/imu", payload), now)
        engine.prepare(messages)
        return [code for _, code, _ in errors]

    return registry, ingest, ends, send


def test_a_device_counts_once_whatever_it_sends(bundle_factory: Callable[..., Bundle]) -> None:
    registry, ingest, _, send = parts(bundle_factory("gru", "stateful"))
    assert send("plain", imu(WALK[:50], seq=0), T0) == []  # the engine's alone
    assert send("field", imu(WALK[:100], rate=100), T0) == []  # a stream, then the engine
    assert send("field", imu(WALK[100:200], rate=100), T0 + 1) == []  # known: admitted
    assert send("third", imu(WALK[:50], seq=0), T0 + 1) == ["too_many_devices"]
    assert send("fourth", imu(WALK[:100], rate=100), T0 + 1) == ["too_many_devices"]
    assert set(registry.last_seen) == {"plain", "field"} and set(ingest.streams) == {"field"}
    assert registry.refused == 2 and registry.engine is not None
    assert set(registry.engine.devices) == {"plain", "field"}


def test_idle_devices_leave_every_store_and_make_room(
    bundle_factory: Callable[..., Bundle],
) -> None:
    registry, ingest, ends, send = parts(bundle_factory("gru", "stateful"))
    send("plain", imu(WALK[:50], seq=0), T0)
    send("field", imu(WALK[:100], rate=100), T0)
    # a new device when the others are idle: they leave to make room, announced
    assert send("new", imu(WALK[:50], seq=0), T0 + 61) == []
    assert sorted(registry.gone) == ["field", "plain"] and sorted(ends.dropped) == sorted(
        registry.gone
    )
    assert ingest.streams == {} and set(registry.last_seen) == {"new"}
    assert registry.engine is not None and registry.engine.devices == ["new"]
    # the eviction tick: the same for every store; forget: at once, not announced
    assert registry.evict_idle(T0 + 200) == ["new"] and ends.dropped[-1] == "new"
    send("again", imu(WALK[:50], seq=0), T0 + 201)
    registry.forget("again")
    assert registry.last_seen == {} and registry.engine.devices == []
