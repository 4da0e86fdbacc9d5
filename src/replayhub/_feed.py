"""One shared reader per session for all of a hub's subscriptions to it.

A hundred browsers on one reply should cost one storage read per write
batch, not a hundred. The feed keeps a window of the session's newest events
(as read by the latest fetch) and serves every subscription whose cursor lies
inside it; one that fell behind the window reads storage itself, at its own
pace, so a slow reader still gets everything with bounded memory.

No wake-up is lost: a subscription that was woken asks for data from a fetch
that *started after* its wake-up (``fresh_from``, a fetch ticket), so the
change that woke it is in what it reads.
"""

from __future__ import annotations

import anyio

from ._events import Cursor, StoredEvent
from .backends import Backend, SessionRecord

#: Events the feed keeps (up to twice as many between trims): several pages,
#: so readers a little behind still share.
WINDOW = 2048


class BehindWindow(Exception):
    """The cursor is older than the window: read storage directly."""


class SessionFeed:
    def __init__(self, backend: Backend, session_id: str, *, page_size: int) -> None:
        self._backend = backend
        self._session_id = session_id
        self._page_size = page_size
        self.users = 0
        self._record: SessionRecord | None = None
        self._removed = False
        self._events: list[StoredEvent] = []  # at most 2 * WINDOW
        self._last_seq = 0  # of the newest event in the window (its generation's)
        self._tickets = 0  # fetches started
        self._done = 0  # ticket of the newest completed fetch
        self._inflight: tuple[int, anyio.Event] | None = None

    def ticket(self) -> int:
        """The ticket of the next fetch to start: one that sees every change so far."""
        return self._tickets + 1

    async def read(
        self, generation: int, after_seq: int, *, fresh_from: int
    ) -> tuple[SessionRecord, list[StoredEvent]] | None:
        """Events of ``generation`` after ``after_seq`` (up to a page) and the
        record, from a fetch numbered ``fresh_from`` or later.

        :raises BehindWindow: if the cursor is older than the window.
        :returns: ``None`` if the session no longer exists.
        """
        while True:
            if self._done >= fresh_from:
                if self._removed:
                    return None
                record = self._record
                assert record is not None
                if record.generation != generation:
                    if record.generation > generation:
                        return record, []  # the reader's generation was replaced
                    fresh_from = self.ticket()  # the window is older than the reader
                    continue
                first_seq = self._last_seq - len(self._events) + 1
                if after_seq < first_seq - 1:
                    raise BehindWindow
                if after_seq < self._last_seq:
                    start = after_seq + 1 - first_seq
                    return record, self._events[start : start + self._page_size]
                if after_seq == record.last_seq:
                    return record, []  # caught up with storage as of that fetch
                fresh_from = self.ticket()  # storage holds more than the window
                continue
            inflight = self._inflight
            if inflight is not None:
                await inflight[1].wait()
            else:
                await self._fetch(Cursor(generation, after_seq))

    async def _fetch(self, reader: Cursor) -> None:
        self._tickets += 1
        ticket, finished = self._tickets, anyio.Event()
        self._inflight = (ticket, finished)
        try:
            record = self._record
            after = reader
            if record is not None and record.generation == reader.generation:
                # Read on from the window's end, or jump ahead to a reader
                # that is past it rather than crawl the log up to it.
                after = Cursor(reader.generation, max(self._last_seq, reader.seq))
            result = await self._backend.read(self._session_id, after=after, limit=self._page_size)
            if result is None:
                self._removed = True
            else:
                self._removed = False
                self._accept(after, *result)
            self._done = ticket
        finally:
            # If the fetch was cancelled, waiters wake and one of them fetches.
            self._inflight = None
            finished.set()

    def _accept(self, after: Cursor, record: SessionRecord, events: list[StoredEvent]) -> None:
        start = after.seq if after.generation == record.generation else 0
        if start != self._last_seq or (
            self._record is not None and record.generation != self._record.generation
        ):
            self._events.clear()  # a jump, or a new generation from its start
        self._last_seq = start
        self._record = record
        if events:
            self._events += events
            self._last_seq = events[-1].seq
            if len(self._events) > 2 * WINDOW:  # trimmed now and then, not per fetch
                del self._events[:-WINDOW]
