"""Faults against a real Redis: connections killed, Pub/Sub lost, Redis
restarted with and without persistence, claim races, namespaces, hostile
input. Each test prints what it tried, so the figures can be quoted."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from anyio.abc import TaskStatus
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from replayhub import (
    BackendUnavailableError,
    Event,
    Hub,
    InvalidInputError,
    LeaseLostError,
    SessionBusyError,
    SessionInfo,
    SessionNotFoundError,
    State,
)

from .redis_server import RedisServer


def kill_clients(server: RedisServer, kind: str) -> int:
    """CLIENT KILL every connection of one type; returns how many died."""
    return int(server.command("CLIENT", "KILL", "TYPE", kind).strip() or 0)


async def follow(hub: Hub, session_id: str, sink: list[Event], outcomes: list[State]) -> None:
    """Read a session to its end into ``sink``; append its outcome to ``outcomes``."""
    async with hub.subscribe(session_id) as events:
        async for event in events:
            sink.append(event)
    assert events.outcome is not None
    outcomes.append(events.outcome.state)


@pytest.mark.serial  # kills connections every 30 ms: retries race the clock under load
@pytest.mark.usefixtures("redis_driver")
async def test_client_kill_mid_stream_loses_and_duplicates_nothing(
    fresh_redis: RedisServer,
) -> None:
    total, kills = 3000, 0
    received: list[list[Event]] = [[], []]
    outcomes: list[State] = []

    async def killer() -> None:
        nonlocal kills
        for round_ in range(20):
            await anyio.sleep(0.03)
            kills += kill_clients(fresh_redis, "pubsub" if round_ % 2 else "normal")

    async with Hub.from_url(fresh_redis.url, lease_ttl=3.0) as hub:
        async with anyio.create_task_group() as tg:
            async with hub.produce("s") as stream:
                await stream.send(0)
                await stream.flush()
                for sink in received:
                    tg.start_soon(follow, hub, "s", sink, outcomes)
                tg.start_soon(killer)
                for i in range(1, total):
                    await stream.send(i)
                    if i % 50 == 0:
                        await anyio.sleep(0.005)
        # After all that, a cancel still reaches a producer, with both kinds
        # of connection killed just before it is sent.
        async with anyio.create_task_group() as tg:
            await tg.start(_produce_until_cancelled, hub)
            kills += kill_clients(fresh_redis, "pubsub") + kill_clients(fresh_redis, "normal")
            with anyio.fail_after(5):
                info = await _cancel_when_reachable(hub)
    print(f"\nCLIENT KILL: {kills} connections killed during {total} events")
    assert kills >= 10
    assert outcomes == [State.DONE, State.DONE]
    for sink in received:
        assert [event.data for event in sink] == list(range(total))
    assert info.state is State.CANCELLED


async def _produce_until_cancelled(hub: Hub, *, task_status: TaskStatus[None]) -> None:
    async with hub.produce("stop-me") as stream:
        task_status.started()
        while True:
            await stream.send("tick")
            await anyio.sleep(0.005)


async def _cancel_when_reachable(hub: Hub) -> SessionInfo:
    # The hub's own cancel call may meet the killed connection first: retry it.
    while True:
        try:
            info = await hub.cancel("stop-me", wait=3)
        except BackendUnavailableError:
            await anyio.sleep(0.05)
            continue
        assert info is not None
        return info


@pytest.mark.usefixtures("redis_driver")
async def test_cancel_arrives_within_a_heartbeat_when_pubsub_is_lost(
    fresh_redis: RedisServer,
) -> None:
    lease = 0.9
    ended = anyio.Event()

    async def producer(hub: Hub, *, task_status: TaskStatus[None]) -> None:
        async with hub.produce("s") as stream:
            task_status.started()
            await anyio.sleep(30)
        assert stream.cancel_requested
        ended.set()

    async with (
        Hub.from_url(fresh_redis.url, lease_ttl=lease) as hub,
        anyio.create_task_group() as tg,
    ):
        await tg.start(producer, hub)
        # Kill the Pub/Sub connection: the cancel message has nobody to hear it.
        killed = kill_clients(fresh_redis, "pubsub")
        started = anyio.current_time()
        await hub.cancel("s")
        with anyio.fail_after(lease):
            await ended.wait()
        stopped_after = anyio.current_time() - started
        info = await hub.info("s")
    print(f"\ncancel with Pub/Sub killed ({killed} conns): stopped after {stopped_after:.3f}s")
    assert info is not None
    assert info.state is State.CANCELLED
    assert stopped_after < lease / 3 + 0.3


@pytest.mark.usefixtures("redis_driver")
async def test_redis_restart_with_aof_keeps_every_acknowledged_event(tmp_path: Path) -> None:
    server = RedisServer(
        tmp_path / "aof", extra=("--appendonly", "yes", "--appendfsync", "always")
    ).start()
    total = 400
    received: list[Event] = []
    outcomes: list[State] = []
    try:
        async with Hub.from_url(server.url, lease_ttl=5.0) as hub:
            async with anyio.create_task_group() as tg:
                async with hub.produce("s") as stream:
                    await stream.send(0)
                    await stream.flush()
                    tg.start_soon(follow, hub, "s", received, outcomes)
                    for i in range(1, total):
                        await stream.send(i)
                        if i == total // 2:
                            await stream.flush()
                            server.stop()
                            await anyio.sleep(0.3)
                            server.start()
                        await anyio.sleep(0.002)
    finally:
        server.stop()
    print(f"\nRedis restart (AOF always) mid-stream: {total} events, {len(received)} received")
    assert outcomes == [State.DONE]
    assert [event.data for event in received] == list(range(total))


@pytest.mark.usefixtures("redis_driver")
async def test_redis_restart_without_persistence_is_a_clear_end(fresh_redis: RedisServer) -> None:
    async with Hub.from_url(fresh_redis.url, lease_ttl=1.5) as hub:
        with pytest.raises(LeaseLostError, match="removed"):
            async with hub.produce("s") as stream:
                await stream.send("a")
                await stream.flush()
                async with hub.subscribe("s") as events:
                    assert (await events.__anext__()).data == "a"
                    fresh_redis.stop()
                    fresh_redis.start()  # same port, nothing kept
                    with anyio.fail_after(5), pytest.raises(SessionNotFoundError):
                        await events.__anext__()
                with anyio.fail_after(5):
                    await anyio.sleep(10)  # cancelled: the heartbeat finds the claim gone


class Race:
    """Contenders for one session: how many won, once all were answered."""

    def __init__(self, contenders: int) -> None:
        self.contenders = contenders
        self.winners = self.answered = 0
        self.all_answered = anyio.Event()
        self.release = anyio.Event()

    async def contend(self, hub: Hub, session_id: str) -> None:
        try:
            async with hub.produce(session_id):
                self.winners += 1
                self._answer()
                await self.release.wait()
        except SessionBusyError:
            self._answer()

    def _answer(self) -> None:
        self.answered += 1
        if self.answered == self.contenders:
            self.all_answered.set()


@pytest.mark.usefixtures("redis_driver")
async def test_claim_races_have_exactly_one_winner(fresh_redis: RedisServer) -> None:
    rounds, contenders = 200, 8
    async with Hub.from_url(fresh_redis.url, lease_ttl=2.0) as hub:
        for round_ in range(rounds):
            race = Race(contenders)
            async with anyio.create_task_group() as tg:
                for _ in range(contenders):
                    tg.start_soon(race.contend, hub, f"race-{round_}")
                # Held until every claim is answered: a claim arriving after
                # the winner ended would rightly start a new generation.
                with anyio.fail_after(10):
                    await race.all_answered.wait()
                race.release.set()
            winners = race.winners
            assert winners == 1, f"round {round_}: {winners} winners"
    print(f"\nclaim races: {rounds} rounds x {contenders} contenders, one winner each")


async def test_namespaces_never_see_each_other(
    redis_server: RedisServer, anyio_backend: str
) -> None:
    async with (
        Hub.from_url(redis_server.url, namespace=f"tenant-a-{anyio_backend}") as a,
        Hub.from_url(redis_server.url, namespace=f"tenant-b-{anyio_backend}") as b,
    ):
        async with a.produce("shared-id") as stream:
            await stream.send("a's data")
            assert await b.info("shared-id") is None
            assert await b.active(["shared-id"]) == {"shared-id": False}
            assert not await b.remove("shared-id")
            assert await b.cancel("shared-id") is None
            assert [info.session_id for info in await b.sessions()] == []
            async with b.produce("shared-id") as other:  # its own session
                await other.send("b's data")
        async with a.subscribe("shared-id") as events:
            assert [event.data async for event in events] == ["a's data"]
        async with b.subscribe("shared-id") as events:
            assert [event.data async for event in events] == ["b's data"]


hostile_ids = st.one_of(
    st.text(alphabet=st.sampled_from("{}:*?[]\\%\x00\n\r\t "), min_size=0, max_size=20),
    st.just("x" * 1_000_000),
    st.text(min_size=0, max_size=300),
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(session_id=hostile_ids, name=st.text(max_size=80), cursor=st.text(max_size=40))
async def test_hostile_input_is_rejected_before_anything_is_written(
    redis_server: RedisServer, anyio_backend: str, session_id: str, name: str, cursor: str
) -> None:
    namespace = f"hostile-{anyio_backend}"

    def keys() -> int:
        script = "return #redis.call('KEYS', ARGV[1])"
        return int(redis_server.command("EVAL", script, "0", f"{namespace}:*"))

    async with Hub.from_url(redis_server.url, namespace=namespace, lease_ttl=2.0) as hub:
        before = keys()
        try:
            stream = hub.produce(session_id)
        except InvalidInputError:
            assert keys() == before  # nothing written
            return
        async with stream:
            try:
                await stream.send("payload", event=name)
            except InvalidInputError:
                name = "message"
                await stream.send("payload")
        try:
            async with hub.subscribe(session_id, after=cursor or None) as events:
                received = [(event.event, event.data) async for event in events]
            # A valid cursor is of this session or of none: after its one
            # event (nothing more) or before it (that event).
            assert received in ([], [(name, "payload")])
        except InvalidInputError:
            pass  # a garbage cursor, refused clearly
        async with hub.subscribe(session_id) as events:
            assert [(event.event, event.data) async for event in events] == [(name, "payload")]
        assert await hub.remove(session_id)
