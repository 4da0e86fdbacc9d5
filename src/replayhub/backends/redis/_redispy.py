"""The Redis backend on redis-py (``redis.asyncio``, asyncio only).

For asyncio apps that already hold a ``redis.asyncio`` client: its pool,
TLS and ACL settings serve the hub too. redis-py sends one command at a time
per connection, which the backend makes up for by gathering work into few
calls (many sessions' appends per script call).

This driver serves one Redis server (``redis://``, ``rediss://``,
``unix://``, or a ``redis.asyncio.Redis`` client) and a primary behind
Sentinel (``redis+sentinel://``, or a client made by
``redis.asyncio.sentinel.Sentinel.master_for``); a Redis Cluster needs the
coredis driver for now.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AbstractContextManager, asynccontextmanager
from typing import Any

import anyio
import redis.asyncio
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import ConstantBackoff
from redis.exceptions import (
    AskError,
    ClusterDownError,
    MovedError,
    NoPermissionError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisError,
    ResponseError,
    TryAgainError,
)

from ..._errors import BackendUnavailableError, InvalidInputError
from ._connect import MAX_CONNECTIONS, RedisTarget, Topology
from ._driver import TRANSIENT_REPLIES, DriverName, Verdict, translate_errors
from ._sentinel import _CURRENT, REPLICA_WAIT_MS

#: The error codes redis-py turns into exception classes, dropping the code
#: from the message: put back, so messages read as Redis wrote them.
_CODES = {OutOfMemoryError: "OOM", NoPermissionError: "NOPERM", ReadOnlyError: "READONLY"}


class RedisPyDriver:
    """The Redis backend on a ``redis.asyncio.Redis`` client (``_driver.RedisDriver``)."""

    name = DriverName.REDIS_PY

    def __init__(self, client: Any, *, scripts: Mapping[str, str], writes: frozenset[str]) -> None:
        self._client = client
        self._scripts = {name: client.register_script(source) for name, source in scripts.items()}
        self._writes = writes
        pool = client.connection_pool
        self._primary = SentinelGuard(client) if isinstance(pool, SentinelConnectionPool) else None

    async def ping(self) -> None:
        await self._client.ping()

    async def run_script(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        # redis-py's script object loads the script again after NOSCRIPT.
        script = self._scripts[name]
        if self._primary is not None and name in self._writes:
            return await self._primary.run_confirmed(script, keys, args)
        return await script(keys=keys, args=args)

    async def newest_members(self, key: str, start: int, stop: int) -> list[bytes]:
        # ZRANGE ... REV, which the documented ACL line allows (redis-py's
        # zrange(desc=True) sends ZREVRANGE).
        members: list[bytes] = await self._client.execute_command("ZRANGE", key, start, stop, "REV")
        return members

    async def remove_members(self, key: str, members: Sequence[bytes | str]) -> None:
        await self._client.zrem(key, *members)

    async def check_primary(self) -> None:
        if self._primary is not None:
            await self._primary.check_primary()

    async def refresh_layout(self) -> None:
        return None

    @asynccontextmanager
    async def _pubsub(self, home: str) -> AsyncIterator[Any]:
        pubsub = self._client.pubsub()
        try:
            # redis-py's Pub/Sub has no connection, and cannot be read,
            # before its first subscription; the notifier reads first.
            await pubsub.subscribe(home)
            yield pubsub
        finally:
            with anyio.CancelScope(shield=True):
                await pubsub.aclose()

    def open_pubsub(self, home: str) -> AbstractAsyncContextManager[Any]:
        return self._pubsub(home)

    async def receive(self, pubsub: Any) -> list[Any]:
        # It reconnects and subscribes again by itself; the acknowledgements
        # of those subscriptions tell the notifier to have its readers read.
        return [await pubsub.get_message(timeout=None)]

    def errors(self, what: str) -> AbstractContextManager[None]:
        return translate_errors(what, classify)


def classify(exc: BaseException) -> Verdict:
    """What a redis-py or socket error means (``_driver.translate_errors``)."""
    if isinstance(exc, ResponseError):
        if isinstance(exc, MovedError | AskError | TryAgainError | ClusterDownError):
            return False, str(exc)  # the cluster is moving
        code = _CODES.get(type(exc))
        reply = f"{code} {exc}" if code else str(exc)
        return not reply.startswith(TRANSIENT_REPLIES), reply
    if isinstance(exc, RedisError | OSError | TimeoutError):
        return False, str(exc)
    return None


class SentinelGuard:
    """Behind Sentinel, a write counts once a failover cannot lose it: what
    ``_sentinel.PrimaryGuard`` does for coredis, on a client made by
    ``Sentinel.master_for``. (redis-py itself turns ``READONLY`` from a
    demoted primary into a dropped connection and asks the Sentinels again.)
    """

    def __init__(self, client: Any) -> None:
        self._client = client
        self._pool = client.connection_pool  # a SentinelConnectionPool
        self._service = self._pool.service_name

    async def run_confirmed(self, script: Any, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """The script's reply, once a replica has its write (``WAIT 1``) or
        the Sentinels name the node written to the primary."""
        before = self._pool.master_address
        async with self._client.pipeline(transaction=False) as pipe:
            await script(keys=keys, args=args, client=pipe)
            pipe.execute_command("WAIT", 1, REPLICA_WAIT_MS)
            reply, replicas = await pipe.execute()
        if replicas < 1:
            after = self._pool.master_address
            await self.check_primary(written_to=after if before in (None, after) else None)
        return reply

    async def check_primary(self, *, written_to: Any = _CURRENT) -> None:
        """Return if the Sentinels name the node written to the primary;
        otherwise drop the connections and raise
        :class:`~replayhub.BackendUnavailableError` (retried)."""
        location = self._pool.master_address if written_to is _CURRENT else written_to
        if location is not None and await self._named_primary(location):
            return
        await self._pool.disconnect()
        self._pool.master_address = None
        raise BackendUnavailableError(
            f"{location or 'the node written to'} is not the primary the Sentinels of "
            f"{self._service!r} name, or a failover is under way: retried on the primary"
        )

    async def _named_primary(self, location: tuple[str, int]) -> bool:
        for sentinel in self._pool.sentinel_manager.sentinels:
            try:
                state = await sentinel.sentinel_master(self._service)
            except (RedisError, OSError, TimeoutError):
                continue
            flags = state.get("flags", "")
            names = flags if isinstance(flags, set) else set(str(flags).split(","))
            if "failover_in_progress" in names:
                return False
            return (str(state.get("ip")), int(state.get("port", 0))) == tuple(location)
        return False


class _BlockingSentinelPool(SentinelConnectionPool, redis.asyncio.BlockingConnectionPool):
    """redis-py's Sentinel pool, whose callers wait for a free connection
    (as with :class:`~redis.asyncio.BlockingConnectionPool`) rather than fail
    with "Too many connections": a hub's pool stays at four."""


def _binary_twin(client: Any) -> Any | None:
    """For a client that decodes replies to str, a client of its own on the
    same settings that does not (replayhub's replies are binary); else None."""
    pool = client.connection_pool
    if not pool.connection_kwargs.get("decode_responses"):
        return None
    twin_pool = redis.asyncio.BlockingConnectionPool(
        connection_class=pool.connection_class,
        max_connections=MAX_CONNECTIONS,
        **{**pool.connection_kwargs, "decode_responses": False},
    )
    return redis.asyncio.Redis(connection_pool=twin_pool)


@asynccontextmanager
async def open_driver(
    target: RedisTarget,
    *,
    reply_timeout: float,
    scripts: Mapping[str, str],
    writes: frozenset[str],
) -> AsyncIterator[RedisPyDriver]:
    """A redis-py driver on a client of its own for ``target``, closed on exit."""
    if target.topology is Topology.CLUSTER:
        raise InvalidInputError(
            f"the redis-py driver does not serve a Redis Cluster yet ({target.where}): "
            "use driver='coredis'"
        )
    if target.topology is Topology.SENTINEL:
        async with _sentinel_client(target, reply_timeout=reply_timeout) as client:
            yield RedisPyDriver(client, scripts=scripts, writes=writes)
        return
    with translate_errors(f"cannot connect to {target.where}", classify):
        pool = redis.asyncio.BlockingConnectionPool.from_url(
            target.url,
            max_connections=MAX_CONNECTIONS,
            timeout=reply_timeout,
            socket_timeout=reply_timeout,
            socket_connect_timeout=reply_timeout,
            # As coredis does by default (redis-py's default is none): a lost
            # connection or a timeout is retried twice, on a new connection.
            retry=Retry(ConstantBackoff(0.01), 2),
        )
    client = redis.asyncio.Redis(connection_pool=pool)
    try:
        yield RedisPyDriver(client, scripts=scripts, writes=writes)
    finally:
        with anyio.CancelScope(shield=True):
            await client.aclose(close_connection_pool=True)


@asynccontextmanager
async def _sentinel_client(target: RedisTarget, *, reply_timeout: float) -> AsyncIterator[Any]:
    """The primary of ``target.service`` as its Sentinels name it."""
    timeouts = {"socket_timeout": reply_timeout, "socket_connect_timeout": reply_timeout}
    sentinel_options: dict[str, Any] = dict(timeouts)
    if "sentinel_password" in target.options:
        sentinel_options["password"] = target.options["sentinel_password"]
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        list(target.hosts), sentinel_kwargs=sentinel_options
    )
    options: dict[str, Any] = {
        "max_connections": MAX_CONNECTIONS,
        "timeout": reply_timeout,
        "db": target.db,
        "username": target.username,
        "password": target.password,
        "retry": Retry(ConstantBackoff(0.01), 2),
        **timeouts,
    }
    client = sentinel.master_for(
        target.service, connection_pool_class=_BlockingSentinelPool, **options
    )
    try:
        yield client
    finally:
        with anyio.CancelScope(shield=True):
            await client.aclose(close_connection_pool=True)
            for node in sentinel.sentinels:
                await node.aclose()


@asynccontextmanager
async def driver_for_client(
    client: Any, *, scripts: Mapping[str, str], writes: frozenset[str]
) -> AsyncIterator[RedisPyDriver]:
    """A redis-py driver on the caller's client, which stays open."""
    if type(client).__name__ == "RedisCluster":
        raise InvalidInputError(
            "the redis-py driver does not serve a Redis Cluster yet: pass a coredis client"
        )
    twin = _binary_twin(client)
    try:
        yield RedisPyDriver(client if twin is None else twin, scripts=scripts, writes=writes)
    finally:
        if twin is not None:
            with anyio.CancelScope(shield=True):
                await twin.aclose(close_connection_pool=True)
