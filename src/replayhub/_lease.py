"""One task per hub keeps the leases of all its producers.

A producer keeps its claim by renewing its lease every ``lease_ttl / 3`` (the
heartbeat), and renews at once when its claim's watch wakes (a cancel
request, the session removed): a renewal also reads the cancel flag. With a
heartbeat task and a watching task per producer, 300 live replies kept 600
idle tasks of about 26 objects each (the task, its coroutines, context,
cancel scope and finish event), which every full garbage collection walks
while the process stands still. Here one task renews whoever is due, each
renewal in a task of its own that ends with it (a renewal that hangs must
not hold back the others' leases), and a watch's wake-up is a call.
"""

from __future__ import annotations

import heapq
import itertools
import math
from typing import Protocol

import anyio
from anyio.abc import TaskGroup, TaskStatus


class Renews(Protocol):
    """What the keeper needs of a producer."""

    async def renew_lease(self) -> float | None:
        """Renew the lease now and act on what storage says; the seconds
        until the next timed renewal, or ``None`` for none (the claim is
        lost, or storage refuses the producer)."""
        ...


class LeaseKeeper:
    """Renews each added producer's lease when due, or at once on request."""

    def __init__(self) -> None:
        self._due: dict[Renews, float] = {}  # each member's next renewal (loop time)
        self._heap: list[tuple[float, int, Renews]] = []  # may hold stale entries
        self._order = itertools.count()  # ties in the heap never compare producers
        self._running: dict[Renews, anyio.CancelScope] = {}
        self._again: set[Renews] = set()  # asked for while a renewal was out
        self._members: set[Renews] = set()
        self._wake: anyio.Event | None = None
        self._task_group: TaskGroup | None = None

    def add(self, producer: Renews) -> None:
        """Keep ``producer``'s lease from now on, renewing it at once (so a
        cancel request made since its claim is seen)."""
        self._members.add(producer)
        self._schedule(producer, anyio.current_time())

    def discard(self, producer: Renews) -> None:
        """Stop renewing ``producer``'s lease; a renewal under way is cancelled."""
        self._members.discard(producer)
        self._due.pop(producer, None)
        self._again.discard(producer)
        scope = self._running.pop(producer, None)
        if scope is not None:
            scope.cancel()

    def renew_soon(self, producer: Renews) -> None:
        """Renew ``producer``'s lease at once (its claim's watch woke): after
        the renewal under way, if there is one, which may have read the
        cancel flag before the change that woke the watch."""
        if producer not in self._members:
            return
        if producer in self._running:
            self._again.add(producer)
        else:
            self._schedule(producer, anyio.current_time())

    @property
    def task_group(self) -> TaskGroup:
        """The keeper's task group, for tasks that last as long as a producer."""
        if self._task_group is None:
            raise RuntimeError("the lease keeper is not running")
        return self._task_group

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Renew leases until cancelled; started once producers can be added."""
        try:
            async with anyio.create_task_group() as task_group:
                self._task_group = task_group
                self._wake = wake = anyio.Event()
                task_status.started()
                while True:
                    self._start_due(task_group)
                    heap = self._heap
                    wait = heap[0][0] - anyio.current_time() if heap else math.inf
                    with anyio.move_on_after(wait):
                        await wake.wait()
                    self._wake = wake = anyio.Event()
        finally:
            self._task_group = self._wake = None

    def _schedule(self, producer: Renews, when: float) -> None:
        if self._due.get(producer, math.inf) <= when:
            return  # an earlier renewal is due already
        self._due[producer] = when
        heapq.heappush(self._heap, (when, next(self._order), producer))
        if self._wake is not None and self._heap[0][2] is producer:
            self._wake.set()

    def _start_due(self, task_group: TaskGroup) -> None:
        heap, now = self._heap, anyio.current_time()
        while heap and heap[0][0] <= now:
            when, _, producer = heapq.heappop(heap)
            if self._due.get(producer) != when:
                continue  # discarded, or moved earlier
            del self._due[producer]
            scope = self._running[producer] = anyio.CancelScope()
            task_group.start_soon(self._renew, producer, scope)

    async def _renew(self, producer: Renews, scope: anyio.CancelScope) -> None:
        if self._running.get(producer) is not scope:
            return  # discarded before this task ran: nothing is sent
        delay: float | None = None
        with scope:
            delay = await producer.renew_lease()
        if self._running.get(producer) is not scope:
            return  # discarded meanwhile
        del self._running[producer]
        if producer in self._again:
            self._again.discard(producer)
            self._schedule(producer, anyio.current_time())
        elif delay is not None:
            self._schedule(producer, anyio.current_time() + delay)
