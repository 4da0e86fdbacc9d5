"""The Redis backend: fenced Lua scripts for writes, one atomic script per
read (but a long page: the record by script, the events by plain reads,
checked), Pub/Sub for wake-ups, key expiry for retention.

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

import importlib
import json
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import cache
from importlib.resources import files
from typing import Any, Self, TypeVar

import anyio

from ..._error_types import ErrorType
from ..._errors import (
    BackendUnavailableError,
    EventsLostError,
    HubClosedError,
    InvalidInputError,
    LeaseLostError,
    ReplayHubError,
    SessionBusyError,
    unwrap_single_exception,
)
from ..._events import Cursor, Metadata, Outcome, PackedEvents, State, StoredEvent
from .._clock import running_trio
from .._pages import ReadsPages
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
from ._connect import RedisTarget, Topology, parse_url
from ._driver import DriverFactory, DriverName, RedisDriver
from ._keys import SessionKeys, decode_columns, encode_batch, session_keys
from ._notifier import Notifier
from ._packing import CopyBudget, LogCopy, Packer, PackJob

__all__ = ["RedisBackend"]

logger = logging.getLogger(__name__)

_Item = TypeVar("_Item")
_Result = TypeVar("_Result")

_SCRIPTS = (
    "claim", "append", "append_many", "renew", "renew_many", "finish", "read", "cancel", "remove",
    "pack",
)  # fmt: skip
#: Scripts whose success reaches a caller: behind Sentinel, they wait for a
#: replica (``_sentinel``). A rewrite (pack) reaches none: a failover that
#: loses it leaves the log as written, which reads the same.
_WRITES = frozenset(_SCRIPTS) - {"read", "pack"}
#: Fragments a script needs besides _common.lua.
_FRAGMENTS = {
    "append": ("_append",),
    "append_many": ("_append",),
    "renew": ("_renew",),
    "renew_many": ("_renew",),
}
#: Appends (or lease renewals) per script call at most: the call blocks
#: Redis while it runs.
MAX_PER_CALL = 128
#: Sessions read per round trip while listing.
_LIST_CHUNK = 100
#: Finished sessions whose generation a backend remembers between pages.
_FINISHED_REMEMBERED = 1024
#: Pages of this many events or more are read by the client, not the read
#: script: the script's Lua took in every entry, ~3.6 us each (a 3,072-event
#: page of one-event entries cost Redis ~11 ms), where the client's own read
#: costs a round trip more (~0.2 ms here). Fewer: a live reader's catch-up.
_HAND_OFF_AT = 64
#: How long a closing backend waits for the log rewrites still queued.
_PACKS_AT_CLOSE = 1.0
#: The largest sequence part of a stream entry id.
_LAST_ENTRY_SEQ = 2**64 - 1


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


class RedisBackend(ReadsPages, anyio.AsyncContextManagerMixin):
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

    def __init__(
        self,
        url: str,
        *,
        namespace: str,
        driver: str = "auto",
        stream_timeout: float = 10.0,
    ) -> None:
        target = parse_url(url)
        if driver == "auto":
            driver = target.driver
        elif target.driver not in ("auto", driver):
            raise InvalidInputError(
                f"driver={driver!r} and the URL's ?driver={target.driver} disagree"
            )
        if driver != "auto" and driver not in {name.value for name in DriverName}:
            names = ", ".join(repr(name.value) for name in DriverName)
            raise InvalidInputError(f"driver must be 'auto', {names}, not {driver!r}")
        chosen = driver
        self._setup(
            where=target.where,
            cluster=target.topology is Topology.CLUSTER,
            namespace=namespace,
            driver=driver,
            # "auto" is decided on entering, on the loop that runs the backend.
            factory=lambda: _factory_for_url(
                _choose_driver(chosen), target, reply_timeout=stream_timeout
            ),
        )

    def _setup(
        self,
        *,
        where: str,
        cluster: bool,
        namespace: str,
        driver: str,
        factory: Callable[[], DriverFactory],
    ) -> None:
        self._where = where
        self._cluster = cluster
        self._namespace = namespace
        self._driver_choice = driver
        self._driver_factory = factory
        self._driver: RedisDriver | None = None
        self._notifier: Notifier | None = None
        self._claimed_here: set[tuple[str, int]] = set()  # claimed, not yet released
        # What each producer of this backend stored, to rewrite its log from
        # once it has ended (_packing).
        self._copies: dict[tuple[str, int], LogCopy] = {}
        self._copies_budget = CopyBudget()
        self._packer: Packer | None = None
        # Session id -> generation and event count, of sessions last read
        # finished (oldest first), for _read_log_page.
        self._finished: dict[str, tuple[int, int]] = {}

    @classmethod
    def from_client(cls, client: Any, *, namespace: str) -> RedisBackend:
        """A backend on a client the caller made and keeps (the hub never
        closes it): a ``redis.asyncio.Redis`` or ``RedisCluster`` (asyncio
        only), one made by ``redis.asyncio.sentinel.Sentinel.master_for``, or
        a coredis ``Redis``/``RedisCluster`` (or ``Sentinel.primary_for``).
        A ``redis.asyncio.Redis`` made with ``decode_responses=True`` works
        too.

        :raises ~replayhub.InvalidInputError: for anything else.
        """
        library = type(client).__module__.partition(".")[0]
        cluster = type(client).__name__ == "RedisCluster"
        if library == "coredis":
            name = DriverName.COREDIS
        elif library == "redis":
            name = DriverName.REDIS_PY
        else:
            raise InvalidInputError(
                "from_client takes a redis.asyncio or coredis client, "
                f"not {type(client).__qualname__}"
            )

        module = _driver_module(name)

        def open_driver(
            *, scripts: Mapping[str, str], writes: frozenset[str]
        ) -> AbstractAsyncContextManager[RedisDriver]:
            manager: AbstractAsyncContextManager[RedisDriver] = module.driver_for_client(
                client, scripts=scripts, writes=writes
            )
            return manager

        backend = cls.__new__(cls)
        backend._setup(
            where=f"{type(client).__qualname__} client",
            cluster=cluster,
            namespace=namespace,
            driver=name.value,
            factory=lambda: open_driver,
        )
        return backend

    def __repr__(self) -> str:
        return (
            f"RedisBackend({self._where}, namespace={self._namespace!r}, "
            f"driver={self._driver_choice!r})"
        )

    @asynccontextmanager
    async def __asynccontextmanager__(self) -> AsyncIterator[Self]:
        scripts = {name: _script_source(name, cluster=self._cluster) for name in _SCRIPTS}
        if self._cluster:
            scripts["touch_index"] = (
                files(__package__).joinpath("lua", "touch_index.lua").read_text()
            )
        async with self._driver_factory()(scripts=scripts, writes=_WRITES) as driver:
            with driver.errors(f"cannot reach {self!r}"):
                await driver.ping()
            self._driver = driver
            home = f"{self._namespace}:pubsub"  # see RedisDriver.open_pubsub
            notifier = Notifier(
                lambda: driver.open_pubsub(home),
                receive=driver.receive,
                refresh=driver.refresh_layout if self._cluster else None,
            )
            try:
                async with anyio.create_task_group() as task_group:
                    with (
                        driver.errors(f"cannot subscribe on {self!r}"),
                        unwrap_single_exception(),
                    ):
                        await task_group.start(notifier.run)
                    # The Pub/Sub client took the connection the first ping
                    # opened: open the command connection now, not on the
                    # first request (a fresh hub's first read took 1.1-1.5 ms
                    # longer, most of it connecting). It would be opened then
                    # anyway, so it is no connection more.
                    with driver.errors(f"cannot reach {self!r}"):
                        await driver.ping()
                    # Behind Sentinel: a new primary's announcement moves the
                    # client and the Pub/Sub client to it (_sentinel).
                    task_group.start_soon(driver.watch_failovers, notifier.reopen)
                    self._copies_budget = CopyBudget()
                    packer = Packer(self._pack)
                    task_group.start_soon(packer.run)
                    self._notifier, self._packer = notifier, packer
                    try:
                        yield self
                    finally:
                        self._packer = None
                        await packer.close(wait=_PACKS_AT_CLOSE)
                        self._notifier = None
                        self._claimed_here.clear()
                        for copy in self._copies.values():
                            copy.release()
                        self._copies.clear()
                        notifier.notify_all()  # readers still waiting see the hub is gone
                        task_group.cancel_scope.cancel()
            finally:
                self._driver = None

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
            secrets.token_hex(8),  # tells this claim, asked again, from another's
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
        self._copies[session_id, record.generation] = LogCopy(self._copies_budget)
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
        batch = _batch_of(request)
        reply = await self._run("append", keys, *_append_args(request, batch))
        error = self._append_result(request, keys, reply, batch)
        if error is not None:
            raise error

    async def append_many(self, appends: Sequence[AppendRequest]) -> list[Exception | None]:
        """Up to :data:`MAX_PER_CALL` appends per script call, the calls at
        once where the driver multiplexes (one session per call on a
        cluster, where sessions live in different slots)."""
        driver = self._require_driver()
        if self._cluster:
            return await append_each(self, appends)
        return await _in_calls(appends, self._append_chunk, at_once=driver.multiplexes)

    async def _append_chunk(self, chunk: Sequence[AppendRequest]) -> list[Exception | None]:
        all_keys = [session_keys(self._namespace, request.session_id) for request in chunk]
        keys = _keys_of_many(all_keys)
        batches = [encode_batch(request.events) if request.events else b"" for request in chunk]
        try:
            # A list, or one word when every append was stored.
            replies: list[Any] | bytes = await self._call(
                "append_many", keys, [b"".join(map(_packed_append, chunk, batches))]
            )
        except BackendUnavailableError as exc:
            return [exc] * len(chunk)
        if replies == b"ok":  # every one stored
            replies = [_STORED] * len(chunk)
        return list(map(self._append_result, chunk, all_keys, replies, batches))

    def _append_result(
        self, request: AppendRequest, keys: SessionKeys, reply: list[Any], batch: bytes
    ) -> Exception | None:
        """What ``append.lua`` said of ``request`` (sent as ``batch``), as the
        error to raise (``None``: stored); a stored batch goes to this hub's
        own readers at once (``_notifier``), and into its producer's copy."""
        session_id, generation, events = request.session_id, request.generation, request.events
        if reply is not _STORED:  # (as every write is, in the common case)
            error = self._append_refused(request, reply)
            if error is not None:
                return error
        copy = self._copies.get((session_id, generation))
        if copy is not None:
            copy.add(events, batch)
        if self._notifier is not None:
            if events and request.metadata is None:
                self._notifier.push_local(keys.changes, generation, events)
            else:
                self._notifier.notify_local(keys.changes)
        return None

    @staticmethod
    def _append_refused(request: AppendRequest, reply: list[Any]) -> Exception | None:
        """The error ``append.lua``'s ``reply`` means, if it refused ``request``."""
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
        return None

    async def renew(self, session_id: str, generation: int, *, lease_ttl: float) -> Renewal:
        reply = await self._run(
            "renew", self._keys(session_id), session_id, generation, _ms(lease_ttl)
        )
        renewal = _renewal((session_id, generation), reply)
        if isinstance(renewal, Exception):
            raise renewal
        await self._index(session_id, lease_ttl + int(reply[2]) / 1000)
        return renewal

    @property
    def renew_many(self) -> Callable[..., Awaitable[list[Renewal | Exception]]] | None:
        """Many leases renewed in one script call (``BatchRenewer``), up to
        :data:`MAX_PER_CALL` a call; none on a cluster, where sessions live
        in different slots and one node's trouble must not hold back the
        renewals of sessions on the others."""
        return None if self._cluster else self._renew_many

    async def _renew_many(
        self, leases: Sequence[tuple[str, int]], *, lease_ttl: float
    ) -> list[Renewal | Exception]:
        driver = self._require_driver()

        async def renew_chunk(chunk: Sequence[tuple[str, int]]) -> list[Renewal | Exception]:
            keys = _keys_of_many([self._keys(session_id) for session_id, _ in chunk])
            args: list[str | int] = [_ms(lease_ttl)]
            for lease in chunk:
                args += lease
            try:
                replies = await self._call("renew_many", keys, args)
            except BackendUnavailableError as exc:
                return [exc] * len(chunk)
            return list(map(_renewal, chunk, replies))

        return await _in_calls(leases, renew_chunk, at_once=driver.multiplexes)

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
        copy = self._copies.pop((session_id, generation), None)
        if copy is not None:
            if copy.worth_packing() and self._packer is not None:
                self._packer.submit(PackJob(session_id, generation, copy))
            else:
                copy.release()
        await self._index(session_id, retention)

    async def _pack(self, job: PackJob) -> None:
        """Rewrite an ended session's log in large entries from its
        producer's copy (``_packing``). A failure leaves the log as written,
        which reads the same: logged, not raised."""
        session_id, generation, copy = job.session_id, job.generation, job.copy
        try:
            entries = await copy.packed_entries()
            args: list[str | bytes | int] = [
                session_id,
                generation,
                copy.next_seq - 1,
                copy.entries,
                f"{generation}-{copy.first_entry}",
            ]
            for last_seq, value in entries:
                args += (f"{generation}-{last_seq}", value)
            reply = await self._run("pack", self._keys(session_id), *args)
        except ReplayHubError as exc:
            logger.warning("could not rewrite the log of session %r: %s", session_id, exc)
            return
        finally:
            copy.release()
        if reply[0] != b"ok":
            logger.debug("left the log of session %r as written: %s", session_id, reply[1].decode())

    def release(self, session_id: str, generation: int) -> None:
        copy = self._copies.pop((session_id, generation), None)
        if copy is not None:
            copy.release()
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

    def call_on_claim_change(
        self, session_id: str, on_change: Callable[[], None]
    ) -> AbstractAsyncContextManager[Watch]:
        return self._require_notifier().watch(self._keys(session_id).claim, on_notify=on_change)

    def call_on_change(
        self,
        session_id: str,
        on_change: Callable[[], None],
        *,
        on_append: AppendListener | None = None,
    ) -> AbstractAsyncContextManager[Watch]:
        return self._require_notifier().watch(
            self._keys(session_id).changes, on_append=on_append, on_notify=on_change
        )

    # -- reader side ----------------------------------------------------------

    async def head(self, session_id: str) -> SessionRecord | None:
        found = await self._read(session_id, after=None, limit=0)
        return None if found is None else found[0]

    async def _read_page(
        self, session_id: str, *, after: Cursor | None, limit: int
    ) -> tuple[SessionRecord, PackedEvents, int, int] | None:
        check_read_limit(limit)
        start = self._finished_start(session_id, after)
        if start is not None and limit > 0:
            page = await self._read_log_page(session_id, start, limit)
            if page is not None:
                return page
        found = await self._read(session_id, after=after, limit=limit, hand_off=True)
        if found is None:
            return None
        record, entries, handed_off = found
        if handed_off:
            # The script read the record alone: the backend reads the page.
            start = _start_in(record.generation, after)
            page = await self._read_log_page(session_id, start, limit, record)
            if page is not None:
                return page
            found = await self._read(session_id, after=after, limit=limit)  # changed since
            if found is None:
                return None
            record, entries, _ = found
        after_seq = after.seq if after is not None and after.generation == record.generation else 0
        events = decode_columns(entries, after_seq=after_seq, limit=limit)
        if (
            after_seq < record.last_seq
            and (after is None or after.generation <= record.generation)
            and (not events or events.first_seq != after_seq + 1)
        ):
            # The log lost its head (evicted, then recreated by a write that
            # got in before the check in _read existed, or by another client).
            first = events.first_seq if events else record.last_seq + 1
            raise EventsLostError(
                f"session {session_id!r}: events {after_seq + 1}-{first - 1} are missing "
                "from its stored log"
            )
        return record, events, 0, len(events)

    async def _read_log_page(
        self, session_id: str, after: Cursor, limit: int, record: SessionRecord | None = None
    ) -> tuple[SessionRecord, PackedEvents, int, int] | None:
        """The page after ``after`` read without the read script: as of
        ``record`` (what the script just read, in the cursor's generation),
        or, with none, of a generation last read finished (its hash read
        along); ``None`` where only the script can answer (the session
        changed since, or its log lacks the page).

        Lua takes in every entry a script reads: for a page of 3,072 events
        in four entries that cost Redis ~250 microseconds against 10-40 for
        the ``XRANGE`` alone, on one test machine; in 3,072 entries of one
        event each (a chat-rate log), ~11 against ~2 ms. These commands are
        not one snapshot with the record, yet what they return is one: a
        generation's stored events never change (a batch is appended whole;
        an ended generation's log may be rewritten in larger entries, of the
        same events, by one script: ``_packing``), its log only goes as a
        whole (claimed again, removed, expired, evicted), and a later
        generation's entries lie outside its id range. So entries that hold
        exactly the record's events of the page (of a live session, more may
        have been stored since: not taken) are what an atomic read would
        have returned; anything less goes to the script."""
        generation, first, last = after.generation, after.seq + 1, after.seq + limit
        keys = self._keys(session_id)
        driver = self._require_driver()
        with driver.errors(f"reading session {session_id!r} failed"):
            fields, (entries, straddling) = await driver.read_log(
                keys.session if record is None else None,
                keys.log,
                # The page's entries (an id is <generation>-<the seq of its
                # last event>), and the next, which holds the page's last
                # event when a batch runs past it.
                [
                    (f"{generation}-{first}", f"{generation}-{last}", None),
                    (f"{generation}-{last + 1}", f"{generation}-{_LAST_ENTRY_SEQ}", 1),
                ],
            )
        if record is None:
            if not fields or fields[b"st"] == b"live" or int(fields[b"g"]) != generation:
                self._finished.pop(session_id, None)
                return None
            record = _record_of(
                session_id, 0, {name.decode(): value for name, value in fields.items()}
            )
        wanted = min(limit, record.last_seq - after.seq)
        try:
            events = decode_columns(entries + straddling, after_seq=after.seq, limit=wanted)
        except EventsLostError:
            # The page's entries and the next are two commands: a log
            # rewritten in between (_packing) can answer them from its two
            # forms. The script reads them at once.
            return None
        if len(events) != wanted or not events or events.first_seq != first:
            return None
        return record, events, 0, len(events)

    def _finished_start(self, session_id: str, after: Cursor | None) -> Cursor | None:
        """Where a read after ``after`` starts in the generation the session
        was last read finished in, if it has events from there (a cursor of
        an earlier generation, or none, reads it from its start, as the read
        script would); else ``None``."""
        finished = self._finished.get(session_id)
        if finished is None:
            return None
        generation, last_seq = finished
        start = _start_in(generation, after)
        return start if start.generation == generation and start.seq < last_seq else None

    def _note_finished(self, record: SessionRecord) -> None:
        """Remember whether ``record``'s generation is finished, so later
        pages of it skip the read script (:meth:`_read_log_page`)."""
        finished = self._finished
        if record.state is State.LIVE:
            finished.pop(record.session_id, None)
            return
        if record.session_id not in finished and len(finished) >= _FINISHED_REMEMBERED:
            del finished[next(iter(finished))]  # the longest remembered
        finished[record.session_id] = (record.generation, record.last_seq)

    async def _read(
        self, session_id: str, *, after: Cursor | None, limit: int, hand_off: bool = False
    ) -> tuple[SessionRecord, list[tuple[bytes, list[bytes]]], bool] | None:
        """The record and the raw log entries read.lua returns (none for
        ``limit=0``), and whether it handed them off instead: with
        ``hand_off``, a page of :data:`_HAND_OFF_AT` events or more is left
        to :meth:`_read_log_page` (Lua would take in each of its entries; a
        chat-rate reply's log is an entry per token)."""
        reply = await self._run(
            "read",
            self._keys(session_id),
            session_id,
            "" if after is None else after.generation,
            0 if after is None else after.seq,
            limit,
            _HAND_OFF_AT if hand_off else 0,
            confirm_if=_stored_an_abandonment,
        )
        if reply[0] == b"none":
            self._finished.pop(session_id, None)
            return None
        record = _record(session_id, int(reply[1]), reply[2])
        self._note_finished(record)
        if reply[4]:
            raise EventsLostError(
                f"session {session_id!r}: its {record.last_seq} stored events are gone "
                "(evicted by Redis? replayhub needs maxmemory-policy noeviction)"
            )
        return record, reply[3], bool(reply[6])

    async def list_sessions(
        self, *, state: State | None, limit: int, offset: int
    ) -> list[SessionRecord]:
        index = session_keys(self._namespace, "").index
        found: list[SessionRecord] = []
        skipped = 0
        start = 0
        while len(found) < limit:
            driver = self._require_driver()
            with driver.errors("listing sessions failed"):
                members = await driver.newest_members(index, start, start + _LIST_CHUNK - 1)
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
                with driver.errors("listing sessions failed"):
                    await driver.remove_members(index, gone)
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
            driver = self._require_driver()
            with driver.errors("removing a session from the index failed"):
                await driver.remove_members(self._keys(session_id).index, [session_id])
        return bool(int(reply[1]))

    def watch(self, session_id: str) -> AbstractAsyncContextManager[Watch]:
        return self._require_notifier().watch(self._keys(session_id).changes)

    def watch_appends(
        self, session_id: str, on_append: AppendListener
    ) -> AbstractAsyncContextManager[Watch]:
        return self._require_notifier().watch(self._keys(session_id).changes, on_append=on_append)

    # -- internals ------------------------------------------------------------

    def _keys(self, session_id: str) -> SessionKeys:
        return session_keys(self._namespace, session_id)

    def _require_driver(self) -> RedisDriver:
        if self._driver is None:
            raise HubClosedError("the Redis backend is not open")
        return self._driver

    def _require_notifier(self) -> Notifier:
        if self._notifier is None:
            raise HubClosedError("the Redis backend is not open")
        return self._notifier

    async def _run(
        self,
        script: str,
        keys: SessionKeys,
        *args: str | bytes | int,
        confirm_if: Callable[[Any], bool] | None = None,
    ) -> list[Any]:
        reply: list[Any] = await self._call(
            script, keys.slot_keys() if self._cluster else keys.all(), args, confirm_if=confirm_if
        )
        return reply

    async def _call(
        self,
        script: str,
        keys: Sequence[str],
        args: Sequence[str | bytes | int],
        *,
        confirm_if: Callable[[Any], bool] | None = None,
    ) -> Any:
        """The script's reply: an array, but for append_many's one word."""
        driver = self._require_driver()
        with driver.errors(f"Redis script {script!r} failed"):
            return await driver.run_script(script, keys, args, confirm_if=confirm_if)

    async def _index(self, session_id: str, keep: float) -> None:
        """On a cluster, list the session in the namespace index (in-script
        elsewhere). The write it follows has landed: a failure here only
        costs the listing, so it is logged, not raised."""
        if not self._cluster:
            return
        keys = self._keys(session_id)
        # A session found abandoned late lives on for its retention again.
        keep_ms = _ms(keep) * 2
        try:
            await self._require_driver().run_script(
                "touch_index", [keys.index], [session_id, keep_ms]
            )
        except Exception as exc:
            logger.warning("could not index session %r: %s", session_id, exc)

    @staticmethod
    def _check_fenced(session_id: str, generation: int, reply: list[Any]) -> None:
        lost = _fenced_out(session_id, generation, reply)
        if lost is not None:
            raise lost


async def _in_calls(
    items: Sequence[_Item],
    call: Callable[[Sequence[_Item]], Awaitable[list[_Result]]],
    *,
    at_once: bool,
) -> list[_Result]:
    """``call``'s results for each run of :data:`MAX_PER_CALL` of ``items``,
    in order; the calls made at once if ``at_once`` (a driver that
    multiplexes), else one after another. On a Trio process overloaded with
    1,000 producers (coredis), calls made at once renewed 900 leases in
    0.15-0.5 s against about 1 s, and its p99 was 0.9 s against 2.5."""
    if len(items) <= MAX_PER_CALL:
        return await call(items)
    chunks = [items[start : start + MAX_PER_CALL] for start in range(0, len(items), MAX_PER_CALL)]
    if not at_once:
        return [result for chunk in chunks for result in await call(chunk)]
    results: list[list[_Result]] = [[] for _ in chunks]

    async def run(index: int) -> None:
        results[index] = await call(chunks[index])

    with unwrap_single_exception():
        async with anyio.create_task_group() as task_group:
            for index in range(len(chunks)):
                task_group.start_soon(run, index)
    return [result for chunk_results in results for result in chunk_results]


def _keys_of_many(sessions: Sequence[SessionKeys]) -> list[str]:
    """The KEYS of a script acting on several sessions (``append_many``,
    ``renew_many``): each session's hash and log in turn, then the index."""
    keys: list[str] = []
    for session in sessions:
        keys += (session.session, session.log)
    keys.append(sessions[0].index)
    return keys


#: ``append.lua``'s reply for a batch stored.
_STORED = [b"ok"]


def _renewal(lease: tuple[str, int], reply: list[Any]) -> Renewal | Exception:
    """What ``renew.lua`` said of ``lease``."""
    lost = _fenced_out(*lease, reply)
    return Renewal(cancel_requested=reply[1] == b"1") if lost is None else lost


def _fenced_out(session_id: str, generation: int, reply: list[Any]) -> LeaseLostError | None:
    """The error a fenced script's ``{'lost', why}`` reply means, if it is one."""
    if reply[0] != b"lost":
        return None
    return LeaseLostError(f"session {session_id!r} generation {generation}: {reply[1].decode()}")


def _batch_of(request: AppendRequest) -> bytes:
    """The request's events as one stream value (``encode_batch``)."""
    return encode_batch(request.events) if request.events else b""


def _append_args(request: AppendRequest, batch: bytes) -> tuple[str, int, int, int, str, bytes]:
    """``append.lua``'s arguments after the session id's: session id,
    generation, first seq, event count, metadata JSON or '', the batch."""
    events = request.events
    metadata = request.metadata
    return (
        request.session_id,
        request.generation,
        events[0].seq if events else 0,
        len(events),
        "" if metadata is None else json.dumps(metadata, separators=(",", ":"), ensure_ascii=False),
        batch,
    )


def _packed_append(request: AppendRequest, batch: bytes) -> bytes:
    """The same arguments as one session's part of ``append_many.lua``'s
    single argument: a line of lengths and numbers, then the bytes."""
    if request.metadata is None and request.events:  # a write of events alone: in line
        session_bytes, events = request.session_id.encode(), request.events
        return b"%d %d %d %d 0 %d\n%b%b" % (
            len(session_bytes),
            request.generation,
            events[0].seq,
            len(events),
            len(batch),
            session_bytes,
            batch,
        )
    session_id, generation, first_seq, count, metadata, batch = _append_args(request, batch)
    session_bytes, metadata_bytes = session_id.encode(), metadata.encode()
    return b"%d %d %d %d %d %d\n%b%b%b" % (
        len(session_bytes),
        generation,
        first_seq,
        count,
        len(metadata_bytes),
        len(batch),
        session_bytes,
        metadata_bytes,
        batch,
    )


def _stored_an_abandonment(reply: list[Any]) -> bool:
    """Whether read.lua found the lease expired and stored the abandonment:
    behind Sentinel, believed only from the node the Sentinels name the
    primary (a hub still on a demoted one would read a lease its producer no
    longer renews there)."""
    return reply[0] != b"none" and bool(reply[5])


def _start_in(generation: int, after: Cursor | None) -> Cursor:
    """Where a read after ``after`` starts when the session is in
    ``generation``: no cursor, or one of an earlier generation, reads it from
    its start (as read.lua does); a later generation's cursor is returned as
    it is (nothing of ``generation`` follows it)."""
    if after is None or after.generation < generation:
        return Cursor(generation, 0)
    return after


def _record(session_id: str, now_ms: int, flat: list[bytes]) -> SessionRecord:
    """The record of a session hash read as a flat list of fields and values,
    at ``now_ms`` (server time)."""
    return _record_of(
        session_id, now_ms, {flat[i].decode(): flat[i + 1] for i in range(0, len(flat), 2)}
    )


def _record_of(session_id: str, now_ms: int, fields: Mapping[str, bytes]) -> SessionRecord:
    """The record of a session hash's fields at ``now_ms`` (server time; only
    a live session's lease depends on it)."""
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


def _choose_driver(driver: str) -> DriverName:
    """The driver ``driver`` names, on the loop running now; ``"auto"``:
    redis-py on asyncio when it is installed, coredis otherwise, and always
    on Trio, where redis-py cannot run."""
    trio = running_trio()
    if driver == "auto":
        if trio:
            return DriverName.COREDIS
        try:
            import redis.asyncio  # noqa: F401
        except ImportError:
            return DriverName.COREDIS
        return DriverName.REDIS_PY
    name = DriverName(driver)
    if name is DriverName.REDIS_PY and trio:
        raise InvalidInputError("the redis-py driver runs on asyncio only: use driver='coredis'")
    return name


def _driver_module(name: DriverName) -> Any:
    """The module of driver ``name``, imported now.

    :raises ~replayhub.InvalidInputError: if its client library is missing.
    """
    module, extra = {
        DriverName.COREDIS: ("._coredis", "coredis"),
        DriverName.REDIS_PY: ("._redispy", "redis"),
    }[name]
    try:
        return importlib.import_module(module, __package__)
    except ImportError as exc:
        raise InvalidInputError(
            f"the {name.value} driver needs its client library ({exc.name}): "
            f"pip install 'replayhub[{extra}]'"
        ) from None


def _factory_for_url(
    name: DriverName, target: RedisTarget, *, reply_timeout: float
) -> DriverFactory:
    module = _driver_module(name)

    def open_for_target(
        *, scripts: Mapping[str, str], writes: frozenset[str]
    ) -> AbstractAsyncContextManager[RedisDriver]:
        manager: AbstractAsyncContextManager[RedisDriver] = module.open_driver(
            target, reply_timeout=reply_timeout, scripts=scripts, writes=writes
        )
        return manager

    return open_for_target
