"""FastAPI + an OpenAI-style token stream, on asyncio (docs/guides/fastapi.md).

Run: ``uvicorn fastapi_app:app`` (set ``REPLAYHUB_URL=redis://...`` to share
sessions between instances).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import Response
from pydantic import BaseModel

import replayhub
from fake_openai import FakeOpenAI
from replayhub.asgi import event_stream_response


class Prompt(BaseModel):
    prompt: str


def create_app(url: str) -> FastAPI:
    """The app on the backend ``url`` names (``memory://`` in tests)."""
    # --8<-- [start:setup]
    hub = replayhub.Hub.from_url(url, namespace="chat")
    producers = replayhub.ProducerGroup(hub)  # producers outlive requests, not the app
    llm = FakeOpenAI()  # openai.AsyncOpenAI() in a real app

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with hub, producers:
            yield

    app = FastAPI(lifespan=lifespan)
    app.state.hub = hub
    # --8<-- [end:setup]

    # --8<-- [start:start]
    @app.post("/chats")
    async def start_chat(body: Prompt) -> dict[str, str]:
        session_id = f"chat-{uuid.uuid4().hex}"

        async def generate(stream: replayhub.Producer) -> None:
            # Cancelling the session (the Stop button) cancels this coroutine
            # wherever it waits, including inside the model's stream.
            chunks = await llm.chat.completions.create(
                model="gpt-4o-mini",
                messages=[{"role": "user", "content": body.prompt}],
                stream=True,
            )
            async for chunk in chunks:
                if token := chunk.choices[0].delta.content:
                    await stream.send(token, event="text-delta")

        # Returns once the session is claimed; the reply goes on after the response.
        await producers.start(session_id, generate, metadata={"prompt": body.prompt})
        return {"session_id": session_id}

    # --8<-- [end:start]

    # --8<-- [start:events]
    @app.get("/chats/{session_id}/events")
    async def chat_events(session_id: str, request: Request) -> Response:
        # Resumes after Last-Event-ID (EventSource reconnects) or ?after=.
        return await event_stream_response(hub, session_id, request)

    @app.post("/chats/{session_id}/stop")
    async def stop_chat(session_id: str) -> dict[str, str]:
        info = await hub.cancel(session_id, wait=5)  # works from any instance
        if info is None:
            raise HTTPException(404, "no such chat")
        return {"state": info.state}

    # --8<-- [end:events]

    return app


app = create_app(os.environ.get("REPLAYHUB_URL", "memory://"))
