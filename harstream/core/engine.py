"""The recognition engine: per-device state in, decisions out. Pure: no I/O, no clock.

``feed_many(messages)`` takes a batch of device messages and returns every decision
they complete. The heavy steps run once per batch, not once per device: the filters
of all devices that sent the same number of samples are run together, and a single
inference call covers every device whose hop completed. ``feed`` is the one-message
form. Time comes in with each message (``received``, and the device's own ``t``).

``feed_many`` is two stages, which a gateway may run in two threads, one batch apart:
``prepare`` (admission, filters, windows: the input side of each device) and
``complete`` (inference, smoothing, decisions: the output side). Each stage touches only
its own side of a device's state, and each must see the batches in order.

Per device the engine keeps (:class:`_Device`): filter state, window buffer, recurrent
state (stateful mode), smoother, the next expected ``seq``, when it was last seen, and
the activity it last published. A ``seq`` ahead of the expected one is a gap: the
device's stream state is reset, counted, and the message is processed as a new start.
A ``seq`` behind it is a duplicate: dropped and counted. Devices idle for longer than
``idle_timeout_s`` are evicted; at most ``max_devices`` are kept, new ones beyond are
rejected.

Calibration (bundles with the gravity-aligned inputs): each device may have a
calibrated vertical, the direction of gravity in its own frame while its wearer stood
still. ``calibrate(device, seconds)`` asks for one: the next ``seconds`` of the device's
samples are averaged (gravity direction, and how much the device moved) and, if it held
still, become its vertical (event ``calibrated``; else ``calibration_failed``).
``set_vertical`` sets or clears one directly (a saved calibration). Verticals outlive
eviction; a device without one gets ``default_vertical`` (None: uncalibrated).

Decision positions: a decision is made when a device's sample count reaches
``window + k * hop`` (window mode) or ``(k + 1) * hop`` (stateful mode), counted from
the device's first sample (or its last reset). ``offline_decisions`` computes the same
decisions from a whole recording in one piece; the tests check that the engine, fed in
messages of any sizes, gives exactly those (training preprocesses recordings with the
same ``Preprocessor.preprocess``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from harstream.core.bundle import UNKNOWN
from harstream.core.inference import Model, State, stack_states, unstack_state
from harstream.core.preprocessing import FilterState, Preprocessor, gravity_direction
from harstream.core.smoothing import Smoother
from harstream.core.window import Emitted, WindowBuffer
from harstream.errors import RejectedError

__all__ = [
    "CALIBRATION_MAX_MOTION_G",
    "Decision",
    "Engine",
    "EngineEvent",
    "FeedResult",
    "Message",
    "Prepared",
    "offline_decisions",
]


@dataclass(frozen=True, slots=True)
class Message:
    """One device message: ``samples`` (n, 6) raw; ``seq`` = stream index of its first
    sample; ``t`` = device time of its first sample; ``received`` = gateway time."""

    device: str
    samples: np.ndarray
    seq: int | None = None
    t: float | None = None
    received: float = 0.0


@dataclass(frozen=True, slots=True)
class Decision:
    device: str
    seq: int  # stream index of the last sample the decision saw
    t: float  # time of that sample: device time if the device sent t, else gateway time
    received: float  # gateway time (epoch s) of the message that completed the decision
    activity: str  # published label: smoothed, or UNKNOWN below the threshold
    confidence: float  # the smoother's confidence in the published label
    probabilities: dict[str, float]  # this decision's raw model output
    raw_activity: str  # argmax of probabilities
    changed: bool  # activity differs from the previously published one
    previous: str | None  # the previously published activity


@dataclass(frozen=True, slots=True)
class EngineEvent:
    """Something about a message other than decisions: a reset or a drop."""

    device: str
    # seq_gap (state reset, message used) | seq_old | too_many_devices (dropped) |
    # calibrated | calibration_failed (not about the message itself)
    code: str
    detail: str
    dropped: bool


@dataclass
class FeedResult:
    decisions: list[Decision] = field(default_factory=list)
    events: list[EngineEvent] = field(default_factory=list)


class _Work(NamedTuple):
    """One admitted message: its device, its stream index, whether it starts a new stream
    (a seq gap: the reset happens when the message's turn comes, not at admission)."""

    dev: _Device
    msg: Message
    start: int
    reset: bool


class _Input(NamedTuple):
    """What ``prepare`` made of one message for the model. ``stops``: the device's sample
    counts (since its stream began) at which decisions fall in this message. ``x``: in
    window mode the completed windows (k, window, C); in stateful mode every new sample
    (n, C), since the recurrent state steps through samples as they arrive, so that at a
    decision only the message's own samples remain to run. ``at``: stateful mode, the
    index in ``x`` of each stop's sample."""

    stops: np.ndarray
    x: np.ndarray
    at: np.ndarray


@dataclass
class _Round:
    """A round of work after ``prepare``: each message's model input, and the stream
    index of the first sample the device counted (decision positions)."""

    work: list[_Work]
    inputs: list[_Input]
    first_index: list[int]


@dataclass
class Prepared:
    """A batch between the two stages: its rounds, and the events of its admission."""

    rounds: list[_Round] = field(default_factory=list)
    events: list[EngineEvent] = field(default_factory=list)
    new_devices: list[str] = field(default_factory=list)  # first seen in this batch


@dataclass(slots=True)
class _Device:
    """One device's state; ``prepare`` owns buffer, count, filters, next_seq and
    last_seen, ``complete`` owns smoother, state and activity."""

    buffer: WindowBuffer | None  # window mode only
    smoother: Smoother
    count: int = 0  # samples since the stream (re)started
    filters: FilterState | None = None  # None until the stream's first sample
    next_seq: int | None = None  # None: any seq starts the stream
    last_seen: float = 0.0
    state: State | None = None  # recurrent state; stateful mode only
    activity: str | None = None  # last published
    pending: np.ndarray | None = None  # stateful, stride > 1: samples short of a step


@dataclass(slots=True)
class _Calibration:
    """A calibration in progress: samples still to take, and sums over those taken."""

    remaining: int
    taken: int = 0
    gravity: np.ndarray = field(default_factory=lambda: np.zeros(3))
    motion: float = 0.0  # sum of |body acceleration| (g)


#: The most a device may move while calibrating: mean |body acceleration| in g (still
#: standing measures ~0.01 g, slow walking ~0.15 g).
CALIBRATION_MAX_MOTION_G = 0.05


class Engine:
    def __init__(
        self,
        model: Model,
        preprocessor: Preprocessor,
        smoother_factory: Callable[[], Smoother],
        *,
        mode: str,
        window: int,
        hop: int,
        rate_hz: float,
        max_devices: int,
        idle_timeout_s: float,
        unknown_threshold: float,
        default_vertical: np.ndarray | None = None,
    ) -> None:
        """Every value comes from the config (``harstream.runtime.build_engine``), which
        holds the one set of defaults."""
        if mode not in ("window", "stateful"):
            raise ValueError(f"mode must be 'window' or 'stateful', got {mode!r}")
        if not 0 < hop <= window:
            raise ValueError(f"need 0 < hop <= window, got hop={hop}, window={window}")
        self.stride = model.arch.stride
        if hop % self.stride or window % self.stride:
            raise ValueError(
                f"hop ({hop}) and window ({window}) must be multiples of the model's "
                f"stride ({self.stride})"
            )
        self.model = model
        self.labels = model.labels
        self.preprocessor = preprocessor
        self.new_smoother = smoother_factory
        self.mode = mode
        self.window = window
        self.hop = hop
        self.rate_hz = rate_hz
        self.max_devices = max_devices
        self.idle_timeout_s = idle_timeout_s
        self.unknown_threshold = unknown_threshold
        # each stage counts in its own: ``counters`` is written only by ``prepare`` (and
        # ``evict_idle``), ``decisions`` only by ``complete``, so two threads never
        # write the same object
        self.counters: Counter[str] = Counter()
        self.decisions = 0
        self._devices: dict[str, _Device] = {}
        # calibration: verticals and calibrations in progress are the prepare stage's;
        # requests come from any thread (one dict store each)
        self.default_vertical = default_vertical
        self.verticals: dict[str, np.ndarray] = {}
        self._calibrating: dict[str, _Calibration] = {}
        self._requests: dict[str, float] = {}

    # --- devices ---------------------------------------------------------------------

    @property
    def devices(self) -> list[str]:
        return list(self._devices)

    @property
    def device_count(self) -> int:
        return len(self._devices)

    def evict_idle(self, now: float) -> list[str]:
        """Forget devices not seen for ``idle_timeout_s``; return their ids."""
        limit = now - self.idle_timeout_s
        gone = [d for d, dev in self._devices.items() if dev.last_seen < limit]
        for device in gone:
            del self._devices[device]
            self._calibrating.pop(device, None)  # a device gone silent stood for nothing
        self.counters["evicted"] += len(gone)
        return gone

    def adopt(self, old: Engine) -> None:
        """Take over ``old``'s devices when its model is swapped for this one's: each
        device stays known (its next ``seq``, last seen, last published activity), its
        stream restarts here on its next message (filters, window and recurrent state
        from scratch: one window of warm-up); calibrations, calibrations in progress and
        the prepare stage's counters carry over. Called by the prepare stage; the
        complete stage's ``decisions`` count is carried by whoever switches it."""
        for device, dev in old._devices.items():
            new = self._new_device()
            new.next_seq, new.last_seen, new.activity = dev.next_seq, dev.last_seen, dev.activity
            self._devices[device] = new
        self.verticals = dict(old.verticals)
        self._calibrating = dict(old._calibrating)
        self._requests = dict(old._requests)
        self.counters = old.counters
        self.counters["model_swaps"] += 1

    def _new_device(self) -> _Device:
        if self.mode == "window":
            width = len(self.preprocessor.channels)
            return _Device(WindowBuffer(self.window, self.hop, width), self.new_smoother())
        return _Device(None, self.new_smoother())

    # --- calibration -----------------------------------------------------------------

    def calibrate(self, device: str, seconds: float) -> None:
        """Take the device's next ``seconds`` of samples as a standing calibration."""
        if not self.preprocessor.aligned:
            raise ValueError("this model reads device-frame inputs: it takes no calibration")
        if seconds <= 0:
            raise ValueError(f"seconds must be > 0, got {seconds}")
        if device not in self._requests and len(self._requests) >= self.max_devices:
            # requests for devices that never stream must not pile up without bound
            raise ValueError(f"{len(self._requests)} calibrations already wait for their devices")
        self._requests[device] = seconds

    def set_vertical(self, device: str, vertical: np.ndarray | None) -> None:
        """Set (a unit 3-vector, device frame) or clear (None) a device's calibration."""
        if vertical is None:
            self.verticals.pop(device, None)
            return
        v = np.asarray(vertical, np.float64).reshape(3)
        norm = float(np.linalg.norm(v))
        if not np.isfinite(norm) or norm < 1e-6:
            raise ValueError(f"a vertical must be a non-zero 3-vector, got {v.tolist()}")
        self.verticals[device] = v / norm

    def vertical_of(self, device: str) -> np.ndarray | None:
        return self.verticals.get(device, self.default_vertical)

    def _calibrate(self, device: str, filtered: np.ndarray, events: list[EngineEvent]) -> None:
        """Fold a message's filtered samples (n, 9) into the device's calibration."""
        if device in self._requests:
            seconds = self._requests.pop(device)
            self._calibrating[device] = _Calibration(max(1, round(seconds * self.rate_hz)))
        cal = self._calibrating.get(device)
        if cal is None:
            return
        part = filtered[: cal.remaining]
        cal.gravity += gravity_direction(part).sum(axis=0)
        cal.motion += float(np.linalg.norm(part[:, 0:3], axis=1).sum())
        cal.taken += len(part)
        cal.remaining -= len(part)
        if cal.remaining > 0:
            return
        del self._calibrating[device]
        motion = cal.motion / cal.taken
        if motion > CALIBRATION_MAX_MOTION_G:
            self.counters["calibrations_failed"] += 1
            events.append(
                EngineEvent(
                    device,
                    "calibration_failed",
                    f"the device moved (mean body acceleration {motion:.3f} g > "
                    f"{CALIBRATION_MAX_MOTION_G} g): stand still and calibrate again",
                    dropped=False,
                )
            )
            return
        self.set_vertical(device, cal.gravity)
        self.counters["calibrations"] += 1
        v = self.verticals[device]
        events.append(
            EngineEvent(
                device,
                "calibrated",
                f"vertical {np.round(v, 4).tolist()} from {cal.taken} samples",
                dropped=False,
            )
        )

    # --- feeding ---------------------------------------------------------------------

    def feed(
        self,
        device: str,
        samples: np.ndarray,
        seq: int | None = None,
        t: float | None = None,
        now: float = 0.0,
    ) -> list[Decision]:
        """One message. Raises RejectedError when the message is dropped."""
        result = self.feed_many([Message(device, samples, seq, t, now)])
        for event in result.events:
            if event.dropped:
                raise RejectedError(event.code, event.detail)
        return result.decisions

    def feed_many(self, messages: Iterable[Message]) -> FeedResult:
        """A batch of messages, from any devices, in arrival order."""
        prepared = self.prepare(messages)
        return FeedResult(self.complete(prepared), prepared.events)

    def prepare(self, messages: Iterable[Message]) -> Prepared:
        """Stage one: admit the messages, run the filters, fill the window buffers."""
        prepared = Prepared()
        # A device's second message in one batch must see the state its first left:
        # messages go into rounds, the k-th message of each device into round k.
        rounds: list[list[_Work]] = []
        seen: Counter[str] = Counter()
        for message in messages:
            work = self._admit(message, prepared)
            if work is None:
                continue
            k = seen[message.device]
            seen[message.device] += 1
            if k == len(rounds):
                rounds.append([])
            rounds[k].append(work)
        for batch in rounds:
            for work in batch:
                if work.reset:
                    work.dev.count = 0
                    work.dev.filters = None
                    work.dev.pending = None
                    if work.dev.buffer is not None:
                        work.dev.buffer.reset()
            features = self._preprocess(batch, prepared.events)
            inputs = [self._input(w.dev, x) for w, x in zip(batch, features, strict=True)]
            # the count after a message belongs to the stream index of its last sample
            first = [w.start + len(w.msg.samples) - w.dev.count for w in batch]
            prepared.rounds.append(_Round(batch, inputs, first))
        return prepared

    def _input(self, dev: _Device, x: np.ndarray) -> _Input:
        before = dev.count
        dev.count += len(x)
        if dev.buffer is not None:  # window mode
            emitted: Emitted = dev.buffer.push(x)
            return _Input(emitted.stops, emitted.windows, emitted.stops)
        first_stop = (before // self.hop + 1) * self.hop
        stops = np.arange(first_stop, dev.count + 1, self.hop)
        x = x.astype(np.float32, copy=False)
        if self.stride == 1:
            return _Input(stops, x, stops - before - 1)
        # whole steps of stride samples go to the network; the rest waits for the next
        # message (stops are multiples of the hop, so of the stride: never in the rest)
        if dev.pending is not None:
            before -= len(dev.pending)
            x = np.concatenate([dev.pending, x])
        whole = len(x) - len(x) % self.stride
        dev.pending = x[whole:] if whole < len(x) else None
        return _Input(stops, x[:whole], (stops - before) // self.stride - 1)

    def complete(self, prepared: Prepared) -> list[Decision]:
        """Stage two: inference over what ``prepare`` emitted, smoothing, decisions."""
        out: list[Decision] = []
        for r in prepared.rounds:
            for work in r.work:
                if work.reset:
                    work.dev.state = None
                    work.dev.smoother.reset()
            probs = self._infer(r.work, r.inputs)
            for work, got, first, p in zip(r.work, r.inputs, r.first_index, probs, strict=True):
                if len(got.stops):
                    self._decide(work, first, got.stops, p, out)
        return out

    def _admit(self, msg: Message, prepared: Prepared) -> _Work | None:
        """Check capacity and seq; None when the message is dropped."""
        events = prepared.events
        dev = self._devices.get(msg.device)
        if dev is None:
            if len(self._devices) >= self.max_devices:
                self.evict_idle(msg.received)
            if len(self._devices) >= self.max_devices:
                self.counters["rejected_too_many_devices"] += 1
                events.append(
                    EngineEvent(
                        msg.device,
                        "too_many_devices",
                        f"the gateway serves at most {self.max_devices} devices",
                        dropped=True,
                    )
                )
                return None
            dev = self._devices[msg.device] = self._new_device()
            prepared.new_devices.append(msg.device)
        start = dev.next_seq if dev.next_seq is not None else 0
        reset = False
        if msg.seq is not None and dev.next_seq is not None:
            if msg.seq < dev.next_seq:
                self.counters["dropped_seq_old"] += 1
                events.append(
                    EngineEvent(
                        msg.device,
                        "seq_old",
                        f"seq {msg.seq} < expected {dev.next_seq}: duplicate or late",
                        dropped=True,
                    )
                )
                return None
            if msg.seq > dev.next_seq:
                self.counters["resets"] += 1
                events.append(
                    EngineEvent(
                        msg.device,
                        "seq_gap",
                        f"seq {msg.seq} > expected "
                        f"{dev.next_seq}: {msg.seq - dev.next_seq} samples "
                        "missing; stream state reset",
                        dropped=False,
                    )
                )
                reset = True
        if msg.seq is not None:
            start = msg.seq
        n = len(msg.samples)
        dev.next_seq = start + n
        dev.last_seen = msg.received
        self.counters["messages"] += 1
        self.counters["samples"] += n
        return _Work(dev, msg, start, reset)

    def _preprocess(self, batch: list[_Work], events: list[EngineEvent]) -> list[np.ndarray]:
        """Run the filters of all messages with the same length as one batch."""
        features: list[np.ndarray] = [np.empty(0)] * len(batch)
        by_length: dict[int, list[int]] = {}
        for i, work in enumerate(batch):
            by_length.setdefault(len(work.msg.samples), []).append(i)
        for rows in by_length.values():
            devs = [batch[i].dev for i in rows]
            x = np.stack([batch[i].msg.samples for i in rows]).astype(np.float64, copy=False)
            states = [
                dev.filters if dev.filters is not None else self.preprocessor.start(x[j, 0])
                for j, dev in enumerate(devs)
            ]
            state, filtered = self.preprocessor.filter(FilterState.stack(states), x)
            vertical = None
            if self.preprocessor.aligned and (
                self.verticals
                or self.default_vertical is not None
                or self._calibrating
                or self._requests
            ):  # else every device is uncalibrated: nothing to look up
                vertical = np.full((len(rows), 3), np.nan)
                for j, i in enumerate(rows):
                    device = batch[i].msg.device
                    self._calibrate(device, filtered[j], events)
                    v = self.vertical_of(device)
                    if v is not None:
                        vertical[j] = v
            y = self.preprocessor.inputs(filtered, vertical)
            for j, (dev, part) in enumerate(zip(devs, state.unstack(), strict=True)):
                dev.filters = part
                features[rows[j]] = y[j]
        return features

    def _infer(self, batch: list[_Work], inputs: list[_Input]) -> list[np.ndarray]:
        """Probabilities (k, classes) at each message's k decisions."""
        out: list[np.ndarray] = [np.empty((0, len(self.labels)))] * len(batch)
        if self.mode == "window":
            which = [i for i, e in enumerate(inputs) if len(e.stops)]
            if not which:
                return out
            windows = np.concatenate([inputs[i].x for i in which])
            _, probs = self.model.step(self.model.initial_state(len(windows)), windows)
            last = probs[:, -1]
            offset = 0
            for i in which:
                k = len(inputs[i].stops)
                out[i] = last[offset : offset + k]
                offset += k
            return out
        # stateful: every message's samples step its device's state now; messages of the
        # same length run together, their states stacked along the batch axis
        by_length: dict[int, list[int]] = {}
        for i, e in enumerate(inputs):
            if len(e.x):  # a message shorter than the model's stride may leave none
                by_length.setdefault(len(e.x), []).append(i)
        for which in by_length.values():
            devs = [batch[i].dev for i in which]
            x = np.stack([inputs[i].x for i in which])
            states = [d.state if d.state is not None else self.model.initial_state(1) for d in devs]
            state, probs = self.model.step(stack_states(states), x)
            for dev, part in zip(devs, unstack_state(state), strict=True):
                dev.state = part
            for j, i in enumerate(which):
                if len(inputs[i].at):
                    out[i] = probs[j, inputs[i].at]
        return out

    def _decide(
        self,
        work: _Work,
        first_index: int,
        stops: np.ndarray,
        probs: np.ndarray,
        out: list[Decision],
    ) -> None:
        dev, msg, start, _ = work
        smoother = dev.smoother
        n = len(msg.samples)
        # stops count samples since the stream (re)started, from stream index first_index
        for stop, p in zip(stops.tolist(), probs, strict=True):
            seq = first_index + stop - 1
            offset = seq - start  # position of the decision's last sample in this message
            if msg.t is not None:
                t = msg.t + offset / self.rate_hz
            else:
                t = msg.received - (n - 1 - offset) / self.rate_hz
            smoother.update(p)
            label, confidence = smoother.get()
            activity = self.labels[label] if confidence >= self.unknown_threshold else UNKNOWN
            raw = self.labels[int(np.argmax(p))]
            previous = dev.activity
            dev.activity = activity
            self.decisions += 1
            out.append(
                Decision(
                    device=msg.device,
                    seq=seq,
                    t=t,
                    received=msg.received,
                    activity=activity,
                    confidence=confidence,
                    probabilities={lab: float(v) for lab, v in zip(self.labels, p, strict=True)},
                    raw_activity=raw,
                    changed=previous is not None and previous != activity,
                    previous=previous,
                )
            )


def offline_decisions(
    model: Model,
    preprocessor: Preprocessor,
    samples: np.ndarray,
    *,
    mode: str,
    window: int,
    hop: int,
    vertical: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The engine's decisions for a whole recording, computed offline.

    Returns ``(seq, probs)``: the stream index of each decision's last sample and the
    raw class probabilities there. Preprocesses the recording in one piece and cuts
    windows (or runs the stateful network over the whole sequence) at the positions the
    engine decides at. ``vertical``: the device's calibration, if any.
    """
    features = preprocessor.preprocess(samples, vertical)
    n = len(features)
    if mode == "window":
        stops = np.arange(window, n + 1, hop)
        if not len(stops):
            return stops - 1, np.zeros((0, len(model.labels)))
        view = np.lib.stride_tricks.sliding_window_view(features, window, axis=0)
        windows = np.ascontiguousarray(view[stops - window].transpose(0, 2, 1))
        _, probs = model.step(model.initial_state(len(windows)), windows)
        return stops - 1, probs[:, -1]
    stops = np.arange(hop, n + 1, hop)
    if not len(stops):
        return stops - 1, np.zeros((0, len(model.labels)))
    _, probs = model.step(model.initial_state(1), features[None, : stops[-1]])
    return stops - 1, probs[0, stops // model.arch.stride - 1]
