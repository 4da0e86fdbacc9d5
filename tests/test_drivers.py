"""Choosing the Redis client library, and hubs on an application's own client."""

from __future__ import annotations

import gc
import warnings
from typing import Any

import anyio
import coredis
import pytest
import redis.asyncio
import redis.exceptions
from redis._parsers.hiredis import _AsyncHiredisParser

from replayhub import Hub, InvalidInputError, State
from replayhub.backends.redis import RedisBackend
from replayhub.backends.redis._redispy import RedisPyDriver, next_messages, packed_by_hiredis

from .helpers import assert_unchanged, collect, texts
from .redis_server import RedisClusterNodes, RedisServer
from .test_redis_pages import read_page_after_page


def driver_of(hub: Hub) -> str:
    backend = hub._backend
    assert isinstance(backend, RedisBackend)
    driver: Any = backend._driver
    return str(driver.name.value)


async def round_trip(hub: Hub, session_id: str) -> None:
    async with hub.produce(session_id) as stream:
        await stream.send("hello")
        await stream.send({"n": 1})
    events, outcome = await collect(hub, session_id)
    assert texts(events) == ["hello", {"n": 1}]
    assert outcome.state is State.DONE


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_auto_is_redis_py_on_asyncio(redis_server: RedisServer) -> None:
    async with Hub.from_url(redis_server.plain_url, namespace="auto-asyncio") as hub:
        assert driver_of(hub) == "redis-py"
        await round_trip(hub, "s")


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_auto_is_coredis_on_trio(redis_server: RedisServer) -> None:
    async with Hub.from_url(redis_server.plain_url, namespace="auto-trio") as hub:
        assert driver_of(hub) == "coredis"
        await round_trip(hub, "s")


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_redis_py_on_trio_is_refused_clearly(redis_server: RedisServer) -> None:
    hub = Hub.from_url(redis_server.plain_url, driver="redis-py")
    with pytest.raises(InvalidInputError, match="asyncio only"):
        async with hub:
            pass


async def test_a_driver_chosen_in_the_url_or_by_name(redis_server: RedisServer) -> None:
    for url, driver in [
        (f"{redis_server.plain_url}?driver=coredis", "auto"),
        (redis_server.plain_url, "coredis"),
    ]:
        async with Hub.from_url(url, driver=driver, namespace="chosen") as hub:
            assert driver_of(hub) == "coredis"
            await round_trip(hub, f"s-{driver}")


def test_unknown_or_conflicting_drivers_are_refused_before_connecting() -> None:
    with pytest.raises(InvalidInputError, match="driver must be"):
        Hub.from_url("redis://127.0.0.1:1/0", driver="aioredis")
    with pytest.raises(InvalidInputError, match="disagree"):
        Hub.from_url("redis://127.0.0.1:1/0?driver=coredis", driver="redis-py")
    with pytest.raises(InvalidInputError, match="for Redis URLs"):
        Hub.from_url("memory://", driver="coredis")
    with pytest.raises(InvalidInputError, match=r"redis\.asyncio or coredis client"):
        Hub.from_client(object())


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize("decode_responses", [False, True])
async def test_a_hub_on_an_apps_redis_py_client_leaves_it_open(
    redis_server: RedisServer, decode_responses: bool
) -> None:
    client = redis.asyncio.Redis.from_url(redis_server.plain_url, decode_responses=decode_responses)
    try:
        async with Hub.from_client(client, namespace=f"app-{decode_responses}") as hub:
            assert driver_of(hub) == "redis-py"
            await round_trip(hub, "s")
            backend = hub._backend
            assert isinstance(backend, RedisBackend)
            await read_page_after_page(backend, None)  # pages read without the script too
        # The app's client still works after the hub closed.
        await client.set("still-open", "yes")
        assert await client.get("still-open") == ("yes" if decode_responses else b"yes")
    finally:
        await client.aclose()


async def test_a_hub_on_an_apps_coredis_client_leaves_it_open(redis_server: RedisServer) -> None:
    async with coredis.Redis.from_url(redis_server.plain_url) as client:
        async with Hub.from_client(client, namespace="app-coredis") as hub:
            assert driver_of(hub) == "coredis"
            await round_trip(hub, "s")
        with anyio.fail_after(5):
            assert await client.ping() == b"PONG"


def test_both_drivers_judge_redis_errors_alike() -> None:
    # What each client library raises for the same server reply or failure,
    # and what it must mean: a refusal (StorageRefusedError, with Redis's
    # code), a moment's trouble (BackendUnavailableError, retried), or not
    # ours at all (a bug, raised as itself).
    import coredis.exceptions as c
    import redis.exceptions as r

    from replayhub.backends.redis import _coredis, _redispy

    cases: list[tuple[BaseException, BaseException, tuple[bool, str] | None]] = [
        (c.ResponseError("OOM command not allowed"), r.OutOfMemoryError("command not allowed"),
         (True, "OOM command not allowed")),
        (c.ResponseError("NOPERM no permissions"), r.NoPermissionError("no permissions"),
         (True, "NOPERM no permissions")),
        (c.ResponseError("WRONGTYPE wrong kind"), r.ResponseError("WRONGTYPE wrong kind"),
         (True, "WRONGTYPE wrong kind")),
        (c.ResponseError("BUSY running a script"), r.ResponseError("BUSY running a script"),
         (False, "BUSY running a script")),
        (c.ResponseError("NOREPLICAS not enough"), r.ResponseError("NOREPLICAS not enough"),
         (False, "NOREPLICAS not enough")),
        # A WAIT cut short by its primary's demotion (a failover), as each
        # library reports it: retried on the new primary, not a refusal.
        (c.UnblockedError("UNBLOCKED force unblock (master -> replica?)"),
         r.ResponseError("UNBLOCKED force unblock (master -> replica?)"),
         (False, "UNBLOCKED force unblock (master -> replica?)")),
        (c.ConnectionError("refused"), r.ConnectionError("refused"), (False, "refused")),
        (TimeoutError("slow"), r.TimeoutError("slow"), (False, "slow")),
        (ValueError("a bug"), ValueError("a bug"), None),
    ]  # fmt: skip
    for coredis_error, redis_py_error, verdict in cases:
        assert _coredis.classify(coredis_error) == verdict, coredis_error
        assert _redispy.classify(redis_py_error) == verdict, redis_py_error
    # Moving clusters and loading servers are retried, not refused.
    for error in (r.MovedError("1 127.0.0.1:1"), r.TryAgainError(), r.ClusterDownError("down")):
        verdict = _redispy.classify(error)
        assert verdict is not None
        assert verdict[0] is False
    assert _redispy.classify(r.BusyLoadingError("loading")) == (False, "loading")
    # READONLY: refused from a plain server, retried behind Sentinel (coredis).
    assert _redispy.classify(r.ReadOnlyError("replica")) == (True, "READONLY replica")
    readonly = c.ReadOnlyError("READONLY replica")
    assert _coredis.classify(readonly) == (True, "READONLY replica")
    assert _coredis.classify(readonly, readonly_is_transient=True) == (False, "READONLY replica")
    # coredis's pipeline rewrites the message of the error it re-raises.
    piped = c.UnblockedError("Command # 2 (WAIT 1 100) of pipeline caused error: force unblock")
    assert _coredis.classify(piped) == (False, str(piped))


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_hub_on_an_apps_redis_py_cluster_client_leaves_it_open(
    redis_cluster: RedisClusterNodes,
) -> None:
    from redis.asyncio.cluster import ClusterNode, RedisCluster

    client = RedisCluster(
        startup_nodes=[ClusterNode("127.0.0.1", node.port) for node in redis_cluster.nodes]
    )
    try:
        async with Hub.from_client(client, namespace="app-cluster") as hub:
            assert driver_of(hub) == "redis-py"
            await round_trip(hub, "s")
            backend = hub._backend
            assert isinstance(backend, RedisBackend)
            await read_page_after_page(backend, None)  # pages read without the script too
        await client.set("still-open", "yes")
        assert await client.get("still-open") == b"yes"
    finally:
        await client.aclose()


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_redis_py_pubsub_broken_under_two_tasks_reconnects_once(
    fresh_redis: RedisServer,
) -> None:
    # The notifier reads its Pub/Sub in one task and subscribes in another;
    # after a restart both meet the broken connection and reconnect. Two
    # sockets at once left one unclosed (an unclosed StreamWriter in CI).
    def our_clients() -> int:  # every client but redis-cli asking
        return fresh_redis.command("CLIENT", "LIST").count(b"\n") - 1

    client = redis.asyncio.Redis.from_url(fresh_redis.plain_url)
    driver = RedisPyDriver(client, scripts={}, writes=frozenset())
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            async with driver.open_pubsub("replayhub:{t}:c") as pubsub:
                connection = pubsub.connection
                await connection.disconnect()
                with anyio.fail_after(5):
                    while our_clients():  # noqa: ASYNC110 - the server's view is waited for
                        await anyio.sleep(0.01)
                async with anyio.create_task_group() as task_group:
                    task_group.start_soon(connection.connect)
                    task_group.start_soon(connection.connect)
                # Each connect has had its handshake answered: both are listed.
                assert our_clients() == 1
                message = await pubsub.get_message(timeout=5)
                assert message is not None
                assert message["type"] == "subscribe"
            gc.collect()
        assert not [w for w in caught if "unclosed" in str(w.message)]
        assert "connect_check_health" not in vars(connection)  # undone for the pool
    finally:
        await client.aclose()


# -- redis-py's commands packed by hiredis ---------------------------------------------


PACKED_ALIKE = [
    ("EVALSHA", "a" * 40, 3, "ns:{s}:s", "ns:{s}:l", "ns:index", b"\x00\xff batch"),
    ("SET", "clé", "häll\u00f6 \U0001f600", "PX", 1500),
    ("SCRIPT LOAD", "return 1"),
    (b"CLIENT SETNAME", b"hub"),
    ("SET", "k", 0.1, -0.0, 1e20, -7, 2**70),
    ("SET", "k", memoryview(b"view"), bytearray(b"array")),
]


@pytest.mark.parametrize("command", PACKED_ALIKE, ids=lambda command: str(command[0]))
def test_hiredis_packs_the_bytes_redis_py_packs(command: tuple[Any, ...]) -> None:
    plain = redis.asyncio.Connection()
    packed = packed_by_hiredis(redis.asyncio.Connection)()
    assert type(packed).pack_command is not redis.asyncio.Connection.pack_command
    assert b"".join(packed.pack_command(*command)) == b"".join(plain.pack_command(*command))
    assert b"".join(packed.pack_commands([command, command])) == b"".join(
        plain.pack_commands([command, command])
    )


@pytest.mark.parametrize("refused", [True, None, object()])
def test_hiredis_packing_refuses_what_redis_py_refuses(refused: Any) -> None:
    plain = redis.asyncio.Connection()
    packed = packed_by_hiredis(redis.asyncio.Connection)()
    with pytest.raises(redis.exceptions.DataError):
        plain.pack_command("SET", "k", refused)
    with pytest.raises(redis.exceptions.DataError):
        packed.pack_command("SET", "k", refused)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_the_hubs_own_redis_py_connections_pack_with_hiredis(
    redis_server: RedisServer,
) -> None:
    async with Hub.from_url(redis_server.plain_url, driver="redis-py", namespace="packed") as hub:
        backend = hub._backend
        assert isinstance(backend, RedisBackend)
        driver: Any = backend._driver
        connection_class = driver._client.connection_pool.connection_class
        assert issubclass(connection_class, redis.asyncio.Connection)
        assert connection_class.pack_command is not redis.asyncio.Connection.pack_command
        await round_trip(hub, "s")  # a script call with keys and arguments, and reads


# -- redis-py's Pub/Sub messages taken together -------------------------------------------


#: sha256 (first 16 hex digits) of the redis-py methods whose reading of a
#: Pub/Sub reply next_messages repeats: a redis-py that changes one fails
#: here (compare it with next_messages, then update the fingerprint).
REDIS_PY_FINGERPRINTS: dict[str, tuple[Any, str]] = {
    "PubSub.get_message": (redis.asyncio.client.PubSub.get_message, "bf92023c2c452e85"),
    "PubSub.parse_response": (redis.asyncio.client.PubSub.parse_response, "9dc6547c1d1ed3e7"),
    "_AsyncHiredisParser.read_response": (_AsyncHiredisParser.read_response, "6cba18b62d2aad4d"),
}


@pytest.mark.parametrize("name", sorted(REDIS_PY_FINGERPRINTS))
def test_the_redis_py_reads_of_a_pubsub_reply_are_those_next_messages_repeats(name: str) -> None:
    assert_unchanged(
        REDIS_PY_FINGERPRINTS,
        name,
        library="redis-py",
        copy="replayhub.backends.redis._redispy.next_messages",
    )


_BURST = 200
_PUBLISH_BURST = "for i = 1, tonumber(ARGV[1]) do redis.call('PUBLISH', KEYS[1], i) end"


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_redis_py_pubsub_hands_over_every_message_already_read_at_once(
    fresh_redis: RedisServer,
) -> None:
    # get_message takes one message a call, each through a health check, a
    # retry wrapper and a timeout; the replies a socket read brought are
    # taken together, as get_message would give them. A redis-py whose
    # parser keeps its replies elsewhere fails the count (one a call).
    client = redis.asyncio.Redis.from_url(fresh_redis.plain_url, health_check_interval=30)
    try:
        async with client.pubsub() as pubsub:
            await pubsub.subscribe("c")
            assert [m["type"] for m in await next_messages(pubsub)] == ["subscribe"]
            # A health check's answer among them is None, as get_message gives it.
            await pubsub.ping(pubsub.HEALTH_CHECK_MESSAGE)
            await client.eval(_PUBLISH_BURST, 1, "c", _BURST)
            received: list[Any] = []
            calls = 0
            with anyio.fail_after(5):
                while len([m for m in received if m is not None]) < _BURST:
                    received += await next_messages(pubsub)
                    calls += 1
    finally:
        await client.aclose()
    assert received[0] is None
    assert [(m["type"], m["channel"], m["data"]) for m in received[1:]] == [
        ("message", b"c", str(index).encode()) for index in range(1, _BURST + 1)
    ]
    assert calls < _BURST // 4, calls
