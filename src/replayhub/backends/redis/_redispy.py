"""The Redis backend on redis-py (``redis.asyncio``, asyncio only).

For asyncio apps that already hold a ``redis.asyncio`` client: its pool,
TLS and ACL settings serve the hub too. redis-py sends one command at a time
per connection, which the backend makes up for by gathering work into few
calls (many sessions' appends per script call).

Every deployment: one server (``redis://``, ``rediss://``, ``unix://``, or
a ``redis.asyncio.Redis``), a Redis Cluster (``redis+cluster://``, or a
``redis.asyncio.RedisCluster``: sharded Pub/Sub read from every node at once
by :class:`ShardedListener`) and a primary behind Sentinel
(``redis+sentinel://``, or a client made by
``redis.asyncio.sentinel.Sentinel.master_for``).
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import (
    AbstractAsyncContextManager,
    AbstractContextManager,
    ExitStack,
    asynccontextmanager,
    contextmanager,
    nullcontext,
)
from itertools import chain
from typing import Any, NoReturn

import anyio
import redis.asyncio
from anyio.abc import TaskGroup
from redis._parsers.hiredis import NOT_ENOUGH_DATA
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import ConstantBackoff
from redis.client import CaseInsensitiveDict
from redis.connection import HiredisRespSerializer
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
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.utils import HIREDIS_AVAILABLE

from ..._errors import InvalidInputError
from ._connect import MAX_CONNECTIONS, RedisTarget, Topology
from ._driver import (
    TRANSIENT_REPLIES,
    DriverName,
    LogEntry,
    LogRange,
    Verdict,
    translate_errors,
)
from ._sentinel import (
    REPLICA_WAIT_MS,
    SWITCH_MASTER,
    FailoverWatch,
    Guard,
    ReplyCheck,
    is_a_replica_now,
    not_the_primary,
)

#: The error codes redis-py turns into exception classes, dropping the code
#: from the message: put back, so messages read as Redis wrote them.
_CODES = {OutOfMemoryError: "OOM", NoPermissionError: "NOPERM", ReadOnlyError: "READONLY"}


class RedisPyDriver:
    """The Redis backend on a ``redis.asyncio.Redis`` client (``_driver.RedisDriver``)."""

    name = DriverName.REDIS_PY
    multiplexes = False

    def __init__(self, client: Any, *, scripts: Mapping[str, str], writes: frozenset[str]) -> None:
        self._client = client
        self._scripts = {name: client.register_script(source) for name, source in scripts.items()}
        self._writes = writes
        self._cluster = type(client).__name__ == "RedisCluster"
        pool = None if self._cluster else client.connection_pool
        self._primary = SentinelGuard(client) if isinstance(pool, SentinelConnectionPool) else None
        # A cluster node's pool refuses a command past its max_connections
        # rather than waiting; at most this many run at once, leaving each
        # node a connection for Pub/Sub.
        self._commands = anyio.CapacityLimiter(MAX_CONNECTIONS - 1) if self._cluster else None
        # The client's reply parsers but XRANGE's, for read_log's pipelines
        # (not on a cluster, whose pipelines parse as its nodes do).
        self._raw_stream_replies: CaseInsensitiveDict | None = None
        if not self._cluster:
            parsers = client.response_callbacks.items()
            self._raw_stream_replies = CaseInsensitiveDict(
                {name: parse for name, parse in parsers if name.upper() != "XRANGE"}
            )

    async def ping(self) -> None:
        await self._client.ping()

    def _at_most_allowed(self) -> AbstractAsyncContextManager[object]:
        """Waits for a turn where commands at once are limited (a cluster)."""
        return self._commands if self._commands is not None else nullcontext()

    async def run_script(
        self,
        name: str,
        keys: Sequence[str],
        args: Sequence[Any],
        *,
        confirm_if: ReplyCheck | None = None,
    ) -> Any:
        # redis-py's script object loads the script again after NOSCRIPT.
        script = self._scripts[name]
        if self._primary is not None:
            return await self._primary.run(
                script, keys, args, write=name in self._writes, confirm_if=confirm_if
            )
        async with self._at_most_allowed():
            return await script(keys=keys, args=args)

    async def read_log(
        self, session_key: str | None, log_key: str, ranges: Sequence[LogRange]
    ) -> tuple[dict[bytes, bytes] | None, list[list[LogEntry]]]:
        # XRANGE's replies as Redis sent them where the pipeline can be made
        # so: redis-py's parse makes a dict per entry (a chat-rate reply's log
        # is an entry per token), which the backend would take apart again.
        raw = self._raw_stream_replies
        if raw is None:  # a cluster: parsed as its nodes parse
            pipe = self._client.pipeline(transaction=False)
        else:
            pipe = Pipeline(self._client.connection_pool, raw, False, None)
        async with self._at_most_allowed(), pipe:
            if session_key is not None:
                pipe.hgetall(session_key)
            for start, end, count in ranges:
                pipe.xrange(log_key, start, end, count)
            replies = await pipe.execute()
        fields = None if session_key is None else replies.pop(0)
        pages = replies
        if raw is None:
            pages = [
                [(entry_id, [*chain(*values.items())]) for entry_id, values in page]
                for page in pages
            ]
        return fields, pages

    async def newest_members(self, key: str, start: int, stop: int) -> list[bytes]:
        # ZRANGE ... REV, which the documented ACL line allows (redis-py's
        # zrange(desc=True) sends ZREVRANGE).
        members: list[bytes] = await self._client.execute_command("ZRANGE", key, start, stop, "REV")
        return members

    async def remove_members(self, key: str, members: Sequence[bytes | str]) -> None:
        await self._client.zrem(key, *members)

    async def watch_failovers(self, on_failover: Callable[[], None]) -> None:
        if self._primary is not None:
            await self._primary.watch_failovers(on_failover)

    async def refresh_layout(self) -> None:
        if self._cluster:
            await self._client.nodes_manager.initialize()

    @asynccontextmanager
    async def _pubsub(self, home: str) -> AsyncIterator[Any]:
        if self._cluster:
            async with ShardedListener.open(self._client) as listener:
                yield listener
            return
        pubsub = self._client.pubsub()
        try:
            # redis-py's Pub/Sub has no connection, and cannot be read,
            # before its first subscription; the notifier reads first.
            await pubsub.subscribe(home)
            with one_connect_at_a_time(pubsub.connection):
                yield pubsub
        finally:
            with anyio.CancelScope(shield=True):
                await pubsub.aclose()

    def open_pubsub(self, home: str) -> AbstractAsyncContextManager[Any]:
        return self._pubsub(home)

    async def receive(self, pubsub: Any) -> list[Any]:
        if isinstance(pubsub, ShardedListener):
            return await pubsub.receive()
        # It reconnects and subscribes again by itself; the acknowledgements
        # of those subscriptions tell the notifier to have its readers read.
        return await next_messages(pubsub)

    def errors(self, what: str) -> AbstractContextManager[None]:
        return translate_errors(what, classify)


@contextmanager
def one_connect_at_a_time(connection: Any) -> Iterator[None]:
    """Let one task at a time (re)connect a Pub/Sub ``connection``.

    The notifier reads a Pub/Sub in one task and changes its subscriptions
    in another, and redis-py reconnects a broken connection from whichever
    call meets it. Two such calls at once each open a socket and the second
    replaces the first, which is never closed (seen as an unclosed
    ``StreamWriter`` after a Redis restart). Under the lock the second
    caller finds the connection made and returns. A connect may reconnect
    within itself (its resubscription meets a broken connection), so the
    task holding the lock passes. Undone before the connection goes back to
    its pool.
    """
    if "connect_check_health" in vars(connection):  # already in force
        yield
        return
    lock = anyio.Lock()
    connect = connection.connect_check_health
    holder: int | None = None

    async def connect_once(*args: Any, **kwargs: Any) -> None:
        nonlocal holder
        task = anyio.get_current_task().id
        if holder == task:
            await connect(*args, **kwargs)
            return
        async with lock:
            holder = task
            try:
                await connect(*args, **kwargs)  # returns at once if connected
            finally:
                holder = None

    connection.connect_check_health = connect_once
    try:
        yield
    finally:
        del connection.connect_check_health


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


class ShardedListener:
    """Sharded Pub/Sub on a cluster, read from every node as messages come.

    redis-py's ``ClusterPubSub`` routes each ``SSUBSCRIBE`` to the node that
    owns its channel's slot, but reads its nodes in turn, each for up to a
    timeout. Here one task per node reads that node's Pub/Sub, and every
    message goes to one stream in arrival order (``smessage`` as
    ``message``). A node whose slot moves unsubscribes its channels
    (``sunsubscribe``); the notifier then subscribes them again, on the new
    owner. A node's connection that fails ends the listener, and the
    notifier opens another on a fresh layout.
    """

    def __init__(self, client: Any, task_group: TaskGroup) -> None:
        self._pubsub = client.pubsub()
        self._task_group = task_group
        self._send, self._messages = anyio.create_memory_object_stream[Any](math.inf)
        self._read: set[str] = set()  # nodes with a reading task
        self._connects = ExitStack()  # undoes one_connect_at_a_time per node

    @classmethod
    @asynccontextmanager
    async def open(cls, client: Any) -> AsyncIterator[ShardedListener]:
        async with anyio.create_task_group() as task_group:
            listener = cls(client, task_group)
            try:
                yield listener
            finally:
                task_group.cancel_scope.cancel()
                listener._connects.close()
                with anyio.CancelScope(shield=True):
                    await listener._pubsub.aclose()

    async def subscribe(self, *channels: str) -> None:
        await self._pubsub.ssubscribe(*channels)
        for name, node_pubsub in list(self._pubsub.node_pubsub_mapping.items()):
            if name not in self._read:
                self._read.add(name)
                self._connects.enter_context(one_connect_at_a_time(node_pubsub.connection))
                self._task_group.start_soon(self._read_node, name, node_pubsub)

    async def unsubscribe(self, *channels: str) -> None:
        await self._pubsub.sunsubscribe(*channels)

    async def receive(self) -> list[Any]:
        """The next message, and every other one already come."""
        messages = [await self._messages.receive()]
        while True:
            try:
                messages.append(self._messages.receive_nowait())
            except anyio.WouldBlock:
                return messages

    async def _read_node(self, name: str, node_pubsub: Any) -> None:
        try:
            while True:
                for message in await next_messages(node_pubsub):
                    if message is None:
                        continue
                    if message["type"] == "smessage":
                        message["type"] = "message"
                    self._send.send_nowait(message)
        finally:
            self._read.discard(name)


async def next_messages(pubsub: Any) -> list[Any]:
    """``pubsub.get_message(timeout=None)``, and the message of every reply
    its connection has read already (``None`` where redis-py would give
    none: a health check's answer, a message it hands to a handler).

    ``get_message`` takes each message through a health check, a retry
    wrapper and a timeout: 16-20 us a message on a test machine, against
    2.5-5 taken straight from hiredis's reader as redis-py's own read takes
    them. A process reading the sessions of producers elsewhere gets one per
    stored batch of each (about 90 per socket read at 200 sessions). Without
    hiredis, one at a time.
    """
    messages = [await pubsub.get_message(timeout=None)]
    connection = pubsub.connection
    parser: Any = getattr(connection, "_parser", None)
    reader = getattr(parser, "_reader", None)
    if reader is None:
        return messages
    push_type = parser._hiredis_PushNotificationType  # (RESP3: a message is a push reply)
    while True:
        # What redis-py's read of a reply (the hiredis parser's
        # read_response, PubSub.parse_response, get_message) does with it.
        response = reader.gets()
        if response is NOT_ENOUGH_DATA:
            return messages
        if isinstance(response, RedisConnectionError):
            raise response
        if push_type is not None and isinstance(response, push_type):
            response = await parser.handle_push_response(response)
        elif (
            isinstance(response, list)
            and response
            and isinstance(response[0], RedisConnectionError)
        ):
            raise response[0]
        if connection.health_check_interval and response in pubsub.health_check_response:
            messages.append(None)
        elif response:
            messages.append(await pubsub.handle_message(response))
        else:
            messages.append(None)


class SentinelGuard(Guard):
    """Behind Sentinel, a write counts once a failover cannot lose it: what
    ``_sentinel.PrimaryGuard`` does for coredis, on a client made by
    ``Sentinel.master_for``. (redis-py itself turns ``READONLY`` from a
    demoted primary into a dropped connection and asks the Sentinels again.)
    """

    _replicas_method = "sentinel_slaves"

    def __init__(self, client: Any) -> None:
        super().__init__(client, errors=(RedisError,))

    async def _pipeline(
        self, script: Any, keys: Sequence[str], args: Sequence[Any], *, write: bool
    ) -> tuple[Any, int | None, tuple[str, int]]:
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                # Taken here, so that its node is known: the pipeline uses
                # and releases it as it would its own.
                pipe.connection = connection = await self._pool.get_connection()
                await script(keys=keys, args=args, client=pipe)
                if write:
                    pipe.execute_command("WAIT", 1, REPLICA_WAIT_MS)
                replies = await pipe.execute()
                # Read before anything else can run: once released, the
                # connection may be reconnected elsewhere by its next user.
                ran_on = (connection.host, connection.port)
        except ResponseError as exc:
            if not is_a_replica_now(exc):
                raise
            # The node written to became a replica (a failover): retried on
            # the primary the Sentinels name (the scripts skip what landed).
            # redis-py's pipeline words these errors its own way, so their
            # text is looked for in the message.
            await self._leave(None, cause=exc)
        return replies[0], replies[1] if write else None, ran_on

    def _publish(self, channel: str) -> Any:
        async def publish(keys: Sequence[str], args: Sequence[Any], client: Any) -> None:
            client.publish(channel, "")  # queued in the pipeline

        return publish

    async def _leave(self, location: Any, *, cause: BaseException | None = None) -> NoReturn:
        """Drop the connections to ``location``, no longer the primary, and
        raise :class:`~replayhub.BackendUnavailableError` (retried)."""
        await self.move()
        raise not_the_primary(location, self._service) from cause

    async def move(self) -> None:
        """Drop the connections: the next one asks Sentinel where to go."""
        # The idle ones now, as redis-py does when the primary changes: one
        # another task is connecting or using would lose its socket
        # mid-command (seen: AttributeError from a handshake under load).
        # A busy one is dropped as it is released (redis-py's own mark),
        # before anyone reads through it from the old primary.
        await self._pool.disconnect(inuse_connections=False)
        for connection in list(self._pool._get_in_use_connections()):
            connection.mark_for_reconnect()
        self._pool.master_address = None

    async def _listen_to(self, sentinel: Any, watch: FailoverWatch) -> None:
        pubsub = sentinel.pubsub()
        try:
            await pubsub.subscribe(SWITCH_MASTER)
            while True:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
                if message is not None and message["type"] == "message":
                    await watch.announced(message["data"])
        finally:
            with anyio.CancelScope(shield=True):
                await pubsub.aclose()


class _OneDiscoveryAtATime(Sentinel):
    """redis-py's Sentinel, asking its Sentinels one discovery at a time.

    ``discover_master`` walks ``self.sentinels`` across awaits and moves the
    one that answered to the front by index. Two at once (every new pool
    connection asks, so a failover starts several) walk a list the other is
    reordering: they ask a dead Sentinel again, skip a live one, or swap one
    in twice so that another drops out of the list, never asked again and
    its connections left unclosed."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]
        self._discovering = anyio.Lock()

    async def discover_master(self, service_name: str) -> Any:
        async with self._discovering:
            return await super().discover_master(service_name)

    async def discover_slaves(self, service_name: str) -> Any:
        async with self._discovering:
            return await super().discover_slaves(service_name)


class _BlockingSentinelPool(SentinelConnectionPool, redis.asyncio.BlockingConnectionPool):
    """redis-py's Sentinel pool, whose callers wait for a free connection
    (as with :class:`~redis.asyncio.BlockingConnectionPool`) rather than fail
    with "Too many connections": a hub's pool stays at four."""


def _binary_twin(client: Any) -> Any | None:
    """For a client that decodes replies to str, a client of its own on the
    same settings that does not (replayhub's replies are binary); else None.

    :raises ~replayhub.InvalidInputError: for such a cluster client.
    """
    if type(client).__name__ == "RedisCluster":
        if client.get_encoder().decode_responses:
            raise InvalidInputError(
                "pass a RedisCluster made with decode_responses=False (replayhub reads bytes)"
            )
        return None
    pool = client.connection_pool
    if not pool.connection_kwargs.get("decode_responses"):
        return None
    twin_pool = redis.asyncio.BlockingConnectionPool(
        connection_class=pool.connection_class,
        max_connections=MAX_CONNECTIONS,
        **{**pool.connection_kwargs, "decode_responses": False},
    )
    return redis.asyncio.Redis(connection_pool=twin_pool)


def packed_by_hiredis(connection_class: type[Any]) -> type[Any]:
    """``connection_class`` with each command packed by hiredis, in C, as
    redis-py's synchronous client packs them (where hiredis is installed).

    redis-py's asyncio connection packs in Python, growing one buffer by a
    join per argument: a script call storing 100 sessions' tokens (201 keys)
    took 109 us to pack, most of what each key cost (9k instructions, where
    coredis takes 4.7k). The bytes are the same for every type redis-py
    takes; a type it refuses raises its ``DataError`` here too.
    """
    if not HIREDIS_AVAILABLE:
        return connection_class
    pack = HiredisRespSerializer().pack

    def pack_command(self: Any, *args: Any) -> list[bytes]:
        packed: list[bytes] = pack(*args)
        return packed

    return type(connection_class.__name__, (connection_class,), {"pack_command": pack_command})


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
        async with _cluster_client(target, reply_timeout=reply_timeout) as client:
            yield RedisPyDriver(client, scripts=scripts, writes=writes)
        return
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
    pool.connection_class = packed_by_hiredis(pool.connection_class)
    client = redis.asyncio.Redis(connection_pool=pool)
    try:
        yield RedisPyDriver(client, scripts=scripts, writes=writes)
    finally:
        with anyio.CancelScope(shield=True):
            await client.aclose(close_connection_pool=True)


@asynccontextmanager
async def _cluster_client(target: RedisTarget, *, reply_timeout: float) -> AsyncIterator[Any]:
    """A cluster client starting from every host the URL names."""
    options: dict[str, Any] = {
        "startup_nodes": [ClusterNode(host, port) for host, port in target.hosts],
        "max_connections": MAX_CONNECTIONS,
        "username": target.username,
        "password": target.password,
        "socket_timeout": reply_timeout,
        "socket_connect_timeout": reply_timeout,
        "retry": Retry(ConstantBackoff(0.01), 2),
    }
    if target.url.startswith("rediss"):
        options["ssl"] = True
        options.update(
            (key, value)
            for key, value in target.options.items()
            if key in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs")
        )
    with translate_errors(f"cannot connect to {target.where}", classify):
        client = RedisCluster(**options)
        try:
            await client.initialize()
        except BaseException:
            with anyio.CancelScope(shield=True):
                await client.aclose()
            raise
    try:
        yield client
    finally:
        with anyio.CancelScope(shield=True):
            await client.aclose()


@asynccontextmanager
async def _sentinel_client(target: RedisTarget, *, reply_timeout: float) -> AsyncIterator[Any]:
    """The primary of ``target.service`` as its Sentinels name it."""
    timeouts = {"socket_timeout": reply_timeout, "socket_connect_timeout": reply_timeout}
    sentinel_options: dict[str, Any] = dict(timeouts)
    if "sentinel_password" in target.options:
        sentinel_options["password"] = target.options["sentinel_password"]
    sentinel = _OneDiscoveryAtATime(list(target.hosts), sentinel_kwargs=sentinel_options)
    nodes = list(sentinel.sentinels)  # each closed at the end, in whatever order
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
    pool = client.connection_pool
    pool.connection_class = packed_by_hiredis(pool.connection_class)
    try:
        yield client
    finally:
        with anyio.CancelScope(shield=True):
            await client.aclose(close_connection_pool=True)
            for node in nodes:
                await node.aclose()


@asynccontextmanager
async def driver_for_client(
    client: Any, *, scripts: Mapping[str, str], writes: frozenset[str]
) -> AsyncIterator[RedisPyDriver]:
    """A redis-py driver on the caller's client, which stays open."""
    twin = _binary_twin(client)
    try:
        yield RedisPyDriver(client if twin is None else twin, scripts=scripts, writes=writes)
    finally:
        if twin is not None:
            with anyio.CancelScope(shield=True):
                await twin.aclose(close_connection_pool=True)
