"""Serving a session as Server-Sent Events from Starlette or FastAPI.

Needs the ``web`` extra (Starlette). Works on asyncio (uvicorn) and Trio
(Hypercorn's trio worker). A client that disconnects only ends its own
subscription; the producer goes on. Stop is :meth:`Hub.cancel`.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AsyncExitStack

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from ._errors import InvalidInputError, ReplayHubError, SessionNotFoundError
from ._events import Event, Outcome
from ._hub import Hub
from ._subscription import EventBatches, Subscription
from .sse import encode_comment, encode_error, encode_event, encode_outcome


class SubscriptionResponse(Response):
    """A ``text/event-stream`` response that streams one subscription.

    The subscription opens when the response is sent, so one request costs
    one subscription, and it closes with the response, whichever ends it: the
    session's end, or the client disconnecting (the server is asked for
    ``http.disconnect`` throughout, so an idle stream notices too). An
    unknown session is answered 404 and a bad cursor 400, before streaming
    starts. Subclasses say how batches, the end and a failure are written.
    """

    media_type = "text/event-stream"

    def __init__(
        self,
        hub: Hub,
        session_id: str,
        *,
        after: str | None,
        batch_replay: bool,
        ping_interval: float,
        headers: Mapping[str, str],
    ) -> None:
        self._hub = hub
        self._session_id = session_id
        self._after = after
        self._batch_replay = batch_replay
        self._ping_interval = ping_interval
        self.status_code = 200
        self.background = None
        self.init_headers(headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async with AsyncExitStack() as stack:
            refusal: Response | None = None
            try:
                subscription = self._hub.subscribe(
                    self._session_id, after=self._after, batch_replay=self._batch_replay
                )
                events = await stack.enter_async_context(subscription)
            except SessionNotFoundError as exc:
                refusal = JSONResponse({"error": str(exc)}, status_code=404)
            except InvalidInputError as exc:
                refusal = JSONResponse({"error": str(exc)}, status_code=400)
            if refusal is not None:
                await refusal(scope, receive, send)
                return
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            async with anyio.create_task_group() as task_group:
                task_group.start_soon(_cancel_on_disconnect, receive, task_group.cancel_scope)
                try:
                    await self._stream(events, send)
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
                except OSError:
                    pass  # the client is gone (servers of ASGI 2.4 say so on send)
                task_group.cancel_scope.cancel()

    async def _stream(self, events: Subscription, send: Send) -> None:
        async def write(text: str) -> None:
            await send({"type": "http.response.body", "body": text.encode(), "more_body": True})

        self._opened(events)
        batches = events.batches()
        try:
            while True:
                batch = await next_batch(batches, wait=self._ping_interval)
                if batch is None:
                    if events.outcome is not None:
                        break
                    await write(encode_comment("ping"))
                    continue
                # One chunk per batch: one write to the socket, not one per event.
                await write(self._encode_batch(batch))
            assert events.outcome is not None
            await write(self._encode_end(events.outcome))
        except ReplayHubError as exc:
            # Removed while being read, events lost, storage gone for longer
            # than the lease: the client is told, not left with a reply that
            # silently stops.
            await write(self._encode_failure(exc))

    def _opened(self, events: Subscription) -> None:
        """The subscription is open (its generation known); nothing sent yet."""

    def _encode_batch(self, batch: list[Event]) -> str:
        raise NotImplementedError

    def _encode_end(self, outcome: Outcome) -> str:
        raise NotImplementedError

    def _encode_failure(self, error: ReplayHubError) -> str:
        raise NotImplementedError


async def _cancel_on_disconnect(receive: Receive, scope: anyio.CancelScope) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    scope.cancel()


class EventStreamResponse(SubscriptionResponse):
    """A ``text/event-stream`` response that follows one session.

    It replays the events after ``after``, follows new ones live, sends a
    comment every ``ping_interval`` seconds while idle, and ends with the
    ``replayhub.end`` event carrying the outcome, or ``replayhub.error`` if
    the session cannot be read on (removed, expired, events lost, storage
    unreachable for longer than the lease). It answers 404 for an unknown
    session and 400 for a bad ``after``, before streaming starts. A client
    that disconnects ends only its own stream; the producer goes on.

    :param after: resume right after this event id (``None``: from the start).
    :param batch_replay: join the replayed text events (see
        :meth:`Hub.subscribe`); a reloaded page wants this.
    """

    def __init__(
        self,
        hub: Hub,
        session_id: str,
        *,
        after: str | None = None,
        batch_replay: bool = False,
        ping_interval: float = 15.0,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(
            hub,
            session_id,
            after=after,
            batch_replay=batch_replay,
            ping_interval=ping_interval,
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no", **(headers or {})},
        )

    def _encode_batch(self, batch: list[Event]) -> str:
        return "".join([encode_event(event) for event in batch])

    def _encode_end(self, outcome: Outcome) -> str:
        return encode_outcome(outcome)

    def _encode_failure(self, error: ReplayHubError) -> str:
        return encode_error(str(error))


async def next_batch(batches: EventBatches, *, wait: float) -> list[Event] | None:
    """The next batch, or ``None`` when none came within ``wait`` seconds
    (time for a ping) or the subscription ended.

    A cancelled wait loses nothing (the cursor moves only on delivery), so
    the timeout is safe; no cancel scope spans the caller's ``yield``.
    """
    with anyio.move_on_after(wait):
        try:
            return await batches.__anext__()
        except StopAsyncIteration:
            return None
    return None


async def event_stream_response(
    hub: Hub,
    session_id: str,
    request: Request,
    *,
    batch_replay: bool | None = None,
    ping_interval: float = 15.0,
) -> Response:
    """The response for a request that reads ``session_id`` as SSE.

    Resumes after the ``Last-Event-ID`` header (what a browser's
    ``EventSource`` sends when it reconnects) or the ``after`` query
    parameter. ``batch_replay`` defaults to the ``batch`` query parameter
    (``?batch=1``). Answers 404 for an unknown session and 400 for a bad
    cursor, before streaming starts; a closed hub or unreachable storage at
    that point reaches the server as the exception (it answers 500).

    A client that disconnects ends its own stream; the producer goes on.
    """
    after = request.headers.get("last-event-id") or request.query_params.get("after") or None
    if batch_replay is None:
        batch_replay = request.query_params.get("batch", "") in ("1", "true", "yes")
    return EventStreamResponse(
        hub,
        session_id,
        after=after,
        batch_replay=batch_replay,
        ping_interval=ping_interval,
    )
