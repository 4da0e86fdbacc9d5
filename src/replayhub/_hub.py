"""The hub: the lifecycle of a backend and the operations on sessions."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import Any, TypedDict, Unpack

import anyio

from ._error_types import ErrorClassifier
from ._errors import InvalidInputError, unwrap_single_exception
from ._events import SessionInfo, State, parse_event_id
from ._producer import Producer
from ._runtime import HubRuntime
from ._settings import Settings, check_metadata, check_session_id
from ._subscription import Subscription
from .backends import Backend, backend_from_url


class HubOptions(TypedDict, total=False):
    """Keyword options of :class:`Hub` and :meth:`Hub.from_url`."""

    namespace: str
    lease_ttl: float
    retention: float
    max_event_bytes: int
    max_events: int
    max_metadata_bytes: int
    buffer_size: int
    finalize_timeout: float
    classify_error: ErrorClassifier | None


class Hub(anyio.AsyncContextManagerMixin):
    """Resumable, cancellable sessions over one storage backend.

    Construct it anywhere (no I/O happens), then use it inside
    ``async with hub:``, which opens the backend's connections and tasks and
    closes them on exit. Leaving the block cancels the hub's producers that
    are still running (they end ``cancelled``) and waits for their terminal
    writes, at most ``finalize_timeout``.

    :param backend: where sessions live; a new in-process backend if omitted.
    :param options: keyword-only options, each described in
        :class:`~replayhub.Settings`: ``namespace``, ``lease_ttl``,
        ``retention``, ``max_event_bytes``, ``max_events``,
        ``max_metadata_bytes``, ``buffer_size``, ``finalize_timeout``,
        ``classify_error``.
    :raises ~replayhub.InvalidInputError: if an option is out of range.
    """

    def __init__(self, backend: Backend | None = None, **options: Unpack[HubOptions]) -> None:
        self._settings = Settings(**options)
        self._backend: Backend = (
            backend
            if backend is not None
            else backend_from_url("memory://", namespace=self._settings.namespace)
        )
        self._entered = False
        self._runtime = HubRuntime(self._backend, self._settings)

    @classmethod
    def from_url(cls, url: str, *, driver: str = "auto", **options: Unpack[HubOptions]) -> Hub:
        """A hub on the backend that ``url`` names.

        ``memory://`` is the in-process backend; Redis is ``redis://``,
        ``rediss://``, ``unix://``, ``redis+cluster://`` or
        ``redis+sentinel://`` (the Redis guide has their options).

        :param driver: the Redis client library: ``"redis-py"`` (asyncio),
            ``"coredis"`` (asyncio and Trio), or ``"auto"``: redis-py on
            asyncio when it is installed, coredis otherwise and always on
            Trio. Also ``?driver=`` in the URL.
        :raises ~replayhub.InvalidInputError: for an unknown scheme, a
            malformed URL or an unknown driver.
        """
        namespace = options.get("namespace", Settings().namespace)
        return cls(backend_from_url(url, namespace=namespace, driver=driver), **options)

    @classmethod
    def from_client(cls, client: Any, **options: Unpack[HubOptions]) -> Hub:
        """A hub on a Redis client the application already holds.

        ``client`` is a ``redis.asyncio.Redis`` or ``RedisCluster`` (asyncio),
        one made by ``redis.asyncio.sentinel.Sentinel.master_for``, or a
        coredis ``Redis``, ``RedisCluster`` or Sentinel-made client. Its pool,
        TLS and ACL settings serve the hub; the hub never closes it. A
        ``redis.asyncio.Redis`` made with ``decode_responses=True`` works too
        (the hub then opens a binary client of its own on the same settings).

        :raises ~replayhub.InvalidInputError: for any other object.
        """
        from .backends.redis import RedisBackend

        namespace = options.get("namespace", Settings().namespace)
        return cls(RedisBackend.from_client(client, namespace=namespace), **options)

    @property
    def settings(self) -> Settings:
        """The hub's options, validated."""
        return self._settings

    @asynccontextmanager
    async def __asynccontextmanager__(self) -> AsyncIterator[Hub]:
        if self._entered:
            raise RuntimeError("a Hub can be entered only once")
        self._entered = True
        # Backends hold task groups; what leaves them (the exception of the
        # hub's own block included) is raised as itself, not as a group.
        runtime = self._runtime
        with unwrap_single_exception():
            async with self._backend, anyio.create_task_group() as task_group:
                await task_group.start(runtime.feeds.run)
                await task_group.start(runtime.leases.run)
                task_group.start_soon(runtime.writer.run)
                runtime.open = True
                try:
                    yield self
                finally:
                    runtime.open = False
                    # Feeds still follow the sessions, and keep up with those
                    # of the producers stopped here, so their readers see how
                    # they ended rather than the hub closing.
                    grace = self._settings.finalize_timeout
                    stopped = await runtime.producers.stop_all(grace=grace)
                    await runtime.feeds.settle(stopped, grace=grace)
                    task_group.cancel_scope.cancel()

    # -- sessions -------------------------------------------------------------

    def produce(
        self,
        session_id: str,
        *,
        metadata: Mapping[str, Any] | None = None,
        takeover: bool = False,
        takeover_timeout: float | None = None,
    ) -> Producer:
        """A producer for ``session_id``, to use as ``async with``.

        See :class:`Producer` for what the block guarantees.

        :param metadata: a JSON object stored with the session; update it with
            :meth:`Producer.set_metadata`.
        :param takeover: if the session has a live producer (in any process),
            ask it to stop, wait for its terminal state, then claim the
            session: the old reply ends ``cancelled`` (or ``abandoned``, if
            its producer ignores the request until its lease runs out) and its
            readers learn so. For a user who sends a new message while the
            previous reply is still streaming.
        :param takeover_timeout: how long a takeover waits for the live
            producer to end; by default ``lease_ttl + finalize_timeout``, time
            enough for a producer that ignores the request to be found
            abandoned.
        :raises ~replayhub.InvalidInputError: for a bad session id, metadata
            or ``takeover_timeout`` (at once, before anything is written).
        :raises ~replayhub.SessionBusyError: on entering, if the session has a
            live producer (with ``takeover``: one that did not end in time).

        Cancelled while it waits for a takeover, it claims nothing; the stop
        it asked for still happens.
        """
        check_session_id(session_id)
        checked = check_metadata(
            {} if metadata is None else metadata, max_bytes=self._settings.max_metadata_bytes
        )
        if takeover_timeout is not None and (
            not takeover
            or not isinstance(takeover_timeout, int | float)
            or isinstance(takeover_timeout, bool)
            or not takeover_timeout >= 0
        ):
            raise InvalidInputError(
                f"takeover_timeout must be a number of seconds >= 0 with takeover=True, "
                f"not {takeover_timeout!r}"
            )
        limit = None
        if takeover:
            limit = (
                self._settings.lease_ttl + self._settings.finalize_timeout
                if takeover_timeout is None
                else float(takeover_timeout)
            )
        return Producer._create(self._runtime, session_id, checked, takeover_timeout=limit)

    def subscribe(
        self, session_id: str, *, after: str | None = None, batch_replay: bool = False
    ) -> Subscription:
        """A subscription to ``session_id``, to use as ``async with``.

        :param after: an event id; delivery resumes right after it. ``None``
            starts at the beginning of the current generation, and so does an
            id of an earlier generation.
        :param batch_replay: join consecutive text events of one name among
            those already stored when the subscription starts into one event
            carrying the last id; live events are delivered one by one.
        :raises ~replayhub.InvalidInputError: for a bad session id or a
            malformed ``after`` (at once), or, on entering, an ``after``
            beyond the end of the session.
        :raises ~replayhub.SessionNotFoundError: on entering, if there is no
            such session; during iteration, if it is removed or expires.
        """
        check_session_id(session_id)
        cursor = None if after is None else parse_event_id(after)
        return Subscription._create(self._runtime, session_id, cursor, batch_replay=batch_replay)

    async def info(self, session_id: str) -> SessionInfo | None:
        """The session's current state, or ``None`` if there is no such session.

        :raises ~replayhub.InvalidInputError: for a bad session id.
        :raises ~replayhub.HubClosedError: if the hub is not open.
        :raises ~replayhub.BackendUnavailableError: if storage cannot be reached.

        One read; cancelling it leaves nothing behind.
        """
        check_session_id(session_id)
        self._runtime.require_open()
        record = await self._backend.head(session_id)
        return None if record is None else record.info()

    async def sessions(
        self, *, state: State | None = None, limit: int = 100, offset: int = 0
    ) -> list[SessionInfo]:
        """Sessions, most recently updated first (on Redis a live session
        ranks by its latest write or heartbeat, to within a second).

        :param state: only sessions in this state.
        :param limit: at most this many (1 to 1,000).
        :param offset: skip this many, to page through the list.
        :raises ~replayhub.InvalidInputError: for a bad ``state``, ``limit``
            or ``offset``.
        :raises ~replayhub.HubClosedError: if the hub is not open.
        :raises ~replayhub.BackendUnavailableError: if storage cannot be reached.

        Reads only; cancelling it leaves nothing behind.
        """
        if state is not None and not isinstance(state, State):
            raise InvalidInputError(f"state must be a State, not {state!r}")
        if not isinstance(limit, int) or not 1 <= limit <= 1000:
            raise InvalidInputError(f"limit must be an int from 1 to 1000, not {limit!r}")
        if not isinstance(offset, int) or offset < 0:
            raise InvalidInputError(f"offset must be a non-negative int, not {offset!r}")
        self._runtime.require_open()
        records = await self._backend.list_sessions(state=state, limit=limit, offset=offset)
        return [record.info() for record in records]

    async def cancel(self, session_id: str, *, wait: float | None = None) -> SessionInfo | None:
        """Ask the session's producer, in whatever process, to stop.

        The request is stored and signalled; the producer's body is cancelled
        and the session ends ``cancelled``. Cancelling a finished session
        changes nothing.

        :param wait: seconds to wait for the session to end; ``None`` returns
            right after the request is stored.
        :returns: the session's info (its terminal state when ``wait`` is
            given), or ``None`` if there is no such session.
        :raises TimeoutError: if the session has not ended after ``wait``.
        :raises ~replayhub.InvalidInputError: for a bad session id or ``wait``.
        :raises ~replayhub.HubClosedError: if the hub is not open.
        :raises ~replayhub.BackendUnavailableError: if storage cannot be reached.

        Cancelling the call while it waits for the end leaves the request in
        place: the producer still stops.
        """
        check_session_id(session_id)
        if wait is not None and (not isinstance(wait, int | float) or wait < 0):
            raise InvalidInputError(f"wait must be a non-negative number, not {wait!r}")
        self._runtime.require_open()
        record = await self._runtime.cancel(session_id, wait=wait)
        return None if record is None else record.info()

    async def active(self, session_ids: Iterable[str]) -> dict[str, bool]:
        """For each id, whether the session is live now.

        :raises ~replayhub.InvalidInputError: for a bad session id (before
            anything is read).
        :raises ~replayhub.HubClosedError: if the hub is not open.
        :raises ~replayhub.BackendUnavailableError: if storage cannot be reached.
        """
        ids = [check_session_id(session_id) for session_id in session_ids]
        self._runtime.require_open()
        found: dict[str, bool] = {}
        for session_id in ids:
            record = await self._backend.head(session_id)
            found[session_id] = record is not None and record.state is State.LIVE
        return found

    async def remove(self, session_id: str) -> bool:
        """Delete the session and its events; ``False`` if there was none.

        A live producer of it loses its claim (:class:`~replayhub.LeaseLostError`)
        and its subscribers stop with :class:`~replayhub.SessionNotFoundError`.

        :raises ~replayhub.InvalidInputError: for a bad session id.
        :raises ~replayhub.HubClosedError: if the hub is not open.
        :raises ~replayhub.BackendUnavailableError: if storage cannot be reached.

        The deletion is one atomic storage call: cancelled, it either happened
        or did not.
        """
        check_session_id(session_id)
        self._runtime.require_open()
        return await self._backend.remove(session_id)
