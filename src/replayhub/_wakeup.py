"""Wake one waiting task, on the running loop's own primitives.

A reader level with its session's feed sleeps until the feed hands it the
next batch: one wake-up per reader per batch. Built on the loop's own
primitives rather than a fresh ``anyio.Event`` per wait (which wraps the
loop's event, itself a waiter list around a future): on asyncio the waiting
task's future, on Trio the task itself, rescheduled. Waiting is a
checkpoint (cancellation lands there).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from .backends._clock import running_trio


class Wakeup(Protocol):
    def wait(self) -> Awaitable[None]:
        """Sleep until :meth:`wake` (a wake with nobody waiting is dropped:
        the waker changed what the waiter looks at before it waits).

        A plain method returning what to await, not a coroutine: a reader
        level with a live reply waits here once per batch, and every object
        of a wait in progress is one more for the garbage collector's young
        passes to walk (at 300 sessions these passes hold the waits of every
        reader at once)."""

    def wake(self) -> None: ...


class _AsyncioWakeup:
    """The waiting task's future itself is awaited (nothing wraps it).

    One reader per subscription is the rule, so one waiter is kept; a second
    task waiting at the same time is kept in a list made only then.
    """

    __slots__ = ("_loop", "_more", "_waiter")

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._waiter: asyncio.Future[None] | None = None
        self._more: list[asyncio.Future[None]] | None = None

    def wait(self) -> asyncio.Future[None]:
        # A cancelled wait needs no clean-up: the task cancels the future,
        # and wake() passes over a future that is done.
        waiter = self._loop.create_future()
        current = self._waiter
        if current is None or current.done():
            self._waiter = waiter
        elif self._more is None:
            self._more = [waiter]
        else:
            self._more.append(waiter)
        return waiter

    def wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)
        if self._more is not None:
            more, self._more = self._more, None
            for waiter in more:
                if not waiter.done():
                    waiter.set_result(None)


class _TrioWakeup:
    """The waiting task sleeps in Trio's own wait and is rescheduled
    directly: a parking lot (its coroutine, an abort closure and its cell,
    a dict entry per wait; a generator and a list per wake) made every
    reader's wait on Trio about 2 us dearer, and its objects were about a
    seventh of what each of Trio's gen1 collections promoted at 150 sessions.

    As on asyncio, one waiter is kept, and a second task waiting at the
    same time in a list made only then. A task is rescheduled only while it
    waits here: a cancelled wait leaves first (its abort function).
    """

    __slots__ = ("_abort", "_lowlevel", "_more", "_waiter")

    def __init__(self) -> None:
        self._lowlevel: Any = sys.modules["trio"].lowlevel
        self._waiter: Any = None  # the waiting task
        self._more: list[Any] | None = None
        self._abort = self._waiter_cancelled  # bound once, not per wait

    def wait(self) -> Awaitable[None]:
        lowlevel = self._lowlevel
        task = lowlevel.current_task()
        if self._waiter is None:
            self._waiter = task
            return lowlevel.wait_task_rescheduled(self._abort)  # type: ignore[no-any-return]
        more = self._more
        if more is None:
            more = self._more = []
        more.append(task)

        def cancelled(_: object) -> Any:
            more.remove(task)
            return lowlevel.Abort.SUCCEEDED

        return lowlevel.wait_task_rescheduled(cancelled)  # type: ignore[no-any-return]

    def _waiter_cancelled(self, _: object) -> Any:
        self._waiter = None
        return self._lowlevel.Abort.SUCCEEDED

    def wake(self) -> None:
        reschedule = self._lowlevel.reschedule
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            reschedule(waiter)
        if self._more is not None:
            more, self._more = self._more, None
            for task in more:
                reschedule(task)


def wakeup_factory() -> Callable[[], Wakeup]:
    """What makes a :class:`Wakeup` on the loop running now."""
    return _TrioWakeup if running_trio() else _AsyncioWakeup
