"""One Pub/Sub connection per hub, carrying wake-ups for all its local watches.

Watches register by channel. A single task owns SUBSCRIBE and UNSUBSCRIBE, so
a thousand subscriptions opening at once cost one command; a watch is handed
out only once its channel's subscription is acknowledged, so no message sent
after that is missed. Each message only sets the flags of the channel's
watches (no buffer to grow), and each subscription acknowledgement does too:
after coredis reconnects and resubscribes, every local reader re-reads from
its cursor, so messages lost during the outage lose nothing.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
from anyio.abc import TaskStatus

from ..._errors import BackendUnavailableError
from .._watch import FlagWatch, WatchRegistry

logger = logging.getLogger(__name__)

#: How long a new watch waits for its subscription to be acknowledged.
SUBSCRIBE_TIMEOUT = 5.0
_RETRY_DELAY = 0.2


class Notifier:
    def __init__(self, pubsub: Any) -> None:
        self._pubsub = pubsub
        self._watches = WatchRegistry()
        self._acks: dict[str, anyio.Event] = {}
        self._subscribed: set[str] = set()
        self._dirty = anyio.Event()

    @asynccontextmanager
    async def watch(self, channel: str) -> AsyncIterator[FlagWatch]:
        async with self._watches.open(channel) as watch:
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
            yield watch
        if channel not in self._watches:
            self._dirty.set()

    def notify_all(self) -> None:
        self._watches.notify_all()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        async with anyio.create_task_group() as task_group:
            task_group.start_soon(self._deliver_messages)
            task_status.started()
            await self._reconcile_forever()

    async def _reconcile_forever(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty = anyio.Event()
            try:
                await self._reconcile()
            except Exception:  # the connection is down: coredis reconnects
                logger.warning("Pub/Sub subscription change failed; retrying", exc_info=True)
                self._dirty.set()
                await anyio.sleep(_RETRY_DELAY)

    async def _reconcile(self) -> None:
        wanted = {str(channel) for channel in self._watches}
        gone = self._subscribed - wanted
        if gone:
            for channel in gone:
                self._acks.pop(channel, None)
            self._subscribed -= gone
            await self._pubsub.unsubscribe(*gone)
        new = wanted - self._subscribed
        if new:
            await self._pubsub.subscribe(*new)
            self._subscribed |= new
            for channel in new:
                self._acks.setdefault(channel, anyio.Event()).set()

    async def _deliver_messages(self) -> None:
        while True:
            message = await self._pubsub.get_message()
            if message is None or message["type"] not in ("message", "subscribe"):
                continue
            channel = message["channel"]
            self._watches.notify(channel.decode() if isinstance(channel, bytes) else channel)
