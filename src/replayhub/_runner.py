"""Producers started by one task (a request handler) that outlive it."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import anyio
from anyio.abc import TaskGroup, TaskStatus

from ._errors import HubClosedError
from ._hub import Hub
from ._producer import Producer

logger = logging.getLogger("replayhub")

Generate = Callable[[Producer], Awaitable[None]]
"""The body of a producer: sends events on the stream it is given."""


class ProducerGroup(anyio.AsyncContextManagerMixin):
    """Runs producers in a task group of their own, for as long as the block.

    Typical use: open it in a web app's lifespan, and from a request handler
    call :meth:`start`, which returns once the session is claimed, while the
    producer goes on after the response. A producer's exception is recorded
    on its session (``failed``) and logged, and never takes the group, the
    app or other producers down. Leaving the block cancels the producers
    still running (they end ``cancelled``).
    """

    def __init__(self, hub: Hub) -> None:
        self._hub = hub
        self._task_group: TaskGroup | None = None

    @asynccontextmanager
    async def __asynccontextmanager__(self) -> AsyncIterator[ProducerGroup]:
        async with anyio.create_task_group() as task_group:
            self._task_group = task_group
            try:
                yield self
            finally:
                self._task_group = None
                task_group.cancel_scope.cancel()

    async def start(
        self,
        session_id: str,
        generate: Generate,
        *,
        metadata: Mapping[str, Any] | None = None,
        takeover: bool = False,
        takeover_timeout: float | None = None,
    ) -> int:
        """Claim ``session_id`` and run ``generate(stream)`` in the group.

        ``takeover`` and ``takeover_timeout`` are :meth:`Hub.produce`'s: stop
        the session's live producer first, wherever it runs.

        :returns: the generation claimed.
        :raises ~replayhub.SessionBusyError: if the session has a live producer
            (with ``takeover``: one that did not end in time).
        :raises ~replayhub.InvalidInputError: for a bad session id or metadata.
        :raises ~replayhub.HubClosedError: if the group is not open.

        Cancelled while it claims, it claims nothing, or the producer it
        started ends ``cancelled`` at once; after it returns, cancelling the
        caller (the request) does not touch the producer.
        """
        if self._task_group is None:
            raise HubClosedError("use the ProducerGroup inside 'async with'")
        stream = self._hub.produce(
            session_id, metadata=metadata, takeover=takeover, takeover_timeout=takeover_timeout
        )
        generation: int = await self._task_group.start(self._run, stream, generate)
        return generation

    async def _run(
        self, stream: Producer, generate: Generate, *, task_status: TaskStatus[int]
    ) -> None:
        started = False
        try:
            async with stream:
                task_status.started(stream.generation)
                started = True
                await generate(stream)
        except Exception:
            if not started:
                raise  # the claim failed: the caller of start() gets it
            logger.exception("producer of session %r failed", stream.session_id)
