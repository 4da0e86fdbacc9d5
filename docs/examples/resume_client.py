"""A Python client that follows a session over SSE and resumes with
``Last-Event-ID`` after its connection drops (docs/guides/reconnect.md)."""

from __future__ import annotations

import json

import httpx
from httpx_sse import aconnect_sse

END_EVENT = "replayhub.end"  # the last event: the session's outcome


# --8<-- [start:follow]
async def follow(client: httpx.AsyncClient, url: str, *, drop_after: int | None = None) -> str:
    """The whole reply at ``url``, however often the connection drops.

    ``drop_after`` closes the first connection after that many events, as a
    flaky network would.
    """
    text: list[str] = []
    last_id: str | None = None
    while True:
        headers = {"Last-Event-ID": last_id} if last_id else {}
        async with aconnect_sse(client, "GET", url, headers=headers) as source:
            async for sse in source.aiter_sse():
                if sse.event == END_EVENT:
                    outcome = json.loads(sse.data)
                    return "".join(text) + f" [{outcome['state']}]"
                text.append(sse.data)  # text events carry the text itself
                last_id = sse.id  # resume right after this event
                if drop_after is not None and len(text) == drop_after:
                    drop_after = None
                    break  # the connection closes here; the loop reconnects


# --8<-- [end:follow]
