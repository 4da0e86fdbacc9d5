"""Serving a session as Server-Sent Events from Starlette or FastAPI.

Needs the ``web`` extra (Starlette). Works on asyncio (uvicorn) and Trio
(Hypercorn's trio worker). A client that disconnects only ends its own
subscription; the producer goes on. Stop is :meth:`Hub.cancel`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from ._errors import InvalidInputError, SessionNotFoundError
from ._events import Event
from ._hub import Hub
from ._subscription import EventBatches
from .sse import encode_comment, encode_error, encode_event, encode_outcome


class EventStreamResponse(StreamingResponse):
    """A ``text/event-stream`` response that follows one session.

    It replays the events after ``after``, follows new ones live, sends a
    comment every ``ping_interval`` seconds while idle, and ends with the
    ``replayhub.end`` event carrying the outcome.

    :param after: resume right after this event id (``None``: from the start).
    :param batch_replay: join the replayed text events (see
        :meth:`Hub.subscribe`); a reloaded page wants this.
    """

    media_type = "text/event-stream"

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
        self._hub = hub
        self._session_id = session_id
        self._after = after
        self._batch_replay = batch_replay
        self._ping_interval = ping_interval
        all_headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no", **(headers or {})}
        super().__init__(self._body(), media_type=self.media_type, headers=all_headers)

    async def _body(self) -> AsyncIterator[str]:
        subscription = self._hub.subscribe(
            self._session_id, after=self._after, batch_replay=self._batch_replay
        )
        try:
            async with subscription as events:
                batches = events.batches()
                while True:
                    batch = await next_batch(batches, wait=self._ping_interval)
                    if batch is None:
                        if events.outcome is not None:
                            break
                        yield encode_comment("ping")
                        continue
                    # One chunk per batch: one write to the socket, not one per event.
                    yield "".join([encode_event(event) for event in batch])
                assert events.outcome is not None
                yield encode_outcome(events.outcome)
        except SessionNotFoundError as exc:
            yield encode_error(str(exc))


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
    cursor, before streaming starts.

    :raises ~replayhub.HubClosedError: if the hub is not open.
    :raises ~replayhub.BackendUnavailableError: if storage cannot be reached
        (the server answers 500).

    A client that disconnects ends its own stream (the server cancels the
    response); the producer goes on.
    """
    after = request.headers.get("last-event-id") or request.query_params.get("after") or None
    if batch_replay is None:
        batch_replay = request.query_params.get("batch", "") in ("1", "true", "yes")
    try:
        subscription = hub.subscribe(session_id, after=after, batch_replay=batch_replay)
        # Check the session and cursor now, so errors get a status code.
        async with subscription:
            pass
    except SessionNotFoundError as exc:
        return JSONResponse({"error": str(exc)}, status_code=404)
    except InvalidInputError as exc:
        return JSONResponse({"error": str(exc)}, status_code=400)
    return EventStreamResponse(
        hub,
        session_id,
        after=after,
        batch_replay=batch_replay,
        ping_interval=ping_interval,
    )
