"""The web demo: a chat page whose replies survive reloads and can be stopped.

``create_app(url)`` builds a Starlette app on a hub for ``url``. Producers run
in the app's lifespan (a :class:`~replayhub.ProducerGroup`), so a reply goes on
after the request that started it, and two instances on one Redis share
sessions: read or stop a reply on either.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.resources import files

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from .. import Hub, Producer, ProducerGroup, SessionInfo, llm
from ..asgi import event_stream_response
from .fake_llm import generate_reply


def _info_json(info: SessionInfo) -> dict[str, object]:
    return {**info.to_json(), "prompt": info.metadata.get("prompt")}


def create_app(
    url: str = "memory://", *, pace: float = 0.05, words: int = 60, namespace: str = "replayhub"
) -> Starlette:
    """The demo app on the backend ``url`` names; ``pace`` is seconds per token.

    Its sessions are in ``namespace``, the one ``replayhub tail``, ``info``
    and ``cancel`` read by default.
    """
    hub = Hub.from_url(url, namespace=namespace, retention=3600)
    producers = ProducerGroup(hub)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with hub, producers:
            yield

    async def page(request: Request) -> Response:
        html = files(__package__).joinpath("page.html").read_text()
        return HTMLResponse(html)

    async def start_chat(request: Request) -> Response:
        body = await request.json()
        prompt = str(body.get("prompt", "")).strip()[:500] or "Tell me about streams"
        session_id = f"chat-{secrets.token_hex(6)}"

        async def reply(stream: Producer) -> None:
            async for item in generate_reply(prompt, pace=pace, words=words):
                await stream.send(item)
                if isinstance(item, llm.Usage):
                    await stream.set_metadata({"usage": item.to_json()})

        await producers.start(session_id, reply, metadata={"prompt": prompt})
        return JSONResponse({"session_id": session_id})

    async def events(request: Request) -> Response:
        return await event_stream_response(hub, request.path_params["session_id"], request)

    async def cancel(request: Request) -> Response:
        info = await hub.cancel(request.path_params["session_id"], wait=5)
        if info is None:
            return JSONResponse({"error": "no such session"}, status_code=404)
        return JSONResponse(_info_json(info))

    async def sessions(request: Request) -> Response:
        return JSONResponse([_info_json(info) for info in await hub.sessions(limit=20)])

    async def session(request: Request) -> Response:
        info = await hub.info(request.path_params["session_id"])
        if info is None:
            return JSONResponse({"error": "no such session"}, status_code=404)
        return JSONResponse(_info_json(info))

    return Starlette(
        routes=[
            Route("/", page),
            Route("/api/chats", start_chat, methods=["POST"]),
            Route("/api/chats", sessions),
            Route("/api/chats/{session_id}", session),
            Route("/api/chats/{session_id}/events", events),
            Route("/api/chats/{session_id}/cancel", cancel, methods=["POST"]),
        ],
        lifespan=lifespan,
    )
