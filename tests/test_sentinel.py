"""A primary/replica pair under Sentinel: sessions through ``redis+sentinel://``,
and a failover (ordered, then a killed primary) while a session streams."""

from __future__ import annotations

import gc
import itertools
import os
import signal
from collections.abc import Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio
import coredis
import pytest
import redis
import redis.asyncio.sentinel
from coredis.connection import TCPLocation

from replayhub import BackendUnavailableError, Hub, ReplayHubError, State, StorageRefusedError
from replayhub.backends.redis import RedisBackend
from replayhub.backends.redis._keys import session_keys
from replayhub.backends.redis._redispy import SentinelGuard
from replayhub.backends.redis._sentinel import Standing, standing

from .helpers import collect, texts
from .redis_server import RedisServer, SentinelSet
from .streaming import Stream, stream_with_subscribers
from .test_redis_pages import read_page_after_page

#: Each test runs on each Redis driver (redis-py on asyncio only).
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("redis_driver")]


@pytest.fixture
def sentinels(tmp_path: Path) -> Iterator[SentinelSet]:
    servers = SentinelSet(tmp_path / "sentinel").start()
    yield servers
    servers.stop()


def hub_on(servers: SentinelSet, *, lease_ttl: float = 5.0) -> Hub:
    # A lease a failover fits in (Sentinel notices a dead primary after its
    # down-after-milliseconds, 1 s here, then elects and promotes).
    return Hub.from_url(servers.url, namespace="s", lease_ttl=lease_ttl, retention=60.0)


async def test_ordered_failover_mid_stream_leaves_subscribers_complete(
    sentinels: SentinelSet,
) -> None:
    async def fail_over(stream: Stream) -> None:
        await stream.sent_at_least(300)
        async with stream.paused():
            # Replication is asynchronous: an ordered failover does not wait
            # for the replica, so the test does (docs/deployment.md).
            await anyio.to_thread.run_sync(sentinels.primary.wait_replicated_by, sentinels.replica)
            await anyio.to_thread.run_sync(
                sentinels.sentinels[0].command, "sentinel", "failover", sentinels.service
            )
            # Until the old primary is a replica: writes it takes before
            # Sentinel demotes it are lost with its data (docs/deployment.md).
            # Sentinel demotes it some 8-10 s after the promotion (it waits
            # for newer configurations before reconfiguring an instance whose
            # role disagrees with its view, 10 s here before this step); the
            # stream is paused all along, so the test demotes it as soon as
            # the Sentinels name the new primary, as Sentinel later would.
            await anyio.to_thread.run_sync(sentinels.wait, sentinels.replica_promoted)
            sentinels.demote_old_primary()
            await anyio.to_thread.run_sync(
                sentinels.wait,
                lambda: b"role:slave" in sentinels.primary.command("info", "replication"),
            )

    async with hub_on(sentinels) as hub, hub_on(sentinels) as reader:
        result = await stream_with_subscribers(hub, reader, "chat", count=1500, during=fail_over)
    result.assert_complete(State.DONE)
    # The session lives on the primary the Sentinels name now.
    assert sentinels.replica.command("exists", "s:{chat}:s").strip() == b"1"


async def test_killed_primary_mid_stream_fails_over_to_the_replica(
    sentinels: SentinelSet,
) -> None:
    async def kill_primary(stream: Stream) -> None:
        await stream.sent_at_least(300)
        async with stream.paused():
            await anyio.to_thread.run_sync(sentinels.primary.wait_replicated_by, sentinels.replica)
            sentinels.primary.kill()
            await anyio.to_thread.run_sync(sentinels.wait, sentinels.replica_promoted)

    # The default lease: a killed primary's failover (down-after, then an
    # election) once outlasted a 5 s lease's last renewal on a loaded
    # machine (one CI run in many; the library is not what is slow there).
    async with hub_on(sentinels, lease_ttl=10.0) as hub, hub_on(sentinels) as reader:
        result = await stream_with_subscribers(hub, reader, "chat", count=1500, during=kill_primary)
    result.assert_complete(State.DONE)


async def test_no_flushed_event_is_lost_to_a_failover_taken_while_producing(
    sentinels: SentinelSet,
) -> None:
    """The old primary takes writes until Sentinel demotes it; a flush that
    returned in that window must still have its events after the failover."""
    acknowledged = 0
    outcome: BaseException | None = None
    # (events acknowledged, the event set once that many are or the producer
    # ended); the second goal is set after the demotion, and a producer that
    # ends before it (100_000) must still end the wait, with its error.
    milestones = [(200, anyio.Event()), (100_000, anyio.Event())]

    def reached(count: int) -> None:
        for goal, event in milestones:
            if goal and count >= goal:
                event.set()

    async def produce(hub: Hub) -> None:
        nonlocal acknowledged, outcome
        try:
            async with hub.produce("chat") as stream:
                for index in range(1, 100_000):
                    await stream.send(index)
                    if index % 10 == 0:
                        await stream.flush()
                        acknowledged = index
                        reached(index)
                    await anyio.sleep(0.002)
        except ReplayHubError as exc:
            outcome = exc
            reached(100_000)

    def demoted() -> bool:
        info = sentinels.primary.command("info", "replication")
        return b"role:slave" in info and b"master_link_status:up" in info

    async with hub_on(sentinels) as hub, anyio.create_task_group() as tasks:
        tasks.start_soon(produce, hub)
        await milestones[0][1].wait()
        # No pause and no wait for replication: the stream runs through it.
        await anyio.to_thread.run_sync(
            sentinels.sentinels[0].command, "sentinel", "failover", sentinels.service
        )
        # Until it is demoted, the old primary takes whatever writes still
        # reach it: half a second of that, then the test demotes it rather
        # than wait for Sentinel (who sends REPLICAOF, the hub cannot see).
        await anyio.to_thread.run_sync(sentinels.wait, sentinels.replica_promoted)
        await anyio.sleep(0.5)
        await anyio.to_thread.run_sync(sentinels.demote_old_primary)
        await anyio.to_thread.run_sync(sentinels.wait, demoted)
        milestones[1] = (acknowledged + 200, milestones[1][1])
        with anyio.fail_after(20):
            await milestones[1][1].wait()
        tasks.cancel_scope.cancel()

    async with hub_on(sentinels) as reader:
        with anyio.fail_after(10):
            events, ended = await collect(reader, "chat")
    assert texts(events)[:acknowledged] == list(range(1, acknowledged + 1))
    # Only the batch in flight was unconfirmed; retried on the new primary,
    # it followed the log there, so the producer went on to the end.
    assert outcome is None
    assert ended.state is State.CANCELLED
    assert texts(events) == list(range(1, len(events) + 1))


@pytest.fixture
def sentinels_never_demoting(tmp_path: Path) -> Iterator[SentinelSet]:
    """A Sentinel set whose primary refuses ``REPLICAOF``: after a failover
    it stays a primary nobody writes to, as the old primary is for the
    seconds before Sentinel demotes it, for as long as a test needs."""
    servers = SentinelSet(tmp_path / "sentinel")
    servers.primary.extra = ("--rename-command", "REPLICAOF", "", "--rename-command", "SLAVEOF", "")
    yield servers.start()
    servers.stop()


async def test_a_hub_that_only_reads_follows_a_failover_when_announced(
    sentinels_never_demoting: SentinelSet,
) -> None:
    """A hub with readers and no producer learns of a failover from the
    Sentinels' announcement, not from a write of its own: its reader of a
    live reply gets the events written on the new primary at once, not once
    the old primary is demoted or the lease-long re-read comes (60 s here;
    the default lease made it 11 s). One Sentinel is down: the others
    announce it."""
    sentinels = sentinels_never_demoting

    def on_url() -> Hub:
        return Hub.from_url(sentinels.url, namespace="s", lease_ttl=60.0, retention=60.0)

    sentinels.sentinels[2].stop()
    old_primary = sentinels.primary_port()
    sent = -1
    switched_at: list[int] = []  # the first event sent once the Sentinels name another
    claimed = anyio.Event()
    async with on_url() as producers, on_url() as readers, anyio.create_task_group() as tasks:

        async def produce() -> None:
            nonlocal sent
            async with producers.produce("chat") as stream:
                claimed.set()
                for index in itertools.count():
                    await stream.send(index)
                    sent = index
                    await anyio.sleep(0.02)

        async def note_the_switch() -> None:
            await anyio.to_thread.run_sync(
                sentinels.wait, lambda: sentinels.primary_port() not in (None, old_primary)
            )
            switched_at.append(sent + 1)

        tasks.start_soon(produce)
        await claimed.wait()
        async with readers.subscribe("chat") as events:
            with anyio.fail_after(10):
                assert (await events.__anext__()).data == 0
            await anyio.to_thread.run_sync(
                sentinels.sentinels[0].command, "sentinel", "failover", sentinels.service
            )
            tasks.start_soon(note_the_switch)
            with anyio.fail_after(20):
                async for event in events:
                    if switched_at and isinstance(event.data, int) and event.data >= switched_at[0]:
                        break
        tasks.cancel_scope.cancel()


@pytest.mark.parametrize("redis_driver", ["redis-py"], indirect=True)
async def test_a_connection_busy_when_the_client_moves_is_dropped_once_released(
    sentinels: SentinelSet,
) -> None:
    """redis-py: a move drops the idle connections at once and a busy one
    when it is released, so that no later command reads the old primary
    through it."""
    async with AsyncExitStack() as stack:
        client = await apps_sentinel_client(stack, sentinels, "redis-py")
        pool = client.connection_pool
        busy = await pool.get_connection()
        idle = await pool.get_connection()
        await pool.release(idle)
        await SentinelGuard(client).move()
        assert not idle.is_connected
        assert busy.is_connected  # another task's command runs on
        await pool.release(busy)
        assert not busy.is_connected


async def test_a_flush_returns_once_a_lagging_replica_has_its_events(
    sentinels: SentinelSet,
) -> None:
    """A replica that is up but does not acknowledge (stopped for a moment,
    as one lags) could be promoted without a write: a flush returns only
    once it has the events, not when the Sentinels merely name the primary."""
    replica = sentinels.replica.process
    assert replica is not None
    flushed = anyio.Event()
    async with hub_on(sentinels) as hub, hub.produce("chat") as stream:
        await stream.send("before")
        await stream.flush()

        async def flush_during_the_stop() -> None:
            await stream.send("during")
            await stream.flush()
            flushed.set()

        os.kill(replica.pid, signal.SIGSTOP)
        try:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(flush_during_the_stop)
                # Well inside the Sentinels' 1 s down-after: to them the
                # replica is up, and could be promoted.
                await anyio.sleep(0.3)
                assert not flushed.is_set()
                os.kill(replica.pid, signal.SIGCONT)
        finally:
            os.kill(replica.pid, signal.SIGCONT)
        # The replica has it by now, without waiting for replication.
        log = [key for key in sentinels.replica.command("keys", "*").split() if key.endswith(b":l")]
        assert log
        assert sentinels.replica.command("xlen", log[0].decode()) != b"0\n"
        assert int(sentinels.replica.command("hget", "s:{chat}:s", "n")) == 2


@pytest.mark.parametrize("redis_driver", ["redis-py"], indirect=True)
def test_a_write_no_replica_has_counts_only_where_none_could_be_promoted(
    sentinels: SentinelSet,
) -> None:
    """What the guards make of the Sentinels' own replies to a write no
    replica acknowledged: while the replica is up and replicating it could
    be promoted without the write, so the primary's word is not enough; once
    the Sentinels see it down it could not be, and the primary's word
    stands. Another node's never does."""
    sentinel = redis.Redis(port=sentinels.sentinels[0].port)

    def word(port: int) -> Standing:
        master: Any = sentinel.sentinel_master(sentinels.service)
        replicas = sentinel.sentinel_slaves(sentinels.service)
        return standing(master, replicas, ("127.0.0.1", port))

    replica = sentinels.replica.process
    assert replica is not None
    try:
        assert word(sentinels.primary.port) is Standing.NOT_ON_A_REPLICA
        assert word(sentinels.replica.port) is Standing.NOT_THE_PRIMARY
        os.kill(replica.pid, signal.SIGSTOP)
        sentinels.wait(lambda: word(sentinels.primary.port) is Standing.CONFIRMED)
        assert word(sentinels.replica.port) is Standing.NOT_THE_PRIMARY
    finally:
        os.kill(replica.pid, signal.SIGCONT)
        sentinel.close()


@pytest.mark.parametrize("redis_driver", ["redis-py"], indirect=True)
async def test_discoveries_at_once_leave_no_connection_open(sentinels: SentinelSet) -> None:
    """redis-py's Sentinel walks its list of Sentinels across awaits and moves
    the one that answered to the front by index: discoveries at once can swap
    one in twice, so that another drops out of the list, never asked again,
    its connections left to the garbage collector (which then warns in
    whatever runs). The hub's discoveries take turns."""
    first, second, _ = sentinels.sentinels
    assert second.process is not None
    async with hub_on(sentinels) as hub:
        assert await hub.info("chat") is None  # connected while every Sentinel answers
        # Every discovery hears "no such service" from the first Sentinel and
        # waits on the second, so that they all get its answer at once.
        first.command("sentinel", "remove", sentinels.service)
        os.kill(second.process.pid, signal.SIGSTOP)
        try:
            # Every connection of the hub's pool reconnects, asking.
            sentinels.primary.command("client", "kill", "type", "normal")
            async with anyio.create_task_group() as tasks:
                for _ in range(3):
                    tasks.start_soon(hub.info, "chat")
                # Not a wait for an outcome: on redis-py's own Sentinel, the
                # discoveries must all be waiting on the second one to collide.
                await anyio.sleep(0.5)
                os.kill(second.process.pid, signal.SIGCONT)
        finally:
            os.kill(second.process.pid, signal.SIGCONT)
    gc.collect()  # a Sentinel client dropped with its connections open warns here


async def apps_sentinel_client(stack: AsyncExitStack, sentinels: SentinelSet, driver: str) -> Any:
    """The client an app makes through its Sentinels: redis-py's
    ``master_for``, coredis's ``primary_for``; closed with ``stack``."""
    hosts = [("127.0.0.1", sentinel.port) for sentinel in sentinels.sentinels]
    client: Any
    if driver == "redis-py":
        manager = redis.asyncio.sentinel.Sentinel(hosts)  # type: ignore[no-untyped-call]
        client = manager.master_for(sentinels.service)
        stack.push_async_callback(client.aclose)
        for node in manager.sentinels:
            stack.push_async_callback(node.aclose)
        return client
    locations = [TCPLocation(host, port) for host, port in hosts]
    sentinel_manager = await stack.enter_async_context(coredis.Sentinel(locations))
    return await stack.enter_async_context(sentinel_manager.primary_for(sentinels.service))


async def test_a_hub_on_an_apps_sentinel_made_client_leaves_it_open(
    sentinels: SentinelSet, redis_driver: str
) -> None:
    """``from_client`` with the client an app made through its Sentinels."""
    async with AsyncExitStack() as stack:
        client = await apps_sentinel_client(stack, sentinels, redis_driver)
        async with Hub.from_client(client, namespace="app") as hub:
            async with hub.produce("chat") as stream:
                await stream.send("hello")
            events, ended = await collect(hub, "chat")
        assert texts(events) == ["hello"]
        assert ended.state is State.DONE
        # The app's client still works after the hub closed.
        with anyio.fail_after(5):
            assert await client.ping() in (True, b"PONG")


async def test_a_finished_session_is_read_a_page_at_a_time_through_sentinel(
    sentinels: SentinelSet, redis_driver: str
) -> None:
    """On the client the Sentinels lead the hub to, and on an app's."""
    async with RedisBackend(sentinels.url, namespace="pages") as backend:
        await read_page_after_page(backend, sentinels.primary)
    async with AsyncExitStack() as stack:
        client = await apps_sentinel_client(stack, sentinels, redis_driver)
        async with RedisBackend.from_client(client, namespace="app-pages") as backend:
            await read_page_after_page(backend, sentinels.primary)


async def test_an_ended_reply_is_rewritten_on_the_primary_and_replicated(
    sentinels: SentinelSet,
) -> None:
    """The rewrite runs on the primary the Sentinels name; the replica gets
    it too, and the reply reads back whole."""
    async with Hub(RedisBackend(sentinels.url, namespace="packing")) as hub:
        async with hub.produce("r") as stream:
            for index in range(300):
                await stream.send(f" t{index}")
                await stream.flush()
    log = session_keys("packing", "r").log
    assert sentinels.primary.command("XLEN", log).strip() == b"1"
    sentinels.primary.wait_replicated_by(sentinels.replica)
    assert sentinels.replica.command("XLEN", log).strip() == b"1"
    async with Hub(RedisBackend(sentinels.url, namespace="packing")) as hub:
        received, _ = await collect(hub, "r")
        assert texts(received) == [f" t{index}" for index in range(300)]


async def open_a_connection_to(client: Any, driver: str, node: RedisServer) -> None:
    """Make the client's next new connection go to ``node`` while its pool
    still records the primary the Sentinels name, and drop its idle
    connections so that the next command makes one: the state a failover
    leaves when one command's discovery was answered before the switch and
    another's after it (the pool's record is the later answer)."""
    pool = client.connection_pool
    discover = "get_master_address" if driver == "redis-py" else "get_primary_location"

    address = ("127.0.0.1", node.port)

    async def once() -> Any:
        delattr(pool, discover)  # the pool's own method again
        return address if driver == "redis-py" else TCPLocation(*address)

    setattr(pool, discover, once)
    if driver == "redis-py":
        await pool.disconnect(inuse_connections=False)
    else:
        pool.disconnect()


def copy_namespace(source: RedisServer, target: RedisServer, namespace: str) -> None:
    """Every key of ``namespace`` on ``source`` copied to ``target``, as a
    primary's data is on its replica."""
    keys = source.command("keys", f"{namespace}:*").decode().split()
    assert keys
    source.command("migrate", "127.0.0.1", str(target.port), "", "0", "5000", "copy", "keys", *keys)


async def test_a_write_confirmed_only_by_the_node_it_went_to(
    sentinels: SentinelSet, redis_driver: str, tmp_path: Path
) -> None:
    """A write that no replica acknowledged counts if the Sentinels name the
    node it went to: the node its own connection is open to, not the one
    the pool last recorded. Here a connection is open to a node holding a
    copy of the data (the old primary, say) while the pool records the
    primary: the writes made through it are retried on the primary, where
    a fresh hub finds them all."""
    stray = RedisServer(tmp_path / "stray").start()
    try:
        async with AsyncExitStack() as stack:
            client = await apps_sentinel_client(stack, sentinels, redis_driver)
            async with Hub.from_client(client, namespace="app") as hub:
                async with hub.produce("chat") as stream:
                    await stream.send("before")
                    await stream.flush()
                    copy_namespace(sentinels.primary, stray, "app")
                    await open_a_connection_to(client, redis_driver, stray)
                    await stream.send("after")
                    await stream.flush()
        async with Hub.from_url(sentinels.url, namespace="app") as fresh:
            with anyio.fail_after(10):
                events, ended = await collect(fresh, "chat")
        assert texts(events) == ["before", "after"]
        assert ended.state is State.DONE
    finally:
        stray.stop()


async def test_a_write_on_a_node_become_a_replica_is_retried_not_refused(
    sentinels: SentinelSet, redis_driver: str, tmp_path: Path
) -> None:
    """A connection still open to a node that has become a replica (the old
    primary, demoted): a write script that writes nothing there (a cancel of
    a session that is not there) passes, and the ``WAIT`` after it is
    refused, as on any replica. That is the client on the wrong node, a
    retryable error, not a refusal of the write."""
    stray = RedisServer(tmp_path / "stray").start()
    try:
        async with AsyncExitStack() as stack:
            client = await apps_sentinel_client(stack, sentinels, redis_driver)
            async with Hub.from_client(client, namespace="app") as hub:
                await hub.info("chat")  # connected to the primary first
                await open_a_connection_to(client, redis_driver, stray)
                await hub.info("chat")  # a read makes it, and leaves it in the pool
                stray.command("replicaof", "127.0.0.1", str(sentinels.primary.port))
                with pytest.raises(BackendUnavailableError, match="not the primary") as caught:
                    await hub.cancel("chat")
                assert not isinstance(caught.value, StorageRefusedError)
                assert await hub.cancel("chat") is None  # on the primary again
    finally:
        stray.stop()


async def test_an_expired_lease_is_believed_only_from_the_primary(
    sentinels: SentinelSet, redis_driver: str, tmp_path: Path
) -> None:
    """A read that finds a live session's lease expired, on a node the
    Sentinels do not name (the old primary, whose copy of the lease its
    producer no longer renews), does not report the session abandoned: it
    fails, retryable, and the next read, on the primary, finds it live."""
    stray = RedisServer(tmp_path / "stray").start()
    try:
        async with (
            Hub.from_url(sentinels.url, namespace="app", lease_ttl=1.0) as producers,
            producers.produce("chat") as stream,
            AsyncExitStack() as stack,
        ):
            await stream.send("hello")
            await stream.flush()
            copy_namespace(sentinels.primary, stray, "app")
            await anyio.sleep(1.5)  # the copy's lease runs out; the primary's is renewed
            client = await apps_sentinel_client(stack, sentinels, redis_driver)
            async with Hub.from_client(client, namespace="app") as reader:
                await reader.info("chat")  # connected to the primary first
                await open_a_connection_to(client, redis_driver, stray)
                with pytest.raises(BackendUnavailableError, match="not the primary"):
                    await reader.info("chat")
                info = await reader.info("chat")
            assert info is not None
            assert info.state is State.LIVE
    finally:
        stray.stop()
