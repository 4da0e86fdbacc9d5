"""Wake-up flags shared by the backends: one flag per open watch, set by a
notification, so a reader needs no buffer of messages and loses no wake-up."""

from __future__ import annotations

from collections.abc import AsyncIterator, Hashable, Iterator
from contextlib import asynccontextmanager

import anyio


class FlagWatch:
    """A :class:`~replayhub.backends.Watch` backed by an :class:`anyio.Event`."""

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event = anyio.Event()

    def notify(self) -> None:
        self._event.set()

    async def wait(self) -> None:
        await self._event.wait()
        self._event = anyio.Event()


class WatchRegistry:
    """Open watches by key; ``notify(key)`` wakes every watch on that key."""

    def __init__(self) -> None:
        self._watches: dict[Hashable, set[FlagWatch]] = {}

    def __contains__(self, key: Hashable) -> bool:
        return key in self._watches

    def __iter__(self) -> Iterator[Hashable]:
        return iter(list(self._watches))

    @asynccontextmanager
    async def open(self, key: Hashable) -> AsyncIterator[FlagWatch]:
        watch = FlagWatch()
        self._watches.setdefault(key, set()).add(watch)
        try:
            yield watch
        finally:
            watches = self._watches[key]
            watches.discard(watch)
            if not watches:
                del self._watches[key]

    def notify(self, key: Hashable) -> None:
        for watch in self._watches.get(key, ()):
            watch.notify()

    def notify_all(self) -> None:
        for watches in self._watches.values():
            for watch in watches:
                watch.notify()
