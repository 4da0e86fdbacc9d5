"""Wake-ups at deadlines, from one timer task: for waiting readers (the feeds
of a hub) and for lease renewals (``_lease``).

A reader waiting for news of a live session must still read again once the
producer's lease would have run out, to notice (and store) a producer that
vanished without a word. Bounding every wait with its own cancel scope costs
more than the rest of a wake-up (6-12 µs on either event loop, measured);
here a wait only records its deadline, and one task wakes whoever is due.
"""

from __future__ import annotations

import heapq
import itertools
import math
from typing import TYPE_CHECKING, Protocol

import anyio

if TYPE_CHECKING:
    from .backends import SessionRecord


def recheck_after(record: SessionRecord, lease_ttl: float) -> float:
    """Seconds a reader waiting on ``record``'s session may go without a
    wake-up before reading again.

    A live session is re-read once its lease would have expired, so a
    producer that vanished is noticed (and stored as abandoned) even if no
    message ever arrives.
    """
    if record.lease_remaining is None:
        return lease_ttl
    return min(lease_ttl, record.lease_remaining + 0.005)


class Wakeable(Protocol):
    def notify(self) -> None: ...


class RecheckTimer:
    def __init__(self) -> None:
        self._due: dict[Wakeable, float] = {}  # the earliest wake-up each one has
        self._heap: list[tuple[float, int, Wakeable]] = []
        self._order = itertools.count()  # ties never compare the watches
        self._next = math.inf  # when the timer task wakes next
        self._changed = anyio.Event()

    def wake_at(self, deadline: float, watch: Wakeable) -> None:
        """Notify ``watch`` at ``deadline`` (loop time) or earlier.

        A watch keeps its earliest pending deadline: a later one is met by it
        (the wake-up comes early, which waiting readers allow).
        """
        if self._due.get(watch, math.inf) <= deadline:
            return
        self._due[watch] = deadline
        heapq.heappush(self._heap, (deadline, next(self._order), watch))
        if deadline < self._next:
            self._changed.set()

    def forget(self, watch: Wakeable) -> None:
        """Drop ``watch``'s pending wake-up (its reader has left)."""
        self._due.pop(watch, None)

    async def run(self) -> None:
        heap, due = self._heap, self._due
        while True:
            now = anyio.current_time()
            while heap and heap[0][0] <= now:
                deadline, _, watch = heapq.heappop(heap)
                if due.get(watch) == deadline:  # else forgotten or superseded
                    del due[watch]
                    watch.notify()
            if len(heap) > 2 * len(due) + 64:  # mostly stale entries: rebuild
                heap[:] = [(deadline, next(self._order), watch) for watch, deadline in due.items()]
                heapq.heapify(heap)
            self._next = heap[0][0] if heap else math.inf
            with anyio.move_on_after(self._next - now):
                await self._changed.wait()
            self._changed = anyio.Event()
