"""A finished session's log rewritten in large entries.

A producer at chat rates stores each token as it comes: a log of one stream
entry per event, which every later reader parses entry by entry (a
10,000-token reply is 10,000 entries, each a bulk string and a header to
decode, where the same events written in batches are a dozen). So the
producer's backend keeps a copy of what it stored (the very values it sent,
a reference each: nothing more is done per write), and once the session has
ended merges them into entries of up to :data:`PACKED_EVENTS` events and
rewrites the log from them (``pack.lua``), in one script that first checks
the log is the one the copy was made of: same generation, ended, same event
count, as many entries, same first and last entry. Nothing else writes to a
generation's log once it has ended, and only its producer wrote to it
before; anything else found there leaves the log as it is.

The rewrite is an optimisation and nothing waits for it: it runs in the
background, one at a time, and a failure (storage unreachable, a refusal)
is logged and the log left as written, which reads the same.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.lowlevel

from ..._events import StoredEvent
from ._keys import Runs, header_shape, json_name

__all__ = ["CopyBudget", "LogCopy", "PackJob", "Packer"]

logger = logging.getLogger(__name__)

#: A new packed entry begins once the one being filled holds this many
#: events, or this many bytes of payloads: a page (3,072 events) is then
#: three or four entries.
PACKED_EVENTS = 1024
PACKED_BYTES = 32 * 1024
#: A stored batch of this many events or more stays an entry as written (a
#: fast producer's batches read well as they are).
KEPT_WHOLE = 64
#: A copy past this many bytes is dropped: that log is left as written.
COPY_AT_MOST = 8 * 1024 * 1024
#: The copies of one backend's producers hold at most this many bytes in
#: all: a copy that would grow past it is dropped.
COPIES_AT_MOST = 64 * 1024 * 1024
#: Logs of fewer small entries are left as written: a reader parses them in
#: well under a millisecond, and the rewrite would cost a round trip.
PACK_FROM_ENTRIES = 64
#: Finished sessions waiting for their rewrite at most; more are left as
#: written.
QUEUED_AT_MOST = 256
#: Stored values merged per turn of the event loop (~0.3 ms).
_MERGED_PER_TURN = 512


class CopyBudget:
    """The bytes a backend's copies hold, within :data:`COPIES_AT_MOST`."""

    __slots__ = ("used",)

    def __init__(self) -> None:
        self.used = 0


class LogCopy:
    """What one producer stored in its generation's log: each stored value
    (``encode_batch``'s format), its bytes counted in ``budget`` until
    :meth:`release`."""

    __slots__ = ("_budget", "_size", "_small", "_values", "next_seq")

    def __init__(self, budget: CopyBudget) -> None:
        self._budget = budget
        self.next_seq = 1
        """The seq the next stored batch starts at; 0 once dropped."""
        self._values: list[bytes] = []  # one per entry the log holds, in order
        self._small = 0  # entries of fewer than KEPT_WHOLE events
        self._size = 0

    @property
    def dropped(self) -> bool:
        return self.next_seq == 0

    @property
    def entries(self) -> int:
        """Entries the producer stored in the log (one per write batch)."""
        return len(self._values)

    @property
    def first_entry(self) -> int:
        """The last seq of the log's first entry (its id's second part)."""
        first = self._values[0]
        return header_shape(first[: first.index(b"\n")])[1]

    def add(self, events: Sequence[StoredEvent], batch: bytes) -> None:
        """Copy a batch ``append.lua`` answered stored (``batch``: the
        value it stored, ``encode_batch(events)``). On every write of a
        Redis producer: a few operations, whatever the batch holds."""
        if not events or self.next_seq == 0:
            return
        if events[0].seq != self.next_seq:
            # A batch sent again (a retry) whose events the log already holds
            # was skipped by the script: nothing new was stored. Anything
            # else cannot be told apart from a log the copy does not match.
            if events[-1].seq >= self.next_seq:
                self.drop()
            return
        size = len(batch)
        budget = self._budget  # (CopyBudget.take, in line: every write comes here)
        if self._size + size > COPY_AT_MOST or budget.used + size > COPIES_AT_MOST:
            self.drop()
            return
        budget.used += size
        self._size += size
        self._values.append(batch)
        if len(events) < KEPT_WHOLE:
            self._small += 1
        self.next_seq = events[-1].seq + 1

    def drop(self) -> None:
        """Give the copy up: the log stays as written."""
        self.release()
        self.next_seq = 0
        self._values = []

    def release(self) -> None:
        """Give the copy's bytes back to the budget (it is done with)."""
        self._budget.used -= self._size
        self._size = 0

    def worth_packing(self) -> bool:
        """Whether the log has many small entries to merge."""
        return not self.dropped and self._small >= PACK_FROM_ENTRIES

    async def packed_entries(self) -> list[tuple[int, bytes]]:
        """The log in large entries: each entry's last seq and its value.

        Consecutive small values merge into one entry (a run of one kind
        and name goes on across them) until it holds :data:`PACKED_EVENTS`
        events or :data:`PACKED_BYTES` bytes of payloads; a value of
        :data:`KEPT_WHOLE` events or more stays an entry of its own. About
        0.6 us a value: a checkpoint every :data:`_MERGED_PER_TURN`, so a
        long reply's merge does not hold the loop."""
        entries: list[tuple[int, bytes]] = []
        filling = _Entry()
        seq = 0  # the last seq of the values gone through
        for index, value in enumerate(self._values):
            if index % _MERGED_PER_TURN == _MERGED_PER_TURN - 1:
                await anyio.lowlevel.checkpoint()
            split = value.index(b"\n")
            runs, count, _ = header_shape(value[:split])
            if filling.count and (
                count >= KEPT_WHOLE
                or filling.count >= PACKED_EVENTS
                or filling.size >= PACKED_BYTES
            ):
                entries.append((seq, filling.value()))
                filling = _Entry()
            seq += count
            if count >= KEPT_WHOLE:
                entries.append((seq, value))
            else:
                filling.take(runs, value, split + 1)
        if filling.count:
            entries.append((seq, filling.value()))
        return entries


class _Entry:
    """A packed entry being filled: its runs, merged, and its payloads."""

    __slots__ = ("_chunks", "_runs", "count", "size")

    def __init__(self) -> None:
        self._runs: list[list[Any]] = []  # [kind number, name, byte length, lengths]
        self._chunks: list[bytes] = []
        self.count = 0
        self.size = 0

    def take(self, runs: Runs, value: bytes, at: int) -> None:
        """Append a stored value's runs, whose payloads start at ``at``."""
        for kind, name, size, lengths in runs:
            last = self._runs[-1] if self._runs else None
            if last is not None and last[0] == kind and last[1] == name:
                last[2] += size
                last[3].extend(lengths)
            else:
                self._runs.append([kind, name, size, list(lengths)])
            self.count += len(lengths)
        self._chunks.append(value[at:])
        self.size += len(value) - at

    def value(self) -> bytes:
        """The entry, as ``encode_batch`` would write its events."""
        header = ",".join(
            f"[{kind},{json_name(name)},{size},[{','.join(map(str, lengths))}]]"
            for kind, name, size, lengths in self._runs
        )
        return b"[%b]\n%b" % (header.encode(), b"".join(self._chunks))


@dataclass(frozen=True, slots=True)
class PackJob:
    session_id: str
    generation: int
    copy: LogCopy


class Packer:
    """Runs rewrites one at a time, in the background. ``pack`` gives each
    job's copy back to its budget, whatever happens; a job never run (the
    queue full) is given back here."""

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
                    try:
                        await self._pack(job)
                    except Exception:  # a bug here must not take the hub down
                        logger.exception("rewriting the log of session %r failed", job.session_id)
        finally:
            self._idle.set()

    async def close(self, *, wait: float) -> None:
        """Take no more jobs; wait up to ``wait`` seconds for those queued."""
        self._send.close()
        with anyio.move_on_after(wait):
            await self._idle.wait()
