"""One task per hub keeps the leases of all its producers.

A producer keeps its claim by renewing its lease every ``lease_ttl / 3`` (the
heartbeat), and renews at once when its claim's watch wakes (a cancel
request, the session removed): a renewal also reads the cancel flag. With a
heartbeat task and a watching task per producer, 300 live replies kept 600
idle tasks of about 26 objects each (the task, its coroutines, context,
cancel scope and finish event), which every full garbage collection walks
while the process stands still. Here the hub's timer (``_recheck``) says
who is due, each renewal runs in a task of its own that ends with it (a
renewal that hangs must not hold back the others' leases), and a watch's
wake-up is a call.
"""

from __future__ import annotations

from typing import Protocol

import anyio
from anyio.abc import TaskGroup, TaskStatus

from ._recheck import RecheckTimer


class Renews(Protocol):
    """What the keeper needs of a producer."""

    async def renew_lease(self) -> float | None:
        """Renew the lease now and act on what storage says; the seconds
        until the next timed renewal, or ``None`` for none (the claim is
        lost, or storage refuses the producer)."""
        ...


class _Due:
    """A producer's place in the keeper's timer (``_recheck.Wakeable``)."""

    __slots__ = ("_keeper", "_producer")

    def __init__(self, keeper: LeaseKeeper, producer: Renews) -> None:
        self._keeper, self._producer = keeper, producer

    def notify(self) -> None:
        self._keeper._start(self._producer)


class LeaseKeeper:
    """Renews each added producer's lease when due, or at once on request."""

    def __init__(self) -> None:
        self._timer = RecheckTimer()  # the next timed renewal of each member
        self._members: dict[Renews, _Due] = {}
        self._running: dict[Renews, anyio.CancelScope] = {}
        self._again: set[Renews] = set()  # asked for while a renewal was out
        self._task_group: TaskGroup | None = None

    def add(self, producer: Renews) -> None:
        """Keep ``producer``'s lease from now on, renewing it at once (so a
        cancel request made since its claim is seen)."""
        self._members[producer] = _Due(self, producer)
        self._start(producer)

    def discard(self, producer: Renews) -> None:
        """Stop renewing ``producer``'s lease; a renewal under way is cancelled."""
        due = self._members.pop(producer, None)
        if due is not None:
            self._timer.forget(due)
        self._again.discard(producer)
        scope = self._running.pop(producer, None)
        if scope is not None:
            scope.cancel()

    def renew_soon(self, producer: Renews) -> None:
        """Renew ``producer``'s lease at once (its claim's watch woke): after
        the renewal under way, if there is one, which may have read the
        cancel flag before the change that woke the watch."""
        due = self._members.get(producer)
        if due is None:
            return
        if producer in self._running:
            self._again.add(producer)
        else:
            self._timer.forget(due)
            self._start(producer)

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
                task_group.start_soon(self._timer.run)
                task_status.started()
                await anyio.sleep_forever()
        finally:
            self._task_group = None

    def _start(self, producer: Renews) -> None:
        task_group = self._task_group
        if task_group is None or producer in self._running or producer not in self._members:
            return  # the hub is closing: nothing more is renewed
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
            self._start(producer)
        elif delay is not None:
            self._timer.wake_at(anyio.current_time() + delay, self._members[producer])
