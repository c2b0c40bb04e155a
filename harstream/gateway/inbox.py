"""The inbox: what the event loop hands the prepare thread, bounded, never blocking.

The event loop puts what each read of the connection brought (an :class:`Arrival` of
routed messages) and lifecycle events (``signal``: a model swap, a device to erase, a
re-announcement: :mod:`harstream.gateway.batch`), which are never dropped and never
mixed with the data; the prepare thread takes everything queued, up to a batch, with
the events, or waits until something is.
Beyond ``capacity`` messages or ``capacity_bytes`` of payload ``put`` drops and says how
many. A busy take (messages were already waiting) may linger for the batch to fill (the
pipeline decides when: see :mod:`harstream.gateway.pipeline`).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass

from harstream.gateway.batch import Event
from harstream.gateway.routes import Route

__all__ = ["Arrival", "Inbox"]


@dataclass(frozen=True, slots=True)
class Arrival:
    """What one read of the connection brought, with when it came."""

    messages: list[Route]
    wall: float  # epoch seconds
    mono: float  # monotonic seconds


class Inbox:
    """A bounded hand-off from the event loop to the prepare thread. ``put`` never
    blocks: beyond ``capacity`` messages or ``capacity_bytes`` of payload it drops and
    says how many; ``take`` returns everything queued (up to a limit) or waits until
    something is."""

    def __init__(self, capacity: int, capacity_bytes: int = 64 * 1024 * 1024) -> None:
        self.capacity = capacity
        self.capacity_bytes = capacity_bytes
        self._arrivals: deque[Arrival] = deque()
        self._count = 0
        self._bytes = 0
        self.lingered = 0  # takes that waited for more messages (written by the taker)
        self.waiting_since = 0.0  # monotonic: when the inbox last went from empty to not
        self._wake_at = 1  # put wakes the taker once this many messages are queued
        self._events: list[Event] = []
        self._closed = False
        self._cond = threading.Condition()

    def __len__(self) -> int:
        return self._count

    def put(self, arrival: Arrival) -> int:
        """Queue ``arrival``; returns how many of its messages were dropped (full)."""
        with self._cond:
            room = self.capacity - self._count
            if room <= 0:
                return len(arrival.messages)
            room_bytes = self.capacity_bytes - self._bytes
            size = 0
            for k, message in enumerate(arrival.messages[:room]):
                size += len(message.payload)
                if size > room_bytes:
                    size -= len(message.payload)
                    room = k
                    break
            if room <= 0:
                return len(arrival.messages)
            dropped = max(0, len(arrival.messages) - room)
            if dropped:
                arrival = Arrival(arrival.messages[:room], arrival.wall, arrival.mono)
            self._bytes += size
            if not self._count:
                self.waiting_since = arrival.mono
            self._arrivals.append(arrival)
            self._count += len(arrival.messages)
            if self._count >= self._wake_at:  # a lingering taker sleeps until it is due
                self._cond.notify()
            return dropped

    def wake(self) -> None:
        """Make a waiting ``take`` return now (something besides messages is due)."""
        with self._cond:
            self._cond.notify()

    def signal(self, event: Event) -> None:
        """Hand the prepare thread a lifecycle event (it comes with the next take)."""
        with self._cond:
            self._events.append(event)
            self._cond.notify()

    def close(self) -> None:
        """No more puts: ``take`` returns what is left, then None."""
        with self._cond:
            self._closed = True
            self._cond.notify()

    def take(
        self, limit: int, timeout: float, linger_s: float = 0.0
    ) -> tuple[list[Arrival], list[Event]] | None:
        """Up to about ``limit`` messages (whole arrivals) and the events; waits
        up to ``timeout`` for the first. None once closed and empty.

        When messages were already waiting (they came while the caller was busy: the
        gateway is under load), waits up to ``linger_s`` more for the batch to fill, so
        that the per-batch costs are shared by more messages; when the caller was idle,
        the first message goes at once."""
        with self._cond:
            busy = bool(self._arrivals)
            if not busy and not self._events and not self._closed:
                self._cond.wait(timeout)
            if busy and linger_s > 0:
                self.lingered += 1
                deadline = time.monotonic() + linger_s
                self._wake_at = limit  # woken early only by a full batch (or wake, close)
                while self._count < limit and not self._closed:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
                self._wake_at = 1
            if not self._arrivals and self._closed:
                return None
            taken: list[Arrival] = []
            count = 0
            while self._arrivals and (
                count == 0 or count + len(self._arrivals[0].messages) <= limit
            ):
                arrival = self._arrivals.popleft()
                taken.append(arrival)
                count += len(arrival.messages)
                self._bytes -= sum(len(m.payload) for m in arrival.messages)
            self._count -= count
            events, self._events = self._events, []
            return taken, events
