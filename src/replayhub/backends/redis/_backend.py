"""The Redis backend: fenced Lua scripts for writes, one atomic script per
read, Pub/Sub for wake-ups, key expiry for retention.

Only non-blocking commands are used (``EVALSHA`` on the client's shared,
multiplexed connections) plus one Pub/Sub connection, so a hub holds two
connections at rest and at most four (``_connect.MAX_CONNECTIONS``, per node
on a cluster) whatever its number of producers and subscribers; the pools
(``_coredis``) keep their slots whatever dies or is cancelled.

On a Redis Cluster every key of a session shares one hash slot, so its
scripts run on one shard; wake-ups use sharded Pub/Sub on that shard; and the
namespace index, which lives in a slot of its own, is kept by the client
(touched on claim, lease renewal and finish) rather than inside the scripts.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import cache
from importlib.resources import files
from typing import Any, Self

import anyio

from ..._error_types import ErrorType
from ..._errors import (
    BackendUnavailableError,
    EventsLostError,
    HubClosedError,
    LeaseLostError,
    SessionBusyError,
    StorageRefusedError,
    unwrap_single_exception,
)
from ..._events import Cursor, Metadata, Outcome, State, StoredEvent
from .._protocol import (
    AppendRequest,
    Renewal,
    SessionRecord,
    Watch,
    append_each,
    check_batch_follows,
    check_read_limit,
)
from .._watch import AppendListener
from ._connect import Topology, open_client, parse_url
from ._keys import SessionKeys, decode_entries, encode_batch, session_keys
from ._notifier import Notifier
from ._sentinel import PrimaryGuard

__all__ = ["RedisBackend"]

logger = logging.getLogger(__name__)

_SCRIPTS = ("claim", "append", "append_many", "renew", "finish", "read", "cancel", "remove")
#: Scripts whose success reaches a caller: behind Sentinel, they wait for a
#: replica (``_sentinel``).
_WRITES = frozenset(_SCRIPTS) - {"read"}
#: Fragments a script needs besides _common.lua.
_FRAGMENTS = {"append": ("_append",), "append_many": ("_append",)}
#: Appends per script call at most: the call blocks Redis while it runs.
MAX_PER_CALL = 128
#: Sessions read per round trip while listing.
_LIST_CHUNK = 100


@cache
def _script_source(name: str, *, cluster: bool) -> str:
    lua = files(__package__).joinpath("lua")
    return "\n".join(
        (
            f"local CLUSTER = {'true' if cluster else 'false'}",
            lua.joinpath("_common.lua").read_text(),
            *(lua.joinpath(f"{part}.lua").read_text() for part in _FRAGMENTS.get(name, ())),
            lua.joinpath(f"{name}.lua").read_text(),
        )
    )


def _ms(seconds: float) -> int:
    return max(0, round(seconds * 1000))


class RedisBackend(anyio.AsyncContextManagerMixin):
    """Sessions in Redis, shared by every process that uses the same server
    and namespace.

    :param url: ``redis://[user:password@]host:port/db``, ``rediss://`` for
        TLS, or ``unix:///path/to/socket``, query options passed to coredis
        (e.g. ``?ssl_ca_certs=ca.crt``); for a Redis Cluster
        ``redis+cluster://host:port,host:port`` (``rediss+cluster://`` for
        TLS); for a primary found through Sentinel
        ``redis+sentinel://host:port,host:port/service[/db]``.
    :param namespace: prefix of every key and channel.
    :param stream_timeout: seconds to wait for a reply before the
        connection counts as broken.
    """

    def __init__(self, url: str, *, namespace: str, stream_timeout: float = 10.0) -> None:
        self._target = parse_url(url)
        self._cluster = self._target.topology is Topology.CLUSTER
        # Behind Sentinel, READONLY means the client is still on a demoted
        # primary: retried while the client moves, not a refusal.
        self._error_options = {"readonly_is_transient": self._target.topology is Topology.SENTINEL}
        self._namespace = namespace
        self._stream_timeout = stream_timeout
        self._client: Any = None
        self._scripts: dict[str, Any] = {}
        self._touch_index: Any = None
        self._notifier: Notifier | None = None
        self._primary: PrimaryGuard | None = None
        self._claimed_here: set[tuple[str, int]] = set()  # claimed, not yet released

    def __repr__(self) -> str:
        return f"RedisBackend({self._target.where}, namespace={self._namespace!r})"

    @asynccontextmanager
    async def __asynccontextmanager__(self) -> AsyncIterator[Self]:
        client_context = open_client(self._target, reply_timeout=self._stream_timeout)
        async with _translated(client_context, f"cannot connect to {self!r}") as client:
            with _translate_errors(f"cannot reach {self!r}"):
                await client.ping()
            self._client = client
            if self._target.topology is Topology.SENTINEL:
                self._primary = PrimaryGuard(client)
            self._scripts = {
                name: client.register_script(_script_source(name, cluster=self._cluster))
                for name in _SCRIPTS
            }
            if self._cluster:
                lua = files(__package__).joinpath("lua", "touch_index.lua").read_text()
                self._touch_index = client.register_script(lua)
            from ._coredis import open_pubsub, receive_messages

            notifier = Notifier(
                lambda: open_pubsub(client, sharded=self._cluster),
                receive=receive_messages,
                refresh=self._refresh_layout if self._cluster else None,
            )
            try:
                async with anyio.create_task_group() as task_group:
                    with (
                        _translate_errors(f"cannot subscribe on {self!r}"),
                        unwrap_single_exception(),
                    ):
                        await task_group.start(notifier.run)
                    self._notifier = notifier
                    try:
                        yield self
                    finally:
                        self._notifier = None
                        self._claimed_here.clear()
                        notifier.notify_all()  # readers still waiting see the hub is gone
                        task_group.cancel_scope.cancel()
            finally:
                self._client = self._primary = None

    # -- producer side ------------------------------------------------------

    async def claim(
        self, session_id: str, *, metadata: Metadata, lease_ttl: float, retention: float
    ) -> SessionRecord:
        keys = self._keys(session_id)
        reply = await self._run(
            "claim",
            keys,
            session_id,
            json.dumps(metadata, separators=(",", ":"), ensure_ascii=False),
            _ms(lease_ttl),
            _ms(retention),
        )
        if reply[0] == b"busy":
            raise SessionBusyError(f"session {session_id!r} has a live producer")
        record = _record(session_id, int(reply[1]), reply[2])
        if self._notifier is not None:
            # Until release(), every change to the session comes from this
            # process, which hands it to its own readers: no need to hear
            # each one back from Redis (a fifth of a busy hub's CPU).
            self._notifier.quiet(keys.changes)
            self._claimed_here.add((session_id, record.generation))
        await self._index(session_id, lease_ttl + retention)
        return record

    async def append(
        self,
        session_id: str,
        generation: int,
        events: Sequence[StoredEvent],
        *,
        metadata: Metadata | None,
    ) -> None:
        request = AppendRequest(session_id, generation, events, metadata)
        keys = self._keys(session_id)
        reply = await self._run("append", keys, *_append_args(request))
        error = self._append_result(request, keys, reply)
        if error is not None:
            raise error

    async def append_many(self, appends: Sequence[AppendRequest]) -> list[Exception | None]:
        """Up to :data:`MAX_PER_CALL` appends per script call (one session per
        call on a cluster, where sessions live in different slots)."""
        self._require_client()
        if self._cluster:
            return await append_each(self, appends)
        results: list[Exception | None] = []
        for start in range(0, len(appends), MAX_PER_CALL):
            chunk = appends[start : start + MAX_PER_CALL]
            all_keys = [self._keys(request.session_id) for request in chunk]
            keys: list[str] = []
            args: list[str | bytes | int] = []
            for request, session in zip(chunk, all_keys, strict=True):
                keys += (session.session, session.log)
                args += _append_args(request)
            keys.append(all_keys[0].index)
            try:
                replies = await self._call("append_many", keys, args)
            except BackendUnavailableError as exc:
                results += [exc] * len(chunk)
                continue
            results += map(self._append_result, chunk, all_keys, replies)
        return results

    def _append_result(
        self, request: AppendRequest, keys: SessionKeys, reply: list[Any]
    ) -> Exception | None:
        """What ``append.lua`` said, as the error to raise (``None``: stored);
        a stored batch goes to this hub's own readers at once (``_notifier``)."""
        session_id, generation, events = request.session_id, request.generation, request.events
        lost = _fenced_out(session_id, generation, reply)
        if lost is not None:
            return lost
        if reply[0] == b"refused":
            try:
                check_batch_follows(events, stored=int(reply[1]))  # raises why
            except Exception as exc:
                return exc
        if reply[0] == b"gap":
            return EventsLostError(
                f"session {session_id!r}: its stored log no longer holds events 1-{int(reply[1])} "
                "(evicted by Redis? replayhub needs maxmemory-policy noeviction); "
                "nothing more is written to it"
            )
        if self._notifier is not None:
            if events and request.metadata is None:
                self._notifier.push_local(keys.changes, generation, events)
            else:
                self._notifier.notify_local(keys.changes)
        return None

    async def renew(self, session_id: str, generation: int, *, lease_ttl: float) -> Renewal:
        reply = await self._run(
            "renew", self._keys(session_id), session_id, generation, _ms(lease_ttl)
        )
        self._check_fenced(session_id, generation, reply)
        await self._index(session_id, lease_ttl + int(reply[2]) / 1000)
        return Renewal(cancel_requested=reply[1] == b"1")

    async def finish(
        self,
        session_id: str,
        generation: int,
        *,
        state: State,
        error: str | None,
        error_type: ErrorType | None,
        retention: float,
    ) -> None:
        keys = self._keys(session_id)
        reply = await self._run(
            "finish",
            keys,
            session_id,
            generation,
            state.value,
            error or "",
            _ms(retention),
            "" if error_type is None else error_type.value,
        )
        self._check_fenced(session_id, generation, reply)
        self._notify_local(keys)
        await self._index(session_id, retention)

    def release(self, session_id: str, generation: int) -> None:
        if (session_id, generation) in self._claimed_here:
            self._claimed_here.discard((session_id, generation))
            if self._notifier is not None:
                changes = self._keys(session_id).changes
                self._notifier.unquiet(changes)
                self._notifier.notify_local(changes)

    def _notify_local(self, keys: SessionKeys) -> None:
        if self._notifier is not None:
            self._notifier.notify_local(keys.changes)

    def watch_claim(self, session_id: str) -> AbstractAsyncContextManager[Watch]:
        return self._require_notifier().watch(self._keys(session_id).claim)

    # -- reader side ----------------------------------------------------------

    async def head(self, session_id: str) -> SessionRecord | None:
        found = await self._read(session_id, after=None, limit=0)
        return None if found is None else found[0]

    async def read(
        self, session_id: str, *, after: Cursor | None, limit: int
    ) -> tuple[SessionRecord, list[StoredEvent]] | None:
        check_read_limit(limit)
        found = await self._read(session_id, after=after, limit=limit)
        if found is None:
            return None
        record, entries = found
        after_seq = after.seq if after is not None and after.generation == record.generation else 0
        events = decode_entries(entries, after_seq=after_seq, limit=limit)
        if (
            after_seq < record.last_seq
            and (after is None or after.generation <= record.generation)
            and (not events or events[0].seq != after_seq + 1)
        ):
            # The log lost its head (evicted, then recreated by a write that
            # got in before the check in _read existed, or by another client).
            first = events[0].seq if events else record.last_seq + 1
            raise EventsLostError(
                f"session {session_id!r}: events {after_seq + 1}-{first - 1} are missing "
                "from its stored log"
            )
        return record, events

    async def _read(
        self, session_id: str, *, after: Cursor | None, limit: int
    ) -> tuple[SessionRecord, list[tuple[bytes, list[bytes]]]] | None:
        """The record and the raw log entries read.lua returns (none for
        ``limit=0``)."""
        reply = await self._run(
            "read",
            self._keys(session_id),
            session_id,
            "" if after is None else after.generation,
            0 if after is None else after.seq,
            limit,
        )
        if reply[0] == b"none":
            return None
        if reply[5] and self._primary is not None:
            # Found by a hub that may still be on a demoted primary (_sentinel).
            await self._primary.check_primary()
        record = _record(session_id, int(reply[1]), reply[2])
        if reply[4]:
            raise EventsLostError(
                f"session {session_id!r}: its {record.last_seq} stored events are gone "
                "(evicted by Redis? replayhub needs maxmemory-policy noeviction)"
            )
        return record, reply[3]

    async def list_sessions(
        self, *, state: State | None, limit: int, offset: int
    ) -> list[SessionRecord]:
        index = session_keys(self._namespace, "").index
        found: list[SessionRecord] = []
        skipped = 0
        start = 0
        while len(found) < limit:
            with _translate_errors("listing sessions failed"):
                members = await self._require_client().zrange(
                    index, start, start + _LIST_CHUNK - 1, rev=True
                )
            if not members:
                break
            start += len(members)
            gone = []
            for member in members:
                session_id = member.decode()
                try:
                    record = await self.head(session_id)
                except EventsLostError as exc:
                    logger.warning("not listing session %r: %s", session_id, exc)
                    continue  # a session whose log is gone is not listed as whole
                if record is None:
                    gone.append(member)  # expired: forget it
                    continue
                if state is not None and record.state is not state:
                    continue
                if skipped < offset:
                    skipped += 1
                    continue
                found.append(record)
                if len(found) == limit:
                    break
            if gone:
                with _translate_errors("listing sessions failed"):
                    await self._require_client().zrem(index, gone)
                start -= len(gone)
        return found

    async def request_cancel(self, session_id: str) -> SessionRecord | None:
        reply = await self._run("cancel", self._keys(session_id), session_id)
        if reply[0] == b"none":
            return None
        return _record(session_id, int(reply[1]), reply[2])

    async def remove(self, session_id: str) -> bool:
        reply = await self._run("remove", self._keys(session_id), session_id)
        self._notify_local(self._keys(session_id))
        if self._cluster:
            with _translate_errors("removing a session from the index failed"):
                await self._require_client().zrem(self._keys(session_id).index, [session_id])
        return bool(int(reply[1]))

    def watch(
        self, session_id: str, *, on_append: AppendListener | None = None
    ) -> AbstractAsyncContextManager[Watch]:
        return self._require_notifier().watch(self._keys(session_id).changes, on_append=on_append)

    # -- internals ------------------------------------------------------------

    def _keys(self, session_id: str) -> SessionKeys:
        return session_keys(self._namespace, session_id)

    def _require_client(self) -> Any:
        if self._client is None:
            raise HubClosedError("the Redis backend is not open")
        return self._client

    def _require_notifier(self) -> Notifier:
        if self._notifier is None:
            raise HubClosedError("the Redis backend is not open")
        return self._notifier

    async def _run(self, script: str, keys: SessionKeys, *args: str | bytes | int) -> list[Any]:
        self._require_client()
        return await self._call(script, keys.slot_keys() if self._cluster else keys.all(), args)

    async def _call(
        self, script: str, keys: Sequence[str], args: Sequence[str | bytes | int]
    ) -> list[Any]:
        with _translate_errors(f"Redis script {script!r} failed", **self._error_options):
            if self._primary is not None:
                reply: list[Any] = await self._primary.run(
                    self._scripts[script], keys, args, confirm=script in _WRITES
                )
            else:
                reply = await self._scripts[script](keys=keys, args=args)
        return reply

    async def _index(self, session_id: str, keep: float) -> None:
        """On a cluster, list the session in the namespace index (in-script
        elsewhere). The write it follows has landed: a failure here only
        costs the listing, so it is logged, not raised."""
        if self._touch_index is None:
            return
        keys = self._keys(session_id)
        # A session found abandoned late lives on for its retention again.
        keep_ms = _ms(keep) * 2
        try:
            await self._touch_index(keys=[keys.index], args=[session_id, keep_ms])
        except Exception as exc:
            logger.warning("could not index session %r: %s", session_id, exc)

    async def _refresh_layout(self) -> None:
        await self._require_client().connection_pool.cluster_layout.initialize()

    @staticmethod
    def _check_fenced(session_id: str, generation: int, reply: list[Any]) -> None:
        lost = _fenced_out(session_id, generation, reply)
        if lost is not None:
            raise lost


def _fenced_out(session_id: str, generation: int, reply: list[Any]) -> LeaseLostError | None:
    """The error a fenced script's ``{'lost', why}`` reply means, if it is one."""
    if reply[0] != b"lost":
        return None
    return LeaseLostError(f"session {session_id!r} generation {generation}: {reply[1].decode()}")


def _append_args(request: AppendRequest) -> tuple[str | bytes | int, ...]:
    events = request.events
    return (
        request.session_id,
        request.generation,
        events[0].seq if events else 0,
        len(events),
        ""
        if request.metadata is None
        else json.dumps(request.metadata, separators=(",", ":"), ensure_ascii=False),
        encode_batch(events) if events else "",
    )


def _record(session_id: str, now_ms: int, flat: list[bytes]) -> SessionRecord:
    fields = {flat[i].decode(): flat[i + 1] for i in range(0, len(flat), 2)}
    state = State(fields["st"].decode())
    error = fields.get("e", b"").decode() or None
    previous = None
    if "pg" in fields:
        previous = (
            int(fields["pg"]),
            Outcome(
                State(fields["ps"].decode()),
                fields["pe"].decode() or None,
                json.loads(fields["pm"]),
                _error_type(fields.get("pt")),
            ),
        )
    lease_remaining = None
    if state is State.LIVE:
        lease_remaining = max(0.0, (int(fields["l"]) - now_ms) / 1000)
    return SessionRecord(
        session_id=session_id,
        generation=int(fields["g"]),
        state=state,
        last_seq=int(fields["n"]),
        metadata=json.loads(fields["m"]),
        error=error,
        created_at=int(fields["c"]) / 1000,
        updated_at=int(fields["u"]) / 1000,
        lease_remaining=lease_remaining,
        previous=previous,
        error_type=_error_type(fields.get("et")),
        previous_last_seq=int(fields.get("pn", 0)),
    )


def _error_type(stored: bytes | None) -> ErrorType | None:
    # A category this version does not know (written by a newer one) reads
    # as internal rather than failing the read.
    if not stored:
        return None
    try:
        return ErrorType(stored.decode())
    except ValueError:
        return ErrorType.INTERNAL


# Error replies that a moment mends: a server loading its data, busy with a
# script, a cluster mid-failover, too few replicas for min-replicas-to-write.
_TRANSIENT_REPLIES = ("LOADING", "BUSY", "TRYAGAIN", "CLUSTERDOWN", "MASTERDOWN", "NOREPLICAS")


class _translate_errors:
    """Turn coredis and socket errors into ours, the one boundary where
    client exceptions become ours: a server that refused
    (:class:`StorageRefusedError`: ``OOM``, ``NOPERM``, ``WRONGTYPE``, a
    script error, ``READONLY`` except behind Sentinel, where it means a
    failover the client follows) or one that could not be reached or is
    briefly unable (:class:`BackendUnavailableError`, which callers retry).
    """

    def __init__(self, what: str, *, readonly_is_transient: bool = False) -> None:
        self._what = what
        self._readonly_is_transient = readonly_is_transient

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        if exc is None or isinstance(exc, anyio.get_cancelled_exc_class()):
            return
        import coredis.exceptions

        if isinstance(exc, coredis.exceptions.ResponseError) and self._refused(exc):
            raise StorageRefusedError(f"{self._what}: Redis refused: {exc}") from exc
        if isinstance(exc, coredis.exceptions.RedisError | OSError | TimeoutError):
            raise BackendUnavailableError(f"{self._what}: {exc}") from exc

    def _refused(self, exc: BaseException) -> bool:
        from coredis.exceptions import ReadOnlyError, RedisClusterError

        if isinstance(exc, RedisClusterError):
            return False  # MOVED, ASK, CLUSTERDOWN: the cluster is moving
        if isinstance(exc, ReadOnlyError):
            return not self._readonly_is_transient
        return not str(exc).startswith(_TRANSIENT_REPLIES)


@asynccontextmanager
async def _translated(manager: Any, what: str) -> AsyncIterator[Any]:
    """Enter a coredis async context manager, translating its errors."""
    with _translate_errors(what):
        entered = await manager.__aenter__()
    try:
        yield entered
    except BaseException as exc:
        if not await manager.__aexit__(type(exc), exc, exc.__traceback__):
            raise
    else:
        with _translate_errors(what):
            await manager.__aexit__(None, None, None)
