"""A session streamed to live subscribers while something happens to Redis,
and the check that every subscriber got every event once, in order."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import anyio

from replayhub import Hub, Outcome, State


class Stream:
    """The producer's progress, seen by the fault-making code."""

    def __init__(self) -> None:
        self._sent = 0
        self._thresholds: list[tuple[int, anyio.Event]] = []
        self._resume = anyio.Event()
        self._resume.set()
        self._parked = anyio.Event()

    @property
    def sent(self) -> int:
        return self._sent

    @sent.setter
    def sent(self, count: int) -> None:
        self._sent = count
        for threshold, reached in self._thresholds:
            if count >= threshold:
                reached.set()

    async def sent_at_least(self, count: int) -> None:
        reached = anyio.Event()
        self._thresholds.append((count, reached))
        self.sent = self._sent
        await reached.wait()

    async def hold_if_paused(self, flush: Callable[[], Awaitable[None]]) -> None:
        """The producer's side of :meth:`paused`: flush, park, wait to resume."""
        if not self._resume.is_set():
            await flush()
            self._parked.set()
            await self._resume.wait()

    @asynccontextmanager
    async def paused(self) -> AsyncIterator[None]:
        """The producer stops sending, with everything sent so far stored."""
        self._resume, self._parked = anyio.Event(), anyio.Event()
        await self._parked.wait()
        try:
            yield
        finally:
            self._resume.set()


@dataclass
class Received:
    ids: list[str] = field(default_factory=list)
    data: list[object] = field(default_factory=list)
    outcome: Outcome | None = None


@dataclass
class StreamResult:
    subscribers: list[Received]
    late: Received
    sent: int

    def assert_complete(self, state: State) -> None:
        count = self.sent
        for received in [*self.subscribers, self.late]:
            assert received.outcome is not None
            assert received.outcome.state is state, received.outcome
            assert received.data == list(range(count))
            assert len(set(received.ids)) == count
        assert all(received.ids == self.late.ids for received in self.subscribers)


async def stream_with_subscribers(
    hub: Hub,
    reader: Hub,
    session_id: str,
    *,
    count: int,
    during: Callable[[Stream], Awaitable[None]],
) -> StreamResult:
    """Send events (a few per millisecond) to two subscribers on ``reader``
    and one on ``hub`` while ``during`` runs: at least ``count``, and another
    200 after ``during`` is over; then replay it all."""
    progress = Stream()
    claimed = anyio.Event()
    fault_over = anyio.Event()

    async def produce() -> None:
        async with hub.produce(session_id) as stream:
            claimed.set()
            index = 0
            end: int | None = None  # known once the fault is over
            while end is None or index < end:
                if end is None and fault_over.is_set():
                    end = max(count, index + 200)
                await progress.hold_if_paused(stream.flush)
                await stream.send(index)
                index += 1
                progress.sent = index
                if index % 10 == 0:
                    await anyio.sleep(0.001)

    async def follow(on: Hub, into: Received) -> None:
        async with on.subscribe(session_id) as events:
            async for event in events:
                into.ids.append(event.id)
                into.data.append(event.data)
        into.outcome = events.outcome

    subscribers = [Received() for _ in range(3)]
    with anyio.fail_after(45):
        async with anyio.create_task_group() as task_group:
            task_group.start_soon(produce)
            await claimed.wait()
            for received, on in zip(subscribers, (reader, reader, hub), strict=True):
                task_group.start_soon(follow, on, received)
            await during(progress)
            fault_over.set()
        late = Received()
        await follow(reader, late)
    return StreamResult(subscribers, late, progress.sent)
