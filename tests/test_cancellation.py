"""Backend calls parked at a known point: cancellation there, the call is parked at
a gate (before the real backend runs it), the caller is cancelled there, and
then nothing may be left behind (no open follower, no registered producer),
lost, duplicated, or moved (a subscription's cursor).

Claims and terminal writes run shielded (a cancellation waits for them, and
the block then ends as it must); every other call cancelled at its gate has
not reached storage, so storage must be as it was.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest

from replayhub import Hub, State, Subscription
from replayhub._feed import PAGE_SIZE, WINDOW

from .conftest import HubFactory
from .helpers import FaultyWrap, Gate, collect


async def cancel_at(
    gate: Gate, call: Callable[[], Awaitable[Any]], *, shielded: bool = False
) -> bool:
    """Run ``call``, cancel it once it reaches ``gate``, then open the gate.

    A shielded call finishes once the gate opens; any other is cancelled
    while parked, and the gate opens only after it has unwound. ``True`` if
    the call was cancelled (it did not return).
    """
    scope = anyio.CancelScope()
    finished = anyio.Event()
    returned = False

    async def run() -> None:
        nonlocal returned
        try:
            with scope:
                await call()
                returned = True
        finally:
            finished.set()

    with anyio.fail_after(10):
        async with anyio.create_task_group() as task_group:
            task_group.start_soon(run)
            await gate.reached.wait()
            scope.cancel()
            if not shielded:
                await finished.wait()
            gate.opened.set()
    return not returned


def assert_nothing_left(hub: Hub) -> None:
    runtime = hub._runtime
    assert runtime.feeds._feeds == {}  # no follower, so no watch, left open
    assert runtime.producers._live == {}


async def produced(hub: Hub, session_id: str, count: int) -> list[str]:
    ids: list[str] = []
    async with hub.produce(session_id) as stream:
        for index in range(count):
            ids.append(await stream.send(f"e{index}"))
    return ids


async def test_a_subscription_cancelled_while_opening_leaves_nothing(
    make_hub: HubFactory,
) -> None:
    wrap = FaultyWrap()
    async with make_hub(wrap=wrap) as hub:
        ids = await produced(hub, "s", 5)

        async def subscribe() -> None:
            async with hub.subscribe("s"):
                pytest.fail("entered although cancelled while reading")

        assert await cancel_at(wrap.backend.park("read"), subscribe)
        wrap.backend.gates.clear()
        assert_nothing_left(hub)
        events, outcome = await collect(hub, "s")
    assert [event.id for event in events] == ids
    assert outcome.state is State.DONE


async def test_a_read_cancelled_mid_replay_loses_and_repeats_nothing(
    make_hub: HubFactory,
) -> None:
    wrap = FaultyWrap()
    async with make_hub(wrap=wrap) as hub:
        ids = await produced(hub, "s", PAGE_SIZE + 10)  # two pages
        async with hub.subscribe("s") as events:
            received = [await events.__anext__() for _ in range(PAGE_SIZE)]
            cursor = events.last_event_id
            # The next event needs the second page: a storage read.
            assert await cancel_at(wrap.backend.park("read"), events.__anext__)
            assert events.last_event_id == cursor  # the cancelled call moved nothing
            wrap.backend.gates.clear()
            received += [event async for event in events]
        assert events.outcome is not None
        assert events.outcome.state is State.DONE
        assert_nothing_left(hub)
    assert [event.id for event in received] == ids


@pytest.mark.parametrize(
    ("method", "operation"),
    [
        ("head", lambda hub: hub.info("s")),
        ("head", lambda hub: hub.active(["s"])),
        ("list_sessions", lambda hub: hub.sessions()),
        ("request_cancel", lambda hub: hub.cancel("s")),
        ("remove", lambda hub: hub.remove("s")),
    ],
)
async def test_a_hub_call_cancelled_at_the_backend_changes_nothing(
    make_hub: HubFactory, method: str, operation: Callable[[Hub], Awaitable[Any]]
) -> None:
    wrap = FaultyWrap()
    async with make_hub(wrap=wrap) as hub:
        async with hub.produce("s") as stream:
            ids = [await stream.send(f"e{index}") for index in range(3)]
            await stream.flush()
            assert await cancel_at(wrap.backend.park(method), lambda: operation(hub))
            wrap.backend.gates.clear()
            info = await hub.info("s")
            assert info is not None
            assert (info.state, info.events) == (State.LIVE, 3)
            ids.append(await stream.send("after"))
        events, outcome = await collect(hub, "s")
        await operation(hub)  # the same call, uncancelled, works
        assert_nothing_left(hub)
    assert [event.id for event in events] == ids
    assert outcome.state is State.DONE


async def test_a_flush_cancelled_while_storage_holds_the_batch_loses_nothing(
    make_hub: HubFactory,
) -> None:
    wrap = FaultyWrap()
    async with make_hub(wrap=wrap) as hub:
        async with hub.produce("s") as stream:
            gate = wrap.backend.park("append")
            ids = [stream.send_nowait(f"e{index}") for index in range(10)]
            assert await cancel_at(gate, stream.flush)
            wrap.backend.gates.clear()
            ids.append(await stream.send("after"))
            await stream.flush()
        events, outcome = await collect(hub, "s")
        assert_nothing_left(hub)
    assert [event.id for event in events] == ids  # each once, in order
    assert outcome.state is State.DONE


async def test_a_producer_cancelled_while_claiming_ends_cancelled_without_its_body(
    make_hub: HubFactory,
) -> None:
    wrap = FaultyWrap()
    async with make_hub(wrap=wrap) as hub:
        body_ran = False

        async def produce() -> None:
            nonlocal body_ran
            async with hub.produce("s"):
                body_ran = True

        # The claim is shielded: it lands, then the block ends at once.
        assert await cancel_at(wrap.backend.park("claim"), produce, shielded=True)
        wrap.backend.gates.clear()
        info = await hub.info("s")
        assert_nothing_left(hub)
    assert not body_ran
    assert info is not None
    assert info.state is State.CANCELLED  # not held live until its lease ran out


async def test_a_producer_cancelled_during_its_terminal_write_still_ends_done(
    make_hub: HubFactory,
) -> None:
    wrap = FaultyWrap()
    async with make_hub(wrap=wrap) as hub:
        ids: list[str] = []

        async def produce() -> None:
            async with hub.produce("s") as stream:
                ids.extend([await stream.send(f"e{index}") for index in range(3)])

        # The body ended normally; the write of `done` runs shielded, and the
        # block returns (the cancellation lands at the caller's next checkpoint).
        assert not await cancel_at(wrap.backend.park("finish"), produce, shielded=True)
        wrap.backend.gates.clear()
        events, outcome = await collect(hub, "s")
        assert_nothing_left(hub)
    assert [event.id for event in events] == ids
    assert outcome.state is State.DONE


async def test_readers_behind_the_window_share_one_storage_read_per_page(
    make_hub: HubFactory,
) -> None:
    wrap = FaultyWrap()
    readers = 10
    async with make_hub(wrap=wrap) as hub, hub.produce("s") as stream:
        for index in range(PAGE_SIZE + 3 * WINDOW):  # beyond the feed's window
            try:
                stream.send_nowait(f"e{index}")
            except anyio.WouldBlock:
                await stream.send(f"e{index}")
        await stream.flush()
        subscriptions = [await stack_enter(hub) for _ in range(readers)]
        # Each took its first page when it opened; the next is storage's.
        firsts = [[await events.__anext__() for _ in range(PAGE_SIZE)] for events in subscriptions]
        gate = wrap.backend.park("read")
        received: list[list[str]] = []
        async with anyio.create_task_group() as tg:

            async def next_page(events: Subscription) -> None:
                page = [await events.__anext__() for _ in range(PAGE_SIZE)]
                received.append([event.id for event in page])

            for events in subscriptions:
                tg.start_soon(next_page, events)
            await gate.reached.wait()
            await anyio.wait_all_tasks_blocked()
            gate.opened.set()
        assert gate.calls == 1  # one read for all ten readers
        assert all(len(first) == PAGE_SIZE for first in firsts)
        assert received == [received[0]] * readers
        assert received[0] == [
            f"{stream.generation}-{seq}" for seq in range(PAGE_SIZE + 1, 2 * PAGE_SIZE + 1)
        ]
        for events in subscriptions:
            await events.__aexit__(None, None, None)


async def stack_enter(hub: Hub) -> Subscription:
    subscription = hub.subscribe("s")
    await subscription.__aenter__()
    return subscription
