"""Testing an app built on replayhub with the memory backend: no Redis, no
server, one process (docs/guides/testing.md). Run: ``pytest test_chat_app.py``."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

import replayhub
from fastapi_app import create_app
from resume_client import follow


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # FastAPI apps run on asyncio; replayhub itself runs on both


# --8<-- [start:client]
@pytest.fixture
def app() -> FastAPI:
    return create_app("memory://")  # a fresh in-process hub for each test


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app):  # opens the hub
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            yield client


@pytest.mark.anyio
async def test_a_reply_survives_a_dropped_connection(client: httpx.AsyncClient) -> None:
    started = await client.post("/chats", json={"prompt": "hello"})
    session_id = started.json()["session_id"]
    text = await follow(client, f"/chats/{session_id}/events", drop_after=3)
    assert text.startswith("You said: hello.")
    assert text.endswith("[done]")


@pytest.mark.anyio
async def test_stop_ends_the_reply_cancelled(app: FastAPI, client: httpx.AsyncClient) -> None:
    started = await client.post("/chats", json={"prompt": "hello"})
    session_id = started.json()["session_id"]
    stopped = await client.post(f"/chats/{session_id}/stop")
    assert stopped.json() == {"state": "cancelled"}
    info = await app.state.hub.info(session_id)
    assert info is not None
    assert info.state is replayhub.State.CANCELLED


# --8<-- [end:client]


# --8<-- [start:unit]
@pytest.mark.anyio
async def test_producer_code_on_its_own() -> None:
    async with replayhub.Hub() as memory_hub:  # a fresh in-process hub per test
        async with memory_hub.produce("s") as stream:
            for token in ["a", "b"]:
                await stream.send(token)
        async with memory_hub.subscribe("s") as events:
            assert [event.data async for event in events] == ["a", "b"]
        assert events.outcome is not None
        assert events.outcome.state is replayhub.State.DONE


# --8<-- [end:unit]
