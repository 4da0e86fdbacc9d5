"""Takeover ("double texting"): a new producer stops the live one, waits for
its end and claims the session; on every backend and both loops."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio
import pytest
from anyio.abc import TaskStatus

from replayhub import Hub, InvalidInputError, Producer, ProducerGroup, SessionBusyError, State

from .conftest import HubFactory
from .helpers import collect


async def endless(hub: Hub, session_id: str, *, task_status: TaskStatus[None]) -> None:
    async with hub.produce(session_id) as stream:
        task_status.started()
        while True:
            await stream.send("old")
            await anyio.sleep(0.01)


async def test_a_takeover_ends_the_live_reply_cancelled_and_streams_the_new_one(
    make_hub: HubFactory,
) -> None:
    async with make_hub(lease_ttl=2.0) as hub, anyio.create_task_group() as tg:
        await tg.start(endless, hub, "chat")
        first = await hub.info("chat")
        assert first is not None

        async def read_old(*, task_status: TaskStatus[None]) -> None:
            async with hub.subscribe("chat") as events:
                task_status.started()
                old = [event.data async for event in events]
            assert set(old) == {"old"}
            assert events.outcome is not None
            assert events.outcome.state is State.CANCELLED  # the old reader learns it

        await tg.start(read_old)
        async with hub.produce("chat", takeover=True) as stream:
            assert stream.generation > first.generation
            await stream.send("new")
        events, outcome = await collect(hub, "chat")
    assert [event.data for event in events] == ["new"]
    assert outcome.state is State.DONE


async def test_a_takeover_of_a_free_or_finished_session_just_claims_it(
    make_hub: HubFactory,
) -> None:
    async with make_hub() as hub:
        async with hub.produce("fresh", takeover=True) as stream:
            await stream.send("a")
        async with hub.produce("fresh", takeover=True, takeover_timeout=0) as stream:
            await stream.send("b")
        events, outcome = await collect(hub, "fresh")
    assert [event.data for event in events] == ["b"]
    assert outcome.state is State.DONE


async def test_a_producer_that_never_stops_is_taken_over_once_its_lease_runs_out(
    make_hub: HubFactory,
) -> None:
    # The hung producer's lease (0.5 s) bounds the takeover (asserted below).
    # The new producer's own lease and finalize_timeout leave its writes room
    # on a loaded machine: a Redis Cluster's terminal write took over 0.5 s in
    # one CI run, and in another a 0.5 s lease lapsed before its first write.
    async with make_hub(lease_ttl=2.0, finalize_timeout=3) as hub:
        # A producer whose process hangs: it claimed, wrote, and no longer
        # renews its lease nor reacts to the stop.
        backend = hub._backend
        hung = await backend.claim("chat", metadata={}, lease_ttl=0.5, retention=60)
        with pytest.raises(SessionBusyError, match=r"did not end within takeover_timeout=0\.1s"):
            async with hub.produce("chat", takeover=True, takeover_timeout=0.1):
                raise AssertionError("claimed a busy session")
        started = anyio.current_time()
        async with hub.produce("chat", takeover=True) as stream:
            assert stream.generation > hung.generation
            waited = anyio.current_time() - started
            await stream.send("new")
        info = await hub.info("chat")
    assert waited < 0.5 + 0.5  # the hung lease's end, long before its takeover_timeout (2 + 3)
    assert info is not None
    assert info.state is State.DONE


async def test_without_takeover_a_busy_session_still_raises(make_hub: HubFactory) -> None:
    async with make_hub() as hub, anyio.create_task_group() as tg:
        await tg.start(endless, hub, "chat")
        with pytest.raises(SessionBusyError):
            async with hub.produce("chat"):
                pass
        assert (await hub.active(["chat"])) == {"chat": True}
        tg.cancel_scope.cancel()


async def test_a_takeover_cancelled_while_it_waits_claims_nothing(make_hub: HubFactory) -> None:
    async with make_hub(lease_ttl=0.5) as hub:
        backend = hub._backend
        hung = await backend.claim("chat", metadata={}, lease_ttl=60, retention=60)
        with anyio.move_on_after(0.2):
            async with hub.produce("chat", takeover=True, takeover_timeout=30):
                raise AssertionError("claimed a busy session")
        info = await hub.info("chat")
    assert info is not None
    assert info.generation == hung.generation  # nothing claimed meanwhile
    assert info.state is State.LIVE


def replying(text: str) -> Callable[[Producer], Awaitable[None]]:
    async def generate(stream: Producer) -> None:
        for _ in range(1000):
            await stream.send(text)
            await anyio.sleep(0.01)

    return generate


async def test_the_producer_group_passes_takeover_on(make_hub: HubFactory) -> None:
    async with make_hub(lease_ttl=2.0) as hub, ProducerGroup(hub) as group:
        first = await group.start("chat", replying("first"))
        with pytest.raises(SessionBusyError):
            await group.start("chat", replying("again"))
        second = await group.start("chat", replying("second"), takeover=True)
        assert second > first
        info = await hub.cancel("chat", wait=5)
        events, outcome = await collect(hub, "chat")
    assert info is not None
    assert {event.data for event in events} == {"second"}
    assert outcome.state is State.CANCELLED


@pytest.mark.parametrize("backend_kind", ["memory"])
@pytest.mark.parametrize(
    "options",
    [
        {"takeover_timeout": 1.0},
        {"takeover": True, "takeover_timeout": -1},
        {"takeover": True, "takeover_timeout": "1"},
    ],
)
async def test_a_bad_takeover_timeout_is_rejected_at_once(
    make_hub: HubFactory, options: dict[str, object]
) -> None:
    async with make_hub() as hub:
        with pytest.raises(InvalidInputError, match="takeover_timeout"):
            hub.produce("chat", **options)  # type: ignore[arg-type]
