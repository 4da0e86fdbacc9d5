"""The Redis backend on redis-py (``redis.asyncio``, asyncio only).

For asyncio apps that already hold a ``redis.asyncio`` client: its pool,
TLS and ACL settings serve the hub too. redis-py sends one command at a time
per connection, which the backend makes up for by gathering work into few
calls (many sessions' appends per script call).

This driver serves one Redis server (``redis://``, ``rediss://``,
``unix://``, or a ``redis.asyncio.Redis`` client); a Redis Cluster or a
primary behind Sentinel needs the coredis driver for now.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AbstractContextManager, asynccontextmanager
from typing import Any

import anyio
import redis.asyncio
from redis.asyncio.retry import Retry
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

from ..._errors import InvalidInputError
from ._connect import MAX_CONNECTIONS, RedisTarget, Topology
from ._driver import TRANSIENT_REPLIES, DriverName, Verdict, translate_errors

#: The error codes redis-py turns into exception classes, dropping the code
#: from the message: put back, so messages read as Redis wrote them.
_CODES = {OutOfMemoryError: "OOM", NoPermissionError: "NOPERM", ReadOnlyError: "READONLY"}


class RedisPyDriver:
    """The Redis backend on a ``redis.asyncio.Redis`` client (``_driver.RedisDriver``)."""

    name = DriverName.REDIS_PY

    def __init__(self, client: Any, *, scripts: Mapping[str, str]) -> None:
        self._client = client
        self._scripts = {name: client.register_script(source) for name, source in scripts.items()}

    async def ping(self) -> None:
        await self._client.ping()

    async def run_script(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        # redis-py's script object loads the script again after NOSCRIPT.
        return await self._scripts[name](keys=keys, args=args)

    async def newest_members(self, key: str, start: int, stop: int) -> list[bytes]:
        # ZRANGE ... REV, which the documented ACL line allows (redis-py's
        # zrange(desc=True) sends ZREVRANGE).
        members: list[bytes] = await self._client.execute_command("ZRANGE", key, start, stop, "REV")
        return members

    async def remove_members(self, key: str, members: Sequence[bytes | str]) -> None:
        await self._client.zrem(key, *members)

    async def check_primary(self) -> None:
        return None

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
    if target.topology is not Topology.SINGLE:
        raise InvalidInputError(
            f"the redis-py driver serves one Redis server, not {target.where}: "
            "use driver='coredis' for a cluster or Sentinel"
        )
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
        yield RedisPyDriver(client, scripts=scripts)
    finally:
        with anyio.CancelScope(shield=True):
            await client.aclose(close_connection_pool=True)


@asynccontextmanager
async def driver_for_client(
    client: Any, *, scripts: Mapping[str, str], writes: frozenset[str]
) -> AsyncIterator[RedisPyDriver]:
    """A redis-py driver on the caller's client, which stays open."""
    if (
        type(client).__name__ == "RedisCluster"
        or "Sentinel" in type(client.connection_pool).__name__
    ):
        raise InvalidInputError(
            "the redis-py driver serves one Redis server: pass a coredis client "
            "for a cluster or Sentinel"
        )
    twin = _binary_twin(client)
    try:
        yield RedisPyDriver(client if twin is None else twin, scripts=scripts)
    finally:
        if twin is not None:
            with anyio.CancelScope(shield=True):
                await twin.aclose(close_connection_pool=True)
