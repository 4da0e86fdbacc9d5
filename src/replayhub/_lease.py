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

Where the backend renews many leases in one call (``renew_many``, one
script call on Redis), the renewals that fall due together go in one:
claimed together, 300 producers came due in the same instant every
heartbeat, and 300 script calls at once held up every reply's tokens for
tens of milliseconds.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

import anyio
from anyio.abc import TaskGroup, TaskStatus

from ._recheck import RecheckTimer
from .backends import Renewal

#: A backend's ``renew_many`` with the hub's lease time bound in.
RenewMany = Callable[[Sequence[tuple[str, int]]], Awaitable[list[Renewal | Exception]]]


class Renews(Protocol):
    """What the keeper needs of a producer."""

    async def renew_lease(self) -> float | None:
        """Renew the lease now and act on what storage says; the seconds
        until the next timed renewal, or ``None`` for none (the claim is
        lost, or storage refuses the producer)."""
        ...

    @property
    def lease(self) -> tuple[str, int]:
        """The session and generation to renew (a renewal in a batch)."""
        ...

    @property
    def lease_deadline(self) -> float:
        """When the lease runs out (loop time): a batch waits no longer."""
        ...

    def lease_renewed(self, started: float, result: Renewal | Exception) -> float | None:
        """What :meth:`renew_lease` does with its call's result, for a
        renewal sent in a batch at ``started``."""
        ...


class _Due:
    """A producer's place in the keeper's timer (``_recheck.Wakeable``)."""

    __slots__ = ("_keeper", "_producer")

    def __init__(self, keeper: LeaseKeeper, producer: Renews) -> None:
        self._keeper, self._producer = keeper, producer

    def notify(self) -> None:
        self._keeper._start(self._producer)


class LeaseKeeper:
    """Renews each added producer's lease when due, or at once on request.

    :param renew_many: renews many leases in one call; without it, each
        renewal is a call of its own.
    """

    def __init__(self, renew_many: RenewMany | None = None) -> None:
        self._timer = RecheckTimer()  # the next timed renewal of each member
        self._renew_many = renew_many
        self._members: dict[Renews, _Due] = {}
        # Each renewal under way, by a scope of its own (a batch member's is
        # never entered: it says whether the result is still wanted).
        self._running: dict[Renews, anyio.CancelScope] = {}
        self._gathered: list[tuple[Renews, anyio.CancelScope]] = []  # for the next batch
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
        if self._renew_many is None:
            task_group.start_soon(self._renew, producer, scope)
            return
        self._gathered.append((producer, scope))
        if len(self._gathered) == 1:
            # Those started before this task runs join the batch: the timer
            # wakes every producer due at once in one go.
            task_group.start_soon(self._renew_gathered, self._renew_many)

    async def _renew(self, producer: Renews, scope: anyio.CancelScope) -> None:
        if self._running.get(producer) is not scope:
            return  # discarded before this task ran: nothing is sent
        delay: float | None = None
        with scope:
            delay = await producer.renew_lease()
        if self._running.get(producer) is not scope:
            return  # discarded meanwhile
        self._renewed(producer, delay)

    async def _renew_gathered(self, renew_many: RenewMany) -> None:
        gathered, self._gathered = self._gathered, []
        batch = [
            (producer, scope)
            for producer, scope in gathered
            if self._running.get(producer) is scope
        ]
        if not batch:
            return  # all discarded before this task ran: nothing is sent
        started = anyio.current_time()
        # One answer for all, so no longer than the soonest lease lasts: a
        # renewal that lands after its lease ran out keeps nothing.
        limit = min(producer.lease_deadline for producer, _ in batch) - started
        results: list[Renewal | Exception]
        try:
            with anyio.fail_after(max(limit, 0.0)):
                results = await renew_many([producer.lease for producer, _ in batch])
        except Exception as exc:  # the whole call failed: each renewal did
            results = [exc] * len(batch)
        for (producer, scope), result in zip(batch, results, strict=True):
            if self._running.get(producer) is scope:  # else discarded meanwhile
                self._renewed(producer, producer.lease_renewed(started, result))

    def _renewed(self, producer: Renews, delay: float | None) -> None:
        """A renewal of ``producer`` ended: the next one is due in ``delay``
        seconds (``None``: none timed), or at once if a wake-up came meanwhile."""
        del self._running[producer]
        if producer in self._again:
            self._again.discard(producer)
            self._start(producer)
        elif delay is not None:
            self._timer.wake_at(anyio.current_time() + delay, self._members[producer])
