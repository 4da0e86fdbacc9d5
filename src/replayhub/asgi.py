"""Serving a session as Server-Sent Events from Starlette or FastAPI.

Needs the ``web`` extra (Starlette). Works on asyncio (uvicorn) and Trio
(Hypercorn's trio worker). A client that disconnects only ends its own
subscription; the producer goes on. Stop is :meth:`Hub.cancel`.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AsyncExitStack

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Message, Receive, Scope, Send

from ._errors import InvalidInputError, ReplayHubError, SessionNotFoundError
from ._events import Event, Outcome
from ._hub import Hub
from ._subscription import Subscription
from .backends._clock import loop_clock
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
            body = _PingedBody(send, self._ping_interval)
            async with anyio.create_task_group() as task_group:
                task_group.start_soon(_watch_client, receive, body, task_group.cancel_scope)
                try:
                    await self._stream(events, body.write)
                    await body.end()
                except OSError:
                    pass  # the client is gone (servers of ASGI 2.4 say so on send)
                task_group.cancel_scope.cancel()

    async def _stream(self, events: Subscription, write: Callable[[str], Awaitable[None]]) -> None:
        self._opened(events)
        try:
            # One chunk per batch: one write to the socket, not one per event.
            async for batch in events.batches():
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


class _PingedBody:
    """The response body, with a comment written whenever it has been idle
    for ``interval`` seconds (so proxies and browsers keep the stream open).

    The pings come from the task that watches for the client's disconnect,
    which waits until the body has been idle that long: bounding each wait
    for a batch with a timeout instead cost a cancel scope per batch per
    reader, more than the rest of delivering the batch (10-12 us on asyncio,
    19-28 us on Trio, measured). Writes never overlap: a batch that comes
    while a ping is being written waits for it, and no ping starts while a
    batch is being written.
    """

    def __init__(self, send: Send, interval: float) -> None:
        self._send = send
        self._interval = interval
        self._clock = loop_clock()
        self._last_write = self._clock()
        self._writing = False
        self._pinging: anyio.Event | None = None  # set once a ping is written
        self._ended = False

    async def write(self, text: str) -> None:
        while self._pinging is not None:
            await self._pinging.wait()
        self._writing = True
        try:
            await self._send(_body(text.encode()))
        finally:
            self._writing = False
            self._last_write = self._clock()

    async def end(self) -> None:
        """Write the end of the body (after a ping being written); no ping follows."""
        while self._pinging is not None:
            await self._pinging.wait()
        self._ended = True
        await self._send({"type": "http.response.body", "body": b"", "more_body": False})

    def until_ping(self) -> float:
        """Seconds until a ping is due (one is never due once the body ended)."""
        if self._ended:
            return math.inf
        if self._writing:
            return self._interval
        return max(0.0, self._last_write + self._interval - self._clock())

    async def ping_if_idle(self) -> None:
        if self.until_ping() > 0:  # ended, being written, or written lately
            return
        pinged = self._pinging = anyio.Event()
        try:
            await self._send(_body(_PING))
        finally:
            self._pinging = None
            self._last_write = self._clock()
            pinged.set()


_PING = encode_comment("ping").encode()


def _body(chunk: bytes) -> Message:
    return {"type": "http.response.body", "body": chunk, "more_body": True}


async def _watch_client(receive: Receive, body: _PingedBody, scope: anyio.CancelScope) -> None:
    """Cancel ``scope`` once the client disconnects (the server says so even
    while the stream is idle); meanwhile, ping whenever the body is idle.

    A wait for the server's next message is cut short only when a ping is
    due: one cancel scope per interval, not per batch.
    """
    while True:
        with anyio.move_on_after(body.until_ping()):
            if (await receive())["type"] == "http.disconnect":
                scope.cancel()
                return
            continue
        try:
            await body.ping_if_idle()
        except OSError:  # the client is gone (servers of ASGI 2.4 say so on send)
            scope.cancel()
            return


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
