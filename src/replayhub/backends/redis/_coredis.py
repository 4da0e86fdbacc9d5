"""The Redis backend on coredis (asyncio and Trio), and everything replayhub
does to coredis 6.9 below its public API, in one place.

Each piece works around a coredis behaviour named here, with where it lives
in coredis 6.9.0's source. ``tests/test_coredis_workarounds.py`` pins each:
it shows the behaviour still there on plain coredis (so a release that fixes
it fails the test, and the piece can go), and fingerprints the coredis
methods copied here (so a release that changes them fails the test before
it can break the copy).

**Pool slots** (``coredis/pool/_basic.py``: ``ConnectionPool.get_connection``
and ``release``; ``coredis/pool/_cluster.py``: ``_get_connection_by_node``
and ``release``). A pool holds ``max_connections`` slots and loses one

- when a connection dies while checked out: ``release()`` drops it with its
  slot (a Pub/Sub connection always is checked out; CLIENT KILL and
  failovers do this), and
- when ``get_connection()`` is cancelled while it connects (the slot is
  taken, the connection never handed out; coredis catches ``Exception``,
  not cancellation).

After enough of either the pool is empty and every command waits forever.
The pools here give the slot back in both cases, so a hub can keep a small,
fixed pool; their methods are coredis's own, with the slot returned.

**Commands made at once** (``coredis/_concurrency.py``: ``Queue.get``;
``coredis/connection/_base.py``: ``BaseConnection._writer_task``). Every
command takes a pooled connection through ``Queue.get``, which holds the
queue's lock over a checkpoint (anyio's ``Lock`` yields once taken); and a
connection's writer takes each queued request with a checkpoint of its own
before sending any. So N commands made at once went out one per turn of the
loop, twice over: on a Trio process busy with 1,000 chats, a burst of 2,000
reads took 8.7 s, every lease renewal queued behind it timed out, and all
1,000 leases were lost. :func:`_take` takes a free slot without the lock
when no command waits for one, and the pools' connections
(:func:`sends_at_once`) send everything queued in one write, as coredis's
writer does minus the checkpoint per request.

**Sharded Pub/Sub** (``coredis/patterns/pubsub.py``: ``ShardedPubSub.run``)
acquires one pooled connection per primary through an ``AsyncExitStack``
that it never closes: every reconnect leaks those leases (and, under Trio,
their unfinished async generators are collected with a ``ResourceWarning``).
:class:`ClosingShardedPubSub` is the same loop with the stack closed on every
exit, and a cleanup that cannot fail the close.

**Pub/Sub reconnects** (``coredis/patterns/pubsub.py``: the default
``retry_policy`` of ``BasePubSub``) back off exponentially up to 16 s and
never reset, so after a few dropped connections readers would wait for their
lease re-check: :func:`open_pubsub` reconnects every 0.1 s.

**Pub/Sub messages** (``coredis/patterns/pubsub.py``: ``get_message``) are
handed over one at a time, each inside a cancel scope for its timeout even
without one (a few microseconds each on either loop). At chat rates a hub
receives one message per stored batch of every session it follows, so that
alone was a visible share of a busy process. :func:`receive_messages` reads
the stream the parsed messages wait in, ``_receive_stream``, taking
everything already there in one wake-up: ``get_message()`` minus the scope.

**Pub/Sub message parsing** (``coredis/patterns/pubsub.py``:
``BasePubSub._handle_message``) tests each message's type against sets of
members of a case-insensitive enum, a Python-level ``__eq__`` per member:
several per message. A process reading another's producers parses one
message per stored batch of every session it follows; at 100 sessions these
comparisons alone were 7% of such a process (py-spy, the fleet's split run).
:class:`FastPubSub` and :class:`ClosingShardedPubSub` hand a published
message on a channel subscribed without a handler (all of replayhub's) over
as coredis would build it, and leave every other message to coredis.

**Pub/Sub hand-over** (``coredis/patterns/pubsub.py``:
``BasePubSub._consume_push_messages``, ``ShardedPubSub._consume_shard_push_messages``;
``coredis/connection/_base.py``: ``BaseConnection.push_messages``). A
connection parses every message a socket read brings, but coredis moves
them to the Pub/Sub's stream one per turn of the loop (an async generator
over a memory stream whose ``receive`` checkpoints), each waking the reader
anew. A process reading 200 sessions produced by another (the fleet's split
run) got about 55 messages per socket read. :class:`FastPubSub` and
:class:`ClosingShardedPubSub` take every message already parsed at each
wake-up and hand them over together: that process's CPU fell from 79% of
a core to 48%.

**Stream replies** (``coredis/commands/core.py``: ``xrange``, whose
``StreamRangeCallback`` builds a named tuple and an ordered dict per entry).
A chat-rate reply's log is an entry per token, and a page read of 3,072 of
them spent about as long in that callback as in parsing the reply, only for
the backend to take each entry apart again. :func:`raw_xrange` queues the
same command through the pipeline's ``create_request`` (what ``xrange``
itself calls) with no callback: the reply as Redis sent it.

**Script calls** (``coredis/commands/script.py``: ``Script.__call__``;
``coredis/commands/core.py``: ``_evalsha``). A script call wraps each key
in a ``Key`` and builds its command three times (``evalsha``, ``.retry``
for NOSCRIPT, ``.transform``), each walking every argument. The hub's one
write per loop turn names two keys per session: at 100 sessions, 300-750
us of CPU per call against about 300 for the command built once (a
loopback microbenchmark, 201 keys). :func:`run_script_once` sends
``EVALSHA`` through the client's ``create_request`` (what ``evalsha``
itself calls), keys as plain values, and loads the script on NOSCRIPT as
``Script.__call__`` does. On a standalone server only: a cluster client
routes by the ``Key`` objects.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import (
    AbstractAsyncContextManager,
    AbstractContextManager,
    AsyncExitStack,
    asynccontextmanager,
    suppress,
)
from typing import Any, cast
from urllib.parse import urlsplit

import anyio
import coredis
from anyio import WouldBlock, fail_after
from anyio.abc import TaskStatus
from coredis._concurrency import QueueEmpty, QueueFull
from coredis.commands.constants import CommandName
from coredis.connection import TCPLocation
from coredis.exceptions import (
    ClusterDownError,
    NoScriptError,
    ReadOnlyError,
    RedisClusterError,
    RedisError,
    ResponseError,
    UnblockedError,
)
from coredis.exceptions import ConnectionError as RedisConnectionError
from coredis.patterns.pubsub import PubSub, ShardedPubSub
from coredis.pool import ClusterConnectionPool, ConnectionPool
from coredis.pool._sentinel import SentinelConnectionPool
from coredis.response._callbacks import NoopCallback
from coredis.retry import CompositeRetryPolicy, ConstantRetryPolicy
from coredis.tokens import PrefixToken
from coredis.typing import Key

from ._connect import MAX_CONNECTIONS, RedisTarget, Topology
from ._driver import (
    TRANSIENT_REPLIES,
    DriverName,
    LogEntry,
    LogRange,
    Verdict,
    translate_errors,
)
from ._sentinel import PrimaryGuard, ReplyCheck

logger = logging.getLogger(__name__)

#: Seconds between Pub/Sub reconnection attempts.
PUBSUB_RECONNECT = 0.1
#: Reconnection attempts of a cluster's sharded Pub/Sub on one layout: one
#: that keeps failing is on a stale layout, and the notifier rebuilds it.
CLUSTER_PUBSUB_RETRIES = 5


# -- pool slots ------------------------------------------------------------------


def _return_slot(queue: Any) -> None:
    with suppress(QueueFull):
        queue.append_nowait(None)  # an empty slot: the next get() connects anew


async def _take(queue: Any, wait: float | None) -> Any:
    """A pool's next connection slot: at once where one is free and nobody
    waits for one (module docstring: commands made at once), else in turn,
    waiting ``wait`` seconds at most. (Taken past those waiting, a slot a
    pipeline gave back went to a newcomer, and the one it woke waited again:
    100 readers of another process's reply got it 19% slower.)"""
    if not queue._getters and not queue._lock.locked():
        try:
            return queue.get_nowait()
        except QueueEmpty:
            pass
    with fail_after(wait):
        return await queue.get()


class _ConnectionsSendAtOnce:
    """For every pool here: its connections are :func:`sends_at_once`'s."""

    connection_class: Any

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.connection_class = sends_at_once(self.connection_class)


class _KeepsSlots(_ConnectionsSendAtOnce):
    """For ``ConnectionPool`` and its Sentinel subclass."""

    _available_connections: Any
    _online_connections: set[Any]
    statistics: Any
    task_group: Any
    timeout: float | None
    _construct_connection: Any  # annotations only: the pool's own methods run

    async def get_connection(self, **_: Any) -> Any:
        connection = await _take(self._available_connections, self.timeout)
        if connection is None or not connection.reusable:
            if connection is not None:
                connection.invalidate()
            try:
                connection = await self._connect()
            except BaseException:
                _return_slot(self._available_connections)
                raise
            self.statistics.connection_created(connection)
            self._online_connections.add(connection)
        self.statistics.connection_leased(connection)
        return connection

    async def _connect(self) -> Any:
        connection = await self._construct_connection()
        wrap = self._ConnectionPool__wrap_connection  # type: ignore[attr-defined]
        if error := await self.task_group.start(wrap, connection):
            raise error
        return connection

    def release(self, connection: Any) -> None:
        super().release(connection)  # type: ignore[misc]
        if not connection.usable:
            _return_slot(self._available_connections)


class _SendsAtOnce:
    """The writer of :func:`sends_at_once`'s connections."""

    stream: Any
    statistics: Any
    _packer: Any
    _transport_failed: bool
    _write_buffer_out: Any

    async def _writer_task(self) -> None:
        # coredis's own, but for one checkpoint per request taken.
        while self.stream is not None:
            requests = await self._write_buffer_out.receive()
            while self._write_buffer_out.statistics().current_buffer_used > 0:
                requests.extend(self._write_buffer_out.receive_nowait())
            data = b"".join(
                self._packer.pack_commands([(command, *args) for command, args in requests])
            )
            try:
                await self.stream.send(data)
                self.statistics.data_sent(len(data))
            except (anyio.ClosedResourceError, anyio.BrokenResourceError) as err:
                self._transport_failed = True
                raise RedisConnectionError("Connection lost while sending request") from err
            except Exception:
                self._transport_failed = True
                raise


_SENDING_AT_ONCE: dict[type[Any], type[Any]] = {}


def sends_at_once(connection_class: type[Any]) -> type[Any]:
    """``connection_class`` sending all its queued requests in one write
    (module docstring: commands made at once); one subclass per class."""
    made = _SENDING_AT_ONCE.get(connection_class)
    if made is None:
        made = _SENDING_AT_ONCE[connection_class] = type(
            connection_class.__name__, (_SendsAtOnce, connection_class), {"__module__": __name__}
        )
    return made


class SlotReturningPool(_KeepsSlots, ConnectionPool[Any]):
    pass


class SlotReturningSentinelPool(_KeepsSlots, SentinelConnectionPool):
    pass


class SlotReturningClusterPool(_ConnectionsSendAtOnce, ClusterConnectionPool):
    async def _get_connection_by_node(self, node: Any) -> Any:
        queue = self._node_pool(TCPLocation(node.host, node.port))
        connection = await _take(queue, self.timeout)
        if not connection or not connection.reusable:
            if connection:
                connection.invalidate()
            try:
                connection = await self._make_node_connection(node)
            except BaseException:  # coredis catches Exception only: not cancellation
                _return_slot(queue)
                raise
        return connection

    def release(self, connection: Any) -> None:
        super().release(connection)
        if not connection.usable:
            _return_slot(self._node_pool(connection.location))


# -- Pub/Sub ---------------------------------------------------------------------


def open_pubsub(client: Any, *, sharded: bool) -> Any:
    """coredis's Pub/Sub (sharded on a cluster), reconnecting every
    :data:`PUBSUB_RECONNECT` seconds; on a cluster at most
    :data:`CLUSTER_PUBSUB_RETRIES` times in a row."""
    retries = CLUSTER_PUBSUB_RETRIES if sharded else None
    policy = CompositeRetryPolicy(
        ConstantRetryPolicy((RedisConnectionError,), retries=retries, delay=PUBSUB_RECONNECT),
        ConstantRetryPolicy((TimeoutError,), retries=retries, delay=PUBSUB_RECONNECT),
    )
    if sharded:
        return ClosingShardedPubSub(client.connection_pool, retry_policy=policy)
    return FastPubSub(client.connection_pool, retry_policy=policy)


#: A published message's type as Redis sends it (``smessage``: sharded).
_PUBLISHED = (b"message", b"smessage", "message", "smessage")


class _PublishedMessagesFirst:
    """``_handle_message`` with published messages parsed first, and the
    messages a connection has parsed handed over all at once (see the
    module's docstring: Pub/Sub message parsing, Pub/Sub hand-over);
    anything but a published message goes to coredis's own parsing."""

    _send_stream: Any  # BasePubSub's

    def _published(self, response: list[Any]) -> Any:
        """A published message on a channel with no handler, as coredis
        builds it; ``None`` for any other message."""
        channels: dict[Any, Any] = cast(Any, self).channels  # BasePubSub's
        if (
            response[0] in _PUBLISHED
            and len(response) == 3
            and channels  # (coredis resets a flag when none is left)
            and channels.get(response[1]) is None  # no handler to call
        ):
            return {"type": "message", "pattern": None, "channel": response[1], "data": response[2]}
        return None

    async def _handle_message(self, response: list[Any]) -> Any:
        message = self._published(response)
        if message is None:
            return await super()._handle_message(response)  # type: ignore[misc]
        return message

    async def _forward_push_messages(self, connection: Any, checked_in: Callable[[], None]) -> None:
        """coredis's loop over ``connection.push_messages``, taking every
        message the connection has parsed at each wake-up."""
        buffer = connection._push_message_buffer_out
        send = self._send_stream.send_nowait
        while True:
            try:
                responses = [await buffer.receive()]
            except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError) as err:
                # (coredis's push_messages raises the same)
                raise RedisConnectionError(
                    "Connection lost while waiting for push messages"
                ) from err
            # (the end of the stream, if it came, is raised by the next receive)
            with suppress(WouldBlock, anyio.EndOfStream):
                while True:
                    responses.append(buffer.receive_nowait())
            checked_in()
            for response in responses:
                message = self._published(response)
                if message is None:
                    message = await super()._handle_message(response)  # type: ignore[misc]
                send(message)


class FastPubSub(_PublishedMessagesFirst, PubSub[Any]):
    async def _consume_push_messages(self) -> None:
        def checked_in() -> None:
            self._last_checkin = time.monotonic()

        await self._forward_push_messages(self.connection, checked_in)


class ClosingShardedPubSub(_PublishedMessagesFirst, ShardedPubSub[Any]):
    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        started = False

        async def run_once() -> None:
            nonlocal started
            async with AsyncExitStack() as stack:
                pool = self.connection_pool
                nodes = (
                    pool.cluster_layout.replicas
                    if self._read_from_replicas
                    else pool.cluster_layout.primaries
                )
                self.shard_connections = {}
                for node in nodes:
                    if node.node_id:
                        self.shard_connections[node.node_id] = await stack.enter_async_context(
                            pool.acquire(node=node)
                        )
                try:
                    async with anyio.create_task_group() as task_group:
                        self._current_scope = task_group.cancel_scope
                        for connection in self.shard_connections.values():
                            task_group.start_soon(self._consume_shard_push_messages, connection)
                            task_group.start_soon(self._shard_keepalive, connection)
                        if not started:
                            task_status.started()
                            started = True
                        elif self.channels:  # resubscribe
                            await self.subscribe(*self.channels.keys())
                finally:
                    if self._current_scope.cancel_called:
                        with anyio.CancelScope(shield=True):
                            await self._cleanup_quietly()

        await self._retry_policy.call_with_retries(run_once)

    async def _consume_shard_push_messages(self, connection: Any) -> None:
        def checked_in() -> None:
            self._last_checkins[connection.location] = time.monotonic()

        await self._forward_push_messages(connection, checked_in)

    async def _cleanup_quietly(self) -> None:
        """Unsubscribe on the way out, if the shards can still be told.

        On a layout gone stale (a failover) coredis cannot route the
        unsubscribe and raises; the connections close anyway.
        """
        try:
            await self._cleanup()
        except Exception as exc:
            logger.debug("sharded Pub/Sub cleanup failed: %s", exc)


def raw_xrange(pipe: Any, key: str, start: str, end: str, count: int | None) -> Any:
    """``XRANGE key start end [COUNT count]`` queued on ``pipe``, its reply
    as Redis sent it (module docstring: stream replies)."""
    arguments: list[Any] = [Key(key), start, end]
    if count is not None:
        arguments += [PrefixToken.COUNT, count]
    return pipe.create_request(CommandName.XRANGE, *arguments, callback=NoopCallback())


async def run_script_once(
    client: Any, script: Any, keys: Sequence[str], args: Sequence[Any]
) -> Any:
    """``script(keys=keys, args=args)`` on a standalone ``client``, its
    command built once (module docstring: script calls)."""
    try:
        return await client.create_request(
            CommandName.EVALSHA, script.sha, len(keys), *keys, *args, callback=NoopCallback()
        )
    except NoScriptError:  # the server's script cache was emptied: load it again
        await client.script_load(script.script)
        return await client.create_request(
            CommandName.EVALSHA, script.sha, len(keys), *keys, *args, callback=NoopCallback()
        )


async def receive_messages(pubsub: Any) -> list[Any]:
    """Every message the Pub/Sub client has parsed, waiting for the first
    (``None`` entries are coredis's own, for messages it handled itself)."""
    stream = pubsub._receive_stream
    messages = [await stream.receive()]
    try:
        while True:
            messages.append(stream.receive_nowait())
    except WouldBlock:
        return messages


# -- the driver ------------------------------------------------------------------


@asynccontextmanager
async def open_client(target: RedisTarget, *, reply_timeout: float) -> AsyncIterator[Any]:
    """An open coredis client for the target (entered as ``async with``),
    on a pool of :data:`MAX_CONNECTIONS` that keeps its slots."""
    options: dict[str, Any] = {
        "stream_timeout": reply_timeout,
        "connect_timeout": reply_timeout,
        "max_connections": MAX_CONNECTIONS,
    }
    # coredis's own defaults: a lost connection or a timeout is retried twice.
    retry = ConstantRetryPolicy((RedisConnectionError, TimeoutError), retries=2, delay=0.01)
    if target.topology is Topology.SINGLE:
        pool = SlotReturningPool.from_url(target.url, **options)
        async with coredis.Redis(connection_pool=pool, retry_policy=retry) as client:
            yield client
        return
    credentials: dict[str, Any] = {"username": target.username, "password": target.password}
    if target.topology is Topology.CLUSTER:
        first_host, first_port = target.hosts[0]
        scheme = "rediss" if target.url.startswith("rediss") else "redis"
        query = urlsplit(target.url).query
        cluster_pool = SlotReturningClusterPool.from_url(
            f"{scheme}://{first_host}:{first_port}/" + (f"?{query}" if query else ""),
            startup_nodes=[TCPLocation(host, port) for host, port in target.hosts],
            max_connections_per_node=True,
            **credentials,
            **options,
        )
        cluster_retry = CompositeRetryPolicy(
            ConstantRetryPolicy((ClusterDownError,), retries=2, delay=0.1), retry
        )
        async with coredis.RedisCluster(
            connection_pool=cluster_pool, retry_policy=cluster_retry
        ) as client:
            yield client
        return
    sentinel_options: dict[str, Any] = {
        "stream_timeout": reply_timeout,
        "connect_timeout": reply_timeout,
    }
    if "sentinel_password" in target.options:
        sentinel_options["password"] = target.options["sentinel_password"]
    async with AsyncExitStack() as stack:
        sentinel = await stack.enter_async_context(
            coredis.Sentinel(
                [TCPLocation(host, port) for host, port in target.hosts],
                sentinel_kwargs=sentinel_options,
                retry_policy=retry,
                db=target.db,
                **credentials,
                **options,
            )
        )
        yield await stack.enter_async_context(
            sentinel.primary_for(target.service, connection_pool_class=SlotReturningSentinelPool)
        )


class CoredisDriver:
    """The Redis backend on a coredis client (``_driver.RedisDriver``)."""

    name = DriverName.COREDIS
    multiplexes = True

    def __init__(
        self, client: Any, *, scripts: Mapping[str, str], writes: frozenset[str], sentinel: bool
    ) -> None:
        self._client = client
        self._cluster = isinstance(client, coredis.RedisCluster)
        self._scripts = {name: client.register_script(source) for name, source in scripts.items()}
        self._writes = writes
        self._primary = PrimaryGuard(client) if sentinel else None
        # Behind Sentinel, READONLY means the client is still on a demoted
        # primary: retried while the client moves, not a refusal.
        self._readonly_is_transient = sentinel

    async def ping(self) -> None:
        await self._client.ping()

    async def run_script(
        self,
        name: str,
        keys: Sequence[str],
        args: Sequence[Any],
        *,
        confirm_if: ReplyCheck | None = None,
    ) -> Any:
        if self._primary is not None:
            return await self._primary.run(
                self._scripts[name], keys, args, write=name in self._writes, confirm_if=confirm_if
            )
        if self._cluster:
            return await self._scripts[name](keys=keys, args=args)
        return await run_script_once(self._client, self._scripts[name], keys, args)

    async def read_log(
        self, session_key: str | None, log_key: str, ranges: Sequence[LogRange]
    ) -> tuple[dict[bytes, bytes] | None, list[list[LogEntry]]]:
        # Shielded: coredis 6.9 loses a pool slot for a pipeline cancelled
        # mid-flight (see _sentinel's guard). Bounded by the reply timeout.
        with anyio.CancelScope(shield=True):
            async with self._client.pipeline(transaction=False) as pipe:
                fields_request = None if session_key is None else pipe.hgetall(session_key)
                range_requests = [raw_xrange(pipe, log_key, *bounds) for bounds in ranges]
            fields = None if fields_request is None else dict(await fields_request)
            pages = [list(await request) for request in range_requests]
        return fields, pages

    async def newest_members(self, key: str, start: int, stop: int) -> list[bytes]:
        members: list[bytes] = await self._client.zrange(key, start, stop, rev=True)
        return members  # ZRANGE ... REV, as the documented ACL line allows

    async def remove_members(self, key: str, members: Sequence[bytes | str]) -> None:
        await self._client.zrem(key, list(members))

    async def watch_failovers(self, on_failover: Callable[[], None]) -> None:
        if self._primary is not None:
            await self._primary.watch_failovers(on_failover)

    async def refresh_layout(self) -> None:
        if self._cluster:
            await self._client.connection_pool.cluster_layout.initialize()

    def open_pubsub(self, home: str) -> AbstractAsyncContextManager[Any]:
        pubsub: AbstractAsyncContextManager[Any] = open_pubsub(self._client, sharded=self._cluster)
        return pubsub

    async def receive(self, pubsub: Any) -> list[Any]:
        return await receive_messages(pubsub)

    def errors(self, what: str) -> AbstractContextManager[None]:
        return translate_errors(what, self._classify)

    def _classify(self, exc: BaseException) -> Verdict:
        return classify(exc, readonly_is_transient=self._readonly_is_transient)


@asynccontextmanager
async def open_driver(
    target: RedisTarget,
    *,
    reply_timeout: float,
    scripts: Mapping[str, str],
    writes: frozenset[str],
) -> AsyncIterator[CoredisDriver]:
    """A coredis driver on a client of its own for ``target``, closed on exit."""
    what = f"cannot connect to {target.where}"
    async with translated(open_client(target, reply_timeout=reply_timeout), what) as client:
        yield CoredisDriver(
            client,
            scripts=scripts,
            writes=writes,
            sentinel=target.topology is Topology.SENTINEL,
        )


@asynccontextmanager
async def driver_for_client(
    client: Any, *, scripts: Mapping[str, str], writes: frozenset[str]
) -> AsyncIterator[CoredisDriver]:
    """A coredis driver on the caller's client, which stays open."""
    pool = getattr(client, "connection_pool", None)
    yield CoredisDriver(
        client,
        scripts=scripts,
        writes=writes,
        sentinel=isinstance(pool, SentinelConnectionPool),
    )


def classify(exc: BaseException, *, readonly_is_transient: bool = False) -> Verdict:
    """What a coredis or socket error means (``_driver.translate_errors``)."""
    if isinstance(exc, ResponseError):
        if isinstance(exc, RedisClusterError):
            refused = False  # MOVED, ASK, CLUSTERDOWN: the cluster is moving
        elif isinstance(exc, ReadOnlyError):
            refused = not readonly_is_transient
        elif isinstance(exc, UnblockedError):
            refused = False  # its message may not start with UNBLOCKED (a pipeline's)
        else:
            refused = not str(exc).startswith(TRANSIENT_REPLIES)
        return refused, str(exc)
    if isinstance(exc, RedisError | OSError | TimeoutError):
        return False, str(exc)
    return None


@asynccontextmanager
async def translated(manager: Any, what: str) -> AsyncIterator[Any]:
    """Enter a coredis async context manager, translating its errors."""
    with translate_errors(what, classify):
        entered = await manager.__aenter__()
    try:
        yield entered
    except BaseException as exc:
        if not await manager.__aexit__(type(exc), exc, exc.__traceback__):
            raise
    else:
        with translate_errors(what, classify):
            await manager.__aexit__(None, None, None)
