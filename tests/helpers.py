"""Helpers for tests: reading a whole session, a backend wrapper that
injects faults around a real backend, and fingerprints of library code."""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any, Self

import anyio

from replayhub import ErrorType, Event, Hub, Outcome
from replayhub._events import Cursor, Metadata, State, StoredEvent
from replayhub.backends import AppendListener, Backend, Renewal, SessionRecord, Watch


async def collect(
    hub: Hub, session_id: str, *, after: str | None = None, batch_replay: bool = False
) -> tuple[list[Event], Outcome]:
    """Every event a new subscription delivers, and its outcome."""
    async with hub.subscribe(session_id, after=after, batch_replay=batch_replay) as events:
        received = [event async for event in events]
    assert events.outcome is not None
    return received, events.outcome


def texts(events: Sequence[Event]) -> list[object]:
    return [event.data for event in events]


class Gate:
    """Where calls of one backend method stop until the gate opens: before
    the real backend is called, so a call cancelled there did nothing."""

    def __init__(self) -> None:
        self.reached = anyio.Event()  # set when a call arrives
        self.opened = anyio.Event()
        self.calls = 0

    async def pass_through(self) -> None:
        self.calls += 1
        self.reached.set()
        await self.opened.wait()


class FaultyBackend:
    """Delegates to a real backend; any method's calls can be parked at a
    gate (:meth:`park`), appends and renewals made to fail, hand-overs of
    stored batches withheld or lost."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.gates: dict[str, Gate] = {}
        self.append_gate: anyio.Event | None = None
        self.hand_over_batches = True
        self.lose_every_nth_batch = 0  # lost outright, as a dropped message is
        self.append_error: Exception | None = None
        self.read_error: Exception | None = None
        self.finish_error: Exception | None = None
        self.finish_errors: list[Exception] = []  # raised once each, in turn, first
        self.finish_calls = 0
        self.renew_error: Exception | None = None
        self.appends = 0
        self.reads = 0
        self.finished: list[tuple[str, State]] = []

    def park(self, method: str) -> Gate:
        """Stop every later call of ``method`` at a new gate, until it opens."""
        gate = self.gates[method] = Gate()
        return gate

    async def _gate(self, method: str) -> None:
        gate = self.gates.get(method)
        if gate is not None:
            await gate.pass_through()

    async def __aenter__(self) -> Self:
        await self.inner.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> bool | None:
        return await self.inner.__aexit__(exc_type, exc_val, exc_tb)

    async def claim(
        self, session_id: str, *, metadata: Metadata, lease_ttl: float, retention: float
    ) -> SessionRecord:
        await self._gate("claim")
        return await self.inner.claim(
            session_id, metadata=metadata, lease_ttl=lease_ttl, retention=retention
        )

    def release(self, session_id: str, generation: int) -> None:
        release = getattr(self.inner, "release", None)
        if release is not None:
            release(session_id, generation)

    async def append(
        self,
        session_id: str,
        generation: int,
        events: Sequence[StoredEvent],
        *,
        metadata: Metadata | None,
    ) -> None:
        await self._gate("append")
        if self.append_gate is not None:
            await self.append_gate.wait()
        if self.append_error is not None:
            raise self.append_error
        self.appends += 1
        await self.inner.append(session_id, generation, events, metadata=metadata)

    async def renew(self, session_id: str, generation: int, *, lease_ttl: float) -> Renewal:
        await self._gate("renew")
        if self.renew_error is not None:
            raise self.renew_error
        return await self.inner.renew(session_id, generation, lease_ttl=lease_ttl)

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
        await self._gate("finish")
        self.finish_calls += 1
        if self.finish_errors:
            raise self.finish_errors.pop(0)
        if self.finish_error is not None:
            raise self.finish_error
        await self.inner.finish(
            session_id,
            generation,
            state=state,
            error=error,
            error_type=error_type,
            retention=retention,
        )
        self.finished.append((session_id, state))

    async def head(self, session_id: str) -> SessionRecord | None:
        await self._gate("head")
        self.reads += 1
        if self.read_error is not None:
            raise self.read_error
        return await self.inner.head(session_id)

    async def read(
        self, session_id: str, *, after: Cursor | None, limit: int
    ) -> tuple[SessionRecord, list[StoredEvent]] | None:
        await self._gate("read")
        self.reads += 1
        if self.read_error is not None:
            raise self.read_error
        return await self.inner.read(session_id, after=after, limit=limit)

    async def list_sessions(
        self, *, state: State | None, limit: int, offset: int
    ) -> list[SessionRecord]:
        await self._gate("list_sessions")
        return await self.inner.list_sessions(state=state, limit=limit, offset=offset)

    async def request_cancel(self, session_id: str) -> SessionRecord | None:
        await self._gate("request_cancel")
        return await self.inner.request_cancel(session_id)

    async def remove(self, session_id: str) -> bool:
        await self._gate("remove")
        return await self.inner.remove(session_id)

    def watch(self, session_id: str) -> AbstractAsyncContextManager[Watch]:
        return self.inner.watch(session_id)

    def watch_appends(
        self, session_id: str, on_append: AppendListener
    ) -> AbstractAsyncContextManager[Watch]:
        # Without hand-overs the readers learn of every batch by a wake-up.
        if not self.hand_over_batches:
            return self.inner.watch(session_id)
        listener = on_append
        if self.lose_every_nth_batch:
            listener = self._losing(listener, self.lose_every_nth_batch)
        watch_appends = getattr(self.inner, "watch_appends")  # noqa: B009
        manager: AbstractAsyncContextManager[Watch] = watch_appends(session_id, listener)
        return manager

    @staticmethod
    def _losing(listener: AppendListener, nth: int) -> AppendListener:
        # Every copy of the batch ending at every nth event: a backend may
        # hand a batch over twice (the Redis backend does, from its own
        # reply and from the notification).
        def losing(generation: int, events: list[StoredEvent]) -> None:
            if events[-1].seq % nth:
                listener(generation, events)

        return losing

    def watch_claim(self, session_id: str) -> AbstractAsyncContextManager[Watch]:
        return self.inner.watch_claim(session_id)


class FaultyWrap:
    """A ``wrap=`` for ``make_hub`` that keeps the :class:`FaultyBackend` it made."""

    backend: FaultyBackend

    def __call__(self, inner: Backend) -> Backend:
        self.backend = FaultyBackend(inner)
        return self.backend


def assert_unchanged(
    fingerprints: dict[str, tuple[Any, str]], name: str, *, library: str, copy: str
) -> None:
    """Fail if the source of a library method that replayhub copies or reads
    around (``fingerprints[name]``: the method, the first 16 hex digits of
    its source's sha256) has changed, before the change can silently break
    ``copy``."""
    method, fingerprint = fingerprints[name]
    found = hashlib.sha256(inspect.getsource(method).encode()).hexdigest()[:16]
    assert found == fingerprint, (
        f"{library} changed {name}: compare it with {copy}, then update the fingerprint"
    )
