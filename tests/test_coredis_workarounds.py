"""Pins for what ``replayhub.backends.redis._coredis`` does to coredis.

Each workaround there has two kinds of test: one that shows the coredis
behaviour it works around is still there (a coredis release that fixes it
fails the test: the workaround can go), and a fingerprint of each coredis
method it copies or replaces (a release that changes one fails the test
before it can silently break the copy: compare the new method with ours,
then update the fingerprint). That the workarounds themselves work is shown
in ``test_redis_backend.py`` (pool slots, Pub/Sub reconnects) and the
cluster fault tests (sharded Pub/Sub).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, cast

import anyio
import coredis
import pytest
from coredis._concurrency import Queue
from coredis.client.basic import Client
from coredis.commands.core import CoreCommands
from coredis.commands.request import CommandRequest
from coredis.commands.script import Script
from coredis.connection import TCPLocation
from coredis.connection._base import BaseConnection
from coredis.patterns.pipeline import ClusterPipeline, Pipeline
from coredis.patterns.pubsub import BasePubSub, PubSub, ShardedPubSub
from coredis.pool import ClusterConnectionPool, ConnectionPool
from coredis.retry import ExponentialBackoffRetryPolicy

from replayhub.backends.redis._coredis import (
    ClosingShardedPubSub,
    FastPubSub,
    SlotReturningClusterPool,
    SlotReturningPool,
    raw_xrange,
    receive_messages,
    run_script_once,
    sends_at_once,
)

from .helpers import assert_unchanged
from .redis_server import RedisServer

#: sha256 (first 16 hex digits) of the source of each coredis 6.9.0 method
#: that _coredis copies (pools, sharded Pub/Sub) or reads around (get_message).
FINGERPRINTS: dict[str, tuple[Callable[..., Any], str]] = {
    "ConnectionPool.get_connection": (ConnectionPool.get_connection, "ae2309156daed586"),
    "ConnectionPool.release": (ConnectionPool.release, "fd477357581f22aa"),
    "ClusterConnectionPool._get_connection_by_node": (
        ClusterConnectionPool._get_connection_by_node,
        "86466a1b62cac2e1",
    ),
    "ClusterConnectionPool.release": (ClusterConnectionPool.release, "2f24a19413a92cbb"),
    "ShardedPubSub.run": (ShardedPubSub.run, "73487f796148127f"),
    "BasePubSub.get_message": (BasePubSub.get_message, "a82070af9b9f518f"),
    "BasePubSub._handle_message": (BasePubSub._handle_message, "8a7401a604842131"),
    "Pipeline.create_request": (Pipeline.create_request, "582edbab73b3fb32"),
    "ClusterPipeline.create_request": (ClusterPipeline.create_request, "a52e5951d55ab962"),
    "Script.__call__": (Script.__call__, "a735a1b3353bcca8"),
    "CoreCommands._evalsha": (CoreCommands._evalsha, "1352502cdccb72af"),
    "Client.create_request": (Client.create_request, "d43443f46e613681"),
    "Queue.get": (Queue.get, "7ce019065f464865"),
    "BaseConnection._writer_task": (BaseConnection._writer_task, "292f295a80cfd0df"),
    "BasePubSub._consume_push_messages": (BasePubSub._consume_push_messages, "122cebb3d7e76f1b"),
    "ShardedPubSub._consume_shard_push_messages": (
        ShardedPubSub._consume_shard_push_messages,
        "44fce710aa3ccc1d",
    ),
    # (a property: its generator function, whose buffer _coredis reads)
    "BaseConnection.push_messages": (
        cast(Any, BaseConnection.push_messages).fget,
        "de6bc327c47d7776",
    ),
}


@pytest.mark.parametrize("name", sorted(FINGERPRINTS))
def test_the_coredis_methods_worked_around_are_those_of_6_9(name: str) -> None:
    assert_unchanged(
        FINGERPRINTS, name, library="coredis", copy="replayhub.backends.redis._coredis"
    )


def test_coredis_pubsub_still_backs_off_exponentially_by_default() -> None:
    # What open_pubsub's constant 0.1 s reconnect replaces.
    default = inspect.signature(BasePubSub.__init__).parameters["retry_policy"].default
    policies = getattr(default, "_retry_policies", [default])
    assert any(isinstance(policy, ExponentialBackoffRetryPolicy) for policy in policies)


def subscribers(server: RedisServer, channel: str) -> int:
    return int(server.command("pubsub", "numsub", channel).split()[1])


def free_slots(pool: Any) -> int:
    return len(pool._available_connections._queue)


@pytest.mark.parametrize("pool_class", [ConnectionPool, SlotReturningPool])
async def test_a_connection_killed_while_checked_out_keeps_its_slot_only_with_ours(
    fresh_redis: RedisServer, pool_class: type[ConnectionPool[Any]]
) -> None:
    pool = pool_class.from_url(fresh_redis.plain_url, max_connections=4)
    async with coredis.Redis(connection_pool=pool) as client:
        await client.ping()
        before = free_slots(pool)
        async with client.pubsub(channels=["c"]) as pubsub:
            await receive_messages(pubsub)  # subscribed: its connection is checked out
            fresh_redis.command("client", "kill", "type", "pubsub")
            with anyio.fail_after(5):
                # Until coredis has noticed and subscribed again (the server
                # is asked: nothing in coredis tells).
                while subscribers(fresh_redis, "c") != 1:  # noqa: ASYNC110
                    await anyio.sleep(0.05)
        lost = before - free_slots(pool)
    # coredis 6.9 drops the slot of a connection that died checked out; a
    # coredis that keeps it fails the plain-pool case: drop the workaround.
    assert lost == (1 if pool_class is ConnectionPool else 0)


@pytest.mark.parametrize("pool_class", [ConnectionPool, SlotReturningPool])
async def test_commands_made_at_once_take_a_turn_of_the_loop_each_only_without_ours(
    fresh_redis: RedisServer, pool_class: type[ConnectionPool[Any]]
) -> None:
    # Plain coredis hands out pooled connections under a lock held over a
    # checkpoint and queues each request to the socket with a checkpoint of
    # its own: commands made at once go out one per turn of the loop. On a
    # busy loop a turn is milliseconds; a burst of reads once held back a
    # lease renewal for 8 s. Turns are counted by a task that checkpoints, up
    # to the last write to a socket: the turns spent awaiting replies grow
    # with the machine's load and say nothing about how the commands went out.
    commands = 400
    pool = pool_class.from_url(fresh_redis.plain_url, max_connections=4)
    async with coredis.Redis(connection_pool=pool) as client:
        await client.ping()  # connected: what follows is the commands alone
        turns, turns_to_last_write, done = 0, 0, False

        def bytes_written() -> int:
            return sum(c.statistics.bytes_written for c in pool._online_connections)

        async def ping() -> None:
            await client.ping()

        async def count_turns() -> None:
            nonlocal turns, turns_to_last_write
            written = bytes_written()
            while not done:
                turns += 1
                await anyio.lowlevel.checkpoint()
                if bytes_written() != written:
                    written, turns_to_last_write = bytes_written(), turns

        async with anyio.create_task_group() as counting:
            counting.start_soon(count_turns)
            async with anyio.create_task_group() as burst:
                for _ in range(commands):
                    burst.start_soon(ping)
            done = True
    # A coredis that sends them at once fails the plain-pool case: the
    # workaround (_take, sends_at_once) can go. Plain coredis wrote its last
    # command after 403-404 turns, ours after 2-3 (while the turns in all went
    # up to 1,429 on a loaded machine).
    if pool_class is ConnectionPool:
        assert turns_to_last_write >= commands, (turns_to_last_write, turns)
    else:
        assert turns_to_last_write < commands // 10, (turns_to_last_write, turns)


def test_every_pool_of_the_hub_makes_connections_that_send_at_once() -> None:
    pools = [
        SlotReturningPool.from_url("redis://127.0.0.1:1", max_connections=4),
        SlotReturningClusterPool(startup_nodes=[TCPLocation("127.0.0.1", 1)]),
    ]
    for pool in pools:
        made = pool.connection_class
        assert made._writer_task is not BaseConnection._writer_task
        assert made is sends_at_once(made.__mro__[2])  # made once per class


async def test_the_pubsub_stream_read_directly_still_carries_its_messages(
    fresh_redis: RedisServer,
) -> None:
    # The notifier reads coredis's parsed-message stream below its public
    # API (receive_messages): a coredis that renames or reshapes it must fail
    # here, not leave readers without wake-ups.
    async with (
        coredis.Redis.from_url(fresh_redis.plain_url) as client,
        client.pubsub(channels=["c"]) as pubsub,
    ):
        acknowledgement = await receive_messages(pubsub)
        assert [message["type"] for message in acknowledgement] == ["subscribe"]
        for index in range(3):
            await client.publish("c", str(index))
        received: list[Any] = []
        with anyio.fail_after(5):
            while len(received) < 3:
                received += await receive_messages(pubsub)
    assert [(message["type"], message["data"]) for message in received] == [
        ("message", b"0"),
        ("message", b"1"),
        ("message", b"2"),
    ]


async def test_coredis_still_parses_stream_entries_and_raw_xrange_reads_them_as_sent(
    fresh_redis: RedisServer,
) -> None:
    # What raw_xrange skips: a named tuple and an ordered dict per entry. A
    # coredis that hands entries over as sent fails the first assertion
    # (raw_xrange can go); one that changes create_request fails the rest.
    async with coredis.Redis.from_url(fresh_redis.plain_url) as client:
        for seq in (1, 2, 3):
            await client.xadd("log", {"b": f"v{seq}"}, identifier=f"7-{seq}")
        parsed = await client.xrange("log")
        assert [type(entry).__name__ for entry in parsed] == ["StreamEntry"] * 3
        async with client.pipeline(transaction=False) as pipe:
            whole = raw_xrange(pipe, "log", "7-2", "7-3", None)
            counted = raw_xrange(pipe, "log", "7-1", "+", 1)
        assert list(await whole) == [[b"7-2", [b"b", b"v2"]], [b"7-3", [b"b", b"v3"]]]
        assert list(await counted) == [[b"7-1", [b"b", b"v1"]]]


async def test_coredis_still_builds_a_script_call_thrice_and_ours_once_answers_the_same(
    fresh_redis: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What run_script_once skips: the command of a script call built three
    # times, each walking every argument. A coredis that builds it once
    # fails the first assertion (run_script_once can go); one that changes
    # create_request fails the rest.
    built = 0
    original = CommandRequest.__init__

    def counting(self: Any, *args: Any, **kwargs: Any) -> None:
        nonlocal built
        built += 1
        original(self, *args, **kwargs)

    keys = ["{a}:s", "{a}:l", "{b}:s"]
    async with coredis.Redis.from_url(fresh_redis.plain_url) as client:
        script = client.register_script("return {KEYS[1], KEYS[3], ARGV[2], #KEYS}")
        await script(keys=keys, args=[b"x", "y"])  # loaded: no NOSCRIPT below
        with monkeypatch.context() as patch:
            patch.setattr(CommandRequest, "__init__", counting)
            theirs: Any = await script(keys=keys, args=[b"x", "y"])
            assert built == 3
            built = 0
            ours = await run_script_once(client, script, keys, [b"x", "y"])
            assert built == 1
        assert ours == theirs == [b"{a}:s", b"{b}:s", b"y", 3]
        await client.script_flush()  # a server restarted, or failed over
        assert await run_script_once(client, script, keys, [b"x", "y"]) == ours


@pytest.mark.parametrize(
    "response",
    [
        [b"message", b"c", b"1-5 data"],
        [b"smessage", b"c", b"1-5 data"],
        [b"message", b"gone", b"late"],  # a channel no longer subscribed
        [b"pmessage", b"c*", b"c", b"data"],
        [b"subscribe", b"d", 2],
        [b"unsubscribe", b"c", 0],
    ],
)
async def test_the_fast_message_parsing_returns_what_coredis_returns(response: list[Any]) -> None:
    """FastPubSub parses published messages itself: what it returns, and
    what it leaves behind, is what coredis's own parsing gives."""
    pool: Any = ConnectionPool.from_url("redis://127.0.0.1:1")  # never connects
    ours, theirs = FastPubSub(pool), PubSub(pool)
    for pubsub in (ours, theirs):
        pubsub.channels = {b"c": None, b"d": None}
        pubsub.patterns = {b"c*": None}
    assert await ours._handle_message(response) == await theirs._handle_message(response)
    assert (ours.channels, ours.patterns) == (theirs.channels, theirs.patterns)


#: Messages published in one script call (they reach the subscriber together).
_BURST = 200
_PUBLISH_BURST = "for i = 1, tonumber(ARGV[1]) do redis.call('PUBLISH', KEYS[1], i) end"


@pytest.mark.parametrize("pubsub_class", [PubSub, FastPubSub])
async def test_messages_that_arrive_together_take_a_turn_of_the_loop_each_only_without_ours(
    fresh_redis: RedisServer, pubsub_class: type[PubSub[Any]]
) -> None:
    # Plain coredis moves each parsed message from the connection to the
    # Pub/Sub's stream in a turn of the loop of its own (an async generator
    # over a memory stream whose receive() checkpoints): a process reading
    # 200 sessions produced elsewhere spent 40% of its CPU on those turns
    # and the reader's wake-up per message. Turns are counted by a task that
    # checkpoints, as for commands made at once.
    async with coredis.Redis.from_url(fresh_redis.plain_url) as client:
        async with pubsub_class(client.connection_pool, channels=["c"]) as pubsub:
            acknowledgement = await receive_messages(pubsub)
            assert [message["type"] for message in acknowledgement] == ["subscribe"]
            turns, received = 0, list[Any]()
            done = anyio.Event()

            async def count_turns() -> None:
                nonlocal turns
                while not done.is_set():
                    turns += 1
                    await anyio.lowlevel.checkpoint()

            async with anyio.create_task_group() as counting:
                await client.eval(_PUBLISH_BURST, ["c"], [_BURST])
                counting.start_soon(count_turns)
                with anyio.fail_after(5):
                    while len(received) < _BURST:
                        received += await receive_messages(pubsub)
                done.set()
    # Every message, in order, as coredis parses it.
    assert [(message["type"], message["data"]) for message in received] == [
        ("message", str(index).encode()) for index in range(1, _BURST + 1)
    ]
    # A coredis that hands them over together fails the plain case: the
    # workaround (_forward_push_messages) can go. Plain coredis took 199-201
    # turns here, ours 1-2.
    if pubsub_class is PubSub:
        assert turns >= _BURST * 9 // 10, turns  # (one may be moved before counting starts)
    else:
        assert turns < _BURST // 4, turns


def test_both_pubsub_classes_of_the_hub_hand_messages_over_together() -> None:
    # (the sharded one is run by the cluster tests)
    assert FastPubSub._consume_push_messages is not PubSub._consume_push_messages
    assert (
        ClosingShardedPubSub._consume_shard_push_messages
        is not ShardedPubSub._consume_shard_push_messages
    )
