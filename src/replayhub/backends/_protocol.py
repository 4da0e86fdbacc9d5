"""The contract between the core and a storage backend.

The core (hub, producer, subscription) talks to storage only through
:class:`Backend`. A backend stores, per session id: the current generation and
its state, metadata, error and lease, the generation's event log, the outcome
of the previous generation, and a cancel flag. Its duties:

* **Fencing.** ``append``, ``renew`` and ``finish`` act only if ``generation``
  is the session's current one, it is live and its lease has not expired;
  otherwise they raise :class:`~replayhub.LeaseLostError` and change nothing.
* **Idempotent appends.** ``append`` stores a batch whole, once: a batch
  retried after an unknown result (a cancelled or timed-out call) and
  already stored is skipped; one that would leave a gap raises
  :class:`~replayhub.EventsLostError` (storage lost events it had taken, as
  in a failover), one that overlaps the log part-way :class:`RuntimeError`
  (:func:`check_batch_follows`).
* **Stored abandonment.** Any operation that finds a live session whose lease
  has expired first writes ``abandoned`` (fenced on the generation), so every
  reader sees the same state.
* **Batched appends (optional).** A backend that can store many sessions'
  batches in one call has ``append_many`` (:class:`BatchAppender`); the
  core then sends it every ready producer's batch at once.
* **Batched renewals (optional).** A backend that can renew many leases in
  one call, with one answer for all, has ``renew_many``
  (:class:`BatchRenewer`); the core then renews together the leases that
  fall due together.
* **Storing at once (optional).** A backend with ``append_one``
  (:class:`StoresAtOnce`) stores an event without waiting; producers then
  store each send as it is made.
* **Release (optional).** A backend with ``release`` (:class:`ReleasesClaims`)
  hears from every producer that claimed through it when it ends.
* **Atomic snapshots.** ``read`` returns a record and events that belong
  together (``head`` the record alone): if the record is terminal, the
  events up to ``record.last_seq`` are all the generation will ever have.
* **Pages for one reader (optional).** A backend with ``read_events``
  (:class:`ReadsEvents`) reads a page straight into the
  :class:`~replayhub.Event` objects one reader receives; the core reads a
  finished session's log that way (:func:`read_events` falls back on
  ``read``).
* **Wake-ups.** Watches are signalled after every change they cover. A
  signal may be spurious or coalesced, never lost while the watch is open.
* **Stored batches handed over (optional).** A backend with
  ``watch_appends`` (:class:`WatchesAppends`) can give a watcher the
  batches it stores instead of a wake-up; the hub's follower of a session
  then extends its window without reading storage.
* **Retention.** A finished session, with its log, disappears ``retention``
  seconds after it ended; a live one never while its lease is renewed.

Every method may raise :class:`~replayhub.BackendUnavailableError`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol, Self, cast

import anyio

from .._error_types import ErrorType
from .._errors import EventsLostError
from .._events import (
    Cursor,
    Event,
    Metadata,
    Outcome,
    SessionInfo,
    State,
    StoredEvent,
    utc_datetime,
)
from .._slots import fill_slots_directly
from ._watch import AppendListener


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """A backend's snapshot of one session."""

    session_id: str
    generation: int
    state: State
    last_seq: int
    """How many events the current generation has stored."""
    metadata: Metadata
    error: str | None
    created_at: float
    """Unix time at which the current generation was claimed."""
    updated_at: float
    lease_remaining: float | None
    """Seconds until the lease expires, while live."""
    previous: tuple[int, Outcome] | None = None
    """The previous generation's number and outcome, if it had one."""
    error_type: ErrorType | None = None
    """The failure's category, when ``failed``."""
    previous_last_seq: int = 0
    """How many events the previous generation had stored (its log is
    gone): a reader of it that had not read them all cannot finish it."""

    def info(self) -> SessionInfo:
        return SessionInfo(
            session_id=self.session_id,
            state=self.state,
            generation=self.generation,
            events=self.last_seq,
            metadata=self.metadata,
            error=self.error,
            created_at=utc_datetime(self.created_at),
            updated_at=utc_datetime(self.updated_at),
            error_type=self.error_type,
        )


@dataclass(frozen=True, slots=True)
class Renewal:
    """What :meth:`Backend.renew` found besides the extended lease."""

    cancel_requested: bool
    """Someone asked the session to stop (:meth:`Backend.request_cancel`)."""


@fill_slots_directly  # one is built per write
@dataclass(frozen=True, slots=True)
class AppendRequest:
    """One producer's write: the arguments of :meth:`Backend.append`."""

    session_id: str
    generation: int
    events: Sequence[StoredEvent]
    metadata: Metadata | None


class BatchAppender(Protocol):
    """A backend that stores many appends in one call."""

    async def append_many(self, appends: Sequence[AppendRequest]) -> list[Exception | None]:
        """Store each append as :meth:`Backend.append` would; for each, in
        order, ``None`` if stored, else the exception that ``append`` would
        have raised. Raises only if the whole call failed."""
        ...


class BatchRenewer(Protocol):
    """A backend that renews many leases in one call."""

    async def renew_many(
        self, leases: Sequence[tuple[str, int]], *, lease_ttl: float
    ) -> list[Renewal | Exception]:
        """Renew each ``(session id, generation)`` as :meth:`Backend.renew`
        would; for each, in order, its :class:`Renewal`, else the exception
        ``renew`` would have raised. Raises only if the whole call failed.

        The call answers for all at once, so one slow lease holds back every
        other: a backend whose leases live on different servers has none.
        """
        ...


class StoresAtOnce(Protocol):
    """A backend that stores an append without waiting (in process)."""

    def append_one(self, session_id: str, generation: int, event: StoredEvent) -> None:
        """Store ``event`` as :meth:`Backend.append` would store a batch of
        it alone with no metadata, before returning.

        Producers call it from ``send`` instead of handing their events to the
        hub's writer: with no round trip to wait for, there is nothing to
        gather, and the event is stored (and handed to readers) at once. One
        event and its fields as they are, rather than an
        :class:`AppendRequest`: every token sent comes here.
        """
        ...


class WatchesAppends(Protocol):
    """A backend that hands stored batches to a watcher."""

    def watch_appends(
        self, session_id: str, on_append: AppendListener
    ) -> AbstractAsyncContextManager[Watch]:
        """:meth:`Backend.watch`, with ``on_append`` called, synchronously and
        without raising, with ``(generation, events)`` for a batch just stored,
        in place of the wake-up, where the backend can carry the events
        (always in process; on Redis, in the notification).

        It is not called for a retried batch already stored, nor for one
        stored with new metadata (a wake-up comes instead). Batches can be
        missed, then a wake-up follows, and are never reordered: a listener
        that finds a batch does not follow what it has calls
        :meth:`Watch.notify` and reads.
        """
        ...


class CallsOnChange(Protocol):
    """A backend whose watches report wake-ups by a call, so that no task
    per session waits for them (the hub's feeds and lease keeper)."""

    def call_on_change(
        self,
        session_id: str,
        on_change: Callable[[], None],
        *,
        on_append: AppendListener | None = None,
    ) -> AbstractAsyncContextManager[Watch]:
        """:meth:`Backend.watch` (with ``on_append``, as
        :meth:`WatchesAppends.watch_appends`), with ``on_change()`` called,
        synchronously and without raising, for each wake-up, the watch's own
        :meth:`Watch.notify` included, in place of waking a waiter. Open once
        entered: a change made after that is reported."""
        ...

    def call_on_claim_change(
        self, session_id: str, on_change: Callable[[], None]
    ) -> AbstractAsyncContextManager[Watch]:
        """:meth:`Backend.watch_claim`, with ``on_change()`` called for each
        wake-up, as :meth:`call_on_change`."""
        ...


class ReadsEvents(Protocol):
    """A backend that reads a page as the events one reader receives."""

    async def read_events(
        self, session_id: str, *, after: Cursor | None, limit: int
    ) -> tuple[SessionRecord, list[Event]] | None:
        """:meth:`Backend.read`, with the page as the :class:`~replayhub.Event`
        objects one reader receives, in order: JSON decoded for that reader
        alone, and no :class:`StoredEvent` built on the way (a late replay
        is mostly building objects: one per event, not two). The events are
        consecutive, from the one ``read`` would return first."""
        ...


class ReleasesClaims(Protocol):
    """A backend told when a producer of this process ends."""

    def release(self, session_id: str, generation: int) -> None:
        """The producer of ``generation``, claimed through this backend, has
        ended, whatever the outcome (or its claim failed to end cleanly).
        The Redis backend stops listening to a session's notifications while
        this process produces it (it hands its own changes to its readers)
        and listens again here. A backend that wraps another must pass it on.
        """
        ...


class Watch(Protocol):
    """Wake-ups for one session: a flag that any covered change sets."""

    async def wait(self) -> None:
        """Wait until the flag is set, then clear it.

        A change after the previous ``wait`` returned (or after the watch was
        opened) makes the next ``wait`` return at once. A cancelled wait
        leaves the flag as it was.
        """
        ...

    def notify(self) -> None:
        """Set the flag now: a wake-up from the caller's own timer."""
        ...


class Backend(Protocol):
    """Storage for sessions; see the module docstring for the duties."""

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> bool | None: ...

    async def claim(
        self, session_id: str, *, metadata: Metadata, lease_ttl: float, retention: float
    ) -> SessionRecord:
        """Start a new generation if the session is absent or finished.

        The new generation has an empty log, state ``live``, a lease of
        ``lease_ttl`` seconds and a cleared cancel flag; the previous
        generation's outcome is kept in ``previous``. ``retention`` is how
        long the session is kept if it ends ``abandoned``.

        :raises ~replayhub.SessionBusyError: if a live producer holds it.
        """
        ...

    async def append(
        self,
        session_id: str,
        generation: int,
        events: Sequence[StoredEvent],
        *,
        metadata: Metadata | None,
    ) -> None:
        """Store ``events`` (consecutive ``seq``) and, if given, the new metadata."""
        ...

    async def renew(self, session_id: str, generation: int, *, lease_ttl: float) -> Renewal:
        """Extend the lease to ``lease_ttl`` from now, and read the cancel flag."""
        ...

    async def finish(
        self,
        session_id: str,
        generation: int,
        *,
        state: State,
        error: str | None,
        error_type: ErrorType | None,
        retention: float,
    ) -> None:
        """Write the terminal ``state`` (with the failure's ``error`` and
        ``error_type`` when ``failed``) and start the retention countdown.

        A producer asks again after :class:`~replayhub.BackendUnavailableError`
        (not :class:`~replayhub.StorageRefusedError`) while its lease lasts:
        a backend that may raise it for an end that landed (its reply lost
        on the way) must take that same end, asked again, as done."""
        ...

    async def head(self, session_id: str) -> SessionRecord | None:
        """The session's record, or ``None`` if it does not exist."""
        ...

    async def read(
        self, session_id: str, *, after: Cursor | None, limit: int
    ) -> tuple[SessionRecord, list[StoredEvent]] | None:
        """The session's record and up to ``limit`` (at least 1) events of
        its current generation.

        The events follow ``after`` when it is of the current generation;
        they start at the beginning when ``after`` is ``None`` or older;
        there are none when it is newer. ``None`` if the session does not exist.
        """
        ...

    async def list_sessions(
        self, *, state: State | None, limit: int, offset: int
    ) -> list[SessionRecord]:
        """Sessions, most recently updated first, optionally of one state."""
        ...

    async def request_cancel(self, session_id: str) -> SessionRecord | None:
        """Set the cancel flag of a live session and wake its producer."""
        ...

    async def remove(self, session_id: str) -> bool:
        """Delete the session and its log; its producer loses its claim."""
        ...

    def watch(self, session_id: str) -> AbstractAsyncContextManager[Watch]:
        """Wake-ups on every change of the session: events, state, removal."""
        ...

    def watch_claim(self, session_id: str) -> AbstractAsyncContextManager[Watch]:
        """Wake-ups for the producer: a cancel request, or removal of the session.

        Opened before the producer checks the cancel flag, so a request made
        at any moment is seen.
        """
        ...


async def append_each(backend: Backend, appends: Sequence[AppendRequest]) -> list[Exception | None]:
    """:meth:`BatchAppender.append_many` for a backend without it: one
    ``append`` call each, all at once."""
    results: list[Exception | None] = [None] * len(appends)

    async def store(index: int, request: AppendRequest) -> None:
        try:
            await backend.append(
                request.session_id, request.generation, request.events, metadata=request.metadata
            )
        except Exception as exc:
            results[index] = exc

    if len(appends) == 1:
        await store(0, appends[0])
        return results
    async with anyio.create_task_group() as task_group:
        for index, request in enumerate(appends):
            task_group.start_soon(store, index, request)
    return results


async def read_events(
    backend: Backend, session_id: str, *, after: Cursor | None, limit: int
) -> tuple[SessionRecord, list[Event]] | None:
    """:meth:`ReadsEvents.read_events`, through ``read`` for a backend without it."""
    reads_events = getattr(backend, "read_events", None)
    if reads_events is not None:
        return cast(
            "tuple[SessionRecord, list[Event]] | None",
            await reads_events(session_id, after=after, limit=limit),
        )
    found = await backend.read(session_id, after=after, limit=limit)
    if found is None:
        return None
    record, events = found
    return record, [stored.to_event(record.generation) for stored in events]


def check_batch_follows(events: Sequence[StoredEvent], *, stored: int) -> None:
    """Raise unless ``events`` start right after the ``stored`` events, or
    are a batch already stored whole (a retry).

    :raises EventsLostError: on a gap: the producer had these events
        stored, and storage no longer has them.
    :raises RuntimeError: on a part-way overlap (a bug: a retried batch
        must be sent unchanged).
    """
    first, last = events[0].seq, events[-1].seq
    if first > stored + 1:
        lost = (
            f"event {first - 1} is"
            if first == stored + 2
            else f"events {stored + 1}-{first - 1} are"
        )
        raise EventsLostError(
            f"storage holds {stored} events of this session: {lost} gone, though stored "
            "before (a failover to a replica that had not received them?)"
        )
    if first <= stored < last:
        raise RuntimeError(
            f"events {first}-{last} overlap the stored log, which ends at event {stored}: "
            "a retried batch must be sent unchanged"
        )


def check_read_limit(limit: int) -> None:
    """Raise unless ``limit`` is a valid :meth:`Backend.read` limit (a bug otherwise)."""
    if limit < 1:
        raise ValueError(f"read limit must be at least 1, not {limit}: use head() for the record")
