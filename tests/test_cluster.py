"""Redis Cluster under change: a retried write, a slot migrated mid-stream, a
manual failover and a killed primary, each while a session streams to live
subscribers. Real clusters of redis-server processes on loopback."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import anyio
import pytest

from replayhub import BackendUnavailableError, Hub, State
from replayhub._events import DataKind, StoredEvent
from replayhub.backends.redis import RedisBackend

from .redis_server import RedisClusterNodes, RedisServer, poll_until
from .streaming import Stream, stream_with_subscribers

#: Each test runs on each Redis driver (redis-py on asyncio only).
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("redis_driver")]

SESSION = "chat"
_namespaces = itertools.count()


def key_slot(cluster: RedisClusterNodes, key: str) -> int:
    return int(cluster.nodes[0].command("cluster", "keyslot", key))


@pytest.fixture
def namespace() -> str:
    """Each test's own: the three-primary cluster is shared by the session."""
    return f"c{next(_namespaces)}"


def session_slot(cluster: RedisClusterNodes, namespace: str) -> int:
    return key_slot(cluster, f"{namespace}:{{{SESSION}}}:s")


@pytest.fixture
def cluster(redis_cluster: RedisClusterNodes) -> RedisClusterNodes:
    return redis_cluster


@pytest.fixture
def replicated_cluster(tmp_path: Path) -> Iterator[RedisClusterNodes]:
    nodes = RedisClusterNodes(tmp_path / "cluster", replicas=1).start()
    nodes.wait_replicated()
    yield nodes
    nodes.stop()


def hub_on(cluster: RedisClusterNodes, namespace: str) -> Hub:
    return Hub.from_url(cluster.url, namespace=namespace, lease_ttl=8.0, retention=60.0)


# coredis keeps a timed-out connection, so the copy it sent first still runs
# when the pause ends; redis-py closes it, and the server drops the copy
# unrun: only coredis makes a duplicate run to prove this with.
@pytest.mark.parametrize("redis_driver", ["coredis"], indirect=True)
async def test_an_append_retried_by_the_cluster_client_is_stored_once(
    cluster: RedisClusterNodes, namespace: str
) -> None:
    # The shard is paused past the reply timeout: the client times out and
    # sends the same script again (coredis's retries, then the producer's
    # own, done here as the producer does), and every copy runs once the
    # pause ends.
    backend = RedisBackend(cluster.url, namespace=namespace, stream_timeout=0.3)
    node = cluster.node_for_slot(session_slot(cluster, namespace))
    batch = [StoredEvent(seq, "", DataKind.TEXT, f"e{seq}") for seq in (2, 3, 4)]
    async with backend:
        record = await backend.claim(SESSION, metadata={}, lease_ttl=30, retention=60)
        first = [StoredEvent(1, "", DataKind.TEXT, "e1")]
        await backend.append(SESSION, record.generation, first, metadata=None)
        calls_before = node.calls("evalsha")
        node.command("client", "pause", "1000", "write")
        with anyio.fail_after(10):
            while True:
                try:
                    await backend.append(SESSION, record.generation, batch, metadata=None)
                    break
                except BackendUnavailableError:
                    continue
        runs = node.calls("evalsha") - calls_before
        result = await backend.read(SESSION, after=None, limit=100)
    assert runs >= 2, "the pause did not make the client retry"
    assert result is not None
    stored, events = result
    assert stored.last_seq == 4
    assert [(event.seq, event.payload) for event in events] == [
        (1, "e1"),
        (2, "e2"),
        (3, "e3"),
        (4, "e4"),
    ]


def migrate_slot(cluster: RedisClusterNodes, slot: int) -> tuple[RedisServer, RedisServer]:
    """Move a slot to another primary, key by key, as redis-cli's resharding does."""
    source = cluster.node_for_slot(slot)
    target = next(node for node in cluster.nodes if node is not source)
    source_id, target_id = cluster.node_id(source), cluster.node_id(target)
    target.command("cluster", "setslot", str(slot), "importing", source_id)
    source.command("cluster", "setslot", str(slot), "migrating", target_id)
    while keys := source.command("cluster", "getkeysinslot", str(slot), "10").decode().split():
        source.command("migrate", "127.0.0.1", str(target.port), "", "0", "5000", "keys", *keys)
        time.sleep(0.05)  # let writes land on both sides of the move
    for node in cluster.nodes:
        node.command("cluster", "setslot", str(slot), "node", target_id)
    return source, target


async def test_slot_migration_mid_stream_leaves_no_gap_or_duplicate(
    cluster: RedisClusterNodes, namespace: str
) -> None:
    moved_to: list[RedisServer] = []

    async def move(stream: Stream) -> None:
        await stream.sent_at_least(300)
        _, target = await anyio.to_thread.run_sync(
            migrate_slot, cluster, session_slot(cluster, namespace)
        )
        moved_to.append(target)

    async with hub_on(cluster, namespace) as hub, hub_on(cluster, namespace) as reader:
        result = await stream_with_subscribers(hub, reader, SESSION, count=1500, during=move)
    result.assert_complete(State.DONE)
    assert cluster.node_for_slot(session_slot(cluster, namespace)) is moved_to[0]


async def wait_for(check: Callable[[], bool]) -> None:
    await anyio.to_thread.run_sync(
        partial(poll_until, check, within=20, what="the cluster did not settle")
    )


async def test_manual_failover_mid_stream_leaves_subscribers_complete(
    replicated_cluster: RedisClusterNodes, namespace: str
) -> None:
    cluster = replicated_cluster
    slot = session_slot(cluster, namespace)

    async def fail_over(stream: Stream) -> None:
        await stream.sent_at_least(300)
        old = cluster.node_for_slot(slot)
        replica = cluster.replica_of(old)
        await anyio.to_thread.run_sync(replica.command, "cluster", "failover")
        await wait_for(lambda: cluster.serves(slot, replica))

    async with hub_on(cluster, namespace) as hub, hub_on(cluster, namespace) as reader:
        result = await stream_with_subscribers(hub, reader, SESSION, count=1500, during=fail_over)
    result.assert_complete(State.DONE)


async def test_killed_primary_mid_stream_fails_over_to_its_replica(
    replicated_cluster: RedisClusterNodes, namespace: str
) -> None:
    # Replication is asynchronous: writes acknowledged by a primary that dies
    # before its replica has them are lost (docs/deployment.md). So the kill
    # comes once the replica has caught up, while the stream is live.
    cluster = replicated_cluster
    slot = session_slot(cluster, namespace)

    async def kill_primary(stream: Stream) -> None:
        await stream.sent_at_least(300)
        async with stream.paused():
            old = cluster.node_for_slot(slot)
            replica = cluster.replica_of(old)
            await anyio.to_thread.run_sync(old.wait_replicated_by, replica)
            old.kill()
            await wait_for(lambda: cluster.serves(slot, replica, via=replica))

    async with hub_on(cluster, namespace) as hub, hub_on(cluster, namespace) as reader:
        result = await stream_with_subscribers(
            hub, reader, SESSION, count=1500, during=kill_primary
        )
    result.assert_complete(State.DONE)


async def test_a_hub_keeps_few_connections_per_node(
    cluster: RedisClusterNodes, namespace: str, redis_driver: str
) -> None:
    async with hub_on(cluster, namespace) as hub:
        async with anyio.create_task_group() as task_group:
            for index in range(30):
                task_group.start_soon(_produce_some, hub, f"s{index}")
        async with hub.subscribe("s0") as events:
            async for _ in events:
                pass
        per_node = [
            len(node.command("client", "list").decode().splitlines()) - 1  # minus redis-cli
            for node in cluster.nodes
        ]
    # coredis: a command connection and a sharded Pub/Sub one per primary,
    # plus spares under concurrency, 4 in all. redis-py: up to 3 commands at
    # once, the Pub/Sub one, and the one it read the slot layout on, which it
    # keeps (docs/redis.md).
    assert max(per_node) <= (4 if redis_driver == "coredis" else 5), per_node


async def _produce_some(hub: Hub, session_id: str) -> None:
    async with hub.produce(session_id) as stream:
        for index in range(50):
            await stream.send(index)
