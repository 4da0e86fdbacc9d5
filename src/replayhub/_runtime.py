"""What a hub's producers and subscriptions share.

The hub builds one :class:`HubRuntime` and hands it to each producer and
subscription, which see only this: storage, the settings, the writer, the
feeds, the lease keeper and the register of live producers. None of them imports the hub.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import anyio

from ._errors import HubClosedError
from ._feed import FeedPool
from ._lease import LeaseKeeper
from ._recheck import recheck_after
from ._settings import Settings
from ._writer import BatchWriter
from .backends import Backend, SessionRecord


class LiveProducers:
    """The producers running on a hub, so that closing it can stop them."""

    def __init__(self) -> None:
        self._live: dict[object, tuple[str, Callable[[], None], anyio.Event]] = {}

    def add(
        self,
        producer: object,
        *,
        session_id: str,
        stop: Callable[[], None],
        closed: anyio.Event,
    ) -> None:
        """Register ``producer`` of ``session_id``: ``stop()`` asks it to
        end, ``closed`` is set once it has."""
        self._live[producer] = (session_id, stop, closed)

    def discard(self, producer: object) -> None:
        self._live.pop(producer, None)

    async def stop_all(self, *, grace: float) -> list[str]:
        """Ask every producer to stop and wait until each has ended, at most
        ``grace`` seconds, shielded from cancellation; the ids of their
        sessions."""
        live = list(self._live.values())
        with anyio.move_on_after(grace, shield=True):
            for _, stop, _ in live:
                stop()
            for _, _, closed in live:
                await closed.wait()
        return [session_id for session_id, _, _ in live]


class HubRuntime:
    """One hub's shared parts, open between entering and leaving the hub."""

    def __init__(self, backend: Backend, settings: Settings) -> None:
        self.backend = backend
        self.settings = settings
        self.writer = BatchWriter(backend)
        self.feeds = FeedPool(backend, lease_ttl=settings.lease_ttl)
        self.producers = LiveProducers()
        renew_many = getattr(backend, "renew_many", None)
        self.leases = LeaseKeeper(
            None if renew_many is None else partial(renew_many, lease_ttl=settings.lease_ttl)
        )
        self.open = False

    def require_open(self) -> None:
        if not self.open:
            raise HubClosedError("use the hub inside 'async with hub:'")

    async def cancel(self, session_id: str, *, wait: float | None) -> SessionRecord | None:
        """Store a cancel request for ``session_id``; with ``wait``, wait at
        most that long for its generation to end. The session's record (its
        end, with ``wait``), or ``None`` if there is none.

        :raises TimeoutError: if it has not ended after ``wait``.
        """
        backend = self.backend
        if wait is None:
            return await backend.request_cancel(session_id)
        async with backend.watch(session_id) as watch:
            record = await backend.request_cancel(session_id)
            if record is None or record.state.terminal:
                return record
            generation = record.generation
            try:
                with anyio.fail_after(wait):
                    while True:
                        with anyio.move_on_after(recheck_after(record, self.settings.lease_ttl)):
                            await watch.wait()
                        latest = await backend.head(session_id)
                        if latest is None or latest.generation != generation:
                            return latest
                        record = latest
                        if record.state.terminal:
                            return record
            except TimeoutError:
                raise TimeoutError(
                    f"session {session_id!r} did not end within {wait}s of the cancel request"
                ) from None
