"""The recognition engine: per-device state in, decisions out. Pure: no I/O, no clock.

``feed_many(messages)`` takes a batch of device messages and returns every decision
they complete. A batch is a few numpy operations over the devices that sent data, not
Python per device: every device's state lives in arrays indexed by the device's slot
(:class:`~harstream.core.slots.SlotArrays`), the filters of all devices that sent the
same number of samples run as one call, one inference call covers every device with
the same number of recurrent steps (stateful) or every completed window, and the
smoother updates all of a batch's decisions at once. The decisions come back column by
column (:class:`Decisions`), for the gateway to encode in one pass. ``feed`` is the
one-message form. Time comes in with each message (``received``, and the device's own
``t``).

``feed_many`` is two stages, which a gateway may run in two threads, one batch apart:
``prepare`` (admission, filters, windows: the input side of each device) and
``complete`` (inference, smoothing, decisions: the output side). Each stage touches only
its own side of a device's state (its own arrays, which only it grows), and each must
see the batches in order; a slot freed by eviction and given to a new device is
restarted by each stage when that device's first message reaches it.

Per device the engine keeps: filter state, the samples a decision still needs (window
mode: the last ``window``, in a ring; stateful mode: those short of a recurrent step),
recurrent state (stateful mode), smoother state, the next expected ``seq``, when it was
last seen, and the activity it last published. A ``seq`` ahead of the expected one is a
gap: the device's stream state is reset, counted, and the message is processed as a new
start. A ``seq`` behind it is a duplicate: dropped and counted. Devices idle for longer
than ``idle_timeout_s`` are evicted (their slots reused); at most ``max_devices`` are
kept, new ones beyond are rejected.

Calibration (bundles with the gravity-aligned inputs): each device may have a
calibrated vertical, the direction of gravity in its own frame while its wearer stood
still. ``calibrate(device, seconds)`` asks for one: the next ``seconds`` of the device's
samples are averaged (gravity direction, and how much the device moved) and, if it held
still, become its vertical (event ``calibrated``; else ``calibration_failed``).
``set_vertical`` sets or clears one directly (a saved calibration). Verticals outlive
eviction, for at most ``KEPT_VERTICALS`` x ``max_devices`` devices (stats
``verticals_dropped``); a device without one gets ``default_vertical`` (None: uncalibrated). Each
vertical has a source (``sources``): ``standing`` (a calibration) or ``walking``.

Calibration from walking (``walking``, a :class:`WalkingCalibration`): while a device's
published activity is WALKING with at least ``confidence``, its gravity direction (the
gravity filter's, at each decision) goes into a running estimate (a decayed sum of unit
vectors: long bouts weigh more, the first ``settle`` decisions of each bout none, and
unsteady ones partly cancel). After ``seconds`` of such walking the estimate becomes the
device's vertical, source ``walking`` (event ``calibrated``), refined at the end of each
later bout (event ``refined``); a standing calibration is never replaced by it. When
``remount_s`` of walking in a row disagrees with the vertical in force by more than
``remount_deg``, the device was re-mounted: that vertical is dropped at once (event
``remounted``; uncalibrated, not a wrong posture) and those seconds start the new
estimate. The complete stage learns (it sees the decisions) and queues what it learnt;
the prepare stage applies it at its next batch (it owns the verticals), so the two
stages still write only their own state.

Decision positions: a decision is made when a device's sample count reaches
``window + k * hop`` (window mode) or ``(k + 1) * hop`` (stateful mode), counted from
the device's first sample (or its last reset). ``offline_decisions`` computes the same
decisions from a whole recording in one piece; the tests check that the engine, fed in
messages of any sizes, gives exactly those (training preprocesses recordings with the
same ``Preprocessor.preprocess``).
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, overload

import numpy as np

from harstream.core.bundle import UNKNOWN
from harstream.core.inference import Model
from harstream.core.preprocessing import (
    RAW_CHANNELS,
    FilterState,
    Preprocessor,
    gravity_direction,
)
from harstream.core.slots import SlotArrays, Spec
from harstream.core.smoothing import Smoother
from harstream.errors import RejectedError

__all__ = [
    "CALIBRATION_MAX_MOTION_G",
    "SOURCES",
    "Decision",
    "Decisions",
    "Engine",
    "EngineEvent",
    "FeedResult",
    "Message",
    "Prepared",
    "WalkingCalibration",
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
    # calibrated | calibration_failed | refined | remounted | calibration_dropped (not
    # about the message itself)
    code: str
    detail: str
    dropped: bool
    # calibrated | refined: the vertical the event put in force (unit, device frame) and
    # its source; a batch may change a device's vertical more than once
    vertical: tuple[float, float, float] | None = None
    source: str | None = None


class Decisions(Sequence[Decision]):
    """A batch's decisions, column by column: what the gateway encodes in one pass.
    Indexing or iterating gives :class:`Decision` objects. ``activity`` and
    ``previous`` index ``names`` (the labels, then ``UNKNOWN``); ``previous`` is -1
    where nothing was published before."""

    __slots__ = (
        "activity",
        "confidence",
        "device",
        "labels",
        "names",
        "previous",
        "probs",
        "received",
        "seq",
        "t",
    )
    labels: tuple[str, ...]
    names: tuple[str, ...]
    device: list[str]
    seq: np.ndarray  # int64: stream index of the last sample each decision saw
    t: np.ndarray
    received: np.ndarray
    activity: np.ndarray  # int64, into names
    confidence: np.ndarray
    probs: np.ndarray  # (D, classes) float32: the raw model output
    previous: np.ndarray  # int64, into names; -1: none

    def __init__(
        self,
        labels: tuple[str, ...],
        device: list[str],
        seq: np.ndarray,
        t: np.ndarray,
        received: np.ndarray,
        activity: np.ndarray,
        confidence: np.ndarray,
        probs: np.ndarray,
        previous: np.ndarray,
    ) -> None:
        self.labels = labels
        self.names = (*labels, UNKNOWN)
        self.device = device
        self.seq, self.t, self.received = seq, t, received
        self.activity, self.confidence, self.probs = activity, confidence, probs
        self.previous = previous

    @classmethod
    def empty(cls, labels: tuple[str, ...]) -> Decisions:
        none = np.zeros(0, np.int64)
        return cls(
            labels, [], none, np.zeros(0), np.zeros(0), none, np.zeros(0),
            np.zeros((0, len(labels)), np.float32), none,
        )  # fmt: skip

    @classmethod
    def concat(cls, labels: tuple[str, ...], parts: Sequence[Decisions]) -> Decisions:
        if len(parts) == 1:
            return parts[0]
        if not parts:
            return cls.empty(labels)
        return cls(
            labels,
            [d for p in parts for d in p.device],
            *(np.concatenate([getattr(p, k) for p in parts]) for k in _COLUMNS),
        )

    def take(self, rows: np.ndarray) -> Decisions:
        """The decisions at ``rows`` (indices), in that order."""
        return Decisions(
            self.labels,
            [self.device[i] for i in rows.tolist()],
            *(getattr(self, k)[rows] for k in _COLUMNS),
        )

    @property
    def raw(self) -> np.ndarray:
        """Each decision's argmax of ``probs`` (an index into ``labels``)."""
        raw: np.ndarray = np.argmax(self.probs, axis=1)
        return raw

    @property
    def changed(self) -> np.ndarray:
        """Whether each decision changed the published activity."""
        changed: np.ndarray = (self.previous >= 0) & (self.previous != self.activity)
        return changed

    def __len__(self) -> int:
        return len(self.device)

    @overload
    def __getitem__(self, i: int) -> Decision: ...

    @overload
    def __getitem__(self, i: slice) -> list[Decision]: ...

    def __getitem__(self, i: int | slice) -> Decision | list[Decision]:
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        names, p = self.names, self.probs[i]
        previous = int(self.previous[i])
        activity = names[int(self.activity[i])]
        return Decision(
            device=self.device[i],
            seq=int(self.seq[i]),
            t=float(self.t[i]),
            received=float(self.received[i]),
            activity=activity,
            confidence=float(self.confidence[i]),
            probabilities={lab: float(v) for lab, v in zip(self.labels, p, strict=True)},
            raw_activity=self.labels[int(np.argmax(p))],
            changed=previous >= 0 and names[previous] != activity,
            previous=names[previous] if previous >= 0 else None,
        )


_COLUMNS = ("seq", "t", "received", "activity", "confidence", "probs", "previous")


@dataclass
class FeedResult:
    decisions: Sequence[Decision] = field(default_factory=list)
    events: list[EngineEvent] = field(default_factory=list)


class _Admitted(NamedTuple):
    """One admitted message: its device's slot, its stream index, whether it starts a
    new stream (a seq gap, or a device new to the engine: the reset happens when the
    message's turn comes, not at admission) and whether the device is new."""

    msg: Message
    slot: int
    start: int
    restart: bool
    new: bool


@dataclass(slots=True)
class _Group:
    """One inference call: ``x`` (B, T, C). ``slots``: stateful mode, the devices whose
    recurrent states step through ``x``; None in window mode (each row a window, from
    the initial state)."""

    x: np.ndarray
    slots: np.ndarray | None


@dataclass(slots=True)
class _Round:
    """A round of messages (at most one per device) after ``prepare``, column by column,
    and its decisions (ordered by message, then position): which message, the device's
    sample count there, the decision's place among its message's, and where its
    probabilities come out of the groups' inference (group, row, step)."""

    messages: list[Message]
    slots: np.ndarray
    start: np.ndarray  # stream index of each message's first sample
    restart: np.ndarray  # a new stream: the complete stage starts it afresh
    new: np.ndarray  # a device new to the engine: nothing published before
    first: np.ndarray  # stream index of the sample the device counted first
    n: np.ndarray
    t: np.ndarray  # NaN: the message had no t
    received: np.ndarray
    groups: list[_Group]
    row: np.ndarray
    stop: np.ndarray
    rank: np.ndarray
    group: np.ndarray
    index: np.ndarray
    step: np.ndarray
    gravity: np.ndarray  # (decisions, 4): unit gravity and the hop's motion; NaN: none
    own: np.ndarray  # (messages, 3): the device's own vertical in force; NaN: none
    mount: np.ndarray  # (messages,): which of the device's mounts that vertical is of


@dataclass
class Prepared:
    """A batch between the two stages: its rounds, and the events of its admission."""

    rounds: list[_Round] = field(default_factory=list)
    events: list[EngineEvent] = field(default_factory=list)
    new_devices: list[str] = field(default_factory=list)  # first seen in this batch


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
#: Where a device's vertical came from (index 0: none of its own).
SOURCES = (None, "standing", "walking")
#: verticals kept per device the engine may serve at once (``_bound_verticals``)
KEPT_VERTICALS = 4


@dataclass(frozen=True)
class WalkingCalibration:
    """Calibration from walking (the defaults and their reasons: ``CalibrationConfig``)."""

    seconds: float = 5.0  # walking seconds before the first vertical
    confidence: float = 0.8  # the least published confidence of a WALKING decision taken
    settle: int = 2  # the first decisions of each walking bout are not taken
    steady_deg: float = 10.0  # a bout ends where gravity turns more than this in a decision
    motion_g: float = 0.15  # mean |body acceleration| of walking (1st percentile, HAPT)
    remount_deg: float = 30.0  # a disagreement larger than this ...
    remount_s: float = 10.0  # ... for this many walking seconds in a row: re-mounted
    memory_s: float = 600.0  # walking seconds over which the estimate forgets (1/e)
    label: str = "WALKING"

    def __post_init__(self) -> None:
        if self.seconds <= 0 or self.remount_s <= 0 or self.memory_s <= self.seconds:
            raise ValueError("need seconds > 0, remount_s > 0 and memory_s > seconds")
        if not 0 < self.remount_deg < 180 or not 0 <= self.confidence <= 1 or self.settle < 0:
            raise ValueError("need 0 < remount_deg < 180, 0 <= confidence <= 1, settle >= 0")


def _positions(
    before: np.ndarray, n: int, first_stop: np.ndarray, hop: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decisions of messages of ``n`` samples on counts ``before``: for each, the
    message (``rows``), its place among the message's (``rank``) and the count
    (``stop``); ``first_stop``: each device's first decision count after ``before``."""
    k = np.maximum((before + n - first_stop) // hop + 1, 0)
    rows = np.repeat(np.arange(len(before)), k)
    rank = np.arange(len(rows)) - np.repeat(np.cumsum(k) - k, k)
    return rows, rank, first_stop[rows] + rank * hop


class Engine:
    def __init__(
        self,
        model: Model,
        preprocessor: Preprocessor,
        smoother_factory: Callable[[int], Smoother],
        *,
        mode: str,
        window: int,
        hop: int,
        rate_hz: float,
        max_devices: int,
        idle_timeout_s: float,
        unknown_threshold: float,
        default_vertical: np.ndarray | None = None,
        walking: WalkingCalibration | None = None,
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
        # devices and their slots (the prepare stage's): a slot indexes every per-device
        # array; an evicted device's slot is reused
        self._slot: dict[str, int] = {}
        self._device_of: list[str | None] = []
        self._free: list[int] = []
        self._next_seq: list[int | None] = []  # None: any seq starts the stream
        self._in = self._input_arrays(len(preprocessor.channels))
        self._out = self._output_arrays()
        self._states = [name for name in ("state0", "state1") if hasattr(self._out, name)]
        self.smoother = smoother_factory(len(self.labels))
        # calibration: verticals and calibrations in progress are the prepare stage's;
        # requests come from any thread (one dict store each)
        self.default_vertical = default_vertical
        self.verticals: dict[str, np.ndarray] = {}
        self.sources: dict[str, str] = {}  # standing | walking, for each of verticals
        self._dropped: list[tuple[str, str]] = []  # (device, source): to report (``prepare``)
        self._calibrating: dict[str, _Calibration] = {}
        self._requests: dict[str, float] = {}
        # calibration from walking: learnt by the complete stage (in ``_out``), queued
        # here (device, what, vector, walking seconds), applied by the prepare stage
        self.walking = None
        self._walk_label = -1
        if walking is not None and preprocessor.aligned and walking.label in self.labels:
            self.walking = walking
            self._walk_label = self.labels.index(walking.label)
        moving = [i for i, label in enumerate(self.labels) if label.startswith("WALKING")]
        self._moving = np.array(moving, np.int64)
        self._learnt: deque[tuple[str, str, np.ndarray, float]] = deque()

    def _input_arrays(self, channels: int) -> SlotArrays:
        """The prepare stage's per-device arrays: filter state (``started``: it holds the
        stream's; else the next sample starts it), sample count since the stream began,
        last seen, vertical (NaN: uncalibrated), and stateful mode's samples short of a
        recurrent step (``pending``) or window mode's last ``window`` samples (``ring``:
        count c at row (c - 1) % window)."""
        probe = self.preprocessor.start(np.zeros((1, RAW_CHANNELS)))
        spec: dict[str, Spec] = {
            "history": (probe.history.shape[1:], np.float64, 0.0),
            "lowpass": (probe.lowpass.shape[1:], np.float64, 0.0),
            "gravity": (probe.gravity.shape[1:], np.float64, 0.0),
            "started": ((), bool, False),
            "count": ((), np.int64, 0),
            "last_seen": ((), np.float64, np.inf),  # free slots are never idle
            "vertical": ((3,), np.float64, np.nan),
            "own": ((), bool, False),  # the vertical is the device's own, not the default
            # counts the device's mounts: every change of its vertical but a refinement
            # learnt from its walking (which is the same mount, better known)
            "mount": ((), np.int64, 0),
        }
        if self.mode == "window":
            spec["ring"] = ((self.window, channels), np.float32, 0.0)
        else:
            spec["pending"] = ((self.stride - 1, channels), np.float32, 0.0)
            spec["pending_len"] = ((), np.int64, 0)
        return SlotArrays(spec)

    def _output_arrays(self) -> SlotArrays:
        """The complete stage's per-device arrays: recurrent state (stateful mode; slot
        first: (slots, layers, hidden) per state tensor) and the activity last published
        (an index into the labels then UNKNOWN; -1: none yet); calibration from walking:
        the decisions in the current bout, the running estimate (a decayed sum of unit
        gravity vectors, and its walking seconds) and the run that disagrees with the
        vertical in force."""
        spec: dict[str, Spec] = {
            "activity": ((), np.int64, -1),
            "walk_run": ((), np.int64, 0),
            "dropped": ((), np.int64, -1),  # the last mount a re-mount dropped
            "walk_last": ((3,), np.float64, 0.0),
            "walk_sum": ((3,), np.float64, 0.0),
            "walk_s": ((), np.float64, 0.0),
            "off_sum": ((3,), np.float64, 0.0),
            "off_s": ((), np.float64, 0.0),
        }
        if self.mode == "stateful":
            (*state,) = self.model.initial_state(1)
            for i, tensor in enumerate(state):
                spec[f"state{i}"] = ((tensor.shape[0], tensor.shape[2]), np.float32, 0.0)
        return SlotArrays(spec)

    # --- devices ---------------------------------------------------------------------

    @property
    def devices(self) -> list[str]:
        return list(self._slot)

    @property
    def device_count(self) -> int:
        return len(self._slot)

    @property
    def learnt_waiting(self) -> bool:
        """Whether the complete stage learnt something (from walking) that the prepare
        stage has yet to apply (at the start of its next ``prepare``, even an empty one)."""
        return bool(self._learnt)

    def _allocate(self, device: str) -> int:
        """A slot for a new device, its input side reset."""
        if self._free:
            slot = self._free.pop()
        else:
            slot = len(self._device_of)
            self._device_of.append(None)
            self._next_seq.append(None)
            self._in.resize(slot + 1)
        self._in.reset(slot)
        self._slot[device] = slot
        self._device_of[slot] = device
        self._next_seq[slot] = None
        vertical = self.vertical_of(device)
        if vertical is not None:
            self._in.vertical[slot] = vertical
        own = self._in.own[slot] = device in self.verticals
        if own:  # back: its vertical is the most recently used (``_bound_verticals``)
            self.verticals[device] = self.verticals.pop(device)
        return slot

    def evict_idle(self, now: float) -> list[str]:
        """Forget devices not seen for ``idle_timeout_s``; return their ids, the longest
        silent first."""
        last_seen = self._in.last_seen[: len(self._device_of)]
        idle = np.flatnonzero(last_seen < now - self.idle_timeout_s)
        gone = []
        for slot in idle[np.argsort(last_seen[idle], kind="stable")].tolist():
            device = self._device_of[slot]
            assert device is not None
            gone.append(device)
            del self._slot[device]
            self._device_of[slot] = None
            self._free.append(slot)
            self._in.last_seen[slot] = np.inf
            self._calibrating.pop(device, None)  # a device gone silent stood for nothing
        self.counters["evicted"] += len(gone)
        return gone

    def forget(self, device: str) -> bool:
        """Drop a device at once, as if it had never streamed (``data forget``; its
        calibration is :meth:`set_vertical`'s); whether it was known."""
        slot = self._slot.pop(device, None)
        self._calibrating.pop(device, None)
        self._requests.pop(device, None)
        if slot is None:
            return False
        self._device_of[slot] = None
        self._free.append(slot)
        self._in.last_seen[slot] = np.inf
        return True

    def adopt(self, old: Engine) -> None:
        """Take over ``old``'s devices when its model is swapped for this one's: each
        device stays known (its next ``seq``, last seen, last published activity), its
        stream restarts here on its next message (filters, window and recurrent state
        from scratch: one window of warm-up); calibrations, calibrations in progress and
        the prepare stage's counters carry over. Called by the prepare stage before this
        engine's first batch; the complete stage's ``decisions`` count is carried by
        whoever switches it."""
        self.verticals = dict(old.verticals)
        self.sources = dict(old.sources)
        self._learnt = old._learnt
        for device, was in old._slot.items():
            slot = self._allocate(device)
            self._next_seq[slot] = old._next_seq[was]
            self._in.last_seen[slot] = old._in.last_seen[was]
            self._out.resize(slot + 1)
            if was < old._out.capacity:
                self._out.activity[slot] = old._out.activity[was]
        self._calibrating = dict(old._calibrating)
        self._requests = dict(old._requests)
        self.counters = old.counters
        self.counters["model_swaps"] += 1

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

    def set_vertical(
        self,
        device: str,
        vertical: np.ndarray | None,
        source: str = "standing",
        *,
        refine: bool = False,
    ) -> None:
        """Set (a 3-vector, device frame; normalised here) or clear (None) a device's
        calibration; ``source``: standing or walking; ``refine``: a better estimate of
        the vertical in force (the same mount), not a new one."""
        if source not in SOURCES[1:]:
            raise ValueError(f"source must be one of {SOURCES[1:]}, got {source!r}")
        if vertical is None:
            self.verticals.pop(device, None)
            self.sources.pop(device, None)
        else:
            v = np.asarray(vertical, np.float64).reshape(3)
            norm = float(np.linalg.norm(v))
            if not np.isfinite(norm) or norm < 1e-6:
                raise ValueError(f"a vertical must be a non-zero 3-vector, got {v.tolist()}")
            self.verticals.pop(device, None)  # last in the dict: the most recently set
            self.verticals[device] = v / norm
            self.sources[device] = source
            self._bound_verticals()
        slot = self._slot.get(device)
        if slot is not None:
            now = self.vertical_of(device)
            self._in.vertical[slot] = np.nan if now is None else now
            self._in.own[slot] = vertical is not None
            self._in.mount[slot] += not refine

    def _bound_verticals(self) -> None:
        """Verticals outlive eviction (a device that comes back keeps its own), so that a
        stream of new device ids cannot grow them without bound they are kept for at most
        ``KEPT_VERTICALS`` x ``max_devices`` devices: beyond that, of the devices not
        streaming now, learnt (walking) verticals go before standing calibrations, each
        the least recently used first (set, or its device back)."""
        excess = len(self.verticals) - KEPT_VERTICALS * self.max_devices
        if excess <= 0:
            return
        idle = [d for d in self.verticals if d not in self._slot]
        idle.sort(key=lambda d: self.sources.get(d) != "walking")  # stable: walking first
        dropped = idle[:excess]
        for device in dropped:
            self._dropped.append((device, self.sources.get(device, "standing")))
            del self.verticals[device]
            self.sources.pop(device, None)
        self.counters["verticals_dropped"] += len(dropped)

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
                vertical=_triple(v),
                source="standing",
            )
        )

    # --- calibration from walking ----------------------------------------------------

    def _learn(
        self,
        slots: np.ndarray,
        published: np.ndarray,
        confidence: np.ndarray,
        gravity: np.ndarray,
        motion: np.ndarray,
        rows: np.ndarray,
        r: _Round,
    ) -> None:
        """The complete stage: one decision of each of ``slots`` into their walking
        estimates (``gravity``: unit gravity at each; ``motion``: mean |body
        acceleration| over its hop; ``rows``: their messages in ``r``, which carry the
        device's own vertical in force). What a device learnt (a first or refined
        vertical, a re-mount) is queued for the prepare stage; until that stage applies
        it, rounds it prepared before still carry a vertical this stage already dropped
        (their ``mount`` says so: a refinement of the dropped vertical applied meanwhile
        is the same mount), and the estimate stands in for it.

        Only WALKING feeds the estimate. The re-mount check also takes a posture that
        moves like walking (``motion_g``, steady): a vertical gone wrong makes
        the network read walking as a posture (lying, often), so WALKING alone would
        never show the device was turned."""
        w, out = self.walking, self._out
        assert w is not None
        hop_s = self.hop / self.rate_hz
        walking = (
            (published == self._walk_label)
            & (confidence >= w.confidence)
            & np.isfinite(gravity[:, 0])
        )
        # steady: the gravity direction moved little since the last decision (a device
        # being turned, or the filter settling after it was, is not steady walking)
        last = out.walk_last[slots]
        out.walk_last[slots] = gravity
        steady = np.einsum("ij,ij->i", gravity, last) >= np.cos(np.radians(w.steady_deg))
        was = out.walk_run[slots]
        run = np.where(walking & steady, was + 1, 0)
        out.walk_run[slots] = run
        ended = (was > 0) & (run == 0)  # a bout ended: the estimate refines the vertical
        taken = run > w.settle
        posture = ~np.isin(published, self._moving)
        vigorous = posture & steady & (motion >= w.motion_g) & np.isfinite(gravity[:, 0])
        walk_sum, walk_s = out.walk_sum[slots], out.walk_s[slots]
        off_sum, off_s = out.off_sum[slots], out.off_s[slots]
        # what the walking is compared with: the device's own vertical in force, else
        # the estimate so far (a device turned before its first vertical starts anew)
        own, mount = r.own[rows], r.mount[rows]
        has_own = np.isfinite(own[:, 0]) & (mount > out.dropped[slots])
        norm = np.linalg.norm(walk_sum, axis=1, keepdims=True)
        estimate = walk_sum / np.maximum(norm, 1e-12)
        has_ref = has_own | (walk_s >= 2 * hop_s)
        ref = np.where(has_own[:, None], own, np.where(has_ref[:, None], estimate, 0.0))
        cos = np.einsum("ij,ij->i", gravity, ref)
        away = cos < np.cos(np.radians(w.remount_deg))
        off = (taken | (vigorous & has_own)) & has_ref & away
        on = taken & ~off
        before = walk_s.copy()
        decay = np.exp(-hop_s / w.memory_s)
        walk_sum[on] = walk_sum[on] * decay + gravity[on]
        walk_s[on] = walk_s[on] * decay + hop_s
        # agreeing walking, or a posture that does not move like walking, ends a run
        ends = on | (posture & ~(vigorous & away))
        off_sum[ends], off_s[ends] = 0.0, 0.0
        off_sum[off] += gravity[off]
        off_s[off] += hop_s
        moved = off & (off_s >= w.remount_s - 1e-9)
        # the disagreeing run is the new estimate (with a vertical in force: re-mounted)
        walk_sum[moved], walk_s[moved] = off_sum[moved], off_s[moved]
        off_sum[moved], off_s[moved] = 0.0, 0.0
        out.walk_sum[slots], out.walk_s[slots] = walk_sum, walk_s
        out.off_sum[slots], out.off_s[slots] = off_sum, off_s
        ready = walk_s >= w.seconds - 1e-9
        first = ready & ((on & (before < w.seconds - 1e-9)) | (moved & ~has_own))
        remount = moved & has_own
        out.dropped[slots[remount]] = mount[remount]
        for i in np.flatnonzero(remount | (ready & (first | ended))).tolist():
            device = r.messages[int(rows[i])].device
            what = "remount" if remount[i] else "walking"
            self._learnt.append((device, what, walk_sum[i].copy(), float(walk_s[i])))

    def _apply_learnt(
        self, device: str, what: str, vector: np.ndarray, seconds: float, events: list[EngineEvent]
    ) -> None:
        """The prepare stage: what the complete stage learnt of ``device``'s vertical."""
        w = self.walking
        assert w is not None
        old, source = self.verticals.get(device), self.sources.get(device)
        if what == "remount" and old is not None:
            self.set_vertical(device, None)
            self.counters["remounts"] += 1
            angle = _angle_deg(old, vector)
            events.append(
                EngineEvent(
                    device,
                    "remounted",
                    f"{seconds:.0f} s of walking {angle:.0f} deg away from the {source} "
                    f"vertical (> {w.remount_deg:g} deg): the device was re-mounted; "
                    "its vertical is dropped",
                    dropped=False,
                )
            )
            old, source = None, None
        if seconds < w.seconds - 1e-9 or source == "standing":
            return  # too little walking yet; a standing calibration wins
        self.set_vertical(device, vector, "walking", refine=old is not None)
        new = self.verticals[device]
        self.counters["walking_verticals"] += 1
        moved = "" if old is None else f", {_angle_deg(old, new):.1f} deg from the last"
        events.append(
            EngineEvent(
                device,
                "calibrated" if old is None else "refined",
                f"vertical {np.round(new, 4).tolist()} from {seconds:.0f} s of walking{moved}",
                dropped=False,
                vertical=_triple(new),
                source="walking",
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
        return list(result.decisions)

    def feed_many(self, messages: Iterable[Message]) -> FeedResult:
        """A batch of messages, from any devices, in arrival order."""
        prepared = self.prepare(messages)
        return FeedResult(self.complete(prepared), prepared.events)

    def prepare(self, messages: Iterable[Message]) -> Prepared:
        """Stage one: admit the messages, run the filters, fill the windows or the
        stateful steps' inputs."""
        prepared = Prepared()
        while self._learnt:
            self._apply_learnt(*self._learnt.popleft(), prepared.events)
        # A device's second message in one batch must see the state its first left:
        # messages go into rounds, the k-th message of each device into round k.
        rounds: list[list[_Admitted]] = []
        seen: dict[str, int] = {}
        for message in messages:
            admitted = self._admit(message, prepared)
            if admitted is None:
                continue
            k = seen.get(message.device, 0)
            seen[message.device] = k + 1
            if k == len(rounds):
                rounds.append([])
            rounds[k].append(admitted)
        for batch in rounds:
            prepared.rounds.append(self._prepare_round(batch, prepared.events))
        for device, source in self._dropped:  # by ``_bound_verticals``, since the last batch
            prepared.events.append(
                EngineEvent(
                    device,
                    "calibration_dropped",
                    f"its {source} vertical is dropped: verticals are kept for at most "
                    f"{KEPT_VERTICALS * self.max_devices} devices, this one not streaming and "
                    "the least recently used",
                    dropped=False,
                )
            )
        self._dropped.clear()
        return prepared

    def _admit(self, msg: Message, prepared: Prepared) -> _Admitted | None:
        """Check capacity and seq; None when the message is dropped."""
        events = prepared.events
        slot = self._slot.get(msg.device)
        new = slot is None
        if slot is None:
            if len(self._slot) >= self.max_devices:
                self.evict_idle(msg.received)
            if len(self._slot) >= self.max_devices:
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
            slot = self._allocate(msg.device)
            prepared.new_devices.append(msg.device)
        expected = self._next_seq[slot]
        start = expected if expected is not None else 0
        reset = False
        if msg.seq is not None and expected is not None:
            if msg.seq < expected:
                self.counters["dropped_seq_old"] += 1
                events.append(
                    EngineEvent(
                        msg.device,
                        "seq_old",
                        f"seq {msg.seq} < expected {expected}: duplicate or late",
                        dropped=True,
                    )
                )
                return None
            if msg.seq > expected:
                self.counters["resets"] += 1
                events.append(
                    EngineEvent(
                        msg.device,
                        "seq_gap",
                        f"seq {msg.seq} > expected "
                        f"{expected}: {msg.seq - expected} samples "
                        "missing; stream state reset",
                        dropped=False,
                    )
                )
                reset = True
        if msg.seq is not None:
            start = msg.seq
        self._next_seq[slot] = start + len(msg.samples)
        self._in.last_seen[slot] = msg.received
        return _Admitted(msg, slot, start, reset or new, new)

    def _prepare_round(self, batch: list[_Admitted], events: list[EngineEvent]) -> _Round:
        """Filters, inputs and decision positions of a round, over all its devices."""
        messages = [a.msg for a in batch]
        slots = np.array([a.slot for a in batch], np.int64)
        restart = np.array([a.restart for a in batch], bool)
        inp = self._in
        if restart.any():
            restarted = ("count", "started", *(("pending_len",) if self.mode == "stateful" else ()))
            inp.reset(slots[restart], restarted)
        lengths = [len(m.samples) for m in messages]
        n = np.array(lengths, np.int64)
        self.counters["messages"] += len(batch)
        self.counters["samples"] += int(n.sum())
        start = np.array([a.start for a in batch], np.int64)
        # the count after a message belongs to the stream index of its last sample
        first = start - inp.count[slots]
        by_length: dict[int, list[int]] = {}
        for i, length in enumerate(lengths):
            by_length.setdefault(length, []).append(i)
        groups: list[_Group] = []
        parts: list[tuple[np.ndarray, ...]] = []  # decisions: row, rank, stop, group, index, step
        windows: list[np.ndarray] = []
        for length, rows in by_length.items():
            which = np.arange(len(batch)) if len(by_length) == 1 else np.array(rows)
            s = slots[which]
            x = np.stack([messages[i].samples for i in rows]).astype(np.float64, copy=False)
            y, filtered = self._features(x, s, [messages[i].device for i in rows], events)
            before = inp.count[s]
            inp.count[s] = before + length
            if self.mode == "window":
                part = self._windows(s, y, before, which, windows)
            else:
                part = self._steps(s, y, before, which, groups)
            parts.append((*part, self._gravity_at(filtered, which, before, part[0], part[2])))
        if windows:
            groups = [_Group(np.concatenate(windows), None)]
        row, rank, stop, group, index, step, gravity = (
            parts[0] if len(parts) == 1 else [np.concatenate(c) for c in zip(*parts, strict=True)]
        )
        if len(parts) > 1:  # back to message order (a device's decisions stay in order)
            order = np.argsort(row, kind="stable")
            row, rank, stop, group, index, step, gravity = (
                c[order] for c in (row, rank, stop, group, index, step, gravity)
            )
        return _Round(
            messages=messages,
            slots=slots,
            start=start,
            restart=restart,
            new=np.array([a.new for a in batch], bool),
            first=first,
            n=n,
            t=np.array([np.nan if m.t is None else m.t for m in messages], np.float64),
            received=np.array([m.received for m in messages], np.float64),
            groups=groups,
            row=row,
            stop=stop,
            rank=rank,
            group=group,
            index=index,
            step=step,
            gravity=gravity,
            own=np.where(inp.own[slots, None], inp.vertical[slots], np.nan),
            mount=inp.mount[slots].copy(),
        )

    def _gravity_at(
        self,
        filtered: np.ndarray,
        which: np.ndarray,
        before: np.ndarray,
        rows: np.ndarray,
        stop: np.ndarray,
    ) -> np.ndarray:
        """Per decision of a length group, for calibration from walking (D, 4): the unit
        gravity direction (the 0.3 Hz gravity filter's, already a mean over the last
        seconds) and the mean |body acceleration| (g) over the decision's last hop (as
        much of it as its message holds). ``rows`` index the round's messages
        (``which``, sorted, maps the group's rows to them), ``stop`` is each decision's
        count, ``before`` each row's count before the message. NaN where nothing learns
        from walking."""
        if self.walking is None or not len(rows):
            return np.full((len(rows), 4), np.nan)
        local = np.searchsorted(which, rows)
        end = stop - before[local]  # samples of the message up to the decision
        motion = np.zeros((len(filtered), filtered.shape[1] + 1))
        np.cumsum(np.linalg.norm(filtered[..., 0:3], axis=-1), axis=1, out=motion[:, 1:])
        begin = np.maximum(end - self.hop, 0)
        mean = (motion[local, end] - motion[local, begin]) / (end - begin)
        return np.concatenate([gravity_direction(filtered[local, end - 1]), mean[:, None]], 1)

    def _features(
        self, x: np.ndarray, slots: np.ndarray, devices: list[str], events: list[EngineEvent]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Raw (B, n, 6) of devices in ``slots`` through their filters -> model inputs,
        and the filtered device-frame channels (B, n, 9)."""
        inp = self._in
        state = FilterState(inp.history[slots], inp.lowpass[slots], inp.gravity[slots])
        fresh = ~inp.started[slots]
        if fresh.any():  # a new stream's filters start at its first sample
            for part, value in zip(state, self.preprocessor.start(x[fresh, 0]), strict=True):
                part[fresh] = value
        state, filtered = self.preprocessor.filter(state, x)
        inp.history[slots], inp.lowpass[slots], inp.gravity[slots] = state
        inp.started[slots] = True
        vertical = None
        if self.preprocessor.aligned:
            if self._calibrating or self._requests:
                for j, device in enumerate(devices):
                    if device in self._calibrating or device in self._requests:
                        self._calibrate(device, filtered[j], events)
            vertical = inp.vertical[slots]
            if np.isnan(vertical[:, 0]).all():
                vertical = None  # every device uncalibrated: nothing to compute
        return self.preprocessor.inputs(filtered, vertical), filtered

    def _steps(
        self,
        slots: np.ndarray,
        y: np.ndarray,
        before: np.ndarray,
        which: np.ndarray,
        groups: list[_Group],
    ) -> tuple[np.ndarray, ...]:
        """Stateful mode: each device's new samples, after those left short of a whole
        step by its last message, go to the network in whole steps of ``stride``
        samples (the rest waits for the next message); devices with the same number of
        steps (two counts at most) share one inference group. Returns the decisions
        (rows of ``which``).

        ``pending`` holds the samples short of a step right-aligned in ``stride - 1``
        rows, so that pending rows then new samples are one array for every device,
        each device's own sequence starting at row ``stride - 1 - pending_len``."""
        inp, stride, n = self._in, self.stride, y.shape[1]
        pending = inp.pending_len[slots]
        joined = np.concatenate([inp.pending[slots], y], axis=1) if stride > 1 else y
        inp.pending[slots] = joined[:, n:]  # the last stride - 1 rows: right-aligned rest
        fewer = n - n % stride  # whole samples of a device with nothing pending
        more = pending + n - fewer >= stride  # these have one step more
        inp.pending_len[slots] = pending + n - fewer - np.where(more, stride, 0)
        group_of = np.zeros(len(slots), np.int64)  # a device without a step decides nothing
        index_of = np.zeros(len(slots), np.int64)
        for whole, sel in ((fewer, np.flatnonzero(~more)), (fewer + stride, np.flatnonzero(more))):
            if not len(sel) or not whole:
                continue
            if len(sel) == len(slots) and pending.min() == pending.max():
                start = stride - 1 - int(pending[0])  # all aligned alike: a slice, no gather
                x = joined[:, start : start + whole]
            else:
                x = joined[sel[:, None], (stride - 1 - pending[sel])[:, None] + np.arange(whole)]
            group_of[sel] = len(groups)
            index_of[sel] = np.arange(len(sel))
            groups.append(_Group(x, slots[sel]))
        first_stop = (before // self.hop + 1) * self.hop
        rows, rank, stop = _positions(before, n, first_stop, self.hop)
        # the steps ran from count before - pending: decision at count c is step index
        # (c - that) / stride - 1
        step = (stop - (before - pending)[rows]) // stride - 1
        return which[rows], rank, stop, group_of[rows], index_of[rows], step

    def _windows(
        self,
        slots: np.ndarray,
        y: np.ndarray,
        before: np.ndarray,
        which: np.ndarray,
        windows: list[np.ndarray],
    ) -> tuple[np.ndarray, ...]:
        """Window mode: the windows the new samples complete (appended to ``windows``),
        then the samples into each device's ring. Returns the decisions.

        Window 4, hop 2, a device sending samples 0..4 then 5..7 (each digit a sample)::

            sent     0 1 2 3 4 | 5 6 7
            count    1 2 3 4 5 | 6 7 8
            decides        ^   |   ^   ^
            windows     [0 1 2 3]  [2 3 4 5]  [4 5 6 7]

        The second message's windows are cut from the ring's last 3 samples (2 3 4)
        followed by the message's own, so a message longer than the ring loses nothing.
        """
        w, n, ring = self.window, y.shape[1], self._in.ring
        first_stop = np.where(before < w, w, before + self.hop - (before - w) % self.hop)
        rows, rank, stop = _positions(before, n, first_stop, self.hop)
        offset = sum(len(part) for part in windows)
        if len(rows):
            # each deciding device's last w - 1 samples then its new ones: count c of
            # the device sits at (c - (before - w + 2)) here
            deciding = np.flatnonzero(np.bincount(rows, minlength=len(slots)))
            older = (before[deciding, None] - (w - 1) + np.arange(w - 1)) % w
            ext = np.concatenate([ring[slots[deciding, None], older], y[deciding]], axis=1)
            at = np.searchsorted(deciding, rows)
            windows.append(ext[at[:, None], (stop - before[rows] - 1)[:, None] + np.arange(w)])
        keep = min(n, w)
        newer = (before[:, None] + n - keep + np.arange(keep)) % w
        ring[slots[:, None], newer] = y[:, n - keep :]
        index = offset + np.arange(len(rows))
        return which[rows], rank, stop, np.zeros(len(rows), np.int64), index, np.full_like(rows, -1)

    def complete(self, prepared: Prepared) -> Decisions:
        """Stage two: inference over what ``prepare`` emitted, smoothing, decisions."""
        parts = [self._complete_round(r) for r in prepared.rounds]
        return Decisions.concat(self.labels, [p for p in parts if len(p)])

    def _complete_round(self, r: _Round) -> Decisions:
        out, states = self._out, self._states
        capacity = int(r.slots.max()) + 1 if len(r.slots) else 0
        out.resize(capacity)
        self.smoother.resize(capacity)
        if r.restart.any():
            restarted = r.slots[r.restart]
            out.reset(restarted, states)
            self.smoother.reset(restarted)
            out.activity[r.slots[r.new]] = -1
            out.reset(r.slots[r.new], _WALK_ARRAYS)  # a slot another device held
        probs = np.empty((len(r.row), len(self.labels)), np.float32)
        for g, group in enumerate(r.groups):
            if group.slots is None:  # window mode: every window from the initial state
                _, p = self.model.step(self.model.initial_state(len(group.x)), group.x)
            else:
                state = tuple(getattr(out, name)[group.slots].transpose(1, 0, 2) for name in states)
                new, p = self.model.step(state, group.x)
                for name, tensor in zip(states, new, strict=True):
                    getattr(out, name)[group.slots] = tensor.transpose(1, 0, 2)
            mine = slice(None) if len(r.groups) == 1 else r.group == g
            probs[mine] = p[r.index[mine], r.step[mine]]
        if not len(r.row):
            return Decisions.empty(self.labels)
        slots = r.slots[r.row]
        activity = np.empty(len(slots), np.int64)
        confidence = np.empty(len(slots), np.float64)
        previous = np.empty(len(slots), np.int64)
        unknown = len(self.labels)
        for k in range(int(r.rank.max()) + 1):  # a device's k-th decisions after its k-1-th
            mine = slice(None) if k == 0 and not r.rank.any() else r.rank == k
            s = slots[mine]
            self.smoother.update(s, probs[mine])
            label, conf = self.smoother.get(s)
            published = np.where(conf >= self.unknown_threshold, label, unknown)
            previous[mine] = out.activity[s]
            out.activity[s] = published
            activity[mine], confidence[mine] = published, conf
            if self.walking is not None:
                at = r.row[mine]
                seen = r.gravity[mine]
                self._learn(s, published, conf, seen[:, :3], seen[:, 3], at, r)
        self.decisions += len(slots)
        seq = r.first[r.row] + r.stop - 1
        offset = seq - r.start[r.row]
        t = r.t[r.row]
        # without the device's t: the message's last sample came when it was received
        gateway = r.received[r.row] - (r.n[r.row] - 1 - offset) / self.rate_hz
        t = np.where(np.isnan(t), gateway, t + offset / self.rate_hz)
        devices = [r.messages[i].device for i in r.row.tolist()]
        return Decisions(
            self.labels, devices, seq, t, r.received[r.row], activity, confidence, probs, previous
        )


_WALK_ARRAYS = ("walk_run", "dropped", "walk_last", "walk_sum", "walk_s", "off_sum", "off_s")


def _triple(v: np.ndarray) -> tuple[float, float, float]:
    """A 3-vector (numpy) as a plain tuple of floats (for events and JSON)."""
    x, y, z = (float(c) for c in v)
    return x, y, z


def _angle_deg(a: np.ndarray, b: np.ndarray) -> float:
    cos = float(np.dot(a, b) / max(float(np.linalg.norm(a) * np.linalg.norm(b)), 1e-12))
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))


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
