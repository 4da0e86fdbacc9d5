"""The subscription: resume from a cursor, replay the stored log, follow live."""

from __future__ import annotations

import itertools
from collections import deque
from typing import TYPE_CHECKING, cast

import anyio

from ._errors import (
    BackendUnavailableError,
    EventsLostError,
    InvalidInputError,
    SessionNotFoundError,
)
from ._events import Cursor, DataKind, Event, Outcome, State, StoredEvent, format_event_id
from ._feed import PAGE_SIZE, BehindWindow, SessionFeed, shared_events
from ._wakeup import Wakeup, wakeup_factory
from .backends import SessionRecord, read_events
from .backends._retry import Backoff

if TYPE_CHECKING:
    from ._runtime import HubRuntime


def outcome_of(record: SessionRecord, generation: int) -> Outcome | None:
    """How ``generation`` of ``record``'s session ended, if the record knows."""
    if generation == record.generation:
        return (
            None
            if record.state is State.LIVE
            else Outcome(record.state, record.error, record.metadata, record.error_type)
        )
    if record.previous is not None and record.previous[0] == generation:
        return record.previous[1]
    return None


class Subscription:
    """The reading end of a session, returned by :meth:`Hub.subscribe`.

    ``async with hub.subscribe(session_id, after=last_id) as events:`` checks
    the session and the cursor; ``async for event in events`` then yields
    every stored event after the cursor, follows new ones as they are stored,
    and stops after the session's terminal state, with :attr:`outcome` set.
    Events arrive in order, each once. The subscription reads the stored log
    at its own pace, holding at most one page of events, so a slow reader
    neither slows the producer nor misses anything; leaving it early never
    affects the producer.

    Cancelling a pending ``__anext__`` loses nothing: the next call returns
    the event that would have come.
    """

    def __init__(self) -> None:
        raise TypeError("Subscription has no public constructor: use hub.subscribe()")

    @classmethod
    def _create(
        cls, runtime: HubRuntime, session_id: str, after: Cursor | None, *, batch_replay: bool
    ) -> Subscription:
        subscription = cls.__new__(cls)
        subscription._setup(runtime, session_id, after, batch_replay)
        return subscription

    def _setup(
        self, runtime: HubRuntime, session_id: str, after: Cursor | None, batch_replay: bool
    ) -> None:
        self._runtime = runtime
        self._backend = runtime.backend
        self._lease_ttl = runtime.settings.lease_ttl
        self._session_id = session_id
        self._after = after
        self._batch_replay = batch_replay
        self._entered = False  # between __aenter__ and __aexit__
        self._inside = False  # the async with block is running
        self._generation = 0
        self._delivered_seq = 0  # last seq handed to the caller: the resume point
        self._join_until = 0  # events up to this seq are joined (batch replay)
        # The events fetched and not yet delivered, as the caller receives
        # them: seqs _delivered_seq + 1 to _fetched_seq. The feed appends to
        # it directly while this subscription follows it.
        self._buffer: deque[Event] = deque()
        # While joining (batch replay): for each buffered event up to
        # _join_until, from the first, whether it is text (joinable).
        self._joinable: deque[bool] = deque()
        self._feed: SessionFeed | None = None  # none for a finished session
        # Level with the feed, which fills the buffer (SessionFeed.attach).
        self._following = False
        self._wakeup: Wakeup | None = None  # made when first following
        self._outcome: Outcome | None = None
        # The end, known from the read that fetched the generation's last
        # events: the outcome once they are delivered, with no read to learn it.
        self._ending: Outcome | None = None

    @property
    def session_id(self) -> str:
        return self._session_id

    @property
    def generation(self) -> int:
        """The generation being read (0 before the block is entered)."""
        return self._generation

    @property
    def _fetched_seq(self) -> int:
        """The last seq fetched: the buffer holds those after the delivered."""
        return self._delivered_seq + len(self._buffer)

    @property
    def outcome(self) -> Outcome | None:
        """How the session ended, once iteration has stopped; ``None`` before."""
        return self._outcome

    @property
    def last_event_id(self) -> str | None:
        """The id of the last event delivered, the cursor to resume after."""
        if self._generation == 0 or self._delivered_seq == 0:
            return None
        return format_event_id(self._generation, self._delivered_seq)

    # The block's two ends as plain methods: a reader of a live reply keeps
    # its subscription for as long as the reply lasts, and a generator-based
    # context manager (its generator and exit stack, and the feed pool's
    # generator inside) was 14 more objects per reader for the garbage
    # collector to walk.

    async def __aenter__(self) -> Subscription:
        if self._entered:
            raise RuntimeError("this Subscription has already been entered")
        self._entered = True
        try:
            await self._open()
        except BaseException:
            self._entered = False
            raise
        self._inside = True
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if not self._entered:
            raise RuntimeError("this Subscription has not been entered yet")
        self._entered = self._inside = False
        feed = self._feed
        if feed is None:
            return
        if self._following:
            self._following = False
            feed.detach(self)
        await self._runtime.feeds.leave(feed)

    async def _open(self) -> None:
        self._runtime.require_open()
        if self._batch_replay:  # joining needs each event's kind
            stored = await self._backend.read(self._session_id, after=self._after, limit=PAGE_SIZE)
            if stored is None:
                raise SessionNotFoundError(f"no session {self._session_id!r}")
            record = self._start(stored[0])
            self._accept_stored(*stored)
        else:
            built = await read_events(
                self._backend, self._session_id, after=self._after, limit=PAGE_SIZE
            )
            if built is None:
                raise SessionNotFoundError(f"no session {self._session_id!r}")
            record = self._start(built[0])
            self._accept(*built)
        if not record.state.terminal:
            # A live session is followed through the hub's feed. Its watch
            # opens after this read, and the feed reads the head after
            # that: what was stored in between is read from storage
            # (behind the feed's window), what comes later reaches the
            # feed. A finished session's log is final (reads are atomic
            # snapshots): it is read from storage, with no watch at all.
            self._feed = await self._runtime.feeds.join(self._session_id)

    def _start(self, record: SessionRecord) -> SessionRecord:
        """Check the cursor against the first read's ``record``, and start at it."""
        after = self._after
        if after is not None and (
            after.generation > record.generation
            or (after.generation == record.generation and after.seq > record.last_seq)
        ):
            raise InvalidInputError(
                f"event id {format_event_id(after.generation, after.seq)!r} is beyond "
                f"the end of session {self._session_id!r}"
            )
        self._generation = record.generation
        if after is not None and after.generation == record.generation:
            self._delivered_seq = after.seq
        self._join_until = record.last_seq if self._batch_replay else 0
        return record

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        buffer = self._buffer
        while not buffer and self._following:  # the feed fills it, or lets go
            assert self._wakeup is not None
            await self._wakeup.wait()
        if not buffer or self._delivered_seq < self._join_until or not self._inside:
            await self._wait_for_events()
            if self._delivered_seq < self._join_until:
                return await self._next_replayed()
        # Handed over as fetched; nothing awaits between taking it and moving
        # the cursor, so a cancelled __anext__ never loses or repeats one.
        self._delivered_seq += 1
        return buffer.popleft()

    async def _wait_for_events(self) -> None:
        """Take events from the feed, or storage, until the buffer holds one.

        :raises StopAsyncIteration: once the outcome is known and all is delivered.
        """
        if not self._inside:
            raise RuntimeError("iterate a subscription inside its async with block")
        feed = self._feed
        while not self._buffer:
            if self._outcome is None:
                self._outcome = self._ending
            if self._outcome is not None:
                raise StopAsyncIteration
            if feed is None:  # a finished session: all of it is stored
                await self._read_storage()
                continue
            if self._following:  # the feed fills the buffer, or releases it
                assert self._wakeup is not None
                await self._wakeup.wait()
                continue
            changed = feed.changed  # taken before looking, so no change slips by
            try:
                result = feed.read(self._generation, self._fetched_seq)
            except BehindWindow:  # a slow reader reads storage at its own pace
                await self._read_storage()
                continue
            if result is None:
                await changed.wait()
            elif not self._accept_stored(*result):
                # Level with storage, live: from here the feed hands this
                # reader each batch (checked again once it lets go).
                if self._wakeup is None:
                    self._wakeup = wakeup_factory()()
                self._following = True
                feed.attach(self, self._buffer, self._wakeup.wake)

    # -- what the feed calls while this subscription follows it (_feed.Follower) --

    def pushed(self, events: list[StoredEvent], shared: list[Event] | None) -> bool:
        buffer = self._buffer
        if len(buffer) + len(events) > PAGE_SIZE:  # not reading: it reads on itself, later
            self._following = False
            return False
        if shared is not None and events[0].seq > self._join_until:
            buffer.extend(shared)
        else:
            self._buffer_stored(events)
        assert self._wakeup is not None
        self._wakeup.wake()
        return True

    def released(self) -> None:
        self._following = False
        assert self._wakeup is not None
        self._wakeup.wake()

    def batches(self) -> EventBatches:
        """Iterate in lists of events instead of one event at a time.

        ``async for batch in events.batches():`` yields every event the
        subscription would, in order, each once, grouped as they were
        fetched: a reader at the head of a live stream gets each write batch
        as one list; a replay comes a page at a time. Each list is non-empty.
        Worth it when events come faster than one ``await`` each can take
        (forwarding to a socket, say: one write per list). Mixing it with
        plain iteration is allowed; both move the same cursor.
        """
        return EventBatches._create(self)

    def _take_from_window(self) -> list[Event]:
        """The feed's window right after the cursor, delivered now (the
        cheapest way to a batch: built from one slice of it)."""
        feed = self._feed
        if (
            self._buffer
            or self._following  # handed each batch: the window holds nothing newer
            or not self._inside
            or self._fetched_seq < self._join_until
            or feed is None
        ):
            return []
        taken = feed.take_events(self._generation, self._fetched_seq)
        if taken:
            self._delivered_seq += len(taken)
        return taken

    def _take_buffered(self) -> list[Event]:
        """Every buffered event that needs no joining, delivered now."""
        buffer = self._buffer
        if not buffer or self._delivered_seq < self._join_until:
            return []
        taken = list(buffer)
        self._delivered_seq = self._fetched_seq
        buffer.clear()
        return taken

    async def _next_replayed(self) -> Event:
        """Join a run of text events of one name into one event with the last id."""
        first = self._buffer[0]
        if not self._joinable[0]:
            return self._deliver(1)
        count = 1
        while True:
            # Flags cover the buffered events up to _join_until: past them, the run ends.
            for joinable, event in itertools.islice(
                zip(self._joinable, self._buffer, strict=False), count, None
            ):
                if not joinable or event.event != first.event:
                    return self._deliver(count)
                count += 1
            if (
                count < len(self._buffer)
                or self._fetched_seq >= self._join_until
                or not await self._fetch_stored()
            ):
                return self._deliver(count)

    def _deliver(self, count: int) -> Event:
        """Hand ``count`` buffered events to the caller as one event.

        Nothing awaits between taking them and moving the cursor, so a
        cancelled ``__anext__`` never loses or repeats an event.
        """
        taken = [self._buffer.popleft() for _ in range(count)]
        for _ in range(min(count, len(self._joinable))):
            self._joinable.popleft()
        self._delivered_seq += count
        if count == 1:
            return taken[0]
        text = "".join(cast(list[str], [event.data for event in taken]))
        return Event(format_event_id(self._generation, self._delivered_seq), taken[0].event, text)

    async def _fetch_stored(self) -> bool:
        """The next page of what was stored when the subscription began (to
        join): from the feed's window if it has it, else from storage."""
        try:
            result = (
                None if self._feed is None else self._feed.read(self._generation, self._fetched_seq)
            )
        except BehindWindow:
            result = None
        if result is not None and result[1]:
            return self._accept_stored(*result)
        return await self._read_storage()

    async def _read_storage(self) -> bool:
        """Read the next page from storage; ``True`` if it brought events or an outcome.

        Storage errors are retried for up to ``lease_ttl`` (storage restarting,
        a connection being replaced), then raised.
        """
        after = Cursor(self._generation, self._fetched_seq)
        backoff, give_up = Backoff(), None
        while True:
            try:
                return await self._read_page(after)
            except BackendUnavailableError:
                if give_up is None:
                    give_up = anyio.current_time() + self._lease_ttl
                delay = backoff.next_delay()
                if anyio.current_time() + delay > give_up:
                    raise
                await anyio.sleep(delay)

    async def _read_page(self, after: Cursor) -> bool:
        if self._feed is not None:  # shared with the session's other readers at this cursor
            stored = await self._feed.read_storage(after)
        elif self._batch_replay:  # joining needs each event's kind
            stored = await self._backend.read(self._session_id, after=after, limit=PAGE_SIZE)
        else:  # for this reader alone: built as it receives them, and no more
            built = await read_events(self._backend, self._session_id, after=after, limit=PAGE_SIZE)
            if built is not None:
                return self._accept(*built)
            stored = None
        if stored is None:
            raise SessionNotFoundError(
                f"session {self._session_id!r} was removed or expired while being read"
            )
        return self._accept_stored(*stored)

    def _accept_stored(self, record: SessionRecord, events: list[StoredEvent]) -> bool:
        """:meth:`_accept` for a page of stored events."""
        if events and record.generation == self._generation:
            self._buffer_stored(events)
            return self._fetched(record)
        return self._accept(record, [])

    def _buffer_stored(self, events: list[StoredEvent]) -> None:
        """Buffer ``events``, which follow those fetched, as the caller receives them."""
        # Events the backend built once for all readers; the few it could
        # not share (JSON, decoded per reader) are built here.
        taken = shared_events(events)
        if taken is None:
            generation = self._generation
            taken = [stored.to_event(generation) for stored in events]
        joining = self._join_until - events[0].seq + 1
        if joining > 0:
            self._joinable.extend(stored.kind is DataKind.TEXT for stored in events[:joining])
        self._buffer.extend(taken)

    def _accept(self, record: SessionRecord, events: list[Event]) -> bool:
        """Take in a read's ``record`` and page (the events that follow those
        fetched, as the caller receives them); ``True`` if it brought events
        or the outcome."""
        if record.generation != self._generation:
            outcome = outcome_of(record, self._generation)
            if outcome is None:
                raise SessionNotFoundError(
                    f"generation {self._generation} of session {self._session_id!r} was "
                    "replaced before its end could be read"
                )
            if record.previous_last_seq > self._fetched_seq:
                # A new generation replaced the log before this reader had
                # it all: ending with the outcome would present a short log
                # as the whole generation.
                raise EventsLostError(
                    f"session {self._session_id!r}: generation {self._generation} was "
                    f"replaced before its events {self._fetched_seq + 1}-"
                    f"{record.previous_last_seq} could be read"
                )
            self._outcome = outcome
            return True
        if events:
            self._buffer.extend(events)
            return self._fetched(record)
        if record.state.terminal and self._fetched_seq >= record.last_seq:
            self._outcome = outcome_of(record, self._generation)
            return True
        return False

    def _fetched(self, record: SessionRecord) -> bool:
        """Events up to ``record``'s were fetched: if they end its generation,
        the outcome is known once they are delivered, with no read to learn it."""
        if record.state.terminal and self._fetched_seq >= record.last_seq:
            self._ending = outcome_of(record, self._generation)
        return True


class EventBatches:
    """The iterator of :meth:`Subscription.batches`: lists of events.

    Cancelling a pending ``__anext__`` loses nothing, as with the
    subscription itself.
    """

    _subscription: Subscription

    def __init__(self) -> None:
        raise TypeError("EventBatches has no public constructor: use Subscription.batches()")

    @classmethod
    def _create(cls, subscription: Subscription) -> EventBatches:
        batches = cls.__new__(cls)
        batches._subscription = subscription
        return batches

    def __aiter__(self) -> EventBatches:
        return self

    async def __anext__(self) -> list[Event]:
        subscription = self._subscription
        taken = subscription._take_from_window()
        if taken:
            return taken
        first = await subscription.__anext__()
        rest = subscription._take_buffered()
        if rest:
            rest.insert(0, first)
            return rest
        return [first]
