"""A finished session's log rewritten in large entries.

A producer at chat rates stores each token as it comes: a log of one stream
entry per event, which every later reader parses entry by entry (a
10,000-token reply is 10,000 entries, each a bulk string and a header to
decode, where the same events written in batches are a dozen). So the
producer's backend keeps a copy of what it stored, packed as it goes (the
payloads' bytes and a length per event, no object per event), and once the
session has ended rewrites the log from that copy (``pack.lua``), in one
script that first checks the log is the one the copy was made of: same
generation, ended, same event count, as many entries, same first and last
entry. Nothing else writes to a generation's log once it has ended, and only
its producer wrote to it before; anything else found there leaves the log as
it is.

The rewrite is an optimisation and nothing waits for it: it runs in the
background, one at a time, and a failure (storage unreachable, a refusal)
is logged and the log left as written, which reads the same.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import cast

import anyio

from ..._events import DataKind, StoredEvent
from ._keys import json_name

__all__ = ["CopyBudget", "LogCopy", "PackJob", "Packer"]

logger = logging.getLogger(__name__)

#: A packed entry holds at most this many events, or about this many bytes
#: of payloads: a page (3,072 events) is then three or four entries.
PACKED_EVENTS = 1024
PACKED_BYTES = 32 * 1024
#: A copy past this many bytes is dropped: that log is left as written.
COPY_AT_MOST = 8 * 1024 * 1024
#: The copies of one backend's producers hold at most this many bytes in
#: all: a copy that would grow past it is dropped.
COPIES_AT_MOST = 64 * 1024 * 1024
#: Logs of fewer entries are left as written: a reader parses them in well
#: under a millisecond, and the rewrite would cost a round trip.
PACK_FROM_ENTRIES = 64
#: Finished sessions waiting for their rewrite at most; more are left as
#: written.
QUEUED_AT_MOST = 256


class CopyBudget:
    """The bytes a backend's copies hold, within :data:`COPIES_AT_MOST`."""

    __slots__ = ("used",)

    def __init__(self) -> None:
        self.used = 0

    def take(self, size: int) -> bool:
        if self.used + size > COPIES_AT_MOST:
            return False
        self.used += size
        return True


class LogCopy:
    """What one producer stored in its generation's log, in entries of up
    to :data:`PACKED_EVENTS` events, in ``encode_batch``'s format; the
    sealed entries' bytes counted in ``budget`` until :meth:`release`."""

    __slots__ = (
        "_body",
        "_budget",
        "_count",
        "_header",
        "_lengths",
        "_run",
        "_run_start",
        "_size",
        "entries",
        "first_entry",
        "next_seq",
        "sealed",
    )

    def __init__(self, budget: CopyBudget) -> None:
        self._budget = budget
        self.entries = 0
        """Entries the producer stored in the log (one per write batch)."""
        self.first_entry = 0
        """The last seq of the log's first entry (its id's second part)."""
        self.next_seq = 1
        """The seq the next stored batch starts at; 0 once dropped."""
        self.sealed: list[tuple[int, bytes]] = []
        """Packed entries: the seq of each one's last event, its value."""
        self._size = 0
        self._header: list[str] = []  # the runs closed in the entry being packed
        self._body = bytearray()
        self._run: tuple[DataKind, str] | None = None
        self._run_start = 0
        self._lengths: list[int] = []
        self._count = 0  # events in the entry being packed

    @property
    def dropped(self) -> bool:
        return self.next_seq == 0

    def add(self, events: Sequence[StoredEvent]) -> None:
        """Copy a batch ``append.lua`` answered stored."""
        if not events or self.dropped:
            return
        if events[0].seq != self.next_seq:
            # A batch sent again (a retry) whose events the log already holds
            # was skipped by the script: nothing new was stored. Anything
            # else cannot be told apart from a log the copy does not match.
            if events[-1].seq >= self.next_seq:
                self.drop()
            return
        self.entries += 1
        if self.entries == 1:
            self.first_entry = events[-1].seq
        body = self._body
        lengths = self._lengths
        for event in events:
            if self._count == PACKED_EVENTS or len(body) >= PACKED_BYTES:
                self._seal(event.seq - 1)
                if self.dropped:  # past the budget
                    return
                body, lengths = self._body, self._lengths
            kind, payload = event.kind, event.payload
            if self._run is None or self._run[0] is not kind or self._run[1] != event.event:
                self._close_run()
                self._run = (kind, event.event)
                self._run_start = len(body)
                lengths = self._lengths
            body += cast(bytes, payload) if kind is DataKind.BYTES else cast(str, payload).encode()
            lengths.append(len(payload))
            self._count += 1
        self.next_seq = events[-1].seq + 1
        if self._size + len(body) > COPY_AT_MOST:
            self.drop()

    def drop(self) -> None:
        """Give the copy up: the log stays as written."""
        self.release()
        self.next_seq = 0
        self.sealed = []
        self._header, self._body, self._lengths = [], bytearray(), []
        self._run, self._count = None, 0

    def release(self) -> None:
        """Give the copy's bytes back to the budget (it is done with)."""
        self._budget.used -= self._size
        self._size = 0

    def worth_packing(self) -> bool:
        """Whether the log has many more entries than its packed form."""
        if self.dropped or self.entries < PACK_FROM_ENTRIES:
            return False
        packed = len(self.sealed) + (1 if self._count else 0)
        return packed * 2 <= self.entries

    def packed_entries(self) -> list[tuple[int, bytes]]:
        """Every packed entry (the last one sealed now)."""
        if self._count:
            self._seal(self.next_seq - 1)
        return self.sealed

    def _close_run(self) -> None:
        if self._run is None:
            return
        kind, name = self._run
        size = len(self._body) - self._run_start
        lengths = ",".join(map(str, self._lengths))
        self._header.append(f"[{int(kind)},{json_name(name)},{size},[{lengths}]]")
        self._run, self._lengths = None, []

    def _seal(self, last_seq: int) -> None:
        """Close the entry being packed, whose last event is ``last_seq``."""
        self._close_run()
        value = b"[%b]\n%b" % (",".join(self._header).encode(), bytes(self._body))
        self._header, self._body, self._count = [], bytearray(), 0
        if not self._budget.take(len(value)):
            self.drop()
            return
        self.sealed.append((last_seq, value))
        self._size += len(value)


@dataclass(frozen=True, slots=True)
class PackJob:
    session_id: str
    generation: int
    copy: LogCopy


class Packer:
    """Runs rewrites one at a time, in the background."""

    def __init__(self, pack: Callable[[PackJob], Awaitable[None]]) -> None:
        self._pack = pack
        self._send, self._receive = anyio.create_memory_object_stream[PackJob](QUEUED_AT_MOST)
        self._idle = anyio.Event()

    def submit(self, job: PackJob) -> None:
        try:
            self._send.send_nowait(job)
        except (anyio.WouldBlock, anyio.ClosedResourceError):
            logger.debug("not rewriting the log of session %r: too many waiting", job.session_id)
            job.copy.release()

    async def run(self) -> None:
        try:
            async with self._receive:
                async for job in self._receive:
                    await self._pack(job)
        finally:
            self._idle.set()

    async def close(self, *, wait: float) -> None:
        """Take no more jobs; wait up to ``wait`` seconds for those queued."""
        self._send.close()
        with anyio.move_on_after(wait):
            await self._idle.wait()
