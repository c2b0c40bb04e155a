"""The engine against the offline function, and its per-device rules."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harstream.core.bundle import Bundle
from harstream.core.engine import Decision, Engine, Message, offline_decisions
from harstream.errors import RejectedError
from replay import iter_hapt
from tests.gateway_helpers import engine_for

MINI = Path(__file__).resolve().parent / "data" / "hapt-mini"
RECORDINGS = {r.subject: r.samples for r in iter_hapt(MINI)}
WALK = RECORDINGS[9]


def make_engine(bundle: Bundle, method: str = "none", *overrides: str) -> Engine:
    """The engine ``serve`` would build for ``bundle`` (onnxruntime), with config overrides."""
    return engine_for(bundle, f"smoothing.method={method}", *overrides)


def split(n: int, sizes: list[int]) -> list[tuple[int, int]]:
    pieces, i, k = [], 0, 0
    while i < n:
        size = sizes[k % len(sizes)]
        pieces.append((i, min(n, i + size)))
        i += size
        k += 1
    return pieces


def probs_of(decisions: list[Decision], labels: tuple[str, ...]) -> np.ndarray:
    return np.array([[d.probabilities[lab] for lab in labels] for d in decisions])


@pytest.mark.parametrize("kind", ["gru", "lstm"])
@pytest.mark.parametrize("mode", ["window", "stateful"])
@settings(max_examples=8, deadline=None)
@given(sizes=st.lists(st.integers(min_value=1, max_value=300), min_size=1, max_size=12))
def test_engine_equals_offline_in_any_message_sizes(
    bundle_factory: Callable[..., Bundle], kind: str, mode: str, sizes: list[int]
) -> None:
    bundle = bundle_factory(kind, mode)
    engine = make_engine(bundle)
    decisions = []
    for a, b in split(len(WALK), sizes):
        decisions += engine.feed("dev", WALK[a:b], seq=a)
    seq, probs = offline_decisions(
        engine.model, engine.preprocessor, WALK, mode=mode, window=bundle.window, hop=bundle.hop
    )
    assert [d.seq for d in decisions] == seq.tolist()
    np.testing.assert_allclose(probs_of(decisions, bundle.labels), probs, atol=1e-5)
    assert [d.raw_activity for d in decisions] == [bundle.labels[i] for i in probs.argmax(1)]
    first = bundle.window if mode == "window" else bundle.hop
    assert seq[0] == first - 1 and np.all(np.diff(seq) == bundle.hop)


@pytest.mark.parametrize(("mode", "stride"), [("window", 1), ("stateful", 1), ("stateful", 4)])
def test_many_devices_in_one_batch_equal_each_alone(
    bundle_factory: Callable[..., Bundle], mode: str, stride: int
) -> None:
    """Devices in one batch with different message sizes, counts and (stride 4) samples
    short of a step: each decides as it would alone."""
    bundle = bundle_factory("gru", mode, stride=stride, aligned=stride > 1)
    rng = np.random.default_rng(0)
    streams = {f"d{i}": np.roll(WALK, 97 * i, axis=0)[:1500] for i in range(12)}
    batched = make_engine(bundle)
    got: dict[str, list[Decision]] = {d: [] for d in streams}
    cursor = dict.fromkeys(streams, 0)
    while any(cursor[d] < 1500 for d in streams):
        batch = []
        for d in streams:
            for _ in range(int(rng.integers(0, 3))):  # 0, 1 or 2 messages of a device per batch
                if cursor[d] < 1500:
                    n = int(rng.choice([10, 25, 25, 64, 130]))
                    batch.append(Message(d, streams[d][cursor[d] : cursor[d] + n], seq=cursor[d]))
                    cursor[d] += n
        for decision in batched.feed_many(batch).decisions:
            got[decision.device].append(decision)
    for d, samples in streams.items():
        alone = make_engine(bundle).feed(d, samples)
        assert [x.seq for x in got[d]] == [x.seq for x in alone]
        np.testing.assert_allclose(
            probs_of(got[d], bundle.labels), probs_of(alone, bundle.labels), atol=1e-5
        )


def test_seq_gap_resets_and_duplicates_are_dropped(bundle_factory: Callable[..., Bundle]) -> None:
    bundle = bundle_factory("gru", "stateful")
    engine = make_engine(bundle)
    engine.feed("a", WALK[:100], seq=1000)  # any first seq starts the stream
    with pytest.raises(RejectedError, match="seq_old: seq 1050 < expected 1100"):
        engine.feed("a", WALK[50:100], seq=1050)
    assert engine.counters["dropped_seq_old"] == 1
    result = engine.feed_many([Message("a", WALK[200:300], seq=1200)])  # 100 samples lost
    assert [(e.code, e.dropped) for e in result.events] == [("seq_gap", False)]
    assert engine.counters["resets"] == 1
    # after the reset the stream restarts: first decision after hop samples of the new stream
    assert [d.seq for d in result.decisions] == [1200 + 63]
    fresh = make_engine(bundle).feed("b", WALK[200:300], seq=1200)
    np.testing.assert_allclose(
        probs_of(result.decisions, bundle.labels), probs_of(fresh, bundle.labels), atol=1e-6
    )


def test_a_gap_inside_one_batch_resets_at_its_turn(bundle_factory: Callable[..., Bundle]) -> None:
    bundle = bundle_factory("gru", "stateful")
    batch = [
        Message("a", WALK[:100], seq=0),
        Message("a", WALK[100:150], seq=100),
        Message("a", WALK[200:400], seq=201),
    ]  # the third starts a new stream
    together = make_engine(bundle).feed_many(batch).decisions
    alone = make_engine(bundle)
    separate = [d for m in batch for d in alone.feed(m.device, m.samples, m.seq)]
    assert [d.seq for d in together] == [d.seq for d in separate] == [63, 127, 264, 328, 392]
    np.testing.assert_allclose(
        probs_of(together, bundle.labels), probs_of(separate, bundle.labels), atol=1e-6
    )


def test_idle_devices_are_evicted_and_capacity_enforced(
    bundle_factory: Callable[..., Bundle],
) -> None:
    limits = ("stream.max_devices=2", "stream.idle_timeout_s=10")
    engine = make_engine(bundle_factory("gru", "stateful"), "none", *limits)
    engine.feed("a", WALK[:10], now=0.0)
    engine.feed("b", WALK[:10], now=5.0)
    with pytest.raises(RejectedError, match="too_many_devices: the gateway serves at most 2"):
        engine.feed("c", WALK[:10], now=9.0)
    assert engine.counters["rejected_too_many_devices"] == 1
    engine.feed("c", WALK[:10], now=11.0)  # "a" has been idle > 10 s: evicted to make room
    assert sorted(engine.devices) == ["b", "c"] and engine.counters["evicted"] == 1
    assert engine.evict_idle(now=100.0) == ["b", "c"]
    assert engine.devices == []


@pytest.mark.parametrize("mode", ["window", "stateful"])
def test_a_slot_freed_by_eviction_serves_its_next_device_from_scratch(
    bundle_factory: Callable[..., Bundle], mode: str
) -> None:
    """Device "b" takes the slot "a" left, in the same batch as "a"'s last message
    reaches the complete stage: b decides as a new device alone would."""
    bundle = bundle_factory("gru", mode)
    engine = make_engine(bundle, "hysteresis", "stream.idle_timeout_s=10")
    engine.feed("a", RECORDINGS[1][:300], now=0.0)
    last_of_a = engine.prepare([Message("a", RECORDINGS[1][300:400], received=1.0)])
    assert engine.evict_idle(now=20.0) == ["a"]
    first_of_b = engine.prepare([Message("b", WALK[:300], received=20.0)])
    engine.complete(last_of_a)
    got = list(engine.complete(first_of_b))
    alone = make_engine(bundle, "hysteresis").feed("b", WALK[:300], now=20.0)
    assert got == alone and got[0].previous is None
    assert engine.devices == ["b"]


def test_decision_times(bundle_factory: Callable[..., Bundle]) -> None:
    engine = make_engine(bundle_factory("gru", "stateful"))
    # device time given: t of the decision's last sample = t0 + offset / rate
    (d,) = engine.feed("a", WALK[:100], seq=0, t=1000.0)
    assert d.seq == 63 and d.t == pytest.approx(1000.0 + 63 / 50)
    # no device time: the last sample of the message arrived at `now`
    (d,) = engine.feed("b", WALK[:100], now=500.0)
    assert d.t == pytest.approx(500.0 - (99 - 63) / 50)


def test_unknown_threshold_and_transitions(bundle_factory: Callable[..., Bundle]) -> None:
    bundle = bundle_factory("gru", "stateful")
    decisions = make_engine(bundle).feed("a", WALK)
    raw = [d.raw_activity for d in decisions]
    assert len(set(raw)) > 1, "the random model should change its mind on real data"
    assert [d.changed for d in decisions] == [False] + [a != b for a, b in itertools.pairwise(raw)]
    assert all(d.previous == p.activity for p, d in itertools.pairwise(decisions))
    strict = make_engine(bundle, "none", "smoothing.unknown_threshold=1.0").feed("a", WALK)
    assert {d.activity for d in strict} == {"UNKNOWN"}
    assert [d.raw_activity for d in strict] == raw


def test_smoothing_is_applied_per_device(bundle_factory: Callable[..., Bundle]) -> None:
    bundle = bundle_factory("gru", "stateful")
    plain = make_engine(bundle).feed("a", WALK)
    smooth = make_engine(bundle, "hysteresis").feed("a", WALK)
    switches = [sum(d.changed for d in ds) for ds in (plain, smooth)]
    assert switches[1] < switches[0]
    assert [d.probabilities for d in plain] == [d.probabilities for d in smooth]
    # two devices interleaved in one engine: each keeps its own smoother, so each
    # publishes exactly what it would publish alone
    other = RECORDINGS[1]  # shorter than WALK: b stops sending first
    alone_b = make_engine(bundle, "hysteresis").feed("b", other)
    engine = make_engine(bundle, "hysteresis")
    got: dict[str, list[str]] = {"a": [], "b": []}
    for lo in range(0, len(WALK), 100):
        batch = [Message("a", WALK[lo : lo + 100], seq=lo)]
        if lo < len(other):
            batch.append(Message("b", other[lo : lo + 100]))
        for d in engine.feed_many(batch).decisions:
            got[d.device].append(d.activity)
    assert got["a"] == [d.activity for d in smooth]
    assert got["b"] == [d.activity for d in alone_b]
    assert got["a"] != got["b"]  # else a shared smoother could not be told apart


def test_stateful_hop_can_change_without_retraining(bundle_factory: Callable[..., Bundle]) -> None:
    bundle = bundle_factory("gru", "stateful")
    at_64 = make_engine(bundle).feed("a", WALK)
    at_16 = make_engine(bundle, "none", "stream.hop=16").feed("a", WALK)
    assert len(at_16) == len(WALK) // 16
    by_seq = {d.seq: d for d in at_16}
    for d in at_64:  # the same sample seen through a different hop: the same output
        np.testing.assert_allclose(
            list(d.probabilities.values()), list(by_seq[d.seq].probabilities.values()), atol=1e-5
        )


@pytest.mark.parametrize("mode", ["window", "stateful"])
@pytest.mark.parametrize("calibrated", [False, True])
@settings(max_examples=6, deadline=None)
@given(sizes=st.lists(st.integers(min_value=1, max_value=300), min_size=1, max_size=12))
def test_a_strided_aligned_model_equals_offline_in_any_message_sizes(
    bundle_factory: Callable[..., Bundle], mode: str, calibrated: bool, sizes: list[int]
) -> None:
    """Messages need not be multiples of the stride: the rest waits for the next one."""
    bundle = bundle_factory("gru", mode, stride=4, aligned=True)
    engine = make_engine(bundle)
    vertical = np.array([0.9, 0.1, -0.2]) if calibrated else None
    engine.set_vertical("dev", vertical)
    decisions = []
    for a, b in split(len(WALK), sizes):
        decisions += engine.feed("dev", WALK[a:b], seq=a)
    seq, probs = offline_decisions(
        engine.model,
        engine.preprocessor,
        WALK,
        mode=mode,
        window=bundle.window,
        hop=bundle.hop,
        vertical=None if vertical is None else vertical / np.linalg.norm(vertical),
    )
    assert [d.seq for d in decisions] == seq.tolist()
    np.testing.assert_allclose(probs_of(decisions, bundle.labels), probs, atol=1e-5)


def test_a_calibration_takes_the_standing_vertical_and_refuses_motion(
    bundle_factory: Callable[..., Bundle],
) -> None:
    engine = make_engine(bundle_factory("gru", "stateful", stride=4, aligned=True))
    tilted = np.array([0.8, 0.0, 0.6])  # gravity direction in the device frame
    still = np.tile(np.r_[tilted, 0.0, 0.0, 0.0], (400, 1))
    engine.calibrate("dev", seconds=2.0)
    events = []
    for a in range(0, 400, 30):  # 100 samples span messages
        events += engine.feed_many([Message("dev", still[a : a + 30], seq=a)]).events
    assert [e.code for e in events] == ["calibrated"]
    np.testing.assert_allclose(engine.vertical_of("dev"), tilted, atol=1e-6)
    # walking is not standing still: the calibration fails and the old one stays
    engine.calibrate("dev", seconds=2.0)
    result = engine.feed_many([Message("dev", WALK[:200] * 1.0, seq=400)])
    assert [e.code for e in result.events] == ["calibration_failed"]
    assert "moved" in result.events[0].detail
    np.testing.assert_allclose(engine.vertical_of("dev"), tilted, atol=1e-6)
    engine.set_vertical("dev", None)
    assert engine.vertical_of("dev") is None  # no default: uncalibrated


def test_a_device_frame_model_takes_no_calibration(bundle_factory: Callable[..., Bundle]) -> None:
    engine = make_engine(bundle_factory("gru", "stateful"))
    with pytest.raises(ValueError, match="no calibration"):
        engine.calibrate("dev", 5.0)


def test_calibration_requests_are_bounded_and_abandoned_on_eviction(
    bundle_factory: Callable[..., Bundle],
) -> None:
    engine = make_engine(bundle_factory("gru", "stateful", stride=4, aligned=True))
    engine.max_devices = 3
    for device in ("a", "b", "c"):
        engine.calibrate(device, 5.0)
    engine.calibrate("a", 2.0)  # asking again for the same device is fine
    with pytest.raises(ValueError, match="already wait"):
        engine.calibrate("d", 5.0)
    engine.feed("a", WALK[:50], seq=0, now=0.0)  # "a" starts calibrating, then goes silent
    engine.evict_idle(now=engine.idle_timeout_s + 1.0)
    assert engine.devices == []
    events = engine.feed_many([Message("a", np.tile([1.0, 0, 0, 0, 0, 0], (200, 1)), 0)]).events
    assert events == []  # the abandoned calibration does not complete on its return
    assert engine.vertical_of("a") is None


def test_verticals_outlive_eviction_but_not_without_bound(
    bundle_factory: Callable[..., Bundle],
) -> None:
    """A device that comes back keeps its vertical; a stream of new device ids cannot
    grow the verticals past KEPT_VERTICALS x max_devices: the least recently set of the
    devices not streaming go first, never a streaming one."""
    from harstream.core.engine import KEPT_VERTICALS

    engine = make_engine(bundle_factory("gru", "stateful", stride=4, aligned=True))
    engine.max_devices = 2
    engine.feed("live", WALK[:64], seq=0)  # streaming: its vertical is never dropped
    engine.set_vertical("live", np.array([1.0, 0.0, 0.0]))
    cap = KEPT_VERTICALS * engine.max_devices
    for k in range(cap + 5):
        engine.set_vertical(f"gone{k}", np.array([0.0, 0.0, 1.0]))
    assert len(engine.verticals) == cap
    assert "live" in engine.verticals and "gone0" not in engine.verticals
    assert f"gone{cap + 4}" in engine.verticals
    assert engine.counters["verticals_dropped"] == 6  # "live" counts too: gone0-gone5 went
    assert "gone5" not in engine.verticals and "gone6" in engine.verticals
    # setting one again makes it the most recent: the next drop takes another
    engine.set_vertical("gone6", np.array([0.0, 1.0, 0.0]))
    engine.set_vertical("new", np.array([0.0, 1.0, 0.0]))
    assert "gone6" in engine.verticals and "gone7" not in engine.verticals
    # so does the device coming back
    engine.feed("gone8", WALK[:64], seq=0)
    engine.forget("gone8")
    engine.set_vertical("newer", np.array([0.0, 1.0, 0.0]))
    assert "gone8" in engine.verticals and "gone9" not in engine.verticals
    # a learnt (walking) vertical of a device not streaming goes before a standing
    # calibration, however recent (live devices learn theirs while streaming: kept)
    engine.set_vertical("walked", np.array([0.0, 1.0, 0.0]), "walking")
    assert "walked" not in engine.verticals and "gone10" in engine.verticals
    assert set(engine.sources) == set(engine.verticals)
    # each drop is reported once, with the next batch (the gateway publishes `cleared`)
    events = engine.feed_many([Message("live", WALK[64:128], seq=64)]).events
    dropped = [e.device for e in events if e.code == "calibration_dropped"]
    assert dropped == ["gone9", "walked"]  # since the last batch (gone8's feed)
    assert not any(e.code == "calibration_dropped" for e in engine.feed_many([]).events)
