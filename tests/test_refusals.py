"""When Redis refuses writes or loses data: a full Redis (maxmemory with
noeviction), a read-only server, an ACL tightened mid-stream, and keys
evicted under allkeys-lru. Real redis-server processes, both loops. A refusal
reaches the producer at once (not after its lease) and readers see the
session end; lost events are never served as a complete log."""

from __future__ import annotations

import re
from collections.abc import Callable

import anyio
import pytest
from anyio.abc import TaskStatus

from replayhub import (
    ErrorType,
    EventsLostError,
    Hub,
    LeaseLostError,
    SessionNotFoundError,
    State,
    StorageRefusedError,
)
from replayhub.backends.redis._keys import session_keys

from .helpers import collect
from .redis_server import RedisServer

LEASE = 1.5
NAMESPACE = "refusals"
PAYLOAD = "x" * 1000

#: Each test runs on each Redis driver (redis-py on asyncio only).
pytestmark = pytest.mark.usefixtures("redis_driver")


def hub_on(server: RedisServer, url: str | None = None) -> Hub:
    return Hub.from_url(url or server.url, namespace=NAMESPACE, lease_ttl=LEASE, finalize_timeout=2)


async def produce_until_refused(
    hub: Hub, session_id: str, refuse: Callable[[], None], *, task_status: TaskStatus[float]
) -> None:
    """Send 1 KB events, flushing each; call ``refuse()`` after ten; report
    how long after that the producer was told (it must be told)."""
    with pytest.raises(StorageRefusedError) as raised:
        async with hub.produce(session_id) as stream:
            for index in range(100_000):
                await stream.send(PAYLOAD)
                await stream.flush()
                if index == 9:
                    refused_at = anyio.current_time()
                    refuse()
    assert "Redis refused" in str(raised.value)
    task_status.started(anyio.current_time() - refused_at)


async def run_until_refused(hub: Hub, session_id: str, refuse: Callable[[], None]) -> float:
    async with anyio.create_task_group() as tg:
        took: float = await tg.start(produce_until_refused, hub, session_id, refuse)
    print(f"\nthe producer was told {took * 1000:.1f} ms after the refusal began")
    return took


async def test_a_full_redis_fails_the_producer_at_once_and_its_readers_see_the_end(
    fresh_redis: RedisServer,
) -> None:
    def fill_up() -> None:  # noeviction (the default) with less room than is used
        used = re.search(rb"used_memory:(\d+)", fresh_redis.command("INFO", "memory"))
        assert used is not None
        fresh_redis.command("CONFIG", "SET", "maxmemory", str(int(used[1]) // 2))

    async with hub_on(fresh_redis) as hub:
        took = await run_until_refused(hub, "chat", fill_up)
        events, outcome = await collect(hub, "chat")  # reads still work when full
        fresh_redis.command("CONFIG", "SET", "maxmemory", "0")
        async with hub.produce("chat") as stream:  # memory freed: a new producer works
            await stream.send("again")
        info = await hub.info("chat")
    assert took < LEASE  # told by the refused write, not by a lost lease
    # The terminal write still landed on the full Redis (it writes the
    # expiry first, which lets a script's writes through).
    assert outcome.state is State.FAILED
    assert outcome.error is not None
    assert "OOM" in outcome.error
    assert outcome.error_type is ErrorType.INTERNAL
    assert [event.data for event in events] == [PAYLOAD] * len(events)
    assert len(events) >= 10
    assert info is not None
    assert info.state is State.DONE


async def test_a_read_only_server_fails_the_producer_and_readers_see_it_abandoned(
    fresh_redis: RedisServer,
) -> None:
    def demote() -> None:  # a replica of nothing: it refuses every write
        fresh_redis.command("REPLICAOF", "127.0.0.1", "1")

    async with hub_on(fresh_redis) as hub:
        took = await run_until_refused(hub, "chat", demote)
        with anyio.fail_after(LEASE + 2):
            info = await hub.info("chat")
            assert info is not None
            assert info.state is State.LIVE  # nothing could be written
            await anyio.sleep(LEASE)  # no heartbeat renews it any more
        fresh_redis.command("REPLICAOF", "NO", "ONE")
        events, outcome = await collect(hub, "chat")
    assert took < LEASE
    assert outcome.state is State.ABANDONED
    assert len(events) >= 10


async def test_an_acl_tightened_mid_stream_fails_the_producer(fresh_redis: RedisServer) -> None:
    fresh_redis.command("ACL", "SETUSER", "app", "on", ">app-secret", "~*", "&*", "+@all")
    url = f"redis://app:app-secret@127.0.0.1:{fresh_redis.port}/0?driver={fresh_redis.driver}"

    def revoke() -> None:
        fresh_redis.command("ACL", "SETUSER", "app", "-xadd")

    async with hub_on(fresh_redis, url) as hub:
        took = await run_until_refused(hub, "chat", revoke)
        _, outcome = await collect(hub, "chat")
    assert took < LEASE
    assert outcome.state is State.FAILED
    assert outcome.error is not None
    assert "can't run this command" in outcome.error


async def test_a_live_sessions_evicted_log_fails_the_producer_and_every_reader(
    fresh_redis: RedisServer,
) -> None:
    keys = session_keys(NAMESPACE, "chat")
    async with hub_on(fresh_redis) as hub:
        with pytest.raises(EventsLostError, match=r"no longer holds events 1-5"):
            async with hub.produce("chat") as stream:
                for _ in range(5):
                    await stream.send("before")
                await stream.flush()
                fresh_redis.command("DEL", keys.log)  # what allkeys-lru does
                await stream.send("after")
                await stream.flush()
        with pytest.raises(EventsLostError, match="evicted"):
            await collect(hub, "chat")  # not an empty or partial log
        with pytest.raises(EventsLostError):
            await hub.info("chat")  # which would claim 5 events


async def test_a_finished_sessions_evicted_log_is_never_served_as_complete(
    fresh_redis: RedisServer,
) -> None:
    keys = session_keys(NAMESPACE, "chat")
    async with hub_on(fresh_redis) as hub:
        async with hub.produce("chat") as stream:
            first = await stream.send("one")
            await stream.send("two")
        fresh_redis.command("DEL", keys.log)
        for after in (None, first):
            with pytest.raises(EventsLostError):
                await collect(hub, "chat", after=after)
        assert await hub.sessions() == []  # not listed as a whole session
        async with hub.produce("chat") as stream:  # the id can be used again
            await stream.send("new")
        events, _ = await collect(hub, "chat")
    assert [event.data for event in events] == ["new"]


async def test_an_evicted_session_hash_ends_producer_and_readers_clearly(
    fresh_redis: RedisServer,
) -> None:
    keys = session_keys(NAMESPACE, "chat")
    async with hub_on(fresh_redis) as hub:
        with pytest.raises(LeaseLostError, match="removed"):
            async with hub.produce("chat") as stream:
                await stream.send("one")
                await stream.flush()
                fresh_redis.command("DEL", keys.session)
                await stream.send("two")
                await stream.flush()
        with pytest.raises(SessionNotFoundError):
            await collect(hub, "chat")


async def test_allkeys_lru_eviction_never_yields_a_silently_truncated_replay(
    fresh_redis: RedisServer,
) -> None:
    fresh_redis.command("CONFIG", "SET", "maxmemory-policy", "allkeys-lru")
    fresh_redis.command("CONFIG", "SET", "maxmemory", str(7 * 1024 * 1024))
    sessions = [f"chat-{index}" for index in range(8)]
    async with hub_on(fresh_redis) as hub:
        ended: dict[str, BaseException | None] = {}

        async def produce(session_id: str) -> None:
            try:
                async with hub.produce(session_id) as stream:
                    for index in range(800):
                        await stream.send(f"{index:06d}" + PAYLOAD)
            except (EventsLostError, LeaseLostError) as exc:
                ended[session_id] = exc
            else:
                ended[session_id] = None

        async with anyio.create_task_group() as tg:
            for session_id in sessions:
                tg.start_soon(produce, session_id)
        complete = 0
        for session_id in sessions:
            try:
                events, outcome = await collect(hub, session_id)
            except (EventsLostError, SessionNotFoundError):
                continue  # told, not served a truncated log
            numbers = [int(str(event.data)[:6]) for event in events]
            assert numbers == list(range(len(numbers))), session_id  # from the start, no gap
            if outcome.state is State.DONE:
                assert len(numbers) == 800, session_id
                complete += 1
    assert any(exc is not None for exc in ended.values())  # eviction did strike
    failures = sorted({type(exc).__name__ for exc in ended.values() if exc is not None})
    print(f"\nallkeys-lru: {complete} of {len(sessions)} sessions complete; the others {failures}")
