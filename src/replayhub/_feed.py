"""One follower per session for all of a hub's subscriptions to it.

A hundred browsers on one reply should cost one wake-up each per write batch
and no storage read at all. The feed holds the hub's one watch on the session
and a window of its newest events. Batches the backend hands over as they are
stored (the Redis notification carries them) extend the window at once; any
other change (a state change, a batch the feed missed) has the watch call
the feed, which reads storage from the window's end in a short task (the
feed keeps no task of its own). A subscription level with the feed is
a *follower*: the feed appends each batch to its buffer and wakes it, as a
queue would (one wake-up and no look-up per reader per batch). Any other
change releases the followers, which then look for themselves: they wait on
:attr:`changed` and take their slice of the window, and one whose cursor is
older than the window reads storage itself, at its own pace, so a slow
reader still gets everything with bounded memory.

No change is lost: the watch opens before any subscription's first read, so
whatever is stored after that read reaches the feed, as a batch or a wake-up.
The feed also re-reads once the producer's lease would have run out, so a
producer that vanished is noticed (and stored as abandoned) even if no
message ever comes.
"""

from __future__ import annotations

import logging
import operator
from collections import deque
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Protocol, cast

import anyio
from anyio.abc import TaskGroup, TaskStatus

from ._errors import BackendUnavailableError, EventsLostError, HubClosedError, SessionNotFoundError
from ._events import Cursor, Event, PackedEvents, StoredEvent
from ._recheck import RecheckTimer, recheck_after
from ._relay_watch import relayed
from .backends import Backend, SessionRecord, Watch
from .backends._retry import Backoff

logger = logging.getLogger(__name__)

_shared_event = operator.attrgetter("shared")


def shared_events(events: list[StoredEvent]) -> list[Event] | None:
    """The Events every reader of ``events`` shares, taken in C; ``None``
    if one has none (JSON, decoded per reader)."""
    if len(events) == 1:  # a token per write: the common batch
        only = events[0].shared
        return None if only is None else [only]
    shared: list[Event | None] = list(map(_shared_event, events))
    # (not `None in`: that would call Event.__eq__ per event)
    return cast(list[Event], shared) if all(shared) else None


#: Events the feed keeps (up to twice as many between trims): a reader up to
#: this far behind the head still shares the window instead of reading storage.
#: Not smaller: readers of a fast stream fall hundreds of events behind, and
#: with 256, 100 readers in one process each read storage (39,000 events/s
#: delivered fell to 4,000). The cost is memory: the window keeps its events
#: packed (``_events.PackedEvents``), which the garbage collector does not walk,
#: and as objects only those that readers take from it (a follower is handed
#: its batches instead).
WINDOW = 2048
#: Events fetched per read: the bound on what a subscription holds in memory
#: (about 0.6 MB of small events: a buffered event is its Event, about 190
#: bytes with a 20-character payload; 2,048 of them were 0.6 MB when each also
#: had its StoredEvent, 305 bytes in all). Reads cost a round trip each,
#: about as much as building 500 events: 512 made a 10,000-event replay half
#: round trips, and 3,072 takes it in four reads, not five (0.3-0.5 ms less).
PAGE_SIZE = 3072


class BehindWindow(Exception):
    """The cursor is older than the window: read storage directly."""


class Follower(Protocol):
    """A reader the feed hands each batch to (:meth:`SessionFeed.attach`)."""

    def pushed(self, events: list[StoredEvent], shared: list[Event] | None) -> bool:
        """Take the batch that follows what the reader holds; ``False`` to
        decline it (a reader too far behind), which ends the following.
        ``shared``: the batch's events as every reader receives them, built
        once for all, unless one must be built per reader (JSON)."""

    def released(self) -> None:
        """The feed stopped handing batches over: look for yourself."""


class _SharedRead:
    """A storage read under way, for every reader at its cursor."""

    __slots__ = ("done", "error", "result")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.result: tuple[SessionRecord, list[StoredEvent]] | None = None
        self.error: BaseException | None = None


class SessionFeed:
    """
    :param lease_ttl: how long a failing storage is retried before waiting
        readers are told; also the longest a reader waits without a re-read.
    """

    def __init__(
        self,
        backend: Backend,
        session_id: str,
        *,
        page_size: int,
        lease_ttl: float,
        rechecks: RecheckTimer,
    ) -> None:
        self._backend = backend
        self.session_id = session_id
        self._page_size = page_size
        self._lease_ttl = lease_ttl
        self._rechecks = rechecks
        self.users = 0
        self.started = anyio.Event()
        """Set once the feed is open, or failed to open."""
        self.running = False
        # Made when a reader asks for it: a batch nobody waits for makes none.
        # From the running loop's own class, found once: anyio.Event() looks
        # the loop up on every call, a microsecond per batch per session.
        self._changed: anyio.Event | None = None
        self._new_event = type(anyio.Event())
        self._record: SessionRecord | None = None  # as of the latest read
        self._removed = False
        self._unreachable: BackendUnavailableError | None = None  # for lease_ttl
        # At most 2 * WINDOW events, the last of them _last_seq's.
        self._events = PackedEvents()
        # The same events built for readers taking them from the window, each
        # once for all of them, and the Event they share (none for JSON, which
        # each reader decodes); None until a reader takes it. The Events in a
        # list of their own, so that a batch reader's take is one slice in C
        # (100 batch readers: 8-12% slower reading them off the StoredEvents).
        # Both cover the window's first len(_built) events: while every reader
        # is handed each batch, nothing is added to them (_pad_built).
        self._built: list[StoredEvent | None] = []
        self._shared: list[Event | None] = []
        self._last_seq = 0  # of the newest event in the window (its generation's)
        self._watch: Watch | None = None
        self._watch_manager: AbstractAsyncContextManager[Watch] | None = None
        self._task_group: TaskGroup | None = None  # the pool's: reads run there
        self._reading: anyio.CancelScope | None = None  # a read under way
        self._read_again = False  # the watch woke while it was under way
        self._ended: tuple[str, BaseException] | None = None  # stopped following
        self._storage_reads: dict[tuple[int, int], _SharedRead] = {}
        # Readers level with the window and its live generation (ordered),
        # with their buffers and wake-ups (attach).
        self._followers: dict[Follower, tuple[deque[Event], Callable[[], None]]] = {}

    async def read_storage(self, after: Cursor) -> tuple[SessionRecord, list[StoredEvent]] | None:
        """A page of storage after ``after``, for readers behind the window.

        Readers of one session fall behind together (a fast stream, readers
        one event per ``await``) and would each read and decode the same
        page: a read already under way for the same cursor is shared. Only
        while it runs: a later reader reads afresh, so no reader gets an
        older snapshot than it would have read itself.
        """
        key = (after.generation, after.seq)
        shared = self._storage_reads.get(key)
        if shared is None:
            shared = self._storage_reads[key] = _SharedRead()
            try:
                shared.result = await self._backend.read(
                    self.session_id, after=after, limit=self._page_size
                )
            except BaseException as exc:
                shared.error = exc
                raise
            finally:
                del self._storage_reads[key]
                shared.done.set()
            return shared.result
        await shared.done.wait()
        if shared.error is not None:
            if isinstance(shared.error, Exception):
                raise shared.error
            # The reading reader was cancelled: this one reads for itself.
            return await self.read_storage(after)
        return shared.result

    @property
    def changed(self) -> anyio.Event:
        """Set, and replaced, whenever the feed moves: take it before a
        :meth:`read`, and wait on it if the read found nothing."""
        changed = self._changed
        if changed is None:
            changed = self._changed = self._new_event()
        return changed

    def read(
        self, generation: int, after_seq: int
    ) -> tuple[SessionRecord, list[StoredEvent]] | None:
        """The record and up to a page of events of ``generation`` after
        ``after_seq``, from the window; no events when the reader is level
        with storage; ``None`` while the feed has yet to catch up with the
        reader. After either of the last two, wait for :attr:`changed`.

        :raises BehindWindow: if the cursor is older than the window.
        :raises SessionNotFoundError: if the session was removed or expired.
        :raises BackendUnavailableError: if storage has failed for ``lease_ttl``.
        :raises HubClosedError: if the hub closed.
        """
        if self._troubled and not self._final_for(generation):
            self._raise_trouble()
        record = self._record
        if record is None or record.generation < generation:
            return None  # the feed has yet to read what the reader read
        if record.generation > generation:
            return record, []  # the reader's generation was replaced
        last_seq = self._last_seq
        if after_seq < last_seq:
            start = after_seq + len(self._events) - last_seq
            if start < 0:
                raise BehindWindow
            return record, self._built_from(start)
        if after_seq == last_seq >= record.last_seq:
            return record, []
        return None  # storage holds more than the window: being read

    def attach(self, follower: Follower, buffer: deque[Event], wake: Callable[[], None]) -> None:
        """Hand ``follower`` every batch that extends the window from now on,
        until a change other than a batch releases it.

        Only for a reader that :meth:`read` found level with storage, in the
        live generation: each batch then follows exactly what it holds.
        The common batch, one event that every reader shares, goes straight
        into ``buffer`` (the reader's own, holding the events it has yet to
        hand out), and ``wake()`` is called: no call into the reader per
        token. A follower whose buffer holds a page (:data:`PAGE_SIZE`) is
        released instead, to read on at its own pace.
        """
        self._followers[follower] = (buffer, wake)

    def detach(self, follower: Follower) -> None:
        self._followers.pop(follower, None)

    def _final_for(self, generation: int) -> bool:
        """Whether the window holds all ``generation`` will ever have: its
        readers can still be served from it after the feed stopped."""
        record = self._record
        return (
            record is not None
            and not self._removed
            and record.generation == generation
            and record.state.terminal
            and self._last_seq >= record.last_seq
        )

    async def settled(self) -> None:
        """Return once the feed knows the end of the generation it follows
        (or has stopped)."""
        while self.running and not self._removed:
            record = self._record
            if record is not None and record.state.terminal:
                return
            await self.changed.wait()

    @property
    def _troubled(self) -> bool:
        """Readers must be told something rather than served."""
        return self._removed or self._ended is not None or self._unreachable is not None

    def _raise_trouble(self) -> None:
        if self._ended is not None:
            message, cause = self._ended
            if isinstance(cause, HubClosedError):
                raise HubClosedError(message)
            if isinstance(cause, EventsLostError):
                raise EventsLostError(str(cause)) from cause
            raise BackendUnavailableError(message) from cause
        if self._unreachable is not None:
            raise BackendUnavailableError(str(self._unreachable)) from self._unreachable
        raise SessionNotFoundError(
            f"session {self.session_id!r} was removed or expired while being read"
        )

    def take_events(self, generation: int, after_seq: int) -> list[Event]:
        """Up to a page of the events after ``after_seq``, as a reader
        receives them, if the window holds them; else nothing (then
        :meth:`read` tells what to do)."""
        record = self._record
        if (
            record is None
            or record.generation != generation
            or (self._troubled and not self._final_for(generation))
        ):
            return []  # read() says what to do
        start = after_seq + len(self._events) - self._last_seq
        if start < 0:
            return []
        end = start + self._page_size
        taken = self._shared[start:end]
        # (not `None in`: that would call Event.__eq__ per event)
        if all(taken) and len(taken) == min(end, len(self._events)) - start:
            return cast(list[Event], taken)
        built = self._built_from(start)
        taken = self._shared[start:end]
        if all(taken):
            return cast(list[Event], taken)
        # JSON: decoded for each reader, so that none shares a value.
        return [stored.to_event(generation) for stored in built]

    def _built_from(self, start: int) -> list[StoredEvent]:
        """Up to a page of the window from index ``start``, as objects built
        once for every reader that takes them."""
        end = start + self._page_size
        self._pad_built(len(self._events))
        built = self._built[start:end]
        if all(built):
            return cast(list[StoredEvent], built)
        assert self._record is not None
        generation = self._record.generation
        fresh = self._events.unpack(start, end, share=generation)
        for index, stored in enumerate(built):
            if stored is None:
                stored = built[index] = self._built[start + index] = fresh[index]
                self._shared[start + index] = stored.shared
        return cast(list[StoredEvent], built)

    # -- following: the watch, and reads of storage in short tasks ----------------

    async def open(self, task_group: TaskGroup) -> None:
        """Open the watch and start the first read (in ``task_group``, as
        every read of the feed's); raises what opening the watch raises."""
        self._task_group = task_group
        manager = self._open_watch(task_group)
        self._watch = await manager.__aenter__()
        self._watch_manager = manager
        self.running = True
        self._storage_changed()

    async def close(self) -> None:
        """Stop following (the last reader has left): end a read under way,
        close the watch."""
        self._stop("the feed was closed", HubClosedError())
        manager, self._watch_manager = self._watch_manager, None
        if manager is not None:
            await manager.__aexit__(None, None, None)

    def _stop(self, message: str, cause: BaseException) -> None:
        """Stop following: readers still waiting are told ``message``."""
        if self._reading is not None:
            self._reading.cancel()
            self._reading = None
        if self._watch is not None:
            self._rechecks.forget(self._watch)
        self.running = False
        if self._ended is None:
            self._ended = (message, cause)
        self._moved()

    def hub_closed(self) -> None:
        self._stop("the hub was closed", HubClosedError())

    def _open_watch(self, task_group: TaskGroup) -> AbstractAsyncContextManager[Watch]:
        call_on_change = getattr(self._backend, "call_on_change", None)
        watch_appends = getattr(self._backend, "watch_appends", None)
        if call_on_change is not None:
            watch: AbstractAsyncContextManager[Watch] = call_on_change(
                self.session_id, self._storage_changed, on_append=self._on_append
            )
            return watch
        if watch_appends is None:  # every batch is a wake-up and a read
            watch = self._backend.watch(self.session_id)
        else:
            watch = watch_appends(self.session_id, self._on_append)
        return relayed(watch, self._storage_changed, task_group)

    def _storage_changed(self) -> None:
        """The watch woke (a change other than a batch handed over, a batch
        that does not follow the window, the recheck time): read storage from
        the window's end, in a task that ends once level with it."""
        if not self.running or self._task_group is None:
            return
        if self._reading is not None:
            self._read_again = True  # the read under way may have missed it
            return
        scope = self._reading = anyio.CancelScope()
        self._task_group.start_soon(self._read_until_level, scope)

    async def _read_until_level(self, scope: anyio.CancelScope) -> None:
        try:
            with scope:
                while True:
                    self._read_again = False
                    await self._catch_up()
                    if not self._read_again:
                        break
                record = self._record
                wait = self._lease_ttl if record is None else recheck_after(record, self._lease_ttl)
                assert self._watch is not None
                self._rechecks.wake_at(anyio.current_time() + wait, self._watch)
        except Exception as exc:  # a bug, or a backend gone: readers are told
            logger.exception("following session %r failed", self.session_id)
            self._reading = None
            self._stop(f"following session {self.session_id!r} failed: {exc}", exc)
        finally:
            if self._reading is scope:
                self._reading = None

    async def _catch_up(self) -> None:
        """Read until level with storage, retrying while it is unreachable."""
        backoff, give_up = Backoff(), None
        while True:
            try:
                if await self._fetch():
                    return
            except BackendUnavailableError as exc:
                now = anyio.current_time()
                if give_up is None:
                    give_up = now + self._lease_ttl
                elif now >= give_up and self._unreachable is None:
                    self._unreachable = exc  # waiting readers give up; the feed goes on
                    self._moved()
                await anyio.sleep(backoff.next_delay())

    async def _fetch(self) -> bool:
        """Read on from the window's end; ``True`` once level with storage."""
        record = self._record
        result: tuple[SessionRecord, list[StoredEvent]] | None
        if record is None:
            # The first read only finds the head: readers behind it read storage.
            head = await self._backend.head(self.session_id)
            after, result = None, None if head is None else (head, [])
        else:
            after = Cursor(record.generation, self._last_seq)
            result = await self._backend.read(self.session_id, after=after, limit=self._page_size)
        self._unreachable = None
        if result is None:
            self._record, self._removed = None, True
            self._moved()
            return True
        record, events = result
        self._accept(after, record, events)
        return self._last_seq >= record.last_seq

    def _accept(
        self, after: Cursor | None, record: SessionRecord, events: list[StoredEvent]
    ) -> None:
        self._release_followers()  # before the window changes generation
        old = self._record
        if after is None or old is None:
            self._clear_window(last_seq=record.last_seq)  # start at the head
        elif record.generation != old.generation:
            self._clear_window(last_seq=0)  # a new generation
            if events:
                self._extend(record.generation, events)
        else:
            # Batches handed over during the read may have moved the window on.
            fresh = events[self._last_seq - after.seq :]
            if fresh:
                self._extend(record.generation, fresh)
        self._record, self._removed = record, False
        self._moved()

    def _on_append(self, generation: int, events: list[StoredEvent]) -> None:
        """A batch just stored, handed over by the backend."""
        record = self._record
        if record is None or record.generation != generation:
            self._read_instead()  # a generation the feed has yet to read
            return
        last_seq = self._last_seq
        first = events[0].seq
        if first != last_seq + 1:  # (the next batch is the common case)
            if events[-1].seq <= last_seq:
                return  # read already
            if first > last_seq + 1:
                self._read_instead()  # one was missed
                return
            events = events[last_seq + 1 - first :]
        elif len(events) == 1 and (shared := events[0].shared) is not None:
            # The common batch, a token per write: what _extend and _moved do,
            # in one pass (every token comes here).
            event = events[0]
            window = self._events  # ends at _last_seq: this event follows it
            window.names.append(event.event)
            window.kinds.append(event.kind)
            window.payloads.append(event.payload)
            self._last_seq = first
            kept = len(window.payloads)
            if self.users > len(self._followers):
                self._keep_built(generation, events, kept)
            if kept > 2 * WINDOW:
                self._trim(kept)
            full: list[Follower] | None = None
            for follower, (buffer, wake) in self._followers.items():
                if len(buffer) < PAGE_SIZE:
                    buffer.append(shared)
                    wake()
                else:  # not reading: it reads on itself, later
                    full = [follower] if full is None else [*full, follower]
            if full is not None:
                for follower in full:
                    del self._followers[follower]
                    follower.released()
            changed = self._changed
            if changed is not None:
                self._changed = None
                changed.set()
            return
        self._extend(generation, events)
        self._moved(release=False)  # the followers have it

    def _read_instead(self) -> None:
        """A batch that does not follow the window: read storage instead."""
        if self._watch is not None:
            self._watch.notify()

    def _clear_window(self, *, last_seq: int) -> None:
        """Empty the window; the next batch it takes follows ``last_seq``."""
        self._events, self._built, self._shared = PackedEvents(last_seq + 1), [], []
        self._last_seq = last_seq

    def _pad_built(self, covered: int) -> None:
        """Make the built objects cover the window's first ``covered`` events
        (None: not built)."""
        missing = covered - len(self._built)
        if missing:
            self._built += [None] * missing
            self._shared += [None] * missing

    def _extend(self, generation: int, events: list[StoredEvent]) -> None:
        kept = self._events.extend(events)
        if self.users > len(self._followers):
            self._keep_built(generation, events, kept)
        # Else every reader is handed each batch: nothing kept as objects.
        self._last_seq = events[-1].seq
        if kept > 2 * WINDOW:  # trimmed now and then, not per batch
            self._trim(kept)
        followers = self._followers
        if followers:
            # Each follower buffers the Events it hands out: listed here
            # once for all of them (listed per follower, 100 followers of a
            # fast stream delivered about 4% less than they now do).
            shared = shared_events(events)
            declined: list[Follower] | None = None
            for follower in followers:
                if not follower.pushed(events, shared):
                    declined = [follower] if declined is None else [*declined, follower]
            for follower in declined or ():
                del followers[follower]

    def _keep_built(self, generation: int, events: list[StoredEvent], kept: int) -> None:
        """Some reader takes events from the window: the objects of
        ``events``, just added (``kept`` in all), will be wanted, and they
        are built already."""
        self._pad_built(kept - len(events))
        built = [event.share(generation) for event in events]
        self._built += built
        self._shared += [event.shared for event in built]

    def _trim(self, kept: int) -> None:
        """Keep the newest WINDOW of the ``kept`` events in the window."""
        drop = kept - WINDOW
        self._events.keep_last(WINDOW)
        del self._built[:drop]
        del self._shared[:drop]

    def _moved(self, *, release: bool = True) -> None:
        """Wake the readers waiting for the feed; with ``release``, a change
        other than a batch: followers too, to look for themselves."""
        if release:
            self._release_followers()
        changed, self._changed = self._changed, None
        if changed is not None:
            changed.set()

    def _release_followers(self) -> None:
        followers = self._followers
        if followers:
            self._followers = {}
            for follower in followers:
                follower.released()


class FeedPool:
    """A hub's feeds: one per session followed in this process, shared by
    every subscription to it. A feed has no task of its own: its reads of
    storage run in the pool's task group, each ending once level.

    :param lease_ttl: see :class:`SessionFeed`.
    """

    def __init__(self, backend: Backend, *, lease_ttl: float) -> None:
        self._backend = backend
        self._lease_ttl = lease_ttl
        self._rechecks = RecheckTimer()
        self._feeds: dict[str, SessionFeed] = {}
        self._task_group: TaskGroup | None = None

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run the feeds until cancelled; started once feeds can be opened."""
        try:
            async with anyio.create_task_group() as task_group:
                task_group.start_soon(self._rechecks.run)
                self._task_group = task_group
                task_status.started()
                await anyio.sleep_forever()
        finally:
            self._task_group = None
            for feed in list(self._feeds.values()):
                feed.hub_closed()

    async def settle(self, session_ids: list[str], *, grace: float) -> None:
        """Wait until the feeds of ``session_ids`` know how their sessions
        ended, at most ``grace`` seconds, shielded from cancellation."""
        with anyio.move_on_after(grace, shield=True):
            for session_id in session_ids:
                feed = self._feeds.get(session_id)
                if feed is not None:
                    await feed.settled()

    async def join(self, session_id: str) -> SessionFeed:
        """The feed of ``session_id``, its watch open, until :meth:`leave`.

        A pair of calls rather than a context manager: a live reader keeps
        what it holds for hours, and the generator and its frame were two
        more objects per reader for the collector to walk.

        :raises HubClosedError: if the pool is not running.
        """
        while True:
            feed = self._feeds.get(session_id)
            if feed is None:
                task_group = self._task_group
                if task_group is None:
                    raise HubClosedError("the hub was closed")
                feed = self._feeds[session_id] = SessionFeed(
                    self._backend,
                    session_id,
                    page_size=PAGE_SIZE,
                    lease_ttl=self._lease_ttl,
                    rechecks=self._rechecks,
                )
                feed.users += 1
                try:
                    await feed.open(task_group)
                except BaseException:
                    if self._feeds.get(session_id) is feed:
                        del self._feeds[session_id]  # others waiting try again
                    await self.leave(feed)
                    raise
                finally:
                    feed.started.set()
                return feed
            feed.users += 1
            try:
                await feed.started.wait()
            except BaseException:  # cancelled while another reader opens it
                await self.leave(feed)
                raise
            if feed.running:
                return feed
            # It failed to open, or stopped following: open another (and get
            # any error first-hand).
            if self._feeds.get(session_id) is feed:
                del self._feeds[session_id]
            await self.leave(feed)

    async def leave(self, feed: SessionFeed) -> None:
        """Give back a feed :meth:`join` returned (shielded: it always closes)."""
        feed.users -= 1
        if not feed.users:
            if self._feeds.get(feed.session_id) is feed:
                del self._feeds[feed.session_id]
            with anyio.CancelScope(shield=True):  # the watch is closed whatever happens
                await feed.close()
