"""One Pub/Sub client per hub, carrying wake-ups for all its local watches.

Watches register by channel. A single task owns SUBSCRIBE and UNSUBSCRIBE, so
a thousand subscriptions opening at once cost one command; a watch is handed
out only once its channel's subscription is acknowledged, so no message sent
after that is missed. Each message only sets the flags of the channel's
watches (no buffer to grow), or hands the batch it carries to the watches
that take batches; each subscription acknowledgement sets the flags too:
after a reconnect and resubscribe, every local reader re-reads from its
cursor, so messages lost during the outage lose nothing.

Behind Sentinel, the announcement of a new primary reopens the client
(:meth:`Notifier.reopen`): the old one would listen on a node that no longer
hears of writes, and the resubscription wakes every reader to read again.

A channel is quiet while this process makes every change to it (a session
it produces): it is not subscribed, and the backend hands its watches each
stored batch (``push_local``) and each other change (``notify_local``)
itself. When it stops being quiet it is subscribed again, and the
acknowledgement wakes its watches to read what others did meanwhile.

On a Redis Cluster the client is coredis's sharded Pub/Sub (one connection
per primary). A failover or a slot migration makes Redis drop the shard's
subscriptions, and coredis knows neither the new layout nor how to
resubscribe; so a subscription dropped by the server is made again, and when
the client cannot recover by itself it is rebuilt here on a fresh layout.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

import anyio
from anyio.abc import TaskStatus

from ..._errors import BackendUnavailableError
from ..._events import StoredEvent
from .._watch import AppendListener, FlagWatch, WatchRegistry
from ._keys import decode_notification

logger = logging.getLogger(__name__)

#: How long a new watch waits for its subscription to be acknowledged.
SUBSCRIBE_TIMEOUT = 5.0
_RETRY_DELAY = 0.2
#: Failed subscription changes in a row after which the client is rebuilt.
_FAILURES_BEFORE_REBUILD = 3

_ACKS = frozenset({"subscribe", "ssubscribe"})
_DROPS = frozenset({"unsubscribe", "sunsubscribe"})


class _Rebuild(Exception):
    """The Pub/Sub client is stuck: open a new one."""


class Notifier:
    """
    :param open_pubsub: opens a new coredis Pub/Sub client.
    :param receive: waits for the client's next messages and returns every
        one already parsed (``_coredis.receive_messages``).
    :param refresh: called before a rebuild (the cluster layout is refreshed).
    """

    def __init__(
        self,
        open_pubsub: Callable[[], AbstractAsyncContextManager[Any]],
        *,
        receive: Callable[[Any], Awaitable[list[Any]]],
        refresh: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._open_pubsub = open_pubsub
        self._receive = receive
        self._refresh = refresh
        self._watches = WatchRegistry()
        self._acks: dict[str, anyio.Event] = {}
        self._subscribed: set[str] = set()
        self._dirty = anyio.Event()
        self._serving: anyio.CancelScope | None = None  # the current client's
        # Channels of sessions this process produces: not subscribed (quiet).
        self._quiet: dict[str, int] = {}

    def watch(
        self,
        channel: str,
        *,
        on_append: AppendListener | None = None,
        on_notify: Callable[[], None] | None = None,
    ) -> _ChannelWatch:
        """A watch on ``channel``: its block opens once Redis has
        acknowledged the subscription (at once for a quiet channel, whose
        changes come from this process)."""
        return _ChannelWatch(
            self, channel, self._watches.open(channel, on_append=on_append, on_notify=on_notify)
        )

    async def _opened(self, channel: str) -> None:
        """A watch on ``channel`` was registered: wait until Redis has
        acknowledged the subscription (a quiet channel's changes come from
        this process: nothing to wait for)."""
        if channel not in self._quiet:
            await self._acknowledged(channel)

    def _closed(self, channel: str) -> None:
        """A watch on ``channel`` was removed: unsubscribe once none is left."""
        if channel not in self._watches:
            self._dirty.set()

    async def _acknowledged(self, channel: str) -> None:
        ack = self._acks.get(channel)
        if ack is None:
            ack = self._acks[channel] = anyio.Event()
            self._dirty.set()
        try:
            with anyio.fail_after(SUBSCRIBE_TIMEOUT):
                await ack.wait()
        except TimeoutError:
            raise BackendUnavailableError(
                f"Redis did not acknowledge a subscription within {SUBSCRIBE_TIMEOUT}s"
            ) from None

    def quiet(self, channel: str) -> None:
        """Stop listening on ``channel`` while this process makes every
        change to it (a session it produces): its watches get them from
        :meth:`push_local` and :meth:`notify_local` instead. Counted: as
        many :meth:`unquiet` calls end it."""
        self._quiet[channel] = self._quiet.get(channel, 0) + 1
        self._dirty.set()

    def unquiet(self, channel: str) -> None:
        """Listen on ``channel`` again. Its watches are woken once Redis has
        acknowledged the subscription, so they read whatever others changed
        while it was quiet."""
        count = self._quiet.get(channel, 0) - 1
        if count > 0:
            self._quiet[channel] = count
        else:
            self._quiet.pop(channel, None)
            self._dirty.set()

    def notify_local(self, channel: str) -> None:
        """Wake ``channel``'s watches for a change this process just made."""
        self._watches.notify(channel)

    def notify_all(self) -> None:
        self._watches.notify_all()

    def reopen(self) -> None:
        """Open a new Pub/Sub client: the primary changed (a failover), and
        the old client listens on a node that no longer hears of writes. Its
        subscription acknowledgements then wake every watch to read again,
        so what was written meanwhile is read, not waited for."""
        if self._serving is not None:
            self._serving.cancel()

    def push_local(self, channel: str, generation: int, events: Sequence[StoredEvent]) -> None:
        """Hand a batch this process just stored to its watches on ``channel``
        (quiet while this process produces the session, so no Pub/Sub
        message brings it back)."""
        if channel in self._watches.watched:
            shared = (
                [events[0].share(generation)]  # a token per write: no comprehension
                if len(events) == 1
                else [event.share(generation) for event in events]
            )
            self._watches.push(channel, generation, shared)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Keep a Pub/Sub client subscribed to the watched channels.

        The first client's errors are raised (the hub cannot open); later
        ones are logged and the client is rebuilt.
        """
        started = False

        def mark_started() -> None:
            nonlocal started
            if not started:
                started = True
                task_status.started()

        while True:
            try:
                await self._serve(mark_started)
            except Exception as exc:
                if not started:
                    raise
                logger.warning("Pub/Sub client failed (%s); opening a new one", exc)
            await anyio.sleep(_RETRY_DELAY)
            if self._refresh is not None:
                try:
                    await self._refresh()
                except Exception as exc:
                    logger.warning("refreshing the cluster layout failed: %s", exc)

    async def _serve(self, started: Callable[[], None]) -> None:
        # Leaving a cancelled scope ends coredis's Pub/Sub whatever it is
        # doing (closing it normally hangs while it is reconnecting).
        with anyio.CancelScope() as scope:
            self._serving = scope
            async with self._open_pubsub() as pubsub, anyio.create_task_group() as task_group:
                self._subscribed = set()
                self._dirty.set()
                task_group.start_soon(self._deliver_messages, pubsub)
                started()
                try:
                    await self._reconcile_forever(pubsub)
                except _Rebuild:
                    scope.cancel()
                    raise

    async def _reconcile_forever(self, pubsub: Any) -> None:
        failures = 0
        while True:
            await self._dirty.wait()
            self._dirty = anyio.Event()
            try:
                await self._reconcile(pubsub)
            except Exception as exc:  # the connection is down: coredis reconnects
                failures += 1
                logger.warning("Pub/Sub subscription change failed (%s); retrying", exc)
                if failures >= _FAILURES_BEFORE_REBUILD:
                    raise _Rebuild from exc
                self._dirty.set()
                await anyio.sleep(_RETRY_DELAY)
            else:
                failures = 0

    async def _reconcile(self, pubsub: Any) -> None:
        wanted = {str(channel) for channel in self._watches} - self._quiet.keys()
        gone = self._subscribed - wanted
        if gone:
            for channel in gone:
                self._acks.pop(channel, None)
            self._subscribed -= gone
            await pubsub.unsubscribe(*gone)
        new = wanted - self._subscribed
        if new:
            await pubsub.subscribe(*new)
            self._subscribed |= new
            for channel in new:
                self._acks.setdefault(channel, anyio.Event()).set()

    async def _deliver_messages(self, pubsub: Any) -> None:
        while True:
            for message in await self._receive(pubsub):
                if message is not None:
                    self._handle(message)

    def _handle(self, message: Any) -> None:
        kind, raw = message["type"], message["channel"]
        channel = raw.decode() if isinstance(raw, bytes) else raw
        if kind == "message":
            self._deliver(channel, message["data"])
        elif kind in _ACKS:
            self._watches.notify(channel)
        elif kind in _DROPS and channel in self._subscribed:
            # Not asked for (ours leave _subscribed first): the server
            # dropped it, as a cluster node does when its slot moves.
            self._subscribed.discard(channel)
            self._dirty.set()

    def _deliver(self, channel: str, data: bytes) -> None:
        if channel not in self._watches:
            return
        try:
            batch = decode_notification(data)  # once for all the channel's watches
        except (ValueError, TypeError):  # the readers read instead
            logger.warning("unreadable change notification on %s", channel)
            batch = None
        if batch is None:
            self._watches.notify(channel)
        else:
            self._watches.push(channel, *batch)


class _ChannelWatch:
    """:meth:`Notifier.watch`'s block, a plain class: a live reply holds two
    (its producer's and its readers' feed's) for as long as it lasts."""

    __slots__ = ("_channel", "_notifier", "_watch")

    def __init__(self, notifier: Notifier, channel: str, watch: FlagWatch) -> None:
        self._notifier = notifier
        self._channel = channel
        self._watch = watch

    async def __aenter__(self) -> FlagWatch:
        watch = await self._watch.__aenter__()
        try:
            await self._notifier._opened(self._channel)
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return watch

    async def __aexit__(self, *exc_info: object) -> None:
        await self._watch.__aexit__(None, None, None)
        self._notifier._closed(self._channel)
