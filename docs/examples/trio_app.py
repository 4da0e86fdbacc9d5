"""A Starlette app served by Hypercorn on Trio (docs/guides/trio.md).

Run: ``python trio_app.py`` (serves http://127.0.0.1:8000).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

import replayhub
from replayhub.asgi import event_stream_response

hub = replayhub.Hub.from_url(os.environ.get("REPLAYHUB_URL", "memory://"), namespace="chat")
producers = replayhub.ProducerGroup(hub)


async def count_up(stream: replayhub.Producer) -> None:
    """Any async code runs here: trio's own, or a model client built on AnyIO."""
    for number in range(1, 11):
        await trio.sleep(0.01)
        await stream.send(number, event="count")


async def start(request: Request) -> Response:
    session_id = f"count-{uuid.uuid4().hex}"
    await producers.start(session_id, count_up)
    return JSONResponse({"session_id": session_id})


async def events(request: Request) -> Response:
    return await event_stream_response(hub, request.path_params["session_id"], request)


async def stop(request: Request) -> Response:
    info = await hub.cancel(request.path_params["session_id"], wait=5)
    if info is None:
        return JSONResponse({"error": "no such session"}, status_code=404)
    return JSONResponse({"state": info.state})


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    async with hub, producers:
        yield


app = Starlette(
    routes=[
        Route("/counts", start, methods=["POST"]),
        Route("/counts/{session_id}/events", events),
        Route("/counts/{session_id}/stop", stop, methods=["POST"]),
    ],
    lifespan=lifespan,
)


# --8<-- [start:serve]
async def serve(
    port: int = 8000, *, task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED
) -> None:
    from hypercorn.config import Config
    from hypercorn.trio import serve as hypercorn_serve

    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    await hypercorn_serve(app, config, task_status=task_status)  # type: ignore[arg-type]


if __name__ == "__main__":
    trio.run(serve)
# --8<-- [end:serve]
