"""Page reads for a backend that reads a page of a log as columns."""

from __future__ import annotations

from .._events import Cursor, Event, PackedEvents, StoredEvent
from ._protocol import SessionRecord


class ReadsPages:
    """:meth:`~replayhub.backends.Backend.read` and
    :meth:`~replayhub.backends.ReadsEvents.read_events` from one
    :meth:`_read_page`, which a subclass provides: the page as columns,
    built into the objects each caller needs."""

    async def _read_page(
        self, session_id: str, *, after: Cursor | None, limit: int
    ) -> tuple[SessionRecord, PackedEvents, int, int] | None:
        """The record, and the page at indexes ``start`` to ``stop`` of the
        columns returned (``None`` if the session does not exist)."""
        raise NotImplementedError

    async def read(
        self, session_id: str, *, after: Cursor | None, limit: int
    ) -> tuple[SessionRecord, list[StoredEvent]] | None:
        page = await self._read_page(session_id, after=after, limit=limit)
        if page is None:
            return None
        record, events, start, stop = page
        # Each with the Event all readers of a shared read take (all but JSON).
        return record, events.unpack(start, stop, share=record.generation)

    async def read_events(
        self, session_id: str, *, after: Cursor | None, limit: int
    ) -> tuple[SessionRecord, list[Event]] | None:
        page = await self._read_page(session_id, after=after, limit=limit)
        if page is None:
            return None
        record, events, start, stop = page
        return record, events.events(record.generation, start, stop)
