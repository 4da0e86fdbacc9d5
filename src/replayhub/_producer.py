"""The producer: claim, heartbeat, cancel watch, writer and terminal write."""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio
from anyio.lowlevel import checkpoint

from ._error_types import ErrorType, classify_error
from ._errors import (
    BackendUnavailableError,
    EventsLostError,
    InvalidInputError,
    LeaseLostError,
    ReplayHubError,
    SessionBusyError,
    StorageRefusedError,
)
from ._events import DataKind, Metadata, SendData, State, StoredEvent, format_event_id
from ._relay_watch import relayed
from ._settings import check_event_name, check_metadata, encode_data
from .backends import AppendRequest, Renewal
from .backends._clock import loop_checkpoint
from .backends._retry import FIRST_DELAY, Backoff

if TYPE_CHECKING:
    from ._runtime import HubRuntime
    from .backends import SessionRecord

#: Most events and payload bytes (roughly) in one write to storage.
_MAX_BATCH_EVENTS, _MAX_BATCH_BYTES = 1000, 4 * 1024 * 1024


def _worth_retrying(error: Exception) -> bool:
    """Whether a storage call that raised ``error`` may work if made again:
    storage was unavailable (not refusing, not a lost claim, not bad input)."""
    return isinstance(error, BackendUnavailableError) and not isinstance(error, StorageRefusedError)


class _Phase(enum.Enum):
    NEW = "new"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


# Read per send: a class attribute lookup of an enum costs ~125 ns.
_OPEN = _Phase.OPEN
_TEXT = DataKind.TEXT


class _Stop(enum.Enum):
    CANCEL_REQUESTED = "cancel requested"
    HUB_CLOSING = "hub closing"


class Producer(anyio.AsyncContextManagerMixin):
    """The writing end of a session, returned by :meth:`Hub.produce`.

    Use it as ``async with hub.produce(session_id) as stream:``. Entering
    claims the session; the body runs inside the producer's cancel scope; every
    way of leaving the block writes one terminal state:

    * normal exit: ``done``;
    * an exception: ``failed`` with its message, and the exception propagates
      unchanged;
    * a cancel request (:meth:`Hub.cancel`, from any process): the body is
      cancelled, the block exits without raising, ``cancelled``;
    * a cancellation from outside: ``cancelled``, and the cancellation
      propagates;
    * a lost claim (lease expired, session removed or claimed again): the body
      is cancelled, nothing more is written, :class:`~replayhub.LeaseLostError`
      is raised.

    Before the terminal write, everything sent is flushed. Both run shielded
    from cancellation and bounded by the hub's ``finalize_timeout``.
    """

    def __init__(self) -> None:
        raise TypeError("Producer has no public constructor: use hub.produce()")

    @classmethod
    def _create(
        cls,
        runtime: HubRuntime,
        session_id: str,
        metadata: Metadata,
        *,
        takeover_timeout: float | None = None,
    ) -> Producer:
        producer = cls.__new__(cls)
        producer._setup(runtime, session_id, metadata, takeover_timeout)
        return producer

    def _setup(
        self,
        runtime: HubRuntime,
        session_id: str,
        metadata: Metadata,
        takeover_timeout: float | None,
    ) -> None:
        self._runtime = runtime
        self._takeover_timeout = takeover_timeout
        self._claimed_at = 0.0
        self._backend = runtime.backend
        self._settings = runtime.settings
        self._session_id = session_id
        self._metadata = metadata
        self._phase = _Phase.NEW
        self._generation = 0
        self._seq = 0  # the last sequence number handed out
        self._stored_seq = 0
        self._pending: deque[StoredEvent] = deque()
        self._inflight: list[StoredEvent] = []
        self._metadata_version = 0
        self._stored_metadata_version = 0
        self._pending_metadata: tuple[int, Metadata] | None = None
        self._inflight_metadata: tuple[int, Metadata] | None = None
        self._writer = runtime.writer
        # A backend that stores without a round trip (in process) is given
        # each send at once: a send has just let other tasks run, so there is
        # nothing to gather. send_nowait queues for the writer (a batch).
        self._append_one: Callable[[str, int, StoredEvent], None] | None = getattr(
            runtime.backend, "append_one", None
        )
        # Read per send: attributes of the producer's own are the cheapest.
        settings = runtime.settings
        self._max_event_bytes = settings.max_event_bytes
        self._max_events = settings.max_events
        self._buffer_size = settings.buffer_size
        self._write_backoff = Backoff()
        self._retrying = False  # a failed write waits for its retry time
        self._progress: anyio.Event | None = None  # made when someone waits
        self._lease_deadline = 0.0
        self._body_scope = anyio.CancelScope()
        # anyio's checkpoint until entered, then the running loop's own.
        self._checkpoint: Callable[[], Awaitable[None]] = checkpoint
        self._stop: _Stop | None = None
        self._lost: LeaseLostError | None = None
        self._failure: BaseException | None = None
        self._closed = anyio.Event()

    # -- public ---------------------------------------------------------------

    @property
    def session_id(self) -> str:
        """The session this producer writes."""
        return self._session_id

    @property
    def generation(self) -> int:
        """The generation this producer claimed (0 before the block is entered)."""
        return self._generation

    @property
    def cancel_requested(self) -> bool:
        """Whether a cancel request cut the block short."""
        return self._stop is _Stop.CANCEL_REQUESTED and self._body_scope.cancelled_caught

    @property
    def metadata(self) -> Metadata:
        """The session's metadata as this producer last set it."""
        return self._metadata

    async def send(self, data: SendData, *, event: str = "message") -> str:
        """Queue one event and return its id, without waiting for storage.

        Waits only while the producer's buffer (``buffer_size`` events) is
        full. Events are stored in the order they were sent.

        :param data: a :class:`str`, :class:`bytes`, a JSON value, or a value
            that names its own event (an :class:`~replayhub.EventLike`, such
            as ``llm.TextDelta("Hel")``).
        :param event: the event name, 1 to 64 printable characters; not with
            a value that names its own event.
        :raises ~replayhub.InvalidInputError: if the event is rejected (bad
            name, unserialisable or oversize data, ``max_events`` reached);
            nothing is queued.
        :raises ~replayhub.LeaseLostError: if the producer lost its claim.
        :raises ~replayhub.BackendUnavailableError: if storage failed for good.

        Every call is a checkpoint, as with any async call of Trio or AnyIO:
        other tasks run, and a cancellation (from outside, or by a cancel
        request or a lost claim) lands here, before the event is queued.
        Cancelled, it sends nothing and uses no id; otherwise the event is
        queued and will be stored. A loop that must not yield per event uses
        :meth:`send_nowait`.
        """
        # Every token comes here: the checks of _require_open, _encode and
        # _check_max_events, in line for the common case (ASCII text, with
        # no event name), each method called only where it has more to do.
        if self._phase is not _OPEN or self._lost is not None or self._failure is not None:
            self._require_open()
        payload: str | bytes
        # (exactly str: a subclass may name its own event, as _encode checks)
        if type(data) is str and event == "message" and data.isascii():
            kind, payload = _TEXT, data
            if len(payload) > self._max_event_bytes:
                event, kind, payload = self._encode(data, event)  # raises
        else:
            event, kind, payload = self._encode(data, event)
        if self._seq >= self._max_events:
            self._check_max_events()  # before waiting; again below, after it
        await self._checkpoint()
        while len(self._pending) >= self._buffer_size:
            await self._wait_progress()
        if self._phase is not _OPEN or self._lost is not None or self._failure is not None:
            self._require_open()
        if self._seq >= self._max_events:
            self._check_max_events()
        seq = self._seq = self._seq + 1
        stored = StoredEvent(seq, event, kind, payload)
        append_one = self._append_one
        if (
            append_one is None
            or self._retrying
            or self._inflight
            or self._pending
            or self._pending_metadata
            or self._inflight_metadata
        ):
            # Queued for the hub's writer (what _queue does, in line).
            self._pending.append(stored)
            if not self._retrying:
                self._writer.request(self)
            return format_event_id(self._generation, seq)
        # Stored at once, nothing being ahead of it. On success, what
        # write_done(None) does after a write of one event with nothing
        # queued behind it and no failure before it.
        try:
            append_one(self._session_id, self._generation, stored)
        except Exception as exc:
            self._inflight = [stored]  # what write_done retries, or gives up on
            self.write_done(exc)
            return format_event_id(self._generation, seq)
        self._stored_seq = seq
        if self._progress is not None:
            self._signal_progress()
        shared = stored.shared  # the backend built its id already
        return format_event_id(self._generation, seq) if shared is None else shared.id

    def send_nowait(self, data: SendData, *, event: str = "message") -> str:
        """:meth:`send` without waiting: queue the event now, or raise
        :class:`anyio.WouldBlock` if the buffer is full (nothing is queued;
        the caller decides whether to wait, with :meth:`send`, or drop it).

        It is not a checkpoint: a loop of ``send_nowait`` calls must await
        something now and then (the next token from the model does) for
        other tasks to run and for a cancel request to stop it.

        :raises anyio.WouldBlock: if ``buffer_size`` events wait for storage.
        :raises ~replayhub.InvalidInputError: as :meth:`send` does.
        :raises ~replayhub.LeaseLostError: if the producer lost its claim.
        :raises ~replayhub.BackendUnavailableError: if storage failed for good.
        """
        self._require_open()
        event, kind, payload = self._encode(data, event)
        if len(self._pending) >= self._buffer_size:
            raise anyio.WouldBlock
        return self._queue(event, kind, payload)

    def _encode(self, data: SendData, event: str) -> tuple[str, DataKind, str | bytes]:
        """The checked event name and the encoded data, or InvalidInputError."""
        if data.__class__ is not str:  # the common case, checked first
            name_itself = getattr(data, "__replayhub_event__", None)
            if name_itself is not None:
                if event != "message":
                    raise InvalidInputError(
                        f"{type(data).__name__} names its own event; do not pass event="
                    )
                event, data = name_itself()
        if event != "message":
            check_event_name(event)
        kind, payload = encode_data(data, max_bytes=self._settings.max_event_bytes)
        return event, kind, payload

    def _check_max_events(self) -> None:
        if self._seq >= self._max_events:
            raise InvalidInputError(
                f"session {self._session_id!r} reached max_events={self._max_events}"
            )

    def _queue(self, event: str, kind: DataKind, payload: str | bytes) -> str:
        """Queue the event for the hub's writer; its id."""
        self._check_max_events()
        self._seq += 1
        self._pending.append(StoredEvent(self._seq, event, kind, payload))
        self._ask_writer()
        return format_event_id(self._generation, self._seq)

    async def set_metadata(self, metadata: Mapping[str, Any]) -> None:
        """Merge ``metadata`` into the session's metadata (top-level keys replace).

        Queued with the events, so it is stored with the next write; use
        :meth:`flush` to wait for it.

        :raises ~replayhub.InvalidInputError: if the merged metadata is not a
            JSON object within ``max_metadata_bytes``; nothing changes.
        :raises ~replayhub.LeaseLostError: if the producer lost its claim.

        It does not wait for storage, so there is nothing to cancel: once it
        returns, the metadata is queued.
        """
        self._require_open()
        merged = check_metadata(
            {
                **self._metadata,
                **check_metadata(metadata, max_bytes=self._settings.max_metadata_bytes),
            },
            max_bytes=self._settings.max_metadata_bytes,
        )
        self._metadata = merged
        self._metadata_version += 1
        self._pending_metadata = (self._metadata_version, merged)
        self._ask_writer()
        await checkpoint()

    async def flush(self) -> None:
        """Wait until every event sent and metadata set so far is stored.

        Cancelling the wait loses nothing: the events stay queued.

        :raises ~replayhub.LeaseLostError: if the producer lost its claim.
        :raises ~replayhub.BackendUnavailableError: if storage failed for good.
        """
        self._require_open()
        target_seq, target_metadata = self._seq, self._metadata_version
        while self._stored_seq < target_seq or self._stored_metadata_version < target_metadata:
            await self._wait_progress()
            self._raise_if_broken()

    # -- the block ------------------------------------------------------------

    @asynccontextmanager
    async def __asynccontextmanager__(self) -> AsyncIterator[Producer]:
        if self._phase is not _Phase.NEW:
            raise RuntimeError("a producer can be entered only once; call hub.produce() again")
        self._runtime.require_open()
        self._checkpoint = loop_checkpoint()
        settings = self._settings
        if self._takeover_timeout is None:
            record = await self._claim()
        else:
            record = await self._take_over()
        self._generation = record.generation
        self._lease_deadline = self._claimed_at + settings.lease_ttl
        self._runtime.producers.add(
            self,
            session_id=self._session_id,
            stop=lambda: self._request_stop(_Stop.HUB_CLOSING),
            closed=self._closed,
        )
        leases = self._runtime.leases
        body_error: BaseException | None = None
        try:
            async with self._watch_claim():
                # Renewed at once, once the watch is open, so a cancel request
                # made at any moment since the claim is seen; then every
                # heartbeat_interval, by the hub's one lease keeper.
                leases.add(self)
                try:
                    # A cancellation pending since the (shielded) claim lands
                    # here: the block ends cancelled without running the body.
                    await checkpoint()
                    self._phase = _Phase.OPEN
                    with self._body_scope:
                        yield self
                finally:
                    self._phase = _Phase.CLOSING
                    leases.discard(self)
        except BaseException as exc:
            body_error = exc
        finally:
            with anyio.move_on_after(settings.finalize_timeout, shield=True) as deadline:
                await self._finalize(body_error)
            if deadline.cancelled_caught and self._failure is None and self._lost is None:
                self._failure = BackendUnavailableError(
                    f"could not finish session {self._session_id!r} within "
                    f"finalize_timeout={settings.finalize_timeout}s; it will end as abandoned"
                )
            release = getattr(self._backend, "release", None)
            if release is not None:
                release(self._session_id, self._generation)
            self._phase = _Phase.CLOSED
            self._runtime.producers.discard(self)
            self._closed.set()
        if body_error is not None:
            raise body_error
        self._raise_if_broken()

    async def _claim(self) -> SessionRecord:
        settings = self._settings
        self._claimed_at = anyio.current_time()
        record: SessionRecord | None = None
        # Shielded: a claim cancelled after storage ran it would hold the
        # session, producer-less, until its lease expired. Once claimed, a
        # pending cancellation takes the normal exit path and ends it cancelled.
        with anyio.CancelScope(shield=True), anyio.move_on_after(settings.finalize_timeout):
            record = await self._backend.claim(
                self._session_id,
                metadata=self._metadata,
                lease_ttl=settings.lease_ttl,
                retention=settings.retention,
            )
        if record is None:
            raise BackendUnavailableError(
                f"claiming session {self._session_id!r} took over {settings.finalize_timeout}s"
            )
        return record

    async def _take_over(self) -> SessionRecord:
        """Claim the session, first stopping the live producer that holds it.

        Each busy claim asks whoever holds the session now to stop and waits
        for its end (a new producer that got in between is stopped too: the
        latest takeover wins). A producer that ignores the request ends
        ``abandoned`` when its lease runs out.
        """
        limit = self._takeover_timeout
        assert limit is not None
        deadline = anyio.current_time() + limit
        while True:
            try:
                return await self._claim()
            except SessionBusyError:
                remaining = deadline - anyio.current_time()
                if remaining > 0:
                    try:
                        await self._runtime.cancel(self._session_id, wait=remaining)
                    except TimeoutError:
                        pass
                    else:
                        continue  # it ended: claim again
                raise SessionBusyError(
                    f"session {self._session_id!r}: its live producer did not end "
                    f"within takeover_timeout={limit}s"
                ) from None

    async def _finalize(self, body_error: BaseException | None) -> None:
        await self._write_rest()
        if self._lost is not None:
            return  # a stale producer writes nothing more
        state, error, error_type = self._terminal_state(body_error)
        # Retried as a write is: while storage is unavailable for a moment (a
        # failover under way, a connection replaced) and the lease lasts, so
        # a session is not left live until its lease runs out for want of a
        # second try. The terminal write is idempotent (asked again once it
        # has landed, it is that same end); finalize_timeout bounds it all.
        backoff = Backoff()
        while True:
            try:
                await self._backend.finish(
                    self._session_id,
                    self._generation,
                    state=state,
                    error=error,
                    error_type=error_type,
                    retention=self._settings.retention,
                )
            except LeaseLostError as exc:
                self._lose_claim(exc)
            except ReplayHubError as exc:
                delay = backoff.next_delay()
                if _worth_retrying(exc) and anyio.current_time() + delay < self._lease_deadline:
                    await anyio.sleep(delay)
                    continue
                self._failure = self._failure or exc
            return

    def _terminal_state(
        self, body_error: BaseException | None
    ) -> tuple[State, str | None, ErrorType | None]:
        if isinstance(body_error, anyio.get_cancelled_exc_class()):
            return State.CANCELLED, None, None
        if body_error is not None:
            error_type = classify_error(body_error, self._settings.classify_error)
            return State.FAILED, _describe(body_error), error_type
        if self._failure is not None:
            # Storage failing is this deployment's fault, not the provider's.
            return State.FAILED, f"storage failed: {_describe(self._failure)}", ErrorType.INTERNAL
        if self._body_scope.cancelled_caught:
            return State.CANCELLED, None, None
        return State.DONE, None, None

    # -- the lease (the hub's lease keeper calls these: ``_lease.Renews``) ----------

    def _watch_claim(self) -> AbstractAsyncContextManager[object]:
        """The claim's watch: each wake-up (a cancel request, the session
        removed) has the lease keeper renew at once, which reads the flag."""
        leases = self._runtime.leases
        renew_soon = partial(leases.renew_soon, self)
        call_on_change = getattr(self._backend, "call_on_claim_change", None)
        if call_on_change is not None:
            watch: AbstractAsyncContextManager[object] = call_on_change(
                self._session_id, renew_soon
            )
            return watch
        return relayed(self._backend.watch_claim(self._session_id), renew_soon, leases.task_group)

    @property
    def lease(self) -> tuple[str, int]:
        """The session and generation whose lease this producer holds."""
        return self._session_id, self._generation

    @property
    def lease_deadline(self) -> float:
        """When the lease runs out (loop time), as of the last renewal."""
        return self._lease_deadline

    async def renew_lease(self) -> float | None:
        """Renew the lease alone and act on the cancel flag; the seconds
        until the next timed renewal, or ``None`` for none."""
        started = anyio.current_time()
        result: Renewal | Exception
        try:
            with anyio.fail_after(max(self._lease_deadline - started, 0.0)):
                result = await self._backend.renew(
                    self._session_id, self._generation, lease_ttl=self._settings.lease_ttl
                )
        except Exception as exc:
            result = exc
        return self.lease_renewed(started, result)

    def lease_renewed(self, started: float, result: Renewal | Exception) -> float | None:
        """Act on a renewal sent at ``started`` (loop time): what storage
        said, or the exception the call raised (``TimeoutError`` once the
        lease ran out first); the seconds until the next timed renewal, or
        ``None`` for none."""
        renewed = self._apply_renewal(started, result)
        if self._lost is not None or self._failure is not None:
            # A producer whose storage refuses its writes stops renewing a
            # claim it can no longer serve: its session ends (failed, or
            # abandoned when even the terminal write is refused) instead of
            # looking live.
            return None
        # A failed renewal is retried at the shortest delay, not backed off:
        # the lease runs out while storage is away, and a renewal that lands
        # the moment it is back keeps the claim.
        delay = self._settings.heartbeat_interval if renewed else FIRST_DELAY
        return min(delay, max(0.0, self._lease_deadline - anyio.current_time()))

    def _apply_renewal(self, started: float, result: Renewal | Exception) -> bool:
        """Take in a renewal's result; ``False`` if it did not renew."""
        if isinstance(result, Renewal):
            self._lease_deadline = started + self._settings.lease_ttl
            if result.cancel_requested:
                self._request_stop(_Stop.CANCEL_REQUESTED)
            return True
        if isinstance(result, LeaseLostError):
            self._lose_claim(result)
        elif isinstance(result, BackendUnavailableError | TimeoutError):
            if anyio.current_time() >= self._lease_deadline:
                # A renewal unanswered by the deadline does not say why: a
                # process too busy to renew in time looks the same from here.
                why = (
                    "before a renewal was answered (storage slow or unreachable, "
                    "or this process too busy to renew in time)"
                    if isinstance(result, TimeoutError)
                    else f"while storage was unreachable: {result}"
                )
                self._lose_claim(
                    LeaseLostError(f"lease of session {self._session_id!r} expired {why}")
                )
        else:
            # Refused by storage, or a backend's bug: the session ends
            # failed, never stuck live.
            self._fail(result)
        return False

    async def _write_rest(self) -> None:
        """Wait until everything queued is stored, the claim is lost or
        storage failed for good (the writer retries within the lease)."""
        while self._lost is None and self._failure is None and self._unwritten:
            self._ask_writer()
            await self._wait_progress()

    def _ask_writer(self) -> None:
        """Have the hub's writer store what is queued, unless a failed write
        is waiting for its retry time (the writer asks again then)."""
        if not self._retrying:
            self._writer.request(self)

    @property
    def _unwritten(self) -> bool:
        return bool(
            self._inflight or self._pending or self._pending_metadata or self._inflight_metadata
        )

    # -- the hub's writer calls these (``_writer.Writes``) ------------------------

    def take_write(self) -> AppendRequest | None:
        """The batch to store: the one in flight again if its write failed,
        else what is queued, up to one write's worth."""
        self._retrying = False
        if self._lost is not None or self._failure is not None or self._phase is _Phase.CLOSED:
            return None
        if not self._inflight and not self._inflight_metadata:
            pending = self._pending
            # One event (a token per write at chat rates) with no more call.
            self._inflight = [pending.popleft()] if len(pending) == 1 else self._take_batch()
            self._inflight_metadata, self._pending_metadata = self._pending_metadata, None
            if not self._inflight and not self._inflight_metadata:
                return None
        metadata = self._inflight_metadata
        return AppendRequest(
            self._session_id,
            self._generation,
            self._inflight,
            None if metadata is None else metadata[1],
        )

    def write_done(self, error: Exception | None) -> None:
        """The result of the write :meth:`take_write` handed out.

        A batch whose write failed stays in flight and is written again (the
        backend skips what already landed), after a delay that doubles up to
        a second, until the lease runs out.
        """
        if error is None:
            self._write_backoff.reset()
            if self._inflight:
                self._stored_seq = self._inflight[-1].seq
            if self._inflight_metadata is not None:
                self._stored_metadata_version = self._inflight_metadata[0]
            self._inflight, self._inflight_metadata = [], None
            if self._pending or self._pending_metadata:
                self._writer.request(self)
            if self._progress is not None:  # (no call when nobody waits)
                self._signal_progress()
            return
        if isinstance(error, LeaseLostError):
            self._lose_claim(error)
        elif not _worth_retrying(error):
            self._fail(error)  # retrying would not help
            return
        elif anyio.current_time() >= self._lease_deadline:
            self._lose_claim(
                LeaseLostError(
                    f"lease of session {self._session_id!r} expired while storage "
                    f"was unreachable: {error}"
                )
            )
        else:
            self._retrying = True
            self._writer.request_at(anyio.current_time() + self._write_backoff.next_delay(), self)
            return
        self._signal_progress()

    def _take_batch(self) -> list[StoredEvent]:
        """Everything queued, up to one write's worth (a storage command must
        stay small enough not to stall the server)."""
        pending = self._pending
        batch: list[StoredEvent] = []
        size = 0
        while pending and len(batch) < _MAX_BATCH_EVENTS and size < _MAX_BATCH_BYTES:
            event = pending.popleft()
            size += len(event.payload)
            batch.append(event)
        return batch

    # -- helpers ----------------------------------------------------------------

    def _fail(self, exc: Exception) -> None:
        """Storage failed for good: the next send or flush raises it, and a
        send waiting for buffer space wakes to."""
        if self._failure is None:
            self._failure = exc
        self._signal_progress()

    async def _wait_progress(self) -> None:
        """Wait until a write ends, or the claim is lost or storage fails."""
        if self._progress is None:
            self._progress = anyio.Event()
        await self._progress.wait()

    def _signal_progress(self) -> None:
        progress, self._progress = self._progress, None
        if progress is not None:
            progress.set()

    def _request_stop(self, reason: _Stop) -> None:
        if self._stop is None:
            self._stop = reason
        self._body_scope.cancel()

    def _lose_claim(self, exc: LeaseLostError) -> None:
        if self._lost is None:
            self._lost = exc
        self._body_scope.cancel()
        self._signal_progress()

    def _require_open(self) -> None:
        if self._phase is not _OPEN:
            raise RuntimeError(
                f"producer of {self._session_id!r} is {self._phase.value}: "
                "send only inside its async with block"
            )
        self._raise_if_broken()

    def _raise_if_broken(self) -> None:
        if self._lost is not None:
            raise LeaseLostError(str(self._lost)) from self._lost
        if self._failure is not None:
            # Of the failure's own class where it is ours (a refusal, lost
            # events), so callers can tell them apart.
            error_class = (
                type(self._failure)
                if isinstance(self._failure, StorageRefusedError | EventsLostError)
                else BackendUnavailableError
            )
            raise error_class(
                f"storage failed for session {self._session_id!r}: {_describe(self._failure)}"
            ) from self._failure


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
