"""The in-process backend: sessions in a dict, for one process and one event loop.

It is the embedded default and the reference for the backend contract: every
operation runs without an ``await`` between its checks and its changes, so
each is atomic on a single event loop, just as a Lua script is in Redis.
"""

from __future__ import annotations

import copy
import itertools
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Self

import anyio
from anyio.lowlevel import checkpoint

from .._error_types import ErrorType
from .._errors import HubClosedError, LeaseLostError, SessionBusyError
from .._events import (
    Cursor,
    Metadata,
    Outcome,
    PackedEvents,
    State,
    StoredEvent,
)
from ._clock import loop_clock
from ._pages import ReadsPages
from ._protocol import (
    AppendRequest,
    Renewal,
    SessionRecord,
    Watch,
    check_batch_follows,
    check_read_limit,
)
from ._watch import AppendListener, WatchRegistry


@dataclass(slots=True)
class _Session:
    generation: int
    metadata: Metadata
    lease_deadline: float
    retention: float
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    state: State = State.LIVE
    # Packed, so the garbage collector does not walk a retained log.
    events: PackedEvents = field(default_factory=PackedEvents)
    error: str | None = None
    error_type: ErrorType | None = None
    expires_at: float | None = None
    cancel_requested: bool = False
    previous: tuple[int, Outcome] | None = None
    previous_last_seq: int = 0

    def record(self, session_id: str, now: float) -> SessionRecord:
        live = self.state is State.LIVE
        return SessionRecord(
            session_id=session_id,
            generation=self.generation,
            state=self.state,
            last_seq=len(self.events),
            # A copy: what a caller does with the record's metadata must not
            # change the stored session (Redis hands out fresh objects too).
            metadata=copy.deepcopy(self.metadata),
            error=self.error,
            created_at=self.created_at,
            updated_at=self.updated_at,
            lease_remaining=max(0.0, self.lease_deadline - now) if live else None,
            previous=None if self.previous is None else copy.deepcopy(self.previous),
            error_type=self.error_type,
            previous_last_seq=self.previous_last_seq,
        )

    def end(
        self, state: State, error: str | None, error_type: ErrorType | None, now: float
    ) -> None:
        self.state = state
        self.error = error
        self.error_type = error_type
        self.expires_at = now + self.retention
        self.updated_at = time.time()


class MemoryBackend(ReadsPages, anyio.AsyncContextManagerMixin):
    """Sessions held in this process; shared by every hub given this instance.

    :param sweep_interval: how often expired sessions are dropped and expired
        leases turned into ``abandoned``, in seconds. Reads do both on the
        spot as well, so this bounds memory, not correctness.
    """

    def __init__(self, *, sweep_interval: float = 1.0) -> None:
        self._sessions: dict[str, _Session] = {}
        self._watches = WatchRegistry()
        self._claim_watches = WatchRegistry()
        # Generations are unique across the backend, so a session removed or
        # expired and claimed again never reuses one: a stale producer or
        # cursor of the old session can never match the new one.
        self._generations = itertools.count(1)
        self._sweep_interval = sweep_interval
        self._open = False
        self._now = time.monotonic  # until entered: then the loop's clock

    @asynccontextmanager
    async def __asynccontextmanager__(self) -> AsyncIterator[Self]:
        self._now = loop_clock()
        async with anyio.create_task_group() as task_group:
            task_group.start_soon(self._sweep_forever)
            self._open = True
            try:
                yield self
            finally:
                self._open = False
                task_group.cancel_scope.cancel()
                # Wake every reader and producer so they notice the hub is gone.
                self._watches.notify_all()
                self._claim_watches.notify_all()

    # -- producer side ------------------------------------------------------

    async def claim(
        self, session_id: str, *, metadata: Metadata, lease_ttl: float, retention: float
    ) -> SessionRecord:
        await checkpoint()
        self._require_open()
        now = self._now()
        old = self._current(session_id, now)
        if old is not None and old.state is State.LIVE:
            raise SessionBusyError(f"session {session_id!r} has a live producer")
        session = _Session(
            generation=next(self._generations),
            metadata=metadata,
            lease_deadline=now + lease_ttl,
            retention=retention,
        )
        if old is not None:
            session.previous = (
                old.generation,
                Outcome(old.state, old.error, old.metadata, old.error_type),
            )
            session.previous_last_seq = len(old.events)
        self._sessions[session_id] = session
        self._changed(session_id)
        return session.record(session_id, now)

    async def append(
        self,
        session_id: str,
        generation: int,
        events: Sequence[StoredEvent],
        *,
        metadata: Metadata | None,
    ) -> None:
        await checkpoint()
        self._append_now(AppendRequest(session_id, generation, events, metadata))

    async def append_many(self, appends: Sequence[AppendRequest]) -> list[Exception | None]:
        await checkpoint()
        results: list[Exception | None] = []
        for request in appends:
            try:
                self._append_now(request)
            except Exception as exc:
                results.append(exc)
            else:
                results.append(None)
        return results

    def append_one(self, session_id: str, generation: int, event: StoredEvent) -> None:
        # Every token sent comes here: the common case (the event follows the
        # log) in one pass, with no request object and no call into the log.
        session = self._owned(session_id, generation)
        log = session.events
        payloads = log.payloads
        if event.seq != len(payloads) + 1:  # raises, unless stored already
            check_batch_follows((event,), stored=len(payloads))
            return
        event.share(generation)
        log.names.append(event.event)
        log.kinds.append(event.kind)
        payloads.append(event.payload)
        session.updated_at = time.time()
        self._watches.push(session_id, generation, [event])

    def _append_now(self, request: AppendRequest) -> None:
        session_id, generation = request.session_id, request.generation
        events, metadata = request.events, request.metadata
        session = self._owned(session_id, generation)
        log = session.events
        stored: list[StoredEvent] = []
        if events:
            stored_count = len(log)
            if events[0].seq == stored_count + 1:
                stored = [event.share(generation) for event in events]
                log.extend(stored)
            else:  # raises, unless a retried batch already stored whole
                check_batch_follows(events, stored=stored_count)
        if metadata is not None:
            session.metadata = metadata
        session.updated_at = time.time()
        if stored and metadata is None:
            self._watches.push(session_id, generation, stored)
        else:
            self._changed(session_id)

    async def renew(self, session_id: str, generation: int, *, lease_ttl: float) -> Renewal:
        await checkpoint()
        return self._renew_now(session_id, generation, lease_ttl)

    async def renew_many(
        self, leases: Sequence[tuple[str, int]], *, lease_ttl: float
    ) -> list[Renewal | Exception]:
        await checkpoint()
        results: list[Renewal | Exception] = []
        for session_id, generation in leases:
            try:
                results.append(self._renew_now(session_id, generation, lease_ttl))
            except Exception as exc:
                results.append(exc)
        return results

    def _renew_now(self, session_id: str, generation: int, lease_ttl: float) -> Renewal:
        session = self._owned(session_id, generation)
        session.lease_deadline = self._now() + lease_ttl
        return Renewal(session.cancel_requested)

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
        await checkpoint()
        session = self._owned(session_id, generation)
        session.retention = retention
        session.end(state, error, error_type, self._now())
        self._changed(session_id)

    def watch_claim(self, session_id: str) -> AbstractAsyncContextManager[Watch]:
        return self._claim_watches.open(session_id)

    def call_on_claim_change(
        self, session_id: str, on_change: Callable[[], None]
    ) -> AbstractAsyncContextManager[Watch]:
        return self._claim_watches.open(session_id, on_notify=on_change)

    # -- reader side ----------------------------------------------------------

    async def head(self, session_id: str) -> SessionRecord | None:
        await checkpoint()
        self._require_open()
        now = self._now()
        session = self._current(session_id, now)
        return None if session is None else session.record(session_id, now)

    async def _read_page(
        self, session_id: str, *, after: Cursor | None, limit: int
    ) -> tuple[SessionRecord, PackedEvents, int, int] | None:
        check_read_limit(limit)
        await checkpoint()
        self._require_open()
        now = self._now()
        session = self._current(session_id, now)
        if session is None:
            return None
        start = 0
        if after is not None and after.generation == session.generation:
            start = after.seq
        elif after is not None and after.generation > session.generation:
            start = len(session.events)
        return session.record(session_id, now), session.events, start, start + limit

    async def list_sessions(
        self, *, state: State | None, limit: int, offset: int
    ) -> list[SessionRecord]:
        await checkpoint()
        self._require_open()
        now = self._now()
        sessions = [
            (session_id, session)
            for session_id in list(self._sessions)
            if (session := self._current(session_id, now)) is not None
            and (state is None or session.state is state)
        ]
        sessions.sort(key=lambda item: item[1].updated_at, reverse=True)
        return [session.record(sid, now) for sid, session in sessions[offset : offset + limit]]

    async def request_cancel(self, session_id: str) -> SessionRecord | None:
        await checkpoint()
        self._require_open()
        now = self._now()
        session = self._current(session_id, now)
        if session is None:
            return None
        if session.state is State.LIVE and not session.cancel_requested:
            session.cancel_requested = True
            self._claim_watches.notify(session_id)
        return session.record(session_id, now)

    async def remove(self, session_id: str) -> bool:
        await checkpoint()
        self._require_open()
        if self._sessions.pop(session_id, None) is None:
            return False
        self._changed(session_id)
        self._claim_watches.notify(session_id)
        return True

    def watch(self, session_id: str) -> AbstractAsyncContextManager[Watch]:
        return self._watches.open(session_id)

    def watch_appends(
        self, session_id: str, on_append: AppendListener
    ) -> AbstractAsyncContextManager[Watch]:
        return self._watches.open(session_id, on_append=on_append)

    def call_on_change(
        self,
        session_id: str,
        on_change: Callable[[], None],
        *,
        on_append: AppendListener | None = None,
    ) -> AbstractAsyncContextManager[Watch]:
        return self._watches.open(session_id, on_append=on_append, on_notify=on_change)

    # -- internals ------------------------------------------------------------

    def _require_open(self) -> None:
        if not self._open:
            raise HubClosedError("the memory backend is not open")

    def _changed(self, session_id: str) -> None:
        self._watches.notify(session_id)

    def _current(self, session_id: str, now: float) -> _Session | None:
        """The session as it stands at ``now``: expired leases turn into
        ``abandoned`` and sessions past their retention disappear."""
        session = self._sessions.get(session_id)
        if session is None:
            return None
        if session.state is State.LIVE and session.lease_deadline <= now:
            session.end(State.ABANDONED, None, None, now)
            self._changed(session_id)
        if session.expires_at is not None and session.expires_at <= now:
            del self._sessions[session_id]
            self._changed(session_id)
            return None
        return session

    def _owned(self, session_id: str, generation: int) -> _Session:
        session = self._sessions.get(session_id)
        if (
            session is not None
            and session.generation == generation
            and session.state is State.LIVE
            and session.lease_deadline > self._now()
            and self._open
        ):
            # The common case first, with no further call: every event sent
            # comes here. Anything else goes the long way, which ends an
            # expired lease and says what is wrong.
            return session
        self._require_open()
        session = self._current(session_id, self._now())
        if session is None:
            raise LeaseLostError(f"session {session_id!r} was removed")
        if session.generation != generation:
            raise LeaseLostError(
                f"session {session_id!r} was claimed again (generation {session.generation})"
            )
        if session.state is not State.LIVE:
            raise LeaseLostError(
                f"session {session_id!r} generation {generation} is already {session.state}"
            )
        return session

    async def _sweep_forever(self) -> None:
        while True:
            await anyio.sleep(self._sweep_interval)
            now = self._now()
            for session_id in list(self._sessions):
                self._current(session_id, now)
