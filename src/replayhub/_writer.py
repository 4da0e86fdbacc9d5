"""One writer per hub for the queued events of all its producers.

A process streaming hundreds of replies at once sends each model token as
it comes: with a writing task per producer, every event cost that task a
wake-up to start its write and another when the reply came. Here producers
only queue (:meth:`BatchWriter.request`); one task takes what every ready
producer has queued, stores it all in one backend call where the backend
takes many appends at once (one script call on Redis), and hands each
producer its own result. While a call is out, new events gather for the
next one, so the load sets the batch size: at low load a call carries one
append and costs one loop pass more.

A producer has at most one write out at a time (its batch stays in flight
until stored, and is retried unchanged), so its events are stored in order.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Sequence
from typing import Protocol

import anyio

from .backends import AppendRequest, Backend, append_each


class Writes(Protocol):
    """What the writer needs of a producer."""

    def take_write(self) -> AppendRequest | None:
        """The batch to store now (the one in flight again, after a failed
        try), or ``None`` if there is nothing to write."""
        ...

    def write_done(self, error: Exception | None) -> None:
        """The result of storing the batch :meth:`take_write` returned."""
        ...


class BatchWriter:
    """Stores every ready producer's batch, one backend call per round."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend
        # Looked up once: the optional capability of storing many at once.
        self._append_many = getattr(backend, "append_many", None)
        self._ready: dict[Writes, None] = {}  # ordered, no duplicates
        self._later: list[tuple[float, int, Writes]] = []  # retry times, a heap
        self._order = itertools.count()  # ties in the heap
        self._wake: anyio.Event | None = None  # made in run(), in the loop

    def request(self, producer: Writes) -> None:
        """Ask for ``producer``'s queued events to be stored soon."""
        ready = self._ready
        if producer not in ready:
            # Only the first ask of a round wakes the writer: it takes every
            # producer ready by then (a round of 100 tokens set it 100 times).
            if not ready and self._wake is not None:
                self._wake.set()
            ready[producer] = None

    def request_at(self, when: float, producer: Writes) -> None:
        """Ask again at ``when`` (a retry after storage failed)."""
        heapq.heappush(self._later, (when, next(self._order), producer))
        if self._wake is not None:
            self._wake.set()

    async def run(self) -> None:
        """Write rounds until cancelled."""
        self._wake = wake = anyio.Event()
        new_event = type(wake)  # the loop's own class: anyio.Event() looks it up per call
        try:
            while True:
                self._take_due()
                if not self._ready:
                    wait = self._later[0][0] - anyio.current_time() if self._later else None
                    with anyio.move_on_after(wait):
                        await wake.wait()
                    self._wake = wake = new_event()
                    continue
                await self._round()
        finally:
            self._wake = None

    def _take_due(self) -> None:
        later = self._later
        if later:
            now = anyio.current_time()
            while later and later[0][0] <= now:
                self.request(heapq.heappop(later)[2])

    async def _round(self) -> None:
        producers = list(self._ready)
        self._ready.clear()
        owners: list[Writes] = []
        appends: list[AppendRequest] = []
        for producer in producers:
            write = producer.take_write()
            if write is not None:
                owners.append(producer)
                appends.append(write)
        if not appends:
            return
        results = await self._store(appends)
        for producer, error in zip(owners, results, strict=True):
            producer.write_done(error)

    async def _store(self, appends: Sequence[AppendRequest]) -> list[Exception | None]:
        if self._append_many is not None:
            try:
                results: list[Exception | None] = await self._append_many(appends)
            except Exception as exc:  # the whole call failed: each one did
                return [exc] * len(appends)
            return results
        return await append_each(self._backend, appends)
