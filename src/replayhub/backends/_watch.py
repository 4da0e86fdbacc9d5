"""Wake-ups shared by the backends: one flag per open watch, set by a
notification, so a reader needs no buffer of messages and loses no wake-up.

A watch may also take stored batches as they come (``on_append``): the
backend hands them over instead of setting the flag, so a reader that keeps a
copy of the log's head needs no read to learn what was written.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Mapping

import anyio

from .._events import StoredEvent

AppendListener = Callable[[int, list[StoredEvent]], None]
"""Called with a generation and a batch of its events just stored, in order."""


class FlagWatch:
    """A :class:`~replayhub.backends.Watch` backed by an :class:`anyio.Event`,
    or by a call (``on_notify``) where nobody waits on it.

    It is also its own ``async with`` block (:meth:`WatchRegistry.open`),
    registered while the block runs: a live reply's watches last as long as
    it does, and a generator-based block was two more objects each for the
    garbage collector to walk.
    """

    __slots__ = ("_event", "_key", "_registry", "on_append", "on_notify")

    def __init__(
        self,
        registry: WatchRegistry,
        key: Hashable,
        on_append: AppendListener | None = None,
        on_notify: Callable[[], None] | None = None,
    ) -> None:
        self._registry = registry
        self._key = key
        # None where the wake-up is a call: nobody waits on the watch.
        self._event = anyio.Event() if on_notify is None else None
        self.on_append = on_append
        self.on_notify = on_notify

    async def __aenter__(self) -> FlagWatch:
        self._registry._add(self._key, self)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._registry._discard(self._key, self)

    def notify(self) -> None:
        if self._event is not None:
            self._event.set()
        elif self.on_notify is not None:
            self.on_notify()

    async def wait(self) -> None:
        if self._event is None:
            raise RuntimeError("a watch that reports by a call is not waited on")
        await self._event.wait()
        self._event = anyio.Event()


class WatchRegistry:
    """Open watches by key; ``notify(key)`` wakes every watch on that key."""

    def __init__(self) -> None:
        self._watches: dict[Hashable, set[FlagWatch]] = {}
        #: The keys watched (``key in registry.watched``: a lookup with no
        #: call, for a caller that asks per event).
        self.watched: Mapping[Hashable, object] = self._watches

    def __contains__(self, key: Hashable) -> bool:
        return key in self._watches

    def __iter__(self) -> Iterator[Hashable]:
        return iter(list(self._watches))

    def open(
        self,
        key: Hashable,
        *,
        on_append: AppendListener | None = None,
        on_notify: Callable[[], None] | None = None,
    ) -> FlagWatch:
        """A watch on ``key``, registered while its ``async with`` block runs."""
        return FlagWatch(self, key, on_append, on_notify)

    def _add(self, key: Hashable, watch: FlagWatch) -> None:
        self._watches.setdefault(key, set()).add(watch)

    def _discard(self, key: Hashable, watch: FlagWatch) -> None:
        watches = self._watches.get(key)
        if watches is not None:
            watches.discard(watch)
            if not watches:
                del self._watches[key]

    def notify(self, key: Hashable) -> None:
        for watch in self._watches.get(key, ()):
            watch.notify()

    def push(self, key: Hashable, generation: int, events: list[StoredEvent]) -> None:
        """Hand a stored batch to the watches on ``key`` that take batches
        and wake the others."""
        for watch in self._watches.get(key, ()):
            if watch.on_append is None:
                watch.notify()
            else:
                watch.on_append(generation, events)

    def notify_all(self) -> None:
        for watches in self._watches.values():
            for watch in watches:
                watch.notify()
