"""Wake one waiting task, on the running loop's own primitives.

A reader level with its session's feed sleeps until the feed hands it the
next batch: one wake-up per reader per batch. Built on the loop's own
primitives rather than a fresh ``anyio.Event`` per wait (which wraps the
loop's event, itself a waiter list around a future): on asyncio a future,
on Trio a parking lot. Waiting is a checkpoint (cancellation lands there).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from typing import Any, Protocol

from .backends._clock import running_trio


class Wakeup(Protocol):
    async def wait(self) -> None:
        """Sleep until :meth:`wake` (a wake with nobody waiting is dropped:
        the waker changed what the waiter looks at before it waits)."""

    def wake(self) -> None: ...


class _AsyncioWakeup:
    __slots__ = ("_loop", "_waiters")

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._waiters: list[asyncio.Future[None]] = []

    async def wait(self) -> None:
        waiter = self._loop.create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except BaseException:
            if waiter in self._waiters:  # cancelled before a wake
                self._waiters.remove(waiter)
            raise

    def wake(self) -> None:
        waiters = self._waiters
        if waiters:
            self._waiters = []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)


class _TrioWakeup:
    __slots__ = ("_lot",)

    def __init__(self) -> None:
        self._lot: Any = sys.modules["trio"].lowlevel.ParkingLot()

    async def wait(self) -> None:
        await self._lot.park()

    def wake(self) -> None:
        self._lot.unpark_all()


def wakeup_factory() -> Callable[[], Wakeup]:
    """What makes a :class:`Wakeup` on the loop running now."""
    return _TrioWakeup if running_trio() else _AsyncioWakeup
