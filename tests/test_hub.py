"""The hub's session operations and lifecycle."""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest
from anyio.abc import TaskGroup, TaskStatus
from trio.testing import MockClock

from replayhub import (
    Hub,
    HubClosedError,
    InvalidInputError,
    LeaseLostError,
    SessionNotFoundError,
    State,
)

from .conftest import HubFactory
from .helpers import FaultyWrap, collect, texts


async def test_info_describes_the_session(hub: Hub) -> None:
    assert await hub.info("s") is None
    async with hub.produce("s", metadata={"model": "m"}) as stream:
        await stream.send("a")
        await stream.flush()
        live = await hub.info("s")
        assert live is not None
        assert (live.session_id, live.state, live.events) == ("s", State.LIVE, 1)
        assert live.generation == stream.generation
        assert live.metadata == {"model": "m"}
        assert live.outcome is None
    done = await hub.info("s")
    assert done is not None
    assert done.state is State.DONE
    as_json = done.to_json()
    assert json.loads(json.dumps(as_json)) == as_json
    assert (as_json["state"], as_json["events"], as_json["metadata"]) == ("done", 1, {"model": "m"})
    assert as_json["created_at"] == done.created_at.isoformat()
    assert done.created_at <= done.updated_at
    assert done.outcome is not None


async def test_sessions_lists_most_recent_first_with_filter_and_paging(hub: Hub) -> None:
    for name in ("a", "b", "c"):
        async with hub.produce(name):
            pass
        await anyio.sleep(0.01)
    async with hub.produce("live"):
        listed = await hub.sessions()
        assert [info.session_id for info in listed] == ["live", "c", "b", "a"]
        assert [i.session_id for i in await hub.sessions(state=State.LIVE)] == ["live"]
        assert [i.session_id for i in await hub.sessions(state=State.DONE, limit=2)] == ["c", "b"]
        assert [i.session_id for i in await hub.sessions(limit=2, offset=2)] == ["b", "a"]
    bad: dict[str, Any]
    for bad in ({"limit": 0}, {"limit": 1001}, {"offset": -1}, {"state": "live"}):
        with pytest.raises(InvalidInputError):
            await hub.sessions(**bad)


async def test_cancel_of_unknown_or_finished_sessions(hub: Hub) -> None:
    assert await hub.cancel("nobody") is None
    assert await hub.cancel("nobody", wait=1) is None
    async with hub.produce("s"):
        pass
    info = await hub.cancel("s", wait=1)
    assert info is not None
    assert info.state is State.DONE


async def test_cancel_wait_times_out_if_the_producer_ignores_it(hub: Hub) -> None:
    async def stubborn(*, task_status: TaskStatus[None]) -> None:
        async with hub.produce("s"):
            task_status.started()
            with anyio.CancelScope(shield=True):
                await anyio.sleep(0.5)
            await anyio.sleep(5)  # cancelled here, once the shield lifts

    async with anyio.create_task_group() as tg:
        await tg.start(stubborn)
        with pytest.raises(TimeoutError, match="did not end"):
            await hub.cancel("s", wait=0.1)
    info = await hub.info("s")
    assert info is not None
    assert info.state is State.CANCELLED  # once the shield lifted


async def test_active_reports_live_sessions(hub: Hub) -> None:
    async with hub.produce("done"):
        pass
    async with hub.produce("live"):
        assert await hub.active(["live", "done", "none"]) == {
            "live": True,
            "done": False,
            "none": False,
        }


async def test_remove_deletes_everything(hub: Hub) -> None:
    async with hub.produce("s") as stream:
        await stream.send("a")
    assert await hub.remove("s")
    assert await hub.info("s") is None
    assert not await hub.remove("s")
    # A removed session can be produced again from scratch, with a new
    # generation, so the old session's ids and producer cannot match it.
    async with hub.produce("s") as again:
        await again.send("b")
    assert again.generation > stream.generation
    events, _ = await collect(hub, "s")
    assert texts(events) == ["b"]
    with pytest.raises(InvalidInputError, match="beyond the end"):
        await collect(hub, "s", after=f"{again.generation + 1}-1")


async def test_finished_sessions_expire_after_retention(make_hub: HubFactory) -> None:
    # A 0.15 s lease lapsed once on the cluster under two test workers.
    async with make_hub(retention=0.4, lease_ttl=0.4) as hub:
        async with hub.produce("s") as stream:
            await stream.send("a")
            await anyio.sleep(0.6)  # live past the retention: never expires while live
        assert await hub.info("s") is not None
        await anyio.sleep(0.2)
        assert await hub.info("s") is not None
        await anyio.sleep(0.4)
        assert await hub.info("s") is None
        assert await hub.sessions() == []


async def test_abandoned_sessions_expire_too(make_hub: HubFactory) -> None:
    async with make_hub(retention=0.2, lease_ttl=0.1) as hub:
        await hub._backend.claim("s", metadata={}, lease_ttl=0.1, retention=0.2)
        await anyio.sleep(0.15)
        info = await hub.info("s")
        assert info is not None
        assert info.state is State.ABANDONED
        await anyio.sleep(0.25)
        assert await hub.info("s") is None


async def test_hub_outside_its_block_raises_a_clear_error(make_hub: HubFactory) -> None:
    hub = make_hub()
    with pytest.raises(HubClosedError):
        await hub.info("s")
    with pytest.raises(HubClosedError):
        async with hub.produce("s"):
            pass
    with pytest.raises(HubClosedError):
        async with hub.subscribe("s"):
            pass
    async with hub:
        pass
    with pytest.raises(HubClosedError):
        await hub.sessions()
    with pytest.raises(RuntimeError):
        async with hub:
            pass


async def test_leaving_the_hub_stops_its_producers_and_leaves_no_task(
    make_hub: HubFactory,
) -> None:
    before = len(anyio.get_running_tasks())
    wrap = FaultyWrap()

    results: list[tuple[bool, BaseException | None]] = []

    async def producer(hub: Hub, *, task_status: TaskStatus[None]) -> None:
        error: BaseException | None = None
        try:
            async with hub.produce("s") as stream:
                await stream.send("a")
                task_status.started()
                await anyio.sleep_forever()
        except BaseException as exc:
            error = exc
            raise
        finally:
            results.append((stream.cancel_requested, error))

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg, make_hub(wrap=wrap) as hub:
            await tg.start(producer, hub)
    # The producer's body was cancelled, it exited quietly, and its terminal
    # write ran before the backend closed.
    assert results == [(False, None)]
    assert wrap.backend.finished == [("s", State.CANCELLED)]
    assert len(anyio.get_running_tasks()) == before


async def test_live_sessions_cost_the_hub_no_task_each(make_hub: HubFactory) -> None:
    # Hundreds of live chats per process: a task per producer (heartbeat,
    # cancel watch) or per followed session would be hundreds of idle tasks
    # for the garbage collector to walk. The hub's tasks do not grow with the
    # sessions (connections and the reads and renewals under way aside:
    # counted once some sessions run, then again with many more).
    go = anyio.Event()

    async def produce(hub: Hub, name: str, *, task_status: TaskStatus[None]) -> None:
        async with hub.produce(name) as stream:
            await stream.send("first")
            await stream.flush()
            task_status.started()
            await go.wait()

    async def read(hub: Hub, name: str, *, task_status: TaskStatus[None]) -> None:
        async with hub.subscribe(name) as events:
            task_status.started()
            assert [event.data async for event in events] == ["first"]

    async def open_sessions(hub: Hub, tg: TaskGroup, names: range) -> int:
        for index in names:
            await tg.start(produce, hub, f"s{index}")
            for _ in range(2):
                await tg.start(read, hub, f"s{index}")
        await anyio.sleep(0.7)  # a heartbeat for each, past the first reads
        counts = []
        for _ in range(10):  # the fewest: renewals and reads under way end
            counts.append(len(anyio.get_running_tasks()))
            await anyio.sleep(0.02)
        return min(counts)

    async with make_hub(lease_ttl=1.5) as hub, anyio.create_task_group() as tg:
        some = await open_sessions(hub, tg, range(10))
        many = await open_sessions(hub, tg, range(10, 40))
        go.set()
    added = many - some - 3 * 30  # the 30 new sessions' own tasks (ours)
    assert added < 5, added


async def test_hub_close_ends_waiting_subscribers(make_hub: HubFactory) -> None:
    ended: list[object] = []

    async def producer(hub: Hub, *, task_status: TaskStatus[None]) -> None:
        async with hub.produce("s"):
            task_status.started()
            await anyio.sleep_forever()

    async def reader(hub: Hub, *, task_status: TaskStatus[None]) -> None:
        try:
            async with hub.subscribe("s") as events:
                task_status.started()
                async for _ in events:
                    pass
            ended.append(events.outcome and events.outcome.state)
        except HubClosedError as exc:
            ended.append(exc)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg, make_hub() as hub:
            await tg.start(producer, hub)
            await tg.start(reader, hub)
    # The hub stops its producer, and keeps following the session until the
    # end is known, so its reader sees that end, not the hub closing.
    assert ended == [State.CANCELLED]


async def test_stale_producer_error_names_the_cause(hub: Hub) -> None:
    with pytest.raises(LeaseLostError, match="removed"):
        async with hub.produce("s"):
            await hub.remove("s")
            await anyio.sleep(1)
    assert await hub.info("s") is None
    with pytest.raises(SessionNotFoundError, match="no session"):
        await collect(hub, "s")


async def test_an_exception_leaving_the_hub_is_raised_as_itself(make_hub: HubFactory) -> None:
    error = KeyError("user bug")
    with pytest.raises(KeyError) as raised:
        async with make_hub():
            raise error
    assert raised.value is error


#: Trio with a clock that jumps ahead whenever every task waits: leases and
#: retention of hours pass in an instant, and exactly (the memory backend
#: reads the loop's clock). asyncio has no such clock in anyio.
MOCK_CLOCK = pytest.param(
    ("trio", {"clock": MockClock(autojump_threshold=0)}), id="trio-mock-clock"
)


@pytest.mark.parametrize("anyio_backend", [MOCK_CLOCK])
@pytest.mark.parametrize("backend_kind", ["memory"])
async def test_on_a_mock_clock_a_live_session_outlives_its_retention_then_expires_on_time(
    make_hub: HubFactory,
) -> None:
    async with make_hub(retention=3600.0, lease_ttl=30.0) as hub:
        async with hub.produce("s") as stream:
            await stream.send("a")
            await anyio.sleep(4 * 3600)  # renewed all along: live, never expired
            info = await hub.info("s")
            assert info is not None
            assert info.state is State.LIVE
        ended = anyio.current_time()
        await anyio.sleep_until(ended + 3600 - 1)
        assert await hub.info("s") is not None
        await anyio.sleep_until(ended + 3600 + 1)
        assert await hub.info("s") is None
        assert await hub.sessions() == []


@pytest.mark.parametrize("anyio_backend", [MOCK_CLOCK])
@pytest.mark.parametrize("backend_kind", ["memory"])
async def test_on_a_mock_clock_a_silent_producer_is_abandoned_when_its_lease_runs_out(
    make_hub: HubFactory,
) -> None:
    async with make_hub(retention=600.0, lease_ttl=30.0) as hub:
        claimed = anyio.current_time()
        await hub._backend.claim("s", metadata={}, lease_ttl=30.0, retention=600.0)
        async with hub.subscribe("s") as events:
            assert [event async for event in events] == []
        assert events.outcome is not None
        assert events.outcome.state is State.ABANDONED
        # Found when the lease ran out, not before and not a re-check later.
        assert 30.0 <= anyio.current_time() - claimed <= 30.1
        await anyio.sleep_until(claimed + 30 + 600 + 1)
        assert await hub.info("s") is None
